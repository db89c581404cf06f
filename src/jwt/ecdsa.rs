//! ECDSA verification (ES256 on P-256, ES384 on P-384) with both points of u1·G + u2·Q precomputed.
//!
//! The group law, scalars, point validation and signature parsing are the `p256`/`p384` crates'; this
//! module changes only how u1·G + u2·Q is computed. `ecdsa`'s verifier computes it with a joint wNAF
//! (one doubling per scalar bit, ~256 for P-256, plus ~100 additions). Both points are fixed here: G
//! always, and Q for as long as the JWKS keeps the key. So both get fixed-base tables, as `primeorder`'s
//! `BasepointTable` has for G: each scalar is written in signed digits of w bits, and digit j selects
//! a multiple of 2^(wj)·P from a per-position table, with no doubling between positions. Tables for odd
//! positions are shared with the even ones at the cost of w doublings at the end. Entries are affine, so
//! each addition is the crates' mixed addition. For P-256 (w = 7) that is ~76 additions and 7 doublings
//! per verification instead of ~360 operations; P-384 uses w = 5 (~158 additions) to bound memory.
//!
//! The tables for Q are computed on first use of the key (a JWKS may list keys that are never used), G's
//! on first use of the curve, once per Wasm VM. In V8 (Node) building one costs ~3 ms for P-256 (about
//! 25 verifications) and ~13 ms for P-384; it holds 1,216 affine points (88 KiB) for P-256, 640 (67 KiB)
//! for P-384.
//!
//! Verification only touches public values, so the variable-time table selection is fine. Proof:
//! Wycheproof's ECDSA P1363 vectors (tests/wycheproof.rs) and a differential test of the linear
//! combination against `primeorder`'s own on random and edge-case scalars (tests/differential/), both
//! natively and as Wasm.

use primeorder::elliptic_curve::point::BatchNormalize;
use primeorder::elliptic_curve::sec1::{Sec1Point, ToSec1Point};
use primeorder::{AffinePoint, Double, PrimeCurveParams, PrimeField, ProjectivePoint, Scalar};
use std::sync::OnceLock;

/// Most signed digits a scalar can have: 384 bits in digits of 5 bits, plus the final carry.
const MAX_DIGITS: usize = 384 / 5 + 2;

/// Fixed-base tables of a point P for signed digits of `window` bits: position i holds 1..=2^(w-1)
/// times 2^(2wi)·P, in affine form so that each addition is a mixed one.
pub struct FixedBaseTables<C: PrimeCurveParams> {
    window: u32,
    /// `positions × 2^(window-1)` points, position-major.
    points: Box<[AffinePoint<C>]>,
}

impl<C: PrimeCurveParams> FixedBaseTables<C> {
    pub fn new(point: ProjectivePoint<C>, window: u32) -> FixedBaseTables<C> {
        let per_position = 1usize << (window - 1);
        let positions = digit_count::<C>(window).div_ceil(2);
        let mut projective = Vec::with_capacity(positions * per_position);
        let mut base = point;
        for _ in 0..positions {
            let mut multiple = base;
            projective.push(multiple);
            for _ in 1..per_position {
                multiple += base;
                projective.push(multiple);
            }
            for _ in 0..2 * window {
                base = base.double();
            }
        }
        // No entry is the identity: P has prime order n and every multiple here is below n.
        let points = <ProjectivePoint<C> as BatchNormalize<[ProjectivePoint<C>]>>::batch_normalize_vartime(&projective);
        FixedBaseTables { window, points: points.into_boxed_slice() }
    }

    /// digit·2^(2wi)·P for table position i, |digit| ≤ 2^(w-1), digit ≠ 0.
    fn select(&self, position: usize, digit: i8) -> Option<AffinePoint<C>> {
        let per_position = 1usize << (self.window - 1);
        let entry = self.points.get(position * per_position + usize::from(digit.unsigned_abs()).checked_sub(1)?)?;
        Some(if digit < 0 { -*entry } else { *entry })
    }
}

