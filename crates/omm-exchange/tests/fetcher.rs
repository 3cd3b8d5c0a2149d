//! The fetcher on a real SQLite store: atomic batches, failures, aborts, leases, listings.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::pdq;
use omm_exchange::fetcher::{FetchOutcome, FetchProgress, Fetcher, FetcherSettings};
use omm_exchange::{
    api_by_name, Batch, BatchStream, Checkpoint, Exchange, ExchangeApi, ExchangeError,
    ExchangeSetup, HttpSettings, ObjectSchema, Record, RecordChange, Signal,
};
use omm_store::{NewExchange, Store, StoreError};
use serde_json::{json, Value};

/// A scripted exchange: records `r0..r{total}` in pages; `generation` changes every value;
/// every `delete_every`-th record is deleted in generation 2; fails once when the shared
/// batch counter reaches `fail_at`.
struct ScriptedApi {
    shared: Arc<Shared>,
}

struct Shared {
    served: AtomicUsize,
    fail_at: AtomicUsize,
    delay_ms: u64,
}

#[derive(serde::Deserialize, Clone)]
struct ScriptConfig {
    total: u64,
    page: u64,
    #[serde(default)]
    generation: u64,
}

impl ExchangeApi for ScriptedApi {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema::default()
    }
    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        Ok(config.clone())
    }
    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let config: ScriptConfig = serde_json::from_value(setup.config)
            .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))?;
        Ok(Arc::new(Scripted {
            api: self.shared.clone(),
            config,
        }))
    }
}

struct Scripted {
    api: Arc<Shared>,
    config: ScriptConfig,
}

fn value_of(i: u64, generation: u64) -> String {
    pdq(i + generation * 1_000_000)
}

impl Exchange for Scripted {
    fn api(&self) -> &'static str {
        "scripted"
    }
    fn fetch(&self, checkpoint: Option<Checkpoint>) -> BatchStream {
        let api = self.api.clone();
        let cfg = self.config.clone();
        let start = checkpoint.map_or(0, |c| c.state["next"].as_u64().unwrap());
        Box::pin(async_stream::stream! {
            let mut next = start;
            while next < cfg.total {
                if api.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(api.delay_ms)).await;
                }
                let n = api.served.fetch_add(1, Ordering::SeqCst);
                if n == api.fail_at.load(Ordering::SeqCst) {
                    yield Err(ExchangeError::Http { status: 502, url: "http://scripted/".into(), message: "upstream broke".into() });
                    return;
                }
                let end = (next + cfg.page).min(cfg.total);
                let changes = (next..end)
                    .map(|i| {
                        if cfg.generation >= 2 && i % 3 == 0 {
                            RecordChange::Delete { id: format!("r{i}") }
                        } else {
                            let mut signals = vec![Signal::new("pdq", value_of(i, cfg.generation))];
                            if i % 10 == 7 {
                                signals = vec![Signal::new("not_installed", "x")];
                            }
                            RecordChange::Upsert { id: format!("r{i}"), record: Record { signals, metadata: json!({"i": i}) } }
                        }
                    })
                    .collect();
                let mut checkpoint: Checkpoint = serde_json::from_value(json!({
                    "version": 1, "api": "scripted", "created_at": 0, "progress_ts": end as i64, "state": {"next": end}
                })).unwrap();
                checkpoint.created_at = 1;
                yield Ok(Batch { changes, checkpoint, listing: None });
                next = end;
            }
        })
    }
}

fn scripted(fail_at: usize, delay_ms: u64) -> &'static ScriptedApi {
    Box::leak(Box::new(ScriptedApi {
        shared: Arc::new(Shared {
            served: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(fail_at),
            delay_ms,
        }),
    }))
}

fn settings() -> FetcherSettings {
    FetcherSettings {
        http: HttpSettings::for_tests(),
        signal_types: Some(["pdq".to_string(), "video_md5".to_string()].into()),
        ..FetcherSettings::default()
    }
}

fn fetcher(store: &Store, api: &'static ScriptedApi) -> Fetcher {
    Fetcher::new(store.clone(), settings()).with_api_lookup(Arc::new(move |name| match name {
        "scripted" => Some(api as &'static dyn ExchangeApi),
        other => api_by_name(other),
    }))
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path().join("omm.db")).await.unwrap();
    (dir, store)
}

async fn create(store: &Store, name: &str, api: &str, config: Value) {
    store
        .create_exchange(&NewExchange {
            name: name.into(),
            api: api.into(),
            enabled: true,
            config,
        })
        .await
        .unwrap();
}

