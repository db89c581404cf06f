//! Verified-token cache, one per worker (like `jwt_authn`'s `jwt_cache_config`).
//!
//! A signature verification costs milliseconds in Wasm; a lookup costs a hash of the token. Entries are
//! only made for fully valid tokens, are dropped when they expire, and the whole cache is cleared when a
//! key set changes so that a removed key cannot keep a token alive. Eviction is first-in-first-out:
//! bounded memory with O(1) work, and no attacker-controlled ordering.

use super::Principal;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

pub struct TokenCache {
    max_entries: usize,
    entries: HashMap<Rc<str>, Rc<Principal>>,
    order: VecDeque<Rc<str>>,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        TokenCache { max_entries, entries: HashMap::new(), order: VecDeque::new() }
    }

    /// The principal for `token` if cached and not expired at `now` (with `skew` seconds of tolerance).
    pub fn get(&mut self, token: &str, now: i64, skew: i64) -> Option<Rc<Principal>> {
        let principal = self.entries.get(token)?;
        if principal.expires_at.is_some_and(|exp| now > exp.saturating_add(skew)) {
            self.entries.remove(token);
            return None;
        }
        Some(principal.clone())
    }

    pub fn insert(&mut self, token: &str, principal: Rc<Principal>) {
        if self.max_entries == 0 || self.entries.contains_key(token) {
            return;
        }
        while self.entries.len() >= self.max_entries {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        // `order` may hold keys already removed on expiry; bound it too.
        if self.order.len() >= self.max_entries.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
        let key: Rc<str> = Rc::from(token);
        self.order.push_back(key.clone());
        self.entries.insert(key, principal);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(exp: Option<i64>) -> Rc<Principal> {
        Rc::new(Principal { provider: 0, subject: None, scopes: vec![], expires_at: exp, claims: Default::default() })
    }

    #[test]
    fn hit_until_expiry_plus_skew() {
        let mut c = TokenCache::new(10);
        c.insert("t", principal(Some(100)));
        assert!(c.get("t", 100, 0).is_some());
        assert!(c.get("t", 110, 10).is_some());
        assert!(c.get("t", 111, 10).is_none());
        assert!(c.is_empty(), "expired entry removed");
    }

    #[test]
    fn evicts_oldest_when_full() {
        let mut c = TokenCache::new(2);
        c.insert("a", principal(None));
        c.insert("b", principal(None));
        c.insert("c", principal(None));
        assert_eq!(c.len(), 2);
        assert!(c.get("a", 0, 0).is_none());
        assert!(c.get("b", 0, 0).is_some() && c.get("c", 0, 0).is_some());
    }

    #[test]
    fn order_queue_stays_bounded_under_churn() {
        let mut c = TokenCache::new(3);
        for i in 0..1000 {
            let t = format!("t{i}");
            c.insert(&t, principal(Some(i)));
            c.get(&t, i + 1, 0); // expires and is removed from the map only
        }
        assert!(c.order.len() <= 6);
    }

    #[test]
    fn zero_size_disables() {
        let mut c = TokenCache::new(0);
        c.insert("a", principal(None));
        assert!(c.get("a", 0, 0).is_none());
    }
}
