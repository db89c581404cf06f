//! Counters in Envoy's stats (Envoy shows Wasm metrics with a `wasmcustom.` prefix). Names follow
//! `jwt_authn`'s (`allowed`, `denied`, `jwks_fetch_success`, `jwt_cache_hit`, ...) under `mcp_authz.`;
//! denials are also counted per reason as `mcp_authz.denied.<reason>`. Documented in docs/metrics.md.

use super::host::Host;
use crate::exchange::Failure;
use crate::mcp::glob::Glob;
use crate::mcp::rules::{KNOWN_METHODS, Policy};
use crate::outcome::Reason;
use std::cell::RefCell;
use std::rc::Rc;

pub struct Metrics {
    pub allowed: Counter,
    pub denied: Counter,
    pub cors_preflight_bypassed: Counter,
    pub jwks_fetch_success: Counter,
    pub jwks_fetch_failed: Counter,
    pub jwks_refetch_unknown_kid: Counter,
    pub jwt_cache_hit: Counter,
    pub jwt_cache_miss: Counter,
    /// Tokens refused again from the refused-token cache, without a second signature verification.
    pub jwt_refused_cache_hit: Counter,
    pub held_for_keys: Counter,
    /// Upstream responses on MCP paths replaced by an error or cut because a list in them could not be
    /// trimmed (compressed, unreadable, too large, or found after part of the response went out).
    pub response_replaced: Counter,
    /// A pinned tool showed another definition (counted once per change, by the worker that saw it first).
    pub tool_definition_changed: Counter,
    /// Messages a shadow rule (or the shadow policy) would have refused.
    pub shadow_would_deny: Counter,
    /// Per rule with an `id`: its allowed, denied and would-deny counts.
    rules: Vec<Option<RuleCounters>>,
    pub exchange_ok: Counter,
    pub exchange_cache_hit: Counter,
    pub exchange_cache_miss: Counter,
    pub introspection_active: Counter,
    pub introspection_inactive: Counter,
    pub introspection_failed: Counter,
    pub introspection_cache_hit: Counter,
    pub introspection_cache_miss: Counter,
    exchange_failed: Vec<(Failure, Counter)>,
    denied_by_reason: Vec<(Reason, Counter)>,
    /// Names that rules give literally to a tool, prompt or resource, with the rule's method: the only
    /// names a per-method counter carries (anything else a client sends is counted as `other`).
    named_targets: Vec<(Glob, usize)>,
    /// The distinct names of `named_targets`.
    target_names: Vec<String>,
    /// `mcp_authz.mcp.<allowed|denied>.<method>[.<tool>]`, defined on first use. Looked up by
    /// [`McpKey`], so counting a request allocates nothing (this runs on every MCP request).
    per_method: RefCell<Vec<(McpKey, Counter)>>,
    host: Rc<dyn Host>,
}

/// Which per-method counter: outcome, method (index in `KNOWN_METHODS`, None for `other`), and target
/// (None: the method has none; Some(None): `other`; Some(Some(i)): `target_names[i]`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct McpKey {
    allowed: bool,
    method: Option<usize>,
    target: Option<Option<usize>>,
}

/// `mcp_authz.rule.<id>.<outcome>`.
struct RuleCounters {
    allowed: Counter,
    denied: Counter,
    would_deny: Counter,
}

#[derive(Clone, Copy)]
pub enum RuleOutcome {
    Allowed,
    Denied,
    WouldDeny,
}

/// A counter, or nothing when the host refused to define it (metrics must never stop traffic).
#[derive(Clone)]
pub struct Counter(Option<(u32, Rc<dyn Host>)>);

impl Counter {
    fn define(host: &Rc<dyn Host>, name: &str) -> Counter {
        Counter(host.define_counter(name).map(|id| (id, host.clone())))
    }

    pub fn inc(&self) {
        if let Some((id, host)) = &self.0 {
            host.increment(*id);
        }
    }
}

