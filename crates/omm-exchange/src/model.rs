//! What a fetch yields: batches of record changes and checkpoints.

use std::collections::HashMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

/// Version of the [`Checkpoint`] JSON envelope written by this crate.
pub const CHECKPOINT_VERSION: u32 = 1;

/// One signal of a fetched record: a signal type name (`pdq`, `video_md5`, ...) and its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Signal {
    /// Signal type name as used across omm (`pdq`, `video_md5`, `url`, `raw_text`, ...).
    pub signal_type: String,
    /// The signal value, normalised where the type has a canonical form (lowercase hex).
    pub value: String,
}

impl Signal {
    /// Builds a signal from a type name and a value.
    pub fn new(signal_type: impl Into<String>, value: impl Into<String>) -> Self {
        Signal {
            signal_type: signal_type.into(),
            value: value.into(),
        }
    }
}

/// The current state of one record of an exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's signals (at least one: a record without usable signals is sent as a delete).
    pub signals: Vec<Signal>,
    /// Provenance as JSON: tags, opinions, NCMEC member/entry ids, StopNCII feedback... The
    /// shape is specific to each exchange and documented on its module.
    pub metadata: Value,
}

/// One change to apply, keyed by the exchange's own record id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RecordChange {
    /// Insert the record, or replace the stored one with the same id (signals and metadata).
    Upsert {
        /// The exchange's record id.
        id: String,
        /// The record's new state.
        record: Record,
    },
    /// Remove the record with this id; a no-op if it is unknown.
    Delete {
        /// The exchange's record id.
        id: String,
    },
}

impl RecordChange {
    /// The record id this change applies to.
    pub fn id(&self) -> &str {
        match self {
            RecordChange::Upsert { id, .. } | RecordChange::Delete { id } => id,
        }
    }
}

/// Marks a fetch that lists every live record of the exchange (a first fetch, a refetch after a
/// stale checkpoint, or a file re-read).
///
/// Records that exist in the store but are not upserted by any batch of the listing are gone
/// upstream. When a batch with `complete == true` has been applied, the consumer deletes every
/// record of this exchange that was not upserted by a batch carrying the same `listing_id`
/// (upstream never purges them). A listing interrupted and resumed from its checkpoint keeps its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingProgress {
    /// Identifies the listing (unix milliseconds at its start, unique per exchange in practice).
    pub listing_id: i64,
    /// True on the last batch of the listing.
    pub complete: bool,
}

/// A resumable position in an exchange's stream, stored by the consumer with the batch it follows.
///
/// Serialised as JSON (our own format, versioned). Exchange-specific state lives in `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Envelope version, [`CHECKPOINT_VERSION`]. Unknown versions are treated as stale.
    pub version: u32,
    /// The exchange API that wrote it.
    pub api: String,
    /// When this checkpoint was produced (unix seconds). Used for staleness.
    pub created_at: i64,
    /// Upstream time up to which records have been fetched (unix seconds), if the API has one.
    /// Never decreases across checkpoints, except when a new full listing restarts from scratch
    /// (a batch whose [`ListingProgress::listing_id`] differs from the stored checkpoint's).
    pub progress_ts: Option<i64>,
    /// Set while a full listing is in progress (see [`ListingProgress`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_id: Option<i64>,
    /// Exchange-specific resume state.
    pub state: Value,
}

