//! Helpers shared by the integration tests: base64url, JWK builders and provider configurations.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mcp_authz::config::{self, Config};
use mcp_authz::jwt::base64url;
use serde_json::{Value, json};
use std::rc::Rc;

pub const ISSUER: &str = "https://idp.example.test";
pub const AUDIENCE: &str = "mcp-server";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64url::encode(bytes.as_ref())
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64url::decode(s).unwrap_or_else(|| panic!("not strict base64url: {s:?}"))
}

/// Big-endian integer without leading zero bytes (JWK `n`/`e` are minimal, RFC 7518 section 6.3.1).
pub fn trim_be(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

pub fn rsa_jwk(kid: Option<&str>, n: &[u8], e: &[u8]) -> Value {
    let mut jwk = json!({"kty": "RSA", "n": b64(trim_be(n)), "e": b64(trim_be(e))});
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk
}

/// EC JWK from an uncompressed SEC1 point (`04 || x || y`).
pub fn ec_jwk(kid: Option<&str>, crv: &str, uncompressed: &[u8]) -> Value {
    assert_eq!(uncompressed[0], 0x04, "uncompressed SEC1 point expected");
    let size = (uncompressed.len() - 1) / 2;
    let (x, y) = uncompressed[1..].split_at(size);
    let mut jwk = json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)});
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk
}

pub fn ed25519_jwk(kid: Option<&str>, x: &[u8]) -> Value {
    let mut jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)});
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk
}

/// A one-provider configuration document. `provider_extra` fields are merged into the provider object.
pub fn provider_config_json(jwks: Value, provider_extra: Value) -> Value {
    let mut provider = json!({
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks": {"inline": jwks},
    });
    if let Value::Object(extra) = provider_extra {
        for (k, v) in extra {
            provider[k] = v;
        }
    }
    json!({"providers": [provider]})
}

pub fn parse_config(doc: &Value) -> Result<Rc<Config>, config::ConfigError> {
    config::parse(doc.to_string().as_bytes()).map(Rc::new)
}

/// Splits a compact JWS into (signing input, header JSON, signature bytes); None unless it is three
/// parts of strict base64url with a JSON-object header.
pub fn split_jws(token: &str) -> Option<(&str, Value, Vec<u8>)> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let header: Value = serde_json::from_slice(&base64url::decode(parts[0])?).ok()?;
    if !header.is_object() {
        return None;
    }
    let signature = base64url::decode(parts[2])?;
    let signing_input = &token[..parts[0].len() + 1 + parts[1].len()];
    Some((signing_input, header, signature))
}
