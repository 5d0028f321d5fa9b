//! Helpers shared by the api's test binaries: a server on free loopback
//! ports and a minimal HTTP/1.1 client.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::SocketAddr;

pub mod browser;
pub mod redis;

use bluelight_api::config::ServeConfig;
use bluelight_api::server::{Running, start};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server on free loopback ports.
pub async fn server_with(mut cfg: ServeConfig) -> Running {
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.ingest = "127.0.0.1:0".parse().expect("addr");
    start(&cfg).await.expect("server starts")
}

/// One HTTP/1.1 request; returns status and body (chunked bodies decoded).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &[u8],
    token: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = ct {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    // Read to the end, or to Content-Length for servers that keep the
    // connection open; never longer than 15 s.
    let read = async {
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                return raw;
            }
            raw.extend_from_slice(&buf[..n]);
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
                if len.is_some_and(|len| raw.len() >= split + 4 + len) {
                    return raw;
                }
            }
        }
    };
    let raw = tokio::time::timeout(std::time::Duration::from_secs(15), read)
        .await
        .expect("an HTTP reply within 15 s");
    parse_reply(&raw)
}

/// A whole HTTP/1.1 reply's status and body (a chunked body decoded).
pub fn parse_reply(raw: &[u8]) -> (u16, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).expect("hex").trim(), 16)
                .expect("hex");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    (status, body)
}

/// GET, parsed as JSON (Null when not JSON).
pub async fn get_json(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let (st, b) = request(addr, "GET", path, None, b"", token).await;
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// A JSON request, parsed as JSON.
pub async fn send_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    v: &Value,
    token: Option<&str>,
) -> (u16, Value) {
    let (st, b) = request(
        addr,
        method,
        path,
        Some("application/json"),
        v.to_string().as_bytes(),
        token,
    )
    .await;
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// The same requests to a server without tokens, and what tests of one
/// build their fixes with.
pub mod open {
    use std::net::SocketAddr;

    use bluelight_engine::Fix;
    use serde_json::Value;

    /// Now, by the machine's clock (the server's unless a test gives it another).
    pub fn now_ms() -> i64 {
        bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock)
    }

    /// One request without a token.
    pub async fn http(
        addr: SocketAddr,
        method: &str,
        path: &str,
        ct: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        super::request(addr, method, path, ct, body, None).await
    }

    /// GET, parsed as JSON.
    pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
        super::get_json(addr, path, None).await
    }

    /// A JSON request, parsed as JSON.
    pub async fn send_json(addr: SocketAddr, method: &str, path: &str, v: &Value) -> (u16, Value) {
        super::send_json(addr, method, path, v, None).await
    }

    /// `POST /v1/fixes` of a FlatBuffers `FixBatch` of `fixes` (unit key, fix).
    pub async fn post_flatbuffers(addr: SocketAddr, fixes: &[(u64, Fix)]) -> (u16, Vec<u8>) {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let frame = bluelight_ingest::decode::encode_flatbuffers(&mut fbb, "t", fixes, &[]).to_vec();
        http(
            addr,
            "POST",
            "/v1/fixes",
            Some("application/x-flatbuffers"),
            &frame,
        )
        .await
    }
}

/// One thread of a process and how the kernel schedules it.
#[derive(Debug, Clone)]
pub struct ThreadSched {
    /// Its id (the directory under `/proc/PID/task`).
    pub tid: u32,
    /// Its name (field 2 of its `stat`).
    pub name: String,
    /// Its real-time priority (field 40).
    pub rt_priority: i32,
    /// Its scheduling policy (field 41): 0 normal, 1 FIFO, 5 idle.
    pub policy: u32,
    /// Its nice value (field 19).
    pub nice: i64,
}

/// Every thread of process `pid` (`std::process::id()` for this one).
#[cfg(target_os = "linux")]
pub fn thread_policies(pid: u32) -> Vec<ThreadSched> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // Fields from the third (state) on.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|p| p.parse::<i64>().ok())
                .expect("a stat field")
        };
        out.push(ThreadSched {
            tid,
            name: stat[open + 1..close].to_owned(),
            rt_priority: field(40) as i32,
            policy: field(41) as u32,
            nice: field(19),
        });
    }
    out
}
