//! MCP sessions bound to the caller that created them.
//!
//! A stateful MCP server names a session in the `Mcp-Session-Id` header of its answer to `initialize`,
//! and clients send it back on every request. The id is not a credential: MCP's security guidance says
//! servers must not use it for authentication and should bind it to the user. An upstream behind this
//! filter only sees that the token was valid, not whose session it is, so the filter binds each session
//! id it sees issued to the issuer and subject of the verified token that asked for it, and refuses the
//! session to anyone else.
//!
//! Bindings live in Envoy's shared data, so every worker sees them: a fixed number of slots (shared data
//! cannot delete a key), each holding a few bindings chosen by the session id's hash, the soonest to
//! expire evicted first. A binding expires after `idle_timeout` without use. Only hashes are stored, never
//! a session id or a subject. This module decides; `filter::sessions` reads and writes shared data.

use sha2::{Digest, Sha256};

/// Bindings per slot.
pub const WAYS: usize = 4;

/// What the configuration says about sessions (`mcp.sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Off: session ids pass as they are (for upstreams that bind sessions themselves).
    pub bind: bool,
    /// A session id the filter has no binding for: adopted by the first caller that presents it (for
    /// several Envoys without session affinity, or after a restart), or refused with 404 so that the
    /// client starts a new session.
    pub adopt_unknown: bool,
    pub max_sessions: usize,
    pub idle_timeout_ms: u64,
}

impl SessionPolicy {
    /// Slots in shared data: `max_sessions` bindings, [`WAYS`] per slot.
    pub fn slots(&self) -> usize {
        self.max_sessions.div_ceil(WAYS).max(1)
    }
}

/// A hash that stands for a session id or a caller in shared data.
pub type Fingerprint = String;

/// The fingerprint of a session id.
pub fn session_fingerprint(session_id: &str) -> Fingerprint {
    hex16(&Sha256::digest(session_id.as_bytes()))
}

/// The fingerprint of a caller: the issuer and subject of its verified token. A token without `sub`
/// stands for its issuer's subject-less callers as one.
pub fn caller_fingerprint(issuer: &str, subject: &str) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update((issuer.len() as u64).to_be_bytes());
    hasher.update(issuer.as_bytes());
    hasher.update(subject.as_bytes());
    hex16(&hasher.finalize())
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The shared-data key of the slot that holds `session`'s binding, among `slots`.
pub fn slot_name(session: &str, slots: usize) -> String {
    let prefix = u64::from_str_radix(session.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    format!("mcp_authz.v1.session|{}", prefix % slots.max(1) as u64)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Session fingerprint.
    pub s: Fingerprint,
    /// Caller fingerprint.
    pub c: Fingerprint,
    /// Unix ms after which the binding is forgotten.
    pub e: u64,
}

/// One slot's bindings, stored as one line per binding: `<session> <caller> <expiry ms>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    pub b: Vec<Binding>,
}

/// Whose a session is, as far as the filter knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The caller's own. `refresh`: the binding should be written again with a later expiry.
    Caller {
        refresh: bool,
    },
    Other,
    Unknown,
}

