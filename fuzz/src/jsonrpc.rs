//! JSON-RPC target: the decision over one MCP POST body (`mcp::inspect`: strict parsing, mirror
//! headers, every message of a batch against the policy in `policy.rs`) and the refusal it turns into.
//!
//! Input: byte 0 picks the caller (`policy::principal`); byte 1 bit 0 says whether `Mcp-Method` and
//! `Mcp-Name` headers follow as two lines (an empty line: header absent); the rest is the body.
//!
//! Invariants: a body is a parse error exactly when `json_strict::parse` (which builds the whole document
//! and refuses duplicate keys) refuses it, though `jsonrpc::parse` builds only the fields it reads;
//! nothing the policy model denies is ever allowed (no silent allow) and nothing it allows is refused,
//! argument conditions included (the model reads each argument with serde_json's own JSON Pointer, so a
//! condition that read another value than the one at its pointer disagrees); every request and
//! notification of an allowed body is reported; every list request is registered for list trimming;
//! refusals are well-formed replies that name exactly the denied messages.

use crate::{policy, replies, split_line};
use mcp_authz::mcp::inspect::{self, Refusal};
use mcp_authz::mcp::jsonrpc::{HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR};
use mcp_authz::mcp::jsonrpc_reply as reply;
use mcp_authz::mcp::lists::ListKind;
use mcp_authz::mcp::mirror::MirrorHeaders;
use mcp_authz::mcp::rules::KNOWN_METHODS;
use serde_json::Value;

pub fn run(data: &[u8]) {
    let [who, flags, rest @ ..] = data else { return };
    let principal = policy::principal(*who);
    let mut mirror = MirrorHeaders::default();
    let mut body = rest;
    if flags & 1 == 1 {
        let (method, after) = split_line(body);
        let (name, after) = split_line(after);
        let (Ok(method), Ok(name)) = (std::str::from_utf8(method), std::str::from_utf8(name)) else { return };
        mirror.method.extend((!method.is_empty()).then(|| method.to_string()));
        mirror.name.extend((!name.is_empty()).then(|| name.to_string()));
        body = after;
    }
    let config = policy::config();
    let policy = &config.mcp.policy;
    let decision = inspect::inspect(body, &mirror, policy, &principal, true, &|_| false, &|_| None);
    let strict = mcp_authz::json_strict::parse(body);
    let parse_error = matches!(&decision, Err(Refusal::Protocol(e)) if e.code == PARSE_ERROR);
    assert_eq!(parse_error, strict.is_err(), "parse error {parse_error}, but the strict reader says {strict:?}");
    match decision {
        Err(Refusal::Protocol(e)) if e.code == METHOD_NOT_FOUND => {
            assert_eq!(e.status, 400);
            assert!(spells_a_known_method_differently(body), "method not found, but no disguised method: {e:?}");
            replies::check(&reply::protocol_error(&e));
        }
        Err(Refusal::Protocol(e)) => {
            assert_eq!(e.status, 400);
            assert!([PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS, HEADER_MISMATCH].contains(&e.code), "{e:?}");
            replies::check(&reply::protocol_error(&e));
        }
        decided => {
            // The body was accepted as JSON-RPC: read it again, plainly, and decide every call by the model.
            assert!(!spells_a_known_method_differently(body), "a disguised method was accepted");
            let doc: Value = serde_json::from_slice(body).expect("a body inspect accepted is JSON");
            let (messages, batch) = match doc {
                Value::Array(items) => (items, true),
                single => (vec![single], false),
            };
            let calls: Vec<(usize, Call)> =
                messages.iter().enumerate().filter_map(|(i, m)| Call::read(m).map(|c| (i, c))).collect();
            let denied: Vec<usize> = calls
                .iter()
                .filter(|(_, c)| !policy::allows_call(&c.method, c.target.as_deref(), c.arguments.as_ref(), &principal))
                .map(|(i, _)| *i)
                .collect();
            if !mirror.method.is_empty() || !mirror.name.is_empty() {
                assert!(!batch && calls.len() == 1, "mirror headers accepted for a batch or a response");
                assert_eq!(mirror.method.first(), Some(&calls[0].1.method), "Mcp-Method differs from the body");
            }
            match decided {
                Ok(authorized) => {
                    assert!(denied.is_empty(), "allowed, but the model denies messages {denied:?}: {calls:?}");
                    let methods: Vec<&str> = authorized.calls.iter().map(|c| c.method.as_str()).collect();
                    let expected: Vec<&str> = calls.iter().map(|(_, c)| c.method.as_str()).collect();
                    assert_eq!(methods, expected, "not every call was reported");
                    let metas: Vec<Option<&serde_json::Map<String, Value>>> =
                        authorized.calls.iter().map(|c| c.meta.as_ref()).collect();
                    let expected: Vec<Option<&serde_json::Map<String, Value>>> =
                        calls.iter().map(|(_, c)| c.meta.as_ref()).collect();
                    assert_eq!(metas, expected, "params._meta was not read as sent");
                    for (_, call) in &calls {
                        if let (Some(id), Some(kind)) = (&call.id, ListKind::from_method(&call.method)) {
                            assert!(authorized.lists.contains(&(id.clone(), kind)), "list request {id} not trimmed");
                        }
                    }
                }
                Err(Refusal::Forbidden { refused, others, batch: refused_batch }) => {
                    let indices: Vec<usize> = refused.iter().map(|r| r.index).collect();
                    assert_eq!(indices, denied, "refused messages differ from the model's: {calls:?}");
                    assert_eq!(refused_batch, batch);
                    let allowed_ids: Vec<Value> =
                        calls.iter().filter(|(i, _)| !denied.contains(i)).filter_map(|(_, c)| c.id.clone()).collect();
                    assert_eq!(others, allowed_ids);
                    let answer = reply::forbidden(&config.challenge, &refused, &others, batch);
                    assert_eq!(answer.status, 403);
                    replies::check(&answer);
                }
                Err(Refusal::Protocol(_)) => unreachable!(),
            }
        }
    }
}

