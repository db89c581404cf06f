//! The request path: the head decides whether and how the filter takes part; authentication may wait
//! for keys; an MCP POST is held until its whole body is read; then the body is authorized, the session
//! checked, and the upstream credential obtained. Authentication can finish from the root context (a
//! request that waited for keys), so these functions act on whatever context is effective and never
//! hold a `RefCell` borrow across a hostcall that could re-enter the VM.

use super::answer::{self, deny};
use super::exchange;
use super::host::{Buffer, Headers, Map};
use super::introspect::{self, Begun, Verified};
use super::metrics::RuleOutcome;
use super::param_headers;
use super::parked::{Parked, Wait};
use super::pins;
use super::sessions;
use super::state::{Phase, RequestBody, StreamState};
use super::worker::Worker;
use crate::authn::{self, HeadDecision, RequestHead};
use crate::clip::clip;
use crate::http_reply;
use crate::jwks::Refetch;
use crate::jwt::{Principal, Verdict};
use crate::mcp::head::{self, HeadFacts, McpRequest};
use crate::mcp::inspect::{self, AllowedCall, Refusal, Refused};
use crate::mcp::jsonrpc::{HEADER_MISMATCH, ProtocolError};
use crate::mcp::jsonrpc_reply;
use crate::mcp::mirror::MirrorHeaders;
use crate::mcp::rules::Access;
use crate::outcome::{Denial, Reason};
use log::{info, warn};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;

/// The request's headers arrived (`end_of_stream`: they end the request).
pub fn on_headers(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, end_of_stream: bool) -> Action {
    let config = worker.config.clone();
    let host = worker.host.as_ref();
    let Headers { pairs: headers, undecodable, unreadable } = host.headers(Map::RequestHeaders);
    let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());

    // Claim headers are ours to set: a client's copy must never reach the upstream, on any path.
    for mapping in &config.claim_headers {
        if value(&mapping.header).is_some() || undecodable.contains(&mapping.header) {
            host.set_header(Map::RequestHeaders, &mapping.header, None);
        }
    }
    // Without a readable :path, :method and :authority the path would read as "" (not guarded: passed
    // unauthenticated). Envoy rejects such requests before filters today; this filter does not rely on it.
    let unreadable_pseudo = undecodable.iter().find(|n| matches!(n.as_str(), ":path" | ":method" | ":authority"));
    if unreadable || unreadable_pseudo.is_some() {
        warn!("request refused: {} could not be read", unreadable_pseudo.map_or("its header map", |n| n.as_str()));
        let reply = jsonrpc_reply::request_error(400, "Request headers could not be read");
        deny(worker, state, &Denial::new(Reason::InvalidRequest, reply), None);
        return Action::Pause;
    }
    let path = match authn::request_path(&config, value(":path").unwrap_or("")) {
        Ok(path) => path,
        Err(denial) => {
            state.borrow_mut().path = clip(value(":path").unwrap_or("")).into_owned();
            deny(worker, state, &denial, None);
            return Action::Pause;
        }
    };
    let head = RequestHead {
        method: value(":method").unwrap_or(""),
        path: &path,
        token_values: headers.iter().filter(|(n, _)| *n == config.token.header).map(|(_, v)| v.as_str()).collect(),
        origin: value("origin"),
        access_control_request_method: value("access-control-request-method"),
    };
    {
        let mut s = state.borrow_mut();
        s.method = clip(head.method).into_owned();
        s.path = clip(&path).into_owned();
    }
    let token = match authn::decide_head(&config, &head) {
        HeadDecision::Bypass => return pass(state),
        HeadDecision::Preflight => {
            worker.metrics.cors_preflight_bypassed.inc();
            return pass(state);
        }
        HeadDecision::Serve(reply) => {
            answer::send(host, &reply, "mcp_authz_served");
            state.borrow_mut().phase = Phase::Answered;
            return Action::Pause;
        }
        HeadDecision::Deny(denial) => {
            deny(worker, state, &denial, None);
            return Action::Pause;
        }
        HeadDecision::Authenticate(token) => token,
    };
    if let Some(name) = undecodable.first() {
        // The filter cannot read it, so cannot vouch for it: a mirrored MCP header that may not match the
        // body, a token, a session id. Refused rather than forwarded unread.
        deny(worker, state, &undecodable_header(name), None);
        return Action::Pause;
    }
    if authn::is_mcp_path(&config, &path) {
        let facts = HeadFacts {
            method: head.method,
            content_type: value("content-type"),
            content_encoding: value("content-encoding"),
            content_length: value("content-length"),
            end_of_stream,
        };
        match head::classify(&facts, config.mcp.max_body_bytes) {
            Ok(McpRequest::Post) => {
                let mut s = state.borrow_mut();
                s.body = if end_of_stream { RequestBody::Complete(Vec::new()) } else { RequestBody::Awaited };
                s.mirror = MirrorHeaders::of(&headers);
            }
            Ok(McpRequest::NoBody) => {
                state.borrow_mut().event_stream = head.method == "GET" && config.mcp.filter_lists;
            }
            Err(denial) => {
                deny(worker, state, &denial, None);
                return Action::Pause;
            }
        }
        if config.mcp.filter_lists && value("accept-encoding").is_some() {
            // Every response on an MCP path is read for lists (`list_scan`): it must arrive readable.
            host.set_header(Map::RequestHeaders, "accept-encoding", None);
        }
        let mut s = state.borrow_mut();
        s.mcp_path = true;
        s.endpoint = Rc::from(path.as_str());
        // Read whatever `sessions.bind` says: account linking recognizes URL-capable sessions by it.
        s.session_id = value("mcp-session-id").map(str::to_string);
    }
    let token: Rc<str> = Rc::from(token);
    let awaits_body = {
        let mut s = state.borrow_mut();
        s.token = Some(token.clone());
        matches!(s.body, RequestBody::Awaited)
    };
    // One clock read per request head: the body deadline and the token's time checks share it.
    let now = worker.now_ms();
    if awaits_body {
        // Without allow_on_headers_stop_iteration Envoy never delivers the body; the drain then answers
        // 408 instead of letting the request hang.
        worker.parked.park(Parked {
            context_id: state.borrow().context_id,
            stream: Rc::downgrade(state),
            deadline_ms: now + config.mcp.body_timeout_ms,
            wait: Wait::Body,
        });
    }
    authenticate(worker, state, &token, false, now)
}

