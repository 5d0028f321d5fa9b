//! `--churn` (on in `--preset soak`): fences, positions feeds, standing
//! nearest queries and whole sessions created and removed all the time
//! beside the steady load, and the server's memory read each minute
//! (issue 16: after the first 10 minutes, RSS must grow less than 5%).
//!
//! Each second the churner puts a new fence and, past [`LIVE_FENCES`],
//! deletes the oldest; and opens a session that subscribes
//! [`FEEDS_PER_SESSION`] town-sized positions feeds and
//! [`NEAREST_PER_SESSION`] standing nearest queries, reads them, drops
//! some of them, reads on, and closes. Churned fences detect only `dwell`,
//! after a day, so they hold memberships and timers like any fence but
//! raise no alert the alerts checker would not owe.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use bluelight_ingest::places::Place;

use super::clients::{Ws, connect, subscribe};
use super::world::Fences;

/// Churned fences alive at once.
pub const LIVE_FENCES: usize = 30;
/// Positions feeds each churned session opens.
pub const FEEDS_PER_SESSION: usize = 4;
/// Standing nearest queries each churned session opens.
pub const NEAREST_PER_SESSION: usize = 2;
/// Failures kept word for word for the report.
pub const ERRORS_KEPT: usize = 8;
/// How long a churned session lives: half with every subscription, half
/// after dropping some.
pub const SESSION_LIFE: Duration = Duration::from_secs(10);

/// What the churn did, counted as it went.
#[derive(Debug, Default)]
pub struct Churn {
    /// Fences put.
    pub fences_put: AtomicU64,
    /// Fences deleted.
    pub fences_deleted: AtomicU64,
    /// Sessions opened and closed.
    pub sessions: AtomicU64,
    /// Subscriptions made.
    pub subscribed: AtomicU64,
    /// Subscriptions dropped with `unsubscribe` (the rest went with their
    /// session).
    pub unsubscribed: AtomicU64,
    /// Operations that failed.
    pub errors: AtomicU64,
    /// The first failures, said (at most [`ERRORS_KEPT`]): enough to tell
    /// which step fails and when, without a log of thousands.
    pub first_errors: Mutex<Vec<String>>,
    /// The last failure, said.
    pub last_error: Mutex<Option<String>>,
}

impl Churn {
    fn failed(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_errors.lock()
            && first.len() < ERRORS_KEPT
        {
            first.push(e.to_string());
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }
}

/// The server's memory and what it holds, at one minute of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySample {
    /// Minutes into the load.
    pub minute: u64,
    /// Resident set size, bytes.
    pub rss: u64,
    /// `/metrics` gauges that say what the memory holds.
    pub gauges: std::collections::BTreeMap<&'static str, f64>,
}

/// The gauges each [`MemorySample`] keeps.
pub const GAUGES: [&str; 7] = [
    "bluelight_units",
    "bluelight_fences",
    "bluelight_engine_regions",
    "bluelight_engine_region_slots",
    "bluelight_engine_candidate_sets",
    "bluelight_ws_sessions",
    "bluelight_history_fixes",
];

impl MemorySample {
    /// A sample from the server's RSS and its `/metrics`.
    pub fn new(minute: u64, rss: u64, metrics: &std::collections::BTreeMap<String, f64>) -> Self {
        Self {
            minute,
            rss,
            gauges: GAUGES
                .iter()
                .filter_map(|g| Some((*g, *metrics.get(*g)?)))
                .collect(),
        }
    }
}

/// How much RSS grew after minute 10: the most it reached from then on
/// over what it was at minute 10, as a fraction; `None` before minute 20
/// (too short to judge).
pub fn growth_after_ten(samples: &[MemorySample]) -> Option<f64> {
    let at_ten = samples.iter().find(|s| s.minute == 10)?;
    if samples.last()?.minute < 20 {
        return None;
    }
    let most = samples.iter().filter(|s| s.minute >= 10).map(|s| s.rss).max()?;
    Some((most as f64 - at_ten.rss as f64) / at_ten.rss.max(1) as f64)
}

