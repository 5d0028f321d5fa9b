//! Durability with Redis (PROTOCOL.md "Durability and followers"): real
//! `redis-server` processes, the real `bluelight` binary killed with
//! SIGKILL, and the contract checked against what was acknowledged.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::{RngExt, SeedableRng};
use redis::Commands;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use serde_json::{Value, json};
use support::open::{get_json, now_ms, send_json};
use support::redis::{Bluelight, RedisServer, free_port};
use tokio_tungstenite::tungstenite::Message;

const DEPOT: (f64, f64) = (53.8, -1.5);

fn circle(lat: f64, lon: f64, r: f64) -> Value {
    json!({"type":"Feature","geometry":{"type":"Point","coordinates":[lon, lat]},"properties":{"radius_m": r}})
}

fn fix(id: &str, lat: f64, lon: f64, t: i64) -> Value {
    json!({"id": id, "lat": lat, "lon": lon, "time_ms": t})
}

async fn post(addr: SocketAddr, fixes: Vec<Value>) -> (u16, Value) {
    send_json(addr, "POST", "/v1/fixes", &json!({ "fixes": fixes })).await
}

/// The alerts stream's entries as (seq, event, unit, fence).
fn stream_alerts(redis: &RedisServer, key: &str) -> Vec<(u64, String, String, String)> {
    let mut c = redis.conn();
    let r: StreamRangeReply = c.xrange_all(key).expect("xrange");
    r.ids
        .iter()
        .map(|e| {
            let f = |k: &str| e.get::<String>(k).unwrap_or_default();
            (f("seq").parse().expect("seq"), f("event"), f("unit"), f("fence"))
        })
        .collect()
}

