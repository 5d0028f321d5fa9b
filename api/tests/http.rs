//! The server over real sockets: HTTP requests from a minimal HTTP/1.1
//! client, fixes over real TCP ingest, and the binary as a process.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bluelight_api::config::ServeConfig;
use bluelight_api::server::Running;
use bluelight_engine::Fix;
use bluelight_ingest::decode::encode_flatbuffers;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::open::{get_json, http, now_ms, post_flatbuffers, send_json};
#[cfg(target_os = "linux")]
use support::thread_policies;

async fn server() -> Running {
    support::server_with(ServeConfig::default()).await
}

async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_dispatch_map_page_and_its_assets_are_served_from_the_binary() {
    let s = server().await;
    let (st, body) = http(s.http, "GET", "/", None, b"").await;
    assert_eq!(st, 200);
    let page = String::from_utf8_lossy(&body);
    for asset in [
        "/map/leaflet.js",
        "/map/leaflet.css",
        "/map/h3.js",
        "/map/map.js",
        "/map/map.css",
    ] {
        assert!(page.contains(asset), "the page loads {asset}");
        let (st, body) = http(s.http, "GET", asset, None, b"").await;
        assert_eq!(st, 200, "{asset}");
        assert!(body.len() > 1000, "{asset} is {} bytes", body.len());
    }
    let (_, script) = http(s.http, "GET", "/map/map.js", None, b"").await;
    assert!(String::from_utf8_lossy(&script).contains("/v1/ws"));
    let (st, geo) = get_json(s.http, "/map/geography.json").await;
    assert_eq!(st, 200);
    let names: Vec<&str> = geo["detail"]["features"]
        .as_array()
        .expect("detail")
        .iter()
        .filter_map(|f| f["properties"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"United Kingdom") && names.contains(&"Ireland"),
        "{names:?}"
    );
    let (st, cfg) = get_json(s.http, "/map/config.json").await;
    assert_eq!(
        (st, &cfg["tile_url"]),
        (200, &Value::Null),
        "no tile server unless configured: {cfg}"
    );
    let (st, places) = http(s.http, "GET", "/map/places.csv", None, b"").await;
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&places).starts_with("name,lat,lon,weight"));
}

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let s = server().await;
    let (st, v) = get_json(s.http, "/healthz").await;
    assert_eq!(st, 200);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["alert_seq"], 0, "no alert yet: {v}");
    let (st, body) = http(s.http, "GET", "/metrics", None, b"").await;
    assert_eq!(st, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("bluelight_fixes_accepted_total 0"), "{text}");
    assert!(
        text.contains("bluelight_fixes_rejected_total{reason=\"speed_jump\"} 0"),
        "{text}"
    );
    // Its value is the process's (this test binary probes real-time
    // scheduling elsewhere): the binary's own is checked with `--realtime`.
    assert!(text.contains("\nbluelight_realtime_threads "), "{text}");
    // What places a stall (loadgen reads them every second).
    assert!(
        text.contains("\nbluelight_writer_tasks_queued{kind=\"query\"} 0\n"),
        "{text}"
    );
    let busy = text
        .lines()
        .find_map(|l| l.strip_prefix("bluelight_runtime_busy_seconds_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        busy.is_some_and(|b| b > 0.0),
        "the runtime has run this request: {busy:?}"
    );
    assert!(text.contains("\nbluelight_runtime_workers "), "{text}");
}

