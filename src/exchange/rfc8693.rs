//! RFC 8693 OAuth 2.0 Token Exchange: request building and response validation.

use super::token_endpoint::{self, Endpoint};
use super::{Callout, ExchangeError, Issued};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// draft-ietf-oauth-identity-assertion-authz-grant: the Identity Assertion JWT Authorization Grant.
pub const ID_JAG_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";

#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub requested_token_type: Option<String>,
    pub subject_token_type: String,
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
    s.endpoint.callout(form, timeout_ms)
}

/// Validates the token endpoint's answer (RFC 8693 section 2.2).
pub fn response(s: &Settings, status: u16, body: &[u8]) -> Result<Issued, ExchangeError> {
    let wanted = s.requested_token_type.as_deref().unwrap_or(ACCESS_TOKEN_TYPE);
    token_endpoint::answer(status, body, Some(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::token_endpoint::{ClientAuth, Secret};
    use base64::Engine;

    fn settings(auth: ClientAuth) -> Settings {
        Settings {
            endpoint: Endpoint {
                cluster: "sts".into(),
                authority: "sts.test".into(),
                path: "/token".into(),
                client_id: Some("gw id".into()),
                client_secret: Some(Secret("s3cr:t".into())),
                client_auth: auth,
            },
            audience: Some("https://api.test".into()),
            resource: None,
            scope: Some("tasks:read tasks:write".into()),
            requested_token_type: None,
            subject_token_type: ACCESS_TOKEN_TYPE.into(),
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
