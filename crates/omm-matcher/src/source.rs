//! Where changes come from: a small trait the matcher tails, and its binding to `omm-store`.

use std::future::Future;

use crate::state::Event;

/// An error reading the change source (the matcher logs it and retries).
#[derive(Debug, thiserror::Error)]
#[error("change source: {0}")]
pub struct SourceError(pub String);

/// One change log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqEvent {
    /// Strictly increasing sequence number (commit order).
    pub seq: i64,
    /// What changed.
    pub event: Event,
}

/// One stored signal, as streamed at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRecord {
    /// Content id.
    pub content_id: i64,
    /// The content's bank.
    pub bank_id: i64,
    /// Signal type name.
    pub signal_type: String,
    /// Value as stored.
    pub value: String,
}

/// The full current state, read from one consistent snapshot of the source.
pub trait InitialState: Send {
    /// The highest seq contained in the snapshot: tail from here.
    fn seq(&self) -> i64;
    /// Banks, exchanges, signal-type overrides and non-default content states, as upsert events.
    fn take_state_events(&mut self) -> Vec<Event>;
    /// The next chunk of signals, `None` at the end.
    fn next_signals(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<SignalRecord>>, SourceError>> + Send;
}

/// A wake-up hint that the log may have grown (may be lost or spurious: polling goes on).
pub trait Wakeup: Send {
    /// Resolves at the next hint; `false` when no more hints will ever come.
    fn changed(&mut self) -> impl Future<Output = bool> + Send;
}

/// A change log the matcher can tail.
pub trait ChangeSource: Send + Sync + 'static {
    /// See [`InitialState`].
    type Initial: InitialState;
    /// See [`Wakeup`].
    type Wake: Wakeup;

    /// The highest committed seq.
    fn current_seq(&self) -> impl Future<Output = Result<i64, SourceError>> + Send;
    /// Up to `limit` changes with seq > `after`, in seq order, never skipping a later commit.
    fn changes_since(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<SeqEvent>, SourceError>> + Send;
    /// The whole current state (signals streamed in chunks of about `chunk_size`).
    fn load_state(
        &self,
        chunk_size: usize,
    ) -> impl Future<Output = Result<Self::Initial, SourceError>> + Send;
    /// A wake-up hint subscription, if the source has one.
    fn subscribe(&self) -> impl Future<Output = Result<Option<Self::Wake>, SourceError>> + Send;
}
