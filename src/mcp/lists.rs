//! Trimming `tools/list`, `prompts/list` and `resources/list` results to what the caller may use.
//!
//! Responses arrive as one JSON document or as an SSE stream (one JSON-RPC message per event). A list is
//! recognised by its shape, not by the id of the request it answers: any message whose `result` carries a
//! `tools`, `prompts` or `resources` array has each such array trimmed. Ids cannot be relied on, because a
//! resumed stream (`GET` with `Last-Event-ID`, or a server that closes a POST stream and lets the client
//! poll) replays answers to requests the filter saw on another HTTP request, and a server may echo an id
//! in another form. Every other event passes through unchanged and as soon as it is complete. A trimmed
//! result is marked `cacheScope: "private"` (MCP 2026-07-28) so that no cache shares one caller's list
//! with another.

use super::list_scan::{self, ListScan};
use super::rules::{Access, Policy};
use crate::jwt::Principal;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

impl ListKind {
    const ALL: [ListKind; 3] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources];

    pub fn from_method(method: &str) -> Option<ListKind> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            _ => None,
        }
    }

    /// The method whose rules decide whether an entry is visible.
    pub fn call_method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/call",
            ListKind::Prompts => "prompts/get",
            ListKind::Resources => "resources/read",
        }
    }

    fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
        }
    }

    fn key(self) -> &'static str {
        match self {
            ListKind::Tools | ListKind::Prompts => "name",
            ListKind::Resources => "uri",
        }
    }
}

/// What became of a JSON list response.
#[derive(Debug, PartialEq)]
pub enum JsonBody {
    Unchanged,
    Trimmed(Vec<u8>),
    /// Not JSON: it cannot be checked, so it must not go out as it is.
    Unreadable,
}

/// Whether a listed tool (name, definition) may be shown at all, whoever asks: its pin (`pins`).
pub type ToolCheck<'a> = &'a dyn Fn(&str, &Value) -> bool;

/// Whom to trim for.
pub struct ListFilter<'a> {
    pub policy: &'a Policy,
    pub principal: &'a Principal,
    /// Sees every tool the caller is shown (the glue learns `x-mcp-header` parameters there); a tool it
    /// refuses (a definition no longer matching its pin) is hidden from everyone.
    pub tool_check: Option<ToolCheck<'a>>,
}

impl<'a> ListFilter<'a> {
    pub fn new(policy: &'a Policy, principal: &'a Principal) -> ListFilter<'a> {
        ListFilter { policy, principal, tool_check: None }
    }
}

impl ListFilter<'_> {
    /// Trims one JSON-RPC message in place if its result carries a list; returns whether it did.
    ///
    /// Neither `id` nor the absence of `method` is required: a message that is not a well-formed
    /// response but carries a list in `result` is trimmed too, since a lenient client might still read it.
    pub fn apply(&self, message: &mut Value) -> bool {
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else { return false };
        let mut trimmed = false;
        for kind in ListKind::ALL {
            let Some(items) = result.get_mut(kind.field()).and_then(Value::as_array_mut) else { continue };
            items.retain(|item| {
                let target = item.get(kind.key()).and_then(Value::as_str);
                // An entry without a usable name cannot be called by name: hide it.
                target.is_some_and(|t| {
                    self.policy.evaluate(kind.call_method(), Some(t), self.principal) == Access::Allow
                        && (kind != ListKind::Tools || self.tool_check.is_none_or(|check| check(t, item)))
                })
            });
            trimmed = true;
        }
        if trimmed {
            result.insert("cacheScope".into(), json!("private"));
        }
        trimmed
    }

    /// Trims one JSON-RPC document: a message or a batch of them. Returns whether anything was trimmed.
    pub fn apply_document(&self, doc: &mut Value) -> bool {
        match doc {
            Value::Array(items) => items.iter_mut().fold(false, |acc, m| self.apply(m) | acc),
            single => self.apply(single),
        }
    }

    /// A whole `application/json` response body (one message or a batch). Only a body that may hold a
    /// list is parsed, and then strictly: with two `result` members, clients could read either.
    pub fn json_body(&self, body: &[u8]) -> JsonBody {
        if !list_scan::may_hold_list(body) {
            return JsonBody::Unchanged;
        }
        let Ok(mut doc) = crate::json_strict::parse(body) else { return JsonBody::Unreadable };
        let changed = self.apply_document(&mut doc);
        match serde_json::to_vec(&doc) {
            Ok(bytes) if changed => JsonBody::Trimmed(bytes),
            Ok(_) => JsonBody::Unchanged,
            Err(_) => JsonBody::Unreadable,
        }
    }
}

