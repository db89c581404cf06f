//! Conditions on a call's arguments (`params.arguments` of `tools/call` and `prompts/get`): each names
//! one value by JSON Pointer (RFC 6901) and tests it. A rule's conditions must all hold.
//!
//! Types are strict: `"5"` is not `5`, a range applies to numbers only, a length or a glob to strings
//! only; arrays and objects are compared as JSON (numbers numerically, `1` equals `1.0`). A condition
//! on an argument that is absent fails, unless it is `optional`. A refusal names the pointer, never the
//! value: arguments may carry secrets.

use super::glob::Glob;
use crate::jwt::Principal;
use serde_json::Value;
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub enum ArgumentTest {
    Equals(Value),
    OneOf(Vec<Value>),
    /// A string matching the glob (`*` any run, `?` one character).
    Glob(Glob),
    /// A number within the bounds (inclusive).
    Range {
        min: Option<f64>,
        max: Option<f64>,
    },
    /// A string of at most this many characters (Unicode scalar values).
    MaxLength(usize),
    /// The value is the verified claim, or one of its elements (an array claim), or one of its words
    /// (a space-delimited string claim such as `scope`).
    InClaim(String),
    /// The value equals the verified claim (as JSON).
    EqualsClaim(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArgumentCondition {
    /// RFC 6901 JSON Pointer into `params.arguments` (`/project`, `/items/0/id`, `` for the whole object).
    pub pointer: String,
    pub test: ArgumentTest,
    /// The test must fail instead.
    pub negate: bool,
    /// An absent argument passes (by default it fails).
    pub optional: bool,
}

/// The first condition the arguments do not meet, if any. `arguments` is `params.arguments` (None when
/// absent: then every non-optional condition fails).
pub fn first_unmet<'c>(
    conditions: &'c [ArgumentCondition],
    arguments: Option<&Value>,
    principal: &Principal,
) -> Option<&'c ArgumentCondition> {
    conditions.iter().find(|c| !holds(c, arguments, principal))
}

fn holds(condition: &ArgumentCondition, arguments: Option<&Value>, principal: &Principal) -> bool {
    let Some(value) = arguments.and_then(|a| pointer_get(a, &condition.pointer)) else {
        return condition.optional;
    };
    test(&condition.test, value, principal) != condition.negate
}

fn test(test: &ArgumentTest, value: &Value, principal: &Principal) -> bool {
    match test {
        ArgumentTest::Equals(expected) => json_equal(value, expected),
        ArgumentTest::OneOf(options) => options.iter().any(|o| json_equal(value, o)),
        ArgumentTest::Glob(glob) => value.as_str().is_some_and(|s| glob.matches(s)),
        ArgumentTest::Range { min, max } => {
            let at_least = min.is_none_or(|m| compare(value, m).is_some_and(|o| o != Ordering::Less));
            let at_most = max.is_none_or(|m| compare(value, m).is_some_and(|o| o != Ordering::Greater));
            value.is_number() && at_least && at_most
        }
        ArgumentTest::MaxLength(max) => value.as_str().is_some_and(|s| s.chars().count() <= *max),
        ArgumentTest::InClaim(claim) => match principal.claim(claim) {
            Some(Value::Array(items)) => items.iter().any(|i| json_equal(value, i)),
            Some(Value::String(s)) => value.as_str().is_some_and(|v| s == v || s.split(' ').any(|w| w == v)),
            Some(other) => json_equal(value, other),
            None => false,
        },
        ArgumentTest::EqualsClaim(claim) => principal.claim(claim).is_some_and(|c| json_equal(value, c)),
    }
}

/// A JSON number against a bound, exactly for integers (an integer beyond 2^53 is not rounded into a
/// range it is outside of).
fn compare(value: &Value, bound: f64) -> Option<Ordering> {
    let integer = value.as_i64().map(i128::from).or_else(|| value.as_u64().map(i128::from));
    match integer {
        Some(i) => compare_integer(i, bound),
        None => value.as_f64()?.partial_cmp(&bound),
    }
}

