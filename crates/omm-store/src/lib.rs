//! The single source of truth: banks, content, signals, exchanges and the change log,
//! on embedded SQLite or PostgreSQL.
//!
//! * [`Store`] is the one handle everybody holds (cheap to clone). Open it with
//!   [`Store::open`] (a `postgres://` URL or a SQLite path), which creates the database if
//!   needed and applies the embedded, versioned migrations.
//! * Curator operations: banks, bank content (scoped to its bank), exchanges, credentials,
//!   signal type overrides, fetch status.
//! * The fetcher writes with [`Store::apply_fetch_batch`] (records + checkpoint in one
//!   transaction) and serialises itself across processes with
//!   [`Store::try_acquire_fetch_lease`].
//! * Matchers start from [`Store::load_state`] and tail [`Store::changes_since`]; see
//!   [`changes`] for the consistency argument.
//!
//! Errors are [`StoreError`]; no SQL error text reaches a caller except through
//! `StoreError::Backend`'s `source()`.
//!
//! # Backends
//!
//! * **SQLite** (rusqlite, bundled): one writer connection behind a mutex, a small pool of
//!   read-only connections, WAL, `synchronous = NORMAL` (a killed process loses nothing; a
//!   power cut may lose the last commits, never corrupt). All calls run on tokio's blocking
//!   pool. Change notifications are in-process only: a second process writing the same file
//!   is seen by polling.
//! * **PostgreSQL** (tokio-postgres + deadpool): a pool for the primary and an optional one
//!   for a read replica. Reads that tolerate replica lag (change log, start-up state,
//!   [`Store::get_contents`], [`Store::signal_type_stats`]) use the replica; curator reads use
//!   the primary so that a client reads its own writes. Connections are plain TCP (no TLS).
//!   Bulk writes are set-based (`UNNEST` arrays, one data-modifying CTE for new records).
//!
//! # Cost of an ordered change log on PostgreSQL
//!
//! Write transactions of one schema are serialised by a transaction-scoped advisory lock held
//! until after commit (see [`changes`]), so they cannot share a WAL flush: the rate of small
//! change-logged transactions is bounded by 1 / (commit fsync latency), whatever the number
//! of writers. Fetch batches (thousands of records per transaction) are unaffected; curator
//! writes are human-paced. `BENCHMARKS.md` at the repository root has the measured figures. Reads never take
//! the lock.
//!
//! # Data model notes
//!
//! * Content ids are never reused (SQLite `AUTOINCREMENT`, PostgreSQL identity).
//! * A content keeps its bank for life; signals carry the bank id (denormalised) so that
//!   change log entries and start-up reads need no join.
//! * The bank of an exchange cannot be deleted on its own ([`StoreError::Conflict`]); delete
//!   the exchange. Renaming it is fine (the link is by id).
//! * Record keys and all JSON (metadata, config, checkpoint, credentials) are stored verbatim
//!   as text: what goes in comes back byte-for-byte equal after parsing.

#![warn(missing_docs)]

mod batch;
pub mod changes;
pub mod error;
pub mod model;
mod postgres;
mod reviews;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use changes::{
    Change, ChangeEvent, ChangeSubscription, ContentState, ExchangeState, StateSnapshot,
};
pub use error::{Entity, Result, StoreError};
pub use model::*;

