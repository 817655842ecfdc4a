//! GF(256) multiply-and-add over byte slices, the one operation the sender's repair matrix needs.
//!
//! The field is RFC 6330's (§5.7: polynomial x^8 + x^4 + x^3 + x^2 + 1). Multiplying by a constant c
//! is linear over GF(2), so `c · x = c · (x & 0x0f) ^ c · (x & 0xf0)`: two 16-entry tables per constant,
//! which is exactly what a byte shuffle instruction looks up 32 (AVX2) or 64 (AVX-512) bytes at a time.
//!
//! With the x86-64 kernels this is, besides `hw::sys`, the workspace's only `unsafe`: the vector loads
//! and stores touch whole lanes inside slices whose lengths were checked, and each kernel is only
//! called after the CPU reported the features it enables.

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
    low: [u8; 16],
    high: [u8; 16],
    /// The same map as an 8 × 8 bit matrix in GFNI's layout: byte 7 - i selects the input bits
    /// whose parity is output bit i.
    affine: u64,
}

impl MulTable {
    pub(crate) fn new(constant: u8) -> MulTable {
        let mut low = [0u8; 16];
        let mut high = [0u8; 16];
        for nibble in 0..16u8 {
            low[usize::from(nibble)] = mul(constant, nibble);
            high[usize::from(nibble)] = mul(constant, nibble << 4);
        }
        let mut affine = 0u64;
        for output_bit in 0..8 {
            let row = (0..8).fold(0u64, |row, input_bit| {
                row | u64::from((mul(constant, 1 << input_bit) >> output_bit) & 1) << input_bit
            });
            affine |= row << (8 * (7 - output_bit));
        }
        MulTable { low, high, affine }
    }

    fn product(&self, x: u8) -> u8 {
        self.low[usize::from(x & 0x0f)] ^ self.high[usize::from(x >> 4)]
    }
}

/// Most rows one [`mul_add_rows`] call accepts (the vector kernels keep their tables on the stack).
pub(crate) const MAX_ROWS: usize = 16;

/// `rows[j][n] ^= tables[j] · src[n]` for every row j and byte n: each byte of `src` is read once for
/// all the rows. Every row must be as long as `src`, and there must be one table per row, at most
/// [`MAX_ROWS`].
pub(crate) fn mul_add_rows(rows: &mut [Vec<u8>], src: &[u8], tables: &[MulTable]) {
    assert_eq!(rows.len(), tables.len(), "one table per row");
    assert!(rows.len() <= MAX_ROWS, "at most {MAX_ROWS} rows");
    assert!(rows.iter().all(|row| row.len() == src.len()), "rows as long as the source");
    dispatch(rows, src, tables);
}

