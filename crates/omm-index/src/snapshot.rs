//! Snapshot files: a fixed header followed by an index-specific payload.
//!
//! Layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `OMMSNAP\0` |
//! | 8 | 4 | format version ([`FORMAT_VERSION`]) |
//! | 12 | 4 | kind ([`SnapshotKind`]) |
//! | 16 | 8 | watermark (caller's change-log sequence number) |
//! | 24 | 8 | payload length in bytes |
//! | 32 | 8 | XXH3-64 of the payload |
//! | 40 | 8 | entry count |
//! | 48 | 8 | kind-specific parameter (PDQ: table count; exact: key length or 0) |
//! | 56 | 8 | XXH3-64 of bytes 0..56 (header checksum) |
//! | 64 | … | payload |
//!
//! Files are written to a temporary file in the same directory, fsynced, renamed over the
//! target and the directory is fsynced, so a crash leaves either the old or the new snapshot.
//! Every defect on reading (wrong magic, version or kind, short file, checksum mismatch,
//! malformed payload) is a typed [`SnapshotError`]; the caller then rebuilds from the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Magic bytes at the start of every snapshot.
pub const MAGIC: [u8; 8] = *b"OMMSNAP\0";
/// The snapshot format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: u64 = 64;

/// Which index a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// A [`crate::PdqIndex`].
    Pdq,
    /// An [`crate::ExactIndex`].
    Exact,
}

impl SnapshotKind {
    fn to_u32(self) -> u32 {
        match self {
            SnapshotKind::Pdq => 1,
            SnapshotKind::Exact => 2,
        }
    }

    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(SnapshotKind::Pdq),
            2 => Some(SnapshotKind::Exact),
            _ => None,
        }
    }
}

/// Why a snapshot could not be written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An I/O error (including a missing file).
    #[error("snapshot I/O error: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with the snapshot magic.
    #[error("not an omm index snapshot (bad magic)")]
    NotASnapshot,
    /// The file has another format version.
    #[error("unsupported snapshot format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// Version found in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The snapshot holds another kind of index.
    #[error("snapshot holds a {found} index, expected {expected:?}")]
    WrongKind {
        /// Kind the caller expected.
        expected: SnapshotKind,
        /// Kind code found in the file.
        found: String,
    },
    /// The file is shorter (or longer) than its header says.
    #[error("snapshot truncated or padded: header says {expected} bytes, file has {actual}")]
    Truncated {
        /// Length the header announces.
        expected: u64,
        /// Actual file length.
        actual: u64,
    },
    /// The header or payload checksum does not match.
    #[error("snapshot checksum mismatch ({0})")]
    ChecksumMismatch(&'static str),
    /// The payload is malformed or does not fit the header's parameters.
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

/// The decoded fixed header of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Index kind.
    pub kind: SnapshotKind,
    /// Caller's watermark.
    pub watermark: u64,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// XXH3-64 of the payload.
    pub payload_checksum: u64,
    /// Number of entries in the payload.
    pub entry_count: u64,
    /// Kind-specific parameter.
    pub param: u64,
}

impl SnapshotHeader {
    fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.kind.to_u32().to_le_bytes());
        h[16..24].copy_from_slice(&self.watermark.to_le_bytes());
        h[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        h[32..40].copy_from_slice(&self.payload_checksum.to_le_bytes());
        h[40..48].copy_from_slice(&self.entry_count.to_le_bytes());
        h[48..56].copy_from_slice(&self.param.to_le_bytes());
        let sum = xxh3_64(&h[0..56]);
        h[56..64].copy_from_slice(&sum.to_le_bytes());
        h
    }

    fn decode(
        h: &[u8; HEADER_LEN as usize],
        expected: SnapshotKind,
    ) -> Result<Self, SnapshotError> {
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[o..o + 8]);
            u64::from_le_bytes(b)
        };
        if h[0..8] != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if xxh3_64(&h[0..56]) != u64_at(56) {
            return Err(SnapshotError::ChecksumMismatch("header"));
        }
        let kind_code = u32_at(12);
        let kind = match SnapshotKind::from_u32(kind_code) {
            Some(k) if k == expected => k,
            Some(k) => {
                return Err(SnapshotError::WrongKind {
                    expected,
                    found: format!("{k:?}"),
                })
            }
            None => {
                return Err(SnapshotError::WrongKind {
                    expected,
                    found: format!("unknown ({kind_code})"),
                })
            }
        };
        Ok(SnapshotHeader {
            kind,
            watermark: u64_at(16),
            payload_len: u64_at(24),
            payload_checksum: u64_at(32),
            entry_count: u64_at(40),
            param: u64_at(48),
        })
    }
}

