//! What loadgen knows that the server is told: the simulated fleet (the same
//! one `demo` runs), its fences, every position it sent, and so every alert
//! the server owes its subscribers.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bluelight_engine::Fix;
use bluelight_ingest::decode::{UnitInfoSpec, encode_flatbuffers};
use bluelight_ingest::fleet::{Fleet, FleetConfig, SimFix};
use bluelight_ingest::places::Place;
use geo::{Contains, Coord, LineString, Polygon};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

/// A fence loadgen created: its id and polygon (lon/lat).
#[derive(Debug, Clone)]
pub struct LoadFence {
    /// Id on the server.
    pub id: String,
    /// Its ring.
    pub polygon: Polygon<f64>,
}

/// The fences, indexed by their boxes.
#[derive(Debug)]
pub struct Fences {
    /// Every fence.
    pub list: Vec<LoadFence>,
    tree: RTree<GeomWithData<Rectangle<[f64; 2]>, u32>>,
    /// Fence index by id.
    pub by_id: HashMap<String, u32>,
}

impl Fences {
    /// `n` polygons (8 to 48 vertices, 25 to 200 m in radius: hospital
    /// sites, stations, cordons) within 10 km of towns, where the fleet
    /// drives. Sized like real sites, a few per cent of the fleet is inside
    /// one at any time.
    pub fn generate(n: usize, towns: &[Place], seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xfe4ce);
        let mut list = Vec::with_capacity(n);
        for i in 0..n {
            let t = &towns[rng.random_range(0..towns.len().max(1))];
            let (clat, clon) = bluelight_engine::sphere::destination(
                t.lat,
                t.lon,
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..10_000.0),
            );
            let r = rng.random_range(25.0..200.0);
            let sides = rng.random_range(8..=48);
            let ring: Vec<Coord<f64>> = (0..sides)
                .map(|k| {
                    // A lumpy ring, so fences are not all circles.
                    let rk = r * rng.random_range(0.7..1.0);
                    let (lat, lon) = bluelight_engine::sphere::destination(
                        clat,
                        clon,
                        k as f64 * 360.0 / sides as f64,
                        rk,
                    );
                    Coord { x: lon, y: lat }
                })
                .collect();
            list.push(LoadFence {
                id: format!("lg-{i:05}"),
                polygon: Polygon::new(LineString::from(ring), vec![]),
            });
        }
        let tree = RTree::bulk_load(
            list.iter()
                .enumerate()
                .map(|(i, f)| {
                    let b = geo::BoundingRect::bounding_rect(&f.polygon)
                        .unwrap_or(geo::Rect::new(Coord { x: 0.0, y: 0.0 }, Coord { x: 0.0, y: 0.0 }));
                    GeomWithData::new(
                        Rectangle::from_corners([b.min().x, b.min().y], [b.max().x, b.max().y]),
                        i as u32,
                    )
                })
                .collect(),
        );
        let by_id = list
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.clone(), i as u32))
            .collect();
        Self { list, tree, by_id }
    }

    /// Fences containing the point, boundary included (as the protocol says).
    pub fn containing(&self, lat: f64, lon: f64, out: &mut Vec<u32>) {
        out.clear();
        let p = geo::Point::new(lon, lat);
        for c in self
            .tree
            .locate_in_envelope_intersecting(AABB::from_point([lon, lat]))
        {
            let poly = &self.list[c.data as usize].polygon;
            if poly.contains(&p) || geo::Intersects::intersects(poly.exterior(), &p) {
                out.push(c.data);
            }
        }
        out.sort_unstable();
    }

    /// The fence as the GeoJSON Feature `PUT /v1/fences/{id}` takes: enter
    /// and exit only, no hysteresis (so loadgen's own test is exact).
    pub fn feature(&self, i: usize) -> serde_json::Value {
        let ring: Vec<[f64; 2]> = self.list[i]
            .polygon
            .exterior()
            .coords()
            .map(|c| [c.x, c.y])
            .collect();
        serde_json::json!({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"detect": ["enter", "exit"], "hysteresis_m": 0}
        })
    }
}

/// An alert as both sides name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlertKey {
    /// Unit index.
    pub unit: u32,
    /// Fence index.
    pub fence: u32,
    /// Enter (true) or exit.
    pub enter: bool,
    /// The fix's device time.
    pub time_ms: i64,
}

