//! A least-recently-used map with a byte budget (compiled task modules,
//! task inputs).

use std::collections::HashMap;
use std::hash::Hash;

pub struct Lru<K, V> {
    entries: HashMap<K, (V, usize, u64)>,
    budget: usize,
    used: usize,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub fn new(budget: usize) -> Lru<K, V> {
        Lru { entries: HashMap::new(), budget, used: 0, clock: 0 }
    }

    /// The value for `key`, marked as just used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|e| {
            e.2 = clock;
            &e.0
        })
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }

    /// Inserts, then evicts the least recently used others until the total
    /// size fits the budget (the new entry always stays). Returns the evicted keys.
    pub fn insert(&mut self, key: K, value: V, size: usize) -> Vec<K> {
        self.insert_keeping(key, value, size, |_| false)
    }

    /// `insert`, never evicting an entry `keep` holds on to (in use): the
    /// total may stay over the budget until they are let go.
    pub fn insert_keeping(&mut self, key: K, value: V, size: usize, keep: impl Fn(&K) -> bool) -> Vec<K> {
        self.clock += 1;
        if let Some((_, old, _)) = self.entries.insert(key.clone(), (value, size, self.clock)) {
            self.used -= old;
        }
        self.used += size;
        let mut evicted = Vec::new();
        while self.used > self.budget {
            let oldest = self.entries.iter().filter(|(k, _)| **k != key && !keep(k)).min_by_key(|(_, e)| e.2).map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            if let Some((_, s, _)) = self.entries.remove(&k) {
                self.used -= s;
            }
            evicted.push(k);
        }
        evicted
    }

    /// Takes the value for `key` out (to use it; insert it again to keep it).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, size, _) = self.entries.remove(key)?;
        self.used -= size;
        Some(value)
    }

    pub fn used(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_past_the_budget() {
        let mut lru = Lru::new(10);
        assert!(lru.insert("a", 1, 4).is_empty());
        assert!(lru.insert("b", 2, 4).is_empty());
        assert_eq!(lru.get(&"a"), Some(&1));
        // 4 + 4 + 4 > 10: "b" is older than "a" now.
        assert_eq!(lru.insert("c", 3, 4), vec!["b"]);
        assert!(lru.contains(&"a") && lru.contains(&"c"));
        assert_eq!(lru.used(), 8);
    }

    #[test]
    fn an_entry_larger_than_the_budget_stays_alone() {
        let mut lru = Lru::new(10);
        lru.insert("a", 1, 4);
        assert_eq!(lru.insert("big", 2, 50), vec!["a"]);
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.get(&"big"), Some(&2));
    }

    #[test]
    fn entries_in_use_are_not_evicted() {
        let mut lru = Lru::new(10);
        lru.insert("a", 1, 4);
        lru.insert("b", 2, 4);
        // "a" is the oldest but in use: "b" goes, and the total may pass the budget.
        assert_eq!(lru.insert_keeping("c", 3, 4, |k| *k == "a"), vec!["b"]);
        assert_eq!(lru.insert_keeping("d", 4, 4, |k| *k == "a" || *k == "c"), Vec::<&str>::new());
        assert_eq!(lru.used(), 12);
        assert!(lru.contains(&"a") && lru.contains(&"c") && lru.contains(&"d"));
    }

    #[test]
    fn a_removed_entry_gives_back_its_size() {
        let mut lru = Lru::new(10);
        lru.insert("a", 1, 4);
        lru.insert("b", 2, 4);
        assert_eq!(lru.remove(&"a"), Some(1));
        assert_eq!((lru.used(), lru.len(), lru.remove(&"a")), (4, 1, None));
    }

    #[test]
    fn reinserting_replaces_the_size() {
        let mut lru = Lru::new(10);
        lru.insert("a", 1, 8);
        lru.insert("a", 2, 2);
        assert_eq!(lru.used(), 2);
        assert_eq!(lru.get(&"a"), Some(&2));
    }
}
