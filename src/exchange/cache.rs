//! Exchanged-token cache with single-flight, per worker.
//!
//! Keyed on a SHA-256 of everything that determines the answer (target, subject token, connector
//! parameters), so no raw token is a map key. Entries live until `expires_in` minus a safety margin, never
//! beyond the subject token's own `exp`; the map is bounded (oldest evicted). While a callout for a key is
//! in flight, other requests for the same key wait for it instead of making their own.

use crate::bounded::BoundedMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub type Key = [u8; 32];

pub fn key(parts: &[&str]) -> Key {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

struct Entry {
    token: String,
    expires_at_ms: u64,
}

pub struct ExchangeCache {
    margin_ms: u64,
    entries: BoundedMap<Key, Entry>,
    /// Keys with a callout in flight, and the streams (context ids) waiting for each.
    in_flight: HashMap<Key, Vec<u32>>,
}

/// What a request should do for its key.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    Hit(String),
    /// Make the callout; others will wait for it.
    Lead,
    /// Someone else's callout is in flight: wait for it.
    Follow,
}

impl ExchangeCache {
    pub fn new(max_entries: usize, margin_seconds: u64) -> Self {
        ExchangeCache {
            margin_ms: margin_seconds * 1000,
            entries: BoundedMap::new(max_entries),
            in_flight: HashMap::new(),
        }
    }

    pub fn lookup(&mut self, key: &Key, now_ms: u64, context_id: u32) -> Lookup {
        if let Some(e) = self.entries.get(key) {
            if now_ms < e.expires_at_ms {
                return Lookup::Hit(e.token.clone());
            }
            self.entries.remove(key);
        }
        match self.in_flight.get_mut(key) {
            Some(waiting) => {
                waiting.push(context_id);
                Lookup::Follow
            }
            None => {
                self.in_flight.insert(*key, Vec::new());
                Lookup::Lead
            }
        }
    }

    /// Until when a token that lives `lifetime_ms` from `now_ms` may be reused: its lifetime minus the
    /// safety margin. None if that leaves nothing. `lifetime_ms` is already capped by the subject token's
    /// expiry.
    pub fn usable_until(&self, now_ms: u64, lifetime_ms: u64) -> Option<u64> {
        let usable = lifetime_ms.saturating_sub(self.margin_ms);
        (usable > 0).then(|| now_ms.saturating_add(usable))
    }

    /// Ends the flight for `key`: caches the token (if any, with its `usable_until` time) and returns the
    /// waiting streams.
    pub fn complete(&mut self, key: &Key, token: Option<(&str, u64)>) -> Vec<u32> {
        if let Some((token, usable_until_ms)) = token {
            self.entries.insert(*key, Entry { token: token.to_string(), expires_at_ms: usable_until_ms });
        }
        self.in_flight.remove(key).unwrap_or_default()
    }

    /// A follower gave up (its stream ended): stop tracking it.
    pub fn forget(&mut self, context_id: u32) {
        for waiting in self.in_flight.values_mut() {
            waiting.retain(|id| *id != context_id);
        }
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
    fn single_flight_then_hit_until_expiry_minus_margin() {
        let mut c = ExchangeCache::new(10, 30);
        let k = key(&["rfc8693", "sts", "subject"]);
        assert_eq!(c.lookup(&k, 0, 1), Lookup::Lead);
        assert_eq!(c.lookup(&k, 0, 2), Lookup::Follow);
        assert_eq!(c.lookup(&k, 0, 3), Lookup::Follow);
        let until = c.usable_until(1_000, 300_000).unwrap();
        assert_eq!(c.complete(&k, Some(("new", until))), vec![2, 3]);
        assert_eq!(c.lookup(&k, 200_000, 4), Lookup::Hit("new".into()));
        assert_eq!(c.lookup(&k, 271_000, 5), Lookup::Lead, "expired: 300 s minus 30 s margin");
    }

    #[test]
    fn failures_and_short_lifetimes_are_not_cached() {
        let mut c = ExchangeCache::new(10, 30);
        let k = key(&["a"]);
        assert_eq!(c.lookup(&k, 0, 1), Lookup::Lead);
        assert!(c.complete(&k, None).is_empty());
        assert_eq!(c.lookup(&k, 0, 1), Lookup::Lead);
        assert_eq!(c.usable_until(0, 20_000), None, "lifetime below the margin");
        assert_eq!(c.usable_until(0, 30_001), Some(1));
    }

    #[test]
    fn bounded() {
        let mut c = ExchangeCache::new(2, 0);
        for i in 0..5u32 {
            let k = key(&[&i.to_string()]);
            c.lookup(&k, 0, i);
            c.complete(&k, Some(("t", 1_000)));
        }
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn key_parts_are_unambiguous() {
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
    }
}
