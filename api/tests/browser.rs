//! The dispatch map in a real browser (headless Chromium over the DevTools
//! protocol, real mouse clicks): it loads with no request to another host,
//! draws the coast, shows units and follows them, draws a fence that then
//! fires an alert, answers nearest as `/v1/nearest` does and keeps a pinned
//! query up to date, resumes alerts after the server restarts, and keeps up
//! with 5,000 units at 1 Hz. Every test saves screenshots under
//! `target/tmp/browser/`.

mod support;

use std::time::Duration;

use bluelight_api::config::{ServeConfig, TokenConfig};
use serde_json::{Value, json};
use support::browser::Page;
use support::redis::{Bluelight, RedisServer, free_port};
use support::{get_json, send_json, server_with};

/// One browser at a time: each test's timings (and the performance figures
/// above all) are the page's, not a neighbour's.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock)
}

async fn post_fixes(http: std::net::SocketAddr, fixes: Value) {
    let n = fixes.as_array().map_or(0, Vec::len) as u64;
    let (st, v) = send_json(http, "POST", "/v1/fixes", &json!({ "fixes": fixes }), None).await;
    assert_eq!((st, v["accepted"].as_u64()), (200, Some(n)), "{v}");
}

/// Centres the map and waits for the viewport's feed to follow.
async fn view(page: &mut Page, lat: f64, lon: f64, zoom: f64) {
    let before = page.eval("bluelight.state.posSub").await;
    page.eval(&format!(
        "bluelight.map.setView([{lat}, {lon}], {zoom}, {{animate: false}}), 1"
    ))
    .await;
    page.wait_for(
        &format!("bluelight.state.posSub && bluelight.state.posSub !== {before}"),
        WAIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_loads_offline_draws_the_coast_and_follows_units() {
    let _one = ONE_BROWSER.lock().await;
    let s = server_with(ServeConfig::default()).await;
    let t = now_ms();
    post_fixes(
        s.http,
        (0..7)
            .map(|i| json!({"id": format!("AMB-{i}"), "agency": "ambulance", "status": "available", "lat": 51.5 + i as f64 * 0.01, "lon": -0.12, "time_ms": t - 90_000}))
            .collect(),
    )
    .await;
    let origin = format!("http://{}", s.http);
    let mut page = Page::open(&format!("{origin}/"), "offline").await;
    page.wait_for("document.getElementById('conn').textContent === 'live'", WAIT)
        .await;
    page.wait_for("bluelight.state.units.size === 7", WAIT).await;
    page.wait_for(
        "bluelight.state.geography && bluelight.state.geography.detail > 0",
        WAIT,
    )
    .await;
    // Land is painted where Birmingham is and nothing over the North Sea.
    let pixel = |lat: f64, lon: f64| {
        format!(
            "(() => {{ const c = document.querySelector('.leaflet-overlay-pane canvas');
               const r = c.getBoundingClientRect(), m = bluelight.map.getContainer().getBoundingClientRect();
               const p = bluelight.map.latLngToContainerPoint([{lat}, {lon}]);
               const x = Math.round((m.left + p.x - r.left) * c.width / r.width);
               const y = Math.round((m.top + p.y - r.top) * c.height / r.height);
               return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data); }})()"
        )
    };
    let land = page.eval(&pixel(52.48, -1.89)).await;
    let sea = page.eval(&pixel(55.5, 3.0)).await;
    assert_eq!(
        land,
        json!([0x1f, 0x2a, 0x1f, 255]),
        "Birmingham is painted as land"
    );
    assert_eq!(sea[3], 0, "the North Sea is not land: {sea}");
    page.screenshot("offline-loaded").await;

    // A unit moves and a new one arrives: the page follows both.
    post_fixes(
        s.http,
        json!([{"id": "AMB-0", "lat": 51.55, "lon": -0.15, "time_ms": t},
               {"id": "FIRE-1", "agency": "fire", "lat": 52.0, "lon": -1.0, "time_ms": t}]),
    )
    .await;
    page.wait_for(
        "bluelight.state.units.size === 8 && bluelight.state.units.get('AMB-0').lat === 51.55",
        WAIT,
    )
    .await;
    // Details of a unit on a click.
    let (x, y) = page.point_of(51.55, -0.15).await;
    page.click_at(x, y).await;
    page.wait_for("document.getElementById('unit-id').textContent === 'AMB-0'", WAIT)
        .await;
    let details = page
        .eval("document.getElementById('unit-details').textContent")
        .await;
    assert!(
        details
            .as_str()
            .is_some_and(|d| d.contains("ambulance") && d.contains("available")),
        "{details}"
    );
    // Its trail, from /v1/export: the two fixes it sent.
    page.eval("document.getElementById('trail-btn').click(), 1").await;
    page.wait_for(
        "document.getElementById('trail-info').textContent.startsWith('2 fixes')",
        WAIT,
    )
    .await;
    assert_eq!(page.eval("bluelight.layers.trail.getLayers().length").await, 1);
    page.screenshot("offline-unit").await;

    // Search by id.
    page.eval("document.getElementById('search').value = 'FIRE-1'; document.getElementById('search-form').requestSubmit(), 1")
        .await;
    page.wait_for(
        "document.getElementById('unit-id').textContent === 'FIRE-1'",
        WAIT,
    )
    .await;
    page.eval("document.getElementById('search').value = 'NOBODY'; document.getElementById('search-form').requestSubmit(), 1")
        .await;
    page.wait_for(
        "document.getElementById('search-error').textContent === 'no unit NOBODY'",
        WAIT,
    )
    .await;
    // A filter is the feed's: without ambulances only the fire unit is left.
    page.eval("document.querySelector('#f-agency input[value=ambulance]').click(), 1")
        .await;
    page.wait_for(
        "bluelight.state.units.size === 1 && bluelight.state.units.has('FIRE-1')",
        WAIT,
    )
    .await;
    // The H3 grid at the zoom's resolution.
    page.eval("document.getElementById('f-h3').click(), 1").await;
    let grid = page
        .wait_for("bluelight.layers.h3.getLayers().length", WAIT)
        .await;
    let label = page.eval("document.getElementById('h3-res').textContent").await;
    assert!(
        label
            .as_str()
            .is_some_and(|l| l.contains(&format!("{grid} cells"))),
        "{label} vs {grid}"
    );
    page.screenshot("offline-filtered-grid").await;

    // An emergency is cued even when its unit is filtered out of the view.
    post_fixes(
        s.http,
        json!([{"id": "AMB-6", "status": "emergency", "lat": 51.56, "lon": -0.12, "time_ms": t}]),
    )
    .await;
    page.wait_for(
        "!document.getElementById('banner').hidden && document.getElementById('banner').textContent.includes('AMB-6')",
        WAIT,
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('emergencies').textContent")
            .await,
        "1"
    );
    let first = page
        .eval("document.querySelector('#alerts li').textContent")
        .await;
    assert!(
        first
            .as_str()
            .is_some_and(|t| t.contains("EMERGENCY") && t.contains("AMB-6")),
        "{first}"
    );
    page.screenshot("offline-emergency").await;
    assert!(page.exceptions.is_empty(), "{:?}", page.exceptions);
    let foreign = page.foreign_requests(&origin);
    assert!(foreign.is_empty(), "requests left the machine: {foreign:?}");
    assert!(
        page.requests.iter().any(|u| u.ends_with("/v1/ws")),
        "{:?}",
        page.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_tokens_asks_for_one_and_the_page_then_works() {
    let _one = ONE_BROWSER.lock().await;
    let mut cfg = ServeConfig::default();
    cfg.auth.tokens = vec![TokenConfig {
        token: "map-secret-0123456789".into(),
        scopes: vec!["read".into(), "alerts".into()],
        agencies: None,
        ..Default::default()
    }];
    let s = server_with(cfg).await;
    let fix = json!({"fixes": [{"id": "P-1", "lat": 51.5, "lon": -0.1, "time_ms": now_ms()}]});
    let (st, v) = send_json(s.http, "POST", "/v1/fixes", &fix, Some("map-secret-0123456789")).await;
    assert_eq!(st, 403, "a read token cannot ingest: {v}");
    let mut page = Page::open(&format!("http://{}/", s.http), "token").await;
    page.wait_for("!document.getElementById('token-form').hidden", WAIT)
        .await;
    assert_eq!(
        page.eval("document.getElementById('conn').textContent").await,
        "token required"
    );
    page.eval("document.getElementById('token').value = 'map-secret-0123456789'; document.getElementById('token-form').requestSubmit(), 1")
        .await;
    page.wait_for("bluelight.state.live && bluelight.state.posSub", WAIT)
        .await;
    assert!(
        page.requests
            .iter()
            .any(|u| u.ends_with("/v1/ws?token=map-secret-0123456789")),
        "{:?}",
        page.requests
    );
    page.screenshot("token").await;
    assert!(page.exceptions.is_empty(), "{:?}", page.exceptions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_tile_server_replaces_the_built_in_coast() {
    let _one = ONE_BROWSER.lock().await;
    // Nothing listens there: what matters is where the page asks.
    let tiles = format!("http://127.0.0.1:{}", free_port());
    let mut cfg = ServeConfig::default();
    cfg.map.tile_url = Some(format!("{tiles}/{{z}}/{{x}}/{{y}}.png"));
    let s = server_with(cfg).await;
    let origin = format!("http://{}", s.http);
    let mut page = Page::open(&format!("{origin}/"), "tiles").await;
    page.wait_for("bluelight.state.live", WAIT).await;
    page.wait_for("document.querySelectorAll('.leaflet-tile').length", WAIT)
        .await;
    let foreign = page.foreign_requests(&origin);
    assert!(!foreign.is_empty(), "no tile was asked for");
    assert!(
        foreign
            .iter()
            .all(|u| u.starts_with(&tiles) && u.ends_with(".png")),
        "{foreign:?}"
    );
    assert_eq!(page.eval("bluelight.state.geography === undefined").await, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_drawn_in_the_page_fires_an_alert_shown_in_the_panel() {
    let _one = ONE_BROWSER.lock().await;
    let s = server_with(ServeConfig::default()).await;
    let t = now_ms();
    post_fixes(
        s.http,
        json!([{"id": "P-1", "agency": "police", "lat": 51.50, "lon": -0.10, "time_ms": t}]),
    )
    .await;
    let mut page = Page::open(&format!("http://{}/", s.http), "fence").await;
    page.wait_for("bluelight.state.units.size === 1", WAIT).await;
    view(&mut page, 51.51, -0.10, 14.0).await;

    page.eval("document.getElementById('draw-polygon').click(), 1")
        .await;
    let corners = [
        (51.515, -0.105),
        (51.515, -0.095),
        (51.525, -0.095),
        (51.525, -0.105),
    ];
    for (lat, lon) in corners {
        page.click_map(lat, lon).await;
    }
    page.click_map(corners[0].0, corners[0].1).await; // the first corner again closes it
    page.wait_for("!document.getElementById('fence-form').hidden", WAIT)
        .await;
    page.eval(
        "document.getElementById('fence-id').value = 'drawn';
         document.getElementById('fence-name').value = 'Drawn cordon <img src=x onerror=window.pwned=1>';
         document.getElementById('fence-hyst').value = '10';
         document.getElementById('fence-save').click(), 1",
    )
    .await;
    page.wait_for("bluelight.state.fences.some(f => f.id === 'drawn')", WAIT)
        .await;

    let (st, f) = get_json(s.http, "/v1/fences/drawn", None).await;
    assert_eq!(st, 200, "{f}");
    assert_eq!(
        f["properties"]["name"],
        "Drawn cordon <img src=x onerror=window.pwned=1>"
    );
    // A name is text on the map, never markup that runs.
    let label = page
        .wait_for("document.querySelector('.fence-label')?.textContent", WAIT)
        .await;
    assert!(label.as_str().is_some_and(|l| l.contains("<img")), "{label}");
    assert_eq!(
        page.eval("window.pwned === undefined").await,
        true,
        "a fence name ran script"
    );
    assert_eq!(f["properties"]["hysteresis_m"], 10.0);
    let ring = f["geometry"]["coordinates"][0].as_array().expect("ring").clone();
    assert_eq!(ring.len(), 5, "four corners and the first again: {ring:?}");
    for ((lat, lon), got) in corners.iter().zip(&ring) {
        // Where a click lands is the nearest pixel: a few metres at zoom 14.
        let (glon, glat) = (got[0].as_f64().expect("lon"), got[1].as_f64().expect("lat"));
        assert!(
            (glat - lat).abs() < 1e-4 && (glon - lon).abs() < 1e-4,
            "corner {lat},{lon} drawn at {glat},{glon}"
        );
    }

    post_fixes(
        s.http,
        json!([{"id": "P-1", "lat": 51.52, "lon": -0.10, "time_ms": t + 61_000}]),
    )
    .await;
    let text = page
        .wait_for(
            "[...document.querySelectorAll('#alerts li')].map(li => li.textContent).find(t => t.includes('enter') && t.includes('Drawn cordon'))",
            WAIT,
        )
        .await;
    assert!(text.as_str().is_some_and(|t| t.contains("P-1")), "{text}");
    page.screenshot("fence-alert").await;

    // A click on the fence opens it for editing: dwell added, then deleted.
    page.click_map(51.517, -0.103).await;
    page.wait_for("document.getElementById('fence-id').value === 'drawn'", WAIT)
        .await;
    page.eval(
        "document.querySelector('input[name=detect][value=dwell]').click();
         document.getElementById('fence-dwell').value = '300';
         document.getElementById('fence-save').click(), 1",
    )
    .await;
    page.wait_for("document.getElementById('fence-form').hidden", WAIT)
        .await;
    let (_, f) = get_json(s.http, "/v1/fences/drawn", None).await;
    assert_eq!(f["properties"]["dwell_s"], 300.0, "{f}");
    assert_eq!(
        f["properties"]["detect"],
        json!(["enter", "exit", "dwell"]),
        "{f}"
    );
    page.click_map(51.517, -0.103).await;
    page.wait_for("!document.getElementById('fence-form').hidden", WAIT)
        .await;
    page.eval("document.getElementById('fence-delete').click(), 1")
        .await;
    let (st, _) = get_json(s.http, "/v1/fences/drawn", None).await;
    assert_eq!(st, 200, "one click only arms the delete");
    page.eval("document.getElementById('fence-delete').click(), 1")
        .await;
    page.wait_for("bluelight.state.fences.length === 0", WAIT).await;
    let (st, _) = get_json(s.http, "/v1/fences/drawn", None).await;
    assert_eq!(st, 404);
    assert!(page.exceptions.is_empty(), "{:?}", page.exceptions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearest_click_lists_what_the_server_answers_and_a_pinned_query_follows() {
    let _one = ONE_BROWSER.lock().await;
    let s = server_with(ServeConfig::default()).await;
    let t = now_ms();
    let statuses = ["available", "available", "enroute", "available", "unavailable"];
    let mut fixes: Vec<Value> = (0..20)
        .map(|i| {
            let a = i as f64 * 0.7;
            json!({"id": format!("U-{i:02}"), "agency": if i % 2 == 0 { "police" } else { "ambulance" },
                   "status": statuses[i % statuses.len()],
                   "lat": 51.5 + a.sin() * 0.01 * (1 + i % 7) as f64,
                   "lon": -0.12 + a.cos() * 0.015 * (1 + i % 5) as f64, "time_ms": t})
        })
        .collect();
    fixes.push(
        json!({"id": "FAR", "agency": "fire", "status": "available", "lat": 52.5, "lon": -1.9, "time_ms": t}),
    );
    post_fixes(s.http, Value::Array(fixes)).await;
    let mut page = Page::open(&format!("http://{}/", s.http), "nearest").await;
    page.wait_for("bluelight.state.live", WAIT).await;
    view(&mut page, 51.5, -0.12, 12.0).await;

    page.eval("document.getElementById('nearest-mode').click(), 1")
        .await;
    page.click_map(51.503, -0.118).await;
    let shown = page
        .wait_for(
            "(() => { const l = [...document.querySelectorAll('#nearest-list li')].map(li => li.dataset.id);
                      return l.length === 5 && l; })()",
            WAIT,
        )
        .await;
    // The point the page asked about is where the click landed.
    let at = page
        .eval("[bluelight.state.nearest.point.lat, bluelight.state.nearest.point.lng]")
        .await;
    let (lat, lon) = (at[0].as_f64().expect("lat"), at[1].as_f64().expect("lon"));
    assert!(
        (lat - 51.503).abs() < 1e-3 && (lon + 0.118).abs() < 1e-3,
        "asked at {lat},{lon}"
    );
    let (st, server) = get_json(
        s.http,
        &format!("/v1/nearest?lat={lat}&lon={lon}&k=5&status=available"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{server}");
    let want: Vec<Value> = server["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["unit"]["id"].clone())
        .collect();
    assert_eq!(
        shown,
        Value::Array(want),
        "the page lists what /v1/nearest answers"
    );
    page.screenshot("nearest-once").await;

    // Pinned, it follows: FAR drives to the point and becomes the nearest.
    page.eval("document.getElementById('nearest-pin').click(), 1")
        .await;
    page.wait_for("bluelight.state.nearest.sub", WAIT).await;
    post_fixes(
        s.http,
        json!([{"id": "FAR", "lat": lat, "lon": lon, "time_ms": t + 120_000}]),
    )
    .await;
    page.wait_for(
        "document.querySelector('#nearest-list li')?.dataset.id === 'FAR'",
        WAIT,
    )
    .await;
    page.screenshot("nearest-pinned").await;
    assert!(page.exceptions.is_empty(), "{:?}", page.exceptions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_and_resumes_alerts_after_the_server_restarts() {
    let _one = ONE_BROWSER.lock().await;
    let redis = RedisServer::start();
    let port = free_port();
    let mut server = Bluelight::serve(&redis.url(), port, &[]);
    let fence = json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [-0.1, 51.5]},
                       "properties": {"radius_m": 500, "name": "Cordon"}});
    let (st, v) = send_json(server.http, "PUT", "/v1/fences/cordon", &fence, None).await;
    assert!(st == 200 || st == 201, "{st} {v}");
    let t = now_ms();
    post_fixes(
        server.http,
        json!([{"id": "P-1", "lat": 51.5, "lon": -0.1, "time_ms": t}]),
    )
    .await;

    let mut page = Page::open(&format!("http://{}/", server.http), "restart").await;
    page.wait_for("document.querySelector('#alerts li[data-seq=\"1\"]')", WAIT)
        .await;
    server.terminate();
    page.wait_for("!bluelight.state.live", WAIT).await;
    page.screenshot("restart-offline").await;

    // The same address, the same Redis: seq goes on from where it was.
    let server = Bluelight::serve(&redis.url(), port, &[]);
    post_fixes(
        server.http,
        json!([{"id": "P-1", "lat": 51.6, "lon": -0.1, "time_ms": t + 120_000}]),
    )
    .await;
    page.wait_for(
        "bluelight.state.live && document.querySelector('#alerts li[data-seq=\"2\"]')",
        WAIT,
    )
    .await;
    let seqs = page
        .eval("[...document.querySelectorAll('#alerts li[data-seq]')].map(li => Number(li.dataset.seq))")
        .await;
    assert_eq!(seqs, json!([2, 1]), "each alert once, newest first");
    let exit = page
        .eval("document.querySelector('#alerts li[data-seq=\"2\"]').textContent")
        .await;
    assert!(
        exit.as_str()
            .is_some_and(|t| t.contains("exit") && t.contains("Cordon")),
        "{exit}"
    );
    page.screenshot("restart-resumed").await;
    assert!(page.exceptions.is_empty(), "{:?}", page.exceptions);
}

/// 5,000 units over Great Britain, each reporting every second, for a
/// while: the page shows them all as they move, and the performance
/// timeline (Long Tasks API, the time each frame's drawing takes, the gaps
/// between frames) is written to `target/tmp/browser/perf.json` and printed
/// for `benches/README.md`. The figures are reported, not asserted: a
/// timing threshold in a test would pass or fail with the machine's load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_units_at_one_hertz_are_shown_as_they_move() {
    let _one = ONE_BROWSER.lock().await;
    const UNITS: usize = 5000;
    const SECONDS: i64 = 15;
    let s = server_with(ServeConfig::default()).await;
    let t0 = now_ms();
    let fleet = |step: i64| -> Value {
        (0..UNITS)
            .map(|i| {
                let a = i as f64 * 2.399_963; // golden angle: spread evenly
                let r = (i as f64 / UNITS as f64).sqrt() * 3.0;
                // Each unit drifts north-east about 20 m a second.
                let agency = ["police", "fire", "ambulance", "coastguard"][i % 4];
                json!({"id": format!("U{i:04}"), "agency": agency,
                       "status": "available", "lat": 53.0 + r * a.sin() + step as f64 * 0.0002,
                       "lon": -1.8 + r * 1.6 * a.cos() + step as f64 * 0.0002,
                       "heading_deg": 45.0, "speed_mps": 20.0, "time_ms": t0 + step * 1000})
            })
            .collect()
    };
    post_fixes(s.http, fleet(0)).await;
    let mut page = Page::open(&format!("http://{}/", s.http), "perf").await;
    page.wait_for(&format!("bluelight.state.units.size === {UNITS}"), WAIT)
        .await;
    page.eval(
        "window.perf = { gaps: [], long: [] };
         bluelight.state.drawTimes = [];
         new PerformanceObserver(l => { for (const e of l.getEntries()) perf.long.push(e.duration); })
           .observe({ type: 'longtask' });
         (() => { let last = performance.now();
           const tick = now => { perf.gaps.push(now - last); last = now; if (perf.gaps.length < 100000) requestAnimationFrame(tick); };
           requestAnimationFrame(tick); })(), 1",
    )
    .await;
    for step in 1..=SECONDS {
        let started = std::time::Instant::now();
        post_fixes(s.http, fleet(step)).await;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    }
    let last = 53.0 + SECONDS as f64 * 0.0002;
    page.wait_for(
        &format!("Math.abs(bluelight.state.units.get('U0000').lat - {last}) < 1e-9"),
        WAIT,
    )
    .await;
    page.screenshot("perf-5000").await;
    let perf = page
        .eval(
            "(() => { perf.draws = bluelight.state.drawTimes; const q = (a, p) => { const s = [...a].sort((x, y) => x - y); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null; };
                      return { units: bluelight.state.units.size, frames: perf.gaps.length, draws: perf.draws.length,
                               draw_ms_p50: q(perf.draws, 0.5), draw_ms_p99: q(perf.draws, 0.99), draw_ms_max: q(perf.draws, 1),
                               frame_gap_ms_p50: q(perf.gaps, 0.5), frame_gap_ms_p99: q(perf.gaps, 0.99),
                               long_tasks: perf.long.length, long_task_ms_max: perf.long.length ? Math.max(...perf.long) : 0 }; })()",
        )
        .await;
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser/perf.json");
    std::fs::write(&path, serde_json::to_string_pretty(&perf).expect("json")).expect("perf.json");
    println!("dispatch map, {UNITS} units at 1 Hz for {SECONDS} s: {perf}");
    assert_eq!(perf["units"], UNITS, "{perf}");
    // The page drew as the units moved: about once a second (the feed's
    // max_hz), two posts sometimes landing in one update.
    assert!(
        perf["draws"].as_u64().is_some_and(|d| d >= SECONDS as u64 / 2),
        "{perf}"
    );
    assert!(page.exceptions.is_empty(), "{:?}", page.exceptions);
}
