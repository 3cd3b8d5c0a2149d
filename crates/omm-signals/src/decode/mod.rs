//! Image decoding to 8-bit pixels, following the conventions the reference hashes assume.
//!
//! * JPEG: libjpeg-turbo's code (ISLOW IDCT, fancy upsampling), pixel-identical to Pillow and
//!   ImageMagick; CMYK/YCCK converted to RGB like ImageMagick.
//! * PNG, WebP, GIF (first frame), BMP, TIFF: the `image` crate. Palette images are expanded to
//!   their colours. Alpha is dropped, not composited. 16-bit samples are scaled to 8 bits
//!   (`round(v / 257)`).
//! * Images whose pixels are all grey (R = G = B) are returned as [`Pixels::Gray8`], like the
//!   grey PNM ImageMagick hands the reference tool.
//! * EXIF orientation is ignored unless [`DecodeOptions::apply_exif_orientation`] is set.
//! * The pixel count is checked against [`DecodeOptions::max_pixels`] from the header, before
//!   any pixel is decoded.

mod jpeg;

use std::fmt;
use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder};
use thiserror::Error;

use crate::image::{Image, Pixels};

/// Default limit on decoded pixels: 50 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// Supported image container formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// JPEG (JFIF/EXIF).
    Jpeg,
    /// PNG.
    Png,
    /// WebP (lossy or lossless).
    WebP,
    /// GIF (the first frame is decoded).
    Gif,
    /// Windows bitmap.
    Bmp,
    /// TIFF.
    Tiff,
}

impl ImageFormat {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::WebP => "webp",
            ImageFormat::Gif => "gif",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Tiff => "tiff",
        }
    }

    /// Recognises a format from the first bytes of a file.
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(ImageFormat::WebP)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(ImageFormat::Gif)
        } else if bytes.starts_with(b"BM") {
            Some(ImageFormat::Bmp)
        } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
            Some(ImageFormat::Tiff)
        } else {
            None
        }
    }

    fn to_image_crate(self) -> image::ImageFormat {
        match self {
            ImageFormat::Jpeg => image::ImageFormat::Jpeg,
            ImageFormat::Png => image::ImageFormat::Png,
            ImageFormat::WebP => image::ImageFormat::WebP,
            ImageFormat::Gif => image::ImageFormat::Gif,
            ImageFormat::Bmp => image::ImageFormat::Bmp,
            ImageFormat::Tiff => image::ImageFormat::Tiff,
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an image could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not one of the supported formats.
    #[error("unrecognised image format (supported: JPEG, PNG, WebP, GIF, BMP, TIFF)")]
    UnknownFormat,
    /// The image is larger than the configured limit.
    #[error("image is {width}x{height} = {pixels} pixels, above the limit of {max_pixels}")]
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// width × height.
        pixels: u64,
        /// The configured limit.
        max_pixels: u64,
    },
    /// The header declares an empty image.
    #[error("image has zero width or height")]
    Empty,
    /// The file ends before the image data does.
    #[error("{format} data is truncated")]
    Truncated {
        /// The format being decoded.
        format: ImageFormat,
    },
    /// The data is malformed.
    #[error("corrupt {format} data: {message}")]
    Corrupt {
        /// The format being decoded.
        format: ImageFormat,
        /// The decoder's description.
        message: String,
    },
    /// A valid file using a feature we do not decode.
    #[error("unsupported {format} variant: {message}")]
    Unsupported {
        /// The format being decoded.
        format: ImageFormat,
        /// What is unsupported.
        message: String,
    },
}

/// Options of [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Reject images with more pixels than this (checked from the header).
    pub max_pixels: u64,
    /// Rotate/flip according to the EXIF orientation tag. Off by default, like every PDQ
    /// implementation: hashes shared by other members are computed on the stored pixels.
    pub apply_exif_orientation: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_pixels: DEFAULT_MAX_PIXELS,
            apply_exif_orientation: false,
        }
    }
}

impl DecodeOptions {
    fn check_dimensions(&self, width: u32, height: u32) -> Result<(), DecodeError> {
        if width == 0 || height == 0 {
            return Err(DecodeError::Empty);
        }
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            return Err(DecodeError::TooLarge {
                width,
                height,
                pixels,
                max_pixels: self.max_pixels,
            });
        }
        Ok(())
    }
}

/// Decodes an image file held in memory.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Image, DecodeError> {
    let format = ImageFormat::sniff(bytes).ok_or(DecodeError::UnknownFormat)?;
    decode_as(bytes, format, opts)
}

