//! Token target: the whole authentication path, from the `Authorization` header value through parsing,
//! provider and key selection, signature verification and claims validation to the verified-token cache
//! and the claim headers.
//!
//! Input: `E` or `P`, a header JSON, `\n`, a payload JSON: the bytes are signed as they are with the
//! Ed25519 (`E`) or P-256 (`P`) test key, so that fuzzed claims reach validation. Anything else is the
//! raw `Authorization` header value.
//!
//! Invariants: a token is verified exactly when an independent model of the claim rules (below) accepts
//! it (for signed inputs; for raw inputs, verified implies accepted); the cache returns the same verdict
//! for the same token; claim headers never carry control characters; refusals are well-formed replies.

use crate::keys::{self, Signer};
use crate::{NOW, replies, split_line};
use mcp_authz::authn::{self, HeadDecision, RequestHead};
use mcp_authz::config::Config;
use mcp_authz::jwt::{Authenticator, Principal, Verdict, token};
use serde_json::{Map, Value, json};
use std::rc::Rc;

pub const MAIN_ISSUER: &str = "https://idp.example.test";
pub const PARTNER_ISSUER: &str = "https://partner.example.test";
pub const REMOTE_ISSUER: &str = "https://remote.example.test";

/// Three providers: the main one with every kind of key, a partner limited to ES256 without `exp`, and
/// one whose remote keys never arrive.
pub fn config_json() -> Value {
    json!({
        "providers": [
            {"name": "main", "issuer": MAIN_ISSUER, "audiences": ["mcp-server"],
             "jwks": {"inline": keys::jwks()}, "max_token_bytes": 2048},
            {"name": "partner", "issuer": PARTNER_ISSUER, "audiences": ["mcp-server", "partner"],
             "algorithms": ["ES256"], "jwks": {"inline": {"keys": [keys::p256_jwk()]}},
             "require_exp": false, "clock_skew_seconds": 0},
            {"name": "remote", "issuer": REMOTE_ISSUER, "audiences": ["mcp-server"],
             "jwks": {"remote": {"cluster": "idp", "authority": "idp.example.test", "path": "/jwks"}}}
        ],
        "paths": [{"prefix": "/mcp"}],
        "claim_headers": [
            {"claim": "sub", "header": "x-user-sub"},
            {"claim": "scope", "header": "x-user-scopes"},
            {"claim": "groups", "header": "x-groups"},
            {"claim": "realm_access.roles", "header": "x-roles"},
            {"claim": "email", "header": "x-email"}
        ],
        "resource_metadata": {"resource": "https://mcp.example.test/mcp"},
        "token_cache": {"max_entries": 8}
    })
}

thread_local! {
    static CONFIG: Rc<Config> = Rc::new(
        mcp_authz::config::parse(config_json().to_string().as_bytes()).expect("the token target's config is valid"),
    );
}

pub fn run(data: &[u8]) {
    CONFIG.with(|config| match data.first() {
        Some(b'E') => signed(config, Signer::Ed25519, &data[1..]),
        Some(b'P') => signed(config, Signer::P256, &data[1..]),
        _ => raw(config, data),
    })
}

fn raw(config: &Rc<Config>, data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else { return };
    let head = RequestHead { method: "POST", path: "/mcp", token_values: vec![value], ..Default::default() };
    match authn::decide_head(config, &head) {
        HeadDecision::Authenticate(token) => {
            let verdict = authenticate(config, &token);
            if let Verdict::Verified { principal, .. } = &verdict {
                let parsed = token::parse(&token, usize::MAX).expect("a verified token parses");
                let model = model(config, &Value::Object(header_of(&token)), &parsed.claims, token.len())
                    .unwrap_or_else(|why| panic!("verified, but the model refuses it: {why}"));
                assert_eq!(**principal, model, "principal differs from the model's");
            }
        }
        HeadDecision::Deny(denial) => replies::check(&denial.reply),
        other => panic!("a guarded POST with a token header must be authenticated or denied: {other:?}"),
    }
}

fn signed(config: &Rc<Config>, signer: Signer, data: &[u8]) {
    let (header, payload) = split_line(data);
    let token = signer.mint(header, payload);
    let verdict = authenticate(config, &token);
    let header = mcp_authz::json_strict::parse(header).ok();
    let claims = match mcp_authz::json_strict::parse(payload) {
        Ok(Value::Object(claims)) => Some(claims),
        _ => None,
    };
    let expected = match (&header, &claims) {
        (Some(header @ Value::Object(h)), Some(claims)) => model(config, header, claims, token.len())
            .and_then(|principal| key_fits(signer, h, principal.provider).map(|()| principal)),
        _ => Err("header or payload is not a JSON object".into()),
    };
    match (&verdict, expected) {
        (Verdict::Verified { principal, .. }, Ok(model)) => assert_eq!(**principal, model),
        (Verdict::Verified { .. }, Err(why)) => panic!("verified, but the model refuses it: {why}"),
        (_, Ok(_)) => panic!("the model accepts it, but the verdict is {verdict:?}"),
        (_, Err(_)) => {}
    }
}