/// 400 for a header value that is not UTF-8: -32020 (HeaderMismatch: "a header value contains invalid
/// characters") for MCP's own headers, -32600 for the others.
fn undecodable_header(name: &str) -> Denial {
    let message = format!("Header {:?} is not valid UTF-8", clip(name));
    if name.starts_with("mcp-") {
        let error = ProtocolError::new(400, HEADER_MISMATCH, format!("Header mismatch: {message}"));
        Denial::new(Reason::HeaderMismatch, jsonrpc_reply::protocol_error(&error))
    } else {
        Denial::new(Reason::InvalidRequest, jsonrpc_reply::request_error(400, &message))
    }
}

fn pass(state: &RefCell<StreamState>) -> Action {
    state.borrow_mut().phase = Phase::Passed;
    Action::Continue
}

/// Body frames and trailers: hold until decided; at the end of the request, decide on the body.
pub fn on_data(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, body_size: usize, end_of_stream: bool) -> Action {
    let (phase, inspected, authenticated) = {
        let s = state.borrow();
        (s.phase, s.body.inspected(), s.principal.is_some())
    };
    if phase.settled() {
        return Action::Continue;
    }
    if !inspected {
        // Still deciding (keys being fetched, or the upstream credential being obtained): the frames
        // wait with the held headers. Continuing here would release the headers too, undecided.
        return Action::Pause;
    }
    let max = worker.config.mcp.max_body_bytes;
    if body_size > max {
        let reply = jsonrpc_reply::request_error(413, &format!("Request body exceeds {max} bytes"));
        deny(worker, state, &Denial::new(Reason::BodyTooLarge, reply), None);
        return Action::Pause;
    }
    if !end_of_stream {
        return Action::Pause; // Envoy keeps buffering; the decision needs the whole body.
    }
    let body = worker.host.buffer(Buffer::RequestBody, 0, body_size);
    let context_id = {
        let mut s = state.borrow_mut();
        s.body = RequestBody::Complete(body);
        s.context_id
    };
    // Out of the queue now rather than at the next tick: at high rates the entries would pile up and
    // every park would scan them.
    worker.parked.body_arrived(context_id);
    if authenticated { proceed(worker, state, false) } else { Action::Pause }
}

