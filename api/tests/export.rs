//! History export over real HTTP: every format parses and matches what was
//! ingested.

mod support;

use bluelight_api::config::{AuthConfig, ServeConfig, TokenConfig};
use serde_json::{Value, json};
use support::{get_json, request, send_json, server_with};

/// Now, by the machine's clock (the server's unless a test gives it another).
fn now_ms() -> i64 {
    bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock)
}

async fn seeded() -> (bluelight_api::server::Running, i64) {
    let cfg = ServeConfig {
        auth: AuthConfig {
            tokens: vec![
                TokenConfig {
                    token: "all-of-it-0000000000001".into(),
                    scopes: vec!["ingest".into(), "export".into()],
                    agencies: None,
                    ..Default::default()
                },
                TokenConfig {
                    token: "ambulance-analyst-000001".into(),
                    scopes: vec!["export".into()],
                    agencies: Some(vec!["ambulance".into()]),
                    ..Default::default()
                },
            ],
        },
        ..ServeConfig::default()
    };
    let s = server_with(cfg).await;
    let t = now_ms() - 120_000;
    let mut fixes = Vec::new();
    for i in 0..5 {
        fixes.push(json!({"id":"AMB-1","agency":"ambulance","lat":51.50 + i as f64 * 1e-3,"lon":-0.12,"time_ms":t + i * 20_000,"speed_mps":10.0}));
        fixes.push(json!({"id":"POL,1","agency":"police","lat":52.0,"lon":-1.0 - i as f64 * 1e-3,"time_ms":t + i * 20_000}));
    }
    let (st, v) = send_json(
        s.http,
        "POST",
        "/v1/fixes",
        &json!({ "fixes": fixes }),
        Some("all-of-it-0000000000001"),
    )
    .await;
    assert_eq!((st, v["accepted"].as_u64()), (200, Some(10)), "{v}");
    (s, t)
}

const ALL: Option<&str> = Some("all-of-it-0000000000001");

#[tokio::test]
async fn geojson_points_are_a_valid_feature_collection_of_what_was_ingested() {
    let (s, t) = seeded().await;
    let (st, body) = request(
        s.http,
        "GET",
        &format!("/v1/export?from_ms={}&to_ms={}", t, t + 200_000),
        None,
        b"",
        ALL,
    )
    .await;
    assert_eq!(st, 200);
    let text = String::from_utf8(body).expect("utf8");
    let fc: geojson::FeatureCollection = text.parse().expect("RFC 7946 FeatureCollection");
    assert_eq!(fc.features.len(), 10);
    let amb: Vec<&geojson::Feature> = fc
        .features
        .iter()
        .filter(|f| f.property("id") == Some(&json!("AMB-1")))
        .collect();
    assert_eq!(amb.len(), 5);
    let times: Vec<i64> = amb
        .iter()
        .filter_map(|f| f.property("time_ms")?.as_i64())
        .collect();
    assert_eq!(
        times,
        (0..5).map(|i| t + i * 20_000).collect::<Vec<_>>(),
        "per unit in time order"
    );
    assert_eq!(amb[2].property("speed_mps"), Some(&json!(10.0)));
}

#[tokio::test]
async fn csv_has_a_header_and_quotes_what_needs_quoting() {
    let (s, t) = seeded().await;
    let (st, body) = request(
        s.http,
        "GET",
        &format!(
            "/v1/export?from_ms={}&to_ms={}&format=csv&units=POL,1",
            t,
            t + 200_000
        ),
        None,
        b"",
        ALL,
    )
    .await;
    assert_eq!(st, 200);
    let text = String::from_utf8(body).expect("utf8");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id,time_ms,lat,lon,speed_mps,heading_deg,accuracy_m,status,agency")
    );
    let rows: Vec<&str> = lines.collect();
    // "units=POL,1" is two ids, POL and 1, neither of which exists: nothing.
    assert!(rows.is_empty(), "{rows:?}");
    let (_, body) = request(
        s.http,
        "GET",
        &format!(
            "/v1/export?from_ms={}&to_ms={}&format=csv&agency=police",
            t,
            t + 200_000
        ),
        None,
        b"",
        ALL,
    )
    .await;
    let text = String::from_utf8(body).expect("utf8");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 5);
    assert!(rows[0].starts_with("\"POL,1\","), "{}", rows[0]);
    assert!(rows[0].ends_with(",unknown,police"), "{}", rows[0]);
}

