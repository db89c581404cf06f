//! End to end through `Authenticator` with tokens minted by an independent signer (`jwt-simple`, pure
//! Rust): every supported algorithm verifies, and each way a token can be wrong gets its exact verdict.
// Test crates: failing loudly (unwrap, expect, panic) is their job; clippy.toml only knows #[test].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{AUDIENCE, ISSUER, b64, unb64};
use jwt_simple::prelude::*;
use mcp_authz::config::Config;
use mcp_authz::jwt::jwk::KeySet;
use mcp_authz::jwt::{Authenticator, Rejection, Verdict};
use serde_json::{Map, Value, json};
use std::rc::Rc;
use std::sync::OnceLock;

/// Fixed clock for every test.
const NOW: u64 = 1_800_000_000;
const SUBJECT: &str = "alice";
const SCOPE: &str = "tools:read tools:call";

// ------------------------------------------------------------------------------------------------
// Keys (RSA generation is slow in a debug build: two keys, made once per test binary, in parallel)
// ------------------------------------------------------------------------------------------------

struct RsaKeys {
    /// PKCS#1 DER of the main RSA key and of an unrelated one.
    main: Vec<u8>,
    other: Vec<u8>,
}

fn rsa_keys() -> &'static RsaKeys {
    static KEYS: OnceLock<RsaKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let generate = || RS256KeyPair::generate(2048).unwrap().to_der().unwrap();
        std::thread::scope(|s| {
            let other = s.spawn(generate);
            let main = generate();
            RsaKeys { main, other: other.join().unwrap() }
        })
    })
}

/// A signer for one algorithm with its public JWK (built from the key's raw components).
struct Signer {
    alg: &'static str,
    kid: String,
    jwk: Value,
    sign: SignFn,
}

type TokenClaims = JWTClaims<Map<String, Value>>;
type SignFn = Box<dyn Fn(TokenClaims) -> String>;

macro_rules! rsa_signer {
    ($ty:ident, $alg:literal, $der:expr, $kid:expr) => {{
        let kid: String = $kid.into();
        let kp = $ty::from_der($der).unwrap().with_key_id(&kid);
        let c = kp.public_key().to_components();
        Signer {
            alg: $alg,
            kid: kid.clone(),
            jwk: common::rsa_jwk(Some(&kid), &c.n, &c.e),
            sign: Box::new(move |claims| kp.sign(claims).unwrap()),
        }
    }};
}

fn signer(alg: &str, kid: &str) -> Signer {
    signer_with_key(alg, kid, false)
}

/// `other`: use a different key pair than the main one of this algorithm (RSA: the second RSA key;
/// EC / Ed25519: a fresh key pair).
fn signer_with_key(alg: &str, kid: &str, other: bool) -> Signer {
    let der = if other { &rsa_keys().other } else { &rsa_keys().main };
    match alg {
        "RS256" => rsa_signer!(RS256KeyPair, "RS256", der, kid),
        "RS384" => rsa_signer!(RS384KeyPair, "RS384", der, kid),
        "RS512" => rsa_signer!(RS512KeyPair, "RS512", der, kid),
        "PS256" => rsa_signer!(PS256KeyPair, "PS256", der, kid),
        "PS384" => rsa_signer!(PS384KeyPair, "PS384", der, kid),
        "PS512" => rsa_signer!(PS512KeyPair, "PS512", der, kid),
        "ES256" => {
            let kp = ES256KeyPair::from_bytes(&ec_secret(alg, other)).unwrap().with_key_id(kid);
            let point = kp.public_key().public_key().to_bytes_uncompressed();
            assert_eq!(point.len(), 65);
            Signer {
                alg: "ES256",
                kid: kid.into(),
                jwk: common::ec_jwk(Some(kid), "P-256", &point),
                sign: Box::new(move |claims| kp.sign(claims).unwrap()),
            }
        }
        "ES384" => {
            let kp = ES384KeyPair::from_bytes(&ec_secret(alg, other)).unwrap().with_key_id(kid);
            let point = kp.public_key().public_key().to_bytes_uncompressed();
            assert_eq!(point.len(), 97);
            Signer {
                alg: "ES384",
                kid: kid.into(),
                jwk: common::ec_jwk(Some(kid), "P-384", &point),
                sign: Box::new(move |claims| kp.sign(claims).unwrap()),
            }
        }
        "EdDSA" => {
            let kp = Ed25519KeyPair::from_bytes(&ed25519_secret(other)).unwrap().with_key_id(kid);
            let x = kp.public_key().to_bytes();
            assert_eq!(x.len(), 32);
            Signer {
                alg: "EdDSA",
                kid: kid.into(),
                jwk: common::ed25519_jwk(Some(kid), &x),
                sign: Box::new(move |claims| kp.sign(claims).unwrap()),
            }
        }
        other => panic!("no signer for {other}"),
    }
}