impl Checkpoint {
    pub(crate) fn new<S: Serialize>(
        api: &str,
        progress_ts: Option<i64>,
        listing_id: Option<i64>,
        state: &S,
    ) -> Self {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            api: api.to_string(),
            created_at: now_unix(),
            progress_ts,
            listing_id,
            // Serialising our own plain structs cannot fail; fall back to null defensively.
            state: serde_json::to_value(state).unwrap_or(Value::Null),
        }
    }

    /// Serialises the checkpoint to its stored JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_string())
    }

    /// Parses a stored checkpoint.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Decodes the exchange-specific state if the checkpoint was written by `api` in the current
    /// envelope version; `None` means "unusable, start from scratch".
    pub(crate) fn state_for<T: DeserializeOwned>(&self, api: &str) -> Option<T> {
        if self.version != CHECKPOINT_VERSION || self.api != api {
            tracing::warn!(
                api,
                checkpoint_api = %self.api,
                version = self.version,
                "ignoring checkpoint of another API or version; refetching from scratch"
            );
            return None;
        }
        match serde_json::from_value(self.state.clone()) {
            Ok(state) => Some(state),
            Err(err) => {
                tracing::warn!(api, %err, "ignoring undecodable checkpoint; refetching from scratch");
                None
            }
        }
    }

    /// True if the checkpoint is older than `max_age_secs` at `now` (unix seconds).
    pub fn is_older_than(&self, max_age_secs: i64, now: i64) -> bool {
        now.saturating_sub(self.created_at) > max_age_secs
    }
}

/// One step of a fetch: changes to apply in order, then the checkpoint to store with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Changes, each record id at most once.
    pub changes: Vec<RecordChange>,
    /// Store this checkpoint in the same transaction as the changes.
    pub checkpoint: Checkpoint,
    /// Present when this batch belongs to a full listing.
    pub listing: Option<ListingProgress>,
}

/// Accumulates changes for one batch, keeping only the last change per record id.
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    changes: Vec<RecordChange>,
    positions: HashMap<String, usize>,
}

impl BatchBuilder {
    pub(crate) fn push(&mut self, change: RecordChange) {
        match self.positions.get(change.id()) {
            // A later change to the same record supersedes the earlier one.
            Some(&pos) => self.changes[pos] = change,
            None => {
                self.positions
                    .insert(change.id().to_string(), self.changes.len());
                self.changes.push(change);
            }
        }
    }

    pub(crate) fn upsert(&mut self, id: String, record: Record) {
        self.push(RecordChange::Upsert { id, record });
    }

    pub(crate) fn delete(&mut self, id: String) {
        self.push(RecordChange::Delete { id });
    }

    pub(crate) fn len(&self) -> usize {
        self.changes.len()
    }

    pub(crate) fn finish(
        &mut self,
        checkpoint: Checkpoint,
        listing: Option<ListingProgress>,
    ) -> Batch {
        self.positions.clear();
        Batch {
            changes: std::mem::take(&mut self.changes),
            checkpoint,
            listing,
        }
    }
}

/// A reviewer's verdict on a match against fetched content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The matched content is what the record says it is.
    TruePositive,
    /// The match was wrong (or the record is wrong).
    FalsePositive,
}

/// A review result to write back to the exchange a record came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// The exchange's record id (as fetched).
    pub record_id: String,
    /// The signal that matched.
    pub signal: Signal,
    /// The record's metadata as fetched (carries ids such as descriptors or NCMEC member ids).
    pub metadata: Value,
    /// The verdict.
    pub verdict: Verdict,
}

/// Current unix time in seconds.
pub(crate) fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A fresh listing id: unix milliseconds.
pub(crate) fn new_listing_id() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_builder_keeps_last_change_per_id() {
        let mut b = BatchBuilder::default();
        let rec = Record {
            signals: vec![Signal::new("pdq", "0".repeat(64))],
            metadata: Value::Null,
        };
        b.upsert("a".into(), rec.clone());
        b.upsert("b".into(), rec.clone());
        b.delete("a".into());
        let cp = Checkpoint::new("sample", None, None, &());
        let batch = b.finish(cp, None);
        assert_eq!(batch.changes.len(), 2);
        assert_eq!(batch.changes[0], RecordChange::Delete { id: "a".into() });
        assert_eq!(batch.changes[1].id(), "b");
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_other_api() {
        let cp = Checkpoint::new("tat", Some(5), None, &serde_json::json!({"after": "1,2"}));
        let back = Checkpoint::from_json(&cp.to_json()).unwrap();
        assert_eq!(back, cp);
        assert!(back.state_for::<Value>("tat").is_some());
        assert!(back.state_for::<Value>("ncmec").is_none());
        let mut old = back.clone();
        old.version = 99;
        assert!(old.state_for::<Value>("tat").is_none());
    }
}
