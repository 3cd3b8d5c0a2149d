//! Property tests: the PDQ index against a brute-force oracle, on random and clustered data,
//! across layouts and thresholds, including interleaved inserts and removes.

mod common;

use common::{config, Oracle, Rng, LAYOUTS};
use omm_index::{Code256, Hit, PdqIndex, PdqIndexConfig, PdqOp};
use proptest::prelude::*;

/// Every threshold up to 33 (each gives other per-table probe radii in every layout), then
/// some that take the exhaustive path.
const THRESHOLDS: [u32; 38] = {
    let mut t = [0u32; 38];
    let mut i = 0;
    while i < 34 {
        t[i] = i as u32;
        i += 1;
    }
    t[34] = 47;
    t[35] = 63;
    t[36] = 90;
    t[37] = 256;
    t
};

fn check_queries(
    index: &PdqIndex,
    oracle: &Oracle,
    queries: &[Code256],
) -> Result<(), TestCaseError> {
    for q in queries {
        // Every stored pair by (distance, id) once; each threshold's answer is a prefix.
        let all = oracle.raw(q, 256);
        for &t in &THRESHOLDS {
            let want = &all[..all.partition_point(|h| h.distance <= t)];
            let mut raw: Vec<Hit> = Vec::new();
            index.query_into(q, t, &mut raw);
            raw.sort_unstable();
            prop_assert_eq!(&raw[..], want, "raw hits, threshold {}", t);
            let mut normalized = want.to_vec();
            normalized.sort_unstable_by_key(|h| (h.id, h.distance));
            normalized.dedup_by_key(|h| h.id);
            normalized.sort_unstable();
            prop_assert_eq!(index.query(q, t), normalized, "normalized, threshold {}", t);
        }
    }
    prop_assert_eq!(index.len(), oracle.pairs.len());
    Ok(())
}

/// Builds clustered data: `bases` random codes, each with variants at distance 1..=max_flip.
fn clustered(rng: &mut Rng, bases: usize, variants: usize, max_flip: u32) -> Vec<Code256> {
    let mut out = Vec::new();
    for _ in 0..bases {
        let base = rng.code();
        out.push(base);
        for _ in 0..variants {
            let f = 1 + rng.below(u64::from(max_flip)) as u32;
            out.push(rng.flip(&base, f));
        }
    }
    out
}

fn queries_near(rng: &mut Rng, codes: &[Code256], n: usize) -> Vec<Code256> {
    let mut qs = vec![rng.code()];
    for _ in 0..n {
        if codes.is_empty() {
            break;
        }
        let c = codes[rng.below(codes.len() as u64) as usize];
        let f = rng.below(40) as u32;
        qs.push(rng.flip(&c, f));
    }
    qs
}