/// EC and Ed25519 keys are cheap, but kept stable per binary so "the main key" means one key.
fn ec_secret(alg: &str, other: bool) -> Vec<u8> {
    static KEYS: OnceLock<[Vec<u8>; 4]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [
            ES256KeyPair::generate().to_bytes(),
            ES256KeyPair::generate().to_bytes(),
            ES384KeyPair::generate().to_bytes(),
            ES384KeyPair::generate().to_bytes(),
        ]
    });
    keys[usize::from(alg == "ES384") * 2 + usize::from(other)].clone()
}

fn ed25519_secret(other: bool) -> Vec<u8> {
    static KEYS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [Ed25519KeyPair::generate().to_bytes(), Ed25519KeyPair::generate().to_bytes()])
        [usize::from(other)]
    .clone()
}

const ALGS: [&str; 7] = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"];

// ------------------------------------------------------------------------------------------------
// Claims, configuration, token surgery
// ------------------------------------------------------------------------------------------------

fn secs(t: u64) -> Option<UnixTimeStamp> {
    Some(UnixTimeStamp::from_secs(t))
}

/// iss / aud / sub / scope, issued 10 s ago, valid from 10 s ago, expiring in 5 minutes.
fn claims() -> JWTClaims<Map<String, Value>> {
    let mut custom = Map::new();
    custom.insert("scope".into(), SCOPE.into());
    let mut c = Claims::with_custom_claims(custom, Duration::from_secs(300))
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE)
        .with_subject(SUBJECT);
    c.issued_at = secs(NOW - 10);
    c.invalid_before = secs(NOW - 10);
    c.expires_at = secs(NOW + 300);
    c
}

fn config_with(keys: &[&Value], provider_extra: Value) -> Rc<Config> {
    common::parse_config(&common::provider_config_json(json!({"keys": keys}), provider_extra)).unwrap()
}

fn authenticator(keys: &[&Value]) -> Authenticator {
    Authenticator::new(config_with(keys, json!({})))
}

fn auth(a: &mut Authenticator, token: &str) -> Verdict {
    a.authenticate(token, NOW as i64)
}

fn rejected(r: Rejection) -> Verdict {
    Verdict::Rejected(r)
}

#[track_caller]
fn assert_verified(verdict: &Verdict, cached: bool) {
    match verdict {
        Verdict::Verified { principal, cached: c } => {
            assert_eq!(*c, cached, "cached flag");
            assert_eq!(principal.provider, 0);
            assert_eq!(principal.subject.as_deref(), Some(SUBJECT));
            assert_eq!(principal.scopes, ["tools:read", "tools:call"]);
            assert_eq!(principal.expires_at, Some(NOW as i64 + 300));
        }
        other => panic!("expected Verified, got {other:?}"),
    }
}

fn parts(token: &str) -> [String; 3] {
    let p: Vec<&str> = token.split('.').collect();
    assert_eq!(p.len(), 3, "{token}");
    [p[0].to_string(), p[1].to_string(), p[2].to_string()]
}

fn header_of(token: &str) -> Map<String, Value> {
    serde_json::from_slice(&unb64(&parts(token)[0])).unwrap()
}

/// Replaces the header (keeping payload and signature, so the signature no longer covers it).
fn with_header(token: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
    let [_, payload, sig] = parts(token);
    let mut header = header_of(token);
    edit(&mut header);
    format!("{}.{payload}.{sig}", b64(Value::Object(header).to_string()))
}

fn flip_signature_byte(token: &str, index: usize) -> String {
    let [h, p, s] = parts(token);
    let mut sig = unb64(&s);
    let i = index % sig.len();
    sig[i] ^= 0x01;
    format!("{h}.{p}.{}", b64(sig))
}