/// The JSON-RPC error that replaces a list response the filter could not inspect (fail closed).
pub fn unfilterable(id: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "Internal error: list response could not be filtered"}})
}

/// UTF-8 byte order mark: an event stream may start with one.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where the reader is in the current line of the event stream.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of the line read yet: a line terminator here ends the event.
    #[default]
    Start,
    /// Reading the field name, up to its colon.
    Field,
    /// Inside a `data` field's value (`space`: an optional space after the colon may still come).
    Data { space: bool },
    /// Inside another field's value, or a comment.
    Other,
}

/// The only field whose value can hold a list.
const DATA: &[u8] = b"data";

/// Incremental SSE rewriter: feed it body chunks, forward what it returns.
///
/// Each event is held until it ends, while its `data` is scanned for a list result (`list_scan`); an
/// event that may hold one is parsed and trimmed, or replaced by a JSON-RPC error if it cannot be read;
/// every other event goes out byte for byte. An event larger than the limit is not held: if no list
/// began in it so far, what was held goes out and the rest follows as it is scanned, and the stream is
/// cut where a list would begin; if one did, the stream ends with an error. So a long tool result passes
/// and a list is never shown untrimmed.
#[derive(Default)]
pub struct SseRewriter {
    failed: bool,
    /// The start of the stream has been checked for a byte order mark.
    past_start: bool,
    /// The first bytes, while they may still be a partial byte order mark.
    start: Vec<u8>,
    /// The current event's bytes not yet forwarded.
    held: Vec<u8>,
    /// The current event is too large to hold: its bytes go out as they are scanned.
    passing: bool,
    line: Line,
    field: [u8; DATA.len()],
    field_len: usize,
    /// The field name is longer than `data` or differs from it.
    field_other: bool,
    data_lines: usize,
    scan: ListScan,
    /// The previous byte was a CR: an LF next completes its line terminator.
    after_cr: bool,
}