/// Streams a payload into a temporary file and publishes it atomically on [`finish`].
///
/// Dropping the writer without finishing removes the temporary file.
///
/// [`finish`]: SnapshotWriter::finish
pub(crate) struct SnapshotWriter {
    out: Option<BufWriter<File>>,
    hasher: Xxh3,
    payload_len: u64,
    tmp_path: PathBuf,
    final_path: PathBuf,
}

impl SnapshotWriter {
    pub(crate) fn create(path: &Path) -> Result<Self, SnapshotError> {
        let file_name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "snapshot path has no file name",
            )
        })?;
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp_path = path.with_file_name(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_LEN as usize])?;
        Ok(SnapshotWriter {
            out: Some(out),
            hasher: Xxh3::new(),
            payload_len: 0,
            tmp_path,
            final_path: path.to_path_buf(),
        })
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.hasher.update(bytes);
        self.payload_len += bytes.len() as u64;
        match self.out.as_mut() {
            Some(out) => out.write_all(bytes)?,
            None => return Err(io::Error::other("snapshot writer already finished").into()),
        }
        Ok(())
    }

    pub(crate) fn finish(
        mut self,
        kind: SnapshotKind,
        watermark: u64,
        entry_count: u64,
        param: u64,
    ) -> Result<(), SnapshotError> {
        let header = SnapshotHeader {
            kind,
            watermark,
            payload_len: self.payload_len,
            payload_checksum: self.hasher.digest(),
            entry_count,
            param,
        };
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("snapshot writer already finished"))?;
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header.encode())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp_path, &self.final_path)?;
        // Make the rename durable.
        if let Some(dir) = self.final_path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                // Some platforms cannot fsync directories; the rename itself succeeded.
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// Reads and verifies a snapshot payload.
pub(crate) struct SnapshotReader {
    input: BufReader<File>,
    hasher: Xxh3,
    remaining: u64,
    header: SnapshotHeader,
}

impl SnapshotReader {
    pub(crate) fn open(path: &Path, expected: SnapshotKind) -> Result<Self, SnapshotError> {
        let file = File::open(path)?;
        let actual_len = file.metadata()?.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        if actual_len < HEADER_LEN {
            return Err(SnapshotError::Truncated {
                expected: HEADER_LEN,
                actual: actual_len,
            });
        }
        let mut raw = [0u8; HEADER_LEN as usize];
        input.read_exact(&mut raw)?;
        let header = SnapshotHeader::decode(&raw, expected)?;
        let expected_len = HEADER_LEN.saturating_add(header.payload_len);
        if expected_len != actual_len {
            return Err(SnapshotError::Truncated {
                expected: expected_len,
                actual: actual_len,
            });
        }
        Ok(SnapshotReader {
            input,
            hasher: Xxh3::new(),
            remaining: header.payload_len,
            header,
        })
    }

    pub(crate) fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Bytes of payload not read yet.
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    pub(crate) fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        if (buf.len() as u64) > self.remaining {
            return Err(SnapshotError::Corrupt(
                "payload ends in the middle of an entry".into(),
            ));
        }
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                SnapshotError::Corrupt("file shorter than its header says".into())
            } else {
                SnapshotError::Io(e)
            }
        })?;
        self.hasher.update(buf);
        self.remaining -= buf.len() as u64;
        Ok(())
    }

    /// Checks that the whole payload was consumed and its checksum matches.
    pub(crate) fn finish(self) -> Result<SnapshotHeader, SnapshotError> {
        if self.remaining != 0 {
            return Err(SnapshotError::Corrupt(format!(
                "{} unread payload bytes after the last entry",
                self.remaining
            )));
        }
        if self.hasher.digest() != self.header.payload_checksum {
            return Err(SnapshotError::ChecksumMismatch("payload"));
        }
        Ok(self.header)
    }
}

/// Reads only the header of a snapshot (e.g. to learn its watermark before loading).
pub fn read_header(path: &Path, expected: SnapshotKind) -> Result<SnapshotHeader, SnapshotError> {
    Ok(*SnapshotReader::open(path, expected)?.header())
}
