//! Which upstream credential a request gets, and what it takes to obtain it.

use super::config::Credentials;
use super::{Callout, ExchangeError, Failure, Issued, Mode, cache, connector, jwt_bearer, rfc8693};
use crate::jwt::Principal;
use crate::mcp::inspect::AllowedCall;
use serde_json::Value;

/// What the request needs before it may go on.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub target: usize,
    pub key: cache::Key,
    /// The first thing to do (for a chain, its first target's step, presenting the client's token).
    pub step: Step,
    /// The targets whose tokens are obtained in turn, each presenting the previous one's (see
    /// `Credentials::chain`); the last is `target`. Only its token is cached: intermediate tokens (an
    /// ID-JAG above all, a one-time grant the authorization server may refuse to see twice) are used once.
    pub chain: Vec<usize>,
    /// What identifies this exchange for workers sharing the token (`shared::shared_key`): every callout
    /// of the chain, in order; the first presents the client's token, the others an empty token (theirs is
    /// the previous step's, different each time for a minted assertion). Every step's cluster, authority,
    /// path, client and form parameters are in it, so a changed last step never gets another's token.
    /// Empty: nothing to share (a minted token alone).
    pub shared_basis: Vec<Callout>,
    /// Time the whole chain may take: the sum of its callouts' timeouts.
    pub timeout_ms: u64,
    /// Request id for JSON-RPC error answers.
    pub id: Value,
}

#[derive(Debug, Clone, PartialEq)]
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
    let (key, step, chain) = match &t.mode {
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
            (key, Step::Callout(connector::request(s, &p, t.timeout_ms)), vec![index])
        }
        mode => {
            let chain = credentials.chain(index);
            let first = chain[0];
            let step = match callout_for(credentials, first, subject_token) {
                Some(callout) => Step::Callout(callout),
                None => Step::Mint,
            };
            (cache::key(&[mode.name(), &t.name, subject_token]), step, chain)
        }
    };
    let shared_basis = chain
        .iter()
        .enumerate()
        .filter_map(|(n, target)| match (n, &step) {
            (0, Step::Callout(first)) => Some(first.clone()),
            _ => callout_for(credentials, *target, ""),
        })
        .collect();
    let timeout_ms = chain
        .iter()
        .filter(|i| !matches!(credentials.targets[**i].mode, Mode::Internal(_)))
        .map(|i| credentials.targets[*i].timeout_ms)
        .sum();
    Ok(Some(Plan { target: index, key, step, chain, shared_basis, timeout_ms, id }))
}

/// The token request of `target` (an rfc8693 or jwt_bearer step) presenting `token`: the client's, or the
/// previous step's. None for targets that do not call out with a token (internal, connector).
pub fn callout_for(credentials: &Credentials, target: usize, token: &str) -> Option<Callout> {
    let t = &credentials.targets[target];
    match &t.mode {
        Mode::Rfc8693(s) => Some(rfc8693::request(s, token, t.timeout_ms)),
        Mode::JwtBearer(s) => Some(jwt_bearer::request(s, token, t.timeout_ms)),
        Mode::Connector(_) | Mode::Internal(_) => None,
    }
}

/// Reads the answer to `target`'s callout.
pub fn answer_of(credentials: &Credentials, target: usize, status: u16, body: &[u8]) -> Result<Issued, ExchangeError> {
    match &credentials.targets[target].mode {
        Mode::Rfc8693(s) => rfc8693::response(s, status, body),
        Mode::JwtBearer(_) => jwt_bearer::response(status, body),
        Mode::Connector(s) => connector::response(s, status, body),
        Mode::Internal(_) => Err(ExchangeError::new(502, Failure::ApiError, "Token exchange failed", "no callout")),
    }
}

/// A 2026-07-28 retry after account linking carries back the `requestState` this filter issued (and the
/// client's answer to the `link_*` elicitation): the MCP server never issued them, so they do not go on.
/// The state is not verified here because it grants nothing: the retry is exchanged with the backend
/// afresh; the state's integrity matters in the link URL, where the backend verifies it.
fn strip_link_round_trip(params: &mut serde_json::Map<String, Value>) -> bool {
    let mut changed = false;
    if params.get("requestState").and_then(Value::as_str).is_some_and(|s| s.starts_with(super::link::STATE_PREFIX)) {
        params.remove("requestState");
        changed = true;
    }
    if let Some(Value::Object(responses)) = params.get_mut("inputResponses") {
        let before = responses.len();
        responses.retain(|k, _| !k.starts_with("link_"));
        changed |= responses.len() != before;
        if responses.is_empty() {
            params.remove("inputResponses");
        }
    }
    changed
}

