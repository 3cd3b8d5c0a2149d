//! Shared helpers for the integration tests: locating the conformance vectors.
#![allow(dead_code)]

use std::path::PathBuf;

/// The vectors directory: `$OMM_VECTORS_DIR`, else `<workspace>/../shared/vectors`.
/// Panics (fails the test loudly) when it does not exist: CI always has it.
pub fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("OMM_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    };
    assert!(
        dir.join("pdq-expected.tsv").is_file(),
        "conformance vectors not found at {} (set OMM_VECTORS_DIR)",
        dir.display()
    );
    dir
}

/// A media file under `vectors/threatexchange/`.
pub fn media(rel: &str) -> PathBuf {
    vectors_dir().join("threatexchange").join(rel)
}

/// One row of `pdq-expected.tsv`.
#[derive(Debug, Clone)]
pub struct Row {
    pub path: String,
    pub hash: String,
    /// `None` when the source gives no quality (`NA`).
    pub quality: Option<u8>,
    pub source: String,
}

pub fn expected_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(vectors_dir().join("pdq-expected.tsv")).expect("read tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                path: f[0].to_string(),
                hash: f[1].to_string(),
                quality: f[2].parse().ok(),
                source: f[3].to_string(),
            }
        })
        .collect()
}

/// Every image file in the vectors (for decoder robustness tests).
pub fn all_image_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![vectors_dir().join("threatexchange")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(ext) = p.extension().and_then(|e| e.to_str()) {
                if matches!(
                    ext.to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "gif" | "webp" | "bmp" | "tif" | "tiff"
                ) {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}
