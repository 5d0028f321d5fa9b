//! One behaviour a test: every event rule of the engine.

use bluelight_engine::{Agency, Applied, Filter, Fix, Outputs, RuleSpec, Status, sphere};

use crate::support::{engine, events, fence, square};

const T0: i64 = 1_763_726_400_000;

#[test]
fn unit_first_seen_inside_a_fence_fires_enter() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("AMB-1");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    assert_eq!(events(&out), vec![("enter".into(), "f".into())]);
    assert_eq!(out.alerts[0].seq, 1);
}

#[test]
fn crossing_out_fires_exit_and_seq_increases() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("AMB-1");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    e.apply(u, &Fix::at(T0 + 1000, 50.95, -1.39), &mut out);
    assert_eq!(
        events(&out),
        vec![("enter".into(), "f".into()), ("exit".into(), "f".into())]
    );
    assert_eq!(out.alerts[1].seq, 2);
}

#[test]
fn point_exactly_on_the_boundary_is_inside() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.9, -1.45), &mut out);
    let v = e.intern_unit("B");
    e.apply(v, &Fix::at(T0, 51.0, -1.4), &mut out);
    assert_eq!(out.alerts.len(), 2, "{out:?}");
}

#[test]
fn older_fix_changes_nothing_and_fires_nothing() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("A");
    assert_eq!(
        e.apply(u, &Fix::at(T0 + 5000, 50.95, -1.39), &mut out),
        Applied::Moved
    );
    assert_eq!(e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out), Applied::Older);
    assert!(out.alerts.is_empty());
    let view = e.unit_view(u).expect("unit");
    assert_eq!(view.fix.map(|f| f.time_ms), Some(T0 + 5000));
    assert_eq!(e.counters().fixes_older, 1);
    let mut n = 0;
    e.history(0, i64::MAX, |_| true, |c| n += c.len());
    assert_eq!(n, 2, "an older fix still goes to history");
}

#[test]
fn duplicate_fix_is_dropped_and_counted() {
    let mut e = engine();
    let mut out = Outputs::default();
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    assert_eq!(
        e.apply(u, &Fix::at(T0, 50.96, -1.45), &mut out),
        Applied::Duplicate
    );
    assert_eq!(e.counters().fixes_duplicate, 1);
    assert_eq!(e.unit_view(u).and_then(|v| v.fix).map(|f| f.lat), Some(50.95));
}

#[test]
fn exit_is_not_fired_while_inside_hysteresis_band() {
    let mut e = engine();
    let mut out = Outputs::default();
    let mut f = fence("f", square(-1.5, 50.9, -1.4, 51.0));
    f.hysteresis_m = 50.0;
    e.put_fence(f, T0, &mut out).expect("fence");
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.95, -1.41), &mut out);
    // 30 m east of the east edge: inside the band.
    let (lat, lon) = sphere::destination(50.95, -1.4, 90.0, 30.0);
    e.apply(u, &Fix::at(T0 + 1000, lat, lon), &mut out);
    assert_eq!(events(&out), vec![("enter".into(), "f".into())]);
    // 80 m out: beyond it.
    let (lat, lon) = sphere::destination(50.95, -1.4, 90.0, 80.0);
    e.apply(u, &Fix::at(T0 + 2000, lat, lon), &mut out);
    assert_eq!(events(&out).last(), Some(&("exit".into(), "f".into())));
}

#[test]
fn unit_outside_does_not_enter_within_hysteresis_band() {
    let mut e = engine();
    let mut out = Outputs::default();
    let mut f = fence("f", square(-1.5, 50.9, -1.4, 51.0));
    f.hysteresis_m = 50.0;
    e.put_fence(f, T0, &mut out).expect("fence");
    let u = e.intern_unit("A");
    let (lat, lon) = sphere::destination(50.95, -1.4, 90.0, 30.0);
    e.apply(u, &Fix::at(T0, lat, lon), &mut out);
    assert!(out.alerts.is_empty());
}

