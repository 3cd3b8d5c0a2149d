//! Large-scale benchmark of `PdqIndex` (run manually, release mode):
//!
//! ```sh
//! cargo run --release -p omm-index --example scale -- --n 10000000 --queries 2000 --data random
//! # --tables N [--inline yes|no] forces a layout (default: the one PdqIndex::new picks for the
//! # size; --inline defaults to yes)
//! ```
//!
//! Generates (seeded) N codes and a query set, writes them to `--dir` (default
//! `/tmp/omm-index-bench`) as raw 32-byte codes (`data-<data>-<n>.bin`, `queries-<data>-<n>.bin`)
//! so that `bench/faiss_compare.py` measures FAISS on the same data, then measures: batch
//! insert rate, resident memory, per-query latency at the given radius (median, p99), a
//! brute-force popcount scan on a subset of the same queries (and checks both return the same
//! hits), snapshot write and load time. Hit counts per query go to `hits-<data>-<n>.txt`.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use omm_index::{hamming, Code256, Hit, PdqIndex, PdqIndexConfig, PdqOp};

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
    /// `code` with exactly `flips` distinct bits flipped.
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

fn rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
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

fn write_codes(path: &PathBuf, codes: &[Code256]) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).expect("create data file"));
    for c in codes {
        for w in c {
            f.write_all(&w.to_be_bytes()).expect("write data file");
        }
    }
}

