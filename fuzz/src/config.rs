//! Config target: the filter's JSON configuration (`config::parse`: strict JSON, serde with unknown
//! fields refused, then validation) and what a loaded configuration is immediately used for.
//!
//! Invariants: a refusal names a reason; an accepted configuration yields an authenticator, names only
//! credential targets that exist, publishes internal-token keys that our own JWKS parser accepts and
//! that verify the tokens those targets mint, and produces well-formed replies (challenges that parse,
//! header values without control characters, JSON bodies) from every value it lets through.

use crate::{NOW, replies};
use mcp_authz::authn::{self, HeadDecision, RequestHead};
use mcp_authz::config;
use mcp_authz::exchange::Mode;
use mcp_authz::exchange::config::PASSTHROUGH;
use mcp_authz::http_reply as reply;
use mcp_authz::jwt::jwk::KeySet;
use mcp_authz::jwt::{Authenticator, Principal, Rejection, token};
use mcp_authz::mcp::inspect::Refused;
use mcp_authz::mcp::jsonrpc_reply as mcp_reply;
use mcp_authz::mcp::rules::Access;
use serde_json::{Value, json};
use std::rc::Rc;

pub fn run(data: &[u8]) {
    let config = match config::parse(data) {
        Ok(config) => Rc::new(config),
        Err(e) => {
            assert!(!e.reason.is_empty(), "refusal without a reason");
            return;
        }
    };
    let mut authenticator = Authenticator::new(config.clone());
    let _ = authenticator.authenticate("eyJhbGciOiJFZERTQSJ9.e30.c2ln", NOW);

    let credentials = &config.credentials;
    assert!(credentials.default.is_none_or(|i| i < credentials.targets.len()));
    for rule in &config.mcp.policy.rules {
        if let Some(name) = rule.credential.as_deref().filter(|n| *n != PASSTHROUGH) {
            assert!(credentials.resolve(Some(name)).is_some(), "{} names a missing target {name:?}", rule.label);
        }
    }
    let caller = Principal {
        provider: 0,
        subject: Some("alice".into()),
        scopes: vec!["read:tasks".into()],
        expires_at: Some(NOW + 30),
        claims: Default::default(),
    };
    for target in &credentials.targets {
        let Mode::Internal(settings) = &target.mode else { continue };
        let set = KeySet::parse(settings.public_jwks().as_bytes()).expect("the published JWKS parses");
        let issued = settings.mint(&caller, NOW, "jti-1");
        let parsed = token::parse(&issued.token, usize::MAX).expect("a minted token parses");
        let verified = set.candidates(parsed.kid.as_deref(), parsed.alg).any(|k| {
            k.accepts(parsed.alg)
                && k.key.verify(parsed.alg, parsed.signing_input.as_bytes(), &parsed.signature).is_ok()
        });
        assert!(verified, "a minted internal token does not verify with the published key");
    }

    replies::check(&reply::missing_token(&config.challenge));
    for why in Rejection::ALL {
        replies::check(&reply::invalid_token(&config.challenge, why));
    }
    let refused: Vec<Refused> = config
        .mcp
        .policy
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| Refused {
            index,
            id: Some(json!(index)),
            method: "tools/call".into(),
            target: Some("t".into()),
            access: Access::InsufficientScope {
                required: rule.scopes.clone(),
                missing: rule.scopes.clone(),
                rule: rule.label.clone(),
            },
        })
        .collect();
    replies::check(&mcp_reply::forbidden(&config.challenge, &refused, &[], true));
    if let Some(meta) = &config.resource_metadata {
        assert!(serde_json::from_str::<Value>(&meta.document).is_ok());
        for path in &meta.well_known_paths {
            let head = RequestHead { method: "GET", path, ..Default::default() };
            let HeadDecision::Serve(answer) = authn::decide_head(&config, &head) else {
                panic!("{path} is not served")
            };
            replies::check(&answer);
        }
    }
    for (path, _) in &credentials.published_jwks {
        let head = RequestHead { method: "GET", path, ..Default::default() };
        match authn::decide_head(&config, &head) {
            HeadDecision::Serve(answer) => replies::check(&answer),
            other => panic!("published JWKS at {path} is not served: {other:?}"),
        }
    }
}
