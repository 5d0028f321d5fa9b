//! Property tests against brute force on random data worldwide, including
//! the antimeridian, the poles and points exactly on fence boundaries.

use std::collections::BTreeSet;

use bluelight_engine::{
    Detect, Engine, EngineConfig, FeedChange, FenceSpec, Filter, Fix, NearestQuery, Outputs, Shape, Status,
    UnitSlot, sphere,
};
use geo::{LineString, MultiPolygon, Polygon};
use proptest::prelude::*;

const T0: i64 = 1_763_726_400_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// A place anywhere, biased towards the hard parts of the sphere.
/// Applies a fix's feed events to the model of the feed's members, each
/// checked against it (an entry of a member, a move or exit of a stranger
/// is wrong).
fn track_feed(
    model: &mut BTreeSet<UnitSlot>,
    feed: u32,
    out: &Outputs,
) -> Result<(), proptest::test_runner::TestCaseError> {
    for ev in &out.feed {
        prop_assert_eq!(ev.feed, feed);
        match ev.change {
            FeedChange::Entered => prop_assert!(model.insert(ev.unit)),
            FeedChange::Left => prop_assert!(model.remove(&ev.unit)),
            FeedChange::Moved => prop_assert!(model.contains(&ev.unit)),
        }
    }
    Ok(())
}

fn place() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        3 => (-90.0f64..=90.0, -180.0f64..=180.0),
        2 => (-5.0f64..5.0, prop_oneof![179.0f64..=180.0, -180.0f64..-179.0]),
        2 => (prop_oneof![88.5f64..=90.0, -90.0f64..-88.5], -180.0f64..=180.0),
        3 => (50.0f64..52.0, -2.0f64..0.0),
        1 => Just((90.0, 0.0)),
        1 => Just((0.0, 180.0)),
        1 => Just((0.0, -180.0)),
    ]
}

/// A place near `c`, within about `spread_m` metres.
fn near(c: (f64, f64), spread_m: f64) -> impl Strategy<Value = (f64, f64)> {
    (0.0f64..360.0, 0.0f64..=1.0).prop_map(move |(b, r)| sphere::destination(c.0, c.1, b, r * spread_m))
}

fn status(i: u8) -> Status {
    Status::from_u8(1 + i % 5)
}

/// One test unit: first fix, second fix, status byte.
type TestUnit = ((f64, f64), (f64, f64), u8);

/// Units as (first fix, second fix, status). The second fix is usually a
/// short move, so the unit stays in its safe region and its tree anchor lags
/// its position (the case the nearest lower bound must get right).
fn fleet(center: (f64, f64), spread_m: f64, n: usize) -> impl Strategy<Value = Vec<TestUnit>> {
    proptest::collection::vec(
        (
            near(center, spread_m),
            0.0f64..360.0,
            prop_oneof![3 => 0.0f64..60.0, 1 => 0.0f64..spread_m],
            any::<u8>(),
        )
            .prop_map(|(a, b, d, s)| (a, sphere::destination(a.0, a.1, b, d), s)),
        1..n,
    )
}

/// A fleet of any density: from a few kilometres across to a continent.
fn any_fleet(n: usize) -> impl Strategy<Value = ((f64, f64), Vec<TestUnit>)> {
    (
        place(),
        prop_oneof![Just(2_000.0), Just(20_000.0), Just(300_000.0)],
    )
        .prop_flat_map(move |(c, spread)| fleet(c, spread, n).prop_map(move |u| (c, u)))
}

fn load(e: &mut Engine, units: &[TestUnit]) -> Vec<UnitSlot> {
    let mut out = Outputs::default();
    let mut slots = Vec::new();
    for (i, (a, b, s)) in units.iter().enumerate() {
        let u = e.intern_unit(&format!("U{i}"));
        e.apply(u, &Fix::at(T0, a.0, a.1), &mut out);
        e.apply(u, &Fix::at(T0 + 1000, b.0, b.1).with_status(status(*s)), &mut out);
        slots.push(u);
    }
    e.flush(&mut out);
    slots
}