/// A correctly signed EdDSA token with an arbitrary header and payload text (jwt-simple only signs
/// well-formed claim sets), signed with the main Ed25519 key.
fn eddsa_raw(header: &str, payload: &str) -> String {
    let kp = ed25519_compact::KeyPair::from_slice(&ed25519_secret(false)).unwrap();
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = kp.sk.sign(input.as_bytes(), None);
    format!("{input}.{}", b64(sig.as_ref()))
}

fn claims_json() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "scope": SCOPE,
        "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 300
    })
}

// ------------------------------------------------------------------------------------------------
// Positive: every algorithm, verified then served from the cache
// ------------------------------------------------------------------------------------------------

#[test]
fn every_algorithm_verifies_and_is_cached() {
    let signers: Vec<Signer> = ALGS.iter().map(|alg| signer(alg, &format!("kid-{alg}"))).collect();
    let jwks: Vec<&Value> = signers.iter().map(|s| &s.jwk).collect();
    // The JWKS itself round-trips through the production parser with one usable key per algorithm.
    let set = KeySet::parse(json!({"keys": jwks}).to_string().as_bytes()).unwrap();
    assert_eq!(set.keys.len(), ALGS.len(), "skipped: {:?}", set.skipped);

    let mut a = authenticator(&jwks);
    for s in &signers {
        let token = (s.sign)(claims());
        let header = header_of(&token);
        assert_eq!(header["alg"], s.alg, "jwt-simple header");
        assert_eq!(header["kid"], s.kid.as_str());
        assert_verified(&auth(&mut a, &token), false);
        assert_verified(&auth(&mut a, &token), true);
        // A flipped signature byte (first, middle and last) fails, whatever the algorithm.
        let sig_len = unb64(&parts(&token)[2]).len();
        for i in [0, sig_len / 2, sig_len - 1] {
            let bad = flip_signature_byte(&token, i);
            assert_eq!(auth(&mut a, &bad), rejected(Rejection::InvalidSignature), "{} byte {i}", s.alg);
        }
    }
}

#[test]
fn tokens_without_kid_are_matched_by_key_type() {
    // Two RSA keys and a token without kid: both are candidates, the first does not verify, the second does.
    let other = signer_with_key("RS256", "first", true);
    let main = signer("RS256", "second");
    let mut a = authenticator(&[&other.jwk, &main.jwk]);
    let kp = RS256KeyPair::from_der(&rsa_keys().main).unwrap(); // no with_key_id: header without kid
    let token_no_kid = kp.sign(claims()).unwrap();
    assert!(!header_of(&token_no_kid).contains_key("kid"));
    assert_verified(&auth(&mut a, &token_no_kid), false);
    // Stripping the kid from a token signed with one breaks its signature: neither key verifies it.
    let stripped = with_header(&(main.sign)(claims()), |h| {
        h.remove("kid");
    });
    assert_eq!(auth(&mut a, &stripped), rejected(Rejection::InvalidSignature));

    // Same with EC: the ES256 token finds its key among keys of every type.
    let es_other = signer_with_key("ES256", "e1", true);
    let es_main = signer("ES256", "e2");
    let ed = signer("EdDSA", "ed");
    let mut a = authenticator(&[&main.jwk, &es_other.jwk, &ed.jwk, &es_main.jwk]);
    let kp = ES256KeyPair::from_bytes(&ec_secret("ES256", false)).unwrap();
    assert_verified(&auth(&mut a, &kp.sign(claims()).unwrap()), false);

    // No kid and no key of the token's type at all: the key set may have rotated.
    let mut a = authenticator(&[&ed.jwk]);
    assert_eq!(auth(&mut a, &token_no_kid), Verdict::UnknownKey { provider: 0 });
}

// ------------------------------------------------------------------------------------------------
// Signature and key selection
// ------------------------------------------------------------------------------------------------

#[test]
fn signed_by_another_key_with_the_same_kid() {
    for alg in ["RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        let genuine = signer(alg, "shared-kid");
        let impostor = signer_with_key(alg, "shared-kid", true);
        assert_ne!(genuine.jwk, impostor.jwk, "{alg}: keys differ");
        let mut a = authenticator(&[&genuine.jwk]);
        let token = (impostor.sign)(claims());
        assert_eq!(auth(&mut a, &token), rejected(Rejection::InvalidSignature), "{alg}");
    }
}

