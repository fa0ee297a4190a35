//! Adaptive trust: each worker's run of consecutive valid results. A worker
//! whose record reaches the threshold gets unreplicated work with probability
//! `1 - 1/record`, so checking costs less the longer it has been right; one
//! wrong result loses the whole record.

use std::collections::HashMap;
use std::hash::Hash;

/// Records by worker identity (`K`: whatever outlives a session).
#[derive(Debug, Clone)]
pub struct TrustBook<K> {
    records: HashMap<K, u32>,
}

impl<K: Eq + Hash + Clone> Default for TrustBook<K> {
    fn default() -> Self {
        TrustBook { records: HashMap::new() }
    }
}

impl<K: Eq + Hash + Clone> TrustBook<K> {
    pub fn new() -> TrustBook<K> {
        TrustBook::default()
    }

    /// Forgets a worker that will not come back.
    pub fn forget(&mut self, who: &K) {
        self.records.remove(who);
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

    /// Probability that work for `who` is replicated: 1 below `threshold`
    /// (verified results in a row before any work goes unreplicated), `1/record` from it on.
    pub fn replication_probability(&self, who: &K, threshold: u32) -> f64 {
        let r = self.record(who);
        if r < threshold.max(1) {
            1.0
        } else {
            1.0 / r as f64
        }
    }

    /// Whether this task for `who` is replicated, given `u` uniform in [0, 1).
    pub fn replicate(&self, who: &K, threshold: u32, u: f64) -> bool {
        u < self.replication_probability(who, threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_workers_are_always_replicated() {
        let book: TrustBook<u64> = TrustBook::new();
        assert_eq!(book.replication_probability(&1, 10), 1.0);
        assert!(book.replicate(&1, 10, 0.999_999));
    }

    #[test]
    fn a_record_past_the_threshold_is_replicated_one_time_in_record() {
        let mut book = TrustBook::new();
        for _ in 0..9 {
            book.valid(&1u64);
        }
        assert_eq!(book.replication_probability(&1, 10), 1.0, "9 < threshold");
        book.valid(&1);
        assert_eq!(book.replication_probability(&1, 10), 0.1);
        assert!(book.replicate(&1, 10, 0.05) && !book.replicate(&1, 10, 0.5));
        for _ in 0..90 {
            book.valid(&1);
        }
        assert_eq!(book.replication_probability(&1, 10), 0.01);
    }

    #[test]
    fn one_wrong_result_loses_the_record() {
        let mut book = TrustBook::new();
        for _ in 0..50 {
            book.valid(&"w");
        }
        book.invalid(&"w");
        assert_eq!(book.record(&"w"), 0);
        assert_eq!(book.replication_probability(&"w", 3), 1.0);
    }
}
