//! Matching from memory: one index per signal type plus the state that filters hits (bank
//! names and ratios, content `disable_until_ts`, exchange enabled, signal type ratios), all fed
//! by tailing the store's change log. A lookup touches no database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use omm_index::{ExactIndex, IndexOp, PdqIndex, SignalIndex};
use omm_signals::SignalType;
use omm_store::{Change, ChangeEvent, Store, StoreError};

use crate::state::MatcherHealth;

/// Changes read per poll.
const CHANGE_BATCH: u32 = 10_000;
/// Signal rows per chunk at start-up.
const LOAD_CHUNK: usize = 50_000;

#[derive(Debug, Clone)]
struct BankEntry {
    name: String,
    ratio: f64,
    exchange_id: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct ContentEntry {
    bank_id: i64,
    disable_until_ts: i64,
}

#[derive(Debug, Default)]
struct FilterState {
    banks: HashMap<i64, BankEntry>,
    contents: HashMap<i64, ContentEntry>,
    exchanges_enabled: HashMap<i64, bool>,
    signal_type_ratios: HashMap<String, f64>,
}

/// One index hit that survived filtering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchHit {
    /// Content id.
    pub content_id: i64,
    /// Name of the content's bank.
    pub bank_name: String,
    /// Distance to the query (0 for exact types).
    pub distance: u32,
}

/// What a filtered lookup keeps.
#[derive(Debug, Clone, Default)]
pub struct LookupFilter {
    /// The coin: keep banks whose ratio is >= this (0 when the coin flip is bypassed).
    pub coin: f64,
    /// Only these bank names, if given.
    pub banks: Option<HashSet<String>>,
}

/// The in-memory matcher.
pub struct Matcher {
    indexes: BTreeMap<String, Box<dyn SignalIndex>>,
    state: RwLock<FilterState>,
    applied_seq: AtomicI64,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("signal_types", &self.indexes.keys().collect::<Vec<_>>())
            .field("applied_seq", &self.applied_seq.load(Ordering::Relaxed))
            .finish()
    }
}

