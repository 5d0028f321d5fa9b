//! Standing queries: feeds and continuous nearest.

use bluelight_engine::{FeedChange, Filter, Fix, Outputs, Shape, sphere};

use crate::support::{engine, events, fence, square};

const T0: i64 = 1_763_726_400_000;

#[test]
fn feed_snapshot_then_entered_moved_left() {
    let mut e = engine();
    let mut out = Outputs::default();
    let inside = e.intern_unit("IN");
    e.apply(inside, &Fix::at(T0, 50.95, -1.45), &mut out);
    let (feed, snap) = e
        .subscribe_feed(square(-1.5, 50.9, -1.4, 51.0), Filter::all(), T0)
        .expect("feed");
    assert_eq!(snap, vec![inside]);
    let other = e.intern_unit("OTHER");
    e.apply(other, &Fix::at(T0, 50.8, -1.45), &mut out);
    assert!(out.feed.is_empty());
    e.apply(other, &Fix::at(T0 + 1000, 50.95, -1.46), &mut out);
    e.apply(inside, &Fix::at(T0 + 1000, 50.951, -1.45), &mut out);
    e.apply(inside, &Fix::at(T0 + 2000, 51.2, -1.45), &mut out);
    let got: Vec<(u32, String, FeedChange)> = out
        .feed
        .iter()
        .map(|f| (f.feed, e.unit_id(f.unit).to_owned(), f.change))
        .collect();
    assert_eq!(
        got,
        vec![
            (feed, "OTHER".into(), FeedChange::Entered),
            (feed, "IN".into(), FeedChange::Moved),
            (feed, "IN".into(), FeedChange::Left),
        ]
    );
    e.unsubscribe_feed(feed).expect("open");
    out.clear();
    e.apply(other, &Fix::at(T0 + 3000, 50.95, -1.47), &mut out);
    assert!(out.feed.is_empty());
}

#[test]
fn standing_nearest_updates_when_a_closer_unit_arrives() {
    let mut e = engine();
    let mut out = Outputs::default();
    let far = e.intern_unit("FAR");
    let mid = e.intern_unit("MID");
    let (la, lo) = sphere::destination(51.5, -0.1, 45.0, 5000.0);
    e.apply(far, &Fix::at(T0, la, lo), &mut out);
    let (la, lo) = sphere::destination(51.5, -0.1, 200.0, 3000.0);
    e.apply(mid, &Fix::at(T0, la, lo), &mut out);
    e.flush(&mut out);
    let (q, first) = e
        .subscribe_nearest(51.5, -0.1, 2, Filter::all(), false, T0)
        .expect("query");
    assert_eq!(first.iter().map(|n| n.unit).collect::<Vec<_>>(), vec![mid, far]);
    out.clear();
    // A unit far away changes nothing.
    let x = e.intern_unit("X");
    e.apply(x, &Fix::at(T0, 55.0, -3.0), &mut out);
    e.flush(&mut out);
    assert!(out.nearest.is_empty());
    // A new unit 1 km away enters the top 2.
    let (la, lo) = sphere::destination(51.5, -0.1, 300.0, 1000.0);
    e.apply(x, &Fix::at(T0 + 1000, la, lo), &mut out);
    e.flush(&mut out);
    assert_eq!(out.nearest, vec![q]);
    let now: Vec<_> = e
        .nearest_results(q)
        .expect("open")
        .iter()
        .map(|n| n.unit)
        .collect();
    assert_eq!(now, vec![x, mid]);
    // FAR moving closer than MID reorders.
    out.clear();
    let (la, lo) = sphere::destination(51.5, -0.1, 45.0, 500.0);
    e.apply(far, &Fix::at(T0 + 2000, la, lo), &mut out);
    e.flush(&mut out);
    assert_eq!(out.nearest, vec![q]);
    let now: Vec<_> = e
        .nearest_results(q)
        .expect("open")
        .iter()
        .map(|n| n.unit)
        .collect();
    assert_eq!(now, vec![far, x]);
    e.unsubscribe_nearest(q).expect("open");
}

