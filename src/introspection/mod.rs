//! Opaque tokens, by OAuth 2.0 Token Introspection (RFC 7662): which tokens go to a provider's
//! introspection endpoint, the callout (a form POST authenticated as the filter's client), the answer
//! read strictly, how long it may be reused, and the [`Principal`] it yields. The answer's claims are
//! checked exactly as a verified JWT's are (`jwt::claims::validate`): same issuer, audience and time
//! checks, same scopes, same claim headers and rule inputs. `filter::introspect` makes the callouts.
//!
//! Answers are kept under a SHA-256 of the token (never the token): in each worker's cache and in the
//! process-wide slots of `exchange::shared`, through the same single-flight as token exchange.

pub mod config;

use crate::exchange::Callout;
use crate::exchange::cache::{self, Key};
use crate::jwt::Rejection;
use crate::jwt::claims::{self, Principal};
use crate::jwt::provider::Provider;
use config::{Settings, Tokens};
use serde_json::{Map, Value};

/// Introspection answers larger than this are refused as garbage (503): an answer is a few hundred
/// bytes, and an active one is kept whole, so this bounds each cache record.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024;

/// Tokens shorter than this are refused without a callout: no authorization server issues them, and
/// each callout spends the filter's client credentials.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Introspection callouts one worker keeps in flight at most; above it requests are answered 503 (a
/// flood of random tokens, which no cache absorbs, must not turn into a flood at the endpoint).
pub const MAX_CALLOUTS_IN_FLIGHT: usize = 256;

/// What the endpoint said about a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `active: true`, with the other members of the answer as claims.
    Active(Map<String, Value>),
    Inactive,
}

/// Why there is no usable answer: the request is answered 503, never allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No HTTP answer: connection refused or reset, no healthy host, or the callout timed out.
    NoAnswer,
    /// The cluster refused the callout (is it defined?).
    Refused,
    Status(u16),
    /// Not a JSON object with a boolean `active`.
    Garbage,
    /// Another worker's introspection did not finish in time.
    TimedOut,
    /// [`MAX_CALLOUTS_IN_FLIGHT`] callouts are already in flight on this worker.
    Busy,
}

impl Unavailable {
    /// For the log line: what happened, never what was sent.
    pub fn describe(self) -> String {
        match self {
            Unavailable::NoAnswer => "no answer (connection failed or timed out)".into(),
            Unavailable::Refused => "the cluster refused the callout; is it defined?".into(),
            Unavailable::Status(code) => format!("answered HTTP {code}"),
            Unavailable::Garbage => "answer is not a JSON object with a boolean \"active\"".into(),
            Unavailable::TimedOut => "the introspection in progress did not complete".into(),
            Unavailable::Busy => "too many introspections in flight on this worker".into(),
        }
    }
}

/// Whether `token` goes to this introspection endpoint rather than to JWT verification. A JWS compact
/// serialization has three dot-separated parts and a JWE five; anything else is opaque.
pub fn introspects(settings: &Settings, token: &str) -> bool {
    settings.tokens == Tokens::All || !matches!(token.bytes().filter(|b| *b == b'.').count(), 2 | 4)
}

/// Whether `token` may be an access token at all: an RFC 6750 `b64token` (`A-Za-z0-9-._~+/`, then
/// `=` padding) of at least [`MIN_TOKEN_BYTES`]. Anything else is refused before a callout.
pub fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
    token.len() >= MIN_TOKEN_BYTES && !body.is_empty() && body.bytes().all(allowed)
}

/// The key of a token's answer, locally and process-wide: the endpoint and client asked, and the token.
pub fn cache_key(settings: &Settings, token: &str) -> Key {
    cache::key(&[
        "introspection.v1",
        &settings.endpoint.cluster,
        &settings.endpoint.authority,
        &settings.endpoint.path,
        settings.endpoint.client_id.as_deref().unwrap_or(""),
        token,
    ])
}

/// The RFC 7662 request: `token` and `token_type_hint=access_token`, with the client's credentials.
pub fn request(settings: &Settings, token: &str) -> Callout {
    let form = vec![("token", token), ("token_type_hint", "access_token")];
    settings.endpoint.callout(form, settings.timeout_ms)
}

