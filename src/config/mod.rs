//! Filter configuration: the JSON in the Wasm filter's `configuration`, turned into a validated [`Config`].
//!
//! Parsing has two stages. serde (with `deny_unknown_fields` and `serde_path_to_error`) refuses unknown
//! fields and wrong types and reports the path; `validate` then checks values and relations. Every
//! error is a [`ConfigError`] whose `field` is a path such as `providers[0].jwks.remote.timeout_ms`, so
//! the one Envoy log line that refuses a configuration tells the operator what to fix.
//! Field reference: docs/configuration.md (keep the two in step).

pub(crate) mod fields;

pub use fields::ConfigError;

use crate::exchange::config::{Credentials, PASSTHROUGH, RawCredentials, validate_credentials};
use crate::exchange::{GRANT_ONLY, Mode};
use crate::export;
use crate::http_reply::Challenge;
use crate::introspection::config::Tokens;
use crate::jwt::provider::{Provider, RawProvider, validate_provider};
use crate::mcp::config::{McpConfig, RawMcp, validate_mcp};
use crate::mcp::glob::Glob;
use crate::metadata::{RawResourceMetadata, ResourceMetadata, validate_resource_metadata};
use crate::path::{PathMatch, RawPathMatch};
use crate::scopes::ScopeHierarchy;
use fields::{check_advertised_scope, check_header_name, check_range};
use serde::Deserialize;

pub const DEFAULT_JWKS_WAIT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 1_000;

/// The validated configuration. Built once per `on_configure`; the request path only reads it.
#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub token: TokenSource,
    pub paths: Vec<PathMatch>,
    pub claim_headers: Vec<ClaimHeader>,
    pub resource_metadata: Option<ResourceMetadata>,
    /// What every 401/403 challenge carries besides its error.
    pub challenge: Challenge,
    pub jwks_wait_timeout_ms: u64,
    pub token_cache_max_entries: usize,
    pub mcp: McpConfig,
    pub credentials: Credentials,
    /// Fields of each request's decision set as filter state (`decision_export.filter_state`).
    pub decision_export: Vec<export::Field>,
}

impl Config {
    /// The provider whose introspection endpoint `token` goes to, if one takes it.
    pub fn introspecting(&self, token: &str) -> Option<usize> {
        self.providers
            .iter()
            .position(|p| p.introspection.as_ref().is_some_and(|s| crate::introspection::introspects(s, token)))
    }
}

#[derive(Debug, Clone)]
pub struct TokenSource {
    /// Lower-case header name.
    pub header: String,
    /// Auth scheme before the token (matched case-insensitively); empty means the whole value is the token.
    pub scheme: String,
}

#[derive(Debug, Clone)]
pub struct ClaimHeader {
    /// Claim name; a dotted name (`realm_access.roles`) walks nested objects.
    pub claim: String,
    pub header: String,
}

