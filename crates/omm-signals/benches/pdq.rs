//! PDQ stage benchmarks on a 1024×768 photo (a crop of a vector image), with the literal
//! reference port (strided column pass) as the baseline measured in the same run.
//!
//! Run: `cargo bench -p omm-signals --bench pdq`. Needs the vectors (OMM_VECTORS_DIR or
//! `<workspace>/../shared/vectors`).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use mozjpeg_sys as sys;
use omm_signals::pdq::{self, reference, PdqOptions};
use omm_signals::{decode, DecodeOptions, Image, Pixels};

fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("OMM_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    };
    assert!(dir.is_dir(), "vectors not found at {}", dir.display());
    dir
}

/// A natural 1024×768 RGB photo: the centre crop of the 1600×1004 bridge photo.
fn photo_1024x768() -> Image {
    let path = vectors_dir().join("threatexchange/pdq/data/bridge-mods/aaa-orig.jpg");
    let img = decode(&std::fs::read(path).unwrap(), &DecodeOptions::default()).unwrap();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (cw, ch) = (1024usize, 768usize);
    let (x0, y0) = ((w - cw) / 2, (h - ch) / 2);
    let Pixels::Rgb8(src) = img.pixels() else {
        panic!("expected RGB")
    };
    let mut out = Vec::with_capacity(cw * ch * 3);
    for y in y0..y0 + ch {
        out.extend_from_slice(&src[(y * w + x0) * 3..(y * w + x0 + cw) * 3]);
    }
    Image::new(cw as u32, ch as u32, Pixels::Rgb8(out)).unwrap()
}

/// Baseline JPEG (libjpeg-turbo defaults, quality 90, 4:2:0) of an RGB image.
fn encode_jpeg(img: &Image) -> Vec<u8> {
    unsafe {
        let mut err: sys::jpeg_error_mgr = std::mem::zeroed();
        let mut c: sys::jpeg_compress_struct = std::mem::zeroed();
        c.common.err = sys::jpeg_std_error(&mut err);
        sys::jpeg_create_compress(&mut c);
        let mut buf: *mut u8 = std::ptr::null_mut();
        let mut size: std::ffi::c_ulong = 0;
        sys::jpeg_mem_dest(&mut c, &mut buf, &mut size);
        c.image_width = img.width();
        c.image_height = img.height();
        c.input_components = 3;
        c.in_color_space = sys::J_COLOR_SPACE::JCS_RGB;
        sys::jpeg_c_set_int_param(
            &mut c,
            sys::J_INT_PARAM::JINT_COMPRESS_PROFILE,
            sys::JINT_COMPRESS_PROFILE_VALUE::JCP_FASTEST as i32,
        );
        sys::jpeg_set_defaults(&mut c);
        sys::jpeg_set_quality(&mut c, 90, 1);
        sys::jpeg_start_compress(&mut c, 1);
        let stride = img.width() as usize * 3;
        let bytes = img.pixels().bytes();
        while c.next_scanline < c.image_height {
            let row = bytes.as_ptr().add(c.next_scanline as usize * stride);
            sys::jpeg_write_scanlines(&mut c, &row, 1);
        }
        sys::jpeg_finish_compress(&mut c);
        let out = std::slice::from_raw_parts(buf, size as usize).to_vec();
        sys::jpeg_destroy_compress(&mut c);
        libc_free(buf);
        out
    }
}

extern "C" {
    #[link_name = "free"]
    fn libc_free_raw(p: *mut std::ffi::c_void);
}

unsafe fn libc_free(p: *mut u8) {
    libc_free_raw(p.cast())
}

