//! Exchanged tokens shared by the workers of one Envoy process (Envoy's shared data, one store per
//! `vm_id`), so that `--concurrency N` makes one callout per key per token lifetime, not one per worker.
//!
//! Each worker's own cache (`cache.rs`) answers first. On a miss, before calling out, a worker reads the
//! key's slot here: a usable token is taken as is; a callout for the same key in flight on another worker
//! (a lease) is waited for; otherwise the worker takes the lease (compare-and-swap) and calls out, then
//! stores the token, or frees the slot if the exchange failed (failures are never shared).
//!
//! Envoy's shared data cannot delete a key, so records live in a fixed number of slots chosen by the key
//! hash: memory stays bounded whatever the token churn. Two keys in one slot evict each other, which
//! costs a callout, never a wrong token: a slot names the key it holds.
//!
//! This module decides; `filter::exchange` reads and writes shared data.

use super::Callout;
use super::cache::{self, Key};
use serde::{Deserialize, Serialize};

/// Upper bound on slots, whatever `cache.max_entries` says: a slot holds one token (a few KiB at most).
pub const MAX_SLOTS: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Hex SHA-256 key of the record; empty for a free slot.
    pub key: String,
    pub token: Option<String>,
    /// Unix ms until which the token may be used (the cache margin already taken off).
    pub usable_until_ms: u64,
    /// Unix ms until which a worker's callout for `key` is in flight.
    pub lease_until_ms: u64,
}

/// What a worker finds in the slot for its key.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Token {
        token: String,
        usable_until_ms: u64,
    },
    /// Another worker is exchanging this key until then.
    Leased {
        until_ms: u64,
    },
    Free,
}

/// A set of process-wide slots: its shared-data names (`{namespace}|{index}`) and how many there are
/// (0: off). Exchanged tokens and introspection answers live in separate sets, so that a flood of one
/// cannot evict the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pub namespace: &'static str,
    pub count: usize,
}

impl Slots {
    pub fn exchange(count: usize) -> Slots {
        Slots { namespace: "mcp_authz.v1.exchange", count: count.min(MAX_SLOTS) }
    }

    pub fn introspection(count: usize) -> Slots {
        Slots { namespace: "mcp_authz.v1.introspection", count: count.min(MAX_SLOTS) }
    }
}

/// The shared-data key of the slot for `key` among `slots`.
pub fn slot_name(key: &Key, slots: Slots) -> String {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&key[..8]);
    let index = u64::from_be_bytes(prefix) % slots.count.max(1) as u64;
    format!("{}|{index}", slots.namespace)
}

pub fn key_hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The process-wide key of an exchange: the worker cache's key (mode, target, subject) and the exact
/// callouts of every step (cluster, headers, body), so that two filter configurations sharing a `vm_id`
/// (or one before and after a reload) but sending different exchanges never share an answer.
pub fn shared_key(local: &Key, callouts: &[Callout]) -> Key {
    let local_hex = key_hex(local);
    let bodies: Vec<_> = callouts.iter().map(|c| String::from_utf8_lossy(&c.body)).collect();
    let counts: Vec<String> = callouts.iter().map(|c| c.headers.len().to_string()).collect();
    let mut parts: Vec<&str> = vec!["shared.v2", &local_hex];
    for ((callout, body), count) in callouts.iter().zip(&bodies).zip(&counts) {
        // The header count keeps step boundaries unambiguous.
        parts.push(count);
        parts.push(&callout.cluster);
        for (name, value) in &callout.headers {
            parts.push(name);
            parts.push(value);
        }
        parts.push(body);
    }
    cache::key(&parts)
}

