//! Full re-listings are mark-and-sweep (SQLite, and PostgreSQL when OMM_TEST_DATABASE_URL is
//! set): while a re-listing runs, and after it is killed midway, the bank keeps every old
//! record; unchanged records write no change log entries; records that vanished upstream are
//! deleted only when the listing completes, and the result equals an uninterrupted fetch.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::pdq;
use omm_exchange::fetcher::{FetchOutcome, FetchProgress, Fetcher, FetcherSettings};
use omm_exchange::{
    api_by_name, Batch, BatchStream, Checkpoint, Exchange, ExchangeApi, ExchangeError,
    ExchangeSetup, HttpSettings, ListingProgress, ObjectSchema, Record, RecordChange, Signal,
};
use omm_store::{ChangeEvent, ExchangeUpdate, NewExchange, Store};
use serde_json::{json, Value};

/// Lists every live record in pages, always as a full listing (like an exchange whose
/// checkpoint went stale). Generation 1 drops every third record and changes every fifth.
struct ListingApi {
    next_listing: AtomicI64,
    delay_ms: u64,
}

#[derive(serde::Deserialize, Clone)]
struct Config {
    total: u64,
    page: u64,
    generation: u64,
}

fn live(i: u64, generation: u64) -> bool {
    !(generation >= 1 && i % 3 == 0)
}

fn value(i: u64, generation: u64) -> String {
    if i % 5 == 0 {
        pdq(i + generation * 1_000_000)
    } else {
        pdq(i)
    }
}

impl ExchangeApi for ListingApi {
    fn name(&self) -> &'static str {
        "listing"
    }
    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema::default()
    }
    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        Ok(config.clone())
    }
    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let config: Config = serde_json::from_value(setup.config)
            .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))?;
        let api: &'static ListingApi = Box::leak(Box::new(ListingApi {
            next_listing: AtomicI64::new(self.next_listing.fetch_add(1000, Ordering::SeqCst)),
            delay_ms: self.delay_ms,
        }));
        Ok(Arc::new(Listing { api, config }))
    }
}

struct Listing {
    api: &'static ListingApi,
    config: Config,
}

fn checkpoint(listing: Option<i64>, state: Value) -> Checkpoint {
    serde_json::from_value(json!({
        "version": 1, "api": "listing", "created_at": 1, "progress_ts": null,
        "listing_id": listing, "state": state
    }))
    .unwrap()
}

impl Exchange for Listing {
    fn api(&self) -> &'static str {
        "listing"
    }
    fn fetch(&self, cp: Option<Checkpoint>) -> BatchStream {
        let cfg = self.config.clone();
        let api = self.api;
        // Resume an unfinished listing; anything else starts a new one.
        let (listing_id, start) = match cp.as_ref().and_then(|c| c.listing_id.map(|l| (l, c))) {
            Some((l, c)) => (l, c.state["next"].as_u64().unwrap_or(0)),
            None => (api.next_listing.fetch_add(1, Ordering::SeqCst), 0),
        };
        Box::pin(async_stream::stream! {
            let mut next = start;
            while next < cfg.total {
                if api.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(api.delay_ms)).await;
                }
                let end = (next + cfg.page).min(cfg.total);
                let changes = (next..end)
                    .filter(|i| live(*i, cfg.generation))
                    .map(|i| RecordChange::Upsert {
                        id: format!("r{i}"),
                        record: Record {
                            signals: vec![Signal::new("pdq", value(i, cfg.generation))],
                            metadata: json!({"i": i}),
                        },
                    })
                    .collect();
                let complete = end == cfg.total;
                let cp = if complete {
                    checkpoint(None, json!({"done": true}))
                } else {
                    checkpoint(Some(listing_id), json!({"next": end}))
                };
                yield Ok(Batch { changes, checkpoint: cp, listing: Some(ListingProgress { listing_id, complete }) });
                next = end;
            }
        })
    }
}

fn fetcher(store: &Store, delay_ms: u64) -> Fetcher {
    let api: &'static ListingApi = Box::leak(Box::new(ListingApi {
        next_listing: AtomicI64::new(1),
        delay_ms,
    }));
    Fetcher::new(
        store.clone(),
        FetcherSettings {
            http: HttpSettings::for_tests(),
            ..FetcherSettings::default()
        },
    )
    .with_api_lookup(Arc::new(move |name| match name {
        "listing" => Some(api as &'static dyn ExchangeApi),
        other => api_by_name(other),
    }))
}

