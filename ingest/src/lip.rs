//! TETRA Location Information Protocol (ETSI TS 100 392-18-1): the reports
//! Airwave and other TETRA radios send over short data, as fixes.
//!
//! A datagram (`--lip-udp`, from an SDS gateway) is the sender's ISSI as 3
//! bytes big-endian, then one LIP PDU; the unit is the one whose numeric
//! key is the ISSI. Two PDUs carry a position:
//!
//! * the **short location report** (PDU type 0, 76 bits): time elapsed,
//!   longitude (25 bits) and latitude (24 bits) in two's complement,
//!   position error, horizontal velocity, direction of travel (16 points),
//!   and the reason for sending or user data;
//! * the **long location report** (PDU type 1, extension 3): a time (time
//!   elapsed, or the day, hour, minute and second of the position), a
//!   location shape (point, circle, ellipse, with or without altitude, or
//!   point with position error), a velocity (with or without uncertainty,
//!   vertical velocity, direction of travel to 1.4°), then the reason.
//!
//! What each field becomes:
//!
//! * time: a time of position is resolved to the date with that day of
//!   the month nearest the server's clock; a time elapsed of "< 5 s",
//!   "not known", or no time at all is the time received; "< 5 min" and
//!   "< 30 min" are taken at their youngest (5 s and 5 min before it);
//! * accuracy: the position error's upper bound (2 m … 200 km; "> 200 km"
//!   is infinite, so a `max_accuracy_m` refuses it and a unit never shows
//!   it as a figure), a circle's uncertainty radius, an ellipse's half
//!   major axis; a point alone has none;
//! * speed: the standard's non-linear code (km/h, 0–28 linear, then
//!   16 × 1.038^(n−13) up to 1,043 km/h); "more than 1,043 km/h" and
//!   "not known" are unknown;
//! * the reason for sending "emergency condition detected" sets the
//!   unit's status to `emergency`; other reasons keep it.
//!
//! A location arc (a network's estimate round a base station, not where
//! the radio is) and reserved codes are refused as `unsupported`; a report
//! without a location (shape "none") as `no_fix`; other LIP PDUs (trigger
//! responses, acknowledgements) are well-formed but carry no position and
//! are passed over. A PDU cut short is a `bad_frame`.

use bluelight_engine::{Fix, Status};
use thiserror::Error;

use crate::batch::{IngestBatch, UnitRef};
use crate::calendar::{DAY_MS, civil_from_days, days_from_civil};
use crate::validate::{Reject, ValidationConfig};

/// Why a datagram was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LipError {
    /// Shorter than its fields say.
    #[error("LIP PDU cut short: {field} needs bit {need}, the datagram has {have}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bits needed to read it.
        need: usize,
        /// Bits in the datagram.
        have: usize,
    },
    /// A code this server does not place (reserved, or a location arc).
    #[error("LIP {0} not supported")]
    Unsupported(&'static str),
    /// A report without a location.
    #[error("LIP report without a location")]
    NoFix,
    /// A time of position that is no time (day 0, hour 24, ...).
    #[error("LIP time of position is not a time")]
    BadTime,
}

impl LipError {
    /// The refusal counted for it.
    pub fn reason(&self) -> Reject {
        match self {
            LipError::Truncated { .. } => Reject::BadFrame,
            LipError::Unsupported(_) => Reject::Unsupported,
            LipError::NoFix => Reject::NoFix,
            LipError::BadTime => Reject::BadField,
        }
    }
}

/// What a datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pdu {
    /// A location report: a fix (or, failing validation, an entry in
    /// `errors`).
    Location,
    /// Another LIP PDU, passed over.
    Ignored,
}

/// A decoded location report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocationReport {
    /// The sender.
    pub issi: u32,
    /// The fix (status `Emergency` for an emergency report, else `Unknown`).
    pub fix: Fix,
    /// The reason for sending, when the report carries one (not user data).
    pub reason: Option<u8>,
}

/// LIP's "reason for sending: emergency condition is detected".
pub const REASON_EMERGENCY: u8 = 2;

