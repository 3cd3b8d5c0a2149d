//! The in-memory state that filters index hits: banks, exchanges, signal-type ratios and, per
//! content, its bank, which of its signals are indexed and its `disable_until_ts`.
//!
//! Every change of the log *assigns* the state of the keys it names (a bank, an exchange, a
//! content's enable state, one signal of a content) instead of adjusting it, so applying a
//! change twice, or replaying the log from a watermark onto a state that already contains some
//! later changes, gives the same result as applying each change once in order.
//!
//! Memory: content is the only part that scales with the data. A content costs 8 bytes in a
//! dense table indexed by id (ids are database serials, so dense), plus a hash-map entry only
//! when its `disable_until_ts` is not the default 1, or when its id is far outside the dense
//! range.

use std::collections::HashMap;
use std::sync::Arc;

use crate::coinflip::Coin;

/// Maximum number of signal types one matcher indexes (one bit each per content).
pub const MAX_SIGNAL_TYPES: usize = 32;

/// The default `disable_until_ts`: enabled.
pub const ENABLED: i64 = 1;

/// One change, as the matcher applies it. Mirrors the store's change log events; the store
/// adapter converts them (see [`crate::source`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A signal was stored (or is the new value of a changed signal).
    SignalUpserted {
        /// Content id.
        content_id: i64,
        /// The content's bank.
        bank_id: i64,
        /// Signal type name.
        signal_type: String,
        /// Value as stored.
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
    /// A content's `disable_until_ts` was set.
    ContentUpserted {
        /// Content id.
        content_id: i64,
        /// The content's bank.
        bank_id: i64,
        /// New `disable_until_ts`.
        disable_until_ts: i64,
    },
    /// A content was deleted.
    ContentDeleted {
        /// Content id.
        content_id: i64,
    },
    /// A bank was created, renamed or got a new ratio.
    BankUpserted {
        /// Bank id.
        bank_id: i64,
        /// Name.
        name: String,
        /// `matching_enabled_ratio`.
        enabled_ratio: f64,
        /// The exchange feeding it, if any.
        exchange_id: Option<i64>,
    },
    /// A bank was deleted.
    BankDeleted {
        /// Bank id.
        bank_id: i64,
    },
    /// An exchange was created or enabled/disabled.
    ExchangeUpserted {
        /// Exchange id.
        exchange_id: i64,
        /// Name.
        name: String,
        /// Whether it is enabled.
        enabled: bool,
    },
    /// An exchange was deleted.
    ExchangeDeleted {
        /// Exchange id.
        exchange_id: i64,
    },
    /// A signal type's enabled ratio was overridden.
    SignalTypeUpserted {
        /// Signal type name.
        signal_type: String,
        /// Ratio.
        enabled_ratio: f64,
    },
    /// A signal type's override was removed (ratio back to 1.0).
    SignalTypeDeleted {
        /// Signal type name.
        signal_type: String,
    },
}

/// Whether a content with this `disable_until_ts` is enabled at `now` (Unix seconds):
/// 0 is disabled forever, 1 (the default) enabled, any other value disabled until that time.
pub fn content_enabled(disable_until_ts: i64, now: i64) -> bool {
    disable_until_ts != 0 && disable_until_ts <= now
}

/// A bank as the matcher knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BankState {
    /// Database id.
    pub id: i64,
    /// Name (shared with every match result).
    pub name: Arc<str>,
    /// `matching_enabled_ratio`.
    pub enabled_ratio: f64,
    /// The exchange feeding it.
    pub exchange_id: Option<i64>,
}

/// An exchange as the matcher knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeState {
    /// Name.
    pub name: Arc<str>,
    /// Whether it is enabled; a disabled exchange's bank does not match.
    pub enabled: bool,
}

/// Per content: its bank (as an interned slot) and a bit per indexed signal type it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentEntry {
    pub bank_slot: u32,
    pub type_mask: u32,
}

const ABSENT: ContentEntry = ContentEntry {
    bank_slot: u32::MAX,
    type_mask: 0,
};

/// Content id -> [`ContentEntry`]: a dense vector for ids near the existing ones, a hash map for
/// the rest (negative ids, or ids far beyond the others), so a sparse id cannot make the vector
/// explode.
#[derive(Debug, Default)]
pub(crate) struct ContentTable {
    dense: Vec<ContentEntry>,
    sparse: HashMap<i64, ContentEntry>,
    len: usize,
}