/// Positions kept per unit for the nearest checker: a server up to this
/// many of a unit's reports behind is still judged exactly.
pub const KEPT: usize = 8;

/// The positions each unit was sent, newest first, each with its place in
/// the send order. All fixes go out on one ordered connection, and the
/// server counts the fixes its writer has taken (`fixes_seen`), so an
/// answer that says it had seen N fixes held, for each unit, exactly its
/// newest position among the first N sent.
#[derive(Debug, Default)]
pub struct Truth {
    /// Each unit's last [`KEPT`] positions (lat, lon), newest first.
    pub recent: Vec<[(f64, f64); KEPT]>,
    /// The place in the send order (from 1) of each of `recent`; 0 = none.
    pub seq: Vec<[u64; KEPT]>,
    /// Each unit's newest latitude (NaN = none), apart from `recent` so the
    /// checker's first cut over every unit reads 8 bytes a unit, not 192.
    pub newest_lat: Vec<f64>,
    /// Each unit's newest longitude, read only for units the latitude
    /// leaves in question.
    pub newest_lon: Vec<f64>,
    /// Fixes recorded so far (each before it is written).
    pub fixes: u64,
}

/// What the server held for a unit when it had seen a number of fixes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Held {
    /// This position (lat, lon).
    At(f64, f64),
    /// Nothing: none of its fixes had arrived.
    Nothing,
    /// A position older than the ones kept: cannot be judged.
    Unknown,
}

impl Truth {
    /// What the server held for unit `u` after the first `seen` fixes.
    pub fn held(&self, u: usize, seen: u64) -> Held {
        let (Some(recent), Some(seq)) = (self.recent.get(u), self.seq.get(u)) else {
            return Held::Nothing;
        };
        for (p, &n) in recent.iter().zip(seq) {
            if n == 0 {
                // Every position this unit was sent is kept: none had arrived.
                return Held::Nothing;
            }
            if n <= seen {
                return Held::At(p.0, p.1);
            }
        }
        Held::Unknown
    }
}

/// Shards of [`Expected`].
const EXPECTED_SHARDS: usize = 32;

/// Alerts the server owes, with when their fix was sent: filled by the
/// sender, read by every alerts client for every alert. In shards, so a
/// table's doubling (a million alerts by the end of a soak) holds one
/// small lock for a moment, not one lock every client waits on.
#[derive(Debug, Default)]
pub struct Expected {
    shards: [Mutex<HashMap<AlertKey, Instant>>; EXPECTED_SHARDS],
}

impl Expected {
    fn shard(&self, k: &AlertKey) -> &Mutex<HashMap<AlertKey, Instant>> {
        let mixed = k.unit.wrapping_mul(0x9E37_79B9) ^ k.fence.wrapping_mul(0x85EB_CA6B) ^ (k.time_ms as u32);
        &self.shards[(mixed >> 27) as usize % EXPECTED_SHARDS]
    }

    /// Owes `keys`, their fix sent `at`.
    pub fn owe(&self, keys: &[AlertKey], at: Instant) {
        for k in keys {
            if let Ok(mut shard) = self.shard(k).lock() {
                shard.insert(*k, at);
            }
        }
    }

    /// When the fix of an owed alert was sent.
    pub fn sent(&self, k: &AlertKey) -> Option<Instant> {
        self.shard(k).lock().ok()?.get(k).copied()
    }

    /// Every alert owed.
    pub fn keys(&self) -> std::collections::HashSet<AlertKey> {
        let mut all = std::collections::HashSet::new();
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                all.extend(shard.keys().copied());
            }
        }
        all
    }
}

/// What the sender shares with the checkers and the report.
#[derive(Debug, Default)]
pub struct Shared {
    /// Positions sent.
    pub truth: Mutex<Truth>,
    /// Alerts the server owes, with when their fix was sent.
    pub expected: Expected,
    /// Fixes sent.
    pub sent: AtomicU64,
    /// Frames (or datagrams) that could not be written.
    pub send_errors: AtomicU64,
    /// The sender has stopped.
    pub done: AtomicBool,
    /// Unit index by id.
    pub unit_by_id: HashMap<String, u32>,
    /// The server's `fixes_seen` before the first fix was sent (set when
    /// sending starts): a nearest answer's count less this is how many of
    /// loadgen's fixes it reflects.
    pub fixes_seen_base: std::sync::OnceLock<u64>,
    /// When warm-up ends (set when sending starts).
    pub steady_from: std::sync::OnceLock<Instant>,
    /// When the analyst's export (`--export-at`) started, and when its last
    /// byte came.
    pub export_began: std::sync::OnceLock<Instant>,
    /// See `export_began`.
    pub export_ended: std::sync::OnceLock<Instant>,
}