/// Every stored record of a scripted exchange: key -> pdq value.
async fn bank(store: &Store, name: &str, total: u64) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in 0..total {
        match store.get_exchange_record(name, &format!("r{i}")).await {
            Ok(rec) => {
                out.insert(rec.key, rec.signals.get("pdq").cloned().unwrap_or_default());
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    out
}

fn expected(total: u64, generation: u64) -> BTreeMap<String, String> {
    (0..total)
        .filter(|i| i % 10 != 7 && !(generation >= 2 && i % 3 == 0))
        .map(|i| (format!("r{i}"), value_of(i, generation)))
        .collect()
}

fn quiet() -> impl FnMut(&str, &FetchProgress) + Send {
    |_: &str, _: &FetchProgress| {}
}

#[tokio::test]
async fn error_mid_fetch_stores_prefix_once_and_resumes() {
    let (_dir, store) = store().await;
    let api = scripted(4, 0);
    create(
        &store,
        "SCRIPTED",
        "scripted",
        json!({"total": 1000, "page": 100}),
    )
    .await;
    let f = fetcher(&store, api);
    let report = f.fetch_exchange("SCRIPTED", &mut quiet()).await.unwrap();
    assert!(
        matches!(&report.outcome, FetchOutcome::Failed(m) if m.contains("upstream broke")),
        "{report:?}"
    );
    let status = store.fetch_status("SCRIPTED").await.unwrap();
    assert_eq!(status.last_succeeded, Some(false));
    assert!(status.last_error.unwrap().contains("HTTP 502"));
    assert!(!status.up_to_date && status.running_since.is_none());
    assert_eq!(status.item_count, 360, "4 batches of 100, 10% unsupported");
    let cp = store.fetch_checkpoint("SCRIPTED").await.unwrap().unwrap();
    assert_eq!(
        cp.value["state"]["next"], 400,
        "checkpoint = last stored batch"
    );
    assert_eq!(cp.ts, Some(400));

    let report = f.fetch_exchange("SCRIPTED", &mut quiet()).await.unwrap();
    assert_eq!(report.outcome, FetchOutcome::Completed { up_to_date: true });
    assert_eq!(
        report.progress.records_added, 540,
        "only the rest was added"
    );
    assert_eq!(report.progress.records_updated, 0, "nothing applied twice");
    let status = store.fetch_status("SCRIPTED").await.unwrap();
    assert!(
        status.up_to_date && status.last_error.is_none() && status.last_succeeded == Some(true)
    );
    assert_eq!(bank(&store, "SCRIPTED", 1000).await, expected(1000, 0));
}

#[tokio::test]
async fn store_failure_rolls_back_the_whole_batch() {
    let (_dir, store) = store().await;
    let api = scripted(usize::MAX, 0);
    create(
        &store,
        "SCRIPTED",
        "scripted",
        json!({"total": 300, "page": 100}),
    )
    .await;
    let f = fetcher(&store, api);
    store.inject_fault_before_checkpoint(true);
    let report = f.fetch_exchange("SCRIPTED", &mut quiet()).await.unwrap();
    assert!(
        matches!(report.outcome, FetchOutcome::Failed(_)),
        "{report:?}"
    );
    assert_eq!(store.fetch_status("SCRIPTED").await.unwrap().item_count, 0);
    assert!(store.fetch_checkpoint("SCRIPTED").await.unwrap().is_none());
    store.inject_fault_before_checkpoint(false);
    let report = f.fetch_exchange("SCRIPTED", &mut quiet()).await.unwrap();
    assert_eq!(report.outcome, FetchOutcome::Completed { up_to_date: true });
    assert_eq!(bank(&store, "SCRIPTED", 300).await, expected(300, 0));
}

#[tokio::test]
async fn abort_between_batches_then_restart_equals_uninterrupted() {
    let (_dir, store) = store().await;
    let api = scripted(usize::MAX, 5);
    create(
        &store,
        "PARTS",
        "scripted",
        json!({"total": 2000, "page": 50}),
    )
    .await;
    create(
        &store,
        "WHOLE",
        "scripted",
        json!({"total": 2000, "page": 50}),
    )
    .await;
    let f = fetcher(&store, api);
    for _ in 0..3 {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let f2 = f.clone();
        let task = tokio::spawn(async move {
            let mut cb = move |_: &str, p: &FetchProgress| {
                let _ = tx.send(p.batches);
            };
            f2.fetch_exchange("PARTS", &mut cb).await
        });
        // Abort after a few batches were stored.
        while rx.recv().await.unwrap() < 4 {}
        task.abort();
        let _ = task.await;
    }
    let partial = store.fetch_status("PARTS").await.unwrap();
    assert!(partial.item_count > 0 && partial.item_count < 1800);
    let report = f.fetch_exchange("PARTS", &mut quiet()).await.unwrap();
    assert_eq!(report.outcome, FetchOutcome::Completed { up_to_date: true });
    f.fetch_exchange("WHOLE", &mut quiet()).await.unwrap();
    let parts = bank(&store, "PARTS", 2000).await;
    assert_eq!(parts, bank(&store, "WHOLE", 2000).await);
    assert_eq!(parts, expected(2000, 0));
}

#[tokio::test]
async fn updates_deletes_busy_and_disabled() {
    let (_dir, store) = store().await;
    let api = scripted(usize::MAX, 0);
    create(
        &store,
        "SCRIPTED",
        "scripted",
        json!({"total": 500, "page": 100}),
    )
    .await;
    let f = fetcher(&store, api);
    f.fetch_exchange("SCRIPTED", &mut quiet()).await.unwrap();
    // Generation 2 from scratch: values change, every third record is deleted.
    store
        .update_exchange(
            "SCRIPTED",
            &omm_store::ExchangeUpdate {
                config: Some(json!({"total": 500, "page": 100, "generation": 2})),
                enabled: None,
            },
        )
        .await
        .unwrap();
    store.reset_fetch_state("SCRIPTED").await.unwrap();
    f.fetch_exchange("SCRIPTED", &mut quiet()).await.unwrap();
    assert_eq!(bank(&store, "SCRIPTED", 500).await, expected(500, 2));

    // Another holder's lease: busy, nothing touched.
    assert!(store
        .try_acquire_fetch_lease("SCRIPTED", "someone-else", Duration::from_secs(60))
        .await
        .unwrap());
    let report = f.fetch_exchange("SCRIPTED", &mut quiet()).await.unwrap();
    assert_eq!(report.outcome, FetchOutcome::Busy);
    store
        .release_fetch_lease("SCRIPTED", "someone-else")
        .await
        .unwrap();

    store
        .update_exchange(
            "SCRIPTED",
            &omm_store::ExchangeUpdate {
                enabled: Some(false),
                config: None,
            },
        )
        .await
        .unwrap();
    let before = store.fetch_status("SCRIPTED").await.unwrap();
    let report = f.fetch_exchange("SCRIPTED", &mut quiet()).await.unwrap();
    assert_eq!(report.outcome, FetchOutcome::Disabled);
    assert_eq!(
        store.fetch_status("SCRIPTED").await.unwrap(),
        before,
        "disabled: no running marker left behind"
    );
}

#[tokio::test]
async fn local_file_listing_replaces_removed_lines_and_pass_runs_all() {
    let (dir, store) = store().await;
    let path = dir.path().join("list.txt");
    std::fs::write(
        &path,
        (0..30)
            .map(|i| format!("pdq {}\n", pdq(i)))
            .collect::<String>(),
    )
    .unwrap();
    create(
        &store,
        "FILE",
        "local_file",
        json!({"filename": path.to_str().unwrap()}),
    )
    .await;
    create(&store, "SAMPLE", "sample", json!({})).await;
    let f = Fetcher::new(store.clone(), settings());
    let reports = f.run_pass(None, &mut quiet()).await.unwrap();
    assert_eq!(reports.len(), 2);
    assert!(
        reports
            .iter()
            .all(|r| r.outcome == FetchOutcome::Completed { up_to_date: true }),
        "{reports:?}"
    );
    assert_eq!(store.fetch_status("FILE").await.unwrap().item_count, 30);
    assert_eq!(
        store.fetch_status("SAMPLE").await.unwrap().item_count,
        18,
        "16 pdq + 2 video_md5 installed"
    );

    std::fs::write(&path, format!("pdq {}\npdq {}\n", pdq(1), pdq(100))).unwrap();
    f.run_pass(Some("FILE"), &mut quiet()).await.unwrap();
    assert_eq!(store.fetch_status("FILE").await.unwrap().item_count, 2);
    assert!(store
        .get_exchange_record("FILE", &format!("pdq {}", pdq(100)))
        .await
        .is_ok());
    assert!(store
        .get_exchange_record("FILE", &format!("pdq {}", pdq(2)))
        .await
        .is_err());
    assert!(f.run_pass(Some("NOPE"), &mut quiet()).await.is_err());
}
