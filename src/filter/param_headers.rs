//! `x-mcp-header` parameters in shared data: learned from each `tools/list` answer the filter reads, so
//! every worker checks `Mcp-Param-*` headers against the tool's current schema (decided in `mcp::mirror`).
//! A configured tool (`mcp.param_headers`) is never learned over. When a tool's schema changes, the next
//! `tools/list` the filter reads replaces the record; until then calls are checked against the old one,
//! and a refused client re-lists and retries, as the specification expects of it.

use super::host::Host;
use crate::clip::clip;
use crate::mcp::config::McpConfig;
use crate::mcp::mirror::{self, ParamHeader, ParamType};
use log::warn;
use serde_json::{Value, json};

fn record_key(name: &str) -> String {
    format!("mcp_authz.param_headers.{name}")
}

/// The parameter mirrors of tool `name`: configured, else learned; None when the filter knows none.
pub fn declared(host: &dyn Host, config: &McpConfig, name: &str) -> Option<Vec<ParamHeader>> {
    if let Some((_, params)) = config.param_headers.iter().find(|(n, _)| n == name) {
        return Some(params.clone());
    }
    decode(&host.shared_get(&record_key(name)).0?)
}

/// A `tools/list` shows `tool` (named `name`): records its parameter mirrors for every worker. A tool
/// without any is recorded only to replace an earlier record (so the store grows with annotated tools
/// only); a tool whose annotations are invalid is recorded as having none, and a warning names it
/// (conforming clients drop it from their lists, so they do not call it).
pub fn listed(host: &dyn Host, config: &McpConfig, name: &str, tool: &Value) {
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
    let key = record_key(name);
    let (stored, _) = host.shared_get(&key);
    let encoded = encode(&params);
    if stored.as_deref() == Some(&encoded[..]) || (stored.is_none() && params.is_empty()) {
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
}
