//! Civil dates to days since the Unix epoch and back, for the device
//! formats that carry a date in pieces (CoT's RFC 3339, NMEA's `ddmmyy`,
//! LIP's day of month). Howard Hinnant's algorithms, exact over the
//! proleptic Gregorian calendar; small enough not to need a date crate.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a civil date (`month` 1–12, `day` 1–31; not
/// checked against the month's length).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The time `time_of_day_ms` (since midnight UTC) nearest to `now_ms`:
/// today's, yesterday's or tomorrow's. For formats that send a time of day
/// without its date (NMEA GGA), so a fix just before midnight received just
/// after it keeps its own day.
pub fn nearest_time_of_day(time_of_day_ms: i64, now_ms: i64) -> i64 {
    let t = now_ms.div_euclid(DAY_MS) * DAY_MS + time_of_day_ms;
    if t - now_ms > DAY_MS / 2 {
        t - DAY_MS
    } else if now_ms - t > DAY_MS / 2 {
        t + DAY_MS
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn a_time_of_day_takes_the_nearest_day() {
        let midnight = days_from_civil(2026, 11, 30) * DAY_MS;
        // 23:59:59 sent, received at 00:00:02 the next day: yesterday's.
        let late = DAY_MS - 1000;
        assert_eq!(nearest_time_of_day(late, midnight + 2000), midnight - 1000);
        // 00:00:01 received at 23:59:58 (a device clock a little ahead): tomorrow's.
        assert_eq!(nearest_time_of_day(1000, midnight - 2000), midnight + 1000);
        assert_eq!(
            nearest_time_of_day(3_600_000, midnight + 3_600_500),
            midnight + 3_600_000
        );
    }

    proptest! {
        #[test]
        fn days_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
