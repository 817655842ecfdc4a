//! GF(256) multiply-and-add over byte slices, the one operation the sender's repair matrix needs.
//!
//! The field is RFC 6330's (§5.7: polynomial x^8 + x^4 + x^3 + x^2 + 1). Multiplying by a constant c
//! is linear over GF(2), so `c · x = c · (x & 0x0f) ^ c · (x & 0xf0)`: two 16-entry tables per constant,
//! which is exactly what a byte shuffle instruction looks up 32 bytes at a time.
//!
//! With the x86-64 kernel this is, besides `hw::sys`, the workspace's only `unsafe`: the vector loads
//! and stores read and write 32 bytes inside slices whose length the loop has checked, and the AVX2
//! function is only called after the CPU reported AVX2.

#![allow(unsafe_code)]

/// RFC 6330's reduction polynomial without the x^8 term.
const POLYNOMIAL_LOW: u8 = 0x1d;

/// Product in GF(256).
pub(crate) fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= POLYNOMIAL_LOW;
        }
        b >>= 1;
    }
    product
}

/// Multiplication by one constant, as the products of every low nibble and every high nibble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MulTable {
    constant: u8,
    low: [u8; 16],
    high: [u8; 16],
}

impl MulTable {
    pub(crate) fn new(constant: u8) -> MulTable {
        let mut low = [0u8; 16];
        let mut high = [0u8; 16];
        for nibble in 0..16u8 {
            low[usize::from(nibble)] = mul(constant, nibble);
            high[usize::from(nibble)] = mul(constant, nibble << 4);
        }
        MulTable { constant, low, high }
    }

    fn product(&self, x: u8) -> u8 {
        self.low[usize::from(x & 0x0f)] ^ self.high[usize::from(x >> 4)]
    }
}

/// `dst[i] ^= c · src[i]` for every byte. The slices must have the same length.
pub(crate) fn mul_add(dst: &mut [u8], src: &[u8], table: &MulTable) {
    assert_eq!(dst.len(), src.len(), "mul_add over slices of different lengths");
    match table.constant {
        0 => {}
        1 => dst.iter_mut().zip(src).for_each(|(d, s)| *d ^= s),
        _ => mul_add_dispatch(dst, src, table),
    }
}

#[cfg(target_arch = "x86_64")]
fn mul_add_dispatch(dst: &mut [u8], src: &[u8], table: &MulTable) {
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just reported AVX2, the only feature the function enables.
        unsafe { x86::mul_add_avx2(dst, src, table) }
    } else {
        mul_add_scalar(dst, src, table);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn mul_add_dispatch(dst: &mut [u8], src: &[u8], table: &MulTable) {
    mul_add_scalar(dst, src, table);
}

fn mul_add_scalar(dst: &mut [u8], src: &[u8], table: &MulTable) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= table.product(*s);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_and_si256, _mm256_broadcastsi128_si256, _mm256_loadu_si256, _mm256_set1_epi8,
        _mm256_shuffle_epi8, _mm256_srli_epi64, _mm256_storeu_si256, _mm256_xor_si256, _mm_loadu_si128,
    };

    use super::{mul_add_scalar, MulTable};

    const LANE: usize = 32;

    /// # Safety
    /// The CPU must support AVX2. `dst` and `src` must have the same length (checked by the caller).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn mul_add_avx2(dst: &mut [u8], src: &[u8], table: &MulTable) {
        let mut dst_lanes = dst.chunks_exact_mut(LANE);
        let mut src_lanes = src.chunks_exact(LANE);
        // SAFETY: the tables are 16 bytes, each chunk is exactly 32 bytes long, and unaligned loads
        // and stores accept any address.
        unsafe {
            let low = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.low.as_ptr().cast::<__m128i>()));
            let high = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.high.as_ptr().cast::<__m128i>()));
            let nibble = _mm256_set1_epi8(0x0f);
            for (d, s) in (&mut dst_lanes).zip(&mut src_lanes) {
                let x = _mm256_loadu_si256(s.as_ptr().cast::<__m256i>());
                let low_nibbles = _mm256_and_si256(x, nibble);
                let high_nibbles = _mm256_and_si256(_mm256_srli_epi64::<4>(x), nibble);
                let product =
                    _mm256_xor_si256(_mm256_shuffle_epi8(low, low_nibbles), _mm256_shuffle_epi8(high, high_nibbles));
                let sum = _mm256_xor_si256(_mm256_loadu_si256(d.as_ptr().cast::<__m256i>()), product);
                _mm256_storeu_si256(d.as_mut_ptr().cast::<__m256i>(), sum);
            }
        }
        mul_add_scalar(dst_lanes.into_remainder(), src_lanes.remainder(), table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplication_follows_rfc_6330() {
        // α = 2 generates the field; α^8 reduces to the polynomial's low terms.
        assert_eq!(mul(0x80, 2), POLYNOMIAL_LOW);
        assert_eq!(mul(1, 0xa7), 0xa7);
        assert_eq!(mul(0, 0xa7), 0);
        let mut power = 1u8;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..255 {
            assert!(seen.insert(power), "2 must generate all 255 non-zero elements");
            power = mul(power, 2);
        }
        assert_eq!(power, 1);
        for a in 1..=255u8 {
            let inverse = (1..=255u8).find(|b| mul(a, *b) == 1);
            assert!(inverse.is_some(), "{a} has no inverse");
        }
    }

    #[test]
    fn every_kernel_matches_byte_by_byte_multiplication() {
        // Lengths around the 32-byte lane, so both the vector loop and the scalar tail are checked.
        for len in [0usize, 1, 31, 32, 33, 64, 95, 1416] {
            let src: Vec<u8> = (0..len).map(|i| (i * 151 + 7) as u8).collect();
            let start: Vec<u8> = (0..len).map(|i| (i * 29 + 3) as u8).collect();
            for constant in [0u8, 1, 2, 0x1d, 0x80, 0xff] {
                let table = MulTable::new(constant);
                let expected: Vec<u8> = start.iter().zip(&src).map(|(d, s)| d ^ mul(constant, *s)).collect();
                let mut dispatched = start.clone();
                mul_add(&mut dispatched, &src, &table);
                assert_eq!(dispatched, expected, "len {len} constant {constant}");
                let mut scalar = start.clone();
                mul_add_scalar(&mut scalar, &src, &table);
                assert_eq!(scalar, expected, "scalar, len {len} constant {constant}");
            }
        }
    }
}
