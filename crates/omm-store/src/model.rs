//! The data model: what the store keeps and what its operations take and return.
//!
//! Timestamps are Unix seconds as `i64` (no 2038 problem). JSON values are kept verbatim as
//! text in both backends, so what goes in comes back unchanged (key order included).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};

/// Longest accepted note, in characters (HMA rule).
pub const MAX_NOTE_CHARS: usize = 255;
/// Longest accepted bank/exchange name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// `disable_until_ts` value meaning "enabled" (the default for new content).
pub const CONTENT_ENABLED: i64 = 1;
/// `disable_until_ts` value meaning "disabled forever".
pub const CONTENT_DISABLED_FOREVER: i64 = 0;

/// Whether content with this `disable_until_ts` is enabled at Unix time `now`:
/// 0 = disabled forever, 1 = enabled, anything else = disabled until that time.
pub fn content_enabled_at(disable_until_ts: i64, now: i64) -> bool {
    match disable_until_ts {
        CONTENT_DISABLED_FOREVER => false,
        CONTENT_ENABLED => true,
        ts => ts <= now,
    }
}

/// Checks a bank (or exchange) name against `^[A-Z_][A-Z0-9_]*$` and the length limit.
pub fn validate_bank_name(name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let ok = match bytes.next() {
        Some(first) => {
            (first.is_ascii_uppercase() || first == b'_')
                && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        }
        None => false,
    };
    if ok && name.len() <= MAX_NAME_BYTES {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_string()))
    }
}

pub(crate) fn validate_note(note: &Option<String>) -> Result<()> {
    if let Some(n) = note {
        if n.chars().count() > MAX_NOTE_CHARS {
            return Err(StoreError::InvalidArgument(format!(
                "note must be at most {MAX_NOTE_CHARS} characters"
            )));
        }
    }
    Ok(())
}

pub(crate) fn validate_ratio(ratio: f64) -> Result<()> {
    if ratio.is_finite() {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(
            "enabled_ratio must be a finite number".into(),
        ))
    }
}

pub(crate) fn validate_disable_until(ts: i64) -> Result<()> {
    if ts < 0 {
        Err(StoreError::InvalidArgument(
            "disable_until_ts must be a non-negative integer".into(),
        ))
    } else {
        Ok(())
    }
}

pub(crate) fn validate_signals(signals: &BTreeMap<String, String>) -> Result<()> {
    for t in signals.keys() {
        if t.is_empty() {
            return Err(StoreError::InvalidArgument(
                "signal type must not be empty".into(),
            ));
        }
    }
    Ok(())
}

/// A bank: a named collection of labelled content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bank {
    /// Database id (stable across renames).
    pub id: i64,
    /// Name, `^[A-Z_][A-Z0-9_]*$`.
    pub name: String,
    /// `matching_enabled_ratio`: the coin-flip threshold at match time (0 = only when bypassed).
    pub enabled_ratio: f64,
    /// The exchange that feeds this bank, for exchange-backed banks.
    pub exchange_id: Option<i64>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
}

/// Input of [`crate::Store::create_bank`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewBank {
    /// Name, `^[A-Z_][A-Z0-9_]*$`.
    pub name: String,
    /// Initial ratio. The server turns `enabled: false` into 0.0 before calling.
    pub enabled_ratio: f64,
}

/// Input of [`crate::Store::update_bank`]; `None` fields are left alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BankUpdate {
    /// New name (rename). The exchange link is by id, so renaming an exchange bank is allowed.
    pub name: Option<String>,
    /// New ratio.
    pub enabled_ratio: Option<f64>,
}

/// Where imported content came from: one fetched exchange record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The exchange's id.
    pub exchange_id: i64,
    /// The exchange's name (HMA's `collab_metadata` key).
    pub exchange_name: String,
    /// The record key within the exchange (HMA's `fetch_id`).
    pub record_key: String,
    /// The record's metadata JSON as the fetcher stored it (opinions, tags, ...).
    pub record_metadata: Value,
}

/// One bank content item with everything a curator or rich lookup response shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// Content id (what indexes store and lookups return).
    pub id: i64,
    /// The bank it belongs to.
    pub bank: Bank,
    /// 0 = disabled forever, 1 = enabled, other = disabled until that Unix time.
    pub disable_until_ts: i64,
    /// Free-text note (<= 255 characters).
    pub note: Option<String>,
    /// User metadata JSON (the server validates its shape).
    pub metadata: Option<Value>,
    /// Original media URI (kept for compatibility; the API never sets it).
    pub original_media_uri: Option<String>,
    /// Signals by signal type (at most one per type).
    pub signals: BTreeMap<String, String>,
    /// Set for content imported from an exchange record.
    pub provenance: Option<Provenance>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last update time (Unix seconds).
    pub updated_at: i64,
}

