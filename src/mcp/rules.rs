//! Authorization rules over MCP methods and their targets, and their evaluation for a [`Principal`].
//!
//! Rules are evaluated in order and the first rule whose method and target match decides (put specific
//! rules before globs). A rule allows when the caller holds every scope in `scopes`, at least one
//! complete set in `any_scopes` (if given), and every claim condition; `action: "deny"` refuses outright.
//! With no matching rule: `tools/call` follows `unlisted_tools` (default deny), protocol plumbing
//! (`initialize`, `ping`, `server/discover`, `subscriptions/listen`, notifications) is allowed, and
//! everything else follows `unlisted_methods` (default allow).

use super::glob::Glob;
use crate::jwt::Principal;
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
    /// `rules[i]`, for logs.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub unlisted_tools: Unlisted,
    pub unlisted_methods: Unlisted,
}

/// The outcome for one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    Allow,
    /// The caller lacks scopes: `required` is what to ask for (the rule's scopes, plus the first
    /// alternative of `any_scopes` when none is held), `missing` what the caller does not hold.
    InsufficientScope {
        required: Vec<String>,
        missing: Vec<String>,
        rule: String,
    },
    /// Refused by a deny rule, an unmet claim condition, or a deny default. No scope would help.
    Denied {
        why: String,
    },
}

impl Policy {
    pub fn allow_all() -> Policy {
        Policy { rules: vec![], unlisted_tools: Unlisted::Allow, unlisted_methods: Unlisted::Allow }
    }

    /// The first rule whose method and target match.
    pub fn rule_for(&self, method: &str, target: Option<&str>) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.method.matches(method) && r.target.as_ref().is_none_or(|t| target.is_some_and(|name| t.matches(name)))
        })
    }

    pub fn evaluate(&self, method: &str, target: Option<&str>, principal: &Principal) -> Access {
        let rule = self.rule_for(method, target);
        let Some(rule) = rule else {
            let fallback = if method == "tools/call" {
                self.unlisted_tools
            } else if is_plumbing(method) {
                Unlisted::Allow
            } else {
                self.unlisted_methods
            };
            return match fallback {
                Unlisted::Allow => Access::Allow,
                Unlisted::Deny => Access::Denied { why: "no rule allows this request".into() },
            };
        };
        if rule.deny {
            return Access::Denied { why: format!("denied by {}", rule.label) };
        }
        if let Some(c) = rule.claims.iter().find(|c| !claim_holds(c, principal)) {
            return Access::Denied { why: format!("claim condition on {:?} not met ({})", c.claim, rule.label) };
        }
        let has = |s: &String| principal.scopes.contains(s);
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
            Access::Allow
        } else {
            Access::InsufficientScope { required, missing, rule: rule.label.clone() }
        }
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
        }
    }

    fn policy(rules: Vec<Rule>) -> Policy {
        Policy { rules, unlisted_tools: Unlisted::Deny, unlisted_methods: Unlisted::Allow }
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
        let p = Policy { rules: vec![], unlisted_tools: Unlisted::Deny, unlisted_methods: Unlisted::Deny };
        let any = principal(&[], json!({}));
        for m in ["initialize", "ping", "server/discover", "notifications/initialized", "subscriptions/listen"] {
            assert_eq!(p.evaluate(m, None, &any), Access::Allow, "{m}");
        }
        assert!(matches!(p.evaluate("resources/list", None, &any), Access::Denied { .. }));
        assert!(p.governs("resources/read"));
    }
}
