//! Why the filter answered a request itself. Each [`Reason`] has one wire name, used in the log line of
//! the refusal and in the counter `mcp_authz.denied.<name>`; the counters are defined from
//! [`Reason::all`], so a new reason cannot be left out of the stats.

use crate::http_reply::LocalReply;
use crate::jwt::Rejection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The token was refused (its own reasons: `expired`, `bad_signature`, ...).
    Token(Rejection),
    MissingToken,
    MultipleTokens,
    /// No key set could be loaded in time.
    JwksUnavailable,
    OriginNotAllowed,
    /// The path could be read as another path, one of them guarded (`crate::path`).
    AmbiguousPath,
    MethodNotAllowed,
    UnsupportedMediaType,
    BodyTooLarge,
    BodyTimeout,
    BadRequest,
    ParseError,
    InvalidRequest,
    InvalidParams,
    HeaderMismatch,
    InsufficientScope,
    AccessDenied,
    ExchangeFailed,
    SessionNotFound,
    SessionNotOwned,
    /// An argument condition of the deciding rule is not met.
    ArgumentNotAllowed,
    /// The tool's definition no longer matches its pin.
    ToolDefinitionChanged,
    /// The introspection endpoint gave no usable answer.
    IntrospectionUnavailable,
}

/// Every reason that is not a token rejection, in the order they are documented (docs/metrics.md).
const REQUEST_REASONS: [Reason; 22] = [
    Reason::MissingToken,
    Reason::MultipleTokens,
    Reason::JwksUnavailable,
    Reason::AmbiguousPath,
    Reason::OriginNotAllowed,
    Reason::MethodNotAllowed,
    Reason::UnsupportedMediaType,
    Reason::BodyTooLarge,
    Reason::BodyTimeout,
    Reason::BadRequest,
    Reason::ParseError,
    Reason::InvalidRequest,
    Reason::InvalidParams,
    Reason::HeaderMismatch,
    Reason::InsufficientScope,
    Reason::AccessDenied,
    Reason::ExchangeFailed,
    Reason::SessionNotFound,
    Reason::SessionNotOwned,
    Reason::ArgumentNotAllowed,
    Reason::ToolDefinitionChanged,
    Reason::IntrospectionUnavailable,
];

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Token(why) => why.code(),
            Reason::MissingToken => "missing_token",
            Reason::MultipleTokens => "multiple_tokens",
            Reason::JwksUnavailable => "jwks_unavailable",
            Reason::OriginNotAllowed => "origin_not_allowed",
            Reason::AmbiguousPath => "ambiguous_path",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::BodyTooLarge => "body_too_large",
            Reason::BodyTimeout => "body_timeout",
            Reason::BadRequest => "bad_request",
            Reason::ParseError => "parse_error",
            Reason::InvalidRequest => "invalid_request",
            Reason::InvalidParams => "invalid_params",
            Reason::HeaderMismatch => "header_mismatch",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::AccessDenied => "access_denied",
            Reason::ExchangeFailed => "exchange_failed",
            Reason::SessionNotFound => "session_not_found",
            Reason::SessionNotOwned => "session_not_owned",
            Reason::ArgumentNotAllowed => "argument_not_allowed",
            Reason::ToolDefinitionChanged => "tool_definition_changed",
            Reason::IntrospectionUnavailable => "introspection_unavailable",
        }
    }

    /// Every reason: the token rejections, then the others.
    pub fn all() -> impl Iterator<Item = Reason> {
        Rejection::ALL.iter().map(|r| Reason::Token(*r)).chain(REQUEST_REASONS)
    }
}

/// A refusal: the reply the client gets, and the reason for stats and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub reason: Reason,
    pub reply: LocalReply,
}

impl Denial {
    pub fn new(reason: Reason, reply: LocalReply) -> Denial {
        Denial { reason, reply }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_one_name_usable_in_a_stat() {
        let names: Vec<&str> = Reason::all().map(Reason::name).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "{name} twice");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
        }
        assert_eq!(names.len(), Rejection::ALL.len() + REQUEST_REASONS.len());
    }
}
