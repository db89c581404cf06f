//! The per-request HTTP context.
//!
//! A request to an MCP endpoint is decided when two things are known: who is calling (authentication,
//! which may wait for keys) and what it asks (the body, which arrives in frames). Either may come last,
//! so both paths end in [`proceed`], which decides once both are there. Authentication may finish from
//! the root context (after `set_effective_context`), so the functions here make hostcalls on whatever
//! context is effective and never hold a `RefCell` borrow across a hostcall that could re-enter the VM.

use super::credentials;
use super::sessions;
use super::worker::{BodyWait, Waiter, Worker};
use super::{fingerprint, now_ms};
use crate::authn::{self, Denial, HeadDecision, Outcome, RequestHead};
use crate::clip::clip;
use crate::jwks::Refetch;
use crate::jwt::{Principal, Verdict};
use crate::mcp::head::{self, HeadFacts, McpRequest};
use crate::mcp::inspect::{self, AllowedCall, MirrorHeaders, Refusal};
use crate::mcp::jsonrpc_reply as mcp_reply;
use crate::mcp::list_scan::ListScan;
use crate::mcp::lists::{self, JsonBody, ListFilter, ListKind, SseRewriter};
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
    /// The request is on an MCP endpoint: its response is read for lists, whatever it answers.
    pub mcp_path: bool,
    /// The `Mcp-Session-Id` the request names (when sessions are bound to callers).
    pub session_id: Option<String>,
    /// The request went upstream (not answered by the filter).
    pub forwarded: bool,
}

/// What the response path reads of the upstream's response headers.
struct ResponseHead<'a> {
    status: u16,
    session_id: Option<&'a str>,
    content_type: &'a str,
    content_length: Option<&'a str>,
    /// `Content-Encoding` other than identity: the body cannot be read.
    encoded: bool,
}

impl<'a> ResponseHead<'a> {
    fn of(headers: &'a [(String, String)]) -> ResponseHead<'a> {
        let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        ResponseHead {
            status: value(":status").and_then(|s| s.parse().ok()).unwrap_or(0),
            session_id: value("mcp-session-id"),
            content_type: value("content-type").unwrap_or(""),
            content_length: value("content-length"),
            encoded: value("content-encoding").is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")),
        }
    }
}

#[derive(Default)]
pub enum ResponseMode {
    #[default]
    Untouched,
    /// `application/json` list response: buffered whole, then trimmed.
    Json,
    /// Any other `application/json` response: scanned for a list result (`list_scan`) while held, up to
    /// [`MAX_HELD_RESPONSE_BYTES`]; one found then turns this into `Json`. A longer response goes out as
    /// it comes, and is cut where a list would begin.
    JsonScan {
        scan: ListScan,
        /// Still held (Envoy buffers it): nothing has gone out yet.
        holding: bool,
        /// The response's `Content-Length`, left in place: what replaces its body keeps that length.
        fixed_length: Option<usize>,
    },
    /// `text/event-stream`: rewritten event by event.
    Sse(SseRewriter),
    /// The response cannot be filtered (compressed, too large): replaced by a JSON-RPC error.
    Replace,
    /// The replacement was sent; what follows is dropped, or blanked with spaces when the response
    /// keeps its `Content-Length` (so the client is not left waiting for bytes that never come).
    Blank { keep_length: bool },
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
    /// The upstream's answer names a session: it is the caller's from now on. A `DELETE` that the
    /// upstream accepted ends the session's binding.
    fn learn_session(&self, response: &ResponseHead) {
        let policy = &self.worker.config.mcp.sessions;
        if !policy.bind {
            return;
        }
        let (asked, principal, method) = {
            let s = self.state.borrow();
            (s.session_id.clone(), s.principal.clone(), s.method.clone())
        };
        let Some(principal) = principal else { return };
        if let Some(asked) = &asked
            && method == "DELETE"
            && (200..300).contains(&response.status)
        {
            sessions::unbind(policy, asked);
            return;
        }
        let Some(issued) = response.session_id else { return };
        if asked.as_deref() == Some(issued) {
            return; // the session the request named, already checked (and refreshed) for this caller
        }
        if !sessions::bind(policy, issued, &caller(&self.worker, &principal), now_ms()) {
            warn!("could not record the owner of a new MCP session in shared data");
        }
    }

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

