//! `x-mcp-header` parameters in shared data: learned from each `tools/list` answer the filter reads, so
//! every worker checks `Mcp-Param-*` headers against the tool's current schema (decided in `mcp::mirror`).
//! A configured tool (`mcp.param_headers`) is never learned over. When a tool's schema changes, the next
//! `tools/list` the filter reads replaces the record; until then calls are checked against the old one,
//! and a refused client re-lists and retries, as the specification expects of it.
//!
//! A record belongs to one MCP endpoint: the request path (canonical, as the filter decides on it) and
//! the tool name. The shared store spans every route of the Envoy (same `vm_id`), and two servers may
//! both have a `search`: keyed by name alone, either could overwrite the other's record. The authority is
//! not part of the key: the client chooses it, and a call under an authority no list was read under
//! would go unchecked. At most [`MAX_LEARNED`] records are created per Envoy process.

use super::host::Host;
use super::keys::count_one_more;
use crate::clip::clip;
use crate::mcp::config::McpConfig;
use crate::mcp::mirror::{self, ParamHeader, ParamType};
use log::warn;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Most learned records per Envoy process: an upstream's lists cannot grow shared data without bound.
/// Beyond it, a newly seen annotated tool is not recorded (logged), and its headers are not checked.
pub const MAX_LEARNED: usize = 1024;

const LEARNED_COUNT_KEY: &str = "mcp_authz.v1.param_headers.learned";

/// The record of tool `name` on `endpoint`: a digest, so any path and name make a short key, and a `/`
/// or `|` in either cannot make two pairs meet.
fn record_key(endpoint: &str, name: &str) -> String {
    let mut digest = Sha256::new();
    digest.update((endpoint.len() as u64).to_le_bytes());
    digest.update(endpoint.as_bytes());
    digest.update(name.as_bytes());
    let short: String = digest.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("mcp_authz.v1.param_headers|{short}")
}

/// The parameter mirrors of tool `name` called on `endpoint`: configured, else learned from that
/// endpoint's lists; None when the filter knows none.
pub fn declared(host: &dyn Host, config: &McpConfig, endpoint: &str, name: &str) -> Option<Vec<ParamHeader>> {
    if let Some((_, params)) = config.param_headers.iter().find(|(n, _)| n == name) {
        return Some(params.clone());
    }
    decode(&host.shared_get(&record_key(endpoint, name)).0?)
}

/// A `tools/list` answered on `endpoint` shows `tool` (named `name`): records its parameter mirrors for
/// every worker. A tool without any is recorded only to replace an earlier record (so the store grows
/// with annotated tools only); a tool whose annotations are invalid is recorded as having none, and a
/// warning names it (conforming clients drop it from their lists, so they do not call it).
pub fn listed(host: &dyn Host, config: &McpConfig, endpoint: &str, name: &str, tool: &Value) {
    if config.param_headers.iter().any(|(n, _)| n == name) {
        return;
    }
    let params = match tool.get("inputSchema").map(mirror::declared).unwrap_or(Ok(Vec::new())) {
        Ok(params) => params,
        Err(why) => {
            warn!("tool {:?} has an invalid x-mcp-header ({why}): its Mcp-Param-* headers are not checked", clip(name));
            Vec::new()
        }
    };
    let key = record_key(endpoint, name);
    let (stored, _) = host.shared_get(&key);
    let encoded = encode(&params);
    if stored.as_deref() == Some(&encoded[..]) || (stored.is_none() && params.is_empty()) {
        return;
    }
    if stored.is_none() && !count_one_more(host, LEARNED_COUNT_KEY, MAX_LEARNED) {
        warn!("tool {:?}: x-mcp-header parameters not learned, {MAX_LEARNED} records reached", clip(name));
        return;
    }
    // Last writer wins: every writer writes what a tools/list just showed.
    let _ = host.shared_set(&key, &encoded, None);
}

fn encode(params: &[ParamHeader]) -> Vec<u8> {
    let kind = |k: ParamType| match k {
        ParamType::String => "s",
        ParamType::Integer => "i",
        ParamType::Boolean => "b",
    };
    Value::Array(params.iter().map(|p| json!([p.header, kind(p.kind), p.path])).collect()).to_string().into_bytes()
}

fn decode(bytes: &[u8]) -> Option<Vec<ParamHeader>> {
    let Value::Array(items) = serde_json::from_slice(bytes).ok()? else { return None };
    items
        .iter()
        .map(|item| {
            let kind = match item.get(1)?.as_str()? {
                "s" => ParamType::String,
                "i" => ParamType::Integer,
                "b" => ParamType::Boolean,
                _ => return None,
            };
            let path =
                item.get(2)?.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect::<Option<_>>()?;
            Some(ParamHeader { header: item.get(0)?.as_str()?.to_string(), path, kind })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let params = mirror::declared(&json!({"properties": {
            "q": {"type": "string", "x-mcp-header": "Q"},
            "o": {"properties": {"n": {"type": "integer", "x-mcp-header": "N"}, "b": {"type": "boolean", "x-mcp-header": "B"}}}}}))
        .unwrap();
        assert_eq!(decode(&encode(&params)), Some(params));
        assert_eq!(decode(b"[]"), Some(vec![]));
        assert_eq!(decode(br#"[["q","x",["q"]]]"#), None);
        assert_eq!(decode(b"nope"), None);
    }

    #[test]
    fn records_are_per_endpoint_and_name() {
        assert_ne!(record_key("/a", "search"), record_key("/b", "search"));
        assert_ne!(record_key("/a", "bsearch"), record_key("/ab", "search"));
        assert_eq!(record_key("/a", "search"), record_key("/a", "search"));
    }
}