/// Slack allowed beyond the dense table before an id goes to the sparse map.
const DENSE_SLACK: usize = 1 << 20;

impl ContentTable {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, id: i64) -> Option<ContentEntry> {
        if let Ok(i) = usize::try_from(id) {
            if let Some(e) = self.dense.get(i) {
                return (*e != ABSENT).then_some(*e);
            }
        }
        self.sparse.get(&id).copied()
    }

    fn dense_index(&self, id: i64) -> Option<usize> {
        let i = usize::try_from(id).ok()?;
        if i < self.dense.len() {
            return Some(i);
        }
        // Grow only when the id stays within a few times the populated size.
        let limit = self.len.saturating_mul(2).saturating_add(DENSE_SLACK);
        (i <= limit).then_some(i)
    }

    pub fn set(&mut self, id: i64, entry: ContentEntry) {
        debug_assert!(entry != ABSENT);
        match self.dense_index(id) {
            Some(i) => {
                if i >= self.dense.len() {
                    if i >= self.dense.capacity() {
                        // Grow by 1/8 rather than doubling: at 10M contents doubling would
                        // leave up to 80 MB of unused capacity.
                        let need = i + 1 - self.dense.len();
                        self.dense
                            .reserve_exact(need.max(self.dense.len() / 8).max(4096));
                    }
                    self.dense.resize(i + 1, ABSENT);
                }
                if self.dense[i] == ABSENT {
                    self.len += 1;
                }
                self.dense[i] = entry;
            }
            None => {
                if self.sparse.insert(id, entry).is_none() {
                    self.len += 1;
                }
            }
        }
    }

    pub fn remove(&mut self, id: i64) -> Option<ContentEntry> {
        if let Ok(i) = usize::try_from(id) {
            if let Some(e) = self.dense.get_mut(i) {
                let old = std::mem::replace(e, ABSENT);
                if old != ABSENT {
                    self.len -= 1;
                    return Some(old);
                }
                return None;
            }
        }
        let old = self.sparse.remove(&id);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// All present entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, ContentEntry)> + '_ {
        self.dense
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != ABSENT)
            .map(|(i, e)| (i as i64, *e))
            .chain(self.sparse.iter().map(|(id, e)| (*id, *e)))
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.dense.capacity() * std::mem::size_of::<ContentEntry>()
            + self.sparse.capacity() * (std::mem::size_of::<(i64, ContentEntry)>() + 1)
    }
}

/// Why a hit was dropped, or that it was kept: the outcome of filtering one index hit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict<'a> {
    /// The content is unknown (deleted) or no longer has a signal of this type.
    Gone,
    /// Known content; filtered out by enable state, ratio or exchange.
    Filtered,
    /// Matches, in this bank.
    Keep(&'a BankState, Option<&'a ExchangeState>),
}

/// The whole filter state. Not synchronised: the matcher wraps it in a lock.
#[derive(Debug, Default)]
pub struct FilterState {
    /// Indexed signal type names, in bit order.
    type_names: Vec<String>,
    banks: HashMap<i64, BankState>,
    exchanges: HashMap<i64, ExchangeState>,
    type_ratios: HashMap<String, f64>,
    /// Interned bank ids: slot -> bank id, and back.
    bank_slot_ids: Vec<i64>,
    bank_slots: HashMap<i64, u32>,
    pub(crate) contents: ContentTable,
    /// `disable_until_ts` of content whose value is not the default 1.
    disable_until: HashMap<i64, i64>,
}

impl FilterState {
    /// An empty state for these indexed signal types (at most [`MAX_SIGNAL_TYPES`]; signals of
    /// other types are ignored).
    pub fn new(type_names: &[String]) -> Self {
        assert!(
            type_names.len() <= MAX_SIGNAL_TYPES,
            "too many signal types"
        );
        FilterState {
            type_names: type_names.to_vec(),
            ..Default::default()
        }
    }

    /// The indexed signal types, in bit order.
    pub fn type_names(&self) -> &[String] {
        &self.type_names
    }

