//! The response path, for requests the filter let through to an MCP endpoint: the session the upstream
//! issued is bound to the caller, and every JSON or SSE answer is read for list results to trim
//! (`crate::mcp::lists`, `crate::mcp::list_scan`), whatever request it answers.

use super::host::{Buffer, Headers, Map};
use super::param_headers;
use super::pins;
use super::request::caller;
use super::sessions;
use super::state::{Phase, ResponseMode, StreamState};
use super::worker::Worker;
use crate::mcp::list_scan::ListScan;
use crate::mcp::lists::{self, JsonBody, ListFilter, SseRewriter};
use log::warn;
use proxy_wasm::types::Action;
use serde_json::Value;
use std::cell::RefCell;

/// Longest JSON response held whole before it is forwarded (a list found in it is trimmed exactly); a
/// longer one goes out as it comes, scanned, and is cut where a list would begin. Envoy's default buffer
/// limit per connection is 1 MiB: holding more could make Envoy reset the response.
pub const MAX_HELD_RESPONSE_BYTES: usize = 64 * 1024;

/// What the response path reads of the upstream's response headers.
struct ResponseHead<'a> {
    status: u16,
    session_id: Option<&'a str>,
    content_type: &'a str,
    content_length: Option<&'a str>,
    /// `Content-Encoding` other than identity, or a `Content-Type`/`Content-Encoding` that is not even
    /// UTF-8: the body cannot be read, so it is replaced rather than passed unchecked.
    encoded: bool,
}

impl<'a> ResponseHead<'a> {
    fn of(headers: &'a Headers) -> ResponseHead<'a> {
        let value = |name: &str| headers.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let unreadable =
            headers.unreadable || headers.undecodable.iter().any(|n| n == "content-type" || n == "content-encoding");
        ResponseHead {
            status: value(":status").and_then(|s| s.parse().ok()).unwrap_or(0),
            session_id: value("mcp-session-id"),
            content_type: value("content-type").unwrap_or(""),
            content_length: value("content-length"),
            encoded: unreadable
                || value("content-encoding").is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")),
        }
    }
}

pub fn on_headers(worker: &Worker, state: &RefCell<StreamState>) -> Action {
    let (read, list_request, event_stream) = {
        let s = state.borrow();
        (s.phase == Phase::Forwarded && s.mcp_path, !s.lists.is_empty(), s.event_stream)
    };
    if !read {
        return Action::Continue; // not an MCP endpoint, or the filter's own answer
    }
    let host = worker.host.as_ref();
    // One hostcall for the whole map: each single-header read would cross into Envoy again.
    let headers = host.headers(Map::ResponseHeaders);
    let response = ResponseHead::of(&headers);
    learn_session(worker, state, &response);
    super::link::remember_session(worker, state, response.session_id);
    if !worker.config.mcp.filter_lists {
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
        host.set_header(Map::ResponseHeaders, "content-length", None);
    }
    if matches!(mode, ResponseMode::Replace) {
        host.set_header(Map::ResponseHeaders, "content-encoding", None);
        host.set_header(Map::ResponseHeaders, "content-type", Some("application/json"));
    }
    state.borrow_mut().response = mode;
    Action::Continue
}

/// The upstream's answer names a session: it is the caller's from now on. A `DELETE` that the upstream
/// accepted ends the session's binding.
fn learn_session(worker: &Worker, state: &RefCell<StreamState>, response: &ResponseHead) {
    let policy = &worker.config.mcp.sessions;
    if !policy.bind {
        return;
    }
    let (asked, principal, method) = {
        let s = state.borrow();
        (s.session_id.clone(), s.principal.clone(), s.method.clone())
    };
    let Some(principal) = principal else { return };
    let host = worker.host.as_ref();
    if let Some(asked) = &asked
        && method == "DELETE"
        && (200..300).contains(&response.status)
    {
        sessions::unbind(host, policy, asked);
        return;
    }
    let Some(issued) = response.session_id else { return };
    if asked.as_deref() == Some(issued) {
        return; // the session the request named, already checked (and refreshed) for this caller
    }
    if !sessions::bind(host, policy, issued, &caller(worker, &principal), worker.now_ms()) {
        warn!("could not record the owner of a new MCP session in shared data");
    }
}

/// A buffered JSON list response that ends with trailers is finished here; the default (Continue)
/// would send it untrimmed.
pub fn on_trailers(worker: &Worker, state: &RefCell<StreamState>) -> Action {
    if !matches!(state.borrow().response, ResponseMode::Json) {
        return Action::Continue;
    }
    let size = worker.config.mcp.max_list_response_bytes + 1;
    let buffered = worker.host.buffer(Buffer::ResponseBody, 0, size).len();
    on_body(worker, state, buffered, true)
}

pub fn on_body(worker: &Worker, state: &RefCell<StreamState>, body_size: usize, end_of_stream: bool) -> Action {
    let host = worker.host.as_ref();
    let config = &worker.config;
    let mut state = state.borrow_mut();
    let state = &mut *state;
    let Some(principal) = state.principal.clone() else { return Action::Continue };
    let endpoint = state.endpoint.clone();
    let listed = |name: &str, tool: &Value| {
        param_headers::listed(host, &config.mcp, &endpoint, name, tool);
        config.mcp.tool_pins.as_ref().is_none_or(|p| pins::listed(host, &worker.metrics, p, name, tool))
    };
    let mut filter = ListFilter::new(&config.mcp.policy, &principal);
    filter.tool_check = Some(&listed);
    let first_id = state.lists.first().map(|(id, _)| id.clone()).unwrap_or(Value::Null);
    let max = config.mcp.max_list_response_bytes;
    let body = || host.buffer(Buffer::ResponseBody, 0, body_size);
    let replace = |new_body: &[u8]| host.set_buffer(Buffer::ResponseBody, 0, body_size, new_body);
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
