//! The decision over one MCP POST body: parse, check the 2026-07-28 mirror headers, authorize every
//! message. Returns what the response path needs (ids of list requests to filter) or the refusal.

use super::jsonrpc::{self, Call, HEADER_MISMATCH, Message, ProtocolError};
use super::lists::ListKind;
use super::rules::{Access, Policy};
use crate::jwt::Principal;
use crate::outcome::Reason;
use base64::Engine;
use serde_json::Value;

/// Values of the `Mcp-Method` and `Mcp-Name` request headers (all occurrences).
#[derive(Debug, Default, Clone)]
pub struct MirrorHeaders {
    pub method: Vec<String>,
    pub name: Vec<String>,
}

#[derive(Debug, PartialEq)]
pub struct Authorized {
    /// Requests whose responses are list results to trim for this caller.
    pub lists: Vec<(Value, ListKind)>,
    /// Every request and notification, as authorized.
    pub calls: Vec<AllowedCall>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AllowedCall {
    pub method: String,
    pub target: Option<String>,
    pub id: Option<Value>,
    /// The rule that allowed it (an index into `Policy::rules`); None: a default.
    pub rule: Option<usize>,
    /// What a shadow rule (or a shadow policy) would have refused: the access and its rule.
    pub would_deny: Option<(Access, Option<usize>)>,
    /// The deciding rule's `credential` (None: no rule, or the rule names none).
    pub credential: Option<String>,
    /// `params._meta`, for the connector contract.
    pub meta: Option<serde_json::Map<String, Value>>,
}

/// One refused message of a request (a batch may have several).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub index: usize,
    pub id: Option<Value>,
    pub method: String,
    pub target: Option<String>,
    pub access: Access,
    /// The rule that refused (an index into `Policy::rules`); None: a default.
    pub rule: Option<usize>,
}

#[derive(Debug, PartialEq)]
pub enum Refusal {
    Protocol(ProtocolError),
    Forbidden {
        refused: Vec<Refused>,
        /// Ids of the batch's other requests, which are refused with it.
        others: Vec<Value>,
        batch: bool,
    },
}

impl Refused {
    /// The reason a refusal of these messages is counted under: `insufficient_scope` when more scopes
    /// would help one of them, else the first refusal's own.
    pub fn reason(refused: &[Refused]) -> Reason {
        if refused.iter().any(|r| matches!(r.access, Access::InsufficientScope { .. })) {
            return Reason::InsufficientScope;
        }
        refused.iter().find_map(|r| r.access.reason()).unwrap_or(Reason::AccessDenied)
    }
}

pub fn inspect(
    body: &[u8],
    mirror: &MirrorHeaders,
    policy: &Policy,
    principal: &Principal,
    filter_lists: bool,
    definition_changed: &dyn Fn(&str) -> bool,
) -> Result<Authorized, Refusal> {
    let parsed = jsonrpc::parse_with(body, policy.reads_arguments()).map_err(Refusal::Protocol)?;
    check_mirror_headers(&parsed, mirror).map_err(Refusal::Protocol)?;
    let mut refused = Vec::new();
    let mut others = Vec::new();
    let mut authorized = Authorized { lists: Vec::new(), calls: Vec::new() };
    for (index, message) in parsed.messages.iter().enumerate() {
        let Message::Call(call) = message else { continue };
        let target = call.target.as_deref();
        let mut decision = policy.decide(&call.method, target, call.arguments.as_ref(), principal);
        if call.method == "tools/call" && target.is_some_and(definition_changed) {
            decision.access = Access::DefinitionChanged;
        }
        match decision.access {
            Access::Allow => {
                if let Some(id) = &call.id {
                    others.push(id.clone());
                    if let Some(kind) = ListKind::from_method(&call.method)
                        && filter_lists
                        && policy.governs(kind.call_method())
                    {
                        authorized.lists.push((id.clone(), kind));
                    }
                }
                let credential = policy.credential_for(&call.method, target).map(str::to_string);
                let meta = call.meta.clone();
                authorized.calls.push(AllowedCall {
                    method: call.method.clone(),
                    target: call.target.clone(),
                    id: call.id.clone(),
                    rule: decision.rule,
                    would_deny: decision.would_deny,
                    credential,
                    meta,
                });
            }
            access => refused.push(Refused {
                index,
                id: call.id.clone(),
                method: call.method.clone(),
                target: call.target.clone(),
                access,
                rule: decision.rule,
            }),
        }
    }
    if refused.is_empty() { Ok(authorized) } else { Err(Refusal::Forbidden { refused, others, batch: parsed.batch }) }
}

