//! The per-request HTTP context.
//!
//! A request to an MCP endpoint is decided when two things are known: who is calling (authentication,
//! which may wait for keys) and what it asks (the body, which arrives in frames). Either may come last,
//! so both paths end in [`proceed`], which decides once both are there. Authentication may finish from
//! the root context (after `set_effective_context`), so the functions here make hostcalls on whatever
//! context is effective and never hold a `RefCell` borrow across a hostcall that could re-enter the VM.

use super::credentials;
use super::worker::{BodyWait, Waiter, Worker};
use super::{fingerprint, now_ms};
use crate::authn::{self, Denial, HeadDecision, Outcome, RequestHead};
use crate::jwks::Refetch;
use crate::jwt::{Principal, Verdict};
use crate::mcp::head::{self, HeadFacts, McpRequest};
use crate::mcp::inspect::{self, AllowedCall, MirrorHeaders, Refusal};
use crate::mcp::lists::{self, JsonBody, ListFilter, ListKind, SseRewriter};
use crate::mcp::reply as mcp_reply;
use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Default)]
pub struct StreamState {
    pub context_id: u32,
    pub token: Option<Rc<str>>,
    pub method: String,
    /// Path without query, for logs.
    pub path: String,
    /// Set when the request first waits for keys; waiting never extends it.
    pub deadline_ms: Option<u64>,
    /// The body must be read and authorized before the request may go on.
    pub inspect_body: bool,
    pub principal: Option<Rc<Principal>>,
    /// The complete body, when it arrived before authentication finished.
    pub body: Option<Vec<u8>>,
    /// The request was let through (or answered): nothing is pending any more.
    pub settled: bool,
    /// The whole request body has arrived (the body timeout no longer applies).
    pub body_complete: bool,
    pub mirror: MirrorHeaders,
    /// List requests whose responses are trimmed for this caller.
    pub lists: Vec<(Value, ListKind)>,
    /// A GET on an MCP path: the server's event stream. Resumed with `Last-Event-ID` (or polled, when a
    /// server closes POST streams early), it replays answers to earlier requests, lists among them, so
    /// its events are trimmed like a list response's.
    pub event_stream: bool,
    pub response: ResponseMode,
    /// The upstream credential being obtained for this request.
    pub exchange: Option<credentials::Pending>,
}

#[derive(Default)]
pub enum ResponseMode {
    #[default]
    Untouched,
    /// `application/json` list response: buffered whole, then trimmed.
    Json,
    /// `text/event-stream`: rewritten event by event.
    Sse(SseRewriter),
    /// The response cannot be filtered (compressed, too large): replaced by a JSON-RPC error.
    Replace,
    /// The replacement was sent; what follows is dropped.
    Drop,
}

pub struct Stream {
    context_id: u32,
    worker: Rc<Worker>,
    state: Rc<RefCell<StreamState>>,
}

impl Stream {
    pub fn new(context_id: u32, worker: Rc<Worker>) -> Stream {
        let state = StreamState { context_id, ..Default::default() };
        Stream { context_id, worker, state: Rc::new(RefCell::new(state)) }
    }
}

impl Stream {
    /// Body frames and trailers: hold until decided; at the end of the request, decide on the body.
    fn request_data(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (settled, inspect_body, authenticated) = {
            let s = self.state.borrow();
            (s.settled, s.inspect_body, s.principal.is_some())
        };
        if settled {
            return Action::Continue;
        }
        if !inspect_body {
            // Still deciding (keys being fetched, or the upstream credential being obtained): the frames
            // wait with the held headers. Continuing here would release the headers too, undecided.
            return Action::Pause;
        }
        let max = self.worker.config.mcp.max_body_bytes;
        if body_size > max {
            let reply = mcp_reply::request_error(413, &format!("Request body exceeds {max} bytes"));
            deny(&self.worker, &self.state, &Denial { reason: head::REASON_TOO_LARGE, reply }, None);
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause; // Envoy keeps buffering; the decision needs the whole body.
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        {
            let mut s = self.state.borrow_mut();
            s.body = Some(body);
            s.body_complete = true;
        }
        if authenticated { proceed(&self.worker, &self.state, false) } else { Action::Pause }
    }
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        credentials::on_callout(&self.worker, token_id, num_headers, body_size);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A leader that goes away takes its callout with it: release the requests waiting on it.
        credentials::abandon(&self.worker, &self.state);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let worker = self.worker.clone();
        let config = worker.config.clone();
        let headers = self.get_http_request_headers();
        let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let values =
            |name: &str| headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.to_string()).collect::<Vec<_>>();

