//! Helpers shared by the integration tests: a small deterministic RNG, data generators, a
//! brute-force oracle and the index layouts under test.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use omm_index::{hamming, Code256, Hit, PdqIndexConfig, PdqOp};

/// Layouts under test, as (tables, inline codes): the two `PdqIndex::new` picks by size (16
/// tables with inline codes, 13 without), and the other extremes and shapes.
pub const LAYOUTS: [(usize, bool); 8] = [
    (16, true),
    (13, false),
    (16, false),
    (13, true),
    (14, false),
    (20, true),
    (24, false),
    (32, true),
];

/// The index configuration of a layout.
pub fn config(tables: usize, inline_codes: bool) -> PdqIndexConfig {
    PdqIndexConfig {
        tables,
        inline_codes,
    }
}

/// SplitMix64: deterministic, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn code(&mut self) -> Code256 {
        [
            self.next_u64(),
            self.next_u64(),
            self.next_u64(),
            self.next_u64(),
        ]
    }

    /// `code` with exactly `flips` distinct bits flipped.
    pub fn flip(&mut self, code: &Code256, flips: u32) -> Code256 {
        let mut out = *code;
        let mut done = 0;
        while done < flips {
            let bit = self.below(256) as usize;
            let candidate = out[bit / 64] ^ (1 << (bit % 64));
            let mut c = out;
            c[bit / 64] = candidate;
            if hamming(&c, code) == done + 1 {
                out = c;
                done += 1;
            }
        }
        out
    }
}

/// The set of stored (code, id) pairs, queried by brute force.
#[derive(Default)]
pub struct Oracle {
    pub pairs: BTreeSet<(Code256, u64)>,
}

impl Oracle {
    /// Applies a batch in order, like `PdqIndex::apply`.
    pub fn apply(&mut self, ops: &[PdqOp]) {
        for op in ops {
            match *op {
                PdqOp::Insert(c, id) => {
                    self.pairs.insert((c, id));
                }
                PdqOp::Remove(c, id) => {
                    self.pairs.remove(&(c, id));
                }
            }
        }
    }

    /// One hit per stored pair within `t`, sorted.
    pub fn raw(&self, q: &Code256, t: u32) -> Vec<Hit> {
        let mut v: Vec<Hit> = self
            .pairs
            .iter()
            .filter_map(|(c, id)| {
                let d = hamming(c, q);
                (d <= t).then_some(Hit {
                    distance: d,
                    id: *id,
                })
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Each id once with its smallest distance, sorted by (distance, id).
    pub fn normalized(&self, q: &Code256, t: u32) -> Vec<Hit> {
        let mut v = self.raw(q, t);
        v.sort_unstable_by_key(|h| (h.id, h.distance));
        v.dedup_by_key(|h| h.id);
        v.sort_unstable();
        v
    }
}

/// The shared test vectors directory (env `OMM_VECTORS_DIR`, else `<workspace>/../shared/vectors`).
pub fn vectors_dir() -> PathBuf {
    match std::env::var_os("OMM_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    }
}
