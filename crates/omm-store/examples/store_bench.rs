//! Store benchmark: bulk ingest through the exchange-batch path, start-up state read, full
//! change log read, database size, and the cost of the change-log commit lock.
//!
//! ```text
//! cargo run --release -p omm-store --example store_bench -- sqlite 1000000
//! OMM_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p omm-store --example store_bench -- postgres 1000000
//! cargo run --release -p omm-store --example store_bench -- postgres-concurrency
//! ```
//!
//! Arguments: `<sqlite|postgres> [signals=1000000] [batch=5000]`,
//! `<sqlite|postgres>-concurrency [ops per task=300]`, or `postgres-read <schema>` (matcher
//! rebuild timings on an existing schema, e.g. 10M signals loaded by `bench/pg10m.sql`).

use std::time::{Duration, Instant};

use omm_store::*;
use serde_json::json;

struct Target {
    store: Store,
    cleanup: Option<(String, String)>,
    sqlite_dir: Option<tempfile::TempDir>,
}

async fn open(kind: &str) -> Target {
    match kind {
        "sqlite" => {
            let dir = match std::env::var("OMM_BENCH_DIR") {
                Ok(d) => tempfile::tempdir_in(d).unwrap(),
                Err(_) => tempfile::tempdir().unwrap(),
            };
            let store = Store::open_sqlite(dir.path().join("omm.db")).await.unwrap();
            Target {
                store,
                cleanup: None,
                sqlite_dir: Some(dir),
            }
        }
        "postgres" => {
            let url = std::env::var("OMM_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let schema = format!("omm_bench_{:08x}", rand::random::<u32>());
            let mut o = PostgresOptions::new(&url);
            o.schema = Some(schema.clone());
            let store = Store::open_postgres(o).await.unwrap();
            Target {
                store,
                cleanup: Some((url, schema)),
                sqlite_dir: None,
            }
        }
        other => panic!("unknown backend {other}"),
    }
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

impl Target {
    async fn size_bytes(&self) -> u64 {
        if let Some(dir) = &self.sqlite_dir {
            let p = dir.path().join("omm.db");
            // Fold the WAL into the main file first so that the size is the settled one.
            let c = rusqlite::Connection::open(&p).unwrap();
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            drop(c);
            let mut total = 0;
            for suffix in ["", "-wal", "-shm"] {
                total += std::fs::metadata(format!("{}{suffix}", p.display()))
                    .map(|m| m.len())
                    .unwrap_or(0);
            }
            total
        } else {
            let (url, schema) = self.cleanup.as_ref().unwrap();
            let c = pg_client(url).await;
            c.batch_execute(&format!("SET search_path = {schema}"))
                .await
                .unwrap();
            c.batch_execute("VACUUM ANALYZE").await.unwrap();
            let row = c
                .query_one(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[schema],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0) as u64
        }
    }

    async fn table_sizes(&self) -> Vec<(String, u64)> {
        let Some((url, schema)) = self.cleanup.as_ref() else {
            return Vec::new();
        };
        let c = pg_client(url).await;
        c.query(
            "SELECT c.relname, pg_total_relation_size(c.oid)::bigint FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 2 DESC",
            &[schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect()
    }

    async fn drop_all(self) {
        if let Some((url, schema)) = &self.cleanup {
            let c = pg_client(url).await;
            c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .unwrap();
        }
    }
}

/// Deterministic pseudo-random 256-bit hashes (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pdq(&mut self) -> String {
        format!(
            "{:016x}{:016x}{:016x}{:016x}",
            self.next(),
            self.next(),
            self.next(),
            self.next()
        )
    }
}

/// CPU time (user + system, seconds) of this process, or of all `postgres` server processes.
fn cpu_seconds(postgres_server: bool) -> f64 {
    let read = |path: &std::path::Path| -> Option<(String, u64)> {
        let stat = std::fs::read_to_string(path).ok()?;
        let (head, tail) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let f: Vec<&str> = tail.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
        Some((
            comm,
            f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        ))
    };
    let ticks: u64 = if postgres_server {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| read(&e.path().join("stat")))
                    .filter(|(comm, _)| comm == "postgres")
                    .map(|(_, t)| t)
                    .sum()
            })
            .unwrap_or(0)
    } else {
        read(std::path::Path::new("/proc/self/stat"))
            .map(|(_, t)| t)
            .unwrap_or(0)
    };
    ticks as f64 / 100.0 // USER_HZ is 100 on Linux
}

