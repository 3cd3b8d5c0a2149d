//! The change log: what matchers tail to keep their in-memory state fresh.
//!
//! # Contract
//!
//! * Every insert, update and delete of a signal, every change of a content's
//!   `disable_until_ts`, every insert/rename/ratio change/delete of a bank, every insert,
//!   enable change or delete of an exchange and every signal-type override change is written
//!   to the log **in the same transaction** as the change (database triggers, so cascaded
//!   deletes are logged too), with a strictly increasing sequence number `seq`.
//! * **Commit order equals seq order.** SQLite has one writer at a time. On PostgreSQL every
//!   transaction that writes log entries first takes a transaction-scoped advisory lock (per
//!   schema) and keeps it until after its commit is visible; sequence numbers are drawn only
//!   while holding it. So when a reader can see entry `n`, every entry `< n` that will ever
//!   exist is already visible: tailing with `seq > last_seen` never skips a late commit.
//!   (Rolled-back transactions leave holes in the numbering; holes are never filled later.)
//! * **Nothing read can be undone.** On PostgreSQL those write transactions commit with
//!   `synchronous_commit = off`, so the lock is released when the commit is visible, without
//!   waiting for its WAL flush (concurrent writers then share flushes instead of queueing for
//!   one fsync each). The writer flushes right after (a tiny synchronous commit covers all WAL
//!   before it) and only then reports success; readers of the change log (`changes_since`,
//!   `current_seq`, `load_state`) wait until the WAL up to what they read is flushed before
//!   returning it. So a server crash can only lose commits that neither their writer nor any
//!   matcher was told about, and WAL order (= seq order) makes what survives a prefix.
//! * To start, call [`crate::Store::load_state`]: it reads banks, exchanges, overrides,
//!   non-default content states and all signals from **one** snapshot together with the
//!   highest seq visible in that snapshot. Apply the snapshot, then tail
//!   [`crate::Store::changes_since`] from [`StateSnapshot::seq`]: every change after the
//!   snapshot has a larger seq and every change in it a smaller or equal one.
//!
//! # Applying changes
//!
//! * Content rows are created enabled (`disable_until_ts = 1`) without a log entry, as are
//!   their snapshot rows: a content id seen only through its signals is enabled. Content
//!   created with another state, and every later change of the state, is logged as
//!   [`ChangeEvent::ContentUpserted`].
//! * A deleted content's signals are logged as [`ChangeEvent::SignalDeleted`] as well as
//!   [`ChangeEvent::ContentDeleted`]; a deleted bank's content likewise. The relative order of
//!   these cascaded entries within one transaction is unspecified, so apply deletes
//!   idempotently (deleting something unknown is a no-op; a content delete removes its signals).
//! * A changed signal value is logged as a delete of the old value followed by an upsert of the
//!   new one, so an index never needs to look up the old value.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::error::{Result, StoreError};
use crate::model::{Bank, SignalRow, SignalTypeOverride};

/// One change log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Sequence number, strictly increasing in commit order.
    pub seq: i64,
    /// What changed.
    pub event: ChangeEvent,
}