        let path = match authn::request_path(&config, value(":path").unwrap_or("")) {
            Ok(path) => path,
            Err(denial) => {
                self.state.borrow_mut().path = crate::clip::clip(value(":path").unwrap_or("")).into_owned();
                deny(&worker, &self.state, &denial, None);
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
            let mut state = self.state.borrow_mut();
            state.method = crate::clip::clip(head.method).into_owned();
            state.path = crate::clip::clip(&path).into_owned();
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
            if config.mcp.filter_lists && value("accept-encoding").is_some() {
                // Every response on an MCP path is read for lists (`list_scan`): it must arrive readable.
                self.set_http_request_header("accept-encoding", None);
            }
            let mut state = self.state.borrow_mut();
            state.mcp_path = true;
            if config.mcp.sessions.bind {
                state.session_id = value("mcp-session-id").map(str::to_string);
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
        let (read, list_request, event_stream) = {
            let state = self.state.borrow();
            (state.forwarded && state.mcp_path, !state.lists.is_empty(), state.event_stream)
        };
        if !read {
            return Action::Continue; // not an MCP endpoint, or the filter's own answer
        }
        // One hostcall for the whole map: each single-header read would cross into Envoy again.
        let headers = self.get_http_response_headers();
        let response = ResponseHead::of(&headers);
        self.learn_session(&response);
        if !self.worker.config.mcp.filter_lists {
            return Action::Continue;
        }
        let content_type = response.content_type.to_ascii_lowercase();
        let json = content_type.starts_with("application/json");
        let sse = content_type.starts_with("text/event-stream");
        let mode = if event_stream && !sse {
            ResponseMode::Untouched // 405 or an error page: a GET answers events only as SSE
        } else if response.encoded {
            ResponseMode::Replace
        } else if json && list_request {
            ResponseMode::Json
        } else if json {
            // Left as it is (framing included) unless a list is found: then replaced by a body of the same
            // length, so a `Content-Length` the client already has stays true.
            let fixed_length = response.content_length.and_then(|l| l.parse().ok());
            ResponseMode::JsonScan { scan: ListScan::default(), holding: true, fixed_length }
        } else if sse {
            ResponseMode::Sse(SseRewriter::default())
        } else {
            ResponseMode::Untouched // not a body MCP clients read as JSON-RPC
        };
        let rewrites = !matches!(mode, ResponseMode::Untouched | ResponseMode::JsonScan { .. });
        if rewrites && response.content_length.is_some() {
            self.set_http_response_header("content-length", None);
        }
        if matches!(mode, ResponseMode::Replace) {
            self.set_http_response_header("content-encoding", None);
            self.set_http_response_header("content-type", Some("application/json"));
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
        let body =
            || hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        let replace = |new_body: &[u8]| {
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, new_body);
        };
        let unfilterable = || {
            worker.metrics.response_replaced.inc();
            lists::unfilterable(&first_id).to_string().into_bytes()
        };
        match &mut state.response {
            ResponseMode::Untouched => Action::Continue,
            ResponseMode::Blank { keep_length } => {
                replace(&same_length(Vec::new(), body_size, *keep_length));
                Action::Continue
            }
            ResponseMode::JsonScan { scan, holding, fixed_length } => {
                // While held, the buffer is the whole response so far; after, each call has its own chunk.
                let buffer = body();
                let base = if *holding { 0 } else { scan.offset() };
                let unread = &buffer[scan.offset().saturating_sub(base).min(buffer.len())..];
                scan.feed(unread);
                let keep_length = fixed_length.is_some();
                let fitted = |new_body: Vec<u8>| same_length(new_body, buffer.len(), keep_length);
                if !*holding {
                    let Some(stop) = scan.stop() else { return Action::Continue };
                    warn!("a list appeared in a response after part of it was forwarded; the response is cut there");
                    let cut = stop.at().saturating_sub(base).min(buffer.len());
                    replace(&fitted(buffer[..cut].to_vec()));
                    worker.metrics.response_replaced.inc();
                    state.response = ResponseMode::Blank { keep_length };
                    Action::Continue
                } else if end_of_stream {
                    if scan.may_hold_list()
                        && let Some(new_body) = trimmed_json(&filter, &buffer, unfilterable)
                    {
                        replace(&fitted(new_body));
                    }
                    Action::Continue
                } else if scan.stop().is_some() {
                    // A list (or what is not JSON) in the answer to another request: held whole, then trimmed.
                    if body_size <= max {
                        return Action::Pause;
                    }
                    replace(&fitted(unfilterable()));
                    state.response = ResponseMode::Blank { keep_length };
                    Action::Continue
                } else if body_size <= max.min(MAX_HELD_RESPONSE_BYTES) {
                    Action::Pause
                } else {
                    *holding = false; // too large to hold: what was held goes out, the rest as it comes
                    Action::Continue
                }
            }
            ResponseMode::Json if body_size <= max && !end_of_stream => Action::Pause,
            ResponseMode::Json if body_size <= max => {
                if let Some(new_body) = trimmed_json(&filter, &body(), unfilterable) {
                    replace(&new_body);
                }
                Action::Continue
            }
            ResponseMode::Json | ResponseMode::Replace => {
                warn!("a list response could not be filtered ({body_size} bytes, or compressed); replaced by an error");
                replace(&unfilterable());
                state.response = ResponseMode::Blank { keep_length: false };
                Action::Continue
            }
            ResponseMode::Sse(rewriter) => {
                let out = rewriter.feed(&body(), end_of_stream, &filter, max);
                replace(&out);
                Action::Continue
            }
        }
    }
}

/// Longest JSON response held whole before it is forwarded (a list found in it is trimmed exactly); a
/// longer one goes out as it comes, scanned, and is cut where a list would begin. Envoy's default buffer
/// limit per connection is 1 MiB: holding more could make Envoy reset the response.
const MAX_HELD_RESPONSE_BYTES: usize = 64 * 1024;

/// `new_body` as a body of `length` bytes when the response keeps its `Content-Length`: padded with
/// spaces (JSON allows trailing whitespace), or only spaces if it does not fit (the client then reads
/// nothing, which is what a refused list must give). Otherwise as it is.
fn same_length(mut new_body: Vec<u8>, length: usize, keep_length: bool) -> Vec<u8> {
    if !keep_length {
        return new_body;
    }
    if new_body.len() > length {
        new_body.clear();
    }
    new_body.resize(length, b' ');
    new_body
}

/// The body to send instead of a whole JSON response that may hold a list: trimmed, or the error from
/// `unfilterable` when it cannot be read. None: send it as it is.
fn trimmed_json(filter: &ListFilter, body: &[u8], unfilterable: impl FnOnce() -> Vec<u8>) -> Option<Vec<u8>> {
    match filter.json_body(body) {
        JsonBody::Trimmed(trimmed) => Some(trimmed),
        JsonBody::Unchanged => None,
        JsonBody::Unreadable => Some(unfilterable()), // not JSON: it cannot be checked (fail closed)
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
                if let Some(denial) = check_session(worker, state, &principal) {
                    deny(worker, state, &denial, None);
                    return Action::Pause;
                }
                {
                    let mut s = state.borrow_mut();
                    s.deadline_ms = None;
                    s.principal = Some(principal);
                }
                proceed(worker, state, held)
            }
            Err(why) => {
                let denial =
                    Denial { reason: why.code(), reply: crate::http_reply::invalid_token(&config.challenge, why) };
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

/// The caller's fingerprint for session bindings: the verified issuer and subject.
fn caller(worker: &Worker, principal: &Principal) -> String {
    let issuer = worker.config.providers.get(principal.provider).map_or("", |p| p.issuer.as_str());
    crate::mcp::sessions::caller_fingerprint(issuer, principal.subject.as_deref().unwrap_or(""))
}

/// A request that names an MCP session may go on only for the caller the session was issued to.
fn check_session(worker: &Worker, state: &RefCell<StreamState>, principal: &Principal) -> Option<Denial> {
    let session_id = state.borrow().session_id.clone()?;
    let policy = &worker.config.mcp.sessions;
    match sessions::check(policy, &session_id, &caller(worker, principal), now_ms()) {
        sessions::Access::Allow => None,
        sessions::Access::NotFound => {
            Some(Denial { reason: mcp_reply::REASON_SESSION_NOT_FOUND, reply: mcp_reply::session_not_found() })
        }
        sessions::Access::OtherCaller => {
            Some(Denial { reason: mcp_reply::REASON_SESSION_NOT_OWNED, reply: mcp_reply::session_not_owned() })
        }
    }
}

/// Lets the request go: counts it and resumes it when it was held.
pub fn finish(worker: &Worker, state: &RefCell<StreamState>, held: bool) -> Action {
    worker.metrics.allowed.inc();
    {
        let mut s = state.borrow_mut();
        s.settled = true;
        s.forwarded = true;
    }
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
                    clip(principal.subject.as_deref().unwrap_or("-")),
                    clip(&r.method),
                    clip(r.target.as_deref().unwrap_or("-"))
                );
            }
            let reason =
                if refused.iter().any(|r| matches!(r.access, crate::mcp::rules::Access::InsufficientScope { .. })) {
                    "insufficient_scope"
                } else {
                    "access_denied"
                };
            let reply = mcp_reply::forbidden(&config.challenge, &refused, &others, batch);
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

pub(crate) fn send(reply: &crate::http_reply::LocalReply) {
    let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    if hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes())).is_err() {
        warn!("could not send local reply {}", reply.status);
    }
}