/// Decodes one datagram (ISSI, then a PDU) into `out`; `index` is its
/// number for per-fix errors.
///
/// # Errors
/// A datagram refused: [`LipError::reason`] names the count.
pub fn decode_lip(
    datagram: &[u8],
    index: u32,
    v: &ValidationConfig,
    now_ms: i64,
    out: &mut IngestBatch,
) -> Result<Pdu, LipError> {
    let Some(report) = read_report(datagram, now_ms)? else {
        return Ok(Pdu::Ignored);
    };
    let mut fix = report.fix;
    if let Err(r) = v.check(&fix, now_ms) {
        out.errors.push((index, r));
        return Ok(Pdu::Location);
    }
    out.measurements_cleared += fix.clear_out_of_range();
    out.fixes.push((UnitRef::Key(u64::from(report.issi)), fix));
    out.index.push(index);
    Ok(Pdu::Location)
}

/// Reads a datagram's location report; `None` for another LIP PDU.
///
/// # Errors
/// As [`decode_lip`].
#[inline]
pub fn read_report(datagram: &[u8], now_ms: i64) -> Result<Option<LocationReport>, LipError> {
    let mut bits = Bits::new(datagram);
    let issi = bits.take(24, "ISSI")?;
    let report = match bits.take(2, "PDU type")? {
        0 => short_report(&mut bits, now_ms)?,
        1 => match bits.take(4, "PDU type extension")? {
            3 => long_report(&mut bits, now_ms)?,
            0 | 2 | 13..=15 => return Err(LipError::Unsupported("reserved PDU type extension")),
            _ => return Ok(None),
        },
        _ => return Err(LipError::Unsupported("reserved PDU type")),
    };
    let (fix, reason) = report;
    Ok(Some(LocationReport { issi, fix, reason }))
}

/// Reads fields most significant bit first, as the air interface sends them.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The next `n` (≤ 32) bits as an unsigned number.
    #[inline]
    fn take(&mut self, n: usize, field: &'static str) -> Result<u32, LipError> {
        let have = self.data.len() * 8;
        if self.pos + n > have {
            return Err(LipError::Truncated {
                field,
                need: self.pos + n,
                have,
            });
        }
        if n == 0 {
            return Ok(0);
        }
        // One 8-byte load holds the field (at most 7 bits in, at most 32
        // long): the eight bytes from its first, or the datagram's last
        // eight when it ends sooner.
        let len = self.data.len();
        let from = (self.pos / 8).min(len.saturating_sub(8));
        let mut word = [0u8; 8];
        match self.data.get(from..from + 8) {
            Some(eight) => word.copy_from_slice(eight),
            None => word[..len - from].copy_from_slice(&self.data[from..]),
        }
        let shift = 64 - (self.pos - from * 8) - n;
        self.pos += n;
        Ok(((u64::from_be_bytes(word) >> shift) & ((1 << n) - 1)) as u32)
    }

    /// The next `n` bits as a two's complement number.
    fn take_signed(&mut self, n: usize, field: &'static str) -> Result<i32, LipError> {
        let v = self.take(n, field)?;
        let shift = 32 - n as u32;
        Ok(((v << shift) as i32) >> shift)
    }

    fn skip(&mut self, n: usize, field: &'static str) -> Result<(), LipError> {
        let have = self.data.len() * 8;
        if self.pos + n > have {
            return Err(LipError::Truncated {
                field,
                need: self.pos + n,
                have,
            });
        }
        self.pos += n;
        Ok(())
    }
}

/// Longitude (25 bits) then latitude (24 bits), in degrees.
#[inline]
fn position(bits: &mut Bits<'_>) -> Result<(f64, f64), LipError> {
    let lon = f64::from(bits.take_signed(25, "longitude")?) * 360.0 / f64::from(1u32 << 25);
    let lat = f64::from(bits.take_signed(24, "latitude")?) * 180.0 / f64::from(1u32 << 24);
    Ok((lat, lon))
}

/// Position error (3 bits): the upper bound of its class, metres.
#[inline]
fn position_error(code: u32) -> f32 {
    match code {
        0 => 2.0,
        1 => 20.0,
        2 => 200.0,
        3 => 2_000.0,
        4 => 20_000.0,
        5 => 200_000.0,
        6 => f32::INFINITY,
        _ => f32::NAN,
    }
}

/// Horizontal position uncertainty and ellipse axes (6 bits), metres:
/// 2 × 1.2^(K+5) − 4.
fn uncertainty_m(code: u32) -> f32 {
    UNCERTAINTY_M[code as usize & 63]
}

