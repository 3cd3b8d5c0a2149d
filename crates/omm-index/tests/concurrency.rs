//! Readers query while one writer applies batches: entries the writer never touches are always
//! found exactly once, and the final state equals the oracle.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{Oracle, Rng};
use omm_index::{Hit, PdqIndex, PdqOp, SignalIndex};

#[test]
fn readers_see_stable_entries_while_writer_applies_batches() {
    let index = Arc::new(PdqIndex::new());
    let mut rng = Rng(11);
    // Stable entries: inserted first, never touched again.
    let stable: Vec<([u64; 4], u64)> = (0..2000).map(|i| (rng.code(), i)).collect();
    index.apply(
        &stable
            .iter()
            .map(|&(c, id)| PdqOp::Insert(c, id))
            .collect::<Vec<_>>(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let index = Arc::clone(&index);
        let stop = Arc::clone(&stop);
        let stable = stable.clone();
        readers.push(std::thread::spawn(move || {
            let mut rng = Rng(100 + r);
            let mut checked = 0u64;
            while !stop.load(Ordering::Relaxed) || checked < 200 {
                let (c, id) = stable[rng.below(stable.len() as u64) as usize];
                let q = {
                    let f = rng.below(25) as u32;
                    rng.flip(&c, f)
                };
                let d = omm_index::hamming(&q, &c);
                let mut raw: Vec<Hit> = Vec::new();
                index.query_into(&q, 31, &mut raw);
                let n = raw.iter().filter(|h| h.id == id && h.distance == d).count();
                assert_eq!(n, 1, "stable entry {id} seen {n} times");
                checked += 1;
            }
            checked
        }));
    }
    // Writer: churn entries with ids >= 1_000_000 near the stable ones (same buckets).
    let mut oracle = Oracle::default();
    for &(c, id) in &stable {
        oracle.pairs.insert((c, id));
    }
    let mut churn: Vec<([u64; 4], u64)> = Vec::new();
    for round in 0..60u64 {
        let mut ops = Vec::new();
        for i in 0..200u64 {
            let (base, _) = stable[rng.below(stable.len() as u64) as usize];
            let c = {
                let f = 1 + rng.below(10) as u32;
                rng.flip(&base, f)
            };
            let id = 1_000_000 + round * 1000 + i;
            ops.push(PdqOp::Insert(c, id));
            churn.push((c, id));
        }
        for _ in 0..150 {
            if churn.is_empty() {
                break;
            }
            let (c, id) = churn.swap_remove(rng.below(churn.len() as u64) as usize);
            ops.push(PdqOp::Remove(c, id));
        }
        index.apply(&ops);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 200);
    }
    for &(c, id) in &churn {
        oracle.pairs.insert((c, id));
    }
    assert_eq!(SignalIndex::len(&*index), oracle.pairs.len());
    let mut rng = Rng(5);
    for _ in 0..50 {
        let (c, _) = stable[rng.below(stable.len() as u64) as usize];
        let q = {
            let f = rng.below(30) as u32;
            rng.flip(&c, f)
        };
        assert_eq!(index.query(&q, 31), oracle.normalized(&q, 31));
    }
}

#[test]
fn trait_objects_work_for_every_kind() {
    let indexes: Vec<Box<dyn SignalIndex>> = vec![
        Box::new(PdqIndex::new()),
        Box::new(omm_index::ExactIndex::new(Some(16))),
    ];
    for (n, index) in indexes.iter().enumerate() {
        let key = vec![n as u8 + 1; if n == 0 { 32 } else { 16 }];
        assert!(index.insert(&key, 9).unwrap());
        assert_eq!(
            index.query(&key, 0).unwrap(),
            vec![Hit { distance: 0, id: 9 }]
        );
        assert!(index.insert(&[0u8; 5], 1).is_err());
        assert!(index.query(&[0u8; 5], 0).is_err());
        assert!(index.remove(&key, 9).unwrap());
        assert!(index.is_empty());
    }
}
