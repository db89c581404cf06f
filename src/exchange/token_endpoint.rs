//! What RFC 8693 and RFC 7523 token requests share: an OAuth token endpoint reached through an Envoy
//! cluster, the gateway's client authentication (RFC 6749 section 2.3), the form POST, and the token
//! response (RFC 6749 section 5.1, with RFC 8693's `issued_token_type` where the grant defines it).

use super::{Callout, ExchangeError, Failure, Issued, form_component, form_encode, status_error};
use base64::Engine;
use serde_json::Value;

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

/// A token endpoint and how the gateway authenticates to it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_auth: ClientAuth,
}

impl Endpoint {
    /// The form POST of `form` (grant parameters) with the client authentication added.
    pub fn callout<'a>(&'a self, mut form: Vec<(&'a str, &'a str)>, timeout_ms: u64) -> Callout {
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), self.path.clone()),
            (":authority".to_string(), self.authority.clone()),
            ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
            ("accept".to_string(), "application/json".to_string()),
        ];
        match (&self.client_auth, &self.client_id) {
            (ClientAuth::Basic, Some(id)) => {
                let secret = self.client_secret.as_ref().map_or("", |c| c.0.as_str());
                let pair = format!("{}:{}", form_component(id), form_component(secret));
                let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
                headers.push(("authorization".to_string(), value));
            }
            (ClientAuth::Post, Some(id)) => {
                form.push(("client_id", id));
                if let Some(secret) = &self.client_secret {
                    form.push(("client_secret", &secret.0));
                }
            }
            _ => {}
        }
        Callout { cluster: self.cluster.clone(), headers, body: form_encode(&form).into_bytes(), timeout_ms }
    }
}

/// Validates a token endpoint's answer. `issued_token_type`: the type RFC 8693 requires the answer to
/// name (None for grants whose answer has no such field, like RFC 7523's).
pub fn answer(status: u16, body: &[u8], issued_token_type: Option<&str>) -> Result<Issued, ExchangeError> {
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
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        // RFC 8693 section 2.2.1: N_A for tokens that are not access tokens (an ID-JAG).
        Some(t) if t.eq_ignore_ascii_case("N_A") && issued_token_type.is_some() => {}
        _ => return Err(garbage("token_type is not Bearer")),
    }
    if let Some(wanted) = issued_token_type
        && doc.get("issued_token_type").and_then(Value::as_str) != Some(wanted)
    {
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

    fn endpoint(auth: ClientAuth) -> Endpoint {
        Endpoint {
            cluster: "as".into(),
            authority: "as.test".into(),
            path: "/token".into(),
            client_id: Some("gw id".into()),
            client_secret: Some(Secret("s3cr:t".into())),
            client_auth: auth,
        }
    }

    #[test]
    fn basic_auth_form_encodes_id_and_secret() {
        let c = endpoint(ClientAuth::Basic).callout(vec![("a", "b")], 5);
        assert_eq!(c.body, b"a=b");
        let auth = c.headers.iter().find(|(n, _)| n == "authorization").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(&auth.1[6..]).unwrap();
        assert_eq!(decoded, b"gw+id:s3cr%3At");
    }

    #[test]
    fn post_auth_in_the_body_and_none_sends_nothing() {
        let c = endpoint(ClientAuth::Post).callout(vec![("a", "b")], 5);
        assert_eq!(c.body, b"a=b&client_id=gw+id&client_secret=s3cr%3At");
        assert!(!c.headers.iter().any(|(n, _)| n == "authorization"));
        let c = endpoint(ClientAuth::None).callout(vec![("a", "b")], 5);
        assert_eq!(c.body, b"a=b");
        assert!(!c.headers.iter().any(|(n, _)| n == "authorization"));
        assert!(!format!("{:?}", endpoint(ClientAuth::Basic)).contains("s3cr"));
    }

    #[test]
    fn plain_token_response_needs_bearer() {
        let ok = br#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#;
        assert_eq!(answer(200, ok, None).unwrap(), Issued { token: "at".into(), lifetime_seconds: Some(60) });
        let n_a = br#"{"access_token":"at","token_type":"N_A"}"#;
        assert_eq!(answer(200, n_a, None).unwrap_err().status, 502, "N_A is for token exchange only");
        assert_eq!(answer(400, br#"{"error":"invalid_grant"}"#, None).unwrap_err().status, 403);
        assert_eq!(answer(401, br#"{"error":"invalid_client"}"#, None).unwrap_err().status, 502);
        assert_eq!(answer(400, br#"{"error":"invalid_client"}"#, None).unwrap_err().status, 502);
        assert_eq!(answer(401, br#"{"error":"invalid_token"}"#, None).unwrap_err().status, 401);
    }
}
