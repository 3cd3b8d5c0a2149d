//! In-memory indexes answering "which stored signals are within the threshold of this one".
//!
//! This crate knows nothing of storage or HTTP. It provides:
//!
//! * [`PdqIndex`]: exact Hamming radius search over 256-bit codes (PDQ), built on multi-index
//!   hashing with flat, directly addressed bucket arrays. 100% recall and precision for every
//!   threshold (thresholds above the multi-index limit fall back to an exact scan).
//! * [`ExactIndex`]: exact-match lookups for digest-like signal types (MD5, SHA-256, URL MD5).
//! * [`SignalIndex`]: the object-safe trait both implement, so a matcher can hold one
//!   `Box<dyn SignalIndex>` per signal type.
//! * Snapshots ([`snapshot`]): a versioned, checksummed file format with a caller-provided
//!   watermark, written atomically.
//!
//! # Keys
//!
//! The trait takes every key as its *canonical bytes*: for PDQ the 32 bytes of the hash in hex
//! order (`hex::decode` of the 64-character string, see [`code_from_hex`] /
//! [`code_from_bytes`]); for MD5 the 16 digest bytes; for SHA-256 the 32 digest bytes; for
//! URL MD5 the 16 bytes of the MD5 of the URL. A key of the wrong length is an
//! [`IndexError::InvalidKey`], never a panic.
//!
//! # Example
//!
//! ```
//! use omm_index::{code_from_hex, code_to_bytes, ExactIndex, Hit, PdqIndex, SignalIndex};
//!
//! // One index per signal type, behind the common trait.
//! let pdq: Box<dyn SignalIndex> = Box::new(PdqIndex::new());
//! let md5: Box<dyn SignalIndex> = Box::new(ExactIndex::new(Some(16)));
//!
//! let hash = code_from_hex("98736629670cc19fc9f23862f66cce1f599e32c78e236c78619d202e9e66c157")?;
//! pdq.insert(&code_to_bytes(&hash), 42)?;
//! let mut near = hash;
//! near[3] ^= 0b111; // 3 bits away
//! assert_eq!(pdq.query(&code_to_bytes(&near), 31)?, vec![Hit { distance: 3, id: 42 }]);
//!
//! md5.insert(&[0xab; 16], 7)?;
//! assert_eq!(md5.query(&[0xab; 16], 0)?, vec![Hit { distance: 0, id: 7 }]);
//!
//! // Snapshots carry the change-log position they cover.
//! let dir = std::env::temp_dir().join(format!("omm-index-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! pdq.write_snapshot(&dir.join("pdq.snap"), 1234)?;
//! let restored = PdqIndex::new();
//! assert_eq!(restored.load_snapshot(&dir.join("pdq.snap"))?, 1234);
//! assert_eq!(SignalIndex::len(&restored), 1);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Concurrency
//!
//! Every index is `Send + Sync` and takes `&self` for all operations. Many reader threads may
//! query while one writer applies batches; see [`PdqIndex`] for the exact guarantees.

mod code;
mod exact;
mod pdq;
pub mod snapshot;

use std::path::Path;

pub use code::{
    code_from_bytes, code_from_hex, code_to_bytes, code_to_hex, hamming, Code256, CODE_BYTES,
};
pub use exact::ExactIndex;
pub use pdq::{PdqIndex, PdqIndexConfig, PdqOp, PdqQueryStats};
pub use snapshot::{SnapshotError, SnapshotKind};

/// One query result: a stored entry id and its distance to the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    /// Distance to the query (Hamming distance for PDQ, always 0 for exact indexes).
    pub distance: u32,
    /// The entry id given at insertion (e.g. a bank content id).
    pub id: u64,
}

/// One change to apply to an index, with the key as canonical bytes (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOp<'a> {
    /// Store `id` under `key` (no effect if this exact pair is already stored).
    Insert {
        /// Canonical key bytes.
        key: &'a [u8],
        /// Entry id.
        id: u64,
    },
    /// Remove the pair (`key`, `id`) (no effect if it is not stored).
    Remove {
        /// Canonical key bytes.
        key: &'a [u8],
        /// Entry id.
        id: u64,
    },
}

/// What a batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Pairs newly stored.
    pub inserted: usize,
    /// Pairs removed.
    pub removed: usize,
    /// Operations without effect (insert of a stored pair, remove of a missing one, or an
    /// operation superseded by a later one on the same pair in the same batch).
    pub unchanged: usize,
}

/// Errors of index operations.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The key does not have the form this index expects (length, hex).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The index configuration is not supported.
    #[error("invalid index configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// The interface a matcher uses for every signal type.
///
/// Object safe: hold one `Box<dyn SignalIndex>` per signal type. Keys are canonical bytes (see
/// the crate docs). Results are sorted by (distance, id) and contain each id at most once (with
/// its smallest distance, if one id was stored under several keys).
pub trait SignalIndex: Send + Sync {
    /// The snapshot kind of this index (also names the index kind).
    fn kind(&self) -> SnapshotKind;

    /// Stores `id` under `key`. Returns whether the pair was new.
    fn insert(&self, key: &[u8], id: u64) -> Result<bool, IndexError> {
        let stats = self.apply(&[IndexOp::Insert { key, id }])?;
        Ok(stats.inserted == 1)
    }

    /// Removes the pair (`key`, `id`). Returns whether it was stored.
    fn remove(&self, key: &[u8], id: u64) -> Result<bool, IndexError> {
        let stats = self.apply(&[IndexOp::Remove { key, id }])?;
        Ok(stats.removed == 1)
    }

    /// Announces many inserts into an empty index (a matcher's first load): the index may defer
    /// building its search structures until [`finish_bulk_load`](Self::finish_bulk_load), so
    /// that a load in many batches costs one build. Queries stay exact meanwhile (possibly
    /// slower). Does nothing if the index is not empty, and by default.
    fn begin_bulk_load(&self) {}

    /// Ends what [`begin_bulk_load`](Self::begin_bulk_load) started (builds the search
    /// structures). Does nothing outside a bulk load, and by default.
    fn finish_bulk_load(&self) {}

    /// Applies a batch in order. Every key is validated first: on an invalid key nothing is
    /// changed and the error is returned.
    fn apply(&self, ops: &[IndexOp<'_>]) -> Result<ApplyStats, IndexError>;

    /// All stored ids whose key is within `threshold` of `key` (distance `<= threshold`).
    /// Exact indexes ignore the threshold and return distance 0.
    fn query(&self, key: &[u8], threshold: u32) -> Result<Vec<Hit>, IndexError>;

    /// Number of stored (key, id) pairs.
    fn len(&self) -> usize;

    /// Whether the index is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes a snapshot atomically to `path`, recording `watermark` (the change-log sequence
    /// number the caller had fully applied when calling). Queries keep running meanwhile.
    fn write_snapshot(&self, path: &Path, watermark: u64) -> Result<(), SnapshotError>;

    /// Replaces the contents with a snapshot and returns its watermark. On error the index is
    /// unchanged. Meant for start-up: the old and new contents coexist briefly.
    fn load_snapshot(&self, path: &Path) -> Result<u64, SnapshotError>;
}

/// Sorts hits by (distance, id) and keeps the smallest distance per id.
pub(crate) fn normalize_hits(hits: &mut Vec<Hit>) {
    hits.sort_unstable_by_key(|h| (h.id, h.distance));
    hits.dedup_by_key(|h| h.id);
    hits.sort_unstable();
}
