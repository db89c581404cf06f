//! The decision on a request, exported where Envoy's own machinery reads it: filter state under
//! `wasm.mcp_authz.<field>` (a Wasm filter in Envoy 1.40 can set filter state, not dynamic metadata),
//! which access logs print with `%FILTER_STATE(wasm.mcp_authz.<field>:PLAIN)%` and rate-limit
//! descriptors read with the CEL extension (`filter_state['wasm.mcp_authz.<field>']`).
//!
//! Each value is cut to [`MAX_VALUE_BYTES`] and percent-encoded where it could break a header or a
//! text log line (bytes 0x00–0x20, 0x7F–0xFF and `%`), so one rate-limit key reads the same everywhere.
//! Never a token, never argument values.

use crate::config::fields::ConfigError;

/// Longest exported value (after encoding), in bytes.
pub const MAX_VALUE_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The verified `sub`.
    Subject,
    /// The client the token was issued to: `azp`, else `client_id`.
    Client,
    /// The MCP method (`tools/call`); for a batch, the deciding message's.
    Method,
    /// The tool or prompt name, or resource URI.
    Target,
    /// `allow` or `deny`.
    Decision,
    /// Why: a refusal's reason (`insufficient_scope`, ...), a shadow rule's would-be reason, or `allowed`.
    Reason,
    /// The deciding rule's `id` (or `rules[i]`).
    Rule,
    /// The upstream credential: `passthrough`, or the target's mode (`rfc8693`, `connector`, `internal`).
    Credential,
    /// `true` when a shadow rule (or the shadow policy) would have refused the request.
    Shadow,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::Subject,
        Field::Client,
        Field::Method,
        Field::Target,
        Field::Decision,
        Field::Reason,
        Field::Rule,
        Field::Credential,
        Field::Shadow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Subject => "subject",
            Field::Client => "client",
            Field::Method => "method",
            Field::Target => "target",
            Field::Decision => "decision",
            Field::Reason => "reason",
            Field::Rule => "rule",
            Field::Credential => "credential",
            Field::Shadow => "shadow",
        }
    }

    /// The property path set (Envoy adds `wasm.`): one segment, dots included, so that access logs and
    /// CEL can name it.
    pub fn property(self) -> &'static str {
        match self {
            Field::Subject => "mcp_authz.subject",
            Field::Client => "mcp_authz.client",
            Field::Method => "mcp_authz.method",
            Field::Target => "mcp_authz.target",
            Field::Decision => "mcp_authz.decision",
            Field::Reason => "mcp_authz.reason",
            Field::Rule => "mcp_authz.rule",
            Field::Credential => "mcp_authz.credential",
            Field::Shadow => "mcp_authz.shadow",
        }
    }

    fn parse(field: &str, name: &str) -> Result<Field, ConfigError> {
        Field::ALL.iter().copied().find(|f| f.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
            ConfigError::new(field, format!("{name:?} is not one of {}", names.join(", ")))
        })
    }
}

/// `decision_export.filter_state`: the fields set, each once.
pub fn parse_fields(field: &str, names: &[String]) -> Result<Vec<Field>, ConfigError> {
    let mut fields: Vec<Field> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let f = Field::parse(&format!("{field}[{i}]"), name)?;
        if fields.contains(&f) {
            return Err(ConfigError::new(format!("{field}[{i}]"), "listed twice"));
        }
        fields.push(f);
    }
    Ok(fields)
}

/// What was decided about one request, as far as the export is concerned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub subject: Option<String>,
    pub client: Option<String>,
    pub method: Option<String>,
    pub target: Option<String>,
    /// Some(true): allowed; Some(false): refused.
    pub allowed: Option<bool>,
    pub reason: Option<&'static str>,
    pub rule: Option<String>,
    pub credential: Option<&'static str>,
    pub shadow: bool,
}

impl Record {
    /// The value of `field`, encoded; None: nothing to export (the field stays unset: logs print `null`).
    pub fn value(&self, field: Field) -> Option<String> {
        let text = match field {
            Field::Subject => self.subject.as_deref()?,
            Field::Client => self.client.as_deref()?,
            Field::Method => self.method.as_deref()?,
            Field::Target => self.target.as_deref()?,
            Field::Decision => {
                if self.allowed? {
                    "allow"
                } else {
                    "deny"
                }
            }
            Field::Reason => self.reason?,
            Field::Rule => self.rule.as_deref()?,
            Field::Credential => self.credential?,
            Field::Shadow => {
                if self.shadow {
                    "true"
                } else {
                    "false"
                }
            }
        };
        Some(encode(text))
    }
}

/// Percent-encodes bytes 0x00–0x20, 0x7F–0xFF and `%`, cut to [`MAX_VALUE_BYTES`] on an escape boundary.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_VALUE_BYTES));
    for b in text.bytes() {
        let piece_len = if b <= 0x20 || b >= 0x7f || b == b'%' { 3 } else { 1 };
        if out.len() + piece_len > MAX_VALUE_BYTES {
            break;
        }
        if piece_len == 3 {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_and_bounded() {
        assert_eq!(encode("tools/call"), "tools/call");
        assert_eq!(encode("a b%\nc\u{e9}\"|/"), "a%20b%25%0Ac%C3%A9\"|/");
        let long = encode(&"\u{e9}".repeat(300));
        assert!(
            long.len() <= MAX_VALUE_BYTES && long.len().is_multiple_of(3) && long.starts_with("%C3%A9"),
            "cut on an escape boundary"
        );
    }

    #[test]
    fn fields_parse_by_name_once() {
        let names = vec!["subject".to_string(), "target".to_string()];
        assert_eq!(parse_fields("f", &names).unwrap(), vec![Field::Subject, Field::Target]);
        assert_eq!(parse_fields("f", &["tool".into()]).unwrap_err().field, "f[0]");
        assert_eq!(parse_fields("f", &["rule".into(), "rule".into()]).unwrap_err().field, "f[1]");
    }

    #[test]
    fn records_give_the_exported_strings() {
        let r = Record {
            subject: Some("alice".into()),
            allowed: Some(false),
            reason: Some("insufficient_scope"),
            shadow: false,
            ..Default::default()
        };
        assert_eq!(r.value(Field::Decision).as_deref(), Some("deny"));
        assert_eq!(r.value(Field::Shadow).as_deref(), Some("false"));
        assert_eq!(r.value(Field::Target), None);
        assert_eq!(r.value(Field::Reason).as_deref(), Some("insufficient_scope"));
    }
}
