//! Adaptive trust: each worker's run of consecutive valid results. A worker
//! whose record reaches the threshold gets unreplicated work with probability
//! `1 - 1/record`, so checking costs less the longer it has been right; one
//! wrong result loses the whole record.

use std::collections::HashMap;
use std::hash::Hash;

/// Records by worker identity (`K`: whatever outlives a session).
#[derive(Debug, Clone)]
pub struct TrustBook<K> {
    threshold: u32,
    records: HashMap<K, u32>,
}

impl<K: Eq + Hash + Clone> TrustBook<K> {
    /// `threshold`: valid results in a row before any work goes unreplicated (default 10).
    pub fn new(threshold: u32) -> TrustBook<K> {
        TrustBook { threshold: threshold.max(1), records: HashMap::new() }
    }

    pub fn record(&self, who: &K) -> u32 {
        self.records.get(who).copied().unwrap_or(0)
    }

    /// A result of `who` agreed with its quorum (or a known answer).
    pub fn valid(&mut self, who: &K) {
        let r = self.records.entry(who.clone()).or_insert(0);
        *r = r.saturating_add(1);
    }

    /// A result of `who` was found wrong: its record starts again.
    pub fn invalid(&mut self, who: &K) {
        self.records.insert(who.clone(), 0);
    }

    /// Probability that work for `who` is replicated: 1 below the threshold,
    /// `1/record` from it on.
    pub fn replication_probability(&self, who: &K) -> f64 {
        let r = self.record(who);
        if r < self.threshold {
            1.0
        } else {
            1.0 / r as f64
        }
    }

    /// Whether this task for `who` is replicated, given `u` uniform in [0, 1).
    pub fn replicate(&self, who: &K, u: f64) -> bool {
        u < self.replication_probability(who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_workers_are_always_replicated() {
        let book: TrustBook<u64> = TrustBook::new(10);
        assert_eq!(book.replication_probability(&1), 1.0);
        assert!(book.replicate(&1, 0.999_999));
    }

    #[test]
    fn a_record_past_the_threshold_is_replicated_one_time_in_record() {
        let mut book = TrustBook::new(10);
        for _ in 0..9 {
            book.valid(&1u64);
        }
        assert_eq!(book.replication_probability(&1), 1.0, "9 < threshold");
        book.valid(&1);
        assert_eq!(book.replication_probability(&1), 0.1);
        assert!(book.replicate(&1, 0.05) && !book.replicate(&1, 0.5));
        for _ in 0..90 {
            book.valid(&1);
        }
        assert_eq!(book.replication_probability(&1), 0.01);
    }

    #[test]
    fn one_wrong_result_loses_the_record() {
        let mut book = TrustBook::new(3);
        for _ in 0..50 {
            book.valid(&"w");
        }
        book.invalid(&"w");
        assert_eq!(book.record(&"w"), 0);
        assert_eq!(book.replication_probability(&"w"), 1.0);
    }
}
