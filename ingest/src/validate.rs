//! Validation and position filters: which fixes are refused, and why.

use std::sync::atomic::{AtomicU64, Ordering};

use bluelight_engine::Fix;

/// Why a fix (or frame) was refused. Every reason is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// A coordinate or time that is NaN or infinite.
    NotFinite,
    /// Latitude outside ±90 or longitude outside ±180.
    OutOfRange,
    /// Exactly (0, 0): a receiver without a fix.
    NullIsland,
    /// Device time too far ahead of the server clock.
    Future,
    /// Device time older than history retention.
    TooOld,
    /// Same unit and time as its latest fix.
    Duplicate,
    /// Older than its unit's latest fix (kept in history, moves nothing).
    Older,
    /// Implies a speed above the configured maximum from the unit's latest fix.
    SpeedJump,
    /// Accuracy worse than the configured threshold.
    Inaccurate,
    /// A fix without a unit id or with a field of the wrong type.
    BadField,
    /// A frame that does not decode at all.
    BadFrame,
    /// The device says it has no position (NMEA void RMC or GGA quality 0,
    /// a LIP report without a location).
    NoFix,
    /// An NMEA sentence whose checksum does not match its text.
    BadChecksum,
    /// A fix before its unit was named (NMEA lines before `$PBLU`).
    NoUnit,
    /// A well-formed report of a kind this server does not place (a LIP
    /// location arc, reserved codes).
    Unsupported,
    /// A unit of an agency the sender may not place (its token's or its
    /// certificate's agencies).
    Forbidden,
    /// A new unit when the engine holds `max_units` already.
    TooManyUnits,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 17] = [
        Reject::NotFinite,
        Reject::OutOfRange,
        Reject::NullIsland,
        Reject::Future,
        Reject::TooOld,
        Reject::Duplicate,
        Reject::Older,
        Reject::SpeedJump,
        Reject::Inaccurate,
        Reject::BadField,
        Reject::BadFrame,
        Reject::NoFix,
        Reject::BadChecksum,
        Reject::NoUnit,
        Reject::Unsupported,
        Reject::Forbidden,
        Reject::TooManyUnits,
    ];

    /// The name used in replies and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::NotFinite => "not_finite",
            Reject::OutOfRange => "out_of_range",
            Reject::NullIsland => "null_island",
            Reject::Future => "future",
            Reject::TooOld => "too_old",
            Reject::Duplicate => "duplicate",
            Reject::Older => "older",
            Reject::SpeedJump => "speed_jump",
            Reject::Inaccurate => "inaccurate",
            Reject::BadField => "bad_field",
            Reject::BadFrame => "bad_frame",
            Reject::NoFix => "no_fix",
            Reject::BadChecksum => "bad_checksum",
            Reject::NoUnit => "no_unit",
            Reject::Unsupported => "unsupported",
            Reject::Forbidden => "forbidden",
            Reject::TooManyUnits => "too_many_units",
        }
    }
}

/// The filters' settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationConfig {
    /// Most a device clock may run ahead of the server, ms (default 5 min).
    pub max_future_ms: i64,
    /// Oldest device time accepted, as an age in ms (history retention).
    pub max_age_ms: i64,
    /// Highest speed implied between a unit's fixes, m/s (default 150).
    pub max_implied_speed_mps: f64,
    /// Worst accuracy accepted, metres; `None` (default) accepts any.
    pub max_accuracy_m: Option<f32>,
    /// A jump is refused only within this long of the unit's latest fix, ms;
    /// a unit that really moved (or whose previous fix was the wrong one)
    /// is accepted again after it.
    pub speed_check_window_ms: i64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_future_ms: 5 * 60 * 1000,
            max_age_ms: 3600 * 1000,
            max_implied_speed_mps: 150.0,
            max_accuracy_m: None,
            speed_check_window_ms: 60_000,
        }
    }
}

impl ValidationConfig {
    /// Checks what can be checked from the fix alone.
    ///
    /// # Errors
    /// The first reason the fix is refused.
    pub fn check(&self, fix: &Fix, now_ms: i64) -> Result<(), Reject> {
        if !fix.lat.is_finite() || !fix.lon.is_finite() {
            return Err(Reject::NotFinite);
        }
        if !(-90.0..=90.0).contains(&fix.lat) || !(-180.0..=180.0).contains(&fix.lon) {
            return Err(Reject::OutOfRange);
        }
        if fix.lat == 0.0 && fix.lon == 0.0 {
            return Err(Reject::NullIsland);
        }
        if fix.time_ms > now_ms.saturating_add(self.max_future_ms) {
            return Err(Reject::Future);
        }
        if fix.time_ms < now_ms.saturating_sub(self.max_age_ms) {
            return Err(Reject::TooOld);
        }
        if let Some(max) = self.max_accuracy_m
            && fix.accuracy_m > max
        {
            return Err(Reject::Inaccurate);
        }
        Ok(())
    }

