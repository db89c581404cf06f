//! JWKS (RFC 7517) parsing into a [`KeySet`].
//!
//! Keys this filter cannot or must not use (encryption keys, symmetric keys, unsupported curves, RSA
//! outside policy) are skipped and reported, not fatal: a provider may publish more kinds of keys than one
//! relying party uses. A set with no usable key at all is an error, so a broken JWKS response never
//! replaces a working one.

use super::base64url;
use super::signature::{Algorithm, VerifyingKey};
use serde_json::Value;
use std::fmt;

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    pub key: VerifyingKey,
}

impl Jwk {
    /// Whether this key may verify a token whose header says `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.key.supports(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
    /// Why keys were skipped, for the log line written when the set is loaded.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    NotJson(String),
    NoKeysArray,
    NoUsableKey(String),
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            JwksError::NotJson(e) => write!(f, "JWKS is not valid JSON ({e})"),
            JwksError::NoKeysArray => f.write_str("JWKS has no \"keys\" array"),
            JwksError::NoUsableKey(why) => write!(f, "JWKS has no usable signing key ({why})"),
        }
    }
}

/// At most this many keys are kept from one set: bounds the work a token without `kid` can cause.
pub const MAX_KEYS: usize = 32;

impl KeySet {
    pub fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
        let doc = crate::json_strict::parse(bytes).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NoKeysArray)?;
        let mut set = KeySet::default();
        for (i, entry) in entries.iter().enumerate() {
            if set.keys.len() == MAX_KEYS {
                set.skipped.push(format!("keys beyond the first {MAX_KEYS} usable ones"));
                break;
            }
            match parse_jwk(entry) {
                Ok(jwk) => set.keys.push(jwk),
                Err(why) => set.skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if set.keys.is_empty() {
            let why =
                if set.skipped.is_empty() { "the keys array is empty".to_string() } else { set.skipped.join("; ") };
            return Err(JwksError::NoUsableKey(why));
        }
        Ok(set)
    }

    /// Keys that may verify a token with this header: those with its `kid`, plus (as Envoy's `jwt_authn`
    /// does) keys published without a `kid` whose type fits `alg`; for a token without `kid`, every key
    /// whose type fits `alg`.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| match (kid, k.kid.as_deref()) {
            (Some(kid), Some(key_kid)) => key_kid == kid,
            _ => k.accepts(alg),
        })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn parse_jwk(v: &Value) -> Result<Jwk, String> {
    let obj = v.as_object().ok_or("not an object")?;
    let text = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("\"{name}\" is not a string")),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let s = text(name)?.ok_or_else(|| format!("missing \"{name}\""))?;
        base64url::decode(s).ok_or_else(|| format!("\"{name}\" is not base64url"))
    };
    if let Some(usage) = text("use")?
        && usage != "sig"
    {
        return Err(format!("use is {usage:?}, not \"sig\""));
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|o| o == "verify"));
        if !verifies {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let kid = text("kid")?.map(str::to_owned);
    let kty = text("kty")?.ok_or("missing \"kty\"")?;
    let key = match kty {
        "RSA" => VerifyingKey::rsa(&bytes("n")?, &bytes("e")?),
        "EC" => match text("crv")? {
            Some("P-256") => VerifyingKey::p256(&bytes("x")?, &bytes("y")?),
            Some("P-384") => VerifyingKey::p384(&bytes("x")?, &bytes("y")?),
            other => return Err(format!("EC curve {other:?} is not supported")),
        },
        "OKP" => match text("crv")? {
            Some("Ed25519") => VerifyingKey::ed25519(&bytes("x")?),
            other => return Err(format!("OKP curve {other:?} is not supported")),
        },
        other => return Err(format!("key type {other:?} is not supported")),
    }
    .map_err(|e| e.to_string())?;
    let alg = match text("alg")? {
        None => None,
        Some(name) => {
            let alg = Algorithm::from_name(name).ok_or_else(|| format!("alg {name:?} is not supported"))?;
            if !key.supports(alg) {
                return Err(format!("alg {name} does not fit key type {kty}"));
            }
            Some(alg)
        }
    };
    Ok(Jwk { kid, alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"; // RFC 8037 A.2

    #[test]
    fn parses_usable_keys_and_reports_skipped_ones() {
        let json = format!(
            r#"{{"keys":[
                {{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","kid":"ed"}},
                {{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}},
                {{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","use":"enc"}},
                {{"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"}}
            ]}}"#
        );
        let set = KeySet::parse(json.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("ed"));
        assert_eq!(set.skipped.len(), 3, "{:?}", set.skipped);
    }

    #[test]
    fn refuses_sets_without_usable_keys() {
        assert_eq!(
            KeySet::parse(br#"{"keys":[]}"#).unwrap_err(),
            JwksError::NoUsableKey("the keys array is empty".into())
        );
        assert_eq!(KeySet::parse(br#"{"nokeys":1}"#).unwrap_err(), JwksError::NoKeysArray);
        assert!(matches!(KeySet::parse(b"<html>"), Err(JwksError::NotJson(_))));
        assert!(matches!(KeySet::parse(br#"{"keys":[{"kty":"oct","k":"AA"}]}"#), Err(JwksError::NoUsableKey(_))));
    }

    #[test]
    fn alg_pinned_by_jwk_must_fit_key() {
        let json = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","alg":"RS256"}}]}}"#);
        assert!(KeySet::parse(json.as_bytes()).is_err());
        let json = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","alg":"EdDSA"}}]}}"#);
        let set = KeySet::parse(json.as_bytes()).unwrap();
        assert!(set.keys[0].accepts(Algorithm::EdDSA));
        assert!(!set.keys[0].accepts(Algorithm::ES256));
    }

    #[test]
    fn candidates_by_kid_or_by_type() {
        let json = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","kid":"a"}},{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","kid":"b"}}]}}"#
        );
        let set = KeySet::parse(json.as_bytes()).unwrap();
        assert_eq!(set.candidates(Some("b"), Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(Some("zzz"), Algorithm::EdDSA).count(), 0);
        assert_eq!(set.candidates(None, Algorithm::EdDSA).count(), 2);
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 0);
        let json = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}"}}]}}"#);
        let set = KeySet::parse(json.as_bytes()).unwrap();
        assert_eq!(set.candidates(Some("any"), Algorithm::EdDSA).count(), 1, "kid-less keys are tried");
        assert_eq!(set.candidates(Some("any"), Algorithm::ES256).count(), 0);
    }
}
