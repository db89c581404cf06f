//! Client-chosen text (tool names, URIs, methods, paths) cut to a bounded length before it is echoed in
//! a reply or written to a log: a 900 KB tool name must not make a 900 KB refusal or log line.

use std::borrow::Cow;

/// Longest client-chosen text echoed or logged, in bytes (before the mark).
pub const MAX_ECHO_BYTES: usize = 256;

/// What replaces the rest of a text that was cut.
pub const CUT_MARK: &str = "…[cut]";

/// `text` if it is at most [`MAX_ECHO_BYTES`] long; otherwise its first bytes (on a character boundary)
/// followed by [`CUT_MARK`].
pub fn clip(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_ECHO_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_ECHO_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{CUT_MARK}", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_long_text_is_cut_and_marked() {
        assert_eq!(clip("getTasks"), "getTasks");
        let exact = "a".repeat(MAX_ECHO_BYTES);
        assert_eq!(clip(&exact), exact);
        let long = "b".repeat(900_000);
        let cut = clip(&long);
        assert_eq!(cut.len(), MAX_ECHO_BYTES + CUT_MARK.len());
        assert!(cut.ends_with(CUT_MARK));
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        let long = "é".repeat(MAX_ECHO_BYTES);
        let cut = clip(&long);
        assert!(cut.ends_with(CUT_MARK));
        assert!(cut.len() <= MAX_ECHO_BYTES + CUT_MARK.len());
    }
}
