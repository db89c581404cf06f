//! The `mcp` section: MCP endpoints, body limits, origins, the rules (parsed into a [`Policy`]), list
//! trimming and session binding. Whether a rule's `credential` names a usable target is the
//! credentials section's business: the caller passes that check in.

use super::arguments::{self, ArgumentCondition, ArgumentTest};
use super::glob::Glob;
use super::mirror::{self, ParamHeader};
use super::pins::{self, ToolPins};
use super::rules::{self, ClaimCondition, ClaimTest, Policy, Rule, Unlisted};
use super::sessions::SessionPolicy;
use crate::config::fields::{ConfigError, check_advertised_scope, check_range, one_of, split_url};
use crate::path::{PathMatch, RawPathMatch};
use crate::scopes::ScopeHierarchy;
use serde::Deserialize;

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_LIST_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
pub const DEFAULT_SESSION_IDLE_TIMEOUT_SECONDS: u64 = 86_400;
pub const DEFAULT_MAX_PINNED_TOOLS: usize = 1_000;

/// Checks a rule's `credential` (field, target name, the rule's method) against the credentials section.
pub(crate) type CredentialCheck<'a> = dyn Fn(&str, &str, &Glob) -> Result<(), ConfigError> + 'a;

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
    /// Tool-definition pinning (`tool_pins`), when configured.
    pub tool_pins: Option<ToolPins>,
    /// `x-mcp-header` parameters of tools, as configured (`param_headers`); others are learned from
    /// `tools/list` answers.
    pub param_headers: Vec<(String, Vec<ParamHeader>)>,
}

impl McpConfig {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*" || o == origin)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMcp {
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
    mode: Option<String>,
    #[serde(default)]
    tool_pins: Option<RawToolPins>,
    #[serde(default)]
    param_headers: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToolPins {
    #[serde(default)]
    pins: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    learn: bool,
    #[serde(default)]
    max_tools: Option<usize>,
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
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    arguments: Vec<RawArgumentCondition>,
    #[serde(default)]
    shadow: bool,
}

/// One flat shape: exactly one test is set (checked by name at load).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArgumentCondition {
    pointer: String,
    #[serde(default)]
    equals: Option<serde_json::Value>,
    #[serde(default)]
    one_of: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    max_length: Option<usize>,
    #[serde(default)]
    in_claim: Option<String>,
    #[serde(default)]
    equals_claim: Option<String>,
    #[serde(default)]
    not: bool,
    #[serde(default)]
    optional: bool,
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

pub(crate) fn validate_mcp(
    field: &str,
    m: RawMcp,
    guarded: &[PathMatch],
    credential_allowed: &CredentialCheck,
    scopes: ScopeHierarchy,
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
            .map(|(i, p)| PathMatch::parse(&format!("{field}.paths[{i}]"), p))
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
    let rules: Vec<Rule> = m
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| validate_rule(&format!("{field}.rules[{i}]"), r, credential_allowed))
        .collect::<Result<_, _>>()?;
    for (i, rule) in rules.iter().enumerate() {
        if let Some(id) = &rule.id
            && let Some(j) = rules[..i].iter().position(|r| r.id.as_ref() == Some(id))
        {
            return Err(ConfigError::new(
                format!("{field}.rules[{i}].id"),
                format!("{id:?} is already the id of rules[{j}]"),
            ));
        }
    }
    let policy = Policy {
        unlisted_tools: unlisted("unlisted_tools", m.unlisted_tools, Unlisted::Deny)?,
        unlisted_methods: unlisted("unlisted_methods", m.unlisted_methods, Unlisted::Allow)?,
        rules,
        shadow: one_of(&format!("{field}.mode"), m.mode, &[("enforce", false), ("shadow", true)])?,
        scopes,
    };
    let tool_pins = validate_tool_pins(&format!("{field}.tool_pins"), m.tool_pins)?;
    let param_headers = m
        .param_headers
        .into_iter()
        .map(|(name, schema)| match mirror::declared(&schema) {
            // Anything else would declare nothing, silently: a tool meant to be checked would not be.
            _ if !schema.is_object() => Err(ConfigError::new(
                format!("{field}.param_headers.{name}"),
                "must be the tool's inputSchema (an object)",
            )),
            Ok(params) => Ok((name, params)),
            Err(why) => Err(ConfigError::new(format!("{field}.param_headers.{name}"), why)),
        })
        .collect::<Result<_, _>>()?;
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
        tool_pins,
        param_headers,
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

fn validate_rule(field: &str, r: RawRule, credential_allowed: &CredentialCheck) -> Result<Rule, ConfigError> {
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
        check_advertised_scope(&format!("{field}.scopes[{i}]"), s)?;
    }
    for (i, set) in r.any_scopes.iter().enumerate() {
        if set.is_empty() {
            return Err(ConfigError::new(
                format!("{field}.any_scopes[{i}]"),
                "an alternative must list at least one scope",
            ));
        }
        for (j, s) in set.iter().enumerate() {
            check_advertised_scope(&format!("{field}.any_scopes[{i}][{j}]"), s)?;
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
        Some(name) => {
            credential_allowed(&format!("{field}.credential"), &name, &method)?;
            Some(name)
        }
    };
    if deny && (!r.scopes.is_empty() || !r.any_scopes.is_empty() || !claims.is_empty() || credential.is_some()) {
        return Err(ConfigError::new(format!("{field}.action"), "a deny rule takes no scopes or claims"));
    }
    if let Some(id) = &r.id
        && (id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)))
    {
        return Err(ConfigError::new(
            format!("{field}.id"),
            "must be 1 to 64 letters, digits, '-' or '_' (it names counters and log fields)",
        ));
    }
    let arguments_apply = ["tools/call", "prompts/get"].contains(&method.as_string().as_str());
    if !r.arguments.is_empty() && (!arguments_apply || deny) {
        return Err(ConfigError::new(
            format!("{field}.arguments"),
            "applies to allow rules whose method is exactly \"tools/call\" or \"prompts/get\"",
        ));
    }
    let arguments = r
        .arguments
        .into_iter()
        .enumerate()
        .map(|(i, c)| validate_argument_condition(&format!("{field}.arguments[{i}]"), c))
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        method,
        target: target.as_deref().map(Glob::new),
        scopes: r.scopes,
        any_scopes: r.any_scopes,
        claims,
        deny,
        credential,
        label: r.id.clone().unwrap_or_else(|| field.trim_start_matches("mcp.").to_string()),
        id: r.id,
        arguments,
        shadow: r.shadow,
    })
}