        // Claim headers are ours to set: a client's copy must never reach the upstream, on any path.
        for mapping in &config.claim_headers {
            if value(&mapping.header).is_some() {
                self.set_http_request_header(&mapping.header, None);
            }
        }

        let head = RequestHead {
            method: value(":method").unwrap_or(""),
            path: value(":path").unwrap_or(""),
            token_values: headers.iter().filter(|(n, _)| *n == config.token.header).map(|(_, v)| v.as_str()).collect(),
            origin: value("origin"),
            access_control_request_method: value("access-control-request-method"),
        };
        {
            let mut state = self.state.borrow_mut();
            state.method = head.method.to_string();
            state.path = head.path.split('?').next().unwrap_or("").to_string();
        }
        let token = match authn::decide_head(&config, &head) {
            HeadDecision::Bypass => return settle(&self.state, Action::Continue),
            HeadDecision::Preflight => {
                worker.metrics.cors_preflight_bypassed.inc();
                return settle(&self.state, Action::Continue);
            }
            HeadDecision::Serve(reply) => {
                send(&reply);
                return settle(&self.state, Action::Pause);
            }
            HeadDecision::Deny(denial) => {
                deny(&worker, &self.state, &denial, None);
                return Action::Pause;
            }
            HeadDecision::Authenticate(token) => token,
        };
        let path = self.state.borrow().path.clone();
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
                    let mut state = self.state.borrow_mut();
                    state.inspect_body = true;
                    state.mirror = MirrorHeaders { method: values("mcp-method"), name: values("mcp-name") };
                    if end_of_stream {
                        state.body = Some(Vec::new());
                    }
                }
                Ok(McpRequest::NoBody) => {
                    self.state.borrow_mut().event_stream = head.method == "GET" && config.mcp.filter_lists;
                }
                Err((reason, reply)) => {
                    deny(&worker, &self.state, &Denial { reason, reply }, None);
                    return Action::Pause;
                }
            }
        }
        let token: Rc<str> = Rc::from(token);
        let inspect_body = {
            let mut state = self.state.borrow_mut();
            state.token = Some(token.clone());
            state.inspect_body && state.body.is_none()
        };
        if inspect_body {
            // Without allow_on_headers_stop_iteration Envoy never delivers the body; the root's tick
            // then answers 408 instead of letting the request hang.
            worker.body_waits.borrow_mut().push(BodyWait {
                context_id: self.context_id,
                stream: Rc::downgrade(&self.state),
                deadline_ms: now_ms() + config.mcp.body_timeout_ms,
            });
        }
        authenticate(&worker, self.context_id, &self.state, &token, false)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.request_data(body_size, end_of_stream)
    }

    /// Trailers end the request like a final body frame does. The SDK's default answer (Continue) would
    /// release held headers and body undecided, so an undecided request waits here too.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let size = self.worker.config.mcp.max_body_bytes + 1;
        let buffered = self.get_http_request_body(0, size).map_or(0, |b| b.len());
        self.request_data(buffered, true)
    }
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (list_request, event_stream) = {
            let state = self.state.borrow();
            (!state.lists.is_empty(), state.event_stream)
        };
        if !list_request && !event_stream {
            return Action::Continue;
        }
        let content_type = self.get_http_response_header("content-type").unwrap_or_default().to_ascii_lowercase();
        let sse = content_type.starts_with("text/event-stream");
        let encoded = self
            .get_http_response_header("content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let mode = if event_stream && !sse {
            ResponseMode::Untouched // 405 or an error page: a GET answers events only as SSE
        } else if encoded {
            ResponseMode::Replace
        } else if content_type.starts_with("application/json") {
            ResponseMode::Json
        } else if sse {
            ResponseMode::Sse(SseRewriter::default())
        } else {
            ResponseMode::Untouched // an error page, not a list
        };
        if !matches!(mode, ResponseMode::Untouched) {
            self.set_http_response_header("content-length", None);
            if matches!(mode, ResponseMode::Replace) {
                self.set_http_response_header("content-encoding", None);
                self.set_http_response_header("content-type", Some("application/json"));
            }
        }
        self.state.borrow_mut().response = mode;
        Action::Continue
    }

    /// A buffered JSON list response that ends with trailers is finished here; the default (Continue)
    /// would send it untrimmed.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if !matches!(self.state.borrow().response, ResponseMode::Json) {
            return Action::Continue;
        }
        let size = self.worker.config.mcp.max_list_response_bytes + 1;
        let buffered = self.get_http_response_body(0, size).map_or(0, |b| b.len());
        self.on_http_response_body(buffered, true)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let worker = self.worker.clone();
        let config = &worker.config;
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let Some(principal) = state.principal.clone() else { return Action::Continue };
        let filter = ListFilter { policy: &config.mcp.policy, principal: &principal };
        let first_id = state.lists.first().map(|(id, _)| id.clone()).unwrap_or(Value::Null);
        let max = config.mcp.max_list_response_bytes;
        match &mut state.response {
            ResponseMode::Untouched => Action::Continue,
            ResponseMode::Drop => {
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &[]);
                Action::Continue
            }
            ResponseMode::Json if body_size <= max && !end_of_stream => Action::Pause,
            ResponseMode::Json if body_size <= max => {
                let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let replacement = match filter.json_body(&body) {
                    JsonBody::Trimmed(trimmed) => Some(trimmed),
                    JsonBody::Unchanged => None,
                    // Not JSON: it cannot be checked, so it does not go out (fail closed).
                    JsonBody::Unreadable => Some(lists::unfilterable(&first_id).to_string().into_bytes()),
                };
                if let Some(new_body) = replacement {
                    let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &new_body);
                }
                Action::Continue
            }
            ResponseMode::Json | ResponseMode::Replace => {
                warn!(
                    "response to a list request could not be filtered ({body_size} bytes, or compressed); replaced by an error"
                );
                let error = lists::unfilterable(&first_id).to_string();
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, error.as_bytes());
                state.response = ResponseMode::Drop;
                Action::Continue
            }
            ResponseMode::Sse(rewriter) => {
                let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let out = rewriter.feed(&chunk, end_of_stream, &filter, max);
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out);
                Action::Continue
            }
        }
    }
}

