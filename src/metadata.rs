//! RFC 9728 protected-resource metadata (the `resource_metadata` section): the document the filter
//! serves, and the URL every 401/403 challenge points clients at.

use crate::config::fields::{ConfigError, URL_RULE, check_advertised_scope, split_url};
use serde::Deserialize;

const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";

#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    /// RFC 9728 document, serialised once at load.
    pub document: String,
    /// Absolute URL of the document, used in `WWW-Authenticate: Bearer resource_metadata="..."`.
    pub url: String,
    /// Request paths the filter answers with the document itself.
    pub well_known_paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResourceMetadata {
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

pub(crate) fn validate_resource_metadata(field: &str, m: RawResourceMetadata) -> Result<ResourceMetadata, ConfigError> {
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
        check_advertised_scope(&format!("{field}.scopes_supported[{i}]"), s)?;
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
