//! Test helpers: an in-process fake server with fault injection, and a consumer that applies
//! batches the way the fetcher does (each batch and its checkpoint atomically).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use omm_exchange::{
    Batch, Checkpoint, Exchange, ExchangeError, HttpSettings, Record, RecordChange,
};

/// A response to serve instead of the real one.
#[derive(Clone, Debug)]
pub struct Fault {
    pub status: u16,
    pub retry_after: Option<&'static str>,
    pub body: &'static str,
}

impl Fault {
    pub fn status(status: u16) -> Self {
        Fault {
            status,
            retry_after: None,
            body: "injected",
        }
    }
    pub fn retry_after(status: u16, secs: &'static str) -> Self {
        Fault {
            status,
            retry_after: Some(secs),
            body: "slow down",
        }
    }
}

/// Shared fault queue and request counter of a fake server.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultState>>,
}

#[derive(Default)]
struct FaultState {
    queue: VecDeque<Fault>,
    /// Fault served when the n-th (0-based) data request arrives, then removed.
    at_request: HashMap<usize, Fault>,
    requests: usize,
}

impl Faults {
    pub fn push(&self, fault: Fault) {
        self.inner.lock().unwrap().queue.push_back(fault);
    }
    pub fn at_request(&self, n: usize, fault: Fault) {
        self.inner.lock().unwrap().at_request.insert(n, fault);
    }
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }
    /// Counts the request; returns an injected response if one is due.
    pub fn check(&self) -> Option<Response> {
        let mut s = self.inner.lock().unwrap();
        let n = s.requests;
        s.requests += 1;
        let fault = s.at_request.remove(&n).or_else(|| s.queue.pop_front())?;
        let mut resp = (StatusCode::from_u16(fault.status).unwrap(), fault.body).into_response();
        if let Some(ra) = fault.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static(ra));
        }
        Some(resp)
    }
}

/// Serves `router` on 127.0.0.1:0; returns the base URL `http://127.0.0.1:port`.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

pub fn http() -> HttpSettings {
    HttpSettings::for_tests()
}

/// The fetcher's view of one exchange: records, checkpoint, listing marks.
#[derive(Default, Debug, Clone)]
pub struct Consumer {
    pub records: BTreeMap<String, Record>,
    pub checkpoint: Option<Checkpoint>,
    seen_in_listing: HashMap<String, i64>,
    pub batches: usize,
}

impl Consumer {
    /// Applies one batch and its checkpoint "in one transaction".
    pub fn apply(&mut self, batch: Batch) {
        // Progress only rewinds when a full listing restarts from scratch.
        let restarting = batch.listing.is_some_and(|l| {
            self.checkpoint.as_ref().and_then(|c| c.listing_id) != Some(l.listing_id)
        });
        if let (false, Some(prev), Some(new)) = (
            restarting,
            self.checkpoint.as_ref().and_then(|c| c.progress_ts),
            batch.checkpoint.progress_ts,
        ) {
            assert!(
                new >= prev,
                "checkpoint progress went backwards: {prev} -> {new}"
            );
        }
        for change in batch.changes {
            match change {
                RecordChange::Upsert { id, record } => {
                    assert!(!record.signals.is_empty(), "upsert without signals: {id}");
                    if let Some(l) = batch.listing {
                        self.seen_in_listing.insert(id.clone(), l.listing_id);
                    }
                    self.records.insert(id, record);
                }
                RecordChange::Delete { id } => {
                    self.records.remove(&id);
                    self.seen_in_listing.remove(&id);
                }
            }
        }
        if let Some(l) = batch.listing.filter(|l| l.complete) {
            let seen = &self.seen_in_listing;
            self.records
                .retain(|id, _| seen.get(id) == Some(&l.listing_id));
        }
        self.checkpoint = Some(batch.checkpoint);
        self.batches += 1;
    }

    /// Runs one fetch to its end (or first error), applying every batch.
    pub async fn fetch(&mut self, exchange: &dyn Exchange) -> Result<usize, ExchangeError> {
        self.fetch_at_most(exchange, usize::MAX).await
    }

    /// Like `fetch`, but abandons the stream after `max_batches` batches.
    pub async fn fetch_at_most(
        &mut self,
        exchange: &dyn Exchange,
        max_batches: usize,
    ) -> Result<usize, ExchangeError> {
        let mut stream = exchange.fetch(self.checkpoint.clone());
        let mut n = 0;
        while n < max_batches {
            match stream.next().await {
                Some(Ok(batch)) => {
                    self.apply(batch);
                    n += 1;
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(n)
    }

    /// `(record id, signal values)` pairs, for comparing states.
    pub fn summary(&self) -> Vec<(String, Vec<String>)> {
        self.records
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    r.signals
                        .iter()
                        .map(|s| format!("{} {}", s.signal_type, s.value))
                        .collect(),
                )
            })
            .collect()
    }
}

/// A deterministic 64-hex PDQ-like value for record `i`.
pub fn pdq(i: u64) -> String {
    format!(
        "{:064x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ 0xabcdef
    )
}

/// A deterministic 32-hex MD5-like value for record `i`.
pub fn md5(i: u64) -> String {
    format!(
        "{:032x}",
        (i as u128).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x1234
    )
}

/// A store for a test: SQLite in a temporary directory, or a PostgreSQL schema of its own.
/// Both are removed when it is dropped, so a test leaves nothing behind.
pub struct TestStore {
    pub store: omm_store::Store,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

/// SQLite always, and PostgreSQL (schema named `<prefix>_<random>`) when
/// `OMM_TEST_DATABASE_URL` is set.
pub async fn stores(prefix: &str) -> Vec<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![TestStore {
        store: omm_store::Store::open_sqlite(dir.path().join("omm.db"))
            .await
            .unwrap(),
        _dir: Some(dir),
        schema: None,
    }];
    match std::env::var("OMM_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = format!("{prefix}_{:016x}", rand::random::<u64>());
            let mut o = omm_store::PostgresOptions::new(url);
            o.schema = Some(schema.clone());
            o.max_connections = 4;
            out.push(TestStore {
                store: omm_store::Store::open_postgres(o).await.unwrap(),
                _dir: None,
                schema: Some(schema),
            });
        }
        Err(_) => eprintln!("OMM_TEST_DATABASE_URL not set: PostgreSQL variant skipped"),
    }
    out
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let (Some(schema), Ok(url)) = (self.schema.take(), std::env::var("OMM_TEST_DATABASE_URL"))
        else {
            return;
        };
        // A runtime of its own: this runs inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}