const UNCERTAINTY_M: [f32; 64] = {
    let mut table = [0.0; 64];
    let mut factor = 2.0 * 1.2 * 1.2 * 1.2 * 1.2 * 1.2;
    let mut k = 0;
    while k < 64 {
        table[k] = (factor - 4.0) as f32;
        factor *= 1.2;
        k += 1;
    }
    table
};

/// Horizontal velocity (7 bits) in metres a second; unknown for "more
/// than 1,043 km/h" (126) and "not known" (127).
pub fn horizontal_velocity_mps(code: u32) -> f32 {
    VELOCITY_MPS[code as usize & 127]
}

/// The velocity code's table, km/h: n for n ≤ 28, then 16 × 1.038^(n−13).
const VELOCITY_MPS: [f32; 128] = {
    let mut table = [f32::NAN; 128];
    let mut n = 0;
    while n <= 125 {
        let kmh = if n <= 28 {
            n as f64
        } else {
            let mut v = 16.0;
            let mut k = 13;
            while k < n {
                v *= 1.038;
                k += 1;
            }
            v
        };
        table[n] = (kmh / 3.6) as f32;
        n += 1;
    }
    table
};

/// Time elapsed (2 bits): the fix time it means, from the time received.
#[inline]
fn time_elapsed(code: u32, now_ms: i64) -> i64 {
    match code {
        1 => now_ms - 5_000,
        2 => now_ms - 300_000,
        _ => now_ms,
    }
}

/// Time of position (22 bits: day, hour, minute, second, UTC): the date
/// with that day of the month nearest `now_ms`.
fn time_of_position(bits: &mut Bits<'_>, now_ms: i64) -> Result<i64, LipError> {
    let day = i64::from(bits.take(5, "day")?);
    let hour = i64::from(bits.take(5, "hour")?);
    let minute = i64::from(bits.take(6, "minute")?);
    let second = i64::from(bits.take(6, "second")?);
    if day == 0 || hour > 23 || minute > 59 || second > 59 {
        return Err(LipError::BadTime);
    }
    let tod = ((hour * 60 + minute) * 60 + second) * 1000;
    let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
    [-1i64, 0, 1]
        .into_iter()
        .filter_map(|dm| {
            let months = y * 12 + (m - 1) + dm;
            let (yy, mm) = (months.div_euclid(12), months.rem_euclid(12) + 1);
            let first = days_from_civil(yy, mm, 1);
            let length = days_from_civil(yy + i64::from(mm == 12), mm % 12 + 1, 1) - first;
            (day <= length).then(|| (first + day - 1) * DAY_MS + tod)
        })
        .min_by_key(|t| (t - now_ms).abs())
        .ok_or(LipError::BadTime)
}

/// The reason for sending, if the additional data is one (type 0).
#[inline]
fn additional_data(bits: &mut Bits<'_>) -> Result<Option<u8>, LipError> {
    let kind = bits.take(1, "type of additional data")?;
    let data = bits.take(8, "additional data")? as u8;
    Ok((kind == 0).then_some(data))
}

/// A report's fix, its status `emergency` when that is the reason it was
/// sent.
#[inline]
fn with_reason(fix: Fix, reason: Option<u8>) -> Fix {
    if reason == Some(REASON_EMERGENCY) {
        fix.with_status(Status::Emergency)
    } else {
        fix
    }
}

#[inline]
fn short_report(bits: &mut Bits<'_>, now_ms: i64) -> Result<(Fix, Option<u8>), LipError> {
    let time_ms = time_elapsed(bits.take(2, "time elapsed")?, now_ms);
    let (lat, lon) = position(bits)?;
    let accuracy_m = position_error(bits.take(3, "position error")?);
    let speed_mps = horizontal_velocity_mps(bits.take(7, "horizontal velocity")?);
    let heading_deg = bits.take(4, "direction of travel")? as f32 * 22.5;
    let reason = additional_data(bits)?;
    let fix = Fix {
        time_ms,
        lat,
        lon,
        accuracy_m,
        speed_mps,
        heading_deg,
        status: Status::Unknown,
    };
    Ok((with_reason(fix, reason), reason))
}