/// Baseline measured in the same run: plain inserts of `n` 64-character strings into a
/// one-column table, in the same batch size, by the cheapest means of the backend.
async fn baseline(kind: &str, n: usize, batch_size: usize) -> f64 {
    let mut rng = Rng(7);
    let values: Vec<String> = (0..n).map(|_| rng.pdq()).collect();
    match kind {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let mut c = rusqlite::Connection::open(dir.path().join("b.db")).unwrap();
            c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)").unwrap();
            let start = Instant::now();
            for chunk in values.chunks(batch_size) {
                let tx = c.transaction().unwrap();
                {
                    let mut st = tx.prepare_cached("INSERT INTO t (v) VALUES (?1)").unwrap();
                    for v in chunk {
                        st.execute([v]).unwrap();
                    }
                }
                tx.commit().unwrap();
            }
            n as f64 / start.elapsed().as_secs_f64()
        }
        _ => {
            let url = std::env::var("OMM_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let c = pg_client(&url).await;
            let table = format!("omm_bench_baseline_{:08x}", rand::random::<u32>());
            c.batch_execute(&format!("CREATE TABLE {table} (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v TEXT NOT NULL)")).await.unwrap();
            let start = Instant::now();
            for chunk in values.chunks(batch_size) {
                c.execute(
                    &format!("INSERT INTO {table} (v) SELECT unnest($1::text[])"),
                    &[&chunk],
                )
                .await
                .unwrap();
            }
            let rate = n as f64 / start.elapsed().as_secs_f64();
            c.batch_execute(&format!("DROP TABLE {table}"))
                .await
                .unwrap();
            rate
        }
    }
}

async fn ingest(kind: &str, n: usize, batch_size: usize) {
    let base_n = n.min(1_000_000);
    let base = baseline(kind, base_n, batch_size).await;
    println!("{kind}: baseline (same run): plain INSERT of {base_n} 64-char strings into a 1-column table: {base:.0} rows/s");
    let t = open(kind).await;
    let s = &t.store;
    s.create_exchange(&NewExchange {
        name: "BENCH".into(),
        api: "fb_threatexchange".into(),
        enabled: true,
        config: json!({"privacy_group": 1}),
    })
    .await
    .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut spent = Duration::ZERO;
    let mut cpu = 0.0f64;
    let mut done = 0usize;
    let wall = Instant::now();
    while done < n {
        let m = batch_size.min(n - done);
        // What a ThreatExchange fetch writes: one PDQ per record, small opinion metadata.
        let updates = (0..m)
            .map(|i| RecordUpdate {
                key: format!("{}", 10_000_000_000u64 + (done + i) as u64),
                record: Some(FetchedRecord {
                    signals: vec![("pdq".into(), rng.pdq())],
                    metadata: json!({"opinions": [{"owner": 1234, "category": 2, "tags": ["t"]}]}),
                }),
            })
            .collect();
        let batch = FetchBatch {
            updates,
            checkpoint: json!({"update_time": done + m, "last_fetch_time": 0}),
            checkpoint_ts: Some((done + m) as i64),
            up_to_date: done + m == n,
            guard: CheckpointGuard::Unchecked,
        };
        let c0 = cpu_seconds(kind == "postgres");
        let t0 = Instant::now();
        s.apply_fetch_batch("BENCH", &batch).await.unwrap();
        spent += t0.elapsed();
        cpu += cpu_seconds(kind == "postgres") - c0;
        done += m;
        if done % (batch_size * 200) == 0 {
            eprintln!(
                "  {done} signals, {:.0}/s so far",
                done as f64 / spent.as_secs_f64()
            );
        }
    }
    let rate = n as f64 / spent.as_secs_f64();
    println!(
        "{kind}: ingest {n} PDQ signals in batches of {batch_size}: {:.1} s in apply_fetch_batch = {rate:.0} signals/s \
         (ratio to baseline {:.2}); {:.1} s wall; {:.1} CPU-s of {} = {:.0} signals per CPU-second",
        spent.as_secs_f64(),
        rate / base,
        wall.elapsed().as_secs_f64(),
        cpu,
        if kind == "postgres" { "the postgres server" } else { "this process" },
        n as f64 / cpu.max(0.01),
    );

    let t0 = Instant::now();
    let mut snap = s.load_state(10_000).await.unwrap();
    let mut count = 0usize;
    while let Some(chunk) = snap.next_signals().await.unwrap() {
        count += chunk.len();
    }
    let load = t0.elapsed();
    assert_eq!(count, n);
    println!(
        "{kind}: load_state of {count} signals: {:.2} s ({:.0} signals/s)",
        load.as_secs_f64(),
        count as f64 / load.as_secs_f64()
    );

    let t0 = Instant::now();
    let mut last = 0;
    let mut changes = 0usize;
    loop {
        let page = s.changes_since(last, 10_000).await.unwrap();
        let Some(c) = page.last() else { break };
        last = c.seq;
        changes += page.len();
    }
    let tail = t0.elapsed();
    println!(
        "{kind}: changes_since over the whole log ({changes} entries, pages of 10000): {:.2} s",
        tail.as_secs_f64()
    );

    let size = t.size_bytes().await;
    println!(
        "{kind}: database size {:.1} MiB = {:.1} MiB per million PDQ signals (records, content, signals, change log, indexes)",
        size as f64 / 1048576.0,
        size as f64 / 1048576.0 / (n as f64 / 1e6)
    );
    for (table, bytes) in t.table_sizes().await {
        println!("  {table}: {:.1} MiB", bytes as f64 / 1048576.0);
    }
    t.drop_all().await;
}

