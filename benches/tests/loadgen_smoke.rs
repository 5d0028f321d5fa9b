//! The `smoke` preset end to end, as CI runs it: loadgen starts its own
//! `bluelight serve`, drives it, compares with a real `redis-server` it is
//! given, and writes both reports, which must say the run was correct.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `redis-server` on a free port, killed on drop (by its PID).
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test needs redis-server on PATH (apt-get install redis-server; .ci/run installs it): {e}")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs loadgen quietly with `args`, its reports into `out`; bounded: a
/// smoke run is 8 s of load plus setup, drain and any Redis pass.
fn run_loadgen(args: &[&str], out: &std::path::Path) -> std::process::ExitStatus {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--quiet", "--out"])
        .arg(out)
        .spawn()
        .expect("loadgen runs");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadgen {args:?} did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn smoke_preset_writes_a_correct_report_with_the_redis_comparison() {
    let redis = Redis::start();
    let out = std::env::temp_dir().join(format!("bluelight-loadgen-smoke-{}", std::process::id()));
    let target = format!("redis://127.0.0.1:{}", redis.port);
    let status = run_loadgen(&["--preset", "smoke", "--target", "redis-geo", &target], &out);
    let json = std::fs::read_to_string(out.join("loadgen-smoke.json")).expect("the JSON report");
    let md = std::fs::read_to_string(out.join("loadgen-smoke.md")).expect("the Markdown report");
    let r: Value = serde_json::from_str(&json).expect("the report is JSON");
    assert!(status.success(), "loadgen failed: {}", r["failures"]);
    assert_eq!(r["passed"], true, "{}", r["failures"]);
    let b = &r["bluelight"];
    // Every fix sent was accepted; every owed alert came once to each of the
    // three subscribers; sampled nearest answers matched brute force.
    assert!(
        b["fixes"]["sent"].as_u64().is_some_and(|n| n > 10_000),
        "{}",
        b["fixes"]
    );
    assert_eq!(b["fixes"]["lost"], 0.0);
    let owed = b["alerts"]["owed"].as_u64().expect("owed");
    assert!(
        owed > 0,
        "the smoke fleet starts inside fences, so alerts are owed"
    );
    assert_eq!(b["alerts"]["received"].as_u64(), Some(owed * 3));
    assert_eq!(b["alerts"]["missing"], 0);
    // Every alert's latency is counted once, in the warm-up or after it.
    let timed = |k: &str| b["alerts"][k]["count"].as_u64().unwrap_or(0);
    assert_eq!(
        timed("fix_to_alert") + timed("fix_to_alert_warmup"),
        owed * 3,
        "{}",
        b["alerts"]
    );
    assert_eq!(r["params"]["warmup_s"], 2);
    assert_eq!(b["alerts"]["duplicate"], 0);
    assert!(
        b["nearest"]["checked"].as_u64().is_some_and(|n| n > 10),
        "{}",
        b["nearest"]
    );
    assert_eq!(b["nearest"]["wrong"], 0);
    assert!(b["positions"]["units"].as_u64().is_some_and(|n| n > 0));
    assert!(b["fixes"]["accepted_per_s"].as_f64().is_some_and(|x| x > 1000.0));
    // Measured from the server's side too.
    assert!(b["server"]["rss_mib"].as_f64().is_some_and(|x| x > 1.0));
    // Redis GEO took the same fleet and answered the same queries.
    let redis_r = &r["redis_geo"];
    assert_eq!(redis_r["members"].as_u64(), r["params"]["units"].as_u64());
    assert!(redis_r["nearest"]["answered"].as_u64().is_some_and(|n| n > 10));
    assert!(redis_r["ratio"]["ingest_bluelight_over_redis"].as_f64().is_some());
    assert!(md.contains("| measure | bluelight | Redis GEO | ratio |"), "{md}");
    assert!(md.contains("PASSED"));
    assert!(!r["commit"].as_str().unwrap_or("").is_empty());
    let _ = std::fs::remove_dir_all(&out);
}

/// `--tls`: the same run with every client over HTTPS and WSS and the
/// fixes over TLS on TCP, against a server loadgen starts with a
/// certificate of its own making; every check holds. The maps take their
/// feeds in FlatBuffers (`--map-encoding flatbuffers`), and read them.
/// Fences, feeds, standing queries and sessions come and go beside it
/// (`--churn`), and the server's memory is sampled.
#[test]
fn smoke_preset_passes_over_tls_with_binary_maps_while_fences_and_sessions_churn() {
    let out = std::env::temp_dir().join(format!("bluelight-loadgen-tls-{}", std::process::id()));
    let status = run_loadgen(
        &[
            "--preset",
            "smoke",
            "--tls",
            "--map-encoding",
            "flatbuffers",
            "--churn",
        ],
        &out,
    );
    let json = std::fs::read_to_string(out.join("loadgen-smoke.json")).expect("the JSON report");
    let r: Value = serde_json::from_str(&json).expect("the report is JSON");
    assert!(status.success(), "loadgen --tls failed: {}", r["failures"]);
    assert_eq!(r["params"]["tls"], true);
    assert_eq!(r["params"]["map_encoding"], "flatbuffers");
    // The server sent them binary frames, as asked.
    assert!(
        r["bluelight"]["positions"]["binary_messages"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{}",
        r["bluelight"]["positions"]
    );
    let b = &r["bluelight"];
    assert_eq!(b["fixes"]["lost"], 0.0);
    let owed = b["alerts"]["owed"].as_u64().expect("owed");
    assert!(owed > 0);
    assert_eq!(
        b["alerts"]["received"].as_u64(),
        Some(owed * 3),
        "{}",
        b["alerts"]
    );
    assert!(
        b["nearest"]["checked"].as_u64().is_some_and(|n| n > 10),
        "{}",
        b["nearest"]
    );
    assert_eq!(b["nearest"]["wrong"], 0);
    assert!(b["positions"]["units"].as_u64().is_some_and(|n| n > 0));
    // The churn ran without a failure (a failure fails the run, above).
    let churn = &r["memory"]["churn"];
    assert!(churn["fences_put"].as_u64().is_some_and(|n| n >= 5), "{churn}");
    assert!(churn["sessions"].as_u64().is_some_and(|n| n >= 1), "{churn}");
    assert!(churn["unsubscribed"].as_u64().is_some_and(|n| n >= 3), "{churn}");
    assert_eq!(churn["errors"], 0, "{churn}");
    let samples = r["memory"]["samples"].as_array().expect("memory samples");
    assert!(samples.len() >= 2, "at the start and at the end: {samples:?}");
    assert!(
        samples
            .iter()
            .all(|m| m["rss_mib"].as_f64().is_some_and(|x| x > 1.0))
    );
    assert!(samples.iter().all(|m| m["engine_regions"].as_f64().is_some()));
    // Clients that speak only TLS got every answer above, so the server
    // spoke it, with the certificate loadgen made.
    assert!(out.join("loadgen-server.crt").is_file());
    let _ = std::fs::remove_dir_all(&out);
}
