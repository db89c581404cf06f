//! ECDSA verification (ES256 on P-256, ES384 on P-384) with both points of u1·G + u2·Q precomputed.
//!
//! The group law, scalars, point validation and signature parsing are the `p256`/`p384` crates'; this
//! module changes only how u1·G + u2·Q is computed. `ecdsa`'s verifier computes it with a joint wNAF
//! (one doubling per scalar bit, ~256 for P-256, plus ~100 additions). Both points are fixed here: G
//! always, and Q for as long as the JWKS keeps the key. So both use the fixed-base method of the crates'
//! own `BasepointTable` (the one `primeorder` builds for G):
//! each scalar is written in signed radix-16 digits, and digit i selects a multiple of 16^i·P from a
//! per-position table, with no doubling between positions. Tables for odd positions are shared with the
//! even ones at the cost of four doublings at the end, as in `primeorder`. That is ~130 additions and 4
//! doublings per verification instead of ~360 operations.
//!
//! The table for Q is computed on first use of the key (a JWKS may list keys that are never used), G's
//! on first use of the curve; each costs about two verifications and is 25 KiB for P-256, 56 KiB for
//! P-384.
//!
//! Verification only touches public values, so the variable-time table selection is fine. Proof:
//! Wycheproof's ECDSA P1363 vectors (tests/wycheproof.rs) and a differential test of the linear
//! combination against `primeorder`'s own on random and edge-case scalars (tests/differential/), both
//! natively and as Wasm.

use primeorder::elliptic_curve::sec1::{Sec1Point, ToSec1Point};
use primeorder::{Double, LookupTable, PrimeCurveParams, ProjectivePoint, Radix16Decomposition, Radix16Digits, Scalar};
use std::sync::OnceLock;

/// Per-position tables of a fixed point P: `tables[i]` holds 1..=8 times 256^i·P. The layout is that of
/// `primeorder`'s `BasepointTable`; G's is built here too rather than taken from the crates'
/// `precomputed-tables` feature, whose fully unrolled builder added 65 KB to the module.
pub struct FixedBaseTables<C: PrimeCurveParams> {
    tables: Box<[LookupTable<ProjectivePoint<C>>]>,
}

impl<C: PrimeCurveParams> FixedBaseTables<C> {
    /// Tables for `point`, as many positions as `primeorder`'s basepoint table has for this curve.
    pub fn new(point: ProjectivePoint<C>, positions: usize) -> FixedBaseTables<C> {
        let mut tables = Vec::with_capacity(positions);
        let mut base = point;
        for _ in 0..positions {
            tables.push(LookupTable::new(base));
            for _ in 0..8 {
                base = base.double();
            }
        }
        FixedBaseTables { tables: tables.into_boxed_slice() }
    }
}

/// u1·G + u2·Q from the tables of G and Q (as `primeorder`'s `BasepointTable::mul_vartime` does for
/// one point): digit 2i of a scalar selects from table i directly, digit 2i + 1 from table i into a
/// second accumulator that is multiplied by 16 at the end.
pub fn lincomb<C: PrimeCurveParams>(
    g: &[LookupTable<ProjectivePoint<C>>],
    q: &[LookupTable<ProjectivePoint<C>>],
    u1: &Scalar<C>,
    u2: &Scalar<C>,
) -> ProjectivePoint<C> {
    let d1 = Radix16Decomposition::<Radix16Digits<C>>::new(u1);
    let d2 = Radix16Decomposition::<Radix16Digits<C>>::new(u2);
    let mut even = ProjectivePoint::<C>::IDENTITY;
    let mut odd = ProjectivePoint::<C>::IDENTITY;
    let add = |acc: &mut ProjectivePoint<C>, table: &LookupTable<ProjectivePoint<C>>, digit: i8| {
        // A zero digit selects the identity; adding it would cost a full addition for nothing.
        if digit != 0 {
            *acc += table.select_vartime(digit);
        }
    };
    let positions = g.len().min(q.len());
    for (i, (g, q)) in g.iter().zip(q).enumerate() {
        add(&mut even, g, d1[2 * i]);
        add(&mut even, q, d2[2 * i]);
        // The last position has only an even digit (the radix-16 carry out of the top).
        if i + 1 < positions {
            add(&mut odd, g, d1[2 * i + 1]);
            add(&mut odd, q, d2[2 * i + 1]);
        }
    }
    for _ in 0..4 {
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

    pub fn tables(&self, positions: usize) -> &[LookupTable<ProjectivePoint<C>>] {
        &self.tables.get_or_init(|| FixedBaseTables::new(self.point, positions)).tables
    }
}

/// One curve's ECDSA verification: `$module` is `p256` or `p384`, `$hash` the JWS hash for it.
macro_rules! curve {
    ($name:ident, $module:ident, $curve:ty, $hash:ty, $positions:expr) => {
        pub mod $name {
            use super::{EcKey, FixedBaseTables, lincomb};
            use primeorder::elliptic_curve::Group;
            use primeorder::elliptic_curve::ops::{Invert, Reduce};
            use primeorder::elliptic_curve::point::AffineCoordinates;
            use sha2::Digest;
            use std::sync::OnceLock;

            /// Positions of the radix-16 tables: one per scalar octet, plus one for the final carry.
            pub const POSITIONS: usize = $positions;

            pub type Key = EcKey<$curve>;

            /// The generator's tables, built on first use, once per Wasm VM.
            static GENERATOR: OnceLock<FixedBaseTables<$curve>> = OnceLock::new();

            /// u1·G + u2·Q, exposed for the differential test.
            pub fn lincomb_with_tables(
                key: &Key,
                u1: &$module::Scalar,
                u2: &$module::Scalar,
            ) -> $module::ProjectivePoint {
                let g =
                    GENERATOR.get_or_init(|| FixedBaseTables::new($module::ProjectivePoint::generator(), POSITIONS));
                lincomb(&g.tables, key.tables(POSITIONS), u1, u2)
            }

            /// ECDSA verification of `message` (hashed here) against a signature r ‖ s (IEEE P1363),
            /// as `ecdsa::hazmat::verify_prehashed`, with u1·G + u2·Q from the tables.
            pub fn verify(key: &Key, message: &[u8], signature: &[u8]) -> bool {
                // from_slice refuses r or s of zero or not below n.
                let Ok(signature) = $module::ecdsa::Signature::from_slice(signature) else { return false };
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

curve!(p256_curve, p256, p256::NistP256, sha2::Sha256, 33);
curve!(p384_curve, p384, p384::NistP384, sha2::Sha384, 49);
