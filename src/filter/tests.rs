//! The glue's state machines driven by `cargo test`: a fake [`Host`] stands in for Envoy (contexts,
//! headers, bodies, callouts, shared data, time), and the tests play Envoy's part — calling the
//! callbacks, answering callouts, advancing the clock — then look at what each request got: resumed,
//! answered, with which headers.

use super::host::{Buffer, CalloutRequest, Headers, Host, Map};
use super::root::Root;
use super::stream::Stream;
use crate::http_reply::LocalReply;
use crate::jwt::base64url;
use proxy_wasm::types::{Action, Status};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

const ROOT: u32 = 1;
const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "mcp";
const SEED: [u8; 32] = [7; 32];
const T0: u64 = 1_800_000_000_000;

#[derive(Default)]
struct Context {
    request_headers: Vec<(String, String)>,
    /// Request headers whose value is not UTF-8 (what `ProxyWasmHost::headers` reports of them).
    undecodable: Vec<String>,
    /// The request header map cannot be read (a failed hostcall or a malformed map).
    unreadable: bool,
    request_body: Vec<u8>,
    /// The upstream's answer, as the filter reads and rewrites it.
    response_headers: Vec<(String, String)>,
    response_body: Vec<u8>,
    reply: Option<LocalReply>,
    resumed: bool,
    properties: Vec<(String, String)>,
}

/// A callout answer: headers and body.
type Answer = (Vec<(String, String)>, Vec<u8>);

struct Dispatched {
    token: u32,
    /// The context that was effective: the answer goes to it.
    context: u32,
    cluster: String,
    body: Vec<u8>,
}

/// Envoy as the glue sees it. Calls act on the effective context, as hostcalls do.
#[derive(Default)]
struct FakeHost {
    now: Cell<u64>,
    effective: Cell<u32>,
    contexts: RefCell<HashMap<u32, Context>>,
    dispatched: RefCell<Vec<Dispatched>>,
    next_token: Cell<u32>,
    /// The callout answer being delivered.
    answer: RefCell<Answer>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    counters: RefCell<Vec<(String, u64)>>,
    /// Every hostcall made, in order (what crosses from the filter into Envoy).
    calls: RefCell<Vec<String>>,
}

