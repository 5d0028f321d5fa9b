//! The server, second by second: what `/metrics` said at each sample of
//! the run, so a stall can be placed (issue 16: soak runs had seconds in
//! which alerts came seconds late while the writer's longest step was a
//! quarter of a second, and nothing said where the time went).
//!
//! Each [`Second`] holds rates over the time since the sample before (not
//! per tick: a slow `/metrics` stretches a tick) and the gauges as read.

use std::collections::BTreeMap;

use serde::Serialize;

/// Seconds listed in the Markdown report: the ones that accepted fewest.
pub const WORST_LISTED: usize = 5;

/// One sample of the server's `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Second {
    /// When the sample was read, seconds into the load.
    pub at_s: f64,
    /// How long `/metrics` took to answer, ms: a server whose runtime is
    /// stalled answers late.
    pub metrics_ms: f64,
    /// Fixes accepted a second since the sample before.
    pub accepted_per_s: f64,
    /// Batches waiting for the writer.
    pub ingest_queue: f64,
    /// Queries waiting for the writer.
    pub writer_queries: f64,
    /// Messages waiting in session queues, all sessions.
    pub ws_queued: f64,
    /// The most one session had waiting.
    pub ws_queued_max: f64,
    /// The runtime's workers' busy time since the sample before, as a
    /// fraction of all of them (1.0: every worker busy all the time).
    pub runtime_busy: f64,
    /// Tasks in the runtime's global queue.
    pub runtime_global_queue: f64,
    /// Alert frames the server itself sent more than a second after their
    /// fix, since the sample before.
    pub alerts_over_1s: f64,
}

/// Builds [`Second`]s from successive `/metrics` reads.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The samples so far.
    pub seconds: Vec<Second>,
    /// The previous read and when it was taken.
    last: Option<(f64, BTreeMap<String, f64>)>,
}

const ACCEPTED: &str = "bluelight_fixes_accepted_total";
const BUSY: &str = "bluelight_runtime_busy_seconds_total";
const ALERTS: &str = "bluelight_fix_to_alert_seconds_count";
const ALERTS_UNDER_1S: &str = "bluelight_fix_to_alert_seconds_bucket{le=\"1\"}";

impl Timeline {
    /// Starts from the read before the load (its counters are the base).
    pub fn new(at_s: f64, before: &BTreeMap<String, f64>) -> Self {
        Self {
            seconds: Vec::new(),
            last: Some((at_s, before.clone())),
        }
    }

    /// Adds a read taken at `at_s` that took `metrics_ms` to answer.
    pub fn push(&mut self, at_s: f64, metrics_ms: f64, m: BTreeMap<String, f64>) {
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        let (rate, busy, late) = match &self.last {
            Some((t0, m0)) if at_s > *t0 => {
                let dt = at_s - t0;
                let delta = |k: &str| (get(k) - m0.get(k).copied().unwrap_or(0.0)).max(0.0);
                let workers = get("bluelight_runtime_workers").max(1.0);
                (
                    delta(ACCEPTED) / dt,
                    delta(BUSY) / dt / workers,
                    delta(ALERTS) - delta(ALERTS_UNDER_1S),
                )
            }
            _ => (0.0, 0.0, 0.0),
        };
        self.seconds.push(Second {
            at_s,
            metrics_ms,
            accepted_per_s: rate,
            ingest_queue: get("bluelight_ingest_queue_batches"),
            writer_queries: get("bluelight_writer_tasks_queued{kind=\"query\"}"),
            ws_queued: get("bluelight_ws_queued_messages"),
            ws_queued_max: get("bluelight_ws_queued_messages_max"),
            runtime_busy: busy,
            runtime_global_queue: get("bluelight_runtime_global_queue_tasks"),
            alerts_over_1s: late.max(0.0),
        });
        self.last = Some((at_s, m));
    }

    /// Fixes accepted a second, sample by sample.
    pub fn accepted_per_s(&self) -> Vec<f64> {
        self.seconds.iter().map(|s| s.accepted_per_s).collect()
    }
}

