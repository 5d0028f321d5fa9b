//! Robustness over real sockets: each test pins a reproducer of bad or
//! hostile input (issue 16) that the server used to mishandle.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bluelight_api::config::ServeConfig;
use bluelight_api::server::Running;
use bluelight_engine::Fix;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::open::{get_json, http, now_ms, post_flatbuffers, send_json};

async fn server() -> Running {
    support::server_with(ServeConfig::default()).await
}

/// Regression: heading 1e38 was stored as 128°, speed 1e38 as 655.34 m/s,
/// speed -5 as 0 and accuracy inf as 6553.4 m. Out of range is unknown
/// (the field is omitted), counted, and the position beside it is kept.
#[tokio::test]
async fn out_of_range_measurements_are_kept_as_unknown_not_as_other_values() {
    let s = server().await;
    let t = now_ms();
    let (st, r) = send_json(
        s.http,
        "POST",
        "/v1/fixes",
        &json!({"fixes":[
            {"id":"H-1","lat":51.5,"lon":-0.12,"time_ms":t,"heading_deg":1e38,"speed_mps":1e38,"accuracy_m":5},
            {"id":"S-1","lat":51.6,"lon":-0.12,"time_ms":t,"heading_deg":359.5,"speed_mps":-5},
        ]}),
    )
    .await;
    assert_eq!((st, &r["accepted"]), (200, &json!(2)), "{r}");
    let mut fix = Fix::at(t, 51.7, -0.12);
    fix.accuracy_m = f32::INFINITY;
    fix.speed_mps = 12.5;
    let (st, body) = post_flatbuffers(s.http, &[(77, fix)]).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let unit = async |id: &str| get_json(s.http, &format!("/v1/units/{id}")).await.1["properties"].clone();
    let h = unit("H-1").await;
    assert_eq!(
        (h["lat"].as_f64(), h["accuracy_m"].as_f64()),
        (Some(51.5), Some(5.0)),
        "{h}"
    );
    assert!(
        h.get("heading_deg").is_none() && h.get("speed_mps").is_none(),
        "{h}"
    );
    let sp = unit("S-1").await;
    assert_eq!(sp["heading_deg"].as_f64(), Some(359.5), "{sp}");
    assert!(sp.get("speed_mps").is_none(), "{sp}");
    let a = unit("77").await;
    assert_eq!(a["speed_mps"].as_f64(), Some(12.5), "{a}");
    assert!(a.get("accuracy_m").is_none(), "{a}");
    let (_, m) = http(s.http, "GET", "/metrics", None, b"").await;
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("\nbluelight_fix_measurements_cleared_total 4\n"),
        "{m}"
    );
}

/// Regression: a self-intersecting polygon and an unclosed ring were
/// accepted silently as fences. Both are refused with the reason.
#[tokio::test]
async fn invalid_polygons_are_refused_with_the_reason() {
    let s = server().await;
    let fence = |ring: Value| json!({"type":"Feature","geometry":{"type":"Polygon","coordinates":[ring]},"properties":{}});
    let bow_tie = json!([
        [-1.0, 51.0],
        [-0.9, 51.1],
        [-0.9, 51.0],
        [-1.0, 51.1],
        [-1.0, 51.0]
    ]);
    let (st, v) = send_json(s.http, "PUT", "/v1/fences/bow-tie", &fence(bow_tie)).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("crosses itself")),
        "{v}"
    );
    let open = json!([[-1.0, 51.0], [-0.9, 51.0], [-0.9, 51.1], [-1.0, 51.1]]);
    let (st, v) = send_json(s.http, "PUT", "/v1/fences/open", &fence(open)).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("not closed")),
        "{v}"
    );
    let (_, list) = get_json(s.http, "/v1/fences").await;
    assert_eq!(list["features"], json!([]), "nothing was stored");
    let square = json!([
        [-1.0, 51.0],
        [-0.9, 51.0],
        [-0.9, 51.1],
        [-1.0, 51.1],
        [-1.0, 51.0]
    ]);
    let (st, v) = send_json(s.http, "PUT", "/v1/fences/square", &fence(square)).await;
    assert_eq!(st, 201, "{v}");
}

