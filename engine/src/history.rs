//! Recent history: every accepted fix, kept by device time in one-minute
//! buckets, bounded by a retention window and a fix count.
//!
//! A late fix goes into the bucket of its own time, so reads by time window
//! see it in its time place. A bucket is a list of fixed-size chunks, so an
//! append never copies what is held (a minute at 200k fixes/s is 12M fixes:
//! one growing `Vec` would move hundreds of MB with the engine locked).
//! Emptied chunks are recycled, so steady-state appends rarely allocate.

use std::collections::VecDeque;

use crate::history_log::HistoryLog;
use crate::model::{Fix, UnitSlot};

/// Width of a bucket, milliseconds.
const BUCKET_MS: i64 = 60_000;

/// Records per chunk (about 0.8 MB).
const CHUNK: usize = 16_384;

/// Spare chunks kept for reuse (about 50 MB).
const SPARE_CHUNKS: usize = 64;

/// Fresh chunks [`History::prepare`] keeps ready: a chunk lasts about 80 ms
/// at 200k fixes/s, and the writer idles far more often than that.
const READY_CHUNKS: usize = 2;

/// Records [`History::prepare`] writes in one call (about 56 KB): the
/// kernel zeroes new pages slowly on some machines (a whole chunk took up
/// to 3.5 ms on the bench VM), and a query or batch that arrives during a
/// step waits for it.
const PREPARE_STEP: usize = 1024;

/// Memory for history's records, readied (its pages written, so faulted
/// in) by a thread other than the engine's: a replay that reads the
/// journal on one core readies the memory the engine fills on the other,
/// and the kernel's zeroing of fresh pages (a tenth of a replay) leaves the
/// engine's core. Hand it over with [`crate::Engine::give_history_memory`].
#[derive(Debug)]
pub struct HistoryMemory(Vec<HistoryRecord>);

impl HistoryMemory {
    /// Records one holds.
    pub const RECORDS: usize = CHUNK;

    /// Allocates and writes one chunk's memory.
    pub fn ready() -> Self {
        let blank = HistoryRecord {
            unit: UnitSlot(0),
            fix: Fix::at(0, 0.0, 0.0),
        };
        let mut c = vec![blank; CHUNK];
        c.clear();
        Self(c)
    }
}

/// One fix of one unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryRecord {
    /// The unit.
    pub unit: UnitSlot,
    /// The fix.
    pub fix: Fix,
}

#[derive(Debug)]
struct Bucket {
    start_ms: i64,
    /// Full chunks of `CHUNK` records, then one partly filled.
    chunks: Vec<Vec<HistoryRecord>>,
}

impl Bucket {
    /// Records held (every chunk but the last is full).
    fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    fn records(&self) -> impl Iterator<Item = &HistoryRecord> {
        self.chunks.iter().flatten()
    }
}

/// Where [`History::copy_slice`] goes on from: a bucket (by its start)
/// and a record in it. Buckets only grow at the end, so a record's place
/// stays put while the bucket lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    bucket_ms: i64,
    index: usize,
}

impl HistoryCursor {
    /// From the start.
    pub fn new() -> Self {
        Self {
            bucket_ms: i64::MIN,
            index: 0,
        }
    }
}

impl Default for HistoryCursor {
    fn default() -> Self {
        Self::new()
    }
}

/// History counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Fixes held.
    pub held: usize,
    /// Fixes dropped because the cap was reached.
    pub dropped_cap: u64,
    /// Fixes expired by retention.
    pub expired: u64,
}

/// The history store.
#[derive(Debug)]
pub(crate) struct History {
    buckets: VecDeque<Bucket>,
    retention_ms: i64,
    max_fixes: usize,
    stats: HistoryStats,
    /// Empty chunks with capacity `CHUNK`.
    spare: Vec<Vec<HistoryRecord>>,
    /// The chunk [`History::prepare`] is writing, a step at a time.
    preparing: Option<Vec<HistoryRecord>>,
    /// What it took since the log was last taken, while a journal makes
    /// history durable (see `history_log`).
    log: Option<HistoryLog>,
}

impl History {
    pub fn new(retention_s: u32, max_fixes: usize) -> Self {
        Self {
            buckets: VecDeque::new(),
            retention_ms: i64::from(retention_s) * 1000,
            max_fixes,
            stats: HistoryStats::default(),
            spare: Vec::new(),
            preparing: None,
            log: None,
        }
    }

    /// Appends a fix (and logs it, while logging).
    pub fn push(&mut self, unit: UnitSlot, fix: &Fix) {
        // A log is only started when history keeps fixes.
        if let Some(log) = &mut self.log {
            log.push(unit, fix);
        }
        self.push_unlogged(unit, fix);
    }

