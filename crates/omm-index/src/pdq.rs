//! Exact Hamming radius search over 256-bit codes by multi-index hashing.
//!
//! # Layout
//!
//! Entries live in a slab of *slots*: slot `s` holds a code and an id in fixed 256 Ki-entry pages
//! (no reallocation, so the slab never doubles while growing). The 256 bits are split into `m`
//! disjoint chunks: 16 × 16 bits below 2 million entries, 13 chunks of 19–20 bits from there
//! (see [`PdqIndexConfig::for_len`]). Table `k` maps the value of chunk `k` to the slots whose
//! code has that value: a directly addressed directory of `2^w` `(start, len)` pairs into one
//! flat `u32` arena, where every bucket keeps some spare capacity so that inserts and removes
//! happen in place (a full bucket borrows spare room from the next few buckets by shifting
//! them). With *inline codes* (the small layout) a second array parallel to the arena holds the
//! first half of each entry's code, so a probe verifies its bucket by one sequential read
//! instead of one random access per candidate. When a batch does not fit into a table's spare
//! capacity, only that table is rebuilt (one table at a time, so memory grows by at most one
//! table's arena). Full builds and bulk rebuilds partition the (key, slot) pairs by the top 8
//! key bits first, so that counting and placing stay in cache (this is what bounds snapshot
//! loads).
//!
//! # Query
//!
//! For threshold `t = m·s + a` (0 ≤ a < m), an entry within `t` has some chunk `k ≤ a` within
//! `s` or some chunk within `s − 1` (pigeonhole). So table `k` is probed with radius
//! `r_k = s` for `k ≤ a` and `s − 1` otherwise (skipped when negative), every candidate is
//! verified with a full 256-bit popcount, and a candidate found in table `k` is reported only if
//! no table `j < k` also covers it (`popcount(chunk_j(c ^ q)) ≤ r_j`), so each stored entry is
//! reported exactly once, without a "seen" set. When the expected candidate count approaches the
//! index size (large thresholds), the query scans all slots instead: exact either way.
//!
//! # Concurrency
//!
//! One `parking_lot::RwLock` guards the index. Queries take the read lock. A writer
//! ([`PdqIndex::apply`]) holds the *upgradable* read lock for the whole batch (so queries keep
//! running while it resolves the batch and rebuilds tables) and takes the exclusive lock only for
//! short steps: writing up to 65,536 new slots, patching one table in place (at most 65,536
//! changes) or swapping in one rebuilt table (O(1)), and freeing the removed slots. Writers are
//! serialized. A query concurrent with a batch sees every entry the batch does not touch exactly
//! once; an entry the batch inserts or removes may or may not be seen by that query. Memory
//! during a batch grows by at most one table (the one being rebuilt) plus the batch itself; the
//! one exception is the switch of a grown index to the wide layout, which builds the wide
//! tables beside the inline ones (about a third of their size) before swapping them in.

use std::path::Path;

use parking_lot::{RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};

use crate::code::{code_from_bytes, code_to_bytes, Code256, CODE_BYTES};
use crate::snapshot::{SnapshotError, SnapshotKind, SnapshotReader, SnapshotWriter};
use crate::{normalize_hits, ApplyStats, Hit, IndexError, IndexOp, SignalIndex};

/// Slots per storage page (8 MiB of codes: most of it on 2 MiB huge pages when available).
const PAGE_SHIFT: u32 = 18;
const PAGE_LEN: usize = 1 << PAGE_SHIFT;
/// Bytes per entry in the snapshot payload: 32 code bytes + 8 id bytes.
const SNAPSHOT_ENTRY_LEN: usize = CODE_BYTES + 8;
/// Sub-batch size of [`PdqIndex::apply`] (bounds the exclusive-lock steps).
const MIN_SUB_BATCH: usize = 1 << 18;
/// Entries copied per read-lock hold while writing a snapshot.
const SNAPSHOT_CHUNK: usize = 1 << 16;
/// Slots written per exclusive-lock step.
const WRITE_CHUNK: usize = 1 << 16;
/// How many following buckets a full bucket may borrow spare room from (in place, instead of
/// rebuilding the table).
const BORROW_WINDOW: u32 = 64;
/// Batches touching more (key, slot) pairs per table than this rebuild the table directly.
const PATCH_LIMIT: usize = 1 << 16;

/// Key of a free slot during [`Table::build`] (wider than any chunk).
const FREE_SLOT: u32 = u32::MAX;
/// Widest chunk any layout has (11 tables: 24 bits).
const MAX_CHUNK_WIDTH: u32 = 24;
/// Entry count from which [`PdqIndexConfig::for_len`] picks [`WIDE_TABLES`] tables without
/// inline codes (below it: 16 tables with inline codes).
const WIDE_LAYOUT_FROM: usize = 2_000_000;
/// Table count of the layout for large indexes.
const WIDE_TABLES: usize = 13;

/// Layout of a [`PdqIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdqIndexConfig {
    /// Number of tables (chunks) the 256 bits are split into: 11 to 32. Chunk widths are
    /// `256 / tables` rounded up or down (at most 24 bits). 16 (16-bit chunks, probing radius 1
    /// at threshold 31, as Open Media Match) is the default; fewer, wider tables mean more
    /// probes but fewer candidates.
    pub tables: usize,
    /// Whether every table keeps the first half (16 bytes) of each entry's code beside the
    /// entry's slot. A probe then verifies its candidates from the bucket itself, a sequential
    /// read, instead of one random access per candidate; it costs 16 bytes per entry per table.
    pub inline_codes: bool,
}

impl Default for PdqIndexConfig {
    fn default() -> Self {
        PdqIndexConfig {
            tables: 16,
            inline_codes: true,
        }
    }
}

impl PdqIndexConfig {
    /// The layout [`PdqIndex::new`] builds for `n` entries: below 2 million, 16 tables of 16
    /// bits with inline codes (at threshold 31: 272 probes, ~4,200 candidates per million
    /// entries read sequentially from the buckets; ~400 bytes per entry); from there, 13 tables
    /// of 19–20 bits without (1,409 probes and a third of the candidates, each a cache miss on
    /// its code, but ~110 bytes per entry; inline codes would take 4 GB at 10 million).
    /// BENCHMARKS.md has the measurements behind the cut-off.
    pub fn for_len(n: usize) -> Self {
        Self::for_len_from(n, WIDE_LAYOUT_FROM)
    }

    fn for_len_from(n: usize, wide_from: usize) -> Self {
        if n >= wide_from {
            PdqIndexConfig {
                tables: WIDE_TABLES,
                inline_codes: false,
            }
        } else {
            PdqIndexConfig::default()
        }
    }

    fn layout(&self) -> Result<Layout, IndexError> {
        Ok(Layout {
            chunks: self.chunks()?,
            inline: self.inline_codes,
        })
    }

    fn chunks(&self) -> Result<Vec<Chunk>, IndexError> {
        if !(11..=32).contains(&self.tables) {
            return Err(IndexError::InvalidConfig(format!(
                "a PDQ index needs 11 to 32 tables, got {}",
                self.tables
            )));
        }
        let m = self.tables as u32;
        let (base, extra) = (256 / m, 256 % m);
        let mut start = 0;
        Ok((0..m)
            .map(|k| {
                let width = base + u32::from(k < extra);
                let c = Chunk { start, width };
                start += width;
                c
            })
            .collect())
    }
}

/// One change for [`PdqIndex::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdqOp {
    /// Store the pair (code, id).
    Insert(Code256, u64),
    /// Remove the pair (code, id).
    Remove(Code256, u64),
}

impl PdqOp {
    fn parts(&self) -> (&Code256, u64, bool) {
        match self {
            PdqOp::Insert(c, id) => (c, *id, true),
            PdqOp::Remove(c, id) => (c, *id, false),
        }
    }
}

/// Work done by one query (for benchmarks and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PdqQueryStats {
    /// Buckets looked up.
    pub probes: u64,
    /// Stored entries whose full code was compared.
    pub candidates: u64,
    /// Whether the query scanned every slot instead of using the tables.
    pub exhaustive: bool,
}

/// A validated [`PdqIndexConfig`]: the chunk of each table, and whether tables hold inline codes.
#[derive(Debug, Clone)]
struct Layout {
    chunks: Vec<Chunk>,
    inline: bool,
}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// First bit, counted from the most significant bit of word 0.
    start: u32,
    width: u32,
}

impl Chunk {
    #[inline(always)]
    fn of(&self, code: &Code256) -> u32 {
        let word = (self.start >> 6) as usize;
        let off = self.start & 63;
        let bits = if off + self.width <= 64 {
            code[word] << off
        } else {
            (code[word] << off) | (code[word + 1] >> (64 - off))
        };
        (bits >> (64 - self.width)) as u32
    }
}

/// Asks the kernel to back a large allocation with transparent huge pages (fewer TLB misses on
/// random accesses). Purely advisory.
fn advise_huge<T>(slice: &[T]) {
    advise_huge_range(slice.as_ptr() as usize, std::mem::size_of_val(slice));
}