    fn type_bit(&self, name: &str) -> Option<u32> {
        self.type_names
            .iter()
            .position(|t| t == name)
            .map(|i| 1u32 << i)
    }

    fn bank_slot(&mut self, bank_id: i64) -> u32 {
        if let Some(&s) = self.bank_slots.get(&bank_id) {
            return s;
        }
        let s = self.bank_slot_ids.len() as u32;
        self.bank_slot_ids.push(bank_id);
        self.bank_slots.insert(bank_id, s);
        s
    }

    /// Applies one change. `signal_indexed` says whether a signal value was accepted by its
    /// index (an unparsable stored value is not indexed, so it must not count as present).
    pub fn apply(&mut self, event: &Event, signal_indexed: bool) {
        match event {
            Event::SignalUpserted {
                content_id,
                bank_id,
                signal_type,
                ..
            } => {
                let Some(bit) = self.type_bit(signal_type) else {
                    return;
                };
                if !signal_indexed {
                    return;
                }
                let bank_slot = self.bank_slot(*bank_id);
                let mask = self.contents.get(*content_id).map_or(0, |e| e.type_mask);
                self.contents.set(
                    *content_id,
                    ContentEntry {
                        bank_slot,
                        type_mask: mask | bit,
                    },
                );
            }
            Event::SignalDeleted {
                content_id,
                signal_type,
                ..
            } => {
                let Some(bit) = self.type_bit(signal_type) else {
                    return;
                };
                let Some(mut e) = self.contents.get(*content_id) else {
                    return;
                };
                e.type_mask &= !bit;
                if e.type_mask == 0 && !self.disable_until.contains_key(content_id) {
                    // Nothing left to match and the default enable state: forget it. A later
                    // signal of this content brings its bank along.
                    self.contents.remove(*content_id);
                } else {
                    self.contents.set(*content_id, e);
                }
            }
            Event::ContentUpserted {
                content_id,
                bank_id,
                disable_until_ts,
            } => {
                let bank_slot = self.bank_slot(*bank_id);
                let mask = self.contents.get(*content_id).map_or(0, |e| e.type_mask);
                if *disable_until_ts == ENABLED {
                    self.disable_until.remove(content_id);
                    if mask == 0 {
                        self.contents.remove(*content_id);
                        return;
                    }
                } else {
                    self.disable_until.insert(*content_id, *disable_until_ts);
                }
                self.contents.set(
                    *content_id,
                    ContentEntry {
                        bank_slot,
                        type_mask: mask,
                    },
                );
            }
            Event::ContentDeleted { content_id } => {
                self.contents.remove(*content_id);
                self.disable_until.remove(content_id);
            }
            Event::BankUpserted {
                bank_id,
                name,
                enabled_ratio,
                exchange_id,
            } => {
                self.bank_slot(*bank_id);
                self.banks.insert(
                    *bank_id,
                    BankState {
                        id: *bank_id,
                        name: Arc::from(name.as_str()),
                        enabled_ratio: *enabled_ratio,
                        exchange_id: *exchange_id,
                    },
                );
            }
            Event::BankDeleted { bank_id } => {
                // Its content is logged as deleted too; until those entries are applied, hits
                // in an unknown bank are dropped.
                self.banks.remove(bank_id);
            }
            Event::ExchangeUpserted {
                exchange_id,
                name,
                enabled,
            } => {
                self.exchanges.insert(
                    *exchange_id,
                    ExchangeState {
                        name: Arc::from(name.as_str()),
                        enabled: *enabled,
                    },
                );
            }
            Event::ExchangeDeleted { exchange_id } => {
                self.exchanges.remove(exchange_id);
            }
            Event::SignalTypeUpserted {
                signal_type,
                enabled_ratio,
            } => {
                self.type_ratios.insert(signal_type.clone(), *enabled_ratio);
            }
            Event::SignalTypeDeleted { signal_type } => {
                self.type_ratios.remove(signal_type);
            }
        }
    }

    /// The enabled ratio of a signal type (1.0 unless overridden).
    pub fn type_ratio(&self, signal_type: &str) -> f64 {
        self.type_ratios.get(signal_type).copied().unwrap_or(1.0)
    }

    /// All signal type overrides.
    pub fn type_ratios(&self) -> &HashMap<String, f64> {
        &self.type_ratios
    }

