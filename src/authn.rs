//! Request-level authentication decisions, without I/O: what to do with a request's head, the answer
//! when keys never came, and the headers set from verified claims. `filter::request` executes them.

use crate::config::Config;
use crate::http_reply::{self, Challenge, LocalReply};
use crate::jwt::{Principal, Rejection};
pub use crate::outcome::{Denial, Reason};
use serde_json::Value;

/// The parts of the request head that decisions need.
#[derive(Debug, Default)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// `:path` including any query string.
    pub path: &'a str,
    /// Every value of the configured token header (normally zero or one).
    pub token_values: Vec<&'a str>,
    pub origin: Option<&'a str>,
    pub access_control_request_method: Option<&'a str>,
}

#[derive(Debug, PartialEq)]
pub enum HeadDecision {
    /// Not a guarded path: forward untouched.
    Bypass,
    /// CORS preflight: browsers never send credentials on it (like `jwt_authn`, let it through).
    Preflight,
    /// Answer locally without authentication (the RFC 9728 metadata document).
    Serve(LocalReply),
    Deny(Denial),
    Authenticate(String),
}

/// The path every decision is made on: the `:path` without query or fragment, read as an upstream would
/// route it (`crate::path`). Envoy forwards the path as the client spelled it, normalised or not, so a
/// spelling whose readings would get different decisions (guarded or not, MCP endpoint or not) is
/// refused: the filter cannot know which reading the upstream makes.
pub fn request_path(config: &Config, raw: &str) -> Result<String, Denial> {
    let without_query = raw.split(['?', '#']).next().unwrap_or("");
    let reading = crate::path::read(without_query);
    if reading.is_ambiguous() {
        let decision = |p: &str| (config.paths.iter().any(|m| m.matches(p)), is_mcp_path(config, p));
        let canonical = decision(&reading.canonical);
        if reading.others.iter().any(|other| decision(other) != canonical) {
            return Err(Denial::new(Reason::AmbiguousPath, http_reply::ambiguous_path()));
        }
    }
    Ok(reading.canonical)
}

/// `head.path` is the path from [`request_path`].
pub fn decide_head(config: &Config, head: &RequestHead) -> HeadDecision {
    let path = head.path.split(['?', '#']).next().unwrap_or("");
    if let Some(meta) = &config.resource_metadata
        && head.method == "GET"
        && meta.well_known_paths.iter().any(|p| p == path)
    {
        return HeadDecision::Serve(http_reply::resource_metadata(&meta.document));
    }
    if head.method == "GET"
        && let Some(jwks) = config.credentials.jwks_at(path)
    {
        return HeadDecision::Serve(http_reply::public_jwks(jwks));
    }
    if !config.paths.iter().any(|m| m.matches(path)) {
        return HeadDecision::Bypass;
    }
    // MCP transport spec: servers must validate Origin (DNS rebinding). Checked before anything else,
    // preflight included, so a browser page from another origin gets nothing from the endpoint.
    if let Some(origin) = head.origin
        && is_mcp_path(config, path)
        && !config.mcp.origin_allowed(origin)
    {
        return deny(
            Reason::OriginNotAllowed,
            crate::mcp::jsonrpc_reply::request_error(403, "Forbidden: Origin not allowed"),
        );
    }
    if head.method == "OPTIONS" && head.origin.is_some() && head.access_control_request_method.is_some() {
        return HeadDecision::Preflight;
    }
    match head.token_values.as_slice() {
        [] => deny(Reason::MissingToken, http_reply::missing_token(&config.challenge)),
        [value] if holds_several_credentials(&config.token.scheme, value) => {
            deny(Reason::MultipleTokens, http_reply::invalid_request("More than one credential was sent"))
        }
        [value] => match extract_token(&config.token.scheme, value) {
            Some(token) => HeadDecision::Authenticate(token.to_string()),
            None => deny(Reason::MissingToken, http_reply::missing_token(&config.challenge)),
        },
        _ => deny(Reason::MultipleTokens, http_reply::invalid_request("More than one credential was sent")),
    }
}

/// `path` without query string.
pub fn is_mcp_path(config: &Config, path: &str) -> bool {
    config.mcp.paths.iter().any(|m| m.matches(path))
}

fn deny(reason: Reason, reply: LocalReply) -> HeadDecision {
    HeadDecision::Deny(Denial { reason, reply })
}

/// `Bearer <token>` → `<token>`; the scheme is case-insensitive (RFC 7235). An empty scheme takes the
/// whole value. Anything else, or an empty token, is "no token".
pub fn extract_token<'a>(scheme: &str, value: &'a str) -> Option<&'a str> {
    let token = if scheme.is_empty() {
        value.trim()
    } else {
        let (given, rest) = value.split_once(' ')?;
        if !given.eq_ignore_ascii_case(scheme) {
            return None;
        }
        rest.trim_start_matches(' ')
    };
    (!token.is_empty()).then_some(token)
}

