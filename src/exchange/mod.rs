//! Upstream credentials: what replaces the client's token before the request leaves.
//!
//! MCP's authorization spec forbids passing the client's token through to other APIs. Per rule (and a
//! default), the filter forwards the verified token (`passthrough`), exchanges it by an HTTP callout
//! (RFC 8693 token exchange, or seed 001's connector contract: a FastMCP server exchanging `_meta`
//! temporary tokens through a backend), or mints a short-lived internal token (seed 000's "trusted
//! gateway": a gateway and a backend that both verify one JWT). This module builds callouts, validates
//! answers, maps failures and caches results; `filter::exchange` makes the callouts.

pub mod cache;
pub mod config;
pub mod connector;
pub mod internal;
pub mod jwt_bearer;
pub mod link;
pub mod plan;
pub mod rfc8693;
pub mod shared;
pub mod token_endpoint;

use serde_json::{Value, json};
use std::fmt;

/// A validated credential target from `upstream_credentials.targets`.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub mode: Mode,
    pub timeout_ms: u64,
    /// Also put the upstream token into `params._meta` under this key (servers written like seed 001).
    pub inject_meta_key: Option<String>,
}

/// Why a target that issues an ID-JAG cannot be a request's credential.
pub const GRANT_ONLY: &str = "this target obtains an ID-JAG, a grant for an authorization server, not a token for an upstream: name it in a jwt_bearer target's assertion_from";

impl Target {
    /// Whether the token this target obtains is only a grant for the next step of a chain (an ID-JAG).
    pub fn issues_grant_only(&self) -> bool {
        matches!(&self.mode, Mode::Rfc8693(s) if s.requested_token_type.as_deref() == Some(rfc8693::ID_JAG_TOKEN_TYPE))
    }

    /// For logs and seed 001's `provider` field.
    pub fn provider_label(&self) -> &str {
        match &self.mode {
            Mode::Connector(s) => &s.provider_id,
            _ => &self.name,
        }
    }
}

#[derive(Debug)]
pub enum Mode {
    Rfc8693(rfc8693::Settings),
    JwtBearer(jwt_bearer::Settings),
    Connector(connector::Settings),
    Internal(internal::Settings),
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Rfc8693(_) => "rfc8693",
            Mode::JwtBearer(_) => "jwt_bearer",
            Mode::Connector(_) => "connector",
            Mode::Internal(_) => "internal",
        }
    }
}

/// An HTTP callout to make through an Envoy cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Callout {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// A token obtained for the upstream, with how long it may be reused (seconds from now).
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub token: String,
    pub lifetime_seconds: Option<u64>,
}

/// The kinds of failure, as seed 001 (the connector contract) names them in its error object's `error`;
/// each is also the counter `mcp_authz.exchange.failed.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    MissingParameters,
    InvalidParameter,
    InvalidRequest,
    ProviderMismatch,
    UserMismatch,
    AccessDenied,
    InvalidToken,
    ApiError,
}

impl Failure {
    pub const ALL: [Failure; 8] = [
        Failure::MissingParameters,
        Failure::InvalidParameter,
        Failure::InvalidRequest,
        Failure::ProviderMismatch,
        Failure::UserMismatch,
        Failure::AccessDenied,
        Failure::InvalidToken,
        Failure::ApiError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::MissingParameters => "missing_parameters",
            Failure::InvalidParameter => "invalid_parameter",
            Failure::InvalidRequest => "invalid_request",
            Failure::ProviderMismatch => "provider_mismatch",
            Failure::UserMismatch => "user_mismatch",
            Failure::AccessDenied => "access_denied",
            Failure::InvalidToken => "invalid_token",
            Failure::ApiError => "api_error",
        }
    }
}

/// A failure, in seed 001's vocabulary (`error`, `message`, `provider`, `details`) with the HTTP status
/// the client gets. `details` never contains a token or secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeError {
    pub status: u32,
    pub error: Failure,
    pub message: String,
    pub details: String,
    /// The connector backend said the user has not linked the provider (`connector.link`): clients that
    /// can follow a URL elicitation are sent to link it instead of getting this error.
    pub link_required: bool,
}

impl ExchangeError {
    pub fn new(status: u32, error: Failure, message: impl Into<String>, details: impl Into<String>) -> Self {
        ExchangeError { status, error, message: message.into(), details: details.into(), link_required: false }
    }