fn settle(state: &RefCell<StreamState>, action: Action) -> Action {
    state.borrow_mut().settled = true;
    action
}

/// Verifies the stream's token and acts: allow, deny, or hold for keys. `held`: the request is paused
/// and must be resumed if it may go on (true when called from the root context).
pub fn authenticate(
    worker: &Rc<Worker>,
    context_id: u32,
    state: &Rc<RefCell<StreamState>>,
    token: &str,
    held: bool,
) -> Action {
    let now = now_ms();
    let mut verdict = worker.authn.borrow_mut().authenticate(token, (now / 1000) as i64);
    if let Verdict::UnknownKey { provider } | Verdict::KeysNotLoaded { provider } = verdict
        && worker.sync_now(provider)
    {
        // Another VM had already loaded a newer key set (after a rotation) that this worker would only
        // pick up on its next tick: use it now instead of holding the request or asking for an early
        // fetch that would spend the unknown-kid refetch budget for nothing.
        verdict = worker.authn.borrow_mut().authenticate(token, (now / 1000) as i64);
    }
    match &verdict {
        Verdict::Verified { cached: true, .. } => worker.metrics.jwt_cache_hit.inc(),
        Verdict::Verified { cached: false, .. } | Verdict::Rejected(_) => worker.metrics.jwt_cache_miss.inc(),
        _ => {}
    }
    let config = worker.config.clone();
    match authn::outcome(&config, verdict) {
        Outcome::Allow(principal) => match authn::claim_headers(&config, &principal) {
            Ok(headers) => {
                for (name, value) in headers {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value.as_deref());
                }
                {
                    let mut s = state.borrow_mut();
                    s.deadline_ms = None;
                    s.principal = Some(principal);
                }
                proceed(worker, state, held)
            }
            Err(why) => {
                let denial = Denial { reason: why.code(), reply: crate::reply::invalid_token(&config, why) };
                deny(worker, state, &denial, Some(token));
                Action::Pause
            }
        },
        Outcome::Deny(denial) => {
            deny(worker, state, &denial, Some(token));
            Action::Pause
        }
        Outcome::Wait { provider, unknown_key } => {
            if unknown_key && worker.request_refetch(provider, now) == Refetch::RateLimited {
                let denial = authn::give_up(&config, true, true);
                deny(worker, state, &denial, Some(token));
                return Action::Pause;
            }
            let deadline = *state.borrow_mut().deadline_ms.get_or_insert(now + config.jwks_wait_timeout_ms);
            if !held {
                worker.metrics.held_for_keys.inc();
            }
            worker.add_waiter(Waiter {
                context_id,
                stream: Rc::downgrade(state),
                provider,
                deadline_ms: deadline,
                unknown_key,
                completed_at_start: worker.completed_fetches(provider),
            });
            Action::Pause
        }
    }
}