fn long_report(bits: &mut Bits<'_>, now_ms: i64) -> Result<(Fix, Option<u8>), LipError> {
    let time_ms = match bits.take(2, "time type")? {
        0 => now_ms,
        1 => time_elapsed(bits.take(2, "time elapsed")?, now_ms),
        2 => time_of_position(bits, now_ms)?,
        _ => return Err(LipError::Unsupported("reserved time type")),
    };
    let shape = bits.take(4, "location shape")?;
    let (lat, lon) = match shape {
        0 => return Err(LipError::NoFix),
        1..=8 | 10 => position(bits)?,
        9 => return Err(LipError::Unsupported("location arc")),
        _ => return Err(LipError::Unsupported("reserved location shape")),
    };
    // After the position: (horizontal accuracy bits, bits to skip after).
    let accuracy_m = match shape {
        1 => f32::NAN,
        4 => {
            bits.skip(12, "altitude")?;
            f32::NAN
        }
        10 => position_error(bits.take(3, "position error")?),
        // Circles: the uncertainty radius, then altitude and its
        // uncertainty and confidence as the shape has them.
        2 | 5 | 7 => {
            let r = uncertainty_m(bits.take(6, "horizontal position uncertainty")?);
            let rest = match shape {
                5 => 12,
                7 => 12 + 3 + 3,
                _ => 0,
            };
            bits.skip(rest, "altitude")?;
            r
        }
        // Ellipses: the half major axis; minor axis and angle, then
        // altitude, its uncertainty and the confidence as the shape has them.
        _ => {
            let r = uncertainty_m(bits.take(6, "half major axis")?);
            bits.skip(6 + 8, "half minor axis and angle")?;
            let rest = match shape {
                3 => 3,
                6 => 12 + 3,
                _ => 12 + 3 + 3,
            };
            bits.skip(rest, "altitude and confidence")?;
            r
        }
    };
    let (speed_mps, heading_deg) = velocity(bits)?;
    bits.skip(1, "acknowledgement request")?;
    let reason = additional_data(bits)?;
    let fix = Fix {
        time_ms,
        lat,
        lon,
        accuracy_m,
        speed_mps,
        heading_deg,
        status: Status::Unknown,
    };
    Ok((with_reason(fix, reason), reason))
}

/// The velocity block of a long report: speed and direction of travel.
fn velocity(bits: &mut Bits<'_>) -> Result<(f32, f32), LipError> {
    let kind = bits.take(3, "velocity type")?;
    if kind == 0 {
        return Ok((f32::NAN, f32::NAN));
    }
    let speed = horizontal_velocity_mps(bits.take(7, "horizontal velocity")?);
    // Horizontal uncertainty (3); vertical: direction (1), velocity (7),
    // and its uncertainty (3) when the type has uncertainties.
    let before_direction = match kind {
        1 | 5 => 0,
        2 | 6 => 3,
        3 => 1 + 7,
        _ => 3 + 1 + 7 + 3,
    };
    bits.skip(before_direction, "velocity")?;
    let heading = match kind {
        5..=7 => {
            let d = bits.take(8, "direction of travel extended")? as f32 * 360.0 / 256.0;
            if kind != 5 {
                bits.skip(3, "direction of travel uncertainty")?;
            }
            d
        }
        _ => f32::NAN,
    };
    Ok((speed, heading))
}

/// The coded fields of a short location report, as the standard's tables
/// number them (for [`PduWriter::short_report`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ShortCodes {
    /// Time elapsed (0 = < 5 s … 3 = not known).
    pub time_elapsed: u8,
    /// Position error (0 = < 2 m … 7 = not known).
    pub position_error: u8,
    /// Horizontal velocity (0–127).
    pub velocity: u8,
    /// Direction of travel (0–15, 22.5° steps).
    pub direction: u8,
    /// Reason for sending.
    pub reason: u8,
}

/// Writes LIP PDUs bit by bit: for tests, benches and examples (the
/// encoder a gateway or simulator would be).
#[derive(Debug, Default, Clone)]
pub struct PduWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl PduWriter {
    /// A datagram for `issi`, ready for its PDU.
    pub fn for_issi(issi: u32) -> Self {
        let mut w = Self::default();
        w.put(u64::from(issi), 24);
        w
    }