#[tokio::test]
async fn post_fixes_reports_each_refused_fix_and_applies_the_rest() {
    let s = server().await;
    let t = now_ms();
    let body = json!({"fixes":[
        {"id":"AMB-104","lat":50.9097,"lon":-1.4044,"time_ms":t,"agency":"ambulance","status":"available","kind":"rrv","tags":["paramedic"],"speed_mps":12.5},
        {"id":"BAD","lat":"north","lon":-1.4,"time_ms":t},
        {"id":"FAR","lat":0.0,"lon":0.0,"time_ms":t},
        {"id":"NOLON","lat":50.9,"time_ms":t},
        {"id":"FLY","lat":50.9,"lon":-1.4,"time_ms":t,"status":"flying"}
    ]});
    let (st, v) = send_json(s.http, "POST", "/v1/fixes", &body).await;
    assert_eq!(st, 200, "{v}");
    // Each refusal names its reason and, for a bad field, the field and
    // the problem in words.
    assert_eq!(
        v,
        json!({"accepted":1,"rejected":4,"errors":[
            {"index":1,"reason":"bad_field","detail":"lat: invalid type: string \"north\", expected f64"},
            {"index":2,"reason":"null_island"},
            {"index":3,"reason":"bad_field","detail":"missing field `lon`"},
            {"index":4,"reason":"bad_field","detail":"status: unknown status \"flying\""}
        ]})
    );
    let (st, unit) = get_json(s.http, "/v1/units/AMB-104").await;
    assert_eq!(st, 200);
    assert_eq!(unit["properties"]["agency"], "ambulance");
    assert_eq!(unit["properties"]["tags"], json!(["paramedic"]));
    assert_eq!(unit["properties"]["speed_mps"], json!(12.5));
    assert!(
        unit["properties"].get("heading_deg").is_none(),
        "unknown fields are omitted"
    );
    assert_eq!(unit["geometry"]["coordinates"], json!([-1.4044, 50.9097]));
    let (st, b) = post_flatbuffers(s.http, &[(42, Fix::at(t, 51.0, -1.0))]).await;
    assert_eq!(st, 200);
    assert_eq!(serde_json::from_slice::<Value>(&b).expect("json")["accepted"], 1);
    assert_eq!(
        get_json(s.http, "/v1/units/42").await.0,
        200,
        "an unregistered key is its decimal id"
    );
}

#[tokio::test]
async fn fences_are_created_replaced_listed_and_deleted_and_a_crossing_counts_an_alert() {
    let s = server().await;
    let fence = json!({"type":"Feature","geometry":{"type":"Point","coordinates":[-1.4336,50.9333]},
        "properties":{"radius_m":300,"detect":["enter","exit"]}});
    let (st, v) = send_json(s.http, "PUT", "/v1/fences/southampton-general", &fence).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["id"], "southampton-general");
    assert_eq!(
        send_json(s.http, "PUT", "/v1/fences/southampton-general", &fence)
            .await
            .0,
        200
    );
    let (st, list) = get_json(s.http, "/v1/fences").await;
    assert_eq!(st, 200);
    assert_eq!(list["type"], "FeatureCollection");
    assert_eq!(list["features"].as_array().map(Vec::len), Some(1));
    // A fix over real TCP ingest crosses into it.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let frame = encode_flatbuffers(&mut fbb, "t", &[(7, Fix::at(now_ms(), 50.9334, -1.4337))], &[]).to_vec();
    let mut conn = TcpStream::connect(s.devices.ingest).await.expect("ingest");
    conn.write_all(&(frame.len() as u32).to_le_bytes())
        .await
        .expect("write");
    conn.write_all(&frame).await.expect("write");
    let addr = s.http;
    until("the enter alert", async || {
        let (_, m) = http(addr, "GET", "/metrics", None, b"").await;
        String::from_utf8_lossy(&m).contains("bluelight_alerts_total{event=\"enter\"} 1")
    })
    .await;
    assert_eq!(
        http(s.http, "DELETE", "/v1/fences/southampton-general", None, b"")
            .await
            .0,
        204
    );
    assert_eq!(get_json(s.http, "/v1/fences/southampton-general").await.0, 404);
    assert_eq!(
        http(s.http, "DELETE", "/v1/fences/southampton-general", None, b"")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn units_filter_by_agency_and_nearest_orders_by_distance() {
    let s = server().await;
    let t = now_ms();
    let body = json!({"fixes":[
        {"id":"AMB-1","lat":51.5010,"lon":-0.1200,"time_ms":t,"agency":"ambulance","status":"available"},
        {"id":"AMB-2","lat":51.5200,"lon":-0.1200,"time_ms":t,"agency":"ambulance","status":"available"},
        {"id":"AMB-3","lat":51.5005,"lon":-0.1200,"time_ms":t,"agency":"ambulance","status":"enroute"},
        {"id":"POL-1","lat":51.5001,"lon":-0.1200,"time_ms":t,"agency":"police","status":"available"}
    ]});
    assert_eq!(
        send_json(s.http, "POST", "/v1/fixes", &body).await.1["accepted"],
        4
    );
    let (st, v) = get_json(s.http, "/v1/units?agency=ambulance&bbox=-1,51,1,52").await;
    assert_eq!(st, 200);
    let mut ids: Vec<String> = v["features"]
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["id"].as_str().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["AMB-1", "AMB-2", "AMB-3"]);
    let (st, v) = get_json(
        s.http,
        "/v1/nearest?lon=-0.12&lat=51.5&k=2&agency=ambulance&status=available",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let got: Vec<&str> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["unit"]["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(got, vec!["AMB-1", "AMB-2"]);
    let d = v["results"][0]["distance_m"].as_f64().expect("distance");
    assert!((d - 111.2).abs() < 1.0, "{d}");
    assert_eq!(get_json(s.http, "/v1/units/NOPE").await.0, 404);
}

#[tokio::test]
async fn bad_requests_get_400_with_a_reason() {
    let s = server().await;
    // (method, path, content type, body, what the error must name)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "PUT",
            "/v1/fences/x",
            Some("application/json"),
            b"{not json",
            "GeoJSON",
        ),
        (
            "PUT",
            "/v1/fences/x",
            Some("application/json"),
            br#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,1]},"properties":{}}"#,
            "radius_m",
        ),
        ("GET", "/v1/nearest?lon=0", None, b"", "lat"),
        ("GET", "/v1/nearest?lon=0&lat=0&agency=navy", None, b"", "navy"),
        ("GET", "/v1/units?bbox=1,2,3", None, b"", "bbox"),
        ("POST", "/v1/fixes", Some("text/plain"), b"hello", "content type"),
        (
            "POST",
            "/v1/fixes",
            Some("application/x-flatbuffers"),
            b"garbage!",
            "FixBatch",
        ),
        (
            "PUT",
            "/v1/rules/r",
            Some("application/json"),
            br#"{"type":"distance"}"#,
            "proximity",
        ),
    ];
    for (method, path, ct, body, needle) in cases {
        let (st, b) = http(s.http, method, path, ct, body).await;
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        assert_eq!(st, 400, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{method} {path}: {v}"
        );
    }
}