    /// Whether it keeps fixes at all.
    pub fn keeps(&self) -> bool {
        self.max_fixes > 0
    }

    /// Starts logging, unless it already is.
    pub fn start_log(&mut self) {
        if self.max_fixes > 0 && self.log.is_none() {
            self.log = Some(HistoryLog::default());
        }
    }

    /// The log so far, and a fresh one from here; with `whole`, every
    /// record held, oldest bucket first, instead.
    pub fn take_log(&mut self, whole: bool) -> HistoryLog {
        let taken = self.log.take().unwrap_or_default();
        self.start_log();
        if !whole {
            return taken;
        }
        let mut all = HistoryLog::default();
        for r in self.buckets.iter().flat_map(Bucket::records) {
            all.push(r.unit, &r.fix);
        }
        all
    }

    /// Appends a fix without logging it.
    pub fn push_unlogged(&mut self, unit: UnitSlot, fix: &Fix) {
        if self.max_fixes == 0 {
            return;
        }
        let start = fix.time_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let idx = match self.buckets.back() {
            Some(b) if b.start_ms == start => self.buckets.len() - 1,
            _ => match self.buckets.binary_search_by_key(&start, |b| b.start_ms) {
                Ok(i) => i,
                Err(i) => {
                    self.buckets.insert(
                        i,
                        Bucket {
                            start_ms: start,
                            chunks: Vec::new(),
                        },
                    );
                    i
                }
            },
        };
        let b = &mut self.buckets[idx];
        if b.chunks.last().is_none_or(|c| c.len() >= CHUNK) {
            // A partly prepared chunk is still partly faulted in.
            let fresh = self.spare.pop().or_else(|| self.preparing.take()).map_or_else(
                || Vec::with_capacity(CHUNK),
                |mut c| {
                    c.clear();
                    c
                },
            );
            b.chunks.push(fresh);
        }
        if let Some(c) = b.chunks.last_mut() {
            c.push(HistoryRecord { unit, fix: *fix });
            self.stats.held += 1;
        }
        while self.stats.held > self.max_fixes {
            let Some(b) = self.buckets.pop_front() else { break };
            self.stats.held -= b.len();
            self.stats.dropped_cap += b.len() as u64;
            self.recycle(b);
        }
    }

    /// Readies fresh chunks when few are spare, [`PREPARE_STEP`] records a
    /// call: their memory is written here, so the page faults of a growing
    /// history (the kernel zeroing each new page on first touch, a few
    /// percent of the writer) happen when the caller chooses, not in the
    /// middle of a batch of fixes. Returns whether it did anything.
    pub fn prepare(&mut self) -> bool {
        if self.max_fixes == 0 || self.spare.len() >= READY_CHUNKS {
            return false;
        }
        let blank = HistoryRecord {
            unit: UnitSlot(0),
            fix: Fix::at(0, 0.0, 0.0),
        };
        let c = self.preparing.get_or_insert_with(|| Vec::with_capacity(CHUNK));
        c.resize((c.len() + PREPARE_STEP).min(CHUNK), blank);
        if c.len() >= CHUNK
            && let Some(mut c) = self.preparing.take()
        {
            c.clear();
            self.spare.push(c);
        }
        true
    }

    /// Keeps readied memory for the next chunks (up to the spare cap; the
    /// rest is freed).
    pub fn give(&mut self, m: HistoryMemory) {
        if self.max_fixes > 0 && self.spare.len() < SPARE_CHUNKS && m.0.capacity() >= CHUNK {
            self.spare.push(m.0);
        }
    }

    fn recycle(&mut self, b: Bucket) {
        for mut c in b.chunks {
            if self.spare.len() >= SPARE_CHUNKS {
                break;
            }
            c.clear();
            self.spare.push(c);
        }
    }