impl Shared {
    /// Whether something that started at `t` overlapped the analyst's
    /// export.
    pub fn during_export(&self, t: Instant) -> bool {
        self.export_began.get().is_some_and(|b| t >= *b) && self.export_ended.get().is_none_or(|e| t <= *e)
    }

    /// Whether something that started at `t` belongs to the warm-up.
    pub fn warming_up(&self, t: Instant) -> bool {
        self.steady_from.get().is_none_or(|s| t < *s)
    }
}

/// Where the sender writes.
pub enum Sink {
    /// bluelight over TCP (TLS over it with `--tls`).
    Tcp(Box<dyn Write + Send>),
    /// bluelight over UDP.
    Udp(UdpSocket, SocketAddr),
    /// Redis GEOADD, pipelined per batch.
    Redis(Box<redis::Connection>),
    /// NMEA 0183 over TCP (TLS over it with `--tls`): `$PBLU`, RMC and
    /// GGA per fix.
    Nmea(Box<dyn Write + Send>),
    /// TETRA LIP over UDP: a short location report per fix.
    Lip(UdpSocket, SocketAddr),
    /// TAK protocol v1 over TCP (TLS over it with `--tls`), streaming
    /// framing.
    Tak(Box<dyn Write + Send>),
}

/// Fixes per frame: a datagram of 1,000 fixes is about 50 KB.
pub const FRAME_FIXES: usize = 1000;

/// The fleet of a plan.
pub fn fleet(units: usize, interval_ms: u32, seed: u64, towns: &[Place], start_ms: i64) -> Fleet {
    Fleet::new(
        &FleetConfig {
            units,
            seed,
            min_interval_ms: interval_ms,
            max_interval_ms: interval_ms,
            start_ms,
        },
        towns,
    )
}

/// Registers every unit (id, agency, kind, tags) before the first fix.
///
/// # Errors
/// The connection failed.
pub fn register(fleet: &Fleet, sink: &mut Sink) -> std::io::Result<()> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    // A UnitInfo carries strings: 250 of them stay well inside a UDP
    // datagram (1,000 did not: "message too long").
    for chunk in fleet.units().chunks(FRAME_FIXES / 4) {
        let infos: Vec<UnitInfoSpec<'_>> = chunk
            .iter()
            .map(|u| UnitInfoSpec {
                unit: u.key,
                id: &u.id,
                agency: u.agency,
                kind: u.kind,
                tags: u.tags,
            })
            .collect();
        let frame = encode_flatbuffers(&mut fbb, "loadgen", &[], &infos);
        write_frame(sink, frame)?;
    }
    Ok(())
}

fn write_frame(sink: &mut Sink, frame: &[u8]) -> std::io::Result<()> {
    match sink {
        Sink::Tcp(s) => {
            s.write_all(&(frame.len() as u32).to_le_bytes())?;
            s.write_all(frame)
        }
        Sink::Udp(s, to) => s.send_to(frame, *to).map(|_| ()),
        Sink::Redis(_) | Sink::Nmea(_) | Sink::Lip(..) | Sink::Tak(_) => Ok(()),
    }
}

/// Sends a chunk of fixes in a device protocol (`--source`), encoded as
/// that protocol's devices and gateways would.
fn write_device(sink: &mut Sink, chunk: &[SimFix], fleet: &Fleet, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    match sink {
        Sink::Nmea(s) => {
            let mut text = String::with_capacity(chunk.len() * 200);
            for f in chunk {
                nmea_fix(&fleet.units()[f.unit as usize].id, &f.fix, &mut text);
            }
            s.write_all(text.as_bytes())
        }
        Sink::Tak(s) => {
            for f in chunk {
                bluelight_ingest::tak::encode_stream(
                    &tak_fix(&fleet.units()[f.unit as usize].id, &f.fix),
                    buf,
                );
            }
            s.write_all(buf)
        }
        Sink::Lip(s, to) => {
            for f in chunk {
                let issi = u32::try_from(fleet.units()[f.unit as usize].key).unwrap_or(0) & 0xff_ffff;
                let mut w = bluelight_ingest::lip::PduWriter::for_issi(issi);
                let kmh = if f.fix.speed_mps.is_finite() {
                    f.fix.speed_mps * 3.6
                } else {
                    0.0
                };
                // The velocity code: linear to 28 km/h, then 3.8% steps.
                let velocity = if kmh <= 28.0 {
                    kmh.round() as u8
                } else {
                    ((kmh / 16.0).ln() / 1.038f32.ln() + 13.0).round().min(125.0) as u8
                };
                let direction = if f.fix.heading_deg.is_finite() {
                    ((f.fix.heading_deg / 22.5).round() as u8) % 16
                } else {
                    0
                };
                w.short_report(
                    f.fix.lat,
                    f.fix.lon,
                    bluelight_ingest::lip::ShortCodes {
                        position_error: 1,
                        velocity,
                        direction,
                        ..Default::default()
                    },
                );
                s.send_to(w.bytes(), *to)?;
            }
            Ok(())
        }
        other => write_frame(other, &[]),
    }
}

