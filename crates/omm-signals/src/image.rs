//! Decoded 8-bit pixels, the input of the photo hashers.

use thiserror::Error;

/// Interleaved 8-bit samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pixels {
    /// One grey byte per pixel. Hashed with the exact grey luma (`luma = value`).
    Gray8(Vec<u8>),
    /// R, G, B bytes per pixel.
    Rgb8(Vec<u8>),
}

impl Pixels {
    /// Samples per pixel (1 or 3).
    pub fn channels(&self) -> usize {
        match self {
            Pixels::Gray8(_) => 1,
            Pixels::Rgb8(_) => 3,
        }
    }

    /// The raw interleaved bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Pixels::Gray8(b) | Pixels::Rgb8(b) => b,
        }
    }
}

/// The pixel buffer does not match the dimensions.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("pixel buffer has {actual} bytes, {width}x{height} needs {expected}")]
pub struct BadPixelBuffer {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes required.
    pub expected: usize,
    /// Bytes given.
    pub actual: usize,
}

/// A decoded image: dimensions and 8-bit pixels, row-major, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    width: u32,
    height: u32,
    pixels: Pixels,
}

impl Image {
    /// Wraps pixels, checking the buffer length.
    pub fn new(width: u32, height: u32, pixels: Pixels) -> Result<Self, BadPixelBuffer> {
        let expected = width as usize * height as usize * pixels.channels();
        let actual = pixels.bytes().len();
        if expected != actual {
            return Err(BadPixelBuffer {
                width,
                height,
                expected,
                actual,
            });
        }
        Ok(Image {
            width,
            height,
            pixels,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels.
    pub fn pixels(&self) -> &Pixels {
        &self.pixels
    }

    /// Consumes the image, returning its pixels.
    pub fn into_pixels(self) -> Pixels {
        self.pixels
    }

    /// If every RGB pixel has R = G = B, turns the image into grey. ImageMagick (the decoder of
    /// the reference tool) writes such images as grey PNM, which the reference then hashes on the
    /// exact grey path; the f32 RGB luma of (v, v, v) is not always exactly v.
    pub fn collapse_grey(self) -> Image {
        match self.pixels {
            Pixels::Rgb8(ref p) if p.chunks_exact(3).all(|c| c[0] == c[1] && c[1] == c[2]) => {
                let grey = p.chunks_exact(3).map(|c| c[0]).collect();
                Image {
                    width: self.width,
                    height: self.height,
                    pixels: Pixels::Gray8(grey),
                }
            }
            _ => self,
        }
    }

    /// Nearest-neighbour resize as CImg's default `resize(w, h)`: source column
    /// `floor(x * W / w)`, source row `floor(y * H / h)`.
    pub fn resize_nearest(&self, new_w: u32, new_h: u32) -> Image {
        let (w, h) = (self.width as u64, self.height as u64);
        let c = self.pixels.channels();
        let src = self.pixels.bytes();
        let mut out = Vec::with_capacity(new_w as usize * new_h as usize * c);
        for y in 0..new_h as u64 {
            let sy = (y * h / new_h as u64) as usize;
            for x in 0..new_w as u64 {
                let sx = (x * w / new_w as u64) as usize;
                let s = (sy * self.width as usize + sx) * c;
                out.extend_from_slice(&src[s..s + c]);
            }
        }
        let pixels = match self.pixels {
            Pixels::Gray8(_) => Pixels::Gray8(out),
            Pixels::Rgb8(_) => Pixels::Rgb8(out),
        };
        Image {
            width: new_w,
            height: new_h,
            pixels,
        }
    }
}
