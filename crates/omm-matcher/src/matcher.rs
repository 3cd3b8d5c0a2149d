//! The matcher handle: indexes + filter state, a background task tailing the change log, lookups.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use omm_index::{ExactIndex, IndexOp, PdqIndex, SignalIndex};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::coinflip::Coin;
use crate::source::{ChangeSource, InitialState, SeqEvent, SignalRecord, Wakeup};
use crate::state::{Event, FilterState, Verdict, MAX_SIGNAL_TYPES};

/// How the values of a signal type become index keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// 64 hex characters of a PDQ hash, searched by Hamming distance.
    Pdq,
    /// A hex digest of this many bytes (MD5: 16, SHA-256: 32), matched exactly. Surrounding
    /// white space and letter case are ignored, as upstream normalises these types.
    HexDigest {
        /// Digest length in bytes.
        bytes: usize,
    },
    /// Any non-empty string (surrounding white space ignored), matched exactly (e.g. `url`).
    Text,
}

impl KeyKind {
    /// The canonical key bytes of a value, or why it is not a valid value of this kind.
    pub fn key(&self, value: &str, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            KeyKind::Pdq => {
                let code = omm_index::code_from_hex(value.trim()).map_err(|e| e.to_string())?;
                out.extend_from_slice(&omm_index::code_to_bytes(&code));
                Ok(())
            }
            KeyKind::HexDigest { bytes } => {
                let v = value.trim().as_bytes();
                if v.len() != 2 * bytes {
                    return Err(format!(
                        "expected {} hex characters, got {}",
                        2 * bytes,
                        v.len()
                    ));
                }
                for pair in v.chunks_exact(2) {
                    let hi = hex_nibble(pair[0]).ok_or("invalid hex character")?;
                    let lo = hex_nibble(pair[1]).ok_or("invalid hex character")?;
                    out.push(hi << 4 | lo);
                }
                Ok(())
            }
            KeyKind::Text => {
                let value = value.trim();
                if value.is_empty() || value.len() > MAX_TEXT_KEY_LEN {
                    return Err(format!("value must be 1 to {MAX_TEXT_KEY_LEN} bytes long"));
                }
                out.extend_from_slice(value.as_bytes());
                Ok(())
            }
        }
    }

    /// Whether matches are exact (distance always 0; upstream reports `"-"`).
    pub fn is_exact(&self) -> bool {
        !matches!(self, KeyKind::Pdq)
    }

    fn new_index(&self) -> Box<dyn SignalIndex> {
        match self {
            KeyKind::Pdq => Box::new(PdqIndex::new()),
            KeyKind::HexDigest { bytes } => Box::new(ExactIndex::new(Some(*bytes))),
            KeyKind::Text => Box::new(ExactIndex::new(None)),
        }
    }
}

/// Longest value of a [`KeyKind::Text`] type (the exact index's limit).
pub const MAX_TEXT_KEY_LEN: usize = 1024;

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// One signal type the matcher indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedType {
    /// Signal type name as stored (e.g. `pdq`).
    pub name: String,
    /// Key kind.
    pub kind: KeyKind,
    /// Default match threshold (PDQ: 31, exact types: 0).
    pub threshold: u32,
}

impl IndexedType {
    /// PDQ with the upstream threshold 31.
    pub fn pdq() -> Self {
        IndexedType {
            name: "pdq".into(),
            kind: KeyKind::Pdq,
            threshold: 31,
        }
    }

    /// An exact hex digest type.
    pub fn hex_digest(name: &str, bytes: usize) -> Self {
        IndexedType {
            name: name.into(),
            kind: KeyKind::HexDigest { bytes },
            threshold: 0,
        }
    }

    /// An exact text type.
    pub fn text(name: &str) -> Self {
        IndexedType {
            name: name.into(),
            kind: KeyKind::Text,
            threshold: 0,
        }
    }
}

