//! The fetcher: pulls each enabled exchange from its stored checkpoint and applies every batch
//! with its checkpoint in one store transaction.
//!
//! Guarantees:
//! * a batch and the checkpoint after it are stored atomically (the store's
//!   `apply_fetch_batch`), guarded by the checkpoint the run started from, so a crash or an
//!   error never applies a batch twice nor advances the checkpoint past what was stored;
//! * one exchange is fetched by one fetcher at a time, across processes (the store's fetch
//!   lease, renewed while the fetch progresses);
//! * the HTTP requests of the next batch overlap the store write of the current one (the
//!   stream is polled by its own task into a two-slot channel); dropping the fetch future
//!   stops that task;
//! * a full listing (first fetch, a refetch after an unusable or stale checkpoint, a changed
//!   signal file, a new sample set) is mark-and-sweep: every record it lists is marked with the
//!   listing id, and only the batch that completes the listing deletes, in its transaction,
//!   the records it did not mark (records that vanished upstream; upstream never purges them).
//!   While the listing runs, and after a crash midway, the old records keep matching; unchanged
//!   records write no change log entries.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use omm_store::{
    CheckpointGuard, FetchBatch, FetchRunEnd, FetchedRecord, ListingMark, RecordUpdate, Store,
    StoreError,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::{api_by_name, Exchange, ExchangeApi, ExchangeSetup};
use crate::error::ExchangeError;
use crate::http::HttpSettings;
use crate::model::{Batch, Checkpoint, RecordChange};

/// Settings of the fetcher.
#[derive(Debug, Clone)]
pub struct FetcherSettings {
    /// HTTP behaviour of the exchange clients.
    pub http: HttpSettings,
    /// Pause between two passes of [`Fetcher::run`].
    pub interval: Duration,
    /// Longest time one exchange is fetched in one pass; the next pass resumes from its
    /// checkpoint (so one large exchange does not starve the others).
    pub max_run_time: Duration,
    /// Fetch lease time-to-live; renewed at a third of it while batches arrive.
    pub lease_ttl: Duration,
    /// Identifies this process in fetch leases.
    pub holder: String,
    /// Signal types the deployment supports; signals of other types are dropped, and a record
    /// left without signals is deleted. `None` keeps every type.
    pub signal_types: Option<BTreeSet<String>>,
}

impl Default for FetcherSettings {
    fn default() -> Self {
        FetcherSettings {
            http: HttpSettings::default(),
            interval: Duration::from_secs(60),
            max_run_time: Duration::from_secs(240),
            lease_ttl: Duration::from_secs(120),
            holder: format!(
                "{}:{}:{:016x}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
                std::process::id(),
                rand::random::<u64>()
            ),
            signal_types: None,
        }
    }
}

/// How one exchange's fetch run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The run stored everything it fetched; `up_to_date` if the stream was exhausted (else
    /// it stopped at `max_run_time` and the next pass continues).
    Completed {
        /// Whether the exchange is up to date.
        up_to_date: bool,
    },
    /// The exchange is disabled: nothing fetched.
    Disabled,
    /// Another fetcher holds the exchange's lease: nothing fetched.
    Busy,
    /// The run failed with this message (recorded as the exchange's `last_error`); the
    /// batches before the failure are stored, the checkpoint points right after them.
    Failed(String),
}

/// What a fetch run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// Exchange name.
    pub exchange: String,
    /// How it ended.
    pub outcome: FetchOutcome,
    /// Progress counters.
    pub progress: FetchProgress,
}

/// Counters of a running fetch, passed to the progress callback after every batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchProgress {
    /// Batches stored.
    pub batches: u64,
    /// Records created.
    pub records_added: u64,
    /// Records replaced.
    pub records_updated: u64,
    /// Records removed (including those swept at the end of a full listing).
    pub records_deleted: u64,
    /// Records of the exchange stored now.
    pub item_count: i64,
    /// The stored checkpoint's progress time.
    pub checkpoint_ts: Option<i64>,
}