/// `$PBLU,ID,<id>`, then an RMC and a GGA of the same second, as a
/// receiver sends them.
fn nmea_fix(id: &str, fix: &Fix, out: &mut String) {
    use std::fmt::Write as _;
    let (y, mo, d) = bluelight_ingest::calendar::civil_from_days(fix.time_ms.div_euclid(86_400_000));
    let t = fix.time_ms.rem_euclid(86_400_000);
    let time = format!(
        "{:02}{:02}{:02}.{:03}",
        t / 3_600_000,
        t / 60_000 % 60,
        t / 1000 % 60,
        t % 1000
    );
    let angle = |v: f64, width: usize| {
        let a = v.abs();
        let deg = a.trunc();
        format!("{:0width$}{:09.6}", deg as u32, (a - deg) * 60.0)
    };
    let lat = format!("{},{}", angle(fix.lat, 2), if fix.lat < 0.0 { 'S' } else { 'N' });
    let lon = format!("{},{}", angle(fix.lon, 3), if fix.lon < 0.0 { 'W' } else { 'E' });
    let knots = if fix.speed_mps.is_finite() {
        fix.speed_mps * 3600.0 / 1852.0
    } else {
        0.0
    };
    let course = if fix.heading_deg.is_finite() {
        fix.heading_deg
    } else {
        0.0
    };
    let mut sentence = |body: String| {
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        let _ = write!(out, "${body}*{sum:02X}\r\n");
    };
    sentence(format!("PBLU,ID,{id}"));
    sentence(format!(
        "GNRMC,{time},A,{lat},{lon},{knots:.2},{course:.1},{d:02}{mo:02}{:02},,,A",
        y % 100
    ));
    sentence(format!("GPGGA,{time},{lat},{lon},1,10,0.9,50.0,M,47.0,M,,"));
}

