//! Registered-claim validation (RFC 7519 section 4.1) for a token whose signature has been verified,
//! and the [`Principal`] the rest of the filter works with.

use super::Rejection;
use super::provider::Provider;
use serde_json::{Map, Value};

/// Who the verified token speaks for. Cheap to share (`Rc`) between the cache and requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub provider: usize,
    pub subject: Option<String>,
    /// Union of `scope` (space-delimited string) and `scp` (array, or string) without duplicates.
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub claims: Map<String, Value>,
}

impl Principal {
    /// A claim by name or dotted path (`realm_access.roles`).
    pub fn claim(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut current = self.claims.get(parts.next()?)?;
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        Some(current)
    }
}

/// Validates `claims` for `provider` at `now` (Unix seconds).
pub fn validate(
    claims: Map<String, Value>,
    provider: &Provider,
    provider_index: usize,
    now: i64,
) -> Result<Principal, Rejection> {
    let skew = provider.clock_skew_seconds as i64;
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == provider.issuer => {}
        Some(Value::String(_)) | None => return Err(Rejection::IssuerNotAllowed),
        Some(_) => return Err(Rejection::BadClaim),
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => provider.audiences.contains(aud),
        Some(Value::Array(list)) => {
            let mut any = false;
            for aud in list {
                let aud = aud.as_str().ok_or(Rejection::BadClaim)?;
                any |= provider.audiences.iter().any(|a| a == aud);
            }
            any
        }
        None => false,
        Some(_) => return Err(Rejection::BadClaim),
    };
    if !audience_ok {
        return Err(Rejection::AudienceNotAllowed);
    }
    let exp = numeric_date(&claims, "exp")?;
    match exp {
        None if provider.require_exp => return Err(Rejection::MissingExp),
        Some(exp) if now > exp.saturating_add(skew) => return Err(Rejection::Expired),
        _ => {}
    }
    if numeric_date(&claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(Rejection::NotYetValid);
    }
    if numeric_date(&claims, "iat")?.is_some_and(|iat| iat > now.saturating_add(skew)) {
        return Err(Rejection::IssuedInFuture);
    }
    let subject = match claims.get("sub") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Rejection::BadClaim),
    };
    let mut scopes: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !s.is_empty() && !scopes.iter().any(|have| have == s) {
            scopes.push(s.to_owned());
        }
    };
    match claims.get("scope") {
        None => {}
        Some(Value::String(s)) => s.split(' ').for_each(&mut add),
        Some(_) => return Err(Rejection::BadClaim),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::String(s)) => s.split(' ').for_each(&mut add),
        Some(Value::Array(list)) => {
            for s in list {
                add(s.as_str().ok_or(Rejection::BadClaim)?);
            }
        }
        Some(_) => return Err(Rejection::BadClaim),
    }
    Ok(Principal { provider: provider_index, subject, scopes, expires_at: exp, claims })
}