    /// The implied-speed filter, which needs the unit's latest fix
    /// (`(time_ms, lat, lon)`, from the engine): a fix more than
    /// `max_implied_speed_mps` from it, within `speed_check_window_ms` of
    /// device time, is refused.
    ///
    /// # Errors
    /// [`Reject::SpeedJump`].
    pub fn check_implied_speed(&self, last: Option<(i64, f64, f64)>, fix: &Fix) -> Result<(), Reject> {
        if let Some((t, lat, lon)) = last {
            let dt = fix.time_ms - t;
            if dt > 0 && dt <= self.speed_check_window_ms {
                use bluelight_engine::sphere;
                // Nearly every fix passes by far: say so without the
                // trigonometry (a tenth of a replay's time, measured).
                let allowed_m = self.max_implied_speed_mps * (dt as f64 / 1000.0);
                if sphere::distance_upper_bound_m(lat, lon, fix.lat, fix.lon) * (1.0 + 1e-9) < allowed_m {
                    return Ok(());
                }
                let d = sphere::distance_m(lat, lon, fix.lat, fix.lon);
                if d / (dt as f64 / 1000.0) > self.max_implied_speed_mps {
                    return Err(Reject::SpeedJump);
                }
            }
        }
        Ok(())
    }
}

/// Counters of accepted and refused fixes, shared by every transport and the
/// writer (relaxed atomics: they are statistics, read by `/metrics`).
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Fixes applied to the engine.
    pub accepted: AtomicU64,
    /// Refused fixes by reason (indexed like `Reject::ALL`).
    pub rejected: [AtomicU64; Reject::ALL.len()],
    /// UDP datagrams dropped because the pipeline was full.
    pub udp_dropped: AtomicU64,
    /// UDP datagrams dropped because they came from outside the allowed
    /// networks (`ingest_allow`).
    pub udp_refused: AtomicU64,
    /// Connections closed for a bad or oversized frame.
    pub connections_closed_bad_frame: AtomicU64,
    /// Failed accepts on device listeners (out of file descriptors, most
    /// often), each followed by a short pause.
    pub accept_errors: AtomicU64,
    /// Device connections refused: a failed TLS handshake (no client
    /// certificate, one from another CA, plaintext on a TLS listener) or a
    /// certificate no token maps.
    pub devices_refused: AtomicU64,
    /// Speeds, headings and accuracies out of range, kept as unknown
    /// (the fix itself is accepted).
    pub measurements_cleared: AtomicU64,
    /// Well-formed device messages that carry no fix and are passed over
    /// (NMEA sentences other than RMC and GGA, LIP PDUs other than
    /// location reports; CoT events that are not units).
    pub ignored: AtomicU64,
    /// The writer's longest step so far, µs: one batch, query, slice of
    /// bulk work or snapshot copy, waiting for the engine included. Every
    /// fix and query waits behind a step, so this is the worst stall the
    /// writer itself has caused or suffered.
    pub writer_longest_step_us: AtomicU64,
    /// Writer steps that took [`crate::writer::LONG_STEP`] or more (each
    /// also logged, naming what it was).
    pub writer_long_steps: AtomicU64,
}

impl IngestCounters {
    /// Counts a refusal.
    pub fn reject(&self, r: Reject) {
        let i = Reject::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals of one reason so far.
    pub fn rejected(&self, r: Reject) -> u64 {
        let i = Reject::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.rejected[i].load(Ordering::Relaxed)
    }

    /// Fixes accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_726_400_000;

    #[test]
    fn each_reason_is_found() {
        let v = ValidationConfig {
            max_accuracy_m: Some(50.0),
            ..ValidationConfig::default()
        };
        let ok = Fix::at(NOW, 51.0, -1.0);
        assert_eq!(v.check(&ok, NOW), Ok(()));
        assert_eq!(
            v.check(&Fix::at(NOW, f64::NAN, -1.0), NOW),
            Err(Reject::NotFinite)
        );
        assert_eq!(v.check(&Fix::at(NOW, 91.0, -1.0), NOW), Err(Reject::OutOfRange));
        assert_eq!(v.check(&Fix::at(NOW, 0.0, 0.0), NOW), Err(Reject::NullIsland));
        assert_eq!(
            v.check(&Fix::at(NOW + 301_000, 51.0, -1.0), NOW),
            Err(Reject::Future)
        );
        assert_eq!(
            v.check(&Fix::at(NOW - 3_601_000, 51.0, -1.0), NOW),
            Err(Reject::TooOld)
        );
        let mut bad = ok;
        bad.accuracy_m = 80.0;
        assert_eq!(v.check(&bad, NOW), Err(Reject::Inaccurate));
    }

    #[test]
    fn a_jump_is_refused_only_within_the_window() {
        let v = ValidationConfig::default();
        let last = Some((NOW, 51.0, -1.0));
        // About 11 km in 10 s: 1,100 m/s.
        let jump = Fix::at(NOW + 10_000, 51.1, -1.0);
        assert_eq!(v.check_implied_speed(last, &jump), Err(Reject::SpeedJump));
        let later = Fix::at(NOW + 61_000, 51.1, -1.0);
        assert_eq!(v.check_implied_speed(last, &later), Ok(()), "past the window");
        let walk = Fix::at(NOW + 10_000, 51.0001, -1.0);
        assert_eq!(v.check_implied_speed(last, &walk), Ok(()));
        assert_eq!(v.check_implied_speed(None, &jump), Ok(()), "a first fix");
    }
}
