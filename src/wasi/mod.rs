//! A WASI preview1 host for task modules.
//!
//! This layer is plain Rust over a [`GuestMemory`], so it is tested natively;
//! `host` wires it to a real `WebAssembly.Instance` in the browser. Tasks see
//! stdin, stdout, stderr, args, environment, clocks, random numbers and
//! preopened directories over an in-memory filesystem (`fs`, `fds`). Clocks
//! and random numbers come from the task's seed, so two honest runs of the same
//! task produce the same bytes. Calls for which this host has no resource
//! (sockets, links) return the preview1 errno that says so; none throws.

mod clocks;
mod fds;
pub mod fs;
mod memory;
mod paths;
mod poll;
#[cfg(target_arch = "wasm32")]
pub mod host;
#[cfg(target_arch = "wasm32")]
pub mod instance;

pub use clocks::{Clocks, Seeded, CLOCK_STEP_NS};
pub use fds::{Fd, Preopen};
pub use memory::{in_bounds, GuestMemory, VecMemory};

/// preview1 errno values used by this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    Success = 0,
    Badf = 8,
    Busy = 10,
    Exist = 20,
    Fault = 21,
    Fbig = 22,
    Ilseq = 25,
    Inval = 28,
    Isdir = 31,
    Mfile = 33,
    Nametoolong = 37,
    Noent = 44,
    Nosys = 52,
    Notdir = 54,
    Notempty = 55,
    Notsup = 58,
    Perm = 63,
    Rofs = 69,
    Spipe = 70,
    Xdev = 75,
}

/// Why a run must stop now (the host throws to unwind the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// `proc_exit(code)`.
    Exit(i32),
    /// stdout + stderr passed the task's output limit.
    OutputLimit(u32),
    /// `proc_exit` with a status of 126 or more, which wasmtime also treats as an error.
    InvalidExit(u32),
}

/// One task run's WASI state.
pub struct WasiCtx {
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    stdin: Vec<u8>,
    stdin_pos: usize,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    max_output: u32,
    clocks: Box<dyn Clocks>,
    fs: fs::Fs,
    preopens: Vec<Preopen>,
    fds: Vec<Option<Fd>>,
    /// Bytes of the files in writable preopens, counted against `max_output`.
    file_output: i64,
    /// Set when the run is being stopped; the host reads it after the guest unwinds.
    pub abort: Option<Abort>,
}

impl WasiCtx {
    pub fn new(program: &str, args: &[String], env: &[(String, String)], stdin: Vec<u8>, seed: u64, max_output: u32) -> WasiCtx {
        let nul = |mut v: Vec<u8>| {
            v.push(0);
            v
        };
        WasiCtx {
            args: std::iter::once(program.to_string()).chain(args.iter().cloned()).map(|a| nul(a.into_bytes())).collect(),
            env: env.iter().map(|(k, v)| nul(format!("{k}={v}").into_bytes())).collect(),
            stdin,
            stdin_pos: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            max_output,
            clocks: Box::new(Seeded::new(seed)),
            fs: fs::Fs::default(),
            preopens: Vec::new(),
            fds: fds::stdio(),
            file_output: 0,
            abort: None,
        }
    }

    /// Replaces the seeded clocks and random numbers (for jobs that opt out of determinism).
    pub fn with_clocks(mut self, clocks: Box<dyn Clocks>) -> WasiCtx {
        self.clocks = clocks;
        self
    }

    fn sizes(list: &[Vec<u8>], mem: &impl GuestMemory, count_ptr: u32, size_ptr: u32) -> Result<(), Errno> {
        mem.write_u32(count_ptr, list.len() as u32)?;
        mem.write_u32(size_ptr, list.iter().map(|a| a.len() as u32).sum())
    }

    fn strings(list: &[Vec<u8>], mem: &impl GuestMemory, ptrs: u32, buf: u32) -> Result<(), Errno> {
        let mut at = buf;
        for (i, s) in list.iter().enumerate() {
            mem.write_u32(ptrs + 4 * i as u32, at)?;
            mem.write(at, s)?;
            at += s.len() as u32;
        }
        Ok(())
    }

    pub fn args_sizes_get(&self, mem: &impl GuestMemory, argc: u32, size: u32) -> Errno {
        errno(Self::sizes(&self.args, mem, argc, size))
    }
    pub fn args_get(&self, mem: &impl GuestMemory, argv: u32, buf: u32) -> Errno {
        errno(Self::strings(&self.args, mem, argv, buf))
    }
    pub fn environ_sizes_get(&self, mem: &impl GuestMemory, count: u32, size: u32) -> Errno {
        errno(Self::sizes(&self.env, mem, count, size))
    }
    pub fn environ_get(&self, mem: &impl GuestMemory, environ: u32, buf: u32) -> Errno {
        errno(Self::strings(&self.env, mem, environ, buf))
    }

    pub fn clock_res_get(&self, mem: &impl GuestMemory, id: u32, out: u32) -> Errno {
        if id > 3 {
            return Errno::Inval;
        }
        errno(mem.write_u64(out, CLOCK_STEP_NS))
    }

    pub fn clock_time_get(&mut self, mem: &impl GuestMemory, id: u32, out: u32) -> Errno {
        let now = match id {
            0 => self.clocks.realtime_ns(),
            1..=3 => self.clocks.monotonic_ns(),
            _ => return Errno::Inval,
        };
        errno(mem.write_u64(out, now))
    }

    pub fn random_get(&mut self, mem: &impl GuestMemory, buf: u32, len: u32) -> Errno {
        // In chunks, so a huge `len` costs no huge host buffer before the bounds check.
        let mut chunk = [0u8; 4096];
        let mut at = 0u32;
        while at < len {
            let n = (len - at).min(chunk.len() as u32);
            self.clocks.fill_random(&mut chunk[..n as usize]);
            let Some(ptr) = buf.checked_add(at) else { return Errno::Fault };
            if let Err(e) = mem.write(ptr, &chunk[..n as usize]) {
                return e;
            }
            at += n;
        }
        Errno::Success
    }

    pub fn proc_exit(&mut self, code: u32) -> Abort {
        let abort = if code < 126 { Abort::Exit(code as i32) } else { Abort::InvalidExit(code) };
        self.abort = Some(abort.clone());
        abort
    }
}

fn errno(r: Result<(), Errno>) -> Errno {
    match r {
        Ok(()) => Errno::Success,
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests;
