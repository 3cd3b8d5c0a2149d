//! JPEG decoding with libjpeg-turbo's code (via `mozjpeg-sys`, built with `cc`): ISLOW IDCT,
//! fancy upsampling, no DCT scaling. These are the pixels Pillow and ImageMagick produce, which
//! the reference hashes were computed on.

use std::any::Any;
use std::ffi::c_int;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg_sys as sys;

use super::{DecodeError, DecodeOptions, ImageFormat};
use crate::image::{Image, Pixels};

/// A libjpeg fatal error, carried out of the C code by unwinding.
struct FatalJpegError(String);

/// State shared with the error callbacks through `client_data`.
#[derive(Default)]
struct ErrorState {
    truncated: bool,
}

unsafe extern "C-unwind" fn error_exit(cinfo: &mut sys::jpeg_common_struct) {
    let msg = format_message(cinfo);
    // resume_unwind does not run the panic hook: nothing is printed.
    std::panic::resume_unwind(Box::new(FatalJpegError(msg)));
}

unsafe extern "C-unwind" fn emit_message(cinfo: &mut sys::jpeg_common_struct, level: c_int) {
    if level < 0 {
        let err = &*cinfo.err;
        if err.msg_code == sys::JWRN_JPEG_EOF as c_int {
            let state = cinfo.client_data as *mut ErrorState;
            if !state.is_null() {
                (*state).truncated = true;
            }
        }
    }
}

unsafe fn format_message(cinfo: &mut sys::jpeg_common_struct) -> String {
    let mut buf = [0u8; 80];
    if let Some(f) = (*cinfo.err).format_message {
        // The C function writes into the buffer; the binding types it as a shared reference.
        let f: unsafe extern "C-unwind" fn(&mut sys::jpeg_common_struct, *mut u8) =
            mem::transmute(f);
        f(cinfo, buf.as_mut_ptr());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Reads the EXIF orientation (1..=8) from saved APP1 markers.
unsafe fn exif_orientation(
    cinfo: &sys::jpeg_decompress_struct,
) -> Option<image::metadata::Orientation> {
    let mut m = cinfo.marker_list;
    while !m.is_null() {
        let marker = &*m;
        if marker.marker == 0xE1 && !marker.data.is_null() {
            let data = std::slice::from_raw_parts(marker.data, marker.data_length as usize);
            if let Some(tiff) = data.strip_prefix(b"Exif\0\0") {
                if let Some(o) = image::metadata::Orientation::from_exif_chunk(tiff) {
                    return Some(o);
                }
            }
        }
        m = marker.next;
    }
    None
}

/// Decodes a JPEG. CMYK/YCCK images are converted to RGB like ImageMagick does.
pub(super) fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Image, DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError::Truncated {
            format: ImageFormat::Jpeg,
        });
    }
    let mut state = ErrorState::default();
    // Boxed so that the addresses libjpeg keeps stay put.
    let mut err: Box<sys::jpeg_error_mgr> = Box::new(unsafe { mem::zeroed() });
    let mut cinfo: Box<sys::jpeg_decompress_struct> = Box::new(unsafe { mem::zeroed() });
    unsafe {
        sys::jpeg_std_error(&mut err);
    }
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    cinfo.common.err = &mut *err;
    cinfo.common.client_data = &mut state as *mut ErrorState as *mut _;

    let created = catch_unwind(AssertUnwindSafe(|| unsafe {
        sys::jpeg_create_decompress(&mut *cinfo);
    }));
    if let Err(p) = created {
        return Err(corrupt(p));
    }
    let result = catch_unwind(AssertUnwindSafe(|| unsafe {
        decode_inner(&mut cinfo, bytes, opts)
    }));
    // Always release libjpeg's memory, whatever happened.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        sys::jpeg_destroy_decompress(&mut cinfo);
    }));
    match result {
        Ok(Ok(img)) if state.truncated => {
            drop(img);
            Err(DecodeError::Truncated {
                format: ImageFormat::Jpeg,
            })
        }
        Ok(r) => r,
        Err(_) if state.truncated => Err(DecodeError::Truncated {
            format: ImageFormat::Jpeg,
        }),
        Err(p) => Err(corrupt(p)),
    }
}

