//! Filter configuration: the JSON in the Wasm filter's `configuration`, turned into a validated [`Config`].
//!
//! Parsing has two stages. serde (with `deny_unknown_fields` and `serde_path_to_error`) refuses unknown
//! fields and wrong types and reports the path; [`validate`] then checks values and relations. Every
//! error is a [`ConfigError`] whose `field` is a path such as `providers[0].jwks.remote.timeout_ms`, so
//! the one Envoy log line that refuses a configuration tells the operator what to fix.
//! Field reference: docs/configuration.md (keep the two in step).

use crate::exchange::{Mode, Target};
use crate::exchange::{connector, internal, rfc8693};
use crate::jwt::jwk::KeySet;
use crate::jwt::signature::Algorithm;
use crate::mcp::glob::Glob;
use crate::mcp::rules::{self, ClaimCondition, ClaimTest, Policy, Rule, Unlisted};
use crate::mcp::sessions::SessionPolicy;
use serde::Deserialize;
use std::fmt;

pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
pub const DEFAULT_JWKS_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_REFRESH_INTERVAL_SECONDS: u64 = 600;
pub const DEFAULT_MIN_REFRESH_INTERVAL_SECONDS: u64 = 30;
pub const DEFAULT_MAX_REFRESH_INTERVAL_SECONDS: u64 = 86_400;
pub const DEFAULT_UNKNOWN_KID_REFETCH_SECONDS: u64 = 30;
pub const DEFAULT_RETRY_INITIAL_BACKOFF_MS: u64 = 1_000;
pub const DEFAULT_RETRY_MAX_BACKOFF_MS: u64 = 60_000;
pub const DEFAULT_JWKS_MAX_BYTES: usize = 256 * 1024;
pub const DEFAULT_JWKS_WAIT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 1_000;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_LIST_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
pub const DEFAULT_SESSION_IDLE_TIMEOUT_SECONDS: u64 = 86_400;
pub const DEFAULT_EXCHANGE_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_EXCHANGE_CACHE_ENTRIES: usize = 10_000;
pub const DEFAULT_EXCHANGE_MARGIN_SECONDS: u64 = 30;
pub const DEFAULT_CONNECTOR_TTL_SECONDS: u64 = 60;
pub const DEFAULT_INTERNAL_TTL_SECONDS: u64 = 60;
/// The credential name that forwards the verified client token unchanged.
pub const PASSTHROUGH: &str = "passthrough";
const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";
const URL_RULE: &str =
    "must be an absolute http(s) URL of printable ASCII without '\"' or '\\' (percent-encode the rest)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.field.is_empty() { write!(f, "{}", self.reason) } else { write!(f, "{}: {}", self.field, self.reason) }
    }
}

/// The validated configuration. Built once per `on_configure`; the request path only reads it.
#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub token: TokenSource,
    pub paths: Vec<PathMatch>,
    pub claim_headers: Vec<ClaimHeader>,
    pub resource_metadata: Option<ResourceMetadata>,
    /// `scope="..."` hint for the 401 challenge, space-separated.
    pub challenge_scope: Option<String>,
    pub jwks_wait_timeout_ms: u64,
    pub token_cache_max_entries: usize,
    pub mcp: McpConfig,
    pub credentials: Credentials,
}

/// `upstream_credentials`: what the upstream receives instead of the client's token.
#[derive(Debug)]
pub struct Credentials {
    /// Target used when no rule names one; None means passthrough.
    pub default: Option<usize>,
    pub targets: Vec<Target>,
    /// Upstream header (lower case) that carries the credential.
    pub cache_max_entries: usize,
    pub cache_margin_seconds: u64,
    /// `(path, JWKS document)` for internal targets with a `jwks_path`, serialised once at load.
    pub published_jwks: Vec<(String, String)>,
}

impl Credentials {
    /// Index of a target by name; None for passthrough.
    pub fn resolve(&self, name: Option<&str>) -> Option<usize> {
        match name {
            None => self.default,
            Some(PASSTHROUGH) => None,
            Some(n) => self.targets.iter().position(|t| t.name == n),
        }
    }

    /// The published JWKS at `path`, if an internal target publishes one there.
    pub fn jwks_at(&self, path: &str) -> Option<&str> {
        self.published_jwks.iter().find(|(p, _)| p == path).map(|(_, doc)| doc.as_str())
    }
}

/// Where and how MCP JSON-RPC bodies are inspected and authorized.
#[derive(Debug)]
pub struct McpConfig {
    /// Paths that are MCP endpoints (a subset of the guarded paths' meaning; default: the guarded paths).
    pub paths: Vec<PathMatch>,
    pub max_body_bytes: usize,
    pub body_timeout_ms: u64,
    /// Exact `Origin` values allowed; `*` allows any. Requests without `Origin` are not affected.
    pub allowed_origins: Vec<String>,
    pub policy: Policy,
    pub filter_lists: bool,
    pub max_list_response_bytes: usize,
    pub sessions: SessionPolicy,
}

