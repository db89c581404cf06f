//! Seed 001's connector contract: `POST /api/connectors/requestAuth` with `{userId, userToken,
//! providerId}` → `{accessToken}`.
//!
//! The seed's decorator trusts `userId` from the client. Here it must equal the verified token's subject
//! (or a configured claim): a client cannot ask for another user's provider token.

use super::{Callout, ExchangeError, Failure, Issued, link, status_error};
use crate::jwt::Principal;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    /// The provider this target serves; the request's `providerId` must equal it.
    pub provider_id: String,
    /// Verified claim that `userId` must equal.
    pub user_id_claim: String,
    /// Reuse time for a provider token when the backend gives no `expiresIn`.
    pub default_ttl_seconds: u64,
    /// Account linking by URL elicitation, when configured.
    pub link: Option<link::Settings>,
}

/// The three `_meta` parameters, checked against the verified caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    pub user_id: String,
    pub user_token: String,
    pub provider_id: String,
}

pub fn parameters(
    s: &Settings,
    meta: Option<&Map<String, Value>>,
    caller: &Principal,
) -> Result<Parameters, ExchangeError> {
    let provider = &s.provider_id;
    let get = |key: &str| meta.and_then(|m| m.get(key));
    let missing: Vec<&str> = ["userId", "userToken", "providerId"].into_iter().filter(|k| get(k).is_none()).collect();
    if !missing.is_empty() {
        return Err(ExchangeError::new(
            400,
            Failure::MissingParameters,
            format!("Missing required OAuth parameters for {provider}"),
            format!("Required: userId, userToken, providerId. Missing: {}", missing.join(", ")),
        ));
    }
    let text = |key: &'static str| -> Result<String, ExchangeError> {
        match get(key) {
            Some(Value::String(v)) if !v.is_empty() && v.len() <= 8192 => Ok(v.clone()),
            _ => Err(ExchangeError::new(
                400,
                Failure::InvalidParameter,
                format!("Invalid {key} format for {provider}"),
                format!("{key} must be a non-empty string"),
            )),
        }
    };
    let (user_id, user_token, provider_id) = (text("userId")?, text("userToken")?, text("providerId")?);
    if provider_id != *provider {
        return Err(ExchangeError::new(
            403,
            Failure::ProviderMismatch,
            format!("This tool requires {provider} authentication"),
            format!("Received providerId: {}", provider_id.chars().take(64).collect::<String>()),
        ));
    }
    let verified = caller.claim(&s.user_id_claim).and_then(Value::as_str);
    if verified != Some(user_id.as_str()) {
        return Err(ExchangeError::new(
            403,
            Failure::UserMismatch,
            "userId does not match the authenticated user",
            format!("userId must equal the token's {} claim", s.user_id_claim),
        ));
    }
    Ok(Parameters { user_id, user_token, provider_id })
}

pub fn request(s: &Settings, p: &Parameters, timeout_ms: u64) -> Callout {
    let body = json!({"userId": p.user_id, "userToken": p.user_token, "providerId": p.provider_id});
    Callout {
        cluster: s.cluster.clone(),
        headers: vec![
            (":method".into(), "POST".into()),
            (":path".into(), s.path.clone()),
            (":authority".into(), s.authority.clone()),
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json".into()),
        ],
        body: body.to_string().into_bytes(),
        timeout_ms,
    }
}

pub fn response(s: &Settings, status: u16, body: &[u8]) -> Result<Issued, ExchangeError> {
    if status != 200 {
        let mut e = status_error(status, None);
        e.link_required = s.link.as_ref().is_some_and(|l| l.is_unlinked(status, body));
        return Err(e);
    }
    let doc: Value = serde_json::from_slice(body).map_err(|_| {
        ExchangeError::new(502, Failure::ApiError, "Failed to exchange token", "backend answered with invalid JSON")
    })?;
    let token = doc
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| (0x21..0x7f).contains(&b)));
    let token = token.ok_or_else(|| {
        ExchangeError::new(502, Failure::ApiError, "Failed to exchange token", "response has no usable accessToken")
    })?;
    let lifetime = match doc.get("expiresIn").or_else(|| doc.get("expires_in")) {
        Some(v) => match v.as_i64() {
            Some(n) if n > 0 => n as u64,
            _ => {
                return Err(ExchangeError::new(
                    502,
                    Failure::ApiError,
                    "Failed to exchange token",
                    "expiresIn is not a positive number",
                ));
            }
        },
        None => s.default_ttl_seconds,
    };
    Ok(Issued { token: token.to_string(), lifetime_seconds: Some(lifetime) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            cluster: "backend".into(),
            authority: "backend.test".into(),
            path: "/api/connectors/requestAuth".into(),
            provider_id: "reddit".into(),
            user_id_claim: "sub".into(),
            default_ttl_seconds: 60,
            link: None,
        }
    }

    fn alice() -> Principal {
        Principal {
            provider: 0,
            subject: Some("alice".into()),
            scopes: vec![],
            expires_at: None,
            claims: json!({"sub": "alice"}).as_object().unwrap().clone(),
        }
    }

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parameters_checked_against_the_verified_caller() {
        let s = settings();
        let ok = meta(json!({"userId": "alice", "userToken": "tmp", "providerId": "reddit"}));
        assert_eq!(parameters(&s, Some(&ok), &alice()).unwrap().user_token, "tmp");
        let e = parameters(&s, Some(&meta(json!({"userId": "alice"}))), &alice()).unwrap_err();
        assert_eq!((e.status, e.error), (400, Failure::MissingParameters));
        assert!(e.details.ends_with("Missing: userToken, providerId"), "{}", e.details);
        assert_eq!(parameters(&s, None, &alice()).unwrap_err().error, Failure::MissingParameters);
        let e =
            parameters(&s, Some(&meta(json!({"userId": "alice", "userToken": "", "providerId": "reddit"}))), &alice());
        assert_eq!(e.unwrap_err().error, Failure::InvalidParameter);
        let e =
            parameters(&s, Some(&meta(json!({"userId": "alice", "userToken": "t", "providerId": "github"}))), &alice());
        assert_eq!(
            e.unwrap_err(),
            ExchangeError::new(
                403,
                Failure::ProviderMismatch,
                "This tool requires reddit authentication",
                "Received providerId: github"
            )
        );
        let e =
            parameters(&s, Some(&meta(json!({"userId": "bob", "userToken": "t", "providerId": "reddit"}))), &alice());
        assert_eq!((e.clone().unwrap_err().status, e.unwrap_err().error), (403, Failure::UserMismatch));
    }

    #[test]
    fn request_and_response() {
        let s = settings();
        let p = Parameters { user_id: "alice".into(), user_token: "tmp".into(), provider_id: "reddit".into() };
        let c = request(&s, &p, 1_000);
        let body: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(body, json!({"userId": "alice", "userToken": "tmp", "providerId": "reddit"}));
        assert_eq!(
            response(&s, 200, br#"{"accessToken":"prov"}"#).unwrap(),
            Issued { token: "prov".into(), lifetime_seconds: Some(60) }
        );
        assert_eq!(response(&s, 200, br#"{"accessToken":"p","expiresIn":5}"#).unwrap().lifetime_seconds, Some(5));
        assert_eq!(response(&s, 200, br#"{"nope":1}"#).unwrap_err().status, 502);
        assert_eq!(response(&s, 200, br#"{"accessToken":"p","expiresIn":-1}"#).unwrap_err().status, 502);
        assert_eq!(response(&s, 401, b"").unwrap_err().status, 401);
        assert_eq!(response(&s, 404, b"").unwrap_err().status, 502);
    }
}
