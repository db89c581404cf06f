//! Finding a list result in a JSON-RPC response without building it.
//!
//! Every response on an MCP path may carry a list the caller must not see whole: the answer to a
//! `tools/list` can arrive on another request's stream (an upstream that routes answers by id, a resumed
//! stream), so the filter cannot rely on what the request asked. Parsing every response into a `Value`
//! to look would cost as much as the response is large; this scanner reads the bytes once, keeps a few
//! bytes of state, works across chunk boundaries, and says where a list begins: the `tools`, `prompts`
//! or `resources` member of the `result` of a message (the document itself, or an element of a batch).
//! Keys are compared after unescaping (`"t\u006fols"` is `tools`).
//!
//! What it cannot read as JSON it reports as malformed, at the byte where reading failed, so that the
//! caller never lets through what a lenient client might still read as a list (fail closed). It checks
//! structure, not the spelling of numbers and literals: a client that reads a document also reads its
//! structure the same way, and a document the scanner calls clean but a client refuses carries no list.

/// Deeper documents are reported as malformed: every JSON parser a client uses stops long before.
pub const MAX_DEPTH: usize = 512;

/// Why the scanner stopped: where the bytes to withhold begin (an offset from the first byte fed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A list member of a result: its key starts here.
    List { at: usize },
    /// Not JSON from here on (or nested deeper than [`MAX_DEPTH`]).
    Malformed { at: usize },
}

impl Stop {
    pub fn at(self) -> usize {
        match self {
            Stop::List { at } | Stop::Malformed { at } => at,
        }
    }
}