/// Envoy joins a repeated request header into one value separated by commas, so two `Authorization`
/// headers (or a bearer and a Basic credential) arrive as `Bearer a,Basic b`. A bearer token never holds
/// a comma (RFC 6750 `b64token`), so a comma next to a credential of our scheme means several were sent.
/// A value with commas and no credential of our scheme (`Digest a=b, c=d`) is someone else's: no token.
fn holds_several_credentials(scheme: &str, value: &str) -> bool {
    value.contains(',')
        && (scheme.is_empty() || value.split(',').any(|part| extract_token(scheme, part.trim()).is_some()))
}

/// The final answer for a request whose wait ended without usable keys.
pub fn give_up(challenge: &Challenge, unknown_key: bool, have_keys: bool) -> Denial {
    if unknown_key && have_keys {
        let why = Rejection::UnknownKey;
        Denial::new(Reason::Token(why), http_reply::invalid_token(challenge, why))
    } else {
        Denial::new(Reason::JwksUnavailable, http_reply::keys_unavailable())
    }
}

/// Upstream headers to set from verified claims: `(header, Some(value))`, or `(header, None)` to remove
/// it when the claim is absent. `scope` means the effective scopes (the union of `scope` and `scp` that
/// rules use), so upstreams see the same scopes whichever claim the IdP used. A claim value that cannot
/// be a header value refuses the token.
pub fn claim_headers<'c>(
    config: &'c Config,
    principal: &Principal,
) -> Result<Vec<(&'c str, Option<String>)>, Rejection> {
    let mut out = Vec::with_capacity(config.claim_headers.len());
    for mapping in &config.claim_headers {
        if mapping.claim == "scope" {
            let scopes = (!principal.scopes.is_empty()).then(|| principal.scopes.join(" "));
            if scopes.as_deref().is_some_and(|s| !header_safe(s)) {
                return Err(Rejection::BadClaim);
            }
            out.push((mapping.header.as_str(), scopes));
            continue;
        }
        let value = match principal.claim(&mapping.claim) {
            None | Some(Value::Null) => None,
            Some(v) => Some(header_value(v).ok_or(Rejection::BadClaim)?),
        };
        out.push((mapping.header.as_str(), value));
    }
    Ok(out)
}

fn header_value(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(_) | Value::Bool(_) => Some(i.to_string()),
                    _ => None,
                })
                .collect();
            parts?.join(" ")
        }
        other => other.to_string(),
    };
    header_safe(&text).then_some(text)
}