/// Matcher configuration.
#[derive(Debug, Clone)]
pub struct MatcherConfig {
    /// The signal types to index (at most 32). Signals of other types are ignored.
    pub signal_types: Vec<IndexedType>,
    /// How often to poll the change log when no wake-up hint arrives.
    pub poll_interval: Duration,
    /// Most changes read and applied per batch.
    pub batch_limit: u32,
    /// Signals per chunk during the initial load from the store. The indexes are in bulk-load
    /// mode meanwhile (they build their tables once, after the last chunk), so the chunk size
    /// only trades round trips against transient memory (roughly 250 MB per million signals).
    pub load_chunk: usize,
    /// Directory for snapshots; `None` disables them.
    pub snapshot_dir: Option<PathBuf>,
    /// How often to write a snapshot (when something changed since the last one); `None`
    /// writes only on shutdown.
    pub snapshot_interval: Option<Duration>,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        MatcherConfig {
            signal_types: vec![
                IndexedType::pdq(),
                IndexedType::hex_digest("video_md5", 16),
                IndexedType::hex_digest("video_sha256", 32),
                IndexedType::hex_digest("url_md5", 16),
                IndexedType::text("url"),
            ],
            poll_interval: Duration::from_secs(1),
            batch_limit: 10_000,
            load_chunk: 100_000,
            snapshot_dir: None,
            snapshot_interval: Some(Duration::from_secs(600)),
        }
    }
}

/// Errors of [`Matcher::start`].
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    /// The configuration is unusable.
    #[error("invalid matcher configuration: {0}")]
    Config(String),
    /// Writing or reading a snapshot failed.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Why a lookup could not be answered (all are client errors except [`LookupError::NotReady`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The signal type is not indexed by this matcher.
    #[error("No such SignalType '{0}'")]
    UnknownSignalType(String),
    /// The signal type's enabled ratio is 0 (or below).
    #[error("SignalType '{0}' is not enabled")]
    SignalTypeDisabled(String),
    /// The value is not a valid signal of its type.
    #[error("invalid signal: {0}")]
    InvalidSignal(String),
    /// The first load has not completed.
    #[error("index not yet ready")]
    NotReady,
}

/// Options of [`Matcher::raw_lookup`].
#[derive(Debug, Clone, Default)]
pub struct RawLookupOptions {
    /// Keep only hits in these banks (names, exact). `None`: all banks.
    pub banks: Option<Vec<String>>,
    /// Override the type's threshold.
    pub max_distance: Option<u32>,
}

/// Options of [`Matcher::lookup`].
#[derive(Debug, Clone, Default)]
pub struct LookupOptions {
    /// Seed of the coin flip (deterministic and equal to upstream's draw for the same string).
    pub seed: Option<String>,
    /// Skip the coin flip: every bank with a ratio above 0 matches.
    pub bypass_coinflip: bool,
    /// Keep only matches in these banks (names, exact). `None`: all banks.
    pub banks: Option<Vec<String>>,
    /// Override the type's threshold.
    pub max_distance: Option<u32>,
}

/// One unfiltered index hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHit {
    /// Bank content id.
    pub content_id: i64,
    /// Distance (0 for exact types).
    pub distance: u32,
}

/// One filtered match.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Bank content id.
    pub content_id: i64,
    /// Distance (0 for exact types).
    pub distance: u32,
    /// The content's bank id.
    pub bank_id: i64,
    /// The content's bank name.
    pub bank_name: Arc<str>,
    /// The exchange feeding the bank, if any (its name).
    pub exchange: Option<Arc<str>>,
}

/// Per signal type status, for `/m/index/status` and `/c/signal_type/index`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeStatus {
    /// Signal type name.
    pub signal_type: String,
    /// Whether values of this type match exactly.
    pub exact: bool,
    /// Stored (value, content id) pairs.
    pub size: usize,
    /// Current enabled ratio (1.0 unless overridden).
    pub enabled_ratio: f64,
    /// Unix seconds of the last applied change touching this type (or of the load).
    pub last_update_unix: Option<i64>,
}

