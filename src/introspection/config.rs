//! A provider's `introspection` section: where its RFC 7662 endpoint is, how the filter authenticates to
//! it, which tokens go there, and how long answers are kept. Read by hand from the JSON value (a
//! provider is parsed once at load; a derive for this would cost more module size than it saves).

use crate::config::fields::{ConfigError, check_range, one_of};
use crate::exchange::token_endpoint::{ClientAuth, Endpoint, Secret};
use serde_json::{Map, Value};

pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;
pub const DEFAULT_MAX_TTL_SECONDS: u64 = 300;
pub const DEFAULT_NEGATIVE_TTL_SECONDS: u64 = 10;

/// Which tokens are introspected rather than verified as JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// Tokens that are not shaped like a JWS or JWE (the default).
    Opaque,
    All,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the endpoint is and how the filter authenticates to it (always with an id and a secret).
    pub endpoint: Endpoint,
    pub tokens: Tokens,
    pub timeout_ms: u64,
    pub cache_max_entries: usize,
    /// Longest time an active answer is reused (it is never reused past the token's `exp`).
    pub max_ttl_seconds: u64,
    /// How long an inactive answer is reused.
    pub negative_ttl_seconds: u64,
}

const FIELDS: [&str; 9] =
    ["cluster", "authority", "path", "client_id", "client_secret", "client_auth", "tokens", "timeout_ms", "cache"];
const CACHE_FIELDS: [&str; 3] = ["max_entries", "max_ttl_seconds", "negative_ttl_seconds"];

/// Validates `providers[i].introspection` (`field`).
pub fn validate(field: &str, raw: &Value) -> Result<Settings, ConfigError> {
    let object = fields_of(field, raw, &FIELDS)?;
    let text = |name: &str| -> Result<Option<String>, ConfigError> {
        match object.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::new(format!("{field}.{name}"), "must be a string")),
        }
    };
    let required = |name: &str, rule: &str, ok: &dyn Fn(&str) -> bool| -> Result<String, ConfigError> {
        text(name)?.filter(|v| ok(v)).ok_or_else(|| ConfigError::new(format!("{field}.{name}"), rule.to_string()))
    };
    let cluster = required("cluster", "must name an Envoy cluster", &|v| !v.is_empty())?;
    let authority = required("authority", "must be a host[:port]", &|v| !v.is_empty() && !v.contains(['/', ' ', '@']))?;
    let path = required("path", "must start with '/'", &|v| v.starts_with('/') && !v.contains([' ', '#']))?;
    let client_id =
        required("client_id", "required: the filter's client at the introspection endpoint", &|v| !v.is_empty())?;
    let client_secret = required("client_secret", "required: the client's secret", &|v| !v.is_empty())?;
    let client_auth = one_of(
        &format!("{field}.client_auth"),
        text("client_auth")?,
        &[("basic", ClientAuth::Basic), ("post", ClientAuth::Post)],
    )?;
    let tokens =
        one_of(&format!("{field}.tokens"), text("tokens")?, &[("opaque", Tokens::Opaque), ("all", Tokens::All)])?;
    let timeout_ms = number(field, object, "timeout_ms", DEFAULT_TIMEOUT_MS, 1, 60_000)?;
    let cache_field = format!("{field}.cache");
    let empty = Map::new();
    let cache = match object.get("cache") {
        None => &empty,
        Some(v) => fields_of(&cache_field, v, &CACHE_FIELDS)?,
    };
    let cache_max_entries =
        number(&cache_field, cache, "max_entries", DEFAULT_CACHE_ENTRIES as u64, 1, 1_000_000)? as usize;
    let max_ttl_seconds = number(&cache_field, cache, "max_ttl_seconds", DEFAULT_MAX_TTL_SECONDS, 1, 86_400)?;
    let negative_ttl_seconds =
        number(&cache_field, cache, "negative_ttl_seconds", DEFAULT_NEGATIVE_TTL_SECONDS, 1, 300)?;
    Ok(Settings {
        endpoint: Endpoint {
            cluster,
            authority,
            path,
            client_id: Some(client_id),
            client_secret: Some(Secret(client_secret)),
            client_auth,
        },
        tokens,
        timeout_ms,
        cache_max_entries,
        max_ttl_seconds,
        negative_ttl_seconds,
    })
}

/// The object at `field`, refusing names it does not know (like `deny_unknown_fields`).
fn fields_of<'v>(field: &str, raw: &'v Value, known: &[&str]) -> Result<&'v Map<String, Value>, ConfigError> {
    let object = raw.as_object().ok_or_else(|| ConfigError::new(field, "must be an object"))?;
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ConfigError::new(format!("{field}.{unknown}"), "unknown field")),
        None => Ok(object),
    }
}

fn number(
    field: &str,
    object: &Map<String, Value>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let f = format!("{field}.{name}");
    let value = match object.get(name) {
        None => default,
        Some(v) => v.as_u64().ok_or_else(|| ConfigError::new(f.clone(), "must be a non-negative integer"))?,
    };
    check_range(&f, value, min, max)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"cluster": "idp", "authority": "idp.test", "path": "/introspect",
               "client_id": "gw", "client_secret": "s3cret"})
    }

    fn refused(change: (&str, Value)) -> ConfigError {
        let mut v = base();
        v[change.0] = change.1;
        validate("providers[0].introspection", &v).unwrap_err()
    }

    #[test]
    fn defaults() {
        let s = validate("f", &base()).unwrap();
        assert_eq!(
            (s.endpoint.client_auth, s.tokens, s.timeout_ms),
            (ClientAuth::Basic, Tokens::Opaque, DEFAULT_TIMEOUT_MS)
        );
        assert_eq!((s.max_ttl_seconds, s.negative_ttl_seconds, s.cache_max_entries), (300, 10, 10_000));
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn bad_values_are_refused_by_field() {
        let cases: [(&str, Value, &str); 10] = [
            ("cluster", json!(""), "providers[0].introspection.cluster"),
            ("authority", json!("http://idp/x"), "providers[0].introspection.authority"),
            ("path", json!("introspect"), "providers[0].introspection.path"),
            ("client_auth", json!("private_key_jwt"), "providers[0].introspection.client_auth"),
            ("tokens", json!("jwt"), "providers[0].introspection.tokens"),
            ("timeout_ms", json!(0), "providers[0].introspection.timeout_ms"),
            ("cache", json!({"max_ttl_seconds": 0}), "providers[0].introspection.cache.max_ttl_seconds"),
            ("cache", json!({"negative_ttl_seconds": 86_400}), "providers[0].introspection.cache.negative_ttl_seconds"),
            ("cache", json!({"max_ttl_seconds": 10_000_000}), "providers[0].introspection.cache.max_ttl_seconds"),
            ("url", json!("https://idp/introspect"), "providers[0].introspection.url"),
        ];
        for (name, value, field) in cases {
            assert_eq!(refused((name, value.clone())).field, field, "{name}={value}");
        }
        let mut missing = base();
        missing.as_object_mut().unwrap().remove("cluster");
        assert_eq!(validate("i", &missing).unwrap_err().field, "i.cluster");
        missing = base();
        missing.as_object_mut().unwrap().remove("client_secret");
        assert_eq!(validate("i", &missing).unwrap_err().field, "i.client_secret");
        assert_eq!(validate("i", &json!("idp")).unwrap_err().field, "i");
    }
}
