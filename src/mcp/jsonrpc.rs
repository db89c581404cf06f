//! JSON-RPC 2.0 request bodies as MCP clients send them: one message or a batch (MCP 2025-03-26).
//!
//! The whole body is checked with duplicate-key rejection (see `json_strict`), so the request the filter
//! authorizes is the request every upstream parser sees. Only the fields a decision needs are kept: the
//! rest (a tool's `arguments`, results) is checked where it lies in the input and never built, which
//! makes this several times cheaper than building a `Value` of the body on every request.

use super::rules::KNOWN_METHODS;
use crate::json_strict::{Checked, Key, KeySet, Strict, accept_scalars, check_elements};
use crate::outcome::Reason;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON-RPC error the filter answers with: HTTP status, JSON-RPC code, message.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolError {
    pub status: u32,
    pub code: i64,
    pub message: String,
    /// The request id, when it could be read.
    pub id: Value,
}

pub const PARSE_ERROR: i64 = -32700;
/// Largest integer every JSON implementation (IEEE double) represents exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
/// MCP 2026-07-28: `Mcp-Method`/`Mcp-Name` disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC error code for requests refused by authorization. JSON-RPC leaves -32000..-32099 to
/// implementations; MCP (through 2026-07-28) uses -32000..-32002, -32020..-32022 and -32042, so -32003
/// ("forbidden") cannot be mistaken for any of them. docs/configuration.md documents it.
pub const FORBIDDEN: i64 = -32003;

impl ProtocolError {
    pub fn new(status: u32, code: i64, message: impl Into<String>) -> ProtocolError {
        ProtocolError { status, code, message: message.into(), id: Value::Null }
    }

    /// Why the request was refused, for stats and logs.
    pub fn reason(&self) -> Reason {
        match self.code {
            PARSE_ERROR => Reason::ParseError,
            HEADER_MISMATCH => Reason::HeaderMismatch,
            INVALID_PARAMS => Reason::InvalidParams,
            _ => Reason::InvalidRequest,
        }
    }

    fn with_id(mut self, id: &Value) -> ProtocolError {
        self.id = id.clone();
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request (has `id`) or notification (no `id`).
    Call(Call),
    /// A response to a request the server sent the client (`result` or `error`, no `method`).
    Response,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: Option<Value>,
    pub method: String,
    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/read).
    pub target: Option<String>,
    /// `params._meta`, when it is an object (the connector contract reads it).
    pub meta: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub messages: Vec<Message>,
    pub batch: bool,
}

/// Methods whose target names a tool, prompt or resource: the body field that holds it.
pub fn target_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}

pub fn parse(bytes: &[u8]) -> Result<Body, ProtocolError> {
    // RFC 8259 forbids a BOM in JSON text sent over a network; refuse rather than guess.
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(ProtocolError::new(400, PARSE_ERROR, "Parse error: byte order mark is not allowed"));
    }
    // The whole document is read (and a duplicate key anywhere refused) before any message is judged,
    // so a parse error always wins over an invalid message, as with a parser that builds the document.
    let doc = serde_json::from_slice::<Document>(bytes)
        .map_err(|e| ProtocolError::new(400, PARSE_ERROR, format!("Parse error: {}", short(&e.to_string()))))?;
    match doc {
        Document::Batch(items) => {
            if items.is_empty() {
                return Err(ProtocolError::new(400, INVALID_REQUEST, "Invalid Request: empty batch"));
            }
            let messages = items.into_iter().map(message).collect::<Result<_, _>>()?;
            Ok(Body { messages, batch: true })
        }
        Document::Single(item) => Ok(Body { messages: vec![message(item)?], batch: false }),
    }
}

/// A body as read: one message or a batch. Nothing in it is judged yet.
enum Document {
    Single(Item),
    Batch(Vec<Item>),
}