/// Why a run failed (kept internal; reported as a message).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("{0}")]
    Exchange(#[from] ExchangeError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// Opens configured exchange `name` of API `api_name` with the API's stored credentials.
pub(crate) async fn open_exchange(
    store: &Store,
    apis: &ApiLookup,
    http: &HttpSettings,
    api_name: &str,
    name: &str,
    config: &Value,
) -> Result<Arc<dyn Exchange>, RunError> {
    let api = apis(api_name)
        .ok_or_else(|| RunError::Other(format!("exchange API '{api_name}' is not installed")))?;
    let credentials = match store.get_api_credentials(api_name).await? {
        Some(json) if api.credentials_schema().is_some() => Some(api.parse_credentials(&json)?),
        _ => None,
    };
    Ok(api.open(ExchangeSetup {
        name: name.to_string(),
        config: config.clone(),
        credentials,
        http: http.clone(),
    })?)
}

/// Stops the stream-polling task when the fetch future is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Finds the exchange API of an API name (default: the built-in [`api_by_name`]).
pub type ApiLookup = Arc<dyn Fn(&str) -> Option<&'static dyn ExchangeApi> + Send + Sync>;

/// Pulls exchanges into the store.
#[derive(Clone)]
pub struct Fetcher {
    store: Store,
    settings: Arc<FetcherSettings>,
    apis: ApiLookup,
}

impl Fetcher {
    /// A fetcher writing to `store`, with the built-in exchange APIs.
    pub fn new(store: Store, settings: FetcherSettings) -> Self {
        Fetcher {
            store,
            settings: Arc::new(settings),
            apis: Arc::new(api_by_name),
        }
    }

    /// Replaces the exchange API lookup (extensions, tests).
    pub fn with_api_lookup(mut self, apis: ApiLookup) -> Self {
        self.apis = apis;
        self
    }

    /// Runs passes over every enabled exchange until `shutdown` completes.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut quiet = |_: &str, _: &FetchProgress| {};
        loop {
            let pass = self.run_pass(None, &mut quiet);
            tokio::select! {
                _ = &mut shutdown => return,
                result = pass => {
                    if let Err(err) = result {
                        tracing::error!(%err, "fetch pass failed");
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }

    /// One pass: fetches every exchange (or only `only`) in name order. Store errors while
    /// listing exchanges are returned; per-exchange failures are in the reports.
    pub async fn run_pass(
        &self,
        only: Option<&str>,
        progress: &mut (dyn FnMut(&str, &FetchProgress) + Send),
    ) -> Result<Vec<FetchReport>, StoreError> {
        let names: Vec<String> = match only {
            Some(name) => vec![self.store.get_exchange(name).await?.name],
            None => self
                .store
                .list_exchanges()
                .await?
                .into_iter()
                .map(|e| e.name)
                .collect(),
        };
        let mut reports = Vec::with_capacity(names.len());
        for name in names {
            reports.push(self.fetch_exchange(&name, progress).await?);
        }
        Ok(reports)
    }

    /// Fetches one exchange from its checkpoint, for at most `max_run_time`.
    pub async fn fetch_exchange(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(&str, &FetchProgress) + Send),
    ) -> Result<FetchReport, StoreError> {
        let exchange = self.store.get_exchange(name).await?;
        let mut report = FetchReport {
            exchange: exchange.name.clone(),
            outcome: FetchOutcome::Disabled,
            progress: FetchProgress::default(),
        };
        if !exchange.enabled {
            return Ok(report);
        }
        let holder = &self.settings.holder;
        if !self
            .store
            .try_acquire_fetch_lease(name, holder, self.settings.lease_ttl)
            .await?
        {
            report.outcome = FetchOutcome::Busy;
            return Ok(report);
        }
        let result = async {
            self.store.start_fetch(name).await?;
            let run = self
                .run_exchange(
                    &exchange.api,
                    name,
                    &exchange.config,
                    &mut report.progress,
                    progress,
                )
                .await;
            let end = match &run {
                Ok(up_to_date) => FetchRunEnd {
                    succeeded: true,
                    up_to_date: *up_to_date,
                    error: None,
                },
                Err(err) => FetchRunEnd {
                    succeeded: false,
                    up_to_date: false,
                    error: Some(err.to_string()),
                },
            };
            self.store.finish_fetch(name, &end).await?;
            Ok::<_, StoreError>(run)
        }
        .await;
        // Release even if bookkeeping failed; the lease would expire anyway.
        if let Err(err) = self.store.release_fetch_lease(name, holder).await {
            tracing::warn!(exchange = name, %err, "cannot release fetch lease");
        }
        report.outcome = match result? {
            Ok(up_to_date) => FetchOutcome::Completed { up_to_date },
            Err(err) => {
                tracing::warn!(exchange = name, %err, "fetch failed");
                FetchOutcome::Failed(err.to_string())
            }
        };
        Ok(report)
    }

    async fn open(
        &self,
        api_name: &str,
        name: &str,
        config: &Value,
    ) -> Result<Arc<dyn Exchange>, RunError> {
        open_exchange(
            &self.store,
            &self.apis,
            &self.settings.http,
            api_name,
            name,
            config,
        )
        .await
    }

    /// Runs the stream; returns whether it was exhausted.
    async fn run_exchange(
        &self,
        api_name: &str,
        name: &str,
        config: &Value,
        counters: &mut FetchProgress,
        progress: &mut (dyn FnMut(&str, &FetchProgress) + Send),
    ) -> Result<bool, RunError> {
        let exchange = self.open(api_name, name, config).await?;
        let stored = self.store.fetch_checkpoint(name).await?;
        let mut guard = match &stored {
            Some(cp) => CheckpointGuard::Equals(cp.value.clone()),
            None => CheckpointGuard::Absent,
        };
        let checkpoint: Option<Checkpoint> = stored.as_ref().and_then(|cp| {
            serde_json::from_value(cp.value.clone())
                .map_err(
                    |e| tracing::warn!(exchange = name, %e, "unreadable checkpoint; refetching"),
                )
                .ok()
        });
        counters.item_count = self.store.fetch_status(name).await?.item_count;

        // Poll the stream in its own task so that fetching overlaps storing.
        let (tx, mut rx) = mpsc::channel::<Result<Batch, ExchangeError>>(2);
        let mut stream = exchange.fetch(checkpoint);
        let _poller = AbortOnDrop(tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }));

        let started = Instant::now();
        let mut lease_renewed = Instant::now();
        loop {
            if started.elapsed() >= self.settings.max_run_time {
                return Ok(false);
            }
            let Some(item) = rx.recv().await else {
                return Ok(true);
            };
            let batch = item?;
            if lease_renewed.elapsed() >= self.settings.lease_ttl / 3 {
                if !self
                    .store
                    .try_acquire_fetch_lease(name, &self.settings.holder, self.settings.lease_ttl)
                    .await?
                {
                    return Err(RunError::Other(
                        "fetch lease lost to another fetcher".into(),
                    ));
                }
                lease_renewed = Instant::now();
            }
            let checkpoint_value = serde_json::to_value(&batch.checkpoint)
                .map_err(|e| RunError::Other(format!("cannot serialise checkpoint: {e}")))?;
            let store_batch = FetchBatch {
                updates: self.to_updates(batch.changes),
                checkpoint: checkpoint_value.clone(),
                checkpoint_ts: batch.checkpoint.progress_ts,
                up_to_date: false,
                guard: std::mem::replace(&mut guard, CheckpointGuard::Equals(checkpoint_value)),
            };
            let outcome = match batch.listing {
                Some(l) => {
                    let mark = ListingMark {
                        listing_id: l.listing_id,
                        complete: l.complete,
                    };
                    self.store
                        .apply_listing_batch(name, &store_batch, &mark)
                        .await?
                }
                None => self.store.apply_fetch_batch(name, &store_batch).await?,
            };
            counters.batches += 1;
            counters.records_added += outcome.records_added;
            counters.records_updated += outcome.records_updated;
            counters.records_deleted += outcome.records_deleted;
            counters.item_count = outcome.item_count;
            counters.checkpoint_ts = batch.checkpoint.progress_ts;
            progress(name, counters);
        }
    }

    /// Converts changes, dropping signal types the deployment does not support.
    fn to_updates(&self, changes: Vec<RecordChange>) -> Vec<RecordUpdate> {
        changes
            .into_iter()
            .map(|change| match change {
                RecordChange::Delete { id } => RecordUpdate {
                    key: id,
                    record: None,
                },
                RecordChange::Upsert { id, record } => {
                    let mut seen_types = BTreeSet::new();
                    let signals: Vec<(String, String)> = record
                        .signals
                        .into_iter()
                        .filter(|s| {
                            self.settings
                                .signal_types
                                .as_ref()
                                .is_none_or(|types| types.contains(&s.signal_type))
                        })
                        .filter(|s| seen_types.insert(s.signal_type.clone()))
                        .map(|s| (s.signal_type, s.value))
                        .collect();
                    // The store deletes a record whose signal list is empty.
                    RecordUpdate {
                        key: id,
                        record: Some(FetchedRecord {
                            signals,
                            metadata: record.metadata,
                        }),
                    }
                }
            })
            .collect()
    }
}
