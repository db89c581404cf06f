//! Glob patterns for tool names, prompt names and resource URIs: `*` matches any run of characters
//! (including `/`), `?` matches one character, everything else matches itself. No character classes,
//! no escapes: names that contain `*` or `?` literally are matched by an exact rule instead.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
    literal: bool,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob { pattern: pattern.chars().collect(), literal: !pattern.contains(['*', '?']) }
    }

    pub fn as_string(&self) -> String {
        self.pattern.iter().collect()
    }

    /// Iterative matcher with single-star backtracking: O(pattern × text), no recursion.
    pub fn matches(&self, text: &str) -> bool {
        if self.literal {
            return self.pattern.iter().copied().eq(text.chars());
        }
        let text: Vec<char> = text.chars().collect();
        let (p, t) = (&self.pattern, &text);
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            // A `*` in the pattern is always a wildcard, also where the text has a literal `*`: taking it
            // as a literal match first would leave no star to backtrack to.
            if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let cases = [
            ("admin_*", "admin_delete", true),
            ("admin_*", "admin_", true),
            ("admin_*", "xadmin_delete", false),
            ("getTasks", "getTasks", true),
            ("getTasks", "gettasks", false),
            ("file:///docs/*", "file:///docs/a/b.md", true),
            ("file:///docs/*", "file:///etc/passwd", false),
            ("*.md", "a.md", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            // Found by fuzzing (the `jsonrpc` target): a `*` in the text where the pattern has its
            // wildcard was taken as a literal match, leaving no wildcard, so a deny rule `secret_*`
            // did not match `secret_*plan` and the request fell through to the next rule.
            ("secret_*", "secret_*plan", true),
            ("file:///public/*", "file:///public/*./secret", true),
            ("file:///public/*", "file:///public/*", true),
            ("a*b", "a*xb", true),
            ("a*b", "a*x", false),
            ("*?", "*", true),
            ("a?c", "a*c", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(Glob::new(pattern).matches(text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let g = Glob::new(&"*a".repeat(50));
        assert!(!g.matches(&"a".repeat(49)));
    }
}
