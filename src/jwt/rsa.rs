//! RSA signature verification (RSASSA-PKCS1-v1_5 and RSASSA-PSS, RFC 8017) for JWS.
//!
//! Why not the `rsa` crate: its 0.9 line does the public-key operation with `num-bigint-dig`, which
//! re-derives the Montgomery parameters on every call and allocates per step; in Envoy's Wasm VM that
//! cost 0.72 ms per RS256 verification, blocking the worker; `crypto-bigint`'s Montgomery form, used
//! here before, still cost 0.31 ms. The public operation s^65537 mod n is `montgomery.rs` (Montgomery
//! parameters computed once per JWKS key, 16 squarings and two multiplications on 27-bit limbs, proven
//! against `crypto-bigint` by a differential test). What remains in this file is the encoding check of
//! RFC 8017, written as the RFC's steps and proven against the Wycheproof PKCS#1 and PSS vectors
//! (tests/wycheproof.rs, also run as Wasm by `make unit`). Measurements: docs/performance-notes.md.
//!
//! Verification only touches public values (key, message, signature), so nothing here needs to be
//! constant-time.

use super::montgomery::{PublicModulus, bit_length};
use sha2::digest::{Digest, FixedOutputReset};
use sha2::{Sha256, Sha384, Sha512};

/// The hash functions JWS pairs with RSA (RFC 7518 sections 3.3 and 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(message).to_vec(),
            Hash::Sha384 => Sha384::digest(message).to_vec(),
            Hash::Sha512 => Sha512::digest(message).to_vec(),
        }
    }

    /// DER of the `DigestInfo` that precedes the hash in EMSA-PKCS1-v1_5 (RFC 8017 section 9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
                0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
                0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00,
                0x04, 0x40,
            ],
        }
    }

    /// MGF1 (RFC 8017 appendix B.2.1) with this hash, `len` octets.
    fn mgf1(self, seed: &[u8], len: usize) -> Vec<u8> {
        fn run<D: Digest + FixedOutputReset>(seed: &[u8], len: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(len + <D as Digest>::output_size());
            let mut hasher = D::new();
            let mut counter: u32 = 0;
            while out.len() < len {
                Digest::update(&mut hasher, seed);
                Digest::update(&mut hasher, counter.to_be_bytes());
                out.extend_from_slice(&hasher.finalize_reset());
                counter = counter.wrapping_add(1);
            }
            out.truncate(len);
            out
        }
        match self {
            Hash::Sha256 => run::<Sha256>(seed, len),
            Hash::Sha384 => run::<Sha384>(seed, len),
            Hash::Sha512 => run::<Sha512>(seed, len),
        }
    }
}

/// An RSA public key with e = 65537 and its precomputed Montgomery parameters.
#[derive(Clone)]
pub struct RsaKey {
    modulus: PublicModulus,
    /// n big-endian, exactly k octets (no leading zero octet).
    modulus_be: Vec<u8>,
    modulus_bits: u32,
    /// k in RFC 8017: the modulus length in octets, which is also the signature length.
    size: usize,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "RsaKey({} bits)", self.modulus_bits)
    }
}

impl RsaKey {
    /// `n` big-endian, leading zero octets allowed. `None` if the modulus is even (not an RSA modulus),
    /// below 3 or wider than 4096 bits. The caller enforces the size and exponent policy.
    pub fn new(n: &[u8]) -> Option<RsaKey> {
        let n = trim_leading_zeros(n);
        let modulus_bits = u32::try_from(bit_length(n)).ok().filter(|&bits| bits <= 4096)?;
        let modulus = PublicModulus::new(n)?;
        Some(RsaKey { modulus, modulus_be: n.to_vec(), modulus_bits, size: n.len() })
    }

    pub fn modulus_bits(&self) -> u32 {
        self.modulus_bits
    }

    /// RSAVP1 (RFC 8017 section 5.2.2) with e = 65537, returning the k-octet encoded message, or `None`
    /// when the signature is not a k-octet integer below the modulus.
    fn open(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.size {
            return None;
        }
        // Both are k octets big-endian, so byte order is numeric order.
        if signature >= self.modulus_be.as_slice() {
            return None;
        }
        let mut em = vec![0u8; self.size];
        self.modulus.pow_65537(signature, &mut em)?;
        Some(em)
    }

    /// RSASSA-PKCS1-v1_5-VERIFY (RFC 8017 section 8.2.2). Step 3-4 as the RFC recommends: build the one
    /// valid encoding and compare, rather than parse what the signature decrypts to.
    pub fn verify_pkcs1v15(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.open(signature) else { return false };
        let prefix = hash.digest_info_prefix();
        let digest = hash.digest(message);
        let t_len = prefix.len() + digest.len();
        let Some(ps_len) = self.size.checked_sub(t_len + 3).filter(|&len| len >= 8) else { return false };
        let mut expected = Vec::with_capacity(self.size);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + ps_len, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(prefix);
        expected.extend_from_slice(&digest);
        em == expected
    }