#[test]
fn dwell_fires_once_after_dwell_s_on_fixes() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("A");
    for s in 0..=120 {
        e.apply(
            u,
            &Fix::at(T0 + s * 1000, 50.95, -1.45 + s as f64 * 1e-5),
            &mut out,
        );
    }
    let ev = events(&out);
    assert_eq!(
        ev,
        vec![("enter".into(), "f".into()), ("dwell".into(), "f".into())]
    );
    assert_eq!(out.alerts[1].time_ms, T0 + 60_000);
}

#[test]
fn dwell_fires_on_tick_when_the_unit_stops_reporting() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    e.tick(T0 + 59_000, &mut out);
    assert_eq!(out.alerts.len(), 1);
    e.tick(T0 + 60_000, &mut out);
    e.tick(T0 + 61_000, &mut out);
    assert_eq!(
        events(&out),
        vec![("enter".into(), "f".into()), ("dwell".into(), "f".into())]
    );
}

#[test]
fn the_clock_follows_a_fence_replaced_without_dwell_and_back() {
    let mut e = engine();
    let mut out = Outputs::default();
    let area = square(-1.5, 50.9, -1.4, 51.0);
    e.put_fence(fence("f", area.clone()), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    let mut quiet = fence("f", area.clone());
    quiet.detect.dwell = false;
    e.put_fence(quiet, T0 + 1000, &mut out).expect("replace");
    out.clear();
    e.tick(T0 + 61_000, &mut out);
    assert!(
        events(&out).iter().all(|(k, _)| k != "dwell"),
        "{:?}",
        events(&out)
    );
    e.put_fence(fence("f", area), T0 + 62_000, &mut out)
        .expect("replace");
    out.clear();
    e.tick(T0 + 100_000, &mut out);
    assert_eq!(events(&out), vec![("dwell".into(), "f".into())]);
}

#[test]
fn leaving_and_reentering_rearms_dwell() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    e.apply(u, &Fix::at(T0 + 61_000, 50.95, -1.45), &mut out);
    e.apply(u, &Fix::at(T0 + 62_000, 50.95, -1.3), &mut out);
    e.apply(u, &Fix::at(T0 + 63_000, 50.95, -1.45), &mut out);
    e.apply(u, &Fix::at(T0 + 124_000, 50.95, -1.45), &mut out);
    let kinds: Vec<String> = events(&out).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, vec!["enter", "dwell", "exit", "enter", "dwell"]);
}

#[test]
fn stale_after_silence_then_fresh_on_next_fix() {
    let mut e = engine();
    let mut out = Outputs::default();
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    e.tick(T0 + 120_000, &mut out);
    assert!(out.alerts.is_empty(), "exactly stale_after is not yet stale");
    e.tick(T0 + 120_001, &mut out);
    e.tick(T0 + 130_000, &mut out);
    assert_eq!(events(&out), vec![("stale".into(), "".into())]);
    assert!(e.unit_view(u).is_some_and(|v| v.stale));
    e.apply(u, &Fix::at(T0 + 131_000, 50.95, -1.45), &mut out);
    assert_eq!(events(&out)[1].0, "fresh");
    assert!(e.unit_view(u).is_some_and(|v| !v.stale));
}

#[test]
fn a_report_past_its_own_stale_time_makes_the_unit_stale_early() {
    let mut e = engine();
    let mut out = Outputs::default();
    let u = e.intern_unit("ANDROID-1");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    e.set_details(u, None, None, Some(T0 + 20_000));
    e.tick(T0 + 20_000, &mut out);
    assert!(out.alerts.is_empty(), "at its stale time it is still current");
    e.tick(T0 + 20_001, &mut out);
    assert_eq!(events(&out), vec![("stale".into(), "".into())]);
    // The next report, with a later stale time, is fresh until then.
    e.set_details(u, None, None, Some(T0 + 80_000));
    e.apply(u, &Fix::at(T0 + 21_000, 50.95, -1.45), &mut out);
    e.tick(T0 + 79_000, &mut out);
    assert_eq!(events(&out).len(), 2, "fresh, and not stale again yet");
    assert!(e.unit_view(u).is_some_and(|v| !v.stale));
}

