//! The dispatch map in a real browser (headless Chromium, driven over the
//! DevTools protocol in real time): the page loads, opens the WebSocket and
//! shows every unit the server holds, then follows a new one.
//!
//! Needs Chromium (`.ci/run` installs Debian's `chromium`); without it the
//! test fails and says so.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bluelight_api::config::ServeConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{get_json, send_json, server_with};
use tokio_tungstenite::tungstenite::Message;

/// Now, by the machine's clock (the server's unless a test gives it another).
fn now_ms() -> i64 {
    bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock)
}

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_owned();
        }
    }
    panic!(
        "no Chromium found: install Debian's `chromium` (`.ci/run` does) to test the dispatch map in a browser"
    );
}

/// Ends the browser we started when the test ends, pass or fail.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts headless Chromium on `url`; returns it and its DevTools port.
fn launch(url: &str) -> (Browser, u16) {
    let profile = std::env::temp_dir().join(format!("bluelight-chromium-{}", std::process::id()));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stderr = child.stderr.take().expect("stderr");
    let browser = Browser(child);
    let port = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            let rest = l.split("DevTools listening on ws://127.0.0.1:").nth(1)?;
            rest.split('/').next()?.parse().ok()
        })
        .expect("DevTools port");
    (browser, port)
}

async fn evaluate(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    id: u64,
    expr: &str,
) -> Value {
    let cmd = json!({"id": id, "method": "Runtime.evaluate", "params": {"expression": expr, "returnByValue": true}});
    ws.send(Message::Text(cmd.to_string().into()))
        .await
        .expect("cdp send");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("cdp reply")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["id"] == id {
                return v["result"]["result"]["value"].clone();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_shows_every_unit_and_follows_a_new_one() {
    tokio::time::timeout(Duration::from_secs(90), map_shows_units())
        .await
        .expect("the browser test finishes within 90 s");
}

async fn map_shows_units() {
    let s = server_with(ServeConfig::default()).await;
    let t = now_ms();
    let fixes: Vec<_> = (0..7)
        .map(|i| json!({"id": format!("AMB-{i}"), "agency": "ambulance", "lat": 51.5 + i as f64 * 0.01, "lon": -0.12, "time_ms": t}))
        .collect();
    let (st, v) = send_json(s.http, "POST", "/v1/fixes", &json!({ "fixes": fixes }), None).await;
    assert_eq!((st, v["accepted"].as_u64()), (200, Some(7)), "{v}");
    let url = format!("http://{}/", s.http);
    let (_browser, port) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || launch(&url)
    })
    .await
    .expect("join");
    let devtools: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (_, targets) = get_json(devtools, "/json/list", None).await;
    let page = targets
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(&url)))
        })
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .and_then(|u| {
            u.split_once("/devtools/")
                .map(|(_, path)| format!("ws://127.0.0.1:{port}/devtools/{path}"))
        })
        .expect("the map page target");
    let (mut cdp, _) = tokio_tungstenite::connect_async(page).await.expect("cdp");
    let counters =
        "document.getElementById('conn').textContent + '/' + document.getElementById('units').textContent";
    let mut id = 0;
    let mut until = async |want: &str| {
        let start = Instant::now();
        loop {
            id += 1;
            let got = evaluate(&mut cdp, id, counters).await;
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the map shows {got}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    until("live/7").await;
    let (_, v) = send_json(
        s.http,
        "POST",
        "/v1/fixes",
        &json!({"fixes":[{"id":"NEW","lat":52.0,"lon":-1.0,"time_ms":t}]}),
        None,
    )
    .await;
    assert_eq!(v["accepted"], 1);
    until("live/8").await;
}
