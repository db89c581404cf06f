//! Scope hierarchies (`scope_hierarchy`): a broader scope implies narrower ones (`admin` ⊇ `write:tasks`
//! ⊇ `read:tasks`; `tasks` ⊇ `tasks:read`). MCP 2026-07-28: servers MUST account for them when deciding
//! whether a token is sufficient.
//!
//! The transitive closure is computed once at load, so a check on the request path is a lookup. The
//! hierarchy only widens what a token is taken to grant for decisions: what was issued (claim headers,
//! minted upstream tokens) is left as issued, and challenges name what a rule requires, never the broader
//! scope that would also cover it.

use crate::config::fields::{ConfigError, check_scope_token};
use serde_json::Value;

/// Bounds the closure's work at load: scope mentions over all entries (each key and each listed scope;
/// a scope named in several entries counts once per entry), which bound the distinct scopes too.
const MAX_SCOPES: usize = 1_000;

/// Each broader scope with every scope it implies, directly or through others. Sorted by scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeHierarchy {
    implied: Vec<(String, Vec<String>)>,
}

impl ScopeHierarchy {
    /// Reads `{"broader": ["narrower", ...], ...}`; refuses what is not that shape, self-implication,
    /// repeated entries and cycles, naming the field.
    pub(crate) fn parse(field: &str, value: &Value) -> Result<ScopeHierarchy, ConfigError> {
        let shape = "must be an object mapping a scope to the list of scopes it implies";
        let Value::Object(map) = value else { return Err(ConfigError::new(field, shape)) };
        let mut direct: Vec<(String, Vec<String>)> = Vec::with_capacity(map.len());
        let mut named = 0usize;
        for (broader, narrower) in map {
            // Checked before it becomes part of a field path: a key with a control character must not
            // reach the log line unescaped (the error quotes it escaped).
            check_scope_token(field, broader)?;
            let entry = format!("{field}.{broader}");
            let Value::Array(items) = narrower else { return Err(ConfigError::new(entry, shape)) };
            if items.is_empty() {
                return Err(ConfigError::new(entry, "must imply at least one scope (omit the entry instead)"));
            }
            let mut list: Vec<String> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let f = format!("{entry}[{i}]");
                let Value::String(s) = item else { return Err(ConfigError::new(f, "must be a scope (a string)")) };
                check_scope_token(&f, s)?;
                if s == broader {
                    return Err(ConfigError::new(f, "a scope cannot imply itself"));
                }
                if list.contains(s) {
                    return Err(ConfigError::new(f, format!("{s:?} is listed twice")));
                }
                list.push(s.clone());
            }
            named += 1 + list.len();
            if named > MAX_SCOPES {
                return Err(ConfigError::new(field, format!("names more than {MAX_SCOPES} scopes")));
            }
            // Kept sorted as it is built (keys are unique): binary search later, and no sort routine.
            let at = direct.partition_point(|(k, _)| k < broader);
            direct.insert(at, (broader.clone(), list));
        }
        let mut implied = Vec::with_capacity(direct.len());
        for (broader, _) in &direct {
            let closure = closure_of(&direct, broader).map_err(|cycle| {
                ConfigError::new(format!("{field}.{broader}"), format!("cycle: {}", cycle.join(" implies ")))
            })?;
            implied.push((broader.clone(), closure));
        }
        Ok(ScopeHierarchy { implied })
    }

    /// Whether the held scopes grant `wanted`: held as such, or implied by one that is.
    pub fn covers(&self, held: &[String], wanted: &str) -> bool {
        held.iter().any(|h| h == wanted || self.implied_by(h).iter().any(|s| s == wanted))
    }

    fn implied_by(&self, scope: &str) -> &[String] {
        match self.implied.binary_search_by(|(s, _)| s.as_str().cmp(scope)) {
            Ok(i) => &self.implied[i].1,
            Err(_) => &[],
        }
    }
}