/// Churns until `stop`: a fence and a session a second.
pub async fn churn(
    http: SocketAddr,
    token: Option<String>,
    towns: Arc<Vec<Place>>,
    pool: Arc<Fences>,
    seed: u64,
    stats: Arc<Churn>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match super::tls::http_client() {
        Ok(c) => c,
        Err(e) => return stats.failed(e),
    };
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc4a2);
    let mut live = VecDeque::new();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    for k in 0u64.. {
        tokio::select! {
            _ = stop.changed() => break,
            _ = every.tick() => {}
        }
        let id = format!("soak-{k}");
        let mut feature = pool.feature(k as usize % pool.list.len().max(1));
        feature["properties"] = json!({"detect": ["dwell"], "dwell_s": 86_400});
        let url = |id: &str| format!("{}://{http}/v1/fences/{id}", super::tls::http_scheme());
        let mut put = client
            .put(url(&id))
            .header("content-type", "application/geo+json")
            .body(feature.to_string());
        if let Some(t) = &token {
            put = put.bearer_auth(t);
        }
        match put.send().await.and_then(reqwest::Response::error_for_status) {
            Ok(_) => {
                stats.fences_put.fetch_add(1, Ordering::Relaxed);
                live.push_back(id);
            }
            Err(e) => stats.failed(format!("PUT fence {id}: {e}")),
        }
        if live.len() > LIVE_FENCES
            && let Some(old) = live.pop_front()
        {
            let mut delete = client.delete(url(&old));
            if let Some(t) = &token {
                delete = delete.bearer_auth(t);
            }
            match delete.send().await.and_then(reqwest::Response::error_for_status) {
                Ok(_) => {
                    stats.fences_deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => stats.failed(format!("DELETE fence {old}: {e}")),
            }
        }
        let towns: Vec<Place> = (0..FEEDS_PER_SESSION + NEAREST_PER_SESSION)
            .map(|_| towns[rng.random_range(0..towns.len())].clone())
            .collect();
        let (stats, token) = (stats.clone(), token.clone());
        tokio::spawn(async move {
            if let Err(e) = session(http, token.as_deref(), &towns, &stats).await {
                stats.failed(format!("session: {e:#}"));
            }
        });
    }
}

/// One churned session's life.
async fn session(
    http: SocketAddr,
    token: Option<&str>,
    towns: &[Place],
    stats: &Churn,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut ws = connect(http, token).await.context("connect")?;
    let mut subs = Vec::new();
    for (i, t) in towns.iter().enumerate() {
        let msg = if i < FEEDS_PER_SESSION {
            json!({"type":"subscribe","id":i,"stream":"positions","max_hz":1,
                   "area":{"bbox":[t.lon - 0.05, t.lat - 0.03, t.lon + 0.05, t.lat + 0.03]}})
        } else {
            json!({"type":"subscribe","id":i,"stream":"nearest","point":[t.lon, t.lat],"k":5})
        };
        let what = if i < FEEDS_PER_SESSION {
            "positions"
        } else {
            "nearest"
        };
        let sub = subscribe(&mut ws, msg).await.with_context(|| {
            format!(
                "subscribe {i} ({what}), {:.1} s into the session",
                started.elapsed().as_secs_f64()
            )
        })?;
        subs.push(sub);
        stats.subscribed.fetch_add(1, Ordering::Relaxed);
    }
    read_for(&mut ws, SESSION_LIFE / 2).await.context("reading")?;
    // Every other subscription dropped by hand; the rest go with the
    // session.
    for sub in subs.iter().step_by(2) {
        ws.send(Message::Text(
            json!({"type":"unsubscribe","sub":sub}).to_string().into(),
        ))
        .await
        .context("unsubscribe")?;
        stats.unsubscribed.fetch_add(1, Ordering::Relaxed);
    }
    read_for(&mut ws, SESSION_LIFE / 2)
        .await
        .context("reading after unsubscribing")?;
    let _ = ws.close(None).await;
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Reads (and drops) what the session is sent for `d`, as a map would
/// (a session that stops reading is closed by the server).
async fn read_for(ws: &mut Ws, d: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + d;
    loop {
        match tokio::time::timeout_at(until.into(), ws.next()).await {
            Err(_) => return Ok(()),
            Ok(Some(Ok(Message::Close(f)))) => anyhow::bail!("closed by the server: {f:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => anyhow::bail!("closed by the server"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u64, mib: u64) -> MemorySample {
        MemorySample {
            minute,
            rss: mib << 20,
            gauges: Default::default(),
        }
    }

    #[test]
    fn growth_is_judged_from_minute_ten_by_the_highest_later_sample() {
        let mut s: Vec<_> = (0..=20)
            .map(|m| at(m, if m < 10 { 100 + m * 50 } else { 1000 }))
            .collect();
        assert_eq!(
            growth_after_ten(&s),
            Some(0.0),
            "the first ten minutes do not count"
        );
        s[15] = at(15, 1060);
        let g = growth_after_ten(&s).expect("judged");
        assert!((g - 0.06).abs() < 1e-9, "the peak counts, not the last: {g}");
    }

    #[test]
    fn a_run_shorter_than_twenty_minutes_is_not_judged() {
        let s: Vec<_> = (0..=19).map(|m| at(m, 1000)).collect();
        assert_eq!(growth_after_ten(&s), None);
    }
}