/// Reads the endpoint's answer (`status` None: no HTTP answer).
pub fn read_answer(status: Option<u16>, body: &[u8]) -> Result<Answer, Unavailable> {
    match status {
        None => return Err(Unavailable::NoAnswer),
        Some(200) => {}
        Some(code) => return Err(Unavailable::Status(code)),
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(doc)) => decode_object(doc),
        _ => Err(Unavailable::Garbage),
    }
}

fn decode_object(mut doc: Map<String, Value>) -> Result<Answer, Unavailable> {
    match doc.remove("active") {
        Some(Value::Bool(true)) => Ok(Answer::Active(doc)),
        Some(Value::Bool(false)) => Ok(Answer::Inactive),
        _ => Err(Unavailable::Garbage),
    }
}

/// The answer as kept in the caches: the endpoint's own document (`body`) for an active token, read
/// again on use; an empty string for "inactive".
pub fn cache_form(answer: &Answer, body: &[u8]) -> String {
    match answer {
        Answer::Active(_) => String::from_utf8_lossy(body).into_owned(),
        Answer::Inactive => String::new(),
    }
}

/// Reads a cached answer back; a record that does not read is no answer (503, never an allow).
pub fn decode(cached: &str) -> Result<Answer, Unavailable> {
    if cached.is_empty() {
        return Ok(Answer::Inactive);
    }
    read_answer(Some(200), cached.as_bytes())
}

/// Until when (Unix ms) an answer may be reused: an active one until its `exp`, never longer than
/// `max_ttl_seconds`; an inactive one for `negative_ttl_seconds`. None: not worth keeping.
pub fn reusable_until_ms(settings: &Settings, answer: &Answer, now_ms: u64) -> Option<u64> {
    let until = match answer {
        Answer::Inactive => now_ms.saturating_add(settings.negative_ttl_seconds * 1000),
        Answer::Active(claims) => {
            let cap = now_ms.saturating_add(settings.max_ttl_seconds * 1000);
            match claims.get("exp").and_then(Value::as_i64) {
                Some(exp) => cap.min((exp.max(0) as u64).saturating_mul(1000)),
                None => cap,
            }
        }
    };
    (until > now_ms).then_some(until)
}

/// Whether an answer another worker kept (reusable until `usable_until_ms`) was kept under this
/// `max_ttl_seconds`: one reusable for longer was kept under a higher one (before a reload lowered it)
/// and is not reused; it is asked again. (Cutting it to `now + max_ttl` would renew it on every read.)
pub fn kept_within_max_ttl(settings: &Settings, usable_until_ms: u64, now_ms: u64) -> bool {
    usable_until_ms <= now_ms.saturating_add(settings.max_ttl_seconds * 1000)
}