#[test]
fn ticking_in_parts_covers_every_unit_exactly_once() {
    let mut e = engine();
    let mut out = Outputs::default();
    let units: Vec<_> = (0..37).map(|i| e.intern_unit(&format!("U{i}"))).collect();
    for (i, u) in units.iter().enumerate() {
        e.apply(*u, &Fix::at(T0, 50.0 + i as f64 * 0.01, -1.45), &mut out);
    }
    out.clear();
    for part in 0..10 {
        e.tick_part(T0 + 200_000, part, 10, &mut out);
    }
    assert_eq!(out.alerts.len(), units.len(), "one stale alert per unit");
    let mut slots: Vec<_> = out.alerts.iter().map(|a| a.unit).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), units.len());
    assert!(units.iter().all(|u| e.unit_view(*u).is_some_and(|v| v.stale)));
}

#[test]
fn stale_after_can_differ_by_agency() {
    let mut cfg = bluelight_engine::EngineConfig::default();
    cfg.stale_after_by_agency[Agency::Coastguard as usize] = Some(600);
    let mut e = bluelight_engine::Engine::new(cfg).expect("config");
    let mut out = Outputs::default();
    let boat = e.intern_unit("CG-1");
    e.set_meta(boat, Some(Agency::Coastguard), None, None)
        .expect("meta");
    let car = e.intern_unit("POL-1");
    e.apply(boat, &Fix::at(T0, 50.0, -1.0), &mut out);
    e.apply(car, &Fix::at(T0, 50.0, -1.1), &mut out);
    e.tick(T0 + 300_000, &mut out);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].unit, car);
}

#[test]
fn stale_units_are_left_out_of_nearest_unless_asked() {
    let mut e = engine();
    let mut out = Outputs::default();
    let a = e.intern_unit("A");
    e.apply(a, &Fix::at(T0, 50.0, -1.0), &mut out);
    e.tick(T0 + 200_000, &mut out);
    let mut q = bluelight_engine::NearestQuery {
        lat: 50.0,
        lon: -1.0,
        k: 5,
        filter: Filter::all(),
        max_distance_m: None,
        include_stale: false,
    };
    assert!(e.nearest(&q, T0 + 200_000).is_empty());
    q.include_stale = true;
    assert_eq!(e.nearest(&q, T0 + 200_000).len(), 1);
}

#[test]
fn creating_a_fence_sets_membership_silently() {
    let mut e = engine();
    let mut out = Outputs::default();
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    assert!(out.alerts.is_empty());
    assert_eq!(e.fence_members("f"), vec![u]);
    e.apply(u, &Fix::at(T0 + 1000, 50.95, -1.3), &mut out);
    assert_eq!(events(&out), vec![("exit".into(), "f".into())]);
}

#[test]
fn replacing_a_fence_fires_enter_and_exit_for_changed_units_only() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let stays = e.intern_unit("STAYS");
    let leaves = e.intern_unit("LEAVES");
    let joins = e.intern_unit("JOINS");
    e.apply(stays, &Fix::at(T0, 50.95, -1.39 - 0.05), &mut out);
    e.apply(leaves, &Fix::at(T0, 50.95, -1.49), &mut out);
    e.apply(joins, &Fix::at(T0, 50.95, -1.35), &mut out);
    out.clear();
    let created = e
        .put_fence(fence("f", square(-1.46, 50.9, -1.3, 51.0)), T0, &mut out)
        .expect("replace");
    assert!(!created);
    let mut got: Vec<(String, String)> = out
        .alerts
        .iter()
        .map(|a| (a.event.as_str().to_owned(), e.unit_id(a.unit).to_owned()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("enter".into(), "JOINS".into()), ("exit".into(), "LEAVES".into())]
    );
    let mut members = e.fence_members("f");
    members.sort();
    assert_eq!(members, vec![stays, joins]);
}

