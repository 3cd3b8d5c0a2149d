//! Stage-by-stage check against `pdq-golden-intermediates-pen-and-coaster.txt`.

#![allow(clippy::needless_range_loop)]

mod common;

use omm_signals::pdq::{self, PdqOptions};
use omm_signals::{decode, DecodeOptions, Pixels};

/// Parses a C99 hex float such as `-0x1.450958p+1`.
fn parse_hex_float(s: &str) -> f32 {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let s = s.strip_prefix("0x").expect("0x prefix");
    let (mant, exp) = s.split_once('p').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent value");
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let mut v = u64::from_str_radix(int, 16).expect("integer part") as f64;
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += c.to_digit(16).expect("hex digit") as f64 * scale;
        scale /= 16.0;
    }
    let v = (v * 2f64.powi(exp)) as f32;
    if neg {
        -v
    } else {
        v
    }
}

#[test]
fn pen_and_coaster_stages_match() {
    let text = std::fs::read_to_string(
        common::vectors_dir().join("pdq-golden-intermediates-pen-and-coaster.txt"),
    )
    .expect("read golden file");
    let mut b64 = vec![f32::NAN; 4096];
    let mut dct = vec![f32::NAN; 256];
    let mut header = String::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "B64" => {
                let (i, j): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
                b64[i * 64 + j] = parse_hex_float(f[3]);
            }
            "DCT" => {
                let (i, j): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
                dct[i * 16 + j] = parse_hex_float(f[3]);
            }
            _ => {
                header.push_str(line);
                header.push('\n');
            }
        }
    }
    assert!(b64.iter().all(|v| !v.is_nan()) && dct.iter().all(|v| !v.is_nan()));

    let bytes =
        std::fs::read(common::media("pdq/data/reg-test-input/pen-and-coaster.png")).unwrap();
    let img = decode(&bytes, &DecodeOptions::default()).unwrap();
    assert_eq!((img.width(), img.height()), (924, 735));
    assert!(matches!(img.pixels(), Pixels::Rgb8(_)));
    assert!(header.contains("width=924 height=735"));
    assert!(header.contains("window_along_rows=8 window_along_cols=6"));

    let luma = pdq::luma(&img);
    assert_eq!(luma[0], parse_hex_float("0x1.c3e24ep+7"));
    let sum: f64 = luma.iter().map(|&v| v as f64).sum();
    assert!((sum - 100970065.909907).abs() < 1e-3, "luma sum {sum}");

    let st = pdq::stages(&img, PdqOptions::default());
    for k in 0..4096 {
        assert_eq!(
            st.buffer64[k].to_bits(),
            b64[k].to_bits(),
            "buffer64[{}][{}]",
            k / 64,
            k % 64
        );
    }
    for k in 0..256 {
        assert_eq!(
            st.dct[k].to_bits(),
            dct[k].to_bits(),
            "dct[{}][{}]",
            k / 16,
            k % 16
        );
    }
    assert_eq!(st.quality, 100);
    assert!(header.contains(&format!("hash={}", pdq::bits_of(&st.dct))));
    // The stage entry points agree with the one-shot path.
    let w = img.width() as usize;
    let h = img.height() as usize;
    assert_eq!(pdq::filter_decimate_luma(&luma, w, h), st.buffer64);
    assert_eq!(pdq::dct(&st.buffer64), st.dct);
    assert_eq!(pdq::quality_of(&st.buffer64), 100);
}
