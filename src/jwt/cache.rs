//! Verified-token cache, one per worker (like `jwt_authn`'s `jwt_cache_config`).
//!
//! A signature verification costs milliseconds in Wasm; a lookup costs a hash of the token. Entries are
//! only made for fully valid tokens, are dropped when they expire, and the whole cache is cleared when a
//! key set changes so that a removed key cannot keep a token alive. Bounded, oldest evicted first.
//!
//! [`RefusedTokens`] is its negative counterpart: a token refused after its signature was checked is
//! remembered by its SHA-256, so the same forged token sent again costs a hash, not a verification.

use super::{Principal, Rejection};
use crate::bounded::BoundedMap;
use sha2::{Digest, Sha256};
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

/// Upper bound of [`RefusedTokens`]: a flood of distinct forged tokens only ever evicts its own entries,
/// and 1024 digests (~50 KiB with the map) is plenty for the same few tokens replayed.
pub const MAX_REFUSED_ENTRIES: usize = 1024;

/// Tokens refused for a reason that cannot change while the key sets stay as they are. Keyed by the
/// token's SHA-256, so a stored entry holds no usable token and a hash collision is out of reach. Cleared
/// with the verified cache whenever a key set changes (a key that arrives later may verify the token).
pub struct RefusedTokens {
    entries: BoundedMap<[u8; 32], Rejection>,
}

impl RefusedTokens {
    pub fn new(max_entries: usize) -> Self {
        RefusedTokens { entries: BoundedMap::new(max_entries.min(MAX_REFUSED_ENTRIES)) }
    }

    /// Whether `why` stays true for the same token and keys: checked after the signature (the refusals
    /// before it cost less than the hash) and not one that time can lift (`nbf`/`iat` in the future).
    pub fn lasting(why: Rejection) -> bool {
        matches!(
            why,
            Rejection::InvalidSignature
                | Rejection::AlgorithmKeyMismatch
                | Rejection::Expired
                | Rejection::MissingExp
                | Rejection::AudienceNotAllowed
                | Rejection::BadClaim
        )
    }

    pub fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    pub fn get(&self, digest: &[u8; 32]) -> Option<Rejection> {
        self.entries.get(digest).copied()
    }

    pub fn insert(&mut self, digest: [u8; 32], why: Rejection) {
        if Self::lasting(why) {
            self.entries.insert(digest, why);
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
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

    #[test]
    fn refused_tokens_remember_only_lasting_refusals_by_digest() {
        let mut r = RefusedTokens::new(10);
        let forged = RefusedTokens::digest("a.b.c");
        r.insert(forged, Rejection::InvalidSignature);
        r.insert(RefusedTokens::digest("d.e.f"), Rejection::NotYetValid);
        r.insert(RefusedTokens::digest("g.h.i"), Rejection::Malformed);
        assert_eq!(r.get(&forged), Some(Rejection::InvalidSignature));
        assert_eq!(r.len(), 1, "not-yet-valid can be lifted by time; malformed is cheaper than the hash");
        assert_eq!(r.get(&RefusedTokens::digest("a.b.d")), None);
        r.clear();
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn refused_tokens_are_bounded() {
        let mut r = RefusedTokens::new(usize::MAX);
        for i in 0..(MAX_REFUSED_ENTRIES + 10) {
            r.insert(RefusedTokens::digest(&i.to_string()), Rejection::InvalidSignature);
        }
        assert_eq!(r.len(), MAX_REFUSED_ENTRIES);
        let mut disabled = RefusedTokens::new(0);
        disabled.insert(RefusedTokens::digest("a"), Rejection::InvalidSignature);
        assert_eq!(disabled.len(), 0, "token_cache.max_entries 0 disables both caches");
    }
}