#[tokio::test]
async fn ndjson_tracks_and_h3_aggregates() {
    let (s, t) = seeded().await;
    let q = format!("from_ms={}&to_ms={}", t, t + 200_000);
    let (_, body) = request(
        s.http,
        "GET",
        &format!("/v1/export?{q}&format=ndjson&bbox=-0.2,51.4,0,51.6"),
        None,
        b"",
        ALL,
    )
    .await;
    let lines: Vec<Value> = String::from_utf8(body)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["id"] == "AMB-1"));
    let (st, tracks) = get_json(s.http, &format!("/v1/export?{q}&shape=tracks"), ALL).await;
    assert_eq!(st, 200);
    let fc: geojson::FeatureCollection = tracks.to_string().parse().expect("collection");
    assert_eq!(fc.features.len(), 2);
    for f in &fc.features {
        assert!(
            matches!(f.geometry.as_ref().map(|g| &g.value), Some(geojson::GeometryValue::LineString { coordinates }) if coordinates.len() == 5)
        );
    }
    let (st, h3) = get_json(s.http, &format!("/v1/export/h3?{q}&res=5"), ALL).await;
    assert_eq!(st, 200);
    let total: u64 = h3["features"]
        .as_array()
        .expect("cells")
        .iter()
        .filter_map(|f| f["properties"]["fixes"].as_u64())
        .sum();
    assert_eq!(total, 10);
}

#[tokio::test]
async fn an_agency_limited_analyst_exports_only_their_agency_and_bad_queries_are_400() {
    let (s, t) = seeded().await;
    let analyst = Some("ambulance-analyst-000001");
    let (_, body) = request(
        s.http,
        "GET",
        &format!(
            "/v1/export?from_ms={}&to_ms={}&format=ndjson&agency=police",
            t,
            t + 200_000
        ),
        None,
        b"",
        analyst,
    )
    .await;
    assert!(
        body.is_empty(),
        "police rows leaked: {}",
        String::from_utf8_lossy(&body)
    );
    let (_, body) = request(
        s.http,
        "GET",
        &format!("/v1/export?from_ms={}&to_ms={}&format=ndjson", t, t + 200_000),
        None,
        b"",
        analyst,
    )
    .await;
    let text = String::from_utf8(body).expect("utf8");
    assert_eq!(text.lines().count(), 5);
    assert!(!text.contains("police"));
    for (path, needle) in [
        ("/v1/export?to_ms=5", "from_ms"),
        ("/v1/export?from_ms=5&to_ms=1", "before"),
        ("/v1/export?from_ms=0&to_ms=1&format=xml", "format"),
        ("/v1/export?from_ms=0&to_ms=1&shape=blobs", "shape"),
        ("/v1/export/h3?from_ms=0&to_ms=1&res=16", "res"),
    ] {
        let (st, v) = get_json(s.http, path, ALL).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{path}: {v}"
        );
    }
    let (_, body) = request(
        s.http,
        "GET",
        "/v1/export?from_ms=0&to_ms=9223372036854775807&format=csv",
        None,
        b"",
        ALL,
    )
    .await;
    assert_eq!(
        String::from_utf8(body).expect("utf8").lines().count(),
        11,
        "a huge window costs only what history holds"
    );
}

/// Runs `bluelight export` against the server, bounded in time.
async fn cli_export(args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .arg("export")
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(std::time::Duration::from_secs(60), child)
        .await
        .expect("bluelight export finishes within 60 s")
        .expect("bluelight export runs")
}

