//! Signature algorithms and verifying keys.
//!
//! The maintained RustCrypto crates do the mathematics (`p256`, `p384`, `ed25519-compact`) except RSA's
//! public operation, see `rsa.rs` and `montgomery.rs`; this module only decides which of them runs, with which parameters, and
//! refuses combinations that JWS (RFC 7518) does not allow. `verify` takes the raw signing input and signature so the same code path
//! can be run against the Wycheproof vectors (tests/wycheproof.rs).

use super::ecdsa;
use super::montgomery::bit_length;
use super::rsa::{Hash, RsaKey};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// Exact, case-sensitive JWS name (RFC 7518). `none` and the HMAC family are deliberately absent.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    pub fn names_list() -> String {
        Algorithm::ALL.map(Algorithm::name).join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// The key cannot be used with this algorithm (`alg` does not match the key type or curve).
    KeyMismatch,
    /// The signature does not verify.
    Invalid,
}

/// A public key accepted from a JWKS, ready to verify. EC keys are shared (`Arc`): each carries the
/// precomputed table of its point, built on first use (`ecdsa.rs`).
#[derive(Clone)]
pub enum VerifyingKey {
    Rsa(RsaKey),
    P256(Arc<ecdsa::p256_curve::Key>),
    P384(Arc<ecdsa::p384_curve::Key>),
    Ed25519(ed25519_compact::PublicKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            VerifyingKey::Rsa(key) => key.fmt(f),
            VerifyingKey::P256(_) => f.write_str("P256"),
            VerifyingKey::P384(_) => f.write_str("P384"),
            VerifyingKey::Ed25519(key) => key.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    RsaModulusSize(usize),
    RsaExponent,
    Invalid(&'static str),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            KeyError::RsaModulusSize(bits) => write!(f, "RSA modulus of {bits} bits (2048 to 4096 accepted)"),
            KeyError::RsaExponent => f.write_str("RSA public exponent other than 65537"),
            KeyError::Invalid(what) => f.write_str(what),
        }
    }
}

pub const RSA_MIN_BITS: usize = 2048;
pub const RSA_MAX_BITS: usize = 4096;

impl VerifyingKey {
    /// RSA from big-endian modulus and exponent. Policy: 2048..=4096-bit modulus, e = 65537.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<VerifyingKey, KeyError> {
        let key = RsaKey::new(n);
        let bits = key.as_ref().map_or_else(|| bit_length(n), |key| key.modulus_bits() as usize);
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(KeyError::RsaModulusSize(bits));
        }
        let e_first = e.iter().position(|&b| b != 0).unwrap_or(e.len());
        if e[e_first..] != [0x01, 0x00, 0x01] {
            return Err(KeyError::RsaExponent);
        }
        key.map(VerifyingKey::Rsa).ok_or(KeyError::Invalid("RSA modulus must be odd"))
    }

    /// EC key from affine coordinates (each exactly the curve's field size).
    pub fn p256(x: &[u8], y: &[u8]) -> Result<VerifyingKey, KeyError> {
        let sec1 = uncompressed_point(x, y, 32).ok_or(KeyError::Invalid("P-256 coordinates must be 32 bytes"))?;
        // The crate validates the point (on the curve, not the identity).
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
            .map(|key| VerifyingKey::P256(Arc::new(ecdsa::EcKey::new(key.as_affine().into()))))
            .map_err(|_| KeyError::Invalid("point is not on P-256"))
    }

    pub fn p384(x: &[u8], y: &[u8]) -> Result<VerifyingKey, KeyError> {
        let sec1 = uncompressed_point(x, y, 48).ok_or(KeyError::Invalid("P-384 coordinates must be 48 bytes"))?;
        p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
            .map(|key| VerifyingKey::P384(Arc::new(ecdsa::EcKey::new(key.as_affine().into()))))
            .map_err(|_| KeyError::Invalid("point is not on P-384"))
    }

    pub fn ed25519(x: &[u8]) -> Result<VerifyingKey, KeyError> {
        ed25519_compact::PublicKey::from_slice(x)
            .map(VerifyingKey::Ed25519)
            .map_err(|_| KeyError::Invalid("Ed25519 key must be 32 bytes"))
    }

    /// Whether `alg` may be used with this key (RFC 7518 section 3.1 and RFC 8037).
    pub fn supports(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (VerifyingKey::Rsa(_), RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (VerifyingKey::P256(_), ES256)
                | (VerifyingKey::P384(_), ES384)
                | (VerifyingKey::Ed25519(_), EdDSA)
        )
    }

    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        use Algorithm::*;
        if !self.supports(alg) {
            return Err(SignatureError::KeyMismatch);
        }
        let ok = match self {
            VerifyingKey::Rsa(key) => {
                // The signature must be exactly as long as the modulus (RFC 8017 8.2.2 step 1): checked in
                // RsaKey, with the range check of RSAVP1.
                match alg {
                    RS256 => key.verify_pkcs1v15(Hash::Sha256, message, signature),
                    RS384 => key.verify_pkcs1v15(Hash::Sha384, message, signature),
                    RS512 => key.verify_pkcs1v15(Hash::Sha512, message, signature),
                    PS256 => key.verify_pss(Hash::Sha256, message, signature),
                    PS384 => key.verify_pss(Hash::Sha384, message, signature),
                    PS512 => key.verify_pss(Hash::Sha512, message, signature),
                    _ => return Err(SignatureError::KeyMismatch),
                }
            }
            // JWS ECDSA signatures are r || s (IEEE P1363), never DER.
            VerifyingKey::P256(key) => ecdsa::p256_curve::verify(key, message, signature),
            VerifyingKey::P384(key) => ecdsa::p384_curve::verify(key, message, signature),
            VerifyingKey::Ed25519(key) => {
                ed25519_compact::Signature::from_slice(signature).is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
        };
        if ok { Ok(()) } else { Err(SignatureError::Invalid) }
    }
}

fn uncompressed_point(x: &[u8], y: &[u8], size: usize) -> Option<Vec<u8>> {
    if x.len() != size || y.len() != size {
        return None;
    }
    let mut sec1 = Vec::with_capacity(1 + 2 * size);
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    Some(sec1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_refuse_others() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        for bad in ["none", "None", "NONE", "HS256", "HS384", "HS512", "rs256", "ES512", "ES256K", ""] {
            assert_eq!(Algorithm::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn rsa_key_policy() {
        let e = [1u8, 0, 1];
        assert_eq!(VerifyingKey::rsa(&[0xff; 128], &e).unwrap_err(), KeyError::RsaModulusSize(1024));
        assert!(matches!(VerifyingKey::rsa(&[0xff; 256], &[3]), Err(KeyError::RsaExponent)));
        let mut n = [0xffu8; 256];
        n[255] = 0xfd; // odd modulus
        assert!(VerifyingKey::rsa(&n, &e).is_ok());
        assert!(VerifyingKey::rsa(&n, &[0, 1, 0, 1]).is_ok(), "leading zero octets of e");
        n[255] = 0xfe;
        assert_eq!(VerifyingKey::rsa(&n, &e).unwrap_err(), KeyError::Invalid("RSA modulus must be odd"));
        assert_eq!(bit_length(&[0, 0, 0x01, 0xff]), 9);
        assert_eq!(bit_length(&[0, 0]), 0);
    }

    #[test]
    fn ec_coordinates_must_have_curve_size() {
        assert!(VerifyingKey::p256(&[1; 31], &[1; 32]).is_err());
        assert!(VerifyingKey::p256(&[1; 32], &[1; 32]).is_err(), "not on the curve");
    }
}
