//! Reproduces the upstream needles/haystack ground truth (`pdq-needles-haystack-d31.tsv`).

mod common;

use std::collections::BTreeSet;
use std::fs;

use omm_index::{code_from_hex, PdqIndex, PdqOp};

fn read_codes(path: &std::path::Path) -> Vec<[u64; 4]> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| code_from_hex(l.trim()).unwrap())
        .collect()
}

#[test]
fn needles_haystack_d31_exactly() {
    let dir = common::vectors_dir();
    let input = dir.join("threatexchange/pdq/data/reg-test-input");
    let needles = read_codes(&input.join("needles.txt"));
    let haystack = read_codes(&input.join("haystack.txt"));
    let expected: BTreeSet<(u64, u64, u32)> =
        fs::read_to_string(dir.join("pdq-needles-haystack-d31.tsv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
    assert_eq!(expected.len(), 250);
    for (tables, inline_codes) in common::LAYOUTS {
        let index = PdqIndex::with_config(common::config(tables, inline_codes)).unwrap();
        // Ids are 1-based haystack line numbers.
        let ops: Vec<PdqOp> = haystack
            .iter()
            .enumerate()
            .map(|(i, &c)| PdqOp::Insert(c, i as u64 + 1))
            .collect();
        index.apply(&ops);
        assert_eq!(index.len(), haystack.len());
        let mut got = BTreeSet::new();
        for (n, needle) in needles.iter().enumerate() {
            for hit in index.query(needle, 31) {
                got.insert((n as u64 + 1, hit.id, hit.distance));
            }
        }
        assert_eq!(got, expected, "tables = {tables}");
        // Distance 32 adds nothing (the upstream pairs are identical at <= 32).
        let at32: usize = needles.iter().map(|n| index.query(n, 32).len()).sum();
        assert_eq!(at32, 250);
    }
}
