//! A token issuer and where its verification keys come from (the `providers` section): the schema, its
//! validation, and the validated [`Provider`] the authenticator and the JWKS lifecycle read.

use super::jwk::KeySet;
use super::signature::Algorithm;
use crate::config::fields::{ConfigError, check_range};
use crate::introspection::config::{self as introspection, Settings as Introspection};
use serde::Deserialize;

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
    /// Tokens of this provider are introspected (RFC 7662), not verified: it has no keys.
    pub introspection: Option<Introspection>,
}

impl Provider {
    /// Whether JWTs naming this issuer are verified here: not for a provider with `introspection` and no
    /// `jwks` (it holds an empty key set).
    pub fn verifies_jwts(&self) -> bool {
        self.introspection.is_none() || !matches!(&self.jwks, JwksSource::Inline(set) if set.keys.is_empty())
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    #[serde(default)]
    name: Option<String>,
    issuer: String,
    audiences: Vec<String>,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default)]
    jwks: Option<RawJwks>,
    #[serde(default)]
    introspection: Option<serde_json::Value>,
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

pub(crate) fn validate_provider(field: &str, p: RawProvider) -> Result<Provider, ConfigError> {
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
    let introspection = match &p.introspection {
        Some(raw) => Some(introspection::validate(&format!("{field}.introspection"), raw)?),
        None => None,
    };
    // An issuer may sign JWTs and issue opaque tokens: `jwks` verifies the first, `introspection` checks
    // the others. With `tokens: "all"` nothing is left for keys to verify.
    match (&introspection, &p.jwks, &p.algorithms) {
        (None, None, _) => {
            return Err(ConfigError::new(format!("{field}.jwks"), "required unless \"introspection\" is set"));
        }
        (Some(s), Some(_), _) if s.tokens == introspection::Tokens::All => {
            return Err(ConfigError::new(
                format!("{field}.jwks"),
                "unused: introspection.tokens \"all\" sends every token to the introspection endpoint",
            ));
        }
        (Some(_), None, Some(_)) => {
            return Err(ConfigError::new(
                format!("{field}.algorithms"),
                "applies to JWTs only, and this provider has no jwks",
            ));
        }
        _ => {}
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
    // An introspection provider has no keys: its tokens never reach signature verification.
    let jwks = match p.jwks.map(|raw| (raw.remote, raw.inline)) {
        None => JwksSource::Inline(KeySet::default()),
        Some((Some(r), None)) => JwksSource::Remote(validate_remote(&format!("{field}.jwks.remote"), r)?),
        Some((None, Some(inline))) => {
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
        introspection,
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
