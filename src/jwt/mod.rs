//! Bearer-token authentication: parse, pick provider and key, verify signature, validate claims, cache.

pub mod authenticator;
pub mod base64url;
pub mod cache;
pub mod claims;
pub mod ecdsa;
pub mod jwk;
pub mod montgomery;
pub mod provider;
pub mod rsa;
pub mod signature;
pub mod token;

pub use authenticator::{Authenticator, Verdict};
pub use claims::Principal;

/// Why a token was refused. `code` names the stats counter and log reason; `description` is the short,
/// detail-free text sent to the client in `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    TokenTooLarge,
    Encrypted,
    AlgorithmNotAllowed,
    UnsupportedCritical,
    IssuerNotAllowed,
    UnknownKey,
    AlgorithmKeyMismatch,
    InvalidSignature,
    Expired,
    MissingExp,
    NotYetValid,
    IssuedInFuture,
    AudienceNotAllowed,
    BadClaim,
    /// The introspection endpoint answered `active: false`.
    Inactive,
}

impl Rejection {
    pub const ALL: [Rejection; 16] = [
        Rejection::Malformed,
        Rejection::TokenTooLarge,
        Rejection::Encrypted,
        Rejection::AlgorithmNotAllowed,
        Rejection::UnsupportedCritical,
        Rejection::IssuerNotAllowed,
        Rejection::UnknownKey,
        Rejection::AlgorithmKeyMismatch,
        Rejection::InvalidSignature,
        Rejection::Expired,
        Rejection::MissingExp,
        Rejection::NotYetValid,
        Rejection::IssuedInFuture,
        Rejection::AudienceNotAllowed,
        Rejection::BadClaim,
        Rejection::Inactive,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::TokenTooLarge => "too_large",
            Rejection::Encrypted => "encrypted",
            Rejection::AlgorithmNotAllowed => "alg_not_allowed",
            Rejection::UnsupportedCritical => "crit_unsupported",
            Rejection::IssuerNotAllowed => "issuer_not_allowed",
            Rejection::UnknownKey => "unknown_kid",
            Rejection::AlgorithmKeyMismatch => "alg_key_mismatch",
            Rejection::InvalidSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::MissingExp => "missing_exp",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::IssuedInFuture => "issued_in_future",
            Rejection::AudienceNotAllowed => "audience_not_allowed",
            Rejection::BadClaim => "bad_claim",
            Rejection::Inactive => "inactive",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed token",
            Rejection::TokenTooLarge => "token too large",
            Rejection::Encrypted => "encrypted tokens are not accepted",
            Rejection::AlgorithmNotAllowed => "signing algorithm not allowed",
            Rejection::UnsupportedCritical => "unsupported critical header",
            Rejection::IssuerNotAllowed => "issuer not accepted",
            Rejection::UnknownKey => "signing key not found",
            Rejection::AlgorithmKeyMismatch => "algorithm does not match key",
            Rejection::InvalidSignature => "invalid signature",
            Rejection::Expired => "token expired",
            Rejection::MissingExp => "token has no expiry",
            Rejection::NotYetValid => "token not yet valid",
            Rejection::IssuedInFuture => "token issued in the future",
            Rejection::AudienceNotAllowed => "audience not accepted",
            Rejection::BadClaim => "invalid claim",
            Rejection::Inactive => "token is not active",
        }
    }
}