/// Input of [`crate::Store::create_content`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewContent {
    /// Signals by type (a map, so at most one per type). Values are stored as given: the
    /// server validates and normalises them first.
    pub signals: BTreeMap<String, String>,
    /// Initial enable state; use [`CONTENT_ENABLED`] normally.
    pub disable_until_ts: i64,
    /// Optional note (<= 255 characters).
    pub note: Option<String>,
    /// Optional user metadata.
    pub metadata: Option<Value>,
    /// Optional original media URI.
    pub original_media_uri: Option<String>,
}

impl NewContent {
    /// Enabled content with these signals and nothing else.
    pub fn with_signals(signals: BTreeMap<String, String>) -> Self {
        NewContent {
            signals,
            disable_until_ts: CONTENT_ENABLED,
            note: None,
            metadata: None,
            original_media_uri: None,
        }
    }
}

/// Input of [`crate::Store::update_content`]; `None` leaves a field alone,
/// `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContentUpdate {
    /// New enable state (>= 0).
    pub disable_until_ts: Option<i64>,
    /// New note, or `Some(None)` to clear it.
    pub note: Option<Option<String>>,
    /// New user metadata, or `Some(None)` to clear it.
    pub metadata: Option<Option<Value>>,
}

/// One signal of one content item, as listed per bank or streamed at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignalRow {
    /// The content it belongs to.
    pub content_id: i64,
    /// The content's bank.
    pub bank_id: i64,
    /// Signal type name, e.g. `pdq`.
    pub signal_type: String,
    /// Signal value as stored.
    pub value: String,
}

/// Per signal type counts, for index status endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalTypeStats {
    /// Signal type name.
    pub signal_type: String,
    /// Number of stored signals of this type.
    pub count: i64,
    /// Newest `created_at` (Unix seconds) among them.
    pub newest_created_at: i64,
}

/// An exchange (collaboration): a configured feed from a signal-sharing API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// Database id.
    pub id: i64,
    /// Name; also the name its bank got at creation.
    pub name: String,
    /// Exchange API name, e.g. `sample`, `fb_threatexchange`.
    pub api: String,
    /// Whether fetching is enabled.
    pub enabled: bool,
    /// Typed config JSON as given by the server (API-specific fields).
    pub config: Value,
    /// Its bank's id (always present: the bank cannot be deleted on its own).
    pub bank_id: Option<i64>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last update time (Unix seconds).
    pub updated_at: i64,
}

/// Input of [`crate::Store::create_exchange`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewExchange {
    /// Name (bank name rule); a bank with the same name is created with it.
    pub name: String,
    /// Exchange API name.
    pub api: String,
    /// Whether fetching is enabled.
    pub enabled: bool,
    /// Typed config JSON.
    pub config: Value,
}

/// Input of [`crate::Store::update_exchange`]; `None` fields are left alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExchangeUpdate {
    /// Enable or disable fetching.
    pub enabled: Option<bool>,
    /// Replace the typed config JSON.
    pub config: Option<Value>,
}

/// One fetched exchange record, keyed by (exchange, key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// The exchange.
    pub exchange_id: i64,
    /// Record key (our own string format, chosen by the fetcher).
    pub key: String,
    /// Record metadata JSON.
    pub metadata: Value,
    /// The bank content created from it, unless a curator deleted that content.
    pub content_id: Option<i64>,
    /// That content's signals.
    pub signals: BTreeMap<String, String>,
    /// Last time a fetch wrote this record (Unix seconds).
    pub updated_at: i64,
}

/// Per-exchange fetch bookkeeping (HMA's FetchStatus plus the last error).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FetchStatus {
    /// Set while a fetch runs: when it started.
    pub running_since: Option<i64>,
    /// When the last fetch run ended (successfully or not).
    pub last_complete_ts: Option<i64>,
    /// Whether the last run succeeded; `None` before the first run.
    pub last_succeeded: Option<bool>,
    /// When a run last ended successfully.
    pub last_success_ts: Option<i64>,
    /// Whether the last committed batch or run reached the end of the stream.
    pub up_to_date: bool,
    /// The stored checkpoint's progress time, if it has one.
    pub checkpoint_ts: Option<i64>,
    /// Number of stored records of this exchange (HMA's `fetched_items`).
    pub item_count: i64,
    /// Message of the last failed run; cleared by a successful one.
    pub last_error: Option<String>,
}

