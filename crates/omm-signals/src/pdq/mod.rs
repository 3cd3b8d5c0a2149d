//! PDQ: Meta's 256-bit perceptual photo hash, bit-exact with the reference C++ core.
//!
//! Pipeline (see the algorithms spec §1): decoded pixels → f32 luma → Jarosz tent filter
//! (2 × box along rows then columns, window `ceil(dim/128)`) → 64×64 decimation → quality →
//! 16×64 DCT (`B = D·A·Dᵀ`) → lower median → 256 bits. Given the same pixels, [`hash_image`]
//! returns the same bits and quality as `pdqHash256FromFloatLuma` (pdqhash on PyPI,
//! python-threatexchange, Open Media Match, Java), at full resolution by default.

#![allow(clippy::needless_range_loop)]

mod core;
mod fast;
mod hash;
#[cfg(feature = "reference")]
pub mod reference;

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use self::fast::LumaRows;
pub use self::fast::Scratch;
pub use self::hash::PdqHash;
use crate::image::{Image, Pixels};

/// Default match threshold: two hashes match when their Hamming distance is at most this.
pub const MATCH_THRESHOLD: u32 = 31;

/// Hashes with a quality below this are not reliable (python-threatexchange drops them).
pub const QUALITY_THRESHOLD: u8 = 50;

/// Optional pre-resize applied before hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreResize {
    /// Full resolution: what python-threatexchange, Open Media Match and Java hash.
    #[default]
    None,
    /// The C++ `pdq-photo-hasher` tool: images with a side above 512 are resized to exactly
    /// 512×512 by nearest neighbour (aspect ratio not kept).
    Nearest512,
}

/// Options of the PDQ hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PdqOptions {
    /// Pre-resize policy; full resolution by default.
    pub pre_resize: PreResize,
}

/// A PDQ hash with its quality (0..=100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PdqOutput {
    /// The hash.
    pub hash: PdqHash,
    /// Quality 0..=100; below [`QUALITY_THRESHOLD`] the hash should not be used for matching.
    pub quality: u8,
}

impl PdqOutput {
    /// Whether the quality is below [`QUALITY_THRESHOLD`].
    pub fn is_low_quality(&self) -> bool {
        self.quality < QUALITY_THRESHOLD
    }
}

/// The eight dihedral transforms, in the reference `--pdqdih` output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dihedral {
    /// The image as is.
    Original,
    /// Rotated 90° counter-clockwise.
    Rotate90,
    /// Rotated 180°.
    Rotate180,
    /// Rotated 90° clockwise.
    Rotate270,
    /// Top/bottom swapped.
    FlipX,
    /// Mirrored left/right.
    FlipY,
    /// Transposed (main diagonal).
    FlipPlus1,
    /// Mirrored about the anti-diagonal.
    FlipMinus1,
}

impl Dihedral {
    /// All eight, in output order.
    pub const ALL: [Dihedral; 8] = [
        Dihedral::Original,
        Dihedral::Rotate90,
        Dihedral::Rotate180,
        Dihedral::Rotate270,
        Dihedral::FlipX,
        Dihedral::FlipY,
        Dihedral::FlipPlus1,
        Dihedral::FlipMinus1,
    ];

    /// Lower-case name as python-threatexchange's `RotationType` values (`original`, `rotate90`…).
    pub fn name(self) -> &'static str {
        match self {
            Dihedral::Original => "original",
            Dihedral::Rotate90 => "rotate90",
            Dihedral::Rotate180 => "rotate180",
            Dihedral::Rotate270 => "rotate270",
            Dihedral::FlipX => "flipx",
            Dihedral::FlipY => "flipy",
            Dihedral::FlipPlus1 => "flipplus1",
            Dihedral::FlipMinus1 => "flipminus1",
        }
    }

    /// Applies the transform to an image's pixels (used to check the DCT-domain variants).
    pub fn apply(self, img: &Image) -> Image {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let c = img.pixels().channels();
        let src = img.pixels().bytes();
        let transposed = matches!(
            self,
            Dihedral::Rotate90 | Dihedral::Rotate270 | Dihedral::FlipPlus1 | Dihedral::FlipMinus1
        );
        let (nw, nh) = if transposed { (h, w) } else { (w, h) };
        let mut out = vec![0u8; src.len()];
        for y in 0..nh {
            for x in 0..nw {
                // (sx, sy): the source pixel shown at (x, y) of the transformed image.
                let (sx, sy) = match self {
                    Dihedral::Original => (x, y),
                    Dihedral::Rotate90 => (w - 1 - y, x),
                    Dihedral::Rotate180 => (w - 1 - x, h - 1 - y),
                    Dihedral::Rotate270 => (y, h - 1 - x),
                    Dihedral::FlipX => (x, h - 1 - y),
                    Dihedral::FlipY => (w - 1 - x, y),
                    Dihedral::FlipPlus1 => (y, x),
                    Dihedral::FlipMinus1 => (w - 1 - y, h - 1 - x),
                };
                let d = (y * nw + x) * c;
                let s = (sy * w + sx) * c;
                out[d..d + c].copy_from_slice(&src[s..s + c]);
            }
        }
        let pixels = match img.pixels() {
            Pixels::Gray8(_) => Pixels::Gray8(out),
            Pixels::Rgb8(_) => Pixels::Rgb8(out),
        };
        Image::new(nw as u32, nh as u32, pixels).expect("same pixel count")
    }
}

