//! EXIF orientation: ignored by default (like every PDQ implementation), applied on request.

mod common;

use omm_signals::pdq::{self, Dihedral, PdqOptions};
use omm_signals::{decode, DecodeOptions};

/// Inserts an APP1 EXIF segment with the given orientation right after the SOI marker.
fn with_orientation(jpeg: &[u8], orientation: u8) -> Vec<u8> {
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF, IFD0 at offset 8
    payload.extend_from_slice(&[0, 1]); // one entry
    payload.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0]);
    payload.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    let len = (payload.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn orientation_is_ignored_by_default_and_applied_on_request() {
    let orig = std::fs::read(common::media(
        "pdq/data/reg-test-input/dih/bridge-1-original.jpg",
    ))
    .unwrap();
    let tagged = with_orientation(&orig, 6); // "rotate 90° clockwise to display"
    let plain = decode(&orig, &DecodeOptions::default()).unwrap();
    let ignored = decode(&tagged, &DecodeOptions::default()).unwrap();
    assert_eq!(ignored, plain, "orientation must be ignored by default");

    let applied = decode(
        &tagged,
        &DecodeOptions {
            apply_exif_orientation: true,
            ..DecodeOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        (applied.width(), applied.height()),
        (plain.height(), plain.width())
    );
    assert_eq!(applied, Dihedral::Rotate270.apply(&plain));

    let d = pdq::hash_image_dihedrals(&plain, PdqOptions::default());
    let h = pdq::hash_image(&applied, PdqOptions::default()).hash;
    assert!(h.distance(&d.get(Dihedral::Rotate270)) <= pdq::MATCH_THRESHOLD);
    // Orientation 1 changes nothing even when applied.
    let one = with_orientation(&orig, 1);
    let opts = DecodeOptions {
        apply_exif_orientation: true,
        ..DecodeOptions::default()
    };
    assert_eq!(decode(&one, &opts).unwrap(), plain);
}
