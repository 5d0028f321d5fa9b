//! The same fleet and nearest workload against Redis GEO (GEOADD pipelined
//! per 1,000 fixes, GEOSEARCH ... ASC COUNT k), measured the same way.
//! Redis GEO has no fences, feeds or standing queries: those are not
//! compared.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bluelight_ingest::places::Place;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::clients::{NEAREST_K, histogram, query_point};
use super::plan::Plan;
use super::world::{Shared, Sink, fleet, send_fleet, truth};

/// The sorted set loadgen writes.
pub const KEY: &str = "bluelight:loadgen:units";

/// What the Redis run measured.
#[derive(Debug)]
pub struct RedisRun {
    /// Fixes sent (GEOADD members).
    pub sent: u64,
    /// Seconds of load.
    pub seconds: f64,
    /// Members in the set afterwards (units it holds).
    pub members: u64,
    /// Batches that failed.
    pub errors: u64,
    /// Nearest queries answered.
    pub answered: u64,
    /// Round trip, µs.
    pub rtt: Histogram<u64>,
    /// The same during the warm-up.
    pub rtt_warmup: Histogram<u64>,
    /// Redis's own resident memory afterwards (`INFO memory`), bytes.
    pub used_memory: Option<u64>,
}

/// Runs the plan's fleet and nearest workload against Redis at `url`.
///
/// # Errors
/// Redis cannot be reached.
pub fn run(plan: &Plan, url: &str, towns: &Arc<Vec<Place>>) -> anyhow::Result<RedisRun> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(10))?;
    let _: () = redis::cmd("DEL").arg(KEY).query(&mut conn)?;
    let fl = fleet(
        plan.units,
        plan.interval_ms,
        plan.seed,
        towns,
        bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock),
    );
    let shared = Arc::new(Shared {
        truth: std::sync::Mutex::new(truth(plan.units)),
        ..Shared::default()
    });
    let started = Instant::now();
    let until = started + Duration::from_secs(plan.seconds);
    let sender = {
        let shared = shared.clone();
        let sink = Sink::Redis(Box::new(
            client.get_connection_with_timeout(Duration::from_secs(10))?,
        ));
        std::thread::spawn(move || send_fleet(fl, None, &shared, sink, until))
    };
    let mut rtt = histogram();
    let mut rtt_warmup = histogram();
    let steady_from = started + Duration::from_secs(plan.warmup_s);
    let mut answered = 0u64;
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x9ea7);
    if plan.nearest_qps > 0 {
        let gap = Duration::from_secs_f64(1.0 / f64::from(plan.nearest_qps));
        let mut next = Instant::now();
        while Instant::now() < until {
            let (lat, lon) = query_point(&mut rng, towns);
            let t = Instant::now();
            // As a Redis user finds the k nearest: a small radius first,
            // widened until k are found (GEOSEARCH sorts everything inside
            // the radius, so one huge radius is slow where units are dense).
            let mut radius_km = 1.0;
            let r = loop {
                let r: redis::RedisResult<Vec<(String, f64)>> = redis::cmd("GEOSEARCH")
                    .arg(KEY)
                    .arg("FROMLONLAT")
                    .arg(lon)
                    .arg(lat)
                    .arg("BYRADIUS")
                    .arg(radius_km)
                    .arg("km")
                    .arg("ASC")
                    .arg("COUNT")
                    .arg(NEAREST_K)
                    .arg("WITHDIST")
                    .query(&mut conn);
                match r {
                    Ok(v) if v.len() < NEAREST_K && radius_km < 1000.0 => radius_km *= 4.0,
                    other => break other,
                }
            };
            if r.is_ok() {
                answered += 1;
                let h = if t < steady_from {
                    &mut rtt_warmup
                } else {
                    &mut rtt
                };
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
            }
            next += gap;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = sender.join();
    let seconds = started.elapsed().as_secs_f64();
    let members: u64 = redis::cmd("ZCARD").arg(KEY).query(&mut conn).unwrap_or(0);
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut conn)
        .unwrap_or_default();
    let used_memory = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok());
    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(KEY).query(&mut conn);
    Ok(RedisRun {
        sent: shared.sent.load(Ordering::Relaxed),
        seconds,
        members,
        errors: shared.send_errors.load(Ordering::Relaxed),
        answered,
        rtt,
        rtt_warmup,
        used_memory,
    })
}
