//! Authorization rules over MCP methods and their targets, and their evaluation for a [`Principal`].
//!
//! Rules are evaluated in order and the first rule whose method and target match decides (put specific
//! rules before globs). A rule allows when the caller holds every scope in `scopes`, at least one
//! complete set in `any_scopes` (if given), and every claim condition; `action: "deny"` refuses outright.
//! With no matching rule: `tools/call` follows `unlisted_tools` (default deny), protocol plumbing
//! (`initialize`, `ping`, `server/discover`, `subscriptions/listen`, notifications) is allowed, and
//! everything else follows `unlisted_methods` (default allow).

use super::arguments::{self, ArgumentCondition};
use super::glob::Glob;
use crate::jwt::Principal;
use crate::outcome::Reason;
use crate::scopes::ScopeHierarchy;
use serde_json::Value;

/// Client-to-server methods across MCP revisions 2024-11-05 … 2026-07-28; rule methods are checked
/// against this list (or must be a glob) so that a typo is refused at load instead of never matching.
pub const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "subscriptions/listen",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
];

/// Allowed for any authenticated caller unless a rule says otherwise: without these no client can even
/// connect, and they reveal nothing a rule could protect.
fn is_plumbing(method: &str) -> bool {
    matches!(method, "initialize" | "ping" | "server/discover" | "subscriptions/listen")
        || method.starts_with("notifications/")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlisted {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimTest {
    /// The claim is an array containing the value, or a string equal to it (or, for a space-delimited
    /// string such as `roles: "a b"`, containing it as a word).
    Contains(String),
    /// The claim is a string equal to one of these.
    In(Vec<String>),
    /// The claim equals this JSON value.
    Equals(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimCondition {
    pub claim: String,
    pub test: ClaimTest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub method: Glob,
    /// Tool or prompt name, or resource URI; None matches any target.
    pub target: Option<Glob>,
    pub scopes: Vec<String>,
    pub any_scopes: Vec<Vec<String>>,
    pub claims: Vec<ClaimCondition>,
    pub deny: bool,
    /// `upstream_credentials` target for requests this rule allows (`passthrough` or a target name);
    /// None: the configured default.
    pub credential: Option<String>,
    /// The rule's `id`, or `rules[i]`: for logs and the exported decision.
    pub label: String,
    /// The operator's name for the rule (`id`): also names its counters.
    pub id: Option<String>,
    /// Conditions on the call's arguments, all required (`tools/call`, `prompts/get`).
    pub arguments: Vec<ArgumentCondition>,
    /// Audit only: the rule is evaluated and reported ("would deny"), never enforced.
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub unlisted_tools: Unlisted,
    pub unlisted_methods: Unlisted,
    /// The whole policy in audit mode (`mcp.mode: "shadow"`): decisions are reported, nothing refused.
    pub shadow: bool,
    /// Broader scopes implying narrower ones (`scope_hierarchy`), for every scope check.
    pub scopes: ScopeHierarchy,
}

/// The outcome for one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    Allow,
    /// The caller lacks scopes: `required` is what to ask for (the rule's scopes, plus the alternative
    /// of `any_scopes` closest to being held when none is), `missing` what of it the caller's scopes do
    /// not cover (held as such, or implied by a broader held scope).
    InsufficientScope {
        required: Vec<String>,
        missing: Vec<String>,
        rule: String,
    },
    /// Refused by a deny rule, an unmet claim condition, or a deny default. No scope would help.
    Denied {
        why: String,
    },
    /// An argument condition of the deciding rule is not met: `argument` is its JSON Pointer (never the
    /// value). No scope would help either.
    ArgumentNotAllowed {
        argument: String,
        rule: String,
    },
    /// The tool's definition no longer matches its pin (`mcp::pins`).
    DefinitionChanged,
}

impl Access {
    /// The reason a refusal like this one is counted under (`Allow`: none).
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Access::Allow => None,
            Access::InsufficientScope { .. } => Some(Reason::InsufficientScope),
            Access::Denied { .. } => Some(Reason::AccessDenied),
            Access::ArgumentNotAllowed { .. } => Some(Reason::ArgumentNotAllowed),
            Access::DefinitionChanged => Some(Reason::ToolDefinitionChanged),
        }
    }
}

/// The decision for one message, with what an audit (shadow rules, or a shadow policy) would say.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What is enforced.
    pub access: Access,
    /// The rule that decided (an index into `Policy::rules`); None: a default decided.
    pub rule: Option<usize>,
    /// A refusal the audit would make where `access` allows: its access and rule.
    pub would_deny: Option<(Access, Option<usize>)>,
}

