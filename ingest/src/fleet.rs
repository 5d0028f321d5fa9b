//! The simulated fleet: a deterministic source of realistic fixes.
//!
//! Each unit belongs to a town and an agency. Available units patrol between
//! random points within a few kilometres of their town at 5–13 m/s or sit at
//! their base; now and then one is dispatched to an incident (enroute at
//! 15–30 m/s), stays at the scene for minutes, and becomes available again.
//! Rarely a crew presses the emergency button. Every unit reports every
//! 1–10 s with a few metres of GPS noise. Same seed, same fleet, same fixes.
//!
//! Reports are scheduled in a calendar of one list per millisecond (a
//! load generator's hot loop: a heap of 300k units cost a cache-missing
//! sift per fix), so report intervals are capped at [`MAX_INTERVAL_MS`].
//! For the same reason a leg's direction is worked out once, when it
//! starts, and a unit moves along it in degrees per metre: legs are at
//! most a dozen kilometres, where that line and the great circle differ by
//! millimetres, and spherical trigonometry per report was a sixth of a
//! load generator's time at 300,000 fixes a second.

use bluelight_engine::sphere;
use bluelight_engine::{Agency, Fix, Status};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::places::Place;

/// The longest report interval a fleet takes (longer ones are cut to it):
/// the calendar holds one list per millisecond of it.
pub const MAX_INTERVAL_MS: u32 = 600_000;

/// How a fleet is made.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Number of units.
    pub units: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Shortest report interval, ms.
    pub min_interval_ms: u32,
    /// Longest report interval, ms (at most [`MAX_INTERVAL_MS`]).
    pub max_interval_ms: u32,
    /// Time of the first reports (device time, ms since the epoch).
    pub start_ms: i64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            units: 3000,
            seed: 1,
            min_interval_ms: 1000,
            max_interval_ms: 10_000,
            start_ms: 0,
        }
    }
}

/// One simulated unit.
#[derive(Debug, Clone)]
pub struct SimUnit {
    /// Numeric device key (FlatBuffers `unit`).
    pub key: u64,
    /// Human id, e.g. `AMB-0104`.
    pub id: String,
    /// Agency.
    pub agency: Agency,
    /// Kind, e.g. `rrv`.
    pub kind: &'static str,
    /// Tags.
    pub tags: &'static [&'static str],
    /// Base (town centre plus an offset).
    home: (f64, f64),
    /// Current position.
    pub lat: f64,
    /// Current position.
    pub lon: f64,
    /// Where it is heading.
    target: (f64, f64),
    /// Current speed, m/s.
    speed: f64,
    /// The current leg's direction: degrees of latitude and longitude a
    /// metre along it.
    per_m: (f64, f64),
    /// Metres left of the current leg.
    remaining_m: f64,
    /// The current leg's initial bearing, degrees (the reported heading).
    heading: f64,
    /// Degrees of longitude a metre east, at the unit's home.
    lon_per_m: f64,
    /// Current status.
    pub status: Status,
    /// Time it stops waiting (parked or at scene).
    wait_until_ms: i64,
    /// Report interval, ms.
    interval_ms: i64,
    /// Time of its last report.
    last_ms: i64,
}

/// One fix of one simulated unit (by index into [`Fleet::units`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimFix {
    /// Index of the unit.
    pub unit: u32,
    /// The fix.
    pub fix: Fix,
}

/// The simulated fleet.
#[derive(Debug)]
pub struct Fleet {
    units: Vec<SimUnit>,
    /// Units due at each millisecond `t`, at `due[t mod due.len()]`: every
    /// report not yet made falls within one longest interval of `next_ms`,
    /// which is shorter than the calendar.
    due: Vec<Vec<u32>>,
    /// The first millisecond whose reports have not been made.
    next_ms: i64,
    rng: StdRng,
}

