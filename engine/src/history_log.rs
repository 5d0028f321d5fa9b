//! History made durable a piece at a time: the fixes history took since the
//! last snapshot, handed over with it and written beside it as a segment.
//!
//! History is too large to go into every snapshot (20M fixes is about
//! 400 MB even packed) and cannot be rebuilt from the journal (which fixes history
//! kept depends on the state they met, and the journal behind a snapshot is
//! trimmed). So while a leader journals, history also appends every record
//! it takes to a [`HistoryLog`]; each snapshot takes the log (a move, not a
//! copy) and writes it as one segment. Start-up loads the segments the
//! snapshot lists, oldest first, then replays the journal after it.
//!
//! Segment format: `MAGIC`, a record count (u32, little-endian), then each
//! record as
//!
//! * its unit slot, a varint;
//! * its time minus the record before's (zigzag varint): appends come
//!   nearly in time order, so a byte or two;
//! * a byte of two counts (latitude high nibble, longitude low) and that
//!   many low bytes of each coordinate's bits XOR the same unit's previous
//!   coordinate in the segment (a few metres on is the same sign, exponent
//!   and leading mantissa: five or six bytes, not eight);
//! * a byte of status (bits 0-2) and which of accuracy, speed and heading
//!   are known (bits 3-5), then each known one as an f32.
//!
//! About 17 bytes a fix where a plain record is 41; exact (unknowns come
//! back as NaN).

use crate::engine::Engine;
use crate::error::EngineError;
use crate::history::HistoryRecord;
use crate::model::{Fix, Status, UnitSlot};