/// What a container is to the scan: only the first three levels can hold a list result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Role {
    #[default]
    Other,
    /// A JSON-RPC message: the document, or an element of a batch.
    Message,
    /// The `result` object of a message.
    Result,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Expect {
    #[default]
    Value,
    /// After `{` (a key or `}`) or after `,` in an object (a key).
    Key {
        first: bool,
    },
    Colon,
    /// After a value: `,` or the container's end (or, at the top, only whitespace).
    Next,
    /// After `[` (a value or `]`).
    FirstElement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lexer {
    #[default]
    Structure,
    /// Inside a string; `key` when it is an object key being captured.
    Text { key: bool },
    /// After a backslash inside a string.
    Escape { key: bool },
    /// Reading the hex digits of `\u`: how many are read, and their value so far.
    Unicode { key: bool, digits: u8, value: u32 },
    /// A number or a literal (`true`, `false`, `null`).
    Scalar,
}

/// Key bytes kept for comparison: the longest key that matters is `resources`.
const KEY_CAPTURE: usize = 9;

/// Incremental scanner over one JSON document (a response body, or one SSE event's data).
#[derive(Debug, Default)]
pub struct ListScan {
    offset: usize,
    depth: usize,
    /// Container kinds, one bit per level (1: object), for the levels up to [`MAX_DEPTH`].
    objects: [u64; MAX_DEPTH / 64],
    /// Roles of levels 1 to 3, and whether the current member of that level is `result`.
    roles: [Role; 4],
    in_result_member: [bool; 4],
    expect: Expect,
    lexer: Lexer,
    key: [u8; KEY_CAPTURE],
    key_len: usize,
    /// The key being read is longer than any that matters, or holds a character none of them has.
    key_other: bool,
    key_start: usize,
    started: bool,
    stop: Option<Stop>,
}

impl ListScan {
    /// Reads the next bytes of the document; returns where to stop forwarding once a list (or something
    /// that is not JSON) is found. After that, every call returns the same answer.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Stop> {
        if self.stop.is_some() {
            return self.stop;
        }
        let mut i = 0;
        // A byte order mark may start the document: some clients (Python's json on bytes) skip it.
        if !self.started && self.offset == 0 && bytes.starts_with(b"\xEF\xBB\xBF") {
            i = 3;
        }
        while i < bytes.len() {
            let b = bytes[i];
            let at = self.offset + i;
            match self.lexer {
                Lexer::Text { key } => {
                    // The bulk of a document is string content: skip to the next quote or backslash.
                    match bytes[i..].iter().position(|&c| c == b'"' || c == b'\\') {
                        None => {
                            if key {
                                self.capture_bytes(&bytes[i..]);
                            }
                            i = bytes.len();
                            continue;
                        }
                        Some(n) => {
                            if key {
                                self.capture_bytes(&bytes[i..i + n]);
                            }
                            i += n;
                            if bytes[i] == b'\\' {
                                self.lexer = Lexer::Escape { key };
                            } else {
                                self.lexer = Lexer::Structure;
                                if key {
                                    if let Some(stop) = self.end_key() {
                                        return self.stopped(stop);
                                    }
                                } else {
                                    self.expect = Expect::Next;
                                }
                            }
                        }
                    }
                }
                Lexer::Escape { key } => {
                    self.lexer = match b {
                        b'u' => Lexer::Unicode { key, digits: 0, value: 0 },
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                            if key {
                                self.capture(match b {
                                    b'b' => 0x08,
                                    b'f' => 0x0c,
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    other => other,
                                });
                            }
                            Lexer::Text { key }
                        }
                        _ => return self.stopped(Stop::Malformed { at }),
                    };
                }
                Lexer::Unicode { key, digits, value } => {
                    let Some(d) = (b as char).to_digit(16) else { return self.stopped(Stop::Malformed { at }) };
                    let value = (value << 4) | d;
                    if digits == 3 {
                        if key {
                            // Only ASCII matters to the comparison; anything else makes the key "other".
                            match u8::try_from(value) {
                                Ok(ascii) if ascii.is_ascii() => self.capture(ascii),
                                _ => self.key_other = true,
                            }
                        }
                        self.lexer = Lexer::Text { key };
                    } else {
                        self.lexer = Lexer::Unicode { key, digits: digits + 1, value };
                    }
                }
                Lexer::Scalar => {
                    if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') {
                        i += 1;
                        continue;
                    }
                    self.lexer = Lexer::Structure;
                    self.expect = Expect::Next;
                    continue; // this byte is structure: read it again as such
                }
                Lexer::Structure => {
                    if let Err(stop) = self.structure(b, at) {
                        return self.stopped(stop);
                    }
                }
            }
            i += 1;
        }
        self.offset += bytes.len();
        None
    }

    /// Whether everything fed so far is exactly one complete JSON document without a list result.
    pub fn is_clean_document(&self) -> bool {
        self.stop.is_none()
            && self.started
            && self.depth == 0
            && matches!(self.lexer, Lexer::Structure | Lexer::Scalar)
            && (self.expect == Expect::Next || self.lexer == Lexer::Scalar)
    }

    /// Where the scan stopped, if it did.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// Bytes fed so far (the offset the next byte will have).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Whether the document read so far may carry a list result (or cannot be read well enough to tell),
    /// taking it as complete. A document of nothing but whitespace carries nothing.
    pub fn may_hold_list(&self) -> bool {
        self.stop.is_some() || (self.started && !self.is_clean_document())
    }

    fn stopped(&mut self, stop: Stop) -> Option<Stop> {
        self.stop = Some(stop);
        self.stop
    }

    fn structure(&mut self, b: u8, at: usize) -> Result<(), Stop> {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return Ok(());
        }
        let malformed = Err(Stop::Malformed { at });
        match self.expect {
            Expect::Value | Expect::FirstElement => match b {
                b']' if self.expect == Expect::FirstElement => self.close(false, at),
                b'{' | b'[' => self.open(b == b'{', at),
                b'"' => {
                    self.started = true;
                    self.lexer = Lexer::Text { key: false };
                    Ok(())
                }
                b'-' | b'0'..=b'9' | b'a'..=b'z' => {
                    self.started = true;
                    self.lexer = Lexer::Scalar;
                    Ok(())
                }
                _ => malformed,
            },
            Expect::Key { first } => match b {
                b'"' => {
                    self.lexer = Lexer::Text { key: true };
                    self.key_len = 0;
                    self.key_other = false;
                    self.key_start = at;
                    Ok(())
                }
                b'}' if first => self.close(true, at),
                _ => malformed,
            },
            Expect::Colon if b == b':' => {
                self.expect = Expect::Value;
                Ok(())
            }
            Expect::Colon => malformed,
            Expect::Next => match b {
                _ if self.depth == 0 => malformed, // a second value after the document
                b',' if self.is_object(self.depth) => {
                    self.expect = Expect::Key { first: false };
                    Ok(())
                }
                b',' => {
                    self.expect = Expect::Value;
                    Ok(())
                }
                b'}' | b']' => self.close(b == b'}', at),
                _ => malformed,
            },
        }
    }

    fn open(&mut self, object: bool, at: usize) -> Result<(), Stop> {
        if self.depth >= MAX_DEPTH {
            return Err(Stop::Malformed { at });
        }
        self.started = true;
        let parent = self.depth;
        self.depth += 1;
        let level = self.depth;
        let (word, bit) = ((level - 1) / 64, (level - 1) % 64);
        if object {
            self.objects[word] |= 1 << bit;
        } else {
            self.objects[word] &= !(1 << bit);
        }
        if level < self.roles.len() {
            let role = match (object, level) {
                (true, 1) => Role::Message,
                (true, 2) if !self.is_object(1) => Role::Message,
                (true, _) if self.roles[parent] == Role::Message && self.in_result_member[parent] => Role::Result,
                _ => Role::Other,
            };
            self.roles[level] = role;
            self.in_result_member[level] = false;
        }
        self.expect = if object { Expect::Key { first: true } } else { Expect::FirstElement };
        Ok(())
    }

    fn close(&mut self, object: bool, at: usize) -> Result<(), Stop> {
        if self.depth == 0 || self.is_object(self.depth) != object {
            return Err(Stop::Malformed { at });
        }
        self.depth -= 1;
        self.expect = Expect::Next;
        Ok(())
    }

    fn is_object(&self, level: usize) -> bool {
        level > 0 && self.objects[(level - 1) / 64] & (1 << ((level - 1) % 64)) != 0
    }

    fn capture_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.capture(b);
            if self.key_other {
                return;
            }
        }
    }

    fn capture(&mut self, b: u8) {
        if self.key_len < KEY_CAPTURE {
            self.key[self.key_len] = b;
            self.key_len += 1;
        } else {
            self.key_other = true;
        }
    }

    /// A key ended: note whether it opens a message's `result`, or stop at a list member of a result.
    fn end_key(&mut self) -> Option<Stop> {
        self.expect = Expect::Colon;
        let level = self.depth;
        if level >= self.roles.len() {
            return None;
        }
        let key = if self.key_other { &b""[..] } else { &self.key[..self.key_len] };
        match self.roles[level] {
            Role::Message => self.in_result_member[level] = key == b"result",
            Role::Result if matches!(key, b"tools" | b"prompts" | b"resources") => {
                return Some(Stop::List { at: self.key_start });
            }
            _ => {}
        }
        None
    }
}