fn main() {
    let mut n: usize = 1_000_000;
    let mut queries: usize = 2000;
    let mut data = "random".to_string();
    let mut dir = PathBuf::from("/tmp/omm-index-bench");
    let mut radius: u32 = 31;
    let mut tables: Option<usize> = None; // None: the size-dependent default layout
    let mut inline_codes = true;
    let mut brute_queries: usize = 50;
    let mut snapshot = true;
    // Accept both `--key value` and `--key=value`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .flat_map(|a| match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => vec![k.to_string(), v.to_string()],
            _ => vec![a],
        })
        .collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--n" => n = v.parse().expect("--n"),
            "--queries" => queries = v.parse().expect("--queries"),
            "--data" => data = v,
            "--dir" => dir = PathBuf::from(v),
            "--radius" => radius = v.parse().expect("--radius"),
            "--tables" => tables = (v != "auto").then(|| v.parse().expect("--tables")),
            "--inline" => inline_codes = v == "yes",
            "--brute-queries" => brute_queries = v.parse().expect("--brute-queries"),
            "--no-snapshot" => {
                snapshot = false;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    fs::create_dir_all(&dir).expect("create bench dir");
    let rss0 = rss_kib();

    // Data set.
    let mut rng = Rng(0x5eed_0000 + n as u64);
    let codes: Vec<Code256> = match data.as_str() {
        "random" => (0..n).map(|_| rng.code()).collect(),
        "clustered" => {
            // Each base code with 10 variants at distance 1..=20.
            let mut v = Vec::with_capacity(n);
            while v.len() < n {
                let base = rng.code();
                v.push(base);
                for _ in 0..10 {
                    if v.len() == n {
                        break;
                    }
                    let f = 1 + (rng.next_u64() % 20) as u32;
                    v.push(rng.flip(&base, f));
                }
            }
            v
        }
        other => panic!("unknown data set {other}"),
    };
    // Queries: half near a stored code (distance 0..=40), half random.
    let qs: Vec<Code256> = (0..queries)
        .map(|i| {
            if i % 2 == 0 {
                let c = codes[(rng.next_u64() % n as u64) as usize];
                let f = (rng.next_u64() % 41) as u32;
                rng.flip(&c, f)
            } else {
                rng.code()
            }
        })
        .collect();
    let tag = format!("{data}-{n}");
    write_codes(&dir.join(format!("data-{tag}.bin")), &codes);
    write_codes(&dir.join(format!("queries-{tag}.bin")), &qs);
    let rss_data = rss_kib();

    // Batch insert.
    let new_index = || match tables {
        Some(tables) => PdqIndex::with_config(PdqIndexConfig {
            tables,
            inline_codes,
        })
        .expect("config"),
        None => PdqIndex::new(),
    };
    let index = new_index();
    let ops: Vec<PdqOp> = codes
        .iter()
        .enumerate()
        .map(|(i, &c)| PdqOp::Insert(c, i as u64))
        .collect();
    let t0 = Instant::now();
    index.apply(&ops);
    let insert_s = t0.elapsed().as_secs_f64();
    drop(ops);
    let rss_index = rss_kib();
    let heap = index.heap_bytes();
    let config = index.config();
    let layout = format!(
        "{}{}",
        config.tables,
        if config.inline_codes { " inline" } else { "" }
    );

    // Incremental batch: 10k inserts + 10k removes into the full index.
    let mut small: Vec<PdqOp> = (0..10_000u64)
        .map(|i| PdqOp::Insert(rng.code(), n as u64 + i))
        .collect();
    small.extend((0..10_000usize).map(|i| PdqOp::Remove(codes[i * 7 % n], (i * 7 % n) as u64)));
    let t0 = Instant::now();
    index.apply(&small);
    let small_batch_ms = t0.elapsed().as_secs_f64() * 1e3;
    let undo: Vec<PdqOp> = small
        .iter()
        .map(|op| match *op {
            PdqOp::Insert(c, id) => PdqOp::Remove(c, id),
            PdqOp::Remove(c, id) => PdqOp::Insert(c, id),
        })
        .collect();
    index.apply(&undo);

    // Queries.
    let mut lat = Vec::with_capacity(queries);
    let mut hits_total = 0usize;
    let mut cand_total = 0u64;
    let mut hit_counts = String::new();
    let mut out = Vec::new();
    for q in &qs {
        out.clear();
        let t0 = Instant::now();
        let st = index.query_into(q, radius, &mut out);
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
        hits_total += out.len();
        cand_total += st.candidates;
        hit_counts.push_str(&format!("{}\n", out.len()));
    }
    fs::write(dir.join(format!("hits-{tag}.txt")), hit_counts).expect("write hits");
    lat.sort_by(|a, b| a.total_cmp(b));

    // Brute force on a subset of the same queries, each timed right after the index answers the
    // same query (so that both see the same machine load), and check equality.
    let mut blat = Vec::new();
    let mut pair_ratio = Vec::new();
    for q in qs.iter().take(brute_queries) {
        let mut m = Vec::new();
        let t0 = Instant::now();
        index.query_into(q, radius, &mut m);
        let ti = t0.elapsed().as_secs_f64() * 1e6;
        let mut b = Vec::new();
        let t0 = Instant::now();
        brute(&codes, q, radius, &mut b);
        let tb = t0.elapsed().as_secs_f64() * 1e6;
        blat.push(tb);
        pair_ratio.push(tb / ti);
        m.sort_unstable();
        b.sort_unstable();
        assert_eq!(m, b, "index and brute force disagree");
    }
    blat.sort_by(|a, b| a.total_cmp(b));
    pair_ratio.sort_by(|a, b| a.total_cmp(b));

    // Snapshot.
    let (mut snap_w, mut snap_l, mut snap_mb) = (f64::NAN, f64::NAN, f64::NAN);
    if snapshot {
        let path = dir.join(format!("snapshot-{tag}.omm"));
        let t0 = Instant::now();
        index.write_snapshot(&path, 42).expect("snapshot write");
        snap_w = t0.elapsed().as_secs_f64();
        snap_mb = fs::metadata(&path)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(f64::NAN);
        drop(index);
        let t0 = Instant::now();
        let loaded = new_index();
        let wm = loaded.load_snapshot(&path).expect("load");
        snap_l = t0.elapsed().as_secs_f64();
        assert_eq!(wm, 42);
        assert_eq!(loaded.len(), n);
        let _ = fs::remove_file(&path);
    }

    let med = percentile(&lat, 0.5);
    let bmed = percentile(&blat, 0.5);
    let json = format!(
        "{{\"n\": {n}, \"data\": \"{data}\", \"radius\": {radius}, \"tables\": {}, \"inline_codes\": {}, \"queries\": {queries}, \"median_us\": {med:.3}, \"p99_us\": {:.3}, \"brute_median_us\": {bmed:.3}, \"hits_total\": {hits_total}}}\n",
        config.tables,
        config.inline_codes,
        percentile(&lat, 0.99)
    );
    fs::write(dir.join(format!("rust-{tag}.json")), json).expect("write results");
    println!("| data | N | tables | radius | queries | median µs | p99 µs | mean cand. | hits/query | brute median µs ({} q) | brute/index (median of per-query ratios) |", blat.len());
    println!(
        "| {data} | {n} | {layout} | {radius} | {queries} | {med:.1} | {:.1} | {:.0} | {:.2} | {bmed:.0} | {:.0}× |",
        percentile(&lat, 0.99),
        cand_total as f64 / queries as f64,
        hits_total as f64 / queries as f64,
        percentile(&pair_ratio, 0.5)
    );
    println!(
        "insert {n} in one apply call: {insert_s:.2} s = {:.2} M/s; batch of 10k inserts + 10k removes into the full index: {small_batch_ms:.1} ms",
        n as f64 / insert_s / 1e6
    );
    println!(
        "RSS: start {} MiB, with test data {} MiB, with index {} MiB (index ≈ {} MiB RSS delta, heap estimate {} MiB)",
        rss0 / 1024,
        rss_data / 1024,
        rss_index / 1024,
        (rss_index.saturating_sub(rss_data)) / 1024,
        heap / (1 << 20)
    );
    if snapshot {
        println!("snapshot: {snap_mb:.0} MB, write {snap_w:.2} s, load {snap_l:.2} s");
    }
}
