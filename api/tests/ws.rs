//! WebSocket `/v1/ws` over real sockets with a real client.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bluelight_api::config::ServeConfig;
use bluelight_api::server::Running;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Now, by the machine's clock (the server's unless a test gives it another).
fn now_ms() -> i64 {
    bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn server() -> Running {
    support::server_with(ServeConfig::default()).await
}

async fn connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
        .await
        .expect("ws connects");
    ws
}

/// A client whose socket takes 4 KiB at most: once that is full, the
/// server's sends to it stall (a client that does not read).
async fn connect_with_tiny_receive_buffer(addr: SocketAddr) -> Ws {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&addr.into()).expect("connect");
    sock.set_nonblocking(true).expect("nonblocking");
    let stream = TcpStream::from_std(sock.into()).expect("tokio stream");
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/v1/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("ws");
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.expect("send");
}

/// The next JSON message (skipping pings), within 5 s.
async fn recv(ws: &mut Ws) -> Value {
    match recv_frame(ws).await {
        Frame::Json(v) => v,
        Frame::Binary(b) => panic!("expected JSON text, got {} binary bytes", b.len()),
    }
}

/// POSTs fixes as JSON.
async fn post_fixes(addr: SocketAddr, fixes: Value) -> Value {
    support::send_json(addr, "POST", "/v1/fixes", &json!({ "fixes": fixes }), None)
        .await
        .1
}

async fn put_fence(addr: SocketAddr, id: &str, feature: Value) {
    let (st, v) = support::send_json(addr, "PUT", &format!("/v1/fences/{id}"), &feature, None).await;
    assert_eq!(st, 201, "{v}");
}

fn fix(id: &str, lat: f64, lon: f64, t: i64) -> Value {
    json!({"id": id, "lat": lat, "lon": lon, "time_ms": t, "agency": "ambulance", "status": "available"})
}

#[tokio::test]
async fn positions_feed_sends_a_snapshot_then_conflated_positions_then_left() {
    let s = server().await;
    let t = now_ms();
    post_fixes(
        s.http,
        json!([fix("IN", 51.50, -0.12, t), fix("OUT", 52.5, -0.12, t)]),
    )
    .await;
    let mut ws = connect(s.http).await;
    send(&mut ws, json!({"type":"subscribe","id":"s1","stream":"positions","area":{"bbox":[-0.2,51.4,0.0,51.6]},"max_hz":2})).await;
    let sub = recv(&mut ws).await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["id"], "s1");
    let sub_id = sub["sub"].as_str().expect("sub").to_owned();
    let snap = recv(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    let ids: Vec<&str> = snap["units"]
        .as_array()
        .expect("units")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["IN"]);
    // Twenty quick moves of IN, and NEW arrives: conflated to one position each.
    let started = Instant::now();
    for i in 1..=20 {
        // 11 m a second: a plausible vehicle (faster would be a refused jump).
        post_fixes(
            s.http,
            json!([fix("IN", 51.50 + i as f64 * 1e-4, -0.12, t + i * 1000)]),
        )
        .await;
    }
    post_fixes(s.http, json!([fix("NEW", 51.51, -0.11, t + 30_000)])).await;
    let mut latest: HashMap<String, f64> = HashMap::new();
    let mut messages = 0;
    while latest.get("IN") != Some(&(51.50 + 20.0 * 1e-4)) || !latest.contains_key("NEW") {
        let m = recv(&mut ws).await;
        assert_eq!(m["type"], "positions", "{m}");
        assert_eq!(m["sub"], sub_id.as_str());
        messages += 1;
        let units = m["units"].as_array().expect("units");
        let mut seen = std::collections::HashSet::new();
        for u in units {
            let id = u["id"].as_str().expect("id").to_owned();
            assert!(seen.insert(id.clone()), "a unit appears once per message: {m}");
            latest.insert(id, u["lat"].as_f64().expect("lat"));
        }
    }
    let allowed = 1 + (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        messages <= allowed,
        "{messages} position messages in {:?} at max_hz 2",
        started.elapsed()
    );
    // Two minutes later: beyond the jump check, within the future limit.
    post_fixes(s.http, json!([fix("IN", 51.61, -0.12, t + 120_000)])).await;
    let left = recv(&mut ws).await;
    assert_eq!(left, json!({"type":"left","sub":sub_id,"ids":["IN"]}));
}

