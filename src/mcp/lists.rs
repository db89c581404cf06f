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

/// Whom to trim for.
pub struct ListFilter<'a> {
    pub policy: &'a Policy,
    pub principal: &'a Principal,
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
                target
                    .is_some_and(|t| self.policy.evaluate(kind.call_method(), Some(t), self.principal) == Access::Allow)
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

    /// A whole `application/json` response body (one message or a batch).
    pub fn json_body(&self, body: &[u8]) -> JsonBody {
        let Ok(mut doc) = serde_json::from_slice::<Value>(body) else { return JsonBody::Unreadable };
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

/// Incremental SSE rewriter: feed it body chunks, forward what it returns.
#[derive(Default)]
pub struct SseRewriter {
    pending: Vec<u8>,
    failed: bool,
    /// The start of the stream has been checked for a byte order mark.
    past_start: bool,
}

impl SseRewriter {
    /// Returns the bytes to forward now: every complete event (rewritten where needed). An incomplete
    /// event is held until its end arrives. `max_event` bounds what is held.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, filter: &ListFilter, max_event: usize) -> Vec<u8> {
        if self.failed {
            return Vec::new();
        }
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        if !self.past_start {
            // Clients drop a BOM that starts the stream (HTML, "interpreting an event stream"). Left in
            // `pending`, it would hide the first event's `data:` line from `rewrite_event` but not from
            // them, and a list answered first would go out untrimmed. It is forwarded as it came.
            if self.pending.len() < BOM.len() && BOM.starts_with(&self.pending) && !end_of_stream {
                return out;
            }
            if self.pending.starts_with(BOM) {
                out.extend_from_slice(BOM);
                self.pending.drain(..BOM.len());
            }
            self.past_start = true;
        }
        let mut start = 0;
        while let Some(end) = event_end(&self.pending[start..], end_of_stream) {
            rewrite_event(&self.pending[start..start + end], filter, &mut out);
            start += end;
        }
        self.pending.drain(..start);
        if end_of_stream && !self.pending.is_empty() {
            rewrite_event(&std::mem::take(&mut self.pending), filter, &mut out);
        } else if self.pending.len() > max_event {
            // Too large to hold: end the stream with an error rather than pass an unfiltered list.
            self.failed = true;
            self.pending.clear();
            out.extend_from_slice(b"event: message\ndata: ");
            out.extend_from_slice(unfilterable(&Value::Null).to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        out
    }
}

/// Length of the first complete event in `buf` (through its blank line), if any.
fn event_end(buf: &[u8], end_of_stream: bool) -> Option<usize> {
    let mut line_start = 0;
    let mut i = 0;
    while i < buf.len() {
        let terminator = match buf[i] {
            b'\n' => 1,
            b'\r' if i + 1 < buf.len() => {
                if buf[i + 1] == b'\n' {
                    2
                } else {
                    1
                }
            }
            // A lone CR at the end may be the first half of CRLF: wait for more, unless nothing comes.
            b'\r' if end_of_stream => 1,
            b'\r' => return None,
            _ => {
                i += 1;
                continue;
            }
        };
        if i == line_start {
            return Some(i + terminator);
        }
        i += terminator;
        line_start = i;
    }
    None
}

fn rewrite_event(event: &[u8], filter: &ListFilter, out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(event);
    let lines: Vec<&str> = text.split(['\n', '\r']).filter(|l| !l.is_empty()).collect();
    let data: Vec<&str> =
        lines.iter().filter_map(|l| l.strip_prefix("data:").map(|d| d.strip_prefix(' ').unwrap_or(d))).collect();
    if !data.is_empty()
        && let Ok(mut message) = serde_json::from_str::<Value>(&data.join("\n"))
        && filter.apply_document(&mut message)
    {
        for line in lines.iter().filter(|l| !l.starts_with("data:")) {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(message.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        return;
    }
    out.extend_from_slice(event);
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
            }],
            unlisted_tools: Unlisted::Deny,
            unlisted_methods: Unlisted::Allow,
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
        let f = ListFilter { policy: &p, principal: &who };
        let JsonBody::Trimmed(bytes) = f.json_body(LIST.as_bytes()) else { panic!("not trimmed") };
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["result"]["tools"], json!([{"name": "getTasks"}]));
        assert_eq!(out["result"]["cacheScope"], "private");
        assert_eq!(out["result"]["ttlMs"], 1000);
        assert_eq!(f.json_body(b"<html>"), JsonBody::Unreadable);
    }

    #[test]
    fn lists_are_recognised_by_shape_whatever_the_id() {
        // A resumed stream replays answers to requests made on other HTTP requests; ids prove nothing.
        let (p, who) = (policy(), reader());
        let f = ListFilter { policy: &p, principal: &who };
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
        let f = ListFilter { policy: &p, principal: &who };
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
        let f = ListFilter { policy: &p, principal: &who };
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
        let f = ListFilter { policy: &p, principal: &who };
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
        let f = ListFilter { policy: &p, principal: &who };
        let mut r = SseRewriter::default();
        assert_eq!(r.feed(b"data: {}\n\ndata: {\"par", false, &f, 1 << 20), b"data: {}\n\n");
        assert_eq!(r.feed(b"tial\":1}\n\n", false, &f, 1 << 20), b"data: {\"partial\":1}\n\n");
    }

    #[test]
    fn oversized_event_fails_closed() {
        let (p, who) = (policy(), reader());
        let f = ListFilter { policy: &p, principal: &who };
        let mut r = SseRewriter::default();
        let out = r.feed(&[b'x'; 100], false, &f, 10);
        assert!(String::from_utf8(out).unwrap().contains("could not be filtered"));
        assert!(r.feed(b"more\n\n", true, &f, 10).is_empty());
    }
}