fn validate_argument_condition(field: &str, c: RawArgumentCondition) -> Result<ArgumentCondition, ConfigError> {
    if !arguments::valid_pointer(&c.pointer) {
        return Err(ConfigError::new(
            format!("{field}.pointer"),
            format!(
                "{:?} is not a JSON Pointer (RFC 6901): \"\" or \"/name\", with ~0 for '~' and ~1 for '/'",
                c.pointer
            ),
        ));
    }
    let claim = |name: &str, claim: String| {
        if claim.is_empty() || claim.split('.').any(str::is_empty) {
            Err(ConfigError::new(format!("{field}.{name}"), "must be a claim name or a dotted path"))
        } else {
            Ok(claim)
        }
    };
    let set = [
        ("equals", c.equals.is_some()),
        ("one_of", c.one_of.is_some()),
        ("glob", c.glob.is_some()),
        ("min/max", c.min.is_some() || c.max.is_some()),
        ("max_length", c.max_length.is_some()),
        ("in_claim", c.in_claim.is_some()),
        ("equals_claim", c.equals_claim.is_some()),
    ];
    if set.iter().filter(|(_, on)| *on).count() != 1 {
        return Err(ConfigError::new(
            field,
            "set exactly one test: equals, one_of, glob, min and/or max, max_length, in_claim or equals_claim",
        ));
    }
    let test = if let Some(v) = c.equals {
        ArgumentTest::Equals(v)
    } else if let Some(options) = c.one_of {
        if options.is_empty() {
            return Err(ConfigError::new(format!("{field}.one_of"), "must not be empty"));
        }
        ArgumentTest::OneOf(options)
    } else if let Some(glob) = c.glob {
        ArgumentTest::Glob(Glob::new(&glob))
    } else if let Some(max_length) = c.max_length {
        ArgumentTest::MaxLength(max_length)
    } else if let Some(name) = c.in_claim {
        ArgumentTest::InClaim(claim("in_claim", name)?)
    } else if let Some(name) = c.equals_claim {
        ArgumentTest::EqualsClaim(claim("equals_claim", name)?)
    } else {
        if let (Some(min), Some(max)) = (c.min, c.max)
            && min > max
        {
            return Err(ConfigError::new(format!("{field}.min"), "must not exceed max"));
        }
        ArgumentTest::Range { min: c.min, max: c.max }
    };
    Ok(ArgumentCondition { pointer: c.pointer, test, negate: c.not, optional: c.optional })
}

fn validate_tool_pins(field: &str, raw: Option<RawToolPins>) -> Result<Option<ToolPins>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut pins = Vec::new();
    for (name, pin) in raw.pins {
        let digest = pin.strip_prefix("sha256:").and_then(pins::parse_hex_digest).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.pins.{name}"),
                "must be \"sha256:\" and 64 hex digits (scripts/tool_pins.py prints them)",
            )
        })?;
        pins.push((name, digest));
    }
    if pins.is_empty() && !raw.learn {
        return Err(ConfigError::new(field, "pins nothing: list \"pins\", or set \"learn\": true"));
    }
    let max_tools = raw.max_tools.unwrap_or(DEFAULT_MAX_PINNED_TOOLS);
    check_range(&format!("{field}.max_tools"), max_tools as u64, 16, 100_000)?;
    Ok(Some(ToolPins { pins, learn: raw.learn, max_tools }))
}