/// What a change log entry says, with everything needed to apply it without another query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeEvent {
    /// A signal was added (or is the new value of a changed signal).
    SignalUpserted {
        /// Content id.
        content_id: i64,
        /// The content's bank.
        bank_id: i64,
        /// Signal type name.
        signal_type: String,
        /// Signal value.
        value: String,
    },
    /// A signal was removed (or is the old value of a changed signal).
    SignalDeleted {
        /// Content id.
        content_id: i64,
        /// The content's bank.
        bank_id: i64,
        /// Signal type name.
        signal_type: String,
        /// The removed value.
        value: String,
    },
    /// A content's enable state was set (creation with a non-default state, or an update).
    ContentUpserted {
        /// Content id.
        content_id: i64,
        /// The content's bank.
        bank_id: i64,
        /// New `disable_until_ts`.
        disable_until_ts: i64,
    },
    /// A content was deleted (its signals are logged as deleted too).
    ContentDeleted {
        /// Content id.
        content_id: i64,
        /// The bank it was in.
        bank_id: i64,
    },
    /// A bank was created, renamed or got a new ratio.
    BankUpserted {
        /// Bank id.
        bank_id: i64,
        /// Current name.
        name: String,
        /// Current `matching_enabled_ratio`.
        enabled_ratio: f64,
        /// The exchange feeding it, if any.
        exchange_id: Option<i64>,
    },
    /// A bank was deleted (its content is logged as deleted too).
    BankDeleted {
        /// Bank id.
        bank_id: i64,
    },
    /// An exchange was created or enabled/disabled.
    ExchangeUpserted {
        /// Exchange id (banks refer to it through `exchange_id`).
        exchange_id: i64,
        /// Exchange name.
        name: String,
        /// Whether it is enabled.
        enabled: bool,
    },
    /// An exchange was deleted (its bank is logged as deleted too).
    ExchangeDeleted {
        /// Exchange id.
        exchange_id: i64,
    },
    /// A signal type override was set.
    SignalTypeUpserted {
        /// Signal type name.
        signal_type: String,
        /// New enabled ratio.
        enabled_ratio: f64,
    },
    /// A signal type override was removed (back to the default ratio 1.0).
    SignalTypeDeleted {
        /// Signal type name.
        signal_type: String,
    },
}

/// Numeric codes of the `change_log` table (shared by both backends).
#[allow(dead_code)] // OP_UPSERT documents the encoding; decode treats "not delete" as upsert
pub(crate) mod code {
    pub const KIND_SIGNAL: i64 = 1;
    pub const KIND_CONTENT: i64 = 2;
    pub const KIND_BANK: i64 = 3;
    pub const KIND_EXCHANGE: i64 = 4;
    pub const KIND_SIGNAL_TYPE: i64 = 5;
    pub const OP_UPSERT: i64 = 1;
    pub const OP_DELETE: i64 = 2;
}

/// A raw `change_log` row, decoded into a [`Change`] by [`RawChange::decode`].
#[derive(Debug, Default)]
pub(crate) struct RawChange {
    pub seq: i64,
    pub kind: i64,
    pub op: i64,
    pub content_id: Option<i64>,
    pub bank_id: Option<i64>,
    pub exchange_id: Option<i64>,
    pub signal_type: Option<String>,
    pub signal_value: Option<String>,
    pub disable_until_ts: Option<i64>,
    pub name: Option<String>,
    pub ratio: Option<f64>,
    pub enabled: Option<bool>,
}