const MAGIC: &[u8; 8] = b"BLHIST01";

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
        let mut b = Vec::with_capacity(MAGIC.len() + 4 + self.len * 20);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&u32::try_from(self.len).unwrap_or(u32::MAX).to_le_bytes());
        // Each unit's previous coordinates' bits, by slot.
        let mut prev: Vec<(u64, u64)> = Vec::new();
        let mut prev_time = 0i64;
        for r in self.records().take(u32::MAX as usize) {
            let f = &r.fix;
            let slot = r.unit.0 as usize;
            varint(&mut b, u64::from(r.unit.0));
            varint(&mut b, zigzag(f.time_ms.wrapping_sub(prev_time)));
            prev_time = f.time_ms;
            if prev.len() <= slot {
                prev.resize(slot + 1, (0, 0));
            }
            let (lat, lon) = (f.lat.to_bits(), f.lon.to_bits());
            let (dlat, dlon) = (lat ^ prev[slot].0, lon ^ prev[slot].1);
            prev[slot] = (lat, lon);
            let (nlat, nlon) = (significant_bytes(dlat), significant_bytes(dlon));
            b.push((nlat << 4) | nlon);
            b.extend_from_slice(&dlat.to_le_bytes()[..nlat as usize]);
            b.extend_from_slice(&dlon.to_le_bytes()[..nlon as usize]);
            let known = [f.accuracy_m, f.speed_mps, f.heading_deg].map(|v| !v.is_nan());
            let flags = (f.status as u8 & 7)
                | u8::from(known[0]) << 3
                | u8::from(known[1]) << 4
                | u8::from(known[2]) << 5;
            b.push(flags);
            for (v, k) in [f.accuracy_m, f.speed_mps, f.heading_deg].into_iter().zip(known) {
                if k {
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        b
    }
}

/// Bytes needed for `v` from its low end.
fn significant_bytes(v: u64) -> u8 {
    (8 - v.leading_zeros() / 8) as u8
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// Reads a segment front to back.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The low `n` bytes of a u64 (n <= 8).
    fn low_bytes(&mut self, n: u8) -> Option<u64> {
        let mut w = [0u8; 8];
        w.get_mut(..usize::from(n))?
            .copy_from_slice(self.bytes(usize::from(n))?);
        Some(u64::from_le_bytes(w))
    }

    fn f32(&mut self) -> Option<f32> {
        let b = self.bytes(4)?;
        Some(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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
    let mut c = Cursor { buf: body, pos: 0 };
    let mut prev: Vec<(u64, u64)> = Vec::new();
    let mut prev_time = 0i64;
    for i in 0..n {
        let truncated = || bad(format!("truncated in record {i} of {n}"));
        let unit = c.varint().ok_or_else(truncated)?;
        let slot = usize::try_from(unit).ok().filter(|&s| s < units);
        let Some(slot) = slot else {
            return Err(bad(format!("record {i} names unit slot {unit} of {units}")));
        };
        let time_ms = prev_time.wrapping_add(unzigzag(c.varint().ok_or_else(truncated)?));
        prev_time = time_ms;
        let counts = c.byte().ok_or_else(truncated)?;
        let (nlat, nlon) = (counts >> 4, counts & 15);
        if nlat > 8 || nlon > 8 {
            return Err(bad(format!("record {i} has a bad coordinate header")));
        }
        if prev.len() <= slot {
            prev.resize(slot + 1, (0, 0));
        }
        let lat = c.low_bytes(nlat).ok_or_else(truncated)? ^ prev[slot].0;
        let lon = c.low_bytes(nlon).ok_or_else(truncated)? ^ prev[slot].1;
        prev[slot] = (lat, lon);
        let flags = c.byte().ok_or_else(truncated)?;
        let mut measure = |bit: u8| -> Result<f32, EngineError> {
            if flags & (1 << bit) == 0 {
                Ok(f32::NAN)
            } else {
                c.f32().ok_or_else(truncated)
            }
        };
        let fix = Fix {
            time_ms,
            lat: f64::from_bits(lat),
            lon: f64::from_bits(lon),
            accuracy_m: measure(3)?,
            speed_mps: measure(4)?,
            heading_deg: measure(5)?,
            status: Status::from_u8(flags & 7),
        };
        if !(-90.0..=90.0).contains(&fix.lat) || !(-180.0..=180.0).contains(&fix.lon) {
            return Err(bad(format!("record {i} has an invalid position")));
        }
        f(UnitSlot(slot as u32), &fix);
    }
    if c.pos != body.len() {
        return Err(bad(format!("{} bytes after its {n} records", body.len() - c.pos)));
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

    fn any_fix() -> impl proptest::strategy::Strategy<Value = (u32, Fix)> {
        use proptest::prelude::*;
        let coord = prop_oneof![
            Just(0.0f64),
            Just(-0.0f64),
            Just(90.0f64),
            Just(-90.0f64),
            -90.0f64..=90.0
        ];
        let lon = prop_oneof![
            Just(180.0f64),
            Just(-180.0f64),
            Just(179.9999999),
            -180.0f64..=180.0
        ];
        let measure = prop_oneof![Just(f32::NAN), Just(0.0f32), 0.0f32..1000.0];
        (
            0u32..300,
            any::<i64>(),
            coord,
            lon,
            measure.clone(),
            measure.clone(),
            measure,
            0u8..6,
        )
            .prop_map(|(u, t, lat, lon, a, s, h, st)| {
                let mut f = Fix::at(t, lat, lon);
                f.accuracy_m = a;
                f.speed_mps = s;
                f.heading_deg = h;
                f.status = Status::from_u8(st);
                (u, f)
            })
    }

    proptest::proptest! {
        #[test]
        fn any_records_come_back_bit_for_bit(
            fixes in proptest::collection::vec(any_fix(), 0..400),
            walk in proptest::bool::ANY,
        ) {
            let mut log = HistoryLog::default();
            let mut last: std::collections::HashMap<u32, (f64, f64)> = Default::default();
            for (u, f) in &fixes {
                let mut f = *f;
                // Half the cases a unit walks a few metres at a time, as
                // units do: the short form of the coordinates.
                if walk && let Some(&(lat, lon)) = last.get(u) {
                    f.lat = (lat + (f.lat / 90.0) * 1e-4).clamp(-90.0, 90.0);
                    f.lon = (lon + (f.lon / 180.0) * 1e-4).clamp(-180.0, 180.0);
                }
                last.insert(*u, (f.lat, f.lon));
                log.push(UnitSlot(*u), &f);
            }
            let bytes = log.encode();
            let mut back = Vec::new();
            let n = decode(&bytes, 300, |u, f| back.push((u, *f))).expect("decodes");
            proptest::prop_assert_eq!(n, log.len());
            for (r, (u, f)) in log.records().zip(&back) {
                proptest::prop_assert_eq!(r.unit, *u);
                let bits = |f: &Fix| (f.time_ms, f.lat.to_bits(), f.lon.to_bits(), f.status as u8);
                proptest::prop_assert_eq!(bits(&r.fix), bits(f));
                for (a, b) in [(r.fix.accuracy_m, f.accuracy_m), (r.fix.speed_mps, f.speed_mps), (r.fix.heading_deg, f.heading_deg)] {
                    proptest::prop_assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                }
            }
        }

        #[test]
        fn damaged_bytes_are_an_error_never_a_panic(
            fixes in proptest::collection::vec(any_fix(), 1..50),
            cut in 0usize..2000,
            flips in proptest::collection::vec((0usize..2000, proptest::num::u8::ANY), 0..4),
        ) {
            let mut log = HistoryLog::default();
            for (u, f) in &fixes {
                log.push(UnitSlot(*u), f);
            }
            let mut bytes = log.encode();
            for (at, v) in flips {
                let at = at % bytes.len();
                bytes[at] ^= v;
            }
            let cut = cut.min(bytes.len());
            let _ = decode(&bytes[..cut], 300, |_, _| {});
            let _ = decode(&bytes, 300, |_, _| {});
        }
    }

    #[test]
    fn walking_units_take_about_seventeen_bytes_a_fix() {
        let bytes_a_fix = |measured: bool| {
            let mut log = HistoryLog::default();
            for i in 0..10_000i64 {
                let u = (i % 1000) as u32;
                let step = (i / 1000) as f64 * 1.3e-4;
                let mut f = Fix::at(T0 + i, 53.0 + f64::from(u) * 1e-3 + step, -1.5 + step);
                if measured {
                    f.speed_mps = 12.5;
                    f.heading_deg = 270.0;
                }
                log.push(UnitSlot(u), &f);
            }
            log.encode().len() as f64 / 10_000.0
        };
        let plain = bytes_a_fix(false);
        assert!(plain < 18.0, "{plain} bytes a fix");
        // Each known measurement adds its four bytes.
        let measured = bytes_a_fix(true);
        assert!((measured - plain - 8.0).abs() < 0.01, "{measured} vs {plain}");
    }

    const T0: i64 = 1_763_726_400_000;

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