/// Decodes bytes known to be of `format`.
pub fn decode_as(
    bytes: &[u8],
    format: ImageFormat,
    opts: &DecodeOptions,
) -> Result<Image, DecodeError> {
    let img = match format {
        ImageFormat::Jpeg => jpeg::decode(bytes, opts)?,
        _ => decode_with_image_crate(bytes, format, opts)?,
    };
    Ok(img.collapse_grey())
}

fn map_image_error(format: ImageFormat, e: image::ImageError) -> DecodeError {
    use image::ImageError as E;
    match e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated { format }
        }
        E::Unsupported(u) => DecodeError::Unsupported {
            format,
            message: u.to_string(),
        },
        E::Limits(l) => DecodeError::Unsupported {
            format,
            message: l.to_string(),
        },
        other => {
            let message = other.to_string();
            let lower = message.to_ascii_lowercase();
            if lower.contains("eof")
                || lower.contains("end of file")
                || lower.contains("unexpected end")
            {
                DecodeError::Truncated { format }
            } else {
                DecodeError::Corrupt { format, message }
            }
        }
    }
}

fn decode_with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
    opts: &DecodeOptions,
) -> Result<Image, DecodeError> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format.to_image_crate());
    let mut limits = image::Limits::default();
    // Largest buffer: 16-bit RGBA at the pixel limit, plus decoder working memory.
    limits.max_alloc = Some(opts.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(format, e))?;
    let (w, h) = decoder.dimensions();
    opts.check_dimensions(w, h)?;
    let orientation = if opts.apply_exif_orientation {
        decoder.orientation().ok()
    } else {
        None
    };
    let dynimg = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(format, e))?;
    let img = from_dynamic(dynimg);
    Ok(match orientation {
        Some(o) => orient(img, o),
        None => img,
    })
}

/// 16-bit sample to 8 bits, rounding: `round(v * 255 / 65535)`.
#[inline]
pub(crate) fn scale16(v: u16) -> u8 {
    ((v as u32 * 255 + 32767) / 65535) as u8
}

fn from_dynamic(d: DynamicImage) -> Image {
    let (w, h) = (d.width(), d.height());
    let pixels = match d {
        DynamicImage::ImageLuma8(b) => Pixels::Gray8(b.into_raw()),
        DynamicImage::ImageLumaA8(b) => {
            Pixels::Gray8(b.into_raw().chunks_exact(2).map(|c| c[0]).collect())
        }
        DynamicImage::ImageRgb8(b) => Pixels::Rgb8(b.into_raw()),
        DynamicImage::ImageRgba8(b) => Pixels::Rgb8(
            b.into_raw()
                .chunks_exact(4)
                .flat_map(|c| [c[0], c[1], c[2]])
                .collect(),
        ),
        DynamicImage::ImageLuma16(b) => {
            Pixels::Gray8(b.into_raw().into_iter().map(scale16).collect())
        }
        DynamicImage::ImageLumaA16(b) => Pixels::Gray8(
            b.into_raw()
                .chunks_exact(2)
                .map(|c| scale16(c[0]))
                .collect(),
        ),
        DynamicImage::ImageRgb16(b) => {
            Pixels::Rgb8(b.into_raw().into_iter().map(scale16).collect())
        }
        DynamicImage::ImageRgba16(b) => Pixels::Rgb8(
            b.into_raw()
                .chunks_exact(4)
                .flat_map(|c| [scale16(c[0]), scale16(c[1]), scale16(c[2])])
                .collect(),
        ),
        other => Pixels::Rgb8(other.to_rgb8().into_raw()),
    };
    Image::new(w, h, pixels).expect("decoder returned a consistent buffer")
}

/// Applies an EXIF orientation to decoded pixels.
pub(crate) fn orient(img: Image, o: Orientation) -> Image {
    if o == Orientation::NoTransforms {
        return img;
    }
    let (w, h) = (img.width(), img.height());
    let mut d = match img.into_pixels() {
        Pixels::Gray8(p) => DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w, h, p).expect("consistent buffer"),
        ),
        Pixels::Rgb8(p) => {
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, p).expect("consistent buffer"))
        }
    };
    d.apply_orientation(o);
    from_dynamic(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale16_rounds() {
        assert_eq!(scale16(0), 0);
        assert_eq!(scale16(65535), 255);
        assert_eq!(scale16(257), 1);
        assert_eq!(scale16(128), 0);
        assert_eq!(scale16(129), 1);
    }

    #[test]
    fn unknown_and_empty() {
        let o = DecodeOptions::default();
        assert_eq!(decode(b"", &o), Err(DecodeError::UnknownFormat));
        assert_eq!(decode(b"hello world", &o), Err(DecodeError::UnknownFormat));
    }
}