/// Every scope `start` implies, sorted; or, when following implications leads back to a scope on the
/// way, that cycle (`a`, `b`, `a`). Depth-first with an explicit stack, so a deep chain cannot overflow.
fn closure_of(direct: &[(String, Vec<String>)], start: &str) -> Result<Vec<String>, Vec<String>> {
    let children = |s: &str| -> &[String] {
        direct.binary_search_by(|(k, _)| k.as_str().cmp(s)).map_or(&[], |i| direct[i].1.as_slice())
    };
    // Sorted, searched by halves: a set without another BTreeSet monomorphization in the module.
    let mut found: Vec<&str> = Vec::new();
    // The path from `start`, each with the index of the next child to visit.
    let mut path: Vec<(&str, usize)> = vec![(start, 0)];
    while let Some(top) = path.last_mut() {
        let (scope, next) = (top.0, top.1);
        let Some(child) = children(scope).get(next) else {
            path.pop();
            continue;
        };
        top.1 += 1;
        if let Some(at) = path.iter().position(|(s, _)| *s == child.as_str()) {
            let mut cycle: Vec<String> = path[at..].iter().map(|(s, _)| s.to_string()).collect();
            cycle.push(child.clone());
            return Err(cycle);
        }
        if let Err(at) = found.binary_search(&child.as_str()) {
            found.insert(at, child.as_str());
            path.push((child.as_str(), 0));
        }
    }
    Ok(found.into_iter().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hierarchy(v: Value) -> Result<ScopeHierarchy, ConfigError> {
        ScopeHierarchy::parse("scope_hierarchy", &v)
    }

    fn held(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn implication_is_transitive_and_one_way() {
        let h = hierarchy(json!({
            "admin": ["write:tasks"], "write:tasks": ["read:tasks"], "tasks": ["tasks:read", "tasks:write"]
        }))
        .unwrap();
        let admin = held(&["admin"]);
        for s in ["admin", "write:tasks", "read:tasks"] {
            assert!(h.covers(&admin, s), "{s}");
        }
        assert!(!h.covers(&admin, "tasks:read"));
        assert!(h.covers(&held(&["tasks"]), "tasks:write"));
        assert!(!h.covers(&held(&["read:tasks"]), "write:tasks"), "narrower does not imply broader");
        assert!(!h.covers(&held(&["tasks:read"]), "tasks"));
        assert!(!h.covers(&[], "read:tasks"));
        assert!(ScopeHierarchy::default().covers(&held(&["a"]), "a"));
    }

    #[test]
    fn diamonds_and_shared_descendants_are_not_cycles() {
        let h = hierarchy(json!({"root": ["a", "b"], "a": ["leaf"], "b": ["leaf"]})).unwrap();
        assert!(h.covers(&held(&["root"]), "leaf"));
        assert_eq!(h.implied_by("root"), ["a", "b", "leaf"]);
    }

    #[test]
    fn cycles_are_refused_naming_the_entry_and_the_loop() {
        let e = hierarchy(json!({"a": ["b"], "b": ["c"], "c": ["a"]})).unwrap_err();
        assert_eq!(e.field, "scope_hierarchy.a");
        assert_eq!(e.reason, "cycle: a implies b implies c implies a");
        let e = hierarchy(json!({"x": ["y"], "y": ["x"]})).unwrap_err();
        assert!(e.reason.starts_with("cycle: x implies y implies x"), "{e}");
    }

    #[test]
    fn bad_shapes_are_refused_naming_the_field() {
        let cases = [
            (json!(["admin"]), "scope_hierarchy"),
            (json!({"admin": "read"}), "scope_hierarchy.admin"),
            (json!({"admin": []}), "scope_hierarchy.admin"),
            (json!({"admin": [7]}), "scope_hierarchy.admin[0]"),
            (json!({"admin": [""]}), "scope_hierarchy.admin[0]"),
            (json!({"admin": ["a b"]}), "scope_hierarchy.admin[0]"),
            (json!({"admin": ["read", "admin"]}), "scope_hierarchy.admin[1]"),
            (json!({"admin": ["read", "read"]}), "scope_hierarchy.admin[1]"),
            (json!({"": ["read"]}), "scope_hierarchy"),
            (json!({"a\nb": ["read"]}), "scope_hierarchy"),
        ];
        for (value, field) in cases {
            let e = hierarchy(value.clone()).unwrap_err();
            assert_eq!(e.field, field, "{value}: {e}");
        }
    }

    #[test]
    fn size_is_bounded() {
        let big: serde_json::Map<String, Value> =
            (0..600).map(|i| (format!("s{i}"), json!([format!("t{i}")]))).collect();
        let e = hierarchy(Value::Object(big)).unwrap_err();
        assert_eq!(e.field, "scope_hierarchy");
        // A long chain is fine: no recursion.
        let chain: serde_json::Map<String, Value> =
            (0..400).map(|i| (format!("s{i}"), json!([format!("s{}", i + 1)]))).collect();
        let h = hierarchy(Value::Object(chain)).unwrap();
        assert!(h.covers(&held(&["s0"]), "s400"));
    }
}
