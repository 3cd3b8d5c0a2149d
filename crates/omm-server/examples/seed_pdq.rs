//! Seeds a data directory for the HTTP load benchmark (`bench/http_load.sh`): `N` random PDQ
//! hashes written through the store's bulk path (exchange fetch batches, as an exchange import
//! would), plus a file of query hashes for the load generator.
//!
//! ```text
//! cargo run --release -p omm-server --example seed_pdq -- <data_dir> <n> <queries_file> [queries=20000]
//! ```
//!
//! The database is `<data_dir>/omm.db` (SQLite, what `omm serve --data-dir` opens). The
//! hashes sit in the bank of an exchange `BENCH` (api `sample`, so serve the directory with
//! `--no-background-tasks`). Half of the queries are banked hashes with 0 to 15 bits flipped
//! (matches), half random hashes (misses, which search as much of the index as a match).
//! Everything is derived from a fixed seed: the same `n` gives the same data and queries.

use std::io::Write;
use std::time::Instant;

use omm_store::{CheckpointGuard, FetchBatch, FetchedRecord, NewExchange, RecordUpdate, Store};
use rand::{Rng, SeedableRng};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const BATCH: usize = 50_000;

fn hex(code: &[u8; 32]) -> String {
    code.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: seed_pdq <data_dir> <n> <queries_file> [queries]".into());
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let n: usize = args[2].parse()?;
    let queries_file = &args[3];
    let n_queries: usize = args
        .get(4)
        .map(|q| q.parse())
        .transpose()?
        .unwrap_or(20_000);
    std::fs::create_dir_all(&dir)?;
    let store = Store::open_sqlite(dir.join("omm.db")).await?;
    store
        .create_exchange(&NewExchange {
            name: "BENCH".into(),
            api: "sample".into(),
            enabled: true,
            config: serde_json::json!({}),
        })
        .await?;

    // Which banked hashes become (near-)match queries, chosen up front so that the N hashes
    // need not be kept in memory.
    let mut pick = rand::rngs::StdRng::seed_from_u64(7);
    let mut wanted: Vec<usize> = (0..n_queries / 2).map(|_| pick.gen_range(0..n)).collect();
    wanted.sort_unstable();
    let mut wanted = wanted.into_iter().peekable();
    let mut queries: Vec<String> = Vec::with_capacity(n_queries);

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let k = (n - done).min(BATCH);
        let mut updates = Vec::with_capacity(k);
        for i in done..done + k {
            let code: [u8; 32] = rng.gen();
            while wanted.peek() == Some(&i) {
                wanted.next();
                let mut q = code;
                for _ in 0..pick.gen_range(0..16) {
                    let bit = pick.gen_range(0..256);
                    q[bit / 8] ^= 1 << (bit % 8);
                }
                queries.push(hex(&q));
            }
            updates.push(RecordUpdate {
                key: format!("r{i}"),
                record: Some(FetchedRecord {
                    signals: vec![("pdq".into(), hex(&code))],
                    metadata: serde_json::json!({}),
                }),
            });
        }
        store
            .apply_fetch_batch(
                "BENCH",
                &FetchBatch {
                    updates,
                    checkpoint: serde_json::json!({ "done": done + k }),
                    checkpoint_ts: None,
                    up_to_date: done + k == n,
                    guard: CheckpointGuard::Unchecked,
                },
            )
            .await?;
        done += k;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {n} PDQ hashes in {secs:.1} s ({:.0}/s)",
        n as f64 / secs.max(1e-9)
    );

    while queries.len() < n_queries {
        queries.push(hex(&pick.gen()));
    }
    // Interleave matches and misses.
    let half = n_queries / 2;
    let mut out = std::io::BufWriter::new(std::fs::File::create(queries_file)?);
    for i in 0..half {
        writeln!(out, "{}", queries[i])?;
        writeln!(out, "{}", queries[half + i])?;
    }
    for q in &queries[2 * half..] {
        writeln!(out, "{q}")?;
    }
    out.flush()?;
    println!("wrote {n_queries} queries to {queries_file}");
    Ok(())
}
