//! NMEA 0183: `RMC` and `GGA` sentences from any talker as fixes.
//!
//! NMEA has no unit identity, so a stream names its unit first with the
//! proprietary sentence `$PBLU,ID,<unit id>*hh`; position sentences before
//! it are refused as `no_unit`. A checksum, when present, must match
//! (`bad_checksum`). `RMC` gives the time and date, position, speed (knots)
//! and course; `GGA` the time of day, position, fix quality and HDOP. A
//! receiver sends both each second: they are merged into one fix (RMC's
//! date, speed and course with GGA's accuracy), so a unit moves once a
//! second, not twice. A void `RMC` (status `V`, or mode `N`) and a `GGA`
//! of quality 0 are refused as `no_fix`. Other sentences (`GSV`, `GSA`,
//! `VTG`, ...) are well-formed but carry nothing we keep: they are passed
//! over and counted as ignored.
//!
//! Accuracy is HDOP times [`UERE_M`]: NMEA gives no error in metres, and a
//! dispatcher needs one (a unit with HDOP 20 is not where its dot is).
//!
//! [`NmeaSession`] keeps the state of one stream (a TCP connection, or one
//! UDP datagram): the unit, and the half of a pair that waits for the
//! other. Nothing is allocated per sentence.

use bluelight_engine::{Fix, Status};
use thiserror::Error;

use crate::batch::{IngestBatch, UnitRef};
use crate::calendar::{DAY_MS, days_from_civil, nearest_time_of_day};
use crate::validate::{Reject, ValidationConfig};

/// Metres of error per unit of HDOP: a typical receiver's user equivalent
/// range error (about 5 m for a civil single-frequency receiver).
pub const UERE_M: f32 = 5.0;

/// Knots to metres a second.
const KNOT_MPS: f32 = 1852.0 / 3600.0;

/// Longest unit id `$PBLU` may name, bytes.
pub const MAX_UNIT_ID: usize = 64;

/// Why a sentence was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NmeaError {
    /// Not an NMEA sentence (no leading `$`, a bad checksum field, ...).
    #[error("not an NMEA sentence: {0}")]
    Malformed(&'static str),
    /// The checksum does not match the sentence.
    #[error("NMEA checksum {sent:02X} does not match the sentence ({computed:02X})")]
    Checksum {
        /// The checksum the sentence carries.
        sent: u8,
        /// The checksum of its text.
        computed: u8,
    },
    /// A field that does not read as its type.
    #[error("NMEA {sentence} field {field} unreadable")]
    Field {
        /// The sentence type.
        sentence: &'static str,
        /// The field's name.
        field: &'static str,
    },
    /// A void RMC or a GGA of quality 0: the receiver has no position.
    #[error("the receiver reports no fix")]
    NoFix,
    /// A position before `$PBLU` named the unit.
    #[error("no unit named yet: send $PBLU,ID,<unit id> first")]
    NoUnit,
}

impl NmeaError {
    /// The refusal counted for it.
    pub fn reason(&self) -> Reject {
        match self {
            NmeaError::Malformed(_) => Reject::BadFrame,
            NmeaError::Checksum { .. } => Reject::BadChecksum,
            NmeaError::Field { .. } => Reject::BadField,
            NmeaError::NoFix => Reject::NoFix,
            NmeaError::NoUnit => Reject::NoUnit,
        }
    }
}

/// What a line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sentence {
    /// Blank.
    Empty,
    /// `$PBLU`: the stream's unit.
    Unit,
    /// An RMC or GGA: a fix, now or with its pair.
    Position,
    /// Well-formed, but nothing we keep.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rmc,
    Gga,
}

/// Half of an RMC/GGA pair, waiting for the other half.
#[derive(Debug, Clone, Copy)]
struct Held {
    kind: Kind,
    fix: Fix,
    index: u32,
}

/// The state of one NMEA stream.
#[derive(Debug, Default)]
pub struct NmeaSession {
    /// The unit named by `$PBLU`.
    unit: Option<String>,
    /// A fix waiting for its pair (only once both kinds have been seen:
    /// a receiver that sends RMC alone is not held up).
    held: Option<Held>,
    /// Whether this stream has sent RMC, and GGA.
    seen: [bool; 2],
    /// The time of the last fix emitted: the late half of a pair whose
    /// first half went alone is dropped, not refused as a duplicate.
    last_time_ms: Option<i64>,
    /// Hold every position for its pair: the whole input is at hand (a
    /// datagram), so waiting costs nothing.
    whole: bool,
}