/// A frame of either kind (skipping pings), within 5 s.
enum Frame {
    Json(Value),
    Binary(Vec<u8>),
}

async fn recv_frame(ws: &mut Ws) -> Frame {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time");
        match m.expect("open").expect("frame") {
            Message::Text(t) => return Frame::Json(serde_json::from_str(&t).expect("json")),
            Message::Binary(b) => return Frame::Binary(b.to_vec()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A binary positions message read as the JSON it stands for.
fn decoded(frame: Frame) -> Value {
    match frame {
        Frame::Binary(b) => bluelight_api::rows::positions_as_json(&b).expect("a valid Positions buffer"),
        Frame::Json(v) => panic!("expected a binary frame, got {v}"),
    }
}

/// The units of two messages are the same, unit for unit and member for
/// member (coordinates to 1e-9°: the JSON side went through a float parser).
fn assert_same_units(json: &Value, binary: &Value) {
    let sorted = |m: &Value| {
        let mut units = m["units"].as_array().expect("units").clone();
        units.sort_by_key(|u| u["id"].as_str().unwrap_or_default().to_owned());
        units
    };
    let (a, b) = (sorted(json), sorted(binary));
    assert_eq!(a.len(), b.len(), "{json}\n{binary}");
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x.as_object().expect("unit"), y.as_object().expect("unit"));
        assert_eq!(
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>(),
            "{x:?}\n{y:?}"
        );
        for (k, v) in x {
            if k == "lat" || k == "lon" {
                let d = v.as_f64().expect("number") - y[k].as_f64().expect("number");
                assert!(d.abs() < 1e-9, "{k}: {v} against {}", y[k]);
            } else {
                assert_eq!(v, &y[k], "{k}");
            }
        }
    }
}

/// PROTOCOL.md "Positions in binary": a feed that asks for FlatBuffers gets
/// its snapshot and positions as binary frames saying what the JSON feed
/// says; `subscribed` and `left` stay JSON; an unknown encoding is refused.
#[tokio::test]
async fn a_flatbuffers_positions_feed_says_what_the_json_feed_says() {
    let s = server().await;
    let t = now_ms();
    post_fixes(
        s.http,
        json!([
            {"id":"AMB-1","lat":51.5,"lon":-0.12,"time_ms":t,"agency":"ambulance","status":"available",
             "kind":"rrv","tags":["paramedic","hart"],"speed_mps":12.5,"heading_deg":270,"accuracy_m":5},
            fix("AMB-2", 51.51, -0.11, t),
            fix("FAR", 53.5, -0.12, t),
        ]),
    )
    .await;
    let mut ws = connect(s.http).await;
    let area = json!({"bbox":[-0.2,51.4,0.0,51.6]});
    send(
        &mut ws,
        json!({"type":"subscribe","id":"j","stream":"positions","area":area,"max_hz":2}),
    )
    .await;
    let json_sub = recv(&mut ws).await["sub"].as_str().expect("sub").to_owned();
    let json_snapshot = recv(&mut ws).await;
    assert_eq!(json_snapshot["type"], "snapshot");
    send(
        &mut ws,
        json!({"type":"subscribe","id":"b","stream":"positions","area":area,"max_hz":2,"encoding":"flatbuffers"}),
    )
    .await;
    let subscribed = recv(&mut ws).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["id"].as_str()),
        (Some("subscribed"), Some("b"))
    );
    let binary_sub = subscribed["sub"].as_str().expect("sub").to_owned();
    let snapshot = decoded(recv_frame(&mut ws).await);
    assert_eq!(
        (snapshot["type"].as_str(), snapshot["sub"].as_str()),
        (Some("snapshot"), Some(binary_sub.as_str()))
    );
    assert_eq!(snapshot["units"].as_array().map(Vec::len), Some(2), "{snapshot}");
    assert_same_units(&json_snapshot, &snapshot);

    // A move reaches both feeds, each in its own encoding.
    post_fixes(s.http, json!([fix("AMB-2", 51.511, -0.11, t + 1000)])).await;
    let (mut from_json, mut from_binary) = (None, None);
    while from_json.is_none() || from_binary.is_none() {
        match recv_frame(&mut ws).await {
            Frame::Json(m) => {
                assert_eq!(
                    (m["type"].as_str(), m["sub"].as_str()),
                    (Some("positions"), Some(json_sub.as_str())),
                    "{m}"
                );
                from_json = Some(m);
            }
            binary => {
                let m = decoded(binary);
                assert_eq!(
                    (m["type"].as_str(), m["sub"].as_str()),
                    (Some("positions"), Some(binary_sub.as_str())),
                    "{m}"
                );
                from_binary = Some(m);
            }
        }
    }
    let (from_json, from_binary) = (from_json.unwrap_or_default(), from_binary.unwrap_or_default());
    assert_eq!(from_binary["units"][0]["id"], "AMB-2");
    assert_eq!(from_binary["units"][0]["lat"], 51.511);
    assert_same_units(&from_json, &from_binary);

    // Leaving is JSON text on both.
    post_fixes(s.http, json!([fix("AMB-2", 51.62, -0.11, t + 120_000)])).await;
    let mut left = vec![recv(&mut ws).await, recv(&mut ws).await];
    left.sort_by_key(|m| m["sub"].as_str() == Some(binary_sub.as_str()));
    assert_eq!(
        left,
        vec![
            json!({"type":"left","sub":json_sub,"ids":["AMB-2"]}),
            json!({"type":"left","sub":binary_sub,"ids":["AMB-2"]}),
        ]
    );

    send(
        &mut ws,
        json!({"type":"subscribe","id":"x","stream":"positions","area":area,"encoding":"xml"}),
    )
    .await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("bad_request"), Some("x")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("encoding") && m.contains("flatbuffers")),
        "{e}"
    );
}

