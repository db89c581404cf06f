//! Counters in Envoy's stats (Envoy shows Wasm metrics with a `wasmcustom.` prefix). Names follow
//! `jwt_authn`'s (`allowed`, `denied`, `jwks_fetch_success`, `jwt_cache_hit`, ...) under `mcp_authz.`;
//! denials are also counted per reason as `mcp_authz.denied.<reason>`. Documented in docs/metrics.md.

use crate::authn::{REASON_KEYS_UNAVAILABLE, REASON_MISSING_TOKEN, REASON_MULTIPLE_TOKENS, REASON_ORIGIN};
use crate::jwt::Rejection;
use crate::mcp::head;
use crate::mcp::rules::{KNOWN_METHODS, Policy};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;
use std::collections::HashMap;

/// The `error` values of `ExchangeError`, each a `mcp_authz.exchange.failed.<error>` counter.
const EXCHANGE_ERRORS: &[&str] = &[
    "missing_parameters",
    "invalid_parameter",
    "invalid_request",
    "provider_mismatch",
    "user_mismatch",
    "access_denied",
    "invalid_token",
    "api_error",
];

#[derive(Default)]
pub struct Metrics {
    pub allowed: Counter,
    pub denied: Counter,
    pub cors_preflight_bypassed: Counter,
    pub jwks_fetch_success: Counter,
    pub jwks_fetch_failed: Counter,
    pub jwks_refetch_unknown_kid: Counter,
    pub jwt_cache_hit: Counter,
    pub jwt_cache_miss: Counter,
    pub held_for_keys: Counter,
    pub exchange_ok: Counter,
    pub exchange_cache_hit: Counter,
    pub exchange_cache_miss: Counter,
    exchange_failed: Vec<(&'static str, Counter)>,
    denied_by_reason: Vec<(&'static str, Counter)>,
    /// `mcp_authz.mcp.<allowed|denied>.<method>[.<tool>]`, defined on first use.
    per_method: RefCell<HashMap<String, Counter>>,
}

/// A counter id, or nothing when the host refused to define it (metrics must never stop traffic).
#[derive(Default, Clone, Copy)]
pub struct Counter(Option<u32>);

impl Counter {
    fn define(name: &str) -> Counter {
        Counter(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    pub fn inc(self) {
        if let Some(id) = self.0 {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

impl Metrics {
    pub fn define() -> Metrics {
        let c = |name: &str| Counter::define(&format!("mcp_authz.{name}"));
        let mut reasons: Vec<&'static str> = Rejection::ALL.iter().map(|r| r.code()).collect();
        reasons.extend([
            REASON_MISSING_TOKEN,
            REASON_MULTIPLE_TOKENS,
            REASON_KEYS_UNAVAILABLE,
            REASON_ORIGIN,
            head::REASON_METHOD,
            head::REASON_MEDIA_TYPE,
            head::REASON_TOO_LARGE,
            head::REASON_BAD_REQUEST,
            "body_timeout",
            "parse_error",
            "invalid_request",
            "invalid_params",
            "header_mismatch",
            "insufficient_scope",
            "access_denied",
            "exchange_failed",
        ]);
        Metrics {
            allowed: c("allowed"),
            denied: c("denied"),
            cors_preflight_bypassed: c("cors_preflight_bypassed"),
            jwks_fetch_success: c("jwks_fetch_success"),
            jwks_fetch_failed: c("jwks_fetch_failed"),
            jwks_refetch_unknown_kid: c("jwks_refetch_unknown_kid"),
            jwt_cache_hit: c("jwt_cache_hit"),
            jwt_cache_miss: c("jwt_cache_miss"),
            held_for_keys: c("held_for_keys"),
            exchange_ok: c("exchange.ok"),
            exchange_cache_hit: c("exchange.cache_hit"),
            exchange_cache_miss: c("exchange.cache_miss"),
            exchange_failed: EXCHANGE_ERRORS.iter().map(|e| (*e, c(&format!("exchange.failed.{e}")))).collect(),
            denied_by_reason: reasons.into_iter().map(|r| (r, c(&format!("denied.{r}")))).collect(),
            per_method: RefCell::new(HashMap::new()),
        }
    }

    /// Counts an MCP decision per method, and per tool/prompt/resource for names that a rule names
    /// literally. Method and name come from the client: anything not known from configuration is
    /// counted as `other`, so a client cannot create unbounded stats.
    pub fn count_mcp(&self, outcome: &str, method: &str, target: Option<&str>, policy: &Policy) {
        let method_part = if KNOWN_METHODS.contains(&method) { method.replace('/', "_") } else { "other".into() };
        let mut name = format!("mcp_authz.mcp.{outcome}.{method_part}");
        if let Some(target) = target {
            let configured = policy
                .rules
                .iter()
                .any(|r| r.method.matches(method) && r.target.as_ref().is_some_and(|t| t.as_string() == target));
            let safe = configured
                && target.len() <= 64
                && target.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b));
            name.push('.');
            name.push_str(if safe { target } else { "other" });
        }
        let counter = *self.per_method.borrow_mut().entry(name).or_insert_with_key(|n| Counter::define(n));
        counter.inc();
    }

    pub fn count_exchange_failure(&self, error: &str) {
        if let Some((_, counter)) = self.exchange_failed.iter().find(|(e, _)| *e == error) {
            counter.inc();
        }
    }

    pub fn count_denial(&self, reason: &str) {
        self.denied.inc();
        if let Some((_, counter)) = self.denied_by_reason.iter().find(|(r, _)| *r == reason) {
            counter.inc();
        }
    }
}