/// MCP 2026-07-28 mirrors `method` and the target into `Mcp-Method` / `Mcp-Name` so that proxies can
/// route on headers. Decisions here use the body; but if the headers are present they must agree with
/// it, so that header-based policy further down the chain sees the request that was authorized.
fn check_mirror_headers(body: &jsonrpc::Body, mirror: &MirrorHeaders) -> Result<(), ProtocolError> {
    if mirror.method.is_empty() && mirror.name.is_empty() {
        return Ok(());
    }
    let mismatch = |what: &str| ProtocolError::new(400, HEADER_MISMATCH, format!("Header mismatch: {what}"));
    if mirror.method.len() > 1 || mirror.name.len() > 1 {
        return Err(mismatch("Mcp-Method or Mcp-Name appears more than once"));
    }
    let single = if body.batch { None } else { body.messages.first() };
    let Some(Message::Call(Call { id, method, target, .. })) = single else {
        return Err(mismatch("Mcp-Method and Mcp-Name describe a single request, not a batch or a response"));
    };
    let with_id = |mut e: ProtocolError| {
        e.id = id.clone().unwrap_or(Value::Null);
        e
    };
    if mirror.method.first() != Some(method) {
        return Err(with_id(mismatch("Mcp-Method does not match the body's method")));
    }
    match (target, mirror.name.first()) {
        (Some(target), Some(header)) if decode_header_value(header).as_ref() == Some(target) => Ok(()),
        (None, None) => Ok(()),
        (Some(_), _) => Err(with_id(mismatch("Mcp-Name does not match the body's name or uri"))),
        (None, Some(_)) => Err(with_id(mismatch("Mcp-Name is set for a method without a name"))),
    }
}

/// `=?base64?<standard base64>?=` carries values that are not plain printable ASCII (MCP 2026-07-28).
/// A malformed sentinel decodes to None, so it never matches.
fn decode_header_value(value: &str) -> Option<String> {
    let Some(payload) = value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) else {
        return Some(value.to_string());
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
    if base64::engine::general_purpose::STANDARD.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::glob::Glob;
    use crate::mcp::rules::{Rule, Unlisted};
    use serde_json::json;

    fn policy() -> Policy {
        let rule = |name: &str, scope: &str| Rule {
            method: Glob::new("tools/call"),
            target: Some(Glob::new(name)),
            scopes: vec![scope.into()],
            any_scopes: vec![],
            claims: vec![],
            deny: false,
            credential: None,
            label: "r".into(),
            id: None,
            arguments: vec![],
            shadow: false,
        };
        Policy {
            rules: vec![rule("getTasks", "read:tasks"), rule("createTask", "write:tasks")],
            unlisted_tools: Unlisted::Deny,
            ..Policy::allow_all()
        }
    }

    fn reader() -> Principal {
        Principal {
            provider: 0,
            subject: Some("alice".into()),
            scopes: vec!["read:tasks".into()],
            expires_at: None,
            claims: Default::default(),
        }
    }

    fn run(body: &str, mirror: MirrorHeaders) -> Result<Authorized, Refusal> {
        inspect(body.as_bytes(), &mirror, &policy(), &reader(), true, &|_| false)
    }

    fn call(name: &str, id: i64) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}"}}}}"#)
    }

    #[test]
    fn allowed_call_and_list_to_filter() {
        assert!(run(&call("getTasks", 1), MirrorHeaders::default()).is_ok());
        let a = run(r#"{"jsonrpc":"2.0","id":"L","method":"tools/list"}"#, MirrorHeaders::default()).unwrap();
        assert_eq!(a.lists, vec![(json!("L"), ListKind::Tools)]);
    }

    #[test]
    fn denied_call_reports_missing_scope() {
        let Err(Refusal::Forbidden { refused, batch: false, .. }) =
            run(&call("createTask", 2), MirrorHeaders::default())
        else {
            panic!()
        };
        assert_eq!(refused[0].id, Some(json!(2)));
        assert!(matches!(&refused[0].access, Access::InsufficientScope { missing, .. } if missing == &["write:tasks"]));
    }

    #[test]
    fn one_denied_element_denies_the_batch() {
        let body = format!("[{},{}]", call("getTasks", 1), call("createTask", 2));
        let Err(Refusal::Forbidden { refused, others, batch: true }) = run(&body, MirrorHeaders::default()) else {
            panic!()
        };
        assert_eq!((refused.len(), refused[0].index), (1, 1));
        assert_eq!(others, vec![json!(1)]);
    }

    #[test]
    fn client_responses_pass() {
        assert!(run(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#, MirrorHeaders::default()).is_ok());
    }

    #[test]
    fn mirror_headers_must_agree_with_body() {
        let m = |method: &str, name: Option<&str>| MirrorHeaders {
            method: vec![method.into()],
            name: name.map(|n| vec![n.to_string()]).unwrap_or_default(),
        };
        assert!(run(&call("getTasks", 1), m("tools/call", Some("getTasks"))).is_ok());
        let code = |r: Result<Authorized, Refusal>| match r {
            Err(Refusal::Protocol(e)) => (e.status, e.code),
            other => panic!("{other:?}"),
        };
        assert_eq!(code(run(&call("getTasks", 1), m("tools/list", Some("getTasks")))), (400, HEADER_MISMATCH));
        assert_eq!(code(run(&call("getTasks", 1), m("tools/call", Some("createTask")))), (400, HEADER_MISMATCH));
        assert_eq!(code(run(&call("getTasks", 1), m("tools/call", None))), (400, HEADER_MISMATCH));
        let body = format!("[{}]", call("getTasks", 1));
        assert_eq!(code(run(&body, m("tools/call", Some("getTasks")))), (400, HEADER_MISMATCH));
        // Sentinel form for non-ASCII names.
        let body = call("tâche", 3);
        let encoded = format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode("tâche"));
        let policy = Policy::allow_all();
        let mirror = m("tools/call", Some(&encoded));
        assert!(inspect(body.as_bytes(), &mirror, &policy, &reader(), true, &|_| false).is_ok());
        assert_eq!(decode_header_value("=?base64?dA==?="), Some("t".into()));
        assert_eq!(decode_header_value("=?base64?dB==?="), None, "non-canonical");
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }
}
