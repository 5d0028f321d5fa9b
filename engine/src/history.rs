//! Recent history: every accepted fix, kept by device time in one-minute
//! buckets, bounded by a retention window and a fix count.
//!
//! A late fix goes into the bucket of its own time, so reads by time window
//! see it in its time place. Emptied buckets are recycled with their
//! capacity, so steady-state appends do not allocate.

use std::collections::VecDeque;

use crate::model::{Fix, UnitSlot};

/// Width of a bucket, milliseconds.
const BUCKET_MS: i64 = 60_000;

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
    records: Vec<HistoryRecord>,
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
    spare: Vec<Vec<HistoryRecord>>,
}

impl History {
    pub fn new(retention_s: u32, max_fixes: usize) -> Self {
        Self {
            buckets: VecDeque::new(),
            retention_ms: i64::from(retention_s) * 1000,
            max_fixes,
            stats: HistoryStats::default(),
            spare: Vec::new(),
        }
    }

    /// Appends a fix.
    pub fn push(&mut self, unit: UnitSlot, fix: &Fix) {
        if self.max_fixes == 0 {
            return;
        }
        let start = fix.time_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let idx = match self.buckets.back() {
            Some(b) if b.start_ms == start => self.buckets.len() - 1,
            _ => match self.buckets.binary_search_by_key(&start, |b| b.start_ms) {
                Ok(i) => i,
                Err(i) => {
                    let records = self.spare.pop().unwrap_or_default();
                    self.buckets.insert(
                        i,
                        Bucket {
                            start_ms: start,
                            records,
                        },
                    );
                    i
                }
            },
        };
        self.buckets[idx].records.push(HistoryRecord { unit, fix: *fix });
        self.stats.held += 1;
        while self.stats.held > self.max_fixes {
            let Some(b) = self.buckets.pop_front() else { break };
            self.stats.held -= b.records.len();
            self.stats.dropped_cap += b.records.len() as u64;
            self.recycle(b.records);
        }
    }

    fn recycle(&mut self, mut v: Vec<HistoryRecord>) {
        v.clear();
        if self.spare.len() < 4 {
            self.spare.push(v);
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
                self.stats.held -= b.records.len();
                self.stats.expired += b.records.len() as u64;
                self.recycle(b.records);
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
            .map(|b| b.records.len())
            .sum()
    }

    pub fn stats(&self) -> &HistoryStats {
        &self.stats
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
                b.records
                    .iter()
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
    fn retention_expires_old_buckets() {
        let mut h = History::new(60, 100);
        h.push(UnitSlot(1), &Fix::at(0, 1.0, 1.0));
        h.push(UnitSlot(1), &Fix::at(200_000, 1.0, 1.0));
        h.expire(200_000);
        assert_eq!(h.stats().held, 1);
        assert_eq!(h.stats().expired, 1);
    }
}