/// Whether a complete document may carry a list result (or cannot be read well enough to tell): only
/// then must it be parsed and trimmed. A document of nothing but whitespace carries nothing.
pub fn may_hold_list(document: &[u8]) -> bool {
    let mut scan = ListScan::default();
    scan.feed(document);
    scan.may_hold_list()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(doc: &str) -> Option<Stop> {
        ListScan::default().feed(doc.as_bytes())
    }

    #[test]
    fn finds_lists_in_results_of_messages_and_batches() {
        let doc = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}"#;
        assert_eq!(stop(doc), Some(Stop::List { at: doc.find("\"tools\"").unwrap() }));
        for doc in [
            r#"{"result":{"nextCursor":"x","prompts":[]}}"#,
            r#"{"result":{"resources":{}}}"#,
            r#"[{"id":1,"result":{}},{"id":2,"result":{"tools":[]}}]"#,
            r#"{"id":1,"result":{"t\u006fols":[]}}"#,
            r#"{"id":1,"r\u0065sult":{"tools":[]}}"#,
            r#"{"result":{"content":[]},"result":{"tools":[]}}"#,
            " \r\n{ \"result\" : { \"tools\" : [ ] } }",
            "\u{feff}{\"result\":{\"tools\":[]}}",
        ] {
            assert!(matches!(stop(doc), Some(Stop::List { .. })), "{doc}");
            assert!(may_hold_list(doc.as_bytes()), "{doc}");
        }
    }

    #[test]
    fn leaves_other_responses_alone() {
        for doc in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\"tools\":[]"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"tools":[{"name":"x"}]}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","data":{"tools":[]}}}"#,
            r#"{"jsonrpc":"2.0","method":"sampling/createMessage","params":{"tools":[]}}"#,
            r#"{"tools":[]}"#,
            r#"[{"jsonrpc":"2.0","id":1,"result":{"toolsx":[],"tool":1,"\u00e9tools":2}}]"#,
            r#"[[{"result":{"tools":[]}}]]"#,
            r#"{"id":-1.5e+10,"ok":true,"no":false,"n":null,"result":{"a\"b\\c\/d\n":"\ud83d\ude00"}}"#,
            "  {}  ",
            "[]",
            "1",
            "\"text\"",
        ] {
            assert_eq!(stop(doc), None, "{doc}");
            assert!(!may_hold_list(doc.as_bytes()), "{doc}");
        }
    }

    #[test]
    fn what_is_not_json_is_malformed_where_it_stops_being_json() {
        for (doc, at) in [
            ("<html>", 0),
            ("{\"a\":1}{}", 7),
            ("{\"a\" 1}", 5),
            ("{\"a\":1,}", 7),
            ("[1,]x", 3),
            ("{\"a\":[}", 6),
            ("{\"a\":\"\\x\"}", 7),
            ("{\"a\":\"\\u12g4\"}", 10),
            ("{'a':1}", 1),
        ] {
            assert_eq!(stop(doc), Some(Stop::Malformed { at }), "{doc}");
        }
        for doc in ["{\"result\":{", "{\"a\":\"unterminated", "[1"] {
            assert_eq!(stop(doc), None, "{doc}");
            assert!(may_hold_list(doc.as_bytes()), "incomplete is not clean: {doc:?}");
        }
        for empty in ["", "  \r\n", "\u{feff}"] {
            assert!(!may_hold_list(empty.as_bytes()), "nothing to read: {empty:?}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(stop(&deep), Some(Stop::Malformed { at: MAX_DEPTH }));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(stop(&ok), None);
        assert!(!may_hold_list(ok.as_bytes()));
    }

    #[test]
    fn any_chunking_gives_the_same_answer_at_the_same_offset() {
        let docs = [
            r#"{"jsonrpc":"2.0","id":"a","result":{"content":[{"text":"x\"y\u0041"}],"t\u006fols":[1]}}"#,
            r#"[{"id":1,"result":{"a":[{"b":{"c":"\\\"tools\""}}]}},{"id":2,"error":{}}]"#,
            r#"{"result":{"x":tru e}}"#,
        ];
        for doc in docs {
            let whole = stop(doc);
            for size in 1..8 {
                let mut scan = ListScan::default();
                let mut found = None;
                for chunk in doc.as_bytes().chunks(size) {
                    found = scan.feed(chunk);
                    if found.is_some() {
                        break;
                    }
                }
                assert_eq!(found, whole, "{doc} in chunks of {size}");
            }
        }
    }
}