/// Matcher status.
#[derive(Debug, Clone, PartialEq)]
pub struct MatcherStatus {
    /// Whether the first load completed (lookups answer).
    pub ready: bool,
    /// The change log seq applied (everything up to it is visible to lookups).
    pub applied_seq: i64,
    /// Time since the change log was last read completely (`None` before that).
    pub lag: Option<Duration>,
    /// How the first load was done, and how long it took.
    pub load: Option<LoadInfo>,
    /// The last error reading the change log or writing a snapshot, if the latest attempt failed.
    pub last_error: Option<String>,
    /// Content items held in memory.
    pub content_count: usize,
    /// Approximate heap bytes of the filter state (indexes excluded).
    pub state_heap_bytes: usize,
    /// Per signal type.
    pub types: Vec<TypeStatus>,
}

/// How the first load was done.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadInfo {
    /// From a snapshot (else from the store's bulk read).
    pub from_snapshot: bool,
    /// Duration of the load, catch-up included.
    pub duration: Duration,
    /// Signals loaded.
    pub signals: u64,
}

pub(crate) struct TypeSlot {
    pub spec: IndexedType,
    pub bit: u32,
    /// Replaced wholesale only when a failed load starts over.
    pub index: RwLock<Box<dyn SignalIndex>>,
    last_update: AtomicI64,
}

pub(crate) struct Shared {
    pub config: MatcherConfig,
    pub types: Vec<TypeSlot>,
    pub state: RwLock<FilterState>,
    ready: AtomicBool,
    pub applied_seq: AtomicI64,
    /// Unix millis of the last complete read of the log (0 = never).
    caught_up_at: AtomicI64,
    seq_tx: watch::Sender<i64>,
    last_error: Mutex<Option<String>>,
    load: Mutex<Option<LoadInfo>>,
    poke: Notify,
    shutdown: watch::Sender<bool>,
    /// The applied seq of the last snapshot written or loaded.
    pub snapshot_seq: AtomicI64,
    snapshot_lock: tokio::sync::Mutex<()>,
}

/// The matcher. Cheap to clone; all clones share one set of indexes. The background task
/// stops at [`Matcher::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct Matcher {
    shared: Arc<Shared>,
    task: Arc<TaskGuard>,
}