const KINDS: [(Agency, &str, &[&str]); 7] = [
    (Agency::Police, "patrol-car", &["armed"]),
    (Agency::Police, "response-car", &[]),
    (Agency::Ambulance, "ambulance", &["paramedic"]),
    (Agency::Ambulance, "rrv", &["paramedic"]),
    (Agency::Fire, "pump", &["water"]),
    (Agency::Fire, "aerial", &["rescue"]),
    (Agency::Coastguard, "rescue-team", &["rescue"]),
];

fn prefix(a: Agency) -> &'static str {
    match a {
        Agency::Police => "POL",
        Agency::Ambulance => "AMB",
        Agency::Fire => "FIRE",
        Agency::Coastguard => "CG",
        Agency::Other => "OTH",
    }
}

impl Fleet {
    /// Creates a fleet spread over `places` by weight.
    pub fn new(cfg: &FleetConfig, places: &[Place]) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let total: u32 = places.iter().map(|p| p.weight.max(1)).sum::<u32>().max(1);
        let max_i = i64::from(cfg.max_interval_ms.clamp(1, MAX_INTERVAL_MS));
        let min_i = i64::from(cfg.min_interval_ms).clamp(1, max_i);
        let mut units = Vec::with_capacity(cfg.units);
        let mut due = vec![Vec::new(); max_i as usize + 1];
        for i in 0..cfg.units {
            let mut pick = rng.random_range(0..total);
            let town = places
                .iter()
                .find(|p| {
                    let w = p.weight.max(1);
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .or(places.first());
            let (tlat, tlon) = town.map_or((51.5, -0.12), |t| (t.lat, t.lon));
            // Police half the fleet, ambulance a quarter, fire most of the rest.
            let k = match rng.random_range(0..100) {
                0..25 => 0,
                25..50 => 1,
                50..65 => 2,
                65..75 => 3,
                75..88 => 4,
                88..98 => 5,
                _ => 6,
            };
            let (agency, kind, tags) = KINDS[k];
            let home = sphere::destination(
                tlat,
                tlon,
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..4000.0),
            );
            let interval_ms = rng.random_range(min_i..=max_i);
            let first = cfg.start_ms + rng.random_range(0..interval_ms);
            units.push(SimUnit {
                key: 1_000_000 + i as u64,
                id: format!("{}-{:05}", prefix(agency), i),
                agency,
                kind,
                tags,
                home,
                lat: home.0,
                lon: home.1,
                target: home,
                speed: 0.0,
                per_m: (0.0, 0.0),
                remaining_m: 0.0,
                heading: 0.0,
                lon_per_m: 1.0 / (DEG_M * home.0.to_radians().cos().max(0.01)),
                status: Status::Available,
                wait_until_ms: first + rng.random_range(0..120_000),
                interval_ms,
                last_ms: cfg.start_ms,
            });
            if let Some(list) = due.get_mut(first.rem_euclid(max_i + 1) as usize) {
                list.push(i as u32);
            }
        }
        Self {
            units,
            due,
            next_ms: cfg.start_ms,
            rng,
        }
    }

    /// The units.
    pub fn units(&self) -> &[SimUnit] {
        &self.units
    }

    /// Appends every fix due at or before `now_ms`, in time order (units
    /// due in the same millisecond by index).
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<SimFix>) {
        let len = self.due.len() as i64;
        while self.next_ms <= now_ms {
            let t = self.next_ms;
            let b = t.rem_euclid(len) as usize;
            let mut list = std::mem::take(&mut self.due[b]);
            list.sort_unstable();
            for &i in &list {
                let Some(u) = self.units.get_mut(i as usize) else {
                    continue;
                };
                let fix = step(u, &mut self.rng, t);
                out.push(SimFix { unit: i, fix });
                // 1 <= interval < len: never this millisecond's own list.
                let next = (t + u.interval_ms).rem_euclid(len) as usize;
                self.due[next].push(i);
            }
            list.clear();
            self.due[b] = list;
            self.next_ms += 1;
        }
    }
}