#[tokio::test]
async fn cli_export_writes_the_same_rows_as_the_http_export() {
    let (s, t) = seeded().await;
    let dir = std::env::temp_dir().join(format!("bluelight-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("fixes.csv");
    let server = format!("http://{}", s.http);
    let (from, to) = (t.to_string(), (t + 200_000).to_string());
    let run = cli_export(&[
        "--server",
        &server,
        "--token",
        "all-of-it-0000000000001",
        "--from-ms",
        &from,
        "--to-ms",
        &to,
        "--format",
        "csv",
        "--out",
        out.to_str().expect("utf8 path"),
    ])
    .await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("wrote 10 rows"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written = std::fs::read(&out).expect("export file");
    let (_, body) = request(
        s.http,
        "GET",
        &format!("/v1/export?from_ms={from}&to_ms={to}&format=csv"),
        None,
        b"",
        ALL,
    )
    .await;
    assert_eq!(written, body, "the file holds exactly what the server streamed");
    assert!(
        !dir.join("fixes.csv.part").exists(),
        "the partial file is renamed"
    );

    // GeoJSON rows are counted too, and an agency-limited token gets only its own.
    let out = dir.join("amb.geojson");
    let run = cli_export(&[
        "--server",
        &server,
        "--token",
        "ambulance-analyst-000001",
        "--from-ms",
        &from,
        "--to-ms",
        &to,
        "--out",
        out.to_str().expect("utf8 path"),
    ])
    .await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let fc: geojson::FeatureCollection = std::fs::read_to_string(&out)
        .expect("export file")
        .parse()
        .expect("FeatureCollection");
    assert_eq!(fc.features.len(), 5);
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("wrote 5 rows"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cli_export_passes_on_the_servers_refusal_and_fails() {
    let (s, _) = seeded().await;
    let server = format!("http://{}", s.http);
    let run = cli_export(&[
        "--server",
        &server,
        "--token",
        "not-a-token-at-all-0000",
        "--last",
        "1h",
    ])
    .await;
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("401"), "{err}");
    let run = cli_export(&[
        "--server",
        &server,
        "--token",
        "all-of-it-0000000000001",
        "--bbox",
        "1,2,3",
        "--last",
        "1h",
    ])
    .await;
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("400") && err.contains("bbox"), "{err}");
}

/// `SCHED_IDLE` in a thread's policy field.
#[cfg(target_os = "linux")]
const SCHED_IDLE: u32 = 5;

/// The threads of this process named as an export's thread that are
/// still there 300 ms after they were first seen (other tests' exports
/// are over by then; an export whose client does not read is not),
/// waiting at most 10 s for one.
#[cfg(target_os = "linux")]
async fn waiting_export_threads() -> Vec<support::ThreadSched> {
    let named = || {
        support::thread_policies(std::process::id())
            .into_iter()
            // "bluelight-export" as Linux keeps it: fifteen bytes.
            .filter(|t| t.name == "bluelight-expor")
    };
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        let first: Vec<u32> = named().map(|t| t.tid).collect();
        if !first.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let still: Vec<_> = named().filter(|t| first.contains(&t.tid)).collect();
            if !still.is_empty() {
                return still;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Vec::new()
}

/// Whether every thread of `tids` has ended within 10 s.
#[cfg(target_os = "linux")]
async fn ended(tids: &[u32]) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        let alive = support::thread_policies(std::process::id());
        if !alive.iter().any(|t| tids.contains(&t.tid)) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
#[cfg(target_os = "linux")]
async fn an_export_formats_on_its_own_thread_under_sched_idle_which_ends_with_the_download() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server_with(Default::default()).await;
    // 2,400 units a minute for 50 minutes: about 25 MB of GeoJSON, far more
    // than the sockets and the export's queue hold, so an export whose
    // client does not read waits on its thread.
    let (units, minutes) = (2_400, 50);
    let t0 = now_ms() - (minutes + 1) * 60_000;
    let mut fixes = Vec::new();
    for m in 0..minutes {
        for u in 0..units {
            fixes.push(json!({"id": format!("U-{u}"), "lat": 51.0 + f64::from(u) * 1e-3, "lon": -1.0, "time_ms": t0 + m * 60_000}));
            if fixes.len() == 10_000 {
                let (st, v) = send_json(s.http, "POST", "/v1/fixes", &json!({ "fixes": fixes }), None).await;
                assert_eq!((st, v["accepted"].as_u64()), (200, Some(10_000)), "{v}");
                fixes.clear();
            }
        }
    }
    assert!(fixes.is_empty(), "whole posts");
    let get = format!(
        "GET /v1/export?from_ms={t0}&to_ms={} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        now_ms()
    );

    // A download abandoned half-way ends its thread.
    let mut abandoned = tokio::net::TcpStream::connect(s.http).await.expect("connect");
    abandoned.write_all(get.as_bytes()).await.expect("write");
    let waiting = waiting_export_threads().await;
    assert!(!waiting.is_empty(), "an export's thread waits for its client");
    let tids: Vec<u32> = waiting.iter().map(|t| t.tid).collect();
    drop(abandoned);
    assert!(ended(&tids).await, "the thread of an abandoned export ends");

    // A download read to the end; while it waits for its client, its
    // thread runs under SCHED_IDLE.
    let mut client = tokio::net::TcpStream::connect(s.http).await.expect("connect");
    client.write_all(get.as_bytes()).await.expect("write");
    let waiting = waiting_export_threads().await;
    assert!(!waiting.is_empty(), "an export's thread waits for its client");
    assert!(
        waiting.iter().all(|t| t.policy == SCHED_IDLE),
        "the export's thread runs under SCHED_IDLE: {waiting:?}"
    );
    let tids: Vec<u32> = waiting.iter().map(|t| t.tid).collect();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), client.read_to_end(&mut raw))
        .await
        .expect("the whole export within 60 s")
        .expect("read");
    let (st, body) = support::parse_reply(&raw);
    assert_eq!(st, 200);
    let text = String::from_utf8(body).expect("utf8");
    let fc: geojson::FeatureCollection = text.parse().expect("RFC 7946 FeatureCollection");
    assert_eq!(fc.features.len() as i64, i64::from(units) * minutes);
    assert!(ended(&tids).await, "the thread of a finished export ends");
}

/// GET with an `Accept-Encoding`: the reply's header text (lower case) and
/// its body, chunks joined, not inflated.
async fn get_accepting(addr: std::net::SocketAddr, path: &str, accept: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\nAccept-Encoding: {accept}\r\n\r\n",
        ALL.unwrap_or_default()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut raw))
        .await
        .expect("a reply within 15 s")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let (st, body) = support::parse_reply(&raw);
    assert_eq!(st, 200, "{head}");
    (head, body)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a whole gzip stream");
    out
}

