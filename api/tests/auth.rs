//! Tokens, scopes and agency limits over real HTTP and WebSocket.

mod support;

use std::time::Duration;

use bluelight_api::config::{AuthConfig, ServeConfig, TokenConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{get_json, send_json, server_with};
use tokio_tungstenite::tungstenite::Message;

/// Now, by the machine's clock (the server's unless a test gives it another).
fn now_ms() -> i64 {
    bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock)
}

const ADMIN: &str = "admin-token-0000000000001";
const AMB_READER: &str = "ambulance-reader-00000001";
const DEVICE: &str = "device-ingest-00000000001";

fn cfg() -> ServeConfig {
    let token = |t: &str, scopes: &[&str], agencies: Option<&[&str]>| TokenConfig {
        token: t.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        agencies: agencies.map(|a| a.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    ServeConfig {
        auth: AuthConfig {
            tokens: vec![
                token(
                    ADMIN,
                    &["ingest", "read", "alerts", "fences", "export", "admin"],
                    None,
                ),
                token(AMB_READER, &["read", "alerts"], Some(&["ambulance"])),
                token(DEVICE, &["ingest"], None),
            ],
        },
        ..ServeConfig::default()
    }
}

fn fix(id: &str, agency: &str, lat: f64, lon: f64, t: i64) -> Value {
    json!({"id": id, "agency": agency, "status": "available", "lat": lat, "lon": lon, "time_ms": t})
}

#[tokio::test]
async fn missing_or_unknown_token_is_401_and_a_missing_scope_403() {
    let s = server_with(cfg()).await;
    assert_eq!(get_json(s.http, "/v1/units", None).await.0, 401);
    assert_eq!(
        get_json(s.http, "/v1/units", Some("not-a-token-at-all-xxxx"))
            .await
            .0,
        401
    );
    let (st, v) = get_json(s.http, "/v1/units", Some(DEVICE)).await;
    assert_eq!(st, 403);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("read")), "{v}");
    assert_eq!(get_json(s.http, "/metrics", Some(AMB_READER)).await.0, 403);
    assert_eq!(get_json(s.http, "/healthz", None).await.0, 200, "health is open");
    let (st, _) = send_json(s.http, "POST", "/v1/fixes", &json!({"fixes": []}), Some(DEVICE)).await;
    assert_eq!(st, 200);
    let fence = json!({"type":"Feature","geometry":{"type":"Point","coordinates":[0.1,51.1]},"properties":{"radius_m":50}});
    assert_eq!(
        send_json(s.http, "PUT", "/v1/fences/f", &fence, Some(AMB_READER))
            .await
            .0,
        403
    );
    // ?token= is for WebSocket upgrades and export downloads only: in any
    // other URL it would end up in logs.
    let (st, v) = get_json(s.http, &format!("/v1/units?token={AMB_READER}"), None).await;
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization: Bearer")),
        "{v}"
    );
    let (st, v) = get_json(
        s.http,
        &format!("/v1/export?from_ms=0&to_ms=1&token={ADMIN}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "an export download may carry it: {v}");
}

/// One GET with a raw `Authorization` header; the status.
async fn status_with_authorization(addr: std::net::SocketAddr, path: &str, authorization: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).await.expect("read");
    String::from_utf8_lossy(&reply)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status")
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let s = server_with(cfg()).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let st = status_with_authorization(s.http, "/v1/units", &format!("{scheme} {AMB_READER}")).await;
        assert_eq!(st, 200, "{scheme}");
    }
    assert_eq!(
        status_with_authorization(s.http, "/v1/units", &format!("Basic {AMB_READER}")).await,
        401
    );
}

