//! A seeded world for benchmarks: units clustered around real UK towns (as
//! responders are), polygon fences of 50–500 vertices near towns (hospital
//! sites to districts), dispatch-map feeds, and units that move 1–30 m per
//! fix along a slowly turning heading.

use bluelight_engine::{
    Agency, Detect, Engine, EngineConfig, FenceSpec, Filter, Fix, Outputs, Shape, Status, UnitSlot, sphere,
};
use bluelight_ingest::places::{self, Place};
use geo::{LineString, MultiPolygon, Polygon};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// One moving unit of the fixture.
#[derive(Debug, Clone, Copy)]
pub struct Mover {
    /// Position.
    pub lat: f64,
    /// Position.
    pub lon: f64,
    /// Heading, degrees.
    pub heading: f64,
    /// Time of its latest fix.
    pub time_ms: i64,
}

/// What a world is made of.
#[derive(Debug, Clone, Copy)]
pub struct WorldSpec {
    /// Units.
    pub units: usize,
    /// Polygon fences.
    pub fences: usize,
    /// Area feeds (bbox viewports).
    pub feeds: usize,
    /// Seed.
    pub seed: u64,
}

/// A loaded engine and the state that drives it.
pub struct World {
    /// The engine.
    pub engine: Engine,
    /// Slots of the units, by index.
    pub slots: Vec<UnitSlot>,
    /// Movers, by index.
    pub movers: Vec<Mover>,
    /// Next unit to report (round robin).
    next: usize,
    rng: StdRng,
}

/// Start of fixture time.
pub const T0: i64 = 1_763_726_400_000;

/// A random place in a weighted-random UK town, uniform over a disc whose
/// radius grows with the town (`scale_m` × √weight: about 19 km for London,
/// 3 km for a small town), as responders, sites and dispatch areas are.
pub fn near_town(rng: &mut StdRng, towns: &[Place], scale_m: f64) -> (f64, f64) {
    let total: u32 = towns.iter().map(|t| t.weight).sum();
    let mut pick = rng.random_range(0..total.max(1));
    let mut town = &towns[0];
    for t in towns {
        if pick < t.weight {
            town = t;
            break;
        }
        pick -= t.weight;
    }
    let radius = scale_m * f64::from(town.weight).sqrt();
    let u: f64 = rng.random_range(0.0..1.0);
    sphere::destination(
        town.lat,
        town.lon,
        rng.random_range(0.0..360.0),
        radius * u.sqrt(),
    )
}

/// A simple (star-shaped) polygon with `n` vertices around `c`.
pub fn star_polygon(rng: &mut StdRng, c: (f64, f64), radius_m: f64, n: usize) -> Shape {
    let mut ring: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let r = radius_m * rng.random_range(0.6..1.0);
            let (lat, lon) = sphere::destination(c.0, c.1, 360.0 * i as f64 / n as f64, r);
            (lon, lat)
        })
        .collect();
    ring.push(ring[0]);
    Shape::polygon(MultiPolygon(vec![Polygon::new(LineString::from(ring), vec![])]))
        .unwrap_or_else(|e| panic!("fixture polygon: {e}"))
}

impl World {
    /// Builds a world: fences and feeds first, then every unit's first fix.
    /// History is kept at a 2M-fix cap, so steady state recycles it.
    pub fn new(spec: WorldSpec) -> Self {
        Self::with_history(spec, 2_000_000)
    }

