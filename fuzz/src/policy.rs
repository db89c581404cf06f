//! A realistic MCP policy (seed 000's per-tool scopes plus deny rules, globs, alternatives, a claim
//! condition, resource URIs and method globs), loaded through the filter's own configuration parser,
//! and an independent model of what it must decide, written as plain string tests.

use mcp_authz::config::Config;
use mcp_authz::jwt::Principal;
use serde_json::{Map, Value, json};
use std::rc::Rc;

pub fn config_json() -> Value {
    json!({
        "providers": [{"issuer": "https://idp.example.test", "audiences": ["mcp-server"],
                       "jwks": {"inline": {"keys": [crate::keys::ed25519_jwk()]}}}],
        "paths": [{"prefix": "/mcp"}],
        "resource_metadata": {"resource": "https://mcp.example.test/mcp"},
        "mcp": {
            "unlisted_tools": "deny",
            "rules": [
                {"method": "tools/call", "name": "admin_reset", "action": "deny"},
                {"method": "tools/call", "name": "admin_*", "scopes": ["admin"]},
                {"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"]},
                {"method": "tools/call", "name": "createTask", "scopes": ["write:tasks"]},
                {"method": "tools/call", "name": "deleteTask", "any_scopes": [["admin"], ["write:tasks", "delete:tasks"]]},
                {"method": "tools/call", "name": "whoami"},
                {"method": "tools/call", "name": "project_task", "scopes": ["write:tasks"],
                 "arguments": [{"pointer": "/project", "in_claim": "projects"},
                               {"pointer": "/limits/0", "min": 1, "max": 10, "optional": true},
                               {"pointer": "/a~1b", "equals": {"x": [1]}, "not": true, "optional": true}]},
                {"method": "tools/call", "name": "ops_*", "claims": [{"claim": "groups", "contains": "ops"}]},
                {"method": "prompts/get", "name": "secret_*", "action": "deny"},
                {"method": "resources/read", "uri": "file:///public/*"},
                {"method": "resources/*", "scopes": ["docs"]},
                {"method": "logging/setLevel", "action": "deny"},
                {"method": "tasks/*", "scopes": ["tasks"]}
            ]
        }
    })
}

thread_local! {
    static CONFIG: Rc<Config> = Rc::new(
        mcp_authz::config::parse(config_json().to_string().as_bytes()).expect("the policy config is valid"),
    );
}

pub fn config() -> Rc<Config> {
    CONFIG.with(Rc::clone)
}

const SCOPE_BITS: [&str; 6] = ["read:tasks", "write:tasks", "delete:tasks", "admin", "docs", "tasks"];

/// The caller described by one byte: bits 0–5 select scopes, bits 6–7 the `groups` claim (none,
/// `["dev"]`, `["dev", "ops"]`, or the space-delimited string `"dev ops"`).
pub fn principal(bits: u8) -> Principal {
    let scopes = SCOPE_BITS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, s)| s.to_string());
    let mut claims = Map::new();
    claims.insert("sub".into(), json!("alice"));
    claims.insert("projects".into(), json!(["apollo", 7]));
    match bits >> 6 {
        0 => {}
        1 => _ = claims.insert("groups".into(), json!(["dev"])),
        2 => _ = claims.insert("groups".into(), json!(["dev", "ops"])),
        _ => _ = claims.insert("groups".into(), json!("dev ops")),
    }
    Principal { provider: 0, subject: Some("alice".into()), scopes: scopes.collect(), expires_at: None, claims }
}

/// What the policy above must decide for `method` with `target` (tool/prompt name or resource URI).
pub fn allows(method: &str, target: Option<&str>, who: &Principal) -> bool {
    let has = |s: &str| who.scopes.iter().any(|have| have == s);
    let ops = matches!(who.claims.get("groups"), Some(Value::Array(g)) if g.iter().any(|v| v == "ops"))
        || matches!(who.claims.get("groups"), Some(Value::String(s)) if s.split(' ').any(|w| w == "ops"));
    let target = target.unwrap_or("");
    match method {
        "tools/call" => match target {
            "admin_reset" => false,
            t if t.starts_with("admin_") => has("admin"),
            "getTasks" => has("read:tasks"),
            "createTask" => has("write:tasks"),
            "deleteTask" => has("admin") || (has("write:tasks") && has("delete:tasks")),
            "whoami" => true,
            // Then its argument conditions (`allows_call`).
            "project_task" => has("write:tasks"),
            t if t.starts_with("ops_") => ops,
            _ => false, // unlisted tools are denied
        },
        "prompts/get" => !target.starts_with("secret_"),
        "resources/read" if target.starts_with("file:///public/") => true,
        m if m.starts_with("resources/") => has("docs"),
        "logging/setLevel" => false,
        m if m.starts_with("tasks/") => has("tasks"),
        _ => true, // plumbing and unlisted methods are allowed
    }
}

/// What the policy must decide for a call with these `arguments` (`params.arguments`): the name-based
/// decision, then the argument conditions, read with serde_json's own JSON Pointer (RFC 6901) so that
/// a condition that read any other value than the one at its pointer would disagree.
pub fn allows_call(method: &str, target: Option<&str>, arguments: Option<&Value>, who: &Principal) -> bool {
    if !allows(method, target, who) {
        return false;
    }
    if method != "tools/call" || target != Some("project_task") {
        return true;
    }
    let at = |pointer: &str| arguments.and_then(|a| a.pointer(pointer));
    let project_ok = at("/project").is_some_and(|p| p == &json!("apollo") || number_is(p, 7.0));
    let limit_ok = at("/limits/0").is_none_or(|l| l.as_f64().is_some_and(|n| (1.0..=10.0).contains(&n)));
    let ab_ok = at("/a~1b").is_none_or(|v| !json_equal(v, &json!({"x": [1]})));
    project_ok && limit_ok && ab_ok
}

fn number_is(v: &Value, n: f64) -> bool {
    v.as_f64() == Some(n) && v.is_number()
}

/// JSON equality with numbers compared as numbers (the filter's documented rule).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => a.as_f64() == b.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The method whose rules decide whether an entry of a list is shown, and the entry's key.
pub fn list_entry_rule(field: &str) -> Option<(&'static str, &'static str)> {
    match field {
        "tools" => Some(("tools/call", "name")),
        "prompts" => Some(("prompts/get", "name")),
        "resources" => Some(("resources/read", "uri")),
        _ => None,
    }
}
