//! History made durable a piece at a time: the fixes history took since the
//! last snapshot, handed over with it and written beside it as a segment.
//!
//! History is too large to go into every snapshot (20M fixes is about
//! 800 MB) and cannot be rebuilt from the journal (which fixes history
//! kept depends on the state they met, and the journal behind a snapshot is
//! trimmed). So while a leader journals, history also appends every record
//! it takes to a [`HistoryLog`]; each snapshot takes the log (a move, not a
//! copy) and writes it as one segment. Start-up loads the segments the
//! snapshot lists, oldest first, then replays the journal after it.
//!
//! Segment format: `MAGIC`, a record count (u32), then each record as unit
//! slot (u32), time (i64), lat and lon (f64), accuracy, speed and heading
//! (f32, NaN unknown) and status (u8): 41 bytes, little-endian, exact.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::history::HistoryRecord;
use crate::model::{Fix, Status, UnitSlot};

const MAGIC: &[u8; 8] = b"BLHIST01";

/// Bytes of one record in a segment.
const RECORD: usize = 41;

/// Records per chunk of a log (about 0.8 MB): a log grows by chunks, so a
/// long one is never moved to grow.
const CHUNK: usize = 16_384;

/// Records history took, in the order it took them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HistoryLog {
    chunks: Vec<Vec<HistoryRecord>>,
    len: usize,
    newest_ms: Option<i64>,
}

impl HistoryLog {
    pub(crate) fn push(&mut self, unit: UnitSlot, fix: &Fix) {
        if self.chunks.last().is_none_or(|c| c.len() >= CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(HistoryRecord { unit, fix: *fix });
            self.len += 1;
            self.newest_ms = Some(self.newest_ms.map_or(fix.time_ms, |t| t.max(fix.time_ms)));
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The latest device time of any record: the segment can go once
    /// retention has passed it.
    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// The records, in order.
    pub fn records(&self) -> impl Iterator<Item = &HistoryRecord> {
        self.chunks.iter().flatten()
    }

    /// The segment's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MAGIC.len() + 4 + self.len * RECORD);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&u32::try_from(self.len).unwrap_or(u32::MAX).to_le_bytes());
        for r in self.records().take(u32::MAX as usize) {
            let f = &r.fix;
            b.extend_from_slice(&r.unit.0.to_le_bytes());
            b.extend_from_slice(&f.time_ms.to_le_bytes());
            b.extend_from_slice(&f.lat.to_le_bytes());
            b.extend_from_slice(&f.lon.to_le_bytes());
            b.extend_from_slice(&f.accuracy_m.to_le_bytes());
            b.extend_from_slice(&f.speed_mps.to_le_bytes());
            b.extend_from_slice(&f.heading_deg.to_le_bytes());
            b.push(f.status as u8);
        }
        b
    }
}

/// Reads a segment's records, checking each against what the engine holds.
fn decode(bytes: &[u8], units: usize, mut f: impl FnMut(UnitSlot, &Fix)) -> Result<usize, EngineError> {
    let bad = |why: String| EngineError::Snapshot(format!("history segment: {why}"));
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("not a history segment (bad magic)".into()))?;
    let (n, body) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("truncated before its count".into()))?;
    let n = u32::from_le_bytes(*n) as usize;
    if body.len() != n * RECORD {
        return Err(bad(format!(
            "{n} records need {} bytes, it has {}",
            n * RECORD,
            body.len()
        )));
    }
    for (i, r) in body.chunks_exact(RECORD).enumerate() {
        let u32_at = |at: usize| u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        let unit = u32_at(0);
        let fix = Fix {
            time_ms: u64_at(4) as i64,
            lat: f64::from_bits(u64_at(12)),
            lon: f64::from_bits(u64_at(20)),
            accuracy_m: f32::from_bits(u32_at(28)),
            speed_mps: f32::from_bits(u32_at(32)),
            heading_deg: f32::from_bits(u32_at(36)),
            status: Status::from_u8(r[40]),
        };
        if unit as usize >= units {
            return Err(bad(format!("record {i} names unit slot {unit} of {units}")));
        }
        if !(-90.0..=90.0).contains(&fix.lat) || !(-180.0..=180.0).contains(&fix.lon) {
            return Err(bad(format!("record {i} has an invalid position")));
        }
        f(UnitSlot(unit), &fix);
    }
    Ok(n)
}

impl Engine {
    /// Starts (or keeps) logging what history takes, for
    /// [`Engine::take_history_log`].
    pub fn log_history(&mut self) {
        self.history.start_log();
    }

    /// What history took since the last call (a move), and logging from
    /// here. With `whole`, every record history holds instead (a copy, in
    /// the order that rebuilds the same buckets): for when the segments
    /// written so far are not known to be whole (a promoted follower, a
    /// snapshot Redis did not take).
    pub fn take_history_log(&mut self, whole: bool) -> HistoryLog {
        self.history.take_log(whole)
    }

