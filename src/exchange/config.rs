//! The `upstream_credentials` section: the targets (one per credential mode, each mode's settings built
//! here), the default, and the exchange cache.

use super::token_endpoint::{ClientAuth, Endpoint, Secret};
use super::{Mode, Target, connector, internal, jwt_bearer, link, rfc8693};
use crate::config::fields::{ConfigError, check_range, check_scope_token};
use serde::Deserialize;

pub const DEFAULT_EXCHANGE_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_EXCHANGE_CACHE_ENTRIES: usize = 10_000;
pub const DEFAULT_EXCHANGE_MARGIN_SECONDS: u64 = 30;
pub const DEFAULT_CONNECTOR_TTL_SECONDS: u64 = 60;
pub const DEFAULT_INTERNAL_TTL_SECONDS: u64 = 60;
/// The credential name that forwards the verified client token unchanged.
pub const PASSTHROUGH: &str = "passthrough";

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

    /// The targets whose tokens `target` needs, first step first, ending with `target` itself: a
    /// `jwt_bearer` target's assertion comes from its `assertion_from` target (cycles are refused at load).
    pub fn chain(&self, target: usize) -> Vec<usize> {
        let mut chain = vec![target];
        let mut at = target;
        while let Mode::JwtBearer(jwt_bearer::Settings { assertion_from: Some(source), .. }) = &self.targets[at].mode {
            if chain.len() > self.targets.len() {
                break; // unreachable: load refuses cycles
            }
            chain.push(*source);
            at = *source;
        }
        chain.reverse();
        chain
    }

    /// The published JWKS at `path`, if an internal target publishes one there.
    pub fn jwks_at(&self, path: &str) -> Option<&str> {
        self.published_jwks.iter().find(|(p, _)| p == path).map(|(_, doc)| doc.as_str())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentials {
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
    #[serde(default)]
    link: Option<serde_json::Value>,
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
    // jwt_bearer
    #[serde(default)]
    assertion_from: Option<String>,
}

pub const DEFAULT_LINK_TTL_SECONDS: u64 = 600;

/// `connector.link` (read from JSON by hand: a derived reader costs more Wasm than this small object).
fn validate_link(field: &str, raw: &serde_json::Value) -> Result<link::Settings, ConfigError> {
    use serde_json::Value;
    let object = raw.as_object().ok_or_else(|| ConfigError::new(field, "must be an object"))?;
    const KNOWN: [&str; 6] = ["url", "secret", "statuses", "error_codes", "ttl_seconds", "message"];
    if let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ConfigError::new(format!("{field}.{unknown}"), "unknown field"));
    }
    let text = |name: &str| -> Result<Option<String>, ConfigError> {
        match object.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::new(format!("{field}.{name}"), "must be a string")),
        }
    };
    let url = text("url")?.unwrap_or_default();
    // The link URL carries the signed state to the user's browser: plain http only to loopback (tests).
    let loopback = ["http://127.0.0.1", "http://[::1]", "http://localhost"]
        .iter()
        .any(|p| url.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/', '?'])));
    let url_ok = (url.starts_with("https://") || loopback)
        && url.contains("{state}")
        && !url.bytes().any(|b| b <= b' ' || b == 0x7f);
    if !url_ok {
        return Err(ConfigError::new(
            format!("{field}.url"),
            "must be an https URL template (http only for 127.0.0.1, [::1], localhost) containing {state} (and optionally {userId}, {providerId})",
        ));
    }
    let secret = text("secret")?.unwrap_or_default();
    if secret.len() < 32 {
        return Err(ConfigError::new(format!("{field}.secret"), "must be at least 32 bytes"));
    }
    let list = |name: &str| -> Result<Option<&Vec<Value>>, ConfigError> {
        match object.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(ConfigError::new(format!("{field}.{name}"), "must be a list")),
        }
    };
    let mut statuses = vec![403, 404];
    if let Some(items) = list("statuses")? {
        statuses.clear();
        for (i, s) in items.iter().enumerate() {
            let f = format!("{field}.statuses[{i}]");
            let n = s.as_u64().ok_or_else(|| ConfigError::new(f.clone(), "must be an HTTP status"))?;
            check_range(&f, n, 400, 599)?;
            statuses.push(n as u16);
        }
    }
    let mut error_codes = Vec::new();
    for (i, c) in list("error_codes")?.into_iter().flatten().enumerate() {
        let code = c.as_str().filter(|c| !c.is_empty());
        let code = code.ok_or_else(|| ConfigError::new(format!("{field}.error_codes[{i}]"), "must be a word"))?;
        error_codes.push(code.to_string());
    }
    if statuses.is_empty() && error_codes.is_empty() {
        return Err(ConfigError::new(field, "needs statuses or error_codes: how the backend says \"not linked\""));
    }
    let ttl_seconds = match object.get("ttl_seconds") {
        None => DEFAULT_LINK_TTL_SECONDS,
        Some(v) => v.as_u64().ok_or_else(|| ConfigError::new(format!("{field}.ttl_seconds"), "must be a number"))?,
    };
    check_range(&format!("{field}.ttl_seconds"), ttl_seconds, 60, 86_400)?;
    Ok(link::Settings {
        url_template: url,
        key: link::Key(secret.into_bytes()),
        statuses,
        error_codes,
        ttl_seconds,
        message: text("message")?.unwrap_or_else(|| "Connect your {providerId} account to use this tool".into()),
    })
}