impl Policy {
    pub fn allow_all() -> Policy {
        Policy {
            rules: vec![],
            unlisted_tools: Unlisted::Allow,
            unlisted_methods: Unlisted::Allow,
            shadow: false,
            scopes: ScopeHierarchy::default(),
        }
    }

    /// The first enforced rule whose method and target match (`audit`: shadow rules count too).
    fn rule_for(&self, method: &str, target: Option<&str>, audit: bool) -> Option<(usize, &Rule)> {
        self.rules.iter().enumerate().find(|(_, r)| {
            (audit || !r.shadow)
                && r.method.matches(method)
                && r.target.as_ref().is_none_or(|t| target.is_some_and(|name| t.matches(name)))
        })
    }

    /// The decision for a call: the deciding rule's scopes, claims and argument conditions; and, when the
    /// policy has shadow rules or is in shadow mode, what the audit would refuse.
    pub fn decide(
        &self,
        method: &str,
        target: Option<&str>,
        arguments: Option<&Value>,
        principal: &Principal,
    ) -> Decision {
        let decided = |audit: bool| {
            let (access, rule) = self.rule_access(method, target, principal, audit);
            let access = match (access, rule) {
                (Access::Allow, Some(i)) => {
                    match arguments::first_unmet(&self.rules[i].arguments, arguments, principal) {
                        Some(unmet) => Access::ArgumentNotAllowed {
                            argument: unmet.pointer.clone(),
                            rule: self.rules[i].label.clone(),
                        },
                        None => Access::Allow,
                    }
                }
                (access, _) => access,
            };
            (access, rule)
        };
        let (access, rule) = decided(false);
        if !self.shadow && !self.rules.iter().any(|r| r.shadow) {
            return Decision { access, rule, would_deny: None };
        }
        let audit = decided(true);
        if self.shadow {
            let would_deny = (audit.0 != Access::Allow).then_some(audit);
            return Decision { access: Access::Allow, rule, would_deny };
        }
        let would_deny = (access == Access::Allow && audit.0 != Access::Allow).then_some(audit);
        Decision { access, rule, would_deny }
    }

    /// The enforced decision by method and target alone (argument conditions are not looked at): what a
    /// list shows. A tool whose rule has argument conditions is listed when the caller may call it with
    /// some arguments.
    pub fn evaluate(&self, method: &str, target: Option<&str>, principal: &Principal) -> Access {
        if self.shadow {
            return Access::Allow;
        }
        self.rule_access(method, target, principal, false).0
    }

    /// Scopes and claims of the first matching rule (or the defaults), and which rule decided.
    fn rule_access(
        &self,
        method: &str,
        target: Option<&str>,
        principal: &Principal,
        audit: bool,
    ) -> (Access, Option<usize>) {
        let rule = self.rule_for(method, target, audit);
        let Some((index, rule)) = rule else {
            let fallback = if method == "tools/call" {
                self.unlisted_tools
            } else if is_plumbing(method) {
                Unlisted::Allow
            } else {
                self.unlisted_methods
            };
            let access = match fallback {
                Unlisted::Allow => Access::Allow,
                Unlisted::Deny => Access::Denied { why: "no rule allows this request".into() },
            };
            return (access, None);
        };
        let decided = |access: Access| (access, Some(index));
        if rule.deny {
            return decided(Access::Denied { why: format!("denied by {}", rule.label) });
        }
        if let Some(c) = rule.claims.iter().find(|c| !claim_holds(c, principal)) {
            return decided(Access::Denied {
                why: format!("claim condition on {:?} not met ({})", c.claim, rule.label),
            });
        }
        let has = |s: &String| self.scopes.covers(&principal.scopes, s);
        let mut missing: Vec<String> = rule.scopes.iter().filter(|s| !has(s)).cloned().collect();
        let mut required = rule.scopes.clone();
        if !rule.any_scopes.is_empty() && !rule.any_scopes.iter().any(|set| set.iter().all(has)) {
            // Name the smallest alternative as the way forward.
            if let Some(best) = rule.any_scopes.iter().min_by_key(|set| set.iter().filter(|s| !has(s)).count()) {
                for s in best {
                    if !required.contains(s) {
                        required.push(s.clone());
                    }
                    if !has(s) && !missing.contains(s) {
                        missing.push(s.clone());
                    }
                }
            }
        }
        if missing.is_empty() {
            decided(Access::Allow)
        } else {
            decided(Access::InsufficientScope { required, missing, rule: rule.label.clone() })
        }
    }