#[tokio::test]
async fn alerts_resume_with_since_seq_with_no_gap_and_no_duplicate() {
    let s = server().await;
    put_fence(
        s.http,
        "cordon",
        json!({"type":"Feature","geometry":{"type":"Point","coordinates":[-0.09,51.515]},"properties":{"radius_m":300}}),
    )
    .await;
    let mut ws = connect(s.http).await;
    send(
        &mut ws,
        json!({"type":"subscribe","id":"a1","stream":"alerts","fences":["cordon"]}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let t = now_ms();
    // U0..U4 enter: five alerts live.
    for i in 0..5 {
        let r = post_fixes(s.http, json!([fix(&format!("U{i}"), 51.515, -0.09, t + i)])).await;
        assert_eq!(r["accepted"], 1, "{r}");
    }
    let mut seqs = Vec::new();
    for _ in 0..5 {
        let a = recv(&mut ws).await;
        assert_eq!(a["type"], "alert");
        assert_eq!(a["event"], "enter");
        assert_eq!(a["fence"], "cordon");
        assert!(a["unit"]["id"].as_str().is_some_and(|id| id.starts_with('U')));
        seqs.push(a["seq"].as_u64().expect("seq"));
    }
    let last = *seqs.last().expect("seq");
    ws.close(None).await.ok();
    // The server has let the session go before the next alerts fire.
    for _ in 0..100 {
        if metric(s.http, "bluelight_ws_sessions").await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(metric(s.http, "bluelight_ws_sessions").await, 0);
    // While disconnected, they all leave (two minutes on, a plausible
    // drive): five alerts missed.
    for i in 0..5 {
        let r = post_fixes(
            s.http,
            json!([fix(&format!("U{i}"), 51.6, -0.09, t + 120_000 + i)]),
        )
        .await;
        assert_eq!(r["accepted"], 1, "{r}");
    }
    let mut ws = connect(s.http).await;
    send(
        &mut ws,
        json!({"type":"subscribe","id":"a2","stream":"alerts","fences":["cordon"],"since_seq":last}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    // And one more live after resubscribing.
    post_fixes(s.http, json!([fix("U0", 51.515, -0.09, t + 240_000)])).await;
    for _ in 0..6 {
        let a = recv(&mut ws).await;
        seqs.push(a["seq"].as_u64().expect("seq"));
    }
    let want: Vec<u64> = (seqs[0]..seqs[0] + 11).collect();
    assert_eq!(seqs, want, "every alert exactly once, in order");
    // The latency histogram counts the six live frames, not the five replayed
    // (it is recorded just after each frame is written: allow a moment).
    let mut counted = 0;
    for _ in 0..100 {
        counted = metric(s.http, "bluelight_fix_to_alert_seconds_count").await;
        if counted >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counted, 6);
    assert_eq!(metric(s.http, "bluelight_alert_subscriptions").await, 1);
}

#[tokio::test]
async fn standing_nearest_is_resent_when_a_closer_unit_arrives() {
    let s = server().await;
    let t = now_ms();
    post_fixes(
        s.http,
        json!([fix("FAR", 51.53, -0.12, t), fix("MID", 51.52, -0.12, t)]),
    )
    .await;
    let mut ws = connect(s.http).await;
    send(&mut ws, json!({"type":"subscribe","id":"n1","stream":"nearest","point":[-0.12,51.5],"k":2,"filter":{"agency":["ambulance"]}})).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let first = recv(&mut ws).await;
    let order = |m: &Value| -> Vec<String> {
        m["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["unit"]["id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(order(&first), vec!["MID", "FAR"]);
    post_fixes(s.http, json!([fix("NEAR", 51.501, -0.12, t + 1)])).await;
    let next = recv(&mut ws).await;
    assert_eq!(next["type"], "nearest");
    assert_eq!(order(&next), vec!["NEAR", "MID"]);
    assert!(
        next["results"][0]["distance_m"]
            .as_f64()
            .is_some_and(|d| (d - 111.2).abs() < 1.0)
    );
}

#[tokio::test]
async fn one_shot_nearest_errors_and_unsubscribe() {
    let s = server().await;
    let t = now_ms();
    post_fixes(
        s.http,
        json!([fix("A", 51.501, -0.12, t), fix("B", 51.502, -0.12, t)]),
    )
    .await;
    let mut ws = connect(s.http).await;
    send(
        &mut ws,
        json!({"type":"nearest","id":"q1","point":[-0.12,51.5],"k":1}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "nearest");
    assert_eq!(r["id"], "q1");
    assert_eq!(r["results"][0]["unit"]["id"], "A");
    send(&mut ws, json!({"type":"teleport","id":"x"})).await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["id"].as_str(), e["code"].as_str()),
        (Some("error"), Some("x"), Some("bad_request"))
    );
    send(&mut ws, json!({"type":"subscribe","id":"p","stream":"positions","area":{"circle":{"center":[-0.12,51.5],"radius_m":-5}}})).await;
    let e = recv(&mut ws).await;
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("radius_m")),
        "{e}"
    );
    send(&mut ws, json!({"type":"unsubscribe","sub":"nope"})).await;
    assert_eq!(recv(&mut ws).await["code"], "not_found");
    send(
        &mut ws,
        json!({"type":"subscribe","id":"p2","stream":"positions","area":{"h3":["871f1d489ffffff"]}}),
    )
    .await;
    let sub = recv(&mut ws).await["sub"].as_str().expect("sub").to_owned();
    let _snapshot = recv(&mut ws).await;
    send(&mut ws, json!({"type":"unsubscribe","sub":sub})).await;
    assert_eq!(recv(&mut ws).await, json!({"type":"unsubscribed","sub":sub}));
    ws.send(Message::Text("not json".into())).await.expect("send");
    assert_eq!(recv(&mut ws).await["code"], "bad_request");
    // The one nearest reply was timed (recorded as it was sent, before the
    // replies that followed it); errors and other replies are not.
    assert_eq!(metric(s.http, "bluelight_ws_nearest_seconds_count").await, 1);
}

/// `"fixes_seen":true` on a one-shot nearest: the reply says how many
/// fixes the writer had taken, refused ones included, in arrival order;
/// without it the reply is as before.
#[tokio::test]
async fn a_nearest_reply_can_say_how_many_fixes_the_server_had_seen() {
    let s = server().await;
    let t = now_ms();
    let reply = post_fixes(
        s.http,
        json!([
            fix("A", 51.501, -0.12, t),
            fix("BAD", 95.0, -0.12, t),
            fix("B", 51.502, -0.12, t)
        ]),
    )
    .await;
    assert_eq!(
        (reply["accepted"].as_u64(), reply["rejected"].as_u64()),
        (Some(2), Some(1)),
        "{reply}"
    );
    post_fixes(s.http, json!([fix("A", 51.5011, -0.12, t + 1000)])).await;
    let mut ws = connect(s.http).await;
    send(
        &mut ws,
        json!({"type":"nearest","id":"q","point":[-0.12,51.5],"k":2,"fixes_seen":true}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(r["fixes_seen"], 4, "{r}");
    assert_eq!(r["results"][0]["unit"]["lat"], 51.5011, "{r}");
    send(
        &mut ws,
        json!({"type":"nearest","id":"q2","point":[-0.12,51.5],"k":2}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert!(r.get("fixes_seen").is_none(), "{r}");
    assert_eq!(metric(s.http, "bluelight_engine_fixes_seen_total").await, 4);
}

/// The value of a metric line, from `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, body) = support::request(addr, "GET", "/metrics", None, b"", None).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_slow_alerts_client_is_closed_with_1013_and_resumes_with_every_alert_exactly_once() {
    let s = server().await;
    put_fence(
        s.http,
        "zone",
        json!({"type":"Feature","geometry":{"type":"Point","coordinates":[-0.09,51.515]},"properties":{"radius_m":2000}}),
    )
    .await;
    // A client with a tiny receive buffer that reads nothing: the server's
    // socket fills, then the session's queue.
    let mut slow = connect_with_tiny_receive_buffer(s.http).await;
    send(&mut slow, json!({"type":"subscribe","id":"a","stream":"alerts"})).await;
    // Far more alerts than the server's socket buffer and the session's
    // queue (bluelight_api::config::Tuning::default().session_queue) hold.
    let t = now_ms();
    let total = bluelight_api::config::Tuning::default().session_queue * 2;
    for chunk in 0..total.div_ceil(5_000) {
        let fixes: Vec<Value> = (chunk * 5_000..((chunk + 1) * 5_000).min(total))
            .map(|i| fix(&format!("S{i}"), 51.515 + (i % 100) as f64 * 1e-5, -0.09, t))
            .collect();
        let r = post_fixes(s.http, Value::Array(fixes)).await;
        assert_eq!(r["rejected"], 0, "{r}");
    }
    let start = Instant::now();
    while metric(s.http, "bluelight_ws_closed_slow_total").await < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the slow session was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read what did reach the slow client, up to the 1013 close.
    let mut seqs: Vec<u64> = Vec::new();
    let code;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), slow.next()).await;
        let m = match next {
            Ok(Some(Ok(m))) => m,
            other => panic!("the slow client's stream ended without a close frame: {other:?}"),
        };
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "alert" {
                    seqs.push(v["seq"].as_u64().expect("seq"));
                }
            }
            Message::Close(f) => {
                code = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(code, Some(1013));
    assert!(seqs.len() < total, "it fell behind");
    // Resume: everything after the last seq it saw, exactly once, in order.
    let mut again = connect(s.http).await;
    let last = seqs.last().copied().unwrap_or(0);
    send(
        &mut again,
        json!({"type":"subscribe","id":"b","stream":"alerts","since_seq":last}),
    )
    .await;
    assert_eq!(recv(&mut again).await["type"], "subscribed");
    while seqs.len() < total {
        let a = recv(&mut again).await;
        seqs.push(a["seq"].as_u64().expect("seq"));
    }
    let first = seqs[0];
    assert!(
        seqs.iter().enumerate().all(|(i, s)| *s == first + i as u64),
        "no gap, no duplicate"
    );
}

#[tokio::test]
async fn websocket_ingest_takes_flatbuffers_and_json_and_survives_a_bad_frame() {
    let s = server().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ingest", s.http))
        .await
        .expect("ws");
    let t = now_ms();
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let frame = bluelight_ingest::decode::encode_flatbuffers(
        &mut fbb,
        "ws",
        &[(5, bluelight_engine::Fix::at(t, 51.0, -1.0))],
        &[],
    )
    .to_vec();
    ws.send(Message::Binary(frame.into())).await.expect("send");
    ws.send(Message::Binary(b"garbage".to_vec().into()))
        .await
        .expect("send");
    let err = recv(&mut ws).await;
    assert_eq!(err["code"], "bad_request", "{err}");
    ws.send(Message::Text(
        json!({"fixes":[fix("WS-JSON", 51.1, -1.1, t)]})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let start = Instant::now();
    loop {
        let ok = {
            let e = s.state.engine.lock();
            e.find_unit("5").is_some() && e.find_unit("WS-JSON").is_some()
        };
        if ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "both fixes should arrive"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Time comes from the server's one clock: a unit goes stale when that
/// clock passes `stale_after_s` since its fix, whatever the machine's
/// clock says, and not before.
#[tokio::test]
async fn a_unit_goes_stale_when_the_servers_clock_passes_stale_after() {
    let t0 = now_ms();
    let clock = std::sync::Arc::new(bluelight_engine::ManualClock::at(t0));
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ingest: "127.0.0.1:0".parse().expect("addr"),
        stale_after_s: 120,
        ..ServeConfig::default()
    };
    let s = bluelight_api::server::start_with_clock(&cfg, clock.clone())
        .await
        .expect("server starts");
    let mut ws = connect(s.http).await;
    send(
        &mut ws,
        json!({"type":"subscribe","id":"a","stream":"alerts","events":["stale"]}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let r = post_fixes(s.http, json!([fix("AMB-9", 51.5, -0.12, t0)])).await;
    assert_eq!(r["accepted"], 1, "{r}");
    // Just short of stale_after: a whole scan (1 s of real time) fires nothing.
    clock.advance(119_000);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (_, unit) = support::get_json(s.http, "/v1/units/AMB-9", None).await;
    assert_eq!(unit["properties"]["stale"], false, "{unit}");
    clock.advance(2_000);
    let alert = recv(&mut ws).await;
    assert_eq!(alert["event"], "stale", "{alert}");
    assert_eq!(alert["unit"]["id"], "AMB-9");
    assert_eq!(
        alert["time_ms"],
        t0 + 121_000,
        "the alert is timed by the server's clock"
    );
}

/// Regression: one-shot nearest over WebSocket answered k = -1, 0 and 1e9
/// with 5, 1 and 1,000 results where HTTP answered 400; standing nearest
/// did not check k at all. Every one is refused now, naming k.
#[tokio::test]
async fn nearest_k_out_of_range_is_refused_on_every_road() {
    let s = server().await;
    let mut ws = connect(s.http).await;
    for (i, k) in [json!(-1), json!(0), json!(1e9), json!(1001), json!("5")]
        .into_iter()
        .enumerate()
    {
        let id = format!("q{i}");
        send(
            &mut ws,
            json!({"type":"nearest","id":id,"point":[-0.12,51.5],"k":k}),
        )
        .await;
        let r = recv(&mut ws).await;
        assert_eq!(
            (&r["type"], &r["code"], &r["id"]),
            (&json!("error"), &json!("bad_request"), &json!(id)),
            "{r}"
        );
        assert!(
            r["message"].as_str().is_some_and(|m| m.contains("k must be")),
            "{r}"
        );
        send(
            &mut ws,
            json!({"type":"subscribe","id":id,"stream":"nearest","point":[-0.12,51.5],"k":k}),
        )
        .await;
        let r = recv(&mut ws).await;
        assert_eq!(
            (&r["type"], &r["code"]),
            (&json!("error"), &json!("bad_request")),
            "{r}"
        );
    }
    let (st, v) = support::get_json(s.http, "/v1/nearest?lon=-0.12&lat=51.5&k=0", None).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|m| m.contains("k must be")),
        "{v}"
    );
    send(
        &mut ws,
        json!({"type":"nearest","id":"ok","point":[-0.12,51.5],"k":1000}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!((&r["type"], &r["id"]), (&json!("nearest"), &json!("ok")), "{r}");
}

/// Regression: a positions client that stopped reading was dropped after
/// about 10 s with no close code and no metric. It is closed once it takes
/// no frame for `ws_send_timeout_s`, counted, and the server goes on.
#[tokio::test]
async fn a_map_that_stops_reading_is_closed_and_counted() {
    let mut cfg = ServeConfig::default();
    cfg.tuning.ws_send_timeout_s = 1;
    let s = support::server_with(cfg).await;
    let t = now_ms();
    let round = |r: i64| {
        let fixes: Vec<Value> = (0..3000)
            .map(|i| {
                let (row, col) = (f64::from(i % 60), f64::from(i / 60));
                fix(
                    &format!("M{i}"),
                    51.5 + row * 1e-3 + r as f64 * 1e-5,
                    -0.1 - col * 1e-3,
                    t + r * 1000,
                )
            })
            .collect();
        Value::Array(fixes)
    };
    assert_eq!(post_fixes(s.http, round(0)).await["accepted"], 3000);
    // A map with a tiny receive buffer that never reads.
    let mut map = connect_with_tiny_receive_buffer(s.http).await;
    send(
        &mut map,
        json!({"type":"subscribe","id":"p","stream":"positions","area":{"bbox":[-0.2,51.4,0.0,51.6]},"max_hz":50}),
    )
    .await;
    // Every unit moves, again and again: megabytes of positions it never reads.
    let start = Instant::now();
    let mut r = 1;
    while metric(s.http, "bluelight_ws_closed_stalled_total").await < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the stalled map was never closed"
        );
        assert_eq!(post_fixes(s.http, round(r)).await["accepted"], 3000);
        r += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(s.http, "bluelight_ws_closed_slow_total").await,
        0,
        "not an alerts client"
    );
    // Everyone else is served as before.
    let mut other = connect(s.http).await;
    send(
        &mut other,
        json!({"type":"nearest","id":"q","point":[-0.1,51.5],"k":1}),
    )
    .await;
    assert_eq!(recv(&mut other).await["type"], "nearest");
    until_sessions(s.http, 1).await;
}

/// Waits (bounded) until the server holds `n` WebSocket sessions.
async fn until_sessions(addr: SocketAddr, n: u64) {
    let start = Instant::now();
    while metric(addr, "bluelight_ws_sessions").await != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sessions never became {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