/// Owns the background task; stops it when the last [`Matcher`] clone goes away.
struct TaskGuard {
    shared: Arc<Shared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Matcher {
    /// Starts a matcher on a change source: returns at once (not ready) and loads in the
    /// background, from the snapshot directory if it holds a valid snapshot, else from the
    /// source's bulk read; then tails the log. Must be called within a tokio runtime.
    pub fn start<S: ChangeSource>(
        source: S,
        config: MatcherConfig,
    ) -> Result<Matcher, MatcherError> {
        let shared = Arc::new(Shared::new(config)?);
        let task = tokio::spawn(run(shared.clone(), source));
        Ok(Matcher {
            task: Arc::new(TaskGuard {
                shared: shared.clone(),
                handle: Mutex::new(Some(task)),
            }),
            shared,
        })
    }

    /// Whether the first load completed. Until then lookups fail with
    /// [`LookupError::NotReady`] (and `/status` answers 503).
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Waits until ready, at most `timeout`. Returns whether it is ready.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rx = self.shared.seq_tx.subscribe();
        while !self.is_ready() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return self.is_ready();
            }
        }
        true
    }

    /// Time since the change log was last read to its end (`None` before that). Cheap: no
    /// lock, unlike [`Matcher::status`]; `/status` calls it on every probe.
    pub fn lag(&self) -> Option<Duration> {
        let caught_up = self.shared.caught_up_at.load(Ordering::Acquire);
        (caught_up > 0)
            .then(|| Duration::from_millis(now_millis().saturating_sub(caught_up).max(0) as u64))
    }

    /// The change log seq applied so far.
    pub fn applied_seq(&self) -> i64 {
        self.shared.applied_seq.load(Ordering::Acquire)
    }

    /// Waits until every change up to `seq` is visible to lookups, at most `timeout`
    /// (read-your-writes for a caller that knows the seq of its write). Wakes the tail loop.
    pub async fn wait_for_seq(&self, seq: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rx = self.shared.seq_tx.subscribe();
        self.poke();
        while !(self.is_ready() && self.applied_seq() >= seq) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return self.is_ready() && self.applied_seq() >= seq;
            }
        }
        true
    }

    /// Asks the tail loop to read the log now (e.g. right after this process wrote to it).
    pub fn poke(&self) {
        self.shared.poke.notify_one();
    }

    /// The indexed signal types.
    pub fn signal_types(&self) -> Vec<IndexedType> {
        self.shared.types.iter().map(|t| t.spec.clone()).collect()
    }

    /// The current enabled ratio of a signal type (1.0 unless overridden).
    pub fn signal_type_ratio(&self, signal_type: &str) -> f64 {
        self.shared.state.read().type_ratio(signal_type)
    }

    fn slot(&self, signal_type: &str) -> Result<&TypeSlot, LookupError> {
        self.shared
            .types
            .iter()
            .find(|t| t.spec.name == signal_type)
            .ok_or_else(|| LookupError::UnknownSignalType(signal_type.to_string()))
    }

    fn query(
        &self,
        slot: &TypeSlot,
        value: &str,
        max_distance: Option<u32>,
    ) -> Result<Vec<omm_index::Hit>, LookupError> {
        if !self.is_ready() {
            return Err(LookupError::NotReady);
        }
        let mut key = Vec::with_capacity(32);
        slot.spec
            .kind
            .key(value, &mut key)
            .map_err(LookupError::InvalidSignal)?;
        let threshold = max_distance.unwrap_or(slot.spec.threshold);
        slot.index
            .read()
            .query(&key, threshold)
            .map_err(|e| LookupError::InvalidSignal(e.to_string()))
    }

    /// Unfiltered index hits (spec §6.2 `raw_lookup`): no enable state, ratio or exchange is
    /// consulted, but deleted content never appears. With `banks`, only hits in those banks.
    /// Sorted by (distance, content id).
    pub fn raw_lookup(
        &self,
        signal_type: &str,
        value: &str,
        options: &RawLookupOptions,
    ) -> Result<Vec<RawHit>, LookupError> {
        let slot = self.slot(signal_type)?;
        if self.signal_type_ratio(signal_type) <= 0.0 {
            return Err(LookupError::SignalTypeDisabled(signal_type.to_string()));
        }
        let hits = self.query(slot, value, options.max_distance)?;
        let banks: Option<HashSet<&str>> = options
            .banks
            .as_ref()
            .map(|b| b.iter().map(String::as_str).collect());
        let state = self.shared.state.read();
        Ok(hits
            .into_iter()
            .filter_map(|h| {
                let id = i64::try_from(h.id).ok()?;
                let bank = state.raw_bank(id, slot.bit)?;
                if let Some(names) = &banks {
                    if !names.contains(&*bank?.name) {
                        return None;
                    }
                }
                Some(RawHit {
                    content_id: id,
                    distance: h.distance,
                })
            })
            .collect())
    }

    /// Filtered lookup (spec §6.2/§6.3): hits whose content is enabled now, whose bank passes
    /// this lookup's coin flip (one draw per call, shared by the signal type's own ratio) and
    /// whose exchange, if any, is enabled; optionally only in `banks`. Sorted by
    /// (distance, content id).
    pub fn lookup(
        &self,
        signal_type: &str,
        value: &str,
        options: &LookupOptions,
    ) -> Result<Vec<Match>, LookupError> {
        let slot = self.slot(signal_type)?;
        let type_ratio = self.signal_type_ratio(signal_type);
        if type_ratio.is_nan() || type_ratio <= 0.0 {
            return Err(LookupError::SignalTypeDisabled(signal_type.to_string()));
        }
        let hits = self.query(slot, value, options.max_distance)?;
        let coin = Coin::draw(options.seed.as_deref(), options.bypass_coinflip);
        if hits.is_empty() || !coin.keeps(type_ratio) {
            return Ok(Vec::new());
        }
        let banks: Option<HashSet<&str>> = options
            .banks
            .as_ref()
            .map(|b| b.iter().map(String::as_str).collect());
        let now = now_unix();
        let state = self.shared.state.read();
        Ok(hits
            .into_iter()
            .filter_map(|h| {
                let id = i64::try_from(h.id).ok()?;
                let Verdict::Keep(bank, exchange) = state.verdict(id, slot.bit, now, coin) else {
                    return None;
                };
                if let Some(names) = &banks {
                    if !names.contains(&*bank.name) {
                        return None;
                    }
                }
                Some(Match {
                    content_id: id,
                    distance: h.distance,
                    bank_id: bank.id,
                    bank_name: bank.name.clone(),
                    exchange: exchange.map(|e| e.name.clone()),
                })
            })
            .collect())
    }

    /// Status of the matcher and each index.
    pub fn status(&self) -> MatcherStatus {
        let s = &self.shared;
        let state = s.state.read();
        MatcherStatus {
            ready: self.is_ready(),
            applied_seq: self.applied_seq(),
            lag: self.lag(),
            load: s.load.lock().clone(),
            last_error: s.last_error.lock().clone(),
            content_count: state.content_count(),
            state_heap_bytes: state.heap_bytes(),
            types: s
                .types
                .iter()
                .map(|t| {
                    let last = t.last_update.load(Ordering::Acquire);
                    TypeStatus {
                        signal_type: t.spec.name.clone(),
                        exact: t.spec.kind.is_exact(),
                        size: t.index.read().len(),
                        enabled_ratio: state.type_ratio(&t.spec.name),
                        last_update_unix: (last > 0).then_some(last),
                    }
                })
                .collect(),
        }
    }

    /// Per signal type status (a subset of [`Matcher::status`]).
    pub fn index_status(&self) -> Vec<TypeStatus> {
        self.status().types
    }

    /// Writes a snapshot now (if a snapshot directory is configured). Returns its watermark.
    pub async fn write_snapshot(&self) -> Result<Option<i64>, MatcherError> {
        write_snapshot(&self.shared).await
    }

    /// Stops the background task and, if configured, writes a final snapshot.
    pub async fn shutdown(&self) -> Result<(), MatcherError> {
        self.shared.shutdown.send_replace(true);
        let task = self.task.handle.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        if self.is_ready() {
            write_snapshot(&self.shared).await?;
        }
        Ok(())
    }

    /// A copy of the logical filter state (for tests and diagnostics).
    pub fn canonical_state(&self) -> crate::state::CanonicalState {
        self.shared.state.read().canonical()
    }

    /// Every (key bytes, content id) pair of one type's index, sorted (tests, diagnostics).
    #[doc(hidden)]
    pub fn index_len(&self, signal_type: &str) -> Option<usize> {
        self.slot(signal_type).ok().map(|s| s.index.read().len())
    }
}