#[test]
fn alg_header_swapped_within_the_rsa_family_fails_the_signature() {
    let s = signer("RS256", "rsa");
    let mut a = authenticator(&[&s.jwk]);
    let token = (s.sign)(claims());
    assert_verified(&auth(&mut a, &token), false);
    for alg in ["RS384", "RS512", "PS256", "PS384", "PS512"] {
        let swapped = with_header(&token, |h| {
            h.insert("alg".into(), alg.into());
        });
        assert_eq!(auth(&mut a, &swapped), rejected(Rejection::InvalidSignature), "RS256 -> {alg}");
    }
}

#[test]
fn alg_header_of_another_family_on_an_rsa_kid_is_a_key_mismatch() {
    let s = signer("RS256", "rsa");
    let mut a = authenticator(&[&s.jwk]);
    let token = (s.sign)(claims());
    for alg in ["ES256", "ES384", "EdDSA"] {
        let swapped = with_header(&token, |h| {
            h.insert("alg".into(), alg.into());
        });
        assert_eq!(auth(&mut a, &swapped), rejected(Rejection::AlgorithmKeyMismatch), "RS256 -> {alg}");
    }
    // And the other way round: an EC kid with an RSA alg.
    let es = signer("ES256", "ec");
    let mut a = authenticator(&[&es.jwk]);
    let swapped = with_header(&(es.sign)(claims()), |h| {
        h.insert("alg".into(), "RS256".into());
    });
    assert_eq!(auth(&mut a, &swapped), rejected(Rejection::AlgorithmKeyMismatch));
}

#[test]
fn jwk_alg_pin_is_enforced() {
    let s = signer("RS256", "pinned");
    let mut jwk = s.jwk.clone();
    jwk["alg"] = "PS256".into();
    let mut a = authenticator(&[&jwk]);
    assert_eq!(auth(&mut a, &(s.sign)(claims())), rejected(Rejection::AlgorithmKeyMismatch));
}

#[test]
fn alg_not_in_the_providers_list() {
    let rs = signer("RS256", "rsa");
    let es = signer("ES256", "ec");
    let config = config_with(&[&rs.jwk, &es.jwk], json!({"algorithms": ["ES256"]}));
    let mut a = Authenticator::new(config);
    assert_verified(&auth(&mut a, &(es.sign)(claims())), false);
    assert_eq!(auth(&mut a, &(rs.sign)(claims())), rejected(Rejection::AlgorithmNotAllowed));
}

#[test]
fn hmac_with_the_rsa_public_key_as_secret_is_refused() {
    // Key confusion: HS256 "signed" with the bytes of the RSA public key, under the RSA key's kid.
    let s = signer("RS256", "rsa");
    let mut a = authenticator(&[&s.jwk]);
    let public = RS256KeyPair::from_der(&rsa_keys().main).unwrap().public_key();
    let secrets: [Vec<u8>; 4] = [
        public.to_pem().unwrap().into_bytes(),
        public.to_der().unwrap(),
        s.jwk.to_string().into_bytes(),
        public.to_components().n,
    ];
    for secret in secrets {
        for (name, token) in [
            ("HS256", HS256Key::from_bytes(&secret).with_key_id("rsa").authenticate(claims()).unwrap()),
            ("HS384", HS384Key::from_bytes(&secret).with_key_id("rsa").authenticate(claims()).unwrap()),
            ("HS512", HS512Key::from_bytes(&secret).with_key_id("rsa").authenticate(claims()).unwrap()),
        ] {
            assert_eq!(header_of(&token)["alg"], name);
            assert_eq!(auth(&mut a, &token), rejected(Rejection::AlgorithmNotAllowed), "{name}");
        }
    }
}

#[test]
fn alg_none_is_refused() {
    let s = signer("EdDSA", "ed");
    let mut a = authenticator(&[&s.jwk]);
    let token = (s.sign)(claims());
    for none in ["none", "None", "NONE"] {
        let unsigned = with_header(&token, |h| {
            h.insert("alg".into(), none.into());
        });
        let [h, p, _] = parts(&unsigned);
        assert_eq!(auth(&mut a, &format!("{h}.{p}.")), rejected(Rejection::InvalidSignature), "{none}, empty sig");
        assert_eq!(auth(&mut a, &unsigned), rejected(Rejection::AlgorithmNotAllowed), "{none}");
    }
}