#[test]
fn removing_a_fence_forgets_members_silently() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(fence("f", square(-1.5, 50.9, -1.4, 51.0)), T0, &mut out)
        .expect("fence");
    let u = e.intern_unit("A");
    e.apply(u, &Fix::at(T0, 50.95, -1.45), &mut out);
    out.clear();
    e.remove_fence("f").expect("exists");
    e.apply(u, &Fix::at(T0 + 1000, 50.95, -1.3), &mut out);
    assert!(out.alerts.is_empty());
    assert!(e.remove_fence("f").is_err());
}

#[test]
fn fence_filter_limits_which_units_it_applies_to() {
    let mut e = engine();
    let mut out = Outputs::default();
    let mut f = fence("f", square(-1.5, 50.9, -1.4, 51.0));
    f.filter = Filter::agencies(&[Agency::Ambulance]);
    e.put_fence(f, T0, &mut out).expect("fence");
    let amb = e.intern_unit("AMB");
    e.set_meta(amb, Some(Agency::Ambulance), None, None)
        .expect("meta");
    let pol = e.intern_unit("POL");
    e.set_meta(pol, Some(Agency::Police), None, None).expect("meta");
    e.apply(amb, &Fix::at(T0, 50.95, -1.45), &mut out);
    e.apply(pol, &Fix::at(T0, 50.95, -1.45), &mut out);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].unit, amb);
}

#[test]
fn status_change_out_of_a_fence_filter_fires_exit() {
    let mut e = engine();
    let mut out = Outputs::default();
    let mut f = fence("f", square(-1.5, 50.9, -1.4, 51.0));
    f.filter = Filter::statuses(&[Status::Available]);
    e.put_fence(f, T0, &mut out).expect("fence");
    let u = e.intern_unit("A");
    e.apply(
        u,
        &Fix::at(T0, 50.95, -1.45).with_status(Status::Available),
        &mut out,
    );
    e.apply(
        u,
        &Fix::at(T0 + 1000, 50.95, -1.45).with_status(Status::Enroute),
        &mut out,
    );
    let kinds: Vec<String> = events(&out).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, vec!["enter", "exit"]);
}

#[test]
fn proximity_fires_once_and_rearms_after_separation_beyond_hysteresis() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_rule(RuleSpec {
        id: "officer-safety".into(),
        from: Filter::statuses(&[Status::Emergency]),
        to: Filter::agencies(&[Agency::Police]),
        radius_m: 500.0,
        hysteresis_m: 100.0,
        source: None,
    })
    .expect("rule");
    let sos = e.intern_unit("POL-1");
    let help = e.intern_unit("POL-2");
    e.set_meta(sos, Some(Agency::Police), None, None).expect("meta");
    e.set_meta(help, Some(Agency::Police), None, None).expect("meta");
    e.apply(
        sos,
        &Fix::at(T0, 51.5, -0.1).with_status(Status::Emergency),
        &mut out,
    );
    let at = |m: f64| sphere::destination(51.5, -0.1, 0.0, m);
    let (la, lo) = at(2000.0);
    e.apply(help, &Fix::at(T0, la, lo), &mut out);
    assert!(out.alerts.is_empty());
    let (la, lo) = at(400.0);
    e.apply(help, &Fix::at(T0 + 1000, la, lo), &mut out);
    assert_eq!(events(&out), vec![("proximity".into(), "officer-safety".into())]);
    assert_eq!(out.alerts[0].other, Some(sos));
    assert!((out.alerts[0].distance_m.unwrap_or(0.0) - 400.0).abs() < 0.5);
    // Out to 550 m (inside the 600 m re-arm distance) and back: no new alert.
    let (la, lo) = at(550.0);
    e.apply(help, &Fix::at(T0 + 2000, la, lo), &mut out);
    let (la, lo) = at(300.0);
    e.apply(help, &Fix::at(T0 + 3000, la, lo), &mut out);
    assert_eq!(out.alerts.len(), 1);
    // Out beyond 600 m re-arms; back in fires again.
    let (la, lo) = at(700.0);
    e.apply(help, &Fix::at(T0 + 4000, la, lo), &mut out);
    let (la, lo) = at(300.0);
    e.apply(help, &Fix::at(T0 + 5000, la, lo), &mut out);
    assert_eq!(out.alerts.len(), 2);
}

