//! Matcher benchmark: start-up time (store vs snapshot), resident memory, and freshness (delay
//! from a store write returning to the change being visible to lookups).
//!
//! ```text
//! # 1. Fill a SQLite database (or a Postgres URL) with N PDQ signals, as an exchange fetch would:
//! cargo run --release -p omm-matcher --example matcher_bench -- populate <db> 1000000
//! # 2. Measure in a fresh process (so resident memory is that of a server holding N hashes):
//! cargo run --release -p omm-matcher --example matcher_bench -- measure <db> [samples]
//! ```
//!
//! `<db>` is a SQLite file path or a `postgres://` URL. `measure` writes its snapshot to a
//! temporary directory. `start <db> <dir>` starts once in a fresh process (from the snapshot
//! in `<dir>` if there is a valid one) and writes a snapshot on shutdown: run it twice to see
//! both start-up paths with the resident memory of a process that loaded only once; an optional
//! fourth argument sets the initial load's chunk size (`MatcherConfig::load_chunk`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use omm_matcher::{ChangeSource, LookupOptions, Matcher, MatcherConfig, SeqEvent, SourceError};
use omm_store::{
    CheckpointGuard, ContentUpdate, FetchBatch, FetchedRecord, NewBank, NewContent, NewExchange,
    RecordUpdate, Store,
};
use rand::{Rng, SeedableRng};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn random_pdq(rng: &mut impl Rng) -> String {
    (0..4)
        .map(|_| format!("{:016x}", rng.gen::<u64>()))
        .collect()
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The store without its wake-up hints: what a matcher sees when another process writes to a
/// SQLite database (polling only).
struct PollOnly(Store);

impl ChangeSource for PollOnly {
    type Initial = <Store as ChangeSource>::Initial;
    type Wake = <Store as ChangeSource>::Wake;

    async fn current_seq(&self) -> Result<i64, SourceError> {
        ChangeSource::current_seq(&self.0).await
    }
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<SeqEvent>, SourceError> {
        ChangeSource::changes_since(&self.0, after, limit).await
    }
    async fn load_state(&self, chunk_size: usize) -> Result<Self::Initial, SourceError> {
        ChangeSource::load_state(&self.0, chunk_size).await
    }
    async fn subscribe(&self) -> Result<Option<Self::Wake>, SourceError> {
        Ok(None)
    }
}

async fn populate(db: &str, n: usize) -> Result<(), BoxError> {
    let store = Store::open(db).await?;
    let ex = store
        .create_exchange(&NewExchange {
            name: "BULK".into(),
            api: "sample".into(),
            enabled: true,
            config: serde_json::json!({}),
        })
        .await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let k = (n - done).min(50_000);
        let updates = (done..done + k)
            .map(|i| RecordUpdate {
                key: format!("r{i}"),
                record: Some(FetchedRecord {
                    signals: vec![("pdq".into(), random_pdq(&mut rng))],
                    metadata: serde_json::json!({}),
                }),
            })
            .collect();
        store
            .apply_fetch_batch(
                &ex.name,
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
    store
        .create_bank(&NewBank {
            name: "FRESH".into(),
            enabled_ratio: 1.0,
        })
        .await?;
    println!(
        "populated {n} PDQ signals in {:.1} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > deadline {
            return None;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Delays of `samples` adds and disables, sorted. With `jitter`, each write first waits a
/// random part of it, so that writes fall at random points of the poll cycle (as writes of
/// another process would) instead of right after the previous detection.
async fn freshness(
    store: &Store,
    m: &Matcher,
    samples: usize,
    seed: u64,
    jitter: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>), BoxError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let opts = LookupOptions {
        bypass_coinflip: true,
        ..Default::default()
    };
    let mut adds = Vec::new();
    let mut disables = Vec::new();
    for _ in 0..samples {
        tokio::time::sleep(jitter.mul_f64(rng.gen::<f64>())).await;
        let h = random_pdq(&mut rng);
        let mut s = BTreeMap::new();
        s.insert("pdq".to_string(), h.clone());
        let id = store
            .create_content("FRESH", &NewContent::with_signals(s))
            .await?
            .id;
        let t0 = Instant::now();
        let matched = |m: &Matcher| {
            m.lookup("pdq", &h, &opts)
                .map(|v| v.iter().any(|x| x.content_id == id))
                .unwrap_or(false)
        };
        wait_until(Duration::from_secs(30), || matched(m))
            .await
            .ok_or("add never visible")?;
        adds.push(t0.elapsed());
        tokio::time::sleep(jitter.mul_f64(rng.gen::<f64>())).await;
        store
            .update_content(
                "FRESH",
                id,
                &ContentUpdate {
                    disable_until_ts: Some(0),
                    ..Default::default()
                },
            )
            .await?;
        let t0 = Instant::now();
        wait_until(Duration::from_secs(30), || !matched(m))
            .await
            .ok_or("disable never visible")?;
        disables.push(t0.elapsed());
    }
    adds.sort();
    disables.sort();
    Ok((adds, disables))
}

fn report(label: &str, v: &[Duration]) {
    println!(
        "| {label} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        v.len(),
        percentile(v, 0.5).as_secs_f64() * 1e3,
        percentile(v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

async fn measure(db: &str, samples: usize) -> Result<(), BoxError> {
    let rss0 = rss_mib();
    let store = Store::open(db).await?;
    let snap_dir = tempfile::tempdir()?;
    let config = MatcherConfig {
        snapshot_dir: Some(snap_dir.path().to_path_buf()),
        snapshot_interval: None,
        ..MatcherConfig::default()
    };

    // Start-up from the store's bulk read.
    let t0 = Instant::now();
    let m = Matcher::start(store.clone(), config.clone())?;
    if !m.wait_ready(Duration::from_secs(3600)).await {
        return Err("not ready".into());
    }
    let from_store = t0.elapsed();
    let status = m.status();
    let size: usize = status.types.iter().map(|t| t.size).sum();
    let rss_loaded = rss_mib();
    println!("# matcher benchmark: {size} signals, database {db}");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| start-up from the store (bulk read + index build) | {:.2} s |",
        from_store.as_secs_f64()
    );
    println!("| resident memory before start | {rss0:.0} MiB |");
    println!("| resident memory with the matcher loaded | {rss_loaded:.0} MiB |");
    println!(
        "| filter state heap (content table etc.) | {:.1} MiB |",
        status.state_heap_bytes as f64 / (1 << 20) as f64
    );

    // Freshness with the store's wake-up hint (same process) and with polling only.
    let (adds, disables) = freshness(&store, &m, samples, 1, Duration::ZERO).await?;
    let t0 = Instant::now();
    m.shutdown().await?;
    let snap_write = t0.elapsed();
    println!(
        "| shutdown incl. snapshot write | {:.2} s |",
        snap_write.as_secs_f64()
    );
    let snap_bytes: u64 = std::fs::read_dir(snap_dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "| snapshot size | {:.1} MiB |",
        snap_bytes as f64 / (1 << 20) as f64
    );

    let t0 = Instant::now();
    let m2 = Matcher::start(PollOnly(store.clone()), config.clone())?;
    if !m2.wait_ready(Duration::from_secs(3600)).await {
        return Err("not ready".into());
    }
    let from_snapshot = t0.elapsed();
    let loaded = m2.status().load.map(|l| l.from_snapshot).unwrap_or(false);
    println!(
        "| start-up from snapshot (+ tail) | {:.2} s (from snapshot: {loaded}) |",
        from_snapshot.as_secs_f64()
    );
    println!(
        "| ratio start-up store / snapshot | {:.1}x |",
        from_store.as_secs_f64() / from_snapshot.as_secs_f64()
    );
    let poll_samples = (samples / 4).max(5);
    let (padds, pdisables) = freshness(&store, &m2, poll_samples, 2, config.poll_interval).await?;
    println!("| resident memory at the end | {:.0} MiB |", rss_mib());
    println!();
    println!(
        "| freshness (store write returned -> visible to lookups) | samples | median | p99 | max |"
    );
    println!("|---|---|---|---|---|");
    report("add, wake-up hint (writer in the same process)", &adds);
    report("disable, wake-up hint", &disables);
    report(
        "add, polling only (1 s interval; writer in another process)",
        &padds,
    );
    report("disable, polling only", &pdisables);
    println!();
    println!(
        "Baseline: a full rebuild from the store (what a rebuild-on-timer matcher pays per refresh) took {:.2} s, {:.0}x the median add delay with the hint.",
        from_store.as_secs_f64(),
        from_store.as_secs_f64() / percentile(&adds, 0.5).as_secs_f64().max(1e-9)
    );
    m2.shutdown().await?;
    Ok(())
}

/// One start in a fresh process: time to ready and resident memory, from the snapshot in
/// `snap_dir` if it is valid (it is written on shutdown, so a second run loads it).
async fn start_once(db: &str, snap_dir: &str, load_chunk: Option<usize>) -> Result<(), BoxError> {
    let store = Store::open(db).await?;
    let defaults = MatcherConfig::default();
    let config = MatcherConfig {
        snapshot_dir: Some(snap_dir.into()),
        snapshot_interval: None,
        load_chunk: load_chunk.unwrap_or(defaults.load_chunk),
        ..defaults
    };
    let t0 = Instant::now();
    let m = Matcher::start(store, config)?;
    if !m.wait_ready(Duration::from_secs(3600)).await {
        return Err("not ready".into());
    }
    let elapsed = t0.elapsed();
    let status = m.status();
    println!(
        "| start ({}) | {} signals | {:.2} s | {:.0} MiB resident |",
        if status.load.map(|l| l.from_snapshot).unwrap_or(false) {
            "from snapshot"
        } else {
            "from the store"
        },
        status.types.iter().map(|t| t.size).sum::<usize>(),
        elapsed.as_secs_f64(),
        rss_mib()
    );
    m.shutdown().await?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("populate") if args.len() == 3 => rt.block_on(populate(&args[1], args[2].parse()?)),
        Some("measure") if args.len() >= 2 => {
            let samples = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(200);
            rt.block_on(measure(&args[1], samples))
        }
        Some("start") if args.len() == 3 || args.len() == 4 => {
            let load_chunk = args.get(3).map(|s| s.parse()).transpose()?;
            rt.block_on(start_once(&args[1], &args[2], load_chunk))
        }
        _ => Err(
            "usage: matcher_bench populate <db> <n> | measure <db> [samples] | start <db> <snapshot dir>".into(),
        ),
    }
}
