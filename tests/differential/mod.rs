//! Differential tests of the hand-written arithmetic against the maintained crates, on random and
//! edge-case inputs. Part of the Wycheproof test binary so that `make unit` also runs them as Wasm
//! (32-bit target, V8), where the arithmetic is meant to run.
//!
//! RSA: `jwt::montgomery::PublicModulus::pow_65537` against `crypto-bigint`'s `BoxedMontyForm` (16
//! squarings and a multiplication, the code it replaced), for moduli of every limb-count boundary.
//! ECDSA: u1·G + u2·Q from `jwt::ecdsa`'s fixed-base tables against `p256`/`p384`'s own scalar
//! multiplication, including sums that are the identity or a doubling.

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use mcp_authz::jwt::montgomery::PublicModulus;

/// SplitMix64: a deterministic generator, so a failure names a reproducible case.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// A big-endian integer of exactly `bits` bits (top bit set), odd.
fn random_odd(rng: &mut Rng, bits: usize) -> Vec<u8> {
    let len = bits.div_ceil(8);
    let mut n = rng.bytes(len);
    let top = (bits - 1) % 8;
    n[0] &= (1u16 << (top + 1)).wrapping_sub(1) as u8;
    n[0] |= 1 << top;
    n[len - 1] |= 1;
    n
}

fn oracle(n: &[u8], s: &[u8]) -> Vec<u8> {
    let modulus = BoxedUint::from_be_slice_vartime(n);
    let params = BoxedMontyParams::new_vartime(Odd::new(modulus.clone()).unwrap());
    let s = BoxedUint::from_be_slice(s, modulus.bits_precision()).unwrap();
    let base = BoxedMontyForm::new(s, &params);
    let mut m = base.clone();
    for _ in 0..16 {
        m = m.square();
    }
    let bytes = m.mul(&base).retrieve().to_be_bytes();
    bytes[bytes.len() - n.len()..].to_vec()
}

fn check(n: &[u8], s: &[u8], what: &str) {
    let modulus = PublicModulus::new(n).unwrap_or_else(|| panic!("{what}: modulus refused"));
    let mut got = vec![0u8; n.len()];
    modulus.pow_65537(s, &mut got).unwrap_or_else(|| panic!("{what}: no result"));
    assert_eq!(got, oracle(n, s), "{what}: n = {n:02x?}, s = {s:02x?}");
}

/// s < n, k octets: a mix of random values and the edges of the range.
fn signatures(rng: &mut Rng, n: &[u8], random: usize) -> Vec<(String, Vec<u8>)> {
    let k = n.len();
    let minus = |d: u8| {
        let mut v = n.to_vec();
        v[k - 1] -= d; // n is odd and > 2, so the last octet is at least 1; d ≤ 1 keeps it valid
        v
    };
    let small = |v: u8| {
        let mut s = vec![0u8; k];
        s[k - 1] = v;
        s
    };
    let mut out = vec![
        ("0".to_string(), small(0)),
        ("1".to_string(), small(1)),
        ("2".to_string(), small(2)),
        ("n-1".to_string(), minus(1)),
        ("n-1 with top octets of n".to_string(), {
            let mut v = n.to_vec();
            v[k - 1] = 0;
            v
        }),
    ];
    // 2^j for j across the width, and all-ones below n's top bit.
    for j in [7usize, 26, 27, 53, 54, 8 * k - 2] {
        let mut s = vec![0u8; k];
        if j < bit_len(n) - 1 {
            s[k - 1 - j / 8] = 1 << (j % 8);
            out.push((format!("2^{j}"), s));
        }
    }
    let mut ones = vec![0xffu8; k];
    let top_bits = bit_len(n) - 1; // 2^(bits-1) - 1 < n
    let first = k - top_bits.div_ceil(8);
    ones[..first].fill(0);
    if !top_bits.is_multiple_of(8) {
        ones[first] = (1u8 << (top_bits % 8)) - 1;
    }
    out.push(("2^(bits-1)-1".to_string(), ones));
    for i in 0..random {
        let mut s = rng.bytes(k);
        s[0] &= n[0].saturating_sub(1); // keeps s < n (the top octet is below n's)
        out.push((format!("random #{i}"), s));
    }
    out
}

fn bit_len(be: &[u8]) -> usize {
    let first = be.iter().position(|&b| b != 0).unwrap();
    (be.len() - first - 1) * 8 + (8 - be[first].leading_zeros() as usize)
}

