//! Exact-match index for digest-like signal types (MD5, SHA-256, URL MD5).

use std::collections::HashMap;
use std::path::Path;

use parking_lot::RwLock;

use crate::snapshot::{SnapshotError, SnapshotKind, SnapshotReader, SnapshotWriter};
use crate::{normalize_hits, ApplyStats, Hit, IndexError, IndexOp, SignalIndex};

/// Longest key accepted when no fixed length is configured.
pub const MAX_KEY_LEN: usize = 1024;
/// Entries copied per read-lock hold while writing a snapshot.
const SNAPSHOT_CHUNK: usize = 1 << 14;

/// Maps byte-string keys to the ids stored under them; queries return distance 0.
///
/// Concurrency: one `parking_lot::RwLock` around a hash map; queries take the read lock, a batch
/// takes the write lock once (an insert or remove is a hash-map operation, so even large batches
/// hold it briefly).
pub struct ExactIndex {
    key_len: Option<usize>,
    inner: RwLock<ExactInner>,
}

#[derive(Default)]
struct ExactInner {
    map: HashMap<Box<[u8]>, Vec<u64>>,
    len: usize,
}

impl ExactIndex {
    /// An index whose keys must all be `key_len` bytes long (16 for MD5, 32 for SHA-256), or of
    /// any length from 1 to [`MAX_KEY_LEN`] when `None`.
    pub fn new(key_len: Option<usize>) -> Self {
        ExactIndex {
            key_len,
            inner: RwLock::new(ExactInner::default()),
        }
    }

    /// The key length this index requires, if fixed.
    pub fn key_len(&self) -> Option<usize> {
        self.key_len
    }