/// Regression: a body over the HTTP limit was answered 413 in plain text.
/// It is the contract's JSON error, naming the limit and its config key.
#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_a_json_error_naming_it() {
    let mut cfg = ServeConfig::default();
    cfg.tuning.http_max_body_bytes = 64 << 10;
    let s = support::server_with(cfg).await;
    let big = vec![b' '; 100 << 10];
    let (st, body) = http(s.http, "POST", "/v1/fixes", Some("application/json"), &big).await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("65536 bytes") && e.contains("tuning.http_max_body_bytes")),
        "{v}"
    );
    // Under the limit, the same path still works.
    let (st, _) = send_json(s.http, "POST", "/v1/fixes", &json!({"fixes": []})).await;
    assert_eq!(st, 200);
}

/// CPU ticks (user + system) the process has used so far.
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, stime the 15th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Regression: at the file-descriptor limit the device listeners' accept
/// loop retried at once, spinning a core. It pauses after a failed accept,
/// counts it, and serves again once descriptors are free.
#[cfg(target_os = "linux")]
#[test]
fn out_of_file_descriptors_the_accept_loop_pauses_instead_of_spinning() {
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -n 64 && exec {} serve --listen 127.0.0.1:0 --ingest 127.0.0.1:0",
                env!("CARGO_BIN_EXE_bluelight")
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("listening "))
        .expect("a listening line");
    let addr = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|a| a.parse().ok())
            .expect("an address")
    };
    let (http_addr, ingest) = (addr("http="), addr("ingest="));
    // More connections than the server has descriptors left: the kernel
    // completes them in the backlog, the server's accepts fail.
    let clients: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(ingest).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(child.id()) - before;
    drop(clients);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let errors = rt.block_on(async {
        let start = Instant::now();
        loop {
            // Descriptors come back as the closed clients are reaped.
            if let Ok(Ok((200, body))) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::spawn(async move { http(http_addr, "GET", "/metrics", None, b"").await }),
            )
            .await
            {
                let text = String::from_utf8_lossy(&body).into_owned();
                if let Some(n) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("bluelight_ingest_accept_errors_total "))
                {
                    break n.trim().parse::<u64>().unwrap_or(0);
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the server never answered again"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(errors > 0, "the failed accepts are counted");
    // 100 ticks are a whole core for the second; a spinning loop takes
    // nearly all of them, a pausing one almost none.
    assert!(
        used < 50,
        "{used} ticks of CPU in one second at the descriptor limit"
    );
}

/// Regression: a client sending one header byte a second (slowloris), or
/// an idle connection, held its socket for ever. Both are closed once the
/// header timeout passes; a normal request still works.
#[tokio::test]
async fn slow_and_idle_http_connections_are_closed_at_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let mut cfg = ServeConfig::default();
    cfg.tuning.http_header_timeout_s = 1;
    let s = support::server_with(cfg).await;
    let mut idle = TcpStream::connect(s.http).await.expect("connect");
    let mut slow = TcpStream::connect(s.http).await.expect("connect");
    let start = Instant::now();
    let trickle = async {
        // One byte every 100 ms of a head that never ends, for at most 5 s.
        for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            .iter()
            .cycle()
            .take(50)
        {
            if slow.write_all(&[*b]).await.is_err() {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(2), slow.read(&mut buf)).await;
        start.elapsed()
    };
    let wait_closed = async {
        let mut buf = [0u8; 64];
        // 0 bytes (closed) or an error: either way the server let go.
        let _ = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
        start.elapsed()
    };
    let (slow_closed, idle_closed) = tokio::join!(trickle, wait_closed);
    assert!(idle_closed < Duration::from_secs(4), "idle held {idle_closed:?}");
    assert!(
        slow_closed < Duration::from_secs(4),
        "slowloris held {slow_closed:?}"
    );
    let (st, v) = get_json(s.http, "/healthz").await;
    assert_eq!((st, &v["status"]), (200, &json!("ok")));
}

/// PROTOCOL.md "Limits": a session holds at most `max_subscriptions`
/// (default 256); one more is refused `overloaded`, naming the limit, and
/// the session goes on: once one is unsubscribed, another is taken.
#[tokio::test]
async fn one_subscription_past_max_subscriptions_is_refused_overloaded() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = server().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", s.http))
        .await
        .expect("connects");
    async fn ask(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
        v: Value,
    ) -> Value {
        ws.send(Message::Text(v.to_string().into())).await.expect("send");
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("json"),
                Ok(Some(Ok(_))) => {}
                other => panic!("no reply: {other:?}"),
            }
        }
    }
    let mut subs = Vec::new();
    for i in 0..256 {
        let r = ask(&mut ws, json!({"type":"subscribe","id":i,"stream":"alerts"})).await;
        assert_eq!(r["type"], "subscribed", "subscription {i}: {r}");
        subs.push(r["sub"].clone());
    }
    let r = ask(
        &mut ws,
        json!({"type":"subscribe","id":"one-more","stream":"alerts"}),
    )
    .await;
    assert_eq!(
        (&r["type"], &r["code"], &r["id"]),
        (&json!("error"), &json!("overloaded"), &json!("one-more")),
        "{r}"
    );
    assert!(
        r["message"].as_str().unwrap_or("").contains("max_subscriptions"),
        "{r}"
    );
    let (_, metrics) = http(s.http, "GET", "/metrics", None, b"").await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("bluelight_ws_subscriptions_refused_total 1"),
        "{metrics}"
    );
    // A one-shot nearest is not a subscription: still answered.
    let r = ask(
        &mut ws,
        json!({"type":"nearest","id":"q","point":[-0.12,51.5],"k":1}),
    )
    .await;
    assert_eq!(r["type"], "nearest", "{r}");
    let r = ask(&mut ws, json!({"type":"unsubscribe","sub":subs[0]})).await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    let r = ask(
        &mut ws,
        json!({"type":"subscribe","id":"again","stream":"alerts"}),
    )
    .await;
    assert_eq!(r["type"], "subscribed", "{r}");
}