#[test]
fn psychic_ecdsa_signature_is_refused() {
    for (alg, size) in [("ES256", 32), ("ES384", 48)] {
        let s = signer(alg, "ec");
        let mut a = authenticator(&[&s.jwk]);
        let [h, p, _] = parts(&(s.sign)(claims()));
        let token = format!("{h}.{p}.{}", b64(vec![0u8; 2 * size]));
        assert_eq!(auth(&mut a, &token), rejected(Rejection::InvalidSignature), "{alg} r=0,s=0");
    }
}

#[test]
fn unknown_kid() {
    let s = signer("ES256", "known");
    let mut a = authenticator(&[&s.jwk]);
    let token = with_header(&(s.sign)(claims()), |h| {
        h.insert("kid".into(), "unknown".into());
    });
    assert_eq!(auth(&mut a, &token), Verdict::UnknownKey { provider: 0 });
    let s2 = signer("ES256", "not-in-set");
    assert_eq!(auth(&mut a, &(s2.sign)(claims())), Verdict::UnknownKey { provider: 0 });
}

#[test]
fn remote_provider_without_keys() {
    let s = signer("RS256", "rsa");
    let doc = json!({"providers": [{
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks": {"remote": {"cluster": "idp", "authority": "idp.example.test", "path": "/jwks.json"}},
    }]});
    let mut a = Authenticator::new(common::parse_config(&doc).unwrap());
    assert!(!a.has_keys(0));
    let token = (s.sign)(claims());
    assert_eq!(auth(&mut a, &token), Verdict::KeysNotLoaded { provider: 0 });
    // Once keys arrive, the same token verifies.
    let set = KeySet::parse(json!({"keys": [s.jwk]}).to_string().as_bytes()).unwrap();
    a.set_keys(0, Rc::new(set));
    assert_verified(&auth(&mut a, &token), false);
}

#[test]
fn key_rotation_evicts_cached_tokens() {
    let old = signer("ES256", "old");
    let new = signer_with_key("ES256", "new", true);
    let mut a = authenticator(&[&old.jwk]);
    let token = (old.sign)(claims());
    assert_verified(&auth(&mut a, &token), false);
    assert_verified(&auth(&mut a, &token), true);
    let rotated = KeySet::parse(json!({"keys": [new.jwk]}).to_string().as_bytes()).unwrap();
    a.set_keys(0, Rc::new(rotated));
    assert_eq!(auth(&mut a, &token), Verdict::UnknownKey { provider: 0 });
    assert_verified(&auth(&mut a, &(new.sign)(claims())), false);
}

#[test]
fn a_refused_token_is_refused_again_without_verification_until_the_keys_change() {
    // The configured key under kid "k" is not the one that signed the token: a forged-looking token.
    let configured = signer("ES256", "k");
    let actual = signer_with_key("ES256", "k", true);
    let mut a = authenticator(&[&configured.jwk]);
    let token = (actual.sign)(claims());
    assert_eq!(auth(&mut a, &token), rejected(Rejection::InvalidSignature));
    assert_eq!(auth(&mut a, &token), Verdict::RejectedAgain(Rejection::InvalidSignature));
    // A different forged token still costs its own verification.
    let other = flip_signature_byte(&token, 3);
    assert_eq!(auth(&mut a, &other), rejected(Rejection::InvalidSignature));
    // The key set changes to the signer's key: the token is verified, not refused from memory.
    let rotated = KeySet::parse(json!({"keys": [actual.jwk]}).to_string().as_bytes()).unwrap();
    a.set_keys(0, Rc::new(rotated));
    assert_verified(&auth(&mut a, &token), false);
}

#[test]
fn refusals_that_time_can_lift_are_not_remembered() {
    let s = signer("EdDSA", "ed");
    let mut a = authenticator(&[&s.jwk]);
    let mut c = claims();
    c.invalid_before = secs(NOW + 3600);
    let token = (s.sign)(c);
    assert_eq!(auth(&mut a, &token), rejected(Rejection::NotYetValid));
    assert_eq!(auth(&mut a, &token), rejected(Rejection::NotYetValid), "checked again, not from memory");
}

// ------------------------------------------------------------------------------------------------
// Claims
// ------------------------------------------------------------------------------------------------