impl Shared {
    fn new(config: MatcherConfig) -> Result<Shared, MatcherError> {
        if config.signal_types.len() > MAX_SIGNAL_TYPES {
            return Err(MatcherError::Config(format!(
                "at most {MAX_SIGNAL_TYPES} signal types can be indexed"
            )));
        }
        let mut names = HashSet::new();
        for t in &config.signal_types {
            if !names.insert(t.name.as_str()) {
                return Err(MatcherError::Config(format!(
                    "signal type {} listed twice",
                    t.name
                )));
            }
        }
        if config.batch_limit == 0 || config.load_chunk == 0 {
            return Err(MatcherError::Config(
                "batch_limit and load_chunk must be positive".into(),
            ));
        }
        let type_names: Vec<String> = config.signal_types.iter().map(|t| t.name.clone()).collect();
        let types = config
            .signal_types
            .iter()
            .enumerate()
            .map(|(i, spec)| TypeSlot {
                spec: spec.clone(),
                bit: 1 << i,
                index: RwLock::new(spec.kind.new_index()),
                last_update: AtomicI64::new(0),
            })
            .collect();
        Ok(Shared {
            types,
            state: RwLock::new(FilterState::new(&type_names)),
            ready: AtomicBool::new(false),
            applied_seq: AtomicI64::new(0),
            caught_up_at: AtomicI64::new(0),
            seq_tx: watch::channel(0).0,
            last_error: Mutex::new(None),
            load: Mutex::new(None),
            poke: Notify::new(),
            shutdown: watch::channel(false).0,
            snapshot_seq: AtomicI64::new(i64::MIN),
            snapshot_lock: tokio::sync::Mutex::new(()),
            config,
        })
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock() = e;
    }