/// [`advise_huge`] for `len` bytes at address `start` (memory owned by the caller).
fn advise_huge_range(start: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let end = (start + len) & !(HUGE - 1);
        if end > aligned {
            // SAFETY: madvise with MADV_HUGEPAGE only changes paging policy of memory we own.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, len);
}

fn zeroed_vec<T: Clone + Default>(len: usize) -> Vec<T> {
    let v = vec![T::default(); len];
    advise_huge(&v);
    v
}

#[inline(always)]
fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(ptr as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Half a code: words 0–1 (bits 0–127) or words 2–3 (bits 128–255).
type HalfCode = [u64; 2];

/// Slot storage: codes and ids in fixed pages, a live bitmap and a free list.
///
/// Codes are stored split in halves, in two arrays: a query verifies a candidate on the first
/// half alone and reads the second only when that half is within the threshold, which a random
/// candidate almost never is (128 random bits within 31: p < 1e-7). So the hot array is 16 bytes
/// per entry instead of 32: at 1M entries it fits the L3 cache, and at any size a candidate costs
/// one cache line.
#[derive(Default)]
struct Storage {
    lo: Vec<Box<[HalfCode]>>,
    hi: Vec<Box<[HalfCode]>>,
    ids: Vec<Box<[u64]>>,
    live: Vec<u64>,
    /// Slots `>= next` have never been used.
    next: u32,
    free: Vec<u32>,
    len: usize,
}

impl Storage {
    #[inline(always)]
    fn code(&self, slot: u32) -> Code256 {
        let (page, i) = (
            (slot >> PAGE_SHIFT) as usize,
            slot as usize & (PAGE_LEN - 1),
        );
        let (lo, hi) = (self.lo[page][i], self.hi[page][i]);
        [lo[0], lo[1], hi[0], hi[1]]
    }

    #[inline(always)]
    fn lo(&self, slot: u32) -> &HalfCode {
        &self.lo[(slot >> PAGE_SHIFT) as usize][slot as usize & (PAGE_LEN - 1)]
    }

    #[inline(always)]
    fn hi(&self, slot: u32) -> &HalfCode {
        &self.hi[(slot >> PAGE_SHIFT) as usize][slot as usize & (PAGE_LEN - 1)]
    }

    /// Address of `slot` in one of the half-code page lists (null past the last page; only
    /// ever prefetched).
    #[inline(always)]
    fn half_ptr(pages: &[Box<[HalfCode]>], slot: u32) -> *const HalfCode {
        match pages.get((slot >> PAGE_SHIFT) as usize) {
            Some(page) => page.as_ptr().wrapping_add(slot as usize & (PAGE_LEN - 1)),
            None => std::ptr::null(),
        }
    }

    #[inline(always)]
    fn lo_ptr(&self, slot: u32) -> *const HalfCode {
        Self::half_ptr(&self.lo, slot)
    }

    /// Prefetches both halves of a slot's code (for paths that read whole codes).
    #[inline(always)]
    fn prefetch_code(&self, slot: u32) {
        prefetch(self.lo_ptr(slot));
        prefetch(Self::half_ptr(&self.hi, slot));
    }

    #[inline(always)]
    fn id(&self, slot: u32) -> u64 {
        self.ids[(slot >> PAGE_SHIFT) as usize][slot as usize & (PAGE_LEN - 1)]
    }

    fn set(&mut self, slot: u32, code: Code256, id: u64) {
        let page = (slot >> PAGE_SHIFT) as usize;
        while self.lo.len() <= page {
            self.lo
                .push(zeroed_vec::<HalfCode>(PAGE_LEN).into_boxed_slice());
            self.hi
                .push(zeroed_vec::<HalfCode>(PAGE_LEN).into_boxed_slice());
            self.ids.push(vec![0u64; PAGE_LEN].into_boxed_slice());
            self.live.resize(self.lo.len() * PAGE_LEN / 64, 0);
        }
        let i = slot as usize & (PAGE_LEN - 1);
        self.lo[page][i] = [code[0], code[1]];
        self.hi[page][i] = [code[2], code[3]];
        self.ids[page][i] = id;
        self.live[slot as usize / 64] |= 1 << (slot % 64);
        self.next = self.next.max(slot + 1);
        self.len += 1;
    }

    #[inline(always)]
    fn is_live(&self, slot: u32) -> bool {
        self.live
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    fn release(&mut self, slot: u32) {
        self.live[slot as usize / 64] &= !(1 << (slot % 64));
        self.free.push(slot);
        self.len -= 1;
    }

    /// Calls `f(slot, code)` for slots `0..n` in order.
    fn for_each_code(&self, n: u32, mut f: impl FnMut(u32, &Code256)) {
        for (p, (lo, hi)) in self.lo.iter().zip(&self.hi).enumerate() {
            let base = p << PAGE_SHIFT;
            if base >= n as usize {
                break;
            }
            let end = (n as usize - base).min(PAGE_LEN);
            for (i, (l, h)) in lo[..end].iter().zip(&hi[..end]).enumerate() {
                f((base + i) as u32, &[l[0], l[1], h[0], h[1]]);
            }
        }
    }

    /// Live slots in ascending order, starting at `from`, at most `limit` of them.
    fn live_slots(&self, from: u32, limit: usize, out: &mut Vec<u32>) {
        out.clear();
        let mut word = from as usize / 64;
        let mut mask = !0u64 << (from % 64);
        while word < self.live.len() && out.len() < limit {
            let mut bits = self.live[word] & mask;
            while bits != 0 && out.len() < limit {
                out.push((word * 64) as u32 + bits.trailing_zeros());
                bits &= bits - 1;
            }
            word += 1;
            mask = !0;
        }
    }

    fn heap_bytes(&self) -> usize {
        self.lo.len() * PAGE_LEN * (32 + 8) + self.live.len() * 8 + self.free.capacity() * 4
    }
}

/// Hamming distance between a half code and the matching half of a query.
#[inline(always)]
fn half_distance(half: &HalfCode, q0: u64, q1: u64) -> u32 {
    (half[0] ^ q0).count_ones() + (half[1] ^ q1).count_ones()
}

/// Spare capacity given to a bucket of `len` entries when a table is (re)built. Empty buckets
/// get some too: in wide tables (2^20 buckets) a few are empty even at 10M entries, and an
/// insert into a bucket without room rebuilds the whole table.
#[inline]
fn slack(len: u32) -> u32 {
    len / 16 + 2
}

/// Scratch buffers of [`Table::build`], reused across the tables one thread builds (fresh memory
/// costs page faults and zeroing).
#[derive(Default)]
struct BuildScratch {
    /// Key of every slot (or [`FREE_SLOT`]).
    keys: Vec<u32>,
    /// (key, slot) pairs partitioned by the top key bits.
    pairs: Vec<(u32, u32)>,
    /// With inline codes: the first code half of each pair's slot.
    pair_lo: Vec<HalfCode>,
}

/// One multi-index table: a directory of `2^width + 1` `[start, len]` pairs into `arena`; the
/// capacity of bucket `b` is `dir[b + 1][0] - dir[b][0]`.
struct Table {
    chunk: Chunk,
    dir: Vec<[u32; 2]>,
    arena: Vec<u32>,
    /// Inline codes ([`PdqIndexConfig::inline_codes`]): `lo[i]` is the first half of the code
    /// of slot `arena[i]` (same length as `arena`). Empty without inline codes.
    lo: Vec<HalfCode>,
    inline: bool,
}

impl Table {
    fn empty(chunk: Chunk, inline: bool) -> Self {
        Table {
            chunk,
            dir: zeroed_vec(1 + (1usize << chunk.width)),
            arena: Vec::new(),
            lo: Vec::new(),
            inline,
        }
    }

    /// An empty table with room for `bound` arena entries reserved (never reallocated; pages
    /// past the final length are never touched, so they cost no memory).
    fn with_bound(chunk: Chunk, inline: bool, bound: usize) -> Self {
        let mut t = Table::empty(chunk, inline);
        t.arena = Vec::with_capacity(bound);
        advise_huge_range(t.arena.as_ptr() as usize, bound * 4);
        if inline {
            t.lo = Vec::with_capacity(bound);
            advise_huge_range(t.lo.as_ptr() as usize, bound * 16);
        }
        t
    }

    /// Grows the arena (and the inline codes) to `len` entries.
    fn resize_arena(&mut self, len: usize) {
        self.arena.resize(len, 0);
        if self.inline {
            self.lo.resize(len, [0; 2]);
        }
    }

    /// Appends `slot`, whose first code half is `lo` (unused without inline codes), to bucket
    /// `key` (which has room).
    #[inline(always)]
    fn push_with(&mut self, key: u32, slot: u32, lo: HalfCode) {
        let [start, len] = self.dir[key as usize];
        let pos = (start + len) as usize;
        self.arena[pos] = slot;
        if self.inline {
            self.lo[pos] = lo;
        }
        self.dir[key as usize][1] = len + 1;
    }

    /// Appends `slot` to bucket `key` (which has room), reading its inline code from `storage`.
    #[inline(always)]
    fn push(&mut self, key: u32, slot: u32, storage: &Storage) {
        let lo = if self.inline {
            *storage.lo(slot)
        } else {
            [0; 2]
        };
        self.push_with(key, slot, lo);
    }

    #[inline(always)]
    fn bucket(&self, key: u32) -> &[u32] {
        let [start, len] = self.dir[key as usize];
        &self.arena[start as usize..(start + len) as usize]
    }

    fn capacity(&self, key: u32) -> u32 {
        self.dir[key as usize + 1][0] - self.dir[key as usize][0]
    }

    /// Builds a table from scratch over the live slots among `0..n`.
    ///
    /// A two-level counting sort: (key, slot) pairs are first partitioned by the top 8 key bits
    /// (256 write streams, cache friendly), then each partition is counted and placed on its
    /// own, so that its counters, directory entries and arena range stay in cache. A direct
    /// scatter into 2^20 buckets (or a full-width histogram) misses the cache on almost every
    /// entry.
    fn build(
        chunk: Chunk,
        inline: bool,
        storage: &Storage,
        n: u32,
        scratch: &mut BuildScratch,
    ) -> Self {
        let BuildScratch {
            keys,
            pairs,
            pair_lo,
        } = scratch;
        let buckets = 1usize << chunk.width;
        let shift = chunk.width.saturating_sub(8);
        let parts = 1usize << (chunk.width - shift);
        let mut part_len = vec![0usize; parts];
        keys.clear();
        keys.reserve(n as usize);
        storage.for_each_code(n, |slot, code| {
            if storage.is_live(slot) {
                let k = chunk.of(code);
                part_len[(k >> shift) as usize] += 1;
                keys.push(k);
            } else {
                keys.push(FREE_SLOT);
            }
        });
        let mut next = vec![0usize; parts];
        let mut acc = 0usize;
        for (start, &len) in next.iter_mut().zip(&part_len) {
            *start = acc;
            acc += len;
        }
        let live: usize = part_len.iter().sum();
        pairs.clear();
        pairs.resize(live, (0, 0));
        pair_lo.clear();
        if inline {
            // The inline codes travel with the pairs: read here in slot order, they are one
            // sequential pass over the storage; read at placement (slots spread over all of
            // it), they would be a cache miss each.
            pair_lo.resize(live, [0; 2]);
        }
        for (slot, &k) in keys.iter().enumerate() {
            if k == FREE_SLOT {
                continue;
            }
            let p = (k >> shift) as usize;
            pairs[next[p]] = (k, slot as u32);
            if inline {
                pair_lo[next[p]] = *storage.lo(slot as u32);
            }
            next[p] += 1;
        }
        // Entries plus every bucket's slack (`slack`), so that the arena never reallocates.
        let bound = n as usize + n as usize / 16 + 2 * buckets;
        let mut table = Table::with_bound(chunk, inline, bound);
        let local_mask = (1u32 << shift) - 1;
        let mut counts = vec![0u32; 1 << shift];
        let mut begin = 0;
        for (p, &len) in part_len.iter().enumerate() {
            let part = &pairs[begin..begin + len];
            let part_lo = pair_lo.get(begin..begin + len).unwrap_or_default();
            begin += len;
            counts.fill(0);
            for &(k, _) in part {
                counts[(k & local_mask) as usize] += 1;
            }
            let mut total = table.arena.len() as u32;
            for (entry, &c) in table.dir[p << shift..(p + 1) << shift]
                .iter_mut()
                .zip(&counts)
            {
                *entry = [total, 0];
                total += c + slack(c);
            }
            table.resize_arena(total as usize);
            for (i, &(k, slot)) in part.iter().enumerate() {
                table.push_with(k, slot, part_lo.get(i).copied().unwrap_or_default());
            }
        }
        table.dir[buckets] = [table.arena.len() as u32, 0];
        table
    }

    /// Builds a copy of this table with `removes` and `adds` (`(key, slot)`, any order) applied;
    /// `removed` has the bit of every removed slot set.
    ///
    /// Like [`Table::build`], changes are first partitioned by the top 8 key bits and each
    /// partition of buckets is then rebuilt on its own, so that the random accesses stay in
    /// cache however large the batch.
    fn rebuilt(
        &self,
        removes: &[(u32, u32)],
        adds: &[(u32, u32)],
        removed: &[u64],
        storage: &Storage,
    ) -> Self {
        let buckets = 1usize << self.chunk.width;
        let shift = self.chunk.width.saturating_sub(8);
        let parts = 1usize << (self.chunk.width - shift);
        let partition = |changes: &[(u32, u32)]| {
            let mut len = vec![0usize; parts + 1];
            for &(k, _) in changes {
                len[(k >> shift) as usize + 1] += 1;
            }
            for p in 0..parts {
                len[p + 1] += len[p];
            }
            let mut next = len.clone();
            let mut out = vec![(0u32, 0u32); changes.len()];
            for &(k, slot) in changes {
                let p = (k >> shift) as usize;
                out[next[p]] = (k, slot);
                next[p] += 1;
            }
            (len, out)
        };
        let (rm_at, rm) = partition(removes);
        let (add_at, ad) = partition(adds);
        let old_len: usize = self.dir[..buckets].iter().map(|e| e[1] as usize).sum();
        let n = old_len + adds.len() - removes.len();
        // Upper bound, as in `build`: no reallocation, untouched pages cost nothing.
        let bound = n + n / 16 + 2 * buckets;
        let mut table = Table::with_bound(self.chunk, self.inline, bound);
        let is_removed = |s: u32| {
            removed
                .get(s as usize / 64)
                .is_some_and(|w| w & (1 << (s % 64)) != 0)
        };
        let local_mask = (1u32 << shift) - 1;
        let mut counts = vec![0u32; 1 << shift];
        for p in 0..parts {
            let first = p << shift;
            let part_rm = &rm[rm_at[p]..rm_at[p + 1]];
            let part_ad = &ad[add_at[p]..add_at[p + 1]];
            for (c, e) in counts
                .iter_mut()
                .zip(&self.dir[first..first + (1 << shift)])
            {
                *c = e[1];
            }
            for &(k, _) in part_rm {
                counts[(k & local_mask) as usize] -= 1;
            }
            for &(k, _) in part_ad {
                counts[(k & local_mask) as usize] += 1;
            }
            let mut total = table.arena.len() as u32;
            for (entry, &c) in table.dir[first..first + (1 << shift)]
                .iter_mut()
                .zip(&counts)
            {
                *entry = [total, 0];
                total += c + slack(c);
            }
            table.resize_arena(total as usize);
            for key in first..first + (1 << shift) {
                let [old_start, old_len] = self.dir[key];
                let old = old_start as usize..(old_start + old_len) as usize;
                let start = table.dir[key][0] as usize;
                let len = if part_rm.is_empty() {
                    table.arena[start..start + old.len()].copy_from_slice(&self.arena[old.clone()]);
                    if self.inline {
                        table.lo[start..start + old.len()].copy_from_slice(&self.lo[old.clone()]);
                    }
                    old.len()
                } else {
                    let mut len = 0;
                    for i in old {
                        let s = self.arena[i];
                        if !is_removed(s) {
                            table.arena[start + len] = s;
                            if self.inline {
                                table.lo[start + len] = self.lo[i];
                            }
                            len += 1;
                        }
                    }
                    len
                };
                table.dir[key][1] = len as u32;
            }
            for &(k, slot) in part_ad {
                table.push(k, slot, storage);
            }
        }
        table.dir[buckets] = [table.arena.len() as u32, 0];
        table
    }

    /// Number of entries of `changes` (sorted by key) with key `key`.
    fn count_key(changes: &[(u32, u32)], key: u32) -> u32 {
        let lo = changes.partition_point(|c| c.0 < key);
        let hi = lo + changes[lo..].partition_point(|c| c.0 == key);
        (hi - lo) as u32
    }

    /// Whether `removes` and `adds` (sorted by key) can be applied in place: every bucket's
    /// final length fits its capacity, where a bucket short of room may borrow the final spare
    /// room of the next [`BORROW_WINDOW`] buckets. Simulates [`Table::patch`] exactly.
    fn fits(&self, removes: &[(u32, u32)], adds: &[(u32, u32)]) -> bool {
        let last = (1u32 << self.chunk.width) - 1;
        let final_len = |key: u32| {
            self.dir[key as usize][1] - Self::count_key(removes, key) + Self::count_key(adds, key)
        };
        // (bucket, capacity lent to earlier buckets); few entries.
        let mut lent: Vec<(u32, u32)> = Vec::new();
        let lent_by = |lent: &[(u32, u32)], key: u32| -> u32 {
            lent.iter().filter(|l| l.0 == key).map(|l| l.1).sum()
        };
        let mut ai = 0;
        while ai < adds.len() {
            let key = adds[ai].0;
            ai += adds[ai..].partition_point(|a| a.0 == key);
            let need = final_len(key);
            let room = self.capacity(key) - lent_by(&lent, key);
            if need <= room {
                continue;
            }
            let mut deficit = need - room;
            for j in key + 1..=last.min(key.saturating_add(BORROW_WINDOW)) {
                let cap = self.capacity(j) - lent_by(&lent, j);
                let spare = cap.saturating_sub(final_len(j));
                if spare > 0 {
                    let t = spare.min(deficit);
                    lent.push((j, t));
                    deficit -= t;
                    if deficit == 0 {
                        break;
                    }
                }
            }
            if deficit > 0 {
                return false;
            }
        }
        true
    }

    /// Applies `removes` then `adds` (sorted by key) in place; the caller checked
    /// [`Table::fits`]. A bucket short of room takes spare room from the next buckets by
    /// shifting the buckets in between (a few dozen entries), under the caller's write lock.
    fn patch(&mut self, removes: &[(u32, u32)], adds: &[(u32, u32)], storage: &Storage) {
        for &(key, slot) in removes {
            let [start, len] = self.dir[key as usize];
            let bucket = &self.arena[start as usize..(start + len) as usize];
            if let Some(pos) = bucket.iter().position(|&s| s == slot) {
                // Move the bucket's last entry into the hole.
                let (pos, last) = ((start as usize) + pos, (start + len - 1) as usize);
                self.arena[pos] = self.arena[last];
                if self.inline {
                    self.lo[pos] = self.lo[last];
                }
                self.dir[key as usize][1] = len - 1;
            } else {
                debug_assert!(false, "removed slot missing from its bucket");
            }
        }
        let last = (1u32 << self.chunk.width) - 1;
        let mut ai = 0;
        while ai < adds.len() {
            let key = adds[ai].0;
            let end = ai + adds[ai..].partition_point(|a| a.0 == key);
            let later = &adds[end..];
            let need = self.dir[key as usize][1] + (end - ai) as u32;
            let mut deficit = need.saturating_sub(self.capacity(key));
            let mut j = key + 1;
            while deficit > 0 && j <= last.min(key.saturating_add(BORROW_WINDOW)) {
                let pending = self.dir[j as usize][1] + Self::count_key(later, j);
                let spare = self.capacity(j).saturating_sub(pending);
                if spare > 0 {
                    let t = spare.min(deficit);
                    // Move buckets key+1..=j right by t: j loses t of its spare room, `key`
                    // gains it, the buckets in between keep their capacity.
                    for i in (key + 1..=j).rev() {
                        let [start, len] = self.dir[i as usize];
                        let from = start as usize..(start + len) as usize;
                        self.arena.copy_within(from.clone(), (start + t) as usize);
                        if self.inline {
                            self.lo.copy_within(from, (start + t) as usize);
                        }
                        self.dir[i as usize][0] = start + t;
                    }
                    deficit -= t;
                }
                j += 1;
            }
            debug_assert_eq!(deficit, 0, "patch without room: fits() disagrees");
            for &(_, slot) in &adds[ai..end] {
                self.push(key, slot, storage);
            }
            ai = end;
        }
    }

    fn heap_bytes(&self) -> usize {
        self.dir.len() * 8 + self.arena.len() * 4 + self.lo.len() * 16
    }
}

/// Per-thread query buffers (reused so that queries do not allocate).
#[derive(Default)]
struct Scratch {
    keys: Vec<u32>,
    /// Table of each probe key.
    key_tables: Vec<u32>,
    ranges: Vec<(u32, u32, u32)>,
    slots: Vec<u32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

struct Inner {
    tables: Vec<Table>,
    storage: Storage,
    /// A bulk load is in progress ([`PdqIndex::begin_bulk_load`]): inserts only append slots,
    /// the tables stay empty, and queries scan the slots (exact, slower) until
    /// [`PdqIndex::finish_bulk_load`] builds the tables once, for the final size.
    bulk: bool,
}

impl Inner {
    /// Built tables over their storage (no bulk load in progress).
    fn built(tables: Vec<Table>, storage: Storage) -> Self {
        Inner {
            tables,
            storage,
            bulk: false,
        }
    }

    fn new(layout: &Layout) -> Self {
        Inner {
            tables: layout
                .chunks
                .iter()
                .map(|&c| Table::empty(c, layout.inline))
                .collect(),
            storage: Storage::default(),
            bulk: false,
        }
    }

    /// Probe radius per table for threshold `t` (negative: skip the table).
    fn radii(&self, t: u32) -> Vec<i32> {
        let m = self.tables.len() as u32;
        let (s, a) = ((t / m) as i32, t % m);
        (0..m).map(|k| if k <= a { s } else { s - 1 }).collect()
    }

    /// Runs the query with the best popcount the CPU has (the workspace builds for baseline
    /// x86-64, where `count_ones` is a slow bit-twiddling sequence).
    fn query(&self, q: &Code256, t: u32, out: &mut Vec<Hit>) -> PdqQueryStats {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("popcnt") {
                // SAFETY: the CPU supports popcnt (checked just above).
                return unsafe { self.query_popcnt(q, t, out) };
            }
        }
        self.query_generic(q, t, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn query_popcnt(&self, q: &Code256, t: u32, out: &mut Vec<Hit>) -> PdqQueryStats {
        self.query_generic(q, t, out)
    }

    #[inline(always)]
    fn query_generic(&self, q: &Code256, t: u32, out: &mut Vec<Hit>) -> PdqQueryStats {
        let mut stats = PdqQueryStats::default();
        let n = self.storage.len as f64;
        if n == 0.0 {
            return stats;
        }
        if self.bulk {
            return self.scan(q, t, out);
        }
        let radii = self.radii(t);
        let mut probes = 0f64;
        let mut expected = 0f64;
        for (table, &r) in self.tables.iter().zip(&radii) {
            if r < 0 {
                continue;
            }
            if r > 6 {
                probes = f64::INFINITY;
                break;
            }
            let ball: f64 = (0..=r as u32).map(|j| binomial(table.chunk.width, j)).sum();
            probes += ball;
            expected += ball * n / (1u64 << table.chunk.width) as f64;
        }
        // A probe or a candidate (random accesses) costs several sequential comparisons.
        if !probes.is_finite() || 8.0 * (expected + probes) > n {
            return self.scan(q, t, out);
        }
        // Take the buffers out of the thread-local (no closure around the hot loop, so that it
        // is compiled with the caller's target features).
        let mut scratch = SCRATCH.with(|cell| cell.take());
        self.probe(q, &radii, &mut scratch);
        stats.probes = scratch.keys.len() as u64;
        stats.candidates = if self.tables[0].inline {
            self.verify_inline(&scratch.ranges, q, t, &radii, out)
        } else {
            self.verify_by_slot(&mut scratch, q, t, &radii, out)
        };
        SCRATCH.with(|cell| cell.replace(scratch));
        stats
    }

    /// Computes the probe keys of every table and looks up their buckets: fills
    /// `scratch.keys` (one per probe) and `scratch.ranges` (table, start, len) of the non-empty
    /// buckets, in table order.
    #[inline(always)]
    fn probe(&self, q: &Code256, radii: &[i32], scratch: &mut Scratch) {
        let Scratch {
            keys,
            key_tables,
            ranges,
            ..
        } = scratch;
        keys.clear();
        key_tables.clear();
        for (k, table) in self.tables.iter().enumerate() {
            let r = radii[k];
            if r >= 0 {
                let qk = table.chunk.of(q);
                for j in 0..=r as u32 {
                    match cached_masks(table.chunk.width, j) {
                        Some(masks) => keys.extend(masks.iter().map(|&m| qk ^ m)),
                        None => for_each_mask(table.chunk.width, j, |m| keys.push(qk ^ m)),
                    }
                }
            }
            key_tables.resize(keys.len(), k as u32);
        }
        // Directory entries are prefetched a fixed distance ahead rather than all at once: a
        // burst of ~1,400 prefetches overflows the core's miss buffers, and the loads then wait
        // for lines that were dropped or not yet there.
        const DIR_AHEAD: usize = 64;
        let dir_ptr = |i: usize| {
            let table = &self.tables[key_tables[i] as usize];
            table.dir.as_ptr().wrapping_add(keys[i] as usize)
        };
        for i in 0..keys.len().min(DIR_AHEAD) {
            prefetch(dir_ptr(i));
        }
        ranges.clear();
        for (i, (&key, &k)) in keys.iter().zip(key_tables.iter()).enumerate() {
            if i + DIR_AHEAD < keys.len() {
                prefetch(dir_ptr(i + DIR_AHEAD));
            }
            let [start, len] = self.tables[k as usize].dir[key as usize];
            if len > 0 {
                ranges.push((k, start, len));
            }
        }
    }

    /// Verifies the candidates of `ranges` from the inline codes of the buckets: a sequential
    /// read per bucket; the slot and the second code half are read only for candidates whose
    /// first half is within `t`. Returns the number of candidates.
    #[inline(always)]
    fn verify_inline(
        &self,
        ranges: &[(u32, u32, u32)],
        q: &Code256,
        t: u32,
        radii: &[i32],
        out: &mut Vec<Hit>,
    ) -> u64 {
        // Buckets are prefetched whole (up to 8 lines), a few buckets ahead.
        const BUCKET_AHEAD: usize = 8;
        let prefetch_bucket = |&(k, start, len): &(u32, u32, u32)| {
            let lo = &self.tables[k as usize].lo;
            let first = lo.as_ptr().wrapping_add(start as usize) as usize;
            let end = first + (len as usize).min(32) * std::mem::size_of::<HalfCode>();
            for line in (first & !63..end).step_by(64) {
                prefetch(line as *const u8);
            }
        };
        for r in ranges.iter().take(BUCKET_AHEAD) {
            prefetch_bucket(r);
        }
        let mut candidates = 0;
        for (i, &(k, start, len)) in ranges.iter().enumerate() {
            if let Some(ahead) = ranges.get(i + BUCKET_AHEAD) {
                prefetch_bucket(ahead);
            }
            let table = &self.tables[k as usize];
            let bucket = start as usize..(start + len) as usize;
            candidates += u64::from(len);
            for (j, half) in table.lo[bucket.clone()].iter().enumerate() {
                let d_lo = half_distance(half, q[0], q[1]);
                if d_lo <= t {
                    let slot = table.arena[bucket.start + j];
                    self.verify_second_half(slot, d_lo, k as usize, q, t, radii, out);
                }
            }
        }
        candidates
    }

    /// Gathers the candidate slots of `scratch.ranges` and verifies each on the first half of
    /// its code in storage (a random access each, prefetched ahead). Returns the number of
    /// candidates.
    #[inline(always)]
    fn verify_by_slot(
        &self,
        scratch: &mut Scratch,
        q: &Code256,
        t: u32,
        radii: &[i32],
        out: &mut Vec<Hit>,
    ) -> u64 {
        let Scratch { ranges, slots, .. } = scratch;
        // Candidate slots, remembering where each table's candidates end.
        slots.clear();
        let mut slot_ends = [0usize; 33];
        const ARENA_AHEAD: usize = 16;
        let arena_ptr = |&(k, start, _): &(u32, u32, u32)| {
            self.tables[k as usize]
                .arena
                .as_ptr()
                .wrapping_add(start as usize)
        };
        for r in ranges.iter().take(ARENA_AHEAD) {
            prefetch(arena_ptr(r));
        }
        for (i, &(k, start, len)) in ranges.iter().enumerate() {
            if let Some(ahead) = ranges.get(i + ARENA_AHEAD) {
                prefetch(arena_ptr(ahead));
            }
            let table = &self.tables[k as usize];
            slots.extend_from_slice(&table.arena[start as usize..(start + len) as usize]);
            slot_ends[k as usize + 1] = slots.len();
        }
        for k in 1..=self.tables.len() {
            slot_ends[k] = slot_ends[k].max(slot_ends[k - 1]);
        }
        // Verify on the first half of the codes, prefetching ahead; only candidates within `t`
        // there have their second half read (see `Storage`).
        const AHEAD: usize = 16;
        for &s in slots.iter().take(AHEAD) {
            prefetch(self.storage.lo_ptr(s));
        }
        let mut k = 0;
        for (i, &slot) in slots.iter().enumerate() {
            if let Some(&ahead) = slots.get(i + AHEAD) {
                prefetch(self.storage.lo_ptr(ahead));
            }
            let d_lo = half_distance(self.storage.lo(slot), q[0], q[1]);
            if d_lo > t {
                continue;
            }
            while i >= slot_ends[k + 1] {
                k += 1;
            }
            self.verify_second_half(slot, d_lo, k, q, t, radii, out);
        }
        slots.len() as u64
    }

    /// Finishes a candidate of table `k` whose first half is at distance `d_lo`: reports it if
    /// the whole code is within `t` and `k` is the first table covering it.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn verify_second_half(
        &self,
        slot: u32,
        d_lo: u32,
        k: usize,
        q: &Code256,
        t: u32,
        radii: &[i32],
        out: &mut Vec<Hit>,
    ) {
        let d = d_lo + half_distance(self.storage.hi(slot), q[2], q[3]);
        if d <= t && self.first_cover(k, &self.storage.code(slot), q, radii) {
            out.push(Hit {
                distance: d,
                id: self.storage.id(slot),
            });
        }
    }

    /// Whether table `k` is the first table whose probe covers `code` (reporting it only there
    /// makes every entry appear once).
    #[inline(always)]
    fn first_cover(&self, k: usize, code: &Code256, q: &Code256, radii: &[i32]) -> bool {
        let x = [
            code[0] ^ q[0],
            code[1] ^ q[1],
            code[2] ^ q[2],
            code[3] ^ q[3],
        ];
        self.tables[..k]
            .iter()
            .zip(radii)
            .all(|(table, &r)| (table.chunk.of(&x).count_ones() as i32) > r)
    }

    #[inline(always)]
    fn scan(&self, q: &Code256, t: u32, out: &mut Vec<Hit>) -> PdqQueryStats {
        let st = &self.storage;
        let mut candidates = 0;
        for (w, &bits) in st.live.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let slot = (w * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                candidates += 1;
                let d_lo = half_distance(st.lo(slot), q[0], q[1]);
                if d_lo > t {
                    continue;
                }
                let d = d_lo + half_distance(st.hi(slot), q[2], q[3]);
                if d <= t {
                    out.push(Hit {
                        distance: d,
                        id: st.id(slot),
                    });
                }
            }
        }
        PdqQueryStats {
            probes: 0,
            candidates,
            exhaustive: true,
        }
    }

    /// Finds the slots of the given (code, id) pairs, all with chunk-0 key `key`.
    /// `wanted` is sorted and its pairs are distinct.
    fn find_slots(&self, key: u32, wanted: &[(Code256, u64)], found: &mut Vec<Option<u32>>) {
        found.clear();
        found.resize(wanted.len(), None);
        if self.storage.len == 0 {
            return;
        }
        let bucket = self.tables[0].bucket(key);
        const AHEAD: usize = 16;
        for &s in bucket.iter().take(AHEAD) {
            self.storage.prefetch_code(s);
        }
        for (i, &s) in bucket.iter().enumerate() {
            if let Some(&ahead) = bucket.get(i + AHEAD) {
                self.storage.prefetch_code(ahead);
            }
            let pair = (self.storage.code(s), self.storage.id(s));
            if let Ok(i) = wanted.binary_search(&pair) {
                found[i] = Some(s);
            }
        }
    }
}

/// Whether two slots hold the same (code, id) pair. Equal codes share every bucket, so checking
/// within each bucket of one table suffices; the next bucket's codes are prefetched meanwhile.
fn has_repeated_pairs(table: &Table, storage: &Storage) -> bool {
    let buckets = 1u32 << table.chunk.width;
    let mut codes: Vec<(Code256, u32)> = Vec::new();
    for b in 0..buckets {
        if b + 1 < buckets {
            for &s in table.bucket(b + 1) {
                storage.prefetch_code(s);
            }
        }
        let bucket = table.bucket(b);
        if bucket.len() < 2 {
            continue;
        }
        codes.clear();
        codes.extend(bucket.iter().map(|&s| (storage.code(s), s)));
        codes.sort_unstable();
        for (i, &(code, s)) in codes.iter().enumerate() {
            // Slots with this code come next (sorted); compare their ids.
            let same = codes[i + 1..].iter().take_while(|(c, _)| *c == code);
            for &(_, other) in same {
                if storage.id(other) == storage.id(s) {
                    return true;
                }
            }
        }
    }
    false
}

/// Builds all tables over slots `0..n`, on as many threads as there are cores (up to 4): the
/// tables are independent, and this is what bounds the start-up time.
fn build_tables(layout: &Layout, storage: &Storage, n: u32) -> Vec<Table> {
    let (chunks, inline) = (&layout.chunks, layout.inline);
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let threads = if n < 100_000 { 1 } else { threads };
    // Thread `t` builds tables t, t + threads, ... with its own scratch buffers.
    let build_some = |t: usize| {
        let mut scratch = BuildScratch::default();
        (t..chunks.len())
            .step_by(threads)
            .map(|k| (k, Table::build(chunks[k], inline, storage, n, &mut scratch)))
            .collect::<Vec<_>>()
    };
    let mut built: Vec<Option<Table>> = chunks.iter().map(|_| None).collect();
    if threads == 1 {
        for (k, table) in build_some(0) {
            built[k] = Some(table);
        }
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| scope.spawn(move || build_some(t)))
                .collect();
            for h in handles {
                match h.join() {
                    Ok(tables) => {
                        for (k, table) in tables {
                            built[k] = Some(table);
                        }
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }
    built
        .into_iter()
        .zip(chunks)
        .map(|(t, &c)| {
            t.unwrap_or_else(|| Table::build(c, inline, storage, n, &mut BuildScratch::default()))
        })
        .collect()
}

/// Returns freed heap memory to the OS after large operations (glibc keeps it otherwise, which
/// would show up as resident memory long after a big batch or load).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn binomial(n: u32, k: u32) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
}

/// Largest number of set bits [`cached_masks`] keeps lists for.
const CACHED_ONES: u32 = 3;

/// Every `width`-bit mask with exactly `ones` set bits, for `ones <= CACHED_ONES` (computed
/// once: wide tables probe up to ~1,500 keys per query, and Gosper's hack divides per mask).
fn cached_masks(width: u32, ones: u32) -> Option<&'static [u32]> {
    static MASKS: std::sync::OnceLock<Vec<Vec<Vec<u32>>>> = std::sync::OnceLock::new();
    let all = MASKS.get_or_init(|| {
        (0..=MAX_CHUNK_WIDTH)
            .map(|w| {
                (0..=CACHED_ONES)
                    .map(|j| {
                        let mut v = Vec::new();
                        for_each_mask(w, j, |m| v.push(m));
                        v
                    })
                    .collect()
            })
            .collect()
    });
    all.get(width as usize)?
        .get(ones as usize)
        .map(Vec::as_slice)
}

/// Calls `f` with every `width`-bit mask of exactly `ones` set bits (Gosper's hack).
#[inline(always)]
fn for_each_mask(width: u32, ones: u32, mut f: impl FnMut(u32)) {
    if ones == 0 {
        f(0);
        return;
    }
    if ones > width {
        return;
    }
    let limit = 1u64 << width;
    let mut mask: u64 = (1u64 << ones) - 1;
    while mask < limit {
        f(mask as u32);
        let c = mask & mask.wrapping_neg();
        let r = mask + c;
        mask = (((r ^ mask) >> 2) / c) | r;
    }
}

/// Exact radius search over 256-bit codes (PDQ hashes). See the module docs for the layout, the
/// query algorithm and the concurrency guarantees.
///
/// Several ids may share one code, and one id may be stored under several codes; the stored
/// unit is the pair (code, id), inserted at most once.
pub struct PdqIndex {
    /// The layout given at construction; `None`: chosen from the size (see [`PdqIndex::new`]).
    fixed: Option<PdqIndexConfig>,
    /// Size from which the automatic layout is the wide one (a field so that tests can lower it).
    wide_from: usize,
    inner: RwLock<Inner>,
}

impl PdqIndex {
    /// An empty index whose layout follows its size: it starts with the default layout and
    /// takes [`PdqIndexConfig::for_len`] of the entry count whenever it is built in bulk (a
    /// snapshot load, or a batch applied to an empty index). Growing by small batches keeps
    /// the current layout (changing it means rebuilding every table); the next snapshot load
    /// re-chooses.
    pub fn new() -> Self {
        let layout = PdqIndexConfig::default()
            .layout()
            .unwrap_or_else(|_| unreachable!());
        PdqIndex {
            fixed: None,
            wide_from: WIDE_LAYOUT_FROM,
            inner: RwLock::new(Inner::new(&layout)),
        }
    }

    /// An empty index with the given layout, kept whatever its size.
    pub fn with_config(config: PdqIndexConfig) -> Result<Self, IndexError> {
        let layout = config.layout()?;
        Ok(PdqIndex {
            fixed: Some(config),
            wide_from: WIDE_LAYOUT_FROM,
            inner: RwLock::new(Inner::new(&layout)),
        })
    }

    /// The current layout.
    pub fn config(&self) -> PdqIndexConfig {
        let inner = self.inner.read();
        PdqIndexConfig {
            tables: inner.tables.len(),
            inline_codes: inner.tables[0].inline,
        }
    }

    /// The layout to build for `n` entries.
    fn layout_for(&self, n: usize) -> Layout {
        self.fixed
            .unwrap_or_else(|| PdqIndexConfig::for_len_from(n, self.wide_from))
            .layout()
            .unwrap_or_else(|_| unreachable!("layouts are validated at construction"))
    }

    /// Number of stored (code, id) pairs.
    pub fn len(&self) -> usize {
        self.inner.read().storage.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap memory in bytes (slots, tables).
    pub fn heap_bytes(&self) -> usize {
        let inner = self.inner.read();
        inner.storage.heap_bytes() + inner.tables.iter().map(Table::heap_bytes).sum::<usize>()
    }

    /// Every stored pair within `threshold` of `query`, one hit per stored (code, id) pair, in
    /// no particular order, appended to `out`. Returns the work done.
    pub fn query_into(&self, query: &Code256, threshold: u32, out: &mut Vec<Hit>) -> PdqQueryStats {
        self.inner.read().query(query, threshold, out)
    }

    /// Every stored id within `threshold` of `query`, once each with its smallest distance,
    /// sorted by (distance, id).
    pub fn query(&self, query: &Code256, threshold: u32) -> Vec<Hit> {
        let mut out = Vec::new();
        self.query_into(query, threshold, &mut out);
        normalize_hits(&mut out);
        out
    }

    /// Stores (code, id). Returns whether the pair was new.
    pub fn insert(&self, code: Code256, id: u64) -> bool {
        self.apply(&[PdqOp::Insert(code, id)]).inserted == 1
    }

    /// Removes (code, id). Returns whether it was stored.
    pub fn remove(&self, code: Code256, id: u64) -> bool {
        self.apply(&[PdqOp::Remove(code, id)]).removed == 1
    }

    /// Applies a batch of changes in order (a later op on the same pair wins). Idempotent:
    /// inserting a stored pair or removing a missing one changes nothing.
    ///
    /// # Panics
    ///
    /// If the index would exceed `u32::MAX - 1` slots (about 4 billion entries).
    pub fn apply(&self, ops: &[PdqOp]) -> ApplyStats {
        if self.inner.read().bulk {
            if let Some(stats) = self.try_bulk_append(ops) {
                return stats;
            }
            // A remove during a bulk load: build the tables first, then apply as usual.
            self.finish_bulk_load();
        }
        if ops.len() >= PATCH_LIMIT {
            if let Some(stats) = self.try_bulk_load(ops) {
                release_free_memory();
                return stats;
            }
        }
        let mut stats = ApplyStats::default();
        if self.fixed.is_none() && ops.len() >= PATCH_LIMIT {
            // A bulk load into an empty index: take the layout for its final size now, while
            // switching costs nothing.
            let inserts = ops.iter().filter(|op| op.parts().2).count();
            let layout = self.layout_for(inserts);
            let mut w = self.inner.write();
            let same = w.tables.len() == layout.chunks.len() && w.tables[0].inline == layout.inline;
            if w.storage.len == 0 && !same {
                *w = Inner::new(&layout);
            }
        }
        let mut rest = ops;
        while !rest.is_empty() {
            let size = MIN_SUB_BATCH.max(self.len()).min(rest.len());
            let (now, later) = rest.split_at(size);
            let s = self.apply_sub_batch(now);
            stats.inserted += s.inserted;
            stats.removed += s.removed;
            stats.unchanged += s.unchanged;
            rest = later;
        }
        if ops.len() >= PATCH_LIMIT {
            release_free_memory();
        }
        self.relayout_if_outgrown();
        stats
    }

    /// Switches an automatically laid out index that has grown by ordinary batches well past
    /// [`WIDE_LAYOUT_FROM`] to the wide layout, so that inline codes (16 bytes per entry per
    /// table) do not keep growing with it. The wide tables are built beside the current ones
    /// (queries keep running) and swapped in: memory meanwhile grows by the wide tables, about
    /// a third of the inline ones. The switch waits for a quarter more than the cut-off, so that
    /// an index hovering around it does not rebuild back and forth; the other direction (an
    /// index shrinking below it) waits for the next bulk build or snapshot load.
    fn relayout_if_outgrown(&self) {
        if self.fixed.is_some() {
            return;
        }
        let guard = self.inner.upgradable_read();
        let n = guard.storage.len;
        if guard.bulk || !guard.tables[0].inline || n < self.wide_from + self.wide_from / 4 {
            return;
        }
        let tables = build_tables(&self.layout_for(n), &guard.storage, guard.storage.next);
        let mut w = RwLockUpgradableReadGuard::upgrade(guard);
        let old = std::mem::replace(&mut w.tables, tables);
        drop(w);
        drop(old);
        release_free_memory();
    }

    /// Starts a bulk load (a matcher's first load from its store): until
    /// [`finish_bulk_load`](Self::finish_bulk_load), inserts are appended to the slots without
    /// touching the tables, so loading millions of entries in many batches costs one table build
    /// in the end, with the layout for the final size, instead of a rebuild of every table per
    /// batch (and the allocator churn of those rebuilds). Queries stay exact meanwhile but scan
    /// every slot; a remove or a snapshot write finishes the bulk load first. During the load a
    /// pair inserted twice counts twice in [`ApplyStats::inserted`]; it is stored once.
    ///
    /// Returns `false`, and changes nothing, if the index is not empty.
    pub fn begin_bulk_load(&self) -> bool {
        let mut inner = self.inner.write();
        if inner.bulk {
            return true;
        }
        if inner.storage.len != 0 {
            return false;
        }
        // Fresh storage: slots `0..next` must all be live when the tables are built.
        let layout = Layout {
            chunks: inner.tables.iter().map(|t| t.chunk).collect(),
            inline: inner.tables[0].inline,
        };
        *inner = Inner::new(&layout);
        inner.bulk = true;
        true
    }

    /// Ends a bulk load: builds the tables for everything stored, with the layout for its size
    /// (queries keep scanning until the tables are swapped in). Does nothing outside a bulk load.
    pub fn finish_bulk_load(&self) {
        let guard = self.inner.upgradable_read();
        if !guard.bulk {
            return;
        }
        let n = guard.storage.next;
        let tables = build_tables(&self.layout_for(n as usize), &guard.storage, n);
        let mut w = RwLockUpgradableReadGuard::upgrade(guard);
        if has_repeated_pairs(&tables[0], &w.storage) {
            // The same pair was inserted twice: store it once (rare; the store never does this).
            let mut pairs: Vec<(Code256, u64)> = Vec::with_capacity(n as usize);
            w.storage
                .for_each_code(n, |slot, code| pairs.push((*code, w.storage.id(slot))));
            drop(tables);
            pairs.sort_unstable();
            pairs.dedup();
            let mut storage = Storage::default();
            for (slot, &(code, id)) in pairs.iter().enumerate() {
                storage.set(slot as u32, code, id);
            }
            drop(pairs);
            let n = storage.next;
            let tables = build_tables(&self.layout_for(n as usize), &storage, n);
            *w = Inner::built(tables, storage);
        } else {
            w.tables = tables;
            w.bulk = false;
        }
        drop(w);
        release_free_memory();
    }

    /// During a bulk load, appends a batch of inserts to the slots. `None` (nothing done) if the
    /// batch removes anything or no bulk load is in progress.
    fn try_bulk_append(&self, ops: &[PdqOp]) -> Option<ApplyStats> {
        if ops.iter().any(|op| !op.parts().2) {
            return None;
        }
        let mut w = self.inner.write();
        if !w.bulk {
            return None;
        }
        for op in ops {
            let (code, id, _) = op.parts();
            let slot = w.storage.next;
            assert!(slot < u32::MAX - 1, "PdqIndex is full (u32 slots)");
            w.storage.set(slot, *code, id);
        }
        Some(ApplyStats {
            inserted: ops.len(),
            ..ApplyStats::default()
        })
    }

    /// The fast path of a bulk load: a batch of distinct inserts into an empty index is written
    /// to fresh storage and indexed like a snapshot load (one full build per table instead of a
    /// rebuild per sub-batch), then swapped in. Returns `None`, having changed nothing, when the
    /// index is not empty or the batch has removes or repeated pairs (the general path handles
    /// those).
    fn try_bulk_load(&self, ops: &[PdqOp]) -> Option<ApplyStats> {
        if ops.len() >= (u32::MAX - 1) as usize || ops.iter().any(|op| !op.parts().2) {
            return None;
        }
        let guard = self.inner.upgradable_read();
        if guard.storage.len != 0 {
            return None;
        }
        let mut storage = Storage::default();
        for (slot, op) in ops.iter().enumerate() {
            let (code, id, _) = op.parts();
            storage.set(slot as u32, *code, id);
        }
        let n = ops.len() as u32;
        let tables = build_tables(&self.layout_for(ops.len()), &storage, n);
        if has_repeated_pairs(&tables[0], &storage) {
            return None;
        }
        // Queries keep seeing the (empty) old contents until this swap.
        let mut w = RwLockUpgradableReadGuard::upgrade(guard);
        *w = Inner::built(tables, storage);
        Some(ApplyStats {
            inserted: ops.len(),
            ..ApplyStats::default()
        })
    }

    fn apply_sub_batch(&self, ops: &[PdqOp]) -> ApplyStats {
        let mut stats = ApplyStats::default();
        let guard = self.inner.upgradable_read();
        let chunks: Vec<Chunk> = guard.tables.iter().map(|t| t.chunk).collect();
        let chunk0 = chunks[0];

        // 1. Resolve the batch against the index (readers keep running).
        let mut order: Vec<(u32, Code256, u64, u32)> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                let (c, id, _) = op.parts();
                (chunk0.of(c), *c, id, i as u32)
            })
            .collect();
        order.sort_unstable();
        // Last op per (code, id), grouped by chunk-0 key.
        let mut finals: Vec<(Code256, u64, bool)> = Vec::with_capacity(order.len());
        for (i, &(_, c, id, o)) in order.iter().enumerate() {
            let last_of_pair = order
                .get(i + 1)
                .is_none_or(|&(_, cn, idn, _)| cn != c || idn != id);
            if last_of_pair {
                finals.push((c, id, ops[o as usize].parts().2));
            } else {
                stats.unchanged += 1;
            }
        }
        drop(order);
        let mut adds: Vec<(Code256, u64)> = Vec::new();
        let mut removes: Vec<u32> = Vec::new();
        let mut wanted = Vec::new();
        let mut found = Vec::new();
        let mut i = 0;
        while i < finals.len() {
            let key = chunk0.of(&finals[i].0);
            let j = i + finals[i..]
                .iter()
                .position(|f| chunk0.of(&f.0) != key)
                .unwrap_or(finals.len() - i);
            wanted.clear();
            wanted.extend(finals[i..j].iter().map(|f| (f.0, f.1)));
            guard.find_slots(key, &wanted, &mut found);
            for (f, slot) in finals[i..j].iter().zip(&found) {
                match (f.2, slot) {
                    (true, None) => adds.push((f.0, f.1)),
                    (false, Some(s)) => removes.push(*s),
                    _ => stats.unchanged += 1,
                }
            }
            i = j;
        }
        stats.inserted = adds.len();
        stats.removed = removes.len();
        if adds.is_empty() && removes.is_empty() {
            return stats;
        }

        // 2. Write the new slots (not yet referenced by any table, so invisible to table
        //    probes), in bounded chunks so that queries are never held up for long.
        let mut guard = guard;
        let mut new_slots = Vec::with_capacity(adds.len());
        for chunk in adds.chunks(WRITE_CHUNK) {
            let mut w = RwLockUpgradableReadGuard::upgrade(guard);
            for &(code, id) in chunk {
                let slot = match w.storage.free.pop() {
                    Some(s) => s,
                    None => {
                        let s = w.storage.next;
                        assert!(s < u32::MAX - 1, "PdqIndex is full (u32 slots)");
                        s
                    }
                };
                w.storage.set(slot, code, id);
                new_slots.push(slot);
            }
            guard = RwLockWriteGuard::downgrade_to_upgradable(w);
        }

        // 3. Update one table at a time.
        let mut removed_bits: Vec<u64> = Vec::new();
        if !removes.is_empty() {
            removed_bits = vec![0u64; guard.storage.live.len()];
            for &s in &removes {
                removed_bits[s as usize / 64] |= 1 << (s % 64);
            }
        }
        for (k, &chunk) in chunks.iter().enumerate() {
            let mut rm: Vec<(u32, u32)> = removes
                .iter()
                .map(|&s| (chunk.of(&guard.storage.code(s)), s))
                .collect();
            let mut ad: Vec<(u32, u32)> = adds
                .iter()
                .zip(&new_slots)
                .map(|((c, _), &s)| (chunk.of(c), s))
                .collect();
            // Small batches usually fit into the spare capacity; large ones rebuild anyway.
            let small = rm.len() + ad.len() <= PATCH_LIMIT;
            if small {
                rm.sort_unstable();
                ad.sort_unstable();
            }
            if small && guard.tables[k].fits(&rm, &ad) {
                let mut w = RwLockUpgradableReadGuard::upgrade(guard);
                let Inner {
                    tables, storage, ..
                } = &mut *w;
                tables[k].patch(&rm, &ad, storage);
                guard = RwLockWriteGuard::downgrade_to_upgradable(w);
            } else {
                let mut table = guard.tables[k].rebuilt(&rm, &ad, &removed_bits, &guard.storage);
                let mut w = RwLockUpgradableReadGuard::upgrade(guard);
                std::mem::swap(&mut w.tables[k], &mut table);
                guard = RwLockWriteGuard::downgrade_to_upgradable(w);
                drop(table);
            }
        }

        // 4. Free the removed slots (no table references them any more).
        if !removes.is_empty() {
            let mut w = RwLockUpgradableReadGuard::upgrade(guard);
            for &s in &removes {
                w.storage.release(s);
            }
        }
        stats
    }

    /// Writes a snapshot atomically (see [`crate::snapshot`]). Queries and writers keep running:
    /// the slots are copied in chunks under short read locks, so the snapshot holds every entry
    /// stored throughout the call, plus some of those inserted or removed meanwhile. Replaying the
    /// change log from `watermark` (read *before* calling) onto it gives the exact state, because
    /// every change sets the final state of its (code, id) pair.
    pub fn write_snapshot(&self, path: &Path, watermark: u64) -> Result<(), SnapshotError> {
        // A snapshot holds each pair once; a bulk load may still hold repeats.
        self.finish_bulk_load();
        let mut writer = SnapshotWriter::create(path)?;
        let mut slots = Vec::new();
        let mut buf = Vec::new();
        let mut from = 0u32;
        let mut count = 0u64;
        loop {
            buf.clear();
            {
                let inner = self.inner.read();
                inner.storage.live_slots(from, SNAPSHOT_CHUNK, &mut slots);
                for &s in &slots {
                    buf.extend_from_slice(&code_to_bytes(&inner.storage.code(s)));
                    buf.extend_from_slice(&inner.storage.id(s).to_le_bytes());
                }
            }
            let Some(&last) = slots.last() else { break };
            count += slots.len() as u64;
            writer.write(&buf)?;
            from = last + 1;
        }
        writer.finish(
            SnapshotKind::Pdq,
            watermark,
            count,
            self.config().tables as u64,
        )
    }

    /// Loads a snapshot into a new index with the given layout. Returns it and the watermark.
    pub fn from_snapshot(path: &Path, config: PdqIndexConfig) -> Result<(Self, u64), IndexError> {
        let index = Self::with_config(config)?;
        let watermark = index.load_snapshot(path)?;
        Ok((index, watermark))
    }

    /// Replaces the contents with a snapshot; returns its watermark. On error nothing changes.
    pub fn load_snapshot(&self, path: &Path) -> Result<u64, SnapshotError> {
        let mut reader = SnapshotReader::open(path, SnapshotKind::Pdq)?;
        let header = *reader.header();
        let expected_len = header
            .entry_count
            .checked_mul(SNAPSHOT_ENTRY_LEN as u64)
            .filter(|&l| l == header.payload_len)
            .ok_or_else(|| {
                SnapshotError::Corrupt("entry count does not match payload length".into())
            })?;
        if header.entry_count >= u64::from(u32::MAX - 1) {
            return Err(SnapshotError::Corrupt("too many entries".into()));
        }
        debug_assert_eq!(expected_len, reader.remaining());
        let mut storage = Storage::default();
        let mut buf = vec![0u8; PAGE_LEN * SNAPSHOT_ENTRY_LEN];
        let mut slot = 0u32;
        while reader.remaining() > 0 {
            let n = (reader.remaining() as usize).min(buf.len());
            reader.read_exact(&mut buf[..n])?;
            for e in buf[..n].chunks_exact(SNAPSHOT_ENTRY_LEN) {
                let code = code_from_bytes(&e[..CODE_BYTES])
                    .map_err(|err| SnapshotError::Corrupt(err.to_string()))?;
                let mut id = [0u8; 8];
                id.copy_from_slice(&e[CODE_BYTES..]);
                storage.set(slot, code, u64::from_le_bytes(id));
                slot += 1;
            }
        }
        let header = reader.finish()?;
        let tables = build_tables(&self.layout_for(slot as usize), &storage, slot);
        let fresh = Inner::built(tables, storage);
        let old = std::mem::replace(&mut *self.inner.write(), fresh);
        drop(old);
        release_free_memory();
        Ok(header.watermark)
    }
}

impl Default for PdqIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl SignalIndex for PdqIndex {
    fn begin_bulk_load(&self) {
        PdqIndex::begin_bulk_load(self);
    }

    fn finish_bulk_load(&self) {
        PdqIndex::finish_bulk_load(self);
    }

    fn kind(&self) -> SnapshotKind {
        SnapshotKind::Pdq
    }

    fn apply(&self, ops: &[IndexOp<'_>]) -> Result<ApplyStats, IndexError> {
        let parsed = ops
            .iter()
            .map(|op| {
                Ok(match *op {
                    IndexOp::Insert { key, id } => PdqOp::Insert(code_from_bytes(key)?, id),
                    IndexOp::Remove { key, id } => PdqOp::Remove(code_from_bytes(key)?, id),
                })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        Ok(PdqIndex::apply(self, &parsed))
    }

    fn query(&self, key: &[u8], threshold: u32) -> Result<Vec<Hit>, IndexError> {
        Ok(PdqIndex::query(self, &code_from_bytes(key)?, threshold))
    }

    fn len(&self) -> usize {
        PdqIndex::len(self)
    }

    fn write_snapshot(&self, path: &Path, watermark: u64) -> Result<(), SnapshotError> {
        PdqIndex::write_snapshot(self, path, watermark)
    }

    fn load_snapshot(&self, path: &Path) -> Result<u64, SnapshotError> {
        PdqIndex::load_snapshot(self, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::hamming;

    #[test]
    fn chunks_cover_all_bits_once() {
        for m in 11..=32 {
            let chunks = PdqIndexConfig {
                tables: m,
                inline_codes: false,
            }
            .chunks()
            .unwrap();
            let mut seen = [0u8; 256];
            for c in &chunks {
                assert!(c.width <= 24);
                for b in c.start..c.start + c.width {
                    seen[b as usize] += 1;
                }
                // Chunk of a code with only bit `p` set is non-zero exactly for the owner.
                for p in 0..256u32 {
                    let mut code = [0u64; 4];
                    code[(p / 64) as usize] = 1 << (63 - p % 64);
                    let inside = p >= c.start && p < c.start + c.width;
                    assert_eq!(c.of(&code).count_ones(), u32::from(inside));
                }
            }
            assert!(seen.iter().all(|&s| s == 1));
        }
        assert!(PdqIndexConfig {
            tables: 8,
            inline_codes: true,
        }
        .chunks()
        .is_err());
    }

    #[test]
    fn masks_enumerate_combinations() {
        let mut n = 0;
        for_each_mask(16, 2, |m| {
            assert_eq!(m.count_ones(), 2);
            n += 1;
        });
        assert_eq!(n, 120);
        let mut zero = 0;
        for_each_mask(16, 0, |m| zero += m + 1);
        assert_eq!(zero, 1);
    }

    /// A full bucket borrows spare room from the next buckets in place; beyond the window's
    /// spare room the batch does not fit (and the caller rebuilds the table).
    #[test]
    fn full_buckets_borrow_room_from_neighbours() {
        for inline in [false, true] {
            borrow_room(inline);
        }
    }

    /// Every entry's inline code is the first half of its slot's code.
    fn assert_inline_codes(table: &Table, storage: &Storage) {
        for b in 0..(1u32 << table.chunk.width) {
            let [start, len] = table.dir[b as usize];
            for i in start as usize..(start + len) as usize {
                assert_eq!(&table.lo[i], storage.lo(table.arena[i]), "bucket {b}");
            }
        }
    }

    fn borrow_room(inline: bool) {
        let chunk = Chunk {
            start: 0,
            width: 16,
        };
        let mut storage = Storage::default();
        // Buckets 10, 11, 12 hold one entry each (slots 0..3); every bucket gets 2 spare.
        for (slot, key) in [10u64, 11, 12].iter().enumerate() {
            storage.set(slot as u32, [key << 48, slot as u64, 0, 0], slot as u64);
        }
        let mut table = Table::build(chunk, inline, &storage, 3, &mut BuildScratch::default());
        assert_eq!(table.capacity(10), 3);
        // Seven more into bucket 10 (4 over its room) plus one into 12.
        let mut adds: Vec<(u32, u32)> = (100..107).map(|s| (10, s)).collect();
        adds.push((12, 200));
        adds.sort_unstable();
        for &(key, slot) in &adds {
            storage.set(slot, [u64::from(key) << 48, u64::from(slot), 0, 0], 0);
        }
        let removes = [(11u32, 1u32)];
        assert!(table.fits(&removes, &adds));
        table.patch(&removes, &adds, &storage);
        let sorted = |b: &[u32]| {
            let mut v = b.to_vec();
            v.sort_unstable();
            v
        };
        assert_eq!(
            sorted(table.bucket(10)),
            vec![0, 100, 101, 102, 103, 104, 105, 106]
        );
        assert_eq!(table.bucket(11), &[] as &[u32]);
        assert_eq!(sorted(table.bucket(12)), vec![2, 200]);
        for b in 0..(1u32 << 16) {
            assert!(table.dir[b as usize][1] <= table.capacity(b));
            if ![10, 12].contains(&b) {
                assert!(table.bucket(b).is_empty(), "bucket {b}");
            }
        }
        if inline {
            assert_inline_codes(&table, &storage);
        }
        // The next 64 buckets have 2 spare each (less what was lent): 200 more do not fit.
        let many: Vec<(u32, u32)> = (1000..1200).map(|s| (10, s)).collect();
        assert!(!table.fits(&[], &many));
        // At the last bucket nothing follows.
        let end: Vec<(u32, u32)> = (0..3).map(|s| (u16::MAX as u32, 5000 + s)).collect();
        assert!(!table.fits(&[], &end));
        // A rebuild keeps the inline codes too.
        let rebuilt = table.rebuilt(&[(10, 100)], &[(11, 1)], &[0, 1 << (100 - 64)], &storage);
        assert_eq!(sorted(rebuilt.bucket(11)), vec![1]);
        if inline {
            assert_inline_codes(&rebuilt, &storage);
        }
    }

    #[test]
    fn cached_masks_match_gosper() {
        for w in [1, 16, 19, 20, 24] {
            for j in 0..=CACHED_ONES {
                let mut v = Vec::new();
                for_each_mask(w, j, |m| v.push(m));
                assert_eq!(cached_masks(w, j), Some(v.as_slice()));
            }
        }
        assert_eq!(cached_masks(16, CACHED_ONES + 1), None);
    }

    /// The automatic layout switches on bulk builds (a big batch into an empty index, a
    /// snapshot load) and answers exactly like a scan in both layouts.
    #[test]
    fn automatic_layout_follows_bulk_size() {
        let codes = random_codes(70_000, 0x1234_5678_9abc_def0);
        let small = PdqIndex {
            wide_from: 70_000,
            ..PdqIndex::new()
        };
        assert_eq!(small.config(), PdqIndexConfig::default());
        assert!(small.config().inline_codes);
        small.apply(&[PdqOp::Insert(codes[0], 0)]);
        small.apply(&[PdqOp::Remove(codes[0], 0)]);
        small.apply(&inserts(&codes, 0));
        assert_eq!(small.config(), PdqIndexConfig::for_len(usize::MAX));
        assert!(!small.config().inline_codes);
        let check = |index: &PdqIndex| {
            for (i, q) in codes.iter().step_by(9_999).enumerate() {
                let mut q = *q;
                q[i % 4] ^= (1u64 << (i * 7 % 64)) | 0xf0f0;
                for t in [0, 9, 30, 31, 32, 40] {
                    let want = brute_force(&codes, |_| true, &q, t);
                    assert_eq!(index.query(&q, t), want, "threshold {t}");
                }
            }
        };
        check(&small);
        let dir = std::env::temp_dir().join(format!("omm-index-auto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auto.snap");
        small.write_snapshot(&path, 5).unwrap();
        let reloaded = PdqIndex {
            wide_from: 1_000_000,
            ..PdqIndex::new()
        };
        assert_eq!(reloaded.load_snapshot(&path).unwrap(), 5);
        assert_eq!(reloaded.config(), PdqIndexConfig::default());
        check(&reloaded);
        let fixed = PdqIndex::with_config(PdqIndexConfig {
            tables: 20,
            inline_codes: false,
        })
        .unwrap();
        fixed.load_snapshot(&path).unwrap();
        assert_eq!(fixed.config().tables, 20);
        check(&fixed);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Deterministic random codes for the layout tests (xorshift; `seed` must not be 0).
    fn random_codes(n: usize, seed: u64) -> Vec<Code256> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n).map(|_| [next(), next(), next(), next()]).collect()
    }

    /// Inserts of `codes` with ids `first_id`, `first_id + 1`, ...
    fn inserts(codes: &[Code256], first_id: usize) -> Vec<PdqOp> {
        codes
            .iter()
            .enumerate()
            .map(|(i, &c)| PdqOp::Insert(c, (first_id + i) as u64))
            .collect()
    }

    /// What a query must return: the pairs (code, index in `stored`) within `t` of `q`, for
    /// the indexes where `live`, sorted.
    fn brute_force(
        stored: &[Code256],
        live: impl Fn(usize) -> bool,
        q: &Code256,
        t: u32,
    ) -> Vec<Hit> {
        let mut want: Vec<Hit> = stored
            .iter()
            .enumerate()
            .filter(|&(id, c)| live(id) && hamming(c, q) <= t)
            .map(|(id, c)| Hit {
                distance: hamming(c, q),
                id: id as u64,
            })
            .collect();
        want.sort_unstable();
        want
    }

    /// Every query agrees with a scan of `stored` (pairs (code, index in `stored`) where
    /// `live`).
    fn assert_exact(index: &PdqIndex, stored: &[Code256], live: impl Fn(usize) -> bool) {
        for (i, q) in stored.iter().step_by(997).enumerate() {
            let mut q = *q;
            q[i % 4] ^= 0x0f0f_0000_0000_00ff;
            for t in [0, 12, 31, 32] {
                let want = brute_force(stored, &live, &q, t);
                assert_eq!(index.query(&q, t), want, "threshold {t}");
            }
        }
    }

    /// An automatic index grown by small batches (with removes, so that some slots are free)
    /// past its cut-off by a quarter switches to the wide layout, and stays exact.
    #[test]
    fn growth_by_small_batches_switches_to_the_wide_layout() {
        let codes = random_codes(30_000, 77);
        let index = PdqIndex {
            wide_from: 20_000,
            ..PdqIndex::new()
        };
        let removed = |id: usize| id % 10 == 3;
        for (b, batch) in codes.chunks(1_000).enumerate() {
            let first = b * 1_000;
            let mut ops = inserts(batch, first);
            ops.extend(
                (first..first + batch.len())
                    .filter(|&id| removed(id))
                    .map(|id| PdqOp::Remove(codes[id], id as u64)),
            );
            index.apply(&ops);
            let len = index.len();
            assert_eq!(
                index.config().inline_codes,
                len < 25_000,
                "{len} entries after batch {b}"
            );
        }
        assert_eq!(index.config(), PdqIndexConfig::for_len(usize::MAX));
        assert_exact(&index, &codes, |id| !removed(id));
        // Ordinary changes keep working in the new layout.
        let ops: Vec<PdqOp> = (0..codes.len())
            .step_by(5)
            .map(|id| PdqOp::Remove(codes[id], id as u64))
            .collect();
        index.apply(&ops);
        assert_exact(&index, &codes, |id| !removed(id) && id % 5 != 0);
        // A fixed layout never switches.
        let fixed = PdqIndex::with_config(PdqIndexConfig::default()).unwrap();
        for batch in codes.chunks(5_000) {
            let ops: Vec<PdqOp> = batch.iter().map(|&c| PdqOp::Insert(c, 0)).collect();
            fixed.apply(&ops);
        }
        assert_eq!(fixed.config(), PdqIndexConfig::default());
    }

    /// Queries running while a growing index switches layout keep finding every entry that was
    /// stored before they started, exactly once.
    #[test]
    fn queries_stay_exact_while_the_layout_switches() {
        let codes = random_codes(16_000, 31);
        let index = PdqIndex {
            wide_from: 8_000,
            ..PdqIndex::new()
        };
        let (stable, growth) = codes.split_at(2_000);
        index.apply(&inserts(stable, 0));
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut checked = 0usize;
                let mut out = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) || checked < 500 {
                    let id = checked * 7 % stable.len();
                    let mut q = stable[id];
                    q[checked % 4] ^= 0x0101_0000_0000_1000;
                    out.clear();
                    index.query_into(&q, 31, &mut out);
                    let seen = out.iter().filter(|h| h.id == id as u64).count();
                    assert_eq!(seen, 1, "entry {id} seen {seen} times");
                    checked += 1;
                }
            });
            for (b, batch) in growth.chunks(500).enumerate() {
                index.apply(&inserts(batch, stable.len() + b * 500));
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
        });
        assert!(
            !index.config().inline_codes,
            "grown past 10,000: wide layout"
        );
        assert_exact(&index, &codes, |_| true);
    }

    /// A bulk load picks the layout for its final size, whatever the batch sizes were.
    #[test]
    fn bulk_load_mode_takes_the_layout_for_the_final_size() {
        let codes = random_codes(30_000, 5);
        for (wide_from, inline) in [(25_000, false), (40_000, true)] {
            let index = PdqIndex {
                wide_from,
                ..PdqIndex::new()
            };
            assert!(index.begin_bulk_load());
            for (b, batch) in codes.chunks(3_000).enumerate() {
                index.apply(&inserts(batch, b * 3_000));
            }
            index.finish_bulk_load();
            assert_eq!(index.config().inline_codes, inline);
            assert_exact(&index, &codes, |_| true);
        }
    }

    #[test]
    fn radii_follow_the_tight_pigeonhole_form() {
        let inner = Inner::new(&PdqIndexConfig::default().layout().unwrap());
        assert_eq!(inner.radii(31), vec![1; 16]);
        let r = inner.radii(20);
        assert_eq!(&r[..5], &[1; 5]);
        assert_eq!(&r[5..], &[0; 11]);
        let r = inner.radii(3);
        assert_eq!(&r[..4], &[0; 4]);
        assert!(r[4..].iter().all(|&x| x == -1));
    }
}
