//! Fetch throughput of the exchange clients against an in-process fake server:
//! 1,000,000 PDQ records in pages of 1,000 through the `fb_threatexchange` client (JSON,
//! descriptors → opinions, validation, checkpoints), compared with a baseline that downloads
//! and JSON-parses the same pages with a bare reqwest loop.
//!
//! Run: `cargo bench -p omm-exchange --bench fetch_throughput` (env `OMM_BENCH_RECORDS` to
//! change the record count).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use omm_exchange::{api_by_name, ExchangeSetup, HttpSettings};
use serde_json::json;

const PAGE: usize = 1000;
const TOKEN: &str = "123456789|abcdefghijklmnopqrstuvwxyz";

#[derive(Clone)]
struct Fake {
    total: usize,
    base: String,
}

fn pdq(i: u64) -> String {
    format!(
        "{:064x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    )
}

async fn updates(
    State(f): State<Fake>,
    Path(group): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    let offset: usize = q.get("after").map_or(0, |s| s.parse().unwrap_or(0));
    let end = (offset + PAGE).min(f.total);
    let data: Vec<_> = (offset..end)
        .map(|i| {
            json!({"id": (10_000_000 + i).to_string(), "indicator": pdq(i as u64), "type": "HASH_PDQ",
                   "last_updated": (1_600_000_000 + i / 5000).to_string(), "should_delete": false,
                   "descriptors": {"data": [{"id": (i * 10).to_string(), "owner": {"id": "55555555"},
                       "status": "MALICIOUS", "tags": {"data": [{"id": "1", "text": "csam"}]}}]}})
        })
        .collect();
    let mut body = json!({"data": data});
    if end < f.total {
        body["paging"] = json!({"next": format!("{}/{group}/threat_updates/?limit={PAGE}&after={end}&access_token={TOKEN}", f.base)});
    }
    axum::Json(body)
}

fn main() {
    let total: usize = std::env::var("OMM_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/v21.0", listener.local_addr().expect("addr"));
        let router = Router::new()
            .route("/v21.0/{group}/threat_updates/", get(updates))
            .with_state(Fake {
                total,
                base: base.clone(),
            });
        tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });

        // Baseline: fetch and parse the same pages with a bare client.
        let client = reqwest::Client::new();
        let t = Instant::now();
        let mut n = 0usize;
        let mut url = format!("{base}/1/threat_updates/?limit={PAGE}&access_token={TOKEN}");
        loop {
            let body = client
                .get(&url)
                .send()
                .await
                .expect("get")
                .bytes()
                .await
                .expect("body");
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            n += v["data"].as_array().map_or(0, Vec::len);
            match v["paging"]["next"].as_str() {
                Some(next) => url = next.to_string(),
                None => break,
            }
        }
        let baseline = t.elapsed();
        assert_eq!(n, total);

        let api = api_by_name("fb_threatexchange").expect("api");
        let exchange = api
            .open(ExchangeSetup {
                name: "BENCH".into(),
                config: api
                    .normalize_config(
                        &json!({"privacy_group": 1, "base_url": base, "page_size": PAGE}),
                    )
                    .expect("config"),
                credentials: Some(
                    api.parse_credentials(&json!({"api_token": TOKEN}))
                        .expect("creds"),
                ),
                http: HttpSettings::default(),
            })
            .expect("open");
        let t = Instant::now();
        let mut records = 0usize;
        let mut batches = 0usize;
        let mut stream = exchange.fetch(None);
        while let Some(batch) = stream.next().await {
            let batch = batch.expect("batch");
            records += batch.changes.len();
            batches += 1;
        }
        let client_time = t.elapsed();
        assert_eq!(records, total);
        println!("records: {total} in {batches} batches of {PAGE}");
        println!(
            "baseline (bare GET + JSON parse): {:.2} s ({:.0} records/s)",
            baseline.as_secs_f64(),
            total as f64 / baseline.as_secs_f64()
        );
        println!(
            "fb_threatexchange client fetch:   {:.2} s ({:.0} records/s)",
            client_time.as_secs_f64(),
            total as f64 / client_time.as_secs_f64()
        );
        println!(
            "ratio client/baseline: {:.2}",
            client_time.as_secs_f64() / baseline.as_secs_f64()
        );
    });
}
