//! A map with a fixed capacity that evicts the oldest insertion first.
//!
//! Both caches (verified tokens, exchanged tokens) need bounded memory with O(1) work per operation and
//! no ordering an attacker can steer; first-in-first-out gives that without bookkeeping on reads.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

pub struct BoundedMap<K, V> {
    capacity: usize,
    entries: HashMap<K, V>,
    /// Insertion order; may still hold keys removed early (bounded by compaction in `insert`).
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// A capacity of 0 stores nothing.
    pub fn new(capacity: usize) -> Self {
        BoundedMap { capacity, entries: HashMap::new(), order: VecDeque::new() }
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.entries.get(key)
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.entries.remove(key)
    }

    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.entries.contains_key(key)
    }

    /// Inserts, evicting the oldest entries while full. Replacing a key keeps its original age.
    pub fn insert(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        if let Some(slot) = self.entries.get_mut(&key) {
            *slot = value;
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        if self.order.len() >= self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
        self.order.push_back(key.clone());
        self.entries.insert(key, value);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    pub fn order_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first() {
        let mut m = BoundedMap::new(2);
        m.insert("a", 1);
        m.insert("b", 2);
        m.insert("a", 10); // replacing keeps its age
        m.insert("c", 3);
        assert_eq!((m.get("a"), m.get("b"), m.get("c")), (None, Some(&2), Some(&3)));
    }

    #[test]
    fn order_stays_bounded_when_entries_are_removed_early() {
        let mut m = BoundedMap::new(3);
        for i in 0..1000 {
            m.insert(i, ());
            m.remove(&i);
        }
        assert!(m.order_len() <= 6);
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut m = BoundedMap::new(0);
        m.insert(1, 1);
        assert!(m.is_empty());
    }
}