impl McpConfig {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*" || o == origin)
    }
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub jwks: JwksSource,
    pub clock_skew_seconds: u64,
    pub require_exp: bool,
    pub max_token_bytes: usize,
}

#[derive(Debug)]
pub enum JwksSource {
    Remote(RemoteJwks),
    Inline(KeySet),
}

#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub refresh_interval_seconds: u64,
    pub min_refresh_interval_seconds: u64,
    pub max_refresh_interval_seconds: u64,
    pub unknown_kid_refetch_interval_seconds: u64,
    pub retry_initial_backoff_ms: u64,
    pub retry_max_backoff_ms: u64,
    pub max_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct TokenSource {
    /// Lower-case header name.
    pub header: String,
    /// Auth scheme before the token (matched case-insensitively); empty means the whole value is the token.
    pub scheme: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    /// `path` is the request path without its query string. Matching ignores ASCII case, and an exact
    /// match ignores a trailing slash: upstream frameworks (Express by default, among others) route
    /// `/MCP` and `/mcp/` to `/mcp`, so the filter must guard those spellings too. Matching more
    /// spellings than the upstream routes is the safe direction.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => {
                let trim = |s: &str| if s.len() > 1 { s.trim_end_matches('/').to_string() } else { s.to_string() };
                trim(path).eq_ignore_ascii_case(&trim(p))
            }
            PathMatch::Prefix(p) => {
                path.len() >= p.len() && path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClaimHeader {
    /// Claim name; a dotted name (`realm_access.roles`) walks nested objects.
    pub claim: String,
    pub header: String,
}

#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    /// RFC 9728 document, serialised once at load.
    pub document: String,
    /// Absolute URL of the document, used in `WWW-Authenticate: Bearer resource_metadata="..."`.
    pub url: String,
    /// Request paths the filter answers with the document itself.
    pub well_known_paths: Vec<String>,
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
    #[serde(default)]
    jwks_wait_timeout_ms: Option<u64>,
    #[serde(default)]
    token_cache: Option<RawTokenCache>,
    #[serde(default)]
    mcp: Option<RawMcp>,
    #[serde(default)]
    upstream_credentials: Option<RawCredentials>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    cache: Option<RawExchangeCache>,
    #[serde(default)]
    targets: std::collections::BTreeMap<String, RawTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExchangeCache {
    #[serde(default)]
    max_entries: Option<usize>,
    #[serde(default)]
    margin_seconds: Option<u64>,
}

/// One flat shape for every mode; fields that do not belong to the chosen mode are refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    mode: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    inject_meta_key: Option<String>,
    // rfc8693 and connector
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    path: Option<String>,
    // rfc8693
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    requested_token_type: Option<String>,
    #[serde(default)]
    subject_token_type: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_auth: Option<String>,
    // connector
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    user_id_claim: Option<String>,
    #[serde(default)]
    default_ttl_seconds: Option<u64>,
    // internal
    #[serde(default)]
    signing_key: Option<serde_json::Value>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    jwks_path: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMcp {
    #[serde(default)]
    paths: Option<Vec<RawPathMatch>>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    body_timeout_ms: Option<u64>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    unlisted_tools: Option<String>,
    #[serde(default)]
    unlisted_methods: Option<String>,
    #[serde(default)]
    filter_lists: Option<bool>,
    #[serde(default)]
    max_list_response_bytes: Option<usize>,
    #[serde(default)]
    sessions: Option<RawSessions>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    #[serde(default)]
    binding: Option<String>,
    #[serde(default)]
    unknown_sessions: Option<String>,
    #[serde(default)]
    max_sessions: Option<usize>,
    #[serde(default)]
    idle_timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    method: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    any_scopes: Vec<Vec<String>>,
    #[serde(default)]
    claims: Vec<RawClaimCondition>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    credential: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimCondition {
    claim: String,
    #[serde(default)]
    contains: Option<String>,
    #[serde(default, rename = "in")]
    one_of: Option<Vec<String>>,
    #[serde(default)]
    equals: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    #[serde(default)]
    name: Option<String>,
    issuer: String,
    audiences: Vec<String>,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    jwks: RawJwks,
    #[serde(default)]
    clock_skew_seconds: Option<u64>,
    #[serde(default)]
    require_exp: Option<bool>,
    #[serde(default)]
    max_token_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwks {
    #[serde(default)]
    remote: Option<RawRemoteJwks>,
    #[serde(default)]
    inline: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    cluster: String,
    authority: String,
    path: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    refresh_interval_seconds: Option<u64>,
    #[serde(default)]
    min_refresh_interval_seconds: Option<u64>,
    #[serde(default)]
    max_refresh_interval_seconds: Option<u64>,
    #[serde(default)]
    unknown_kid_refetch_interval_seconds: Option<u64>,
    #[serde(default)]
    retry_initial_backoff_ms: Option<u64>,
    #[serde(default)]
    retry_max_backoff_ms: Option<u64>,
    #[serde(default)]
    max_bytes: Option<usize>,
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
struct RawPathMatch {
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimHeader {
    claim: String,
    header: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResourceMetadata {
    resource: String,
    #[serde(default)]
    authorization_servers: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
    #[serde(default)]
    resource_name: Option<String>,
    #[serde(default)]
    metadata_url: Option<String>,
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
        providers.push(provider);
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
            .map(|(i, m)| validate_path_match(&format!("paths[{i}]"), m))
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
        check_scope_token(&format!("challenge_scopes[{i}]"), s)?;
    }
    let challenge_scope = (!raw.challenge_scopes.is_empty()).then(|| raw.challenge_scopes.join(" "));

    let jwks_wait_timeout_ms = raw.jwks_wait_timeout_ms.unwrap_or(DEFAULT_JWKS_WAIT_TIMEOUT_MS);
    check_range("jwks_wait_timeout_ms", jwks_wait_timeout_ms, 1, 120_000)?;
    let token_cache_max_entries = raw.token_cache.map_or(DEFAULT_TOKEN_CACHE_ENTRIES, |c| c.max_entries);
    check_range("token_cache.max_entries", token_cache_max_entries as u64, 0, 1_000_000)?;

    let credentials = validate_credentials("upstream_credentials", raw.upstream_credentials.unwrap_or_default())?;
    let mcp = validate_mcp("mcp", raw.mcp.unwrap_or_default(), &paths, &credentials)?;
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

    Ok(Config {
        providers,
        token,
        paths,
        claim_headers,
        resource_metadata,
        challenge_scope,
        jwks_wait_timeout_ms,
        token_cache_max_entries,
        mcp,
        credentials,
    })
}

fn validate_credentials(field: &str, raw: RawCredentials) -> Result<Credentials, ConfigError> {
    let mut targets = Vec::new();
    for (name, t) in raw.targets {
        let f = format!("{field}.targets.{name}");
        if name.is_empty()
            || name == PASSTHROUGH
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(ConfigError::new(
                f,
                "target names are words of letters, digits, '-' and '_' (and not \"passthrough\")",
            ));
        }
        targets.push(validate_target(&f, name, t)?);
    }
    let default = match raw.default.as_deref() {
        None | Some(PASSTHROUGH) => None,
        Some(name) => {
            let i = targets
                .iter()
                .position(|t| t.name == name)
                .ok_or_else(|| ConfigError::new(format!("{field}.default"), format!("no target named {name:?}")))?;
            if matches!(targets[i].mode, Mode::Connector(_)) {
                return Err(ConfigError::new(
                    format!("{field}.default"),
                    "a connector target needs _meta from a tools/call body; name it on the rules of the tools that need it",
                ));
            }
            Some(i)
        }
    };
    let cache = raw.cache.unwrap_or(RawExchangeCache { max_entries: None, margin_seconds: None });
    let cache_max_entries = cache.max_entries.unwrap_or(DEFAULT_EXCHANGE_CACHE_ENTRIES);
    check_range(&format!("{field}.cache.max_entries"), cache_max_entries as u64, 0, 1_000_000)?;
    let cache_margin_seconds = cache.margin_seconds.unwrap_or(DEFAULT_EXCHANGE_MARGIN_SECONDS);
    check_range(&format!("{field}.cache.margin_seconds"), cache_margin_seconds, 0, 3_600)?;
    let mut published_jwks: Vec<(String, String)> = Vec::new();
    for t in &targets {
        if let Mode::Internal(s) = &t.mode
            && let Some(path) = &s.jwks_path
        {
            if published_jwks.iter().any(|(p, _)| p == path) {
                return Err(ConfigError::new(
                    format!("{field}.targets.{}.jwks_path", t.name),
                    "path already used by another target",
                ));
            }
            published_jwks.push((path.clone(), s.public_jwks()));
        }
    }
    Ok(Credentials { default, targets, cache_max_entries, cache_margin_seconds, published_jwks })
}

fn validate_target(field: &str, name: String, t: RawTarget) -> Result<Target, ConfigError> {
    let timeout_ms = t.timeout_ms.unwrap_or(DEFAULT_EXCHANGE_TIMEOUT_MS);
    check_range(&format!("{field}.timeout_ms"), timeout_ms, 1, 60_000)?;
    if let Some(key) = &t.inject_meta_key
        && (key.is_empty() || key == "userToken")
    {
        return Err(ConfigError::new(
            format!("{field}.inject_meta_key"),
            "must be a non-empty _meta key other than userToken",
        ));
    }
    // Fields that belong to another mode are named, not silently ignored.
    let present = |names: &[(&'static str, bool)]| names.iter().find(|(_, set)| *set).map(|(n, _)| *n);
    let rfc_fields = [
        ("resource", t.resource.is_some()),
        ("scope", t.scope.is_some()),
        ("requested_token_type", t.requested_token_type.is_some()),
        ("subject_token_type", t.subject_token_type.is_some()),
        ("client_id", t.client_id.is_some()),
        ("client_secret", t.client_secret.is_some()),
        ("client_auth", t.client_auth.is_some()),
    ];
    let connector_fields = [
        ("audience", t.audience.is_some() && t.mode == "connector"),
        ("provider_id", t.provider_id.is_some()),
        ("user_id_claim", t.user_id_claim.is_some()),
        ("default_ttl_seconds", t.default_ttl_seconds.is_some()),
    ];
    let internal_fields = [
        ("signing_key", t.signing_key.is_some()),
        ("key_id", t.key_id.is_some()),
        ("issuer", t.issuer.is_some()),
        ("ttl_seconds", t.ttl_seconds.is_some()),
        ("jwks_path", t.jwks_path.is_some()),
    ];
    let callout_fields =
        [("cluster", t.cluster.is_some()), ("authority", t.authority.is_some()), ("path", t.path.is_some())];
    let refuse = |others: &[&[(&'static str, bool)]], mode: &str| -> Result<(), ConfigError> {
        for group in others {
            if let Some(n) = present(group) {
                return Err(ConfigError::new(format!("{field}.{n}"), format!("does not apply to mode {mode:?}")));
            }
        }
        Ok(())
    };
    let callout = |default_path: Option<&str>| -> Result<(String, String, String), ConfigError> {
        let cluster = t.cluster.clone().filter(|c| !c.is_empty());
        let cluster =
            cluster.ok_or_else(|| ConfigError::new(format!("{field}.cluster"), "must name an Envoy cluster"))?;
        let authority = t.authority.clone().filter(|a| !a.is_empty() && !a.contains(['/', ' ']));
        let authority =
            authority.ok_or_else(|| ConfigError::new(format!("{field}.authority"), "must be a host[:port]"))?;
        let path = t.path.clone().or_else(|| default_path.map(str::to_string)).filter(|p| p.starts_with('/'));
        let path = path.ok_or_else(|| ConfigError::new(format!("{field}.path"), "must start with '/'"))?;
        Ok((cluster, authority, path))
    };
    let mode = match t.mode.as_str() {
        "rfc8693" => {
            refuse(&[&connector_fields, &internal_fields], "rfc8693")?;
            let (cluster, authority, path) = callout(None)?;
            let client_auth = match (t.client_auth.as_deref(), &t.client_id) {
                (None | Some("basic"), Some(_)) => rfc8693::ClientAuth::Basic,
                (Some("post"), Some(_)) => rfc8693::ClientAuth::Post,
                (None | Some("none"), None) => rfc8693::ClientAuth::None,
                (Some("basic" | "post"), None) => {
                    return Err(ConfigError::new(format!("{field}.client_id"), "required by client_auth"));
                }
                (Some(other), _) => {
                    return Err(ConfigError::new(
                        format!("{field}.client_auth"),
                        format!("{other:?} must be \"basic\", \"post\" or \"none\""),
                    ));
                }
            };
            if let Some(scope) = &t.scope {
                for (i, s) in scope.split(' ').enumerate() {
                    check_scope_token(&format!("{field}.scope (word {i})"), s)?;
                }
            }
            Mode::Rfc8693(rfc8693::Settings {
                cluster,
                authority,
                path,
                audience: t.audience,
                resource: t.resource,
                scope: t.scope,
                requested_token_type: t.requested_token_type,
                subject_token_type: t.subject_token_type.unwrap_or_else(|| rfc8693::ACCESS_TOKEN_TYPE.into()),
                client_id: t.client_id,
                client_secret: t.client_secret.map(rfc8693::Secret),
                client_auth,
            })
        }
        "connector" => {
            refuse(&[&rfc_fields, &internal_fields], "connector")?;
            let (cluster, authority, path) = callout(Some("/api/connectors/requestAuth"))?;
            let provider_id = t.provider_id.filter(|p| !p.is_empty());
            let provider_id = provider_id.ok_or_else(|| {
                ConfigError::new(format!("{field}.provider_id"), "required: the provider this tool needs")
            })?;
            let default_ttl_seconds = t.default_ttl_seconds.unwrap_or(DEFAULT_CONNECTOR_TTL_SECONDS);
            check_range(&format!("{field}.default_ttl_seconds"), default_ttl_seconds, 0, 86_400)?;
            Mode::Connector(connector::Settings {
                cluster,
                authority,
                path,
                provider_id,
                user_id_claim: t.user_id_claim.unwrap_or_else(|| "sub".into()),
                default_ttl_seconds,
            })
        }
        "internal" => {
            refuse(&[&rfc_fields, &connector_fields, &callout_fields], "internal")?;
            let jwk = t
                .signing_key
                .ok_or_else(|| ConfigError::new(format!("{field}.signing_key"), "required: a private JWK"))?;
            let key = internal::SigningKey::from_jwk(&jwk)
                .map_err(|e| ConfigError::new(format!("{field}.signing_key"), e))?;
            let ttl_seconds = t.ttl_seconds.unwrap_or(DEFAULT_INTERNAL_TTL_SECONDS);
            check_range(&format!("{field}.ttl_seconds"), ttl_seconds, 1, 3_600)?;
            let audience = t.audience.clone().filter(|a| !a.is_empty());
            let audience = audience.ok_or_else(|| {
                ConfigError::new(format!("{field}.audience"), "required: who the internal token is for")
            })?;
            if let Some(p) = &t.jwks_path
                && (!p.starts_with('/') || p.contains(['?', '#']))
            {
                return Err(ConfigError::new(format!("{field}.jwks_path"), "must be a path starting with '/'"));
            }
            Mode::Internal(internal::Settings {
                key,
                key_id: t.key_id.unwrap_or_else(|| name.clone()),
                issuer: t.issuer.unwrap_or_else(|| "mcp-authz".into()),
                audience,
                ttl_seconds,
                jwks_path: t.jwks_path,
            })
        }
        other => {
            return Err(ConfigError::new(
                format!("{field}.mode"),
                format!("{other:?} must be \"rfc8693\", \"connector\" or \"internal\""),
            ));
        }
    };
    Ok(Target { name, mode, timeout_ms, inject_meta_key: t.inject_meta_key })
}

fn validate_mcp(
    field: &str,
    m: RawMcp,
    guarded: &[PathMatch],
    credentials: &Credentials,
) -> Result<McpConfig, ConfigError> {
    let paths = match m.paths {
        None => guarded.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(ConfigError::new(
                format!("{field}.paths"),
                "must not be empty; omit it to use the guarded paths",
            ));
        }
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, p)| validate_path_match(&format!("{field}.paths[{i}]"), p))
            .collect::<Result<_, _>>()?,
    };
    let max_body_bytes = m.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    check_range(&format!("{field}.max_body_bytes"), max_body_bytes as u64, 1024, 64 * 1024 * 1024)?;
    let body_timeout_ms = m.body_timeout_ms.unwrap_or(DEFAULT_BODY_TIMEOUT_MS);
    check_range(&format!("{field}.body_timeout_ms"), body_timeout_ms, 100, 600_000)?;
    let max_list_response_bytes = m.max_list_response_bytes.unwrap_or(DEFAULT_MAX_LIST_RESPONSE_BYTES);
    check_range(&format!("{field}.max_list_response_bytes"), max_list_response_bytes as u64, 1024, 64 * 1024 * 1024)?;
    for (i, o) in m.allowed_origins.iter().enumerate() {
        if o != "*" && (split_url(o).is_none_or(|(_, path)| !path.is_empty()) || o.ends_with('/')) {
            return Err(ConfigError::new(
                format!("{field}.allowed_origins[{i}]"),
                format!(
                    "{o:?} is not an origin such as https://app.example.com (scheme://host[:port], no path), or \"*\""
                ),
            ));
        }
    }
    let unlisted = |name: &str, v: Option<String>, default: Unlisted| match v.as_deref() {
        None => Ok(default),
        Some("allow") => Ok(Unlisted::Allow),
        Some("deny") => Ok(Unlisted::Deny),
        Some(other) => {
            Err(ConfigError::new(format!("{field}.{name}"), format!("{other:?} must be \"allow\" or \"deny\"")))
        }
    };
    let policy = Policy {
        unlisted_tools: unlisted("unlisted_tools", m.unlisted_tools, Unlisted::Deny)?,
        unlisted_methods: unlisted("unlisted_methods", m.unlisted_methods, Unlisted::Allow)?,
        rules: m
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| validate_rule(&format!("{field}.rules[{i}]"), r, credentials))
            .collect::<Result<_, _>>()?,
    };
    let sessions = validate_sessions(&format!("{field}.sessions"), m.sessions.unwrap_or_default())?;
    Ok(McpConfig {
        paths,
        max_body_bytes,
        body_timeout_ms,
        allowed_origins: m.allowed_origins,
        policy,
        filter_lists: m.filter_lists.unwrap_or(true),
        max_list_response_bytes,
        sessions,
    })
}

/// A setting spelled as one of a few words: the value of the word given, or of the first one (the
/// default) when none is.
fn one_of<T: Copy>(field: &str, given: Option<String>, words: &[(&str, T)]) -> Result<T, ConfigError> {
    let Some(given) = given else { return Ok(words[0].1) };
    words.iter().find(|(word, _)| *word == given).map(|(_, value)| *value).ok_or_else(|| {
        let names: Vec<String> = words.iter().map(|(word, _)| format!("{word:?}")).collect();
        ConfigError::new(field, format!("{given:?} must be {}", names.join(" or ")))
    })
}

fn validate_sessions(field: &str, s: RawSessions) -> Result<SessionPolicy, ConfigError> {
    let bind = one_of(&format!("{field}.binding"), s.binding, &[("subject", true), ("off", false)])?;
    let adopt_unknown =
        one_of(&format!("{field}.unknown_sessions"), s.unknown_sessions, &[("refuse", false), ("adopt", true)])?;
    let max_sessions = s.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
    check_range(&format!("{field}.max_sessions"), max_sessions as u64, 16, 1_000_000)?;
    let idle_timeout_seconds = s.idle_timeout_seconds.unwrap_or(DEFAULT_SESSION_IDLE_TIMEOUT_SECONDS);
    check_range(&format!("{field}.idle_timeout_seconds"), idle_timeout_seconds, 60, 30 * 86_400)?;
    Ok(SessionPolicy { bind, adopt_unknown, max_sessions, idle_timeout_ms: idle_timeout_seconds * 1000 })
}

fn validate_rule(field: &str, r: RawRule, credentials: &Credentials) -> Result<Rule, ConfigError> {
    let method_is_glob = r.method.contains(['*', '?']);
    if r.method.is_empty() || (!method_is_glob && !rules::KNOWN_METHODS.contains(&r.method.as_str())) {
        return Err(ConfigError::new(
            format!("{field}.method"),
            format!(
                "unknown MCP method {:?} (method names are case-sensitive; use a glob such as \"notifications/*\" for others)",
                r.method
            ),
        ));
    }
    let method = Glob::new(&r.method);
    let target = match (r.name, r.uri) {
        (Some(_), Some(_)) => return Err(ConfigError::new(field, "set at most one of \"name\" or \"uri\"")),
        (Some(name), None) => {
            if !["tools/call", "prompts/get"].iter().any(|m| method.matches(m)) {
                return Err(ConfigError::new(format!("{field}.name"), "only applies to tools/call and prompts/get"));
            }
            Some(name)
        }
        (None, Some(uri)) => {
            if !["resources/read", "resources/subscribe", "resources/unsubscribe"].iter().any(|m| method.matches(m)) {
                return Err(ConfigError::new(
                    format!("{field}.uri"),
                    "only applies to resources/read, resources/subscribe and resources/unsubscribe",
                ));
            }
            Some(uri)
        }
        (None, None) => None,
    };
    if target.as_deref() == Some("") {
        return Err(ConfigError::new(field, "name/uri must not be empty"));
    }
    for (i, s) in r.scopes.iter().enumerate() {
        check_scope_token(&format!("{field}.scopes[{i}]"), s)?;
    }
    for (i, set) in r.any_scopes.iter().enumerate() {
        if set.is_empty() {
            return Err(ConfigError::new(
                format!("{field}.any_scopes[{i}]"),
                "an alternative must list at least one scope",
            ));
        }
        for (j, s) in set.iter().enumerate() {
            check_scope_token(&format!("{field}.any_scopes[{i}][{j}]"), s)?;
        }
    }
    let mut claims = Vec::new();
    for (i, c) in r.claims.into_iter().enumerate() {
        let f = format!("{field}.claims[{i}]");
        if c.claim.is_empty() || c.claim.split('.').any(str::is_empty) {
            return Err(ConfigError::new(format!("{f}.claim"), "must be a claim name or a dotted path"));
        }
        let test = match (c.contains, c.one_of, c.equals) {
            (Some(v), None, None) => ClaimTest::Contains(v),
            (None, Some(list), None) if !list.is_empty() => ClaimTest::In(list),
            (None, Some(_), None) => return Err(ConfigError::new(format!("{f}.in"), "must not be empty")),
            (None, None, Some(v)) => ClaimTest::Equals(v),
            _ => return Err(ConfigError::new(f, "set exactly one of \"contains\", \"in\" or \"equals\"")),
        };
        claims.push(ClaimCondition { claim: c.claim, test });
    }
    let deny = match r.action.as_deref() {
        None | Some("allow") => false,
        Some("deny") => true,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{field}.action"),
                format!("{other:?} must be \"allow\" or \"deny\""),
            ));
        }
    };
    let credential = match r.credential {
        None => None,
        Some(name) if name == PASSTHROUGH => Some(name),
        Some(name) => {
            let target = credentials.targets.iter().find(|t| t.name == name).ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.credential"),
                    format!("no upstream_credentials target named {name:?}"),
                )
            })?;
            // Exactly tools/call: a glob would also send other methods' `_meta.userToken` upstream.
            if matches!(target.mode, Mode::Connector(_)) && method.as_string() != "tools/call" {
                return Err(ConfigError::new(
                    format!("{field}.credential"),
                    "connector targets serve tools/call rules only",
                ));
            }
            Some(name)
        }
    };
    if deny && (!r.scopes.is_empty() || !r.any_scopes.is_empty() || !claims.is_empty() || credential.is_some()) {
        return Err(ConfigError::new(format!("{field}.action"), "a deny rule takes no scopes or claims"));
    }
    Ok(Rule {
        method,
        target: target.as_deref().map(Glob::new),
        scopes: r.scopes,
        any_scopes: r.any_scopes,
        claims,
        deny,
        credential,
        label: field.trim_start_matches("mcp.").to_string(),
    })
}