impl Slot {
    /// A missing record is an empty slot; an unreadable line is skipped.
    pub fn decode(bytes: Option<&[u8]>) -> Slot {
        let text = bytes.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
        let b = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let (s, c, e) = (parts.next()?, parts.next()?, parts.next()?.parse().ok()?);
                Some(Binding { s: s.to_string(), c: c.to_string(), e })
            })
            .collect();
        Slot { b }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.b.iter().map(|b| format!("{} {} {}\n", b.s, b.c, b.e)).collect::<String>().into_bytes()
    }

    pub fn owner(&self, session: &str, caller: &str, now_ms: u64, policy: &SessionPolicy) -> Owner {
        match self.b.iter().find(|b| b.s == session && now_ms < b.e) {
            None => Owner::Unknown,
            // Written again once half the idle time has passed: one write per half period, not per request.
            Some(b) if b.c == caller => {
                Owner::Caller { refresh: b.e.saturating_sub(now_ms) < policy.idle_timeout_ms / 2 }
            }
            Some(_) => Owner::Other,
        }
    }

    /// This slot with `session` bound to `caller` until `now + idle_timeout`: replaces the session's
    /// binding if it has one, else takes an expired place, else evicts the binding that expires first.
    pub fn bind(&self, session: &str, caller: &str, now_ms: u64, policy: &SessionPolicy) -> Slot {
        let binding = Binding { s: session.into(), c: caller.into(), e: now_ms.saturating_add(policy.idle_timeout_ms) };
        let mut b: Vec<Binding> = self.b.iter().filter(|b| b.s != session && now_ms < b.e).cloned().collect();
        if b.len() >= WAYS {
            b.sort_by_key(|b| b.e);
            b.drain(..=b.len() - WAYS);
        }
        b.push(binding);
        Slot { b }
    }

    /// This slot without `session`'s binding (the session was ended with `DELETE`).
    pub fn unbind(&self, session: &str) -> Slot {
        Slot { b: self.b.iter().filter(|b| b.s != session).cloned().collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SessionPolicy {
        SessionPolicy { bind: true, adopt_unknown: false, max_sessions: 8, idle_timeout_ms: 1_000 }
    }

    #[test]
    fn a_session_is_its_creators_until_it_expires() {
        let p = policy();
        let (s, alice, bob) = (
            session_fingerprint("sess-1"),
            caller_fingerprint("https://idp", "alice"),
            caller_fingerprint("https://idp", "bob"),
        );
        let slot = Slot::default().bind(&s, &alice, 0, &p);
        assert_eq!(slot.owner(&s, &alice, 100, &p), Owner::Caller { refresh: false });
        assert_eq!(slot.owner(&s, &alice, 600, &p), Owner::Caller { refresh: true });
        assert_eq!(slot.owner(&s, &bob, 100, &p), Owner::Other);
        assert_eq!(slot.owner(&session_fingerprint("sess-2"), &alice, 100, &p), Owner::Unknown);
        assert_eq!(slot.owner(&s, &alice, 1_000, &p), Owner::Unknown, "expired");
        let refreshed = slot.bind(&s, &alice, 900, &p);
        assert_eq!(refreshed.b.len(), 1);
        assert_eq!(refreshed.owner(&s, &alice, 1_300, &p), Owner::Caller { refresh: false });
        assert_eq!(refreshed.unbind(&s).owner(&s, &alice, 1_500, &p), Owner::Unknown);
    }

    #[test]
    fn the_same_subject_of_another_issuer_is_another_caller() {
        assert_ne!(caller_fingerprint("https://a", "alice"), caller_fingerprint("https://b", "alice"));
        // The issuer's length is part of the hash: ("ab", "c") is not ("a", "bc").
        assert_ne!(caller_fingerprint("ab", "c"), caller_fingerprint("a", "bc"));
    }

    #[test]
    fn a_full_slot_evicts_the_binding_that_expires_first() {
        let p = policy();
        let caller = caller_fingerprint("i", "s");
        let mut slot = Slot::default();
        for (i, t) in [(0, 40), (1, 10), (2, 30), (3, 20)] {
            slot = slot.bind(&format!("s{i}"), &caller, t, &p);
        }
        slot = slot.bind("s4", &caller, 50, &p);
        assert_eq!(slot.b.len(), WAYS);
        assert_eq!(slot.owner("s1", &caller, 50, &p), Owner::Unknown, "expires first: evicted");
        for s in ["s0", "s2", "s3", "s4"] {
            assert!(matches!(slot.owner(s, &caller, 50, &p), Owner::Caller { .. }), "{s}");
        }
        // Expired bindings make room before anything live is evicted.
        let later = slot.bind("s5", &caller, 1_035, &p);
        assert_eq!(later.b.len(), 3, "s2 and s3 had expired; s0 (until 1040) and s4 (until 1050) stay");
    }

    #[test]
    fn records_round_trip_and_garbage_is_an_empty_slot() {
        let p = policy();
        let slot = Slot::default().bind("a", "b", 1, &p);
        assert_eq!(Slot::decode(Some(&slot.encode())), slot);
        assert_eq!(Slot::decode(Some(b"not a record")), Slot::default());
        assert_eq!(Slot::decode(None), Slot::default());
    }

    #[test]
    fn slots_are_bounded() {
        let p = SessionPolicy { max_sessions: 10, ..policy() };
        assert_eq!(p.slots(), 3);
        for i in 0..100 {
            let name = slot_name(&session_fingerprint(&i.to_string()), p.slots());
            assert!(["0", "1", "2"].iter().any(|n| name == format!("mcp_authz.v1.session|{n}")), "{name}");
        }
    }
}
