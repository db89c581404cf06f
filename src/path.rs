//! How an upstream could read a request path, so that the guarded/MCP decision is made on the path the
//! upstream will route, whatever the HTTP connection manager normalises.
//!
//! Envoy does not normalise paths by default (`normalize_path`, `merge_slashes` are off), while most
//! upstream frameworks decode percent-escapes and some resolve dot segments and merge slashes before
//! routing. So `/%6dcp`, `//mcp` and `/x/../mcp` reach `/mcp` there. [`read`] gives the *canonical*
//! reading every common upstream agrees on (RFC 3986 section 6.2.2: percent-encoded unreserved
//! characters decoded, the other escapes in upper-case hex, dot segments removed, and repeated slashes
//! merged), plus the *other* readings some upstreams make of spellings that RFC 3986 leaves to the
//! server: `%2F` and `%5C` read as separators, backslashes read as slashes, a NUL ending the path,
//! `;parameters` stripped from segments, escapes decoded twice, and slashes merged before or after dot
//! segments are resolved. The caller refuses a request whose readings do not all get the same decision.

use crate::config::fields::ConfigError;
use serde::Deserialize;

/// The readings of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// What RFC 3986 normalisation gives: the path decisions are made on.
    pub canonical: String,
    /// Other readings that some upstream may make (empty when the path has one reading).
    pub others: Vec<String>,
}

impl Reading {
    /// Every reading: the canonical one first.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.canonical.as_str()).chain(self.others.iter().map(String::as_str))
    }

    pub fn is_ambiguous(&self) -> bool {
        !self.others.is_empty()
    }
}

/// The readings of `path` (the `:path` without query string or fragment).
pub fn read(path: &str) -> Reading {
    if is_plain(path) {
        return Reading { canonical: path.to_string(), others: Vec::new() }; // the common case, cheaply
    }
    let decoded = decode_unreserved(path.as_bytes());
    let canonical = merge_slashes(&remove_dot_segments(&decoded));
    let mut others = Vec::new();
    // Merging before resolving dot segments reads `/x//../mcp` as `/mcp` (the canonical order, Envoy's,
    // gives `/x/mcp`).
    if decoded.contains("//") {
        push_new(&mut others, &canonical, remove_dot_segments(&merge_slashes(&decoded)));
    }
    if needs_lenient_reading(&decoded) {
        let lenient = lenient(&decoded);
        push_new(&mut others, &canonical, merge_slashes(&remove_dot_segments(&lenient)));
        push_new(&mut others, &canonical, remove_dot_segments(&merge_slashes(&lenient)));
    }
    Reading { canonical, others }
}

/// Already canonical, with one reading: `/`-rooted path characters without escapes, `;`, empty or dot
/// segments.
fn is_plain(path: &str) -> bool {
    path.starts_with('/')
        && path.bytes().all(|b| is_path_char(b) && b != b';')
        && !path.contains("//")
        && path.split('/').all(|segment| segment != "." && segment != "..")
}

fn push_new(others: &mut Vec<String>, canonical: &str, reading: String) {
    if reading != canonical && !others.contains(&reading) {
        others.push(reading);
    }
}

/// RFC 3986 section 2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path may carry unescaped (RFC 3986 `pchar` and `/`), other than `%`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

/// Percent-encoded unreserved characters decoded; every other escape, and every byte a path may not
/// carry as it is (controls, space, non-ASCII, `\`, `"`...), written as an upper-case escape. A `%`
/// not followed by two hex digits is a literal `%` (`%25`): no reading turns it into another character.
fn decode_unreserved(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            if let (Some(hi), Some(lo)) =
                (path.get(i + 1).and_then(|&h| hex_value(h)), path.get(i + 2).and_then(|&l| hex_value(l)))
            {
                let decoded = (hi << 4) | lo;
                if is_unreserved(decoded) {
                    out.push(decoded as char);
                } else {
                    push_escaped(&mut out, decoded);
                }
                i += 3;
                continue;
            }
            push_escaped(&mut out, b'%');
        } else if is_path_char(b) {
            out.push(b as char);
        } else {
            push_escaped(&mut out, b);
        }
        i += 1;
    }
    out
}

/// Whether `canonical` holds a spelling that some upstream reads differently.
fn needs_lenient_reading(canonical: &str) -> bool {
    canonical.contains(';') || ["%2F", "%5C", "%00", "%25"].iter().any(|e| canonical.contains(e))
}

/// The reading of a lenient upstream: `%2F`, `%5C` and `\` as `/`, the path ending at a NUL, escapes
/// decoded once more (`%256d` is `%6d`, then `m`), and `;parameters` dropped from each segment.
fn lenient(canonical: &str) -> String {
    let mut text = canonical.to_string();
    // Two more rounds of decoding cover `%25` stacked twice; each round is linear in the path.
    for _ in 0..2 {
        if !text.contains("%25") {
            break;
        }
        text = text.replace("%25", "%");
        text = decode_unreserved(text.as_bytes());
    }
    let text = text.replace("%2F", "/").replace("%5C", "/");
    let text = match text.find("%00") {
        Some(nul) => &text[..nul],
        None => &text,
    };
    text.split('/').map(|segment| segment.split(';').next().unwrap_or("")).collect::<Vec<_>>().join("/")
}

