//! Which upstream credential a request gets, and what it takes to obtain it.

use super::config::Credentials;
use super::{Callout, ExchangeError, Failure, Mode, cache, connector, rfc8693};
use crate::jwt::Principal;
use crate::mcp::inspect::AllowedCall;
use serde_json::Value;

/// What the request needs before it may go on.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub target: usize,
    pub key: cache::Key,
    pub step: Step,
    /// Request id for JSON-RPC error answers.
    pub id: Value,
}

#[derive(Debug, PartialEq)]
pub enum Step {
    Callout(Callout),
    Mint,
}

/// `calls` are the authorized messages of an MCP POST (empty for GET/DELETE or non-MCP paths).
/// Ok(None): forward the verified token unchanged.
pub fn plan(
    credentials: &Credentials,
    calls: &[AllowedCall],
    caller: &Principal,
    subject_token: &str,
) -> Result<Option<Plan>, ExchangeError> {
    let mut chosen: Option<(Option<usize>, Option<&AllowedCall>)> = None;
    for call in calls {
        let target = credentials.resolve(call.credential.as_deref());
        match chosen {
            None => chosen = Some((target, Some(call))),
            Some((t, _)) if t == target => {}
            Some(_) => {
                return Err(ExchangeError::new(
                    400,
                    Failure::InvalidRequest,
                    "A batch may not mix tools that need different upstream credentials",
                    "send these calls separately",
                ));
            }
        }
    }
    let (target, call) = chosen.unwrap_or((credentials.default, None));
    let Some(index) = target else { return Ok(None) };
    let t = &credentials.targets[index];
    let id = call.and_then(|c| c.id.clone()).unwrap_or(Value::Null);
    let (key, step) = match &t.mode {
        Mode::Rfc8693(s) => {
            let key = cache::key(&["rfc8693", &t.name, subject_token]);
            (key, Step::Callout(rfc8693::request(s, subject_token, t.timeout_ms)))
        }
        Mode::Connector(s) => {
            if calls.len() != 1 {
                return Err(ExchangeError::new(
                    400,
                    Failure::InvalidRequest,
                    format!("Token exchange for {} serves a single tools/call", s.provider_id),
                    "send this call on its own",
                ));
            }
            let p = connector::parameters(s, call.and_then(|c| c.meta.as_ref()), caller)?;
            let key = cache::key(&["connector", &t.name, &p.user_id, &p.user_token]);
            (key, Step::Callout(connector::request(s, &p, t.timeout_ms)))
        }
        Mode::Internal(_) => (cache::key(&["internal", &t.name, subject_token]), Step::Mint),
    };
    Ok(Some(Plan { target: index, key, step, id }))
}

/// The body to forward: `_meta.userToken` removed (connector: the temp token is a secret the MCP server
/// must not see) and the upstream token put under `inject_meta_key` when configured. None: unchanged.
pub fn rewrite_body(body: &[u8], remove_user_token: bool, inject: Option<(&str, &str)>) -> Option<Vec<u8>> {
    if !remove_user_token && inject.is_none() {
        return None;
    }
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    let mut edit = |message: &mut Value| {
        if message.get("method").and_then(Value::as_str) != Some("tools/call") {
            return;
        }
        let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) else { return };
        let meta = params.entry("_meta").or_insert_with(|| Value::Object(Default::default()));
        let Some(meta) = meta.as_object_mut() else { return };
        if remove_user_token && meta.remove("userToken").is_some() {
            changed = true;
        }
        if let Some((k, v)) = inject {
            meta.insert(k.to_string(), Value::String(v.to_string()));
            changed = true;
        }
    };
    match &mut doc {
        Value::Array(items) => items.iter_mut().for_each(&mut edit),
        single => edit(single),
    }
    if changed { serde_json::to_vec(&doc).ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn credentials() -> Credentials {
        let cfg = crate::config::parse(
            br#"{"providers":[{"issuer":"https://idp","audiences":["a"],"jwks":{"inline":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}}],
                "upstream_credentials":{"targets":{
                   "sts":{"mode":"rfc8693","cluster":"sts","authority":"sts","path":"/token","audience":"api"},
                   "reddit":{"mode":"connector","cluster":"c","authority":"c","provider_id":"reddit"}}}}"#,
        )
        .unwrap();
        cfg.credentials
    }

    fn call(credential: Option<&str>, meta: Value) -> AllowedCall {
        AllowedCall {
            method: "tools/call".into(),
            target: Some("t".into()),
            id: Some(json!(7)),
            credential: credential.map(str::to_string),
            meta: meta.as_object().cloned(),
        }
    }

    fn alice() -> Principal {
        Principal {
            provider: 0,
            subject: Some("alice".into()),
            scopes: vec![],
            expires_at: None,
            claims: json!({"sub": "alice"}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn passthrough_by_default_and_per_rule_targets() {
        let c = credentials();
        assert_eq!(plan(&c, &[call(None, json!(null))], &alice(), "tok").unwrap(), None);
        assert_eq!(plan(&c, &[], &alice(), "tok").unwrap(), None);
        let p = plan(&c, &[call(Some("sts"), json!(null))], &alice(), "tok").unwrap().unwrap();
        assert_eq!((c.targets[p.target].name.as_str(), p.id), ("sts", json!(7)));
        assert!(matches!(p.step, Step::Callout(ref c) if c.cluster == "sts"));
        let meta = json!({"userId": "alice", "userToken": "tmp", "providerId": "reddit"});
        let p = plan(&c, &[call(Some("reddit"), meta)], &alice(), "tok").unwrap().unwrap();
        assert_eq!(c.targets[p.target].name, "reddit");
    }

    #[test]
    fn mixed_batches_and_spoofed_users_are_refused() {
        let c = credentials();
        let e = plan(&c, &[call(Some("sts"), json!(null)), call(None, json!(null))], &alice(), "t").unwrap_err();
        assert_eq!(e.status, 400);
        let meta = json!({"userId": "bob", "userToken": "tmp", "providerId": "reddit"});
        assert_eq!(plan(&c, &[call(Some("reddit"), meta)], &alice(), "t").unwrap_err().error, Failure::UserMismatch);
    }

    #[test]
    fn cache_keys_separate_subjects_and_targets() {
        let c = credentials();
        let k = |tok: &str| plan(&c, &[call(Some("sts"), json!(null))], &alice(), tok).unwrap().unwrap().key;
        assert_eq!(k("a"), k("a"));
        assert_ne!(k("a"), k("b"));
    }

    #[test]
    fn body_rewrite() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"userId":"alice","userToken":"tmp","providerId":"reddit"}}}"#;
        let out: Value =
            serde_json::from_slice(&rewrite_body(body, true, Some(("current_oauth_token", "prov"))).unwrap()).unwrap();
        assert_eq!(
            out["params"]["_meta"],
            json!({"userId": "alice", "providerId": "reddit", "current_oauth_token": "prov"})
        );
        assert_eq!(rewrite_body(body, false, None), None);
        let plain = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
        let out: Value = serde_json::from_slice(&rewrite_body(plain, false, Some(("k", "v"))).unwrap()).unwrap();
        assert_eq!(out["params"]["_meta"]["k"], "v");
    }
}