impl FakeHost {
    fn log(&self, call: String) {
        self.calls.borrow_mut().push(call);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Context) -> T) -> T {
        f(self.contexts.borrow_mut().entry(self.effective.get()).or_default())
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.borrow().iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }

    fn reply(&self, context: u32) -> Option<LocalReply> {
        self.contexts.borrow().get(&context).and_then(|c| c.reply.clone())
    }

    fn resumed(&self, context: u32) -> bool {
        self.contexts.borrow().get(&context).is_some_and(|c| c.resumed)
    }

    fn request_header(&self, context: u32, name: &str) -> Option<String> {
        let contexts = self.contexts.borrow();
        contexts.get(&context)?.request_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    fn map_headers(&self, map: Map) -> Headers {
        let pairs = match map {
            Map::RequestHeaders => self.with(|c| c.request_headers.clone()),
            Map::ResponseHeaders => self.with(|c| c.response_headers.clone()),
            Map::CalloutResponseHeaders => self.answer.borrow().0.clone(),
        };
        let (undecodable, unreadable) = match map {
            Map::RequestHeaders => self.with(|c| (c.undecodable.clone(), c.unreadable)),
            _ => (Vec::new(), false),
        };
        Headers { pairs, undecodable, unreadable }
    }

    fn take_dispatched(&self) -> Vec<Dispatched> {
        std::mem::take(&mut *self.dispatched.borrow_mut())
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.log("now_ms".into());
        self.now.get()
    }

    fn headers(&self, map: Map) -> Headers {
        self.log(format!("headers {map:?}"));
        self.map_headers(map)
    }

    fn header(&self, map: Map, name: &str) -> Option<String> {
        self.log(format!("header {map:?} {name}"));
        self.map_headers(map).pairs.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn set_header(&self, map: Map, name: &str, value: Option<&str>) {
        self.log(format!("set_header {name}"));
        assert_ne!(map, Map::CalloutResponseHeaders, "callout answers are read only");
        self.with(|c| {
            let headers = if map == Map::RequestHeaders { &mut c.request_headers } else { &mut c.response_headers };
            headers.retain(|(n, _)| n != name);
            c.undecodable.retain(|n| n != name);
            if let Some(v) = value {
                headers.push((name.to_string(), v.to_string()));
            }
        });
    }

    fn buffer(&self, buffer: Buffer, start: usize, size: usize) -> Vec<u8> {
        self.log(format!("buffer {buffer:?}"));
        let bytes = match buffer {
            Buffer::RequestBody => self.with(|c| c.request_body.clone()),
            Buffer::ResponseBody => self.with(|c| c.response_body.clone()),
            Buffer::CalloutResponseBody => self.answer.borrow().1.clone(),
        };
        bytes.get(start..).map(|b| b[..size.min(b.len())].to_vec()).unwrap_or_default()
    }

    fn set_buffer(&self, buffer: Buffer, start: usize, size: usize, data: &[u8]) {
        self.log(format!("set_buffer {buffer:?}"));
        assert_ne!(buffer, Buffer::CalloutResponseBody, "callout answers are read only");
        self.with(|c| {
            let body = if buffer == Buffer::RequestBody { &mut c.request_body } else { &mut c.response_body };
            body.splice(start..(start + size).min(body.len()), data.iter().copied());
        });
    }

    fn dispatch(&self, request: &CalloutRequest) -> Result<u32, Status> {
        self.log(format!("dispatch {}", request.cluster));
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        self.dispatched.borrow_mut().push(Dispatched {
            token,
            context: self.effective.get(),
            cluster: request.cluster.to_string(),
            body: request.body.map(<[u8]>::to_vec).unwrap_or_default(),
        });
        Ok(token)
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.log("shared_get".into());
        match self.shared.borrow().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
        self.log("shared_set".into());
        let mut shared = self.shared.borrow_mut();
        // As Envoy: an absent key is created whatever the cas; a present one only with its cas.
        if let (Some((_, current)), Some(cas)) = (shared.get(key), cas)
            && *current != cas
        {
            return Err(Status::CasMismatch);
        }
        let next = self.next_cas.get() + 1;
        self.next_cas.set(next);
        shared.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    fn send_reply(&self, reply: &LocalReply, _details: &str) -> bool {
        self.log("send_reply".into());
        self.with(|c| {
            assert!(c.reply.is_none(), "two local replies for one stream (envoy#28826)");
            c.reply = Some(reply.clone());
        });
        true
    }

    fn set_property(&self, path: &str, value: &[u8]) {
        self.log(format!("set_property {path}"));
        self.with(|c| c.properties.push((path.to_string(), String::from_utf8_lossy(value).into_owned())));
    }

    fn enter(&self, context_id: u32) -> bool {
        if !self.contexts.borrow().contains_key(&context_id) {
            return false; // the stream is gone
        }
        self.effective.set(context_id);
        true
    }

    fn resume_request(&self) {
        self.log("resume_request".into());
        self.with(|c| c.resumed = true);
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        let mut counters = self.counters.borrow_mut();
        counters.push((name.to_string(), 0));
        Some(counters.len() as u32 - 1)
    }

    fn increment(&self, counter: u32) {
        let mut counters = self.counters.borrow_mut();
        self.log(format!("increment {}", counters[counter as usize].0));
        counters[counter as usize].1 += 1;
    }
}

/// A filter (root context and streams) in front of the fake Envoy.
struct Filter {
    host: Rc<FakeHost>,
    root: Root,
    streams: HashMap<u32, Stream>,
}

impl Filter {
    fn new(config: Value) -> Filter {
        let host = Rc::new(FakeHost::default());
        host.now.set(T0);
        host.contexts.borrow_mut().insert(ROOT, Context::default());
        host.effective.set(ROOT);
        let mut root = Root::default();
        assert!(root.configure(config.to_string().as_bytes(), host.clone()), "configuration refused");
        Filter { host, root, streams: HashMap::new() }
    }

    /// Envoy runs the root's tick.
    fn tick(&self) {
        self.host.effective.set(ROOT);
        self.root.tick();
    }

    fn advance(&self, ms: u64) {
        self.host.now.set(self.host.now.get() + ms);
    }

    /// A new request: its headers arrive (`end_of_stream`: no body follows).
    fn request(&mut self, id: u32, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        self.request_with_undecodable(id, headers, &[], end_of_stream)
    }

    /// `request`, with headers whose value is not UTF-8 (named in `undecodable`).
    fn request_with_undecodable(
        &mut self,
        id: u32,
        headers: &[(&str, &str)],
        undecodable: &[&str],
        end_of_stream: bool,
    ) -> Action {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let undecodable = undecodable.iter().map(|n| n.to_string()).collect();
        let context = Context { request_headers: headers, undecodable, ..Default::default() };
        self.host.contexts.borrow_mut().insert(id, context);
        let stream = self.root.new_stream(id).expect("configured");
        self.host.effective.set(id);
        let action = stream.on_request_headers(end_of_stream);
        self.streams.insert(id, stream);
        action
    }

    /// The whole request body arrives.
    fn body(&self, id: u32, body: &[u8]) -> Action {
        self.host.effective.set(id);
        self.host.with(|c| c.request_body = body.to_vec());
        self.streams[&id].on_request_body(body.len(), true)
    }

    /// The body arrives in frames and the request ends with trailers.
    fn body_then_trailers(&self, id: u32, body: &[u8]) -> Action {
        self.host.effective.set(id);
        self.host.with(|c| c.request_body = body.to_vec());
        assert_eq!(self.streams[&id].on_request_body(body.len(), false), Action::Pause);
        self.streams[&id].on_request_trailers()
    }

    /// The upstream answers request `id` (JSON, 200): the body as the client receives it.
    fn respond(&self, id: u32, body: &[u8]) -> Vec<u8> {
        self.host.effective.set(id);
        self.host.with(|c| {
            c.response_headers =
                vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
            c.response_body = body.to_vec();
        });
        assert_eq!(self.streams[&id].on_response_headers(), Action::Continue);
        self.streams[&id].on_response_body(body.len(), true);
        self.host.with(|c| c.response_body.clone())
    }

    /// Envoy delivers the answer of callout `token` to the context that made it.
    fn answer(&self, token: u32, context: u32, status: Option<u16>, headers: &[(&str, &str)], body: &[u8]) {
        let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        if let Some(status) = status {
            all.insert(0, (":status".into(), status.to_string()));
        }
        let num_headers = all.len();
        *self.host.answer.borrow_mut() = (all, body.to_vec());
        self.host.effective.set(context);
        if context == ROOT {
            self.root.on_callout(token, num_headers, body.len());
        } else {
            self.streams[&context].on_callout(token, num_headers, body.len());
        }
    }

    /// The stream ends (client gone, or done): Envoy deletes its context.
    fn close(&mut self, id: u32) {
        self.host.contexts.borrow_mut().remove(&id);
        self.streams.remove(&id);
    }
}

fn b64(bytes: &[u8]) -> String {
    base64url::encode(bytes)
}

fn key_pair() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(SEED))
}