impl SseRewriter {
    /// Returns the bytes to forward now. `max_event` bounds what is held.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, filter: &ListFilter, max_event: usize) -> Vec<u8> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        if !self.past_start {
            // Clients drop a BOM that starts the stream (HTML, "interpreting an event stream"). Read as
            // part of the first line, it would hide a `data` field from the scan but not from them. It is
            // forwarded as it came.
            self.start.extend_from_slice(chunk);
            if self.start.len() < BOM.len() && BOM.starts_with(&self.start) && !end_of_stream {
                return out;
            }
            self.past_start = true;
            let start = std::mem::take(&mut self.start);
            let rest = match start.strip_prefix(BOM) {
                Some(rest) => {
                    out.extend_from_slice(BOM);
                    rest
                }
                None => &start[..],
            };
            self.read(rest, filter, max_event, &mut out);
        } else {
            self.read(chunk, filter, max_event, &mut out);
        }
        if end_of_stream && !self.failed {
            // An unfinished event: clients drop it, but it is judged like a finished one all the same.
            self.end_event(filter, &mut out);
        }
        out
    }

    fn read(&mut self, bytes: &[u8], filter: &ListFilter, max_event: usize, out: &mut Vec<u8>) {
        let mut i = 0;
        while i < bytes.len() && !self.failed {
            let b = bytes[i];
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                self.held.push(b);
                i += 1;
                continue;
            }
            match self.line {
                Line::Start | Line::Field => {
                    if self.line == Line::Start {
                        self.field_len = 0;
                        self.field_other = false;
                    }
                    self.held.push(b);
                    i += 1;
                    if b == b'\r' || b == b'\n' {
                        self.after_cr = b == b'\r';
                        if self.line == Line::Start {
                            self.end_event(filter, out);
                        } else {
                            // A field without a colon has an empty value: `data` alone is an empty data line.
                            if self.is_data_field() {
                                self.data_line(b"", max_event, out);
                            }
                            self.line = Line::Start;
                        }
                    } else if b == b':' {
                        self.line = if self.is_data_field() { Line::Data { space: true } } else { Line::Other };
                        if self.line != Line::Other {
                            self.data_line(b"", max_event, out);
                        }
                    } else {
                        self.line = Line::Field;
                        if self.field_len < DATA.len() {
                            self.field[self.field_len] = b;
                            self.field_len += 1;
                        } else {
                            self.field_other = true;
                        }
                    }
                }
                Line::Data { space } => {
                    let mut start = i;
                    if space && b == b' ' {
                        self.held.push(b);
                        start += 1;
                    }
                    self.line = Line::Data { space: false };
                    let end = line_end(bytes, start);
                    self.data_content(&bytes[start..end], max_event, out);
                    i = self.end_line(bytes, end);
                }
                Line::Other => {
                    let end = line_end(bytes, i);
                    self.held.extend_from_slice(&bytes[i..end]);
                    i = self.end_line(bytes, end);
                }
            }
        }
        if !self.passing && !self.failed && self.held.len() > max_event {
            self.too_large_to_hold(out);
        }
        if self.passing && !self.failed {
            out.append(&mut self.held);
        }
    }

    /// The held event grew past the limit: it goes on unheld if no list began in it, else the stream ends.
    fn too_large_to_hold(&mut self, out: &mut Vec<u8>) {
        if self.scan.stop().is_some() {
            self.fail(out); // a list too large to hold and trim
        } else {
            self.passing = true;
            out.append(&mut self.held);
        }
    }

    /// At `at` a line ends (or the chunk does): holds the terminator and returns where reading goes on.
    fn end_line(&mut self, bytes: &[u8], at: usize) -> usize {
        let Some(&terminator) = bytes.get(at) else { return at };
        self.line = Line::Start;
        self.held.push(terminator);
        self.after_cr = terminator == b'\r';
        at + 1
    }

    fn is_data_field(&self) -> bool {
        !self.field_other && &self.field[..self.field_len] == DATA
    }

    /// A `data` line begins: clients join the lines of one event with LF.
    fn data_line(&mut self, content: &[u8], max_event: usize, out: &mut Vec<u8>) {
        if self.data_lines > 0 {
            self.scan.feed(b"\n");
        }
        self.data_lines += 1;
        self.data_content(content, max_event, out);
    }

    /// Bytes of a `data` value: scanned, then held (or, for an event too large to hold, forwarded).
    fn data_content(&mut self, content: &[u8], max_event: usize, out: &mut Vec<u8>) {
        let (held_before, offset_before) = (self.held.len(), self.scan.offset());
        let stop = self.scan.feed(content);
        self.held.extend_from_slice(content);
        if self.passing {
            if let Some(stop) = stop {
                // Too late to trim: what went out holds no list entry; cut where the list begins.
                let cut = held_before + stop.at().saturating_sub(offset_before);
                out.extend_from_slice(&self.held[..cut.min(self.held.len())]);
                self.fail(out);
            }
        } else if self.held.len() > max_event {
            self.too_large_to_hold(out);
        }
    }

    /// Ends the stream with an error event; nothing more goes out.
    fn fail(&mut self, out: &mut Vec<u8>) {
        self.failed = true;
        self.held.clear();
        out.extend_from_slice(b"\n\nevent: message\ndata: ");
        out.extend_from_slice(unfilterable(&Value::Null).to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// The current event ended (or the stream did): forwards it as it is, trimmed, or replaced.
    fn end_event(&mut self, filter: &ListFilter, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        if self.passing || !self.scan.may_hold_list() {
            out.extend_from_slice(&held);
        } else {
            rewrite_event(&held, filter, out);
        }
        self.passing = false;
        self.scan = ListScan::default();
        self.data_lines = 0;
        self.line = Line::Start;
    }
}

/// Where the line that continues at `from` ends: its CR or LF, or the end of the chunk.
fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..].iter().position(|&c| c == b'\r' || c == b'\n').map_or(bytes.len(), |n| from + n)
}