#[test]
fn time_claims() {
    let s = signer("EdDSA", "ed");
    let mut a = authenticator(&[&s.jwk]);
    let check = |a: &mut Authenticator, edit: &dyn Fn(&mut TokenClaims)| {
        let mut c = claims();
        edit(&mut c);
        auth(a, &(s.sign)(c))
    };
    // Default clock skew is 60 s.
    assert_eq!(check(&mut a, &|c| c.expires_at = secs(NOW - 61)), rejected(Rejection::Expired));
    assert_eq!(check(&mut a, &|c| c.expires_at = secs(NOW - 3600)), rejected(Rejection::Expired));
    assert!(matches!(check(&mut a, &|c| c.expires_at = secs(NOW - 60)), Verdict::Verified { .. }), "within skew");
    assert_eq!(check(&mut a, &|c| c.invalid_before = secs(NOW + 61)), rejected(Rejection::NotYetValid));
    assert!(matches!(check(&mut a, &|c| c.invalid_before = secs(NOW + 60)), Verdict::Verified { .. }));
    assert_eq!(
        check(&mut a, &|c| {
            c.issued_at = secs(NOW + 61);
            c.invalid_before = None;
        }),
        rejected(Rejection::IssuedInFuture)
    );
    assert_eq!(check(&mut a, &|c| c.expires_at = None), rejected(Rejection::MissingExp));
}

#[test]
fn expiry_is_rechecked_for_cached_tokens() {
    let s = signer("EdDSA", "ed");
    let mut a = authenticator(&[&s.jwk]);
    let token = (s.sign)(claims());
    assert_verified(&a.authenticate(&token, NOW as i64), false);
    assert_verified(&a.authenticate(&token, NOW as i64 + 300 + 60), true);
    assert_eq!(a.authenticate(&token, NOW as i64 + 300 + 61), rejected(Rejection::Expired));
}

#[test]
fn audience_and_issuer() {
    let s = signer("ES384", "ec");
    let mut a = authenticator(&[&s.jwk]);
    let token = (s.sign)(claims().with_audience("another-server"));
    assert_eq!(auth(&mut a, &token), rejected(Rejection::AudienceNotAllowed));
    let token = (s.sign)(claims().with_audiences(HashSet::from_strings(&["x", AUDIENCE])));
    assert!(matches!(auth(&mut a, &token), Verdict::Verified { .. }), "audience array containing ours");

    for issuer in [format!("{ISSUER}/"), ISSUER.to_uppercase(), format!(" {ISSUER}"), "https://evil.test".into()] {
        let token = (s.sign)(claims().with_issuer(&issuer));
        assert_eq!(auth(&mut a, &token), rejected(Rejection::IssuerNotAllowed), "{issuer:?}");
    }
    let mut c = claims();
    c.issuer = None;
    assert_eq!(auth(&mut a, &(s.sign)(c)), rejected(Rejection::IssuerNotAllowed), "no iss");
}

// ------------------------------------------------------------------------------------------------
// Token shape
// ------------------------------------------------------------------------------------------------

#[test]
fn token_over_max_token_bytes() {
    let s = signer("RS256", "rsa");
    let token = (s.sign)(claims());
    assert!(token.len() > 256, "{}", token.len());
    let mut a = Authenticator::new(config_with(&[&s.jwk], json!({"max_token_bytes": 256})));
    assert_eq!(auth(&mut a, &token), rejected(Rejection::TokenTooLarge));

    // With a second provider allowing more, the issuer's own limit still applies.
    let doc = json!({"providers": [
        {"issuer": ISSUER, "audiences": [AUDIENCE], "max_token_bytes": 256, "jwks": {"inline": {"keys": [s.jwk]}}},
        {"issuer": "https://other.test", "audiences": [AUDIENCE], "jwks": {"inline": {"keys": [s.jwk]}}},
    ]});
    let mut a = Authenticator::new(common::parse_config(&doc).unwrap());
    assert_eq!(auth(&mut a, &token), rejected(Rejection::TokenTooLarge));
    let exact = Authenticator::new(config_with(&[&s.jwk], json!({"max_token_bytes": token.len()})))
        .authenticate(&token, NOW as i64);
    assert_verified(&exact, false);
}