// ---- the JSON shape (serde) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    providers: Vec<RawProvider>,
    #[serde(default)]
    token: Option<RawTokenSource>,
    #[serde(default)]
    paths: Option<Vec<RawPathMatch>>,
    #[serde(default)]
    claim_headers: Vec<RawClaimHeader>,
    #[serde(default)]
    resource_metadata: Option<RawResourceMetadata>,
    #[serde(default)]
    challenge_scopes: Vec<String>,
    /// Read by hand (`scopes::ScopeHierarchy::parse`) for errors that name the entry.
    #[serde(default)]
    scope_hierarchy: Option<serde_json::Value>,
    #[serde(default)]
    jwks_wait_timeout_ms: Option<u64>,
    #[serde(default)]
    token_cache: Option<RawTokenCache>,
    #[serde(default)]
    mcp: Option<RawMcp>,
    #[serde(default)]
    upstream_credentials: Option<RawCredentials>,
    #[serde(default)]
    decision_export: Option<RawDecisionExport>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecisionExport {
    #[serde(default)]
    filter_state: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenSource {
    header: String,
    #[serde(default)]
    scheme: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimHeader {
    claim: String,
    header: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenCache {
    max_entries: usize,
}

/// Parses and validates the filter configuration.
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::new("", "configuration is empty; see docs/configuration.md"));
    }
    // Duplicate keys in configuration are refused for the same reason as in tokens: what the operator
    // reads must be what the filter applies.
    crate::json_strict::parse(json).map_err(|e| ConfigError::new("", format!("invalid JSON: {e}")))?;
    let mut de = serde_json::Deserializer::from_slice(json);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::new(field, e.into_inner().to_string())
    })?;
    validate(raw)
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.providers.is_empty() {
        return Err(ConfigError::new("providers", "at least one provider is required"));
    }
    let mut providers = Vec::with_capacity(raw.providers.len());
    for (i, p) in raw.providers.into_iter().enumerate() {
        let provider = validate_provider(&format!("providers[{i}]"), p)?;
        if let Some(j) = providers.iter().position(|q: &Provider| q.issuer == provider.issuer) {
            return Err(ConfigError::new(
                format!("providers[{i}].issuer"),
                format!("issuer is already used by providers[{j}]; tokens are matched to providers by issuer"),
            ));
        }
        if providers.iter().any(|q: &Provider| q.name == provider.name) {
            return Err(ConfigError::new(format!("providers[{i}].name"), "provider names must be unique"));
        }
        // An opaque token names no issuer: with two endpoints the filter could not tell which to ask.
        if provider.introspection.is_some() && providers.iter().any(|q: &Provider| q.introspection.is_some()) {
            return Err(ConfigError::new(
                format!("providers[{i}].introspection"),
                "only one provider may use introspection (an opaque token does not say who issued it)",
            ));
        }
        providers.push(provider);
    }
    // `tokens: "all"` is decided before JWT verification: with another provider, that provider's JWTs
    // (and their callers' credentials) would be sent to this endpoint.
    if providers.len() > 1
        && let Some(i) =
            providers.iter().position(|p| p.introspection.as_ref().is_some_and(|s| s.tokens == Tokens::All))
    {
        return Err(ConfigError::new(
            format!("providers[{i}].introspection.tokens"),
            "\"all\" needs this to be the only provider: it would send the other providers' JWTs to this endpoint",
        ));
    }

    let token = match raw.token {
        None => TokenSource { header: "authorization".into(), scheme: "Bearer".into() },
        Some(t) => {
            let header = t.header.to_ascii_lowercase();
            check_header_name("token.header", &header)?;
            let scheme = t.scheme.unwrap_or_else(|| "Bearer".into());
            if scheme.chars().any(|c| !c.is_ascii_alphanumeric() && c != '-' && c != '_') {
                return Err(ConfigError::new("token.scheme", "must be a single word such as \"Bearer\", or empty"));
            }
            TokenSource { header, scheme }
        }
    };

    let paths = match raw.paths {
        None => vec![PathMatch::Prefix("/".into())],
        Some(list) if list.is_empty() => {
            return Err(ConfigError::new("paths", "must not be empty; omit it to guard every path"));
        }
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, m)| PathMatch::parse(&format!("paths[{i}]"), m))
            .collect::<Result<_, _>>()?,
    };

    let mut claim_headers: Vec<ClaimHeader> = Vec::new();
    for (i, ch) in raw.claim_headers.into_iter().enumerate() {
        let field = format!("claim_headers[{i}]");
        if ch.claim.is_empty() || ch.claim.split('.').any(str::is_empty) {
            return Err(ConfigError::new(format!("{field}.claim"), "must be a claim name or a dotted path"));
        }
        let header = ch.header.to_ascii_lowercase();
        check_header_name(&format!("{field}.header"), &header)?;
        if matches!(header.as_str(), "authorization" | "host" | "content-length" | "transfer-encoding")
            || header == token.header
        {
            return Err(ConfigError::new(format!("{field}.header"), "this header cannot carry a claim"));
        }
        if claim_headers.iter().any(|c| c.header == header) {
            return Err(ConfigError::new(format!("{field}.header"), "header is already mapped"));
        }
        claim_headers.push(ClaimHeader { claim: ch.claim, header });
    }

    let resource_metadata =
        raw.resource_metadata.map(|m| validate_resource_metadata("resource_metadata", m)).transpose()?;

    for (i, s) in raw.challenge_scopes.iter().enumerate() {
        check_advertised_scope(&format!("challenge_scopes[{i}]"), s)?;
    }
    let challenge_scope = (!raw.challenge_scopes.is_empty()).then(|| raw.challenge_scopes.join(" "));

    let jwks_wait_timeout_ms = raw.jwks_wait_timeout_ms.unwrap_or(DEFAULT_JWKS_WAIT_TIMEOUT_MS);
    check_range("jwks_wait_timeout_ms", jwks_wait_timeout_ms, 1, 120_000)?;
    let token_cache_max_entries = raw.token_cache.map_or(DEFAULT_TOKEN_CACHE_ENTRIES, |c| c.max_entries);
    check_range("token_cache.max_entries", token_cache_max_entries as u64, 0, 1_000_000)?;

    let credentials = validate_credentials("upstream_credentials", raw.upstream_credentials.unwrap_or_default())?;
    // Cross-section: a rule's credential must name a target, and connector targets (which send the
    // client's `_meta.userToken` on) only serve rules for exactly `tools/call`.
    let credential_allowed = |field: &str, name: &str, method: &Glob| -> Result<(), ConfigError> {
        if name == PASSTHROUGH {
            return Ok(());
        }
        let target = credentials
            .targets
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ConfigError::new(field, format!("no upstream_credentials target named {name:?}")))?;
        // Exactly tools/call: a glob would also send other methods' `_meta.userToken` upstream.
        if matches!(target.mode, Mode::Connector(_)) && method.as_string() != "tools/call" {
            return Err(ConfigError::new(field, "connector targets serve tools/call rules only"));
        }
        if target.issues_grant_only() {
            return Err(ConfigError::new(field, GRANT_ONLY));
        }
        Ok(())
    };
    let scopes = match &raw.scope_hierarchy {
        None => ScopeHierarchy::default(),
        Some(value) => ScopeHierarchy::parse("scope_hierarchy", value)?,
    };
    let mcp = validate_mcp("mcp", raw.mcp.unwrap_or_default(), &paths, &credential_allowed, scopes)?;
    if let Some(meta) = &resource_metadata {
        for (path, _) in &credentials.published_jwks {
            if meta.well_known_paths.iter().any(|p| p == path) {
                return Err(ConfigError::new(
                    "upstream_credentials",
                    format!("jwks_path {path} collides with the resource metadata path"),
                ));
            }
        }
    }

    let decision_export = match raw.decision_export {
        None => Vec::new(),
        Some(e) => export::parse_fields("decision_export.filter_state", &e.filter_state)?,
    };
    let challenge =
        Challenge { resource_metadata: resource_metadata.as_ref().map(|m| m.url.clone()), scope: challenge_scope };
    Ok(Config {
        providers,
        token,
        paths,
        claim_headers,
        resource_metadata,
        challenge,
        jwks_wait_timeout_ms,
        token_cache_max_entries,
        mcp,
        credentials,
        decision_export,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::rules::Unlisted;
    use crate::mcp::sessions::SessionPolicy;
    use serde_json::{Value, json};

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";

    fn base() -> Value {
        json!({"providers": [{"issuer": "https://idp", "audiences": ["a"],
               "jwks": {"inline": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_X}]}}}]})
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut doc = base();
        let mut at = &mut doc;
        for (i, key) in path.iter().enumerate() {
            if i + 1 == path.len() {
                at[*key] = value.clone();
            } else {
                if at.get(*key).is_none() {
                    at[*key] = json!({});
                }
                at = at.get_mut(*key).unwrap();
            }
        }
        doc
    }

    fn error(doc: Value) -> ConfigError {
        parse(doc.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn path_matching_covers_the_spellings_upstreams_route_alike() {
        let exact = PathMatch::Exact("/mcp".into());
        for p in ["/mcp", "/MCP", "/mcp/", "/Mcp//"] {
            assert!(exact.matches(p), "{p}");
        }
        assert!(!exact.matches("/mcpx") && !exact.matches("/mc"));
        let prefix = PathMatch::Prefix("/mcp".into());
        assert!(prefix.matches("/MCP/x") && prefix.matches("/mcp") && !prefix.matches("/mc"));
        assert!(PathMatch::Exact("/".into()).matches("/"));
        assert!(!PathMatch::Prefix("/é".into()).matches("/"), "no slicing panic on short paths");
    }

    #[test]
    fn the_complete_example_of_the_reference_parses() {
        // Users write their configuration from docs/configuration.md: its complete example must load.
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("## Complete example").and_then(|i| doc[i..].find("```json").map(|j| i + j + 7));
        let start = start.expect("a complete example");
        let end = start + doc[start..].find("```").expect("its end");
        if let Err(e) = parse(&doc.as_bytes()[start..end]) {
            panic!("docs/configuration.md's complete example is refused: {e}");
        }
    }

    #[test]
    fn policy_depth_fields_parse() {
        let doc = with(
            &["mcp"],
            json!({"mode": "shadow",
                   "tool_pins": {"learn": true, "pins": {"getTasks": format!("sha256:{}", "ab".repeat(32))}},
                   "rules": [{"id": "own-project", "method": "tools/call", "name": "createTask", "shadow": true,
                              "arguments": [{"pointer": "/project", "in_claim": "projects"},
                                            {"pointer": "/n", "min": 1, "not": true, "optional": true}]}]}),
        );
        let mut doc = doc;
        doc["decision_export"] = json!({"filter_state": ["subject", "target", "decision"]});
        let c = parse(doc.to_string().as_bytes()).unwrap();
        let rule = &c.mcp.policy.rules[0];
        assert_eq!((rule.id.as_deref(), rule.label.as_str(), rule.shadow), (Some("own-project"), "own-project", true));
        assert_eq!(rule.arguments.len(), 2);
        assert!(rule.arguments[1].negate && rule.arguments[1].optional);
        assert!(c.mcp.policy.shadow);
        let pins = c.mcp.tool_pins.as_ref().unwrap();
        assert!(pins.learn && pins.configured("getTasks") == Some(&[0xab; 32]));
        assert_eq!(c.decision_export.len(), 3);
    }

    #[test]
    fn defaults() {
        let c = parse(base().to_string().as_bytes()).unwrap();
        assert_eq!(c.paths, vec![PathMatch::Prefix("/".into())]);
        assert_eq!(c.providers[0].clock_skew_seconds, 60);
        assert!(c.providers[0].require_exp);
        assert_eq!(c.mcp.policy.unlisted_tools, Unlisted::Deny);
        assert_eq!(
            c.mcp.sessions,
            SessionPolicy { bind: true, adopt_unknown: false, max_sessions: 10_000, idle_timeout_ms: 86_400_000 }
        );
        assert_eq!(c.credentials.default, None);
        // Configured paths are matched in canonical form, as requests are.
        let c = parse(with(&["paths"], json!([{"prefix": "/caf%c3%a9/%7euser/./x"}])).to_string().as_bytes()).unwrap();
        assert_eq!(c.paths, vec![PathMatch::Prefix("/caf%C3%A9/~user/x".into())]);
    }

    #[test]
    fn offline_access_is_never_advertised() {
        let cases = [
            (with(&["challenge_scopes"], json!(["read", "offline_access"])), "challenge_scopes[1]"),
            (
                with(
                    &["resource_metadata"],
                    json!({"resource": "https://m.example/mcp", "scopes_supported": ["offline_access"]}),
                ),
                "resource_metadata.scopes_supported[0]",
            ),
            (
                with(&["mcp", "rules"], json!([{"method": "tools/call", "scopes": ["offline_access"]}])),
                "mcp.rules[0].scopes[0]",
            ),
            (
                with(&["mcp", "rules"], json!([{"method": "tools/call", "any_scopes": [["a"], ["offline_access"]]}])),
                "mcp.rules[0].any_scopes[1][0]",
            ),
        ];
        for (doc, field) in cases {
            let e = parse(doc.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains("SHOULD NOT"), "says why: {e}");
        }
        // Implied by a broader scope is fine: that never reaches a challenge.
        let ok = with(&["scope_hierarchy"], json!({"admin": ["offline_access"]}));
        assert!(parse(ok.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn scope_hierarchy_reaches_the_policy_and_is_checked() {
        let mut doc = with(&["scope_hierarchy"], json!({"admin": ["write:tasks"], "write:tasks": ["read:tasks"]}));
        doc["mcp"] = json!({"rules": [{"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"]}]});
        let c = parse(doc.to_string().as_bytes()).unwrap();
        assert!(c.mcp.policy.scopes.covers(&["admin".to_string()], "read:tasks"));
        let cycle = with(&["scope_hierarchy"], json!({"a": ["b"], "b": ["a"]}));
        let e = parse(cycle.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "scope_hierarchy.a: cycle: a implies b implies a");
        let e = parse(with(&["scope_hierarchy"], json!({"a": [1]})).to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, "scope_hierarchy.a[0]");
    }

    #[test]
    fn introspection_providers_are_checked_at_load() {
        let endpoint = json!({"cluster": "as", "authority": "as.test", "path": "/introspect", "client_id": "gw",
                              "client_secret": "s"});
        let opaque = |issuer: &str| json!({"issuer": issuer, "audiences": ["a"], "introspection": endpoint});
        let mut doc = base();
        doc["providers"].as_array_mut().unwrap().push(opaque("https://as"));
        let config = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(config.introspecting("opaque-token"), Some(1));
        assert_eq!(config.introspecting("h.p.s"), None);
        assert!(!config.providers[1].verifies_jwts());
        doc["providers"].as_array_mut().unwrap().push(opaque("https://as2"));
        assert_eq!(error(doc).field, "providers[2].introspection");
        let mut all = endpoint.clone();
        all["tokens"] = json!("all");
        let jwks = json!({"inline": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_X}]}});
        let both = json!([{"issuer": "i", "audiences": ["a"], "jwks": jwks, "introspection": endpoint}]);
        assert!(parse(with(&["providers"], both).to_string().as_bytes()).unwrap().providers[0].verifies_jwts());
        let both =
            with(&["providers"], json!([{"issuer": "i", "audiences": ["a"], "jwks": jwks, "introspection": all}]));
        assert_eq!(error(both).field, "providers[0].jwks");
        let neither = with(&["providers"], json!([{"issuer": "i", "audiences": ["a"]}]));
        assert_eq!(error(neither).field, "providers[0].jwks");
        let algs = with(
            &["providers"],
            json!([{"issuer": "i", "audiences": ["a"], "introspection": endpoint,
                                                "algorithms": ["RS256"]}]),
        );
        assert_eq!(error(algs).field, "providers[0].algorithms");
        let mut bad = endpoint.clone();
        bad["client_auth"] = json!("private_key_jwt");
        let bad = with(&["providers"], json!([{"issuer": "i", "audiences": ["a"], "introspection": bad}]));
        assert_eq!(error(bad).field, "providers[0].introspection.client_auth");
        let mut all_opaque = base();
        all_opaque["providers"].as_array_mut().unwrap().push(json!({"issuer": "https://as", "audiences": ["a"],
                                                                    "introspection": all}));
        let refused = error(all_opaque);
        assert_eq!(refused.field, "providers[1].introspection.tokens");
        assert!(refused.to_string().contains("other providers' JWTs"), "{refused}");
        let alone = with(&["providers"], json!([{"issuer": "i", "audiences": ["a"], "introspection": all}]));
        assert_eq!(parse(alone.to_string().as_bytes()).unwrap().introspecting("h.p.s"), Some(0));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (with(&["extra"], json!(1)), ""),
            (with(&["jwks_wait_timeout_ms"], json!(0)), "jwks_wait_timeout_ms"),
            (with(&["jwks_wait_timeout_ms"], json!(-1)), "jwks_wait_timeout_ms"),
            (with(&["paths"], json!([{"prefix": "mcp"}])), "paths[0]"),
            (with(&["mcp", "rules"], json!([{"method": "tools/cal"}])), "mcp.rules[0].method"),
            (with(&["mcp", "rules"], json!([{"method": "tools/call", "uri": "x"}])), "mcp.rules[0].uri"),
            (with(&["mcp", "rules"], json!([{"method": "tools/call", "scopes": [""]}])), "mcp.rules[0].scopes[0]"),
            (
                with(&["mcp", "rules"], json!([{"method": "tools/call", "credential": "nope"}])),
                "mcp.rules[0].credential",
            ),
            (with(&["mcp", "allowed_origins"], json!(["https://a.example/path"])), "mcp.allowed_origins[0]"),
            (with(&["paths"], json!([{"prefix": "/x%2F..%2Fmcp"}])), "paths[0]"),
            (with(&["mcp", "paths"], json!([{"exact": "/mcp;x"}])), "mcp.paths[0]"),
            (with(&["mcp", "sessions"], json!({"binding": "user"})), "mcp.sessions.binding"),
            (with(&["mcp", "sessions"], json!({"unknown_sessions": "allow"})), "mcp.sessions.unknown_sessions"),
            (with(&["mcp", "sessions"], json!({"max_sessions": 1})), "mcp.sessions.max_sessions"),
            (with(&["mcp", "sessions"], json!({"idle_timeout_seconds": 0})), "mcp.sessions.idle_timeout_seconds"),
            (with(&["mcp", "sessions"], json!({"ttl": 5})), "mcp.sessions"),
            (with(&["mcp", "rules"], json!([{"method": "tools/call", "id": "has space"}])), "mcp.rules[0].id"),
            (
                with(&["mcp", "rules"], json!([{"method": "tools/call", "id": "a"}, {"method": "ping", "id": "a"}])),
                "mcp.rules[1].id",
            ),
            (
                with(&["mcp", "rules"], json!([{"method": "tools/*", "arguments": [{"pointer": "/a", "equals": 1}]}])),
                "mcp.rules[0].arguments",
            ),
            (
                with(
                    &["mcp", "rules"],
                    json!([{"method": "tools/call", "arguments": [{"pointer": "a", "equals": 1}]}]),
                ),
                "mcp.rules[0].arguments[0].pointer",
            ),
            (
                with(&["mcp", "rules"], json!([{"method": "tools/call", "arguments": [{"pointer": "/a"}]}])),
                "mcp.rules[0].arguments[0]",
            ),
            (
                with(
                    &["mcp", "rules"],
                    json!([{"method": "tools/call", "arguments": [{"pointer": "/a", "min": 5, "max": 1}]}]),
                ),
                "mcp.rules[0].arguments[0].min",
            ),
            (
                with(
                    &["mcp", "rules"],
                    json!([{"method": "tools/call", "arguments": [{"pointer": "/a", "in_claim": "x..y"}]}]),
                ),
                "mcp.rules[0].arguments[0].in_claim",
            ),
            (
                with(
                    &["mcp", "rules"],
                    json!([{"method": "tools/call", "arguments": [{"pointer": "/a", "glob": "x", "equals": 1}]}]),
                ),
                "mcp.rules[0].arguments[0]",
            ),
            (
                with(
                    &["mcp", "rules"],
                    json!([{"method": "tools/call", "arguments": [{"pointer": "/a", "equals": 1, "extra": 1}]}]),
                ),
                "mcp.rules[0].arguments[0]",
            ),
            (with(&["mcp", "mode"], json!("audit")), "mcp.mode"),
            (with(&["mcp", "tool_pins"], json!({"pins": {"t": "sha256:zz"}})), "mcp.tool_pins.pins.t"),
            (with(&["mcp", "tool_pins"], json!({})), "mcp.tool_pins"),
            (
                with(
                    &["mcp", "param_headers"],
                    json!({"t": {"properties": {"n": {"type": "number", "x-mcp-header": "N"}}}}),
                ),
                "mcp.param_headers.t",
            ),
            (with(&["mcp", "param_headers"], json!({"t": "Query"})), "mcp.param_headers.t"),
            (with(&["decision_export"], json!({"filter_state": ["tool"]})), "decision_export.filter_state[0]"),
            (with(&["upstream_credentials", "default"], json!("nope")), "upstream_credentials.default"),
            (
                with(
                    &["upstream_credentials", "targets"],
                    json!({"x": {"mode": "rfc8693", "cluster": "c", "authority": "a", "path": "/t", "provider_id": "p"}}),
                ),
                "upstream_credentials.targets.x.provider_id",
            ),
            (
                with(
                    &["upstream_credentials", "targets"],
                    json!({"x": {"mode": "connector", "cluster": "c", "authority": "a"}}),
                ),
                "upstream_credentials.targets.x.provider_id",
            ),
            (
                with(
                    &["upstream_credentials", "targets"],
                    json!({"x": {"mode": "internal", "signing_key": {"kty": "OKP", "crv": "Ed25519", "d": ED_D, "x": "AAAA"}, "audience": "b"}}),
                ),
                "upstream_credentials.targets.x.signing_key",
            ),
            (
                with(&["upstream_credentials", "targets"], json!({"x": {"mode": "magic"}})),
                "upstream_credentials.targets.x.mode",
            ),
        ];
        for (doc, field) in cases {
            let e = error(doc.clone());
            assert!(e.field.starts_with(field), "{doc}: got {e}");
        }
        let e = error(
            json!({"providers": [{"issuer": "i", "audiencez": ["a"], "audiences": ["a"], "jwks": {"inline": {"keys": []}}}]}),
        );
        assert!(e.to_string().contains("audiencez"), "{e}");
        let e = error(with(&["providers"], json!([])));
        assert_eq!(e.field, "providers");
        assert!(parse(br#"{"providers":[],"providers":[]}"#).unwrap_err().reason.contains("duplicate"));
    }

    #[test]
    fn urls_sent_in_challenges_are_refused_unless_header_safe() {
        // Found by fuzzing (the `config` fuzz target): a NUL in the resource
        // URL was accepted and put into every `WWW-Authenticate` header.
        for bad in [
            "https://mcp.e\0xample.test/mcp",
            "https://mcp.example.test/a\"b",
            "https://mcp.example.test/a b",
            "https://mcp.example.test/a\\b",
            "https://mcp.example.test/\r\nx: 1",
            "https://mcp.example.test/tâche",
        ] {
            for field in ["resource", "metadata_url"] {
                let mut meta = json!({"resource": "https://mcp.example.test/mcp"});
                meta[field] = json!(bad);
                let e = error(with(&["resource_metadata"], meta));
                assert_eq!(e.field, format!("resource_metadata.{field}"), "{bad:?}");
            }
            let servers =
                with(&["resource_metadata"], json!({"resource": "https://m/", "authorization_servers": [bad]}));
            assert_eq!(error(servers).field, "resource_metadata.authorization_servers[0]", "{bad:?}");
        }
        let ok = with(&["resource_metadata"], json!({"resource": "https://mcp.example.test/t%C3%A2che?x=1%22"}));
        assert!(parse(ok.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn credentials_section() {
        let doc = with(
            &["upstream_credentials"],
            json!({
                "default": "backend",
                "targets": {
                    "sts": {"mode": "rfc8693", "cluster": "sts", "authority": "sts", "path": "/token", "client_id": "gw", "client_secret": "s"},
                    "backend": {"mode": "internal", "audience": "tasks", "jwks_path": "/.well-known/gw-jwks.json",
                                "signing_key": {"kty": "OKP", "crv": "Ed25519", "d": ED_D, "x": ED_X}}
                }
            }),
        );
        let c = parse(doc.to_string().as_bytes()).unwrap();
        let backend = c.credentials.resolve(None).unwrap();
        assert_eq!(c.credentials.targets[backend].name, "backend");
        assert_eq!(c.credentials.resolve(Some("passthrough")), None);
        assert!(c.credentials.jwks_at("/.well-known/gw-jwks.json").unwrap().contains(ED_X));
        let connector_default = with(
            &["upstream_credentials"],
            json!({"default": "r", "targets": {"r": {"mode": "connector", "cluster": "c", "authority": "a", "provider_id": "reddit"}}}),
        );
        assert_eq!(error(connector_default).field, "upstream_credentials.default");
    }
}