/// Signed digits of `window` bits a scalar of this curve needs: one per window of its bit length,
/// plus one for the carry out of the top.
fn digit_count<C: PrimeCurveParams>(window: u32) -> usize {
    (Scalar::<C>::NUM_BITS.div_ceil(window) + 1) as usize
}

/// The scalar as signed digits d_j in [-2^(w-1), 2^(w-1)] with Σ d_j·2^(wj) = k (the first
/// `digit_count` entries are used; the rest are zero). `window` is 5 to 7: a digit must fit an i8 and
/// the digits fit `MAX_DIGITS`.
pub fn signed_digits<C: PrimeCurveParams>(k: &Scalar<C>, window: u32) -> [i8; MAX_DIGITS] {
    debug_assert!((5..=7).contains(&window));
    let bytes = k.to_repr();
    let bytes: &[u8] = bytes.as_ref();
    // Big-endian (the SEC1 order the crates use), read here from the least significant end.
    let bit =
        |i: usize| -> u32 { bytes.len().checked_sub(1 + i / 8).map_or(0, |b| u32::from(bytes[b] >> (i % 8)) & 1) };
    let mut digits = [0i8; MAX_DIGITS];
    let half = 1i32 << (window - 1);
    let mut carry = 0i32;
    for (j, digit) in digits.iter_mut().enumerate().take(digit_count::<C>(window)) {
        let mut value = carry;
        for b in 0..window as usize {
            value += (bit(j * window as usize + b) as i32) << b;
        }
        // value is in [0, 2^w]; above half, borrow from the next digit.
        carry = i32::from(value > half);
        value -= carry << window;
        *digit = value as i8;
    }
    digits
}

/// u1·G + u2·Q from the tables of G and Q. Digit 2i of a scalar selects from position i directly;
/// digit 2i + 1 selects from the same position into a second sum that is multiplied by 2^w at the end
/// (the halving of the tables that `primeorder`'s `BasepointTable` also uses).
pub fn lincomb<C: PrimeCurveParams>(
    g: &FixedBaseTables<C>,
    q: &FixedBaseTables<C>,
    u1: &Scalar<C>,
    u2: &Scalar<C>,
) -> ProjectivePoint<C> {
    let mut even = ProjectivePoint::<C>::IDENTITY;
    let mut odd = ProjectivePoint::<C>::IDENTITY;
    for (table, scalar) in [(g, u1), (q, u2)] {
        let digits = signed_digits::<C>(scalar, table.window);
        for (j, &digit) in digits.iter().enumerate().take(digit_count::<C>(table.window)) {
            // A zero digit adds nothing: skipping it saves an addition.
            if let Some(point) = table.select(j / 2, digit) {
                if j % 2 == 0 {
                    even += &point;
                } else {
                    odd += &point;
                }
            }
        }
    }
    // Both tables use the same window (`curve!` below), so one multiplication of the odd sum serves.
    for _ in 0..g.window {
        odd = odd.double();
    }
    even + odd
}

/// A verifying key of one curve with its lazily built table.
pub struct EcKey<C: PrimeCurveParams> {
    pub point: ProjectivePoint<C>,
    tables: OnceLock<FixedBaseTables<C>>,
}

impl<C: PrimeCurveParams> EcKey<C> {
    pub fn new(point: ProjectivePoint<C>) -> EcKey<C> {
        EcKey { point, tables: OnceLock::new() }
    }

    /// The point's SEC1 encoding (`compress`: x and the sign of y only), as the crates' keys offer it.
    pub fn to_sec1_point(&self, compress: bool) -> Sec1Point<C> {
        self.point.to_sec1_point(compress)
    }

    pub fn tables(&self, window: u32) -> &FixedBaseTables<C> {
        self.tables.get_or_init(|| FixedBaseTables::new(self.point, window))
    }
}

