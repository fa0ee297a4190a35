//! poll_oneoff: clock subscriptions wait (virtually, or on real time), fd
//! subscriptions are always ready.

use super::fds::{errno, Fd};
use super::{Errno, GuestMemory, WasiCtx};

impl WasiCtx {
    /// Waits on clocks (virtual or real, see [`super::Clocks::sleep`]); fd
    /// subscriptions are always ready, as in-memory files never block.
    pub fn poll_oneoff(&mut self, mem: &impl GuestMemory, subs: u32, events: u32, count: u32, out: u32) -> Errno {
        if count == 0 {
            return Errno::Inval;
        }
        if count > 4096 {
            return Errno::Inval;
        }
        let raw = match mem.read(subs, count * 48) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let mut fired = Vec::new();
        let mut soonest: Option<(u64, u64)> = None; // (wait ns, userdata)
        for sub in raw.chunks_exact(48) {
            let userdata = u64_at(sub, 0);
            match sub[8] {
                0 => {
                    let id = u32::from_le_bytes(sub[16..20].try_into().expect("4 bytes"));
                    let timeout = u64_at(sub, 24);
                    let absolute = sub[40] & 1 != 0;
                    let now = match id {
                        0 => self.clocks.realtime_ns(),
                        1..=3 => self.clocks.monotonic_ns(),
                        _ => {
                            fired.push((userdata, Errno::Inval as u16, 0u8, 0u64));
                            continue;
                        }
                    };
                    let wait = if absolute { timeout.saturating_sub(now) } else { timeout };
                    if soonest.is_none_or(|(w, _)| wait < w) {
                        soonest = Some((wait, userdata));
                    }
                }
                tag @ (1 | 2) => {
                    let fd = u32::from_le_bytes(sub[16..20].try_into().expect("4 bytes"));
                    let (err, nbytes) = match self.fd(fd) {
                        Ok(Fd::Stdin) => (0, (self.stdin.len() - self.stdin_pos) as u64),
                        Ok(Fd::File { node, pos, .. }) => (0, self.fs.size(*node).saturating_sub(*pos)),
                        Ok(_) => (0, 0),
                        Err(e) => (e as u16, 0),
                    };
                    fired.push((userdata, err, tag, nbytes));
                }
                _ => fired.push((userdata, Errno::Inval as u16, sub[8], 0)),
            }
        }
        if fired.is_empty() {
            if let Some((wait, userdata)) = soonest {
                self.clocks.sleep(wait);
                fired.push((userdata, 0, 0, 0));
            }
        }
        let mut bytes = Vec::with_capacity(fired.len() * 32);
        for (userdata, err, tag, nbytes) in &fired {
            let mut ev = [0u8; 32];
            ev[0..8].copy_from_slice(&userdata.to_le_bytes());
            ev[8..10].copy_from_slice(&err.to_le_bytes());
            ev[10] = *tag;
            ev[16..24].copy_from_slice(&nbytes.to_le_bytes());
            bytes.extend_from_slice(&ev);
        }
        errno(mem.write(events, &bytes).and_then(|_| mem.write_u32(out, fired.len() as u32)))
    }
}
