//! Backend-independent planning of a fetch batch: merge by key, split into deletes, new
//! records and updated records, and diff the signals of updated records.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Result, StoreError};
use crate::model::{CheckpointGuard, FetchCheckpoint, FetchedRecord, RecordUpdate};

/// A stored record found for a key of the batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Existing {
    pub record_id: i64,
    pub content_id: Option<i64>,
}

/// The batch after merging by key (last update wins), in first-seen order.
pub(crate) struct Merged<'a> {
    /// Keys to delete (explicit deletes and records without signals).
    pub deletes: Vec<&'a str>,
    /// Keys with data.
    pub upserts: Vec<(&'a str, &'a FetchedRecord)>,
}

/// Merges by key and checks the one-signal-per-type rule.
pub(crate) fn merge(updates: &[RecordUpdate]) -> Result<Merged<'_>> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(updates.len());
    let mut merged: Vec<&RecordUpdate> = Vec::with_capacity(updates.len());
    for u in updates {
        if let Some(r) = &u.record {
            for (i, (t, _)) in r.signals.iter().enumerate() {
                if t.is_empty() {
                    return Err(StoreError::InvalidArgument(format!(
                        "record '{}': empty signal type",
                        u.key
                    )));
                }
                if r.signals[..i].iter().any(|(o, _)| o == t) {
                    return Err(StoreError::InvalidArgument(format!(
                        "record '{}' has more than one '{t}' signal",
                        u.key
                    )));
                }
            }
        }
        match index.get(u.key.as_str()) {
            Some(&i) => merged[i] = u,
            None => {
                index.insert(&u.key, merged.len());
                merged.push(u);
            }
        }
    }
    let mut out = Merged {
        deletes: Vec::new(),
        upserts: Vec::with_capacity(merged.len()),
    };
    for u in merged {
        match &u.record {
            Some(r) if !r.signals.is_empty() => out.upserts.push((u.key.as_str(), r)),
            _ => out.deletes.push(u.key.as_str()),
        }
    }
    Ok(out)
}

/// Checks the optimistic-concurrency guard against the stored checkpoint.
pub(crate) fn check_guard(guard: &CheckpointGuard, stored: Option<&FetchCheckpoint>) -> Result<()> {
    let ok = match guard {
        CheckpointGuard::Unchecked => true,
        CheckpointGuard::Absent => stored.is_none(),
        CheckpointGuard::Equals(v) => stored.is_some_and(|s| &s.value == v),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict(
            "the stored fetch checkpoint changed since this fetch started".into(),
        ))
    }
}

/// Signal writes that turn the current signals of existing content into the target ones.
#[derive(Default)]
pub(crate) struct SignalDiff<'a> {
    pub delete: Vec<(i64, String)>,
    pub update: Vec<(i64, &'a str, &'a str)>,
    pub insert: Vec<(i64, &'a str, &'a str)>,
}

pub(crate) fn diff_signals<'a>(
    current: &HashMap<i64, BTreeMap<String, String>>,
    targets: &[(i64, &'a FetchedRecord)],
) -> SignalDiff<'a> {
    let empty = BTreeMap::new();
    let mut d = SignalDiff::default();
    for (cid, rec) in targets {
        let cur = current.get(cid).unwrap_or(&empty);
        for t in cur.keys() {
            if !rec.signals.iter().any(|(nt, _)| nt == t) {
                d.delete.push((*cid, t.clone()));
            }
        }
        for (t, v) in &rec.signals {
            match cur.get(t) {
                Some(old) if old == v => {}
                Some(_) => d.update.push((*cid, t, v)),
                None => d.insert.push((*cid, t, v)),
            }
        }
    }
    d
}
