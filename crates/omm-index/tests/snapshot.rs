//! Snapshot round trips and corruption detection for both index kinds.

mod common;

use std::fs;

use common::Rng;
use omm_index::snapshot::{read_header, SnapshotKind};
use omm_index::{ExactIndex, PdqIndex, PdqIndexConfig, PdqOp, SignalIndex, SnapshotError};

fn sample_pdq(n: usize) -> (PdqIndex, Vec<([u64; 4], u64)>) {
    let mut rng = Rng(7);
    let index = PdqIndex::new();
    let mut pairs = Vec::new();
    for i in 0..n {
        let c = if i % 3 == 0 || pairs.is_empty() {
            rng.code()
        } else {
            let (base, _) = pairs[rng.below(pairs.len() as u64) as usize];
            {
                let f = 1 + rng.below(20) as u32;
                rng.flip(&base, f)
            }
        };
        pairs.push((c, i as u64 / 2));
    }
    let ops: Vec<PdqOp> = pairs.iter().map(|&(c, id)| PdqOp::Insert(c, id)).collect();
    index.apply(&ops);
    // Remove some so that the slab has holes.
    let rm: Vec<PdqOp> = pairs
        .iter()
        .step_by(5)
        .map(|&(c, id)| PdqOp::Remove(c, id))
        .collect();
    index.apply(&rm);
    let kept = pairs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, p)| *p)
        .collect();
    (index, kept)
}

#[test]
fn pdq_round_trip_keeps_entries_and_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pdq.snap");
    let (index, kept) = sample_pdq(3000);
    index.write_snapshot(&path, 123_456).unwrap();
    let header = read_header(&path, SnapshotKind::Pdq).unwrap();
    assert_eq!(header.watermark, 123_456);
    assert_eq!(header.entry_count, kept.len() as u64);
    // Load into other layouts too: the format does not depend on the layout.
    for (tables, inline_codes) in common::LAYOUTS {
        let (loaded, wm) =
            PdqIndex::from_snapshot(&path, common::config(tables, inline_codes)).unwrap();
        assert_eq!(wm, 123_456);
        assert_eq!(loaded.len(), kept.len());
        for (c, _) in kept.iter().step_by(97) {
            assert_eq!(loaded.query(c, 31), index.query(c, 31));
        }
        // The loaded index stays writable.
        let (c, id) = kept[0];
        assert!(loaded.remove(c, id));
        assert!(loaded.insert(c, id));
        assert!(!loaded.insert(c, id));
    }
    // No temporary file is left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn pdq_empty_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.snap");
    PdqIndex::new().write_snapshot(&path, 0).unwrap();
    let (loaded, wm) = PdqIndex::from_snapshot(&path, PdqIndexConfig::default()).unwrap();
    assert_eq!((loaded.len(), wm), (0, 0));
}

fn assert_rejected(index: &dyn SignalIndex, path: &std::path::Path, what: &str) -> SnapshotError {
    let before = index.len();
    match index.load_snapshot(path) {
        Ok(_) => panic!("{what}: corrupt snapshot accepted"),
        Err(e) => {
            assert_eq!(index.len(), before, "{what}: failed load changed the index");
            e
        }
    }
}

fn corruptions(index: &dyn SignalIndex, good: &std::path::Path, dir: &std::path::Path) {
    let bytes = fs::read(good).unwrap();
    let bad = dir.join("bad.snap");
    // Flip one bit in many positions: magic, version, header fields, payload start/middle/end.
    let len = bytes.len();
    let mut positions = vec![0, 5, 8, 12, 16, 24, 30, 40, 48, 60, 63];
    positions.extend(
        [64, 65, len / 2, len - 9, len - 1]
            .into_iter()
            .filter(|&p| p >= 64 && p < len),
    );
    for pos in positions {
        let mut b = bytes.clone();
        b[pos] ^= 0x10;
        fs::write(&bad, &b).unwrap();
        let err = assert_rejected(index, &bad, &format!("flip at {pos}"));
        if pos == 8 {
            assert!(
                matches!(err, SnapshotError::UnsupportedVersion { .. }),
                "{err}"
            );
        }
        if pos < 8 {
            assert!(matches!(err, SnapshotError::NotASnapshot), "{err}");
        }
        if pos >= 64 {
            assert!(
                matches!(
                    err,
                    SnapshotError::ChecksumMismatch(_) | SnapshotError::Corrupt(_)
                ),
                "{err}"
            );
        }
    }
    // Truncations (inside the header, at the header, inside the payload) and padding.
    for cut in [0, 10, 63, 64, len / 2, len - 1] {
        fs::write(&bad, &bytes[..cut]).unwrap();
        let err = assert_rejected(index, &bad, &format!("truncated to {cut}"));
        assert!(
            matches!(err, SnapshotError::Truncated { .. }),
            "cut {cut}: {err}"
        );
    }
    let mut padded = bytes.clone();
    padded.push(0);
    fs::write(&bad, &padded).unwrap();
    assert_rejected(index, &bad, "padded");
    // Missing file.
    let err = assert_rejected(index, &dir.join("missing.snap"), "missing");
    assert!(matches!(err, SnapshotError::Io(_)));
    // The good file still loads.
    index.load_snapshot(good).unwrap();
}

#[test]
fn pdq_corruption_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.snap");
    let (index, _) = sample_pdq(200);
    index.write_snapshot(&good, 9).unwrap();
    let target = PdqIndex::new();
    target.insert([1, 2, 3, 4], 5);
    corruptions(&target, &good, dir.path());
    assert_eq!(target.len(), index.len());
}

#[test]
fn wrong_kind_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let pdq_path = dir.path().join("pdq.snap");
    let exact_path = dir.path().join("exact.snap");
    PdqIndex::new().write_snapshot(&pdq_path, 1).unwrap();
    ExactIndex::new(Some(16))
        .write_snapshot(&exact_path, 1)
        .unwrap();
    let err = ExactIndex::new(Some(16))
        .load_snapshot(&pdq_path)
        .unwrap_err();
    assert!(matches!(err, SnapshotError::WrongKind { .. }), "{err}");
    let err = PdqIndex::new().load_snapshot(&exact_path).unwrap_err();
    assert!(matches!(err, SnapshotError::WrongKind { .. }), "{err}");
    // An exact snapshot of another key length is refused too.
    let err = ExactIndex::new(Some(32))
        .load_snapshot(&exact_path)
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Corrupt(_)), "{err}");
}

#[test]
fn exact_round_trip_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("md5.snap");
    let index = ExactIndex::new(Some(16));
    let mut rng = Rng(3);
    let mut keys = Vec::new();
    for i in 0..500u64 {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        k[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        index.insert(&k, i).unwrap();
        index.insert(&k, i + 10_000).unwrap();
        keys.push(k);
    }
    index.write_snapshot(&good, 77).unwrap();
    let loaded = ExactIndex::new(Some(16));
    assert_eq!(loaded.load_snapshot(&good).unwrap(), 77);
    assert_eq!(loaded.len(), 1000);
    for k in &keys {
        assert_eq!(loaded.query(k, 0).unwrap(), index.query(k, 0).unwrap());
    }
    let target = ExactIndex::new(Some(16));
    corruptions(&target, &good, dir.path());
    assert_eq!(target.len(), 1000);
}