impl fmt::Display for Dihedral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dihedral {
    type Err = crate::SignalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dihedral::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| crate::SignalError::UnknownName(s.to_string()))
    }
}

/// The hashes of the eight dihedral variants, computed in the DCT domain from one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdqDihedrals {
    /// Hashes in [`Dihedral::ALL`] order.
    pub hashes: [PdqHash; 8],
    /// Quality, shared by all variants.
    pub quality: u8,
}

impl PdqDihedrals {
    /// The hash of one variant.
    pub fn get(&self, d: Dihedral) -> PdqHash {
        self.hashes[d as usize]
    }
}

/// Intermediate results of one hash, for debugging and stage benchmarks.
#[derive(Debug, Clone)]
pub struct PdqStages {
    /// The 64×64 decimated, filtered luma (row-major).
    pub buffer64: [f32; 4096],
    /// The 16×16 DCT coefficients (row-major; row = vertical frequency − 1).
    pub dct: [f32; 256],
    /// Quality 0..=100.
    pub quality: u8,
}

struct ImageRows<'a>(&'a Image);

impl LumaRows for ImageRows<'_> {
    fn width(&self) -> usize {
        self.0.width() as usize
    }
    fn height(&self) -> usize {
        self.0.height() as usize
    }
    #[inline(always)]
    fn row(&self, y: usize, out: &mut [f32]) {
        let w = out.len();
        match self.0.pixels() {
            Pixels::Gray8(p) => {
                for (o, &v) in out.iter_mut().zip(&p[y * w..(y + 1) * w]) {
                    *o = v as f32;
                }
            }
            Pixels::Rgb8(p) => {
                let src = &p[3 * y * w..3 * (y + 1) * w];
                // 8 pixels at a time: de-interleave into planes so the f32 arithmetic
                // vectorises (same per-pixel operations and order).
                let mut chunks = out.chunks_exact_mut(8);
                let mut px = src.chunks_exact(24);
                for (o, c) in (&mut chunks).zip(&mut px) {
                    let mut r = [0f32; 8];
                    let mut g = [0f32; 8];
                    let mut b = [0f32; 8];
                    for k in 0..8 {
                        r[k] = c[3 * k] as f32;
                        g[k] = c[3 * k + 1] as f32;
                        b[k] = c[3 * k + 2] as f32;
                    }
                    for k in 0..8 {
                        o[k] = core::LUMA_R * r[k] + core::LUMA_G * g[k] + core::LUMA_B * b[k];
                    }
                }
                for (o, c) in chunks
                    .into_remainder()
                    .iter_mut()
                    .zip(px.remainder().chunks_exact(3))
                {
                    *o = core::luma(c[0], c[1], c[2]);
                }
            }
        }
    }
}

/// A precomputed f32 luma buffer (row-major).
struct LumaBuffer<'a> {
    luma: &'a [f32],
    width: usize,
    height: usize,
}

impl LumaRows for LumaBuffer<'_> {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    #[inline(always)]
    fn row(&self, y: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.luma[y * self.width..(y + 1) * self.width]);
    }
}

/// Float luma of an image (row-major), as the reference computes it: `0.299 R + 0.587 G +
/// 0.114 B` in f32, left to right, or the exact grey value for grey images.
pub fn luma(img: &Image) -> Vec<f32> {
    let rows = ImageRows(img);
    let w = img.width() as usize;
    let mut out = vec![0f32; w * img.height() as usize];
    if w > 0 {
        for (y, row) in out.chunks_exact_mut(w).enumerate() {
            rows.row(y, row);
        }
    }
    out
}

