//! Seed 000's "trusted gateway" pattern: the filter mints a short-lived JWT for a backend on the same
//! private network, signed with a configured ES256 or EdDSA key (maintained crates `p256` and
//! `ed25519-compact` sign; only the compact serialisation is assembled here). The public key can be
//! served as a JWKS so the backend verifies with ordinary JWT code.

use super::Issued;
use crate::jwt::Principal;
use crate::jwt::base64url;
use serde_json::{Value, json};

pub enum SigningKey {
    Es256(Box<p256::ecdsa::SigningKey>),
    EdDsa(Box<ed25519_compact::KeyPair>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Never print key material.
        f.write_str(match self {
            SigningKey::Es256(_) => "SigningKey(ES256)",
            SigningKey::EdDsa(_) => "SigningKey(EdDSA)",
        })
    }
}

#[derive(Debug)]
pub struct Settings {
    pub key: SigningKey,
    pub key_id: String,
    pub issuer: String,
    pub audience: String,
    pub ttl_seconds: u64,
    /// Where the filter serves the public key as a JWKS, if anywhere.
    pub jwks_path: Option<String>,
}

impl SigningKey {
    /// A private JWK: EC P-256 (`d`, `x`, `y`) or OKP Ed25519 (`d`, `x`). The public half must match.
    pub fn from_jwk(jwk: &Value) -> Result<SigningKey, String> {
        let text = |name: &str| jwk.get(name).and_then(Value::as_str).ok_or(format!("missing \"{name}\""));
        let bytes =
            |name: &str| text(name).and_then(|s| base64url::decode(s).ok_or(format!("\"{name}\" is not base64url")));
        match (text("kty")?, text("crv")?) {
            ("EC", "P-256") => {
                let key = p256::ecdsa::SigningKey::from_slice(&bytes("d")?).map_err(|_| "invalid P-256 private key")?;
                let point = key.verifying_key().to_sec1_point(false);
                if point.as_bytes()[1..] != [bytes("x")?, bytes("y")?].concat()[..] {
                    return Err("\"x\"/\"y\" do not match \"d\"".into());
                }
                Ok(SigningKey::Es256(Box::new(key)))
            }
            ("OKP", "Ed25519") => {
                let seed =
                    ed25519_compact::Seed::from_slice(&bytes("d")?).map_err(|_| "Ed25519 \"d\" must be 32 bytes")?;
                let pair = ed25519_compact::KeyPair::from_seed(seed);
                if pair.pk.as_ref() != bytes("x")?.as_slice() {
                    return Err("\"x\" does not match \"d\"".into());
                }
                Ok(SigningKey::EdDsa(Box::new(pair)))
            }
            (kty, crv) => Err(format!(
                "{kty}/{crv} keys cannot sign internal tokens; use EC P-256 (ES256) or OKP Ed25519 (EdDSA)"
            )),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            SigningKey::Es256(_) => "ES256",
            SigningKey::EdDsa(_) => "EdDSA",
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::Es256(key) => {
                use p256::ecdsa::signature::Signer;
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            SigningKey::EdDsa(pair) => pair.sk.sign(message, None).to_vec(),
        }
    }

    fn public_jwk(&self) -> Value {
        match self {
            SigningKey::Es256(key) => {
                let point = key.verifying_key().to_sec1_point(false);
                let xy = &point.as_bytes()[1..];
                json!({"kty": "EC", "crv": "P-256", "x": base64url::encode(&xy[..32]), "y": base64url::encode(&xy[32..])})
            }
            SigningKey::EdDsa(pair) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": base64url::encode(pair.pk.as_ref())})
            }
        }
    }
}

impl Settings {
    /// The JWKS a backend verifies internal tokens with.
    pub fn public_jwks(&self) -> String {
        let mut jwk = self.key.public_jwk();
        jwk["kid"] = json!(self.key_id);
        jwk["alg"] = json!(self.key.alg());
        jwk["use"] = json!("sig");
        json!({ "keys": [jwk] }).to_string()
    }