/// One element of a body: an object's fields that a decision reads, or anything else (invalid).
enum Item {
    Object(Box<Fields>),
    NotAnObject,
}

/// The members of a message object that matter, each as sent; the others were only checked.
#[derive(Default)]
struct Fields {
    jsonrpc: Option<Value>,
    id: Option<Value>,
    method: Option<Value>,
    params: Option<Params>,
    has_result: bool,
    has_error: bool,
}

enum Params {
    /// `name`, `uri` and `_meta` as sent (which one is the target depends on `method`, which may come
    /// later in the object).
    Object {
        name: Option<Value>,
        uri: Option<Value>,
        meta: Option<Value>,
        /// A `meta` member (not `_meta`): the MCP Python SDK reads it as `_meta` when `_meta` is absent.
        meta_alias: bool,
    },
    NotAnObject,
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamsVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;
    accept_scalars!(Document::Single(Item::NotAnObject));

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        Ok(Document::Batch(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Document, A::Error> {
        ItemVisitor.visit_map(map).map(Document::Single)
    }
}

/// The members of a message object that are read (the others are only checked).
#[derive(Clone, Copy, PartialEq)]
enum Member {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
    Other,
}

impl Member {
    fn of(key: &str) -> Member {
        match key {
            "jsonrpc" => Member::Jsonrpc,
            "id" => Member::Id,
            "method" => Member::Method,
            "params" => Member::Params,
            "result" => Member::Result,
            "error" => Member::Error,
            _ => Member::Other,
        }
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;
    accept_scalars!(Item::NotAnObject);

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Item, A::Error> {
        check_elements(seq).map(|()| Item::NotAnObject)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut keys = KeySet::default();
        let mut fields = Fields::default();
        while let Some(Key(key)) = map.next_key()? {
            let member = Member::of(&key);
            keys.insert(key)?;
            match member {
                Member::Jsonrpc => fields.jsonrpc = Some(map.next_value::<Strict>()?.0),
                Member::Id => fields.id = Some(map.next_value::<Strict>()?.0),
                Member::Method => fields.method = Some(map.next_value::<Strict>()?.0),
                Member::Params => fields.params = Some(map.next_value::<Params>()?),
                Member::Result | Member::Error | Member::Other => {
                    map.next_value::<Checked>()?;
                    fields.has_result |= member == Member::Result;
                    fields.has_error |= member == Member::Error;
                }
            }
        }
        Ok(Item::Object(Box::new(fields)))
    }
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params;
    accept_scalars!(Params::NotAnObject);

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Params, A::Error> {
        check_elements(seq).map(|()| Params::NotAnObject)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let mut keys = KeySet::default();
        let (mut name, mut uri, mut meta, mut meta_alias) = (None, None, None, false);
        while let Some(Key(key)) = map.next_key()? {
            meta_alias |= key == "meta";
            let slot = match key.as_ref() {
                "name" => Some(&mut name),
                "uri" => Some(&mut uri),
                "_meta" => Some(&mut meta),
                _ => None,
            };
            keys.insert(key)?;
            match slot {
                Some(slot) => *slot = Some(map.next_value::<Strict>()?.0),
                None => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(Params::Object { name, uri, meta, meta_alias })
    }
}

fn message(item: Item) -> Result<Message, ProtocolError> {
    let invalid = |m: &str| ProtocolError::new(400, INVALID_REQUEST, format!("Invalid Request: {m}"));
    let Item::Object(fields) = item else { return Err(invalid("each message must be an object")) };
    if fields.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = match fields.id {
        None => None,
        Some(id @ Value::String(_)) => Some(id),
        // Integers that every JSON parser reads alike: `1.0`, `1e0` or 2^53+1 would be echoed back as a
        // different id by some servers, and the response would then escape list trimming.
        Some(Value::Number(n)) if n.as_i64().is_some_and(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER) => {
            Some(Value::Number(n))
        }
        Some(Value::Number(_)) => {
            return Err(invalid("a numeric \"id\" must be an integer within ±(2^53 − 1)"));
        }
        Some(_) => return Err(invalid("\"id\" must be a string or a number")),
    };
    let Some(method) = fields.method else {
        let is_response = id.is_some() && (fields.has_result ^ fields.has_error);
        return if is_response { Ok(Message::Response) } else { Err(invalid("no \"method\"")) };
    };
    let id_value = id.clone().unwrap_or(Value::Null);
    let Value::String(method) = method else {
        return Err(invalid("\"method\" must be a string").with_id(&id_value));
    };
    if let Some(known) = disguised_method(&method) {
        return Err(ProtocolError::new(
            400,
            METHOD_NOT_FOUND,
            format!("Method not found: MCP methods are case-sensitive (did you mean {known}?)"),
        )
        .with_id(&id_value));
    }
    let (name, uri, meta) = match fields.params {
        None => (None, None, None),
        Some(Params::Object { meta_alias: true, .. }) => {
            // Two readings of one request: the filter's (`_meta`, or none) and the Python SDK's (`meta` as
            // `_meta`). `_meta` carries the connector contract's identity, so neither may be guessed.
            return Err(ProtocolError::new(
                400,
                INVALID_PARAMS,
                "Invalid params: params.meta is read as params._meta by some servers; send params._meta",
            )
            .with_id(&id_value));
        }
        Some(Params::Object { name, uri, meta, .. }) => (name, uri, meta),
        Some(Params::NotAnObject) => return Err(invalid("\"params\" must be an object").with_id(&id_value)),
    };
    let target = match target_field(&method) {
        None => None,
        Some(field) => match if field == "uri" { uri } else { name } {
            Some(Value::String(uri)) if field == "uri" && !canonical_uri(&uri) => {
                return Err(ProtocolError::new(
                    400,
                    INVALID_PARAMS,
                    "Invalid params: params.uri must be canonical (lower-case scheme, no dot segments, no encoded dots)",
                )
                .with_id(&id_value));
            }
            Some(Value::String(s)) => Some(s),
            _ => {
                return Err(ProtocolError::new(
                    400,
                    INVALID_PARAMS,
                    format!("Invalid params: {method} needs a string params.{field}"),
                )
                .with_id(&id_value));
            }
        },
    };
    let meta = match meta {
        Some(Value::Object(meta)) => Some(meta),
        _ => None,
    };
    Ok(Message::Call(Call { id, method, target, meta }))
}

/// The MCP method that `method` spells differently (other letter case, Unicode case variants such as
/// `ſ` or the Kelvin sign, surrounding whitespace or control characters), if any. Rules and the plumbing
/// list match methods exactly, so such a spelling would otherwise pass as an unlisted method, and a server
/// that resolves methods case-insensitively would run it as the real one without the rule's checks.
fn disguised_method(method: &str) -> Option<&'static str> {
    if KNOWN_METHODS.contains(&method) {
        return None;
    }
    let trimmed = method.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    let mut folded = String::with_capacity(trimmed.len());
    for c in trimmed.chars() {
        fold_onto_ascii(c, &mut folded);
    }
    // Known names are ASCII but not all lower case (`logging/setLevel`): compare without ASCII case.
    KNOWN_METHODS.iter().copied().find(|known| folded.eq_ignore_ascii_case(known))
}

/// Appends `c` case-folded, as far as the comparison with the (lower-case ASCII) method names needs: an
/// ASCII letter in lower case, and the few other characters whose Unicode case mapping is made of ASCII
/// letters, as those letters; anything else as it is. std's full case tables would give the same answer
/// for ~40 KB more of Wasm (`fold_matches_unicode_case_mapping_onto_ascii` checks every code point).
fn fold_onto_ascii(c: char, out: &mut String) {
    let folded = match c {
        '\u{00df}' => "ss", // sharp s: upper case SS
        '\u{0131}' => "i",  // dotless i: upper case I
        '\u{017f}' => "s",  // long s: upper case S
        '\u{212a}' => "k",  // Kelvin sign: lower case k
        '\u{fb00}' => "ff", // ligatures: upper case FF, FI, FL, FFI, FFL, ST, ST
        '\u{fb01}' => "fi",
        '\u{fb02}' => "fl",
        '\u{fb03}' => "ffi",
        '\u{fb04}' => "ffl",
        '\u{fb05}' | '\u{fb06}' => "st",
        c => {
            out.push(c.to_ascii_lowercase());
            return;
        }
    };
    out.push_str(folded);
}

/// URI rules are globs over the URI as sent. A server that normalises URIs (RFC 3986 §5.2.4) would read
/// `file:///public/../secret` as `file:///secret`, so spellings that normalise differently are refused.
fn canonical_uri(uri: &str) -> bool {
    let scheme = uri.split(':').next().unwrap_or("");
    let path = uri.split(['?', '#']).next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    !scheme.bytes().any(|b| b.is_ascii_uppercase())
        && !lower.contains("%2e")
        && !path.split('/').any(|segment| segment == "." || segment == "..")
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(body: &str) -> Call {
        match parse(body.as_bytes()).unwrap().messages.remove(0) {
            Message::Call(c) => c,
            Message::Response => panic!("response"),
        }
    }

    #[test]
    fn single_request_with_target() {
        let c = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","arguments":{}}}"#);
        assert_eq!((c.id, c.method.as_str(), c.target.as_deref()), (Some(json!(1)), "tools/call", Some("getTasks")));
        let c = call(r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#);
        assert_eq!(c.target.as_deref(), Some("file:///x"));
    }

    #[test]
    fn meta_is_read_and_arguments_are_not_kept() {
        let c = call(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":[1,{"b":2}]},"_meta":{"temp_token":"x"}}}"#,
        );
        assert_eq!(c.meta, json!({"temp_token": "x"}).as_object().cloned());
        let c = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":"x"}}"#);
        assert_eq!(c.meta, None, "a _meta that is not an object is not read");
    }

    /// Only a few fields are built; everything else is still read as strictly as the whole document was.
    #[test]
    fn duplicate_keys_in_unread_parts_are_parse_errors() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":{"k":1,"k":2}}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[{"k":1,"k":2}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","n\u0061me":"u"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[{"k":1,"k":2}]}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"k":1,"k":2}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"code":2}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":{"k":1,"k":2}}"#,
            r#"{"jsonrpc":"2.0","id":{"k":1,"k":2},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","i\u0064":1,"id":2,"method":"ping"}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},[{"k":1,"k":2}]]"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"ping","method":"x"}]"#,
            // A later duplicate wins over an earlier invalid message: the whole body is read first.
            r#"[42,{"k":1,"k":2}]"#,
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.code, PARSE_ERROR, "{body}: {err:?}");
            assert!(err.message.contains("duplicate key"), "{body}: {err:?}");
        }
    }

    #[test]
    fn deep_nesting_in_unread_parts_is_an_error_not_a_stack_overflow() {
        let deep = |open: &str| open.repeat(100_000);
        for body in [
            deep("["),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{}"#,
                deep("[")
            ),
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","extra":{}"#, deep(r#"{"a":"#)),
        ] {
            assert_eq!(parse(body.as_bytes()).unwrap_err().code, PARSE_ERROR);
        }
    }

    #[test]
    fn escaped_method_is_understood() {
        let c = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"x"}}"#);
        assert_eq!(c.method, "tools/call");
    }

    #[test]
    fn batch_notifications_and_responses() {
        let b = parse(
            br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},
                {"jsonrpc":"2.0","id":7,"result":{}},
                {"jsonrpc":"2.0","id":8,"method":"ping"}]"#,
        )
        .unwrap();
        assert!(b.batch);
        assert_eq!(b.messages.len(), 3);
        assert_eq!(b.messages[1], Message::Response);
    }

    #[test]
    fn error_classes() {
        let cases: &[(&str, i64)] = &[
            ("{", PARSE_ERROR),
            ("", PARSE_ERROR),
            ("\u{feff}{}", PARSE_ERROR),
            (r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#, PARSE_ERROR),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#, PARSE_ERROR),
            ("[]", INVALID_REQUEST),
            ("[[]]", INVALID_REQUEST),
            ("42", INVALID_REQUEST),
            (r#"{"id":1,"method":"ping"}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1.0,"method":"ping"}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1e0,"method":"ping"}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1,"method":5}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#, INVALID_PARAMS),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, INVALID_PARAMS),
            (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":null}}"#, INVALID_PARAMS),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/../secret"}}"#,
                INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/%2e%2e/s"}}"#,
                INVALID_PARAMS,
            ),
            (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"FILE:///secret"}}"#, INVALID_PARAMS),
            (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a/./b"}}"#, INVALID_PARAMS),
            // The Python SDK reads `meta` as `_meta` when `_meta` is absent: two readings, refused.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","meta":{"userId":"bob"}}}"#,
                INVALID_PARAMS,
            ),
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{},"m\u0065ta":{}}}"#, INVALID_PARAMS),
        ];
        for (body, code) in cases {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!((err.code, err.status), (*code, 400), "{body}: {err:?}");
        }
        let err = parse(br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{}}"#).unwrap_err();
        assert_eq!(err.id, json!("x"), "the id is echoed when known");
    }

    #[test]
    fn fold_matches_unicode_case_mapping_onto_ascii() {
        // For every code point whose lower- or upper-case mapping consists of ASCII letters only, the fold
        // gives those letters in lower case; every other code point is left alone (or ASCII-lowered).
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let mut folded = String::new();
            fold_onto_ascii(c, &mut folded);
            let ascii_letters = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic());
            let (lower, upper) = (c.to_lowercase().to_string(), c.to_uppercase().to_string());
            if ascii_letters(&lower) || ascii_letters(&upper) {
                let expected = if ascii_letters(&lower) { lower } else { upper.to_ascii_lowercase() };
                assert_eq!(folded, expected, "U+{:04X}", c as u32);
            } else {
                assert_eq!(folded, c.to_ascii_lowercase().to_string(), "U+{:04X}", c as u32);
            }
        }
    }

    #[test]
    fn methods_spelled_in_another_case_are_not_found() {
        for method in [
            "Tools/Call",
            "TOOLS/CALL",
            "tools/Call",
            "Initialize",
            "PING",
            "Notifications/initialized",
            "tools/call ",
            " tools/call",
            "tools/call\\u0000",
            "tools/call\\n",
            "tool\\u017f/call",
            "tas\\u212as/get",
            "noti\\ufb01cations/initialized",
            // The one known method with an upper-case letter (found by the `jsonrpc` fuzz target).
            "logging/setlevel",
            "logging/SetLevel",
            "LOGGING/SETLEVEL",
            "logging/\\u017fetLevel",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":3,"method":"{method}","params":{{"name":"x"}}}}"#);
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!((err.status, err.code, err.id.clone()), (400, METHOD_NOT_FOUND, json!(3)), "{method}: {err:?}");
        }
        // Exact methods, and unknown methods that are not a spelling of a known one, are unaffected.
        for method in [
            "tools/call",
            "initialize",
            "notifications/initialized",
            "logging/setLevel",
            "tools/frobnicate",
            "Custom/Thing",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":3,"method":"{method}","params":{{"name":"x"}}}}"#);
            assert!(parse(body.as_bytes()).is_ok(), "{method}");
        }
    }

    #[test]
    fn invalid_utf8_is_a_parse_error() {
        assert_eq!(parse(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}").unwrap_err().code, PARSE_ERROR);
    }
}