    /// Puts a segment's records into history (not into the log: they are
    /// durable already). Returns how many.
    ///
    /// # Errors
    /// [`EngineError::Snapshot`] for bytes that are not a whole segment of
    /// this engine's units; nothing is added then.
    pub fn restore_history(&mut self, bytes: &[u8]) -> Result<usize, EngineError> {
        let units = self.units.state.len();
        decode(bytes, units, |_, _| {})?;
        decode(bytes, units, |u, f| self.history.push_unlogged(u, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    fn engine_with_units(n: usize) -> Engine {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        for i in 0..n {
            e.intern_unit(&format!("U{i}"));
        }
        e
    }

    fn times(e: &Engine) -> Vec<(u32, i64)> {
        let mut v = Vec::new();
        e.history(
            0,
            i64::MAX,
            |_| true,
            |c| v.extend(c.iter().map(|r| (r.unit.0, r.fix.time_ms))),
        );
        v
    }

    #[test]
    fn segments_taken_in_turn_rebuild_the_same_history() {
        let mut a = engine_with_units(3);
        let mut out = crate::Outputs::default();
        a.log_history();
        let mut segments = Vec::new();
        for i in 0..300i64 {
            let mut f = Fix::at(1_000_000 + i * 1000, 51.0 + i as f64 * 1e-4, -1.0);
            f.speed_mps = if i % 2 == 0 { f32::NAN } else { 3.5 };
            a.apply(UnitSlot((i % 3) as u32), &f, &mut out);
            if i % 100 == 99 {
                segments.push(a.take_history_log(false).encode());
            }
        }
        // A late fix goes to history too.
        a.apply(UnitSlot(0), &Fix::at(1_000_500, 51.0, -1.0), &mut out);
        segments.push(a.take_history_log(false).encode());
        let mut b = engine_with_units(3);
        let n: usize = segments
            .iter()
            .map(|s| b.restore_history(s).expect("restores"))
            .sum();
        assert_eq!(n, 301);
        assert_eq!(times(&a), times(&b));
        assert_eq!(a.history_stats().held, b.history_stats().held);
        // Records come back bit for bit, unknowns included.
        let mut fixes = Vec::new();
        b.history(0, i64::MAX, |_| true, |c| fixes.extend(c.iter().map(|r| r.fix)));
        assert_eq!(fixes.iter().filter(|f| f.speed_mps.is_nan()).count(), 151);
        assert_eq!(fixes.iter().filter(|f| f.speed_mps == 3.5).count(), 150);
        // Restored records are not logged again.
        assert!(b.take_history_log(false).is_empty());
    }

    #[test]
    fn a_whole_log_holds_every_record_and_logging_goes_on_from_there() {
        let mut a = engine_with_units(2);
        let mut out = crate::Outputs::default();
        for i in 0..50i64 {
            a.apply(
                UnitSlot((i % 2) as u32),
                &Fix::at(90_000 * i, 10.0, 10.0),
                &mut out,
            );
        }
        // Not logging yet: a plain take starts it and holds nothing.
        assert!(a.take_history_log(false).is_empty());
        let whole = a.take_history_log(true);
        assert_eq!(whole.len(), 50);
        assert_eq!(whole.newest_ms(), Some(90_000 * 49));
        a.apply(UnitSlot(0), &Fix::at(90_000 * 50, 10.0, 10.0), &mut out);
        assert_eq!(a.take_history_log(false).len(), 1);
        let mut b = engine_with_units(2);
        b.restore_history(&whole.encode()).expect("restores");
        assert_eq!(times(&b).len(), 50);
    }

    #[test]
    fn damaged_segments_are_refused_whole() {
        let mut a = engine_with_units(2);
        let mut out = crate::Outputs::default();
        a.log_history();
        a.apply(UnitSlot(1), &Fix::at(1000, 10.0, 10.0), &mut out);
        a.apply(UnitSlot(0), &Fix::at(2000, 10.0, 10.0), &mut out);
        let good = a.take_history_log(false).encode();
        let mut b = engine_with_units(1);
        let err = b.restore_history(&good).expect_err("slot 1 is not b's");
        assert!(err.to_string().contains("unit slot 1 of 1"), "{err}");
        assert!(times(&b).is_empty(), "nothing added from a refused segment");
        let mut c = engine_with_units(2);
        for cut in [0, 5, good.len() - 1] {
            assert!(c.restore_history(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = good.clone();
        wrong[0] = b'X';
        assert!(c.restore_history(&wrong).is_err());
        assert!(times(&c).is_empty());
    }
}
