//! Account linking by URL elicitation, for `connector` targets: when the connector backend says the user
//! has not granted access to the provider yet, the client is sent to a link URL (the backend's consent
//! flow) instead of getting a dead-end error.
//!
//! - 2025-11-25 clients that declared URL elicitation get JSON-RPC error -32042 (URLElicitationRequired)
//!   carrying a URL-mode elicitation (`mode`, `elicitationId`, `url`, `message`);
//! - 2026-07-28 clients that declared it get an `input_required` result (multi round-trip requests)
//!   whose `inputRequests` hold the same URL elicitation and whose `requestState` is the signed state;
//! - every other client keeps seed 001's error.
//!
//! The `{state}` in the URL is integrity-protected so the backend can trust who and what it links:
//! `base64url(JSON {"sub", "provider", "exp"}) "." base64url(HMAC-SHA256(secret, first part))`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// JSON-RPC error code of URLElicitationRequiredError (MCP 2025-11-25, client/elicitation).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// The revision that replaced -32042 by multi round-trip requests.
pub const MRTR_VERSION: &str = "2026-07-28";
/// `requestState` values this filter issues start with this, so that a retry's state is told apart from
/// a state the MCP server itself issued.
pub const STATE_PREFIX: &str = "mcp-authz.link.";

/// A secret: never printed.
#[derive(Clone)]
pub struct Key(pub Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// With `{userId}`, `{providerId}` and `{state}` (each percent-encoded when filled in).
    pub url_template: String,
    pub key: Key,
    /// Backend answers that mean "no grant yet": these statuses, or these `error` values in the body.
    pub statuses: Vec<u16>,
    pub error_codes: Vec<String>,
    pub ttl_seconds: u64,
    pub message: String,
}

/// What the client can be asked to do, from what it declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEra {
    /// No URL elicitation declared (or an older revision): seed 001's error.
    Plain,
    /// 2025-11-25 with `capabilities.elicitation.url`: error -32042.
    UrlElicitationError,
    /// 2026-07-28 with `clientCapabilities.elicitation.url` in the request's `_meta`: `input_required`.
    InputRequired,
}

/// The client's era from a `tools/call`'s `_meta` (2026-07-28 puts version and capabilities on every
/// request) or, for 2025-11-25, from what its session declared at `initialize` (`declared_url`).
pub fn era(
    meta: Option<&serde_json::Map<String, Value>>,
    protocol_header: Option<&str>,
    declared_url: bool,
) -> ClientEra {
    let meta_version = meta.and_then(|m| m.get("io.modelcontextprotocol/protocolVersion")).and_then(Value::as_str);
    if let Some(version) = meta_version {
        let caps = meta.and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"));
        let url = caps.and_then(|c| c.get("elicitation")).and_then(|e| e.get("url")).is_some_and(Value::is_object);
        return if version >= MRTR_VERSION && url { ClientEra::InputRequired } else { ClientEra::Plain };
    }
    match protocol_header {
        Some("2025-11-25") if declared_url => ClientEra::UrlElicitationError,
        _ => ClientEra::Plain,
    }
}

impl Settings {
    /// Whether a backend answer means the user has not linked the provider.
    pub fn is_unlinked(&self, status: u16, body: &[u8]) -> bool {
        if self.statuses.contains(&status) {
            return true;
        }
        if status == 200 || self.error_codes.is_empty() {
            return false;
        }
        let doc: Option<Value> = serde_json::from_slice(body).ok();
        let code = doc.as_ref().and_then(|d| d.get("error")).and_then(Value::as_str);
        code.is_some_and(|c| self.error_codes.iter().any(|e| e == c))
    }