/// RFC 3986 section 5.2.4, on a path that starts with `/` (or not: then it is read as if it did).
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut ends_in_directory = false;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => ends_in_directory = i == last,
            ".." => {
                kept.pop();
                ends_in_directory = i == last;
            }
            other => {
                kept.push(other);
                ends_in_directory = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if ends_in_directory || out.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    /// `path` is the request path without its query string. Matching ignores ASCII case, and an exact
    /// match ignores a trailing slash: upstream frameworks (Express by default, among others) route
    /// `/MCP` and `/mcp/` to `/mcp`, so the filter must guard those spellings too. Matching more
    /// spellings than the upstream routes is the safe direction.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => {
                let trim = |s: &str| if s.len() > 1 { s.trim_end_matches('/').to_string() } else { s.to_string() };
                trim(path).eq_ignore_ascii_case(&trim(p))
            }
            PathMatch::Prefix(p) => {
                path.len() >= p.len() && path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
        }
    }

    /// A configured path match (`paths`, `mcp.paths`), taken in canonical form.
    pub(crate) fn parse(field: &str, m: RawPathMatch) -> Result<PathMatch, ConfigError> {
        let pm = match (m.exact, m.prefix) {
            (Some(p), None) => PathMatch::Exact(p),
            (None, Some(p)) => PathMatch::Prefix(p),
            _ => return Err(ConfigError::new(field, "set exactly one of \"exact\" or \"prefix\"")),
        };
        let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = &pm;
        if !p.starts_with('/') || p.contains(['?', '#']) {
            return Err(ConfigError::new(field, "must be a path starting with '/' without query or fragment"));
        }
        // Requests are matched on their canonical reading (`crate::path`), so the configured path is taken
        // in that form too: `/caf%c3%a9` and `/café` both guard what a client spells either way.
        let reading = read(p);
        if reading.is_ambiguous() {
            return Err(ConfigError::new(
                field,
                "must have one reading: no encoded '/' or '\\', NUL, ';' parameters, double escapes or '//' before '..'",
            ));
        }
        Ok(match pm {
            PathMatch::Exact(_) => PathMatch::Exact(reading.canonical),
            PathMatch::Prefix(_) => PathMatch::Prefix(reading.canonical),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPathMatch {
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(path: &str) -> String {
        read(path).canonical
    }

    #[test]
    fn unreserved_escapes_are_decoded_in_any_case() {
        for p in ["/%6dcp", "/%6Dcp", "/m%63p", "/%6D%63%70", "/mcp"] {
            assert_eq!(read(p), Reading { canonical: "/mcp".into(), others: vec![] }, "{p}");
        }
        assert_eq!(canonical("/a%7eb%2D"), "/a~b-");
    }

    #[test]
    fn other_escapes_are_kept_in_upper_case_and_bare_bytes_escaped() {
        assert_eq!(canonical("/a%20b%3a"), "/a%20b%3A");
        assert_eq!(canonical("/é b"), "/%C3%A9%20b");
        assert_eq!(canonical("/caf%c3%a9"), "/caf%C3%A9");
    }

    #[test]
    fn dot_segments_and_repeated_slashes() {
        for (p, want) in [
            ("//mcp", "/mcp"),
            ("/./mcp", "/mcp"),
            ("/x/../mcp", "/mcp"),
            ("/../../mcp", "/mcp"),
            ("/%2e%2E/mcp", "/mcp"),
            ("/mcp/.", "/mcp/"),
            ("/mcp/x/..", "/mcp/"),
            ("/mcp///", "/mcp/"),
            ("", "/"),
            ("/", "/"),
            ("mcp", "/mcp"),
        ] {
            assert_eq!(canonical(p), want, "{p}");
        }
    }

    #[test]
    fn merge_order_ambiguity_is_reported() {
        let r = read("/x//../mcp");
        assert_eq!(r.canonical, "/x/mcp");
        assert_eq!(r.others, vec!["/mcp".to_string()]);
    }

    #[test]
    fn lenient_readings_of_encoded_separators_nul_parameters_and_double_escapes() {
        for (p, other) in [
            ("/x%2F..%2Fmcp", "/mcp"),
            ("/x%2f..%2fmcp", "/mcp"),
            ("/%2Fmcp", "/mcp"),
            ("/x%5C..%5Cmcp", "/mcp"),
            ("/x\\..\\mcp", "/mcp"),
            ("/mcp%00.txt", "/mcp"),
            ("/mcp;x=1", "/mcp"),
            ("/%256dcp", "/mcp"),
            ("/%25256dcp", "/mcp"),
        ] {
            let r = read(p);
            assert!(r.is_ambiguous(), "{p}");
            assert!(r.all().any(|reading| reading == other), "{p}: {r:?}");
        }
    }

    #[test]
    fn malformed_escapes_are_literal_percent_signs() {
        for (p, want) in [("/mcp%", "/mcp%25"), ("/mcp%4", "/mcp%254"), ("/a%zz", "/a%25zz")] {
            assert_eq!(read(p), Reading { canonical: want.into(), others: vec![] }, "{p}");
        }
    }

    #[test]
    fn plain_paths_have_one_reading() {
        for p in ["/mcp", "/mcp/", "/api/v1/items", "/a-b_c~d.e", "/a%20b", "/x:y@z"] {
            assert!(!read(p).is_ambiguous(), "{p}");
        }
    }

    #[test]
    fn plain_paths_take_the_short_way_to_the_same_reading() {
        for p in ["/mcp", "/mcp/", "/a/b.c/d", "/x:y@z!$&'()*+,="] {
            assert!(is_plain(p), "{p}");
            assert_eq!(read(p).canonical, merge_slashes(&remove_dot_segments(&decode_unreserved(p.as_bytes()))));
        }
        for p in ["mcp", "/a%20", "//a", "/./a", "/a/..", "/a;b", "/é", "/a b", "/a\\b"] {
            assert!(!is_plain(p), "{p}");
        }
    }

    #[test]
    fn long_paths_are_linear() {
        let p = "/%2e%2e".repeat(20_000) + "/mcp";
        assert_eq!(canonical(&p), "/mcp");
        let p = "/%25".repeat(20_000);
        assert_eq!(read(&p).canonical, p);
    }
}