/// Visible ASCII, space and tab, plus UTF-8 above 0x7f; no control characters (header injection).
fn header_safe(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        crate::config::parse(
            br#"{"providers":[{"issuer":"https://idp","audiences":["a"],"jwks":{"inline":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}}],
                "paths":[{"prefix":"/mcp"}],
                "mcp":{"allowed_origins":["https://app.example.com"]},
                "claim_headers":[{"claim":"sub","header":"x-user-sub"},{"claim":"scope","header":"X-User-Scopes"},{"claim":"groups","header":"x-groups"}],
                "resource_metadata":{"resource":"https://mcp.example.com/mcp"}}"#,
        )
        .unwrap()
    }

    fn head<'a>(method: &'a str, path: &'a str, tokens: Vec<&'a str>) -> RequestHead<'a> {
        RequestHead { method, path, token_values: tokens, ..Default::default() }
    }

    #[test]
    fn unguarded_paths_pass_and_metadata_is_served() {
        let c = config();
        assert_eq!(decide_head(&c, &head("POST", "/other", vec![])), HeadDecision::Bypass);
        for p in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource?x=1"] {
            let HeadDecision::Serve(r) = decide_head(&c, &head("GET", p, vec![])) else { panic!("{p}") };
            assert_eq!(r.status, 200);
            let doc: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
            assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        }
    }

    #[test]
    fn token_extraction() {
        assert_eq!(extract_token("Bearer", "Bearer abc"), Some("abc"));
        assert_eq!(extract_token("Bearer", "bearer  abc"), Some("abc"));
        assert_eq!(extract_token("Bearer", "Basic abc"), None);
        assert_eq!(extract_token("Bearer", "Bearer "), None);
        assert_eq!(extract_token("Bearer", "Bearerabc"), None);
        assert_eq!(extract_token("", " abc "), Some("abc"));
    }

    #[test]
    fn guarded_path_decisions() {
        let c = config();
        let HeadDecision::Deny(d) = decide_head(&c, &head("POST", "/mcp", vec![])) else { panic!() };
        assert_eq!((d.reason, d.reply.status), (Reason::MissingToken, 401));
        let HeadDecision::Deny(d) = decide_head(&c, &head("POST", "/mcp?x", vec!["Bearer a", "Bearer b"])) else {
            panic!()
        };
        assert_eq!((d.reason, d.reply.status), (Reason::MultipleTokens, 400));
        assert_eq!(
            decide_head(&c, &head("POST", "/mcp/x", vec!["Bearer tok"])),
            HeadDecision::Authenticate("tok".into())
        );
        let preflight = RequestHead {
            origin: Some("https://app.example.com"),
            access_control_request_method: Some("POST"),
            ..head("OPTIONS", "/mcp", vec![])
        };
        assert_eq!(decide_head(&c, &preflight), HeadDecision::Preflight);
        let foreign = RequestHead { origin: Some("https://evil.example"), ..head("POST", "/mcp", vec!["Bearer t"]) };
        let HeadDecision::Deny(d) = decide_head(&c, &foreign) else { panic!() };
        assert_eq!((d.reason, d.reply.status), (Reason::OriginNotAllowed, 403));
        let allowed = RequestHead { origin: Some("https://app.example.com"), ..head("POST", "/mcp", vec!["Bearer t"]) };
        assert_eq!(decide_head(&c, &allowed), HeadDecision::Authenticate("t".into()));
    }

    #[test]
    fn several_credentials_joined_by_envoy_are_400() {
        let c = config();
        for value in ["Bearer a,Bearer b", "Bearer a, Basic Zm9vOmJhcg==", "Basic Zm9vOmJhcg==, Bearer a", "Bearer a,b"]
        {
            let HeadDecision::Deny(d) = decide_head(&c, &head("POST", "/mcp", vec![value])) else { panic!("{value}") };
            assert_eq!((d.reason, d.reply.status), (Reason::MultipleTokens, 400), "{value}");
            assert_eq!(d.reply.header("www-authenticate"), Some("Bearer error=\"invalid_request\""));
        }
        // Someone else's scheme with auth-params: not a bearer credential at all.
        let HeadDecision::Deny(d) = decide_head(&c, &head("POST", "/mcp", vec!["Digest a=b, c=d"])) else { panic!() };
        assert_eq!((d.reason, d.reply.status), (Reason::MissingToken, 401));
        assert!(holds_several_credentials("", "a,b"));
        assert!(!holds_several_credentials("Bearer", "Bearer a"));
    }

    #[test]
    fn request_path_is_the_canonical_reading_and_ambiguity_that_matters_is_refused() {
        let c = crate::config::parse(
            br#"{"providers":[{"issuer":"https://idp","audiences":["a"],"jwks":{"inline":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}}],
                "paths":[{"prefix":"/mcp"}]}"#,
        )
        .unwrap();
        for raw in ["/%6dcp", "/%6Dcp?x=1", "/m%63p", "//mcp", "/./mcp", "/x/../mcp", "/MCP"] {
            let path = request_path(&c, raw).unwrap();
            assert!(c.paths[0].matches(&path), "{raw} -> {path}");
        }
        // Readings that would change the decision: refused, whichever way.
        for raw in
            ["/x%2F..%2Fmcp", "/%2Fmcp", "/x%5C..%5Cmcp", "/x\\..\\mcp", "/mcp%2F..%2Fadmin", "/x//../mcp", "/%256dcp"]
        {
            let denial = request_path(&c, raw).unwrap_err();
            assert_eq!((denial.reason, denial.reply.status), (Reason::AmbiguousPath, 400), "{raw}");
        }
        // Ambiguous spellings whose every reading gets the same decision pass on the canonical one.
        assert_eq!(request_path(&c, "/mcp%2Fx").unwrap(), "/mcp%2Fx");
        assert_eq!(request_path(&c, "/static/a;b").unwrap(), "/static/a;b");
    }

    #[test]
    fn claim_headers_from_principal() {
        let c = config();
        let p = Principal {
            provider: 0,
            subject: Some("alice".into()),
            scopes: vec!["a".into(), "b".into()],
            expires_at: None,
            claims: json!({"sub":"alice","scope":"a b"}).as_object().unwrap().clone(),
        };
        let h = claim_headers(&c, &p).unwrap();
        assert_eq!(
            h,
            vec![("x-user-sub", Some("alice".to_string())), ("x-user-scopes", Some("a b".into())), ("x-groups", None)]
        );
        let mut bad = p.clone();
        bad.claims.insert("sub".into(), json!("alice\r\nx-admin: 1"));
        assert_eq!(claim_headers(&c, &bad).unwrap_err(), Rejection::BadClaim);
        bad.claims.insert("sub".into(), json!("alice"));
        // Found by fuzzing (the `token` target): the effective scopes went out unchecked.
        for scope in ["read\0:tasks", "a\r\nx-admin: 1", "b\u{7f}"] {
            let mut p = bad.clone();
            p.scopes.push(scope.into());
            assert_eq!(claim_headers(&c, &p).unwrap_err(), Rejection::BadClaim, "{scope:?}");
        }
        bad.claims.insert("groups".into(), json!(["a", 1, true]));
        assert_eq!(claim_headers(&c, &bad).unwrap()[2].1.as_deref(), Some("a 1 true"));
    }

    #[test]
    fn give_up_is_503_unless_keys_exist_for_an_unknown_kid() {
        let c = config();
        assert_eq!(give_up(&c.challenge, false, false).reply.status, 503);
        assert_eq!(give_up(&c.challenge, true, false).reply.status, 503);
        assert_eq!(give_up(&c.challenge, true, true).reply.status, 401);
    }
}