/// Called once the caller is authenticated: lets the request go, or decides on its body once that is
/// complete. Returns the action for the current callback; resumes the stream itself when `held`.
fn proceed(worker: &Rc<Worker>, state: &Rc<RefCell<StreamState>>, held: bool) -> Action {
    let (inspect_body, body, context_id) = {
        let mut s = state.borrow_mut();
        (s.inspect_body, s.body.take(), s.context_id)
    };
    let (calls, body) = if !inspect_body {
        (Vec::new(), None)
    } else {
        let Some(body) = body else { return Action::Pause }; // the body callback will decide
        match decide_body(worker, state, &body) {
            Some(calls) => (calls, Some(body)),
            None => return Action::Pause,
        }
    };
    credentials::obtain(worker, context_id, state, &calls, body, held)
}

/// Lets the request go: counts it and resumes it when it was held.
pub fn finish(worker: &Worker, state: &RefCell<StreamState>, held: bool) -> Action {
    worker.metrics.allowed.inc();
    state.borrow_mut().settled = true;
    if held {
        let _ = hostcalls::resume_http_request();
    }
    Action::Continue
}

/// Authorizes the body; on refusal sends the answer. Returns the authorized calls, or None if refused.
fn decide_body(worker: &Worker, state: &RefCell<StreamState>, body: &[u8]) -> Option<Vec<AllowedCall>> {
    let config = &worker.config;
    let (principal, mirror) = {
        let s = state.borrow();
        (s.principal.clone(), s.mirror.clone())
    };
    let principal = principal?;
    match inspect::inspect(body, &mirror, &config.mcp.policy, &principal, config.mcp.filter_lists) {
        Ok(authorized) => {
            for call in &authorized.calls {
                worker.metrics.count_mcp(true, &call.method, call.target.as_deref());
            }
            if !authorized.lists.is_empty() {
                // The list response must be readable to be trimmed.
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "accept-encoding", None);
            }
            state.borrow_mut().lists = authorized.lists;
            Some(authorized.calls)
        }
        Err(Refusal::Protocol(e)) => {
            let reason = match e.code {
                crate::mcp::jsonrpc::PARSE_ERROR => "parse_error",
                crate::mcp::jsonrpc::HEADER_MISMATCH => "header_mismatch",
                crate::mcp::jsonrpc::INVALID_PARAMS => "invalid_params",
                _ => "invalid_request",
            };
            deny(worker, state, &Denial { reason, reply: mcp_reply::protocol_error(&e) }, None);
            None
        }
        Err(Refusal::Forbidden { refused, others, batch }) => {
            for r in &refused {
                worker.metrics.count_mcp(false, &r.method, r.target.as_deref());
                let detail = match &r.access {
                    crate::mcp::rules::Access::InsufficientScope { missing, rule, .. } => {
                        format!("missing_scopes={:?} rule={rule}", missing.join(" "))
                    }
                    crate::mcp::rules::Access::Denied { why } => format!("why={why:?}"),
                    crate::mcp::rules::Access::Allow => String::new(),
                };
                info!(
                    "forbidden sub={:?} method={:?} name={:?} {detail}",
                    principal.subject.as_deref().unwrap_or("-"),
                    r.method,
                    r.target.as_deref().unwrap_or("-")
                );
            }
            let reason =
                if refused.iter().any(|r| matches!(r.access, crate::mcp::rules::Access::InsufficientScope { .. })) {
                    "insufficient_scope"
                } else {
                    "access_denied"
                };
            let reply = mcp_reply::forbidden(config, &refused, &others, batch);
            worker.metrics.count_denial(reason);
            state.borrow_mut().settled = true;
            send(&reply);
            None
        }
    }
}

/// Sends the denial, counts it and logs it (with a token fingerprint, never the token).
pub(crate) fn deny(worker: &Worker, state: &RefCell<StreamState>, denial: &Denial, token: Option<&str>) {
    worker.metrics.count_denial(denial.reason);
    let (method, path) = {
        let mut s = state.borrow_mut();
        s.settled = true;
        (s.method.clone(), s.path.clone())
    };
    let line = format!(
        "denied status={} reason={} method={method} path={path:?} token={}",
        denial.reply.status,
        denial.reason,
        token.map_or_else(|| "-".to_string(), fingerprint)
    );
    if denial.reply.status >= 500 {
        warn!("{line}")
    } else {
        info!("{line}")
    }
    send(&denial.reply);
}

pub(crate) fn send(reply: &crate::reply::LocalReply) {
    let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    if hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes())).is_err() {
        warn!("could not send local reply {}", reply.status);
    }
}