    /// Appends the low `n` bits of `value`, most significant first.
    pub fn put(&mut self, value: u64, n: usize) -> &mut Self {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let bit = (value.checked_shr(i as u32).unwrap_or(0) & 1) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= bit << (7 - self.bits % 8);
            }
            self.bits += 1;
        }
        self
    }

    /// Appends a position: longitude in 25 bits, latitude in 24.
    pub fn position(&mut self, lat: f64, lon: f64) -> &mut Self {
        let lon_code = (lon * f64::from(1u32 << 25) / 360.0).round() as i64;
        let lat_code = (lat * f64::from(1u32 << 24) / 180.0).round() as i64;
        self.put(lon_code as u64, 25).put(lat_code as u64, 24)
    }

    /// A short location report (PDU type 0) with the given codes.
    pub fn short_report(&mut self, lat: f64, lon: f64, c: ShortCodes) -> &mut Self {
        self.put(0, 2)
            .put(u64::from(c.time_elapsed), 2)
            .position(lat, lon)
            .put(u64::from(c.position_error), 3)
            .put(u64::from(c.velocity), 7)
            .put(u64::from(c.direction), 4)
            .put(0, 1)
            .put(u64::from(c.reason), 8)
    }

    /// The bytes written (the last byte padded with zeros).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-11-30 12:00:00 UTC.
    const NOW: i64 = 1_796_040_000_000;

    fn report(bytes: &[u8]) -> Result<Option<LocationReport>, LipError> {
        read_report(bytes, NOW)
    }

    /// A short report from a Sepura radio, as posted with its AVL
    /// software's reading (52.37570, 16.23886) on the RadioReference
    /// forum ("Sepura SDS LIP", 2017); the leading 0x0A there is the SDS
    /// protocol identifier, replaced here by an ISSI.
    #[test]
    fn a_captured_sepura_short_report_decodes_as_its_avl_software_read_it() {
        let mut d = vec![0x00, 0x30, 0x39];
        d.extend_from_slice(&[0x00, 0xB8, 0xC3, 0x1A, 0x53, 0xEB, 0x49, 0x6D, 0x62, 0x00]);
        let r = report(&d).expect("decodes").expect("a location");
        assert_eq!(r.issi, 12_345);
        assert!((r.fix.lat - 52.37570).abs() < 5e-6, "{}", r.fix.lat);
        assert!((r.fix.lon - 16.23886).abs() < 5e-6, "{}", r.fix.lon);
        assert_eq!(r.fix.accuracy_m, 20.0, "position error code 1: < 20 m");
        assert!((r.fix.speed_mps * 3.6 - 16.0 * 1.038f32.powi(41)).abs() < 1e-3);
        assert_eq!(r.fix.heading_deg, 247.5, "direction 11: WSW");
        assert_eq!(r.reason, Some(32), "response to an immediate location request");
        assert_eq!(r.fix.time_ms, NOW, "time elapsed < 5 s");
    }

    #[test]
    fn negative_coordinates_and_the_velocity_codes_extremes() {
        for (lat, lon) in [
            (-33.8688, 151.2093),
            (51.5074, -0.1278),
            (-54.8, -68.3),
            (89.99, -179.99),
        ] {
            let mut w = PduWriter::for_issi(1);
            w.short_report(
                lat,
                lon,
                ShortCodes {
                    time_elapsed: 0,
                    position_error: 2,
                    velocity: 0,
                    direction: 0,
                    reason: 0,
                },
            );
            let r = report(w.bytes()).expect("ok").expect("location");
            assert!((r.fix.lat - lat).abs() <= 180.0 / f64::from(1u32 << 24), "{lat}");
            assert!((r.fix.lon - lon).abs() <= 360.0 / f64::from(1u32 << 25), "{lon}");
        }
        let speed = |code: u8| {
            let mut w = PduWriter::for_issi(1);
            w.short_report(
                51.0,
                -1.0,
                ShortCodes {
                    time_elapsed: 0,
                    position_error: 0,
                    velocity: code,
                    direction: 4,
                    reason: 0,
                },
            );
            report(w.bytes()).expect("ok").expect("location").fix.speed_mps
        };
        assert_eq!(speed(0), 0.0);
        assert!((speed(28) * 3.6 - 28.0).abs() < 1e-4, "linear to 28 km/h");
        assert!((speed(29) * 3.6 - 16.0 * 1.038f32.powi(16)).abs() < 1e-3);
        assert!((speed(125) * 3.6 - 1043.0).abs() < 1.0, "{}", speed(125) * 3.6);
        assert!(speed(126).is_nan(), "more than 1,043 km/h is not a speed");
        assert!(speed(127).is_nan(), "not known");
    }

    #[test]
    fn time_elapsed_and_emergency() {
        let mut w = PduWriter::for_issi(7);
        w.short_report(
            51.0,
            -1.0,
            ShortCodes {
                time_elapsed: 2,
                position_error: 7,
                velocity: 10,
                direction: 0,
                reason: REASON_EMERGENCY,
            },
        );
        let r = report(w.bytes()).expect("ok").expect("location");
        assert_eq!(r.fix.time_ms, NOW - 300_000, "< 30 min: at its youngest");
        assert_eq!(r.fix.status, Status::Emergency);
        assert!(r.fix.accuracy_m.is_nan(), "position error 7: unknown");
    }

    /// A long report as the standard lays it out: time of position,
    /// circle with altitude, horizontal velocity with direction extended.
    fn long_circle(day: u64, hour: u64) -> PduWriter {
        let mut w = PduWriter::for_issi(0x00_12_34);
        w.put(1, 2).put(3, 4); // PDU type 1, extension: long location report
        w.put(2, 2).put(day, 5).put(hour, 5).put(30, 6).put(15, 6); // time of position
        w.put(5, 4)
            .position(-37.899131, 145.142012)
            .put(10, 6)
            .put(1 << 11 | 300, 12);
        w.put(5, 3).put(40, 7).put(64, 8); // velocity type 5: speed, direction 90°
        w.put(0, 1).put(0, 1).put(REASON_EMERGENCY as u64, 8);
        w
    }

    #[test]
    fn a_long_report_with_time_of_position_circle_and_velocity() {
        let r = report(long_circle(30, 11).bytes())
            .expect("ok")
            .expect("location");
        assert_eq!(r.issi, 0x1234);
        assert!((r.fix.lat + 37.899131).abs() < 1e-5);
        assert!((r.fix.lon - 145.142012).abs() < 1e-5);
        assert_eq!(r.fix.time_ms, NOW - 3_600_000 + 30 * 60_000 + 15_000);
        assert!((r.fix.accuracy_m - (2.0 * 1.2f32.powi(15) - 4.0)).abs() < 1e-3);
        assert!((r.fix.speed_mps * 3.6 - 16.0 * 1.038f32.powi(27)).abs() < 1e-3);
        assert_eq!(r.fix.heading_deg, 90.0);
        assert_eq!(r.fix.status, Status::Emergency);
        // The 31st, read on the 30th of a 30-day month: the 31st of last month.
        let r = report(long_circle(31, 23).bytes())
            .expect("ok")
            .expect("location");
        assert_eq!(
            r.fix.time_ms,
            NOW - 30 * DAY_MS + 11 * 3_600_000 + 30 * 60_000 + 15_000
        );
    }

    #[test]
    fn every_shape_and_velocity_type_reaches_the_reason_for_sending() {
        // Bits after the position, per shape, and before the direction, per velocity type.
        let shapes: [(u64, &[(u64, usize)]); 9] = [
            (1, &[]),
            (2, &[(3, 6)]),
            (3, &[(3, 6), (0, 6), (0, 8), (0, 3)]),
            (4, &[(0, 12)]),
            (5, &[(3, 6), (0, 12)]),
            (6, &[(3, 6), (0, 6), (0, 8), (0, 12), (0, 3)]),
            (7, &[(3, 6), (0, 12), (0, 3), (0, 3)]),
            (8, &[(3, 6), (0, 6), (0, 8), (0, 12), (0, 3), (0, 3)]),
            (10, &[(1, 3)]),
        ];
        for (shape, fields) in shapes {
            for vtype in 0..8u64 {
                let mut w = PduWriter::for_issi(9);
                w.put(1, 2).put(3, 4).put(0, 2).put(shape, 4).position(51.5, -2.5);
                for (value, n) in fields {
                    w.put(*value, *n);
                }
                w.put(vtype, 3);
                if vtype > 0 {
                    w.put(20, 7);
                    let before = [0, 0, 3, 8, 14, 0, 3, 14][vtype as usize];
                    w.put(0, before);
                    if vtype >= 5 {
                        w.put(128, 8);
                        if vtype > 5 {
                            w.put(0, 3);
                        }
                    }
                }
                w.put(1, 1).put(0, 1).put(REASON_EMERGENCY as u64, 8);
                let r = report(w.bytes()).expect("ok").expect("location");
                assert_eq!(
                    r.reason,
                    Some(REASON_EMERGENCY),
                    "shape {shape}, velocity type {vtype}"
                );
                assert!((r.fix.lat - 51.5).abs() < 1e-5 && (r.fix.lon + 2.5).abs() < 1e-5);
                if vtype >= 5 {
                    assert_eq!(r.fix.heading_deg, 180.0, "shape {shape}, velocity type {vtype}");
                }
                if vtype > 0 {
                    assert!((r.fix.speed_mps - 20.0 / 3.6).abs() < 1e-5);
                }
                let accuracy = match shape {
                    1 | 4 => None,
                    10 => Some(20.0),
                    _ => Some(2.0 * 1.2f32.powi(8) - 4.0),
                };
                match accuracy {
                    None => assert!(r.fix.accuracy_m.is_nan()),
                    Some(a) => assert!((r.fix.accuracy_m - a).abs() < 1e-3, "shape {shape}"),
                }
            }
        }
    }

    #[test]
    fn refusals_are_named() {
        let mut w = PduWriter::for_issi(1);
        w.short_report(
            51.0,
            -1.0,
            ShortCodes {
                time_elapsed: 0,
                position_error: 0,
                velocity: 0,
                direction: 0,
                reason: 0,
            },
        );
        let whole = w.bytes().to_vec();
        for cut in 0..whole.len() - 1 {
            assert!(
                matches!(report(&whole[..cut]), Err(LipError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let mut arc = PduWriter::for_issi(1);
        arc.put(1, 2)
            .put(3, 4)
            .put(0, 2)
            .put(9, 4)
            .position(51.0, -1.0)
            .put(0, 51);
        assert_eq!(report(arc.bytes()), Err(LipError::Unsupported("location arc")));
        let mut none = PduWriter::for_issi(1);
        none.put(1, 2).put(3, 4).put(0, 2).put(0, 4).put(0, 16);
        assert_eq!(report(none.bytes()), Err(LipError::NoFix));
        let mut ack = PduWriter::for_issi(1);
        ack.put(1, 2).put(4, 4).put(0, 16);
        assert_eq!(report(ack.bytes()), Ok(None), "a location report acknowledgement");
        let mut reserved = PduWriter::for_issi(1);
        reserved.put(2, 2).put(0, 80);
        assert_eq!(
            report(reserved.bytes()).map_err(|e| e.reason()),
            Err(Reject::Unsupported)
        );
        let mut bad_time = PduWriter::for_issi(1);
        bad_time
            .put(1, 2)
            .put(3, 4)
            .put(2, 2)
            .put(0, 5)
            .put(0, 17)
            .put(1, 4)
            .position(51.0, -1.0)
            .put(0, 13);
        assert_eq!(report(bad_time.bytes()), Err(LipError::BadTime));
    }

    #[test]
    fn decode_puts_the_fix_under_the_issi_and_validation_applies() {
        let v = ValidationConfig::default();
        let mut out = IngestBatch::default();
        let mut w = PduWriter::for_issi(4242);
        w.short_report(
            51.0,
            -1.0,
            ShortCodes {
                time_elapsed: 0,
                position_error: 1,
                velocity: 30,
                direction: 8,
                reason: 0,
            },
        );
        assert_eq!(decode_lip(w.bytes(), 3, &v, NOW, &mut out), Ok(Pdu::Location));
        assert_eq!(out.fixes.len(), 1);
        assert_eq!(out.fixes[0].0, UnitRef::Key(4242));
        assert_eq!(out.index, vec![3]);
        let mut w = PduWriter::for_issi(4243);
        w.short_report(
            0.0,
            0.0,
            ShortCodes {
                time_elapsed: 0,
                position_error: 1,
                velocity: 30,
                direction: 8,
                reason: 0,
            },
        );
        assert_eq!(decode_lip(w.bytes(), 4, &v, NOW, &mut out), Ok(Pdu::Location));
        assert_eq!(out.errors, vec![(4, Reject::NullIsland)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn random_and_mutated_pdus_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), flip in any::<usize>()) {
            let _ = read_report(&bytes, NOW);
            let mut good = long_circle(12, 8).bytes().to_vec();
            let bit = flip % (good.len() * 8);
            good[bit / 8] ^= 1 << (bit % 8);
            if let Ok(Some(r)) = read_report(&good, NOW) {
                prop_assert!(r.fix.lat.abs() <= 90.0 && r.fix.lon.abs() <= 180.0);
            }
        }
    }
}