/// Metres a degree of latitude (and of longitude at the equator).
const DEG_M: f64 = sphere::EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// Moves a unit to time `t` and returns its report.
fn step(u: &mut SimUnit, rng: &mut StdRng, t: i64) -> Fix {
    let dt = (t - u.last_ms).max(0) as f64 / 1000.0;
    u.last_ms = t;
    if t >= u.wait_until_ms {
        let travel = u.speed * dt;
        if u.speed > 0.0 && travel < u.remaining_m {
            u.lat += u.per_m.0 * travel;
            u.lon += u.per_m.1 * travel;
            u.remaining_m -= travel;
        } else {
            if u.speed > 0.0 {
                (u.lat, u.lon) = u.target;
            }
            next_leg(u, rng, t);
            start_leg(u);
        }
    }
    // Rarely, an emergency button press; it clears at the next leg.
    if u.status != Status::Emergency && rng.random_range(0..200_000) == 0 {
        u.status = Status::Emergency;
    }
    // GPS noise: up to 3 m in any direction.
    let (sin, cos) = rng.random_range(0.0..std::f64::consts::TAU).sin_cos();
    let noise_m = rng.random_range(0.0..3.0);
    Fix {
        time_ms: t,
        lat: u.lat + cos * noise_m / DEG_M,
        lon: u.lon + sin * noise_m * u.lon_per_m,
        accuracy_m: rng.random_range(3.0..10.0),
        speed_mps: u.speed as f32,
        heading_deg: u.heading as f32,
        status: u.status,
    }
}

/// Works out the leg from the unit's position to its target.
fn start_leg(u: &mut SimUnit) {
    let d = sphere::distance_m(u.lat, u.lon, u.target.0, u.target.1);
    u.remaining_m = d;
    u.heading = bearing(u.lat, u.lon, u.target.0, u.target.1);
    u.per_m = if d > 0.0 {
        ((u.target.0 - u.lat) / d, (u.target.1 - u.lon) / d)
    } else {
        (0.0, 0.0)
    };
}

/// Chooses what a unit does next, having reached its target or waited.
fn next_leg(u: &mut SimUnit, rng: &mut StdRng, t: i64) {
    let far = |rng: &mut StdRng, from: (f64, f64), max_m: f64| {
        sphere::destination(
            from.0,
            from.1,
            rng.random_range(0.0..360.0),
            rng.random_range(300.0..max_m),
        )
    };
    match u.status {
        Status::Enroute => {
            u.status = Status::AtScene;
            u.speed = 0.0;
            u.wait_until_ms = t + rng.random_range(120_000..900_000);
        }
        Status::AtScene | Status::Emergency | Status::Unavailable => {
            u.status = Status::Available;
            u.target = u.home;
            u.speed = rng.random_range(8.0..14.0);
        }
        Status::Available | Status::Unknown => {
            let roll = rng.random_range(0..100);
            if roll < 8 {
                u.status = Status::Enroute;
                u.target = far(rng, (u.lat, u.lon), 12_000.0);
                u.speed = rng.random_range(15.0..30.0);
            } else if roll < 20 {
                u.speed = 0.0;
                u.wait_until_ms = t + rng.random_range(60_000..600_000);
            } else {
                u.target = far(rng, u.home, 8_000.0);
                u.speed = rng.random_range(5.0..13.0);
            }
        }
    }
}

