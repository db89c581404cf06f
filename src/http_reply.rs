//! Local replies the filter sends instead of forwarding: what clients see when they are refused.
//!
//! Bodies follow the `requireAuth` shape of seed 000 (the gateway + backend pattern users run by hand) (`{"error", "message"}`); challenges follow RFC 6750 and
//! the MCP authorization spec (`resource_metadata` from RFC 9728). No reply carries internal detail.

use crate::jwt::Rejection;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Seconds a client should wait before retrying while signing keys are unavailable.
pub const KEYS_RETRY_AFTER_SECONDS: u32 = 5;

impl LocalReply {
    pub(crate) fn json(status: u32, body: String) -> LocalReply {
        LocalReply {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body,
        }
    }

    fn error(status: u32, error: &str, message: &str) -> LocalReply {
        LocalReply::json(status, serde_json::json!({ "error": error, "message": message }).to_string())
    }

    pub(crate) fn with_header(mut self, name: &str, value: String) -> LocalReply {
        self.headers.push((name.into(), value));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What challenges say besides their error, decided once from configuration: where the RFC 9728
/// metadata is, and the scope hint of the 401 sent when no token was presented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    /// The metadata URL for `resource_metadata="…"` (RFC 9728 section 5.1).
    pub resource_metadata: Option<String>,
    /// `scope="…"` for the 401 without a token (MCP 2025-11-25 scope selection), space-separated.
    pub scope: Option<String>,
}

impl Challenge {
    fn resource_metadata_param(&self) -> Option<String> {
        self.resource_metadata.as_ref().map(|url| format!("resource_metadata=\"{url}\""))
    }
}

/// 401 without `error=`: the request carried no bearer token (RFC 6750 section 3.1).
pub fn missing_token(challenge: &Challenge) -> LocalReply {
    let mut params: Vec<String> = challenge.resource_metadata_param().into_iter().collect();
    if let Some(scope) = &challenge.scope {
        params.push(format!("scope=\"{scope}\""));
    }
    LocalReply::error(401, "unauthorized", "Missing or invalid Authorization header")
        .with_header("www-authenticate", bearer(&params))
}

/// 401 `invalid_token` with a short, fixed description of why.
pub fn invalid_token(challenge: &Challenge, why: Rejection) -> LocalReply {
    let mut params =
        vec!["error=\"invalid_token\"".to_string(), format!("error_description=\"{}\"", why.description())];
    params.extend(challenge.resource_metadata_param());
    LocalReply::error(401, "invalid_token", why.description()).with_header("www-authenticate", bearer(&params))
}

/// 400 `invalid_request`: more than one credential, which upstream parsers might read differently.
pub fn invalid_request(message: &str) -> LocalReply {
    LocalReply::error(400, "invalid_request", message)
        .with_header("www-authenticate", bearer(&["error=\"invalid_request\"".to_string()]))
}

/// 400 for a path that upstreams could route differently from the filter (`authn::request_path`).
pub fn ambiguous_path() -> LocalReply {
    LocalReply::error(
        400,
        "invalid_request",
        "Ambiguous request path: it could be read as another path (encoded separators, NUL, backslashes, \
         ';' parameters, double escapes or dot segments); send it in its plain form",
    )
}

/// 503 while no key set could be loaded: the client's token may be fine, so not a 401.
pub fn keys_unavailable() -> LocalReply {
    unavailable("Signing keys are not available yet; retry later")
}

/// The token could not be introspected (endpoint down, slow, or answering garbage): never an allow.
pub fn introspection_unavailable() -> LocalReply {
    unavailable("The token could not be checked; retry later")
}

fn unavailable(description: &str) -> LocalReply {
    LocalReply::error(503, "temporarily_unavailable", description)
        .with_header("retry-after", KEYS_RETRY_AFTER_SECONDS.to_string())
}

/// The RFC 9728 protected-resource metadata document.
pub fn resource_metadata(document: &str) -> LocalReply {
    LocalReply {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "max-age=3600".into()),
            // Public metadata that browser-based MCP clients fetch cross-origin.
            ("access-control-allow-origin".into(), "*".into()),
        ],
        body: document.to_string(),
    }
}

/// The public key of internal upstream tokens, for backends that verify them.
pub fn public_jwks(document: &str) -> LocalReply {
    LocalReply {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "max-age=300".into()),
        ],
        body: document.to_string(),
    }
}

fn bearer(params: &[String]) -> String {
    if params.is_empty() { "Bearer".into() } else { format!("Bearer {}", params.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge() -> Challenge {
        crate::config::parse(
            br#"{"providers":[{"issuer":"https://idp","audiences":["a"],"jwks":{"inline":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}}],
                "resource_metadata":{"resource":"https://mcp.example.com/mcp"},"challenge_scopes":["read:tasks"]}"#,
        )
        .unwrap()
        .challenge
    }

    #[test]
    fn missing_token_challenge_points_at_metadata() {
        let r = missing_token(&challenge());
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some(
                "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"read:tasks\""
            )
        );
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "unauthorized");
    }

    #[test]
    fn invalid_token_says_why_briefly() {
        let r = invalid_token(&challenge(), Rejection::Expired);
        assert_eq!(r.status, 401);
        let h = r.header("www-authenticate").unwrap();
        assert!(
            h.starts_with("Bearer error=\"invalid_token\", error_description=\"token expired\", resource_metadata="),
            "{h}"
        );
        assert!(r.body.contains("\"invalid_token\""));
    }

    #[test]
    fn descriptions_are_safe_inside_quotes() {
        for r in Rejection::ALL {
            assert!(!r.description().contains(['"', '\\']), "{r:?}");
        }
    }

    #[test]
    fn unavailable_is_503_with_retry_after() {
        let r = keys_unavailable();
        assert_eq!((r.status, r.header("retry-after")), (503, Some("5")));
    }
}