#[tokio::test]
async fn rules_are_stored_and_listed() {
    let s = server().await;
    let rule = json!({"type":"proximity","from":{"status":["emergency"]},"to":{"agency":["police"]},"radius_m":500,"hysteresis_m":100});
    assert_eq!(
        send_json(s.http, "PUT", "/v1/rules/officer-safety", &rule)
            .await
            .0,
        201
    );
    let (st, v) = get_json(s.http, "/v1/rules").await;
    assert_eq!(st, 200);
    assert_eq!(v["rules"][0]["id"], "officer-safety");
    assert_eq!(
        http(s.http, "DELETE", "/v1/rules/officer-safety", None, b"")
            .await
            .0,
        204
    );
}

/// Starts the `bluelight serve` binary on free loopback ports: the child,
/// its stdout after the `listening` line, that line, and its HTTP address.
fn serve_binary() -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    String,
    SocketAddr,
) {
    serve_binary_with(&[])
}

/// [`serve_binary`] with more flags.
fn serve_binary_with(
    flags: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    String,
    SocketAddr,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .args(["serve", "--listen", "127.0.0.1:0", "--ingest", "127.0.0.1:0"])
        .args(flags)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("listening "))
        .expect("a listening line");
    let http_addr: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .and_then(|a| a.parse().ok())
        .expect("http=ADDR");
    (child, lines, line, http_addr)
}

