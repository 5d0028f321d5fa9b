//! `GET /openapi.json` (PROTOCOL.md "Description"): every path the server
//! routes is in it and every path in it is routed, and Schemathesis
//! (PyPI, installed by `.ci/run`) drives every operation with generated
//! requests and checks every reply against the document.

mod support;

use std::process::Stdio;
use std::time::Duration;

use bluelight_api::config::{ServeConfig, TokenConfig};
use serde_json::{Value, json};
use support::{get_json, request, send_json, server_with};

const TOKEN: &str = "schemathesis-token-5d2c8e";

fn cfg() -> ServeConfig {
    let mut cfg = ServeConfig::default();
    cfg.auth.tokens = vec![TokenConfig {
        name: Some("fuzz".into()),
        token: TOKEN.into(),
        scopes: ["ingest", "read", "alerts", "fences", "export", "admin"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }];
    cfg
}

async fn document(addr: std::net::SocketAddr) -> Value {
    let (status, doc) = get_json(addr, "/openapi.json", None).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_1_with_every_path_of_the_contract() {
    let s = server_with(cfg()).await;
    let doc = document(s.http).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/v1/fences", "get"),
        ("/v1/fences/{id}", "get"),
        ("/v1/fences/{id}", "put"),
        ("/v1/fences/{id}", "delete"),
        ("/v1/rules", "get"),
        ("/v1/rules/{id}", "put"),
        ("/v1/rules/{id}", "delete"),
        ("/v1/units", "get"),
        ("/v1/units/{id}", "get"),
        ("/v1/nearest", "get"),
        ("/v1/fixes", "post"),
        ("/v1/export", "get"),
        ("/v1/export/h3", "get"),
        ("/v1/admin/promote", "post"),
        ("/v1/ws", "get"),
        ("/v1/ingest", "get"),
        ("/openapi.json", "get"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        assert!(
            op["responses"]["200"].is_object()
                || op["responses"]["201"].is_object()
                || op["responses"]["204"].is_object()
                || op["responses"]["101"].is_object(),
            "{method} {path} documents no success"
        );
    }
    // Query parameters are the handlers' own fields, with their types.
    let nearest: Vec<&str> = paths["/v1/nearest"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "lon",
        "lat",
        "k",
        "max_distance_m",
        "include_stale",
        "agency",
        "status",
        "kind",
        "tags",
    ] {
        assert!(nearest.contains(&name), "nearest lacks {name}: {nearest:?}");
    }
    // A token is a bearer header, or ?token= only where a browser needs it.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["token_query"]["in"], "query");
    let query_token = |path: &str| {
        paths[path]["get"]["security"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s.get("token_query").is_some()))
    };
    assert!(query_token("/v1/ws") && query_token("/v1/export"));
    assert!(!query_token("/v1/units") && !query_token("/v1/nearest"));
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed_and_an_undocumented_path_is_not() {
    let s = server_with(cfg()).await;
    let doc = document(s.http).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let concrete = path.replace("{id}", "no-such-id");
            let (status, body) =
                request(s.http, &method.to_uppercase(), &concrete, None, b"", Some(TOKEN)).await;
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let unrouted = status == 405
                || body["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("no such path"));
            assert!(
                !unrouted,
                "{method} {path} is documented but answers {status} {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 28, "only {checked} operations");
    // What is not documented is not there, and says so in the contract's form.
    let (status, body) = get_json(s.http, "/v1/secret", Some(TOKEN)).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/openapi.json")),
        "{body}"
    );
    let (status, body) = send_json(s.http, "PATCH", "/v1/fences/a", &json!({}), Some(TOKEN)).await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"].is_string(), "a 405 is JSON too: {body}");
    s.shutdown(Duration::from_secs(5)).await;
}

/// Units, fences and rules, so that replies carry every kind of field.
async fn seed(addr: std::net::SocketAddr) {
    let now = support::open::now_ms();
    let fixes: Vec<Value> = (0..40)
        .map(|i| {
            let agency = ["police", "fire", "ambulance", "coastguard", "other"][i % 5];
            json!({"id": format!("U-{i}"), "lat": 50.9 + i as f64 * 0.001, "lon": -1.4 + i as f64 * 0.001,
                   "time_ms": now - 1000, "speed_mps": 3.5, "heading_deg": 90, "accuracy_m": 5,
                   "agency": agency, "status": "available", "kind": "rrv", "tags": ["medic"]})
        })
        .collect();
    let (status, body) = send_json(addr, "POST", "/v1/fixes", &json!({ "fixes": fixes }), Some(TOKEN)).await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(40)), "{body}");
    let fence = json!({"type":"Feature","properties":{"name":"Port","detect":["enter","exit","dwell"],"dwell_s":60},
        "geometry":{"type":"Polygon","coordinates":[[[-1.41,50.89],[-1.3,50.89],[-1.3,51.0],[-1.41,51.0],[-1.41,50.89]]]}});
    let (status, body) = send_json(addr, "PUT", "/v1/fences/port", &fence, Some(TOKEN)).await;
    assert_eq!(status, 201, "{body}");
    let circle = json!({"type":"Feature","properties":{"radius_m":500},"geometry":{"type":"Point","coordinates":[-1.4,50.9]}});
    let (status, body) = send_json(addr, "PUT", "/v1/fences/station", &circle, Some(TOKEN)).await;
    assert_eq!(status, 201, "{body}");
    let rule =
        json!({"type":"proximity","from":{"agency":["police"]},"to":{"agency":["ambulance"]},"radius_m":200});
    let (status, body) = send_json(addr, "PUT", "/v1/rules/escort", &rule, Some(TOKEN)).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_reply_outside_the_document() {
    let s = server_with(cfg()).await;
    seed(s.http).await;
    let url = format!("http://{}/openapi.json", s.http);
    let report = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-m", "schemathesis.cli", "run", &url])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        // Replies: never a 5xx, a status the document lists, its content
        // type, its headers and its schema. (Not "schema-valid input must be
        // accepted": a JSON Schema cannot say that a ring must close or a
        // polygon not cross itself, which the server checks.)
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        // Bounded by examples per operation (a time budget would make it
        // repeat until the budget is spent).
        .args(["--max-examples", "40", "--seed", "20261130"])
        .args(["--workers", "2", "--request-timeout", "20"])
        // The page's static files hold no logic to fuzz.
        .args(["--exclude-path-regex", "^/map/(?!config)|^/$"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = match cmd.output().await {
        Ok(out) => out,
        Err(e) => panic!("missing: python3 ({e}); .ci/run installs it"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "missing: schemathesis (python3 -m pip install schemathesis==4.32.5; .ci/run installs it)\n{stderr}"
    );
    assert!(
        out.status.success(),
        "Schemathesis found problems:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "Schemathesis ran nothing:\n{stdout}");
    // And the server is alive and whole after it.
    let (status, health) = get_json(s.http, "/healthz", None).await;
    assert_eq!(status, 200, "{health}");
    let (status, units) = get_json(s.http, "/v1/units", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        units["features"].as_array().is_some_and(|f| f.len() >= 40),
        "{units}"
    );
    s.shutdown(Duration::from_secs(5)).await;
}
