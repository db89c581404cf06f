//! The RSA public operation s^65537 mod n, for the moduli our key policy accepts (2048 to 4096 bits).
//!
//! Why this exists instead of a crate: Wasm has 64-bit multiplication but no 64×64→128 one. On wasm32
//! `crypto-bigint` (the fastest maintained crate measured, docs/performance-notes.md) uses 64-bit limbs
//! whose products go through a 128-bit multiply in software (`__multi3`); with 32-bit limbs every
//! multiply-accumulate splits its sum into a low word and a carry instead. Either way it spent ~10 µs per
//! 2048-bit Montgomery multiplication in V8. This module uses 28- or 27-bit limbs held in `u64`: a
//! product is below 2^56, so a whole column of products (at most 2·110 of them below 2^56, or 2·152
//! below 2^54) is summed without any carry handling, and carries are propagated once per row. A
//! multiply-accumulate is then one multiply and one add: ~4 µs per multiplication.
//!
//! Sizes are const generic: 74 and 110 limbs of 28 bits and 152 limbs of 27 bits cover moduli up to
//! 2070, 3078 and 4102 bits, so the three common key sizes each get a fully sized, allocation-free
//! instance whose loop bounds the compiler knows (4096 bits needs 27-bit limbs for the column bound).
//!
//! Montgomery radix R = 2^(BITS·LIMBS) is at least 4n (the limb count is chosen so), so a product of two
//! values below 2n, reduced, is again below 2n: no conditional subtraction is needed between steps, only
//! one at the end. Everything here works on public values (key, signature), so variable time is fine.
//!
//! Proof of the arithmetic: the Wycheproof RSA vectors (tests/wycheproof.rs) and a differential test
//! against `crypto-bigint` on random and edge-case inputs (tests/differential/), both natively and as Wasm.

use crypto_bigint::{BoxedUint, NonZero};

const fn mask(bits: u32) -> u64 {
    (1 << bits) - 1
}

/// A modulus of `LIMBS` limbs of `BITS` bits with its Montgomery constants.
#[derive(Clone)]
struct Modulus<const LIMBS: usize, const BITS: u32> {
    n: [u64; LIMBS],
    /// −n⁻¹ mod 2^BITS.
    n0_inv: u64,
    /// R² mod n, to bring a value into Montgomery form.
    r2: [u64; LIMBS],
}

/// An odd RSA modulus of at most 4102 bits, ready for s^65537 mod n.
#[derive(Clone)]
pub struct PublicModulus(Instance);

/// The three instances, each holding moduli with R ≥ 4n up to 2070, 3078 and 4102 bits.
#[derive(Clone)]
enum Instance {
    Up2070(Box<Modulus<74, 28>>),
    Up3078(Box<Modulus<110, 28>>),
    Up4102(Box<Modulus<152, 27>>),
}

impl PublicModulus {
    /// `n` big-endian without leading zero octets. `None` if n is even, below 3 or wider than 4102 bits.
    pub fn new(n: &[u8]) -> Option<PublicModulus> {
        let bits = bit_length(n);
        if bits < 2 || n.last().is_none_or(|&low| low & 1 == 0) {
            return None;
        }
        // R = 2^(BITS·LIMBS) must be at least 4n: BITS·LIMBS ≥ bits + 2.
        let fits = |limbs: usize, limb_bits: usize| bits + 2 <= limbs * limb_bits;
        Some(PublicModulus(if fits(74, 28) {
            Instance::Up2070(Box::new(Modulus::new(n)?))
        } else if fits(110, 28) {
            Instance::Up3078(Box::new(Modulus::new(n)?))
        } else if fits(152, 27) {
            Instance::Up4102(Box::new(Modulus::new(n)?))
        } else {
            return None;
        }))
    }

    /// s^65537 mod n as `out.len()` big-endian octets (the caller passes k, the modulus length). The
    /// caller has checked s < n. `None` if the result does not fit in `out` (it always does when `out`
    /// is at least as long as n).
    pub fn pow_65537(&self, s: &[u8], out: &mut [u8]) -> Option<()> {
        match &self.0 {
            Instance::Up2070(m) => m.pow_65537(s, out),
            Instance::Up3078(m) => m.pow_65537(s, out),
            Instance::Up4102(m) => m.pow_65537(s, out),
        }
    }
}

