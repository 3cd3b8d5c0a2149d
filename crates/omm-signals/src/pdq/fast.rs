//! Cache-friendly, vectorised Jarosz filter + decimation, bit-identical to the reference.
//!
//! The reference runs, twice, a running-mean box filter along every row and then along every
//! column (stride `width`, which misses the cache), and samples 64×64 pixels at the end. Each
//! output value is the result of one sequence of f32 operations (add the right edge, subtract
//! the left edge, divide by the count). We keep every such sequence unchanged and only change
//! *which independent sequences run side by side*:
//!
//! * row passes run 8 rows in lock-step (one SIMD lane per row) on an 8-row block transposed
//!   into a `width × 8` scratch;
//! * column passes walk the image row by row with one running sum per column (SIMD across
//!   columns);
//! * the second pair of passes only divides where the decimation samples: the second row pass
//!   still runs every add/subtract (the running sum depends on all of them) but emits only the
//!   64 sampled columns, and the second column pass then runs over a `height × 64` buffer.
//!
//! Only one full-frame f32 buffer is allocated (the reference needs two).

// Index loops mirror the reference C++ loops, which keeps the operation order easy to audit.
#![allow(clippy::needless_range_loop)]

use super::core::{decimation_index, window_size};

/// Lanes processed side by side by the row passes.
const LANES: usize = 8;
type Lane = [f32; LANES];

/// Produces luma rows of an image.
pub(crate) trait LumaRows: Sync {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    /// Writes the f32 luma of row `y` into `out` (length `width`).
    fn row(&self, y: usize, out: &mut [f32]);
}

/// Reusable buffers, so hashing many images does not reallocate.
#[derive(Default)]
pub struct Scratch {
    frame: Vec<f32>,
    rows: Vec<f32>,
    lanes_in: Vec<Lane>,
    lanes_out: Vec<Lane>,
    sums: Vec<f32>,
    narrow: Vec<f32>,
}

