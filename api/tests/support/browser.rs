//! A real headless Chromium driven over the DevTools protocol: open a page,
//! evaluate in it, wait for what it shows, click like a mouse, take
//! screenshots, and see every request it makes.
//!
//! Needs Chromium (`.ci/run` installs Debian's `chromium`); without it the
//! test fails and says so.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The browser window, CSS pixels.
pub const WINDOW: (u32, u32) = (1400, 900);

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

/// The browser we started; ended when the test ends, pass or fail.
struct Process {
    child: Child,
    profile: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One page in its own browser.
pub struct Page {
    cdp: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Every URL the page asked for (HTTP and WebSocket), in order.
    pub requests: Vec<String>,
    /// Uncaught exceptions in the page.
    pub exceptions: Vec<String>,
    /// Where screenshots go.
    shots: PathBuf,
    _process: Process,
}

impl Page {
    /// Starts Chromium, then opens `url` with the network watched from the
    /// first request on.
    pub async fn open(url: &str, test: &str) -> Page {
        let profile = std::env::temp_dir().join(format!("bluelight-chromium-{}-{test}", std::process::id()));
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
                "--disable-renderer-backgrounding",
                "--disable-background-timer-throttling",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("stderr");
        let process = Process { child, profile };
        let port: u16 = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stderr).lines();
            let port = lines.by_ref().map_while(Result::ok).find_map(|l| {
                let rest = l.split("DevTools listening on ws://127.0.0.1:").nth(1)?;
                rest.split('/').next()?.parse().ok()
            });
            // Keep draining, or Chromium blocks on a full pipe.
            std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
            port
        })
        .await
        .expect("join")
        .expect("Chromium's DevTools port");
        let devtools: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let (_, targets) = super::get_json(devtools, "/json/list", None).await;
        let target = targets
            .as_array()
            .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .and_then(|u| {
                u.split_once("/devtools/")
                    .map(|(_, p)| format!("ws://127.0.0.1:{port}/devtools/{p}"))
            })
            .expect("a page target");
        let (cdp, _) = tokio_tungstenite::connect_async(target).await.expect("cdp");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        let mut page = Page {
            cdp,
            next_id: 0,
            requests: Vec::new(),
            exceptions: Vec::new(),
            shots,
            _process: process,
        };
        for domain in ["Network.enable", "Runtime.enable", "Page.enable"] {
            page.call(domain, json!({})).await;
        }
        page.call("Page.navigate", json!({ "url": url })).await;
        page
    }

    /// One DevTools command; its result. Events that arrive meanwhile are
    /// recorded (requests, exceptions).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let cmd = json!({"id": id, "method": method, "params": params});
        self.cdp
            .send(Message::Text(cmd.to_string().into()))
            .await
            .expect("cdp send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.cdp.next())
                .await
                .unwrap_or_else(|_| panic!("no reply to {method} within 30 s"))
                .expect("the browser is there")
                .expect("a frame");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
            match v["method"].as_str() {
                Some("Network.requestWillBeSent") => {
                    self.requests
                        .push(v["params"]["request"]["url"].as_str().unwrap_or("").to_owned());
                }
                Some("Network.webSocketCreated") => {
                    self.requests
                        .push(v["params"]["url"].as_str().unwrap_or("").to_owned());
                }
                Some("Runtime.exceptionThrown") => {
                    self.exceptions.push(v["params"]["exceptionDetails"].to_string());
                }
                _ => {}
            }
        }
    }

    /// The value of `expr` in the page (promises awaited), or what it threw.
    pub async fn try_eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        match r.get("exceptionDetails") {
            Some(e) => Err(e["exception"]["description"]
                .as_str()
                .unwrap_or("an exception")
                .to_owned()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// The value of `expr` in the page (promises awaited).
    pub async fn eval(&mut self, expr: &str) -> Value {
        self.try_eval(expr)
            .await
            .unwrap_or_else(|e| panic!("{expr} threw: {e}"))
    }

    /// Waits until `expr` is truthy in the page (while the page is still
    /// loading it may throw: not yet); its value.
    pub async fn wait_for(&mut self, expr: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.try_eval(expr).await;
            if let Ok(v) = &v
                && !(v.is_null() || *v == false || *v == 0 || *v == "")
            {
                return v.clone();
            }
            if start.elapsed() > within {
                self.screenshot("timeout").await;
                panic!(
                    "the page did not show `{expr}` within {within:?} (last: {v:?}); exceptions: {:?}",
                    self.exceptions
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A left click at a point of the window, as a mouse makes it.
    pub async fn click_at(&mut self, x: f64, y: f64) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )
        .await;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
            )
            .await;
        }
    }

    /// Where a latitude and longitude is in the window now.
    pub async fn point_of(&mut self, lat: f64, lon: f64) -> (f64, f64) {
        let p = self
            .eval(&format!(
                "(() => {{ const r = bluelight.map.getContainer().getBoundingClientRect();
                   const p = bluelight.map.latLngToContainerPoint([{lat}, {lon}]);
                   return [r.left + p.x, r.top + p.y]; }})()"
            ))
            .await;
        (p[0].as_f64().expect("x"), p[1].as_f64().expect("y"))
    }

    /// A mouse click on the map at a latitude and longitude.
    pub async fn click_map(&mut self, lat: f64, lon: f64) {
        let (x, y) = self.point_of(lat, lon).await;
        self.click_at(x, y).await;
        // Leaflet tells a click from a double click by waiting a moment.
        tokio::time::sleep(Duration::from_millis(350)).await;
    }

    /// Saves a PNG of the window as `<target tmp>/browser/<name>.png`.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or(""))
            .expect("base64 PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Requests to anywhere but `origin` (`http://HOST:PORT`) and `data:`.
    pub fn foreign_requests(&self, origin: &str) -> Vec<String> {
        let ws = origin.replacen("http://", "ws://", 1);
        self.requests
            .iter()
            .filter(|u| {
                !(u.starts_with(&format!("{origin}/"))
                    || u.starts_with(&format!("{ws}/"))
                    || u.starts_with("data:"))
            })
            .cloned()
            .collect()
    }
}