#[test]
fn five_part_jwe_is_encrypted() {
    let s = signer("RS256", "rsa");
    let mut a = authenticator(&[&s.jwk]);
    let header = b64(r#"{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"rsa"}"#);
    let jwe = format!("{header}.{}.{}.{}.{}", b64([1u8; 256]), b64([2u8; 12]), b64(b"ciphertext"), b64([3u8; 16]));
    assert_eq!(auth(&mut a, &jwe), rejected(Rejection::Encrypted));
    // A JWS-shaped token whose header says it is a JWE.
    let enc = eddsa_raw(r#"{"alg":"EdDSA","enc":"A256GCM"}"#, &claims_json().to_string());
    let ed = signer("EdDSA", "ed");
    let mut a = authenticator(&[&ed.jwk]);
    assert_eq!(auth(&mut a, &enc), rejected(Rejection::Encrypted));
}

#[test]
fn crit_header_is_unsupported() {
    let ed = signer("EdDSA", "ed");
    let mut a = authenticator(&[&ed.jwk]);
    let payload = claims_json().to_string();
    // Control: the raw signer produces tokens the authenticator accepts.
    assert_verified(&auth(&mut a, &eddsa_raw(r#"{"alg":"EdDSA","kid":"ed"}"#, &payload)), false);
    for header in [
        r#"{"alg":"EdDSA","kid":"ed","crit":["exp"],"exp":1}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":["b64"],"b64":false}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":[]}"#,
    ] {
        assert_eq!(auth(&mut a, &eddsa_raw(header, &payload)), rejected(Rejection::UnsupportedCritical), "{header}");
    }
}

#[test]
fn duplicate_keys_are_malformed() {
    let ed = signer("EdDSA", "ed");
    let mut a = authenticator(&[&ed.jwk]);
    let claims = claims_json().to_string();
    let inner = &claims[1..claims.len() - 1];
    let cases = [
        // Duplicate claims: different parsers would disagree on who the subject is.
        (r#"{"alg":"EdDSA","kid":"ed"}"#.to_string(), format!(r#"{{{inner},"sub":"mallory"}}"#)),
        (r#"{"alg":"EdDSA","kid":"ed"}"#.to_string(), format!(r#"{{{inner},"aud":"{AUDIENCE}"}}"#)),
        (r#"{"alg":"EdDSA","kid":"ed"}"#.to_string(), format!(r#"{{{inner},"\u0073ub":"mallory"}}"#)),
        // Duplicate header members.
        (r#"{"alg":"EdDSA","kid":"ed","kid":"ed"}"#.to_string(), claims.clone()),
        (r#"{"alg":"EdDSA","alg":"EdDSA","kid":"ed"}"#.to_string(), claims.clone()),
    ];
    for (header, payload) in cases {
        assert_eq!(auth(&mut a, &eddsa_raw(&header, &payload)), rejected(Rejection::Malformed), "{header} {payload}");
    }
}

#[test]
fn padding_and_whitespace_are_malformed() {
    let s = signer("ES256", "ec");
    let mut a = authenticator(&[&s.jwk]);
    let token = (s.sign)(claims());
    assert_verified(&auth(&mut a, &token), false);
    let [h, p, sig] = parts(&token);
    let pad = |part: &str| format!("{part}{}", "=".repeat(((4 - part.len() % 4) % 4).max(1)));
    let variants = [
        format!("{}.{p}.{sig}", pad(&h)),
        format!("{h}.{}.{sig}", pad(&p)),
        format!("{h}.{p}.{}", pad(&sig)),
        format!(" {token}"),
        format!("{token} "),
        format!("{token}\n"),
        format!("{h}.{p}.{} {}", &sig[..10], &sig[10..]),
        format!("{h}.\t{p}.{sig}"),
        format!("Bearer {token}"),
        // Standard alphabet instead of URL-safe.
        format!("{h}.{p}.{}", sig.replace('-', "+").replace('_', "/")),
    ];
    for v in variants {
        if v == token {
            continue; // no '-' or '_' to replace
        }
        assert_eq!(auth(&mut a, &v), rejected(Rejection::Malformed), "{v:?}");
    }
    // Structural: two or four parts.
    assert_eq!(auth(&mut a, &format!("{h}.{p}")), rejected(Rejection::Malformed));
    assert_eq!(auth(&mut a, &format!("{token}.{sig}")), rejected(Rejection::Malformed));
}