impl NmeaSession {
    /// A new stream, with no unit named.
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream whose whole input is at hand (a UDP datagram): every
    /// position waits for its pair, and [`flush`](Self::flush) at the end
    /// sends what is left.
    pub fn whole() -> Self {
        Self {
            whole: true,
            ..Self::default()
        }
    }

    /// Whether a fix waits for its pair: the caller flushes it if the pair
    /// does not come soon.
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Reads one line (with or without its `\r`). A fix it completes goes
    /// into `out` (a fix that fails validation into `out.errors` with
    /// `index`).
    ///
    /// # Errors
    /// A sentence refused: [`NmeaError::reason`] names the count.
    pub fn line(
        &mut self,
        line: &[u8],
        index: u32,
        v: &ValidationConfig,
        now_ms: i64,
        out: &mut IngestBatch,
    ) -> Result<Sentence, NmeaError> {
        let mut fields = [&[][..]; MAX_FIELDS];
        let n = match split_sentence(line, &mut fields)? {
            0 => return Ok(Sentence::Empty),
            n => n,
        };
        let fields = &fields[..n];
        let address = fields[0];
        if address == b"PBLU" {
            return self.name_unit(fields, v, now_ms, out);
        }
        let kind = match address {
            [t1, t2, b'R', b'M', b'C'] if t1.is_ascii_uppercase() && t2.is_ascii_uppercase() => Kind::Rmc,
            [t1, t2, b'G', b'G', b'A'] if t1.is_ascii_uppercase() && t2.is_ascii_uppercase() => Kind::Gga,
            _ if !address.is_empty() && address.iter().all(u8::is_ascii_alphanumeric) => {
                return Ok(Sentence::Ignored);
            }
            _ => return Err(NmeaError::Malformed("bad address field")),
        };
        let fix = match kind {
            Kind::Rmc => rmc(fields)?,
            Kind::Gga => gga(fields, now_ms)?,
        };
        if self.unit.is_none() {
            return Err(NmeaError::NoUnit);
        }
        self.position(kind, fix, index, v, now_ms, out);
        Ok(Sentence::Position)
    }

    /// Emits the fix waiting for its pair, if any.
    pub fn flush(&mut self, v: &ValidationConfig, now_ms: i64, out: &mut IngestBatch) {
        if let Some(h) = self.held.take() {
            self.emit(h.fix, h.index, v, now_ms, out);
        }
    }

    fn name_unit(
        &mut self,
        fields: &[&[u8]],
        v: &ValidationConfig,
        now_ms: i64,
        out: &mut IngestBatch,
    ) -> Result<Sentence, NmeaError> {
        let field = NmeaError::Field {
            sentence: "PBLU",
            field: "unit id",
        };
        if fields.get(1) != Some(&&b"ID"[..]) {
            return Err(field);
        }
        let id = fields
            .get(2)
            .and_then(|f| std::str::from_utf8(f).ok())
            .map(str::trim)
            .filter(|id| !id.is_empty() && id.len() <= MAX_UNIT_ID && !id.chars().any(char::is_control))
            .ok_or(field)?;
        if self.unit.as_deref() != Some(id) {
            // What waits belongs to the unit named before.
            self.flush(v, now_ms, out);
            self.unit = Some(id.to_owned());
            self.last_time_ms = None;
        }
        Ok(Sentence::Unit)
    }

    fn position(
        &mut self,
        kind: Kind,
        fix: Fix,
        index: u32,
        v: &ValidationConfig,
        now_ms: i64,
        out: &mut IngestBatch,
    ) {
        self.seen[kind as usize] = true;
        if self.held.is_none() && self.last_time_ms == Some(fix.time_ms) {
            // The second half of a pair whose first went alone.
            return;
        }
        if let Some(h) = self.held.take() {
            if h.kind != kind && h.fix.time_ms == fix.time_ms {
                let (rmc, gga) = if kind == Kind::Rmc {
                    (fix, h.fix)
                } else {
                    (h.fix, fix)
                };
                let merged = Fix {
                    accuracy_m: gga.accuracy_m,
                    ..rmc
                };
                self.emit(merged, h.index, v, now_ms, out);
                return;
            }
            self.emit(h.fix, h.index, v, now_ms, out);
        }
        let other = match kind {
            Kind::Rmc => Kind::Gga,
            Kind::Gga => Kind::Rmc,
        };
        if self.whole || self.seen[other as usize] {
            self.held = Some(Held { kind, fix, index });
        } else {
            self.emit(fix, index, v, now_ms, out);
        }
    }