/// The stored fetch checkpoint of an exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchCheckpoint {
    /// API-specific checkpoint JSON.
    pub value: Value,
    /// Its progress time, if any.
    pub ts: Option<i64>,
}

/// What the stored checkpoint must be for a batch to apply (optimistic concurrency:
/// a second fetcher that started from an older checkpoint gets [`StoreError::Conflict`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CheckpointGuard {
    /// Do not check.
    #[default]
    Unchecked,
    /// There must be no stored checkpoint yet.
    Absent,
    /// The stored checkpoint JSON must equal this value.
    Equals(Value),
}

/// One record of a fetch batch: `record: None` deletes the key.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordUpdate {
    /// Record key within the exchange.
    pub key: String,
    /// New content of the record, or `None` for a delete.
    pub record: Option<FetchedRecord>,
}

/// The data of a fetched record.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedRecord {
    /// Signals (type, value). At most one per type; an empty list deletes the record
    /// (HMA: a record with no usable signal is treated as a delete).
    pub signals: Vec<(String, String)>,
    /// Record metadata JSON.
    pub metadata: Value,
}

/// Input of [`crate::Store::apply_fetch_batch`]: records plus the checkpoint reached after
/// them, stored in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchBatch {
    /// Updates in stream order; a later update of the same key wins.
    pub updates: Vec<RecordUpdate>,
    /// Checkpoint reached after these updates.
    pub checkpoint: Value,
    /// The checkpoint's progress time, if any.
    pub checkpoint_ts: Option<i64>,
    /// Whether the stream is exhausted after this batch.
    pub up_to_date: bool,
    /// Optimistic concurrency check against the stored checkpoint.
    pub guard: CheckpointGuard,
}

/// What [`crate::Store::apply_fetch_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// Records created.
    pub records_added: u64,
    /// Records whose metadata or signals were replaced.
    pub records_updated: u64,
    /// Records removed (deletes of unknown keys are not counted).
    pub records_deleted: u64,
    /// Stored records of the exchange after the batch.
    pub item_count: i64,
}

/// Per signal type enabled ratio override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalTypeOverride {
    /// Signal type name.
    pub name: String,
    /// Enabled ratio (the server checks its range).
    pub enabled_ratio: f64,
}

/// Input of [`crate::Store::finish_fetch`]: how a fetch run ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchRunEnd {
    /// Whether the run succeeded.
    pub succeeded: bool,
    /// Whether the exchange is up to date after it (forced to false on failure).
    pub up_to_date: bool,
    /// Error message of a failed run (stored as `last_error`).
    pub error: Option<String>,
}

/// Marks a fetch batch as part of a full listing of an exchange (mark and sweep).
///
/// Every record the batch upserts is marked with `listing_id`. When `complete` is true the
/// listing is over: in the same transaction, every record of the exchange not marked with
/// `listing_id` is deleted (with its content, through the change log). Until then the old
/// records stay and keep matching, also across a crash and a resumed listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingMark {
    /// Identifies the listing; a resumed listing keeps its id.
    pub listing_id: i64,
    /// True on the last batch of the listing.
    pub complete: bool,
}

/// Longest accepted review note, in characters.
pub const MAX_REVIEW_NOTE_CHARS: usize = 4096;
/// Longest accepted reviewer name, in characters.
pub const MAX_REVIEWER_CHARS: usize = 255;

/// A reviewer's opinion on a match against a bank content item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewOpinion {
    /// The matched content is what the bank says it is.
    TruePositive,
    /// The match was wrong.
    FalsePositive,
}

impl ReviewOpinion {
    /// Stored and API spelling: `true_positive` / `false_positive`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewOpinion::TruePositive => "true_positive",
            ReviewOpinion::FalsePositive => "false_positive",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "true_positive" => Some(ReviewOpinion::TruePositive),
            "false_positive" => Some(ReviewOpinion::FalsePositive),
            _ => None,
        }
    }
}