    /// The signed state for `user` and `provider`, valid `ttl_seconds` from `now`.
    pub fn state(&self, user: &str, provider: &str, now: u64) -> String {
        let payload = json!({"sub": user, "provider": provider, "exp": now + self.ttl_seconds}).to_string();
        let body = URL_SAFE_NO_PAD.encode(payload);
        let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(&self.key.0, body.as_bytes()));
        format!("{body}.{mac}")
    }

    /// `(user, provider)` of a state this filter signed and that has not expired.
    pub fn verify_state(&self, state: &str, now: u64) -> Option<(String, String)> {
        let (body, mac) = state.split_once('.')?;
        let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let wanted = hmac_sha256(&self.key.0, body.as_bytes());
        // Constant time: the comparison must not tell an attacker how much of a forged MAC was right.
        if given.len() != wanted.len() || given.iter().zip(wanted).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return None;
        }
        let doc: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        if doc.get("exp").and_then(Value::as_u64)? <= now {
            return None;
        }
        Some((doc.get("sub")?.as_str()?.to_string(), doc.get("provider")?.as_str()?.to_string()))
    }

    /// The URL-mode elicitation (2025-11-25 shape; 2026-07-28 leaves out `elicitationId`).
    pub fn elicitation(&self, user: &str, provider: &str, now: u64, with_id: bool) -> (Value, String) {
        let state = self.state(user, provider, now);
        let url = self
            .url_template
            .replace("{userId}", &super::form_component(user))
            .replace("{providerId}", &super::form_component(provider))
            .replace("{state}", &super::form_component(&state));
        let mut e = json!({"mode": "url", "url": url, "message": self.message.replace("{providerId}", provider)});
        if with_id {
            // Unique per state; the backend can recompute it from the state it receives.
            let digest = Sha256::digest(state.as_bytes());
            e["elicitationId"] = Value::String(digest[..16].iter().map(|b| format!("{b:02x}")).collect());
        }
        (e, state)
    }

    /// The answer to a `tools/call` whose user has not linked `provider`, for `era` (None: Plain, keep
    /// the exchange error).
    pub fn answer(&self, era: ClientEra, id: &Value, user: &str, provider: &str, now: u64) -> Option<Value> {
        match era {
            ClientEra::Plain => None,
            ClientEra::UrlElicitationError => {
                let (e, _) = self.elicitation(user, provider, now, true);
                Some(json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": URL_ELICITATION_REQUIRED,
                    "message": format!("Connect your {provider} account to continue"),
                    "data": {"elicitations": [e]}}}))
            }
            ClientEra::InputRequired => {
                let (e, state) = self.elicitation(user, provider, now, false);
                Some(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "resultType": "input_required",
                    "inputRequests": {format!("link_{provider}"): {"method": "elicitation/create", "params": e}},
                    "requestState": format!("{STATE_PREFIX}{state}")}}))
            }
        }
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let (mut inner, mut outer) = (Sha256::new(), Sha256::new());
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            url_template: "https://backend.test/link?user={userId}&provider={providerId}&state={state}".into(),
            key: Key(b"0123456789abcdef0123456789abcdef".to_vec()),
            statuses: vec![404],
            error_codes: vec!["no_grant".into()],
            ttl_seconds: 600,
            message: "Connect your {providerId} account".into(),
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn state_verifies_until_it_expires_and_not_when_touched() {
        let s = settings();
        let state = s.state("alice", "reddit", 1_000);
        assert_eq!(s.verify_state(&state, 1_599), Some(("alice".into(), "reddit".into())));
        assert_eq!(s.verify_state(&state, 1_600), None, "expired");
        let (body, mac) = state.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"mallory","provider":"reddit","exp":99999}"#);
        assert_eq!(s.verify_state(&format!("{forged}.{mac}"), 1_000), None);
        assert_eq!(s.verify_state(&format!("{body}.{}", &mac[1..]), 1_000), None);
        let other = Settings { key: Key(b"another key of at least 32 bytes!".to_vec()), ..settings() };
        assert_eq!(other.verify_state(&state, 1_000), None);
    }

    #[test]
    fn unlinked_by_status_or_error_code() {
        let s = settings();
        assert!(s.is_unlinked(404, b""));
        assert!(s.is_unlinked(403, br#"{"error":"no_grant"}"#));
        assert!(!s.is_unlinked(403, br#"{"error":"forbidden"}"#));
        assert!(!s.is_unlinked(500, b"junk"));
    }

    #[test]
    fn era_from_meta_or_session() {
        let meta = |v: Value| v.as_object().cloned();
        let m2026 = meta(json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}}));
        assert_eq!(era(m2026.as_ref(), None, false), ClientEra::InputRequired);
        let no_url = meta(json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}));
        assert_eq!(era(no_url.as_ref(), Some("2026-07-28"), true), ClientEra::Plain);
        assert_eq!(era(None, Some("2025-11-25"), true), ClientEra::UrlElicitationError);
        assert_eq!(era(None, Some("2025-11-25"), false), ClientEra::Plain);
        assert_eq!(era(None, Some("2025-06-18"), true), ClientEra::Plain);
        assert_eq!(era(None, None, true), ClientEra::Plain);
    }

    #[test]
    fn elicitation_bodies() {
        let s = settings();
        let v = s.answer(ClientEra::UrlElicitationError, &json!(7), "alice", "reddit", 1_000).unwrap();
        assert_eq!((v["id"].clone(), v["error"]["code"].clone()), (json!(7), json!(-32042)));
        let e = &v["error"]["data"]["elicitations"][0];
        assert_eq!((e["mode"].as_str(), e["message"].as_str()), (Some("url"), Some("Connect your reddit account")));
        assert_eq!(e["elicitationId"].as_str().unwrap().len(), 32);
        let url = e["url"].as_str().unwrap();
        let state = url.split("&state=").nth(1).unwrap().replace("%2E", ".").replace("%2D", "-").replace("%5F", "_");
        assert!(url.starts_with("https://backend.test/link?user=alice&provider=reddit&state="), "{url}");
        assert_eq!(s.verify_state(&state, 1_000), Some(("alice".into(), "reddit".into())));

        let v = s.answer(ClientEra::InputRequired, &json!("r1"), "alice", "reddit", 1_000).unwrap();
        let r = &v["result"];
        assert_eq!(r["resultType"], "input_required");
        let params = &r["inputRequests"]["link_reddit"]["params"];
        assert_eq!(
            (r["inputRequests"]["link_reddit"]["method"].as_str(), params["mode"].as_str()),
            (Some("elicitation/create"), Some("url"))
        );
        assert!(params.get("elicitationId").is_none(), "2026-07-28 removed elicitationId");
        let state = r["requestState"].as_str().unwrap().strip_prefix(STATE_PREFIX).unwrap();
        assert_eq!(s.verify_state(state, 1_000), Some(("alice".into(), "reddit".into())));
        assert_eq!(s.answer(ClientEra::Plain, &json!(1), "alice", "reddit", 1_000), None);
    }
}