    fn emit(&mut self, mut fix: Fix, index: u32, v: &ValidationConfig, now_ms: i64, out: &mut IngestBatch) {
        let Some(unit) = self.unit.as_deref() else {
            return;
        };
        self.last_time_ms = Some(fix.time_ms);
        if let Err(r) = v.check(&fix, now_ms) {
            out.errors.push((index, r));
            return;
        }
        out.measurements_cleared += fix.clear_out_of_range();
        let id = out.push_text(unit);
        out.fixes.push((UnitRef::Id(id), fix));
        out.index.push(index);
    }
}

/// Fields of a sentence read (the rest are ignored: RMC has 13, GGA 14).
const MAX_FIELDS: usize = 16;

/// Checks a line's checksum (when it has one) and splits the text between
/// `$` and `*` into `fields`, in one pass; returns how many (0 for a blank
/// line).
#[inline]
fn split_sentence<'a>(line: &'a [u8], fields: &mut [&'a [u8]; MAX_FIELDS]) -> Result<usize, NmeaError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(0);
    }
    let Some(rest) = line.strip_prefix(b"$") else {
        return Err(NmeaError::Malformed("no leading $"));
    };
    // The checksum, if any, is the line's last three bytes.
    let end = match rest.len().checked_sub(3) {
        Some(star) if rest[star] == b'*' => star,
        _ if rest.contains(&b'*') => return Err(NmeaError::Malformed("checksum is not two hex digits")),
        _ => rest.len(),
    };
    let body = &rest[..end];
    if end < rest.len() {
        let sent = hex(rest[end + 1])
            .zip(hex(rest[end + 2]))
            .map(|(h, l)| h << 4 | l)
            .ok_or(NmeaError::Malformed("checksum is not two hex digits"))?;
        let computed = xor_all(body);
        if sent != computed {
            return Err(NmeaError::Checksum { sent, computed });
        }
    }
    let (mut n, mut start) = (0, 0);
    for_each_comma(body, |comma| {
        if n < MAX_FIELDS - 1 {
            fields[n] = &body[start..comma];
            n += 1;
            start = comma + 1;
        }
    });
    fields[n] = body.get(start..).unwrap_or_default();
    n += 1;
    if end == 0 {
        return Err(NmeaError::Malformed("empty"));
    }
    Ok(n)
}

/// Calls `f` with the place of each `,`, in order, finding them eight bytes
/// at a time (fields are a few bytes long: a vector search per field cost
/// more than it saved).
#[inline]
fn for_each_comma(bytes: &[u8], mut f: impl FnMut(usize)) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const COMMAS: u64 = 0x2c2c_2c2c_2c2c_2c2c;
    let mut at = 0;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w) ^ COMMAS;
        // The top bit of each byte of x that is zero (exact, no carries
        // between bytes).
        let mut zeros = !(((x & LOW7) + LOW7) | x | LOW7);
        while zeros != 0 {
            f(at + zeros.trailing_zeros() as usize / 8);
            zeros &= zeros - 1;
        }
        at += 8;
    }
    for (i, b) in chunks.remainder().iter().enumerate() {
        if *b == b',' {
            f(at + i);
        }
    }
}

/// The XOR of all bytes, eight at a time.
#[inline]
fn xor_all(bytes: &[u8]) -> u8 {
    let mut chunks = bytes.chunks_exact(8);
    let mut word = 0u64;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        word ^= u64::from_ne_bytes(w);
    }
    let folded = word.to_ne_bytes().iter().fold(0u8, |a, b| a ^ b);
    chunks.remainder().iter().fold(folded, |a, b| a ^ b)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn field<'a>(fields: &[&'a [u8]], i: usize) -> &'a [u8] {
    fields.get(i).copied().unwrap_or_default()
}

