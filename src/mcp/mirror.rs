//! MCP 2026-07-28 request metadata (streamable HTTP, "Request Metadata" and "Server Validation"): the
//! client mirrors body fields into headers so that intermediaries can route without reading the body.
//! A body-reading filter MUST refuse a request whose headers and body disagree, or that lacks a header
//! the revision requires: otherwise a component that routes or authorizes on headers sees one request
//! and the server runs another. Every refusal is 400 with JSON-RPC -32020 (HeaderMismatch).
//!
//! Requests of the earlier revisions (no `_meta` protocol version, no `MCP-Protocol-Version` of this
//! era) carry no mirrors and are not asked for them; mirrors they do carry must still agree.

use super::jsonrpc::{Body, Call, HEADER_MISMATCH, Message, ProtocolError};
use base64::Engine;
use serde_json::Value;

/// The body field the 2026-07-28 envelope carries the protocol version in (`params._meta`).
const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
/// Revisions before per-request metadata: their requests need no mirror headers. Any other version
/// (2026-07-28, a later one, or one the filter does not know) is held to this revision's rules.
const EARLIER_REVISIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Methods whose `Mcp-Name` is required (its source: `params.name` or `params.uri`).
const NAME_REQUIRED: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];
/// Largest integer an `x-mcp-header` integer may carry (IEEE double safe range).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// The request's mirror headers, all occurrences (header names arrive lower-case from Envoy).
#[derive(Debug, Default, Clone)]
pub struct MirrorHeaders {
    pub method: Vec<String>,
    pub name: Vec<String>,
    pub protocol_version: Vec<String>,
    /// `Mcp-Param-*` headers: the part after the prefix (lower case) and the value.
    pub params: Vec<(String, String)>,
}

impl MirrorHeaders {
    pub fn of(headers: &[(String, String)]) -> MirrorHeaders {
        let mut mirror = MirrorHeaders::default();
        for (name, value) in headers {
            match name.as_str() {
                "mcp-method" => mirror.method.push(value.clone()),
                "mcp-name" => mirror.name.push(value.clone()),
                "mcp-protocol-version" => mirror.protocol_version.push(value.clone()),
                _ => {
                    if let Some(param) = name.strip_prefix("mcp-param-") {
                        mirror.params.push((param.to_string(), value.clone()));
                    }
                }
            }
        }
        mirror
    }

    /// Whether `tools/call` arguments must be read to check parameter mirrors: some are sent, or the
    /// request is of this era (a declared parameter in the body needs its header).
    pub fn needs_arguments(&self) -> bool {
        !self.params.is_empty() || self.protocol_version.iter().any(|v| requires_mirrors(v))
    }
}

fn requires_mirrors(version: &str) -> bool {
    !EARLIER_REVISIONS.contains(&version)
}

/// JSON type an `x-mcp-header` parameter may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Integer,
    Boolean,
}

/// One `x-mcp-header` annotation of a tool's `inputSchema`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The name after `Mcp-Param-`, lower case (header names compare without case).
    pub header: String,
    /// The chain of `properties` keys from the schema root to the parameter.
    pub path: Vec<String>,
    pub kind: ParamType,
}

/// The `x-mcp-header` annotations of an `inputSchema`, or why they make the tool definition invalid.
pub fn declared(input_schema: &Value) -> Result<Vec<ParamHeader>, String> {
    let mut found = Vec::new();
    walk(input_schema, &mut Vec::new(), true, &mut found)?;
    for (i, a) in found.iter().enumerate() {
        if found[..i].iter().any(|b| b.header == a.header) {
            return Err(format!("x-mcp-header {:?} is declared twice", a.header));
        }
    }
    Ok(found)
}