/// Input of [`crate::Store::create_review`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewReview {
    /// The opinion.
    pub opinion: ReviewOpinion,
    /// Optional free text (<= [`MAX_REVIEW_NOTE_CHARS`]).
    pub note: Option<String>,
    /// Who reviewed (non-empty, <= [`MAX_REVIEWER_CHARS`]).
    pub reviewer: String,
    /// The signal type that matched; `None` means the content's first signal (by type name).
    /// Must be a signal of the content.
    pub signal_type: Option<String>,
    /// Also disable the content for good (`disable_until_ts = 0`) in the same transaction.
    /// Only with [`ReviewOpinion::FalsePositive`].
    pub disable_matching: bool,
    /// Exchange API names that accept write-back: a review of content imported from an
    /// exchange of one of these APIs gets a `pending` delivery, other exchanges `unsupported`.
    pub write_back_apis: Vec<String>,
}

/// Where the write-back of a review to an exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not written back yet (first attempt due at `next_attempt_at`).
    Pending,
    /// Accepted by the exchange.
    Delivered,
    /// The last attempt failed (`last_error`); retried at `next_attempt_at` unless that is null.
    Failed,
    /// The exchange does not take review results: stored only.
    Unsupported,
}

impl DeliveryState {
    /// Stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Unsupported => "unsupported",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            "unsupported" => Some(DeliveryState::Unsupported),
            _ => None,
        }
    }
}

/// The write-back of one review to the exchange record behind the reviewed content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewDelivery {
    /// Delivery id.
    pub id: i64,
    /// The review.
    pub review_id: i64,
    /// The exchange.
    pub exchange_id: i64,
    /// Its name.
    pub exchange_name: String,
    /// Its API name.
    pub exchange_api: String,
    /// The record key, as fetched.
    pub record_key: String,
    /// The record's metadata when the review was made (ids the exchange needs).
    pub record_metadata: Value,
    /// The signal reported.
    pub signal_type: String,
    /// Its value.
    pub signal_value: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: i64,
    /// Message of the last failed attempt.
    pub last_error: Option<String>,
    /// When the last attempt ended (Unix seconds).
    pub last_attempt_at: Option<i64>,
    /// When the next attempt is due (Unix seconds); null when none will be made.
    pub next_attempt_at: Option<i64>,
    /// When the exchange accepted it.
    pub delivered_at: Option<i64>,
}

/// A stored review of a bank content item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// Review id.
    pub id: i64,
    /// The reviewed content.
    pub content_id: i64,
    /// Its bank.
    pub bank_id: i64,
    /// The opinion.
    pub opinion: ReviewOpinion,
    /// Free text.
    pub note: Option<String>,
    /// Who reviewed.
    pub reviewer: String,
    /// The signal type the review is about (the one reported to exchanges), if the content had one.
    pub signal_type: Option<String>,
    /// Whether the review disabled the content.
    pub disabled_matching: bool,
    /// When (Unix seconds).
    pub created_at: i64,
    /// Write-backs, one per exchange record behind the content (none for local content).
    pub deliveries: Vec<ReviewDelivery>,
}

/// A delivery claimed for an attempt by [`crate::Store::claim_review_deliveries`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryJob {
    /// The delivery.
    pub delivery: ReviewDelivery,
    /// The review's opinion.
    pub opinion: ReviewOpinion,
    /// The exchange's current config.
    pub exchange_config: Value,
}

/// How a delivery attempt ended, for [`crate::Store::finish_review_delivery`].
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// The exchange accepted it.
    Delivered,
    /// It failed; retried at `retry_at` (Unix seconds) or never when `None`.
    Failed {
        /// Why.
        message: String,
        /// Next attempt.
        retry_at: Option<i64>,
    },
    /// The exchange does not take review results.
    Unsupported {
        /// Why.
        message: String,
    },
}

pub(crate) fn validate_new_review(review: &NewReview) -> Result<()> {
    let reviewer = review.reviewer.trim();
    if reviewer.is_empty() {
        return Err(StoreError::InvalidArgument(
            "reviewer must not be empty".into(),
        ));
    }
    if reviewer.chars().count() > MAX_REVIEWER_CHARS {
        return Err(StoreError::InvalidArgument(format!(
            "reviewer is longer than {MAX_REVIEWER_CHARS} characters"
        )));
    }
    if review
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_REVIEW_NOTE_CHARS)
    {
        return Err(StoreError::InvalidArgument(format!(
            "note is longer than {MAX_REVIEW_NOTE_CHARS} characters"
        )));
    }
    if review.disable_matching && review.opinion != ReviewOpinion::FalsePositive {
        return Err(StoreError::InvalidArgument(
            "disable_matching is only allowed with a false_positive opinion".into(),
        ));
    }
    Ok(())
}
