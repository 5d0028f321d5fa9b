//! `bluelight demo`: the server, in memory, with the simulated fleet sending
//! its fixes through the real ingest pipeline, the sample fences, and the
//! dispatch map at `/`. Alerts and a summary also go to the console.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bluelight_engine::{Agency, Engine, Filter, NearestQuery, Status};
use bluelight_ingest::batch::UnitRef;
use bluelight_ingest::fleet::{Fleet, FleetConfig, SimFix};
use bluelight_ingest::places;

use crate::config::ServeConfig;
use crate::hub::AlertSelect;
use crate::server;
use crate::session::{Outgoing, Session};
use crate::state::AppState;
use bluelight_ingest::definitions::{FenceDef, feature_id};
use bluelight_ingest::queue::Command;

/// Sample fences shipped in `data/`.
pub const SAMPLE_FENCES: &str = include_str!("../../data/fences.geojson");

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// HTTP address (the map is at `/`).
    pub listen: SocketAddr,
    /// Ingest address.
    pub ingest: SocketAddr,
    /// Simulated units.
    pub units: usize,
    /// Stop after this long (real time); `None` runs until interrupted.
    pub duration: Option<Duration>,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Seed of the fleet.
    pub seed: u64,
    /// Time between summaries.
    pub summary_every: Duration,
}

/// What a demo run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// Fixes sent.
    pub fixes: u64,
    /// Alerts printed.
    pub alerts: u64,
    /// Units that reported.
    pub units_seen: usize,
}

/// Loads the sample fences into a running server; returns how many.
///
/// # Errors
/// A sample fence that does not parse (a test guards the shipped file).
pub async fn load_sample_fences(state: &AppState) -> anyhow::Result<usize> {
    let fc: geojson::FeatureCollection = SAMPLE_FENCES.parse().context("data/fences.geojson")?;
    for f in &fc.features {
        let id = feature_id(f).context("sample fence without id")?;
        let def = FenceDef::from_feature(&id, f).with_context(|| format!("sample fence {id}"))?;
        let command = Command::PutFence {
            def: Arc::new(def),
            now_ms: state.now_ms(),
        };
        state
            .queue
            .change(command)
            .await?
            .map_err(|e| anyhow::anyhow!("sample fence {id}: {e}"))?;
    }
    Ok(fc.features.len())
}

/// Runs the demo until `duration` (or forever).
///
/// # Errors
/// An address that cannot be bound, or broken shipped data.
pub async fn run(opts: &DemoOptions) -> anyhow::Result<DemoReport> {
    let cfg = ServeConfig {
        listen: opts.listen,
        ingest: opts.ingest,
        ..ServeConfig::default()
    };
    let running = server::start(&cfg).await?;
    let state = running.state.clone();
    let fences = load_sample_fences(&state).await?;
    let towns = places::uk()?;
    let start = state.now_ms();
    let fleet_cfg = FleetConfig {
        units: opts.units,
        seed: opts.seed,
        start_ms: start,
        ..FleetConfig::default()
    };
    let mut fleet = Fleet::new(&fleet_cfg, &towns);
    let console = Arc::new(Session::new(state.tuning.session_queue));
    {
        let mut e = state.engine.lock();
        for u in fleet.units() {
            let slot = e.register_key(u.key, &u.id);
            e.set_meta(slot, Some(u.agency), Some(u.kind), Some(u.tags))?;
        }
        state
            .hub
            .subscribe_alerts(&e, &console, "console".into(), AlertSelect::default(), None);
    }
    println!("listening http={} {}", running.http, running.devices);
    println!(
        "bluelight demo: {} simulated units around {} towns, {} sample fences, speed x{}",
        opts.units,
        towns.len(),
        fences,
        opts.speed
    );
    println!(
        "open http://{}/ for the dispatch map (API: http://{}/v1/units, ws://{}/v1/ws)",
        running.http, running.http, running.http
    );
    let t0 = Instant::now();
    let mut sim: Vec<SimFix> = Vec::new();
    let mut report = DemoReport::default();
    let mut last_summary = Instant::now();
    let mut fixes_since = 0u64;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let elapsed = t0.elapsed();
        if opts.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        // Device time may run ahead of the clock at --speed > 1; the server
        // accepts up to five minutes ahead, so the fleet never gets further.
        let sim_now = start
            + ((elapsed.as_secs_f64() * opts.speed * 1000.0) as i64).min(state.now_ms() - start + 240_000);
        sim.clear();
        fleet.advance(sim_now, &mut sim);
        if !sim.is_empty() {
            let mut batch = state.queue.batch();
            for (i, f) in sim.iter().enumerate() {
                let key = fleet.units()[f.unit as usize].key;
                batch.fixes.push((UnitRef::Key(key), f.fix));
                batch.index.push(i as u32);
            }
            report.fixes += sim.len() as u64;
            fixes_since += sim.len() as u64;
            if state.queue.send(batch).await.is_err() {
                break;
            }
        }
        let (queued, _) = console.drain();
        if !queued.is_empty() {
            let e = state.engine.lock();
            for m in queued {
                if let Outgoing::Alert(_, a) = m {
                    report.alerts += 1;
                    let what = a.fence.as_deref().or(a.rule.as_deref()).unwrap_or("");
                    println!(
                        "alert #{:<6} {:<9} {:<12} {}",
                        a.seq,
                        a.event.as_str(),
                        e.unit_id(a.unit),
                        what
                    );
                }
            }
        }
        if last_summary.elapsed() >= opts.summary_every {
            let rate = fixes_since as f64 / last_summary.elapsed().as_secs_f64();
            summary(&state.engine.lock(), sim_now, rate);
            fixes_since = 0;
            last_summary = Instant::now();
        }
    }
    // Let the writer drain what was sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        let e = state.engine.lock();
        report.units_seen = fleet
            .units()
            .iter()
            .filter(|u| e.find_unit(&u.id).and_then(|s| e.last_position(s)).is_some())
            .count();
    }
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