    /// Drops buckets wholly older than the retention window.
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start_ms + BUCKET_MS <= cutoff)
        {
            if let Some(b) = self.buckets.pop_front() {
                self.stats.held -= b.len();
                self.stats.expired += b.len() as u64;
                self.recycle(b);
            }
        }
    }

    /// First and last bucket bounds held (device time), if any.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        Some((
            self.buckets.front()?.start_ms,
            self.buckets.back()?.start_ms + BUCKET_MS - 1,
        ))
    }

    /// Fixes held in the buckets overlapping `[from_ms, to_ms]`: an upper
    /// bound of what a query over that window returns, found without reading
    /// a record.
    pub fn count_upper_bound(&self, from_ms: i64, to_ms: i64) -> usize {
        self.buckets
            .iter()
            .filter(|b| b.start_ms + BUCKET_MS > from_ms && b.start_ms <= to_ms)
            .map(Bucket::len)
            .sum()
    }

    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    /// Copies into `out`, unsorted, the records in `[from_ms, to_ms]` for
    /// which `keep` holds, going on from `cursor` and reading at most
    /// `budget` records: a caller holding the engine for it holds it a
    /// bounded time, then calls again. Returns whether it reached the end.
    pub fn copy_slice(
        &self,
        from_ms: i64,
        to_ms: i64,
        mut keep: impl FnMut(&HistoryRecord) -> bool,
        cursor: &mut HistoryCursor,
        budget: usize,
        out: &mut Vec<HistoryRecord>,
    ) -> bool {
        let mut read = 0;
        for b in &self.buckets {
            if b.start_ms + BUCKET_MS <= from_ms || b.start_ms > to_ms || b.start_ms < cursor.bucket_ms {
                continue;
            }
            if b.start_ms > cursor.bucket_ms {
                // A new bucket (or the one the cursor was in has gone).
                *cursor = HistoryCursor {
                    bucket_ms: b.start_ms,
                    index: 0,
                };
            }
            let len = b.len();
            while cursor.index < len {
                if read >= budget {
                    return false;
                }
                let (c, i) = (cursor.index / CHUNK, cursor.index % CHUNK);
                let chunk = &b.chunks[c];
                let end = chunk.len().min(i + (budget - read));
                for r in &chunk[i..end] {
                    if r.fix.time_ms >= from_ms && r.fix.time_ms <= to_ms && keep(r) {
                        out.push(*r);
                    }
                }
                read += end - i;
                cursor.index += end - i;
            }
            // Past this bucket: a later call starts at the next one.
            cursor.bucket_ms = b.start_ms + 1;
            cursor.index = 0;
        }
        true
    }

    /// Calls `f` once per bucket overlapping `[from_ms, to_ms]` with its
    /// matching records sorted by time (then unit), oldest bucket first. So
    /// the whole output is in time order, and a caller can stream it bucket by
    /// bucket.
    pub fn for_each_chunk(
        &self,
        from_ms: i64,
        to_ms: i64,
        mut keep: impl FnMut(&HistoryRecord) -> bool,
        mut f: impl FnMut(&[HistoryRecord]),
    ) {
        let mut chunk: Vec<HistoryRecord> = Vec::new();
        for b in &self.buckets {
            if b.start_ms + BUCKET_MS <= from_ms || b.start_ms > to_ms {
                continue;
            }
            chunk.clear();
            chunk.extend(
                b.records()
                    .filter(|r| r.fix.time_ms >= from_ms && r.fix.time_ms <= to_ms && keep(r)),
            );
            chunk.sort_by_key(|r| (r.fix.time_ms, r.unit));
            if !chunk.is_empty() {
                f(&chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_fix_is_read_back_in_its_time_place() {
        let mut h = History::new(3600, 1000);
        h.push(UnitSlot(1), &Fix::at(200_000, 1.0, 1.0));
        h.push(UnitSlot(1), &Fix::at(100_000, 1.0, 1.0));
        h.push(UnitSlot(1), &Fix::at(150_000, 1.0, 1.0));
        let mut times = Vec::new();
        h.for_each_chunk(
            0,
            i64::MAX,
            |_| true,
            |c| times.extend(c.iter().map(|r| r.fix.time_ms)),
        );
        assert_eq!(times, vec![100_000, 150_000, 200_000]);
    }

    #[test]
    fn a_bucket_of_many_chunks_reads_back_every_fix_in_time_order() {
        let n = CHUNK * 2 + 123;
        let mut h = History::new(3600, 10 * n);
        // Within one minute, times descending, so order must come from the read.
        for i in 0..n {
            h.push(
                UnitSlot(i as u32),
                &Fix::at(59_999 - (i as i64 % 60_000), 1.0, 1.0),
            );
        }
        assert_eq!(h.stats().held, n);
        assert_eq!(h.count_upper_bound(0, 59_999), n);
        let mut times = Vec::new();
        h.for_each_chunk(
            0,
            i64::MAX,
            |_| true,
            |c| times.extend(c.iter().map(|r| r.fix.time_ms)),
        );
        assert_eq!(times.len(), n);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // Dropping the bucket at the cap recycles its chunks for the next.
        let mut small = History::new(3600, CHUNK + 1);
        for i in 0..=CHUNK {
            small.push(UnitSlot(1), &Fix::at(i as i64, 1.0, 1.0));
        }
        small.push(UnitSlot(1), &Fix::at(60_000, 1.0, 1.0));
        assert_eq!(small.stats().dropped_cap, CHUNK as u64 + 1);
        assert_eq!(small.stats().held, 1);
        assert!(!small.spare.is_empty());
    }

    #[test]
    fn prepared_chunks_are_used_before_new_ones() {
        let mut h = History::new(3600, 10 * CHUNK);
        let mut steps = 0;
        while h.prepare() {
            steps += 1;
            // Each call writes at most a step.
            let written = h.spare.len() * CHUNK + h.preparing.as_ref().map_or(0, Vec::len);
            assert_eq!(written, steps * PREPARE_STEP);
        }
        assert_eq!(steps * PREPARE_STEP, READY_CHUNKS * CHUNK);
        assert_eq!(h.spare.len(), READY_CHUNKS);
        assert!(h.spare.iter().all(|c| c.is_empty() && c.capacity() >= CHUNK));
        h.push(UnitSlot(1), &Fix::at(0, 1.0, 1.0));
        assert_eq!(h.spare.len(), READY_CHUNKS - 1);
        // With none spare, a chunk part-way through preparing is used, emptied.
        let mut h = History::new(3600, 10 * CHUNK);
        assert!(h.prepare());
        h.push(UnitSlot(1), &Fix::at(0, 1.0, 1.0));
        assert!(h.preparing.is_none());
        assert_eq!(h.buckets[0].chunks[0].len(), 1);
        // A history that keeps nothing prepares nothing.
        assert!(!History::new(3600, 0).prepare());
    }

    #[test]
    fn memory_readied_elsewhere_is_used_for_the_next_chunks() {
        let mut h = History::new(3600, 10 * CHUNK);
        let m = HistoryMemory::ready();
        let at = m.0.as_ptr();
        h.give(m);
        h.push(UnitSlot(1), &Fix::at(0, 1.0, 1.0));
        assert_eq!(
            h.buckets[0].chunks[0].as_ptr(),
            at,
            "the given chunk holds the first record"
        );
        // Past the spare cap, or with no history kept, it is not kept.
        for _ in 0..SPARE_CHUNKS + 3 {
            h.give(HistoryMemory::ready());
        }
        assert_eq!(h.spare.len(), SPARE_CHUNKS);
        let mut none = History::new(3600, 0);
        none.give(HistoryMemory::ready());
        assert!(none.spare.is_empty());
    }

    #[test]
    fn cap_drops_oldest_first_and_counts() {
        let mut h = History::new(3600, 2);
        h.push(UnitSlot(1), &Fix::at(0, 1.0, 1.0));
        h.push(UnitSlot(1), &Fix::at(60_000, 1.0, 1.0));
        h.push(UnitSlot(1), &Fix::at(120_000, 1.0, 1.0));
        assert_eq!(h.stats().dropped_cap, 1);
        let mut times = Vec::new();
        h.for_each_chunk(
            0,
            i64::MAX,
            |_| true,
            |c| times.extend(c.iter().map(|r| r.fix.time_ms)),
        );
        assert_eq!(times, vec![60_000, 120_000]);
    }

    #[test]
    fn slices_of_any_budget_copy_what_a_query_reads() {
        let mut h = History::new(3600, 1_000_000);
        // Three buckets, chunks crossed, a late fix into the first.
        for i in 0..(CHUNK as i64 * 2 + 500) {
            h.push(UnitSlot((i % 7) as u32), &Fix::at(i * 5, 1.0, 1.0));
        }
        h.push(UnitSlot(3), &Fix::at(10, 1.0, 1.0));
        let keep = |r: &HistoryRecord| r.unit.0 != 2;
        let (from, to) = (1_000, 150_000);
        let mut want = Vec::new();
        h.for_each_chunk(from, to, keep, |c| want.extend_from_slice(c));
        for budget in [1, 999, CHUNK, CHUNK + 1, usize::MAX] {
            let mut got = Vec::new();
            let mut cursor = HistoryCursor::new();
            let mut calls = 0;
            while !h.copy_slice(from, to, keep, &mut cursor, budget, &mut got) {
                calls += 1;
                assert!(calls < 1_000_000, "no progress at budget {budget}");
            }
            got.sort_by_key(|r| (r.fix.time_ms, r.unit));
            // By key: unknown measurements are NaN, never equal to themselves.
            let key = |v: &[HistoryRecord]| v.iter().map(|r| (r.unit, r.fix.time_ms)).collect::<Vec<_>>();
            assert!(
                key(&got) == key(&want),
                "budget {budget}: {} of {} records",
                got.len(),
                want.len()
            );
        }
    }

    #[test]
    fn retention_expires_old_buckets() {
        let mut h = History::new(60, 100);
        h.push(UnitSlot(1), &Fix::at(0, 1.0, 1.0));
        h.push(UnitSlot(1), &Fix::at(200_000, 1.0, 1.0));
        h.expire(200_000);
        assert_eq!(h.stats().held, 1);
        assert_eq!(h.stats().expired, 1);
    }
}