#[test]
fn circle_fence_on_the_antimeridian_catches_both_sides() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(
        fence(
            "dateline",
            bluelight_engine::Shape::circle(0.0, 180.0, 5000.0).expect("circle"),
        ),
        T0,
        &mut out,
    )
    .expect("fence");
    let a = e.intern_unit("A");
    let b = e.intern_unit("B");
    e.apply(a, &Fix::at(T0, 0.0, 179.99), &mut out);
    e.apply(b, &Fix::at(T0, 0.0, -179.99), &mut out);
    assert_eq!(out.alerts.len(), 2);
}

#[test]
fn polar_fence_catches_units_at_the_pole() {
    let mut e = engine();
    let mut out = Outputs::default();
    e.put_fence(
        fence(
            "pole",
            bluelight_engine::Shape::bbox([-180.0, 89.9, 180.0, 90.0]).expect("bbox"),
        ),
        T0,
        &mut out,
    )
    .expect("fence");
    let a = e.intern_unit("A");
    e.apply(a, &Fix::at(T0, 90.0, 0.0), &mut out);
    let b = e.intern_unit("B");
    e.apply(b, &Fix::at(T0, 89.95, 123.0), &mut out);
    assert_eq!(out.alerts.len(), 2);
}

#[test]
fn history_reads_back_by_window_area_units_and_agency_in_time_order() {
    let mut e = engine();
    let mut out = Outputs::default();
    let amb = e.intern_unit("AMB");
    e.set_meta(amb, Some(Agency::Ambulance), None, None)
        .expect("meta");
    let pol = e.intern_unit("POL");
    e.set_meta(pol, Some(Agency::Police), None, None).expect("meta");
    for i in 0..10 {
        e.apply(
            amb,
            &Fix::at(T0 + i * 30_000, 50.95, -1.45 + i as f64 * 0.01),
            &mut out,
        );
        e.apply(pol, &Fix::at(T0 + i * 30_000, 50.95, -1.45), &mut out);
    }
    // A late fix of AMB arrives last but belongs early.
    e.apply(amb, &Fix::at(T0 + 15_000, 50.0, -1.0), &mut out);
    let read = |q: &bluelight_engine::HistoryQuery| {
        let mut v = Vec::new();
        e.history_query(q, |c| {
            v.extend(c.iter().map(|r| (e.unit_id(r.unit).to_owned(), r.fix.time_ms)))
        });
        v
    };
    let all = read(&bluelight_engine::HistoryQuery {
        from_ms: T0,
        to_ms: T0 + 60_000,
        ..Default::default()
    });
    let times: Vec<i64> = all.iter().map(|x| x.1).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{all:?}");
    assert_eq!(all.len(), 3 * 2 + 1);
    assert!(
        all.contains(&("AMB".into(), T0 + 15_000)),
        "late fix is in its time place"
    );
    let ambs = read(&bluelight_engine::HistoryQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        agencies: Some(vec![Agency::Ambulance]),
        ..Default::default()
    });
    assert_eq!(ambs.len(), 11);
    assert!(ambs.iter().all(|x| x.0 == "AMB"));
    let in_box = read(&bluelight_engine::HistoryQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        area: Some(square(-1.46, 50.9, -1.42, 51.0)),
        units: Some(vec![amb]),
        ..Default::default()
    });
    assert_eq!(in_box.len(), 4, "{in_box:?}");
}