/// A request or notification as any JSON-RPC reader sees it.
#[derive(Debug)]
struct Call {
    id: Option<Value>,
    method: String,
    target: Option<String>,
    meta: Option<serde_json::Map<String, Value>>,
    arguments: Option<Value>,
}

impl Call {
    fn read(message: &Value) -> Option<Call> {
        let method = message.get("method")?.as_str().expect("an accepted method is a string").to_string();
        let field = match method.as_str() {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
            _ => None,
        };
        let target = field.map(|f| {
            let value = message.get("params").and_then(|p| p.get(f)).and_then(Value::as_str);
            value.expect("an accepted call carries its target").to_string()
        });
        let meta = message.get("params").and_then(|p| p.get("_meta")).and_then(Value::as_object).cloned();
        let arguments = message.get("params").and_then(|p| p.get("arguments")).cloned();
        Some(Call { id: message.get("id").cloned(), method, target, meta, arguments })
    }
}

/// The model of "a disguised method": some message's method is not an MCP method as written, but is one
/// once surrounding whitespace and control characters are dropped and Unicode case is ignored (std's full
/// case mappings, independent of the filter's table-free fold).
fn spells_a_known_method_differently(body: &[u8]) -> bool {
    let Ok(doc) = serde_json::from_slice::<Value>(body) else { return false };
    let messages = match doc {
        Value::Array(items) => items,
        single => vec![single],
    };
    messages.iter().filter_map(|m| m.get("method").and_then(Value::as_str)).any(|method| {
        let trimmed = method.trim_matches(|c: char| c.is_whitespace() || c.is_control());
        !KNOWN_METHODS.contains(&method)
            && KNOWN_METHODS
                .iter()
                .any(|known| trimmed.to_lowercase() == *known || trimmed.to_uppercase() == known.to_uppercase())
    })
}