#[test]
fn the_binary_prints_its_addresses_and_serves_them() {
    let (mut child, _lines, line, http_addr) = serve_binary();
    assert!(
        line.split_whitespace()
            .any(|w| w.starts_with("ingest=127.0.0.1:")),
        "{line}"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (st, v) = rt.block_on(get_json(http_addr, "/healthz"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(st, 200);
    assert_eq!(v["status"], "ok");
}

#[test]
#[cfg(target_os = "linux")]
fn realtime_puts_the_writer_and_the_workers_under_sched_fifo_when_permitted() {
    // Whether this machine grants it, asked the same way from a thread here.
    use bluelight_ingest::priority::{REALTIME_PRIORITY, WRITER_PRIORITY, realtime_this_thread};
    let permitted = std::thread::spawn(|| realtime_this_thread(WRITER_PRIORITY))
        .join()
        .expect("probe")
        .is_ok();
    // tokio's default: a worker per core.
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (mut child, _lines, _line, http_addr) = serve_binary_with(&["--realtime"]);
    let granted = if permitted { 1 + workers } else { 0 };
    let want = format!("bluelight_realtime_threads {granted}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The writer asks as it starts and each worker as it first idles,
    // which may be just after the server says it listens.
    let started = Instant::now();
    let text = loop {
        let (_, body) = rt.block_on(http(http_addr, "GET", "/metrics", None, b""));
        let text = String::from_utf8_lossy(&body).into_owned();
        if text.contains(&want) || started.elapsed() > Duration::from_secs(5) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let policies = thread_policies(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains(&want), "want {want}: {text}");
    const SCHED_FIFO: u32 = 1;
    let mut fifo: Vec<(&str, i32)> = policies
        .iter()
        .filter(|t| t.policy == SCHED_FIFO)
        .map(|t| (t.name.as_str(), t.rt_priority))
        .collect();
    fifo.sort_unstable();
    let mut want = vec![("tokio-rt-worker", REALTIME_PRIORITY); if permitted { workers } else { 0 }];
    if permitted {
        // Above the workers; the bulk thread (bluelight-feeds) and the
        // rest stay out.
        want.insert(0, ("bluelight-write", WRITER_PRIORITY));
    }
    assert_eq!(fifo, want, "threads under SCHED_FIFO, of {policies:?}");
}

#[test]
#[cfg(target_os = "linux")]
fn writer_nice_runs_the_writer_ahead_of_the_other_threads_when_the_server_may_raise_it() {
    use bluelight_ingest::priority::raise_this_thread;
    const WRITER_NICE: i32 = -10;
    // This thread's nice, which the server inherits (field 19 of its stat).
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
    let own: i32 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(16)?.parse().ok())
        .expect("nice");
    // Whether this machine grants it, asked the same way from a thread here.
    let permitted = std::thread::spawn(|| raise_this_thread(WRITER_NICE))
        .join()
        .expect("probe")
        .is_ok();
    let (mut child, _lines, _line, http_addr) = serve_binary_with(&["--writer-nice=-10"]);
    let writer_nice = i64::from(if permitted { WRITER_NICE.min(own) } else { own });
    let want = format!("\nbluelight_writer_nice {writer_nice}\n");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The writer asks as it starts, which may be just after the server
    // says it listens.
    let metrics_saying = |http_addr, want: &str| {
        let started = Instant::now();
        loop {
            let (_, body) = rt.block_on(http(http_addr, "GET", "/metrics", None, b""));
            let text = String::from_utf8_lossy(&body).into_owned();
            if text.contains(want) || started.elapsed() > Duration::from_secs(5) {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A thread names itself as it starts: until then /proc shows the
    // process's name, and the metric can say the writer's nice before
    // it has (0 is where it starts).
    let named_threads = |pid| {
        let started = Instant::now();
        loop {
            let threads = thread_policies(pid);
            if threads.iter().any(|t| t.name == "bluelight-write")
                || started.elapsed() > Duration::from_secs(5)
            {
                break threads;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let text = metrics_saying(http_addr, &want);
    let threads = named_threads(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains(&want), "want {want}: {text}");
    let nice_of = |name: &str| {
        threads
            .iter()
            .filter(|t| t.name == name)
            .map(|t| t.nice)
            .collect::<Vec<_>>()
    };
    assert_eq!(nice_of("bluelight-write"), vec![writer_nice], "{threads:?}");
    // Only the writer: the runtime's workers stay at the server's own.
    let workers = nice_of("tokio-rt-worker");
    assert!(workers.contains(&i64::from(own)), "{threads:?}");
    // Not asked for, the writer stays where the server runs.
    let (mut child, _lines, _line, http_addr) = serve_binary_with(&[]);
    let want = format!("\nbluelight_writer_nice {own}\n");
    let text = metrics_saying(http_addr, &want);
    let threads = named_threads(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains(&want), "{text}");
    let writer: Vec<i64> = threads
        .iter()
        .filter(|t| t.name == "bluelight-write")
        .map(|t| t.nice)
        .collect();
    assert_eq!(writer, vec![i64::from(own)], "{threads:?}");
}

#[test]
fn the_binary_refuses_a_public_address_without_tokens() {
    let out = Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .args(["serve", "--listen", "0.0.0.0:0", "--ingest", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure"), "{err}");
}

#[test]
fn sigterm_closes_websocket_sessions_with_1001_and_exits_cleanly() {
    use futures_util::StreamExt;
    let (mut child, lines, _, http_addr) = serve_binary();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let code = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http_addr}/v1/ws"))
            .await
            .expect("ws");
        // Our own child, by its PID.
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("a close in time")
            {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                    return f.map(|f| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                other => panic!("stream ended without a close frame: {other:?}"),
            }
        }
    });
    assert_eq!(code, Some(1001));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
}