#[tokio::test]
async fn a_token_may_be_configured_as_its_sha256_only() {
    const SECRET: &str = "only-its-hash-is-on-disk-01";
    // What `printf %s "$SECRET" | sha256sum` prints.
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(SECRET.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let cfg = ServeConfig {
        auth: AuthConfig {
            tokens: vec![TokenConfig {
                name: Some("control room".into()),
                token_sha256: Some(digest.clone()),
                scopes: vec!["read".into()],
                ..Default::default()
            }],
        },
        ..ServeConfig::default()
    };
    let s = server_with(cfg).await;
    assert_eq!(get_json(s.http, "/v1/units", Some(SECRET)).await.0, 200);
    assert_eq!(
        get_json(s.http, "/v1/units", Some(&digest)).await.0,
        401,
        "the digest is not the token"
    );
}

/// A WebSocket upgrade to `path` with `origin`; the HTTP status it got.
async fn upgrade_status(http: std::net::SocketAddr, path: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{http}{path}")
        .into_client_request()
        .expect("request");
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn a_cross_site_websocket_is_refused_and_the_server_s_own_page_allowed() {
    let s = server_with(ServeConfig {
        allowed_origins: vec!["https://cad.example.org".into()],
        ..ServeConfig::default()
    })
    .await;
    let own = format!("http://{}", s.http);
    for path in ["/v1/ws", "/v1/ingest"] {
        assert_eq!(
            upgrade_status(s.http, path, Some("http://evil.example")).await,
            403,
            "{path}"
        );
        assert_eq!(
            upgrade_status(s.http, path, Some("null")).await,
            403,
            "{path}: a sandboxed page"
        );
        assert_eq!(
            upgrade_status(s.http, path, Some(&own)).await,
            101,
            "{path}: the server's own page"
        );
        assert_eq!(
            upgrade_status(s.http, path, Some("https://cad.example.org")).await,
            101,
            "{path}: listed"
        );
        assert_eq!(
            upgrade_status(s.http, path, None).await,
            101,
            "{path}: not a browser"
        );
    }
}

#[tokio::test]
async fn an_agency_limited_token_never_sees_other_agencies() {
    let s = server_with(cfg()).await;
    let t = now_ms();
    let fence = json!({"type":"Feature","geometry":{"type":"Point","coordinates":[-0.12,51.5]},"properties":{"radius_m":500}});
    assert_eq!(
        send_json(s.http, "PUT", "/v1/fences/station", &fence, Some(ADMIN))
            .await
            .0,
        201
    );
    // The reader subscribes to alerts and a positions feed before anything moves.
    let url = format!("ws://{}/v1/ws?token={AMB_READER}", s.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let recv = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("in time");
            if let Some(Ok(Message::Text(t))) = m {
                return serde_json::from_str(&t).expect("json");
            }
        }
    };
    ws.send(Message::Text(
        json!({"type":"subscribe","id":"a","stream":"alerts"})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    ws.send(Message::Text(json!({"type":"subscribe","id":"p","stream":"positions","area":{"bbox":[-1,51,1,52]},"filter":{"agency":["police","ambulance"]}}).to_string().into())).await.expect("send");
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    assert_eq!(recv(&mut ws).await["units"], json!([]));
    // A police car enters first, then an ambulance.
    let r = send_json(
        s.http,
        "POST",
        "/v1/fixes",
        &json!({"fixes":[fix("POL-1","police",51.5,-0.12,t)]}),
        Some(DEVICE),
    )
    .await;
    assert_eq!(r.1["accepted"], 1);
    let r = send_json(
        s.http,
        "POST",
        "/v1/fixes",
        &json!({"fixes":[fix("AMB-1","ambulance",51.5001,-0.12,t)]}),
        Some(DEVICE),
    )
    .await;
    assert_eq!(r.1["accepted"], 1);
    // The first alert and the first positions the reader gets are the ambulance's.
    let mut saw_alert = false;
    let mut saw_positions = false;
    while !(saw_alert && saw_positions) {
        let m = recv(&mut ws).await;
        let text = m.to_string();
        assert!(!text.contains("POL-1"), "the reader saw a police unit: {text}");
        match m["type"].as_str() {
            Some("alert") => {
                assert_eq!(m["unit"]["id"], "AMB-1");
                saw_alert = true;
            }
            Some("positions") => saw_positions = true,
            _ => {}
        }
    }
    // HTTP: units, one unit, nearest.
    let (_, units) = get_json(s.http, "/v1/units", Some(AMB_READER)).await;
    let ids: Vec<&str> = units["features"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["AMB-1"]);
    assert_eq!(get_json(s.http, "/v1/units/POL-1", Some(AMB_READER)).await.0, 404);
    assert_eq!(get_json(s.http, "/v1/units/POL-1", Some(ADMIN)).await.0, 200);
    let (_, near) = get_json(
        s.http,
        "/v1/nearest?lon=-0.12&lat=51.5&k=5&agency=police",
        Some(AMB_READER),
    )
    .await;
    assert_eq!(near["results"], json!([]));
    ws.send(Message::Text(
        json!({"type":"nearest","id":"n","point":[-0.12,51.5],"k":5})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let n = recv(&mut ws).await;
    assert_eq!(n["results"].as_array().map(Vec::len), Some(1), "{n}");
    assert_eq!(n["results"][0]["unit"]["id"], "AMB-1");
}

#[tokio::test]
async fn websocket_needs_a_token_and_each_stream_its_scope() {
    let s = server_with(cfg()).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", s.http))
        .await
        .expect_err("no token");
    assert!(err.to_string().contains("401"), "{err}");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={DEVICE}", s.http))
        .await
        .expect("ws");
    ws.send(Message::Text(
        json!({"type":"subscribe","id":"a","stream":"alerts"})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("in time");
        if let Some(Ok(Message::Text(t))) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            assert_eq!(v["code"], "forbidden", "{v}");
            break;
        }
    }
}

/// Sends one FlatBuffers datagram with a fix for unit `key` from 127.0.0.1
/// to `to`, and waits until the server has counted it either way.
async fn udp_fix(s: &bluelight_api::server::Running, key: u64) {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let fix = bluelight_engine::Fix::at(now_ms(), 51.5, -0.1);
    let frame = bluelight_ingest::decode::encode_flatbuffers(&mut fbb, "spoof", &[(key, fix)], &[]).to_vec();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    socket.send_to(&frame, s.devices.ingest).await.expect("send");
    let c = &s.state.queue.counters;
    let seen = || {
        c.accepted.load(std::sync::atomic::Ordering::Relaxed)
            + c.udp_refused.load(std::sync::atomic::Ordering::Relaxed)
    };
    let start = std::time::Instant::now();
    while seen() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the datagram was neither taken nor refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_datagram_from_outside_ingest_allow_is_dropped_and_counted() {
    let elsewhere = server_with(ServeConfig {
        ingest_allow: vec!["10.20.0.0/16".into()],
        ..ServeConfig::default()
    })
    .await;
    udp_fix(&elsewhere, 555).await;
    let c = &elsewhere.state.queue.counters;
    assert_eq!(c.udp_refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        get_json(elsewhere.http, "/v1/units/555", None).await.0,
        404,
        "no unit was placed"
    );
    let (_, metrics) = support::request(elsewhere.http, "GET", "/metrics", None, b"", None).await;
    assert!(String::from_utf8_lossy(&metrics).contains("bluelight_udp_refused_total 1"));

    let here = server_with(ServeConfig {
        ingest_allow: vec!["127.0.0.0/8".into()],
        ..ServeConfig::default()
    })
    .await;
    udp_fix(&here, 555).await;
    let wait = std::time::Instant::now();
    while get_json(here.http, "/v1/units/555", None).await.0 != 200 {
        assert!(
            wait.elapsed() < Duration::from_secs(10),
            "the allowed datagram's unit never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        here.state
            .queue
            .counters
            .udp_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
