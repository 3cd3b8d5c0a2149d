//! The parts of PDQ after the 64×64 buffer: quality, DCT, median, bits, dihedral variants.
//!
//! Every float operation keeps the reference C++ order (single sequential accumulators, f32
//! products, no fused multiply-add) so the output is bit-identical to `pdqhashing.cpp`.

// Index loops mirror the reference C++ loops, which keeps the operation order easy to audit.
#![allow(clippy::needless_range_loop)]

use std::sync::OnceLock;

use super::hash::PdqHash;
use super::Dihedral;

/// Luma weights: the C++ `const float` values (same bits as these f32 literals).
pub(crate) const LUMA_R: f32 = 0.299;
pub(crate) const LUMA_G: f32 = 0.587;
pub(crate) const LUMA_B: f32 = 0.114;

/// Images with a side below this hash to all zeros with quality 0.
pub(crate) const MIN_HASHABLE_DIM: usize = 5;

/// Luma of one RGB pixel, evaluated left to right in f32 like the reference.
#[inline(always)]
pub(crate) fn luma(r: u8, g: u8, b: u8) -> f32 {
    LUMA_R * r as f32 + LUMA_G * g as f32 + LUMA_B * b as f32
}

/// Jarosz window for a dimension: `ceil(dim / 128)`.
pub(crate) fn window_size(dim: usize) -> usize {
    dim.div_ceil(128)
}

/// Source index sampled for output `out` (0..64) of a dimension of size `dim`.
/// Equals the reference `(int)(((out + 0.5) * dim) / 64)` computed in double.
#[inline]
pub(crate) fn decimation_index(out: usize, dim: usize) -> usize {
    ((2 * out + 1) * dim) / 128
}

/// Image-domain quality metric on the 64×64 buffer (row-major), 0..=100.
pub(crate) fn quality(a: &[f32; 4096]) -> u8 {
    let mut sum: i32 = 0;
    for i in 0..63 {
        for j in 0..64 {
            let d = ((a[i * 64 + j] - a[(i + 1) * 64 + j]) * 100.0) / 255.0;
            sum += (d as i32).abs();
        }
    }
    for i in 0..64 {
        for j in 0..63 {
            let d = ((a[i * 64 + j] - a[i * 64 + j + 1]) * 100.0) / 255.0;
            sum += (d as i32).abs();
        }
    }
    (sum / 90).min(100) as u8
}

/// The 16×64 DCT matrix, row-major: `D[i][j] = (f32)(scale * cos(pi/128 * (i+1) * (2j+1)))`.
pub(crate) fn dct_matrix() -> &'static [f32; 1024] {
    static MATRIX: OnceLock<[f32; 1024]> = OnceLock::new();
    MATRIX.get_or_init(|| {
        let scale = (2.0f64 / 64.0).sqrt() as f32;
        let mut d = [0f32; 1024];
        for i in 0..16 {
            for j in 0..64 {
                let angle =
                    (std::f64::consts::PI / 2.0 / 64.0) * (i + 1) as f64 * (2 * j + 1) as f64;
                d[i * 64 + j] = (scale as f64 * angle.cos()) as f32;
            }
        }
        d
    })
}

/// Transposed DCT matrix (64×16) so the second product vectorises across outputs.
fn dct_matrix_t() -> &'static [f32; 1024] {
    static MATRIX_T: OnceLock<[f32; 1024]> = OnceLock::new();
    MATRIX_T.get_or_init(|| {
        let d = dct_matrix();
        let mut t = [0f32; 1024];
        for i in 0..16 {
            for k in 0..64 {
                t[k * 16 + i] = d[i * 64 + k];
            }
        }
        t
    })
}

/// `B = D · A · Dᵀ` (16×16, row-major) with the reference summation order: each output is one
/// sequential f32 accumulator over k ascending. Vectorised across outputs, never across k.
pub(crate) fn dct64_to_16(a: &[f32; 4096]) -> [f32; 256] {
    let d = dct_matrix();
    let dt = dct_matrix_t();
    let mut t = [0f32; 1024]; // 16×64
    for i in 0..16 {
        let mut acc = [0f32; 64];
        for k in 0..64 {
            let dik = d[i * 64 + k];
            let row = &a[k * 64..k * 64 + 64];
            for j in 0..64 {
                acc[j] += dik * row[j];
            }
        }
        t[i * 64..i * 64 + 64].copy_from_slice(&acc);
    }
    let mut b = [0f32; 256];
    for i in 0..16 {
        let mut acc = [0f32; 16];
        for k in 0..64 {
            let tik = t[i * 64 + k];
            let drow = &dt[k * 16..k * 16 + 16];
            for j in 0..16 {
                acc[j] += tik * drow[j];
            }
        }
        b[i * 16..i * 16 + 16].copy_from_slice(&acc);
    }
    b
}

/// The lower median (sorted index 127) of the 256 coefficients, as Torben's method returns.
pub(crate) fn median(b: &[f32; 256]) -> f32 {
    let mut v = *b;
    let (_, m, _) = v.select_nth_unstable_by(127, f32::total_cmp);
    *m
}

/// Bit `k = i*16+j` is set iff `B[i][j] > median` (strict).
pub(crate) fn bits(b: &[f32; 256]) -> PdqHash {
    let m = median(b);
    let mut h = PdqHash::default();
    for (k, &v) in b.iter().enumerate() {
        if v > m {
            h.set_bit(k);
        }
    }
    h
}

/// The DCT-domain dihedral transform of the reference (`dct16OriginalTo*`).
pub(crate) fn dihedral(b: &[f32; 256], d: Dihedral) -> [f32; 256] {
    let mut out = [0f32; 256];
    for i in 0..16 {
        for j in 0..16 {
            let v = b[i * 16 + j];
            let odd = |x: usize| x & 1 == 1;
            match d {
                Dihedral::Original => out[i * 16 + j] = v,
                Dihedral::Rotate90 => out[j * 16 + i] = if odd(j) { v } else { -v },
                Dihedral::Rotate180 => out[i * 16 + j] = if odd(i + j) { -v } else { v },
                Dihedral::Rotate270 => out[j * 16 + i] = if odd(i) { v } else { -v },
                Dihedral::FlipX => out[i * 16 + j] = if odd(i) { v } else { -v },
                Dihedral::FlipY => out[i * 16 + j] = if odd(j) { v } else { -v },
                Dihedral::FlipPlus1 => out[j * 16 + i] = v,
                Dihedral::FlipMinus1 => out[j * 16 + i] = if odd(i + j) { -v } else { v },
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_constants_have_reference_bits() {
        assert_eq!(LUMA_R.to_bits(), 0x3e99_1687);
        assert_eq!(LUMA_G.to_bits(), 0x3f16_45a2);
        assert_eq!(LUMA_B.to_bits(), 0x3de9_78d5);
    }

    #[test]
    fn decimation_matches_double_formula() {
        for dim in [5usize, 63, 64, 65, 127, 735, 924, 1024, 4032, 100_000] {
            for out in 0..64 {
                let expect = (((out as f64 + 0.5) * dim as f64) / 64.0) as usize;
                assert_eq!(decimation_index(out, dim), expect, "dim {dim} out {out}");
            }
        }
    }

    #[test]
    fn median_is_lower_median() {
        let mut b = [0f32; 256];
        for (i, v) in b.iter_mut().enumerate() {
            *v = (255 - i) as f32;
        }
        assert_eq!(median(&b), 127.0);
        assert_eq!(bits(&b).count_ones(), 128);
    }
}
