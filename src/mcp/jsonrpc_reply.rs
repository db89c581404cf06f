//! Denials in the shape MCP clients understand: a JSON-RPC error body that echoes the request id, and
//! for missing scopes the MCP 2025-11-25 step-up challenge
//! `WWW-Authenticate: Bearer error="insufficient_scope", scope="...", resource_metadata="..."`.

use super::inspect::Refused;
use super::jsonrpc::{FORBIDDEN, INVALID_REQUEST, ProtocolError};
use super::rules::Access;
use crate::clip::clip;
use crate::http_reply::{Challenge, LocalReply};
use serde_json::{Value, json};

fn rpc_error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

pub fn protocol_error(e: &ProtocolError) -> LocalReply {
    LocalReply::json(e.status, rpc_error(&e.id, e.code, &e.message, None).to_string())
}

/// Refusals decided from the request head (size, encoding, method, origin), before the body is read.
pub fn request_error(status: u32, message: &str) -> LocalReply {
    LocalReply::json(status, rpc_error(&Value::Null, INVALID_REQUEST, message, None).to_string())
}

/// 404 for a session id the filter has no binding for: MCP clients then start a new session. The same
/// answer as the MCP Python SDK's for an unknown session.
pub fn session_not_found() -> LocalReply {
    LocalReply::json(404, rpc_error(&Value::Null, INVALID_REQUEST, "Session not found", None).to_string())
}

/// 403 for a session that another caller (issuer and subject) created.
pub fn session_not_owned() -> LocalReply {
    let data = json!({"error": "session_not_owned"});
    let message = "Forbidden: this MCP session was created by another caller; start a new session";
    LocalReply::json(403, rpc_error(&Value::Null, FORBIDDEN, message, Some(data)).to_string())
}