#[test]
fn standing_nearest_with_too_few_units_hears_units_anywhere() {
    let mut e = engine();
    let mut out = Outputs::default();
    let (q, first) = e
        .subscribe_nearest(0.0, 0.0, 3, Filter::all(), false, T0)
        .expect("query");
    assert!(first.is_empty());
    let u = e.intern_unit("FAR-AWAY");
    e.apply(u, &Fix::at(T0, -60.0, 170.0), &mut out);
    e.flush(&mut out);
    assert_eq!(out.nearest, vec![q]);
}

#[test]
fn area_queries_respect_the_filter() {
    let mut e = engine();
    let mut out = Outputs::default();
    let a = e.intern_unit("A");
    e.apply(
        a,
        &Fix::at(T0, 10.0, 10.0).with_status(bluelight_engine::Status::Available),
        &mut out,
    );
    let b = e.intern_unit("B");
    e.apply(
        b,
        &Fix::at(T0, 10.0, 10.001).with_status(bluelight_engine::Status::Enroute),
        &mut out,
    );
    let s = Shape::circle(10.0, 10.0, 1000.0).expect("circle");
    assert_eq!(e.area(&s, &Filter::all(), false, T0).len(), 2);
    let f = Filter::statuses(&[bluelight_engine::Status::Available]);
    assert_eq!(e.area(&s, &f, false, T0), vec![a]);
}

#[test]
fn a_kind_filter_never_matches_a_unit_without_a_kind() {
    let mut e = engine();
    let mut out = Outputs::default();
    let rrv = e.intern_unit("RRV");
    e.set_meta(rrv, None, Some("rrv"), None).expect("meta");
    let plain = e.intern_unit("PLAIN");
    e.apply(rrv, &Fix::at(T0, 10.0, 10.0), &mut out);
    e.apply(plain, &Fix::at(T0, 10.0, 10.0001), &mut out);
    let f = e
        .compile_filter(None, None, Some(&["rrv"]), None, None, None)
        .expect("filter");
    let s = Shape::circle(10.0, 10.0, 1000.0).expect("circle");
    assert_eq!(e.area(&s, &f, false, T0), vec![rrv]);
}

/// A unit driving past thousands of small fences (every school, every
/// hospital entrance) leaves behind each cell's combination of fences:
/// the candidate sets must come back when no occupied cell holds them
/// (the soak's steady memory growth before they did).
#[test]
fn candidate_sets_of_cells_left_behind_are_freed() {
    let mut e = engine();
    let mut out = Outputs::default();
    // 5,000 points about 400 m apart, each in its own fence.
    let points: Vec<(f64, f64)> = (0..5000)
        .map(|i| (50.0 + 0.004 * f64::from(i / 70), -2.0 + 0.006 * f64::from(i % 70)))
        .collect();
    for (i, &(lat, lon)) in points.iter().enumerate() {
        let shape = Shape::circle(lat, lon, 60.0).expect("circle");
        e.put_fence(fence(&format!("site-{i}"), shape), T0, &mut out)
            .expect("fence");
    }
    let car = e.intern_unit("CAR-1");
    let mut most = 0;
    for (i, &(lat, lon)) in points.iter().enumerate() {
        out.clear();
        // Ten minutes apart: the implied-speed filter never refuses.
        e.apply(car, &Fix::at(T0 + 600_000 * (i as i64 + 1), lat, lon), &mut out);
        let entered: Vec<_> = events(&out).into_iter().filter(|(ev, _)| ev == "enter").collect();
        assert_eq!(
            entered,
            vec![("enter".into(), format!("site-{i}"))],
            "at site {i}"
        );
        most = most.max(e.candidate_sets());
    }
    assert_eq!(e.occupied_cells(), 1);
    assert!(
        most <= 1 + 4096,
        "{most} candidate sets interned at most for one occupied cell"
    );
}
