//! End-to-end fetch benchmark: a fake ThreatExchange serving 1,000,000 PDQ records in pages of
//! 1,000, fetched by the fetcher and stored in a SQLite store (records, bank content, signals,
//! change log) — i.e. matchable — compared with the client-only fetch of the same pages in the
//! same run.
//!
//! Run: `cargo bench -p omm-exchange --bench fetch_store` (env `OMM_BENCH_RECORDS` to change
//! the record count).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use omm_exchange::fetcher::{FetchOutcome, FetchProgress, Fetcher, FetcherSettings};
use omm_exchange::{api_by_name, ExchangeSetup, HttpSettings};
use omm_store::{NewExchange, Store};
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

/// Pages are written with `write!` rather than `json!` so that the fake server is cheap.
async fn updates(
    State(f): State<Fake>,
    Path(group): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    let offset: usize = q.get("after").map_or(0, |s| s.parse().unwrap_or(0));
    let end = (offset + PAGE).min(f.total);
    let mut body = String::with_capacity(PAGE * 300);
    body.push_str("{\"data\":[");
    for i in offset..end {
        if i > offset {
            body.push(',');
        }
        let _ = write!(
            body,
            "{{\"id\":\"{}\",\"indicator\":\"{}\",\"type\":\"HASH_PDQ\",\"last_updated\":\"{}\",\"should_delete\":false,\
             \"descriptors\":{{\"data\":[{{\"id\":\"{}\",\"owner\":{{\"id\":\"55555555\"}},\"status\":\"MALICIOUS\",\
             \"tags\":{{\"data\":[{{\"id\":\"1\",\"text\":\"csam\"}}]}}}}]}}}}",
            10_000_000 + i,
            pdq(i as u64),
            1_600_000_000 + i / 5000,
            i * 10
        );
    }
    body.push(']');
    if end < f.total {
        let _ = write!(
            body,
            ",\"paging\":{{\"next\":\"{}/{group}/threat_updates/?limit={PAGE}&after={end}\"}}",
            f.base
        );
    }
    body.push('}');
    ([("content-type", "application/json")], body)
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
        let config = json!({"privacy_group": 1, "base_url": base, "page_size": PAGE});

        // Baseline: the client alone.
        let api = api_by_name("fb_threatexchange").expect("api");
        let exchange = api
            .open(ExchangeSetup {
                name: "BENCH".into(),
                config: config.clone(),
                credentials: Some(
                    api.parse_credentials(&json!({"api_token": TOKEN}))
                        .expect("creds"),
                ),
                http: HttpSettings::default(),
            })
            .expect("open");
        let t = Instant::now();
        let mut records = 0usize;
        let mut stream = exchange.fetch(None);
        while let Some(batch) = stream.next().await {
            records += batch.expect("batch").changes.len();
        }
        let client_only = t.elapsed();
        assert_eq!(records, total);

        // Fetch and store.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(dir.path().join("omm.db"))
            .await
            .expect("store");
        store
            .create_exchange(&NewExchange {
                name: "BENCH".into(),
                api: "fb_threatexchange".into(),
                enabled: true,
                config,
            })
            .await
            .expect("exchange");
        store
            .set_api_credentials("fb_threatexchange", Some(&json!({"api_token": TOKEN})))
            .await
            .expect("creds");
        let fetcher = Fetcher::new(
            store.clone(),
            FetcherSettings {
                max_run_time: std::time::Duration::from_secs(3600),
                ..FetcherSettings::default()
            },
        );
        let t = Instant::now();
        let report = fetcher
            .fetch_exchange("BENCH", &mut |_: &str, _: &FetchProgress| {})
            .await
            .expect("fetch");
        let stored = t.elapsed();
        assert_eq!(
            report.outcome,
            FetchOutcome::Completed { up_to_date: true },
            "{report:?}"
        );
        let status = store.fetch_status("BENCH").await.expect("status");
        assert_eq!(status.item_count as usize, total);
        let pdq_count = store
            .signal_type_stats()
            .await
            .expect("stats")
            .into_iter()
            .find(|s| s.signal_type == "pdq")
            .map_or(0, |s| s.count);
        assert_eq!(
            pdq_count as usize, total,
            "every record is bank content with its PDQ signal"
        );

        println!("records: {total} in pages of {PAGE}");
        println!(
            "client only (fetch + convert):       {:.2} s ({:.0} records/s)",
            client_only.as_secs_f64(),
            total as f64 / client_only.as_secs_f64()
        );
        println!(
            "fetcher into SQLite (fetch + store): {:.2} s ({:.0} records/s)",
            stored.as_secs_f64(),
            total as f64 / stored.as_secs_f64()
        );
        println!(
            "ratio stored / client only: {:.2}",
            stored.as_secs_f64() / client_only.as_secs_f64()
        );
    });
}