impl RawChange {
    pub(crate) fn decode(self) -> Result<Change> {
        use code::*;
        let seq = self.seq;
        let missing = |what: &str| {
            StoreError::backend(format!(
                "change_log row {seq} (kind {}, op {}) lacks {what}",
                self.kind, self.op
            ))
        };
        let event = match (self.kind, self.op) {
            (KIND_SIGNAL, op) => {
                let content_id = self.content_id.ok_or_else(|| missing("content_id"))?;
                let bank_id = self.bank_id.ok_or_else(|| missing("bank_id"))?;
                let signal_type = self.signal_type.clone().ok_or_else(|| missing("type"))?;
                let value = self.signal_value.clone().ok_or_else(|| missing("value"))?;
                if op == OP_DELETE {
                    ChangeEvent::SignalDeleted {
                        content_id,
                        bank_id,
                        signal_type,
                        value,
                    }
                } else {
                    ChangeEvent::SignalUpserted {
                        content_id,
                        bank_id,
                        signal_type,
                        value,
                    }
                }
            }
            (KIND_CONTENT, op) => {
                let content_id = self.content_id.ok_or_else(|| missing("content_id"))?;
                let bank_id = self.bank_id.ok_or_else(|| missing("bank_id"))?;
                if op == OP_DELETE {
                    ChangeEvent::ContentDeleted {
                        content_id,
                        bank_id,
                    }
                } else {
                    ChangeEvent::ContentUpserted {
                        content_id,
                        bank_id,
                        disable_until_ts: self
                            .disable_until_ts
                            .ok_or_else(|| missing("disable_until_ts"))?,
                    }
                }
            }
            (KIND_BANK, op) => {
                let bank_id = self.bank_id.ok_or_else(|| missing("bank_id"))?;
                if op == OP_DELETE {
                    ChangeEvent::BankDeleted { bank_id }
                } else {
                    ChangeEvent::BankUpserted {
                        bank_id,
                        name: self.name.clone().ok_or_else(|| missing("name"))?,
                        enabled_ratio: self.ratio.ok_or_else(|| missing("ratio"))?,
                        exchange_id: self.exchange_id,
                    }
                }
            }
            (KIND_EXCHANGE, op) => {
                let exchange_id = self.exchange_id.ok_or_else(|| missing("exchange_id"))?;
                if op == OP_DELETE {
                    ChangeEvent::ExchangeDeleted { exchange_id }
                } else {
                    ChangeEvent::ExchangeUpserted {
                        exchange_id,
                        name: self.name.clone().ok_or_else(|| missing("name"))?,
                        enabled: self.enabled.ok_or_else(|| missing("enabled"))?,
                    }
                }
            }
            (KIND_SIGNAL_TYPE, op) => {
                let signal_type = self.name.clone().ok_or_else(|| missing("name"))?;
                if op == OP_DELETE {
                    ChangeEvent::SignalTypeDeleted { signal_type }
                } else {
                    ChangeEvent::SignalTypeUpserted {
                        signal_type,
                        enabled_ratio: self.ratio.ok_or_else(|| missing("ratio"))?,
                    }
                }
            }
            (kind, _) => return Err(StoreError::backend(format!("unknown change kind {kind}"))),
        };
        Ok(Change { seq, event })
    }
}

/// The enable state of one content item whose `disable_until_ts` is not the default 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentState {
    /// Content id.
    pub content_id: i64,
    /// Its bank.
    pub bank_id: i64,
    /// Its `disable_until_ts` (never 1 here).
    pub disable_until_ts: i64,
}

/// The state of an exchange as a matcher needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeState {
    /// Exchange id.
    pub exchange_id: i64,
    /// Exchange name.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
}

/// Everything a matcher needs to start, read from one database snapshot.
///
/// The small parts are loaded eagerly; signals are streamed in chunks by a background task
/// that holds the snapshot open until the last chunk is taken (or the value is dropped).
#[derive(Debug)]
pub struct StateSnapshot {
    /// The highest change log seq visible in the snapshot: tail from here.
    pub seq: i64,
    /// All banks.
    pub banks: Vec<Bank>,
    /// All exchanges.
    pub exchanges: Vec<ExchangeState>,
    /// All signal type overrides.
    pub signal_type_overrides: Vec<SignalTypeOverride>,
    /// Content whose `disable_until_ts` is not 1 (all other content is enabled).
    pub content_states: Vec<ContentState>,
    pub(crate) signals: mpsc::Receiver<Result<Vec<SignalRow>>>,
}

impl StateSnapshot {
    /// The next chunk of signals (in no particular order), or `None` when all were read.
    pub async fn next_signals(&mut self) -> Result<Option<Vec<SignalRow>>> {
        match self.signals.recv().await {
            Some(Ok(chunk)) => Ok(Some(chunk)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

/// A cheap wake-up hint that the change log may have grown.
///
/// Hints can be lost or spurious (e.g. a Postgres LISTEN connection that reconnects, or a
/// write by another process on SQLite), so matchers must still poll `changes_since`
/// periodically; the hint only shortens the delay.
#[derive(Debug, Clone)]
pub struct ChangeSubscription {
    pub(crate) rx: watch::Receiver<u64>,
}

impl ChangeSubscription {
    /// Waits until a change was signalled since the previous call (or since subscribing).
    /// Returns `false` if the store was closed and no more hints will come.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}
