//! RFC 8693 OAuth 2.0 Token Exchange: request building and response validation.

use super::{Callout, ExchangeError, Failure, Issued, form_component, form_encode, status_error};
use base64::Engine;
use serde_json::Value;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// HTTP Basic with form-encoded id and secret (RFC 6749 section 2.3.1).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// A client secret: never printed, not even in debug output.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub requested_token_type: Option<String>,
    pub subject_token_type: String,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_auth: ClientAuth,
}

pub fn request(s: &Settings, subject_token: &str, timeout_ms: u64) -> Callout {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", GRANT_TYPE),
        ("subject_token", subject_token),
        ("subject_token_type", &s.subject_token_type),
    ];
    for (name, value) in [
        ("audience", &s.audience),
        ("resource", &s.resource),
        ("scope", &s.scope),
        ("requested_token_type", &s.requested_token_type),
    ] {
        if let Some(v) = value {
            form.push((name, v));
        }
    }
    let client = (&s.client_auth, s.client_id.as_deref(), s.client_secret.as_ref());
    form_post((&s.cluster, &s.authority, &s.path), form, client, timeout_ms)
}

/// A form POST to an OAuth endpoint at (`cluster`, `authority`, `path`) with client authentication
/// (RFC 6749 section 2.3.1): HTTP Basic with the form-encoded id and secret, or both in the form. Shared
/// by every callout the filter makes as an OAuth client (token exchange, introspection).
pub fn form_post<'a>(
    (cluster, authority, path): (&str, &str, &str),
    mut form: Vec<(&'a str, &'a str)>,
    (auth, client_id, secret): (&ClientAuth, Option<&'a str>, Option<&'a Secret>),
    timeout_ms: u64,
) -> Callout {
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), authority.to_string()),
        ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
        ("accept".to_string(), "application/json".to_string()),
    ];
    match (auth, client_id) {
        (ClientAuth::Basic, Some(id)) => {
            let secret = secret.map_or("", |c| c.0.as_str());
            let pair = format!("{}:{}", form_component(id), form_component(secret));
            let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
            headers.push(("authorization".to_string(), value));
        }
        (ClientAuth::Post, Some(id)) => {
            form.push(("client_id", id));
            if let Some(secret) = secret {
                form.push(("client_secret", &secret.0));
            }
        }
        _ => {}
    }
    Callout { cluster: cluster.to_string(), headers, body: form_encode(&form).into_bytes(), timeout_ms }
}

/// Validates the token endpoint's answer (RFC 8693 section 2.2).
pub fn response(s: &Settings, status: u16, body: &[u8]) -> Result<Issued, ExchangeError> {
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        let oauth_error = doc.as_ref().and_then(|d| d.get("error")).and_then(Value::as_str);
        return Err(status_error(status, oauth_error));
    }
    let garbage = |why: &str| ExchangeError::new(502, Failure::ApiError, "Token exchange failed", why.to_string());
    let doc = doc.ok_or_else(|| garbage("exchange server answered with invalid JSON"))?;
    let token = doc.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
    let token = token.ok_or_else(|| garbage("response has no access_token"))?;
    if token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(garbage("access_token is not a header-safe string"));
    }
    match doc.get("token_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("N_A") => {}
        _ => return Err(garbage("token_type is not Bearer")),
    }
    let wanted = s.requested_token_type.as_deref().unwrap_or(ACCESS_TOKEN_TYPE);
    if doc.get("issued_token_type").and_then(Value::as_str) != Some(wanted) {
        return Err(garbage("issued_token_type is not the requested type"));
    }
    let lifetime_seconds = match doc.get("expires_in") {
        None => None,
        Some(v) => match v.as_i64() {
            Some(n) if n > 0 => Some(n as u64),
            _ => return Err(garbage("expires_in is not a positive number")),
        },
    };
    Ok(Issued { token: token.to_string(), lifetime_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(auth: ClientAuth) -> Settings {
        Settings {
            cluster: "sts".into(),
            authority: "sts.test".into(),
            path: "/token".into(),
            audience: Some("https://api.test".into()),
            resource: None,
            scope: Some("tasks:read tasks:write".into()),
            requested_token_type: None,
            subject_token_type: ACCESS_TOKEN_TYPE.into(),
            client_id: Some("gw id".into()),
            client_secret: Some(Secret("s3cr:t".into())),
            client_auth: auth,
        }
    }

    #[test]
    fn request_is_form_encoded_with_basic_auth() {
        let c = request(&settings(ClientAuth::Basic), "subj.tok.en", 2_000);
        let body = String::from_utf8(c.body).unwrap();
        assert_eq!(
            body,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=subj.tok.en\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&audience=https%3A%2F%2Fapi.test\
             &scope=tasks%3Aread+tasks%3Awrite"
        );
        let auth = c.headers.iter().find(|(n, _)| n == "authorization").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(&auth.1[6..]).unwrap();
        assert_eq!(decoded, b"gw+id:s3cr%3At");
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        assert!(!format!("{:?}", settings(ClientAuth::Basic)).contains("s3cr"));
    }

    #[test]
    fn client_secret_post() {
        let c = request(&settings(ClientAuth::Post), "t", 2_000);
        assert!(String::from_utf8(c.body).unwrap().ends_with("&client_id=gw+id&client_secret=s3cr%3At"));
        assert!(!c.headers.iter().any(|(n, _)| n == "authorization"));
    }

    #[test]
    fn response_validation() {
        let s = settings(ClientAuth::Basic);
        let ok = br#"{"access_token":"new","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":300}"#;
        assert_eq!(response(&s, 200, ok).unwrap(), Issued { token: "new".into(), lifetime_seconds: Some(300) });
        let bad: [&[u8]; 6] = [
            b"<html>",
            br#"{"token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            br#"{"access_token":"","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            br#"{"access_token":"a","token_type":"mac","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            br#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:id_token"}"#,
            br#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":0}"#,
        ];
        for b in bad {
            assert_eq!(response(&s, 200, b).unwrap_err().status, 502, "{}", String::from_utf8_lossy(b));
        }
        assert_eq!(response(&s, 400, br#"{"error":"invalid_target"}"#).unwrap_err().status, 403);
        assert_eq!(response(&s, 500, b"").unwrap_err().status, 502);
    }
}
