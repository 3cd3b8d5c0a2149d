//! Matcher snapshots: one `omm-index` snapshot per signal type plus a state file, all with the
//! same watermark (the change log seq fully applied when the snapshot started).
//!
//! Layout of the snapshot directory:
//! * `index-<signal type>.snap`: written by `omm-index` (versioned, checksummed).
//! * `matcher-state.bin`: this module's format, written last, so a crash in between leaves
//!   mismatched watermarks, which the loader rejects:
//!   magic `OMMMSTAT`, version u32, then the body, then the CRC-32 of everything before it.
//!   All integers little-endian; strings as u32 length + UTF-8.
//!
//! A snapshot is used only if every file is present and intact, the signal types equal the
//! configured ones, all watermarks agree, the store's log has reached the watermark (a
//! snapshot "from the future" means the database was replaced) and still holds the entry at
//! the watermark (else it was pruned past it and changes may be lost). Anything else: rebuild
//! from the store. The snapshot may contain changes after its watermark (they are copied while the
//! matcher keeps applying); replaying the log from the watermark is still exact because every
//! change assigns the final state of what it names (see [`crate::state`]).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::matcher::{MatcherError, Shared};
use crate::source::ChangeSource;
use crate::state::{BankState, ContentEntry, ExchangeState, FilterState};

const MAGIC: &[u8; 8] = b"OMMMSTAT";
const VERSION: u32 = 1;
const STATE_FILE: &str = "matcher-state.bin";
/// Upper bound on any count read from a file (guards allocations against corrupt data).
const MAX_COUNT: u64 = 1 << 34;

/// The file holding one signal type's index.
pub fn index_path(dir: &Path, signal_type: &str) -> PathBuf {
    let safe: String = signal_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("%{:02x}", c as u32)
            }
        })
        .collect();
    dir.join(format!("index-{safe}.snap"))
}

/// The state file.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }
    fn u8(&mut self, v: u8) -> io::Result<()> {
        self.put(&[v])
    }
    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn i64(&mut self, v: i64) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> io::Result<()> {
        self.u32(s.len() as u32)?;
        self.put(s.as_bytes())
    }
}

struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl<R: Read> CrcReader<R> {
    fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.crc.update(&b);
        Ok(b)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn count(&mut self) -> io::Result<usize> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(corrupt("implausible count"));
        }
        Ok(n as usize)
    }
    fn str(&mut self) -> io::Result<String> {
        let n = self.u32()? as usize;
        if n > 1 << 20 {
            return Err(corrupt("implausible string length"));
        }
        let mut b = vec![0u8; n];
        self.inner.read_exact(&mut b)?;
        self.crc.update(&b);
        String::from_utf8(b).map_err(|_| corrupt("string is not UTF-8"))
    }
}

/// Writes a full snapshot with watermark `seq`. Blocking.
pub(crate) fn write(shared: &Arc<Shared>, dir: &Path, seq: i64) -> Result<(), MatcherError> {
    let err =
        |what: &str, e: &dyn std::fmt::Display| MatcherError::Snapshot(format!("{what}: {e}"));
    fs::create_dir_all(dir).map_err(|e| err("creating the snapshot directory", &e))?;
    let watermark = u64::try_from(seq).map_err(|e| err("negative watermark", &e))?;
    for t in &shared.types {
        let path = index_path(dir, &t.spec.name);
        t.index
            .read()
            .write_snapshot(&path, watermark)
            .map_err(|e| err(&format!("writing {}", path.display()), &e))?;
    }
    let path = state_path(dir);
    let tmp = path.with_extension("bin.tmp");
    let result = (|| -> io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = CrcWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
        };
        w.put(MAGIC)?;
        w.u32(VERSION)?;
        w.i64(seq)?;
        {
            let state = shared.state.read();
            write_state(&mut w, &state)?;
        }
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())?;
        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err(&format!("writing {}", path.display()), &e));
    }
    Ok(())
}

fn write_state<W: Write>(w: &mut CrcWriter<W>, s: &FilterState) -> io::Result<()> {
    w.u64(s.type_names().len() as u64)?;
    for t in s.type_names() {
        w.str(t)?;
    }
    let banks: Vec<&BankState> = s.banks().collect();
    w.u64(banks.len() as u64)?;
    for b in banks {
        w.i64(b.id)?;
        w.str(&b.name)?;
        w.u64(b.enabled_ratio.to_bits())?;
        match b.exchange_id {
            Some(x) => {
                w.u8(1)?;
                w.i64(x)?;
            }
            None => w.u8(0)?,
        }
    }
    let exchanges = s.exchanges_map();
    w.u64(exchanges.len() as u64)?;
    for (id, e) in exchanges {
        w.i64(*id)?;
        w.str(&e.name)?;
        w.u8(u8::from(e.enabled))?;
    }
    let ratios = s.type_ratios();
    w.u64(ratios.len() as u64)?;
    for (t, r) in ratios {
        w.str(t)?;
        w.u64(r.to_bits())?;
    }
    w.u64(s.bank_slot_ids().len() as u64)?;
    for id in s.bank_slot_ids() {
        w.i64(*id)?;
    }
    w.u64(s.contents.len() as u64)?;
    let mut buf = Vec::with_capacity(16 * 4096);
    for (id, e) in s.contents.iter() {
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&e.bank_slot.to_le_bytes());
        buf.extend_from_slice(&e.type_mask.to_le_bytes());
        if buf.len() >= 16 * 4096 {
            w.put(&buf)?;
            buf.clear();
        }
    }
    w.put(&buf)?;
    let disabled = s.disable_until_map();
    w.u64(disabled.len() as u64)?;
    for (id, ts) in disabled {
        w.i64(*id)?;
        w.i64(*ts)?;
    }
    Ok(())
}