    /// Applies events (in order) to the state and the indexes. Blocking; call off the runtime.
    pub(crate) fn apply_events(&self, events: &[Event]) {
        struct Op {
            start: usize,
            end: usize,
            id: u64,
            insert: bool,
        }
        let mut keys: Vec<Vec<u8>> = vec![Vec::new(); self.types.len()];
        let mut ops: Vec<Vec<Op>> = (0..self.types.len()).map(|_| Vec::new()).collect();
        let mut indexed = vec![true; events.len()];
        for (i, event) in events.iter().enumerate() {
            let (content_id, signal_type, value, insert) = match event {
                Event::SignalUpserted {
                    content_id,
                    signal_type,
                    value,
                    ..
                } => (content_id, signal_type, value, true),
                Event::SignalDeleted {
                    content_id,
                    signal_type,
                    value,
                    ..
                } => (content_id, signal_type, value, false),
                _ => continue,
            };
            let Some(t) = self.types.iter().position(|t| &t.spec.name == signal_type) else {
                continue;
            };
            let Ok(id) = u64::try_from(*content_id) else {
                indexed[i] = false;
                continue;
            };
            let buf = &mut keys[t];
            let start = buf.len();
            match self.types[t].spec.kind.key(value, buf) {
                Ok(()) => ops[t].push(Op {
                    start,
                    end: buf.len(),
                    id,
                    insert,
                }),
                Err(e) => {
                    buf.truncate(start);
                    indexed[i] = false;
                    if insert {
                        tracing::warn!(content_id, signal_type, error = %e, "stored signal is not indexable; skipped");
                    }
                }
            }
        }
        {
            let mut state = self.state.write();
            for (event, ok) in events.iter().zip(&indexed) {
                state.apply(event, *ok);
            }
        }
        let now = now_unix();
        for (t, ops) in ops.iter().enumerate() {
            if ops.is_empty() {
                continue;
            }
            let buf = &keys[t];
            let index_ops: Vec<IndexOp<'_>> = ops
                .iter()
                .map(|o| {
                    let key = &buf[o.start..o.end];
                    if o.insert {
                        IndexOp::Insert { key, id: o.id }
                    } else {
                        IndexOp::Remove { key, id: o.id }
                    }
                })
                .collect();
            let index = self.types[t].index.read();
            if let Err(e) = index.apply(&index_ops) {
                // Keys were validated above, so this is unexpected: apply one by one.
                tracing::error!(signal_type = %self.types[t].spec.name, error = %e, "index batch rejected; applying singly");
                for op in &index_ops {
                    let _ = index.apply(std::slice::from_ref(op));
                }
            }
            self.types[t].last_update.store(now, Ordering::Release);
        }
    }

    fn publish_seq(&self, seq: i64) {
        self.applied_seq.store(seq, Ordering::Release);
        self.seq_tx.send_replace(seq);
    }

    fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
        // Wake waiters even if the seq did not change.
        self.seq_tx.send_modify(|_| {});
    }
}

fn signal_events(chunk: Vec<SignalRecord>) -> Vec<Event> {
    chunk
        .into_iter()
        .map(|r| Event::SignalUpserted {
            content_id: r.content_id,
            bank_id: r.bank_id,
            signal_type: r.signal_type,
            value: r.value,
        })
        .collect()
}

async fn apply_blocking(shared: &Arc<Shared>, events: Vec<Event>) {
    let s = shared.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || s.apply_events(&events)).await {
        tracing::error!(error = %e, "applying changes panicked");
    }
}