/// Trailers end the request like a final body frame does. The SDK's default answer (Continue) would
/// release held headers and body undecided, so an undecided request waits here too.
pub fn on_trailers(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>) -> Action {
    let size = worker.config.mcp.max_body_bytes + 1;
    let buffered = worker.host.buffer(Buffer::RequestBody, 0, size).len();
    on_data(worker, state, buffered, true)
}

/// Verifies the stream's token and acts: allow, deny, or hold for keys. `held`: the request is paused
/// and must be resumed if it may go on (true when called from the root context). `now`: milliseconds.
pub fn authenticate(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    token: &str,
    held: bool,
    now: u64,
) -> Action {
    let config = worker.config.clone();
    if let Some(provider) = config.introspecting(token) {
        return match introspect::authenticate(worker, state, token, provider) {
            Begun::Verified(principal) => authenticated(worker, state, principal, token, held),
            Begun::Pending => Action::Pause,
        };
    }
    let host = worker.host.as_ref();
    let mut verdict = worker.authn.borrow_mut().authenticate(token, (now / 1000) as i64);
    if let Verdict::UnknownKey { provider } | Verdict::KeysNotLoaded { provider } = verdict
        && worker.keys.sync_now(host, &worker.authn, provider)
    {
        // Another VM had already loaded a newer key set (after a rotation) that this worker would only
        // pick up on its next tick: use it now instead of holding the request or asking for an early
        // fetch that would spend the unknown-kid refetch budget for nothing.
        verdict = worker.authn.borrow_mut().authenticate(token, (now / 1000) as i64);
    }
    match &verdict {
        Verdict::Verified { cached: true, .. } => worker.metrics.jwt_cache_hit.inc(),
        Verdict::Verified { cached: false, .. } | Verdict::Rejected(_) => worker.metrics.jwt_cache_miss.inc(),
        Verdict::RejectedAgain(_) => worker.metrics.jwt_refused_cache_hit.inc(),
        _ => {}
    }
    let (provider, unknown_key) = match verdict {
        Verdict::Verified { principal, .. } => return authenticated(worker, state, principal, token, held),
        Verdict::Rejected(why) | Verdict::RejectedAgain(why) => {
            let denial = Denial::new(Reason::Token(why), http_reply::invalid_token(&config.challenge, why));
            deny(worker, state, &denial, Some(token));
            return Action::Pause;
        }
        Verdict::KeysNotLoaded { provider } => (provider, false),
        Verdict::UnknownKey { provider } => (provider, true),
    };
    // Keys are missing or may have rotated: hold the request.
    if unknown_key && worker.keys.request_refetch(host, &worker.metrics, provider, now) == Refetch::RateLimited {
        deny(worker, state, &authn::give_up(&config.challenge, true, true), Some(token));
        return Action::Pause;
    }
    let deadline = *state.borrow_mut().keys_deadline_ms.get_or_insert(now + config.jwks_wait_timeout_ms);
    if !held {
        worker.metrics.held_for_keys.inc();
    }
    worker.parked.park(Parked {
        context_id: state.borrow().context_id,
        stream: Rc::downgrade(state),
        deadline_ms: deadline,
        wait: Wait::Keys { provider, unknown_key, completed_at_start: worker.keys.completed_fetches(provider) },
    });
    Action::Pause
}