fn jwks() -> Value {
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": b64(key_pair().pk.as_ref())}]})
}

fn token(sub: &str, scope: &str) -> String {
    let header = b64(json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"}).to_string().as_bytes());
    let exp = T0 / 1000 + 3600;
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope, "exp": exp});
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let signature = key_pair().sk.sign(input.as_bytes(), None);
    format!("{input}.{}", b64(signature.as_ref()))
}

fn provider(jwks: Value) -> Value {
    json!({"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["EdDSA"], "jwks": jwks})
}

fn remote_keys() -> Value {
    provider(json!({"remote": {"cluster": "idp", "authority": "idp", "path": "/jwks", "timeout_ms": 1000}}))
}

fn inline_keys() -> Value {
    provider(json!({"inline": jwks()}))
}

fn get(path: &str, token: &str) -> Vec<(String, String)> {
    [(":method", "GET"), (":path", path), ("authorization", &format!("Bearer {token}"))]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn headers_of(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

#[test]
fn a_header_value_that_is_not_utf8_is_refused_on_guarded_paths_and_stripped_everywhere() {
    let mut f = Filter::new(json!({"providers": [inline_keys()], "paths": [{"prefix": "/api"}],
                                   "claim_headers": [{"claim": "sub", "header": "x-user-sub"}]}));
    let request = get("/api/items", &token("alice", "read"));
    assert_eq!(f.request_with_undecodable(2, &headers_of(&request), &["mcp-name"], true), Action::Pause);
    let reply = f.host.reply(2).expect("refused");
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], -32020);
    assert_eq!(f.host.counter("mcp_authz.denied"), 1);

    // Off the guarded paths the request passes, but a claim header the filter cannot read is still a
    // client's copy of a header that is the filter's to set: removed.
    let public = [(":method", "GET"), (":path", "/public")];
    assert_eq!(f.request_with_undecodable(3, &public, &["x-user-sub", "x-other"], true), Action::Continue);
    assert_eq!(f.host.contexts.borrow()[&3].undecodable, vec!["x-other".to_string()]);
}

#[test]
fn request_headers_that_cannot_be_read_are_refused_not_passed() {
    let mut f = Filter::new(json!({"providers": [inline_keys()], "paths": [{"prefix": "/mcp"}],
                                   "claim_headers": [{"claim": "sub", "header": "x-user-sub"}]}));
    let public = [(":method", "GET"), (":path", "/public"), ("x-user-sub", "admin")];
    assert_eq!(f.request(2, &public, true), Action::Continue, "an unguarded path passes");
    for (id, undecodable) in [(3, ":path"), (4, ":method"), (5, ":authority")] {
        assert_eq!(f.request_with_undecodable(id, &public, &[undecodable], true), Action::Pause, "{undecodable}");
        assert_eq!(f.host.reply(id).map(|r| r.status), Some(400), "{undecodable}");
        assert!(!f.host.resumed(id));
    }
    let context = Context { request_headers: vec![], unreadable: true, ..Default::default() };
    f.host.contexts.borrow_mut().insert(6, context);
    let stream = f.root.new_stream(6).expect("configured");
    f.host.effective.set(6);
    assert_eq!(stream.on_request_headers(true), Action::Pause, "a map that cannot be read");
    assert_eq!(f.host.reply(6).map(|r| r.status), Some(400));
    assert_eq!(f.host.counter("mcp_authz.denied.invalid_request"), 4);
}

#[test]
fn a_request_held_for_keys_goes_on_once_they_arrive() {
    let mut f = Filter::new(json!({"providers": [remote_keys()], "paths": [{"prefix": "/api"}],
                                   "claim_headers": [{"claim": "sub", "header": "x-user-sub"}]}));
    f.tick(); // the first fetch starts
    let [fetch] = f.host.take_dispatched().try_into().ok().expect("one JWKS fetch");
    assert_eq!((fetch.cluster.as_str(), fetch.context), ("idp", ROOT));

    let request = get("/api/items", &token("alice", "read"));
    assert_eq!(f.request(2, &headers_of(&request), true), Action::Pause, "held: no keys yet");
    assert_eq!(f.host.counter("mcp_authz.held_for_keys"), 1);
    f.tick();
    assert!(!f.host.resumed(2) && f.host.reply(2).is_none(), "still held while the fetch is in flight");

    f.answer(fetch.token, ROOT, Some(200), &[], jwks().to_string().as_bytes());
    assert!(f.host.resumed(2), "resumed as soon as the keys were stored");
    assert_eq!(f.host.reply(2), None);
    assert_eq!(f.host.request_header(2, "x-user-sub").as_deref(), Some("alice"));
    assert_eq!(f.host.counter("mcp_authz.allowed"), 1);
    assert_eq!(f.host.counter("mcp_authz.jwks_fetch_success"), 1);
}

#[test]
fn keys_that_never_arrive_end_in_503_with_retry_after() {
    let mut f = Filter::new(json!({"providers": [remote_keys()], "jwks_wait_timeout_ms": 500}));
    f.tick();
    let [fetch] = f.host.take_dispatched().try_into().ok().expect("one JWKS fetch");
    assert_eq!(f.request(2, &headers_of(&get("/x", &token("alice", ""))), true), Action::Pause);
    // The fetch fails (no answer at all), and no other comes in time.
    f.answer(fetch.token, ROOT, None, &[], b"");
    assert!(f.host.reply(2).is_none(), "a failed fetch alone does not end the wait for keys that may come");
    f.advance(499);
    f.tick();
    assert!(f.host.reply(2).is_none());
    f.advance(1);
    f.tick();
    let reply = f.host.reply(2).expect("answered at the deadline");
    assert_eq!((reply.status, reply.header("retry-after")), (503, Some("5")));
    assert!(!f.host.resumed(2));
    assert_eq!(f.host.counter("mcp_authz.denied.jwks_unavailable"), 1);
}

fn exchange_config() -> Value {
    json!({
        "providers": [inline_keys()],
        "paths": [{"prefix": "/mcp"}],
        "upstream_credentials": {"default": "sts", "targets": {"sts": {
            "mode": "rfc8693", "cluster": "sts", "authority": "sts", "path": "/token", "audience": "api",
            "timeout_ms": 1000}}}
    })
}

const EXCHANGED: &str = r#"{"access_token":"upstream-token","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":300}"#;

#[test]
fn a_follower_goes_on_with_its_leaders_exchanged_token() {
    let mut f = Filter::new(exchange_config());
    let alice = token("alice", "read");
    assert_eq!(f.request(2, &headers_of(&get("/mcp", &alice)), true), Action::Pause, "leader calls out");
    let [callout] = f.host.take_dispatched().try_into().ok().expect("one exchange callout");
    assert_eq!((callout.cluster.as_str(), callout.context), ("sts", 2));
    assert!(String::from_utf8_lossy(&callout.body).contains("subject_token="));

    assert_eq!(f.request(3, &headers_of(&get("/mcp", &alice)), true), Action::Pause, "follower waits");
    assert!(f.host.take_dispatched().is_empty(), "one callout per key");

    f.answer(callout.token, 2, Some(200), &[("content-type", "application/json")], EXCHANGED.as_bytes());
    for id in [2, 3] {
        assert!(f.host.resumed(id), "{id} resumed");
        assert_eq!(f.host.request_header(id, "authorization").as_deref(), Some("Bearer upstream-token"));
    }
    assert_eq!(f.host.counter("mcp_authz.exchange.ok"), 1);
    // The next request for the same key is served from the cache, without a callout.
    assert_eq!(f.request(4, &headers_of(&get("/mcp", &alice)), true), Action::Continue);
    assert!(f.host.take_dispatched().is_empty());
    assert_eq!(f.host.request_header(4, "authorization").as_deref(), Some("Bearer upstream-token"));
}

#[test]
fn a_chain_calls_its_steps_in_turn_and_its_followers_get_the_last_token() {
    let mut f = Filter::new(json!({
        "providers": [inline_keys()],
        "paths": [{"prefix": "/mcp"}],
        "upstream_credentials": {"default": "crm", "targets": {
            "idjag": {"mode": "rfc8693", "cluster": "idp", "authority": "idp", "path": "/token", "audience": "https://as",
                      "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag"},
            "crm": {"mode": "jwt_bearer", "cluster": "as", "authority": "as", "path": "/token", "assertion_from": "idjag"}}}
    }));
    let alice = token("alice", "read");
    assert_eq!(f.request(2, &headers_of(&get("/mcp", &alice)), true), Action::Pause);
    let [exchange] = f.host.take_dispatched().try_into().ok().expect("the IdP step first");
    assert_eq!(exchange.cluster, "idp");
    assert_eq!(f.request(3, &headers_of(&get("/mcp", &alice)), true), Action::Pause, "follower waits");
    let id_jag = r#"{"access_token":"the.id.jag","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:id-jag","expires_in":300}"#;
    f.answer(exchange.token, 2, Some(200), &[], id_jag.as_bytes());
    let [grant] = f.host.take_dispatched().try_into().ok().expect("then the grant, with the ID-JAG");
    assert_eq!((grant.cluster.as_str(), grant.context), ("as", 2));
    assert!(String::from_utf8_lossy(&grant.body).ends_with("jwt-bearer&assertion=the.id.jag"));
    assert!(!f.host.resumed(2) && !f.host.resumed(3), "nothing goes on with an ID-JAG");
    let access = r#"{"access_token":"crm-token","token_type":"Bearer","expires_in":300}"#;
    f.answer(grant.token, 2, Some(200), &[], access.as_bytes());
    for id in [2, 3] {
        assert!(f.host.resumed(id), "{id} resumed");
        assert_eq!(f.host.request_header(id, "authorization").as_deref(), Some("Bearer crm-token"));
    }
    assert_eq!(f.host.counter("mcp_authz.exchange.ok"), 1);
    assert_eq!(f.request(4, &headers_of(&get("/mcp", &alice)), true), Action::Continue, "cached");
    assert!(f.host.take_dispatched().is_empty());
}

#[test]
fn a_leader_gone_mid_callout_releases_its_followers_with_504() {
    let mut f = Filter::new(exchange_config());
    let alice = token("alice", "read");
    f.request(2, &headers_of(&get("/mcp", &alice)), true);
    let [callout] = f.host.take_dispatched().try_into().ok().expect("one exchange callout");
    f.request(3, &headers_of(&get("/mcp", &alice)), true);
    f.close(2); // the leader's client went away: its callout's answer will never be delivered
    f.tick();
    let reply = f.host.reply(3).expect("the follower is answered at the next drain, not at its deadline");
    assert_eq!(reply.status, 504);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["data"]["error"], "api_error");
    assert_eq!(f.host.counter("mcp_authz.exchange.failed.api_error"), 1);
    // An answer arriving after all is ignored (its stream is gone).
    f.host.contexts.borrow_mut().insert(2, Context::default());
    f.streams.insert(2, f.root.new_stream(2).unwrap());
    f.answer(callout.token, 2, Some(200), &[], EXCHANGED.as_bytes());
    assert!(!f.host.resumed(2) && !f.host.resumed(3));
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_408() {
    let mut f = Filter::new(json!({"providers": [inline_keys()], "mcp": {"body_timeout_ms": 1000}}));
    let mut headers = get("/mcp", &token("alice", "read"));
    headers[0].1 = "POST".into();
    headers.push(("content-type".into(), "application/json".into()));
    assert_eq!(f.request(2, &headers_of(&headers), false), Action::Pause, "held for its body");
    f.advance(999);
    f.tick();
    assert!(f.host.reply(2).is_none());
    f.advance(1);
    f.tick();
    assert_eq!(f.host.reply(2).map(|r| r.status), Some(408));
    assert_eq!(f.host.counter("mcp_authz.denied.body_timeout"), 1);
    // A body that comes in time is decided instead.
    f.request(3, &headers_of(&headers), false);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    assert_eq!(f.body(3, call.as_bytes()), Action::Continue);
    f.advance(5_000);
    f.tick();
    assert!(f.host.reply(3).is_none(), "not answered 408 after it was decided");
}

#[test]
fn a_body_that_arrives_leaves_the_parked_queue_at_once() {
    let mut f = Filter::new(json!({"providers": [inline_keys()]}));
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    for (id, trailers) in [(2, false), (3, true)] {
        f.request(id, &headers_of(&post(&token("alice", "read"))), false);
        assert_eq!(f.root.parked_requests(), 1, "waits for its body");
        let decided = if trailers { f.body_then_trailers(id, ping.as_bytes()) } else { f.body(id, ping.as_bytes()) };
        assert_eq!(decided, Action::Continue, "trailers: {trailers}");
        assert_eq!(f.root.parked_requests(), 0, "out of the queue before the next tick (trailers: {trailers})");
    }
}

/// Each hostcall crosses from V8 into Envoy and costs ~0.1-1 µs: this is the whole list for the most
/// common request, a `tools/call` with a cached token. A new crossing on this path should be a choice.
#[test]
fn a_cached_tools_call_crosses_into_envoy_only_these_times() {
    let mut f = Filter::new(json!({"providers": [inline_keys()],
                                   "claim_headers": [{"claim": "sub", "header": "x-user-sub"}],
                                   "mcp": {"rules": [{"method": "tools/call", "name": "getTasks", "scopes": ["read"]}]}}));
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "getTasks", "arguments": {}}})
    .to_string();
    let token = token("alice", "read");
    f.request(2, &headers_of(&post(&token)), false);
    f.body(2, call.as_bytes());
    assert_eq!(f.host.counter("mcp_authz.allowed"), 1);
    f.host.calls.borrow_mut().clear();
    f.request(3, &headers_of(&post(&token)), false);
    assert_eq!(f.body(3, call.as_bytes()), Action::Continue);
    assert_eq!(
        f.host.calls.borrow().as_slice(),
        [
            "headers RequestHeaders",
            "now_ms",
            "increment mcp_authz.jwt_cache_hit",
            "set_header x-user-sub",
            "buffer RequestBody",
            "increment mcp_authz.mcp.allowed.tools_call.getTasks",
            "increment mcp_authz.allowed",
        ]
    );
}