/// Initial bearing from one point to another, degrees.
fn bearing(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dl = (lon2 - lon1).to_radians();
    let y = dl.sin() * p2.cos();
    let x = p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places;

    fn fleet(n: usize, seed: u64) -> Fleet {
        let cfg = FleetConfig {
            units: n,
            seed,
            ..FleetConfig::default()
        };
        Fleet::new(&cfg, &places::uk().expect("places"))
    }

    #[test]
    fn same_seed_gives_the_same_fixes() {
        let (mut a, mut b) = (fleet(200, 7), fleet(200, 7));
        let (mut fa, mut fb) = (Vec::new(), Vec::new());
        a.advance(600_000, &mut fa);
        b.advance(600_000, &mut fb);
        assert_eq!(fa, fb);
    }

    #[test]
    fn fixes_come_in_time_order_at_the_configured_rates() {
        let mut f = fleet(500, 3);
        let mut out = Vec::new();
        // In pieces, as a load generator calls it: the same as one call.
        for t in (0..=60_000).step_by(777) {
            f.advance(t, &mut out);
        }
        f.advance(60_000, &mut out);
        let mut whole = Vec::new();
        fleet(500, 3).advance(60_000, &mut whole);
        assert_eq!(out, whole);
        // Time order; units due in the same millisecond by index.
        assert!(
            out.windows(2)
                .all(|w| (w[0].fix.time_ms, w[0].unit) < (w[1].fix.time_ms, w[1].unit))
        );
        // Each unit reports every 1–10 s: between 6 and 60 times a minute.
        assert!(out.len() >= 500 * 5 && out.len() <= 500 * 61, "{}", out.len());
    }

    #[test]
    fn every_unit_reports_at_its_interval_even_at_the_cap() {
        let cfg = FleetConfig {
            units: 50,
            seed: 2,
            min_interval_ms: 1,
            max_interval_ms: u32::MAX,
            start_ms: 1_000,
        };
        let mut f = Fleet::new(&cfg, &places::uk().expect("places"));
        let mut out = Vec::new();
        f.advance(1_000 + 3 * i64::from(MAX_INTERVAL_MS), &mut out);
        for u in 0..50u32 {
            let times: Vec<i64> = out
                .iter()
                .filter(|s| s.unit == u)
                .map(|s| s.fix.time_ms)
                .collect();
            let interval = f.units()[u as usize].interval_ms;
            assert!((1..=i64::from(MAX_INTERVAL_MS)).contains(&interval));
            assert!(times.len() >= 3, "unit {u}: {} reports", times.len());
            assert!(times.windows(2).all(|w| w[1] - w[0] == interval), "unit {u}");
            assert!(times[0] >= 1_000 && times[0] < 1_000 + interval);
        }
    }

    #[test]
    fn units_move_at_plausible_speeds_and_stay_in_the_uk() {
        let mut f = fleet(300, 11);
        let mut out = Vec::new();
        f.advance(3_600_000, &mut out);
        let mut last: Vec<Option<Fix>> = vec![None; 300];
        for s in &out {
            let fx = s.fix;
            assert!((49.0..61.5).contains(&fx.lat) && (-9.0..2.5).contains(&fx.lon));
            if let Some(p) = last[s.unit as usize] {
                let d = sphere::distance_m(p.lat, p.lon, fx.lat, fx.lon);
                let dt = (fx.time_ms - p.time_ms) as f64 / 1000.0;
                assert!(d <= 30.0 * dt + 8.0, "{d} m in {dt} s");
            }
            last[s.unit as usize] = Some(fx);
        }
        let statuses: std::collections::HashSet<Status> = out.iter().map(|s| s.fix.status).collect();
        assert!(statuses.contains(&Status::Enroute) && statuses.contains(&Status::AtScene));
    }

    /// A moving unit goes where its reported heading points: between two
    /// reports of the same leg 50 m or more apart, the bearing travelled
    /// is the heading reported, within the GPS noise.
    #[test]
    fn units_go_where_their_heading_points() {
        let mut f = fleet(300, 5);
        let mut out = Vec::new();
        f.advance(1_800_000, &mut out);
        let mut last: Vec<Option<Fix>> = vec![None; 300];
        let mut compared = 0;
        for s in &out {
            let fx = s.fix;
            if let Some(p) = last[s.unit as usize]
                && p.speed_mps > 0.0
                && p.heading_deg == fx.heading_deg
                && sphere::distance_m(p.lat, p.lon, fx.lat, fx.lon) >= 50.0
            {
                let went = bearing(p.lat, p.lon, fx.lat, fx.lon);
                let off = (went - f64::from(fx.heading_deg)).rem_euclid(360.0);
                assert!(
                    off.min(360.0 - off) < 15.0,
                    "went {went}, heading {}",
                    fx.heading_deg
                );
                compared += 1;
            }
            last[s.unit as usize] = Some(fx);
        }
        assert!(compared > 1_000, "{compared} pairs compared");
    }
}