/// Goes on with requests whose tokens were introspected while they were held (each under its context).
pub(super) fn resume_verified(worker: &Rc<Worker>, verified: Vec<Verified>) {
    for v in verified {
        let token = v.stream.borrow().token.clone();
        // An answer may come after the stream was answered (its body timed out, say): leave it alone.
        if let Some(token) = token
            && !v.stream.borrow().phase.settled()
            && worker.host.enter(v.context_id)
        {
            authenticated(worker, &v.stream, v.principal, &token, true);
        }
    }
}

/// The token is verified (or introspected): identity headers for the upstream, the session check, then
/// the body.
pub(super) fn authenticated(
    worker: &Rc<Worker>,
    state: &Rc<RefCell<StreamState>>,
    principal: Rc<Principal>,
    token: &str,
    held: bool,
) -> Action {
    let config = &worker.config;
    match authn::claim_headers(config, &principal) {
        Ok(headers) => {
            for (name, value) in headers {
                worker.host.set_header(Map::RequestHeaders, name, value.as_deref());
            }
        }
        Err(why) => {
            let denial = Denial::new(Reason::Token(why), http_reply::invalid_token(&config.challenge, why));
            deny(worker, state, &denial, Some(token));
            return Action::Pause;
        }
    }
    if let Some(denial) = check_session(worker, state, &principal) {
        deny(worker, state, &denial, None);
        return Action::Pause;
    }
    {
        let mut s = state.borrow_mut();
        s.keys_deadline_ms = None;
        if !config.decision_export.is_empty() {
            s.decided.subject = principal.subject.clone();
            s.decided.client =
                ["azp", "client_id"].iter().find_map(|c| principal.claim(c)?.as_str().map(str::to_string));
        }
        s.principal = Some(principal);
    }
    proceed(worker, state, held)
}

/// Called once the caller is authenticated: lets the request go, or decides on its body once that is
/// complete. Returns the action for the current callback; resumes the stream itself when `held`.
fn proceed(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, held: bool) -> Action {
    let body = {
        let mut s = state.borrow_mut();
        match std::mem::take(&mut s.body) {
            RequestBody::Complete(body) => {
                s.body = RequestBody::Taken;
                Some(body)
            }
            RequestBody::Ignored => None,
            other => {
                s.body = other;
                return Action::Pause; // the body callback will decide
            }
        }
    };
    let (calls, body) = match body {
        None => (Vec::new(), None),
        Some(body) => match decide_body(worker, state, &body) {
            Some(calls) => (calls, Some(body)),
            None => return Action::Pause,
        },
    };
    exchange::obtain(worker, state, &calls, body, held)
}

/// The caller's fingerprint for session bindings: the verified issuer and subject.
pub fn caller(worker: &Worker, principal: &Principal) -> String {
    let issuer = worker.config.providers.get(principal.provider).map_or("", |p| p.issuer.as_str());
    crate::mcp::sessions::caller_fingerprint(issuer, principal.subject.as_deref().unwrap_or(""))
}

/// A request that names an MCP session may go on only for the caller the session was issued to.
fn check_session(worker: &Worker, state: &RefCell<StreamState>, principal: &Principal) -> Option<Denial> {
    let policy = &worker.config.mcp.sessions;
    if !policy.bind {
        return None;
    }
    let session_id = state.borrow().session_id.clone()?;
    match sessions::check(worker.host.as_ref(), policy, &session_id, &caller(worker, principal), worker.now_ms()) {
        sessions::Access::Allow => None,
        sessions::Access::NotFound => Some(Denial::new(Reason::SessionNotFound, jsonrpc_reply::session_not_found())),
        sessions::Access::OtherCaller => Some(Denial::new(Reason::SessionNotOwned, jsonrpc_reply::session_not_owned())),
    }
}