/// Authenticates twice (the second time from the cache) and checks what follows from the verdict.
fn authenticate(config: &Rc<Config>, token: &str) -> Verdict {
    let mut authenticator = Authenticator::new(config.clone());
    let verdict = authenticator.authenticate(token, NOW);
    let again = authenticator.authenticate(token, NOW);
    match (&verdict, &again) {
        (Verdict::Verified { principal: first, cached: false }, Verdict::Verified { principal, cached: true }) => {
            assert_eq!(first, principal, "cache returned another principal");
        }
        (Verdict::Verified { .. }, _) => panic!("a verified token was not served from the cache: {again:?}"),
        // A lasting refusal is remembered; the reason must not change.
        (Verdict::Rejected(first), Verdict::RejectedAgain(second)) => assert_eq!(first, second, "refusal changed"),
        _ => assert_eq!(verdict, again, "a refusal changed on the second try"),
    }
    match &verdict {
        Verdict::Verified { principal, .. } => {
            if let Ok(headers) = authn::claim_headers(config, principal) {
                for (name, value) in headers {
                    let Some(value) = value else { continue };
                    assert!(
                        value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80),
                        "control character in claim header {name}: {value:?}"
                    );
                    if name == "x-user-scopes" {
                        assert_eq!(value, principal.scopes.join(" "));
                    }
                }
            }
        }
        Verdict::RejectedAgain(why) => panic!("refused from memory on a first try: {why:?}"),
        Verdict::Rejected(why) => replies::check(&mcp_authz::http_reply::invalid_token(&config.challenge, *why)),
        // Keys missing (only the remote provider's), or a `kid` the set does not have (any provider).
        Verdict::KeysNotLoaded { provider } => {
            assert_eq!(config.providers[*provider].issuer, REMOTE_ISSUER, "provider {provider} lacks keys");
        }
        Verdict::UnknownKey { .. } => {}
    }
    verdict
}

fn header_of(token: &str) -> Map<String, Value> {
    let part = token.split('.').next().unwrap_or("");
    let bytes = mcp_authz::jwt::base64url::decode(part).expect("a verified token's header is base64url");
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => map,
        _ => panic!("a verified token's header is a JSON object"),
    }
}

/// Whether the key that signed a minted token is one the provider would pick for this header: the
/// provider must hold it, the header must name its algorithm, and a `kid`, if any, must be its own.
fn key_fits(signer: Signer, header: &Map<String, Value>, provider: usize) -> Result<(), String> {
    let held = match provider {
        0 => true,
        1 => signer == Signer::P256,
        _ => false,
    };
    if !held {
        return Err(format!("provider {provider} does not hold the {signer:?} key"));
    }
    if header.get("alg").and_then(Value::as_str) != Some(signer.alg()) {
        return Err("alg does not name the signing key's algorithm".into());
    }
    match header.get("kid") {
        None => Ok(()),
        Some(Value::String(kid)) if kid == signer.kid() => Ok(()),
        Some(_) => Err("kid names another key".into()),
    }
}

/// The claim rules, written from RFC 7515/7519 and docs/configuration.md rather than from the code:
/// the principal a token must yield, or why it must be refused.
fn model(config: &Config, header: &Value, claims: &Map<String, Value>, token_len: usize) -> Result<Principal, String> {
    let header = header.as_object().ok_or("header is not an object")?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or("no alg")?;
    for forbidden in ["crit", "enc", "zip"] {
        if header.contains_key(forbidden) {
            return Err(format!("header has {forbidden}"));
        }
    }
    if header.get("kid").is_some_and(|k| !k.is_string()) {
        return Err("kid is not a string".into());
    }
    let iss = claims.get("iss").and_then(Value::as_str).ok_or("iss is not a string")?;
    let index = config.providers.iter().position(|p| p.issuer == iss).ok_or("unknown issuer")?;
    let provider = &config.providers[index];
    if index == 2 {
        return Err("the remote provider has no keys".into());
    }
    if token_len > provider.max_token_bytes {
        return Err("token too large".into());
    }
    if !provider.algorithms.iter().any(|a| a.name() == alg) {
        return Err(format!("alg {alg} not allowed"));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => provider.audiences.contains(aud),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            list.iter().any(|a| provider.audiences.iter().any(|want| a == want.as_str()))
        }
        _ => false,
    };
    if !audience_ok {
        return Err("audience".into());
    }
    let skew = provider.clock_skew_seconds as i128;
    let now = NOW as i128;
    let exp = numeric_date(claims, "exp")?;
    match exp {
        None if provider.require_exp => return Err("no exp".into()),
        Some(exp) if now > exp as i128 + skew => return Err("expired".into()),
        _ => {}
    }
    for (name, what) in [("nbf", "not yet valid"), ("iat", "issued in the future")] {
        if numeric_date(claims, name)?.is_some_and(|t| t as i128 > now + skew) {
            return Err(what.into());
        }
    }
    let subject = match claims.get("sub") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("sub is not a string".into()),
    };
    let mut words: Vec<&str> = Vec::new();
    match claims.get("scope") {
        None => {}
        Some(Value::String(s)) => words.extend(s.split(' ')),
        Some(_) => return Err("scope is not a string".into()),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::String(s)) => words.extend(s.split(' ')),
        Some(Value::Array(list)) => {
            for s in list {
                words.push(s.as_str().ok_or("scp holds a non-string")?);
            }
        }
        Some(_) => return Err("scp has the wrong type".into()),
    }
    let mut scopes: Vec<String> = Vec::new();
    for w in words {
        if !w.is_empty() && !scopes.iter().any(|s| s == w) {
            scopes.push(w.to_string());
        }
    }
    Ok(Principal { provider: index, subject, scopes, expires_at: exp, claims: claims.clone() })
}

/// NumericDate: a JSON number of seconds; a fraction is truncated; anything else is refused.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.trunc() as i64)),
            _ => Err(format!("{name} is out of range")),
        },
        Some(_) => Err(format!("{name} is not a number")),
    }
}