    /// The JSON-RPC error body: seed 001's object as `error.data`, the request id echoed.
    pub fn to_jsonrpc(&self, id: &Value, provider: &str) -> Value {
        let code = match self.status {
            400 => -32602,
            401 | 403 => crate::mcp::jsonrpc::FORBIDDEN,
            _ => -32603,
        };
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": code,
                "message": self.message,
                "data": {"error": self.error.name(), "message": self.message, "provider": provider, "details": self.details},
            }
        })
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} ({}): {}", self.error.name(), self.status, self.details)
    }
}

/// Maps a failed callout (no response) to 504 when it ran into its timeout, else 502.
pub fn no_response(elapsed_ms: u64, timeout_ms: u64) -> ExchangeError {
    if elapsed_ms + 50 >= timeout_ms {
        ExchangeError::new(
            504,
            Failure::ApiError,
            "Token exchange timed out",
            "the exchange server did not answer in time",
        )
    } else {
        ExchangeError::new(502, Failure::ApiError, "Token exchange failed", "the exchange server could not be reached")
    }
}

/// Seed 001's status mapping for an exchange server's non-200 answer.
pub fn status_error(status: u16, oauth_error: Option<&str>) -> ExchangeError {
    match (status, oauth_error) {
        (400, Some("invalid_grant" | "invalid_target" | "unauthorized_client" | "invalid_scope")) => {
            ExchangeError::new(
                403,
                Failure::AccessDenied,
                "The exchange server refused to issue a token",
                format!("exchange server answered 400 {}", oauth_error.unwrap_or("")),
            )
        }
        // The gateway's own client credentials were refused (RFC 6749 §5.2 allows 400 or 401): a
        // misconfiguration the MCP client can do nothing about, so not its token's fault.
        (400 | 401, Some("invalid_client")) => ExchangeError::new(
            502,
            Failure::ApiError,
            "Token exchange failed",
            "the exchange server refused the gateway's client credentials (invalid_client)",
        ),
        (401, _) => {
            ExchangeError::new(401, Failure::InvalidToken, "Invalid or expired token", "exchange server answered 401")
        }
        (403, _) => ExchangeError::new(
            403,
            Failure::AccessDenied,
            "User not authorized for provider",
            "exchange server answered 403",
        ),
        (404, _) => ExchangeError::new(
            502,
            Failure::ApiError,
            "Provider not configured upstream",
            "exchange server answered 404",
        ),
        // Envoy answers a callout that ran into its timeout with a local 504.
        (504, _) => ExchangeError::new(
            504,
            Failure::ApiError,
            "Token exchange timed out",
            "the exchange server did not answer in time",
        ),
        (s, _) => {
            ExchangeError::new(502, Failure::ApiError, "Token exchange failed", format!("exchange server answered {s}"))
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub(crate) fn form_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(crate) fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", form_component(k), form_component(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_per_html_spec() {
        assert_eq!(form_encode(&[("a b", "c&d=e"), ("x", "é/~")]), "a+b=c%26d%3De&x=%C3%A9%2F~");
    }

    #[test]
    fn status_mapping_like_seed_001() {
        assert_eq!(status_error(400, Some("invalid_grant")).status, 403);
        assert_eq!(status_error(400, Some("invalid_request")).status, 502);
        assert_eq!(status_error(401, None).status, 401);
        assert_eq!(status_error(403, None).status, 403);
        assert_eq!(status_error(404, None).status, 502);
        assert_eq!(status_error(503, None).status, 502);
        assert_eq!(status_error(504, None).status, 504);
        assert_eq!(status_error(504, None).status, 504);
        assert_eq!(no_response(2_000, 2_000).status, 504);
        assert_eq!(no_response(10, 2_000).status, 502);
    }

    #[test]
    fn jsonrpc_error_carries_seed_001_shape() {
        let e = ExchangeError::new(
            403,
            Failure::ProviderMismatch,
            "This tool requires reddit authentication",
            "Received providerId: github",
        );
        let v = e.to_jsonrpc(&json!(4), "reddit");
        assert_eq!(v["id"], 4);
        assert_eq!(v["error"]["data"]["error"], "provider_mismatch");
        assert_eq!(v["error"]["data"]["provider"], "reddit");
        assert_eq!(v["error"]["data"]["details"], "Received providerId: github");
    }
}
