//! The vocabulary every section's validation shares: the error that names a field, and the checks that
//! more than one section applies (ranges, scopes, header names, URLs, words from a fixed list).

use std::fmt;

pub(crate) const URL_RULE: &str =
    "must be an absolute http(s) URL of printable ASCII without '\"' or '\\' (percent-encode the rest)";

/// A refused configuration: `field` is a path such as `providers[0].jwks.remote.timeout_ms`, so the one
/// Envoy log line that refuses a configuration tells the operator what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.field.is_empty() { write!(f, "{}", self.reason) } else { write!(f, "{}: {}", self.field, self.reason) }
    }
}

/// A setting spelled as one of a few words: the value of the word given, or of the first one (the
/// default) when none is.
pub(crate) fn one_of<T: Copy>(field: &str, given: Option<String>, words: &[(&str, T)]) -> Result<T, ConfigError> {
    let Some(given) = given else { return Ok(words[0].1) };
    words.iter().find(|(word, _)| *word == given).map(|(_, value)| *value).ok_or_else(|| {
        let names: Vec<String> = words.iter().map(|(word, _)| format!("{word:?}")).collect();
        ConfigError::new(field, format!("{given:?} must be {}", names.join(" or ")))
    })
}

/// Splits `scheme://authority/path` into (`scheme://authority`, `/path`); None unless http(s) and
/// printable ASCII without `"` or `\`: these URLs are sent inside quoted-strings of `WWW-Authenticate`,
/// where a control character, space, quote or backslash would break or end the header (RFC 3986
/// percent-encodes all of them anyway).
pub(crate) fn split_url(url: &str) -> Option<(&str, &str)> {
    if !url.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
        return None;
    }
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let scheme_len = url.len() - rest.len();
    let authority_len = rest.find('/').unwrap_or(rest.len());
    if authority_len == 0 {
        return None;
    }
    Some(url.split_at(scheme_len + authority_len))
}

pub(crate) fn check_header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && !name.starts_with(':')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok { Ok(()) } else { Err(ConfigError::new(field, format!("{name:?} is not a valid HTTP header name"))) }
}

/// RFC 6749 scope-token: printable ASCII without space, '"' or '\'.
pub(crate) fn check_scope_token(field: &str, s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if ok { Ok(()) } else { Err(ConfigError::new(field, format!("{s:?} is not a valid scope"))) }
}

/// A scope the filter may advertise: in a challenge (`scope="…"`) or in the served RFC 9728
/// `scopes_supported`. `offline_access` asks the authorization server for a refresh token; it is not
/// something a resource requires, and MCP 2026-07-28 says resources SHOULD NOT advertise it (a client
/// would then ask every user for offline access it does not need).
pub(crate) fn check_advertised_scope(field: &str, s: &str) -> Result<(), ConfigError> {
    check_scope_token(field, s)?;
    if s == "offline_access" {
        return Err(ConfigError::new(
            field,
            "offline_access requests a refresh token, not access to this resource; MCP 2026-07-28: resources \
             SHOULD NOT list it in challenges or scopes_supported",
        ));
    }
    Ok(())
}

pub(crate) fn check_range(field: &str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::new(field, format!("{v} is out of range {min}..={max}")))
    }
}