pub(crate) fn validate_credentials(field: &str, raw: RawCredentials) -> Result<Credentials, ConfigError> {
    let mut targets = Vec::new();
    let mut sources: Vec<Option<String>> = Vec::new();
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
        let source = t.assertion_from.clone();
        targets.push(validate_target(&f, name, t)?);
        sources.push(source);
    }
    link_assertion_sources(field, &mut targets, &sources)?;
    let default = match raw.default.as_deref() {
        None | Some(PASSTHROUGH) => None,
        Some(name) => {
            let i = targets
                .iter()
                .position(|t| t.name == name)
                .ok_or_else(|| ConfigError::new(format!("{field}.default"), format!("no target named {name:?}")))?;
            if targets[i].issues_grant_only() {
                return Err(ConfigError::new(format!("{field}.default"), super::GRANT_ONLY));
            }
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

/// Resolves each `jwt_bearer` target's `assertion_from` to a target index: the target must exist, be able
/// to obtain a token from the client's alone (not `connector`, which needs a `tools/call`'s `_meta`), and
/// the chain must end (no cycle).
fn link_assertion_sources(field: &str, targets: &mut [Target], sources: &[Option<String>]) -> Result<(), ConfigError> {
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    for (i, source) in sources.iter().enumerate() {
        let Some(source) = source else { continue };
        let f = format!("{field}.targets.{}.assertion_from", names[i]);
        let j = names
            .iter()
            .position(|n| n == source)
            .ok_or_else(|| ConfigError::new(f.clone(), format!("no target named {:?}", crate::clip::clip(source))))?;
        if matches!(targets[j].mode, Mode::Connector(_)) {
            return Err(ConfigError::new(f, "a connector target cannot provide an assertion (it needs _meta)"));
        }
        if let Mode::JwtBearer(s) = &mut targets[i].mode {
            s.assertion_from = Some(j);
        }
    }
    for (i, name) in names.iter().enumerate() {
        let (mut at, mut steps) = (i, 0);
        while let Mode::JwtBearer(jwt_bearer::Settings { assertion_from: Some(next), .. }) = &targets[at].mode {
            steps += 1;
            if *next == i || steps > targets.len() {
                return Err(ConfigError::new(
                    format!("{field}.targets.{name}.assertion_from"),
                    "the assertion_from chain comes back to this target (a cycle)",
                ));
            }
            at = *next;
        }
    }
    Ok(())
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
    let exchange_fields = [
        ("requested_token_type", t.requested_token_type.is_some()),
        ("subject_token_type", t.subject_token_type.is_some()),
    ];
    let grant_fields = [("resource", t.resource.is_some()), ("scope", t.scope.is_some())];
    let client_fields = [
        ("client_id", t.client_id.is_some()),
        ("client_secret", t.client_secret.is_some()),
        ("client_auth", t.client_auth.is_some()),
    ];
    let audience_field = [("audience", t.audience.is_some())];
    let chain_fields = [("assertion_from", t.assertion_from.is_some())];
    let connector_fields = [
        ("provider_id", t.provider_id.is_some()),
        ("user_id_claim", t.user_id_claim.is_some()),
        ("default_ttl_seconds", t.default_ttl_seconds.is_some()),
        ("link", t.link.is_some()),
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
    // A token endpoint (rfc8693, jwt_bearer): where, and how the gateway authenticates.
    let endpoint = || -> Result<Endpoint, ConfigError> {
        let (cluster, authority, path) = callout(None)?;
        let client_auth = match (t.client_auth.as_deref(), &t.client_id) {
            (None | Some("basic"), Some(_)) => ClientAuth::Basic,
            (Some("post"), Some(_)) => ClientAuth::Post,
            (None | Some("none"), None) => ClientAuth::None,
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
        let client_secret = t.client_secret.clone().map(Secret);
        Ok(Endpoint { cluster, authority, path, client_id: t.client_id.clone(), client_secret, client_auth })
    };
    let check_scope = |scope: Option<&str>| -> Result<(), ConfigError> {
        for (i, s) in scope.unwrap_or_default().split(' ').enumerate().filter(|_| scope.is_some()) {
            check_scope_token(&format!("{field}.scope (word {i})"), s)?;
        }
        Ok(())
    };
    let mode = match t.mode.as_str() {
        "rfc8693" => {
            refuse(&[&connector_fields, &internal_fields, &chain_fields], "rfc8693")?;
            check_scope(t.scope.as_deref())?;
            Mode::Rfc8693(rfc8693::Settings {
                endpoint: endpoint()?,
                audience: t.audience,
                resource: t.resource,
                scope: t.scope,
                requested_token_type: t.requested_token_type,
                subject_token_type: t.subject_token_type.unwrap_or_else(|| rfc8693::ACCESS_TOKEN_TYPE.into()),
            })
        }
        "jwt_bearer" => {
            refuse(&[&connector_fields, &internal_fields, &exchange_fields, &audience_field], "jwt_bearer")?;
            check_scope(t.scope.as_deref())?;
            if t.assertion_from.as_deref() == Some(name.as_str()) {
                return Err(ConfigError::new(format!("{field}.assertion_from"), "names this target itself"));
            }
            // Resolved to a target index once every target is known (`link_assertion_sources`).
            Mode::JwtBearer(jwt_bearer::Settings {
                endpoint: endpoint()?,
                scope: t.scope,
                resource: t.resource,
                assertion_from: None,
            })
        }
        "connector" => {
            refuse(
                &[&exchange_fields, &grant_fields, &client_fields, &audience_field, &internal_fields, &chain_fields],
                "connector",
            )?;
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
                link: t.link.as_ref().map(|l| validate_link(&format!("{field}.link"), l)).transpose()?,
            })
        }
        "internal" => {
            refuse(
                &[&exchange_fields, &grant_fields, &client_fields, &connector_fields, &callout_fields, &chain_fields],
                "internal",
            )?;
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
                format!("{other:?} must be \"rfc8693\", \"jwt_bearer\", \"connector\" or \"internal\""),
            ));
        }
    };
    Ok(Target { name, mode, timeout_ms, inject_meta_key: t.inject_meta_key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const PROVIDER: &str = r#"{"issuer":"https://idp","audiences":["a"],"jwks":{"inline":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}}"#;

    fn parse(targets: Value) -> Result<Credentials, ConfigError> {
        let doc = format!(r#"{{"providers":[{PROVIDER}],"upstream_credentials":{{"targets":{targets}}}}}"#);
        crate::config::parse(doc.as_bytes()).map(|c| c.credentials)
    }

    fn id_jag_targets() -> Value {
        json!({
            "idjag": {"mode": "rfc8693", "cluster": "idp", "authority": "idp", "path": "/token",
                      "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
                      "audience": "https://as.example", "resource": "https://mcp.example/mcp",
                      "client_id": "gw", "client_secret": "s"},
            "crm": {"mode": "jwt_bearer", "cluster": "as", "authority": "as", "path": "/oauth2/token",
                    "assertion_from": "idjag", "client_id": "gw", "client_secret": "t", "client_auth": "post",
                    "scope": "crm.read"},
            "direct": {"mode": "jwt_bearer", "cluster": "as", "authority": "as", "path": "/oauth2/token"},
        })
    }

    #[test]
    fn chains_resolve_first_step_first() {
        let c = parse(id_jag_targets()).unwrap();
        let index = |n: &str| c.resolve(Some(n)).unwrap();
        assert_eq!(c.chain(index("crm")), vec![index("idjag"), index("crm")]);
        assert_eq!(c.chain(index("direct")), vec![index("direct")]);
        assert_eq!(c.chain(index("idjag")), vec![index("idjag")]);
        let Mode::JwtBearer(s) = &c.targets[index("crm")].mode else { panic!() };
        assert_eq!(s.endpoint.client_auth, ClientAuth::Post);
    }

    #[test]
    fn bad_chains_and_fields_are_refused_by_name() {
        let with = |name: &str, patch: Value| {
            let mut t = id_jag_targets();
            for (k, v) in patch.as_object().unwrap() {
                t[name][k] = v.clone();
            }
            t
        };
        let cases = [
            (
                with("crm", json!({"assertion_from": "nope"})),
                "upstream_credentials.targets.crm.assertion_from",
                "no target",
            ),
            (
                with("crm", json!({"assertion_from": "crm"})),
                "upstream_credentials.targets.crm.assertion_from",
                "itself",
            ),
            (with("crm", json!({"audience": "x"})), "upstream_credentials.targets.crm.audience", "does not apply"),
            (
                with("crm", json!({"requested_token_type": "x"})),
                "upstream_credentials.targets.crm.requested_token_type",
                "does not apply",
            ),
            (with("crm", json!({"cluster": null})), "upstream_credentials.targets.crm.cluster", "Envoy cluster"),
            (with("crm", json!({"client_auth": "jwt"})), "upstream_credentials.targets.crm.client_auth", "must be"),
            (with("crm", json!({"scope": "a  b"})), "upstream_credentials.targets.crm.scope", ""),
            (
                with("idjag", json!({"assertion_from": "crm"})),
                "upstream_credentials.targets.idjag.assertion_from",
                "does not apply",
            ),
        ];
        for (targets, field, words) in cases {
            let e = parse(targets.clone()).unwrap_err();
            assert!(e.field.starts_with(field) && e.to_string().contains(words), "{targets}: got {e}");
        }
        // A chain of three is fine.
        let c = parse(with("direct", json!({"assertion_from": "crm"}))).unwrap();
        assert_eq!(c.chain(c.resolve(Some("direct")).unwrap()).len(), 3);
        // A cycle of two jwt_bearer targets.
        let mut t = id_jag_targets();
        t["crm"]["assertion_from"] = json!("direct");
        t["direct"]["assertion_from"] = json!("crm");
        let e = parse(t).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        // An ID-JAG target cannot be the default credential (nor a rule's: config::tests).
        let doc = format!(
            r#"{{"providers":[{PROVIDER}],"upstream_credentials":{{"default":"idjag","targets":{}}}}}"#,
            id_jag_targets()
        );
        let e = crate::config::parse(doc.as_bytes()).unwrap_err();
        assert_eq!(e.field, "upstream_credentials.default", "{e}");
        let doc = format!(
            r#"{{"providers":[{PROVIDER}],"upstream_credentials":{{"targets":{}}},
                "mcp":{{"rules":[{{"method":"tools/call","name":"t","credential":"idjag"}}]}}}}"#,
            id_jag_targets()
        );
        let e = crate::config::parse(doc.as_bytes()).unwrap_err();
        assert!(e.field.ends_with(".credential") && e.to_string().contains("ID-JAG"), "{e}");
        // A connector cannot provide an assertion.
        let mut t = id_jag_targets();
        t["reddit"] = json!({"mode": "connector", "cluster": "c", "authority": "c", "provider_id": "reddit"});
        t["crm"]["assertion_from"] = json!("reddit");
        let e = parse(t).unwrap_err();
        assert_eq!(e.field, "upstream_credentials.targets.crm.assertion_from", "{e}");
    }

    #[test]
    fn connector_link_is_checked_at_load() {
        let target = |link: Value| json!({"reddit": {"mode": "connector", "cluster": "c", "authority": "c", "provider_id": "reddit", "link": link}});
        let ok = json!({"url": "https://backend/link?u={userId}&p={providerId}&state={state}", "secret": "0123456789abcdef0123456789abcdef"});
        let c = parse(target(ok.clone())).unwrap();
        let Mode::Connector(s) = &c.targets[0].mode else { panic!() };
        let l = s.link.as_ref().unwrap();
        assert_eq!((l.statuses.clone(), l.ttl_seconds), (vec![403, 404], DEFAULT_LINK_TTL_SECONDS));
        assert!(!format!("{l:?}").contains("0123456789abcdef"), "the secret is never printed");
        let with = |k: &str, v: Value| {
            let mut l = ok.clone();
            l[k] = v;
            target(l)
        };
        for (doc, field) in [
            (with("url", json!("https://backend/link")), "upstream_credentials.targets.reddit.link.url"),
            (with("url", json!("ftp://x/{state}")), "upstream_credentials.targets.reddit.link.url"),
            (with("url", json!("http://backend/link?s={state}")), "upstream_credentials.targets.reddit.link.url"),
            (with("url", json!("http://localhost.evil/l?s={state}")), "upstream_credentials.targets.reddit.link.url"),
            (with("url", json!("http://127.0.0.1@evil/l?s={state}")), "upstream_credentials.targets.reddit.link.url"),
            (with("secret", json!("short")), "upstream_credentials.targets.reddit.link.secret"),
            (with("statuses", json!([200])), "upstream_credentials.targets.reddit.link.statuses[0]"),
            (with("statuses", json!([])), "upstream_credentials.targets.reddit.link"),
            (with("ttl_seconds", json!(5)), "upstream_credentials.targets.reddit.link.ttl_seconds"),
            (with("colour", json!("red")), "upstream_credentials.targets.reddit.link.colour"),
            (with("statuses", json!("404")), "upstream_credentials.targets.reddit.link.statuses"),
        ] {
            let e = parse(doc.clone()).unwrap_err();
            assert!(e.field.starts_with(field), "{doc}: got {e}");
        }
        for loopback in ["http://127.0.0.1:8080/l?s={state}", "http://[::1]/l?s={state}", "http://localhost?s={state}"]
        {
            assert!(parse(with("url", json!(loopback))).is_ok(), "{loopback}");
        }
        let rfc = json!({"x": {"mode": "rfc8693", "cluster": "c", "authority": "a", "path": "/t", "link": ok}});
        assert_eq!(parse(rfc).unwrap_err().field, "upstream_credentials.targets.x.link");
    }
}