/// The body to forward: `requestState` and `inputResponses` of a linking round trip removed, `_meta.userToken` removed (connector: the temp token is a secret the MCP server
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
        if remove_user_token {
            changed |= strip_link_round_trip(params);
        }
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
            rule: None,
            would_deny: None,
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
    fn a_chain_starts_with_its_first_step_and_keys_on_the_final_target() {
        let cfg = crate::config::parse(
            br#"{"providers":[{"issuer":"https://idp","audiences":["a"],"jwks":{"inline":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}}],
                "upstream_credentials":{"targets":{
                   "idjag":{"mode":"rfc8693","cluster":"idp","authority":"idp","path":"/token","timeout_ms":500,
                            "requested_token_type":"urn:ietf:params:oauth:token-type:id-jag","audience":"https://as"},
                   "crm":{"mode":"jwt_bearer","cluster":"as","authority":"as","path":"/token","assertion_from":"idjag","timeout_ms":700},
                   "minted":{"mode":"internal","audience":"as","signing_key":{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},
                   "from-minted":{"mode":"jwt_bearer","cluster":"as","authority":"as","path":"/token","assertion_from":"minted"}}}}"#,
        )
        .unwrap();
        let c = cfg.credentials;
        let p = plan(&c, &[call(Some("crm"), json!(null))], &alice(), "tok").unwrap().unwrap();
        let names: Vec<&str> = p.chain.iter().map(|i| c.targets[*i].name.as_str()).collect();
        assert_eq!((names, p.timeout_ms), (vec!["idjag", "crm"], 1_200));
        let Step::Callout(first) = &p.step else { panic!("{:?}", p.step) };
        assert_eq!(first.cluster, "idp");
        assert!(String::from_utf8_lossy(&first.body).contains("subject_token=tok&"));
        assert_eq!(p.shared_basis.first(), Some(first));
        assert_eq!(p.shared_basis.len(), 2, "the jwt_bearer step is part of the shared identity");
        assert_ne!(p.key, plan(&c, &[call(Some("idjag"), json!(null))], &alice(), "tok").unwrap().unwrap().key);
        let second = callout_for(&c, p.chain[1], "the.id.jag").unwrap();
        assert!(String::from_utf8_lossy(&second.body).contains("&assertion=the.id.jag"));
        // A chain that starts by minting shares on its first callout, assertion left out.
        let p = plan(&c, &[call(Some("from-minted"), json!(null))], &alice(), "tok").unwrap().unwrap();
        assert_eq!(p.step, Step::Mint);
        let basis = String::from_utf8(p.shared_basis[0].body.clone()).unwrap();
        assert!(basis.ends_with("jwt-bearer&assertion="), "{basis}");
        let p = plan(&c, &[call(Some("minted"), json!(null))], &alice(), "tok").unwrap().unwrap();
        assert!(p.shared_basis.is_empty(), "a minted token alone is not shared");
    }

    /// Two configurations (a reload, or two sharing a `vm_id`) whose chains differ only in the last step
    /// must not share a token in Envoy's shared data.
    #[test]
    fn shared_keys_cover_every_step_of_a_chain() {
        let shared_key = |crm: &str| {
            let cfg = crate::config::parse(
                format!(
                    r#"{{"providers":[{{"issuer":"https://idp","audiences":["a"],"jwks":{{"inline":{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}]}}}}}}],
                    "upstream_credentials":{{"targets":{{
                       "idjag":{{"mode":"rfc8693","cluster":"idp","authority":"idp","path":"/token",
                                "requested_token_type":"urn:ietf:params:oauth:token-type:id-jag","audience":"https://as"}},
                       "crm":{{"mode":"jwt_bearer","assertion_from":"idjag",{crm}}}}}}}}}"#
                )
                .as_bytes(),
            )
            .unwrap();
            let p = plan(&cfg.credentials, &[call(Some("crm"), json!(null))], &alice(), "tok").unwrap().unwrap();
            super::super::shared::shared_key(&p.key, &p.shared_basis)
        };
        let base = shared_key(r#""cluster":"as","authority":"as","path":"/token","scope":"read""#);
        assert_eq!(base, shared_key(r#""cluster":"as","authority":"as","path":"/token","scope":"read""#));
        for other in [
            r#""cluster":"as","authority":"as","path":"/token","scope":"write""#,
            r#""cluster":"as2","authority":"as","path":"/token","scope":"read""#,
            r#""cluster":"as","authority":"as2","path":"/token","scope":"read""#,
            r#""cluster":"as","authority":"as","path":"/t2","scope":"read""#,
            r#""cluster":"as","authority":"as","path":"/token","scope":"read","resource":"https://r""#,
            r#""cluster":"as","authority":"as","path":"/token","scope":"read","client_id":"gw","client_secret":"s""#,
        ] {
            assert_ne!(base, shared_key(other), "{other}");
        }
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
        let retry = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","requestState":"mcp-authz.link.x.y",
            "inputResponses":{"link_reddit":{"action":"accept"},"other":{"action":"accept"}},"_meta":{"userToken":"tmp"}}}"#;
        let out: Value = serde_json::from_slice(&rewrite_body(retry, true, None).unwrap()).unwrap();
        assert_eq!(out["params"], json!({"name": "t", "inputResponses": {"other": {"action": "accept"}}, "_meta": {}}));
        let theirs =
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","requestState":"server-own"}}"#;
        assert_eq!(rewrite_body(theirs, true, None), None, "the MCP server's own state goes on");
    }
}
