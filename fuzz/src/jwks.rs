//! JWKS target: a key set document as the IdP's JWKS endpoint (or an inline configuration) delivers it,
//! plus the helpers that read the same response: `Cache-Control: max-age` and the shared-data record.
//!
//! Invariants: a parsed set holds 1 to `MAX_KEYS` keys; a key that pins `alg` supports it; key lookup
//! only offers keys with the token's `kid` or, when they fit its algorithm, without one; a signature made
//! by a test key verifies under no other key of the set; the shared-data record round-trips.

use crate::keys;
use mcp_authz::jwks::{self, SharedState};
use mcp_authz::jwt::base64url;
use mcp_authz::jwt::jwk::{KeySet, MAX_KEYS};
use mcp_authz::jwt::signature::{Algorithm, VerifyingKey};

const MESSAGE: &[u8] = b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJmdXp6In0";

struct Genuine {
    ed25519_x: Vec<u8>,
    ed25519_sig: Vec<u8>,
    p256_point: Vec<u8>,
    p256_sig: Vec<u8>,
}

thread_local! {
    static GENUINE: Genuine = {
        use p256::ecdsa::signature::Signer as _;
        let p256 = keys::p256_key();
        let sig: p256::ecdsa::Signature = p256.sign(MESSAGE);
        Genuine {
            ed25519_x: base64url::decode(keys::ED25519_X).expect("constant"),
            ed25519_sig: keys::ed25519_pair().sk.sign(MESSAGE, None).to_vec(),
            p256_point: p256.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            p256_sig: sig.to_bytes().to_vec(),
        }
    };
}

pub fn run(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = jwks::max_age(text);
    }
    let state = SharedState::decode(Some(data));
    assert_eq!(SharedState::decode(Some(&state.encode())), state, "shared state does not round-trip");

    let parsed = KeySet::parse(data);
    assert_eq!(parsed.is_ok(), jwks::parse_body(data).is_ok());
    let set = match parsed {
        Ok(set) => set,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!((1..=MAX_KEYS).contains(&set.keys.len()), "{} keys", set.keys.len());
    assert!(set.skipped.iter().all(|why| !why.is_empty()));
    for jwk in &set.keys {
        if let Some(alg) = jwk.alg {
            assert!(jwk.key.supports(alg), "{jwk:?} pins an algorithm it does not support");
        }
    }
    let mut kids: Vec<Option<&str>> = set.keys.iter().map(|k| k.kid.as_deref()).collect();
    kids.push(Some("no-such-kid"));
    kids.push(None);
    for alg in Algorithm::ALL {
        for kid in &kids {
            for candidate in set.candidates(*kid, alg) {
                let by_kid = kid.is_some() && candidate.kid.as_deref() == *kid;
                assert!(by_kid || (candidate.kid.is_none() || kid.is_none()) && candidate.accepts(alg));
            }
        }
    }
    for kid in kids.iter().flatten() {
        assert_eq!(set.has_kid(kid), set.keys.iter().any(|k| k.kid.as_deref() == Some(*kid)));
    }
    GENUINE.with(|g| {
        for jwk in &set.keys {
            if jwk.accepts(Algorithm::EdDSA) && jwk.key.verify(Algorithm::EdDSA, MESSAGE, &g.ed25519_sig).is_ok() {
                assert!(matches!(&jwk.key, VerifyingKey::Ed25519(pk) if pk.as_ref() == g.ed25519_x.as_slice()));
            }
            if jwk.accepts(Algorithm::ES256) && jwk.key.verify(Algorithm::ES256, MESSAGE, &g.p256_sig).is_ok() {
                assert!(matches!(&jwk.key,
                    VerifyingKey::P256(k) if k.to_sec1_point(false).as_bytes() == g.p256_point.as_slice()));
            }
        }
    });
}