fn brute_nearest(e: &Engine, slots: &[UnitSlot], q: &NearestQuery) -> Vec<(UnitSlot, f64)> {
    let qv = sphere::to_vec3(q.lat, q.lon);
    let mut all: Vec<(f64, UnitSlot)> = slots
        .iter()
        .filter_map(|&s| {
            let v = e.unit_view(s)?;
            let f = v.fix?;
            let ok = q.filter.statuses.is_none_or(|m| m & (1 << v.status as u8) != 0);
            let c2 = sphere::chord2(qv, sphere::to_vec3(f.lat, f.lon));
            let within = q.max_distance_m.is_none_or(|d| c2 <= sphere::m_to_chord2(d));
            (ok && within).then_some((c2, s))
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(q.k);
    all.into_iter()
        .map(|(c2, s)| (s, sphere::chord2_to_m(c2)))
        .collect()
}

/// A fence that fires enter and exit only, for every unit.
fn enter_exit_fence(id: &str, shape: Shape) -> FenceSpec {
    FenceSpec {
        id: id.into(),
        shape,
        detect: Detect::default(),
        dwell_s: 0,
        hysteresis_m: 0.0,
        filter: Filter::all(),
        source: None,
    }
}

fn star_polygon(center: (f64, f64), radii: &[f64]) -> (MultiPolygon, Vec<(f64, f64)>) {
    let n = radii.len();
    let mut ring: Vec<(f64, f64)> = radii
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (lat, lon) = sphere::destination(center.0, center.1, 360.0 * i as f64 / n as f64, *r);
            (lon, lat)
        })
        .collect();
    let verts = ring.iter().map(|&(x, y)| (y, x)).collect();
    ring.push(ring[0]);
    (
        MultiPolygon(vec![Polygon::new(LineString::from(ring), vec![])]),
        verts,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn nearest_matches_brute_force(
        seed_units in any_fleet(150),
        q in (0.0f64..360.0, prop_oneof![0.0f64..3000.0, 0.0f64..400_000.0]),
        k in 1usize..12,
        filtered in any::<bool>(),
        max_d in proptest::option::of(1000.0f64..300_000.0),
    ) {
        let (c, fleet) = seed_units;
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let slots = load(&mut e, &fleet);
        let (qlat, qlon) = sphere::destination(c.0, c.1, q.0, q.1);
        let query = NearestQuery {
            lat: qlat,
            lon: qlon,
            k,
            filter: if filtered { Filter::statuses(&[Status::Available, Status::AtScene]) } else { Filter::all() },
            max_distance_m: max_d,
            include_stale: false,
        };
        let got: Vec<(UnitSlot, f64)> = e.nearest(&query, T0 + 1000).iter().map(|n| (n.unit, n.distance_m)).collect();
        let want = brute_nearest(&e, &slots, &query);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn area_queries_match_brute_force(
        seed_units in any_fleet(150),
        kind in 0u8..5,
        size in prop_oneof![100.0f64..3000.0, 1000.0f64..150_000.0],
        radii in proptest::collection::vec(0.2f64..1.0, 3..24),
        offset in (0.0f64..360.0, prop_oneof![0.0f64..2000.0, 0.0f64..100_000.0]),
        filtered in any::<bool>(),
    ) {
        let (c, fleet) = seed_units;
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let slots = load(&mut e, &fleet);
        let (clat, clon) = sphere::destination(c.0, c.1, offset.0, offset.1);
        let shape = match kind {
            0 => Shape::circle(clat, clon, size).expect("circle"),
            1 => {
                let dlat = size / 111_000.0;
                let s = (clat - dlat).max(-90.0);
                let n = (clat + dlat).min(90.0);
                let dlon = (size / 111_000.0 / clat.to_radians().cos().max(0.01)).min(179.0);
                let w = sphere::wrap_lon(clon - dlon);
                let east = sphere::wrap_lon(clon + dlon);
                Shape::bbox([w, s, east, n]).expect("bbox")
            }
            2 if clat.abs() < 80.0 && clon.abs() < 170.0 => {
                let r: Vec<f64> = radii.iter().map(|x| x * size.min(50_000.0)).collect();
                Shape::polygon(star_polygon((clat, clon), &r).0).expect("polygon")
            }
            4 if clat.abs() < 80.0 && clon.abs() < 170.0 => {
                // A multipolygon: a star with a star-shaped hole, and an island
                // beside it.
                let size = size.min(50_000.0);
                let outer: Vec<f64> = radii.iter().map(|x| size * (0.6 + 0.4 * x)).collect();
                let inner: Vec<f64> = radii.iter().map(|x| size * 0.5 * x).collect();
                let (a, _) = star_polygon((clat, clon), &outer);
                let (h, _) = star_polygon((clat, clon), &inner);
                let island_c = sphere::destination(clat, clon, 90.0, size * 2.5);
                let (b, _) = star_polygon(island_c, &inner);
                let mut hole = h.0[0].exterior().clone();
                hole.0.reverse();
                let with_hole = Polygon::new(a.0[0].exterior().clone(), vec![hole]);
                Shape::polygon(MultiPolygon(vec![with_hole, b.0[0].clone()])).expect("multipolygon")
            }
            _ => {
                let ll = h3o::LatLng::new(clat, clon).expect("valid");
                let cell = ll.to_cell(h3o::Resolution::Five);
                let mut cells: Vec<h3o::CellIndex> = cell.grid_disk(1);
                cells.push(ll.to_cell(h3o::Resolution::Three));
                Shape::cells(cells).expect("cells")
            }
        };
        let filter = if filtered { Filter::statuses(&[Status::Available]) } else { Filter::all() };
        let got = e.area(&shape, &filter, false, T0 + 1000);
        let want: Vec<UnitSlot> = slots
            .iter()
            .copied()
            .filter(|&s| {
                let v = e.unit_view(s).expect("unit");
                let f = v.fix.expect("seen");
                shape.contains(f.lat, f.lon) && (!filtered || v.status == Status::Available)
            })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn fence_membership_and_events_match_brute_force(
        center in place(),
        kind in 0u8..3,
        size in 50.0f64..3000.0,
        radii in proptest::collection::vec(0.3f64..1.0, 3..16),
        walks in proptest::collection::vec(
            proptest::collection::vec((0.0f64..360.0, 0.0f64..1.0, 0u8..8, any::<usize>()), 1..12), 1..8),
    ) {
        let polar_or_dateline = center.0.abs() > 80.0 || center.1.abs() > 170.0;
        let (shape, verts) = match kind {
            0 => (Shape::circle(center.0, center.1, size).expect("circle"), vec![]),
            1 if !polar_or_dateline => {
                let r: Vec<f64> = radii.iter().map(|x| x * size).collect();
                let (mp, v) = star_polygon(center, &r);
                (Shape::polygon(mp).expect("polygon"), v)
            }
            _ => {
                let d = size / 111_000.0;
                let (s, n) = ((center.0 - d).max(-90.0), (center.0 + d).min(90.0));
                let dl = (d / center.0.to_radians().cos().max(0.05)).min(10.0);
                let (w, east) = (sphere::wrap_lon(center.1 - dl), sphere::wrap_lon(center.1 + dl));
                let corners = vec![(s, w), (n, east), (s, east), (n, w), ((s + n) / 2.0, w), (s, center.1)];
                (Shape::bbox([w, s, east, n]).expect("bbox"), corners)
            }
        };
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        e.put_fence(enter_exit_fence("f", shape.clone()), T0, &mut out).expect("fence");
        let mut inside: BTreeSet<UnitSlot> = BTreeSet::new();
        for (w, steps) in walks.iter().enumerate() {
            let u = e.intern_unit(&format!("W{w}"));
            for (i, &(bearing, r, mode, pick)) in steps.iter().enumerate() {
                // Some fixes land exactly on a vertex or edge of the fence.
                let (lat, lon) = if mode == 0 && !verts.is_empty() {
                    verts[pick % verts.len()]
                } else {
                    sphere::destination(center.0, center.1, bearing, r * size * 1.6)
                };
                let lon = sphere::wrap_lon(lon);
                out.clear();
                e.apply(u, &Fix::at(T0 + i as i64 * 1000, lat, lon), &mut out);
                let now_in = shape.contains(lat, lon);
                let was_in = inside.contains(&u);
                let want: Vec<&str> = match (was_in, now_in) {
                    (false, true) => vec!["enter"],
                    (true, false) => vec!["exit"],
                    _ => vec![],
                };
                let got: Vec<&str> = out.alerts.iter().map(|a| a.event.as_str()).collect();
                prop_assert_eq!(got, want, "unit {} step {} at {},{}", w, i, lat, lon);
                if now_in { inside.insert(u); } else { inside.remove(&u); }
            }
        }
        let members: BTreeSet<UnitSlot> = e.fence_members("f").into_iter().collect();
        prop_assert_eq!(members, inside);
    }

    #[test]
    fn feed_events_track_the_units_inside(
        center in place(),
        size in 200.0f64..5000.0,
        walks in proptest::collection::vec(proptest::collection::vec((0.0f64..360.0, 0.0f64..1.0), 1..10), 1..10),
    ) {
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        let shape = Shape::circle(center.0, center.1, size).expect("circle");
        // Some units are there before the feed opens.
        let pre = e.intern_unit("PRE");
        e.apply(pre, &Fix::at(T0 - 1, center.0, center.1), &mut out);
        let (feed, snap) = e.subscribe_feed(shape.clone(), Filter::all(), T0).expect("feed");
        let mut model: BTreeSet<UnitSlot> = snap.into_iter().collect();
        for (w, steps) in walks.iter().enumerate() {
            let u = if w == 0 { pre } else { e.intern_unit(&format!("W{w}")) };
            for (i, &(b, r)) in steps.iter().enumerate() {
                let (lat, lon) = sphere::destination(center.0, center.1, b, r * size * 2.0);
                out.clear();
                e.apply(u, &Fix::at(T0 + 1 + i as i64, lat, lon), &mut out);
                track_feed(&mut model, feed, &out)?;
                prop_assert_eq!(model.contains(&u), shape.contains(lat, lon));
            }
        }
    }

    /// Feeds opened and closed over and over take the ids of the regions
    /// gone before them: each newcomer must start with exactly the units
    /// inside it and inherit nothing (no member, no candidate) from the
    /// feed whose id it took, and the fence beside them must not notice.
    #[test]
    fn feeds_opened_and_closed_over_and_over_track_the_units_inside(
        center in place(),
        ops in proptest::collection::vec((0u8..4, 0usize..6, 0.0f64..360.0, 0.0f64..1.0, 100.0f64..3000.0), 1..80),
    ) {
        use std::collections::BTreeMap;
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        let fence = Shape::circle(center.0, center.1, 1500.0).expect("circle");
        e.put_fence(enter_exit_fence("f", fence.clone()), T0, &mut out).expect("fence");
        let units: Vec<UnitSlot> = (0..6).map(|u| e.intern_unit(&format!("U{u}"))).collect();
        let mut at: BTreeMap<UnitSlot, (f64, f64)> = BTreeMap::new();
        // Open feeds: their area and the members their events say.
        let mut feeds: BTreeMap<u32, (Shape, BTreeSet<UnitSlot>)> = BTreeMap::new();
        let (mut opened, mut most_open) = (0, 0);
        for (i, &(op, pick, bearing, r, size)) in ops.iter().enumerate() {
            let (lat, lon) = sphere::destination(center.0, center.1, bearing, r * 4000.0);
            let lon = sphere::wrap_lon(lon);
            match op {
                0 => {
                    let shape = Shape::circle(lat, lon, size).expect("circle");
                    let (feed, snap) = e.subscribe_feed(shape.clone(), Filter::all(), T0).expect("feed");
                    opened += 1;
                    let want: BTreeSet<UnitSlot> =
                        at.iter().filter(|(_, p)| shape.contains(p.0, p.1)).map(|(u, _)| *u).collect();
                    prop_assert_eq!(snap.iter().copied().collect::<BTreeSet<_>>(), want);
                    prop_assert!(feeds.insert(feed, (shape, snap.into_iter().collect())).is_none());
                    most_open = most_open.max(feeds.len());
                }
                1 => {
                    if let Some(&feed) = feeds.keys().nth(pick % feeds.len().max(1)) {
                        e.unsubscribe_feed(feed).expect("open");
                        feeds.remove(&feed);
                    }
                }
                _ => {
                    let u = units[pick];
                    out.clear();
                    // Ten minutes apart: the implied-speed filter never refuses.
                    e.apply(u, &Fix::at(T0 + 1 + i as i64 * 600_000, lat, lon), &mut out);
                    at.insert(u, (lat, lon));
                    for ev in &out.feed {
                        let Some((_, members)) = feeds.get_mut(&ev.feed) else {
                            prop_assert!(false, "an event of feed {} that is closed", ev.feed);
                            continue;
                        };
                        match ev.change {
                            FeedChange::Entered => prop_assert!(members.insert(ev.unit)),
                            FeedChange::Left => prop_assert!(members.remove(&ev.unit)),
                            FeedChange::Moved => prop_assert!(members.contains(&ev.unit)),
                        }
                    }
                }
            }
            for (feed, (shape, members)) in &feeds {
                let want: BTreeSet<UnitSlot> =
                    at.iter().filter(|(_, p)| shape.contains(p.0, p.1)).map(|(u, _)| *u).collect();
                prop_assert_eq!(members, &want, "feed {} after op {}", feed, i);
            }
            let want: BTreeSet<UnitSlot> =
                at.iter().filter(|(_, p)| fence.contains(p.0, p.1)).map(|(u, _)| *u).collect();
            prop_assert_eq!(e.fence_members("f").into_iter().collect::<BTreeSet<_>>(), want);
        }
        // The table holds the fence (even ids) and the feeds (odd ids): at
        // most twice the most open at once.
        let (live, slots) = e.region_counts();
        prop_assert_eq!(live, 1 + feeds.len());
        prop_assert!(slots <= (2 * most_open).max(1), "{} slots after {} feeds, {} at most open", slots, opened, most_open);
    }

    #[test]
    fn feeds_over_countries_and_the_world_track_the_units_inside(
        w in -180.0f64..180.0,
        width in prop_oneof![1.0f64..30.0, 30.0f64..360.0],
        s in -90.0f64..90.0,
        height in prop_oneof![1.0f64..20.0, 20.0f64..180.0],
        steps in proptest::collection::vec((0usize..6, place(), 0.0f64..1.0, 0.0f64..1.0), 1..60),
    ) {
        // Large areas get a coarse cover (boundary cells far above the fine
        // resolution); membership must still be exactly the box's.
        let e_lon = w + width.min(360.0);
        let e_lon = if e_lon > 180.0 { e_lon - 360.0 } else { e_lon };
        let n = (s + height).min(90.0);
        let b = [w, s, e_lon, n];
        let shape = Shape::bbox(b).expect("bbox");
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        let (feed, snap) = e.subscribe_feed(shape.clone(), Filter::all(), T0).expect("feed");
        prop_assert!(snap.is_empty());
        let mut model: BTreeSet<UnitSlot> = BTreeSet::new();
        for (i, &(unit, anywhere, fx, fy)) in steps.iter().enumerate() {
            // Half the fixes in or near the box (its edges too), half anywhere.
            let (lat, lon) = if i % 2 == 0 {
                anywhere
            } else {
                let lon = w + fx * (width.min(360.0) + 2.0) - 1.0;
                let lon = if lon > 180.0 { lon - 360.0 } else if lon < -180.0 { lon + 360.0 } else { lon };
                ((s - 1.0 + fy * (n - s + 2.0)).clamp(-90.0, 90.0), lon)
            };
            let u = e.intern_unit(&format!("U{unit}"));
            out.clear();
            // Far apart in time, so the implied-speed filter never refuses a jump.
            e.apply(u, &Fix::at(T0 + 1 + i as i64 * 86_400_000, lat, lon), &mut out);
            track_feed(&mut model, feed, &out)?;
            prop_assert_eq!(model.contains(&u), shape.contains(lat, lon), "box {:?} at {},{}", b, lat, lon);
        }
    }

    #[test]
    fn standing_nearest_always_equals_one_shot_nearest(
        center in place(),
        k in 1usize..6,
        moves in proptest::collection::vec((0usize..12, 0.0f64..360.0, 0.0f64..20_000.0), 1..60),
    ) {
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        let (q, _) = e.subscribe_nearest(center.0, center.1, k, Filter::all(), false, T0).expect("query");
        for (i, &(unit, b, d)) in moves.iter().enumerate() {
            let u = e.intern_unit(&format!("U{unit}"));
            let (lat, lon) = sphere::destination(center.0, center.1, b, d);
            e.apply(u, &Fix::at(T0 + i as i64, lat, lon), &mut out);
            e.flush(&mut out);
            let standing: Vec<UnitSlot> = e.nearest_results(q).expect("open").iter().map(|n| n.unit).collect();
            let oneshot: Vec<UnitSlot> = e
                .nearest(&NearestQuery { lat: center.0, lon: center.1, k, filter: Filter::all(), max_distance_m: None, include_stale: false }, T0 + i as i64)
                .iter()
                .map(|n| n.unit)
                .collect();
            prop_assert_eq!(standing, oneshot);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn snapshot_round_trips_to_an_equal_engine(
        seed_units in any_fleet(60),
        fences in proptest::collection::vec((0.0f64..360.0, 0.0f64..2000.0, 100.0f64..3000.0, 0.0f64..100.0), 0..4),
        stale_at in proptest::option::of(0i64..400_000),
        with_rule in any::<bool>(),
    ) {
        let (c, fleet) = seed_units;
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        for (i, &(b, d, r, h)) in fences.iter().enumerate() {
            let (lat, lon) = sphere::destination(c.0, c.1, b, d);
            e.put_fence(
                FenceSpec {
                    id: format!("F{i}"),
                    shape: Shape::circle(lat, lon, r).expect("circle"),
                    detect: Detect { enter: true, exit: true, dwell: i % 2 == 0 },
                    dwell_s: 1,
                    hysteresis_m: h,
                    filter: if i == 1 { Filter::statuses(&[Status::Available]) } else { Filter::all() },
                    source: None,
                },
                T0,
                &mut out,
            ).expect("fence");
        }
        if with_rule {
            e.put_rule(bluelight_engine::RuleSpec {
                id: "near".into(),
                from: Filter::all(),
                to: Filter::statuses(&[Status::Enroute]),
                radius_m: 5000.0,
                hysteresis_m: 100.0,
                source: None,
            }).expect("rule");
        }
        let k = e.register_key(77, "KEYED");
        e.set_meta(k, Some(bluelight_engine::Agency::Fire), Some("pump"), Some(&["water", "rescue"])).expect("meta");
        let slots = load(&mut e, &fleet);
        if let Some(t) = stale_at {
            e.tick(T0 + t, &mut out);
        }
        let bytes = e.snapshot();
        let back = Engine::restore(EngineConfig::default(), &bytes).expect("restore");
        prop_assert_eq!(back.snapshot(), bytes.clone());
        prop_assert_eq!(back.last_seq(), e.last_seq());
        for s in slots.iter().copied().chain([k]) {
            // Debug form: unknown measurements are NaN, which never equals itself.
            prop_assert_eq!(format!("{:?}", back.unit_view(s)), format!("{:?}", e.unit_view(s)));
        }
        for id in e.fence_ids() {
            prop_assert_eq!(back.fence_members(&id), e.fence_members(&id));
        }
        let q = NearestQuery { lat: c.0, lon: c.1, k: 5, filter: Filter::all(), max_distance_m: None, include_stale: true };
        prop_assert_eq!(back.nearest(&q, T0), e.nearest(&q, T0));
        // A truncated snapshot is an error, never a panic.
        let cut = bytes.len() / 2;
        prop_assert!(Engine::restore(EngineConfig::default(), &bytes[..cut]).is_err());
    }
}

/// One step of a recorded stream: a fix of unit `u` (index), or a tick.
#[derive(Debug, Clone)]
enum Step {
    Fix(usize, (f64, f64), u8),
    Tick,
    /// Puts fence `G{k}`, a circle of radius `r` (made or replaced).
    Fence(usize, (f64, f64), f64),
    /// Deletes fence `F{k}` and `G{k}`, whichever there are.
    Unfence(usize),
}

/// Alerts as a client sees them (unit by id, not slot).
fn seen(e: &Engine, out: &Outputs) -> Vec<String> {
    out.alerts
        .iter()
        .map(|a| {
            format!(
                "{} {} {} {} {:?} {:?} {:?}",
                a.seq,
                a.event.as_str(),
                e.unit_id(a.unit),
                a.time_ms,
                a.fence,
                a.rule,
                a.other.map(|o| e.unit_id(o).to_owned())
            )
        })
        .collect()
}

fn run_step(e: &mut Engine, step: &Step, n: usize, out: &mut Outputs) {
    match *step {
        Step::Fix(u, (lat, lon), s) => {
            let slot = e.intern_unit(&format!("U{u}"));
            let t = T0 + 1000 * n as i64;
            e.apply(slot, &Fix::at(t, lat, lon).with_status(status(s)), out);
            e.flush(out);
        }
        Step::Tick => e.tick(T0 + 1000 * n as i64 + 200_000, out),
        Step::Fence(k, (lat, lon), r) => {
            let spec = FenceSpec {
                id: format!("G{k}"),
                shape: Shape::circle(lat, lon, r).expect("circle"),
                detect: Detect {
                    enter: true,
                    exit: true,
                    dwell: k % 2 == 0,
                },
                dwell_s: 10,
                hysteresis_m: 0.0,
                filter: Filter::all(),
                source: None,
            };
            e.put_fence(spec, T0 + 1000 * n as i64, out).expect("fence");
        }
        Step::Unfence(k) => {
            // Either may be absent: nothing to do then.
            let _ = e.remove_fence(&format!("F{k}"));
            let _ = e.remove_fence(&format!("G{k}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// What a restart must give: an engine restored from a snapshot and fed
    /// the rest of the stream fires exactly the alerts (same `seq`, same
    /// order) the engine that never stopped fires, and ends equal to it.
    #[test]
    fn a_restored_engine_continues_exactly_like_one_that_never_stopped(
        c in place(),
        fences in proptest::collection::vec((0.0f64..360.0, 0.0f64..1500.0, 200.0f64..1500.0, 0.0f64..50.0), 1..5),
        walk in proptest::collection::vec((0usize..8, 0.0f64..360.0, 0.0f64..1200.0, any::<u8>(), 0u8..10), 2..60),
        cut in 0.0f64..1.0,
        feed_first in any::<bool>(),
    ) {
        let mut a = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        // A feed made first takes a region id before the fences: a restored
        // engine has no feed, and its fences must still have their ids.
        if feed_first {
            a.subscribe_feed(Shape::circle(c.0, c.1, 3000.0).expect("circle"), Filter::all(), T0).expect("feed");
        }
        // Fences named against their order of creation ("F9" first).
        for (i, &(b, d, r, h)) in fences.iter().enumerate() {
            let (lat, lon) = sphere::destination(c.0, c.1, b, d);
            a.put_fence(
                FenceSpec {
                    id: format!("F{}", 9 - i),
                    shape: Shape::circle(lat, lon, r).expect("circle"),
                    detect: Detect { enter: true, exit: true, dwell: i % 2 == 0 },
                    dwell_s: 30,
                    hysteresis_m: h,
                    filter: Filter::all(),
                    source: Some(format!("{{\"n\":{i}}}").into()),
                },
                T0,
                &mut out,
            ).expect("fence");
        }
        a.put_rule(bluelight_engine::RuleSpec {
            id: "near".into(),
            from: Filter::all(),
            to: Filter::statuses(&[Status::Emergency]),
            radius_m: 400.0,
            hysteresis_m: 50.0,
            source: None,
        }).expect("rule");
        let steps: Vec<Step> = walk
            .iter()
            .map(|&(u, b, d, s, tick)| match tick {
                0 => Step::Tick,
                // Fences made, replaced and deleted on the way (before and
                // after the snapshot): a new one takes the smallest free id,
                // which may be below older fences' ids, so a restored engine
                // must keep every fence's id for the alerts' order.
                1 => Step::Fence(u, sphere::destination(c.0, c.1, b, d), 200.0 + d),
                2 => Step::Unfence(u),
                _ => Step::Fix(u, sphere::destination(c.0, c.1, b, d), s),
            })
            .collect();
        let split = ((steps.len() as f64) * cut) as usize;
        for (n, step) in steps[..split].iter().enumerate() {
            run_step(&mut a, step, n, &mut out);
        }
        let mut b = Engine::restore(EngineConfig::default(), &a.snapshot()).expect("restore");
        let (mut out_a, mut out_b) = (Outputs::default(), Outputs::default());
        for (n, step) in steps.iter().enumerate().skip(split) {
            out_a.clear();
            out_b.clear();
            run_step(&mut a, step, n, &mut out_a);
            run_step(&mut b, step, n, &mut out_b);
            prop_assert_eq!(seen(&b, &out_b), seen(&a, &out_a), "step {} {:?}", n, step);
        }
        prop_assert_eq!(b.last_seq(), a.last_seq());
        prop_assert_eq!(b.snapshot(), a.snapshot());
    }
}

/// A star around (`lat`, `lon`) with `radii` in degrees: the polygon as
/// a client sends it (every longitude within ±180) and as meant, the
/// short way (each longitude plus its whole turns, in one addition as
/// the engine makes it, so the two meet exactly at the vertices).
fn star_across(lat: f64, lon: f64, radii: &[f64]) -> (MultiPolygon, Polygon) {
    let n = radii.len();
    type Ring = Vec<(f64, f64)>;
    let (mut sent, mut meant): (Ring, Ring) = radii
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let a = std::f64::consts::TAU * i as f64 / n as f64;
            let (x, y) = (lon + r * a.cos(), (lat + r * a.sin()).clamp(-89.0, 89.0));
            let w = sphere::wrap_lon(x);
            let turns = ((x - w) / 360.0).round();
            ((w, y), (w + turns * 360.0, y))
        })
        .unzip();
    sent.push(sent[0]);
    meant.push(meant[0]);
    (
        MultiPolygon(vec![Polygon::new(LineString::from(sent), vec![])]),
        Polygon::new(LineString::from(meant), vec![]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// A fence drawn across the antimeridian (its longitudes wrapped, as
    /// GeoJSON writers send them) holds exactly the points of the shape
    /// meant, the short way: checked against geo's own point test on the
    /// unwrapped polygon, at random points, on its vertices and on the
    /// antimeridian itself, and its alerts follow.
    #[test]
    fn fences_across_the_antimeridian_are_taken_the_short_way(
        lat in -70.0f64..70.0,
        lon in 179.92f64..180.08,
        radii in proptest::collection::vec(0.01f64..0.1, 3..14),
        points in proptest::collection::vec((0u8..4, -0.15f64..0.15, -0.15f64..0.15, any::<usize>()), 1..40),
    ) {
        use geo::Intersects;
        let (sent, meant) = star_across(lat, lon, &radii);
        let verts: Vec<(f64, f64)> = sent.0[0].exterior().0.iter().map(|c| (c.y, c.x)).collect();
        let inside = |la: f64, lo: f64| {
            [lo, lo + 360.0, lo - 360.0]
                .iter()
                .any(|&x| meant.intersects(&geo::Point::new(x, la)))
        };
        let shape = Shape::polygon(sent).expect("a valid star");
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        e.put_fence(enter_exit_fence("f", shape.clone()), T0, &mut out).expect("fence");
        let u = e.intern_unit("U");
        let mut was_in = false;
        for (i, &(mode, dy, dx, pick)) in points.iter().enumerate() {
            let (la, lo) = match mode {
                0 => verts[pick % verts.len()],
                1 => ((lat + dy).clamp(-90.0, 90.0), 180.0),
                _ => ((lat + dy).clamp(-90.0, 90.0), lon + dx),
            };
            let lo = sphere::wrap_lon(lo);
            let want = inside(la, lo);
            prop_assert_eq!(shape.contains(la, lo), want, "{},{}", la, lo);
            out.clear();
            // A day apart: the implied-speed filter never refuses.
            e.apply(u, &Fix::at(T0 + 1 + i as i64 * 86_400_000, la, lo), &mut out);
            let got: Vec<&str> = out.alerts.iter().map(|a| a.event.as_str()).collect();
            let expect: Vec<&str> = match (was_in, want) {
                (false, true) => vec!["enter"],
                (true, false) => vec!["exit"],
                _ => vec![],
            };
            prop_assert_eq!(got, expect, "{},{}", la, lo);
            was_in = want;
        }
    }

    /// A ring round a pole holds the cap on its side: a point is inside
    /// when it is at or beyond the ring's latitude at its longitude (the
    /// ring's edges interpolated in longitude).
    #[test]
    fn a_ring_round_a_pole_holds_the_cap(
        north in any::<bool>(),
        lats in proptest::collection::vec(55.0f64..85.0, 3..12),
        start in -180.0f64..180.0,
        points in proptest::collection::vec((0.0f64..1.0, -180.0f64..180.0, 40.0f64..90.0), 1..40),
    ) {
        let sign = if north { 1.0 } else { -1.0 };
        let n = lats.len();
        // Vertices east round the globe, equally spaced, from `start`.
        let mut ring: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let lo = start + 360.0 * i as f64 / n as f64;
                (sphere::wrap_lon(lo), sign * lats[i])
            })
            .collect();
        ring.push(ring[0]);
        let shape = Shape::polygon(MultiPolygon(vec![Polygon::new(LineString::from(ring), vec![])]))
            .expect("a ring round the pole");
        for &(f, lo, la) in &points {
            let la = sign * la;
            // The edge below (above) the point, interpolated.
            let along = (lo - start).rem_euclid(360.0) / (360.0 / n as f64);
            let (k, t) = (along.floor() as usize % n, along.fract());
            let edge = sign * (lats[k] + t * (lats[(k + 1) % n] - lats[k]));
            // Keep clear of the edge itself: float rounding of the two
            // interpolations may differ there (vertices are tested below).
            if (la - edge).abs() < 1e-9 {
                continue;
            }
            let want = if north { la >= edge } else { la <= edge };
            prop_assert_eq!(shape.contains(la, lo), want, "{},{} edge {} (f {})", la, lo, edge, f);
        }
        for (i, lat) in lats.iter().enumerate() {
            let lo = sphere::wrap_lon(start + 360.0 * i as f64 / n as f64);
            prop_assert!(shape.contains(sign * lat, lo), "vertex {}", i);
            prop_assert!(shape.contains(sign * 90.0, lo), "the pole");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Issue 16 "region ids reused": fences made and deleted over and over
    /// (and replaced in place) leave the region table no larger than twice
    /// the most alive at once, and every fence still finds its units.
    #[test]
    fn fences_made_and_deleted_over_and_over_keep_the_region_table_bounded(
        c in place(),
        ops in proptest::collection::vec((0usize..6, any::<bool>(), 100.0f64..2000.0), 1..80),
    ) {
        let mut e = Engine::new(EngineConfig::default()).expect("config");
        let mut out = Outputs::default();
        let u = e.intern_unit("U");
        e.apply(u, &Fix::at(T0, c.0, c.1), &mut out);
        let mut alive: BTreeSet<usize> = BTreeSet::new();
        let mut most = 0usize;
        for (n, &(f, put, r)) in ops.iter().enumerate() {
            let id = format!("f{f}");
            if put {
                out.clear();
                e.put_fence(
                    FenceSpec {
                        id: id.clone(),
                        shape: Shape::circle(c.0, c.1, r).expect("circle"),
                        detect: Detect { enter: true, exit: true, dwell: false },
                        dwell_s: 0,
                        hysteresis_m: 0.0,
                        filter: Filter::all(),
                        source: None,
                    },
                    T0 + n as i64,
                    &mut out,
                ).expect("fence");
                alive.insert(f);
            } else if alive.remove(&f) {
                e.remove_fence(&id).expect("remove");
            }
            most = most.max(alive.len());
            // The unit sits at every fence's centre: inside each one alive.
            for g in &alive {
                prop_assert_eq!(e.fence_members(&format!("f{g}")), vec![u], "op {}", n);
            }
        }
        let (live, slots) = e.region_counts();
        prop_assert_eq!(live, alive.len());
        // A replaced fence is installed before its old self goes: one more.
        prop_assert!(slots < 2 * (most + 1), "{} slots, {} fences at most", slots, most);
    }
}