fn stages_from<S: LumaRows>(src: &S, scratch: &mut Scratch) -> PdqStages {
    let (w, h) = (src.width(), src.height());
    if w < core::MIN_HASHABLE_DIM || h < core::MIN_HASHABLE_DIM {
        return PdqStages {
            buffer64: [0f32; 4096],
            dct: [0f32; 256],
            quality: 0,
        };
    }
    let buffer64 = if w == 64 && h == 64 {
        // The reference copies a 64×64 luma buffer straight through, skipping the filter.
        let mut a = [0f32; 4096];
        for (y, row) in a.chunks_exact_mut(64).enumerate() {
            src.row(y, row);
        }
        a
    } else {
        fast::filter_decimate(src, scratch)
    };
    let quality = core::quality(&buffer64);
    PdqStages {
        dct: core::dct64_to_16(&buffer64),
        buffer64,
        quality,
    }
}

/// Jarosz filter + decimation of a luma buffer to the 64×64 buffer (stage benchmark entry).
pub fn filter_decimate_luma(luma: &[f32], width: usize, height: usize) -> [f32; 4096] {
    assert_eq!(luma.len(), width * height, "luma buffer size");
    let src = LumaBuffer {
        luma,
        width,
        height,
    };
    with_scratch(|s| stages_from(&src, s).buffer64)
}

/// Quality metric of a 64×64 buffer (stage benchmark entry).
pub fn quality_of(buffer64: &[f32; 4096]) -> u8 {
    core::quality(buffer64)
}

/// The 16×16 DCT of a 64×64 buffer (stage benchmark entry).
pub fn dct(buffer64: &[f32; 4096]) -> [f32; 256] {
    core::dct64_to_16(buffer64)
}

/// A dihedral transform applied in the DCT domain (the reference `dct16OriginalTo*`):
/// sign flips and/or a transpose of the 16×16 coefficients, exact in f32.
pub fn transform_dct(dct: &[f32; 256], d: Dihedral) -> [f32; 256] {
    core::dihedral(dct, d)
}

/// The hash bits of 16×16 DCT coefficients (median threshold).
pub fn bits_of(dct: &[f32; 256]) -> PdqHash {
    core::bits(dct)
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

fn prepared(img: &Image, opts: PdqOptions) -> std::borrow::Cow<'_, Image> {
    match opts.pre_resize {
        PreResize::Nearest512 if img.width() > 512 || img.height() > 512 => {
            std::borrow::Cow::Owned(img.resize_nearest(512, 512))
        }
        _ => std::borrow::Cow::Borrowed(img),
    }
}

/// All intermediate stages for an image.
pub fn stages(img: &Image, opts: PdqOptions) -> PdqStages {
    let img = prepared(img, opts);
    with_scratch(|s| stages_from(&ImageRows(&img), s))
}

/// PDQ hash and quality of decoded pixels. Images with a side below 5 give the all-zero hash
/// with quality 0, like the reference.
pub fn hash_image(img: &Image, opts: PdqOptions) -> PdqOutput {
    let st = stages(img, opts);
    if st.quality == 0 && is_too_small(img) {
        return PdqOutput {
            hash: PdqHash::default(),
            quality: 0,
        };
    }
    PdqOutput {
        hash: core::bits(&st.dct),
        quality: st.quality,
    }
}

fn is_too_small(img: &Image) -> bool {
    (img.width() as usize) < core::MIN_HASHABLE_DIM
        || (img.height() as usize) < core::MIN_HASHABLE_DIM
}

/// The hashes of all eight dihedral variants (DCT-domain, as the reference `--pdqdih`).
pub fn hash_image_dihedrals(img: &Image, opts: PdqOptions) -> PdqDihedrals {
    let st = stages(img, opts);
    if is_too_small(img) {
        return PdqDihedrals {
            hashes: [PdqHash::default(); 8],
            quality: 0,
        };
    }
    let mut hashes = [PdqHash::default(); 8];
    for (slot, d) in hashes.iter_mut().zip(Dihedral::ALL) {
        *slot = core::bits(&core::dihedral(&st.dct, d));
    }
    PdqDihedrals {
        hashes,
        quality: st.quality,
    }
}