/// A NumericDate: a JSON number of seconds, possibly fractional (truncated). Wrong types are refused,
/// never ignored: a string `exp` must not turn an expiring token into an eternal one.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15) {
                Ok(Some(f.trunc() as i64))
            } else {
                Err(Rejection::BadClaim)
            }
        }
        Some(_) => Err(Rejection::BadClaim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::jwk::KeySet;
    use crate::jwt::provider::{JwksSource, Provider};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn provider() -> Provider {
        Provider {
            name: "p".into(),
            issuer: "https://idp.test".into(),
            audiences: vec!["mcp".into(), "other".into()],
            algorithms: vec![],
            jwks: JwksSource::Inline(KeySet::default()),
            clock_skew_seconds: 60,
            require_exp: true,
            max_token_bytes: 8192,
            introspection: None,
        }
    }

    fn check(claims: Value) -> Result<Principal, Rejection> {
        validate(claims.as_object().unwrap().clone(), &provider(), 0, NOW)
    }

    fn base() -> Value {
        json!({"iss": "https://idp.test", "aud": "mcp", "exp": NOW + 300, "sub": "alice"})
    }

    fn with(k: &str, v: Value) -> Value {
        let mut c = base();
        c[k] = v;
        c
    }

    #[test]
    fn accepts_valid_claims_and_collects_scopes() {
        let mut c = base();
        c["scope"] = json!("read:tasks write:tasks read:tasks");
        c["scp"] = json!(["admin", "read:tasks"]);
        let p = check(c).unwrap();
        assert_eq!(p.subject.as_deref(), Some("alice"));
        assert_eq!(p.scopes, ["read:tasks", "write:tasks", "admin"]);
        assert_eq!(p.expires_at, Some(NOW + 300));
    }

    #[test]
    fn issuer_is_an_exact_match() {
        assert_eq!(check(with("iss", json!("https://idp.test/"))).unwrap_err(), Rejection::IssuerNotAllowed);
        assert_eq!(check(with("iss", json!("https://IDP.test"))).unwrap_err(), Rejection::IssuerNotAllowed);
        assert_eq!(check(with("iss", json!(["https://idp.test"]))).unwrap_err(), Rejection::BadClaim);
    }

    #[test]
    fn audience_string_or_array() {
        assert!(check(with("aud", json!(["x", "other"]))).is_ok());
        assert_eq!(check(with("aud", json!(["x"]))).unwrap_err(), Rejection::AudienceNotAllowed);
        assert_eq!(check(with("aud", json!("MCP"))).unwrap_err(), Rejection::AudienceNotAllowed);
        assert_eq!(check(with("aud", json!([1]))).unwrap_err(), Rejection::BadClaim);
        assert_eq!(check(with("aud", json!({"a": 1}))).unwrap_err(), Rejection::BadClaim);
        let mut c = base();
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(c).unwrap_err(), Rejection::AudienceNotAllowed);
    }

    #[test]
    fn time_claims_with_skew() {
        assert!(check(with("exp", json!(NOW - 60))).is_ok(), "within skew");
        assert_eq!(check(with("exp", json!(NOW - 61))).unwrap_err(), Rejection::Expired);
        assert!(check(with("exp", json!((NOW + 10) as f64 + 0.5))).is_ok());
        assert_eq!(check(with("exp", json!("9999999999"))).unwrap_err(), Rejection::BadClaim);
        assert_eq!(check(with("exp", json!(1e300))).unwrap_err(), Rejection::BadClaim);
        assert!(check(with("nbf", json!(NOW + 60))).is_ok());
        assert_eq!(check(with("nbf", json!(NOW + 61))).unwrap_err(), Rejection::NotYetValid);
        assert_eq!(check(with("iat", json!(NOW + 61))).unwrap_err(), Rejection::IssuedInFuture);
        assert_eq!(check(with("iat", json!(null))).unwrap_err(), Rejection::BadClaim);
        let mut c = base();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(c).unwrap_err(), Rejection::MissingExp);
    }

    #[test]
    fn exp_optional_when_configured() {
        let mut p = provider();
        p.require_exp = false;
        let mut c = base();
        c.as_object_mut().unwrap().remove("exp");
        assert!(validate(c.as_object().unwrap().clone(), &p, 0, NOW).is_ok());
    }

    #[test]
    fn scope_claims_of_wrong_type_are_refused() {
        assert_eq!(check(with("scope", json!(["a"]))).unwrap_err(), Rejection::BadClaim);
        assert_eq!(check(with("scp", json!([1]))).unwrap_err(), Rejection::BadClaim);
        assert_eq!(check(with("sub", json!(42))).unwrap_err(), Rejection::BadClaim);
    }

    #[test]
    fn dotted_claim_lookup() {
        let p = check(with("realm_access", json!({"roles": ["a"]}))).unwrap();
        assert_eq!(p.claim("realm_access.roles"), Some(&json!(["a"])));
        assert_eq!(p.claim("realm_access.nope"), None);
        assert_eq!(p.claim("sub"), Some(&json!("alice")));
    }
}