fn compare_integer(i: i128, bound: f64) -> Option<Ordering> {
    if bound.is_nan() {
        return None;
    }
    // Beyond every i64/u64: decided by the sign alone.
    if bound >= 2.0e19 {
        return Some(Ordering::Less);
    }
    if bound <= -1.0e19 {
        return Some(Ordering::Greater);
    }
    let floor = bound.floor();
    match i.cmp(&(floor as i128)) {
        Ordering::Equal if bound > floor => Some(Ordering::Less),
        other => Some(other),
    }
}

/// JSON equality with numbers compared as numbers (`1` equals `1.0`; integers exactly).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(i), Some(j), _, _) => i == j,
            (_, _, Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64() && x.as_f64().is_some(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// RFC 6901: `""` is the whole value; `/a/0` walks object members and array indices; `~1` is `/` and
/// `~0` is `~`. An array index is digits without a leading zero (`-`, the end, names nothing).
pub fn pointer_get<'v>(value: &'v Value, pointer: &str) -> Option<&'v Value> {
    if pointer.is_empty() {
        return Some(value);
    }
    let mut at = value;
    for token in pointer.strip_prefix('/')?.split('/') {
        let key = token.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Object(map) => map.get(&key)?,
            Value::Array(items) => items.get(array_index(&key)?)?,
            _ => return None,
        };
    }
    Some(at)
}

fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0" || (!token.starts_with('0') && !token.is_empty());
    (canonical && token.bytes().all(|b| b.is_ascii_digit())).then(|| token.parse().ok()).flatten()
}