fn validate_provider(field: &str, p: RawProvider) -> Result<Provider, ConfigError> {
    if p.issuer.is_empty() {
        return Err(ConfigError::new(format!("{field}.issuer"), "must not be empty"));
    }
    if p.audiences.is_empty() {
        return Err(ConfigError::new(
            format!("{field}.audiences"),
            "at least one audience is required (MCP servers must only accept tokens issued for them)",
        ));
    }
    if let Some(i) = p.audiences.iter().position(String::is_empty) {
        return Err(ConfigError::new(format!("{field}.audiences[{i}]"), "must not be empty"));
    }
    let algorithms = match p.algorithms {
        None => Algorithm::ALL.to_vec(),
        Some(names) if names.is_empty() => {
            return Err(ConfigError::new(format!("{field}.algorithms"), "must not be empty; omit it to allow all"));
        }
        Some(names) => {
            let mut algs = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let alg = Algorithm::from_name(name).ok_or_else(|| {
                    ConfigError::new(
                        format!("{field}.algorithms[{i}]"),
                        format!("unsupported algorithm {name:?}; supported: {}", Algorithm::names_list()),
                    )
                })?;
                if algs.contains(&alg) {
                    return Err(ConfigError::new(format!("{field}.algorithms[{i}]"), "listed twice"));
                }
                algs.push(alg);
            }
            algs
        }
    };
    let jwks = match (p.jwks.remote, p.jwks.inline) {
        (Some(r), None) => JwksSource::Remote(validate_remote(&format!("{field}.jwks.remote"), r)?),
        (None, Some(inline)) => {
            let f = format!("{field}.jwks.inline");
            let bytes = match inline {
                serde_json::Value::String(s) => s.into_bytes(),
                v @ serde_json::Value::Object(_) => v.to_string().into_bytes(),
                _ => return Err(ConfigError::new(f, "must be a JWKS object or a string holding one")),
            };
            let set = KeySet::parse(&bytes).map_err(|e| ConfigError::new(f.clone(), e.to_string()))?;
            JwksSource::Inline(set)
        }
        _ => return Err(ConfigError::new(format!("{field}.jwks"), "set exactly one of \"remote\" or \"inline\"")),
    };
    let clock_skew_seconds = p.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECONDS);
    check_range(&format!("{field}.clock_skew_seconds"), clock_skew_seconds, 0, 600)?;
    let max_token_bytes = p.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    check_range(&format!("{field}.max_token_bytes"), max_token_bytes as u64, 64, 1024 * 1024)?;
    let name = match p.name {
        Some(n) if n.is_empty() || n.contains(char::is_whitespace) => {
            return Err(ConfigError::new(format!("{field}.name"), "must be a non-empty word"));
        }
        Some(n) => n,
        None => p.issuer.clone(),
    };
    Ok(Provider {
        name,
        issuer: p.issuer,
        audiences: p.audiences,
        algorithms,
        jwks,
        clock_skew_seconds,
        require_exp: p.require_exp.unwrap_or(true),
        max_token_bytes,
    })
}