/// The samples worth a look, in time order: the [`WORST_LISTED`] that
/// accepted fewest fixes a second, and the [`WORST_LISTED`] in which the
/// server sent most alerts over a second late (a stall may hold alerts
/// and not fixes). The first and last samples are left out: they are
/// partial.
pub fn worst(seconds: &[Second]) -> Vec<Second> {
    let inner = seconds.get(1..seconds.len().saturating_sub(1)).unwrap_or(&[]);
    let mut by_rate: Vec<Second> = inner.to_vec();
    by_rate.sort_by(|a, b| a.accepted_per_s.total_cmp(&b.accepted_per_s));
    by_rate.truncate(WORST_LISTED);
    let mut by_late: Vec<Second> = inner.iter().filter(|s| s.alerts_over_1s > 0.0).copied().collect();
    by_late.sort_by(|a, b| b.alerts_over_1s.total_cmp(&a.alerts_over_1s));
    by_late.truncate(WORST_LISTED);
    by_rate.extend(by_late);
    by_rate.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    by_rate.dedup_by(|a, b| a.at_s == b.at_s);
    by_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(accepted: f64, busy: f64, alerts: f64, under_1s: f64) -> BTreeMap<String, f64> {
        [
            (ACCEPTED, accepted),
            (BUSY, busy),
            (ALERTS, alerts),
            (ALERTS_UNDER_1S, under_1s),
            ("bluelight_runtime_workers", 2.0),
            ("bluelight_ingest_queue_batches", 7.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn rates_are_over_the_time_between_reads_not_per_tick() {
        let mut t = Timeline::new(0.0, &read(0.0, 0.0, 0.0, 0.0));
        t.push(1.0, 3.0, read(1000.0, 1.0, 10.0, 10.0));
        // A slow read: three seconds later, 3,000 more fixes.
        t.push(4.0, 2500.0, read(4000.0, 4.0, 30.0, 25.0));
        let s = &t.seconds;
        assert_eq!(s[0].accepted_per_s, 1000.0);
        assert_eq!(s[1].accepted_per_s, 1000.0, "not 3,000 in one 'second'");
        assert_eq!(s[1].runtime_busy, 0.5, "3 busy seconds over 3 s of 2 workers");
        assert_eq!(s[1].alerts_over_1s, 5.0);
        assert_eq!(s[1].ingest_queue, 7.0);
        assert_eq!(s[1].metrics_ms, 2500.0);
    }

    #[test]
    fn the_worst_seconds_leave_out_the_partial_first_and_last() {
        let mut t = Timeline::new(0.0, &read(0.0, 0.0, 0.0, 0.0));
        let totals = [0.0, 100.0, 150.0, 350.0, 360.0, 660.0, 660.0];
        for (i, a) in totals.iter().enumerate() {
            t.push(i as f64 + 1.0, 1.0, read(*a, 0.0, 0.0, 0.0));
        }
        let worst: Vec<f64> = worst(&t.seconds).iter().map(|s| s.at_s).collect();
        // Rates 0 (first, left out), 100, 50, 200, 10, 300, 0 (last, left out).
        assert_eq!(worst, vec![2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(worst.len(), WORST_LISTED);
    }

    #[test]
    fn seconds_with_late_alerts_are_listed_beside_the_slow_ones() {
        let mut t = Timeline::new(0.0, &read(0.0, 0.0, 0.0, 0.0));
        let mut total = 0.0;
        for i in 1..=20 {
            // Every second accepts 1,000 but the 4th and 5th accept 10; the
            // 12th has 40 alerts over a second, the 4th has 3.
            total += if i == 4 || i == 5 {
                10.0
            } else {
                1000.0 + f64::from(i)
            };
            let late = match i {
                12 => 40.0,
                4 => 3.0,
                _ => 0.0,
            };
            let sent = t.seconds.last().map_or(0.0, |_| 100.0 * f64::from(i));
            t.push(f64::from(i), 1.0, read(total, 0.0, sent + late, sent));
        }
        let at: Vec<f64> = worst(&t.seconds).iter().map(|s| s.at_s).collect();
        assert_eq!(at, vec![2.0, 3.0, 4.0, 5.0, 6.0, 12.0]);
    }
}