/// `reachable`: the schema is reached from the root through `properties` keys only.
fn walk(schema: &Value, path: &mut Vec<String>, reachable: bool, found: &mut Vec<ParamHeader>) -> Result<(), String> {
    match schema {
        Value::Object(members) => {
            if let Some(annotation) = members.get("x-mcp-header") {
                found.push(annotation_at(annotation, members.get("type"), path, reachable)?);
            }
            for (key, value) in members {
                match (key.as_str(), value) {
                    ("properties", Value::Object(properties)) => {
                        for (name, property) in properties {
                            path.push(name.clone());
                            walk(property, path, reachable, found)?;
                            path.pop();
                        }
                    }
                    ("x-mcp-header", _) => {}
                    _ => walk(value, path, false, found)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|item| walk(item, path, false, found)),
        _ => Ok(()),
    }
}

fn annotation_at(
    annotation: &Value,
    kind: Option<&Value>,
    path: &[String],
    reachable: bool,
) -> Result<ParamHeader, String> {
    let Some(header) = annotation.as_str().filter(|h| !h.is_empty() && h.bytes().all(is_tchar)) else {
        return Err("an x-mcp-header is not an HTTP token".into());
    };
    if !reachable || path.is_empty() {
        return Err(format!("x-mcp-header {header:?} is not on a property reached through `properties` only"));
    }
    let kind = match kind.and_then(Value::as_str) {
        Some("string") => ParamType::String,
        Some("integer") => ParamType::Integer,
        Some("boolean") => ParamType::Boolean,
        _ => {
            return Err(format!(
                "x-mcp-header {header:?} is on a property whose type is not string, integer or boolean"
            ));
        }
    };
    Ok(ParamHeader { header: header.to_ascii_lowercase(), path: path.to_vec(), kind })
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn mismatch(what: &str) -> ProtocolError {
    ProtocolError::new(400, HEADER_MISMATCH, format!("Header mismatch: {what}"))
}

/// Checks the mirror headers against the body. `declared` gives a tool's parameter mirrors when the
/// filter knows them (configured, or learned from a `tools/list`); parameters of other tools are not
/// the filter's to judge, and their headers pass untouched.
pub fn check(
    body: &Body,
    mirror: &MirrorHeaders,
    declared: &dyn Fn(&str) -> Option<Vec<ParamHeader>>,
) -> Result<(), ProtocolError> {
    let header_version = mirror.protocol_version.first().map(String::as_str);
    let single = if body.batch { None } else { body.messages.first() };
    let with_id = |e: ProtocolError| match single {
        Some(Message::Call(Call { id: Some(id), .. })) => ProtocolError { id: id.clone(), ..e },
        _ => e,
    };
    if mirror.method.len() > 1 || mirror.name.len() > 1 || mirror.protocol_version.len() > 1 {
        return Err(with_id(mismatch("Mcp-Method, Mcp-Name or MCP-Protocol-Version appears more than once")));
    }
    let mut body_version = None;
    for message in &body.messages {
        let Message::Call(call) = message else { continue };
        let Some(version) = call.meta.as_ref().and_then(|m| m.get(VERSION_META)) else { continue };
        // Not a string: no header can match it (an absent header must not either).
        let Some(version) = version.as_str().filter(|v| Some(*v) == header_version) else {
            return Err(with_id(mismatch("MCP-Protocol-Version does not match the body's _meta protocolVersion")));
        };
        body_version = Some(version);
    }
    let modern = header_version.or(body_version).is_some_and(requires_mirrors);
    if !modern && mirror.method.is_empty() && mirror.name.is_empty() && mirror.params.is_empty() {
        return Ok(());
    }
    let Some(Message::Call(call)) = single else {
        return Err(mismatch("MCP 2026-07-28 headers describe a single request, not a batch or a response"));
    };
    let Call { id, method, target, .. } = call;
    match mirror.method.first() {
        Some(header) if header != method => {
            return Err(with_id(mismatch("Mcp-Method does not match the body's method")));
        }
        None if modern && id.is_some() => return Err(with_id(mismatch("Mcp-Method is required"))),
        _ => {}
    }
    match (target, mirror.name.first()) {
        (Some(target), Some(header)) if decode_header_value(header).as_ref() != Some(target) => {
            return Err(with_id(mismatch("Mcp-Name does not match the body's name or uri")));
        }
        (None, Some(_)) => return Err(with_id(mismatch("Mcp-Name is set for a method without a name"))),
        (_, None) if (modern || !mirror.method.is_empty()) && NAME_REQUIRED.contains(&method.as_str()) => {
            return Err(with_id(mismatch("Mcp-Name is required for this method")));
        }
        _ => {}
    }
    if method == "tools/call"
        && let Some(params) = target.as_deref().and_then(declared)
    {
        check_params(&params, mirror, call.arguments.as_ref()).map_err(|what| with_id(mismatch(&what)))?;
    }
    Ok(())
}

/// Each declared parameter: its header and its body value agree, or both are absent (a `null` value
/// counts as absent, as the client omits the header then).
fn check_params(params: &[ParamHeader], mirror: &MirrorHeaders, arguments: Option<&Value>) -> Result<(), String> {
    for param in params {
        let mut headers = mirror.params.iter().filter(|(n, _)| n.eq_ignore_ascii_case(&param.header));
        let header = headers.next().map(|(_, v)| v.as_str());
        if headers.next().is_some() {
            return Err(format!("Mcp-Param-{} appears more than once", param.header));
        }
        let value = arguments.and_then(|a| param.path.iter().try_fold(a, |v, key| v.get(key))).filter(|v| !v.is_null());
        let agree = match (header, value) {
            (None, None) => true,
            (Some(header), Some(value)) => {
                let decoded = decode_header_value(header)
                    .ok_or_else(|| format!("Mcp-Param-{} has invalid characters or encoding", param.header))?;
                param_matches(param.kind, &decoded, value)
            }
            _ => false,
        };
        if !agree {
            return Err(format!("Mcp-Param-{} does not match the body's argument", param.header));
        }
    }
    Ok(())
}

/// A decoded header value against the body value, by the declared type: strings exactly, integers
/// numerically (`42.0` is `42`; within the safe range), booleans as `true`/`false`.
pub fn param_matches(kind: ParamType, header: &str, value: &Value) -> bool {
    match (kind, value) {
        (ParamType::String, Value::String(s)) => s == header,
        (ParamType::Boolean, Value::Bool(b)) => header == if *b { "true" } else { "false" },
        (ParamType::Integer, Value::Number(n)) => {
            let safe = |f: f64| f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER;
            let body = n.as_f64().filter(|f| safe(*f));
            body.is_some() && decimal(header).filter(|f| safe(*f)) == body
        }
        _ => false,
    }
}

/// A plain decimal integer (`-7`, `42`, `42.0`): no exponent, no `inf`, no sign other than a leading `-`,
/// zeros only after a point. Read without float parsing (its code would weigh on the module).
fn decimal(text: &str) -> Option<f64> {
    let (negative, digits) = text.strip_prefix('-').map_or((false, text), |rest| (true, rest));
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    if whole.is_empty() || whole.len() > 16 || fraction.is_empty() || fraction.bytes().any(|b| b != b'0') {
        return None;
    }
    let mut value: i64 = 0;
    for b in whole.bytes() {
        value = value * 10 + i64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
    }
    Some(if negative { -value } else { value } as f64)
}

/// The value a mirror header carries: `=?base64?<standard base64>?=` decoded (canonical padding, UTF-8),
/// or the value itself when it is plain header-safe ASCII (visible characters, space, tab). None: invalid
/// characters or a malformed sentinel, which never matches.
pub fn decode_header_value(value: &str) -> Option<String> {
    let Some(payload) = value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) else {
        let safe = value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        return safe.then(|| value.to_string());
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
    if base64::engine::general_purpose::STANDARD.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::jsonrpc::parse_with;
    use serde_json::json;

    const MODERN: &str = "2026-07-28";

    fn headers(pairs: &[(&str, &str)]) -> MirrorHeaders {
        MirrorHeaders::of(&pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<Vec<_>>())
    }

    fn call(name: &str, arguments: Value, version: Option<&str>) -> String {
        let mut params = json!({"name": name, "arguments": arguments});
        if let Some(v) = version {
            params["_meta"] = json!({VERSION_META: v});
        }
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}).to_string()
    }

    fn search_schema() -> Value {
        json!({"type": "object", "properties": {
            "q": {"type": "string", "x-mcp-header": "Q"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "opts": {"type": "object", "properties": {"exact": {"type": "boolean", "x-mcp-header": "Exact"}}}}})
    }

    fn run(body: &str, mirror: &MirrorHeaders) -> Result<(), (i64, Value)> {
        let parsed = parse_with(body.as_bytes(), true).unwrap();
        let params = declared(&search_schema()).unwrap();
        let known = move |name: &str| (name == "search").then(|| params.clone());
        check(&parsed, mirror, &known).map_err(|e| (e.code, e.id))
    }

    fn modern(extra: &[(&'static str, &'static str)]) -> MirrorHeaders {
        let mut pairs = vec![("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"), ("mcp-name", "search")];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    const REFUSED: Result<(), (i64, Value)> = Err((HEADER_MISMATCH, Value::Null));

    fn refused() -> Result<(), (i64, Value)> {
        Err((HEADER_MISMATCH, json!(9)))
    }

    #[test]
    fn protocol_version_header_must_equal_the_body_envelope() {
        let body = call("other", json!({}), Some(MODERN));
        let other = |v: &'static str| {
            headers(&[("mcp-protocol-version", v), ("mcp-method", "tools/call"), ("mcp-name", "other")])
        };
        assert_eq!(run(&body, &other(MODERN)), Ok(()));
        assert_eq!(run(&body, &other("2025-11-25")), refused());
        assert_eq!(run(&call("other", json!({}), Some("2025-11-25")), &other(MODERN)), refused());
        let no_version = headers(&[("mcp-method", "tools/call"), ("mcp-name", "other")]);
        assert_eq!(run(&body, &no_version), refused(), "the envelope without the header");
        let numeric =
            json!({"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"_meta": {VERSION_META: 20260728}}});
        assert_eq!(run(&numeric.to_string(), &MirrorHeaders::default()), refused(), "a version that is not a string");
        let twice = headers(&[("mcp-protocol-version", MODERN), ("mcp-protocol-version", MODERN)]);
        assert_eq!(run(&body, &twice), refused());
    }

    #[test]
    fn this_era_requires_mcp_method_and_mcp_name() {
        let body = call("other", json!({}), Some(MODERN));
        assert_eq!(run(&body, &headers(&[("mcp-protocol-version", MODERN)])), refused());
        let no_name = headers(&[("mcp-protocol-version", MODERN), ("mcp-method", "tools/call")]);
        assert_eq!(run(&body, &no_name), refused());
        // Header alone declaring the era (a body without the envelope) is held to it too.
        assert_eq!(run(&call("other", json!({}), None), &headers(&[("mcp-protocol-version", MODERN)])), refused());
        // A later or unknown version is held to this revision's rules.
        assert_eq!(
            run(&call("other", json!({}), None), &headers(&[("mcp-protocol-version", "2027-01-01")])),
            refused()
        );
        // resources/read needs Mcp-Name; ping needs only Mcp-Method; a notification needs neither.
        let read = json!({"jsonrpc": "2.0", "id": 9, "method": "resources/read", "params": {"uri": "file:///a"}});
        let only_method = headers(&[("mcp-protocol-version", MODERN), ("mcp-method", "resources/read")]);
        assert_eq!(run(&read.to_string(), &only_method), refused());
        let ping = r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#;
        assert_eq!(run(ping, &headers(&[("mcp-protocol-version", MODERN), ("mcp-method", "ping")])), Ok(()));
        let note = r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#;
        assert_eq!(run(note, &headers(&[("mcp-protocol-version", MODERN)])), Ok(()));
    }

    #[test]
    fn earlier_eras_need_no_mirrors_but_those_sent_must_agree() {
        let body = call("other", json!({}), None);
        assert_eq!(run(&body, &MirrorHeaders::default()), Ok(()));
        assert_eq!(run(&body, &headers(&[("mcp-protocol-version", "2025-06-18")])), Ok(()));
        assert_eq!(run(&body, &headers(&[("mcp-method", "tools/call"), ("mcp-name", "other")])), Ok(()));
        assert_eq!(run(&body, &headers(&[("mcp-method", "tools/list"), ("mcp-name", "other")])), refused());
        assert_eq!(run(&body, &headers(&[("mcp-method", "tools/call"), ("mcp-name", "getTasks")])), refused());
        assert_eq!(run(&body, &headers(&[("mcp-method", "tools/call")])), refused());
        // Parameter mirrors sent in an earlier era are checked too, without asking for the others.
        let search = call("search", json!({"q": "x"}), None);
        assert_eq!(run(&search, &headers(&[("mcp-param-q", "x")])), Ok(()));
        assert_eq!(run(&search, &headers(&[("mcp-param-q", "y")])), refused());
        let batch = format!("[{body}]");
        assert_eq!(run(&batch, &headers(&[("mcp-method", "tools/call"), ("mcp-name", "other")])), REFUSED);
        let mut batch_modern = parse_with(batch.as_bytes(), false).unwrap();
        batch_modern.batch = true;
        assert!(check(&batch_modern, &headers(&[("mcp-protocol-version", MODERN)]), &|_| None).is_err());
    }

    #[test]
    fn mcp_name_in_the_base64_sentinel_form() {
        let encoded = format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode("tâche"));
        let body = call("tâche", json!({}), Some(MODERN));
        let m = MirrorHeaders {
            method: vec!["tools/call".into()],
            name: vec![encoded],
            protocol_version: vec![MODERN.into()],
            params: vec![],
        };
        assert_eq!(run(&body, &m), Ok(()));
        assert_eq!(decode_header_value("=?base64?dA==?="), Some("t".into()));
        assert_eq!(decode_header_value("=?base64?dB==?="), None, "non-canonical");
        assert_eq!(decode_header_value("=?base64?!!?="), None);
        assert_eq!(decode_header_value("=?BASE64?dA==?="), Some("=?BASE64?dA==?=".into()), "markers are lower case");
        assert_eq!(decode_header_value("=?base64?/w==?="), None, "not UTF-8");
        assert_eq!(decode_header_value("café"), None, "non-ASCII must be encoded");
        assert_eq!(decode_header_value("a\u{7f}"), None, "control character");
    }

    #[test]
    fn declared_parameters_must_be_mirrored_exactly() {
        let q = |value: Value, header: Option<&'static str>| {
            let extra: Vec<_> = header.map(|h| ("mcp-param-q", h)).into_iter().collect();
            run(&call("search", json!({"q": value}), Some(MODERN)), &modern(&extra))
        };
        assert_eq!(q(json!("safe"), Some("safe")), Ok(()));
        assert_eq!(q(json!("evil"), Some("safe")), refused(), "forged");
        assert_eq!(q(json!("evil"), None), refused(), "missing while the body has it");
        assert_eq!(q(Value::Null, None), Ok(()), "null: no header expected");
        assert_eq!(q(Value::Null, Some("x")), refused(), "a header for a value the body does not carry");
        assert_eq!(q(json!("Hello, 世界"), Some("=?base64?SGVsbG8sIOS4lueVjA==?=")), Ok(()));
        assert_eq!(q(json!("=?base64?literal?="), Some("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=")), Ok(()));
        assert_eq!(
            q(json!("=?base64?literal?="), Some("=?base64?literal?=")),
            refused(),
            "sentinel-shaped value not encoded"
        );
        assert_eq!(q(json!("café"), Some("café")), refused(), "invalid characters");
        assert_eq!(q(json!(7), Some("7")), refused(), "a string parameter given a number");
        let absent = run(&call("search", json!({}), Some(MODERN)), &modern(&[]));
        assert_eq!(absent, Ok(()), "parameter not in arguments, no header");
        let twice = run(
            &call("search", json!({"q": "a"}), Some(MODERN)),
            &modern(&[("mcp-param-q", "a"), ("mcp-param-q", "a")]),
        );
        assert_eq!(twice, refused());
        // Unrecognised Mcp-Param-* headers, and those of tools the filter knows nothing of, pass.
        let other = run(
            &call("search", json!({"q": "a"}), Some(MODERN)),
            &modern(&[("mcp-param-q", "a"), ("mcp-param-zone", "x")]),
        );
        assert_eq!(other, Ok(()));
        let unknown_tool = headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "other"),
            ("mcp-param-q", "x"),
        ]);
        assert_eq!(run(&call("other", json!({"q": "y"}), Some(MODERN)), &unknown_tool), Ok(()));
    }

    #[test]
    fn integers_compare_numerically_and_booleans_as_words_at_nested_paths() {
        let limit = |value: Value, header: &'static str| {
            run(&call("search", json!({"limit": value}), Some(MODERN)), &modern(&[("mcp-param-limit", header)]))
        };
        assert_eq!(limit(json!(42), "42"), Ok(()));
        assert_eq!(limit(json!(42), "42.0"), Ok(()));
        assert_eq!(limit(json!(42.0), "42"), Ok(()));
        assert_eq!(limit(json!(-7), "-7"), Ok(()));
        for bad in ["43", "4.2e1", "+42", "0x2a", " 42", "inf", "", "42.", "42.5", "-", "4-2", "١٢"] {
            assert_eq!(limit(json!(42), bad), refused(), "{bad:?}");
        }
        assert_eq!(limit(json!(9_007_199_254_740_993u64), "9007199254740993"), refused(), "beyond the safe range");
        assert_eq!(limit(json!("42"), "42"), refused(), "an integer parameter given a string");
        let exact = |value: Value, header: &'static str| {
            let body = call("search", json!({"opts": {"exact": value}}), Some(MODERN));
            run(&body, &modern(&[("mcp-param-exact", header)]))
        };
        assert_eq!(exact(json!(true), "true"), Ok(()));
        assert_eq!(exact(json!(false), "false"), Ok(()));
        assert_eq!(exact(json!(true), "True"), refused());
        assert_eq!(exact(json!(true), "1"), refused());
    }

    #[test]
    fn annotations_are_read_only_where_the_spec_allows_them() {
        let params = declared(&search_schema()).unwrap();
        assert_eq!(params.len(), 3);
        assert_eq!(
            params.iter().find(|p| p.header == "exact"),
            Some(&ParamHeader {
                header: "exact".into(),
                path: vec!["opts".into(), "exact".into()],
                kind: ParamType::Boolean
            })
        );
        let invalid = [
            json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "object", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A\r\nX"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": 5}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A"}, "b": {"type": "string", "x-mcp-header": "a"}}}),
            json!({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"anyOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
            json!({"$defs": {"d": {"type": "string", "x-mcp-header": "A"}}}),
            json!({"type": "string", "x-mcp-header": "Root"}),
        ];
        for schema in invalid {
            assert!(declared(&schema).is_err(), "{schema}");
        }
        let named = json!({"properties": {"x-mcp-header": {"type": "string"}}});
        assert_eq!(declared(&named), Ok(vec![]), "a property may be named x-mcp-header");
    }
}