impl<const LIMBS: usize, const BITS: u32> Modulus<LIMBS, BITS> {
    fn new(n_be: &[u8]) -> Option<Modulus<LIMBS, BITS>> {
        // A column holds at most 2·LIMBS products below 2^(2·BITS) plus a carry: it must fit a u64.
        const { assert!(((2 * LIMBS as u128 + 1) << (2 * BITS)) < 1 << 64) };
        let n = from_be_bytes::<LIMBS, BITS>(n_be)?;
        // Newton's iteration for n⁻¹ mod 2^64 (each step doubles the correct low bits; n·n ≡ 1 mod 8).
        let mut inv = n[0];
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n[0].wrapping_mul(inv)));
        }
        let n0_inv = inv.wrapping_neg() & mask(BITS);
        // R² mod n by crypto-bigint's division, once per key.
        let modulus = NonZero::new(BoxedUint::from_be_slice_vartime(n_be)).into_option()?;
        let r_squared_bits = 2 * BITS * LIMBS as u32;
        let r_squared = BoxedUint::one_with_precision(r_squared_bits + 1).shl_vartime(r_squared_bits)?;
        let r2 = from_be_bytes::<LIMBS, BITS>(&r_squared.rem_vartime(&modulus).to_be_bytes())?;
        Some(Modulus { n, n0_inv, r2 })
    }

    fn pow_65537(&self, s_be: &[u8], out: &mut [u8]) -> Option<()> {
        let s = from_be_bytes::<LIMBS, BITS>(s_be)?;
        // x = s·R mod n, then x^(2^16) in Montgomery form, then one product with s (not in Montgomery
        // form) leaves s^65537 in ordinary form.
        let mut x = [0u64; LIMBS];
        self.mul(&s, &self.r2, &mut x);
        let mut y = [0u64; LIMBS];
        for _ in 0..8 {
            self.square(&x, &mut y);
            self.square(&y, &mut x);
        }
        self.mul(&x, &s, &mut y);
        self.reduce_below_n(&mut y);
        to_be_bytes::<LIMBS, BITS>(&y, out)
    }

    /// out = a·b·R⁻¹ mod n, below 2n, for a and b below 2n in normalised limbs.
    fn mul(&self, a: &[u64; LIMBS], b: &[u64; LIMBS], out: &mut [u64; LIMBS]) {
        let mut acc = [[0u64; LIMBS]; 2];
        let acc = acc.as_flattened_mut();
        for i in 0..LIMBS {
            let ai = a[i];
            // Row i of the product and row i of the reduction in one pass: m makes column i a multiple
            // of 2^BITS once a_i·b_0 is in it.
            let m = self.quotient_digit(acc[i] + ai * b[0]);
            add_two_multiples(&mut acc[i..i + LIMBS], m, &self.n, ai, b);
            acc[i + 1] += acc[i] >> BITS;
        }
        self.finish(acc, out);
    }

    /// out = a²·R⁻¹ mod n, below 2n: the products a_i·a_j with i < j are computed once and doubled.
    fn square(&self, a: &[u64; LIMBS], out: &mut [u64; LIMBS]) {
        let mut doubled = [0u64; LIMBS];
        for j in 0..LIMBS {
            doubled[j] = a[j] << 1;
        }
        let mut acc = [[0u64; LIMBS]; 2];
        let acc = acc.as_flattened_mut();
        for i in 0..LIMBS {
            // Row i of the product only adds to columns 2i and above, so column i is complete once
            // rows 0..=i/2 ran and can be reduced at step i, as in `mul`. Its reduction row (m·n) and
            // its product row (a_i² in column 2i, then 2·a_i·a_j) are added in one pass.
            let ai = a[i];
            let row = &mut acc[i..i + LIMBS];
            row[i] += ai * ai;
            let m = self.quotient_digit(row[0]);
            let (low, high) = row.split_at_mut(i + 1);
            add_multiple(low, m, &self.n[..i + 1]);
            add_two_multiples(high, m, &self.n[i + 1..], ai, &doubled[i + 1..]);
            acc[i + 1] += acc[i] >> BITS;
        }
        self.finish(acc, out);
    }

    /// The m that makes column + m·n_0 a multiple of 2^BITS.
    #[inline(always)]
    fn quotient_digit(&self, column: u64) -> u64 {
        ((column & mask(BITS)) * self.n0_inv) & mask(BITS)
    }

    /// The upper half of the accumulator, carried into limbs, is the reduced product. It is
    /// below 2n < R, so nothing carries out of the top limb.
    #[inline(always)]
    fn finish(&self, acc: &[u64], out: &mut [u64; LIMBS]) {
        let mut carry = 0;
        for j in 0..LIMBS {
            let v = acc[LIMBS + j] + carry;
            out[j] = v & mask(BITS);
            carry = v >> BITS;
        }
        debug_assert_eq!(carry, 0);
    }

    /// Brings a value below 2n (normalised limbs) below n.
    fn reduce_below_n(&self, x: &mut [u64; LIMBS]) {
        if !less_than(x, &self.n) {
            let mut borrow = 0u64;
            for (x, n) in x.iter_mut().zip(&self.n) {
                let v = x.wrapping_sub(*n).wrapping_sub(borrow);
                *x = v & mask(BITS);
                borrow = v >> 63;
            }
        }
    }
}

