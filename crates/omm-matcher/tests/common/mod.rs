//! Shared helpers of the matcher's integration tests: stores, hashes, brute-force oracle.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use omm_matcher::{Coin, IndexedType, MatcherConfig};
use omm_store::{NewBank, NewContent, PostgresOptions, Store};
use rand::{Rng, SeedableRng};

/// A store on a fresh SQLite file under `dir`.
pub async fn sqlite_store(dir: &std::path::Path) -> Store {
    Store::open_sqlite(dir.join("omm.db"))
        .await
        .expect("open sqlite store")
}

/// A store on its own Postgres schema, when `OMM_TEST_DATABASE_URL` is set, and the schema
/// name (drop it with [`drop_postgres_schema`]).
pub async fn postgres_store(test: &str) -> Option<(Store, String)> {
    let Ok(url) = std::env::var("OMM_TEST_DATABASE_URL") else {
        eprintln!("OMM_TEST_DATABASE_URL not set: Postgres part of {test} skipped");
        return None;
    };
    let mut options = PostgresOptions::new(url);
    let nonce: u64 = rand::thread_rng().gen();
    let schema = format!("matcher_{test}_{nonce:x}");
    options.schema = Some(schema.clone());
    let store = Store::open_postgres(options)
        .await
        .expect("open postgres store");
    Some((store, schema))
}

/// Drops a test schema made by [`postgres_store`].
pub async fn drop_postgres_schema(schema: &str) {
    let Ok(url) = std::env::var("OMM_TEST_DATABASE_URL") else {
        return;
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
    drop(client);
    let _ = task.await;
}

/// A test matcher configuration: PDQ and an exact type, fast polling.
pub fn config() -> MatcherConfig {
    MatcherConfig {
        signal_types: vec![IndexedType::pdq(), IndexedType::hex_digest("video_md5", 16)],
        poll_interval: Duration::from_millis(200),
        batch_limit: 500,
        load_chunk: 300,
        snapshot_dir: None,
        snapshot_interval: None,
    }
}

/// A random PDQ hash (hex) from a seeded generator.
pub fn random_pdq(rng: &mut impl Rng) -> String {
    (0..4)
        .map(|_| format!("{:016x}", rng.gen::<u64>()))
        .collect()
}

/// `hex` with `bits` distinct bits flipped.
pub fn flip_bits(hex: &str, bits: u32, rng: &mut impl Rng) -> String {
    let mut code = omm_index::code_from_hex(hex).expect("hex");
    let mut chosen = BTreeSet::new();
    while chosen.len() < bits as usize {
        chosen.insert(rng.gen_range(0..256u32));
    }
    for b in chosen {
        code[(b / 64) as usize] ^= 1u64 << (b % 64);
    }
    omm_index::code_to_hex(&code)
}

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub async fn bank(store: &Store, name: &str, ratio: f64) {
    store
        .create_bank(&NewBank {
            name: name.into(),
            enabled_ratio: ratio,
        })
        .await
        .expect("create bank");
}

pub async fn add(store: &Store, bank: &str, pdq: &str) -> i64 {
    let mut s = BTreeMap::new();
    s.insert("pdq".to_string(), pdq.to_string());
    store
        .create_content(bank, &NewContent::with_signals(s))
        .await
        .expect("create content")
        .id
}

/// Polls `f` until it is true or `deadline` passes.
pub async fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One stored content as the oracle sees it.
#[derive(Debug, Clone)]
pub struct OracleContent {
    pub id: i64,
    pub bank: String,
    pub bank_ratio: f64,
    /// `None`: not an exchange bank; `Some(enabled)`: the exchange's state.
    pub exchange_enabled: Option<bool>,
    pub disable_until_ts: i64,
    pub signals: BTreeMap<String, String>,
}

/// The store's current state, read through its ordinary (non-change-log) API.
pub async fn oracle(store: &Store) -> (Vec<OracleContent>, BTreeMap<String, f64>) {
    let exchanges: BTreeMap<i64, bool> = store
        .list_exchanges()
        .await
        .expect("list exchanges")
        .into_iter()
        .map(|e| (e.id, e.enabled))
        .collect();
    let mut out = Vec::new();
    for b in store.list_banks().await.expect("list banks") {
        let mut after = 0;
        loop {
            let page = store
                .list_content(&b.name, after, 1000)
                .await
                .expect("list content");
            let Some(last) = page.last().map(|c| c.id) else {
                break;
            };
            for c in page {
                out.push(OracleContent {
                    id: c.id,
                    bank: b.name.clone(),
                    bank_ratio: b.enabled_ratio,
                    exchange_enabled: b
                        .exchange_id
                        .map(|x| exchanges.get(&x).copied().unwrap_or(false)),
                    disable_until_ts: c.disable_until_ts,
                    signals: c.signals,
                });
            }
            after = last;
        }
    }
    let ratios = store
        .list_signal_type_overrides()
        .await
        .expect("overrides")
        .into_iter()
        .map(|o| (o.name, o.enabled_ratio))
        .collect();
    (out, ratios)
}

/// Brute-force raw lookup: (content id, distance) of every content with a PDQ within 31.
pub fn brute_raw(contents: &[OracleContent], query: &str) -> Vec<(i64, u32)> {
    let q = omm_index::code_from_hex(query).expect("query");
    let mut v: Vec<(i64, u32)> = contents
        .iter()
        .filter_map(|c| {
            let s = c.signals.get("pdq")?;
            let code = omm_index::code_from_hex(s).ok()?;
            let d = omm_index::hamming(&q, &code);
            (d <= 31).then_some((c.id, d))
        })
        .collect();
    v.sort_by_key(|(id, d)| (*d, *id));
    v
}

/// Brute-force filtered lookup with the given coin: (bank, content id, distance).
pub fn brute_filtered(
    contents: &[OracleContent],
    type_ratio: f64,
    query: &str,
    coin: Coin,
    now: i64,
) -> Vec<(String, i64, u32)> {
    if !coin.keeps(type_ratio) {
        return Vec::new();
    }
    let raw = brute_raw(contents, query);
    let mut v: Vec<(String, i64, u32)> = raw
        .into_iter()
        .filter_map(|(id, d)| {
            let c = contents.iter().find(|c| c.id == id)?;
            // Spec §1.1, written out independently of the matcher's helper.
            let enabled = match c.disable_until_ts {
                0 => false,
                1 => true,
                until => until <= now,
            };
            let ok = enabled && coin.keeps(c.bank_ratio) && c.exchange_enabled.unwrap_or(true);
            ok.then(|| (c.bank.clone(), id, d))
        })
        .collect();
    v.sort_by_key(|(_, id, d)| (*d, *id));
    v
}