fn properties(f: &Filter, id: u32) -> Vec<(String, String)> {
    f.host.contexts.borrow().get(&id).map(|c| c.properties.clone()).unwrap_or_default()
}

fn post(token: &str) -> Vec<(String, String)> {
    let mut headers = get("/mcp", token);
    headers[0].1 = "POST".into();
    headers.push(("content-type".into(), "application/json".into()));
    headers
}

#[test]
fn the_decision_is_exported_as_filter_state_for_allowed_and_refused_calls() {
    let mut f = Filter::new(json!({
        "providers": [inline_keys()],
        "decision_export": {"filter_state": ["subject", "method", "target", "decision", "reason", "rule", "credential", "shadow"]},
        "mcp": {"rules": [
            {"id": "own-project", "method": "tools/call", "name": "createTask",
             "arguments": [{"pointer": "/project", "equals_claim": "sub"}]},
            {"id": "audit-reads", "method": "tools/call", "name": "getTasks", "scopes": ["admin"], "shadow": true},
            {"method": "tools/call", "name": "getTasks"}]}
    }));
    let alice = token("alice", "read");
    let call = |name: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}})
            .to_string()
    };
    f.request(2, &headers_of(&post(&alice)), false);
    assert_eq!(f.body(2, call("createTask", json!({"project": "alice"})).as_bytes()), Action::Continue);
    let got = properties(&f, 2);
    let want = |k: &str, v: &str| (format!("mcp_authz.{k}"), v.to_string());
    for expected in [
        want("subject", "alice"),
        want("method", "tools/call"),
        want("target", "createTask"),
        want("decision", "allow"),
        want("reason", "allowed"),
        want("rule", "own-project"),
        want("credential", "passthrough"),
        want("shadow", "false"),
    ] {
        assert!(got.contains(&expected), "{expected:?} in {got:?}");
    }

    f.request(3, &headers_of(&post(&alice)), false);
    assert_eq!(f.body(3, call("createTask", json!({"project": "bob"})).as_bytes()), Action::Pause);
    let reply = f.host.reply(3).expect("refused");
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!((reply.status, body["error"]["data"]["argument"].as_str()), (403, Some("/project")));
    assert!(!reply.body.contains("bob"), "the argument's value is never echoed");
    let got = properties(&f, 3);
    assert!(
        got.contains(&want("decision", "deny")) && got.contains(&want("reason", "argument_not_allowed")),
        "{got:?}"
    );
    assert_eq!(f.host.counter("mcp_authz.rule.own-project.allowed"), 1);
    assert_eq!(f.host.counter("mcp_authz.rule.own-project.denied"), 1);

    // A shadow rule that would refuse: allowed, and said so.
    f.request(4, &headers_of(&post(&alice)), false);
    assert_eq!(f.body(4, call("getTasks", json!({})).as_bytes()), Action::Continue);
    let got = properties(&f, 4);
    for expected in [
        want("decision", "allow"),
        want("shadow", "true"),
        want("rule", "audit-reads"),
        want("reason", "insufficient_scope"),
    ] {
        assert!(got.contains(&expected), "{expected:?} in {got:?}");
    }
    assert_eq!(f.host.counter("mcp_authz.shadow.would_deny"), 1);
    assert_eq!(f.host.counter("mcp_authz.rule.audit-reads.would_deny"), 1);
}