fn benches(c: &mut Criterion) {
    let img = photo_1024x768();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let jpeg = encode_jpeg(&img);
    let decoded = decode(&jpeg, &DecodeOptions::default()).unwrap();
    let luma = pdq::luma(&decoded);
    let buf64 = pdq::filter_decimate_luma(&luma, w, h);
    let dct = pdq::dct(&buf64);
    let opts = PdqOptions::default();
    assert_eq!(pdq::hash_image(&decoded, opts), reference::hash(&decoded));

    let mut g = c.benchmark_group("pdq_1024x768");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("decode_jpeg", |b| {
        b.iter(|| decode(black_box(&jpeg), &DecodeOptions::default()).unwrap())
    });
    g.bench_function("luma", |b| b.iter(|| pdq::luma(black_box(&decoded))));
    g.bench_function("filter_decimate", |b| {
        b.iter(|| pdq::filter_decimate_luma(black_box(&luma), w, h))
    });
    g.bench_function("quality", |b| b.iter(|| pdq::quality_of(black_box(&buf64))));
    g.bench_function("dct", |b| b.iter(|| pdq::dct(black_box(&buf64))));
    g.bench_function("bits", |b| b.iter(|| pdq::bits_of(black_box(&dct))));
    g.bench_function("hash_pixels", |b| {
        b.iter(|| pdq::hash_image(black_box(&decoded), opts))
    });
    g.bench_function("hash_pixels_reference_baseline", |b| {
        b.iter(|| reference::hash(black_box(&decoded)))
    });
    g.bench_function("hash_dihedrals", |b| {
        b.iter(|| pdq::hash_image_dihedrals(black_box(&decoded), opts))
    });
    g.bench_function("decode_and_hash_jpeg", |b| {
        b.iter(|| {
            let img = decode(black_box(&jpeg), &DecodeOptions::default()).unwrap();
            pdq::hash_image(&img, opts)
        })
    });
    g.finish();
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU time of the calling thread, in seconds. On a shared, loaded machine this is much less
/// disturbed than wall time (it excludes time the thread waits for a core).
fn thread_cpu_seconds() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Median thread-CPU time per call over `n` calls, in milliseconds.
fn cpu_ms<R>(n: usize, mut f: impl FnMut() -> R) -> f64 {
    for _ in 0..3 {
        black_box(f());
    }
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = thread_cpu_seconds();
            black_box(f());
            (thread_cpu_seconds() - s) * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

/// A second table, in thread CPU time (see [`thread_cpu_seconds`]).
fn cpu_time_table() {
    let img = photo_1024x768();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let jpeg = encode_jpeg(&img);
    let decoded = decode(&jpeg, &DecodeOptions::default()).unwrap();
    let luma = pdq::luma(&decoded);
    let buf64 = pdq::filter_decimate_luma(&luma, w, h);
    let opts = PdqOptions::default();
    let reference = cpu_ms(15, || reference::hash(&decoded));
    let fast = cpu_ms(101, || pdq::hash_image(&decoded, opts));
    println!("\nthread CPU time per call, 1024x768 (median):");
    println!(
        "  decode_jpeg            {:8.3} ms",
        cpu_ms(51, || decode(&jpeg, &DecodeOptions::default()).unwrap())
    );
    println!(
        "  luma                   {:8.3} ms",
        cpu_ms(101, || pdq::luma(&decoded))
    );
    println!(
        "  filter_decimate        {:8.3} ms",
        cpu_ms(101, || pdq::filter_decimate_luma(&luma, w, h))
    );
    println!(
        "  dct                    {:8.3} ms",
        cpu_ms(301, || pdq::dct(&buf64))
    );
    println!("  hash_pixels            {:8.3} ms", fast);
    println!(
        "  hash_pixels_reference  {:8.3} ms  (fast path is {:.1}x faster)",
        reference,
        reference / fast
    );
    println!(
        "  decode_and_hash_jpeg   {:8.3} ms",
        cpu_ms(51, || {
            let img = decode(&jpeg, &DecodeOptions::default()).unwrap();
            pdq::hash_image(&img, opts)
        })
    );
}

criterion_group!(pdq_benches, benches);

fn main() {
    pdq_benches();
    Criterion::default().configure_from_args().final_summary();
    cpu_time_table();
}