/// The caller an active answer describes, checked like a verified JWT's claims. The endpoint speaks for
/// its provider's issuer: an answer without `iss` is taken as that issuer's; one naming another issuer
/// is refused. A `token_type` other than a bearer access token (a refresh token, say) is refused.
/// `active: false` is [`Rejection::Inactive`].
pub fn principal(answer: Answer, provider: &Provider, index: usize, now: i64) -> Result<Principal, Rejection> {
    let Answer::Active(mut claims) = answer else { return Err(Rejection::Inactive) };
    match claims.get("token_type") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("access_token") => {}
        Some(_) => return Err(Rejection::BadClaim),
    }
    claims.entry("iss").or_insert_with(|| Value::String(provider.issuer.clone()));
    claims::validate(claims, provider, index, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::token_endpoint::{ClientAuth, Endpoint, Secret};
    use crate::jwt::jwk::KeySet;
    use crate::jwt::provider::JwksSource;
    use base64::Engine;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn settings(auth: ClientAuth, tokens: Tokens) -> Settings {
        Settings {
            endpoint: Endpoint {
                cluster: "idp".into(),
                authority: "idp.test".into(),
                path: "/introspect".into(),
                client_id: Some("gw id".into()),
                client_secret: Some(Secret("s:cret".into())),
                client_auth: auth,
            },
            tokens,
            timeout_ms: 1_500,
            cache_max_entries: 10,
            max_ttl_seconds: 300,
            negative_ttl_seconds: 10,
        }
    }

    fn provider() -> Provider {
        Provider {
            name: "p".into(),
            issuer: "https://idp.test".into(),
            audiences: vec!["mcp".into()],
            algorithms: vec![],
            jwks: JwksSource::Inline(KeySet::default()),
            clock_skew_seconds: 0,
            require_exp: true,
            max_token_bytes: 4096,
            introspection: None,
        }
    }

    fn active(doc: Value) -> Answer {
        read_answer(Some(200), doc.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn opaque_tokens_are_introspected_and_jwts_only_when_all() {
        let opaque = settings(ClientAuth::Basic, Tokens::Opaque);
        assert!(introspects(&opaque, "2YotnFZFEjr1zCsicMWpAA"));
        assert!(introspects(&opaque, "a.b"));
        assert!(!introspects(&opaque, "h.p.s"));
        assert!(!introspects(&opaque, "a.b.c.d.e"));
        assert!(introspects(&settings(ClientAuth::Basic, Tokens::All), "h.p.s"));
    }

    #[test]
    fn request_authenticates_the_client_as_configured() {
        let basic = request(&settings(ClientAuth::Basic, Tokens::Opaque), "tok+en");
        assert_eq!(basic.body, b"token=tok%2Ben&token_type_hint=access_token");
        assert_eq!((basic.cluster.as_str(), basic.timeout_ms), ("idp", 1_500));
        let auth = basic.headers.iter().find(|(n, _)| n == "authorization").unwrap();
        let pair = base64::engine::general_purpose::STANDARD.decode(&auth.1["Basic ".len()..]).unwrap();
        assert_eq!(pair, b"gw+id:s%3Acret");
        assert!(basic.headers.contains(&(":path".into(), "/introspect".into())));
        let post = request(&settings(ClientAuth::Post, Tokens::Opaque), "t");
        assert_eq!(post.body, b"token=t&token_type_hint=access_token&client_id=gw+id&client_secret=s%3Acret");
        assert!(!post.headers.iter().any(|(n, _)| n == "authorization"));
    }

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(read_answer(Some(200), br#"{"active":false,"sub":"x"}"#), Ok(Answer::Inactive));
        let Answer::Active(claims) = active(json!({"active": true, "sub": "alice"})) else { panic!() };
        assert_eq!(claims.get("sub"), Some(&json!("alice")));
        assert!(!claims.contains_key("active"));
        for garbage in [&b"<html>"[..], b"[]", b"{}", br#"{"active":"true"}"#, br#"{"active":1}"#, b""] {
            assert_eq!(read_answer(Some(200), garbage), Err(Unavailable::Garbage), "{garbage:?}");
        }
        assert_eq!(read_answer(Some(500), br#"{"active":true}"#), Err(Unavailable::Status(500)));
        assert_eq!(read_answer(Some(401), b""), Err(Unavailable::Status(401)));
        assert_eq!(read_answer(None, b""), Err(Unavailable::NoAnswer));
    }

    #[test]
    fn cached_form_round_trips() {
        let body = json!({"active": true, "sub": "alice", "exp": NOW}).to_string();
        let answer = read_answer(Some(200), body.as_bytes()).unwrap();
        assert_eq!(decode(&cache_form(&answer, body.as_bytes())), Ok(answer));
        let inactive = br#"{"active":false,"sub":"x"}"#;
        assert_eq!(decode(&cache_form(&Answer::Inactive, inactive)), Ok(Answer::Inactive));
        assert_eq!(decode("[1]"), Err(Unavailable::Garbage));
    }

    #[test]
    fn reuse_is_bounded_by_exp_and_the_configured_times() {
        let s = settings(ClientAuth::Basic, Tokens::Opaque);
        let now_ms = NOW as u64 * 1000;
        let soon = active(json!({"active": true, "exp": NOW + 60}));
        assert_eq!(reusable_until_ms(&s, &soon, now_ms), Some(now_ms + 60_000));
        let late = active(json!({"active": true, "exp": NOW + 86_400}));
        assert_eq!(reusable_until_ms(&s, &late, now_ms), Some(now_ms + 300_000));
        assert_eq!(reusable_until_ms(&s, &active(json!({"active": true})), now_ms), Some(now_ms + 300_000));
        assert_eq!(reusable_until_ms(&s, &active(json!({"active": true, "exp": NOW - 1})), now_ms), None);
        assert_eq!(reusable_until_ms(&s, &Answer::Inactive, now_ms), Some(now_ms + 10_000));
        // Another worker's answer, kept under a longer max_ttl_seconds before a reload, is not reused.
        assert!(!kept_within_max_ttl(&s, now_ms + 300_001, now_ms));
        assert!(kept_within_max_ttl(&s, now_ms + 300_000, now_ms));
    }

    #[test]
    fn only_b64tokens_of_a_plausible_length_are_introspected() {
        for ok in ["2YotnFZFEjr1zCsicMWpAA", "v4.local.abcdefghijkl", "a-b_c~d+e/f.g1234==", "AAAAAAAAAAAAAAAA"] {
            assert!(is_b64token(ok), "{ok}");
        }
        for bad in [
            "x",
            "short-token-1",
            "a token with sp",
            "tok\u{e9}nnnnnnnnnnnnnnn",
            "=AAAAAAAAAAAAAAAA",
            "AAAAAAAA=AAAAAAAA",
            "================",
            "AAAAAAAAAAAAAAA,",
        ] {
            assert!(!is_b64token(bad), "{bad}");
        }
    }

    #[test]
    fn claims_are_checked_like_a_jwts() {
        let p = provider();
        let ok = active(json!({"active": true, "sub": "alice", "aud": "mcp", "exp": NOW + 60, "scope": "a b",
                               "client_id": "app"}));
        let principal = principal(ok, &p, 0, NOW).unwrap();
        assert_eq!(principal.subject.as_deref(), Some("alice"));
        assert_eq!(principal.scopes, vec!["a", "b"]);
        assert_eq!(principal.claim("iss"), Some(&json!("https://idp.test")));
        assert_eq!(principal.expires_at, Some(NOW + 60));
        let check = |doc: Value| super::principal(active(doc), &p, 0, NOW).unwrap_err();
        assert_eq!(check(json!({"active": true, "aud": "other", "exp": NOW + 60})), Rejection::AudienceNotAllowed);
        assert_eq!(check(json!({"active": true, "exp": NOW + 60})), Rejection::AudienceNotAllowed);
        assert_eq!(check(json!({"active": true, "aud": "mcp"})), Rejection::MissingExp);
        assert_eq!(check(json!({"active": true, "aud": "mcp", "exp": NOW - 1})), Rejection::Expired);
        assert_eq!(
            check(json!({"active": true, "aud": "mcp", "exp": NOW + 9, "nbf": NOW + 5})),
            Rejection::NotYetValid
        );
        assert_eq!(
            check(json!({"active": true, "aud": "mcp", "exp": NOW + 9, "iss": "https://evil"})),
            Rejection::IssuerNotAllowed
        );
        assert_eq!(check(json!({"active": true, "aud": "mcp", "exp": NOW + 9, "scope": ["a"]})), Rejection::BadClaim);
        // A refresh token is active too, but it is not an access token.
        for not_access in [json!("refresh_token"), json!("N_A"), json!(1)] {
            let doc = json!({"active": true, "aud": "mcp", "exp": NOW + 9, "token_type": not_access});
            assert_eq!(check(doc), Rejection::BadClaim);
        }
        for access in ["Bearer", "access_token", "ACCESS_TOKEN"] {
            let doc = json!({"active": true, "aud": "mcp", "exp": NOW + 9, "token_type": access});
            assert!(super::principal(active(doc), &p, 0, NOW).is_ok(), "{access}");
        }
        assert_eq!(super::principal(Answer::Inactive, &p, 0, NOW).unwrap_err(), Rejection::Inactive);
    }
}