/// Posts fixes of one unit, one at a time, until `done` finishes; returns
/// how many and the slowest reply.
async fn fixes_until(
    addr: SocketAddr,
    done: &tokio::task::JoinHandle<Duration>,
    unit: &str,
) -> (u32, Duration) {
    let t = now_ms();
    let mut slowest = Duration::ZERO;
    let mut posted = 0u32;
    while !done.is_finished() && posted < 500 {
        let start = Instant::now();
        let fix = json!({"id":unit,"lat":51.5,"lon":-0.12 + f64::from(posted) * 1e-5,"time_ms":t + i64::from(posted) * 1000});
        let (st, r) = send_json(addr, "POST", "/v1/fixes", &json!({ "fixes": [fix] })).await;
        assert_eq!((st, &r["accepted"]), (200, &json!(1)), "{r}");
        slowest = slowest.max(start.elapsed());
        posted += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (posted, slowest)
}

/// A polygon a few hundred kilometres across: its cover at the fence
/// resolution takes about a second in a debug build.
fn large_polygon() -> Value {
    json!({"type":"Polygon","coordinates":[[[-10.0,50.0],[10.0,50.0],[10.0,52.0],[-10.0,52.0],[-10.0,50.0]]]})
}

/// Regression: a positions subscription or a fence over a large area (the
/// issue's: a polygon across the antimeridian, read the long way round)
/// held the engine for seconds while its cover was computed, and every fix
/// waited (here: one fix in a second, waiting 970 ms). Covers are computed
/// on a blocking thread now and the engine is held only to install them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_area_is_covered_without_holding_up_fixes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = server().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", s.http))
        .await
        .expect("connects");
    let sub = json!({"type":"subscribe","id":"big","stream":"positions","area":{"polygon": large_polygon()}});
    let asked = Instant::now();
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .expect("send");
    let reply = tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("json");
                    if v["id"] == "big" {
                        assert_eq!(v["type"], "subscribed", "{v}");
                        return asked.elapsed();
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("no reply: {other:?}"),
            }
        }
    });
    // A feed's cover is coarse for a large area now (`feed_resolution`),
    // so this one is quick: no fix may wait on it either way.
    let (_, slowest) = fixes_until(s.http, &reply, "CAR-1").await;
    let took = reply.await.expect("join");
    assert!(
        slowest < Duration::from_millis(250),
        "a fix waited {slowest:?} beside a {took:?} subscription"
    );
    // The same area as a fence: its cover is at the fence resolution, and
    // takes long enough to overlap fixes.
    let addr = s.http;
    let put = tokio::spawn(async move {
        let asked = Instant::now();
        let fence = json!({"type":"Feature","geometry": large_polygon(),"properties":{}});
        let (st, r) = send_json(addr, "PUT", "/v1/fences/big", &fence).await;
        assert_eq!(st, 201, "{r}");
        asked.elapsed()
    });
    let (posted, slowest) = fixes_until(s.http, &put, "CAR-2").await;
    let took = put.await.expect("join");
    assert!(
        posted >= 3,
        "the fence took {took:?}: too short to overlap fixes ({posted} posted)"
    );
    assert!(
        slowest < Duration::from_millis(250),
        "a fix waited {slowest:?} beside a {took:?} fence"
    );
}

