//! RFC 7523 section 2.1: a JWT presented as an authorization grant
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, `assertion=<JWT>`). The assertion is the
//! client's verified token, or the token another target obtained (`assertion_from`): with an RFC 8693
//! target that asks an enterprise IdP for an ID-JAG, this is the second step of the Identity Assertion
//! Authorization Grant (MCP's enterprise-managed authorization).

use super::token_endpoint::{self, Endpoint};
use super::{Callout, ExchangeError, Issued};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub scope: Option<String>,
    /// RFC 8707 resource indicator, for authorization servers serving several resources.
    pub resource: Option<String>,
    /// The target whose token is the assertion (index into `upstream_credentials.targets`); None: the
    /// client's verified token.
    pub assertion_from: Option<usize>,
}

pub fn request(s: &Settings, assertion: &str, timeout_ms: u64) -> Callout {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", GRANT_TYPE), ("assertion", assertion)];
    for (name, value) in [("scope", &s.scope), ("resource", &s.resource)] {
        if let Some(v) = value {
            form.push((name, v));
        }
    }
    s.endpoint.callout(form, timeout_ms)
}

/// An RFC 6749 section 5.1 access token response: a Bearer `access_token`.
pub fn response(status: u16, body: &[u8]) -> Result<Issued, ExchangeError> {
    token_endpoint::answer(status, body, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::token_endpoint::{ClientAuth, Secret};

    #[test]
    fn request_carries_grant_assertion_and_client_auth() {
        let s = Settings {
            endpoint: Endpoint {
                cluster: "as".into(),
                authority: "as.test".into(),
                path: "/oauth2/token".into(),
                client_id: Some("mcp-gateway".into()),
                client_secret: Some(Secret("x".into())),
                client_auth: ClientAuth::Post,
            },
            scope: Some("crm.read".into()),
            resource: None,
            assertion_from: None,
        };
        let c = request(&s, "eyJ.a.b", 900);
        assert_eq!(
            String::from_utf8(c.body).unwrap(),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=eyJ.a.b&scope=crm.read\
             &client_id=mcp-gateway&client_secret=x"
        );
        assert_eq!((c.cluster.as_str(), c.timeout_ms), ("as", 900));
        assert!(c.headers.contains(&(":path".into(), "/oauth2/token".into())));
    }

    #[test]
    fn response_is_a_bearer_token() {
        let ok = br#"{"access_token":"at","token_type":"Bearer","expires_in":3600}"#;
        assert_eq!(response(200, ok).unwrap(), Issued { token: "at".into(), lifetime_seconds: Some(3600) });
        assert_eq!(response(400, br#"{"error":"invalid_grant"}"#).unwrap_err().status, 403);
        assert_eq!(response(500, b"").unwrap_err().status, 502);
    }
}