/// Reads a state file: its watermark and the state.
pub(crate) fn read_state(path: &Path) -> io::Result<(i64, FilterState)> {
    let file = File::open(path)?;
    let mut r = CrcReader {
        inner: BufReader::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    if &r.take::<8>()? != MAGIC {
        return Err(corrupt("not a matcher state file"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(corrupt(&format!(
            "unsupported state file version {version}"
        )));
    }
    let seq = r.i64()?;
    let n = r.count()?;
    let type_names = (0..n).map(|_| r.str()).collect::<io::Result<Vec<_>>>()?;
    let n = r.count()?;
    let mut banks = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let id = r.i64()?;
        let name = r.str()?;
        let enabled_ratio = f64::from_bits(r.u64()?);
        let exchange_id = match r.u8()? {
            0 => None,
            1 => Some(r.i64()?),
            _ => return Err(corrupt("bad exchange flag")),
        };
        banks.push(BankState {
            id,
            name: name.into(),
            enabled_ratio,
            exchange_id,
        });
    }
    let n = r.count()?;
    let mut exchanges = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let id = r.i64()?;
        let name = r.str()?;
        let enabled = r.u8()? != 0;
        exchanges.push((
            id,
            ExchangeState {
                name: name.into(),
                enabled,
            },
        ));
    }
    let n = r.count()?;
    let mut ratios = Vec::with_capacity(n.min(1 << 10));
    for _ in 0..n {
        let t = r.str()?;
        ratios.push((t, f64::from_bits(r.u64()?)));
    }
    let n = r.count()?;
    let bank_slot_ids = (0..n).map(|_| r.i64()).collect::<io::Result<Vec<_>>>()?;
    let n = r.count()?;
    let mut contents = Vec::with_capacity(n.min(1 << 26));
    // Read in large chunks: per-entry reads and checksum updates dominate otherwise.
    let mut buf = vec![0u8; 16 * 65_536];
    let mut left = n;
    while left > 0 {
        let k = left.min(65_536);
        let bytes = &mut buf[..16 * k];
        r.inner.read_exact(bytes)?;
        r.crc.update(bytes);
        for e in bytes.chunks_exact(16) {
            let word = |i: usize| [e[i], e[i + 1], e[i + 2], e[i + 3]];
            let id = i64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            let bank_slot = u32::from_le_bytes(word(8));
            let type_mask = u32::from_le_bytes(word(12));
            if bank_slot as usize >= bank_slot_ids.len() {
                return Err(corrupt("content refers to an unknown bank slot"));
            }
            contents.push((
                id,
                ContentEntry {
                    bank_slot,
                    type_mask,
                },
            ));
        }
        left -= k;
    }
    let n = r.count()?;
    let disabled = (0..n)
        .map(|_| Ok((r.i64()?, r.i64()?)))
        .collect::<io::Result<Vec<_>>>()?;
    let expected = r.crc.clone().finalize();
    let mut stored = [0u8; 4];
    r.inner.read_exact(&mut stored)?;
    if u32::from_le_bytes(stored) != expected {
        return Err(corrupt("checksum mismatch"));
    }
    let mut rest = [0u8; 1];
    if r.inner.read(&mut rest)? != 0 {
        return Err(corrupt("trailing data"));
    }
    Ok((
        seq,
        FilterState::from_parts(
            type_names,
            banks,
            exchanges,
            ratios,
            bank_slot_ids,
            contents,
            disabled,
        ),
    ))
}

/// Loads the snapshot into `shared` if there is a usable one. `Ok(None)`: no snapshot.
/// `Err`: a snapshot that cannot be used (the caller resets and rebuilds from the store).
pub(crate) async fn load<S: ChangeSource>(
    shared: &Arc<Shared>,
    source: &S,
) -> Result<Option<i64>, String> {
    let Some(dir) = shared.config.snapshot_dir.clone() else {
        return Ok(None);
    };
    let path = state_path(&dir);
    if !path.exists() {
        return Ok(None);
    }
    let s = shared.clone();
    let loaded = tokio::task::spawn_blocking(move || -> Result<(i64, FilterState), String> {
        let (seq, state) = read_state(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let names: Vec<String> = s.types.iter().map(|t| t.spec.name.clone()).collect();
        if state.type_names() != names.as_slice() {
            return Err(format!(
                "snapshot indexes {:?}, configuration {:?}",
                state.type_names(),
                names
            ));
        }
        Ok((seq, state))
    })
    .await
    .map_err(|e| e.to_string())??;
    let (seq, state) = loaded;
    let current = source.current_seq().await.map_err(|e| e.to_string())?;
    if seq > current {
        return Err(format!(
            "snapshot watermark {seq} is ahead of the store's change log ({current}): different database"
        ));
    }
    // The last change the snapshot contains must still be in the log; if it was pruned, the
    // changes right after it may be gone too and tailing from the watermark would miss them.
    if seq > 0 {
        let probe = source
            .changes_since(seq - 1, 1)
            .await
            .map_err(|e| e.to_string())?;
        if probe.first().map(|c| c.seq) != Some(seq) {
            return Err(format!(
                "the change log no longer holds the snapshot's watermark {seq} (pruned)"
            ));
        }
    }
    let s = shared.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let watermark = u64::try_from(seq).map_err(|_| "negative watermark".to_string())?;
        for t in &s.types {
            let path = index_path(&dir, &t.spec.name);
            let w = t
                .index
                .read()
                .load_snapshot(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if w != watermark {
                return Err(format!(
                    "{} has watermark {w}, state file {watermark}",
                    path.display()
                ));
            }
        }
        *s.state.write() = state;
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())??;
    shared
        .snapshot_seq
        .store(seq, std::sync::atomic::Ordering::Release);
    Ok(Some(seq))
}
