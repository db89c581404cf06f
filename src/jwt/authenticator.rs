//! Token → [`Verdict`]: provider by issuer, key by `kid`, signature, claims, with the per-worker cache.

use super::cache::{RefusedTokens, TokenCache};
use super::claims::{self, Principal};
use super::jwk::KeySet;
use super::{Rejection, token};
use crate::config::Config;
use serde_json::Value;
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Verified {
        principal: Rc<Principal>,
        cached: bool,
    },
    Rejected(Rejection),
    /// Refused earlier for a lasting reason (found in the refused-token cache; no verification made).
    RejectedAgain(Rejection),
    /// The provider's key set has not been loaded yet: hold the request.
    KeysNotLoaded {
        provider: usize,
    },
    /// No key with this `kid` (or of this type): the key set may have rotated.
    UnknownKey {
        provider: usize,
    },
}

/// Keys tried for a token without `kid`.
pub const MAX_KEYLESS_ATTEMPTS: usize = 4;

pub struct Authenticator {
    config: Rc<Config>,
    key_sets: Vec<Option<Rc<KeySet>>>,
    cache: TokenCache,
    refused: RefusedTokens,
    /// Bound for parsing before the provider (and its own limit) is known.
    max_token_bytes: usize,
}

impl Authenticator {
    pub fn new(config: Rc<Config>) -> Self {
        let key_sets = config
            .providers
            .iter()
            .map(|p| match &p.jwks {
                crate::jwt::provider::JwksSource::Inline(set) => Some(Rc::new(set.clone())),
                crate::jwt::provider::JwksSource::Remote(_) => None,
            })
            .collect();
        let max_token_bytes = config.providers.iter().map(|p| p.max_token_bytes).max().unwrap_or(0);
        let cache = TokenCache::new(config.token_cache_max_entries);
        let refused = RefusedTokens::new(config.token_cache_max_entries);
        Authenticator { config, key_sets, cache, refused, max_token_bytes }
    }

    pub fn config(&self) -> &Rc<Config> {
        &self.config
    }

    /// Installs a new key set for `provider` and drops every cached verification.
    pub fn set_keys(&mut self, provider: usize, keys: Rc<KeySet>) {
        if let Some(slot) = self.key_sets.get_mut(provider) {
            *slot = Some(keys);
            self.cache.clear();
            self.refused.clear();
        }
    }

    pub fn has_keys(&self, provider: usize) -> bool {
        self.key_sets.get(provider).is_some_and(Option::is_some)
    }

    /// `now` is Unix seconds.
    pub fn authenticate(&mut self, raw_token: &str, now: i64) -> Verdict {
        let max_skew = self.config.providers.iter().map(|p| p.clock_skew_seconds).max().unwrap_or(0);
        if let Some(principal) = self.cache.get(raw_token, now, max_skew as i64) {
            // The entry was valid with its provider's skew; re-check expiry with that exact skew.
            let skew = self.config.providers[principal.provider].clock_skew_seconds as i64;
            if principal.expires_at.is_none_or(|exp| now <= exp.saturating_add(skew)) {
                return Verdict::Verified { principal, cached: true };
            }
            return Verdict::Rejected(Rejection::Expired);
        }
        let digest = RefusedTokens::digest(raw_token);
        if let Some(why) = self.refused.get(&digest) {
            return Verdict::RejectedAgain(why);
        }
        match self.verify(raw_token, now) {
            Ok(principal) => {
                let principal = Rc::new(principal);
                self.cache.insert(raw_token, principal.clone());
                Verdict::Verified { principal, cached: false }
            }
            Err(Verdict::Rejected(why)) => {
                self.refused.insert(digest, why);
                Verdict::Rejected(why)
            }
            Err(verdict) => verdict,
        }
    }

    fn verify(&self, raw_token: &str, now: i64) -> Result<Principal, Verdict> {
        let reject = |r| Verdict::Rejected(r);
        let token = token::parse(raw_token, self.max_token_bytes).map_err(reject)?;
        let index = match token.claims.get("iss") {
            // A provider that only introspects takes no JWT, whatever `iss` a JWT names.
            Some(Value::String(iss)) => {
                self.config.providers.iter().position(|p| p.issuer == *iss && p.verifies_jwts())
            }
            Some(_) => return Err(reject(Rejection::BadClaim)),
            None => None,
        }
        .ok_or(reject(Rejection::IssuerNotAllowed))?;
        let provider = &self.config.providers[index];
        if raw_token.len() > provider.max_token_bytes {
            return Err(reject(Rejection::TokenTooLarge));
        }
        if !provider.algorithms.contains(&token.alg) {
            return Err(reject(Rejection::AlgorithmNotAllowed));
        }
        let keys = self.key_sets[index].as_ref().ok_or(Verdict::KeysNotLoaded { provider: index })?;
        let mut tried_any = false;
        let mut verified = false;
        // A token without `kid` is tried against every fitting key; cap that, so one forged token cannot
        // cost more than a few verifications (each is ~0.7 ms of a blocked worker for RSA in V8).
        let limit = if token.kid.is_some() { usize::MAX } else { MAX_KEYLESS_ATTEMPTS };
        for jwk in keys.candidates(token.kid.as_deref(), token.alg).take(limit) {
            if !jwk.accepts(token.alg) {
                continue;
            }
            tried_any = true;
            if jwk.key.verify(token.alg, token.signing_input.as_bytes(), &token.signature).is_ok() {
                verified = true;
                break;
            }
        }
        if !verified {
            let has_kid_match = token.kid.as_deref().is_some_and(|kid| keys.has_kid(kid));
            return Err(match (tried_any, has_kid_match) {
                (true, _) => reject(Rejection::InvalidSignature),
                // The kid exists but its key is of another type or pins another alg.
                (false, true) => reject(Rejection::AlgorithmKeyMismatch),
                (false, false) => Verdict::UnknownKey { provider: index },
            });
        }
        claims::validate(token.claims, provider, index, now).map_err(reject)
    }
}