#[cfg(target_arch = "x86_64")]
fn dispatch(rows: &mut [Vec<u8>], src: &[u8], tables: &[MulTable]) {
    if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("gfni") {
        // SAFETY: the CPU has just reported AVX-512BW (which implies AVX-512F) and GFNI.
        unsafe { x86::mul_add_rows_gfni(rows, src, tables) }
    } else if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has just reported AVX-512BW (which implies AVX-512F), all the function enables.
        unsafe { x86::mul_add_rows_avx512(rows, src, tables) }
    } else if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just reported AVX2, the only feature the function enables.
        unsafe { x86::mul_add_rows_avx2(rows, src, tables) }
    } else {
        mul_add_rows_scalar(rows, src, tables, 0);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn dispatch(rows: &mut [Vec<u8>], src: &[u8], tables: &[MulTable]) {
    mul_add_rows_scalar(rows, src, tables, 0);
}

/// The portable kernel, from byte `from` on (the vector kernels leave it their tails).
fn mul_add_rows_scalar(rows: &mut [Vec<u8>], src: &[u8], tables: &[MulTable], from: usize) {
    for (row, table) in rows.iter_mut().zip(tables) {
        for (d, s) in row[from..].iter_mut().zip(&src[from..]) {
            *d ^= table.product(*s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, __mmask64, _mm256_and_si256, _mm256_broadcastsi128_si256, _mm256_loadu_si256,
        _mm256_set1_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_srli_epi64, _mm256_storeu_si256,
        _mm256_xor_si256, _mm512_and_si512, _mm512_broadcast_i32x4, _mm512_gf2p8affine_epi64_epi8,
        _mm512_mask_storeu_epi8, _mm512_maskz_loadu_epi8, _mm512_set1_epi64, _mm512_set1_epi8, _mm512_setzero_si512,
        _mm512_shuffle_epi8, _mm512_srli_epi64, _mm512_xor_si512, _mm_loadu_si128,
    };

    use super::{mul_add_rows_scalar, MulTable, MAX_ROWS};

    /// # Safety
    /// The CPU must support AVX2. The caller has checked the lengths ([`super::mul_add_rows`]).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn mul_add_rows_avx2(rows: &mut [Vec<u8>], src: &[u8], tables: &[MulTable]) {
        const LANE: usize = 32;
        let whole = src.len() / LANE * LANE;
        // SAFETY: the tables are 16 bytes; every offset is below `whole`, so each 32-byte load or
        // store lies inside `src` or a row, which are as long as `src`; unaligned access is allowed.
        unsafe {
            let mut low = [_mm256_setzero_si256(); MAX_ROWS];
            let mut high = [_mm256_setzero_si256(); MAX_ROWS];
            for (j, table) in tables.iter().enumerate() {
                low[j] = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.low.as_ptr().cast::<__m128i>()));
                high[j] = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.high.as_ptr().cast::<__m128i>()));
            }
            let nibble = _mm256_set1_epi8(0x0f);
            for offset in (0..whole).step_by(LANE) {
                let x = _mm256_loadu_si256(src.as_ptr().add(offset).cast::<__m256i>());
                let low_nibbles = _mm256_and_si256(x, nibble);
                let high_nibbles = _mm256_and_si256(_mm256_srli_epi64::<4>(x), nibble);
                for (j, row) in rows.iter_mut().enumerate() {
                    let product = _mm256_xor_si256(
                        _mm256_shuffle_epi8(low[j], low_nibbles),
                        _mm256_shuffle_epi8(high[j], high_nibbles),
                    );
                    let at = row.as_mut_ptr().add(offset).cast::<__m256i>();
                    _mm256_storeu_si256(at, _mm256_xor_si256(_mm256_loadu_si256(at), product));
                }
            }
        }
        mul_add_rows_scalar(rows, src, tables, whole);
    }

    /// The bytes of a 64-byte lane that lie inside the slice, `rest` bytes before its end.
    fn lane_mask(rest: usize) -> __mmask64 {
        if rest >= 64 {
            u64::MAX
        } else {
            (1u64 << rest) - 1
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F, AVX-512BW and GFNI. The caller has checked the lengths.
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    pub(super) unsafe fn mul_add_rows_gfni(rows: &mut [Vec<u8>], src: &[u8], tables: &[MulTable]) {
        const LANE: usize = 64;
        // SAFETY: as in the AVX-512 kernel below: whole lanes inside the slices, the last one masked.
        unsafe {
            let mut matrices = [_mm512_setzero_si512(); MAX_ROWS];
            for (j, table) in tables.iter().enumerate() {
                matrices[j] = _mm512_set1_epi64(table.affine as i64);
            }
            for offset in (0..src.len()).step_by(LANE) {
                let mask = lane_mask(src.len() - offset);
                let x = _mm512_maskz_loadu_epi8(mask, src.as_ptr().add(offset).cast::<i8>());
                for (j, row) in rows.iter_mut().enumerate() {
                    let product = _mm512_gf2p8affine_epi64_epi8::<0>(x, matrices[j]);
                    let at = row.as_mut_ptr().add(offset).cast::<i8>();
                    _mm512_mask_storeu_epi8(at, mask, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, at), product));
                }
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW. The caller has checked the lengths.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn mul_add_rows_avx512(rows: &mut [Vec<u8>], src: &[u8], tables: &[MulTable]) {
        const LANE: usize = 64;
        // SAFETY: as in the AVX2 kernel, with 64-byte lanes. The last, partial lane is read and written
        // through a mask of its bytes; masked-out bytes are neither accessed nor able to fault.
        unsafe {
            let mut low = [_mm512_setzero_si512(); MAX_ROWS];
            let mut high = [_mm512_setzero_si512(); MAX_ROWS];
            for (j, table) in tables.iter().enumerate() {
                low[j] = _mm512_broadcast_i32x4(_mm_loadu_si128(table.low.as_ptr().cast::<__m128i>()));
                high[j] = _mm512_broadcast_i32x4(_mm_loadu_si128(table.high.as_ptr().cast::<__m128i>()));
            }
            let nibble = _mm512_set1_epi8(0x0f);
            for offset in (0..src.len()).step_by(LANE) {
                let mask = lane_mask(src.len() - offset);
                let x = _mm512_maskz_loadu_epi8(mask, src.as_ptr().add(offset).cast::<i8>());
                let low_nibbles = _mm512_and_si512(x, nibble);
                let high_nibbles = _mm512_and_si512(_mm512_srli_epi64::<4>(x), nibble);
                for (j, row) in rows.iter_mut().enumerate() {
                    let product = _mm512_xor_si512(
                        _mm512_shuffle_epi8(low[j], low_nibbles),
                        _mm512_shuffle_epi8(high[j], high_nibbles),
                    );
                    let at = row.as_mut_ptr().add(offset).cast::<i8>();
                    _mm512_mask_storeu_epi8(at, mask, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, at), product));
                }
            }
        }
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

    type Kernel = fn(&mut [Vec<u8>], &[u8], &[MulTable]);

    fn expected(rows: &[Vec<u8>], src: &[u8], constants: &[u8]) -> Vec<Vec<u8>> {
        rows.iter().zip(constants).map(|(row, c)| row.iter().zip(src).map(|(d, s)| d ^ mul(*c, *s)).collect()).collect()
    }

    #[test]
    fn every_kernel_matches_byte_by_byte_multiplication() {
        // Lengths around both lane widths, so the vector loops and the scalar tails are all checked.
        let constants = [0u8, 1, 2, 0x1d, 0x80, 0xff, 0x53, 0xca, 7, 9, 11, 13, 17, 19, 23, 29];
        for len in [0usize, 1, 31, 32, 33, 63, 64, 65, 95, 1416, 8936] {
            for row_count in [1usize, 4, MAX_ROWS] {
                let src: Vec<u8> = (0..len).map(|i| (i * 151 + 7) as u8).collect();
                let rows: Vec<Vec<u8>> =
                    (0..row_count).map(|j| (0..len).map(|i| (i * 29 + j * 5 + 3) as u8).collect()).collect();
                let constants = &constants[..row_count];
                let tables: Vec<MulTable> = constants.iter().copied().map(MulTable::new).collect();
                let want = expected(&rows, &src, constants);
                let mut kernels: Vec<(&str, Kernel)> =
                    vec![("dispatched", mul_add_rows), ("scalar", |r, s, t| mul_add_rows_scalar(r, s, t, 0))];
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: AVX2 was just detected; the lengths are those mul_add_rows checks.
                        kernels.push(("avx2", |r, s, t| unsafe { x86::mul_add_rows_avx2(r, s, t) }));
                    }
                    if std::arch::is_x86_feature_detected!("avx512bw") {
                        // SAFETY: AVX-512BW was just detected; the lengths are those mul_add_rows checks.
                        kernels.push(("avx512", |r, s, t| unsafe { x86::mul_add_rows_avx512(r, s, t) }));
                    }
                    if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("gfni") {
                        // SAFETY: AVX-512BW and GFNI were just detected; lengths as mul_add_rows checks.
                        kernels.push(("gfni", |r, s, t| unsafe { x86::mul_add_rows_gfni(r, s, t) }));
                    }
                }
                for (name, kernel) in kernels {
                    let mut got = rows.clone();
                    kernel(&mut got, &src, &tables);
                    assert_eq!(got, want, "{name}, len {len}, {row_count} rows");
                }
            }
        }
    }
}
