//! What every local reply must be, whatever input led to it: header values a proxy can send (no control
//! characters, so no header injection), a `WWW-Authenticate` challenge that parses (RFC 6750: auth-params
//! as quoted strings without `"` or `\` inside), and a JSON body when it says it is JSON.

use mcp_authz::http_reply::LocalReply;

pub fn check(reply: &LocalReply) {
    assert!((200..600).contains(&reply.status), "status {}", reply.status);
    for (name, value) in &reply.headers {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "header name {name:?}"
        );
        assert!(
            value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80),
            "control character in {name}: {value:?}"
        );
        if name == "www-authenticate" {
            check_challenge(value);
        }
    }
    if reply.header("content-type") == Some("application/json") {
        assert!(serde_json::from_str::<serde_json::Value>(&reply.body).is_ok(), "body is not JSON: {:?}", reply.body);
    }
}

/// `Bearer` alone, or `Bearer name="value", name="value"...` with token names and plain quoted values.
fn check_challenge(value: &str) {
    let Some(params) = value.strip_prefix("Bearer") else { panic!("challenge {value:?} is not Bearer") };
    if params.is_empty() {
        return;
    }
    let mut rest = params.strip_prefix(' ').unwrap_or_else(|| panic!("challenge {value:?}"));
    loop {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("auth-param in {value:?}"));
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{value:?}");
        let end = after.find(['"', '\\']).unwrap_or_else(|| panic!("unterminated quoted string in {value:?}"));
        assert_eq!(after.as_bytes()[end], b'"', "backslash in a quoted string of {value:?}");
        rest = &after[end + 1..];
        if rest.is_empty() {
            return;
        }
        rest = rest.strip_prefix(", ").unwrap_or_else(|| panic!("garbage after a quoted string in {value:?}"));
    }
}