impl Metrics {
    pub fn define(host: &Rc<dyn Host>, policy: &Policy) -> Metrics {
        let c = |name: &str| Counter::define(host, &format!("mcp_authz.{name}"));
        let mut target_names: Vec<String> = Vec::new();
        let mut named_targets = Vec::new();
        for rule in &policy.rules {
            let Some(name) = rule.target.as_ref().map(Glob::as_string) else { continue };
            if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b)) {
                continue; // not a safe stat name segment: counted as `other`
            }
            let index = target_names.iter().position(|n| *n == name).unwrap_or_else(|| {
                target_names.push(name);
                target_names.len() - 1
            });
            named_targets.push((rule.method.clone(), index));
        }
        Metrics {
            allowed: c("allowed"),
            denied: c("denied"),
            cors_preflight_bypassed: c("cors_preflight_bypassed"),
            jwks_fetch_success: c("jwks_fetch_success"),
            jwks_fetch_failed: c("jwks_fetch_failed"),
            jwks_refetch_unknown_kid: c("jwks_refetch_unknown_kid"),
            jwt_cache_hit: c("jwt_cache_hit"),
            jwt_refused_cache_hit: c("jwt_refused_cache_hit"),
            jwt_cache_miss: c("jwt_cache_miss"),
            held_for_keys: c("held_for_keys"),
            response_replaced: c("response_replaced"),
            tool_definition_changed: c("tool_definition_changed"),
            shadow_would_deny: c("shadow.would_deny"),
            rules: policy
                .rules
                .iter()
                .map(|r| {
                    r.id.as_ref().map(|id| RuleCounters {
                        allowed: c(&format!("rule.{id}.allowed")),
                        denied: c(&format!("rule.{id}.denied")),
                        would_deny: c(&format!("rule.{id}.would_deny")),
                    })
                })
                .collect(),
            exchange_ok: c("exchange.ok"),
            exchange_cache_hit: c("exchange.cache_hit"),
            exchange_cache_miss: c("exchange.cache_miss"),
            introspection_active: c("introspection.active"),
            introspection_inactive: c("introspection.inactive"),
            introspection_failed: c("introspection.failed"),
            introspection_cache_hit: c("introspection.cache_hit"),
            introspection_cache_miss: c("introspection.cache_miss"),
            exchange_failed: Failure::ALL.iter().map(|f| (*f, c(&format!("exchange.failed.{}", f.name())))).collect(),
            denied_by_reason: Reason::all().map(|r| (r, c(&format!("denied.{}", r.name())))).collect(),
            named_targets,
            target_names,
            per_method: RefCell::new(Vec::new()),
            host: host.clone(),
        }
    }

    /// Counts an MCP decision per method, and per tool/prompt/resource for names that a rule names
    /// literally. Method and name come from the client: anything not known from configuration is
    /// counted as `other`, so a client cannot create unbounded stats.
    pub fn count_mcp(&self, allowed: bool, method: &str, target: Option<&str>) {
        let method_index = KNOWN_METHODS.iter().position(|m| *m == method);
        let target_index = target.map(|target| {
            self.named_targets
                .iter()
                .find(|(rule_method, i)| self.target_names[*i] == target && rule_method.matches(method))
                .map(|(_, i)| *i)
        });
        let key = McpKey { allowed, method: method_index, target: target_index };
        if let Some((_, counter)) = self.per_method.borrow().iter().find(|(k, _)| *k == key) {
            counter.inc();
            return;
        }
        let counter = Counter::define(&self.host, &self.mcp_counter_name(key));
        counter.inc();
        self.per_method.borrow_mut().push((key, counter));
    }

    fn mcp_counter_name(&self, key: McpKey) -> String {
        let outcome = if key.allowed { "allowed" } else { "denied" };
        let method = key.method.map_or_else(|| "other".to_string(), |i| KNOWN_METHODS[i].replace('/', "_"));
        let mut name = format!("mcp_authz.mcp.{outcome}.{method}");
        if let Some(target) = key.target {
            name.push('.');
            name.push_str(target.map_or("other", |i| self.target_names[i].as_str()));
        }
        name
    }

    pub fn count_exchange_failure(&self, failure: Failure) {
        if let Some((_, counter)) = self.exchange_failed.iter().find(|(f, _)| *f == failure) {
            counter.inc();
        }
    }

    /// Counts a decision of the rule at `rule` (rules without an `id` have no counters).
    pub fn count_rule(&self, rule: Option<usize>, outcome: RuleOutcome) {
        let Some(counters) = rule.and_then(|i| self.rules.get(i)).and_then(Option::as_ref) else { return };
        match outcome {
            RuleOutcome::Allowed => counters.allowed.inc(),
            RuleOutcome::Denied => counters.denied.inc(),
            RuleOutcome::WouldDeny => counters.would_deny.inc(),
        }
    }

    pub fn count_denial(&self, reason: Reason) {
        self.denied.inc();
        if let Some((_, counter)) = self.denied_by_reason.iter().find(|(r, _)| *r == reason) {
            counter.inc();
        }
    }
}