fn layout(choice: u8) -> PdqIndexConfig {
    let (tables, inline) = LAYOUTS[choice as usize % LAYOUTS.len()];
    config(tables, inline)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Interleaved batches of inserts and removes (including repeats, removes of missing pairs
    /// and shared codes/ids), checked against the oracle after every batch.
    #[test]
    fn interleaved_batches_match_oracle(
        seed in any::<u64>(),
        layout_choice in 0u8..8,
        bases in 1usize..12,
        variants in 0usize..12,
        max_flip in 1u32..40,
        batches in 1usize..6,
    ) {
        let mut rng = Rng(seed);
        let index = PdqIndex::with_config(layout(layout_choice)).unwrap();
        let mut oracle = Oracle::default();
        let mut pool = clustered(&mut rng, bases, variants, max_flip);
        // Some random codes too.
        for _ in 0..bases {
            pool.push(rng.code());
        }
        for _ in 0..batches {
            let mut ops = Vec::new();
            let n_ops = 1 + rng.below(3 * pool.len() as u64) as usize;
            for _ in 0..n_ops {
                let code = pool[rng.below(pool.len() as u64) as usize];
                let id = rng.below(8); // few ids: ids shared across codes and codes across ids
                let op = if rng.below(3) == 0 { PdqOp::Remove(code, id) } else { PdqOp::Insert(code, id) };
                ops.push(op);
            }
            let stats = index.apply(&ops);
            let before = oracle.pairs.len();
            oracle.apply(&ops);
            prop_assert_eq!(before + stats.inserted - stats.removed, oracle.pairs.len());
            prop_assert_eq!(stats.inserted + stats.removed + stats.unchanged, ops.len());
            let qs = queries_near(&mut rng, &pool, 6);
            check_queries(&index, &oracle, &qs)?;
        }
    }

    /// Single inserts and removes, one at a time.
    #[test]
    fn single_ops_match_oracle(seed in any::<u64>(), layout_choice in 0u8..8, n in 1usize..60) {
        let mut rng = Rng(seed);
        let index = PdqIndex::with_config(layout(layout_choice)).unwrap();
        let mut oracle = Oracle::default();
        let pool = clustered(&mut rng, 3, n / 3, 25);
        let mut stored: Vec<(Code256, u64)> = Vec::new();
        for i in 0..n {
            if !stored.is_empty() && rng.below(4) == 0 {
                let (c, id) = stored.swap_remove(rng.below(stored.len() as u64) as usize);
                prop_assert!(index.remove(c, id));
                prop_assert!(!index.remove(c, id));
                oracle.pairs.remove(&(c, id));
            } else {
                let c = pool[i % pool.len()];
                let id = i as u64;
                prop_assert!(index.insert(c, id));
                prop_assert!(!index.insert(c, id));
                stored.push((c, id));
                oracle.pairs.insert((c, id));
            }
        }
        let qs = queries_near(&mut rng, &pool, 5);
        check_queries(&index, &oracle, &qs)?;
    }
}

/// A larger clustered set, built in one batch then thinned out, so that buckets are deep and
/// both the in-place and the rebuild paths run.
#[test]
fn deep_clusters_match_oracle() {
    let mut rng = Rng(42);
    for (tables, inline) in [
        (16, true),
        (16, false),
        (13, false),
        (13, true),
        (20, false),
    ] {
        let index = PdqIndex::with_config(config(tables, inline)).unwrap();
        let mut oracle = Oracle::default();
        let pool = clustered(&mut rng, 40, 60, 20);
        let ops: Vec<PdqOp> = pool
            .iter()
            .enumerate()
            .map(|(i, &c)| PdqOp::Insert(c, i as u64 % 500))
            .collect();
        index.apply(&ops);
        for (i, &c) in pool.iter().enumerate() {
            oracle.pairs.insert((c, i as u64 % 500));
        }
        let qs = queries_near(&mut rng, &pool, 20);
        check_queries(&index, &oracle, &qs).unwrap();
        // Remove every third pair in small batches, add new near-duplicates in between.
        let pairs: Vec<(Code256, u64)> = oracle.pairs.iter().copied().collect();
        for (n, chunk) in pairs.chunks(97).enumerate() {
            let mut batch = Vec::new();
            for (i, &(c, id)) in chunk.iter().enumerate() {
                if i % 3 == 0 {
                    batch.push(PdqOp::Remove(c, id));
                    oracle.pairs.remove(&(c, id));
                }
            }
            for _ in 0..20 {
                let base = pool[rng.below(pool.len() as u64) as usize];
                let c = rng.flip(&base, 3);
                let id = 1000 + n as u64;
                batch.push(PdqOp::Insert(c, id));
                oracle.pairs.insert((c, id));
            }
            index.apply(&batch);
        }
        let qs = queries_near(&mut rng, &pool, 20);
        check_queries(&index, &oracle, &qs).unwrap();
    }
}

/// Batches large enough to take the bulk paths: several sub-batches in one call, chunked slot
/// writes, direct table rebuilds with many removes; ops on one pair span sub-batch boundaries.
#[test]
fn large_batches_match_oracle() {
    large_batches(PdqIndex::new());
}

/// The same in the wide layout [`PdqIndex::new`] picks for large indexes.
#[test]
fn large_batches_match_oracle_wide_layout() {
    large_batches(PdqIndex::with_config(config(13, false)).unwrap());
}

/// The same in the default layout without inline codes.
#[test]
fn large_batches_match_oracle_without_inline_codes() {
    large_batches(PdqIndex::with_config(config(16, false)).unwrap());
}

fn large_batches(index: PdqIndex) {
    let mut rng = Rng(99);
    let mut oracle = Oracle::default();
    let pool = clustered(&mut rng, 22_000, 10, 20);
    let mut ops: Vec<PdqOp> = pool
        .iter()
        .enumerate()
        .map(|(i, &c)| PdqOp::Insert(c, i as u64))
        .collect();
    // Re-inserts, and removes of pairs inserted earlier in the same call (other sub-batch).
    for i in (0..pool.len()).step_by(7) {
        ops.push(PdqOp::Insert(pool[i], i as u64));
        ops.push(PdqOp::Remove(
            pool[(i * 3) % pool.len()],
            ((i * 3) % pool.len()) as u64,
        ));
    }
    assert!(ops.len() > 1 << 18);
    oracle.apply(&ops);
    index.apply(&ops);
    let qs = queries_near(&mut rng, &pool, 15);
    check_queries(&index, &oracle, &qs).unwrap();
    // Remove 80k pairs in one batch.
    let gone: Vec<(Code256, u64)> = oracle
        .pairs
        .iter()
        .step_by(2)
        .copied()
        .take(80_000)
        .collect();
    let stats = index.apply(
        &gone
            .iter()
            .map(|&(c, id)| PdqOp::Remove(c, id))
            .collect::<Vec<_>>(),
    );
    assert_eq!(stats.removed, gone.len());
    for p in &gone {
        oracle.pairs.remove(p);
    }
    check_queries(&index, &oracle, &qs).unwrap();
}

/// Large batches of inserts into an empty index take the bulk-load path (fresh storage, full
/// table builds) when their pairs are distinct, and fall back to the general path when a pair
/// repeats; both must agree with the oracle, in both automatic layouts. Codes shared by several
/// ids are allowed on the bulk path.
#[test]
fn bulk_loads_match_oracle() {
    for (tables, inline, repeat) in [
        (16, true, false),
        (16, true, true),
        (13, false, false),
        (13, false, true),
    ] {
        let mut rng = Rng(7 + tables as u64);
        let index = PdqIndex::with_config(config(tables, inline)).unwrap();
        let pool = clustered(&mut rng, 7_000, 10, 20);
        let mut ops: Vec<PdqOp> = pool
            .iter()
            .enumerate()
            .map(|(i, &c)| PdqOp::Insert(c, i as u64 % 60_000))
            .collect();
        // The same code under another id (distinct pairs).
        ops.push(PdqOp::Insert(pool[5], 999_999));
        if repeat {
            ops.push(PdqOp::Insert(pool[3], 3));
        }
        let mut oracle = Oracle::default();
        oracle.apply(&ops);
        let stats = index.apply(&ops);
        assert_eq!(stats.inserted, oracle.pairs.len());
        assert_eq!(stats.unchanged, usize::from(repeat));
        assert_eq!(index.config(), config(tables, inline));
        let qs = queries_near(&mut rng, &pool, 12);
        check_queries(&index, &oracle, &qs).unwrap();
        // Incremental changes on top of a bulk-loaded index.
        let mut batch = Vec::new();
        for i in (0..pool.len()).step_by(11) {
            batch.push(PdqOp::Remove(pool[i], i as u64 % 60_000));
            oracle.pairs.remove(&(pool[i], i as u64 % 60_000));
            let c = rng.flip(&pool[i], 2);
            batch.push(PdqOp::Insert(c, 70_000 + i as u64));
            oracle.pairs.insert((c, 70_000 + i as u64));
        }
        index.apply(&batch[..200]);
        index.apply(&batch[200..]);
        check_queries(&index, &oracle, &qs).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A bulk load (a matcher's first load) in several batches, with pairs repeated across and
    /// within batches and an optional remove part-way (which ends the bulk load early): queries
    /// during the load (exhaustive scan) and after it (tables) agree with the oracle, and the
    /// index then takes ordinary changes.
    #[test]
    fn bulk_load_mode_matches_oracle(
        seed in any::<u64>(),
        layout_choice in 0u8..9,
        bases in 1usize..40,
        batches in 1usize..5,
        remove_at in proptest::option::of(0usize..5),
    ) {
        let mut rng = Rng(seed);
        let index = if layout_choice == 8 {
            PdqIndex::new()
        } else {
            PdqIndex::with_config(layout(layout_choice)).unwrap()
        };
        prop_assert!(index.begin_bulk_load());
        let pool = clustered(&mut rng, bases, 8, 25);
        let mut oracle = Oracle::default();
        for b in 0..batches {
            let mut ops = Vec::new();
            for _ in 0..1 + rng.below(2 * pool.len() as u64) {
                let code = pool[rng.below(pool.len() as u64) as usize];
                ops.push(PdqOp::Insert(code, rng.below(16)));
            }
            if remove_at == Some(b) {
                let (c, id) = match ops[0] { PdqOp::Insert(c, id) | PdqOp::Remove(c, id) => (c, id) };
                ops.push(PdqOp::Remove(c, id));
            }
            index.apply(&ops);
            oracle.apply(&ops);
            let qs = queries_near(&mut rng, &pool, 3);
            for q in &qs {
                prop_assert_eq!(index.query(q, 31), oracle.normalized(q, 31));
            }
        }
        index.finish_bulk_load();
        let qs = queries_near(&mut rng, &pool, 6);
        check_queries(&index, &oracle, &qs)?;
        // Ordinary changes after the load.
        let mut ops = Vec::new();
        for i in (0..pool.len()).step_by(3) {
            ops.push(PdqOp::Remove(pool[i], i as u64 % 16));
            oracle.pairs.remove(&(pool[i], i as u64 % 16));
            ops.push(PdqOp::Insert(pool[i], 100 + i as u64));
            oracle.pairs.insert((pool[i], 100 + i as u64));
        }
        index.apply(&ops);
        check_queries(&index, &oracle, &qs)?;
        // A bulk load needs an empty index.
        prop_assert_eq!(index.begin_bulk_load(), oracle.pairs.is_empty());
    }
}
