//! Where a task's time and random numbers come from: two traits, so an
//! engine can give real ones (a job that opts out of determinism) and
//! everything else gets the seeded ones, identical on every machine.

/// Time for one run.
pub trait Clocks {
    /// Nanoseconds since the Unix epoch.
    fn realtime_ns(&mut self) -> u64;
    /// Nanoseconds since some fixed point; never decreases.
    fn monotonic_ns(&mut self) -> u64;
    /// Lets `ns` nanoseconds pass (`poll_oneoff` on a clock).
    fn sleep(&mut self, ns: u64);
}

/// Entropy for one run (`random_get`).
pub trait Random {
    fn fill(&mut self, buf: &mut [u8]);
}

/// Virtual clock start for `CLOCK_REALTIME`: 2024-01-01T00:00:00Z.
const REALTIME_BASE_NS: u64 = 1_704_067_200 * 1_000_000_000;
/// Each clock read advances virtual time by this much, so loops that wait
/// for time to pass still end.
pub const CLOCK_STEP_NS: u64 = 1_000;

/// The default clocks: virtual time that starts at 2024-01-01 and moves
/// only when read or slept on, so two honest runs read the same times.
#[derive(Debug, Default)]
pub struct SeededClocks {
    clock_ns: u64,
}

impl SeededClocks {
    fn tick(&mut self) -> u64 {
        let now = self.clock_ns;
        self.clock_ns += CLOCK_STEP_NS;
        now
    }
}

impl Clocks for SeededClocks {
    fn realtime_ns(&mut self) -> u64 {
        REALTIME_BASE_NS + self.tick()
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.tick()
    }
    /// Virtual time: the clock jumps ahead, nothing waits.
    fn sleep(&mut self, ns: u64) {
        self.clock_ns = self.clock_ns.saturating_add(ns);
    }
}

/// The default entropy: a stream derived from the task's seed, the same on
/// every attempt of the task.
#[derive(Debug)]
pub struct SeededRandom {
    rng: u64,
}

impl SeededRandom {
    pub fn new(seed: u64) -> SeededRandom {
        SeededRandom { rng: seed ^ 0x6a09_e667_f3bc_c908 }
    }

    fn next(&mut self) -> u64 {
        // splitmix64: fast, and the same on every machine.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Random for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let n = self.next().to_le_bytes();
            chunk.copy_from_slice(&n[..chunk.len()]);
        }
    }
}