/// Whether `pointer` is a valid RFC 6901 pointer (checked at load: `~` only as `~0` or `~1`).
pub fn valid_pointer(pointer: &str) -> bool {
    if pointer.is_empty() {
        return true;
    }
    let Some(rest) = pointer.strip_prefix('/') else { return false };
    let bytes = rest.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| b != b'~' || matches!(bytes.get(i + 1), Some(b'0' | b'1')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn who() -> Principal {
        Principal {
            provider: 0,
            subject: Some("alice".into()),
            scopes: vec!["read".into()],
            expires_at: None,
            claims: json!({"sub": "alice", "projects": ["apollo", "gemini"], "tier": 2, "team": "red blue"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn cond(pointer: &str, test: ArgumentTest) -> ArgumentCondition {
        ArgumentCondition { pointer: pointer.into(), test, negate: false, optional: false }
    }

    fn ok(c: &ArgumentCondition, args: Value) -> bool {
        first_unmet(std::slice::from_ref(c), Some(&args), &who()).is_none()
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        let doc = json!({"a/b": 1, "m~n": 2, "": 3, "list": [10, 20, {"x": "y"}], "0": "zero"});
        assert_eq!(pointer_get(&doc, ""), Some(&doc));
        assert_eq!(pointer_get(&doc, "/a~1b"), Some(&json!(1)));
        assert_eq!(pointer_get(&doc, "/m~0n"), Some(&json!(2)));
        assert_eq!(pointer_get(&doc, "/"), Some(&json!(3)), "the empty key");
        assert_eq!(pointer_get(&doc, "/list/1"), Some(&json!(20)));
        assert_eq!(pointer_get(&doc, "/list/2/x"), Some(&json!("y")));
        assert_eq!(pointer_get(&doc, "/0"), Some(&json!("zero")), "digits name an object member too");
        for missing in ["/list/01", "/list/-", "/list/3", "/list/x", "/nope", "/a~1b/c", "a", "/list/1e0"] {
            assert_eq!(pointer_get(&doc, missing), None, "{missing}");
        }
        // `~01` is `~1` (the `~0` is decoded after `~1`), not `/`.
        assert_eq!(pointer_get(&json!({"~1": "tilde-one", "/": "slash"}), "/~01"), Some(&json!("tilde-one")));
        assert!(valid_pointer("") && valid_pointer("/a~0b~1c") && valid_pointer("/"));
        assert!(!valid_pointer("a") && !valid_pointer("/~") && !valid_pointer("/~2"));
    }

    #[test]
    fn each_test_kind_with_strict_types() {
        let eq = cond("/n", ArgumentTest::Equals(json!(5)));
        assert!(ok(&eq, json!({"n": 5})) && ok(&eq, json!({"n": 5.0})));
        assert!(!ok(&eq, json!({"n": "5"})), "a string is not a number");
        let one_of = cond("/env", ArgumentTest::OneOf(vec![json!("dev"), json!("test")]));
        assert!(ok(&one_of, json!({"env": "dev"})) && !ok(&one_of, json!({"env": "prod"})));
        let glob = cond("/repo", ArgumentTest::Glob(Glob::new("acme/*")));
        assert!(ok(&glob, json!({"repo": "acme/site"})) && !ok(&glob, json!({"repo": "evil/acme"})));
        assert!(!ok(&glob, json!({"repo": ["acme/x"]})), "a glob tests strings only");
        let range = cond("/count", ArgumentTest::Range { min: Some(1.0), max: Some(10.0) });
        assert!(
            ok(&range, json!({"count": 1})) && ok(&range, json!({"count": 10})) && ok(&range, json!({"count": 2.5}))
        );
        assert!(
            !ok(&range, json!({"count": 0})) && !ok(&range, json!({"count": 11})) && !ok(&range, json!({"count": "3"}))
        );
        let huge = cond("/n", ArgumentTest::Range { min: None, max: Some(9007199254740992.0) });
        assert!(!ok(&huge, json!({"n": 9007199254740993u64})), "no rounding into range");
        let len = cond("/title", ArgumentTest::MaxLength(3));
        assert!(
            ok(&len, json!({"title": "été"})) && !ok(&len, json!({"title": "abcd"})) && !ok(&len, json!({"title": 1}))
        );
        let in_claim = cond("/project", ArgumentTest::InClaim("projects".into()));
        assert!(ok(&in_claim, json!({"project": "apollo"})) && !ok(&in_claim, json!({"project": "skylab"})));
        let words = cond("/team", ArgumentTest::InClaim("team".into()));
        assert!(ok(&words, json!({"team": "blue"})) && !ok(&words, json!({"team": "re"})));
        let owner = cond("/owner", ArgumentTest::EqualsClaim("sub".into()));
        assert!(ok(&owner, json!({"owner": "alice"})) && !ok(&owner, json!({"owner": "bob"})));
        let tier = cond("/tier", ArgumentTest::EqualsClaim("tier".into()));
        assert!(ok(&tier, json!({"tier": 2})) && !ok(&tier, json!({"tier": "2"})));
        let no_claim = cond("/x", ArgumentTest::InClaim("nope".into()));
        assert!(!ok(&no_claim, json!({"x": "a"})), "a missing claim fails closed");
    }

    #[test]
    fn arrays_and_objects_compare_as_json() {
        let eq = cond("/filter", ArgumentTest::Equals(json!({"a": [1, 2], "b": null})));
        assert!(ok(&eq, json!({"filter": {"b": null, "a": [1.0, 2]}})));
        assert!(!ok(&eq, json!({"filter": {"a": [2, 1], "b": null}})));
        assert!(!ok(&eq, json!({"filter": {"a": [1, 2]}})));
    }

    #[test]
    fn missing_arguments_fail_closed_unless_optional_and_negation() {
        let mut c = cond("/project", ArgumentTest::InClaim("projects".into()));
        assert!(!ok(&c, json!({})));
        assert!(first_unmet(std::slice::from_ref(&c), None, &who()).is_some(), "no arguments at all");
        c.optional = true;
        assert!(ok(&c, json!({})));
        assert!(!ok(&c, json!({"project": "skylab"})), "optional, but present and wrong");
        let mut not_prod = cond("/env", ArgumentTest::Equals(json!("prod")));
        not_prod.negate = true;
        assert!(ok(&not_prod, json!({"env": "dev"})) && !ok(&not_prod, json!({"env": "prod"})));
        assert!(!ok(&not_prod, json!({})), "negated, still required to be present");
    }
}