/// One curve's ECDSA verification: `$module` is `p256` or `p384`, `$hash` the JWS hash for it.
macro_rules! curve {
    ($name:ident, $module:ident, $curve:ty, $hash:ty, $window:expr) => {
        pub mod $name {
            use super::{EcKey, FixedBaseTables, lincomb};
            use primeorder::elliptic_curve::Group;
            use primeorder::elliptic_curve::ops::{Invert, Reduce};
            use primeorder::elliptic_curve::point::AffineCoordinates;
            use sha2::Digest;
            use std::sync::OnceLock;

            /// Bits per signed digit of the fixed-base tables (5 to 7, see `signed_digits`).
            pub const WINDOW: u32 = $window;
            const _: () = assert!(WINDOW >= 5 && WINDOW <= 7);

            pub type Key = EcKey<$curve>;

            /// The generator's tables, built on first use, once per Wasm VM.
            static GENERATOR: OnceLock<FixedBaseTables<$curve>> = OnceLock::new();

            /// u1·G + u2·Q, exposed for the differential test.
            pub fn lincomb_with_tables(
                key: &Key,
                u1: &$module::Scalar,
                u2: &$module::Scalar,
            ) -> $module::ProjectivePoint {
                let g = GENERATOR.get_or_init(|| FixedBaseTables::new($module::ProjectivePoint::generator(), WINDOW));
                lincomb(g, key.tables(WINDOW), u1, u2)
            }

            /// ECDSA verification of `message` (hashed here) against a signature r ‖ s (IEEE P1363),
            /// as `ecdsa::hazmat::verify_prehashed`, with u1·G + u2·Q from the tables.
            pub fn verify(key: &Key, message: &[u8], signature: &[u8]) -> bool {
                // from_slice refuses r or s of zero or not below n.
                let Ok(signature) = $module::ecdsa::Signature::from_slice(signature) else { return false };
                // No low-s rule: `NORMALIZE_S` is false for both NIST curves, as in `ecdsa`'s verifier.
                let (r, s) = signature.split_scalars();
                let z = <$module::Scalar as Reduce<$module::FieldBytes>>::reduce(&<$hash>::digest(message));
                // On a NonZeroScalar the inverse always exists.
                let s_inv = *Invert::invert_vartime(&s);
                let u1 = z * s_inv;
                let u2 = *r * s_inv;
                let point = lincomb_with_tables(key, &u1, &u2).to_affine();
                // The identity has no x; r is non-zero, so it can never match.
                if bool::from(point.is_identity()) {
                    return false;
                }
                *r == <$module::Scalar as Reduce<$module::FieldBytes>>::reduce(&point.x())
            }
        }
    };
}

curve!(p256_curve, p256, p256::NistP256, sha2::Sha256, 7);
curve!(p384_curve, p384, p384::NistP384, sha2::Sha384, 5);

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::ops::Reduce;

    /// Σ d_j·2^(wj) mod n, from the digits.
    fn recompose(digits: &[i8], window: u32) -> p256::Scalar {
        let radix = p256::Scalar::from(1u64 << window);
        digits.iter().rev().fold(p256::Scalar::ZERO, |acc, &d| {
            let magnitude = p256::Scalar::from(u64::from(d.unsigned_abs()));
            acc * radix + if d < 0 { -magnitude } else { magnitude }
        })
    }

    #[test]
    fn signed_digits_recompose_the_scalar_and_stay_in_range() {
        let mut scalars = vec![p256::Scalar::ZERO, p256::Scalar::ONE, -p256::Scalar::ONE, -p256::Scalar::from(2u64)];
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            let mut bytes = [0u8; 32];
            for b in bytes.iter_mut() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *b = (state >> 56) as u8;
            }
            scalars.push(<p256::Scalar as Reduce<p256::FieldBytes>>::reduce(&bytes.into()));
        }
        for window in 5..=7 {
            let count = digit_count::<p256::NistP256>(window);
            for k in &scalars {
                let digits = signed_digits::<p256::NistP256>(k, window);
                assert!(digits[count..].iter().all(|&d| d == 0));
                assert!(digits.iter().all(|&d| i32::from(d).abs() <= 1 << (window - 1)), "w={window}");
                assert_eq!(recompose(&digits[..count], window), *k, "w={window}");
            }
        }
    }
}