    /// Mints a token for `caller`, valid `ttl_seconds` from `now` but never beyond the caller's own `exp`.
    pub fn mint(&self, caller: &Principal, now: i64, jti: &str) -> Issued {
        let mut exp = now + self.ttl_seconds as i64;
        if let Some(caller_exp) = caller.expires_at {
            exp = exp.min(caller_exp);
        }
        let header = json!({"alg": self.key.alg(), "typ": "JWT", "kid": self.key_id});
        let mut claims = json!({
            "iss": self.issuer, "aud": self.audience, "iat": now, "exp": exp, "jti": jti,
            "scope": caller.scopes.join(" "),
        });
        if let Some(sub) = &caller.subject {
            claims["sub"] = json!(sub);
        }
        let signing_input = format!(
            "{}.{}",
            base64url::encode(header.to_string().as_bytes()),
            base64url::encode(claims.to_string().as_bytes())
        );
        let signature = base64url::encode(&self.key.sign(signing_input.as_bytes()));
        Issued { token: format!("{signing_input}.{signature}"), lifetime_seconds: Some((exp - now).max(0) as u64) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::jwk::KeySet;
    use crate::jwt::signature::Algorithm;

    // RFC 8037 A.1 (Ed25519) and a fixed P-256 test key.
    const ED_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    fn caller() -> Principal {
        Principal {
            provider: 0,
            subject: Some("alice".into()),
            scopes: vec!["read:tasks".into(), "write:tasks".into()],
            expires_at: Some(1_000_100),
            claims: Default::default(),
        }
    }

    fn settings(jwk: &str) -> Settings {
        Settings {
            key: SigningKey::from_jwk(&serde_json::from_str(jwk).unwrap()).unwrap(),
            key_id: "gw-1".into(),
            issuer: "mcp-authz".into(),
            audience: "tasks-backend".into(),
            ttl_seconds: 60,
            jwks_path: None,
        }
    }

    fn verify_with_our_verifier(s: &Settings, token: &str) -> Value {
        let set = KeySet::parse(s.public_jwks().as_bytes()).unwrap();
        let parsed = crate::jwt::token::parse(token, 8192).unwrap();
        let key = set.candidates(parsed.kid.as_deref(), parsed.alg).next().unwrap();
        key.key.verify(parsed.alg, parsed.signing_input.as_bytes(), &parsed.signature).unwrap();
        Value::Object(parsed.claims)
    }

    #[test]
    fn eddsa_token_verifies_against_the_published_key() {
        let s = settings(ED_JWK);
        let issued = s.mint(&caller(), 1_000_000, "j1");
        assert_eq!(issued.lifetime_seconds, Some(60));
        let claims = verify_with_our_verifier(&s, &issued.token);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["scope"], "read:tasks write:tasks");
        assert_eq!(claims["exp"], 1_000_060);
        assert_eq!(claims["aud"], "tasks-backend");
    }

    #[test]
    fn es256_token_verifies_with_jwt_simple_too() {
        use jwt_simple::prelude::*;
        let pair = ES256KeyPair::generate();
        let d = base64url::encode(&pair.to_bytes());
        let point = pair.public_key().public_key().to_bytes_uncompressed();
        let jwk = format!(
            r#"{{"kty":"EC","crv":"P-256","d":"{d}","x":"{}","y":"{}"}}"#,
            base64url::encode(&point[1..33]),
            base64url::encode(&point[33..])
        );
        let s = settings(&jwk);
        let now = Clock::now_since_epoch().as_secs() as i64;
        let mut who = caller();
        who.expires_at = Some(now + 30);
        let issued = s.mint(&who, now, "j2");
        assert_eq!(issued.lifetime_seconds, Some(30), "never beyond the caller's exp");
        let claims = pair.public_key().verify_token::<JWTClaims<NoCustomClaims>>(&issued.token, None).unwrap();
        assert_eq!(claims.subject.as_deref(), Some("alice"));
        let parsed = crate::jwt::token::parse(&issued.token, 8192).unwrap();
        assert_eq!(parsed.alg, Algorithm::ES256);
    }

    #[test]
    fn mismatched_public_half_is_refused() {
        let bad = ED_JWK.replace("11qY", "22qY");
        assert!(SigningKey::from_jwk(&serde_json::from_str(&bad).unwrap()).is_err());
        let rsa = r#"{"kty":"RSA","crv":"x","d":"AA"}"#;
        assert!(SigningKey::from_jwk(&serde_json::from_str(rsa).unwrap()).is_err());
        assert_eq!(format!("{:?}", settings(ED_JWK).key), "SigningKey(EdDSA)");
    }
}