/// The 403 for a request with refused messages. When scopes would help, one challenge names every
/// scope the refused messages' rules require (MCP 2025-11-25+: all scopes for the operation in a single
/// challenge, not one per retry): held ones too, because `scope` describes what the operation needs
/// (RFC 6750 section 3.1) and a client that replaces its token rather than widening it must not lose
/// them. Never a broader scope that would also do (`scope_hierarchy`): the rule's own words. Each
/// message's `data.missing` is what its caller's scopes do not cover.
pub fn forbidden(challenge: &Challenge, refused: &[Refused], others: &[Value], batch: bool) -> LocalReply {
    let mut required: Vec<String> = Vec::new();
    let mut errors: Vec<Value> = Vec::new();
    for r in refused {
        // Both are client-chosen (an unlisted method, any tool name): cut, so a refusal stays small.
        let mut data = json!({"method": clip(&r.method)});
        if let Some(target) = &r.target {
            data["name"] = json!(clip(target));
        }
        let message = match &r.access {
            Access::InsufficientScope { required: need, missing, .. } => {
                data["error"] = json!("insufficient_scope");
                data["required"] = json!(need);
                data["missing"] = json!(missing);
                for s in need {
                    if !required.contains(s) {
                        required.push(s.clone());
                    }
                }
                format!("Insufficient scope: requires {}", need.join(" "))
            }
            Access::ArgumentNotAllowed { argument, .. } => {
                // The pointer, never the value: arguments may carry what the caller must not see echoed.
                data["error"] = json!("access_denied");
                data["argument"] = json!(clip(argument));
                format!("Forbidden: argument {} is not allowed for this caller", clip(argument))
            }
            Access::DefinitionChanged => {
                data["error"] = json!("tool_definition_changed");
                "Forbidden: this tool's definition changed since it was approved; it is unavailable until \
                 an operator updates its pin"
                    .to_string()
            }
            _ => {
                data["error"] = json!("access_denied");
                "Forbidden: this request is not allowed for this caller".to_string()
            }
        };
        if batch {
            data["batch_index"] = json!(r.index);
        }
        if r.id.is_some() || !batch {
            errors.push(rpc_error(r.id.as_ref().unwrap_or(&Value::Null), FORBIDDEN, &message, Some(data)));
        }
    }
    let body = if batch {
        let denied: Vec<usize> = refused.iter().map(|r| r.index).collect();
        let note = format!("Forbidden: the batch was refused because element(s) {denied:?} were denied");
        for id in others {
            errors.push(rpc_error(id, FORBIDDEN, &note, Some(json!({"error": "batch_denied", "denied": denied}))));
        }
        if errors.is_empty() {
            errors.push(rpc_error(
                &Value::Null,
                FORBIDDEN,
                &note,
                Some(json!({"error": "batch_denied", "denied": denied})),
            ));
        }
        Value::Array(errors)
    } else {
        errors.pop().unwrap_or(Value::Null)
    };
    let mut reply = LocalReply::json(403, body.to_string());
    if !required.is_empty() {
        let mut params = vec!["error=\"insufficient_scope\"".to_string(), format!("scope=\"{}\"", required.join(" "))];
        if let Some(url) = &challenge.resource_metadata {
            params.push(format!("resource_metadata=\"{url}\""));
        }
        reply = reply.with_header("www-authenticate", format!("Bearer {}", params.join(", ")));
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge() -> Challenge {
        crate::config::parse(
            br#"{"providers":[{"issuer":"https://idp","audiences":["a"],"jwks":{"inline":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}}],
                "resource_metadata":{"resource":"https://mcp.example.com/mcp"}}"#,
        )
        .unwrap()
        .challenge
    }

    fn scope_denial(index: usize, id: Value) -> Refused {
        Refused {
            index,
            id: Some(id),
            method: "tools/call".into(),
            target: Some("createTask".into()),
            access: Access::InsufficientScope {
                required: vec!["write:tasks".into()],
                missing: vec!["write:tasks".into()],
                rule: "rules[1]".into(),
            },
            rule: Some(1),
        }
    }

    #[test]
    fn insufficient_scope_is_a_step_up_challenge_with_jsonrpc_body() {
        let r = forbidden(&challenge(), &[scope_denial(0, json!(7))], &[], false);
        assert_eq!(r.status, 403);
        assert_eq!(
            r.header("www-authenticate"),
            Some(
                "Bearer error=\"insufficient_scope\", scope=\"write:tasks\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
            )
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["code"], FORBIDDEN);
        assert_eq!(body["error"]["data"]["missing"], json!(["write:tasks"]));
        assert_eq!(body["error"]["data"]["name"], "createTask");
    }

    #[test]
    fn several_missing_scopes_make_one_complete_challenge() {
        let mut one = scope_denial(0, json!(1));
        one.access = Access::InsufficientScope {
            required: vec!["read:tasks".into(), "delete:tasks".into(), "audit".into()],
            missing: vec!["delete:tasks".into(), "audit".into()],
            rule: "rules[1]".into(),
        };
        let r = forbidden(&challenge(), &[one], &[], false);
        let h = r.header("www-authenticate").unwrap();
        assert!(h.starts_with("Bearer error=\"insufficient_scope\", scope=\"read:tasks delete:tasks audit\", "), "{h}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"]["data"]["missing"], json!(["delete:tasks", "audit"]));
        assert_eq!(body["error"]["data"]["required"], json!(["read:tasks", "delete:tasks", "audit"]));
    }

    #[test]
    fn a_batch_needing_different_scopes_gets_one_challenge_with_all_of_them() {
        let mut read = scope_denial(0, json!("r"));
        read.access = Access::InsufficientScope {
            required: vec!["read:tasks".into()],
            missing: vec!["read:tasks".into()],
            rule: "rules[0]".into(),
        };
        let mut both = scope_denial(2, json!("b"));
        both.access = Access::InsufficientScope {
            required: vec!["read:tasks".into(), "audit".into()],
            missing: vec!["read:tasks".into(), "audit".into()],
            rule: "rules[2]".into(),
        };
        let r = forbidden(&challenge(), &[read, scope_denial(1, json!("w")), both], &[], true);
        assert_eq!(r.status, 403);
        let h = r.header("www-authenticate").unwrap();
        assert!(h.contains("scope=\"read:tasks write:tasks audit\""), "each scope once, in order met: {h}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let missing: Vec<&Value> = body.as_array().unwrap().iter().map(|e| &e["error"]["data"]["missing"]).collect();
        assert_eq!(missing, [&json!(["read:tasks"]), &json!(["write:tasks"]), &json!(["read:tasks", "audit"])]);
    }

    #[test]
    fn batch_answer_covers_every_request() {
        let r = forbidden(&challenge(), &[scope_denial(1, json!("b"))], &[json!("a")], true);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let items = body.as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1]["id"], "a");
        assert_eq!(items[1]["error"]["data"]["error"], "batch_denied");
        assert_eq!(items[1]["error"]["data"]["denied"], json!([1]));
    }

    #[test]
    fn access_denied_has_no_step_up_challenge() {
        let mut d = scope_denial(0, json!(1));
        d.access = Access::Denied { why: "denied by rules[0]".into() };
        let r = forbidden(&challenge(), &[d], &[], false);
        assert_eq!(r.header("www-authenticate"), None);
        assert!(!r.body.contains("rules[0]"), "no internal detail");
    }
}