    /// As [`World::new`] with a history cap (0 = no history).
    pub fn with_history(spec: WorldSpec, history_max_fixes: usize) -> Self {
        let towns = places::uk().unwrap_or_else(|e| panic!("shipped places: {e}"));
        let mut rng = StdRng::seed_from_u64(spec.seed);
        // History at its cap recycles its buckets, as in steady state.
        let cfg = EngineConfig {
            history_max_fixes,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(cfg).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Outputs::default();
        for i in 0..spec.fences {
            let c = near_town(&mut rng, &towns, 3_000.0);
            // Sites (hospitals, stations, estates) of 100–800 m radius.
            let radius = rng.random_range(100.0..800.0);
            let n = rng.random_range(50..=500);
            let shape = star_polygon(&mut rng, c, radius, n);
            let fence = FenceSpec {
                id: format!("fence-{i}"),
                shape,
                detect: Detect {
                    enter: true,
                    exit: true,
                    dwell: i % 4 == 0,
                },
                dwell_s: 300,
                hysteresis_m: if i % 2 == 0 { 20.0 } else { 0.0 },
                filter: Filter::all(),
                source: None,
            };
            engine
                .put_fence(fence, T0, &mut out)
                .unwrap_or_else(|e| panic!("fixture fence: {e}"));
        }
        for _ in 0..spec.feeds {
            let c = near_town(&mut rng, &towns, 4_000.0);
            // Dispatch-map viewports of 3–12 km across.
            let half_lat = rng.random_range(1_500.0..6_000.0) / 111_000.0;
            let half_lon = half_lat * 1.6;
            let shape = Shape::bbox([c.1 - half_lon, c.0 - half_lat, c.1 + half_lon, c.0 + half_lat])
                .unwrap_or_else(|e| panic!("fixture bbox: {e}"));
            engine
                .subscribe_feed(shape, Filter::all(), T0)
                .unwrap_or_else(|e| panic!("fixture feed: {e}"));
        }
        let mut slots = Vec::with_capacity(spec.units);
        let mut movers = Vec::with_capacity(spec.units);
        for i in 0..spec.units {
            let slot = engine.register_key(i as u64, &format!("U-{i:07}"));
            let agency = Agency::ALL[1 + i % 4];
            engine
                .set_meta(slot, Some(agency), Some("car"), None)
                .unwrap_or_else(|e| panic!("{e}"));
            let (lat, lon) = near_town(&mut rng, &towns, 4_000.0);
            let status = if i % 3 == 0 {
                Status::Enroute
            } else {
                Status::Available
            };
            engine.apply(slot, &Fix::at(T0, lat, lon).with_status(status), &mut out);
            slots.push(slot);
            movers.push(Mover {
                lat,
                lon,
                heading: rng.random_range(0.0..360.0),
                time_ms: T0,
            });
            if out.alerts.len() + out.feed.len() > 1 << 20 {
                out.clear();
            }
        }
        engine.flush(&mut out);
        Self {
            engine,
            slots,
            movers,
            next: 0,
            rng,
        }
    }

    /// Applies steady-state fixes until history reaches its cap (bounded by
    /// the cap itself), so later measurements see history recycling.
    pub fn fill_history(&mut self, out: &mut Outputs) {
        let cap = self.engine.config().history_max_fixes;
        let mut batch = Vec::with_capacity(10_000);
        for _ in 0..cap.div_ceil(10_000) + 1 {
            if self.engine.history_stats().held >= cap {
                break;
            }
            self.next_fixes(10_000, &mut batch);
            out.clear();
            for (slot, fix) in &batch {
                self.engine.apply(*slot, fix, out);
            }
        }
        self.engine.flush(out);
        out.clear();
    }

    /// The next `n` steady-state fixes (round robin over units, each moving
    /// 1–30 m and turning a little), into `batch`.
    pub fn next_fixes(&mut self, n: usize, batch: &mut Vec<(UnitSlot, Fix)>) {
        batch.clear();
        for _ in 0..n {
            let i = self.next;
            self.next = (self.next + 1) % self.movers.len();
            let m = &mut self.movers[i];
            let d: f64 = self.rng.random_range(1.0..30.0);
            m.heading += self.rng.random_range(-20.0..20.0);
            let h = m.heading.to_radians();
            m.lat += d * h.cos() / 111_320.0;
            m.lon += d * h.sin() / (111_320.0 * m.lat.to_radians().cos());
            m.time_ms += 1000;
            batch.push((self.slots[i], Fix::at(m.time_ms, m.lat, m.lon)));
        }
    }
}
