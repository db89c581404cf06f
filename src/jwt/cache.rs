//! Verified-token cache, one per worker (like `jwt_authn`'s `jwt_cache_config`).
//!
//! A signature verification costs milliseconds in Wasm; a lookup costs a hash of the token. Entries are
//! only made for fully valid tokens, are dropped when they expire, and the whole cache is cleared when a
//! key set changes so that a removed key cannot keep a token alive. Bounded, oldest evicted first.

use super::Principal;
use crate::bounded::BoundedMap;
use std::rc::Rc;

pub struct TokenCache {
    entries: BoundedMap<Rc<str>, Rc<Principal>>,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        TokenCache { entries: BoundedMap::new(max_entries) }
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
        if !self.entries.contains_key(token) {
            self.entries.insert(Rc::from(token), principal);
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
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
    fn zero_size_disables() {
        let mut c = TokenCache::new(0);
        c.insert("a", principal(None));
        assert!(c.get("a", 0, 0).is_none());
    }
}