/// Loads the whole state from the source. Returns the number of signals.
async fn load_from_source<S: ChangeSource>(
    shared: &Arc<Shared>,
    source: &S,
) -> Result<u64, String> {
    let mut init = source
        .load_state(shared.config.load_chunk)
        .await
        .map_err(|e| e.to_string())?;
    let seq = init.seq();
    apply_blocking(shared, init.take_state_events()).await;
    // The indexes are empty here (a fresh matcher, or `reset` after a failed load): they
    // store the chunks as they come and build their search structures once, at the end, for
    // the final size (no rebuild per chunk, no allocator churn, no layout chosen too early).
    for t in &shared.types {
        t.index.read().begin_bulk_load();
    }
    let mut signals = 0u64;
    while let Some(chunk) = init.next_signals().await.map_err(|e| e.to_string())? {
        signals += chunk.len() as u64;
        apply_blocking(shared, signal_events(chunk)).await;
    }
    let s = shared.clone();
    tokio::task::spawn_blocking(move || {
        for t in &s.types {
            t.index.read().finish_bulk_load();
        }
    })
    .await
    .map_err(|e| format!("building the indexes failed: {e}"))?;
    shared.publish_seq(seq);
    Ok(signals)
}

/// Reads and applies one batch. Returns whether the log was read to its end.
async fn tail_once<S: ChangeSource>(shared: &Arc<Shared>, source: &S) -> Result<bool, String> {
    let after = shared.applied_seq.load(Ordering::Acquire);
    let limit = shared.config.batch_limit;
    let batch: Vec<SeqEvent> = source
        .changes_since(after, limit)
        .await
        .map_err(|e| e.to_string())?;
    let n = batch.len();
    if let Some(last) = batch.last().map(|c| c.seq) {
        if last <= after {
            return Err(format!(
                "change source went backwards ({last} after {after})"
            ));
        }
        let events = batch.into_iter().map(|c| c.event).collect();
        apply_blocking(shared, events).await;
        shared.publish_seq(last);
    }
    let caught_up = n < limit as usize;
    if caught_up {
        shared.caught_up_at.store(now_millis(), Ordering::Release);
    }
    Ok(caught_up)
}

async fn run<S: ChangeSource>(shared: Arc<Shared>, source: S) {
    let mut shutdown = shared.shutdown.subscribe();
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);

    // 1. First load: snapshot if valid, else the store.
    let mut from_snapshot = false;
    if shared.config.snapshot_dir.is_some() {
        match crate::snapshot::load(&shared, &source).await {
            Ok(Some(seq)) => {
                from_snapshot = true;
                shared.publish_seq(seq);
                tracing::info!(seq, "matcher loaded from snapshot");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "matcher snapshot unusable; loading from the store");
                reset(&shared);
            }
        }
    }
    if !from_snapshot {
        loop {
            match load_from_source(&shared, &source).await {
                Ok(n) => {
                    tracing::info!(signals = n, "matcher loaded from the store");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "matcher initial load failed; retrying");
                    shared.set_error(Some(e));
                    reset(&shared);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    // 2. Catch up, then ready.
    let mut wake = match source.subscribe().await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "no change notifications; polling only");
            None
        }
    };
    let mut last_snapshot = Instant::now();
    loop {
        let caught_up = match tail_once(&shared, &source).await {
            Ok(c) => {
                shared.set_error(None);
                backoff = Duration::from_millis(100);
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the change log failed");
                shared.set_error(Some(e));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if caught_up && !shared.ready.load(Ordering::Acquire) {
            *shared.load.lock() = Some(LoadInfo {
                from_snapshot,
                duration: started.elapsed(),
                signals: shared
                    .types
                    .iter()
                    .map(|t| t.index.read().len() as u64)
                    .sum(),
            });
            shared.mark_ready();
            tracing::info!(elapsed = ?started.elapsed(), from_snapshot, "matcher ready");
        }
        if *shutdown.borrow() {
            return;
        }
        if let (Some(interval), true) = (
            shared.config.snapshot_interval,
            shared.ready.load(Ordering::Acquire),
        ) {
            if last_snapshot.elapsed() >= interval {
                last_snapshot = Instant::now();
                let s = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = write_snapshot(&s).await {
                        tracing::warn!(error = %e, "writing the matcher snapshot failed");
                    }
                });
            }
        }
        if !caught_up {
            continue;
        }
        let poll = shared.config.poll_interval;
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shared.poke.notified() => {}
            _ = shutdown.changed() => return,
            alive = async {
                match wake.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if !alive {
                    wake = None;
                }
            }
        }
    }
}

