//! The decision over one MCP POST body: parse, check the 2026-07-28 mirror headers (`mirror`), authorize every
//! message. Returns what the response path needs (ids of list requests to filter) or the refusal.

use super::jsonrpc::{self, Message, ProtocolError};
use super::lists::ListKind;
use super::mirror::{self, MirrorHeaders, ParamHeader};
use super::rules::{Access, Policy};
use crate::jwt::Principal;
use crate::outcome::Reason;
use serde_json::Value;

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
    declared_params: &dyn Fn(&str) -> Option<Vec<ParamHeader>>,
) -> Result<Authorized, Refusal> {
    let arguments = policy.reads_arguments() || mirror.needs_arguments();
    let parsed = jsonrpc::parse_with(body, arguments).map_err(Refusal::Protocol)?;
    mirror::check(&parsed, mirror, declared_params).map_err(Refusal::Protocol)?;
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
        inspect(body.as_bytes(), &mirror, &policy(), &reader(), true, &|_| false, &|_| None)
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
}