/// row += m·n, elementwise over the shorter of the two. Unrolled by hand: the crate is built for size,
/// which does not unroll, and index loops stay free of the iterator calls that level leaves in place.
#[inline(always)]
fn add_multiple(row: &mut [u64], m: u64, n: &[u64]) {
    let len = row.len().min(n.len());
    let (row, n) = (&mut row[..len], &n[..len]);
    let mut j = 0;
    while j + 4 <= len {
        row[j] += m * n[j];
        row[j + 1] += m * n[j + 1];
        row[j + 2] += m * n[j + 2];
        row[j + 3] += m * n[j + 3];
        j += 4;
    }
    while j < len {
        row[j] += m * n[j];
        j += 1;
    }
}

/// row += m·n + a·d, elementwise over the shortest of the three.
#[inline(always)]
fn add_two_multiples(row: &mut [u64], m: u64, n: &[u64], a: u64, d: &[u64]) {
    let len = row.len().min(n.len()).min(d.len());
    let (row, n, d) = (&mut row[..len], &n[..len], &d[..len]);
    let mut j = 0;
    while j + 4 <= len {
        row[j] += m * n[j] + a * d[j];
        row[j + 1] += m * n[j + 1] + a * d[j + 1];
        row[j + 2] += m * n[j + 2] + a * d[j + 2];
        row[j + 3] += m * n[j + 3] + a * d[j + 3];
        j += 4;
    }
    while j < len {
        row[j] += m * n[j] + a * d[j];
        j += 1;
    }
}

/// a < b for normalised limbs, most significant limb last.
fn less_than<const LIMBS: usize>(a: &[u64; LIMBS], b: &[u64; LIMBS]) -> bool {
    for j in (0..LIMBS).rev() {
        if a[j] != b[j] {
            return a[j] < b[j];
        }
    }
    false
}

/// Big-endian octets to limbs of `BITS` bits; `None` if the value needs more than `LIMBS` limbs.
fn from_be_bytes<const LIMBS: usize, const BITS: u32>(be: &[u8]) -> Option<[u64; LIMBS]> {
    let mut limbs = [0u64; LIMBS];
    let (mut limb, mut filled, mut index) = (0u64, 0u32, 0usize);
    for &byte in be.iter().rev() {
        limb |= u64::from(byte) << filled;
        filled += 8;
        if filled >= BITS {
            store(&mut limbs, index, limb & mask(BITS))?;
            index += 1;
            limb >>= BITS;
            filled -= BITS;
        }
    }
    store(&mut limbs, index, limb)?;
    Some(limbs)
}

/// Sets limb `index`; beyond the last limb only zero (a leading zero octet) is accepted.
fn store<const LIMBS: usize>(limbs: &mut [u64; LIMBS], index: usize, value: u64) -> Option<()> {
    match limbs.get_mut(index) {
        Some(limb) => *limb = value,
        None if value == 0 => {}
        None => return None,
    }
    Some(())
}

/// Normalised limbs to exactly `out.len()` big-endian octets; `None` if the value does not fit.
fn to_be_bytes<const LIMBS: usize, const BITS: u32>(limbs: &[u64; LIMBS], out: &mut [u8]) -> Option<()> {
    let (mut acc, mut filled, mut next) = (0u64, 0u32, 0usize);
    let mut written = 0usize;
    let len = out.len();
    loop {
        while filled < 8 && next < LIMBS {
            acc |= limbs[next] << filled;
            filled += BITS;
            next += 1;
        }
        if filled == 0 {
            break;
        }
        let byte = (acc & 0xff) as u8;
        acc >>= 8;
        filled = filled.saturating_sub(8);
        if written < len {
            out[len - 1 - written] = byte;
            written += 1;
        } else if byte != 0 {
            return None;
        }
    }
    out[..len - written].fill(0);
    Some(())
}

/// Bit length of a big-endian integer.
pub fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        Some(first) => (be.len() - first - 1) * 8 + (8 - be[first].leading_zeros() as usize),
        None => 0,
    }
}