fn corrupt(payload: Box<dyn Any + Send>) -> DecodeError {
    let message = match payload.downcast::<FatalJpegError>() {
        Ok(e) => e.0,
        Err(p) => match p.downcast::<String>() {
            Ok(s) => *s,
            Err(_) => "internal decoder error".to_string(),
        },
    };
    DecodeError::Corrupt {
        format: ImageFormat::Jpeg,
        message,
    }
}

unsafe fn decode_inner(
    cinfo: &mut sys::jpeg_decompress_struct,
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<Image, DecodeError> {
    sys::jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as _);
    if opts.apply_exif_orientation {
        sys::jpeg_save_markers(cinfo, 0xE1, 0xFFFF);
    }
    sys::jpeg_read_header(cinfo, 1);
    let (w, h) = (cinfo.image_width, cinfo.image_height);
    opts.check_dimensions(w, h)?;

    let components = match cinfo.jpeg_color_space {
        sys::J_COLOR_SPACE::JCS_GRAYSCALE => {
            cinfo.out_color_space = sys::J_COLOR_SPACE::JCS_GRAYSCALE;
            1
        }
        sys::J_COLOR_SPACE::JCS_CMYK | sys::J_COLOR_SPACE::JCS_YCCK => {
            cinfo.out_color_space = sys::J_COLOR_SPACE::JCS_CMYK;
            4
        }
        _ => {
            cinfo.out_color_space = sys::J_COLOR_SPACE::JCS_RGB;
            3
        }
    };
    cinfo.dct_method = sys::J_DCT_METHOD::JDCT_ISLOW;
    cinfo.do_fancy_upsampling = 1;
    cinfo.do_block_smoothing = 1;
    cinfo.scale_num = 1;
    cinfo.scale_denom = 1;
    sys::jpeg_start_decompress(cinfo);
    let (ow, oh) = (cinfo.output_width as usize, cinfo.output_height as usize);
    if cinfo.output_components as usize != components {
        return Err(DecodeError::Unsupported {
            format: ImageFormat::Jpeg,
            message: format!("unexpected component count {}", cinfo.output_components),
        });
    }
    let stride = ow * components;
    let mut buf = vec![0u8; stride * oh];
    while (cinfo.output_scanline as usize) < oh {
        let y = cinfo.output_scanline as usize;
        let mut row = buf.as_mut_ptr().add(y * stride);
        let read = sys::jpeg_read_scanlines(cinfo, &mut row, 1);
        if read == 0 {
            return Err(DecodeError::Truncated {
                format: ImageFormat::Jpeg,
            });
        }
    }
    let orientation = if opts.apply_exif_orientation {
        exif_orientation(cinfo)
    } else {
        None
    };
    sys::jpeg_finish_decompress(cinfo);

    let pixels = match components {
        1 => Pixels::Gray8(buf),
        3 => Pixels::Rgb8(buf),
        _ => Pixels::Rgb8(cmyk_to_rgb(&buf)),
    };
    let img = Image::new(ow as u32, oh as u32, pixels).map_err(|e| DecodeError::Unsupported {
        format: ImageFormat::Jpeg,
        message: e.to_string(),
    })?;
    Ok(match orientation {
        Some(o) => super::orient(img, o),
        None => img,
    })
}

/// CMYK (Adobe-inverted, as libjpeg returns it) to RGB the way ImageMagick Q16 does:
/// `R = (1 - C)(1 - K)` at 16-bit precision, rounded, then scaled to 8 bits.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        // Stored values are inverted: 255 means no ink.
        let k = 255 - px[3] as u32;
        for &s in &px[..3] {
            let c = 255 - s as u32;
            let q16 = (257.0 * (255 - k) as f64 * (255 - c) as f64 / 255.0 + 0.5).floor() as u32;
            let q = q16 + 128;
            out.push(((q - (q >> 8)) >> 8) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_extremes() {
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255]), vec![255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255]), vec![0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 0]), vec![0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[128, 255, 255, 255]), vec![128, 255, 255]);
    }

    #[test]
    fn garbage_is_an_error() {
        let opts = DecodeOptions::default();
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3], &opts).is_err());
        assert!(decode(&[0xFF, 0xD8], &opts).is_err());
    }
}