    /// RSASSA-PSS-VERIFY (RFC 8017 section 8.1.2) with the JWS parameters (RFC 7518 section 3.5): MGF1
    /// with the same hash, salt length equal to the hash length.
    pub fn verify_pss(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.open(signature) else { return false };
        // Step 2c: EM = I2OSP(m, emLen) with emLen = ceil((modBits - 1) / 8), which is one octet shorter
        // than k when modBits - 1 is a multiple of 8; m must then fit.
        let em_bits = self.modulus_bits as usize - 1;
        let em_len = em_bits.div_ceil(8);
        let (leading, em) = em.split_at(em.len() - em_len);
        if leading.iter().any(|&b| b != 0) {
            return false;
        }
        emsa_pss_verify(hash, &hash.digest(message), em, em_bits)
    }
}

/// EMSA-PSS-VERIFY (RFC 8017 section 9.1.2) with sLen = hLen; the step numbers are the RFC's.
fn emsa_pss_verify(hash: Hash, m_hash: &[u8], em: &[u8], em_bits: usize) -> bool {
    let h_len = m_hash.len();
    let s_len = h_len;
    let em_len = em.len();
    // Step 3.
    if em_len < h_len + s_len + 2 {
        return false;
    }
    // Step 4.
    if em[em_len - 1] != 0xbc {
        return false;
    }
    // Step 5.
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let h = &rest[..h_len];
    // Step 6: the leftmost 8·emLen − emBits bits of maskedDB must be zero.
    let unused_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8.checked_shr(unused_bits as u32).unwrap_or(0);
    if masked_db[0] & !top_mask != 0 {
        return false;
    }
    // Steps 7-9.
    let db_mask = hash.mgf1(h, masked_db.len());
    let mut db: Vec<u8> = masked_db.iter().zip(&db_mask).map(|(a, b)| a ^ b).collect();
    db[0] &= top_mask;
    // Step 10: PS (zeros) then 0x01.
    let ps_len = em_len - h_len - s_len - 2;
    if db[..ps_len].iter().any(|&b| b != 0) || db[ps_len] != 0x01 {
        return false;
    }
    // Steps 11-14.
    let salt = &db[db.len() - s_len..];
    let mut m_prime = Vec::with_capacity(8 + h_len + s_len);
    m_prime.extend_from_slice(&[0u8; 8]);
    m_prime.extend_from_slice(m_hash);
    m_prime.extend_from_slice(salt);
    hash.digest(&m_prime) == h
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_or_zero_modulus_is_not_a_key() {
        assert!(RsaKey::new(&[0x80, 0, 0, 2]).is_none());
        assert!(RsaKey::new(&[0, 0]).is_none());
        assert!(RsaKey::new(&[]).is_none());
    }

    #[test]
    fn leading_zero_octets_do_not_change_the_key() {
        let mut n = vec![0xffu8; 256];
        n[255] = 0xfd;
        let padded: Vec<u8> = [0u8, 0].iter().chain(&n).copied().collect();
        let (a, b) = (RsaKey::new(&n).unwrap(), RsaKey::new(&padded).unwrap());
        assert_eq!((a.size, a.modulus_bits), (256, 2048));
        assert_eq!((b.size, b.modulus_bits), (256, 2048));
    }

    #[test]
    fn signature_of_wrong_length_or_not_below_modulus_is_refused() {
        let mut n = vec![0xffu8; 256];
        n[255] = 0xfd;
        let key = RsaKey::new(&n).unwrap();
        assert!(key.open(&[1; 255]).is_none());
        assert!(key.open(&[1; 257]).is_none());
        assert!(key.open(&n).is_none(), "s = n");
        assert!(key.open(&[0xff; 256]).is_none(), "s > n");
        assert!(key.open(&[0; 256]).is_some(), "0 is in range (and verifies nothing)");
    }

    #[test]
    fn mgf1_matches_its_definition() {
        // MGF1-SHA-256 of "abc": first block is SHA-256("abc" || 00000000), second SHA-256("abc" || 00000001).
        let out = Hash::Sha256.mgf1(b"abc", 40);
        let first = Sha256::digest([&b"abc"[..], &[0, 0, 0, 0]].concat());
        let second = Sha256::digest([&b"abc"[..], &[0, 0, 0, 1]].concat());
        assert_eq!(&out[..32], &first[..]);
        assert_eq!(&out[32..], &second[..8]);
    }
}