    /// The `credential` of the enforced rule that decides this call (None: the configured default).
    pub fn credential_for(&self, method: &str, target: Option<&str>) -> Option<&str> {
        self.rule_for(method, target, false).and_then(|(_, r)| r.credential.as_deref())
    }

    /// Whether some rule looks at arguments: only then are a call's arguments built from the body.
    pub fn reads_arguments(&self) -> bool {
        self.rules.iter().any(|r| !r.arguments.is_empty())
    }

    /// Whether rules could hide entries of this list for some caller (then list responses are filtered).
    pub fn governs(&self, call_method: &str) -> bool {
        self.rules.iter().any(|r| r.method.matches(call_method))
            || (call_method == "tools/call" && self.unlisted_tools == Unlisted::Deny)
            || (call_method != "tools/call" && self.unlisted_methods == Unlisted::Deny)
    }
}

fn claim_holds(c: &ClaimCondition, principal: &Principal) -> bool {
    let Some(value) = principal.claim(&c.claim) else { return false };
    match &c.test {
        ClaimTest::Contains(want) => match value {
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(want.as_str())),
            Value::String(s) => s == want || s.split(' ').any(|w| w == want),
            _ => false,
        },
        ClaimTest::In(options) => value.as_str().is_some_and(|s| options.iter().any(|o| o == s)),
        ClaimTest::Equals(expected) => value == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn principal(scopes: &[&str], claims: Value) -> Principal {
        Principal {
            provider: 0,
            subject: Some("alice".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            claims: claims.as_object().cloned().unwrap_or_default(),
        }
    }

    fn rule(method: &str, target: Option<&str>, scopes: &[&str]) -> Rule {
        Rule {
            method: Glob::new(method),
            target: target.map(Glob::new),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            any_scopes: vec![],
            claims: vec![],
            deny: false,
            credential: None,
            label: "rules[0]".into(),
            id: None,
            arguments: vec![],
            shadow: false,
        }
    }

    fn policy(rules: Vec<Rule>) -> Policy {
        Policy { rules, unlisted_tools: Unlisted::Deny, ..Policy::allow_all() }
    }

    #[test]
    fn per_tool_scopes_like_seed_000() {
        let p = policy(vec![
            rule("tools/call", Some("getTasks"), &["read:tasks"]),
            rule("tools/call", Some("createTask"), &["write:tasks"]),
        ]);
        let reader = principal(&["read:tasks"], json!({}));
        assert_eq!(p.evaluate("tools/call", Some("getTasks"), &reader), Access::Allow);
        assert_eq!(
            p.evaluate("tools/call", Some("createTask"), &reader),
            Access::InsufficientScope {
                required: vec!["write:tasks".into()],
                missing: vec!["write:tasks".into()],
                rule: "rules[0]".into()
            }
        );
        assert!(matches!(p.evaluate("tools/call", Some("deleteAll"), &reader), Access::Denied { .. }), "unlisted tool");
        assert_eq!(p.evaluate("tools/list", None, &reader), Access::Allow, "unlisted method");
        assert_eq!(p.evaluate("initialize", None, &reader), Access::Allow);
    }

    #[test]
    fn first_match_wins_and_globs() {
        let mut deny = rule("tools/call", Some("admin_reset"), &[]);
        deny.deny = true;
        let p = policy(vec![deny, rule("tools/call", Some("admin_*"), &["admin"])]);
        let admin = principal(&["admin"], json!({}));
        assert!(matches!(p.evaluate("tools/call", Some("admin_reset"), &admin), Access::Denied { .. }));
        assert_eq!(p.evaluate("tools/call", Some("admin_users"), &admin), Access::Allow);
    }

    #[test]
    fn any_scopes_alternatives() {
        let mut r = rule("tools/call", Some("x"), &["base"]);
        r.any_scopes = vec![vec!["a".into()], vec!["b".into(), "c".into()]];
        let p = policy(vec![r]);
        assert_eq!(p.evaluate("tools/call", Some("x"), &principal(&["base", "b", "c"], json!({}))), Access::Allow);
        assert_eq!(p.evaluate("tools/call", Some("x"), &principal(&["base", "a"], json!({}))), Access::Allow);
        let Access::InsufficientScope { required, missing, .. } =
            p.evaluate("tools/call", Some("x"), &principal(&["b"], json!({})))
        else {
            panic!()
        };
        assert_eq!(required, ["base", "a"]);
        assert_eq!(missing, ["base", "a"]);
    }

    #[test]
    fn broader_scopes_cover_narrower_ones_and_missing_names_only_what_is_not_covered() {
        let mut p = policy(vec![
            rule("tools/call", Some("getTasks"), &["read:tasks"]),
            rule("tools/call", Some("purge"), &["read:tasks", "delete:tasks", "audit"]),
        ]);
        p.scopes = ScopeHierarchy::parse(
            "scope_hierarchy",
            &json!({"admin": ["write:tasks"], "write:tasks": ["read:tasks"], "tasks": ["tasks:read"]}),
        )
        .unwrap();
        let admin = principal(&["admin"], json!({}));
        assert_eq!(p.evaluate("tools/call", Some("getTasks"), &admin), Access::Allow, "admin implies read:tasks");
        assert_eq!(p.decide("tools/call", Some("getTasks"), None, &admin).access, Access::Allow);
        let narrower = principal(&["read:tasks"], json!({}));
        assert!(matches!(p.evaluate("tools/call", Some("purge"), &narrower), Access::InsufficientScope { .. }));
        assert_eq!(
            p.evaluate("tools/call", Some("purge"), &admin),
            Access::InsufficientScope {
                required: vec!["read:tasks".into(), "delete:tasks".into(), "audit".into()],
                missing: vec!["delete:tasks".into(), "audit".into()],
                rule: "rules[0]".into()
            },
            "the rule's own scopes are asked for, never the broader admin; read:tasks is covered so not missing"
        );
        // any_scopes: an alternative covered through the hierarchy is held.
        let mut r = rule("tools/call", Some("x"), &[]);
        r.any_scopes = vec![vec!["tasks:read".into()], vec!["other".into()]];
        p.rules = vec![r];
        assert_eq!(p.evaluate("tools/call", Some("x"), &principal(&["tasks"], json!({}))), Access::Allow);
        // Shadow audits see the hierarchy too.
        p.rules[0].shadow = true;
        p.rules.push(rule("tools/call", Some("x"), &[]));
        assert_eq!(p.decide("tools/call", Some("x"), None, &principal(&["tasks"], json!({}))).would_deny, None);
        assert!(p.decide("tools/call", Some("x"), None, &principal(&["admin"], json!({}))).would_deny.is_some());
    }

    #[test]
    fn claim_conditions() {
        let mut r = rule("tools/call", Some("*"), &[]);
        r.claims = vec![
            ClaimCondition { claim: "groups".into(), test: ClaimTest::Contains("ops".into()) },
            ClaimCondition { claim: "sub".into(), test: ClaimTest::In(vec!["alice".into(), "bob".into()]) },
        ];
        let p = policy(vec![r]);
        let ok = principal(&[], json!({"groups": ["dev", "ops"], "sub": "alice"}));
        assert_eq!(p.evaluate("tools/call", Some("t"), &ok), Access::Allow);
        let wrong_group = principal(&[], json!({"groups": ["dev"], "sub": "alice"}));
        assert!(matches!(p.evaluate("tools/call", Some("t"), &wrong_group), Access::Denied { .. }));
        let no_claim = principal(&[], json!({"sub": "alice"}));
        assert!(matches!(p.evaluate("tools/call", Some("t"), &no_claim), Access::Denied { .. }));
        let eq = ClaimCondition { claim: "email_verified".into(), test: ClaimTest::Equals(json!(true)) };
        assert!(claim_holds(&eq, &principal(&[], json!({"email_verified": true}))));
        assert!(!claim_holds(&eq, &principal(&[], json!({"email_verified": "true"}))));
    }

    #[test]
    fn rule_without_target_matches_targeted_calls_and_target_rule_needs_target() {
        let p =
            policy(vec![rule("resources/read", Some("file:///public/*"), &[]), rule("resources/*", None, &["docs"])]);
        let nobody = principal(&[], json!({}));
        assert_eq!(p.evaluate("resources/read", Some("file:///public/a"), &nobody), Access::Allow);
        assert!(matches!(
            p.evaluate("resources/read", Some("file:///secret"), &nobody),
            Access::InsufficientScope { .. }
        ));
        assert!(matches!(p.evaluate("resources/list", None, &nobody), Access::InsufficientScope { .. }));
    }

    #[test]
    fn unlisted_methods_deny_keeps_plumbing() {
        let p = Policy { unlisted_tools: Unlisted::Deny, unlisted_methods: Unlisted::Deny, ..Policy::allow_all() };
        let any = principal(&[], json!({}));
        for m in ["initialize", "ping", "server/discover", "notifications/initialized", "subscriptions/listen"] {
            assert_eq!(p.evaluate(m, None, &any), Access::Allow, "{m}");
        }
        assert!(matches!(p.evaluate("resources/list", None, &any), Access::Denied { .. }));
        assert!(p.governs("resources/read"));
    }

    #[test]
    fn argument_conditions_are_requirements_of_the_deciding_rule() {
        let mut r = rule("tools/call", Some("createTask"), &["write"]);
        r.arguments = vec![ArgumentCondition {
            pointer: "/project".into(),
            test: crate::mcp::arguments::ArgumentTest::InClaim("projects".into()),
            negate: false,
            optional: false,
        }];
        r.label = "create-in-own-project".into();
        let p = policy(vec![r, rule("tools/call", Some("*"), &[])]);
        let writer = principal(&["write"], json!({"projects": ["apollo"]}));
        let own = json!({"project": "apollo"});
        let other = json!({"project": "skylab"});
        assert_eq!(p.decide("tools/call", Some("createTask"), Some(&own), &writer).access, Access::Allow);
        let refused = p.decide("tools/call", Some("createTask"), Some(&other), &writer);
        assert_eq!(
            refused.access,
            Access::ArgumentNotAllowed { argument: "/project".into(), rule: "create-in-own-project".into() },
            "a later catch-all rule does not get a second chance"
        );
        assert_eq!(refused.rule, Some(0));
        // Scopes first: a caller without them is asked for scopes, not told about arguments.
        let reader = principal(&["read"], json!({"projects": ["apollo"]}));
        assert!(matches!(
            p.decide("tools/call", Some("createTask"), Some(&own), &reader).access,
            Access::InsufficientScope { .. }
        ));
        // Lists are name-based: the tool is listed for whoever may call it with some arguments.
        assert_eq!(p.evaluate("tools/call", Some("createTask"), &writer), Access::Allow);
        assert!(p.reads_arguments());
    }

    #[test]
    fn shadow_rules_report_and_never_refuse() {
        let mut strict = rule("tools/call", Some("getTasks"), &["admin"]);
        strict.shadow = true;
        let p = policy(vec![strict, rule("tools/call", Some("getTasks"), &["read"])]);
        let reader = principal(&["read"], json!({}));
        let d = p.decide("tools/call", Some("getTasks"), None, &reader);
        assert_eq!((d.access, d.rule), (Access::Allow, Some(1)), "enforced by the rule after the shadow one");
        let (would, rule) = d.would_deny.expect("the shadow rule would refuse");
        assert!(matches!(would, Access::InsufficientScope { .. }));
        assert_eq!(rule, Some(0));
        let admin = principal(&["read", "admin"], json!({}));
        assert_eq!(p.decide("tools/call", Some("getTasks"), None, &admin).would_deny, None);
        // Lists follow the enforced rules only.
        assert_eq!(p.evaluate("tools/call", Some("getTasks"), &reader), Access::Allow);
    }

    #[test]
    fn a_shadow_policy_allows_everything_and_reports_what_it_would_refuse() {
        let mut p = policy(vec![rule("tools/call", Some("createTask"), &["write"])]);
        p.shadow = true;
        let reader = principal(&["read"], json!({}));
        for (name, refused) in [("createTask", true), ("unlisted", true)] {
            let d = p.decide("tools/call", Some(name), None, &reader);
            assert_eq!(d.access, Access::Allow, "{name}");
            assert_eq!(d.would_deny.is_some(), refused, "{name}");
        }
        assert_eq!(p.evaluate("tools/call", Some("createTask"), &reader), Access::Allow, "nothing trimmed");
        let writer = principal(&["write"], json!({}));
        assert_eq!(p.decide("tools/call", Some("createTask"), None, &writer).would_deny, None);
    }
}
