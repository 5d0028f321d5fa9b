//! The WebSocket clients loadgen plays: dispatch maps (positions feeds),
//! CAD systems (alerts), control rooms (standing and one-shot nearest).
//! Each measures what it sees; alerts and sampled nearest answers are
//! checked against what loadgen sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::world::{AlertKey, Fences, Held, Shared};
use bluelight_ingest::places::Place;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<bluelight_ingest::transport::DeviceStream>;

/// A histogram of microseconds (1 µs to 1 h, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

pub(crate) async fn connect(http: SocketAddr, token: Option<&str>) -> anyhow::Result<Ws> {
    let scheme = super::tls::ws_scheme();
    let url = match token {
        Some(t) => format!("{scheme}://{http}/v1/ws?token={t}"),
        None => format!("{scheme}://{http}/v1/ws"),
    };
    let connecting = async {
        // Nagle off (in `tls::connect`): a query is one small frame, and
        // waiting to coalesce it would add tens of milliseconds.
        let stream = super::tls::connect(http).await?;
        // 16 KiB reads: tungstenite zero-fills its whole read buffer before
        // each read, and loadgen shares the machine with the server.
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            stream,
            Some(
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(16 << 10),
            ),
        )
        .await?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(Duration::from_secs(10), connecting).await?
}

/// Sends a subscription and waits for its `subscribed`; returns its `sub`.
pub(crate) async fn subscribe(ws: &mut Ws, msg: Value) -> anyhow::Result<String> {
    ws.send(Message::Text(msg.to_string().into())).await?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed before subscribed"))??;
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str())?;
            match v["type"].as_str() {
                Some("subscribed") => return Ok(v["sub"].as_str().unwrap_or_default().to_owned()),
                Some("error") => anyhow::bail!("subscribe refused: {v}"),
                _ => {}
            }
        }
    }
}

/// What an alerts subscriber saw.
#[derive(Debug)]
pub struct AlertsSeen {
    /// The alerts in the order they came, tallied by [`counts`] for the
    /// report. (A map kept live was rehashed by all 50 subscribers at once
    /// each time the alerts passed a power of two: at a million alerts
    /// that held loadgen's runtime for about two seconds, and the soak
    /// reported those seconds as the server's.) Growing a large `Vec` is
    /// a `realloc` the allocator does by moving pages, not bytes.
    ///
    /// [`counts`]: AlertsSeen::counts
    pub received: Vec<AlertKey>,
    /// Alerts naming a unit or fence loadgen does not know.
    pub unknown: u64,
    /// Fix sent to alert received, µs (live alerts loadgen owed), after
    /// the warm-up.
    pub latency: Histogram<u64>,
    /// The same for fixes sent during the warm-up.
    pub latency_warmup: Histogram<u64>,
    /// The same for fixes sent (after the warm-up) while the analyst's
    /// export ran; these are not in `latency`.
    pub latency_export: Histogram<u64>,
    /// With `--export-at`, on one subscriber: every live alert after the
    /// warm-up as (when its fix was sent, latency µs), so the report can
    /// set the export's window beside equal windows before and after it.
    pub samples: Vec<(Instant, u32)>,
    /// Closed by the server (e.g. 1013) before the end.
    pub closed_early: Option<String>,
}

/// The parts of an alert frame loadgen reads (borrowed: no copies).
#[derive(serde::Deserialize)]
struct AlertFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    event: &'a str,
    #[serde(default, borrow)]
    fence: Option<&'a str>,
    #[serde(default)]
    time_ms: Option<i64>,
    #[serde(default, borrow)]
    unit: Option<UnitId<'a>>,
}

/// The parts of a nearest reply read for every reply.
#[derive(serde::Deserialize)]
struct ReplyHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    id: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct UnitId<'a> {
    #[serde(borrow)]
    id: &'a str,
}

/// Device times in a positions message, found by scanning the text (a
/// dispatch map's worth of JSON a second per subscriber adds up; loadgen
/// shares the machine with the server, so it reads only what it measures).
fn times_in(text: &str, mut f: impl FnMut(i64)) {
    const KEY: &str = "\"time_ms\":";
    let mut rest = text;
    while let Some(i) = rest.find(KEY) {
        rest = &rest[i + KEY.len()..];
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if let Ok(t) = rest[..end].parse() {
            f(t);
        }
        rest = &rest[end..];
    }
}