/// Regression: the polygon across the antimeridian (Fiji, two
/// degrees wide) was read the long way round the globe, 358° wide: a unit
/// in London was inside it. It is taken the short way now: a unit at 179.5°
/// and one at -179.5° enter it; one on the prime meridian at the same
/// latitude does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polygon_across_the_antimeridian_is_taken_the_short_way() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = server().await;
    let fiji = json!({"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[179.0,-17.0],[-179.0,-17.0],[-179.0,-15.0],[179.0,-15.0],[179.0,-17.0]]]},"properties":{}});
    let (st, v) = send_json(s.http, "PUT", "/v1/fences/fiji", &fiji).await;
    assert_eq!(st, 201, "{v}");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", s.http))
        .await
        .expect("connects");
    let sub = json!({"type":"subscribe","id":"a","stream":"alerts"});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .expect("send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("subscribed") => break,
            Some(Ok(_)) => {}
            other => panic!("no reply: {other:?}"),
        }
    }
    let t = now_ms();
    let fixes = json!({"fixes": [
        {"id":"WEST","lat":-16.0,"lon":179.5,"time_ms":t},
        {"id":"EAST","lat":-16.0,"lon":-179.5,"time_ms":t},
        {"id":"LONG-WAY","lat":-16.0,"lon":0.0,"time_ms":t},
        {"id":"LONDON","lat":51.5,"lon":-0.12,"time_ms":t},
    ]});
    let (st, r) = send_json(s.http, "POST", "/v1/fixes", &fixes).await;
    assert_eq!((st, &r["accepted"]), (200, &json!(4)), "{r}");
    let mut entered = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["type"] == "alert" {
                assert_eq!(
                    (&v["event"], &v["fence"]),
                    (&json!("enter"), &json!("fiji")),
                    "{v}"
                );
                entered.push(v["unit"]["id"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    entered.sort();
    assert_eq!(entered, ["EAST", "WEST"]);
}

/// Issue 16 "bounded state": WebSocket sessions past `max_sessions` are
/// refused 503 with the contract's JSON error naming the key, counted; a
/// session that closes makes room for the next.
#[tokio::test]
async fn a_session_past_max_sessions_is_refused_naming_the_limit_until_one_closes() {
    let mut cfg = ServeConfig::default();
    cfg.tuning.max_sessions = 2;
    let s = support::server_with(cfg).await;
    let url = format!("ws://{}/v1/ws", s.http);
    let (first, _) = tokio_tungstenite::connect_async(&url).await.expect("first");
    let (_second, _) = tokio_tungstenite::connect_async(&url).await.expect("second");
    // Counted from the upgrade on, but wait for both all the same.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, m) = http(s.http, "GET", "/metrics", None, b"").await;
        if String::from_utf8_lossy(&m).contains("bluelight_ws_sessions 2") {
            break;
        }
        assert!(Instant::now() < deadline, "two sessions never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            let v: Value = serde_json::from_slice(r.body().as_deref().unwrap_or(b"")).expect("a JSON error");
            assert!(
                v["error"].as_str().is_some_and(|e| e.contains("max_sessions")),
                "{v}"
            );
        }
        other => panic!("a third session was not refused: {other:?}"),
    }
    let (_, m) = http(s.http, "GET", "/metrics", None, b"").await;
    assert!(
        String::from_utf8_lossy(&m).contains("bluelight_ws_sessions_refused_total 1"),
        "{}",
        String::from_utf8_lossy(&m)
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio_tungstenite::connect_async(&url).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a session closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regression: the count was read when an upgrade was asked for and
/// raised only once its session ran, so upgrades asked for together could
/// all pass `max_sessions`. Many at once: never more open than the limit.
#[tokio::test]
async fn upgrades_asked_for_together_never_pass_max_sessions() {
    let mut cfg = ServeConfig::default();
    cfg.tuning.max_sessions = 3;
    let s = support::server_with(cfg).await;
    let url = format!("ws://{}/v1/ws", s.http);
    let attempts = (0..40).map(|_| tokio_tungstenite::connect_async(url.clone()));
    let results = futures_util::future::join_all(attempts).await;
    let (open, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(open.len(), 3, "exactly max_sessions upgraded");
    for r in refused {
        match r {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
            other => panic!("refused otherwise than 503: {other:?}"),
        }
    }
    let (_, m) = http(s.http, "GET", "/metrics", None, b"").await;
    let m = String::from_utf8_lossy(&m);
    assert!(m.contains("bluelight_ws_sessions 3\n"), "{m}");
    assert!(m.contains("bluelight_ws_sessions_refused_total 37\n"), "{m}");
}

/// Issue 16 "bounded state": units are never forgotten, so `max_units`
/// bounds every per-unit table. A fix naming a new unit past it is
/// refused `too_many_units` and counted; units already known still move,
/// and the good fixes beside the refused one are kept.
#[tokio::test]
async fn a_new_unit_past_max_units_is_refused_and_known_units_still_move() {
    let mut cfg = ServeConfig::default();
    cfg.tuning.max_units = 2;
    let s = support::server_with(cfg).await;
    let t = now_ms() - 10_000;
    let fix = |id: &str, t: i64| json!({"id": id, "lat": 51.5, "lon": -0.12, "time_ms": t});
    let (st, r) = send_json(
        s.http,
        "POST",
        "/v1/fixes",
        &json!({"fixes": [fix("A", t), fix("B", t), fix("C", t), fix("A", t + 1000)]}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!((&r["accepted"], &r["rejected"]), (&json!(3), &json!(1)), "{r}");
    assert_eq!(r["errors"][0]["index"], 2, "{r}");
    assert!(
        r["errors"][0]["reason"]
            .as_str()
            .is_some_and(|e| e.contains("too_many_units")),
        "{r}"
    );
    let (st, _) = get_json(s.http, "/v1/units/C").await;
    assert_eq!(st, 404, "the refused unit was not made");
    let (st, a) = get_json(s.http, "/v1/units/A").await;
    assert_eq!(st, 200);
    assert_eq!(a["properties"]["time_ms"], t + 1000, "{a}");
    let (_, m) = http(s.http, "GET", "/metrics", None, b"").await;
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("bluelight_fixes_rejected_total{reason=\"too_many_units\"} 1"),
        "{m}"
    );
    assert!(m.contains("bluelight_units 2"), "{m}");
}

/// Issue 16 "bounded state": a new fence past `max_fences` (and a new rule
/// past `max_rules`) is refused naming the key; replacing one is not.
#[tokio::test]
async fn a_new_fence_or_rule_past_its_limit_is_refused_and_a_replacement_is_not() {
    let mut cfg = ServeConfig::default();
    cfg.tuning.max_fences = 1;
    cfg.tuning.max_rules = 1;
    let s = support::server_with(cfg).await;
    let fence =
        json!({"type":"Feature","properties":{},"geometry":{"type":"Point","coordinates":[-0.12,51.5]}});
    let mut fence = fence;
    fence["properties"]["radius_m"] = json!(500);
    let (st, _) = send_json(s.http, "PUT", "/v1/fences/one", &fence).await;
    assert_eq!(st, 201);
    let (st, r) = send_json(s.http, "PUT", "/v1/fences/two", &fence).await;
    assert_eq!(st, 400, "{r}");
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("max_fences")),
        "{r}"
    );
    let (st, _) = send_json(s.http, "PUT", "/v1/fences/one", &fence).await;
    assert_eq!(st, 200, "replacing the one fence is not refused");
    let rule =
        json!({"type":"proximity","from":{"agency":["police"]},"to":{"agency":["fire"]},"radius_m":100});
    let (st, _) = send_json(s.http, "PUT", "/v1/rules/one", &rule).await;
    assert_eq!(st, 201);
    let (st, r) = send_json(s.http, "PUT", "/v1/rules/two", &rule).await;
    assert_eq!(st, 400, "{r}");
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("max_rules")),
        "{r}"
    );
    let (st, _) = send_json(s.http, "PUT", "/v1/rules/one", &rule).await;
    assert_eq!(st, 200);
}

/// Issue 16 "bounded state": every bound is in `/metrics`, by its key.
#[tokio::test]
async fn metrics_show_every_configured_bound_by_its_key() {
    let mut cfg = ServeConfig::default();
    cfg.tuning.max_units = 12_345;
    let s = support::server_with(cfg).await;
    let (_, m) = http(s.http, "GET", "/metrics", None, b"").await;
    let m = String::from_utf8_lossy(&m);
    assert!(m.contains("bluelight_limit{name=\"max_units\"} 12345"), "{m}");
    for key in [
        "max_fences",
        "max_rules",
        "max_cover_cells",
        "max_tags",
        "history_max_fixes",
        "max_sessions",
        "max_subscriptions",
        "session_queue",
        "alert_ring",
        "queue_batches",
        "task_queue",
        "udp_hold_fixes",
        "http_max_connections",
        "device_max_connections",
        "http_max_body_bytes",
        "ws_max_message_bytes",
        "device_max_frame_bytes",
    ] {
        assert!(
            m.contains(&format!("bluelight_limit{{name=\"{key}\"}} ")),
            "{key} missing:\n{m}"
        );
    }
}

/// Regression: a WebSocket message over the size limit ended the
/// connection with no close code. It is closed with 1009 ("message too
/// big", RFC 6455) naming the limit's key, on `/v1/ws` and `/v1/ingest`.
#[tokio::test]
async fn a_websocket_message_over_the_limit_is_closed_with_1009_naming_it() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut cfg = ServeConfig::default();
    cfg.tuning.ws_max_message_bytes = 64 << 10;
    cfg.tuning.ws_ingest_max_message_bytes = 64 << 10;
    let s = support::server_with(cfg).await;
    for (path, key) in [
        ("/v1/ws", "ws_max_message_bytes"),
        ("/v1/ingest", "ws_ingest_max_message_bytes"),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}{path}", s.http))
            .await
            .expect("connects");
        let big = format!("{{\"type\":\"nearest\",\"pad\":\"{}\"}}", "x".repeat(100 << 10));
        ws.send(Message::Text(big.into())).await.expect("sent");
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Close(f)))) => break f,
                Ok(Some(Ok(_))) => {}
                other => panic!("{path}: no close frame: {other:?}"),
            }
        };
        let f = close.expect("a close frame with a code");
        assert_eq!(u16::from(f.code), 1009, "{path}: {f:?}");
        assert!(f.reason.contains(key), "{path}: {f:?}");
    }
}
