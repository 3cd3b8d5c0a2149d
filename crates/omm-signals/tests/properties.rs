//! Property tests: hex and word round-trips, the distance is a metric, the fast pipeline is
//! bit-identical to the literal reference port, dihedral algebra.

#![allow(clippy::needless_range_loop)]

mod common;

use omm_signals::pdq::{self, reference, Dihedral, PdqHash, PdqOptions};
use omm_signals::{decode, DecodeOptions, Image, Pixels, SignalType};
use proptest::prelude::*;

fn any_hash() -> impl Strategy<Value = PdqHash> {
    any::<[u8; 32]>().prop_map(PdqHash)
}

/// Random images: mostly small/odd sizes (edge cases of the filter phases), grey or RGB,
/// smooth or noisy.
fn any_image() -> impl Strategy<Value = Image> {
    (
        1u32..260,
        1u32..260,
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(w, h, grey, smooth, seed)| {
            let mut state = seed | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let c = if grey { 1 } else { 3 };
            let mut px = vec![0u8; (w * h) as usize * c];
            for (i, v) in px.iter_mut().enumerate() {
                *v = if smooth {
                    let p = i / c;
                    let (x, y) = ((p as u32 % w) as u64, (p as u32 / w) as u64);
                    ((x * 7 + y * 3 + (next() % 9)) % 256) as u8
                } else {
                    next() as u8
                };
            }
            let pixels = if grey {
                Pixels::Gray8(px)
            } else {
                Pixels::Rgb8(px)
            };
            Image::new(w, h, pixels).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hex_round_trips(h in any_hash()) {
        let hex = h.to_hex();
        prop_assert_eq!(hex.len(), 64);
        prop_assert_eq!(PdqHash::from_hex(&hex).unwrap(), h);
        prop_assert_eq!(PdqHash::from_hex(&hex.to_uppercase()).unwrap(), h);
        prop_assert_eq!(SignalType::Pdq.validate(&hex.to_uppercase()).unwrap(), hex);
        prop_assert_eq!(PdqHash::from_words(h.to_words()), h);
        // Word 0 is the first 16 hex characters read as a big-endian integer.
        prop_assert_eq!(h.to_words()[0], u64::from_str_radix(&h.to_hex()[..16], 16).unwrap());
    }

    #[test]
    fn distance_is_a_metric(a in any_hash(), b in any_hash(), c in any_hash()) {
        prop_assert_eq!(a.distance(&a), 0);
        prop_assert_eq!(a.distance(&b), b.distance(&a));
        prop_assert!(a.distance(&c) <= a.distance(&b) + b.distance(&c));
        prop_assert_eq!(a.distance(&b) == 0, a == b);
        let naive = (0..256).filter(|&k| a.bit(k) != b.bit(k)).count() as u32;
        prop_assert_eq!(a.distance(&b), naive);
        prop_assert_eq!(SignalType::Pdq.distance(&a.to_hex(), &b.to_hex()).unwrap(), naive);
    }

    #[test]
    fn fast_pipeline_is_bit_identical_to_reference(img in any_image()) {
        let fast = pdq::stages(&img, PdqOptions::default());
        let slow = reference::stages(&img);
        for k in 0..4096 {
            prop_assert_eq!(fast.buffer64[k].to_bits(), slow.buffer64[k].to_bits(), "buffer64[{}]", k);
        }
        for k in 0..256 {
            prop_assert_eq!(fast.dct[k].to_bits(), slow.dct[k].to_bits(), "dct[{}]", k);
        }
        prop_assert_eq!(fast.quality, slow.quality);
        prop_assert_eq!(pdq::hash_image(&img, PdqOptions::default()), reference::hash(&img));
    }

    #[test]
    fn dihedral_variants_compose_like_the_group(img in any_image()) {
        use Dihedral::*;
        let opts = PdqOptions::default();
        let d = pdq::hash_image_dihedrals(&img, opts);
        let st = pdq::stages(&img, opts);
        prop_assert_eq!(d.get(Original), pdq::hash_image(&img, opts).hash);
        prop_assert_eq!(d.quality, st.quality);
        let t = |b: &[f32; 256], v: Dihedral| pdq::transform_dct(b, v);
        let b = st.dct;
        for v in Dihedral::ALL {
            if img.width() >= 5 && img.height() >= 5 {
                prop_assert_eq!(d.get(v), pdq::bits_of(&t(&b, v)));
            }
        }
        prop_assert_eq!(t(&t(&b, Rotate90), Rotate90), t(&b, Rotate180));
        prop_assert_eq!(t(&t(&b, Rotate90), Rotate270), b);
        prop_assert_eq!(t(&t(&b, FlipX), FlipX), b);
        prop_assert_eq!(t(&t(&b, FlipY), FlipX), t(&b, Rotate180));
        prop_assert_eq!(t(&t(&b, FlipPlus1), FlipPlus1), b);
        prop_assert_eq!(t(&t(&b, FlipX), Rotate90), t(&b, FlipMinus1));
        for i in 0..16 {
            for j in 0..16 {
                prop_assert_eq!(t(&b, FlipPlus1)[j * 16 + i], b[i * 16 + j]);
            }
        }
    }
}

/// The spec measured the pixel-domain transpose of `LA.png` to hash exactly like the
/// DCT-domain FLIPPLUS1 variant; the other pixel transforms move the sampling grid.
#[test]
fn transposed_pixels_hash_like_flipplus1() {
    let bytes = std::fs::read(common::media(
        "python-threatexchange/threatexchange/tests/hashing/resources/LA.png",
    ))
    .unwrap();
    let img = decode(&bytes, &DecodeOptions::default()).unwrap();
    let d = pdq::hash_image_dihedrals(&img, PdqOptions::default());
    let t = pdq::hash_image(&Dihedral::FlipPlus1.apply(&img), PdqOptions::default());
    assert_eq!(t.hash, d.get(Dihedral::FlipPlus1));
}

/// The upstream rotated/flipped copies of the bridge photo match the DCT-domain variants of
/// the original within the PDQ match threshold.
#[test]
fn rotated_files_match_dct_variants() {
    let load = |name: &str| {
        let bytes = std::fs::read(common::media(&format!(
            "pdq/data/reg-test-input/dih/{name}"
        )))
        .unwrap();
        pdq::hash_image(
            &decode(&bytes, &DecodeOptions::default()).unwrap(),
            PdqOptions::default(),
        )
        .hash
    };
    let orig = std::fs::read(common::media(
        "pdq/data/reg-test-input/dih/bridge-1-original.jpg",
    ))
    .unwrap();
    let d = pdq::hash_image_dihedrals(
        &decode(&orig, &DecodeOptions::default()).unwrap(),
        PdqOptions::default(),
    );
    for (file, variant) in [
        ("bridge-2-rotate-90.jpg", Dihedral::Rotate90),
        ("bridge-3-rotate-180.jpg", Dihedral::Rotate180),
        ("bridge-4-rotate-270.jpg", Dihedral::Rotate270),
        ("bridge-5-flipx.jpg", Dihedral::FlipX),
        ("bridge-6-flipy.jpg", Dihedral::FlipY),
        ("bridge-7-flip-plus-1.jpg", Dihedral::FlipPlus1),
        ("bridge-8-flip-minus-1.jpg", Dihedral::FlipMinus1),
    ] {
        let dist = load(file).distance(&d.get(variant));
        assert!(
            dist <= pdq::MATCH_THRESHOLD,
            "{file}: {dist} bits from {variant}"
        );
    }
}

/// Larger windows (up to 16) than the proptest sizes reach.
#[test]
fn fast_pipeline_matches_reference_on_large_images() {
    for (i, &(w, h)) in [(1024u32, 768u32), (1500, 300), (129, 2049), (777, 1001)]
        .iter()
        .enumerate()
    {
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
        let px: Vec<u8> = (0..w * h * 3)
            .map(|k| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((k / 3 % w) as u64 / 4 + (state % 64)) as u8
            })
            .collect();
        let img = Image::new(w, h, Pixels::Rgb8(px)).unwrap();
        let fast = pdq::stages(&img, PdqOptions::default());
        let slow = reference::stages(&img);
        assert!(
            fast.buffer64
                .iter()
                .zip(&slow.buffer64)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{w}x{h}"
        );
        assert_eq!(fast.quality, slow.quality);
        assert_eq!(
            pdq::hash_image(&img, PdqOptions::default()),
            reference::hash(&img)
        );
    }
}