/// An alerts subscriber: every enter and exit alert.
pub async fn alerts_client(
    http: SocketAddr,
    token: Option<String>,
    shared: Arc<Shared>,
    fences: Arc<Fences>,
    keep_samples: bool,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<AlertsSeen> {
    let mut ws = connect(http, token.as_deref()).await?;
    subscribe(
        &mut ws,
        json!({"type":"subscribe","id":"a","stream":"alerts","events":["enter","exit"]}),
    )
    .await?;
    let mut seen = AlertsSeen::default();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let at = Instant::now();
                    let Ok(v) = serde_json::from_str::<AlertFrame<'_>>(t.as_str()) else { seen.unknown += 1; continue };
                    if v.kind != "alert" {
                        continue;
                    }
                    let unit = v.unit.and_then(|u| shared.unit_by_id.get(u.id));
                    let fence = v.fence.and_then(|id| fences.by_id.get(id));
                    let (Some(unit), Some(fence), Some(time_ms)) = (unit, fence, v.time_ms) else {
                        seen.unknown += 1;
                        continue;
                    };
                    let key = AlertKey { unit: *unit, fence: *fence, enter: v.event == "enter", time_ms };
                    seen.received.push(key);
                    // Every arrival is timed: a duplicate (which fails the
                    // run on its own) would be timed twice.
                    if let Some(sent) = shared.expected.sent(&key) {
                        let us = at.saturating_duration_since(sent).as_micros().max(1) as u64;
                        let h = if shared.warming_up(sent) {
                            &mut seen.latency_warmup
                        } else {
                            if keep_samples {
                                seen.samples.push((sent, u32::try_from(us).unwrap_or(u32::MAX)));
                            }
                            if shared.during_export(sent) { &mut seen.latency_export } else { &mut seen.latency }
                        };
                        let _ = h.record(us);
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    seen.closed_early = Some(f.map_or("closed".into(), |f| format!("{} {}", f.code, f.reason)));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    seen.closed_early = Some(e.to_string());
                    break;
                }
                None => {
                    seen.closed_early = Some("connection ended".into());
                    break;
                }
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(seen)
}

impl Default for AlertsSeen {
    /// Nothing seen yet.
    fn default() -> Self {
        Self {
            received: Vec::new(),
            unknown: 0,
            latency: histogram(),
            latency_warmup: histogram(),
            latency_export: histogram(),
            samples: Vec::new(),
            closed_early: None,
        }
    }
}

impl AlertsSeen {
    /// How many times each alert came.
    pub fn counts(&self) -> HashMap<AlertKey, u32> {
        let mut counts = HashMap::with_capacity(self.received.len());
        for key in &self.received {
            *counts.entry(*key).or_insert(0) += 1;
        }
        counts
    }
}

/// What a positions subscriber saw.
#[derive(Debug)]
pub struct FeedSeen {
    /// Snapshot, positions and left messages.
    pub messages: u64,
    /// Of them, binary (FlatBuffers) ones.
    pub binary: u64,
    /// Unit objects in positions messages.
    pub units: u64,
    /// Wall time of receipt minus the fix's device time, µs (loadgen sends
    /// a fix within its 5 ms tick of that time), after the warm-up.
    pub delay: Histogram<u64>,
    /// The same during the warm-up.
    pub delay_warmup: Histogram<u64>,
}

/// A dispatch map: a district-sized viewport (about 4 by 4 km) in a town,
/// at most 2 updates a second.
pub async fn positions_client(
    http: SocketAddr,
    token: Option<String>,
    town: Place,
    encoding: super::plan::MapEncoding,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<FeedSeen> {
    let mut ws = connect(http, token.as_deref()).await?;
    let bbox = [
        town.lon - 0.03,
        town.lat - 0.018,
        town.lon + 0.03,
        town.lat + 0.018,
    ];
    subscribe(
        &mut ws,
        json!({"type":"subscribe","id":"p","stream":"positions","area":{"bbox":bbox},"max_hz":2,"encoding":encoding.as_str()}),
    )
    .await?;
    let mut seen = FeedSeen {
        messages: 0,
        binary: 0,
        units: 0,
        delay: histogram(),
        delay_warmup: histogram(),
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let now = bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock);
                    seen.messages += 1;
                    if t.as_str().starts_with("{\"type\":\"positions\"") {
                        let h = if shared.warming_up(Instant::now()) { &mut seen.delay_warmup } else { &mut seen.delay };
                        times_in(t.as_str(), |time| {
                            seen.units += 1;
                            let _ = h.record(((now - time).max(0) as u64 * 1000).max(1));
                        });
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    let now = bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock);
                    seen.messages += 1;
                    seen.binary += 1;
                    // Verified, as a client must: the buffer came off a socket.
                    let Ok(p) = bluelight_ingest::wire::feed::root_as_positions(&b) else {
                        anyhow::bail!("a positions frame that is not a valid Positions buffer");
                    };
                    if p.kind() == bluelight_ingest::wire::feed::Kind::Positions {
                        let h = if shared.warming_up(Instant::now()) { &mut seen.delay_warmup } else { &mut seen.delay };
                        for pos in p.positions().unwrap_or_default() {
                            seen.units += 1;
                            let _ = h.record(((now - pos.time_ms()).max(0) as u64 * 1000).max(1));
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(seen)
}

/// A standing nearest query: counts the answers pushed.
pub async fn standing_client(
    http: SocketAddr,
    token: Option<String>,
    town: Place,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    let mut ws = connect(http, token.as_deref()).await?;
    subscribe(
        &mut ws,
        json!({"type":"subscribe","id":"n","stream":"nearest","point":[town.lon, town.lat],"k":5}),
    )
    .await?;
    let mut updates = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) if t.as_str().contains("\"nearest\"") => updates += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(updates)
}

/// What the one-shot nearest clients saw.
#[derive(Debug)]
pub struct NearestSeen {
    /// Queries sent.
    pub sent: u64,
    /// Answers received.
    pub answered: u64,
    /// Error replies.
    pub errors: u64,
    /// Answers to check that the checker had no room for.
    pub check_skipped: u64,
    /// Round trip, µs, after the warm-up.
    pub rtt: Histogram<u64>,
    /// The same for queries sent during the warm-up.
    pub rtt_warmup: Histogram<u64>,
}

/// A nearest answer for the checker.
pub struct Check {
    /// The query point (lat, lon).
    pub point: (f64, f64),
    /// How many of loadgen's fixes the server had taken when it answered
    /// (its `fixes_seen` less [`Shared::fixes_seen_base`]); none from a
    /// server that does not say.
    pub seen: Option<u64>,
    /// The answer's `results`.
    pub results: Value,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Answers checked against brute force.
    pub checked: u64,
    /// Checked answers that were wrong.
    pub wrong: u64,
    /// Answers that could not be judged: the server did not say what it
    /// had seen, or held a position of a unit that might be in the answer
    /// older than the [`super::world::KEPT`] kept.
    pub unjudged: u64,
    /// The first few reasons.
    pub wrong_examples: Vec<String>,
}

/// Checks nearest answers against brute force, on its own thread: a check
/// scans every unit, and on the clients' runtime it would delay the alerts
/// and answers being timed.
pub fn checker(shared: &Shared, checks: std::sync::mpsc::Receiver<Check>) -> Checked {
    bluelight_ingest::priority::lower_this_thread();
    let mut found = Checked::default();
    let base = shared.fixes_seen_base.get().copied();
    for c in checks {
        let Some(seen) = c.seen.zip(base).map(|(s, b)| s.saturating_sub(b)) else {
            found.unjudged += 1;
            continue;
        };
        match check_nearest(shared, c.point, seen, &c.results) {
            Ok(Judged::Right) => found.checked += 1,
            Ok(Judged::Unjudged) => found.unjudged += 1,
            Err(why) => {
                found.checked += 1;
                found.wrong += 1;
                if found.wrong_examples.len() < 5 {
                    found.wrong_examples.push(why);
                }
            }
        }
    }
    found
}

/// Units the checker reads under one lock of the truth.
pub const CHECK_BLOCK: usize = 4096;

/// K of every one-shot query.
pub const NEAREST_K: usize = 10;

/// A random query point: near a town, where incidents are.
pub fn query_point(rng: &mut StdRng, towns: &[Place]) -> (f64, f64) {
    let t = &towns[rng.random_range(0..towns.len().max(1))];
    bluelight_engine::sphere::destination(
        t.lat,
        t.lon,
        rng.random_range(0.0..360.0),
        rng.random_range(0.0..6000.0),
    )
}

/// Sends `qps` one-shot nearest queries a second until stopped, checking
/// one in `check_every`.
#[allow(clippy::too_many_arguments, reason = "one call site; the plan's fields")]
pub async fn nearest_client(
    http: SocketAddr,
    token: Option<String>,
    qps: f64,
    check_every: u32,
    seed: u64,
    towns: Arc<Vec<Place>>,
    shared: Arc<Shared>,
    checks: std::sync::mpsc::SyncSender<Check>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<NearestSeen> {
    let mut ws = connect(http, token.as_deref()).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / qps.max(0.001)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight: HashMap<u64, (Instant, f64, f64)> = HashMap::new();
    let mut seen = NearestSeen {
        sent: 0,
        answered: 0,
        errors: 0,
        check_skipped: 0,
        rtt: histogram(),
        rtt_warmup: histogram(),
    };
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = every.tick() => {
                let (lat, lon) = query_point(&mut rng, &towns);
                next_id += 1;
                inflight.insert(next_id, (Instant::now(), lat, lon));
                let q = json!({"type":"nearest","id":next_id.to_string(),"point":[lon, lat],"k":NEAREST_K,"fixes_seen":true});
                if ws.send(Message::Text(q.to_string().into())).await.is_err() {
                    break;
                }
                seen.sent += 1;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let at = Instant::now();
                    // Only the head: the results are read for the answers checked.
                    let Ok(head) = serde_json::from_str::<ReplyHead<'_>>(t.as_str()) else { continue };
                    let Some(id) = head.id.and_then(|s| s.parse::<u64>().ok()) else { continue };
                    let Some((sent, lat, lon)) = inflight.remove(&id) else { continue };
                    if head.kind == "error" {
                        seen.errors += 1;
                        continue;
                    }
                    seen.answered += 1;
                    let h = if shared.warming_up(sent) { &mut seen.rtt_warmup } else { &mut seen.rtt };
                    let _ = h.record(at.saturating_duration_since(sent).as_micros().max(1) as u64);
                    if id % u64::from(check_every) == 0 {
                        let Ok(mut v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                        let check = Check { point: (lat, lon), seen: v["fixes_seen"].as_u64(), results: v["results"].take() };
                        if checks.try_send(check).is_err() {
                            seen.check_skipped += 1;
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(seen)
}

fn haversine_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    use geo::Distance;
    geo::Haversine.distance(geo::Point::new(a.1, a.0), geo::Point::new(b.1, b.0))
}

/// A checked answer that was not wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Exactly the server's k nearest, in order, at the right distances.
    Right,
    /// A unit that may belong in it was held at a position no longer kept.
    Unjudged,
}

/// Checks an answer exactly against brute force over the positions the
/// server held when it answered: after the first `seen` fixes loadgen
/// sent ([`Truth::held`]). Each result must be a unit at the position the
/// server held for it, at the right distance, in order; and no unit left
/// out may be closer than the k-th. With loadgen's one ordered sender,
/// anything else is a wrong answer, not a lagging server.
///
/// The truth is locked a block of units at a time ([`CHECK_BLOCK`]): the
/// sender records every fix in it, and this thread runs at low priority,
/// so holding it for a whole scan stalled the sender behind a thread the
/// scheduler had set aside. What the sender adds meanwhile is newer than
/// `seen`, so the verdict does not change; a position it pushes out of
/// the kept ones makes the answer unjudged, never wrong.
pub fn check_nearest(shared: &Shared, q: (f64, f64), seen: u64, results: &Value) -> Result<Judged, String> {
    let results = results.as_array().ok_or("no results list")?;
    // geo's Earth radius and the server's may differ in the 6th digit.
    let tol = |d: f64| 1.0 + d * 1e-5;
    let mut returned: Vec<u32> = Vec::with_capacity(results.len());
    let mut last = 0.0;
    let mut judged = Judged::Right;
    let truth = shared.truth.lock().map_err(|_| "truth poisoned")?;
    for r in results {
        let id = r["unit"]["id"].as_str().ok_or("result without unit id")?;
        let u = *shared.unit_by_id.get(id).ok_or(format!("unknown unit {id}"))?;
        let (lat, lon) = (
            r["unit"]["lat"].as_f64().ok_or("no lat")?,
            r["unit"]["lon"].as_f64().ok_or("no lon")?,
        );
        let d = r["distance_m"].as_f64().ok_or("no distance_m")?;
        if d + tol(d) < last {
            return Err(format!("results out of order at {id}: {d} after {last}"));
        }
        last = d;
        let truth_d = haversine_m(q, (lat, lon));
        if (truth_d - d).abs() > tol(d) {
            return Err(format!("{id}: distance {d} but its position is {truth_d} m away"));
        }
        // serde_json's default float parsing may be off by an ulp.
        match truth.held(u as usize, seen) {
            Held::At(hl, ho) if (hl - lat).abs() < 1e-9 && (ho - lon).abs() < 1e-9 => {}
            Held::At(hl, ho) => {
                return Err(format!(
                    "{id}: at ({lat}, {lon}), but after {seen} fixes the server held ({hl}, {ho})"
                ));
            }
            Held::Nothing => {
                return Err(format!(
                    "{id}: returned before any of its {seen} fixes had arrived"
                ));
            }
            Held::Unknown => judged = Judged::Unjudged,
        }
        returned.push(u);
    }
    drop(truth);
    let kth = if results.len() < NEAREST_K {
        f64::INFINITY
    } else {
        last
    };
    // Metres per degree of latitude on geo's sphere, a little under, so the
    // latitude gap is a true lower bound of the distance.
    const M_PER_DEG: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0 * 0.999_999;
    // Farther than any unit moves over its kept reports and the older one
    // the server may hold (8 reports at 5 s, at the 150 m/s the server
    // accepts, is 6 km): a unit whose newest latitude is this much beyond
    // the k-th is beyond it at every position the server may hold.
    const MAX_TRAVEL_M: f64 = 50_000.0;
    let reach = kth + MAX_TRAVEL_M;
    let lon_cut = longitude_cut(q.0, reach / M_PER_DEG, reach);
    let units = shared
        .truth
        .lock()
        .map_err(|_| "truth poisoned")?
        .newest_lat
        .len();
    for start in (0..units).step_by(CHECK_BLOCK) {
        let truth = shared.truth.lock().map_err(|_| "truth poisoned")?;
        let block = start..(start + CHECK_BLOCK).min(truth.newest_lat.len());
        for (u, newest) in block.clone().zip(truth.newest_lat.get(block).unwrap_or_default()) {
            let beyond = newest.is_nan() || (newest - q.0).abs() * M_PER_DEG >= reach;
            if beyond || returned.contains(&(u as u32)) {
                continue;
            }
            let dlon = truth.newest_lon.get(u).map_or(0.0, |lon| (lon - q.1).abs());
            if dlon.min(360.0 - dlon) >= lon_cut {
                continue;
            }
            match truth.held(u, seen) {
                Held::Nothing => {}
                // The latitude gap alone clears most of the band.
                Held::At(lat, _) if (lat - q.0).abs() * M_PER_DEG >= kth => {}
                Held::At(lat, lon) => {
                    let d = haversine_m(q, (lat, lon));
                    if d + tol(kth.min(1e9)) < kth {
                        return Err(format!(
                            "unit {} was {d:.1} m away after {seen} fixes, but the answer's k-th is {kth:.1} m",
                            truth_id(shared, u)
                        ));
                    }
                }
                // Held at a position older than any kept: it may belong.
                Held::Unknown => judged = Judged::Unjudged,
            }
        }
    }
    Ok(judged)
}

/// The difference of longitude beyond which a point whose latitude is
/// within `lat_band` degrees of `lat` is at least `reach_m` away: by the
/// haversine formula, sin(d / 2R) >= sqrt(cos φ1 cos φ2) sin(Δλ / 2), and
/// both cosines are at least that of the band's largest latitude.
/// Infinite (no cut) when no longitude is far enough.
fn longitude_cut(lat: f64, lat_band: f64, reach_m: f64) -> f64 {
    // geo's sphere, a little larger, so the bound stays a lower bound.
    const R: f64 = 6_371_008.8 * 1.000_001;
    let half = reach_m / (2.0 * R);
    let widest = (lat.abs() + lat_band).min(90.0).to_radians().cos();
    let s = half.sin() / widest;
    if !half.is_finite() || half >= std::f64::consts::FRAC_PI_2 || s.is_nan() || s >= 1.0 {
        return f64::INFINITY;
    }
    2.0 * s.asin().to_degrees() * 1.000_001
}

/// A unit's id, for a message.
fn truth_id(shared: &Shared, u: usize) -> String {
    shared
        .unit_by_id
        .iter()
        .find(|(_, v)| **v as usize == u)
        .map_or_else(|| u.to_string(), |(id, _)| id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::world::truth;

    #[test]
    fn alerts_are_tallied_with_their_duplicates() {
        let key = |unit, enter| AlertKey {
            unit,
            fence: 7,
            enter,
            time_ms: 1_000,
        };
        let seen = AlertsSeen {
            received: vec![key(1, true), key(2, true), key(1, true), key(1, false)],
            ..AlertsSeen::default()
        };
        let counts = seen.counts();
        assert_eq!(counts.len(), 3);
        assert_eq!(
            counts[&key(1, true)],
            2,
            "a duplicate is counted, so the report fails it"
        );
        assert_eq!(counts[&key(2, true)], 1);
        assert_eq!(counts[&key(1, false)], 1);
    }

    /// Three units on a line north of the query point, 1.1 km apart, each
    /// sent twice: first at `lat`, then 0.05° (5.6 km) further north.
    fn world() -> Shared {
        let mut t = truth(3);
        for step in 0..2 {
            for u in 0..3usize {
                t.fixes += 1;
                t.recent[u].rotate_right(1);
                t.recent[u][0] = (51.01 + u as f64 * 0.01 + f64::from(step) * 0.05, -1.0);
                t.seq[u].rotate_right(1);
                t.seq[u][0] = t.fixes;
                (t.newest_lat[u], t.newest_lon[u]) = t.recent[u][0];
            }
        }
        Shared {
            truth: std::sync::Mutex::new(t),
            unit_by_id: (0..3).map(|u| (format!("U{u}"), u)).collect(),
            ..Shared::default()
        }
    }

    fn answer(units: &[(u32, (f64, f64))]) -> Value {
        let q = (51.0, -1.0);
        Value::Array(
            units
                .iter()
                .map(|(u, p)| json!({"unit":{"id":format!("U{u}"),"lat":p.0,"lon":p.1},"distance_m":haversine_m(q, *p)}))
                .collect(),
        )
    }

    fn check(shared: &Shared, seen: u64, results: &Value) -> Result<Judged, String> {
        check_nearest(shared, (51.0, -1.0), seen, results)
    }

    /// An answer is judged against what the server had seen: the same
    /// answer is right after 3 fixes and wrong after 6, and a unit the
    /// server could not yet know may not appear at all.
    #[test]
    fn an_answer_is_judged_against_the_fixes_the_server_had_seen() {
        let shared = world();
        let first: Vec<(u32, (f64, f64))> =
            (0..3).map(|u| (u, (51.01 + f64::from(u) * 0.01, -1.0))).collect();
        let second: Vec<(u32, (f64, f64))> =
            (0..3).map(|u| (u, (51.06 + f64::from(u) * 0.01, -1.0))).collect();
        assert_eq!(check(&shared, 3, &answer(&first)), Ok(Judged::Right));
        assert_eq!(check(&shared, 6, &answer(&second)), Ok(Judged::Right));
        // Lag is not an excuse: after 6 fixes the old positions are wrong.
        assert!(check(&shared, 6, &answer(&first)).is_err());
        // Unit 2's second fix (the 6th) had not arrived after 5.
        let mixed = vec![first[2], second[0], second[1]];
        assert_eq!(check(&shared, 5, &answer(&mixed)), Ok(Judged::Right));
        assert!(check(&shared, 4, &answer(&mixed)).is_err());
        // After 2 fixes, unit 2 was unknown to the server.
        assert!(check(&shared, 2, &answer(&first)).is_err());
        assert_eq!(check(&shared, 2, &answer(&first[..2])), Ok(Judged::Right));
        // Leaving out a unit it held is wrong (fewer than k: all must be there).
        assert!(check(&shared, 3, &answer(&first[..2])).is_err());
        // Out of order is wrong.
        let swapped = vec![first[1], first[0], first[2]];
        assert!(check(&shared, 3, &answer(&swapped)).is_err());
    }

    /// The longitude cut never passes over a unit that belongs: with a
    /// full answer (ten units on a line north of the query), a unit a few
    /// hundred metres east at the query's latitude, left out, makes it
    /// wrong; one two degrees east (140 km) does not.
    #[test]
    fn a_unit_beside_the_query_is_not_cut_by_longitude() {
        let place = |east_lon: f64| {
            let mut t = truth(NEAREST_K + 1);
            for u in 0..=NEAREST_K {
                let p = if u == NEAREST_K {
                    (51.0, east_lon)
                } else {
                    (51.01 + u as f64 * 0.001, -1.0)
                };
                t.fixes += 1;
                t.recent[u][0] = p;
                t.seq[u][0] = t.fixes;
                (t.newest_lat[u], t.newest_lon[u]) = p;
            }
            Shared {
                truth: std::sync::Mutex::new(t),
                unit_by_id: (0..=NEAREST_K as u32).map(|u| (format!("U{u}"), u)).collect(),
                ..Shared::default()
            }
        };
        let line: Vec<(u32, (f64, f64))> = (0..NEAREST_K as u32)
            .map(|u| (u, (51.01 + f64::from(u) * 0.001, -1.0)))
            .collect();
        let seen = NEAREST_K as u64 + 1;
        assert!(check(&place(-0.996), seen, &answer(&line)).is_err());
        assert_eq!(check(&place(1.0), seen, &answer(&line)), Ok(Judged::Right));
    }

    proptest::proptest! {
        /// Against the haversine distance itself, everywhere on the globe.
        #[test]
        fn the_longitude_cut_is_a_lower_bound(lat in -89.0f64..89.0, band in 0.0f64..5.0, reach in 1.0f64..2_000_000.0, dlat in -1.0f64..1.0, dlon in 0.0f64..180.0) {
            let cut = longitude_cut(lat, band, reach);
            let other = (lat + dlat * band).clamp(-90.0, 90.0);
            if dlon >= cut {
                proptest::prop_assert!(haversine_m((lat, 0.0), (other, dlon)) >= reach * 0.999_999);
            }
        }
    }

    /// A unit whose held position is older than the kept ones makes an
    /// answer it might belong to unjudged, never right or wrong.
    #[test]
    fn a_position_older_than_the_kept_ones_is_not_judged() {
        let shared = world();
        {
            let mut t = shared.truth.lock().expect("truth");
            for _ in 0..crate::loadgen::world::KEPT {
                t.fixes += 1;
                let n = t.fixes;
                t.recent[0].rotate_right(1);
                t.recent[0][0] = (51.2, -1.0);
                t.seq[0].rotate_right(1);
                t.seq[0][0] = n;
                t.newest_lat[0] = 51.2;
            }
        }
        let others: Vec<(u32, (f64, f64))> =
            (1..3).map(|u| (u, (51.01 + f64::from(u) * 0.01, -1.0))).collect();
        assert_eq!(check(&shared, 3, &answer(&others)), Ok(Judged::Unjudged));
    }
}