/// Waits until the alerts stream holds `n` entries (the outbox appends
/// in the background).
async fn until_stream_len(redis: &RedisServer, key: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let len: usize = redis.conn().xlen(key).expect("xlen");
        if len >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the alerts stream holds {len} alerts, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every alert from a `/v1/ws` alerts subscription resumed at `since`,
/// until `want` arrived.
async fn ws_alerts(addr: SocketAddr, since: u64, want: usize) -> Vec<Value> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
        .await
        .expect("ws connects");
    let sub = json!({"type":"subscribe","id":"a","stream":"alerts","since_seq":since});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .expect("send");
    let mut alerts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alerts.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!(
                "only {} of {want} alerts came (last seq {:?}), then {other:?}",
                alerts.len(),
                alerts.last().map(|a: &Value| a["seq"].clone())
            ),
        };
        let v: Value = serde_json::from_str(&t).expect("json");
        match v["type"].as_str() {
            Some("alert") => alerts.push(v),
            Some("subscribed") => {}
            _ => panic!("unexpected {v}"),
        }
    }
    alerts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_units_fences_rules_memberships_and_the_alert_seq() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut a = Bluelight::serve(&redis.url(), port, &[]);
    let (st, stored_fence) = send_json(
        a.http,
        "PUT",
        "/v1/fences/depot",
        &circle(DEPOT.0, DEPOT.1, 300.0),
    )
    .await;
    assert_eq!(st, 201);
    let rule =
        json!({"type":"proximity","from":{"agency":["ambulance"]},"to":{"agency":["police"]},"radius_m":50});
    assert_eq!(send_json(a.http, "PUT", "/v1/rules/close", &rule).await.0, 201);
    let t0 = now_ms() - 60_000;
    let (st, r) = post(a.http, vec![fix("AMB-1", DEPOT.0, DEPOT.1, t0)]).await;
    assert_eq!((st, r["accepted"].as_u64()), (200, Some(1)), "{r}");
    a.kill();

    let b = Bluelight::serve(&redis.url(), port, &[]);
    let (st, unit) = get_json(b.http, "/v1/units/AMB-1").await;
    assert_eq!(st, 200, "the unit survived: {unit}");
    assert_eq!(unit["properties"]["time_ms"], json!(t0));
    assert_eq!(
        get_json(b.http, "/v1/fences/depot").await.1,
        stored_fence,
        "the fence as stored"
    );
    let (_, rules) = get_json(b.http, "/v1/rules").await;
    assert_eq!(rules["rules"][0]["id"], "close", "{rules}");
    // Still inside: a member, so no second enter; then out: exit, seq 2.
    assert_eq!(
        post(b.http, vec![fix("AMB-1", DEPOT.0 + 0.001, DEPOT.1, t0 + 1000)])
            .await
            .0,
        200
    );
    assert_eq!(
        post(b.http, vec![fix("AMB-1", DEPOT.0 + 0.02, DEPOT.1, t0 + 30_000)])
            .await
            .0,
        200
    );
    until_stream_len(&redis, "bluelight:alerts", 2).await;
    let alerts = stream_alerts(&redis, "bluelight:alerts");
    assert_eq!(
        alerts,
        vec![
            (1, "enter".into(), "AMB-1".into(), "depot".into()),
            (2, "exit".into(), "AMB-1".into(), "depot".into()),
        ]
    );
    // A client resuming from 0 gets the enter from before the restart
    // (from the stream) and the exit after it, once each.
    let got = ws_alerts(b.http, 0, 2).await;
    let seqs: Vec<u64> = got.iter().filter_map(|a| a["seq"].as_u64()).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert!(
        got[0].get("sub").is_some(),
        "a resumed alert is addressed to its subscription: {}",
        got[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_writes_a_snapshot_and_trims_the_journal() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut a = Bluelight::serve(&redis.url(), port, &[]);
    let t0 = now_ms() - 60_000;
    let fixes: Vec<Value> = (0..500)
        .map(|i| fix(&format!("U{i}"), 53.0 + f64::from(i) * 0.001, -1.0, t0))
        .collect();
    assert_eq!(post(a.http, fixes).await.0, 200);
    a.terminate();
    let mut c = redis.conn();
    let next: u64 = c
        .hget("bluelight:snapshot", "next")
        .expect("a snapshot was written");
    let journal: StreamRangeReply = c.xrange_all("bluelight:journal").expect("xrange");
    assert!(
        journal
            .ids
            .iter()
            .all(|e| e.id.split('-').next().and_then(|n| n.parse::<u64>().ok()) >= Some(next)),
        "the journal before the snapshot is trimmed"
    );
    let staged: bool = c.exists("bluelight:snapshot:staging").expect("exists");
    assert!(!staged, "the staged bytes were put in place");
    // The layout of before (the engine's bytes in the hash) is still read;
    // and a history segment no snapshot lists (its leader died before
    // listing it) is deleted when a leader starts.
    let bytes: Vec<u8> = c.get("bluelight:snapshot:engine").expect("the snapshot's bytes");
    let _: () = c.hset("bluelight:snapshot", "engine", bytes).expect("hset");
    let _: () = c.del("bluelight:snapshot:engine").expect("del");
    let _: () = c.set("bluelight:history:999", "orphan").expect("set");
    let b = Bluelight::serve(&redis.url(), port, &[]);
    let (_, h) = get_json(b.http, "/healthz").await;
    assert_eq!(h["units"], 500, "{h}");
    // The stage cleans up as it starts, beside serving: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.exists::<_, bool>("bluelight:history:999").expect("exists") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let orphan: bool = c.exists("bluelight:history:999").expect("exists");
    assert!(!orphan, "the unlisted segment is deleted");
    assert_eq!(h["redis"], "ok");
    assert_eq!(h["role"], "leader");
}

/// Every fix in history as (unit, time), from a GeoJSON export.
async fn history(addr: SocketAddr, from_ms: i64) -> Vec<(String, i64)> {
    let (st, fc) = get_json(addr, &format!("/v1/export?from_ms={from_ms}&to_ms={}", now_ms())).await;
    assert_eq!(st, 200, "{fc}");
    let mut got: Vec<(String, i64)> = fc["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| {
            let p = &f["properties"];
            (
                p["id"].as_str().unwrap_or("").to_owned(),
                p["time_ms"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_restarts_from_snapshot_segments_and_the_journal() {
    let redis = RedisServer::start();
    let port = free_port();
    let t0 = now_ms() - 1_200_000;
    // Five units, ten fixes each a minute apart: history across buckets.
    let batch = |from: i64, n: i64| -> Vec<Value> {
        (0..5)
            .flat_map(|u| {
                (from..from + n)
                    .map(move |i| fix(&format!("H{u}"), 53.0 + i as f64 * 1e-4, -1.0, t0 + i * 60_000))
            })
            .collect()
    };
    let mut want: Vec<(String, i64)> = (0..5)
        .flat_map(|u| (0..16).map(move |i| (format!("H{u}"), t0 + i * 60_000)))
        .collect();
    want.sort();
    let mut a = Bluelight::serve(&redis.url(), port, &[]);
    assert_eq!(post(a.http, batch(0, 10)).await.0, 200);
    // A graceful stop: the snapshot's history segment holds the 50.
    a.terminate();
    let mut c = redis.conn();
    let list: String = c.hget("bluelight:snapshot", "history").expect("a segment list");
    let first: Vec<&str> = list.split(',').collect();
    assert_eq!(first.len(), 1, "{list}");
    assert!(first[0].contains(":50:"), "{list}");
    // Six more a unit, then SIGKILL: those are only in the journal.
    let mut b = Bluelight::serve(&redis.url(), port, &[]);
    assert_eq!(history(b.http, t0).await.len(), 50);
    assert_eq!(post(b.http, batch(10, 6)).await.0, 200);
    b.kill();
    let mut c2 = Bluelight::serve(&redis.url(), port, &[]);
    assert_eq!(history(c2.http, t0).await, want, "segment, then journal");
    // Its snapshot adds a segment of the 30 it replayed: no fix twice.
    c2.terminate();
    let list: String = c.hget("bluelight:snapshot", "history").expect("a segment list");
    assert_eq!(list.split(',').count(), 2, "{list}");
    let d = Bluelight::serve(&redis.url(), port, &[]);
    assert_eq!(history(d.http, t0).await, want, "two segments");
    // A damaged segment costs its fixes, not the start: the state is whole.
    drop(d);
    let id = list
        .split(',')
        .next()
        .and_then(|s| s.split(':').next())
        .expect("an id");
    let _: () = c.set(format!("bluelight:history:{id}"), "damaged").expect("set");
    // With a cap of 30 fixes, the newer segment alone fills history: the
    // next snapshot lists it alone and deletes the older one.
    let cfg = std::env::temp_dir().join(format!("bluelight-history-{}.toml", std::process::id()));
    std::fs::write(&cfg, "history_max_fixes = 30\n").expect("config");
    let cfg = cfg.to_string_lossy().into_owned();
    let mut e = Bluelight::serve(&redis.url(), port, &["--config", &cfg]);
    assert_eq!(history(e.http, t0).await.len(), 30, "the other segment's");
    let (_, h) = get_json(e.http, "/healthz").await;
    assert_eq!(h["units"], 5, "{h}");
    e.terminate();
    let last: String = c.hget("bluelight:snapshot", "history").expect("a segment list");
    assert_eq!(last.split(',').count(), 1, "{last}");
    let exists: bool = c.exists(format!("bluelight:history:{id}")).expect("exists");
    assert!(!exists, "the dropped segment is deleted");
    // Durable history turned off: the next snapshot lists none and
    // deletes what there was.
    let mut f = Bluelight::serve(&redis.url(), port, &["--durable-history", "false"]);
    f.terminate();
    let list: String = c.hget("bluelight:snapshot", "history").expect("a segment list");
    assert_eq!(list, "");
    let left: Vec<String> = c.keys("bluelight:history:*").expect("keys");
    assert!(left.is_empty(), "{left:?}");
}

/// Units walking across four fences; each round sends until a SIGKILL at a
/// random moment, then restarts. What the server acknowledged must all be
/// there, and the alerts stream must read like one uninterrupted server:
/// `seq` 1..N with no hole, and per unit and fence enter and exit in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_at_random_moments_lose_no_acknowledged_fix_and_no_alert() {
    let redis = RedisServer::start();
    let port = free_port();
    let fences = [(53.80, -1.50), (53.81, -1.50), (53.80, -1.48), (53.81, -1.48)];
    {
        let s = Bluelight::serve(&redis.url(), port, &[]);
        for (i, &(lat, lon)) in fences.iter().enumerate() {
            let (st, _) = send_json(
                s.http,
                "PUT",
                &format!("/v1/fences/f{i}"),
                &circle(lat, lon, 500.0),
            )
            .await;
            assert_eq!(st, 201);
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let units = 40;
    let mut pos: Vec<(f64, f64)> = (0..units).map(|_| (53.805, -1.49)).collect();
    // Inside history's hour, with room for every step of every round.
    let mut t = now_ms() - 3_500_000;
    // Per unit: the latest acknowledged fix's time.
    let mut acked: HashMap<String, i64> = HashMap::new();
    for round in 0..20 {
        let mut s = Bluelight::serve(&redis.url(), port, &[]);
        for (id, &at) in &acked {
            let (st, u) = get_json(s.http, &format!("/v1/units/{id}")).await;
            assert_eq!(st, 200, "round {round}: {id} lost");
            let have = u["properties"]["time_ms"].as_i64().unwrap_or(0);
            assert!(have >= at, "round {round}: {id} is at {have}, acknowledged {at}");
        }
        let kill_at = Instant::now() + Duration::from_millis(rng.random_range(50..400));
        let http = s.http;
        while Instant::now() < kill_at {
            t += 250;
            let mut batch = Vec::new();
            let mut last = HashMap::new();
            for (u, p) in pos.iter_mut().enumerate() {
                if rng.random_range(0..3) == 0 {
                    // At most about 30 m/s: well under the implied-speed limit.
                    p.0 = (p.0 + rng.random_range(-0.00005..0.00005)).clamp(53.79, 53.82);
                    p.1 = (p.1 + rng.random_range(-0.00008..0.00008)).clamp(-1.52, -1.46);
                    let id = format!("W{u}");
                    batch.push(fix(&id, p.0, p.1, t));
                    last.insert(id, t);
                }
            }
            let sent = tokio::spawn(async move { post(http, batch).await });
            // A kill while a request is on its way leaves its outcome
            // unknown: it is neither counted acknowledged nor required.
            let remaining = kill_at.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, sent).await {
                Ok(Ok((200, r))) if r["rejected"] == 0 => acked.extend(last),
                Ok(Ok((st, r))) => panic!("round {round}: a fix was refused ({st}): {r}"),
                _ => break,
            }
        }
        s.kill();
    }
    let s = Bluelight::serve(&redis.url(), port, &[]);
    let mut inside: BTreeMap<(String, String), bool> = BTreeMap::new();
    for (id, &at) in &acked {
        let (_, u) = get_json(s.http, &format!("/v1/units/{id}")).await;
        assert!(
            u["properties"]["time_ms"].as_i64().unwrap_or(0) >= at,
            "{id} after the last restart"
        );
        let (lat, lon) = (
            u["properties"]["lat"].as_f64().expect("lat"),
            u["properties"]["lon"].as_f64().expect("lon"),
        );
        for (i, &(flat, flon)) in fences.iter().enumerate() {
            let d = haversine_m(lat, lon, flat, flon);
            // Units within a metre of a boundary are left out of the check.
            if (d - 500.0).abs() > 1.0 {
                inside.insert((id.clone(), format!("f{i}")), d < 500.0);
            }
        }
    }
    assert!(
        acked.len() >= units / 2,
        "enough units were acknowledged to mean something: {}",
        acked.len()
    );
    // The outbox of the last start appends what replay made; wait for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alerts = stream_alerts(&redis, "bluelight:alerts");
    assert!(
        alerts.len() > 20,
        "the walk crossed fences: {} alerts",
        alerts.len()
    );
    for (i, a) in alerts.iter().enumerate() {
        assert_eq!(
            a.0,
            i as u64 + 1,
            "seq has no hole and no repeat: {:?}",
            &alerts[i.saturating_sub(2)..=i]
        );
    }
    let mut state: BTreeMap<(String, String), bool> = BTreeMap::new();
    // Fixes an hour old make their units stale by the server's clock:
    // stale and fresh come and go, and are checked by `seq` alone.
    for (seq, event, unit, fence) in alerts.iter().filter(|a| a.1 == "enter" || a.1 == "exit") {
        let was = state
            .insert((unit.clone(), fence.clone()), event == "enter")
            .unwrap_or(false);
        match event.as_str() {
            "enter" => assert!(!was, "seq {seq}: {unit} entered {fence} twice"),
            "exit" => assert!(was, "seq {seq}: {unit} left {fence} without entering"),
            other => panic!("seq {seq}: unexpected {other}"),
        }
    }
    for (key, is_inside) in &inside {
        assert_eq!(
            state.get(key).copied().unwrap_or(false),
            *is_inside,
            "{key:?}: the alerts say one thing, the position another"
        );
    }
}

fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * a.sqrt().asin()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_reads_every_alert_once_across_a_restart() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut c = redis.conn();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("bluelight:alerts")
        .arg("cad")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut c)
        .expect("group");
    let t0 = now_ms() - 600_000;
    let mut a = Bluelight::serve(&redis.url(), port, &[]);
    assert_eq!(
        send_json(
            a.http,
            "PUT",
            "/v1/fences/depot",
            &circle(DEPOT.0, DEPOT.1, 300.0)
        )
        .await
        .0,
        201
    );
    let inside: Vec<Value> = (0..30)
        .map(|i| fix(&format!("A{i}"), DEPOT.0, DEPOT.1, t0))
        .collect();
    assert_eq!(post(a.http, inside).await.0, 200);
    a.kill();
    let b = Bluelight::serve(&redis.url(), port, &[]);
    let outside: Vec<Value> = (0..30)
        .map(|i| fix(&format!("A{i}"), DEPOT.0 + 0.05, DEPOT.1, t0 + 600_000))
        .collect();
    assert_eq!(post(b.http, outside).await.0, 200);
    until_stream_len(&redis, "bluelight:alerts", 60).await;
    // A CAD system: read as a group member, acknowledge what it handled.
    let mut seen = Vec::new();
    let opts = StreamReadOptions::default().group("cad", "desk-1").count(16);
    loop {
        let r: StreamReadReply = c
            .xread_options(&["bluelight:alerts"], &[">"], &opts)
            .expect("xreadgroup");
        let ids: Vec<_> = r.keys.iter().flat_map(|k| k.ids.iter()).collect();
        if ids.is_empty() {
            break;
        }
        for e in ids {
            seen.push(e.get::<u64>("seq").expect("seq"));
            let _: u64 = c.xack("bluelight:alerts", "cad", &[&e.id]).expect("xack");
        }
    }
    assert_eq!(seen, (1..=60).collect::<Vec<u64>>());
    let pending: redis::streams::StreamPendingReply =
        c.xpending("bluelight:alerts", "cad").expect("xpending");
    assert_eq!(pending.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_never_acknowledges_falsely() {
    let mut redis = RedisServer::start();
    let redis_port = redis.port;
    let port = free_port();
    let cfg = std::env::temp_dir().join(format!("bluelight-ack-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[tuning]\njournal_ack_timeout_ms = 500\n").expect("config");
    let cfg = cfg.to_string_lossy().into_owned();
    let mut s = Bluelight::serve(&redis.url(), port, &["--config", &cfg]);
    let t0 = now_ms() - 600_000;
    let mut acked: HashMap<String, i64> = HashMap::new();
    let mut refused = 0;
    let mut t = t0;
    let send = |s: SocketAddr, t: i64, n: usize| async move {
        let fixes: Vec<Value> = (0..n)
            .map(|i| fix(&format!("R{i}"), 53.0 + i as f64 * 0.001, -1.0, t))
            .collect();
        post(s, fixes).await
    };
    for _ in 0..5 {
        t += 1000;
        let (st, _) = send(s.http, t, 20).await;
        assert_eq!(st, 200);
        (0..20).for_each(|i| {
            acked.insert(format!("R{i}"), t);
        });
    }
    redis.kill();
    for _ in 0..4 {
        t += 1000;
        let (st, r) = send(s.http, t, 20).await;
        match st {
            200 => (0..20).for_each(|i| {
                acked.insert(format!("R{i}"), t);
            }),
            503 => {
                refused += 1;
                assert!(r["error"].as_str().unwrap_or("").contains("journaled"), "{r}");
            }
            other => panic!("unexpected {other}: {r}"),
        }
    }
    assert!(
        refused > 0,
        "with Redis gone, an acknowledged write is refused, not acknowledged"
    );
    let (_, h) = get_json(s.http, "/healthz").await;
    assert_eq!(h["redis"], "down", "{h}");
    assert_eq!(h["units"], 20, "the server kept serving from memory: {h}");
    // Redis comes back empty (no persistence): the catch-up snapshot holds
    // everything the server has.
    let _redis2 = RedisServer::start_on(redis_port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, h) = get_json(s.http, "/healthz").await;
        if h["redis"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "the journal did not catch up: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t += 1000;
    let (st, _) = send(s.http, t, 25).await;
    assert_eq!(st, 200, "acknowledged again once Redis is back");
    (0..25).for_each(|i| {
        acked.insert(format!("R{i}"), t);
    });
    s.kill();
    let s = Bluelight::serve(&_redis2.url(), port, &["--config", &cfg]);
    for (id, &at) in &acked {
        let (st, u) = get_json(s.http, &format!("/v1/units/{id}")).await;
        assert_eq!(st, 200, "{id} lost");
        assert!(
            u["properties"]["time_ms"].as_i64().unwrap_or(0) >= at,
            "{id}: {u}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_ingest_acknowledges_each_frame_in_order_once_journaled() {
    let redis = RedisServer::start();
    let s = Bluelight::serve(&redis.url(), free_port(), &[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ingest?ack=1", s.http))
        .await
        .expect("ws connects");
    let t = now_ms() - 1000;
    let good = |id: &str| {
        json!({"fixes":[fix(id, 53.0, -1.0, t), fix(&format!("{id}-b"), 53.0, -1.0, t)]}).to_string()
    };
    for frame in [good("a"), "{not json".to_owned(), good("c")] {
        ws.send(Message::Text(frame.into())).await.expect("send");
    }
    let mut replies = Vec::new();
    while replies.len() < 3 {
        let Ok(Some(Ok(Message::Text(m)))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        else {
            panic!("replies so far: {replies:?}");
        };
        replies.push(serde_json::from_str::<Value>(&m).expect("json"));
    }
    assert_eq!(
        replies[0],
        json!({"type":"ack","frame":1,"accepted":2,"rejected":0})
    );
    assert_eq!(
        (replies[1]["type"].as_str(), replies[1]["id"].as_u64()),
        (Some("error"), Some(2)),
        "{}",
        replies[1]
    );
    assert_eq!(
        replies[2],
        json!({"type":"ack","frame":3,"accepted":2,"rejected":0})
    );
    // Acknowledged means journaled: the journal holds both units' fixes.
    let entries: usize = redis.conn().xlen("bluelight:journal").expect("xlen");
    assert!(entries >= 2, "{entries}");
}

/// The units a server holds, by id, as (time_ms, lat, lon).
async fn units(addr: SocketAddr) -> BTreeMap<String, (i64, f64, f64)> {
    let (_, fc) = get_json(addr, "/v1/units").await;
    fc["features"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    let p = &f["properties"];
                    (
                        p["id"].as_str().unwrap_or("").to_owned(),
                        (
                            p["time_ms"].as_i64().unwrap_or(0),
                            p["lat"].as_f64().unwrap_or(0.0),
                            p["lon"].as_f64().unwrap_or(0.0),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `follower` holds what `leader` holds.
async fn until_converged(leader: SocketAddr, follower: SocketAddr) -> BTreeMap<String, (i64, f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (l, f) = (units(leader).await, units(follower).await);
        if l == f && !l.is_empty() {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not converge: leader {} units, follower {}",
            l.len(),
            f.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_converges_to_the_leader_serves_reads_and_feeds_and_refuses_writes() {
    let redis = RedisServer::start();
    let leader = Bluelight::serve(&redis.url(), free_port(), &[]);
    assert_eq!(
        send_json(
            leader.http,
            "PUT",
            "/v1/fences/depot",
            &circle(DEPOT.0, DEPOT.1, 300.0)
        )
        .await
        .0,
        201
    );
    let t0 = now_ms() - 60_000;
    let before: Vec<Value> = (0..50)
        .map(|i| fix(&format!("B{i}"), DEPOT.0, DEPOT.1 + f64::from(i) * 0.00005, t0))
        .collect();
    assert_eq!(post(leader.http, before).await.0, 200);
    // A follower started after the leader has history: snapshot (none
    // yet) and journal, then the tail.
    let follower = Bluelight::follow(&redis.url(), free_port(), &[]);
    let after: Vec<Value> = (0..50)
        .map(|i| fix(&format!("B{i}"), DEPOT.0 + 0.05, DEPOT.1, t0 + 60_000))
        .collect();
    assert_eq!(post(leader.http, after).await.0, 200);
    let held = until_converged(leader.http, follower.http).await;
    assert_eq!(held.len(), 50);
    let (_, h) = get_json(follower.http, "/healthz").await;
    assert_eq!(
        (h["role"].as_str(), h["redis"].as_str()),
        (Some("follower"), Some("ok")),
        "{h}"
    );
    assert!(h["lag_ms"].as_i64().is_some_and(|l| l < 1000), "{h}");
    assert_eq!(follower.ingest, None, "a follower binds no ingest listener");
    // Writes are the leader's.
    let (st, e) = post(follower.http, vec![fix("X", 53.0, -1.0, t0)]).await;
    assert_eq!(st, 409, "{e}");
    assert!(e["error"].as_str().unwrap_or("").contains("follower"), "{e}");
    assert_eq!(
        send_json(follower.http, "PUT", "/v1/fences/x", &circle(53.0, -1.0, 10.0))
            .await
            .0,
        409
    );
    // The same alerts with the same seq: 50 enters, then 50 exits.
    let got = ws_alerts(follower.http, 0, 100).await;
    let seqs: Vec<u64> = got.iter().filter_map(|a| a["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    until_stream_len(&redis, "bluelight:alerts", 100).await;
    let stream = stream_alerts(&redis, "bluelight:alerts");
    for (a, s) in got.iter().zip(&stream) {
        assert_eq!(
            (a["event"].as_str(), a["unit"]["id"].as_str()),
            (Some(s.1.as_str()), Some(s.2.as_str()))
        );
    }
    // A dispatch map on the follower: a snapshot of the units in view.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", follower.http))
        .await
        .expect("ws");
    let sub =
        json!({"type":"subscribe","id":"p","stream":"positions","area":{"bbox":[-1.6, 53.7, -1.4, 53.9]}});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .expect("send");
    let snapshot = loop {
        let t = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("no snapshot: {other:?}"),
        };
        let v: Value = serde_json::from_str(&t).expect("json");
        if v["type"] == "snapshot" {
            break v;
        }
    };
    assert_eq!(snapshot["units"].as_array().map(Vec::len), Some(50), "{snapshot}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_is_promoted_once_the_killed_leaders_lease_lapses_and_carries_on() {
    let redis = RedisServer::start();
    let cfg = std::env::temp_dir().join(format!("bluelight-lease-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[tuning]\nlease_ms = 1500\n").expect("config");
    let cfg = cfg.to_string_lossy().into_owned();
    let leader_port = free_port();
    let mut leader = Bluelight::serve(&redis.url(), leader_port, &["--config", &cfg]);
    // A TAK Server the picture is pushed to: by the leader only, so by the
    // follower once it is promoted.
    let tak = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let tak_addr = tak.local_addr().expect("addr").to_string();
    let follower = Bluelight::follow(
        &redis.url(),
        free_port(),
        &["--config", &cfg, "--tak-out", &tak_addr],
    );
    assert_eq!(
        send_json(
            leader.http,
            "PUT",
            "/v1/fences/depot",
            &circle(DEPOT.0, DEPOT.1, 300.0)
        )
        .await
        .0,
        201
    );
    let t0 = now_ms() - 60_000;
    let inside: Vec<Value> = (0..20)
        .map(|i| fix(&format!("P{i}"), DEPOT.0, DEPOT.1, t0))
        .collect();
    assert_eq!(post(leader.http, inside).await.0, 200);
    until_converged(leader.http, follower.http).await;
    // While the leader lives, its lease stands.
    let (st, e) = send_json(follower.http, "POST", "/v1/admin/promote", &json!({})).await;
    assert_eq!(st, 409, "{e}");
    assert!(e["error"].as_str().unwrap_or("").contains("lease"), "{e}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), tak.accept())
            .await
            .is_err(),
        "a follower must not push to the TAK Server"
    );
    leader.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    let promoted = loop {
        let (st, v) = send_json(follower.http, "POST", "/v1/admin/promote", &json!({})).await;
        if st == 200 {
            break v;
        }
        assert_eq!(st, 409, "{v}");
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(promoted["role"], "leader", "{promoted}");
    let (_, h) = get_json(follower.http, "/healthz").await;
    assert_eq!(h["role"], "leader", "{h}");
    // It takes writes now, memberships intact: leaving fires exits, seq on.
    let outside: Vec<Value> = (0..20)
        .map(|i| fix(&format!("P{i}"), DEPOT.0 + 0.05, DEPOT.1, t0 + 60_000))
        .collect();
    let (st, r) = post(follower.http, outside).await;
    assert_eq!(st, 200, "{r}");
    until_stream_len(&redis, "bluelight:alerts", 40).await;
    let stream = stream_alerts(&redis, "bluelight:alerts");
    let events: Vec<(u64, &str)> = stream.iter().map(|a| (a.0, a.1.as_str())).collect();
    let want: Vec<(u64, &str)> = (1..=40)
        .map(|s| (s, if s <= 20 { "enter" } else { "exit" }))
        .collect();
    assert_eq!(events, want);
    // Its device listener is bound: a fix over TCP ingest lands.
    let ingest: SocketAddr = promoted["ingest"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("ingest address");
    assert!(
        std::net::TcpStream::connect(ingest).is_ok(),
        "ingest bound at {ingest}"
    );
    // And it pushes the picture to the TAK Server: every unit it holds.
    let (mut pushed, _) = tokio::time::timeout(Duration::from_secs(10), tak.accept())
        .await
        .expect("the promoted follower connects to --tak-out")
        .expect("accept");
    let picture = read_until(&mut pushed, Duration::from_secs(10), |got| {
        (0..20).all(|i| got.contains(&format!("uid=\"P{i}\"")))
    })
    .await;
    assert!(
        (0..20).all(|i| picture.contains(&format!("uid=\"P{i}\""))),
        "{picture}"
    );
    // The old leader, restarted, finds the new one's lease and gives up.
    let mut old = std::process::Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{leader_port}"),
            "--ingest",
            "127.0.0.1:0",
        ])
        .args(["--redis", &redis.url(), "--config", &cfg])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let out = tokio::task::spawn_blocking(move || {
        let status = old.wait().expect("exits");
        let mut err = String::new();
        use std::io::Read as _;
        let _ = old.stderr.take().map(|mut e| e.read_to_string(&mut err));
        (status, err)
    })
    .await
    .expect("join");
    assert!(!out.0.success(), "a second leader must not start");
    assert!(out.1.contains("another server leads"), "{}", out.1);
    // History is whole across the failover: the promoted follower logged
    // nothing while it followed, so its first snapshot writes all of it.
    let mut promoted = follower;
    let port = promoted.http.port();
    promoted.terminate();
    let again = Bluelight::serve(&redis.url(), port, &["--config", &cfg]);
    let kept = history(again.http, t0).await;
    assert_eq!(kept.len(), 40, "{kept:?}");
}

/// Reads `stream` until `done` holds for what came (as text) or `wait`
/// passes; returns what came.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    wait: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    use tokio::io::AsyncReadExt as _;
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !done(&String::from_utf8_lossy(&got)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}