/// Canonical index key bytes of a validated signal value.
pub fn key_bytes(signal_type: SignalType, canonical: &str) -> Option<Vec<u8>> {
    match signal_type {
        SignalType::Url => Some(canonical.as_bytes().to_vec()),
        _ => decode_hex(canonical),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn now_ts() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Matcher {
    /// An empty matcher with one index per signal type.
    pub fn new(signal_types: &[SignalType]) -> Self {
        let mut indexes: BTreeMap<String, Box<dyn SignalIndex>> = BTreeMap::new();
        for st in signal_types {
            let index: Box<dyn SignalIndex> = match st {
                SignalType::Pdq => Box::new(PdqIndex::new()),
                SignalType::VideoMd5 | SignalType::UrlMd5 => Box::new(ExactIndex::new(Some(16))),
                SignalType::VideoSha256 => Box::new(ExactIndex::new(Some(32))),
                SignalType::Url => Box::new(ExactIndex::new(None)),
            };
            indexes.insert(st.name().to_owned(), index);
        }
        Matcher {
            indexes,
            state: RwLock::new(FilterState::default()),
            applied_seq: AtomicI64::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, FilterState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, FilterState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The change-log sequence number applied so far.
    pub fn applied_seq(&self) -> i64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    /// Number of (signal, content) pairs indexed for `signal_type`.
    pub fn index_size(&self, signal_type: &str) -> Option<usize> {
        self.indexes.get(signal_type).map(|i| i.len())
    }

    /// Enabled ratio of a signal type (1.0 unless overridden).
    pub fn signal_type_ratio(&self, signal_type: &str) -> f64 {
        self.read()
            .signal_type_ratios
            .get(signal_type)
            .copied()
            .unwrap_or(1.0)
    }

    /// Signal type ratio overrides currently known.
    pub fn signal_type_ratios(&self) -> HashMap<String, f64> {
        self.read().signal_type_ratios.clone()
    }

    /// Index hits for a validated signal: only existing content, optionally only in `banks`.
    /// No enable checks (that is what "raw" means).
    pub fn raw_lookup(
        &self,
        signal_type: SignalType,
        canonical: &str,
        banks: Option<&HashSet<String>>,
    ) -> Vec<MatchHit> {
        self.query(signal_type, canonical, |_, bank| {
            banks.is_none_or(|set| set.contains(&bank.name))
        })
    }

    /// Filtered lookup: enabled content in banks whose ratio passes the coin, not fed by a
    /// disabled exchange, optionally restricted to some bank names.
    pub fn lookup(
        &self,
        signal_type: SignalType,
        canonical: &str,
        filter: &LookupFilter,
    ) -> Vec<MatchHit> {
        let now = now_ts();
        let state = self.read();
        let exchanges = &state.exchanges_enabled;
        self.query_with_state(&state, signal_type, canonical, |content, bank| {
            omm_store::content_enabled_at(content.disable_until_ts, now)
                && bank.ratio >= filter.coin
                && bank
                    .exchange_id
                    .is_none_or(|x| exchanges.get(&x).copied().unwrap_or(true))
                && filter
                    .banks
                    .as_ref()
                    .is_none_or(|set| set.contains(&bank.name))
        })
    }

    fn query(
        &self,
        signal_type: SignalType,
        canonical: &str,
        keep: impl Fn(&ContentEntry, &BankEntry) -> bool,
    ) -> Vec<MatchHit> {
        let state = self.read();
        self.query_with_state(&state, signal_type, canonical, keep)
    }

    fn query_with_state(
        &self,
        state: &FilterState,
        signal_type: SignalType,
        canonical: &str,
        keep: impl Fn(&ContentEntry, &BankEntry) -> bool,
    ) -> Vec<MatchHit> {
        let Some(index) = self.indexes.get(signal_type.name()) else {
            return Vec::new();
        };
        let Some(key) = key_bytes(signal_type, canonical) else {
            return Vec::new();
        };
        let hits = match index.query(&key, signal_type.default_threshold()) {
            Ok(hits) => hits,
            Err(e) => {
                tracing::warn!(error = %e, "index query failed");
                return Vec::new();
            }
        };
        hits.into_iter()
            .filter_map(|hit| {
                let content_id = i64::try_from(hit.id).ok()?;
                let content = state.contents.get(&content_id)?;
                let bank = state.banks.get(&content.bank_id)?;
                keep(content, bank).then(|| MatchHit {
                    content_id,
                    bank_name: bank.name.clone(),
                    distance: hit.distance,
                })
            })
            .collect()
    }

    fn index_signal(&self, signal_type: &str, value: &str, content_id: i64, insert: bool) {
        let Some(index) = self.indexes.get(signal_type) else {
            return;
        };
        let Ok(st) = signal_type.parse::<SignalType>() else {
            return;
        };
        // Values fetched from exchanges may be unnormalised (e.g. upper-case MD5).
        let Ok(canonical) = st.validate(value) else {
            tracing::debug!(signal_type, content_id, "skipping invalid stored signal");
            return;
        };
        let Some(key) = key_bytes(st, &canonical) else {
            return;
        };
        let id = content_id as u64;
        let op = if insert {
            IndexOp::Insert { key: &key, id }
        } else {
            IndexOp::Remove { key: &key, id }
        };
        if let Err(e) = index.apply(&[op]) {
            tracing::warn!(error = %e, signal_type, content_id, "index update failed");
        }
    }

    /// Applies change-log entries in order.
    pub fn apply(&self, changes: &[Change]) {
        let mut state = self.write();
        for change in changes {
            match &change.event {
                ChangeEvent::SignalUpserted {
                    content_id,
                    bank_id,
                    signal_type,
                    value,
                } => {
                    state.contents.entry(*content_id).or_insert(ContentEntry {
                        bank_id: *bank_id,
                        disable_until_ts: omm_store::CONTENT_ENABLED,
                    });
                    self.index_signal(signal_type, value, *content_id, true);
                }
                ChangeEvent::SignalDeleted {
                    content_id,
                    signal_type,
                    value,
                    ..
                } => self.index_signal(signal_type, value, *content_id, false),
                ChangeEvent::ContentUpserted {
                    content_id,
                    bank_id,
                    disable_until_ts,
                } => {
                    state.contents.insert(
                        *content_id,
                        ContentEntry {
                            bank_id: *bank_id,
                            disable_until_ts: *disable_until_ts,
                        },
                    );
                }
                ChangeEvent::ContentDeleted { content_id, .. } => {
                    state.contents.remove(content_id);
                }
                ChangeEvent::BankUpserted {
                    bank_id,
                    name,
                    enabled_ratio,
                    exchange_id,
                } => {
                    state.banks.insert(
                        *bank_id,
                        BankEntry {
                            name: name.clone(),
                            ratio: *enabled_ratio,
                            exchange_id: *exchange_id,
                        },
                    );
                }
                ChangeEvent::BankDeleted { bank_id } => {
                    state.banks.remove(bank_id);
                }
                ChangeEvent::ExchangeUpserted {
                    exchange_id,
                    enabled,
                    ..
                } => {
                    state.exchanges_enabled.insert(*exchange_id, *enabled);
                }
                ChangeEvent::ExchangeDeleted { exchange_id } => {
                    state.exchanges_enabled.remove(exchange_id);
                }
                ChangeEvent::SignalTypeUpserted {
                    signal_type,
                    enabled_ratio,
                } => {
                    state
                        .signal_type_ratios
                        .insert(signal_type.clone(), *enabled_ratio);
                }
                ChangeEvent::SignalTypeDeleted { signal_type } => {
                    state.signal_type_ratios.remove(signal_type);
                }
            }
            self.applied_seq.fetch_max(change.seq, Ordering::AcqRel);
        }
    }

    /// Loads the full state from the store (one snapshot) and returns its change-log seq.
    pub async fn load(&self, store: &Store) -> Result<i64, StoreError> {
        let mut snapshot = store.load_state(LOAD_CHUNK).await?;
        {
            let mut state = self.write();
            *state = FilterState::default();
            for bank in &snapshot.banks {
                state.banks.insert(
                    bank.id,
                    BankEntry {
                        name: bank.name.clone(),
                        ratio: bank.enabled_ratio,
                        exchange_id: bank.exchange_id,
                    },
                );
            }
            for x in &snapshot.exchanges {
                state.exchanges_enabled.insert(x.exchange_id, x.enabled);
            }
            for o in &snapshot.signal_type_overrides {
                state
                    .signal_type_ratios
                    .insert(o.name.clone(), o.enabled_ratio);
            }
            for c in &snapshot.content_states {
                state.contents.insert(
                    c.content_id,
                    ContentEntry {
                        bank_id: c.bank_id,
                        disable_until_ts: c.disable_until_ts,
                    },
                );
            }
        }
        while let Some(rows) = snapshot.next_signals().await? {
            let mut by_type: HashMap<&str, Vec<(Vec<u8>, u64)>> = HashMap::new();
            {
                let mut state = self.write();
                for row in &rows {
                    state
                        .contents
                        .entry(row.content_id)
                        .or_insert(ContentEntry {
                            bank_id: row.bank_id,
                            disable_until_ts: omm_store::CONTENT_ENABLED,
                        });
                    let Ok(st) = row.signal_type.parse::<SignalType>() else {
                        continue;
                    };
                    if !self.indexes.contains_key(st.name()) {
                        continue;
                    }
                    let Some(key) = st.validate(&row.value).ok().and_then(|c| key_bytes(st, &c))
                    else {
                        continue;
                    };
                    by_type
                        .entry(st.name())
                        .or_default()
                        .push((key, row.content_id as u64));
                }
            }
            for (st, entries) in by_type {
                if let Some(index) = self.indexes.get(st) {
                    let ops: Vec<IndexOp<'_>> = entries
                        .iter()
                        .map(|(key, id)| IndexOp::Insert { key, id: *id })
                        .collect();
                    if let Err(e) = index.apply(&ops) {
                        tracing::warn!(error = %e, signal_type = st, "index load failed for a chunk");
                    }
                }
            }
        }
        self.applied_seq.store(snapshot.seq, Ordering::Release);
        Ok(snapshot.seq)
    }

    /// Reads and applies every change after the applied seq. Returns how many were applied.
    pub async fn catch_up(&self, store: &Store) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let changes = store
                .changes_since(self.applied_seq(), CHANGE_BATCH)
                .await?;
            let n = changes.len();
            if n == 0 {
                return Ok(total);
            }
            self.apply(&changes);
            total += n;
            if n < CHANGE_BATCH as usize {
                return Ok(total);
            }
        }
    }
}

/// Keeps `matcher` fresh: loads the state, marks `health` ready, then tails the change log
/// every `poll` (sooner when the store hints at new changes). Retries on errors.
pub async fn run_sync(
    matcher: Arc<Matcher>,
    store: Store,
    health: Arc<MatcherHealth>,
    poll: Duration,
) {
    loop {
        match matcher.load(&store).await {
            Ok(seq) => {
                tracing::info!(seq, "matcher loaded");
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "matcher load failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    health.mark_synced();
    let mut hints = store.subscribe().await.ok();
    loop {
        match matcher.catch_up(&store).await {
            Ok(_) => health.mark_synced(),
            Err(e) => tracing::warn!(error = %e, "change log poll failed"),
        }
        match hints.as_mut() {
            Some(sub) => {
                let _ = tokio::time::timeout(poll, sub.changed()).await;
            }
            None => tokio::time::sleep(poll).await,
        }
    }
}