/// An event whose data may hold a list: trimmed, or (when its data is not one JSON document without
/// duplicate keys) replaced by an error event. Its other fields (`id`, `event`, `retry`) are kept, so a
/// client's `Last-Event-ID` stays right.
fn rewrite_event(event: &[u8], filter: &ListFilter, out: &mut Vec<u8>) {
    // The LF of a CRLF that ended the previous event starts this one's bytes: it goes out where it was.
    if event.starts_with(b"\n") {
        out.push(b'\n');
    }
    let text = String::from_utf8_lossy(event);
    let lines: Vec<&str> = text.split(['\n', '\r']).filter(|l| !l.is_empty()).collect();
    let data: Vec<&str> = lines
        .iter()
        .filter_map(|l| match l.split_once(':') {
            Some(("data", value)) => Some(value.strip_prefix(' ').unwrap_or(value)),
            None if *l == "data" => Some(""),
            _ => None,
        })
        .collect();
    let message = match crate::json_strict::parse(data.join("\n").as_bytes()) {
        Ok(mut message) => {
            if !filter.apply_document(&mut message) {
                out.extend_from_slice(event);
                return;
            }
            message
        }
        Err(_) => unfilterable(&Value::Null),
    };
    for line in lines.iter().filter(|l| !(l.starts_with("data:") || **l == "data")) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(message.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::glob::Glob;
    use crate::mcp::rules::{Rule, Unlisted};

    fn policy() -> Policy {
        Policy {
            rules: vec![Rule {
                method: Glob::new("tools/call"),
                target: Some(Glob::new("getTasks")),
                scopes: vec!["read:tasks".into()],
                any_scopes: vec![],
                claims: vec![],
                deny: false,
                credential: None,
                label: "r".into(),
                id: None,
                arguments: vec![],
                shadow: false,
            }],
            unlisted_tools: Unlisted::Deny,
            ..Policy::allow_all()
        }
    }

    fn reader() -> Principal {
        Principal {
            provider: 0,
            subject: None,
            scopes: vec!["read:tasks".into()],
            expires_at: None,
            claims: Default::default(),
        }
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"getTasks"},{"name":"createTask"},{"title":"no name"}],"ttlMs":1000}}"#;

    #[test]
    fn json_list_is_trimmed_and_marked_private() {
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        let JsonBody::Trimmed(bytes) = f.json_body(LIST.as_bytes()) else { panic!("not trimmed") };
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["result"]["tools"], json!([{"name": "getTasks"}]));
        assert_eq!(out["result"]["cacheScope"], "private");
        assert_eq!(out["result"]["ttlMs"], 1000);
        assert_eq!(f.json_body(b"<html>"), JsonBody::Unreadable);
    }

    #[test]
    fn trimming_honours_the_scope_hierarchy() {
        let mut p = policy();
        p.scopes = crate::scopes::ScopeHierarchy::parse("h", &json!({"tasks": ["read:tasks"]})).unwrap();
        let mut who = reader();
        who.scopes = vec!["tasks".into()];
        let f = ListFilter::new(&p, &who);
        let JsonBody::Trimmed(bytes) = f.json_body(LIST.as_bytes()) else { panic!("not trimmed") };
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["result"]["tools"], json!([{"name": "getTasks"}]), "tasks implies read:tasks");
        who.scopes = vec!["other".into()];
        let JsonBody::Trimmed(bytes) = ListFilter::new(&p, &who).json_body(LIST.as_bytes()) else { panic!() };
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["result"]["tools"], json!([]));
    }

    #[test]
    fn lists_are_recognised_by_shape_whatever_the_id() {
        // A resumed stream replays answers to requests made on other HTTP requests; ids prove nothing.
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        for id in [json!("replayed-7"), json!(null), json!(3.0)] {
            let mut message: Value = serde_json::from_str(LIST).unwrap();
            message["id"] = id.clone();
            assert!(f.apply(&mut message), "{id}");
            assert_eq!(message["result"]["tools"], json!([{"name": "getTasks"}]), "{id}");
        }
        let mut no_id: Value = serde_json::from_str(LIST).unwrap();
        no_id.as_object_mut().unwrap().remove("id");
        assert!(f.apply(&mut no_id), "a list without an id is trimmed too");

        // Every list a result carries is trimmed by the rules for its own kind.
        let mut both = json!({"id": 1, "result": {
            "tools": [{"name": "getTasks"}, {"name": "createTask"}],
            "prompts": [{"name": "anything"}],
            "resources": [{"uri": "file:///secret"}, {"name": "no uri"}]}});
        assert!(f.apply(&mut both));
        assert_eq!(both["result"]["tools"], json!([{"name": "getTasks"}]));
        assert_eq!(both["result"]["prompts"], json!([{"name": "anything"}]), "prompts/get is plumbing here");
        assert_eq!(both["result"]["resources"], json!([{"uri": "file:///secret"}]), "resources/read allowed");

        // Results without a list, errors, requests and notifications are left alone.
        for body in [
            r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"tools"}]}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"tools":{"not":"an array"}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"m","data":{"tools":[{"name":"createTask"}]}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            r#"{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{"tools":[{"name":"x"}]}}"#,
        ] {
            assert_eq!(f.json_body(body.as_bytes()), JsonBody::Unchanged, "{body}");
        }
    }

    #[test]
    fn sse_events_rewritten_whatever_the_chunking() {
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        let stream = format!(
            "event: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\r\n\r\nid: 9\nevent: message\ndata: {LIST}\n\n"
        );
        let expected = {
            let mut r = SseRewriter::default();
            r.feed(stream.as_bytes(), true, &f, 1 << 20)
        };
        let text = String::from_utf8(expected.clone()).unwrap();
        assert!(
            text.starts_with(
                "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("id: 9\nevent: message\ndata: "), "{text}");
        assert!(!text.contains("createTask") && text.contains("\"cacheScope\":\"private\""), "{text}");
        for size in [1, 2, 3, 7, 64] {
            let mut r = SseRewriter::default();
            let mut out = Vec::new();
            let chunks: Vec<&[u8]> = stream.as_bytes().chunks(size).collect();
            for (i, c) in chunks.iter().enumerate() {
                out.extend(r.feed(c, i + 1 == chunks.len(), &f, 1 << 20));
            }
            assert_eq!(out, expected, "chunk size {size}");
        }
    }

    #[test]
    fn sse_event_carrying_a_batch_is_trimmed_too() {
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        let stream = format!("event: message\ndata: [{{\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{{}}}},{LIST}]\n\n");
        let out = String::from_utf8(SseRewriter::default().feed(stream.as_bytes(), true, &f, 1 << 20)).unwrap();
        let data: Value = serde_json::from_str(out.strip_prefix("event: message\ndata: ").unwrap().trim_end()).unwrap();
        assert_eq!(data[0], json!({"jsonrpc": "2.0", "id": 8, "result": {}}));
        assert_eq!(data[1]["result"]["tools"], json!([{"name": "getTasks"}]));
    }

    #[test]
    fn a_stream_that_starts_with_a_bom_is_trimmed_too() {
        // Found with the `sse` fuzz target's client model: the BOM hid the first `data:` line.
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        let stream = format!("\u{feff}data: {LIST}\n\n");
        for size in [1, 2, 4, stream.len()] {
            let mut r = SseRewriter::default();
            let chunks: Vec<&[u8]> = stream.as_bytes().chunks(size).collect();
            let out: Vec<u8> =
                chunks.iter().enumerate().flat_map(|(i, c)| r.feed(c, i + 1 == chunks.len(), &f, 1 << 20)).collect();
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with("\u{feff}data: {") && !text.contains("createTask"), "{size}: {text}");
        }
    }

    #[test]
    fn complete_events_are_forwarded_immediately() {
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        let mut r = SseRewriter::default();
        assert_eq!(r.feed(b"data: {}\n\ndata: {\"par", false, &f, 1 << 20), b"data: {}\n\n");
        assert_eq!(r.feed(b"tial\":1}\n\n", false, &f, 1 << 20), b"data: {\"partial\":1}\n\n");
    }

    #[test]
    fn oversized_list_event_fails_closed() {
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        let mut r = SseRewriter::default();
        let out = String::from_utf8(r.feed(format!("data: {LIST}").as_bytes(), false, &f, 64)).unwrap();
        assert!(out.contains("could not be filtered") && !out.contains("createTask"), "{out}");
        assert!(r.feed(b"more\n\n", true, &f, 64).is_empty());
    }

    #[test]
    fn oversized_event_without_a_list_passes_in_pieces_and_the_stream_goes_on() {
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        let big =
            format!(r#"data: {{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"text":"{}"}}]}}}}"#, "x".repeat(500));
        let stream = format!("{big}\n\n: comment {}\n\ndata: {LIST}\n\n", "y".repeat(300));
        for size in [1, 7, 100, stream.len()] {
            let mut r = SseRewriter::default();
            let chunks: Vec<&[u8]> = stream.as_bytes().chunks(size).collect();
            let mut out = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                out.extend(r.feed(c, i + 1 == chunks.len(), &f, 64));
                if (i + 1) * size >= 100 && (i + 1) * size < big.len() {
                    assert!(out.len() >= 64, "{size}: the big event goes out as it comes, not held whole");
                }
            }
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with(&format!("{big}\n\n: comment")), "{size}");
            assert!(
                !text.contains("createTask") && text.contains("could not be filtered"),
                "{size}: a list over the limit"
            );
        }
    }

    #[test]
    fn a_list_in_an_oversized_event_is_cut_where_it_begins() {
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        let padding = "p".repeat(200);
        let event = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{{\"pad\":\"{padding}\",\"tools\":[{{\"name\":\"createTask\"}}]}}}}\n\n"
        );
        for size in [1, 16, 300] {
            let mut r = SseRewriter::default();
            let chunks: Vec<&[u8]> = event.as_bytes().chunks(size).collect();
            let out: Vec<u8> =
                chunks.iter().enumerate().flat_map(|(i, c)| r.feed(c, i + 1 == chunks.len(), &f, 64)).collect();
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("\"tools\":[{") && !text.contains("createTask"), "{size}: {text}");
            assert!(text.contains("could not be filtered"), "{size}: {text}");
            // Chunks smaller than the limit let the part before the list go out first.
            assert_eq!(text.contains(&padding), size < 64, "{size}: {text}");
        }
    }

    #[test]
    fn an_unreadable_event_where_a_list_may_be_is_replaced() {
        let (p, who) = (policy(), reader());
        let f = ListFilter::new(&p, &who);
        for data in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"createTask"}]}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"createTask"}]},"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"createTask"}]}} trailing"#,
        ] {
            let out = SseRewriter::default().feed(format!("id: 4\ndata: {data}\n\n").as_bytes(), true, &f, 1 << 20);
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with("id: 4\ndata: ") && text.contains("could not be filtered"), "{text}");
            assert!(!text.contains("createTask"), "{text}");
        }
        // Not a list and not JSON: nothing a client could read as a list; it passes as it came.
        let heartbeat = b"data: ping\n\n: keep-alive\n\ndata:\n\n";
        assert_eq!(SseRewriter::default().feed(heartbeat, true, &f, 1 << 20), heartbeat);
    }
}