/// Throughput of small write transactions from 1 and 8 concurrent tasks: change-logged writes
/// (serialised by the commit-order lock) against unlogged writes (credentials upserts, no lock).
async fn concurrency(kind: &str, ops: usize) {
    let t = open(kind).await;
    let s = t.store.clone();
    for tasks in [1usize, 8] {
        for logged in [true, false] {
            let start = Instant::now();
            let mut handles = Vec::new();
            for k in 0..tasks {
                let s = s.clone();
                let name = format!("C{tasks}_{k}_{logged}").to_uppercase();
                handles.push(tokio::spawn(async move {
                    if logged {
                        s.create_bank(&NewBank {
                            name: name.clone(),
                            enabled_ratio: 1.0,
                        })
                        .await
                        .unwrap();
                    }
                    let mut rng = Rng(k as u64 + 1);
                    for i in 0..ops {
                        if logged {
                            let mut m = std::collections::BTreeMap::new();
                            m.insert("pdq".to_string(), rng.pdq());
                            s.create_content(&name, &NewContent::with_signals(m))
                                .await
                                .unwrap();
                        } else {
                            s.set_api_credentials(
                                &format!("{name}_{}", i % 10),
                                Some(&json!({"k": i})),
                            )
                            .await
                            .unwrap();
                        }
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
            let el = start.elapsed();
            println!(
                "{kind}: {tasks} task(s) x {ops} {}: {:.0} tx/s",
                if logged {
                    "create_content (change-logged, commit-order lock)"
                } else {
                    "set_api_credentials (no log, no lock)"
                },
                (tasks * ops) as f64 / el.as_secs_f64()
            );
        }
    }
    t.drop_all().await;
}

/// Times a matcher rebuild (`load_state`, then the whole `changes_since`) on an existing
/// PostgreSQL schema, e.g. one filled with 10M signals beforehand; leaves the schema alone.
async fn read_existing(schema: &str) {
    let url = std::env::var("OMM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut o = PostgresOptions::new(&url);
    o.schema = Some(schema.to_string());
    let s = Store::open_postgres(o).await.unwrap();
    let t0 = Instant::now();
    let mut snap = s.load_state(10_000).await.unwrap();
    let mut count = 0usize;
    while let Some(chunk) = snap.next_signals().await.unwrap() {
        count += chunk.len();
    }
    let load = t0.elapsed();
    println!(
        "postgres: load_state of {count} signals: {:.2} s ({:.0} signals/s)",
        load.as_secs_f64(),
        count as f64 / load.as_secs_f64()
    );
    let t0 = Instant::now();
    let mut last = 0;
    let mut changes = 0usize;
    loop {
        let page = s.changes_since(last, 10_000).await.unwrap();
        let Some(c) = page.last() else { break };
        last = c.seq;
        changes += page.len();
    }
    println!(
        "postgres: changes_since over the whole log ({changes} entries, pages of 10000): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().map(String::as_str).unwrap_or("sqlite");
    if kind == "postgres-read" {
        let schema = args.get(1).expect("postgres-read <schema>");
        read_existing(schema).await;
        return;
    }
    if let Some(backend) = kind.strip_suffix("-concurrency") {
        let ops = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
        concurrency(backend, ops).await;
        return;
    }
    let n = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let batch = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    ingest(kind, n, batch).await;
}
