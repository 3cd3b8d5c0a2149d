//! Fuzz-style tests: random, truncated and corrupted bytes into every decoder path must give
//! an error or an image, never a panic.

mod common;

use omm_signals::decode::ImageFormat;
use omm_signals::{decode, ContentType, DecodeError, DecodeOptions, HashOptions, SignalType};
use proptest::prelude::*;

fn try_all(bytes: &[u8]) {
    let opts = DecodeOptions {
        max_pixels: 4_000_000,
        ..DecodeOptions::default()
    };
    let _ = decode(bytes, &opts);
    let _ = decode(
        bytes,
        &DecodeOptions {
            apply_exif_orientation: true,
            ..opts
        },
    );
}

#[test]
fn truncated_vectors_never_panic_and_jpeg_truncation_is_reported() {
    let files = common::all_image_files();
    assert!(
        files.len() >= 30,
        "expected the vector images, found {}",
        files.len()
    );
    let mut truncated_errors = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let n = bytes.len();
        let mut cuts: Vec<usize> = (0..48.min(n)).step_by(3).collect();
        cuts.extend((1..12).map(|i| n * i / 12));
        cuts.extend([n.saturating_sub(2), n.saturating_sub(1)]);
        for cut in cuts {
            let r = decode(&bytes[..cut], &DecodeOptions::default());
            if let Err(DecodeError::Truncated { .. }) = r {
                truncated_errors += 1;
            }
            if cut > n / 2 && cut < n - 2 && ImageFormat::sniff(&bytes) == Some(ImageFormat::Jpeg) {
                assert!(
                    r.is_err(),
                    "{} cut at {cut}/{n} decoded without error",
                    f.display()
                );
            }
        }
    }
    assert!(
        truncated_errors > 50,
        "only {truncated_errors} truncation errors"
    );
}

#[test]
fn corrupted_vectors_never_panic() {
    let mut state = 12345u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for f in common::all_image_files() {
        let bytes = std::fs::read(&f).unwrap();
        for _ in 0..3 {
            let mut b = bytes.clone();
            for _ in 0..1 + rnd() % 16 {
                let i = (rnd() as usize) % b.len();
                b[i] = rnd() as u8;
            }
            try_all(&b);
        }
    }
}

#[test]
fn oversized_images_are_rejected_from_the_header() {
    let f = common::media("pdq/data/reg-test-input/pen-and-coaster.png");
    let bytes = std::fs::read(f).unwrap();
    let opts = DecodeOptions {
        max_pixels: 1000,
        ..DecodeOptions::default()
    };
    assert!(matches!(
        decode(&bytes, &opts),
        Err(DecodeError::TooLarge {
            width: 924,
            height: 735,
            ..
        })
    ));
    let jpg = std::fs::read(common::media("pdq/data/bridge-mods/aaa-orig.jpg")).unwrap();
    assert!(matches!(
        decode(&jpg, &opts),
        Err(DecodeError::TooLarge { .. })
    ));
    // A JPEG header claiming 65535x65535 is refused before any allocation.
    let mut huge = jpg.clone();
    let sof = huge
        .windows(2)
        .position(|w| w == [0xFF, 0xC0] || w == [0xFF, 0xC2])
        .unwrap();
    huge[sof + 5..sof + 9].copy_from_slice(&[0xC3, 0x50, 0xC3, 0x50]);
    let r = decode(&huge, &DecodeOptions::default());
    assert!(matches!(r, Err(DecodeError::TooLarge { .. })), "{r:?}");
    let r = SignalType::Pdq.hash_bytes(ContentType::Photo, &huge, &HashOptions::default());
    assert!(r.is_err());
}

fn magic() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![0xFF, 0xD8, 0xFF]),
        Just(b"\x89PNG\r\n\x1a\n".to_vec()),
        Just(b"RIFF\0\0\0\0WEBP".to_vec()),
        Just(b"GIF89a".to_vec()),
        Just(b"BM".to_vec()),
        Just(b"II*\0".to_vec()),
        Just(b"MM\0*".to_vec()),
        Just(Vec::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(prefix in magic(), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut b = prefix;
        b.extend(body);
        try_all(&b);
        let _ = SignalType::Pdq.hash_bytes(ContentType::Photo, &b, &HashOptions::default());
    }
}
