//! The CPU budget: how a share of the device becomes executors and rest.
//!
//! `cpu` is a share of all cores × time (0.25 on 4 cores = one core's worth).
//! It is met by a number of executors and a duty cycle: each executor rests
//! after a run in proportion to how long the run took, so over any stretch
//! longer than a task an executor is busy `duty` of the time. At most
//! `max_workers` executors run, by default all cores but one, so a visitor's
//! device always keeps a core for itself.

/// Executors and duty cycle for one CPU share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Executors to run (0 only when `cpu` is 0).
    pub workers: u32,
    /// Fraction of time each executor computes, in (0, 1].
    pub duty: f64,
}

impl Plan {
    /// Core-seconds per second this plan gives: `workers × duty`.
    pub fn cores(&self) -> f64 {
        self.workers as f64 * self.duty
    }

    /// How long an executor rests after a run of `ran_ms` to keep its duty cycle.
    pub fn rest_ms(&self, ran_ms: f64) -> f64 {
        if self.duty >= 1.0 || ran_ms <= 0.0 {
            0.0
        } else {
            ran_ms * (1.0 - self.duty) / self.duty
        }
    }
}

/// Executors allowed on a device with `cores` cores when none is set: all but one.
pub fn default_max_workers(cores: u32) -> u32 {
    cores.saturating_sub(1).max(1)
}

/// The plan giving `cpu` of `cores` cores with at most `max_workers` executors.
/// A share beyond what `max_workers` can give is capped there.
pub fn plan(cpu: f64, cores: u32, max_workers: u32) -> Plan {
    let cores = cores.max(1) as f64;
    let max_workers = max_workers.max(1);
    let wanted = if cpu.is_finite() { cpu.clamp(0.0, 1.0) * cores } else { 0.0 };
    if wanted <= 0.0 {
        return Plan { workers: 0, duty: 0.0 };
    }
    // Fewest executors that can give the share, so each runs as much as it can.
    let workers = (wanted.ceil() as u32).clamp(1, max_workers);
    Plan { workers, duty: (wanted / workers as f64).min(1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_becomes_the_fewest_executors_and_a_duty_cycle() {
        assert_eq!(plan(0.25, 2, 1), Plan { workers: 1, duty: 0.5 });
        assert_eq!(plan(0.25, 4, 3), Plan { workers: 1, duty: 1.0 });
        assert_eq!(plan(0.5, 8, 7), Plan { workers: 4, duty: 1.0 });
        let p = plan(0.3, 8, 7); // 2.4 cores: three executors at 80%
        assert_eq!(p.workers, 3);
        assert!((p.duty - 0.8).abs() < 1e-9);
        assert!((p.cores() - 2.4).abs() < 1e-9);
    }

    #[test]
    fn at_least_one_core_stays_free_by_default() {
        assert_eq!(default_max_workers(1), 1);
        assert_eq!(default_max_workers(2), 1);
        assert_eq!(default_max_workers(16), 15);
        let p = plan(1.0, 4, default_max_workers(4));
        assert_eq!(p, Plan { workers: 3, duty: 1.0 }, "a full share is capped at cores - 1");
    }

    #[test]
    fn nothing_or_nonsense_gives_nothing() {
        assert_eq!(plan(0.0, 4, 3).workers, 0);
        assert_eq!(plan(f64::NAN, 4, 3).workers, 0);
        assert_eq!(plan(-1.0, 4, 3).workers, 0);
        assert_eq!(plan(5.0, 2, 8), Plan { workers: 2, duty: 1.0 }, "a share above 1 is all cores");
    }

    #[test]
    fn rest_keeps_the_duty_cycle() {
        let p = Plan { workers: 1, duty: 0.25 };
        let ran = 40.0;
        let rest = p.rest_ms(ran);
        assert!((ran / (ran + rest) - 0.25).abs() < 1e-9);
        assert_eq!(Plan { workers: 2, duty: 1.0 }.rest_ms(40.0), 0.0);
    }
}