    /// A bank by id.
    pub fn bank(&self, id: i64) -> Option<&BankState> {
        self.banks.get(&id)
    }

    /// All banks.
    pub fn banks(&self) -> impl Iterator<Item = &BankState> {
        self.banks.values()
    }

    /// All exchanges, with their ids.
    pub fn exchanges(&self) -> impl Iterator<Item = (i64, &ExchangeState)> {
        self.exchanges.iter().map(|(id, e)| (*id, e))
    }

    /// Number of content items known (with an indexed signal or a non-default enable state).
    pub fn content_count(&self) -> usize {
        self.contents.len()
    }

    /// The `disable_until_ts` of a content (1 unless set otherwise).
    pub fn disable_until_ts(&self, content_id: i64) -> i64 {
        self.disable_until
            .get(&content_id)
            .copied()
            .unwrap_or(ENABLED)
    }

    /// The bank id of a known content.
    pub fn content_bank(&self, content_id: i64) -> Option<i64> {
        let e = self.contents.get(content_id)?;
        self.bank_slot_ids.get(e.bank_slot as usize).copied()
    }

    /// Whether the content has an indexed signal of this type in the state.
    pub fn has_signal(&self, content_id: i64, signal_type: &str) -> bool {
        match (self.contents.get(content_id), self.type_bit(signal_type)) {
            (Some(e), Some(bit)) => e.type_mask & bit != 0,
            _ => false,
        }
    }

    /// Approximate heap bytes of the per-content part.
    pub fn heap_bytes(&self) -> usize {
        self.contents.heap_bytes()
            + self.disable_until.capacity() * (std::mem::size_of::<(i64, i64)>() + 1)
    }

    /// For `raw_lookup`: the bank of a hit whose content still exists and still has a signal of
    /// this type (bit `type_bit`), ignoring every enable state.
    pub(crate) fn raw_bank(&self, content_id: i64, type_bit: u32) -> Option<Option<&BankState>> {
        let e = self.contents.get(content_id)?;
        if e.type_mask & type_bit == 0 {
            return None;
        }
        let bank_id = self.bank_slot_ids.get(e.bank_slot as usize)?;
        Some(self.banks.get(bank_id))
    }

    /// Filters one hit for a filtered lookup.
    pub(crate) fn verdict(
        &self,
        content_id: i64,
        type_bit: u32,
        now: i64,
        coin: Coin,
    ) -> Verdict<'_> {
        let Some(e) = self.contents.get(content_id) else {
            return Verdict::Gone;
        };
        if e.type_mask & type_bit == 0 {
            return Verdict::Gone;
        }
        if !content_enabled(self.disable_until_ts(content_id), now) {
            return Verdict::Filtered;
        }
        let Some(bank) = self
            .bank_slot_ids
            .get(e.bank_slot as usize)
            .and_then(|id| self.banks.get(id))
        else {
            return Verdict::Gone;
        };
        if !coin.keeps(bank.enabled_ratio) {
            return Verdict::Filtered;
        }
        let exchange = match bank.exchange_id {
            None => None,
            Some(x) => match self.exchanges.get(&x) {
                Some(ex) if ex.enabled => Some(ex),
                // Disabled, or deleted (its bank's deletion may not be applied yet).
                _ => return Verdict::Filtered,
            },
        };
        Verdict::Keep(bank, exchange)
    }

    // ---- snapshot support

    pub(crate) fn bank_slot_ids(&self) -> &[i64] {
        &self.bank_slot_ids
    }

    pub(crate) fn disable_until_map(&self) -> &HashMap<i64, i64> {
        &self.disable_until
    }

    pub(crate) fn exchanges_map(&self) -> &HashMap<i64, ExchangeState> {
        &self.exchanges
    }

    /// Rebuilds from snapshot parts (validated by the caller).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        type_names: Vec<String>,
        banks: Vec<BankState>,
        exchanges: Vec<(i64, ExchangeState)>,
        type_ratios: Vec<(String, f64)>,
        bank_slot_ids: Vec<i64>,
        contents: Vec<(i64, ContentEntry)>,
        disable_until: Vec<(i64, i64)>,
    ) -> Self {
        let bank_slots = bank_slot_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let mut table = ContentTable::default();
        for (id, e) in contents {
            table.set(id, e);
        }
        FilterState {
            type_names,
            banks: banks.into_iter().map(|b| (b.id, b)).collect(),
            exchanges: exchanges.into_iter().collect(),
            type_ratios: type_ratios.into_iter().collect(),
            bank_slot_ids,
            bank_slots,
            contents: table,
            disable_until: disable_until.into_iter().collect(),
        }
    }

    /// A canonical, comparable description of the logical state (for tests: a snapshot restart
    /// must equal a rebuild, whatever the slot numbering).
    pub fn canonical(&self) -> CanonicalState {
        let mut banks: Vec<_> = self
            .banks
            .values()
            .map(|b| {
                (
                    b.id,
                    b.name.to_string(),
                    b.enabled_ratio.to_bits(),
                    b.exchange_id,
                )
            })
            .collect();
        banks.sort();
        let mut exchanges: Vec<_> = self
            .exchanges
            .iter()
            .map(|(id, e)| (*id, e.name.to_string(), e.enabled))
            .collect();
        exchanges.sort();
        let mut type_ratios: Vec<_> = self
            .type_ratios
            .iter()
            .map(|(t, r)| (t.clone(), r.to_bits()))
            .collect();
        type_ratios.sort();
        let mut contents: Vec<_> = self
            .contents
            .iter()
            .map(|(id, e)| {
                let bank = self
                    .bank_slot_ids
                    .get(e.bank_slot as usize)
                    .copied()
                    .unwrap_or(-1);
                (id, bank, e.type_mask, self.disable_until_ts(id))
            })
            .collect();
        contents.sort();
        CanonicalState {
            banks,
            exchanges,
            type_ratios,
            contents,
        }
    }
}

