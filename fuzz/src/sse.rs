//! SSE target: list trimming of upstream responses, as `text/event-stream` (`SseRewriter` over arbitrary
//! chunkings) and as one `application/json` body (`ListFilter::json_body`). Lists are recognised by
//! shape, whatever the id (a resumed stream replays answers to other requests).
//!
//! Input: byte 0 picks the caller (`policy::principal`); byte 1 the chunking (0: one chunk; otherwise
//! pseudo-random chunk sizes up to its low six bits, bit 7: the end of stream comes as an empty chunk);
//! the rest is the response body.
//!
//! Invariants: what a client reads from the output (an SSE parser written from the WHATWG
//! specification, then JSON) never shows it a list entry the policy model hides, in any message's
//! `result`, whether a message or a batch; the output does not depend on how the body was
//! chunked (when no event exceeds the size limit); and past the size limit, the stream still fails closed.

use crate::policy;
use mcp_authz::jwt::Principal;
use mcp_authz::mcp::lists::{JsonBody, ListFilter, SseRewriter};
use serde_json::Value;

pub fn run(data: &[u8]) {
    let [who, chunking, body @ ..] = data else { return };
    let principal = policy::principal(*who);
    let config = policy::config();
    let filter = ListFilter::new(&config.mcp.policy, &principal);

    let unlimited = body.len() + 1;
    let whole = rewrite(body, &[body.len()], false, &filter, unlimited);
    let chunked = rewrite(body, &chunk_sizes(*chunking, body.len()), chunking & 0x80 != 0, &filter, unlimited);
    assert!(whole == chunked, "output depends on chunking:\n{:?}\n{:?}", lossy(&whole), lossy(&chunked));
    check_stream(&whole, &principal);
    let limited = rewrite(body, &chunk_sizes(*chunking, body.len()), false, &filter, 64);
    check_stream(&limited, &principal);

    match filter.json_body(body) {
        JsonBody::Trimmed(out) => check_json(&out, &principal),
        JsonBody::Unchanged => check_json(body, &principal),
        JsonBody::Unreadable => {} // replaced by a JSON-RPC error
    }
}

/// Feeds `body` in chunks of `sizes` (the last chunk ends the stream, or an empty chunk after it does).
fn rewrite(body: &[u8], sizes: &[usize], empty_end: bool, filter: &ListFilter, max_event: usize) -> Vec<u8> {
    let mut rewriter = SseRewriter::default();
    let mut out = Vec::new();
    let mut rest = body;
    for (i, &size) in sizes.iter().enumerate() {
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        rest = after;
        let last = i + 1 == sizes.len();
        out.extend(rewriter.feed(chunk, last && !empty_end, filter, max_event));
    }
    if empty_end {
        out.extend(rewriter.feed(&[], true, filter, max_event));
    }
    out
}

fn chunk_sizes(chunking: u8, len: usize) -> Vec<usize> {
    let max = (chunking & 0x3f) as u32;
    if max == 0 {
        return vec![len];
    }
    let mut state = 0x9e37_79b9u32 ^ chunking as u32;
    let mut sizes = Vec::new();
    let mut total = 0;
    while total < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = 1 + (state % max) as usize;
        sizes.push(size);
        total += size;
    }
    if sizes.is_empty() {
        sizes.push(0);
    }
    sizes
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The events a client dispatches from this stream (HTML Living Standard, "Server-sent events",
/// interpreting an event stream): UTF-8 decoded, one leading BOM dropped, lines ended by CRLF, LF or CR,
/// `data` fields joined by LF, dispatched at a blank line; an unfinished event at the end is dropped.
fn client_events(stream: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stream);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let mut data = String::new();
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let after = &rest[end..];
        rest = after.strip_prefix("\r\n").unwrap_or(&after[1..]);
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                events.push(std::mem::take(&mut data));
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            data.push_str(value);
            data.push('\n');
        }
    }
    events
}

fn check_stream(stream: &[u8], who: &Principal) {
    for data in client_events(stream) {
        if let Ok(message) = serde_json::from_str::<Value>(&data) {
            check_message(&message, who, &data);
        }
    }
}

fn check_json(body: &[u8], who: &Principal) {
    if let Ok(message) = serde_json::from_slice::<Value>(body) {
        check_message(&message, who, &lossy(body));
    }
}

/// A list in any message's result (alone or in a batch) shows only entries the caller may use.
fn check_message(message: &Value, who: &Principal, raw: &str) {
    if let Value::Array(batch) = message {
        batch.iter().for_each(|m| check_message(m, who, raw));
        return;
    }
    for field in ["tools", "prompts", "resources"] {
        check_list(message, field, who, raw);
    }
}

fn check_list(message: &Value, field: &str, who: &Principal, raw: &str) {
    let Some(entries) = message.get("result").and_then(|r| r.get(field)).and_then(Value::as_array) else { return };
    let (method, key) = policy::list_entry_rule(field).expect("a list field");
    for entry in entries {
        let target = entry.get(key).and_then(Value::as_str);
        assert!(
            target.is_some_and(|t| policy::allows(method, Some(t), who)),
            "the client is shown {entry} in its {field} list: {raw:?}"
        );
    }
}
