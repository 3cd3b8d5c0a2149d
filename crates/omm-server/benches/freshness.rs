//! Freshness: delay from `POST /c/bank/<b>/signal` returning to the hash being matchable
//! through `GET /m/lookup`, and from a disable (`PUT .../content/<id>`) to it no longer
//! matching. Real server on 127.0.0.1, SQLite, default poll interval (1 s).
//!
//! Run: `cargo bench -p omm-server --bench freshness` (prints median, p90 and max).

use std::sync::Arc;
use std::time::{Duration, Instant};

use omm_server::builtin::{SignalsHasher, DEFAULT_SIGNAL_TYPES};
use omm_server::{ServerConfig, Services};
use serde_json::{json, Value};

const ROUNDS: usize = 20;

fn random_pdq(i: usize) -> String {
    // Distinct, far-apart values: a simple mixing of the round number.
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..32)
        .map(|_| {
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            format!("{:02x}", (x >> 56) as u8)
        })
        .collect()
}

async fn wait(client: &reqwest::Client, url: &str, want_match: bool) -> Duration {
    let start = Instant::now();
    loop {
        let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let matched = body.get("FRESH").is_some();
        if matched == want_match {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no convergence");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} median={:.0} ms p90={:.0} ms max={:.0} ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(v[v.len() - 1])
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = omm_store::Store::open_sqlite(dir.path().join("omm.db"))
        .await
        .unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let server = omm_server::start(
        config,
        Services {
            hasher: Arc::new(SignalsHasher::default()),
            signal_types: DEFAULT_SIGNAL_TYPES.to_vec(),
            store,
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/c/banks"))
        .json(&json!({"name": "FRESH"}))
        .send()
        .await
        .unwrap();
    let mut add = Vec::new();
    let mut disable = Vec::new();
    for i in 0..ROUNDS {
        let pdq = random_pdq(i);
        let lookup = format!("{base}/m/lookup?signal_type=pdq&signal={pdq}");
        let resp: Value = client
            .post(format!("{base}/c/bank/FRESH/signal"))
            .json(&json!({ "pdq": pdq }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        add.push(wait(&client, &lookup, true).await);
        let id = resp["id"].as_i64().unwrap();
        client
            .put(format!("{base}/c/bank/FRESH/content/{id}"))
            .json(&json!({"disable_until_ts": 0}))
            .send()
            .await
            .unwrap();
        disable.push(wait(&client, &lookup, false).await);
    }
    summary("add -> matchable", add);
    summary("disable -> not matching", disable);
    server.shutdown().await.unwrap();
}