async fn create(store: &Store, name: &str) {
    store
        .create_exchange(&NewExchange {
            name: name.into(),
            api: "listing".into(),
            enabled: true,
            config: json!({"total": 300, "page": 25, "generation": 0}),
        })
        .await
        .unwrap();
}

async fn to_generation_1(store: &Store, name: &str) {
    store
        .update_exchange(
            name,
            &ExchangeUpdate {
                config: Some(json!({"total": 300, "page": 25, "generation": 1})),
                enabled: None,
            },
        )
        .await
        .unwrap();
}

/// Record key -> pdq of every content of the bank.
async fn bank(store: &Store, name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.list_content(name, after, 500).await.unwrap();
        let Some(last) = page.last() else { return out };
        after = last.id;
        for c in page {
            let key = c.provenance.unwrap().record_key;
            out.insert(key, c.signals["pdq"].clone());
        }
    }
}

fn expected(generation: u64) -> BTreeMap<String, String> {
    (0..300)
        .filter(|i| live(*i, generation))
        .map(|i| (format!("r{i}"), value(i, generation)))
        .collect()
}

fn quiet() -> impl FnMut(&str, &FetchProgress) + Send {
    |_: &str, _: &FetchProgress| {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_relisting_keeps_the_bank_then_sweeps_on_completion() {
    for ts in common::stores("omm_ls").await {
        let store = &ts.store;
        create(store, "PARTS").await;
        create(store, "WHOLE").await;
        let f = fetcher(store, 5);
        for name in ["PARTS", "WHOLE"] {
            let r = f.fetch_exchange(name, &mut quiet()).await.unwrap();
            assert_eq!(r.outcome, FetchOutcome::Completed { up_to_date: true });
            assert_eq!(bank(store, name).await, expected(0));
            to_generation_1(store, name).await;
        }
        let head = store.current_seq().await.unwrap();

        // Re-list PARTS, killing the fetch (dropping its future) after a few batches, twice.
        for _ in 0..2 {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let f2 = f.clone();
            let task = tokio::spawn(async move {
                let mut cb = move |_: &str, p: &FetchProgress| {
                    let _ = tx.send(p.batches);
                };
                f2.fetch_exchange("PARTS", &mut cb).await
            });
            while rx.recv().await.unwrap() < 3 {}
            task.abort();
            let _ = task.await;
            // Killed midway: every old record is still there and matching.
            let now = bank(store, "PARTS").await;
            assert_eq!(
                now.keys().collect::<BTreeSet<_>>(),
                expected(0).keys().collect::<BTreeSet<_>>(),
                "no record may disappear before the listing completes"
            );
        }
        // Only changed records wrote to the change log: no deletes, no churn of unchanged ones.
        let mut changes = Vec::new();
        let mut after = head;
        loop {
            let page = store.changes_since(after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            changes.extend(page);
        }
        let changed: BTreeSet<String> = (0..300)
            .filter(|i| i % 5 == 0 && live(*i, 1))
            .flat_map(|i| [value(i, 0), value(i, 1)])
            .collect();
        assert!(!changes.is_empty(), "the listing progressed");
        for c in &changes {
            match &c.event {
                ChangeEvent::SignalUpserted { value, .. }
                | ChangeEvent::SignalDeleted { value, .. } => {
                    assert!(
                        changed.contains(value),
                        "churn on an unchanged record: {c:?}"
                    )
                }
                other => panic!("unexpected change before completion: {other:?}"),
            }
        }

        // Restart: the listing resumes and completes; vanished records go only now.
        let r = f.fetch_exchange("PARTS", &mut quiet()).await.unwrap();
        assert_eq!(r.outcome, FetchOutcome::Completed { up_to_date: true });
        f.fetch_exchange("WHOLE", &mut quiet()).await.unwrap();
        let parts = bank(store, "PARTS").await;
        assert_eq!(parts, expected(1));
        assert_eq!(parts, bank(store, "WHOLE").await);
        assert_eq!(
            store.fetch_status("PARTS").await.unwrap().item_count,
            expected(1).len() as i64
        );
    }
}