fn validate_remote(field: &str, r: RawRemoteJwks) -> Result<RemoteJwks, ConfigError> {
    if r.cluster.is_empty() {
        return Err(ConfigError::new(format!("{field}.cluster"), "must name an Envoy cluster"));
    }
    if r.authority.is_empty() || r.authority.contains(['/', ' ']) {
        return Err(ConfigError::new(format!("{field}.authority"), "must be a host[:port] such as idp.example.com"));
    }
    if !r.path.starts_with('/') {
        return Err(ConfigError::new(format!("{field}.path"), "must start with '/'"));
    }
    let out = RemoteJwks {
        cluster: r.cluster,
        authority: r.authority,
        path: r.path,
        timeout_ms: r.timeout_ms.unwrap_or(DEFAULT_JWKS_TIMEOUT_MS),
        refresh_interval_seconds: r.refresh_interval_seconds.unwrap_or(DEFAULT_REFRESH_INTERVAL_SECONDS),
        min_refresh_interval_seconds: r.min_refresh_interval_seconds.unwrap_or(DEFAULT_MIN_REFRESH_INTERVAL_SECONDS),
        max_refresh_interval_seconds: r.max_refresh_interval_seconds.unwrap_or(DEFAULT_MAX_REFRESH_INTERVAL_SECONDS),
        unknown_kid_refetch_interval_seconds: r
            .unknown_kid_refetch_interval_seconds
            .unwrap_or(DEFAULT_UNKNOWN_KID_REFETCH_SECONDS),
        retry_initial_backoff_ms: r.retry_initial_backoff_ms.unwrap_or(DEFAULT_RETRY_INITIAL_BACKOFF_MS),
        retry_max_backoff_ms: r.retry_max_backoff_ms.unwrap_or(DEFAULT_RETRY_MAX_BACKOFF_MS),
        max_bytes: r.max_bytes.unwrap_or(DEFAULT_JWKS_MAX_BYTES),
    };
    check_range(&format!("{field}.timeout_ms"), out.timeout_ms, 1, 60_000)?;
    check_range(&format!("{field}.refresh_interval_seconds"), out.refresh_interval_seconds, 1, 7 * 86_400)?;
    check_range(&format!("{field}.min_refresh_interval_seconds"), out.min_refresh_interval_seconds, 1, 7 * 86_400)?;
    check_range(&format!("{field}.max_refresh_interval_seconds"), out.max_refresh_interval_seconds, 1, 7 * 86_400)?;
    if out.min_refresh_interval_seconds > out.max_refresh_interval_seconds {
        return Err(ConfigError::new(
            format!("{field}.min_refresh_interval_seconds"),
            "must not exceed max_refresh_interval_seconds",
        ));
    }
    check_range(
        &format!("{field}.unknown_kid_refetch_interval_seconds"),
        out.unknown_kid_refetch_interval_seconds,
        1,
        86_400,
    )?;
    check_range(&format!("{field}.retry_initial_backoff_ms"), out.retry_initial_backoff_ms, 10, 3_600_000)?;
    check_range(&format!("{field}.retry_max_backoff_ms"), out.retry_max_backoff_ms, 10, 3_600_000)?;
    if out.retry_initial_backoff_ms > out.retry_max_backoff_ms {
        return Err(ConfigError::new(
            format!("{field}.retry_initial_backoff_ms"),
            "must not exceed retry_max_backoff_ms",
        ));
    }
    check_range(&format!("{field}.max_bytes"), out.max_bytes as u64, 256, 4 * 1024 * 1024)?;
    Ok(out)
}

