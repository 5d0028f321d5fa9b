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
    assert_eq!(
        get_json(s.http, &format!("/v1/units?token={AMB_READER}"), None)
            .await
            .0,
        200,
        "?token= works too"
    );
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
