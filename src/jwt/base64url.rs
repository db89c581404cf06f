//! Strict base64url (RFC 7515 section 2): URL-safe alphabet, no padding, canonical trailing bits.
//! Padding, whitespace, the standard alphabet and non-canonical encodings are all refused, so one token
//! has exactly one spelling and a cache or log keyed on it cannot be fooled by a re-encoding.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const STRICT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

pub fn decode(input: &str) -> Option<Vec<u8>> {
    STRICT.decode(input).ok()
}

pub fn encode(input: &[u8]) -> String {
    STRICT.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictness() {
        assert_eq!(decode("aGk").unwrap(), b"hi");
        assert!(decode("aGk=").is_none(), "padding");
        assert!(decode("aGl").is_none(), "non-canonical trailing bits");
        assert!(decode("aG k").is_none(), "whitespace");
        assert!(decode("a+/").is_none(), "standard alphabet");
        assert_eq!(decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
    }
}