impl Slot {
    /// A missing or unreadable record is a free slot.
    pub fn decode(bytes: Option<&[u8]>) -> Slot {
        bytes.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn find(&self, key_hex: &str, now_ms: u64) -> Found {
        if self.key != key_hex {
            return Found::Free; // another key's record (or lease): ours may take the slot
        }
        match &self.token {
            Some(token) if now_ms < self.usable_until_ms => {
                Found::Token { token: token.clone(), usable_until_ms: self.usable_until_ms }
            }
            _ if now_ms < self.lease_until_ms => Found::Leased { until_ms: self.lease_until_ms },
            _ => Found::Free,
        }
    }

    pub fn leased(key_hex: &str, until_ms: u64) -> Slot {
        Slot { key: key_hex.to_string(), token: None, usable_until_ms: 0, lease_until_ms: until_ms }
    }

    pub fn filled(key_hex: &str, token: &str, usable_until_ms: u64) -> Slot {
        Slot { key: key_hex.to_string(), token: Some(token.to_string()), usable_until_ms, lease_until_ms: 0 }
    }

    /// Whether this record is the lease `key_hex` took (so its holder may free or fill it).
    pub fn is_lease_of(&self, key_hex: &str) -> bool {
        self.key == key_hex && self.token.is_none() && self.lease_until_ms != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::cache::key;

    #[test]
    fn slots_are_bounded_and_stable() {
        let k = key(&["rfc8693", "sts", "subject"]);
        assert_eq!(slot_name(&k, Slots::exchange(16)), slot_name(&k, Slots::exchange(16)));
        let names: std::collections::HashSet<String> =
            (0..1000).map(|i| slot_name(&key(&[&i.to_string()]), Slots::exchange(16))).collect();
        assert_eq!(names.len(), 16);
        assert_eq!(slot_name(&k, Slots::exchange(0)), "mcp_authz.v1.exchange|0");
        assert_eq!(slot_name(&k, Slots::introspection(1)), "mcp_authz.v1.introspection|0");
        assert_eq!(Slots::introspection(1_000_000).count, MAX_SLOTS);
    }

    #[test]
    fn shared_key_depends_on_the_whole_callout() {
        let local = key(&["rfc8693", "sts", "subject"]);
        let callout = Callout { cluster: "sts".into(), headers: vec![], body: b"a=1".to_vec(), timeout_ms: 1 };
        let other_body = Callout { body: b"a=2".to_vec(), ..callout.clone() };
        let other_cluster = Callout { cluster: "sts2".into(), ..callout.clone() };
        let k = shared_key(&local, std::slice::from_ref(&callout));
        assert_eq!(k, shared_key(&local, &[Callout { timeout_ms: 9, ..callout.clone() }]));
        assert_ne!(k, shared_key(&local, std::slice::from_ref(&other_body)));
        assert_ne!(k, shared_key(&local, std::slice::from_ref(&other_cluster)));
        assert_ne!(k, shared_key(&key(&["other"]), std::slice::from_ref(&callout)));
        let chain = shared_key(&local, &[callout.clone(), other_body.clone()]);
        assert_ne!(k, chain, "a later step is part of the key");
        assert_ne!(chain, shared_key(&local, &[callout.clone(), other_cluster]));
    }

    #[test]
    fn token_until_usable_then_free() {
        let hex = key_hex(&key(&["a"]));
        let slot = Slot::filled(&hex, "t", 1_000);
        assert_eq!(slot.find(&hex, 999), Found::Token { token: "t".into(), usable_until_ms: 1_000 });
        assert_eq!(slot.find(&hex, 1_000), Found::Free);
    }

    #[test]
    fn lease_until_it_runs_out() {
        let hex = key_hex(&key(&["a"]));
        let slot = Slot::leased(&hex, 5_000);
        assert!(slot.is_lease_of(&hex));
        assert_eq!(slot.find(&hex, 4_999), Found::Leased { until_ms: 5_000 });
        assert_eq!(slot.find(&hex, 5_000), Found::Free);
    }

    #[test]
    fn another_keys_record_is_never_used() {
        let (a, b) = (key_hex(&key(&["a"])), key_hex(&key(&["b"])));
        assert_eq!(Slot::filled(&a, "t", u64::MAX).find(&b, 0), Found::Free);
        assert_eq!(Slot::leased(&a, u64::MAX).find(&b, 0), Found::Free);
        assert!(!Slot::filled(&a, "t", 1).is_lease_of(&a));
    }

    #[test]
    fn records_round_trip_and_garbage_is_free() {
        let slot = Slot::filled("ab", "t", 7);
        assert_eq!(Slot::decode(Some(&slot.encode())), slot);
        assert_eq!(Slot::decode(Some(b"junk")), Slot::default());
        assert_eq!(Slot::decode(None).find("ab", 0), Found::Free);
    }
}