/// Empties state and indexes (after a failed load).
fn reset(shared: &Shared) {
    let names: Vec<String> = shared.types.iter().map(|t| t.spec.name.clone()).collect();
    *shared.state.write() = FilterState::new(&names);
    for t in &shared.types {
        *t.index.write() = t.spec.kind.new_index();
    }
    shared.applied_seq.store(0, Ordering::Release);
}

async fn write_snapshot(shared: &Arc<Shared>) -> Result<Option<i64>, MatcherError> {
    let Some(dir) = shared.config.snapshot_dir.clone() else {
        return Ok(None);
    };
    let _guard = shared.snapshot_lock.lock().await;
    let seq = shared.applied_seq.load(Ordering::Acquire);
    if shared.snapshot_seq.load(Ordering::Acquire) == seq {
        return Ok(Some(seq));
    }
    let s = shared.clone();
    let res = tokio::task::spawn_blocking(move || crate::snapshot::write(&s, &dir, seq))
        .await
        .map_err(|e| MatcherError::Snapshot(e.to_string()))?;
    match res {
        Ok(()) => {
            shared.snapshot_seq.store(seq, Ordering::Release);
            Ok(Some(seq))
        }
        Err(e) => {
            shared.set_error(Some(e.to_string()));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: KeyKind, v: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        kind.key(v, &mut out).map(|()| out)
    }

    #[test]
    fn keys_are_canonical_bytes() {
        let pdq = "98736629670cc19fc9f23862f66cce1f599e32c78e236c78619d202e9e66c157";
        let k = key(KeyKind::Pdq, pdq).expect("pdq");
        assert_eq!(k.len(), 32);
        assert_eq!(k[0], 0x98);
        assert_eq!(key(KeyKind::Pdq, &format!(" {pdq}\n")).expect("trimmed"), k);
        assert!(key(KeyKind::Pdq, &pdq[..63]).is_err());
        assert!(key(KeyKind::Pdq, &pdq.replace('9', "g")).is_err());

        let md5 = KeyKind::HexDigest { bytes: 16 };
        let lower = key(md5, "0123456789abcdef0123456789abcdef").expect("md5");
        assert_eq!(lower[..2], [0x01, 0x23]);
        assert_eq!(
            key(md5, " 0123456789ABCDEF0123456789abcdef ").expect("upper"),
            lower
        );
        assert!(key(md5, "0123").is_err());
        assert!(key(md5, "0123456789abcdef0123456789abcdeZ").is_err());
        assert!(key(md5, "é123456789abcdef0123456789abcde").is_err());

        assert_eq!(
            key(KeyKind::Text, " https://x/y ").expect("text"),
            b"https://x/y"
        );
        assert!(key(KeyKind::Text, "  ").is_err());
        assert!(key(KeyKind::Text, &"a".repeat(MAX_TEXT_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn configuration_is_checked() {
        let mut c = MatcherConfig::default();
        c.signal_types.push(IndexedType::pdq());
        assert!(matches!(Shared::new(c), Err(MatcherError::Config(_))));
        let c = MatcherConfig {
            signal_types: (0..33)
                .map(|i| IndexedType::text(&format!("t{i}")))
                .collect(),
            ..MatcherConfig::default()
        };
        assert!(matches!(Shared::new(c), Err(MatcherError::Config(_))));
        assert!(Shared::new(MatcherConfig::default()).is_ok());
    }
}