#[test]
fn nothing_is_exported_unless_configured() {
    let mut f = Filter::new(json!({"providers": [inline_keys()]}));
    f.request(2, &headers_of(&get("/mcp", &token("alice", ""))), true);
    assert!(f.host.resumed(2) || f.host.reply(2).is_none());
    assert!(properties(&f, 2).is_empty());
}

#[test]
fn mirror_headers_are_checked_against_configured_and_learned_parameters() {
    let schema =
        |header: &str| json!({"type": "object", "properties": {"q": {"type": "string", "x-mcp-header": header}}});
    let mut f = Filter::new(json!({
        "providers": [inline_keys()],
        "mcp": {"rules": [{"method": "tools/call", "name": "*"}], "param_headers": {"configured": schema("Q")}}
    }));
    // Another worker read a tools/list showing `listed` with an x-mcp-header on `q`: shared data holds it.
    let other = crate::config::parse(json!({"providers": [inline_keys()]}).to_string().as_bytes()).unwrap();
    let mcp = &other.mcp;
    super::param_headers::listed(
        f.host.as_ref(),
        mcp,
        "/mcp",
        "listed",
        &json!({"name": "listed", "inputSchema": schema("Q")}),
    );
    let alice = token("alice", "read");
    let mut id = 1;
    let mut send = |tool: &str, q: &str, extra: &[(&str, &str)]| {
        id += 1;
        let mut headers = post(&alice);
        for (n, v) in [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", tool)]
            .iter()
            .chain(extra)
        {
            headers.push((n.to_string(), v.to_string()));
        }
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": tool, "arguments": {"q": q}, "_meta": meta}});
        f.request(id, &headers_of(&headers), false);
        f.body(id, body.to_string().as_bytes());
        f.host.reply(id).map(|r| (r.status, serde_json::from_str::<Value>(&r.body).unwrap()["error"]["code"].clone()))
    };
    let refused = Some((400, json!(-32020)));
    for tool in ["configured", "listed"] {
        assert_eq!(send(tool, "safe", &[("mcp-param-q", "safe")]), None, "{tool}: agreeing header passes");
        assert_eq!(send(tool, "evil", &[("mcp-param-q", "safe")]), refused, "{tool}: forged");
        assert_eq!(send(tool, "evil", &[]), refused, "{tool}: missing");
    }
    assert_eq!(send("other", "evil", &[("mcp-param-q", "safe")]), None, "a tool the filter knows nothing of");
    assert_eq!(f.host.counter("mcp_authz.denied.header_mismatch"), 4);
}

#[test]
fn learned_parameters_belong_to_the_endpoint_whose_list_showed_them() {
    let mut f =
        Filter::new(json!({"providers": [inline_keys()], "mcp": {"rules": [{"method": "tools/call", "name": "*"}]}}));
    let alice = token("alice", "read");
    let mut id = 1;
    let mut send = |f: &mut Filter, path: &str, body: Value, extra: &[(&str, &str)]| {
        id += 1;
        let mut headers = get(path, &alice);
        headers[0].1 = "POST".into();
        headers.push(("content-type".into(), "application/json".into()));
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        f.request(id, &headers_of(&headers), false);
        f.body(id, body.to_string().as_bytes());
        (id, f.host.reply(id).map(|r| r.status))
    };
    let annotated = json!({"type": "string", "x-mcp-header": "Q"});
    let plain = json!({"type": "string"});
    let search = |q: &str| {
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "search", "arguments": {"q": q}, "_meta": meta}})
    };
    let mcp = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "search")];
    let forged: Vec<_> = mcp.iter().copied().chain([("mcp-param-q", "safe")]).collect();
    for (path, q) in [("/a", &annotated), ("/b", &plain), ("/a", &annotated)] {
        let (list, refused) = send(&mut f, path, json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), &[]);
        assert_eq!(refused, None);
        let tool = json!({"name": "search", "inputSchema": {"type": "object", "properties": {"q": q}}});
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [tool]}});
        let shown: Value = serde_json::from_slice(&f.respond(list, answer.to_string().as_bytes())).unwrap();
        assert_eq!(shown["result"]["tools"][0]["name"], "search", "listed on {path}");
        // Whichever endpoint listed last, each is checked against its own tool.
        assert_eq!(send(&mut f, "/a", search("evil"), &forged).1, Some(400), "/a: a forged header is refused");
        assert_eq!(send(&mut f, "/a", search("evil"), &mcp).1, Some(400), "/a: a missing header is refused");
        assert_eq!(send(&mut f, "/a", search("safe"), &forged).1, None, "/a: an agreeing header passes");
        assert_eq!(send(&mut f, "/b", search("evil"), &mcp).1, None, "/b: its tool has no header to send");
    }
    assert_eq!(f.host.counter("mcp_authz.denied.header_mismatch"), 6);
}