/// Filters and decimates to the 64×64 buffer (row-major). `width, height >= 1`.
pub(crate) fn filter_decimate<S: LumaRows>(src: &S, scratch: &mut Scratch) -> [f32; 4096] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked above). AVX2 only widens the SIMD lanes;
            // Rust never contracts mul+add into FMA, so results are identical to the SSE2 path.
            return unsafe { filter_decimate_avx2(src, scratch) };
        }
    }
    filter_decimate_impl(src, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn filter_decimate_avx2<S: LumaRows>(src: &S, scratch: &mut Scratch) -> [f32; 4096] {
    filter_decimate_impl(src, scratch)
}

#[inline(always)]
fn filter_decimate_impl<S: LumaRows>(src: &S, s: &mut Scratch) -> [f32; 4096] {
    let w = src.width();
    let h = src.height();
    let win_rows = window_size(w); // horizontal passes
    let win_cols = window_size(h); // vertical passes
    let mut col_samples = [0usize; 64];
    let mut row_samples = [0usize; 64];
    for o in 0..64 {
        col_samples[o] = decimation_index(o, w);
        row_samples[o] = decimation_index(o, h);
    }

    s.frame.clear();
    s.frame.resize(w * h, 0.0);
    s.rows.clear();
    s.rows.resize(LANES * w, 0.0);
    s.lanes_in.clear();
    s.lanes_in.resize(w, [0.0; LANES]);
    s.lanes_out.clear();
    s.lanes_out.resize(w, [0.0; LANES]);
    s.narrow.clear();
    s.narrow.resize(h * 64, 0.0);

    // Pass 1 (rows): luma -> frame, 8 rows at a time.
    let mut y0 = 0;
    while y0 < h {
        let n = LANES.min(h - y0);
        for k in 0..LANES {
            let row = &mut s.rows[k * w..(k + 1) * w];
            if k < n {
                src.row(y0 + k, row);
            } else {
                row.fill(0.0);
            }
        }
        rows_to_lanes(&s.rows, w, &mut s.lanes_in);
        box_lanes_full(&s.lanes_in, &mut s.lanes_out, win_rows);
        for (x, lane) in s.lanes_out.iter().enumerate() {
            for k in 0..n {
                s.frame[(y0 + k) * w + x] = lane[k];
            }
        }
        y0 += n;
    }

    // Pass 2 (columns) feeding pass 3 (rows, sampled) block by block.
    {
        let Scratch {
            frame,
            rows,
            lanes_in,
            sums,
            narrow,
            ..
        } = s;
        let mut filled = 0usize;
        let mut block_start = 0usize;
        box_columns(frame, w, h, win_cols, sums, |oi, out_row| {
            rows[filled * w..(filled + 1) * w].copy_from_slice(out_row);
            filled += 1;
            if filled == LANES || oi + 1 == h {
                for k in filled..LANES {
                    rows[k * w..(k + 1) * w].fill(0.0);
                }
                rows_to_lanes(rows, w, lanes_in);
                let sampled = box_lanes_sampled(lanes_in, win_rows, &col_samples);
                for k in 0..filled {
                    let dst = &mut narrow[(block_start + k) * 64..(block_start + k + 1) * 64];
                    for (j, v) in dst.iter_mut().enumerate() {
                        *v = sampled[j][k];
                    }
                }
                block_start += filled;
                filled = 0;
            }
        });
    }

    // Pass 4 (columns) on the height × 64 buffer, emitting only the sampled rows.
    let mut out = [0f32; 4096];
    let mut next = 0usize;
    let narrow = std::mem::take(&mut s.narrow);
    box_columns(&narrow, 64, h, win_cols, &mut s.sums, |oi, out_row| {
        while next < 64 && row_samples[next] == oi {
            out[next * 64..next * 64 + 64].copy_from_slice(out_row);
            next += 1;
        }
    });
    s.narrow = narrow;
    out
}

/// Transposes `LANES` rows of length `w` into `w` lanes.
#[inline(always)]
fn rows_to_lanes(rows: &[f32], w: usize, lanes: &mut [Lane]) {
    let (r0, rest) = rows.split_at(w);
    let (r1, rest) = rest.split_at(w);
    let (r2, rest) = rest.split_at(w);
    let (r3, rest) = rest.split_at(w);
    let (r4, rest) = rest.split_at(w);
    let (r5, rest) = rest.split_at(w);
    let (r6, r7) = rest.split_at(w);
    let r7 = &r7[..w];
    for x in 0..w {
        lanes[x] = [r0[x], r1[x], r2[x], r3[x], r4[x], r5[x], r6[x], r7[x]];
    }
}

#[inline(always)]
fn add(sum: &mut Lane, v: &Lane) {
    for l in 0..LANES {
        sum[l] += v[l];
    }
}

#[inline(always)]
fn sub(sum: &mut Lane, v: &Lane) {
    for l in 0..LANES {
        sum[l] -= v[l];
    }
}

#[inline(always)]
fn div(sum: &Lane, cnt: usize) -> Lane {
    let c = cnt as f32;
    let mut o = [0f32; LANES];
    for l in 0..LANES {
        o[l] = sum[l] / c;
    }
    o
}

/// Phase lengths of the reference `box1DFloat` for a vector of length `n` and window `w`.
#[inline(always)]
fn phases(n: usize, window: usize) -> (usize, usize, usize, usize) {
    let half = (window + 2) / 2;
    (half - 1, window - half + 1, n - window, half - 1)
}

/// Running-mean box filter along the lane vector, all outputs.
#[inline(always)]
fn box_lanes_full(inp: &[Lane], out: &mut [Lane], window: usize) {
    let n = inp.len();
    let (p1, p2, p3, p4) = phases(n, window);
    let mut sum = [0f32; LANES];
    let (mut li, mut ri, mut oi, mut cnt) = (0, 0, 0, 0);
    for _ in 0..p1 {
        add(&mut sum, &inp[ri]);
        cnt += 1;
        ri += 1;
    }
    for _ in 0..p2 {
        add(&mut sum, &inp[ri]);
        cnt += 1;
        out[oi] = div(&sum, cnt);
        ri += 1;
        oi += 1;
    }
    for _ in 0..p3 {
        add(&mut sum, &inp[ri]);
        sub(&mut sum, &inp[li]);
        out[oi] = div(&sum, cnt);
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..p4 {
        sub(&mut sum, &inp[li]);
        cnt -= 1;
        out[oi] = div(&sum, cnt);
        li += 1;
        oi += 1;
    }
}

/// Running-mean box filter along the lane vector, dividing only at the 64 sampled positions
/// (non-decreasing, possibly repeated).
#[inline(always)]
fn box_lanes_sampled(inp: &[Lane], window: usize, samples: &[usize; 64]) -> [Lane; 64] {
    let n = inp.len();
    let (p1, p2, p3, p4) = phases(n, window);
    let mut out = [[0f32; LANES]; 64];
    let mut next = 0usize;
    let mut sum = [0f32; LANES];
    let (mut li, mut ri, mut oi, mut cnt) = (0, 0, 0, 0);
    macro_rules! emit {
        () => {
            while next < 64 && samples[next] == oi {
                out[next] = div(&sum, cnt);
                next += 1;
            }
        };
    }
    for _ in 0..p1 {
        add(&mut sum, &inp[ri]);
        cnt += 1;
        ri += 1;
    }
    for _ in 0..p2 {
        add(&mut sum, &inp[ri]);
        cnt += 1;
        emit!();
        ri += 1;
        oi += 1;
    }
    // The tail after the last sample cannot affect any sampled output.
    let last = samples[63];
    for _ in 0..p3 {
        if oi > last {
            return out;
        }
        add(&mut sum, &inp[ri]);
        sub(&mut sum, &inp[li]);
        emit!();
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..p4 {
        if oi > last {
            return out;
        }
        sub(&mut sum, &inp[li]);
        cnt -= 1;
        emit!();
        li += 1;
        oi += 1;
    }
    out
}

/// Running-mean box filter down every column of a row-major `w × h` matrix, walking rows
/// (one running sum per column). Calls `emit(row, values)` for each output row in order.
#[inline(always)]
fn box_columns(
    inp: &[f32],
    w: usize,
    h: usize,
    window: usize,
    sums: &mut Vec<f32>,
    mut emit: impl FnMut(usize, &[f32]),
) {
    let (p1, p2, p3, p4) = phases(h, window);
    sums.clear();
    sums.resize(2 * w, 0.0);
    let (sum, out) = sums.split_at_mut(w);
    let row = |r: usize| &inp[r * w..(r + 1) * w];
    let (mut li, mut ri, mut oi, mut cnt) = (0, 0, 0, 0usize);
    for _ in 0..p1 {
        for (s, v) in sum.iter_mut().zip(row(ri)) {
            *s += *v;
        }
        cnt += 1;
        ri += 1;
    }
    for _ in 0..p2 {
        cnt += 1;
        let c = cnt as f32;
        for ((s, v), o) in sum.iter_mut().zip(row(ri)).zip(out.iter_mut()) {
            *s += *v;
            *o = *s / c;
        }
        emit(oi, out);
        ri += 1;
        oi += 1;
    }
    let c = cnt as f32;
    for _ in 0..p3 {
        for (((s, v), u), o) in sum.iter_mut().zip(row(ri)).zip(row(li)).zip(out.iter_mut()) {
            *s += *v;
            *s -= *u;
            *o = *s / c;
        }
        emit(oi, out);
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..p4 {
        cnt -= 1;
        let c = cnt as f32;
        for ((s, u), o) in sum.iter_mut().zip(row(li)).zip(out.iter_mut()) {
            *s -= *u;
            *o = *s / c;
        }
        emit(oi, out);
        li += 1;
        oi += 1;
    }
}