/// A TAK protocol v1 position report, as ATAK sends one.
fn tak_fix(id: &str, fix: &Fix) -> bluelight_ingest::tak::proto::TakMessage {
    use bluelight_ingest::tak::proto;
    let t = u64::try_from(fix.time_ms).unwrap_or(0);
    proto::TakMessage {
        tak_control: None,
        cot_event: Some(proto::CotEvent {
            r#type: "a-f-G-U-C".into(),
            uid: id.into(),
            send_time: t,
            start_time: t,
            stale_time: t + 120_000,
            how: "m-g".into(),
            lat: fix.lat,
            lon: fix.lon,
            hae: 999_999.0,
            ce: 5.0,
            le: 999_999.0,
            detail: Some(proto::Detail {
                contact: Some(proto::Contact {
                    endpoint: String::new(),
                    callsign: id.into(),
                }),
                track: (fix.speed_mps.is_finite() && fix.heading_deg.is_finite()).then(|| proto::Track {
                    speed: f64::from(fix.speed_mps),
                    course: f64::from(fix.heading_deg),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Sends the fleet's fixes in real time until `until`, keeping the truth
/// and the alerts owed. Device time is wall time, so a fix is sent within a
/// tick (5 ms) of its time; a server that cannot keep up makes the sender
/// fall behind (TCP backpressure), which the accepted rate shows.
pub fn send_fleet(
    mut fleet: Fleet,
    fences: Option<&Fences>,
    shared: &Shared,
    mut sink: Sink,
    until: Instant,
) {
    let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(64 * 1024);
    let mut sim: Vec<SimFix> = Vec::new();
    let mut frame: Vec<(u64, Fix)> = Vec::with_capacity(FRAME_FIXES);
    let mut inside: Vec<Vec<u32>> = vec![Vec::new(); fleet.units().len()];
    let mut now_in: Vec<u32> = Vec::new();
    let mut owed: Vec<AlertKey> = Vec::new();
    let mut redis_cmd = redis::Pipeline::new();
    let mut device_buf = Vec::new();
    let tick = Duration::from_millis(5);
    while Instant::now() < until {
        let started = Instant::now();
        sim.clear();
        fleet.advance(
            bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock),
            &mut sim,
        );
        for chunk in sim.chunks(FRAME_FIXES) {
            frame.clear();
            owed.clear();
            if let Ok(mut t) = shared.truth.lock() {
                for f in chunk {
                    t.fixes += 1;
                    let (u, n) = (f.unit as usize, t.fixes);
                    t.recent[u].rotate_right(1);
                    t.recent[u][0] = (f.fix.lat, f.fix.lon);
                    t.seq[u].rotate_right(1);
                    t.seq[u][0] = n;
                    t.newest_lat[u] = f.fix.lat;
                    t.newest_lon[u] = f.fix.lon;
                }
            }
            for f in chunk {
                frame.push((fleet.units()[f.unit as usize].key, f.fix));
                if let Some(fences) = fences {
                    fences.containing(f.fix.lat, f.fix.lon, &mut now_in);
                    let was = &mut inside[f.unit as usize];
                    for x in now_in.iter().filter(|x| !was.contains(x)) {
                        owed.push(AlertKey {
                            unit: f.unit,
                            fence: *x,
                            enter: true,
                            time_ms: f.fix.time_ms,
                        });
                    }
                    for x in was.iter().filter(|x| !now_in.contains(x)) {
                        owed.push(AlertKey {
                            unit: f.unit,
                            fence: *x,
                            enter: false,
                            time_ms: f.fix.time_ms,
                        });
                    }
                    if *was != now_in {
                        was.clone_from(&now_in);
                    }
                }
            }
            if !owed.is_empty() {
                // Stamped before the write: an alert cannot beat its stamp.
                shared.expected.owe(&owed, Instant::now());
            }
            let written = match &mut sink {
                Sink::Redis(conn) => {
                    redis_cmd.clear();
                    let cmd = redis_cmd.cmd("GEOADD").arg(crate::loadgen::redis_geo::KEY);
                    for f in chunk {
                        cmd.arg(f.fix.lon)
                            .arg(f.fix.lat)
                            .arg(&fleet.units()[f.unit as usize].id);
                    }
                    redis_cmd.exec(conn.as_mut()).map_err(std::io::Error::other)
                }
                device @ (Sink::Nmea(_) | Sink::Lip(..) | Sink::Tak(_)) => {
                    write_device(device, chunk, &fleet, &mut device_buf)
                }
                other => write_frame(other, encode_flatbuffers(&mut fbb, "loadgen", &frame, &[])),
            };
            match written {
                Ok(()) => {
                    shared.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    shared.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(rest) = tick.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    shared.done.store(true, Ordering::Relaxed);
}

/// A fresh truth for `units` units.
pub fn truth(units: usize) -> Truth {
    Truth {
        recent: vec![[(f64::NAN, f64::NAN); KEPT]; units],
        seq: vec![[0; KEPT]; units],
        newest_lat: vec![f64::NAN; units],
        newest_lon: vec![f64::NAN; units],
        fixes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_alerts_are_found_again_across_shards() {
        let e = Expected::default();
        let at = Instant::now();
        let keys: Vec<AlertKey> = (0..1_000u32)
            .map(|i| AlertKey {
                unit: i,
                fence: i % 7,
                enter: i % 2 == 0,
                time_ms: 1_000 + i64::from(i),
            })
            .collect();
        e.owe(&keys, at);
        assert!(keys.iter().all(|k| e.sent(k) == Some(at)));
        assert_eq!(e.keys().len(), 1_000);
        let other = AlertKey {
            unit: 5,
            fence: 5,
            enter: false,
            time_ms: 1,
        };
        assert_eq!(e.sent(&other), None);
        let used = e
            .shards
            .iter()
            .filter(|s| s.lock().is_ok_and(|m| !m.is_empty()))
            .count();
        assert!(used > EXPECTED_SHARDS / 2, "keys spread over the shards: {used}");
    }
}