fn introspection_config() -> Value {
    json!({
        "providers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "introspection": {
            "cluster": "as", "authority": "as", "path": "/introspect", "client_id": "gw", "client_secret": "s",
            "timeout_ms": 1000}}],
        "claim_headers": [{"claim": "sub", "header": "x-user-sub"}]
    })
}

fn active(sub: &str) -> Vec<u8> {
    json!({"active": true, "sub": sub, "aud": AUDIENCE, "exp": T0 / 1000 + 60}).to_string().into_bytes()
}

#[test]
fn an_opaque_token_is_introspected_once_for_its_leader_and_followers() {
    let mut f = Filter::new(introspection_config());
    let opaque = get("/mcp", "2YotnFZFEjr1zCsicMWpAA");
    assert_eq!(f.request(2, &headers_of(&opaque), true), Action::Pause, "leader calls out");
    let [callout] = f.host.take_dispatched().try_into().ok().expect("one introspection callout");
    assert_eq!((callout.cluster.as_str(), callout.context), ("as", 2));
    assert_eq!(callout.body, b"token=2YotnFZFEjr1zCsicMWpAA&token_type_hint=access_token");
    assert_eq!(f.request(3, &headers_of(&opaque), true), Action::Pause, "follower waits");
    assert!(f.host.take_dispatched().is_empty(), "one callout per token");

    f.answer(callout.token, 2, Some(200), &[], &active("alice"));
    for id in [2, 3] {
        assert!(f.host.resumed(id), "{id} resumed");
        assert_eq!(f.host.request_header(id, "x-user-sub").as_deref(), Some("alice"));
    }
    // Cached until its exp: the next request goes on at once, without a callout.
    assert_eq!(f.request(4, &headers_of(&opaque), true), Action::Continue);
    assert!(f.host.take_dispatched().is_empty());
    assert_eq!(f.host.counter("mcp_authz.introspection.cache_hit"), 1);
    // A JWT does not go to the endpoint (and this provider has no keys for it).
    f.request(5, &headers_of(&get("/mcp", &token("bob", ""))), true);
    assert!(f.host.take_dispatched().is_empty());
    assert_eq!(f.host.reply(5).map(|r| r.status), Some(401));
    assert_eq!(f.host.counter("mcp_authz.denied.issuer_not_allowed"), 1);
}