#[tokio::test]
async fn every_export_is_gzipped_for_a_client_that_accepts_it_and_inflates_to_the_same_bytes() {
    let (s, t) = seeded().await;
    let window = format!("from_ms={}&to_ms={}", t, t + 200_000);
    for path in [
        format!("/v1/export?{window}"),
        format!("/v1/export?{window}&format=csv"),
        format!("/v1/export?{window}&format=ndjson"),
        format!("/v1/export?{window}&shape=tracks"),
        format!("/v1/export/h3?{window}&res=7"),
        format!("/v1/export/h3?{window}&res=7&format=csv"),
    ] {
        let (st, plain) = request(s.http, "GET", &path, None, b"", ALL).await;
        assert_eq!(st, 200, "{path}");
        assert!(!plain.is_empty(), "{path}");
        let (head, gz) = get_accepting(s.http, &path, "br, gzip;q=0.8").await;
        assert!(head.contains("\r\ncontent-encoding: gzip"), "{path}: {head}");
        assert!(head.contains("\r\nvary: accept-encoding"), "{path}: {head}");
        assert_eq!(gunzip(&gz), plain, "{path}: inflates to the plain export");
        // Refused with q=0, or not offered: the body as it is.
        for accept in ["gzip;q=0", "deflate"] {
            let (head, body) = get_accepting(s.http, &path, accept).await;
            assert!(!head.contains("content-encoding"), "{path} with {accept}: {head}");
            assert_eq!(body, plain, "{path} with {accept}");
        }
    }
}