/// Default SQLite database file, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "./omm-data/omm.db";

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Options for opening a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/db` URL of the primary.
    pub url: String,
    /// Optional URL of a read replica, used for read-only queries (listings, lookups,
    /// start-up state, change log tailing). Writes always go to the primary.
    pub read_replica_url: Option<String>,
    /// Maximum pooled connections per URL.
    pub max_connections: usize,
    /// Schema to use (set as `search_path` on every connection; created if missing).
    /// `None` uses the server's default search path.
    pub schema: Option<String>,
}

impl PostgresOptions {
    /// Options for `url` with defaults (16 connections, default schema, no replica).
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            read_replica_url: None,
            max_connections: 16,
            schema: None,
        }
    }
}

/// One applied schema migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Version number (1, 2, ...).
    pub version: i64,
    /// Short name.
    pub name: String,
    /// When it was applied (Unix seconds).
    pub applied_at: i64,
}

/// The store handle.
///
/// An enum over the two backends behind a struct, rather than `Arc<dyn Store>`: the set of
/// backends is closed and known here, calls need no boxing of futures, streaming results can
/// use concrete types, and callers hold a plain `Store` (`Clone + Send + Sync`) without
/// generics or `async_trait`. Tests of other crates can open a SQLite store in a temp dir,
/// which is as fast as a mock and behaves like production.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.kind())
            .finish()
    }
}

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &*$self.backend {
            Backend::Sqlite(b) => b.$method($($arg),*).await,
            Backend::Postgres(b) => b.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens `target`: a `postgres://` / `postgresql://` URL, or a SQLite file given as a
    /// path or `sqlite://path` / `sqlite:path`. Creates and migrates the database as needed.
    pub async fn open(target: &str) -> Result<Store> {
        if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            Store::open_postgres(PostgresOptions::new(target)).await
        } else {
            let path = target
                .strip_prefix("sqlite://")
                .or_else(|| target.strip_prefix("sqlite:"))
                .unwrap_or(target);
            Store::open_sqlite(path).await
        }
    }

    /// Opens (creating parent directories, the file and the schema if needed) a SQLite store.
    pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<Store> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let b = sqlite::SqliteStore::open(path).await?;
        Ok(Store {
            backend: Arc::new(Backend::Sqlite(b)),
        })
    }

    /// Connects to PostgreSQL and applies pending migrations.
    pub async fn open_postgres(options: PostgresOptions) -> Result<Store> {
        let b = postgres::PgStore::open(options).await?;
        Ok(Store {
            backend: Arc::new(Backend::Postgres(b)),
        })
    }

    /// Which backend this store uses.
    pub fn kind(&self) -> BackendKind {
        match &*self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The migrations applied to this database, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>> {
        dispatch!(self.applied_migrations())
    }

    // ---------------------------------------------------------------- banks

    /// All banks (including exchange-backed ones), ordered by name.
    pub async fn list_banks(&self) -> Result<Vec<Bank>> {
        dispatch!(self.list_banks())
    }

    /// The bank called `name`, or `NotFound`.
    pub async fn get_bank(&self, name: &str) -> Result<Bank> {
        dispatch!(self.get_bank(name))
    }

    /// The bank with this id, or `NotFound`.
    pub async fn get_bank_by_id(&self, id: i64) -> Result<Bank> {
        dispatch!(self.get_bank_by_id(id))
    }

    /// Creates a bank. `InvalidName` for a bad name, `AlreadyExists` if taken,
    /// `InvalidArgument` for a non-finite ratio. The ratio is not range-checked (HMA accepts
    /// any finite value; the matcher's coin flip handles < 0 and > 1).
    pub async fn create_bank(&self, bank: &NewBank) -> Result<Bank> {
        validate_bank_name(&bank.name)?;
        model::validate_ratio(bank.enabled_ratio)?;
        dispatch!(self.create_bank(bank))
    }

    /// Renames and/or sets the ratio of bank `name`; returns the new state.
    /// `NotFound`, `InvalidName`, `AlreadyExists` (new name taken).
    pub async fn update_bank(&self, name: &str, update: &BankUpdate) -> Result<Bank> {
        if let Some(n) = &update.name {
            validate_bank_name(n)?;
        }
        if let Some(r) = update.enabled_ratio {
            model::validate_ratio(r)?;
        }
        dispatch!(self.update_bank(name, update))
    }

    /// Deletes bank `name` with its content and signals. Returns whether it existed.
    /// `Conflict` for the bank of an exchange: delete the exchange instead (upstream's
    /// bankless exchanges break every later fetch, spec §10.1 #19).
    pub async fn delete_bank(&self, name: &str) -> Result<bool> {
        dispatch!(self.delete_bank(name))
    }

    // ---------------------------------------------------------------- content

    /// Adds content with its signals to bank `bank`. `NotFound` for an unknown bank,
    /// `InvalidArgument` for a long note, negative `disable_until_ts` or empty signal type.
    pub async fn create_content(&self, bank: &str, content: &NewContent) -> Result<Content> {
        model::validate_note(&content.note)?;
        model::validate_disable_until(content.disable_until_ts)?;
        model::validate_signals(&content.signals)?;
        dispatch!(self.create_content(bank, content))
    }

    /// Content `id` of bank `bank`, with signals and provenance. `NotFound` if the bank does
    /// not exist (entity `Bank`) or the content is not in it (entity `Content`).
    pub async fn get_content(&self, bank: &str, id: i64) -> Result<Content> {
        dispatch!(self.get_content(bank, id))
    }

    /// Content by ids, in any bank, with signals and provenance (for rich lookup responses).
    /// Unknown ids are skipped; the result is ordered by id.
    pub async fn get_contents(&self, ids: &[i64]) -> Result<Vec<Content>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.get_contents(ids))
    }

    /// Updates content `id` of bank `bank`; returns the new state. Errors as `get_content`,
    /// plus `InvalidArgument` for a long note or negative `disable_until_ts`.
    pub async fn update_content(
        &self,
        bank: &str,
        id: i64,
        update: &ContentUpdate,
    ) -> Result<Content> {
        if let Some(note) = &update.note {
            model::validate_note(note)?;
        }
        if let Some(ts) = update.disable_until_ts {
            model::validate_disable_until(ts)?;
        }
        dispatch!(self.update_content(bank, id, update))
    }

    /// Deletes content `id` of bank `bank` with its signals. Returns whether it existed in
    /// that bank; `NotFound` if the bank does not exist. Imported content comes back when
    /// its exchange record is next updated.
    pub async fn delete_content(&self, bank: &str, id: i64) -> Result<bool> {
        dispatch!(self.delete_content(bank, id))
    }

    /// A page of bank `bank`'s content with id > `after_id`, ordered by id, at most `limit`.
    pub async fn list_content(
        &self,
        bank: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Content>> {
        dispatch!(self.list_content(bank, after_id, limit))
    }

    /// Number of content items in bank `bank`.
    pub async fn count_content(&self, bank: &str) -> Result<i64> {
        dispatch!(self.count_content(bank))
    }

    /// A page of bank `bank`'s signals of content with id > `after_content_id`, ordered by
    /// content id then type; at most `limit` contents' signals.
    pub async fn list_bank_signals(
        &self,
        bank: &str,
        after_content_id: i64,
        limit: u32,
    ) -> Result<Vec<SignalRow>> {
        dispatch!(self.list_bank_signals(bank, after_content_id, limit))
    }

    /// Signals of content `content_id` by type (empty if none or no such content).
    pub async fn get_signals(
        &self,
        content_id: i64,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        dispatch!(self.get_signals(content_id))
    }

    /// Count and newest creation time of stored signals per type.
    pub async fn signal_type_stats(&self) -> Result<Vec<SignalTypeStats>> {
        dispatch!(self.signal_type_stats())
    }

    // ---------------------------------------------------------------- exchanges

    /// Creates an exchange and its bank (same name, ratio 1.0) in one transaction.
    /// `InvalidName`; `AlreadyExists` (entity `Exchange` or `Bank`) if either name is taken.
    pub async fn create_exchange(&self, exchange: &NewExchange) -> Result<Exchange> {
        validate_bank_name(&exchange.name)?;
        dispatch!(self.create_exchange(exchange))
    }

    /// All exchanges, ordered by name.
    pub async fn list_exchanges(&self) -> Result<Vec<Exchange>> {
        dispatch!(self.list_exchanges())
    }

    /// The exchange called `name`, or `NotFound`.
    pub async fn get_exchange(&self, name: &str) -> Result<Exchange> {
        dispatch!(self.get_exchange(name))
    }

    /// Enables/disables exchange `name` and/or replaces its config; returns the new state.
    pub async fn update_exchange(&self, name: &str, update: &ExchangeUpdate) -> Result<Exchange> {
        dispatch!(self.update_exchange(name, update))
    }

    /// Deletes exchange `name` with its bank, records, content, fetch status and lease.
    /// Returns whether it existed.
    pub async fn delete_exchange(&self, name: &str) -> Result<bool> {
        dispatch!(self.delete_exchange(name))
    }

    /// One stored record of exchange `exchange` by key, or `NotFound`.
    pub async fn get_exchange_record(&self, exchange: &str, key: &str) -> Result<ExchangeRecord> {
        dispatch!(self.get_exchange_record(exchange, key))
    }

    // ---------------------------------------------------------------- credentials

    /// Stores credentials for exchange API `api` (shared by all its exchanges).
    /// `None` or an empty JSON object clears them.
    pub async fn set_api_credentials(
        &self,
        api: &str,
        credentials: Option<&serde_json::Value>,
    ) -> Result<()> {
        let credentials = credentials.filter(|v| !is_empty_json(v));
        dispatch!(self.set_api_credentials(api, credentials))
    }

    /// The stored credentials of `api`, if any.
    pub async fn get_api_credentials(&self, api: &str) -> Result<Option<serde_json::Value>> {
        dispatch!(self.get_api_credentials(api))
    }

    /// Whether credentials are stored for `api`, without reading them.
    pub async fn has_api_credentials(&self, api: &str) -> Result<bool> {
        dispatch!(self.has_api_credentials(api))
    }

    // ---------------------------------------------------------------- fetching

    /// Fetch status of exchange `exchange` (all empty before the first fetch). `NotFound`.
    pub async fn fetch_status(&self, exchange: &str) -> Result<FetchStatus> {
        dispatch!(self.fetch_status(exchange))
    }

    /// The stored checkpoint of exchange `exchange`, if any. `NotFound`.
    pub async fn fetch_checkpoint(&self, exchange: &str) -> Result<Option<FetchCheckpoint>> {
        dispatch!(self.fetch_checkpoint(exchange))
    }

    /// Marks a fetch run of `exchange` as started now (`running_since`).
    pub async fn start_fetch(&self, exchange: &str) -> Result<()> {
        dispatch!(self.start_fetch(exchange))
    }

    /// Marks the running fetch of `exchange` as ended: clears `running_since`, records the
    /// outcome, success time and error message.
    pub async fn finish_fetch(&self, exchange: &str, end: &FetchRunEnd) -> Result<()> {
        dispatch!(self.finish_fetch(exchange, end))
    }

    /// Applies a batch of fetched records and stores the new checkpoint, item count and
    /// up-to-date flag, all in **one** transaction: after a crash either all of it is stored
    /// or none. Per key (the last update of a key in the batch wins):
    /// * delete: removes the record and the content created from it (no-op if unknown);
    /// * add: stores the record and creates enabled content in the exchange's bank with its
    ///   signals and provenance;
    /// * update: replaces metadata and signals (unchanged signals are not touched, so no log
    ///   entries); recreates the content if a curator had deleted it.
    ///
    /// `NotFound` for an unknown exchange, `Conflict` if `guard` does not match the stored
    /// checkpoint, `InvalidArgument` for two signals of one type in a record.
    pub async fn apply_fetch_batch(
        &self,
        exchange: &str,
        batch: &FetchBatch,
    ) -> Result<BatchOutcome> {
        dispatch!(self.apply_fetch_batch_marked(exchange, batch, None))
    }

    /// [`Store::apply_fetch_batch`] for a batch of a full listing (mark and sweep, see
    /// [`ListingMark`]): upserted records are marked with the listing id; when
    /// `listing.complete`, every record of the exchange not marked with it is deleted in the
    /// same transaction (counted in `records_deleted`). Records whose signals did not change
    /// write no change log entries.
    pub async fn apply_listing_batch(
        &self,
        exchange: &str,
        batch: &FetchBatch,
        listing: &ListingMark,
    ) -> Result<BatchOutcome> {
        dispatch!(self.apply_fetch_batch_marked(exchange, batch, Some(*listing)))
    }

    /// Removes all stored records (and their content) and the checkpoint of `exchange`, for a
    /// refetch from scratch after a stale checkpoint. Returns the number of records removed.
    pub async fn reset_fetch_state(&self, exchange: &str) -> Result<u64> {
        dispatch!(self.reset_fetch_state(exchange))
    }

    /// Takes or renews the fetch lease of `exchange` for `holder` (any unique string, e.g.
    /// host:pid:random) for `ttl`. Returns `false` if another holder's lease has not expired.
    /// Works across processes on both backends; renew well before `ttl` runs out.
    pub async fn try_acquire_fetch_lease(
        &self,
        exchange: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        dispatch!(self.try_acquire_fetch_lease(exchange, holder, ttl))
    }

    /// Gives up `holder`'s lease of `exchange` (no-op if it does not hold it).
    pub async fn release_fetch_lease(&self, exchange: &str, holder: &str) -> Result<()> {
        dispatch!(self.release_fetch_lease(exchange, holder))
    }

    // ---------------------------------------------------------------- reviews

    /// Stores a review of content `content_id` of bank `bank`, in one transaction with: a
    /// delivery row per exchange record behind the content (`pending`, due now, if the
    /// exchange's API is in `review.write_back_apis`, else `unsupported`), and, with
    /// `disable_matching`, `disable_until_ts = 0` on the content (logged in the change log, so
    /// matchers stop matching it). `NotFound` as [`Store::get_content`]; `InvalidArgument`
    /// for an empty or long reviewer, a long note, `disable_matching` on a true positive, or a
    /// `signal_type` the content does not have.
    pub async fn create_review(
        &self,
        bank: &str,
        content_id: i64,
        review: &NewReview,
    ) -> Result<Review> {
        model::validate_new_review(review)?;
        let mut review = review.clone();
        review.reviewer = review.reviewer.trim().to_string();
        dispatch!(self.create_review(bank, content_id, &review))
    }

    /// The reviews of content `content_id` of bank `bank`, oldest first, with their
    /// deliveries. `NotFound` as [`Store::get_content`].
    pub async fn list_reviews(&self, bank: &str, content_id: i64) -> Result<Vec<Review>> {
        dispatch!(self.list_reviews(bank, content_id))
    }

    /// Claims up to `limit` deliveries that are `pending` or `failed` and due, by moving their
    /// `next_attempt_at` `lease` into the future (so another process skips them; a claim
    /// abandoned by a crash is due again after `lease`). Oldest due first.
    pub async fn claim_review_deliveries(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<DeliveryJob>> {
        dispatch!(self.claim_review_deliveries(limit, lease))
    }

    /// Records how an attempt at delivery `delivery_id` ended (counts the attempt).
    /// `NotFound` (entity `ReviewDelivery`) if the delivery is gone (its exchange was deleted).
    pub async fn finish_review_delivery(
        &self,
        delivery_id: i64,
        outcome: &DeliveryOutcome,
    ) -> Result<()> {
        dispatch!(self.finish_review_delivery(delivery_id, outcome))
    }

    // ---------------------------------------------------------------- signal types

    /// All signal type overrides, ordered by name (types without one have ratio 1.0).
    pub async fn list_signal_type_overrides(&self) -> Result<Vec<SignalTypeOverride>> {
        dispatch!(self.list_signal_type_overrides())
    }

    /// Sets (upserts) the enabled ratio of signal type `name`.
    pub async fn set_signal_type_override(&self, name: &str, enabled_ratio: f64) -> Result<()> {
        model::validate_ratio(enabled_ratio)?;
        dispatch!(self.set_signal_type_override(name, enabled_ratio))
    }

    /// Removes the override of `name`; returns whether there was one.
    pub async fn delete_signal_type_override(&self, name: &str) -> Result<bool> {
        dispatch!(self.delete_signal_type_override(name))
    }

    // ---------------------------------------------------------------- change log

    /// The highest committed change log seq (0 for an empty log).
    pub async fn current_seq(&self) -> Result<i64> {
        dispatch!(self.current_seq())
    }

    /// Up to `limit` changes with seq > `after`, in seq order. Complete: see [`changes`].
    pub async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        dispatch!(self.changes_since(after, limit))
    }

    /// The full current state from one snapshot, signals streamed in chunks of
    /// `chunk_size` rows. Then tail from [`StateSnapshot::seq`].
    pub async fn load_state(&self, chunk_size: usize) -> Result<StateSnapshot> {
        let chunk_size = chunk_size.max(1);
        dispatch!(self.load_state(chunk_size))
    }

    /// A wake-up hint for new changes (Postgres LISTEN/NOTIFY; in-process on SQLite).
    pub async fn subscribe(&self) -> Result<ChangeSubscription> {
        dispatch!(self.subscribe())
    }

    /// Deletes change log entries with seq <= `upto` (keep enough for lagging matchers).
    /// Returns how many were removed.
    pub async fn prune_changes(&self, upto: i64) -> Result<u64> {
        dispatch!(self.prune_changes(upto))
    }
}

fn is_empty_json(v: &serde_json::Value) -> bool {
    matches!(v, serde_json::Value::Null) || v.as_object().is_some_and(|o| o.is_empty())
}

/// Current Unix time in seconds.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Current Unix time in milliseconds.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Test hook (not part of the supported API): while `on`, [`Store::apply_fetch_batch`]
    /// fails after writing the records and before storing the checkpoint, as a crash there
    /// would. Used to prove that the batch is rolled back as a whole.
    #[doc(hidden)]
    pub fn inject_fault_before_checkpoint(&self, on: bool) {
        match &*self.backend {
            Backend::Sqlite(b) => b.set_fault_before_checkpoint(on),
            Backend::Postgres(b) => b.set_fault_before_checkpoint(on),
        }
    }
}