#[test]
fn a_leader_gone_mid_introspection_hands_the_token_to_a_follower() {
    let mut f = Filter::new(introspection_config());
    let opaque = get("/mcp", "opaque-token-00001");
    f.request(2, &headers_of(&opaque), true);
    let [_lost] = f.host.take_dispatched().try_into().ok().expect("one introspection callout");
    f.request(3, &headers_of(&opaque), true);
    f.close(2);
    f.tick();
    let [callout] = f.host.take_dispatched().try_into().ok().expect("the follower calls out itself");
    f.answer(callout.token, callout.context, Some(200), &[], br#"{"active":false}"#);
    let reply = f.host.reply(3).expect("answered");
    assert_eq!(reply.status, 401);
    assert!(reply.header("www-authenticate").is_some_and(|c| c.contains("invalid_token")));
    assert_eq!(f.host.counter("mcp_authz.denied.inactive"), 1);
}

#[test]
fn an_introspection_without_an_answer_is_503_and_not_cached() {
    let mut f = Filter::new(introspection_config());
    let opaque = get("/mcp", "opaque-token-00002");
    f.request(2, &headers_of(&opaque), true);
    let [callout] = f.host.take_dispatched().try_into().ok().expect("one introspection callout");
    f.answer(callout.token, 2, None, &[], b"");
    let reply = f.host.reply(2).expect("answered");
    assert_eq!((reply.status, reply.header("retry-after")), (503, Some("5")));
    assert_eq!(f.host.counter("mcp_authz.denied.introspection_unavailable"), 1);
    f.request(3, &headers_of(&opaque), true);
    assert_eq!(f.host.take_dispatched().len(), 1, "a failure is not cached: asked again");
}

#[test]
fn tokens_that_are_not_b64tokens_are_refused_without_a_callout() {
    let mut f = Filter::new(introspection_config());
    for (id, bad) in [(2, "x"), (3, "short-token"), (4, "not!a!b64token!at!all")] {
        f.request(id, &headers_of(&get("/mcp", bad)), true);
        assert_eq!(f.host.reply(id).map(|r| r.status), Some(401), "{bad}");
    }
    assert!(f.host.take_dispatched().is_empty(), "no callout for a token no server issues");
    assert_eq!(f.host.counter("mcp_authz.denied.malformed"), 3);
}

#[test]
fn introspection_callouts_in_flight_are_capped_per_worker() {
    let mut f = Filter::new(introspection_config());
    let cap = crate::introspection::MAX_CALLOUTS_IN_FLIGHT as u32;
    for id in 2..2 + cap {
        f.request(id, &headers_of(&get("/mcp", &format!("random-token-{id:08}"))), true);
    }
    let first = f.host.take_dispatched().remove(0);
    assert_eq!(f.root.parked_requests(), 0);
    let over = 2 + cap;
    f.request(over, &headers_of(&get("/mcp", "random-token-over-the-cap")), true);
    assert!(f.host.take_dispatched().is_empty(), "no callout over the cap");
    let reply = f.host.reply(over).expect("answered");
    assert_eq!((reply.status, reply.header("retry-after")), (503, Some("5")));
    assert_eq!(f.host.counter("mcp_authz.denied.introspection_unavailable"), 1);
    // Once a callout is answered, there is room again.
    f.answer(first.token, first.context, Some(200), &[], br#"{"active":false}"#);
    f.request(over + 1, &headers_of(&get("/mcp", "random-token-over-the-cap")), true);
    assert_eq!(f.host.take_dispatched().len(), 1);
}

fn shared_slots(f: &Filter, namespace: &str) -> Vec<crate::exchange::shared::Slot> {
    let shared = f.host.shared.borrow();
    let named = shared.iter().filter(|(name, _)| name.starts_with(namespace));
    named.map(|(_, (bytes, _))| crate::exchange::shared::Slot::decode(Some(bytes))).collect()
}

#[test]
fn only_active_answers_are_shared_and_never_in_the_exchanges_slots() {
    let mut f = Filter::new(introspection_config());
    f.request(2, &headers_of(&get("/mcp", "random-inactive-token")), true);
    let [callout] = f.host.take_dispatched().try_into().ok().expect("one introspection callout");
    f.answer(callout.token, 2, Some(200), &[], br#"{"active":false}"#);
    assert_eq!(f.host.reply(2).map(|r| r.status), Some(401));
    let kept = shared_slots(&f, "mcp_authz.v1.introspection|");
    assert!(kept.iter().all(|s| s.token.is_none()), "a negative answer stays on its worker: {kept:?}");
    f.request(3, &headers_of(&get("/mcp", "2YotnFZFEjr1zCsicMWpAA")), true);
    let [callout] = f.host.take_dispatched().try_into().ok().expect("one introspection callout");
    f.answer(callout.token, 3, Some(200), &[], &active("alice"));
    assert!(f.host.resumed(3));
    let kept = shared_slots(&f, "mcp_authz.v1.introspection|");
    assert_eq!(kept.iter().filter(|s| s.token.is_some()).count(), 1, "the active answer is shared");
    assert!(shared_slots(&f, "mcp_authz.v1.exchange|").is_empty(), "exchanged tokens' slots untouched");
}

#[test]
fn an_introspection_answer_after_the_body_timeout_does_not_answer_again() {
    let mut config = introspection_config();
    config["mcp"] = json!({"body_timeout_ms": 1000});
    let mut f = Filter::new(config);
    f.request(2, &headers_of(&post("2YotnFZFEjr1zCsicMWpAA")), false);
    let [callout] = f.host.take_dispatched().try_into().ok().expect("one introspection callout");
    f.advance(1000);
    f.tick();
    assert_eq!(f.host.reply(2).map(|r| r.status), Some(408));
    // The fake asserts on a second local reply; claim headers must not be set on an answered stream.
    f.answer(callout.token, 2, Some(200), &[], &active("alice"));
    assert_eq!(f.host.request_header(2, "x-user-sub"), None);
    assert!(!f.host.resumed(2));
}

#[test]
fn a_bound_session_needs_a_subject() {
    let no_sub = json!({"active": true, "aud": AUDIENCE, "exp": T0 / 1000 + 60}).to_string();
    for (binding, status) in [("subject", Some(401)), ("off", None)] {
        let mut config = introspection_config();
        config["mcp"] = json!({"sessions": {"binding": binding}});
        let mut f = Filter::new(config);
        f.request(2, &headers_of(&get("/mcp", "2YotnFZFEjr1zCsicMWpAA")), true);
        let [callout] = f.host.take_dispatched().try_into().ok().expect("one introspection callout");
        f.answer(callout.token, 2, Some(200), &[], no_sub.as_bytes());
        assert_eq!(f.host.reply(2).map(|r| r.status), status, "binding {binding}");
    }
}

#[test]
fn an_introspection_answer_over_8_kib_is_503() {
    let mut f = Filter::new(introspection_config());
    f.request(2, &headers_of(&get("/mcp", "2YotnFZFEjr1zCsicMWpAA")), true);
    let [callout] = f.host.take_dispatched().try_into().ok().expect("one introspection callout");
    let mut big: Value = serde_json::from_slice(&active("alice")).unwrap();
    big["padding"] = json!("x".repeat(8 * 1024));
    f.answer(callout.token, 2, Some(200), &[], big.to_string().as_bytes());
    assert_eq!(f.host.reply(2).map(|r| r.status), Some(503), "not kept, not allowed");
}

#[test]
fn a_shared_answer_kept_under_a_higher_max_ttl_is_not_reused_after_a_reload() {
    let mut before = Filter::new(introspection_config());
    before.request(2, &headers_of(&get("/mcp", "2YotnFZFEjr1zCsicMWpAA")), true);
    let [callout] = before.host.take_dispatched().try_into().ok().expect("one introspection callout");
    before.answer(callout.token, 2, Some(200), &[], &active("alice")); // shared until exp, 60 s
    let lowered = |max_ttl_seconds: u64| {
        let mut config = introspection_config();
        config["providers"][0]["introspection"]["cache"] = json!({"max_ttl_seconds": max_ttl_seconds});
        let f = Filter::new(config);
        *f.host.shared.borrow_mut() = before.host.shared.borrow().clone();
        f
    };
    let mut same = lowered(300);
    let action = same.request(2, &headers_of(&get("/mcp", "2YotnFZFEjr1zCsicMWpAA")), true);
    assert_eq!(action, Action::Continue, "the shared answer is used");
    assert!(same.host.take_dispatched().is_empty());
    let mut after = lowered(1);
    after.request(2, &headers_of(&get("/mcp", "2YotnFZFEjr1zCsicMWpAA")), true);
    assert_eq!(after.host.take_dispatched().len(), 1, "kept for longer than max_ttl_seconds now allows: asked again");
}