/// A non-negative decimal (`123.4567`): its whole part, the digits after
/// the point as a number, and how many there are. NMEA's numbers, read
/// without a float parser (a third of the time of a sentence went there).
#[inline]
fn decimal(f: &[u8]) -> Option<(u64, u64, usize)> {
    let (mut whole, mut frac, mut scale, mut count, mut point) = (0u64, 0u64, 0usize, 0, false);
    for &b in f {
        match b {
            b'0'..=b'9' if count < 18 => {
                let d = u64::from(b - b'0');
                if point {
                    frac = frac * 10 + d;
                    scale += 1;
                } else {
                    whole = whole * 10 + d;
                }
                count += 1;
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    (count > 0).then_some((whole, frac, scale))
}

/// 10^n as integers, n < 19 (decimal reads at most 18 digits); each is
/// also exact as an `f64` (5^18 < 2^53).
const POW10_INT: [u64; 19] = {
    let mut table = [1; 19];
    let mut i = 1;
    while i < 19 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `RECIP10[n]` is 10^-n and `RECIP600[n]` is 1 / (60 × 10^n), each
/// rounded once: a multiplication in place of a division, within an ulp
/// or two of it (a division's latency was most of a coordinate's time).
const RECIP10: [f64; 19] = {
    let mut table = [1.0; 19];
    let mut i = 0;
    while i < 19 {
        table[i] = 1.0 / POW10_INT[i] as f64;
        i += 1;
    }
    table
};
const RECIP600: [f64; 19] = {
    let mut table = [1.0; 19];
    let mut i = 0;
    while i < 19 {
        table[i] = 1.0 / (60.0 * POW10_INT[i] as f64);
        i += 1;
    }
    table
};

#[inline]
fn number(f: &[u8]) -> Option<f64> {
    let (whole, frac, scale) = decimal(f)?;
    Some(whole as f64 + frac as f64 * RECIP10[scale])
}

fn integer(f: &[u8]) -> Option<u8> {
    match decimal(f)? {
        (n, _, 0) => u8::try_from(n).ok(),
        _ => None,
    }
}

/// `hhmmss` or `hhmmss.sss` as milliseconds since midnight.
#[inline]
fn time_of_day(f: &[u8]) -> Option<i64> {
    if f.len() < 6 || !f[..6].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let two = |i: usize| i64::from(f[i] - b'0') * 10 + i64::from(f[i + 1] - b'0');
    let (h, m, s) = (two(0), two(2), two(4));
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let frac_ms = match &f[6..] {
        [] => 0,
        [b'.', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            // Milliseconds: the first three digits, missing ones as zeros.
            let digit = |i: usize| digits.get(i).map_or(0, |d| i64::from(d - b'0'));
            digit(0) * 100 + digit(1) * 10 + digit(2)
        }
        _ => return None,
    };
    Some(((h * 60 + m) * 60 + s) * 1000 + frac_ms)
}

/// `ddmmyy` as days since the epoch (years 2000–2099).
#[inline]
fn date_days(f: &[u8]) -> Option<i64> {
    if f.len() != 6 || !f.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let two = |i: usize| i64::from(f[i] - b'0') * 10 + i64::from(f[i + 1] - b'0');
    let (d, m, y) = (two(0), two(2), two(4));
    if !(1..=31).contains(&d) || !(1..=12).contains(&m) {
        return None;
    }
    Some(days_from_civil(2000 + y, m, d))
}

/// `ddmm.mmmm` (latitude, `max_deg` 90) or `dddmm.mmmm` (longitude, 180)
/// with its hemisphere, in degrees; `Ok(None)` when the field is empty.
#[inline]
fn coordinate(
    value: &[u8],
    hemisphere: &[u8],
    positive: u8,
    negative: u8,
    max_deg: f64,
) -> Result<Option<f64>, ()> {
    if value.is_empty() {
        return Ok(None);
    }
    let (whole, frac, scale) = decimal(value).ok_or(())?;
    // dddmm.mmmm: whole degrees, then the minutes in units of 10^-scale
    // (exact: at most 18 digits in all, so under 10^19).
    let degrees = whole / 100;
    let minutes = (whole % 100) * POW10_INT[scale] + frac;
    if minutes >= POW10_INT[scale].saturating_mul(60) {
        return Err(());
    }
    let deg = degrees as f64 + minutes as f64 * RECIP600[scale];
    if deg > max_deg {
        return Err(());
    }
    match hemisphere {
        [h] if *h == positive => Ok(Some(deg)),
        [h] if *h == negative => Ok(Some(-deg)),
        _ => Err(()),
    }
}

/// The position of an RMC (fields 3–6) or GGA (fields 2–5).
#[inline]
fn lat_lon(fields: &[&[u8]], at: usize, sentence: &'static str) -> Result<(f64, f64), NmeaError> {
    let bad = |field| NmeaError::Field { sentence, field };
    let lat = coordinate(field(fields, at), field(fields, at + 1), b'N', b'S', 90.0)
        .map_err(|()| bad("latitude"))?;
    let lon = coordinate(field(fields, at + 2), field(fields, at + 3), b'E', b'W', 180.0)
        .map_err(|()| bad("longitude"))?;
    lat.zip(lon).ok_or(NmeaError::NoFix)
}

/// `$--RMC,time,status,lat,N,lon,E,knots,course,ddmmyy,magvar,E[,mode[,navstatus]]`
#[inline]
fn rmc(fields: &[&[u8]]) -> Result<Fix, NmeaError> {
    let bad = |field| NmeaError::Field {
        sentence: "RMC",
        field,
    };
    if field(fields, 2) != b"A" || field(fields, 12) == b"N" {
        return Err(NmeaError::NoFix);
    }
    let tod = time_of_day(field(fields, 1)).ok_or(bad("time"))?;
    let days = date_days(field(fields, 9)).ok_or(bad("date"))?;
    let (lat, lon) = lat_lon(fields, 3, "RMC")?;
    let speed = field(fields, 7);
    let course = field(fields, 8);
    Ok(Fix {
        time_ms: days * DAY_MS + tod,
        lat,
        lon,
        accuracy_m: f32::NAN,
        speed_mps: if speed.is_empty() {
            f32::NAN
        } else {
            number(speed).ok_or(bad("speed"))? as f32 * KNOT_MPS
        },
        heading_deg: if course.is_empty() {
            f32::NAN
        } else {
            number(course).ok_or(bad("course"))? as f32
        },
        status: Status::Unknown,
    })
}

/// `$--GGA,time,lat,N,lon,E,quality,satellites,hdop,altitude,M,separation,M,age,station`
#[inline]
fn gga(fields: &[&[u8]], now_ms: i64) -> Result<Fix, NmeaError> {
    let bad = |field| NmeaError::Field {
        sentence: "GGA",
        field,
    };
    let quality = integer(field(fields, 6)).ok_or(bad("quality"))?;
    if quality == 0 {
        return Err(NmeaError::NoFix);
    }
    let tod = time_of_day(field(fields, 1)).ok_or(bad("time"))?;
    let (lat, lon) = lat_lon(fields, 2, "GGA")?;
    let hdop = field(fields, 8);
    Ok(Fix {
        time_ms: nearest_time_of_day(tod, now_ms),
        lat,
        lon,
        accuracy_m: if hdop.is_empty() {
            f32::NAN
        } else {
            number(hdop).ok_or(bad("hdop"))? as f32 * UERE_M
        },
        speed_mps: f32::NAN,
        heading_deg: f32::NAN,
        status: Status::Unknown,
    })
}

/// Appends the NMEA checksum (`*hh`) and CRLF to a sentence that starts
/// with `$`: for tests, benches and examples.
pub fn with_checksum(sentence: &str) -> String {
    let body = sentence.strip_prefix('$').unwrap_or(sentence);
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2025-11-21 10:15:30 UTC.
    const T: i64 = 1_763_720_130_000;

    fn feed(
        s: &mut NmeaSession,
        lines: &[&str],
        now: i64,
    ) -> (IngestBatch, Vec<Result<Sentence, NmeaError>>) {
        let mut out = IngestBatch::default();
        let v = ValidationConfig::default();
        let results = lines
            .iter()
            .enumerate()
            .map(|(i, l)| s.line(l.as_bytes(), i as u32, &v, now, &mut out))
            .collect();
        (out, results)
    }

    fn named() -> NmeaSession {
        let mut s = NmeaSession::new();
        let (_, r) = feed(&mut s, &[&with_checksum("$PBLU,ID,AMB-104")], T);
        assert_eq!(r, vec![Ok(Sentence::Unit)]);
        s
    }

    #[test]
    fn the_textbook_rmc_and_gga_merge_into_one_fix() {
        // The classic examples of the NMEA references, on our test date.
        let rmc = |t: &str| {
            with_checksum(&format!(
                "$GPRMC,{t},A,4807.038,N,01131.000,E,022.4,084.4,211125,003.1,W"
            ))
        };
        let gga = |t: &str| {
            with_checksum(&format!(
                "$GPGGA,{t},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
            ))
        };
        let mut s = named();
        // The first second: RMC goes at once (no GGA seen yet), its GGA is
        // the late half and is dropped.
        let (out, r) = feed(&mut s, &[&rmc("101530.00"), &gga("101530.00")], T + 500);
        assert_eq!(r, vec![Ok(Sentence::Position), Ok(Sentence::Position)]);
        assert_eq!(out.fixes.len(), 1);
        let f = out.fixes[0].1;
        assert_eq!(f.time_ms, T);
        assert!((f.lat - (48.0 + 7.038 / 60.0)).abs() < 1e-12);
        assert!((f.lon - (11.0 + 31.0 / 60.0)).abs() < 1e-12);
        assert!((f.speed_mps - 22.4 * 1852.0 / 3600.0).abs() < 1e-4);
        assert_eq!(f.heading_deg, 84.4);
        assert!(out.errors.is_empty(), "the late half is no duplicate");
        // The next second, both kinds known: one fix with all of it.
        let (out, _) = feed(&mut s, &[&rmc("101531.00")], T + 1500);
        assert!(out.fixes.is_empty(), "RMC waits for its GGA");
        assert!(s.holds());
        let (out, _) = feed(&mut s, &[&gga("101531.00")], T + 1500);
        assert_eq!(out.fixes.len(), 1);
        let f = out.fixes[0].1;
        assert_eq!(f.time_ms, T + 1000);
        assert_eq!(f.accuracy_m, 0.9 * UERE_M, "GGA's HDOP");
        assert_eq!(f.heading_deg, 84.4, "RMC's course");
        assert!(!s.holds());
    }

    #[test]
    fn gga_first_then_rmc_merge_and_a_lone_half_is_flushed() {
        let mut s = named();
        let v = ValidationConfig::default();
        let gga = |t: &str| {
            with_checksum(&format!(
                "$GNGGA,{t},5130.000,N,00007.500,W,2,12,1.2,35.0,M,47.0,M,,"
            ))
        };
        let rmc = |t: &str| {
            with_checksum(&format!(
                "$GNRMC,{t},A,5130.000,N,00007.500,W,10.0,270.0,211125,,,D"
            ))
        };
        let (out, _) = feed(
            &mut s,
            &[&gga("101530"), &rmc("101530"), &gga("101531"), &rmc("101531")],
            T + 1200,
        );
        assert_eq!(out.fixes.len(), 2);
        assert_eq!(out.fixes[1].1.accuracy_m, 6.0);
        assert_eq!(out.fixes[1].1.heading_deg, 270.0);
        assert!(out.fixes[0].1.lon < 0.0, "W is negative");
        // A GGA whose RMC never comes is flushed alone, dated by the server's day.
        let (mut out, _) = feed(&mut s, &[&gga("101532")], T + 2100);
        assert!(out.fixes.is_empty() && s.holds());
        s.flush(&v, T + 2400, &mut out);
        assert_eq!(out.fixes.len(), 1);
        assert_eq!(out.fixes[0].1.time_ms, T + 2000);
        assert!(out.fixes[0].1.speed_mps.is_nan());
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let mut s = NmeaSession::new();
        let rmc = with_checksum("$GPRMC,101530,A,5130.000,N,00007.500,W,0.0,,211125,,");
        let (_, r) = feed(&mut s, &[&rmc], T);
        assert_eq!(r[0].as_ref().map_err(NmeaError::reason), Err(Reject::NoUnit));
        let mut s = named();
        let cases = [
            (
                "$GPRMC,101530,A,5130.000,N,00007.500,W,0.0,,211125,,*00",
                Reject::BadChecksum,
            ),
            (
                "$GPRMC,101530,A,5130.000,N,00007.500,W,0.0,,211125,,*G1",
                Reject::BadFrame,
            ),
            (
                "GPRMC,101530,A,5130.000,N,00007.500,W,0.0,,211125,,",
                Reject::BadFrame,
            ),
            ("\u{0}\u{1}garbage", Reject::BadFrame),
            ("$GPRMC,101530,V,,,,,,,211125,,", Reject::NoFix),
            (
                "$GPRMC,101530,A,5130.000,N,00007.500,W,0.0,,211125,,,N",
                Reject::NoFix,
            ),
            ("$GPGGA,101530,,,,,0,00,99.9,,,,,,", Reject::NoFix),
            (
                "$GPRMC,251530,A,5130.000,N,00007.500,W,0.0,,211125,,",
                Reject::BadField,
            ),
            (
                "$GPRMC,101530,A,5190.000,N,00007.500,W,0.0,,211125,,",
                Reject::BadField,
            ),
            (
                "$GPRMC,101530,A,5130.000,X,00007.500,W,0.0,,211125,,",
                Reject::BadField,
            ),
            (
                "$GPRMC,101530,A,5130.000,N,00007.500,W,fast,,211125,,",
                Reject::BadField,
            ),
            (
                "$GPRMC,101530,A,5130.000,N,00007.500,W,0.0,,311325,,",
                Reject::BadField,
            ),
            ("$PBLU,NAME,x", Reject::BadField),
            ("$PBLU,ID,", Reject::BadField),
        ];
        for (line, reason) in cases {
            let line = if line.contains('*') || !line.starts_with('$') {
                line.to_owned()
            } else {
                with_checksum(line)
            };
            let (out, r) = feed(&mut s, &[&line], T);
            assert_eq!(r[0].as_ref().map_err(NmeaError::reason), Err(reason), "{line}");
            assert!(out.fixes.is_empty());
        }
        let (_, r) = feed(
            &mut s,
            &[
                &with_checksum("$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00"),
                "",
                "\r",
            ],
            T,
        );
        assert_eq!(
            r,
            vec![Ok(Sentence::Ignored), Ok(Sentence::Empty), Ok(Sentence::Empty)]
        );
    }

    #[test]
    fn a_sentence_without_checksum_is_taken_and_validation_applies() {
        let mut s = named();
        let (out, r) = feed(
            &mut s,
            &["$GPRMC,101530,A,5130.000,N,00007.500,W,0.0,,211125,,\r"],
            T,
        );
        assert_eq!(r, vec![Ok(Sentence::Position)]);
        assert_eq!(out.fixes.len(), 1);
        // A day old: refused by validation (too_old), recorded with its index.
        let (out, _) = feed(
            &mut s,
            &["$GPRMC,101530,A,5130.000,N,00007.500,W,0.0,,201125,,"],
            T,
        );
        assert_eq!(out.errors, vec![(0, Reject::TooOld)]);
    }

    #[test]
    fn a_new_unit_flushes_what_the_old_one_held() {
        let mut s = named();
        let v = ValidationConfig::default();
        let gga = with_checksum("$GPGGA,101530,5130.000,N,00007.500,W,1,08,1.0,35.0,M,47.0,M,,");
        let rmc = with_checksum("$GPRMC,101531,A,5130.000,N,00007.500,W,0.0,,211125,,");
        let mut out = IngestBatch::default();
        for l in [&gga, &rmc] {
            s.line(l.as_bytes(), 0, &v, T + 1000, &mut out).expect("line");
        }
        // GGA went alone (no RMC seen yet); both kinds seen, the RMC waits.
        assert_eq!(out.fixes.len(), 1);
        assert!(s.holds());
        // An RMC of another second sends the one waiting, and waits itself.
        let rmc2 = with_checksum("$GPRMC,101532,A,5130.000,N,00007.500,W,0.0,,211125,,");
        s.line(rmc2.as_bytes(), 0, &v, T + 2000, &mut out).expect("line");
        assert_eq!(out.fixes.len(), 2);
        assert!(s.holds());
        // Naming a unit flushes it under the unit it came from.
        s.line(
            with_checksum("$PBLU,ID,FIRE-7").as_bytes(),
            0,
            &v,
            T + 2000,
            &mut out,
        )
        .expect("unit");
        assert_eq!(out.fixes.len(), 3);
        assert!(matches!(&out.fixes[2].0, UnitRef::Id(r) if out.str(r) == "AMB-104"));
    }

    proptest! {
        #[test]
        fn commas_are_found_as_a_byte_search_finds_them(bytes in proptest::collection::vec(prop_oneof![Just(b','), any::<u8>()], 0..64)) {
            let mut found = Vec::new();
            for_each_comma(&bytes, |i| found.push(i));
            let expected: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == b',').map(|(i, _)| i).collect();
            prop_assert_eq!(found, expected);
        }
    }

    proptest! {
        #[test]
        fn a_coordinate_reads_as_degrees_plus_minutes_over_sixty(degrees in 0u64..=179, minutes in 0u64..60, frac in any::<u64>(), digits in 0usize..=13, west in any::<bool>()) {
            // NMEA numbers are read up to 18 digits: 5 before the point.
            let frac = if digits == 0 { String::new() } else { format!(".{:0digits$}", frac % 10u64.pow(digits as u32)) };
            let text = format!("{degrees:03}{minutes:02}{frac}");
            let expected = degrees as f64 + text[3..].parse::<f64>().unwrap_or(f64::NAN) / 60.0;
            let hemisphere: &[u8] = if west { b"W" } else { b"E" };
            let got = coordinate(text.as_bytes(), hemisphere, b'E', b'W', 180.0).map(|d| d.map(f64::abs));
            // Within a few ulps of the float parse.
            prop_assert!(matches!(got, Ok(Some(d)) if (d - expected).abs() <= expected * 1e-15 + 1e-15), "{text}: {got:?} vs {expected}");
            prop_assert_eq!(coordinate(text.as_bytes(), hemisphere, b'E', b'W', 180.0).map(|d| d.map(f64::is_sign_negative)), Ok(Some(west && expected != 0.0)));
        }
    }

    #[test]
    fn coordinates_at_the_edges() {
        let c = |v: &str, max: f64| coordinate(v.as_bytes(), b"N", b'N', b'S', max);
        assert_eq!(c("9000.0000", 90.0), Ok(Some(90.0)));
        assert_eq!(c("9000.0001", 90.0), Err(()), "past the pole");
        assert_eq!(c("8960.0000", 90.0), Err(()), "sixty minutes");
        assert_eq!(c("18000", 180.0), Ok(Some(180.0)));
        assert_eq!(c("18100", 180.0), Err(()));
        assert_eq!(c("99999999999999999", 180.0), Err(()), "huge whole degrees");
        assert!(
            matches!(c(".000000000000000001", 90.0), Ok(Some(d)) if d < 1e-19),
            "eighteen digits after the point"
        );
        assert!(matches!(c("5130.5", 90.0), Ok(Some(d)) if (d - (51.0 + 30.5 / 60.0)).abs() < 1e-13));
        assert_eq!(c("", 90.0), Ok(None));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn random_and_mutated_lines_never_panic(cut in any::<usize>(), junk in proptest::collection::vec(any::<u8>(), 0..12), bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let good = with_checksum("$GNRMC,101530.25,A,5130.000,N,00007.500,W,10.0,270.0,211125,,,D");
            let good = good.as_bytes();
            let at = cut % good.len();
            let mut mutated = good[..at].to_vec();
            mutated.extend_from_slice(&junk);
            mutated.extend_from_slice(&good[at..]);
            let mut s = named();
            let v = ValidationConfig::default();
            let mut out = IngestBatch::default();
            let _ = s.line(&mutated, 0, &v, T, &mut out);
            let _ = s.line(&bytes, 1, &v, T, &mut out);
            // The good sentence after garbage still counts.
            let mut s = named();
            let mut out = IngestBatch::default();
            let _ = s.line(&bytes, 0, &v, T, &mut out);
            prop_assert_eq!(s.line(good, 1, &v, T, &mut out), Ok(Sentence::Position));
        }
    }
}