    fn check(&self, key: &[u8]) -> Result<(), IndexError> {
        match self.key_len {
            Some(n) if key.len() != n => Err(IndexError::InvalidKey(format!(
                "expected a {n}-byte key, got {} bytes",
                key.len()
            ))),
            None if key.is_empty() || key.len() > MAX_KEY_LEN => {
                Err(IndexError::InvalidKey(format!(
                    "key length must be 1 to {MAX_KEY_LEN} bytes, got {}",
                    key.len()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Ids stored under `key` (sorted), without validation of the key length.
    pub fn get(&self, key: &[u8]) -> Vec<u64> {
        let mut ids = self.inner.read().map.get(key).cloned().unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Number of stored (key, id) pairs.
    pub fn len(&self) -> usize {
        self.inner.read().len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ExactInner {
    fn insert(&mut self, key: &[u8], id: u64) -> bool {
        let ids = match self.map.get_mut(key) {
            Some(ids) => ids,
            None => self.map.entry(key.into()).or_default(),
        };
        if ids.contains(&id) {
            return false;
        }
        ids.push(id);
        self.len += 1;
        true
    }

    fn remove(&mut self, key: &[u8], id: u64) -> bool {
        let Some(ids) = self.map.get_mut(key) else {
            return false;
        };
        let Some(pos) = ids.iter().position(|&x| x == id) else {
            return false;
        };
        ids.swap_remove(pos);
        if ids.is_empty() {
            self.map.remove(key);
        }
        self.len -= 1;
        true
    }
}

impl SignalIndex for ExactIndex {
    fn kind(&self) -> SnapshotKind {
        SnapshotKind::Exact
    }

    fn apply(&self, ops: &[IndexOp<'_>]) -> Result<ApplyStats, IndexError> {
        for op in ops {
            let (IndexOp::Insert { key, .. } | IndexOp::Remove { key, .. }) = op;
            self.check(key)?;
        }
        let mut stats = ApplyStats::default();
        let mut inner = self.inner.write();
        for op in ops {
            match *op {
                IndexOp::Insert { key, id } => {
                    if inner.insert(key, id) {
                        stats.inserted += 1;
                    } else {
                        stats.unchanged += 1;
                    }
                }
                IndexOp::Remove { key, id } => {
                    if inner.remove(key, id) {
                        stats.removed += 1;
                    } else {
                        stats.unchanged += 1;
                    }
                }
            }
        }
        Ok(stats)
    }

    fn query(&self, key: &[u8], _threshold: u32) -> Result<Vec<Hit>, IndexError> {
        self.check(key)?;
        let mut hits: Vec<Hit> = self
            .inner
            .read()
            .map
            .get(key)
            .map(|ids| ids.iter().map(|&id| Hit { distance: 0, id }).collect())
            .unwrap_or_default();
        normalize_hits(&mut hits);
        Ok(hits)
    }

    fn len(&self) -> usize {
        ExactIndex::len(self)
    }

    /// Payload: per entry `u32` key length, key bytes, `u64` id (little-endian). The map is
    /// copied in chunks under short read locks (a fuzzy snapshot, see
    /// [`crate::PdqIndex::write_snapshot`] for why replaying from the watermark is exact).
    fn write_snapshot(&self, path: &Path, watermark: u64) -> Result<(), SnapshotError> {
        // Collect keys first (under one read lock), then copy their ids chunk by chunk.
        let keys: Vec<Box<[u8]>> = self.inner.read().map.keys().cloned().collect();
        let mut writer = SnapshotWriter::create(path)?;
        let mut count = 0u64;
        let mut buf = Vec::new();
        for chunk in keys.chunks(SNAPSHOT_CHUNK) {
            buf.clear();
            let inner = self.inner.read();
            for key in chunk {
                for &id in inner.map.get(key).into_iter().flatten() {
                    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    buf.extend_from_slice(key);
                    buf.extend_from_slice(&id.to_le_bytes());
                    count += 1;
                }
            }
            drop(inner);
            writer.write(&buf)?;
        }
        writer.finish(
            SnapshotKind::Exact,
            watermark,
            count,
            self.key_len.unwrap_or(0) as u64,
        )
    }

    fn load_snapshot(&self, path: &Path) -> Result<u64, SnapshotError> {
        let mut reader = SnapshotReader::open(path, SnapshotKind::Exact)?;
        let header = *reader.header();
        if header.param != self.key_len.unwrap_or(0) as u64 {
            return Err(SnapshotError::Corrupt(format!(
                "snapshot key length {} does not match the index's {}",
                header.param,
                self.key_len.unwrap_or(0)
            )));
        }
        let mut fresh = ExactInner::default();
        let mut len_buf = [0u8; 4];
        let mut id_buf = [0u8; 8];
        let mut key = Vec::new();
        for _ in 0..header.entry_count {
            reader.read_exact(&mut len_buf)?;
            let n = u32::from_le_bytes(len_buf) as usize;
            if n == 0 || n > MAX_KEY_LEN || self.key_len.is_some_and(|k| k != n) {
                return Err(SnapshotError::Corrupt(format!("bad key length {n}")));
            }
            key.resize(n, 0);
            reader.read_exact(&mut key)?;
            reader.read_exact(&mut id_buf)?;
            fresh.insert(&key, u64::from_le_bytes(id_buf));
        }
        let header = reader.finish()?;
        let old = std::mem::replace(&mut *self.inner.write(), fresh);
        drop(old);
        Ok(header.watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_query_remove() {
        let idx = ExactIndex::new(Some(16));
        let k = [7u8; 16];
        assert!(idx.insert(&k, 1).unwrap());
        assert!(!idx.insert(&k, 1).unwrap());
        assert!(idx.insert(&k, 2).unwrap());
        assert_eq!(idx.len(), 2);
        let hits = SignalIndex::query(&idx, &k, 0).unwrap();
        assert_eq!(
            hits,
            vec![Hit { distance: 0, id: 1 }, Hit { distance: 0, id: 2 }]
        );
        assert!(idx.remove(&k, 1).unwrap());
        assert!(!idx.remove(&k, 1).unwrap());
        assert_eq!(idx.get(&k), vec![2]);
        assert!(idx.remove(&k, 2).unwrap());
        assert!(idx.is_empty());
        assert!(SignalIndex::query(&idx, &k, 0).unwrap().is_empty());
    }

    #[test]
    fn bad_keys_are_rejected_and_change_nothing() {
        let idx = ExactIndex::new(Some(16));
        let good = [1u8; 16];
        let err = idx.apply(&[
            IndexOp::Insert { key: &good, id: 1 },
            IndexOp::Insert {
                key: &[1u8; 15],
                id: 2,
            },
        ]);
        assert!(matches!(err, Err(IndexError::InvalidKey(_))));
        assert!(idx.is_empty());
        assert!(SignalIndex::query(&idx, &[0u8; 3], 0).is_err());
        let any = ExactIndex::new(None);
        assert!(any.insert(&[], 1).is_err());
        assert!(any.insert(b"https://example.com", 1).unwrap());
    }
}
