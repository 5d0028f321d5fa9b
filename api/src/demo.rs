//! `bluelight demo`: the engine with the simulated fleet and sample fences.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bluelight_engine::{Agency, Engine, EngineConfig, Filter, NearestQuery, Outputs, Status, UnitSlot};
use bluelight_ingest::fleet::{Fleet, FleetConfig, SimFix};
use bluelight_ingest::places;

use crate::fence_json::{feature_id, fence_from_feature};

/// Sample fences shipped in `data/`.
pub const SAMPLE_FENCES: &str = include_str!("../../data/fences.geojson");

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated units.
    pub units: usize,
    /// Stop after this long (real time); `None` runs until interrupted.
    pub duration: Option<Duration>,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Seed of the fleet.
    pub seed: u64,
    /// Seconds between summaries.
    pub summary_every: Duration,
}

/// What a demo run saw, for its caller and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// Fixes applied.
    pub fixes: u64,
    /// Alerts fired.
    pub alerts: u64,
    /// Units that reported.
    pub units_seen: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Loads the sample fences into an engine; returns how many.
///
/// # Errors
/// A sample fence that does not parse (a test guards the shipped file).
pub fn load_sample_fences(engine: &mut Engine, now: i64) -> anyhow::Result<usize> {
    let fc: geojson::FeatureCollection = SAMPLE_FENCES.parse().context("data/fences.geojson")?;
    let mut out = Outputs::default();
    for f in &fc.features {
        let id = feature_id(f).context("sample fence without id")?;
        let spec = fence_from_feature(engine, &id, f).with_context(|| format!("sample fence {id}"))?;
        engine.put_fence(spec, now, &mut out)?;
    }
    Ok(fc.features.len())
}

/// Runs the demo, printing alerts and summaries to stdout.
///
/// # Errors
/// Broken shipped data.
pub fn run(opts: &DemoOptions) -> anyhow::Result<DemoReport> {
    let start = now_ms();
    let mut engine = Engine::new(EngineConfig::default())?;
    let fences = load_sample_fences(&mut engine, start)?;
    let towns = places::uk()?;
    let cfg = FleetConfig {
        units: opts.units,
        seed: opts.seed,
        start_ms: start,
        ..FleetConfig::default()
    };
    let mut fleet = Fleet::new(&cfg, &towns);
    let mut slots: Vec<UnitSlot> = Vec::with_capacity(opts.units);
    for u in fleet.units() {
        let slot = engine.register_key(u.key, &u.id);
        engine.set_meta(slot, Some(u.agency), Some(u.kind), Some(u.tags))?;
        slots.push(slot);
    }
    println!(
        "bluelight demo: {} simulated units around {} towns, {} sample fences; speed x{}",
        opts.units,
        towns.len(),
        fences,
        opts.speed
    );
    println!("(the HTTP/WebSocket server and dispatch map come with the api; this prints the live picture)");
    let t0 = Instant::now();
    let mut out = Outputs::default();
    let mut batch: Vec<SimFix> = Vec::new();
    let mut report = DemoReport::default();
    let mut last_summary = Instant::now();
    let mut last_tick = start;
    let mut fixes_since = 0u64;
    loop {
        let elapsed = t0.elapsed();
        if opts.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        let sim_now = start + (elapsed.as_secs_f64() * opts.speed * 1000.0) as i64;
        batch.clear();
        fleet.advance(sim_now, &mut batch);
        out.clear();
        for f in &batch {
            engine.apply(slots[f.unit as usize], &f.fix, &mut out);
        }
        engine.flush(&mut out);
        if sim_now - last_tick >= 1000 {
            engine.tick(sim_now, &mut out);
            last_tick = sim_now;
        }
        report.fixes += batch.len() as u64;
        fixes_since += batch.len() as u64;
        for a in &out.alerts {
            report.alerts += 1;
            let what = a.fence.as_deref().or(a.rule.as_deref()).unwrap_or("");
            println!(
                "alert #{:<6} {:<9} {:<12} {}",
                a.seq,
                a.event.as_str(),
                engine.unit_id(a.unit),
                what
            );
        }
        if last_summary.elapsed() >= opts.summary_every {
            let secs = last_summary.elapsed().as_secs_f64();
            summary(&engine, sim_now, fixes_since as f64 / secs);
            fixes_since = 0;
            last_summary = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.units_seen = slots
        .iter()
        .filter(|s| engine.unit_view(**s).is_some_and(|v| v.fix.is_some()))
        .count();
    Ok(report)
}

fn summary(engine: &Engine, now: i64, rate: f64) {
    println!(
        "-- {} units, {:.0} fixes/s, {} alerts so far, {} cover cells",
        engine.unit_count(),
        rate,
        engine.last_seq(),
        engine.cover_cells()
    );
    // Trafalgar Square: the three nearest available ambulances.
    let q = NearestQuery {
        lat: 51.5080,
        lon: -0.1281,
        k: 3,
        filter: Filter {
            statuses: Filter::statuses(&[Status::Available]).statuses,
            ..Filter::agencies(&[Agency::Ambulance])
        },
        max_distance_m: None,
        include_stale: false,
    };
    let near: Vec<String> = engine
        .nearest(&q, now)
        .iter()
        .map(|n| format!("{} {:.0} m", engine.unit_id(n.unit), n.distance_m))
        .collect();
    println!(
        "   nearest available ambulances to Trafalgar Square: {}",
        near.join(", ")
    );
}
