//! Test keys, and only test keys: the JWKS the targets verify against and the signers that mint tokens
//! from fuzzed headers and claims.
//!
//! - `ed-1`: the Ed25519 key of RFC 8037 appendix A.1 (public test vector).
//! - `ec-1`: a P-256 key generated for this harness; it signs nothing but fuzz inputs.
//! - `rsa-1`: the public half of a 2048-bit RSA key generated for the seed tokens in
//!   `corpus/token/`; its private half was discarded after signing them.
//! - an Ed25519 key without `kid` derived from a fixed seed, so that `kid`-less lookups have a wrong
//!   candidate to try first.

use mcp_authz::jwt::base64url;
use serde_json::{Value, json};

pub const ED25519_KID: &str = "ed-1";
pub const ED25519_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
pub const ED25519_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

pub const P256_KID: &str = "ec-1";
pub const P256_D: &str = "sPZ5ZoXy-REunb-u6zWGebcTlHlhOlX6MHuIoIFVHCQ";
pub const P256_X: &str = "xpVHTGD6SaylPEd-YsyZMfxOmUwjD7i6U7N1q1D8s4o";
pub const P256_Y: &str = "LgJ0AEgHqt3Xt7qhaDjnsEGekYuMmDhPXlN-ffCALII";

pub const RSA_KID: &str = "rsa-1";
pub const RSA_N: &str = "0-k5vebyxJleIvX02HL3XjiTqANqsOx-xWSh7jiB4Yv7sMPQoyhAqybUjRTiqvHkwZKlX_OX_LafAecSLK1M8HN6DhW12fWiOhWNJk_ubDGCZN5xEU_-eMy0h7jqG2_DrgVBCVNE8G2HdHiIkKVLIAO_9WBOUIeFlQ8c_nBomvUy13wPJqYtH8U7gtJXjdyPr5uMaZRAvGF4nYkAJk-ledDrEx2YZGaSkVPz9l4twyoc8PaXnckaqX3_doKEZQzwl4FeW4rWxW0KfT31yokUhvh_yx4L8M3vIaDma1lTX4ac8a1jtzjDF4kED-qWL-iKrki43VbjjGDLkHlS-TsiKw";

/// Seed of the unrelated, `kid`-less Ed25519 key.
const OTHER_ED25519_SEED: [u8; 32] = [7; 32];

fn decode(s: &str) -> Vec<u8> {
    base64url::decode(s).expect("test key constants are base64url")
}

pub fn ed25519_pair() -> ed25519_compact::KeyPair {
    let seed = ed25519_compact::Seed::from_slice(&decode(ED25519_D)).expect("32-byte seed");
    ed25519_compact::KeyPair::from_seed(seed)
}

pub fn p256_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&decode(P256_D)).expect("P-256 scalar")
}

pub fn other_ed25519_x() -> String {
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(OTHER_ED25519_SEED));
    base64url::encode(pair.pk.as_ref())
}

pub fn ed25519_jwk() -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": ED25519_KID, "x": ED25519_X, "alg": "EdDSA", "use": "sig"})
}

pub fn p256_jwk() -> Value {
    json!({"kty": "EC", "crv": "P-256", "kid": P256_KID, "x": P256_X, "y": P256_Y})
}

/// The main provider's key set: the unrelated `kid`-less key first, so a `kid`-less token tries it first.
pub fn jwks() -> Value {
    json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": other_ed25519_x()},
        ed25519_jwk(),
        p256_jwk(),
        {"kty": "RSA", "kid": RSA_KID, "n": RSA_N, "e": "AQAB", "use": "sig"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
    ]})
}

/// Which test key signs a minted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Ed25519,
    P256,
}

impl Signer {
    pub fn alg(self) -> &'static str {
        match self {
            Signer::Ed25519 => "EdDSA",
            Signer::P256 => "ES256",
        }
    }

    pub fn kid(self) -> &'static str {
        match self {
            Signer::Ed25519 => ED25519_KID,
            Signer::P256 => P256_KID,
        }
    }

    /// `base64url(header).base64url(payload).base64url(signature)` over the bytes as given.
    pub fn mint(self, header: &[u8], payload: &[u8]) -> String {
        let signing_input = format!("{}.{}", base64url::encode(header), base64url::encode(payload));
        let signature = match self {
            Signer::Ed25519 => ed25519_pair().sk.sign(signing_input.as_bytes(), None).to_vec(),
            Signer::P256 => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = p256_key().sign(signing_input.as_bytes());
                signature.to_bytes().to_vec()
            }
        };
        format!("{signing_input}.{}", base64url::encode(&signature))
    }
}