/// Authorizes the body; on refusal sends the answer. Returns the authorized calls, or None if refused.
fn decide_body(worker: &Worker, state: &RefCell<StreamState>, body: &[u8]) -> Option<Vec<AllowedCall>> {
    let config = &worker.config;
    let (principal, mirror, endpoint) = {
        let s = state.borrow();
        (s.principal.clone(), s.mirror.clone(), s.endpoint.clone())
    };
    let principal = principal?;
    let host = worker.host.as_ref();
    let changed = |name: &str| config.mcp.tool_pins.as_ref().is_some_and(|p| pins::definition_changed(host, p, name));
    let policy = &config.mcp.policy;
    let declared = |name: &str| param_headers::declared(host, &config.mcp, &endpoint, name);
    match inspect::inspect(body, &mirror, policy, &principal, config.mcp.filter_lists, &changed, &declared) {
        Ok(authorized) => {
            for call in &authorized.calls {
                worker.metrics.count_mcp(true, &call.method, call.target.as_deref());
                worker.metrics.count_rule(call.rule, RuleOutcome::Allowed);
                if let Some((access, rule)) = &call.would_deny {
                    shadow_refusal(worker, state, &principal, call, access, *rule);
                }
            }
            let mut s = state.borrow_mut();
            if let Some(call) = authorized.calls.first().filter(|_| !config.decision_export.is_empty()) {
                s.decided.method = Some(call.method.clone());
                s.decided.target = call.target.clone();
                if s.decided.rule.is_none() {
                    s.decided.rule = call.rule.map(|i| policy.rules[i].label.clone());
                }
            }
            s.lists = authorized.lists;
            Some(authorized.calls)
        }
        Err(Refusal::Protocol(e)) => {
            deny(worker, state, &Denial::new(e.reason(), jsonrpc_reply::protocol_error(&e)), None);
            None
        }
        Err(Refusal::Forbidden { refused, others, batch }) => {
            for r in &refused {
                worker.metrics.count_mcp(false, &r.method, r.target.as_deref());
                worker.metrics.count_rule(r.rule, RuleOutcome::Denied);
                info!(
                    "forbidden sub={:?} method={:?} name={:?} {}",
                    clip(principal.subject.as_deref().unwrap_or("-")),
                    clip(&r.method),
                    clip(r.target.as_deref().unwrap_or("-")),
                    refusal_detail(&r.access)
                );
            }
            let reason = Refused::reason(&refused);
            worker.metrics.count_denial(reason);
            {
                let mut s = state.borrow_mut();
                s.phase = Phase::Answered;
                let first = &refused[0];
                s.decided.method = Some(first.method.clone());
                s.decided.target = first.target.clone();
                s.decided.rule = first.rule.map(|i| policy.rules[i].label.clone());
                s.decided.allowed = Some(false);
                s.decided.reason = Some(reason.name());
            }
            let reply = jsonrpc_reply::forbidden(&config.challenge, &refused, &others, batch);
            answer::refuse(worker, state, &reply, reason.name());
            None
        }
    }
}

/// What a refusal's log line says besides who and what: never an argument's value.
fn refusal_detail(access: &Access) -> String {
    match access {
        Access::InsufficientScope { missing, rule, .. } => {
            format!("missing_scopes={:?} rule={rule}", missing.join(" "))
        }
        Access::Denied { why } => format!("why={why:?}"),
        Access::ArgumentNotAllowed { argument, rule } => format!("argument={:?} rule={rule}", clip(argument)),
        Access::DefinitionChanged => "why=\"tool definition changed since it was pinned\"".into(),
        Access::Allow => String::new(),
    }
}

/// A shadow rule (or the shadow policy) would have refused an allowed call: reported, not enforced.
fn shadow_refusal(
    worker: &Worker,
    state: &RefCell<StreamState>,
    principal: &Principal,
    call: &AllowedCall,
    access: &Access,
    rule: Option<usize>,
) {
    worker.metrics.shadow_would_deny.inc();
    worker.metrics.count_rule(rule, RuleOutcome::WouldDeny);
    info!(
        "shadow: would deny sub={:?} method={:?} name={:?} {}",
        clip(principal.subject.as_deref().unwrap_or("-")),
        clip(&call.method),
        clip(call.target.as_deref().unwrap_or("-")),
        refusal_detail(access)
    );
    let mut s = state.borrow_mut();
    if !s.decided.shadow {
        s.decided.shadow = true;
        s.decided.reason = access.reason().map(|r| r.name());
        s.decided.rule = rule.map(|i| worker.config.mcp.policy.rules[i].label.clone());
    }
}
