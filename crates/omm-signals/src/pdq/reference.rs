//! A literal port of the reference C++ core (`pdqHash256FromFloatLuma`), strided column pass
//! included. Test oracle and benchmark baseline only (feature `reference`): use
//! [`crate::pdq::hash_image`] in production.

// Index loops mirror the reference C++ loops, which keeps the operation order easy to audit.
#![allow(clippy::needless_range_loop)]

use super::core::{self, decimation_index, window_size};
use super::{PdqOutput, PdqStages};
use crate::image::{Image, Pixels};

/// Float luma of an image, row-major, like `fillFloatLumaFromRGB` / `fillFloatLumaFromGrey`.
pub fn luma(img: &Image) -> Vec<f32> {
    match img.pixels() {
        Pixels::Gray8(p) => p.iter().map(|&v| v as f32).collect(),
        Pixels::Rgb8(p) => p
            .chunks_exact(3)
            .map(|c| core::luma(c[0], c[1], c[2]))
            .collect(),
    }
}

fn box1d(inp: &[f32], out: &mut [f32], base: usize, n: usize, stride: usize, window: usize) {
    let half = (window + 2) / 2;
    let (p1, p2, p3, p4) = (half - 1, window - half + 1, n - window, half - 1);
    let (mut li, mut ri, mut oi) = (base, base, base);
    let mut sum = 0f32;
    let mut cnt = 0i32;
    for _ in 0..p1 {
        sum += inp[ri];
        cnt += 1;
        ri += stride;
    }
    for _ in 0..p2 {
        sum += inp[ri];
        cnt += 1;
        out[oi] = sum / cnt as f32;
        ri += stride;
        oi += stride;
    }
    for _ in 0..p3 {
        sum += inp[ri];
        sum -= inp[li];
        out[oi] = sum / cnt as f32;
        li += stride;
        ri += stride;
        oi += stride;
    }
    for _ in 0..p4 {
        sum -= inp[li];
        cnt -= 1;
        out[oi] = sum / cnt as f32;
        li += stride;
        oi += stride;
    }
}

/// `jaroszFilterFloat` with 2 passes: result in `buf1`.
pub fn jarosz(buf1: &mut [f32], rows: usize, cols: usize) {
    let mut buf2 = vec![0f32; rows * cols];
    let wr = window_size(cols);
    let wc = window_size(rows);
    for _ in 0..2 {
        for i in 0..rows {
            box1d(buf1, &mut buf2, i * cols, cols, 1, wr);
        }
        for j in 0..cols {
            box1d(&buf2, buf1, j, rows, cols, wc);
        }
    }
}

/// All stages of the reference pipeline for one image.
pub fn stages(img: &Image) -> PdqStages {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut buf = luma(img);
    let mut a = [0f32; 4096];
    if w < core::MIN_HASHABLE_DIM || h < core::MIN_HASHABLE_DIM {
        return PdqStages {
            buffer64: a,
            dct: [0f32; 256],
            quality: 0,
        };
    }
    if w == 64 && h == 64 {
        a.copy_from_slice(&buf);
    } else {
        jarosz(&mut buf, h, w);
        for i in 0..64 {
            let ini = decimation_index(i, h);
            for j in 0..64 {
                a[i * 64 + j] = buf[ini * w + decimation_index(j, w)];
            }
        }
    }
    let quality = core::quality(&a);
    PdqStages {
        buffer64: a,
        dct: dct_reference(&a),
        quality,
    }
}

/// The reference DCT loops as written (T = D·A, then B = T·Dᵀ).
fn dct_reference(a: &[f32; 4096]) -> [f32; 256] {
    let d = core::dct_matrix();
    let mut t = [0f32; 1024];
    for i in 0..16 {
        for j in 0..64 {
            let mut s = 0f32;
            for k in 0..64 {
                s += d[i * 64 + k] * a[k * 64 + j];
            }
            t[i * 64 + j] = s;
        }
    }
    let mut b = [0f32; 256];
    for i in 0..16 {
        for j in 0..16 {
            let mut s = 0f32;
            for k in 0..64 {
                s += t[i * 64 + k] * d[j * 64 + k];
            }
            b[i * 16 + j] = s;
        }
    }
    b
}

/// Hash and quality by the reference pipeline (full resolution).
pub fn hash(img: &Image) -> PdqOutput {
    let s = stages(img);
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < core::MIN_HASHABLE_DIM || h < core::MIN_HASHABLE_DIM {
        return PdqOutput {
            hash: Default::default(),
            quality: 0,
        };
    }
    PdqOutput {
        hash: core::bits(&s.dct),
        quality: s.quality,
    }
}