#[test]
fn rsa_pow_65537_matches_crypto_bigint() {
    let mut rng = Rng::new(0x6d63_702d_6175_7468);
    // Around each instance's boundary (74 limbs of 28 bits: ≤ 2070 bits, 110 of 28: ≤ 3078, 152 of 27:
    // ≤ 4102) and the key
    // sizes used in practice.
    let sizes = [2048, 2049, 2056, 2069, 2070, 2071, 2500, 3071, 3072, 3077, 3078, 3079, 3584, 4000, 4095, 4096];
    let mut cases = 0;
    for bits in sizes {
        for round in 0..3 {
            let n = random_odd(&mut rng, bits);
            for (what, s) in signatures(&mut rng, &n, 4) {
                check(&n, &s, &format!("{bits}-bit modulus #{round}, s = {what}"));
                cases += 1;
            }
        }
        // Structured moduli: all ones (2^bits - 1) and sparse (2^(bits-1) + 1).
        let ones = random_odd(&mut rng, bits).iter().map(|_| 0xff).collect::<Vec<u8>>();
        let mut ones = ones;
        if !bits.is_multiple_of(8) {
            ones[0] = (1u8 << (bits % 8)) - 1;
        }
        let mut sparse = vec![0u8; bits.div_ceil(8)];
        sparse[0] = 1 << ((bits - 1) % 8);
        let last = sparse.len() - 1;
        sparse[last] |= 1;
        for (label, n) in [("all-ones", ones), ("sparse", sparse)] {
            for (what, s) in signatures(&mut rng, &n, 2) {
                check(&n, &s, &format!("{bits}-bit {label} modulus, s = {what}"));
                cases += 1;
            }
        }
    }
    eprintln!("RSA s^65537 mod n: {cases} cases agree with crypto-bigint");
}

#[test]
fn rsa_modulus_outside_the_supported_range_is_refused() {
    let mut rng = Rng::new(7);
    assert!(PublicModulus::new(&random_odd(&mut rng, 4102)).is_some());
    assert!(PublicModulus::new(&random_odd(&mut rng, 4103)).is_none(), "wider than the largest instance");
    let mut even = random_odd(&mut rng, 2048);
    *even.last_mut().unwrap() &= 0xfe;
    assert!(PublicModulus::new(&even).is_none(), "even");
    assert!(PublicModulus::new(&[1]).is_none(), "1");
    assert!(PublicModulus::new(&[]).is_none(), "empty");
}

// ------------------------------------------------------------------------------------------------
// ECDSA: u1·G + u2·Q from the fixed-base tables (`jwt::ecdsa`) against the crates' own arithmetic.
// ------------------------------------------------------------------------------------------------

macro_rules! ec_lincomb_test {
    ($test:ident, $module:ident, $curve_mod:ident, $bytes:expr) => {
        #[test]
        fn $test() {
            use mcp_authz::jwt::ecdsa::$curve_mod::{Key, lincomb_with_tables};
            use $module::elliptic_curve::Group;
            use $module::elliptic_curve::ops::Reduce;
            use $module::{FieldBytes, ProjectivePoint, Scalar};

            let mut rng = Rng::new(0x6563_6473_61);
            let scalar = |rng: &mut Rng| {
                let bytes = FieldBytes::try_from(rng.bytes($bytes).as_slice()).unwrap();
                <Scalar as Reduce<FieldBytes>>::reduce(&bytes)
            };
            let minus_one = -Scalar::ONE;
            let mut cases = 0;
            for round in 0..12 {
                // Q = k·G for a known k, so that the combinations below can hit the identity and
                // doublings (u1·G = ±u2·Q) on purpose.
                let k = if round == 0 {
                    Scalar::ONE
                } else if round == 1 {
                    minus_one
                } else {
                    scalar(&mut rng)
                };
                let q = ProjectivePoint::generator() * k;
                let key = Key::new(q);
                let mut pairs = vec![
                    (Scalar::ZERO, Scalar::ZERO),
                    (Scalar::ONE, Scalar::ZERO),
                    (Scalar::ZERO, Scalar::ONE),
                    (minus_one, minus_one),
                    (Scalar::ONE, minus_one),
                ];
                for _ in 0..10 {
                    let (a, b) = (scalar(&mut rng), scalar(&mut rng));
                    pairs.push((a, b));
                    pairs.push((-(k * b), b)); // u1·G + u2·Q = identity
                    pairs.push((k * b, b)); // u1·G = u2·Q: the sum is a doubling
                    pairs.push((a, Scalar::ZERO));
                    pairs.push((Scalar::ZERO, b));
                }
                for (u1, u2) in pairs {
                    let expected = ProjectivePoint::generator() * u1 + q * u2;
                    let got = lincomb_with_tables(&key, &u1, &u2);
                    assert_eq!(got.to_affine(), expected.to_affine(), "round {round}: u1 = {u1:?}, u2 = {u2:?}");
                    cases += 1;
                }
            }
            eprintln!("{}: u1·G + u2·Q, {cases} cases agree with the crate's arithmetic", stringify!($module));
        }
    };
}

ec_lincomb_test!(p256_fixed_base_lincomb_matches_the_crate, p256, p256_curve, 32);
ec_lincomb_test!(p384_fixed_base_lincomb_matches_the_crate, p384, p384_curve, 48);