/// A comparable rendering of a [`FilterState`]; see [`FilterState::canonical`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalState {
    /// (id, name, ratio bits, exchange id), sorted.
    pub banks: Vec<(i64, String, u64, Option<i64>)>,
    /// (id, name, enabled), sorted.
    pub exchanges: Vec<(i64, String, bool)>,
    /// (type, ratio bits), sorted.
    pub type_ratios: Vec<(String, u64)>,
    /// (content id, bank id, type mask, disable_until_ts), sorted.
    pub contents: Vec<(i64, i64, u32, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FilterState {
        FilterState::new(&["pdq".to_string(), "md5".to_string()])
    }

    fn sig(content_id: i64, bank_id: i64, t: &str) -> Event {
        Event::SignalUpserted {
            content_id,
            bank_id,
            signal_type: t.into(),
            value: "v".into(),
        }
    }

    fn sig_del(content_id: i64, bank_id: i64, t: &str) -> Event {
        Event::SignalDeleted {
            content_id,
            bank_id,
            signal_type: t.into(),
            value: "v".into(),
        }
    }

    fn bank(id: i64, name: &str, ratio: f64, exchange_id: Option<i64>) -> Event {
        Event::BankUpserted {
            bank_id: id,
            name: name.into(),
            enabled_ratio: ratio,
            exchange_id,
        }
    }

    const PDQ: u32 = 1;
    const NOW: i64 = 1_700_000_000;

    fn kept(s: &FilterState, id: i64, coin: Coin) -> Option<String> {
        match s.verdict(id, PDQ, NOW, coin) {
            Verdict::Keep(b, _) => Some(b.name.to_string()),
            _ => None,
        }
    }

    #[test]
    fn content_enabled_rule() {
        assert!(!content_enabled(0, NOW));
        assert!(content_enabled(1, NOW));
        assert!(content_enabled(NOW, NOW));
        assert!(!content_enabled(NOW + 1, NOW));
        assert!(content_enabled(-5, NOW));
    }

    #[test]
    fn signals_banks_and_content_states() {
        let mut s = state();
        s.apply(&bank(1, "A", 1.0, None), true);
        s.apply(&sig(10, 1, "pdq"), true);
        assert_eq!(kept(&s, 10, Coin::Drawn(0.5)).as_deref(), Some("A"));
        // Wrong type bit: md5 not present.
        assert_eq!(s.verdict(10, 2, NOW, Coin::Bypassed), Verdict::Gone);
        // Disable forever, until the future, until the past.
        for (ts, on) in [(0, false), (NOW + 10, false), (NOW - 10, true), (1, true)] {
            s.apply(
                &Event::ContentUpserted {
                    content_id: 10,
                    bank_id: 1,
                    disable_until_ts: ts,
                },
                true,
            );
            assert_eq!(kept(&s, 10, Coin::Bypassed).is_some(), on, "ts {ts}");
            assert_eq!(s.disable_until_ts(10), ts);
        }
        // Bank ratio.
        s.apply(&bank(1, "A", 0.3, None), true);
        assert!(kept(&s, 10, Coin::Drawn(0.2)).is_some());
        assert!(kept(&s, 10, Coin::Drawn(0.4)).is_none());
        assert!(kept(&s, 10, Coin::Bypassed).is_some());
        s.apply(&bank(1, "A", 0.0, None), true);
        assert!(kept(&s, 10, Coin::Drawn(0.0)).is_none());
        assert!(
            kept(&s, 10, Coin::Bypassed).is_some(),
            "bypass keeps ratio 0"
        );
        // Rename.
        s.apply(&bank(1, "B", 1.0, None), true);
        assert_eq!(kept(&s, 10, Coin::Bypassed).as_deref(), Some("B"));
        // Bank delete: hits in an unknown bank are gone.
        s.apply(&Event::BankDeleted { bank_id: 1 }, true);
        assert_eq!(s.verdict(10, PDQ, NOW, Coin::Bypassed), Verdict::Gone);
    }

    #[test]
    fn exchanges_gate_their_banks() {
        let mut s = state();
        s.apply(&bank(2, "X", 1.0, Some(7)), true);
        s.apply(&sig(5, 2, "pdq"), true);
        // Unknown exchange: not matched.
        assert!(kept(&s, 5, Coin::Bypassed).is_none());
        let ex = |enabled| Event::ExchangeUpserted {
            exchange_id: 7,
            name: "X".into(),
            enabled,
        };
        s.apply(&ex(true), true);
        match s.verdict(5, PDQ, NOW, Coin::Bypassed) {
            Verdict::Keep(b, Some(e)) => {
                assert_eq!(&*b.name, "X");
                assert_eq!(&*e.name, "X");
            }
            v => panic!("{v:?}"),
        }
        s.apply(&ex(false), true);
        assert!(kept(&s, 5, Coin::Bypassed).is_none());
        s.apply(&ex(true), true);
        s.apply(&Event::ExchangeDeleted { exchange_id: 7 }, true);
        assert!(kept(&s, 5, Coin::Bypassed).is_none());
    }

    #[test]
    fn deletes_in_any_order_forget_content() {
        for order in 0..3 {
            let mut s = state();
            s.apply(&bank(1, "A", 1.0, None), true);
            s.apply(&sig(3, 1, "pdq"), true);
            s.apply(&sig(3, 1, "md5"), true);
            s.apply(
                &Event::ContentUpserted {
                    content_id: 3,
                    bank_id: 1,
                    disable_until_ts: 0,
                },
                true,
            );
            let mut events = vec![
                Event::ContentDeleted { content_id: 3 },
                sig_del(3, 1, "pdq"),
                sig_del(3, 1, "md5"),
            ];
            events.rotate_left(order);
            let mut gone = false;
            for e in &events {
                s.apply(e, true);
                gone |=
                    !matches!(e, Event::SignalDeleted { signal_type, .. } if signal_type == "md5");
                if gone {
                    assert_eq!(s.verdict(3, PDQ, NOW, Coin::Bypassed), Verdict::Gone);
                }
            }
            assert_eq!(s.content_count(), 0);
            assert_eq!(s.disable_until_ts(3), 1);
        }
    }

    #[test]
    fn one_signal_deleted_keeps_the_other() {
        let mut s = state();
        s.apply(&bank(1, "A", 1.0, None), true);
        s.apply(&sig(3, 1, "pdq"), true);
        s.apply(&sig(3, 1, "md5"), true);
        s.apply(&sig_del(3, 1, "pdq"), true);
        assert_eq!(s.verdict(3, PDQ, NOW, Coin::Bypassed), Verdict::Gone);
        assert!(matches!(
            s.verdict(3, 2, NOW, Coin::Bypassed),
            Verdict::Keep(..)
        ));
        s.apply(&sig_del(3, 1, "md5"), true);
        assert_eq!(s.content_count(), 0);
    }

    #[test]
    fn disabled_content_without_signals_is_remembered() {
        // Content created disabled, signals added later: stays disabled.
        let mut s = state();
        s.apply(&bank(1, "A", 1.0, None), true);
        s.apply(
            &Event::ContentUpserted {
                content_id: 8,
                bank_id: 1,
                disable_until_ts: 0,
            },
            true,
        );
        s.apply(&sig(8, 1, "pdq"), true);
        assert_eq!(s.verdict(8, PDQ, NOW, Coin::Bypassed), Verdict::Filtered);
        s.apply(&sig_del(8, 1, "pdq"), true);
        s.apply(&sig(8, 1, "pdq"), true);
        assert_eq!(s.verdict(8, PDQ, NOW, Coin::Bypassed), Verdict::Filtered);
    }

    #[test]
    fn unindexed_types_and_unparsable_values_are_ignored() {
        let mut s = state();
        s.apply(&bank(1, "A", 1.0, None), true);
        s.apply(&sig(4, 1, "vpdq"), true);
        assert_eq!(s.content_count(), 0);
        s.apply(&sig(4, 1, "pdq"), false);
        assert_eq!(s.content_count(), 0);
    }

    #[test]
    fn signal_type_overrides() {
        let mut s = state();
        assert_eq!(s.type_ratio("pdq"), 1.0);
        s.apply(
            &Event::SignalTypeUpserted {
                signal_type: "pdq".into(),
                enabled_ratio: 0.0,
            },
            true,
        );
        assert_eq!(s.type_ratio("pdq"), 0.0);
        s.apply(
            &Event::SignalTypeDeleted {
                signal_type: "pdq".into(),
            },
            true,
        );
        assert_eq!(s.type_ratio("pdq"), 1.0);
    }

    #[test]
    fn reapplying_any_prefix_is_idempotent() {
        let events = vec![
            bank(1, "A", 1.0, None),
            Event::ExchangeUpserted {
                exchange_id: 9,
                name: "E".into(),
                enabled: true,
            },
            bank(2, "E", 0.5, Some(9)),
            sig(1, 1, "pdq"),
            sig(2, 2, "pdq"),
            sig(2, 2, "md5"),
            Event::ContentUpserted {
                content_id: 1,
                bank_id: 1,
                disable_until_ts: 0,
            },
            sig_del(2, 2, "md5"),
            Event::ContentDeleted { content_id: 2 },
            sig_del(2, 2, "pdq"),
            bank(1, "A2", 0.7, None),
            Event::ExchangeUpserted {
                exchange_id: 9,
                name: "E".into(),
                enabled: false,
            },
            sig(3, 1, "md5"),
            Event::ContentUpserted {
                content_id: 1,
                bank_id: 1,
                disable_until_ts: 1,
            },
        ];
        let mut once = state();
        for e in &events {
            once.apply(e, true);
        }
        // Replay from every watermark onto every later intermediate state.
        for w in 0..events.len() {
            for s_at in w..=events.len() {
                let mut s = state();
                for e in &events[..s_at] {
                    s.apply(e, true);
                }
                for e in &events[w..] {
                    s.apply(e, true);
                }
                assert_eq!(
                    s.canonical(),
                    once.canonical(),
                    "watermark {w}, state at {s_at}"
                );
            }
        }
    }

    #[test]
    fn content_table_dense_and_sparse() {
        let mut t = ContentTable::default();
        let e = ContentEntry {
            bank_slot: 0,
            type_mask: 1,
        };
        t.set(5, e);
        t.set(-3, e);
        t.set(i64::MAX, e);
        t.set(5, e);
        assert_eq!(t.len(), 3);
        assert!(t.dense.len() < 10);
        assert_eq!(t.get(i64::MAX), Some(e));
        assert_eq!(t.get(-3), Some(e));
        assert_eq!(t.get(4), None);
        assert_eq!(t.remove(5), Some(e));
        assert_eq!(t.remove(5), None);
        assert_eq!(t.remove(-3), Some(e));
        assert_eq!(t.len(), 1);
        assert_eq!(t.iter().count(), 1);
    }
}
