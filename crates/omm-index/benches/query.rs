//! Criterion benchmarks: radius-31 queries on 1M random and 1M clustered codes (the layout
//! `PdqIndex::new` picks for 1M: 16 × 16-bit tables with inline codes), each beside a brute-force
//! popcount scan over the same codes, plus a batch insert.
//! 10M-scale figures (memory, snapshot, FAISS) come from `examples/scale.rs`.
//!
//! ```sh
//! cargo bench -p omm-index --bench query
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use omm_index::{hamming, Code256, Hit, PdqIndex, PdqOp};

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn code(&mut self) -> Code256 {
        [
            self.next_u64(),
            self.next_u64(),
            self.next_u64(),
            self.next_u64(),
        ]
    }
    fn flip(&mut self, code: &Code256, flips: u32) -> Code256 {
        let mut out = *code;
        let mut done = 0;
        while done < flips {
            let bit = (self.next_u64() % 256) as usize;
            let mask = 1u64 << (bit % 64);
            if (out[bit / 64] ^ code[bit / 64]) & mask == 0 {
                out[bit / 64] ^= mask;
                done += 1;
            }
        }
        out
    }
}

fn data(rng: &mut Rng, n: usize, clustered: bool) -> Vec<Code256> {
    if !clustered {
        return (0..n).map(|_| rng.code()).collect();
    }
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let base = rng.code();
        v.push(base);
        for _ in 0..10 {
            let f = 1 + (rng.next_u64() % 20) as u32;
            v.push(rng.flip(&base, f));
        }
    }
    v.truncate(n);
    v
}

/// Plain popcount scan, compiled with the `popcnt` instruction like the index's query path.
fn brute(codes: &[Code256], q: &Code256, t: u32, out: &mut Vec<Hit>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: popcnt support was checked just above.
            return unsafe { brute_popcnt(codes, q, t, out) };
        }
    }
    brute_generic(codes, q, t, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn brute_popcnt(codes: &[Code256], q: &Code256, t: u32, out: &mut Vec<Hit>) {
    brute_generic(codes, q, t, out)
}

#[inline(always)]
fn brute_generic(codes: &[Code256], q: &Code256, t: u32, out: &mut Vec<Hit>) {
    for (i, c) in codes.iter().enumerate() {
        let d = hamming(c, q);
        if d <= t {
            out.push(Hit {
                distance: d,
                id: i as u64,
            });
        }
    }
}

fn bench_queries(c: &mut Criterion) {
    for (name, clustered) in [("random", false), ("clustered", true)] {
        let mut rng = Rng(1);
        let codes = data(&mut rng, 1_000_000, clustered);
        let index = PdqIndex::new();
        let ops: Vec<PdqOp> = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| PdqOp::Insert(c, i as u64))
            .collect();
        index.apply(&ops);
        let queries: Vec<Code256> = (0..1024)
            .map(|i| {
                if i % 2 == 0 {
                    let c = codes[(rng.next_u64() % codes.len() as u64) as usize];
                    let f = (rng.next_u64() % 41) as u32;
                    rng.flip(&c, f)
                } else {
                    rng.code()
                }
            })
            .collect();
        let mut group = c.benchmark_group(format!("query_r31_1M_{name}"));
        let mut i = 0;
        let mut out = Vec::new();
        group.bench_function("index", |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                out.clear();
                index.query_into(black_box(&queries[i]), 31, &mut out);
                black_box(out.len())
            })
        });
        group.sample_size(20);
        group.bench_function("brute_force", |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                out.clear();
                brute(&codes, black_box(&queries[i]), 31, &mut out);
                black_box(out.len())
            })
        });
        group.finish();
    }
}

fn bench_insert(c: &mut Criterion) {
    let mut rng = Rng(2);
    let codes = data(&mut rng, 200_000, false);
    let ops: Vec<PdqOp> = codes
        .iter()
        .enumerate()
        .map(|(i, &c)| PdqOp::Insert(c, i as u64))
        .collect();
    let mut group = c.benchmark_group("batch_insert");
    group.sample_size(10);
    group.bench_function("200k_into_empty", |b| {
        b.iter_batched(
            PdqIndex::new,
            |index| index.apply(&ops),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_queries, bench_insert);
criterion_main!(benches);
