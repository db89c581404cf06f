//! Compact JWS parsing (RFC 7515 section 7.1), before any key is involved.
//!
//! Everything here is unauthenticated input: the result only says which provider and key to try.
//! The header is checked for what must never be honoured (`alg: none`, HMAC, unknown `crit`, JWE).
//! `jku`, `x5u`, `jwk` and `x5c` are ignored: keys come only from the configured JWKS.

use super::Rejection;
use super::base64url;
use super::signature::Algorithm;
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    /// `base64url(header) "." base64url(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

/// Parses a compact JWS. `max_bytes` is checked before anything is decoded.
pub fn parse(token: &str, max_bytes: usize) -> Result<UnverifiedToken<'_>, Rejection> {
    if token.len() > max_bytes {
        return Err(Rejection::TokenTooLarge);
    }
    if !token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(Rejection::Malformed);
    }
    let parts: Vec<&str> = token.splitn(6, '.').collect();
    match parts.len() {
        3 => {}
        5 => return Err(Rejection::Encrypted),
        _ => return Err(Rejection::Malformed),
    }
    let (header_b64, payload_b64, signature_b64) = (parts[0], parts[1], parts[2]);
    if signature_b64.is_empty() {
        return Err(Rejection::InvalidSignature);
    }
    let header = decode_object(header_b64)?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name).ok_or(Rejection::AlgorithmNotAllowed)?,
        _ => return Err(Rejection::Malformed),
    };
    // No extension is understood, so any `crit` makes the token unacceptable (RFC 7515 4.1.11).
    if header.contains_key("crit") {
        return Err(Rejection::UnsupportedCritical);
    }
    if header.contains_key("enc") || header.contains_key("zip") {
        return Err(Rejection::Encrypted);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Rejection::Malformed),
    };
    let claims = decode_object(payload_b64)?;
    let signature = base64url::decode(signature_b64).ok_or(Rejection::Malformed)?;
    Ok(UnverifiedToken {
        signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
        signature,
        alg,
        kid,
        claims,
    })
}

fn decode_object(part: &str) -> Result<Map<String, Value>, Rejection> {
    let bytes = base64url::decode(part).ok_or(Rejection::Malformed)?;
    match crate::json_strict::parse(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Rejection::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64url::encode(s.as_bytes())
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = token(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#, r#"{"iss":"i"}"#);
        let u = parse(&t, 8192).unwrap();
        assert_eq!(u.alg, Algorithm::ES256);
        assert_eq!(u.kid.as_deref(), Some("k1"));
        assert_eq!(u.claims["iss"], "i");
        assert_eq!(u.signature, b"sig");
        assert_eq!(u.signing_input, t.rsplit_once('.').unwrap().0);
    }

    #[test]
    fn refuses_none_and_hmac_in_any_spelling() {
        for alg in ["none", "None", "NONE", "nOnE", "HS256", "HS512", ""] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(parse(&t, 8192).unwrap_err(), Rejection::AlgorithmNotAllowed, "{alg}");
        }
    }

    #[test]
    fn refuses_structural_problems() {
        let ok_header = b64(r#"{"alg":"ES256"}"#);
        let ok_payload = b64("{}");
        let cases = [
            (format!("{ok_header}.{ok_payload}"), Rejection::Malformed),
            (format!("{ok_header}.{ok_payload}.c2ln.x"), Rejection::Malformed),
            (format!("{ok_header}.{ok_payload}.c2ln.x.y"), Rejection::Encrypted),
            (format!("{ok_header}.{ok_payload}."), Rejection::InvalidSignature),
            (format!("{ok_header}=.{ok_payload}.c2ln"), Rejection::Malformed),
            (format!(" {ok_header}.{ok_payload}.c2ln"), Rejection::Malformed),
            (format!("{ok_header}.{ok_payload}.c2l"), Rejection::Malformed),
            (token(r#"{"alg":"ES256","alg":"RS256"}"#, "{}"), Rejection::Malformed),
            (token(r#"{"alg":"ES256"}"#, r#"{"sub":"a","sub":"b"}"#), Rejection::Malformed),
            (token(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#, "{}"), Rejection::UnsupportedCritical),
            (token(r#"{"alg":"ES256","kid":7}"#, "{}"), Rejection::Malformed),
            (token(r#"{"alg":"ES256"}"#, "[1]"), Rejection::Malformed),
            (token(r#"{"alg":["ES256"]}"#, "{}"), Rejection::Malformed),
            (token(r#"{"alg":"ES256","zip":"DEF"}"#, "{}"), Rejection::Encrypted),
        ];
        for (t, want) in cases {
            assert_eq!(parse(&t, 8192).unwrap_err(), want, "{t}");
        }
    }

    #[test]
    fn size_limit_is_checked_first() {
        let t = "a".repeat(100);
        assert_eq!(parse(&t, 99).unwrap_err(), Rejection::TokenTooLarge);
    }

    #[test]
    fn key_url_headers_are_ignored_not_followed() {
        let t = token(r#"{"alg":"ES256","jku":"https://evil/jwks","x5u":"https://evil","jwk":{"kty":"EC"}}"#, "{}");
        let u = parse(&t, 8192).unwrap();
        assert_eq!(u.kid, None);
    }
}