fn validate_path_match(field: &str, m: RawPathMatch) -> Result<PathMatch, ConfigError> {
    let pm = match (m.exact, m.prefix) {
        (Some(p), None) => PathMatch::Exact(p),
        (None, Some(p)) => PathMatch::Prefix(p),
        _ => return Err(ConfigError::new(field, "set exactly one of \"exact\" or \"prefix\"")),
    };
    let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = &pm;
    if !p.starts_with('/') || p.contains(['?', '#']) {
        return Err(ConfigError::new(field, "must be a path starting with '/' without query or fragment"));
    }
    // Requests are matched on their canonical reading (`crate::path`), so the configured path is taken
    // in that form too: `/caf%c3%a9` and `/café` both guard what a client spells either way.
    let reading = crate::path::read(p);
    if reading.is_ambiguous() {
        return Err(ConfigError::new(
            field,
            "must have one reading: no encoded '/' or '\\', NUL, ';' parameters, double escapes or '//' before '..'",
        ));
    }
    Ok(match pm {
        PathMatch::Exact(_) => PathMatch::Exact(reading.canonical),
        PathMatch::Prefix(_) => PathMatch::Prefix(reading.canonical),
    })
}

fn validate_resource_metadata(field: &str, m: RawResourceMetadata) -> Result<ResourceMetadata, ConfigError> {
    let (origin, resource_path) =
        split_url(&m.resource).ok_or_else(|| ConfigError::new(format!("{field}.resource"), URL_RULE))?;
    if m.resource.contains('#') {
        return Err(ConfigError::new(format!("{field}.resource"), "must not contain a fragment (RFC 9728)"));
    }
    for (i, s) in m.authorization_servers.iter().enumerate() {
        if split_url(s).is_none() {
            return Err(ConfigError::new(format!("{field}.authorization_servers[{i}]"), URL_RULE));
        }
    }
    for (i, s) in m.scopes_supported.iter().enumerate() {
        check_scope_token(&format!("{field}.scopes_supported[{i}]"), s)?;
    }
    // RFC 9728 section 3.1: the well-known segment goes between the host and the resource's path.
    let suffix = resource_path.split('?').next().unwrap_or("").trim_end_matches('/');
    let suffixed_path = format!("{WELL_KNOWN_PREFIX}{suffix}");
    let url = match m.metadata_url {
        Some(u) if split_url(&u).is_none() => {
            return Err(ConfigError::new(format!("{field}.metadata_url"), URL_RULE));
        }
        Some(u) => u,
        None => format!("{origin}{suffixed_path}"),
    };
    let mut well_known_paths = vec![suffixed_path];
    if suffix.is_empty() {
        well_known_paths.dedup();
    } else {
        well_known_paths.push(WELL_KNOWN_PREFIX.to_string());
    }
    let mut doc = serde_json::Map::new();
    doc.insert("resource".into(), m.resource.clone().into());
    if !m.authorization_servers.is_empty() {
        doc.insert("authorization_servers".into(), m.authorization_servers.into());
    }
    if !m.scopes_supported.is_empty() {
        doc.insert("scopes_supported".into(), m.scopes_supported.into());
    }
    doc.insert("bearer_methods_supported".into(), vec!["header"].into());
    if let Some(name) = m.resource_name {
        doc.insert("resource_name".into(), name.into());
    }
    Ok(ResourceMetadata { document: serde_json::Value::Object(doc).to_string(), url, well_known_paths })
}

/// Splits `scheme://authority/path` into (`scheme://authority`, `/path`); None unless http(s) and
/// printable ASCII without `"` or `\`: these URLs are sent inside quoted-strings of `WWW-Authenticate`,
/// where a control character, space, quote or backslash would break or end the header (RFC 3986
/// percent-encodes all of them anyway).
fn split_url(url: &str) -> Option<(&str, &str)> {
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

fn check_header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && !name.starts_with(':')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok { Ok(()) } else { Err(ConfigError::new(field, format!("{name:?} is not a valid HTTP header name"))) }
}

/// RFC 6749 scope-token: printable ASCII without space, '"' or '\'.
fn check_scope_token(field: &str, s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if ok { Ok(()) } else { Err(ConfigError::new(field, format!("{s:?} is not a valid scope"))) }
}

fn check_range(field: &str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::new(field, format!("{v} is out of range {min}..={max}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
