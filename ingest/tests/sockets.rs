//! Real UDP and TCP sockets on 127.0.0.1: good and bad frames interleaved;
//! exactly the good fixes reach the engine and the counters say why the rest
//! did not.

mod common;
use common::until;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bluelight_engine::{Clock, Engine, EngineConfig, Fix, SharedEngine, SystemClock};
use bluelight_ingest::decode::encode_flatbuffers;
use bluelight_ingest::pipeline::{self, PipelineConfig};
use bluelight_ingest::queue::IngestQueue;
use bluelight_ingest::transport::{ListenerLimits, bind_ingest, serve_tcp, serve_udp};
use bluelight_ingest::writer::Discard;

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

fn start(engine: &SharedEngine, cfg: PipelineConfig) -> IngestQueue {
    pipeline::start(engine.clone(), cfg, Arc::new(SystemClock), Arc::new(Discard))
        .expect("writer")
        .queue
}
use bluelight_ingest::validate::Reject;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

struct Server {
    engine: SharedEngine,
    pipeline: IngestQueue,
    addr: SocketAddr,
}

async fn server(cfg: PipelineConfig, limits: ListenerLimits) -> Server {
    let engine = Arc::new(parking_lot::Mutex::new(
        Engine::new(EngineConfig::default()).expect("config"),
    ));
    let pipeline = start(&engine, cfg);
    let (tcp, udp, addr) = bind_ingest("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    tokio::spawn(serve_tcp(tcp, pipeline.clone(), limits.clone()));
    tokio::spawn(serve_udp(udp, pipeline.clone(), limits));
    Server {
        engine,
        pipeline,
        addr,
    }
}

fn frame(fixes: &[(u64, Fix)]) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    encode_flatbuffers(&mut fbb, "test", fixes, &[]).to_vec()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn fix(i: u64, t: i64) -> (u64, Fix) {
    (i, Fix::at(t, 50.0 + i as f64 * 0.001, -1.0))
}

/// PROTOCOL.md: a malformed frame never takes the connection down with it
/// and never disturbs the fixes around it (it used to close the connection
/// and lose the good frames behind it).
#[tokio::test]
async fn tcp_garbage_frame_is_skipped_and_the_frames_after_it_arrive() {
    let s = server(PipelineConfig::default(), ListenerLimits::default()).await;
    let t = now_ms();
    let mut bad = TcpStream::connect(s.addr).await.expect("connect");
    let mut good = TcpStream::connect(s.addr).await.expect("connect");
    bad.write_all(&framed(&frame(&[fix(1, t)]))).await.expect("write");
    good.write_all(&framed(&frame(&[fix(2, t)])))
        .await
        .expect("write");
    bad.write_all(&framed(b"this is not a flatbuffer at all"))
        .await
        .expect("write");
    bad.write_all(&framed(&frame(&[fix(3, t)])))
        .await
        .expect("the connection is still open");
    good.write_all(&framed(&frame(&[fix(4, t), fix(5, t)])))
        .await
        .expect("write");
    let c = s.pipeline.counters.clone();
    until("the bad frame", || c.rejected(Reject::BadFrame) == 1).await;
    until("the fix after the garbage frame", || c.accepted() == 5).await;
    let e = s.engine.lock();
    for key in [1, 2, 3, 4, 5] {
        assert!(e.find_unit(&key.to_string()).is_some(), "unit {key}");
    }
    assert_eq!(
        c.connections_closed_bad_frame
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the connection stays up"
    );
}

#[tokio::test]
async fn tcp_oversized_frame_is_refused_before_it_is_read() {
    let limits = ListenerLimits {
        max_frame_bytes: 1024,
        ..ListenerLimits::default()
    };
    let s = server(PipelineConfig::default(), limits).await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    conn.write_all(&(1_000_000u32).to_le_bytes())
        .await
        .expect("write");
    let c = s.pipeline.counters.clone();
    until("the oversized frame", || c.rejected(Reject::BadFrame) == 1).await;
    let mut other = TcpStream::connect(s.addr).await.expect("connect");
    other
        .write_all(&framed(&frame(&[fix(9, now_ms())])))
        .await
        .expect("write");
    until("the next connection's fix", || c.accepted() == 1).await;
}

#[tokio::test]
async fn invalid_fixes_inside_a_good_frame_are_counted_by_reason() {
    let s = server(PipelineConfig::default(), ListenerLimits::default()).await;
    let t = now_ms();
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let body = frame(&[
        fix(1, t),
        (2, Fix::at(t, f64::NAN, 1.0)),
        (3, Fix::at(t, 0.0, 0.0)),
        (4, Fix::at(t + 3_600_000, 50.0, 1.0)),
        (5, Fix::at(t - 7_200_000, 50.0, 1.0)),
        (6, Fix::at(t, 120.0, 1.0)),
        fix(7, t),
        fix(7, t),
        (7, Fix::at(t + 1000, 10.0, 1.0)),
    ]);
    conn.write_all(&framed(&body)).await.expect("write");
    let c = s.pipeline.counters.clone();
    until("the batch", || {
        c.accepted() == 2 && c.rejected(Reject::SpeedJump) == 1
    })
    .await;
    for (r, n) in [
        (Reject::NotFinite, 1),
        (Reject::NullIsland, 1),
        (Reject::Future, 1),
        (Reject::TooOld, 1),
        (Reject::OutOfRange, 1),
        (Reject::Duplicate, 1),
        (Reject::SpeedJump, 1),
    ] {
        assert_eq!(c.rejected(r), n, "{}", r.as_str());
    }
}

#[tokio::test]
async fn udp_bad_datagrams_are_dropped_alone_and_counted() {
    let s = server(PipelineConfig::default(), ListenerLimits::default()).await;
    let t = now_ms();
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&frame(&[fix(1, t)]), s.addr).await.expect("send");
    sock.send_to(b"abc", s.addr).await.expect("send");
    let mut wrong_id = frame(&[fix(2, t)]);
    wrong_id[4..8].copy_from_slice(b"NOPE");
    sock.send_to(&wrong_id, s.addr).await.expect("send");
    sock.send_to(&frame(&[fix(3, t), fix(4, t)]), s.addr)
        .await
        .expect("send");
    let c = s.pipeline.counters.clone();
    until("good datagrams", || c.accepted() == 3).await;
    until("bad datagrams", || c.rejected(Reject::BadFrame) == 2).await;
}

#[tokio::test]
async fn a_full_queue_slows_tcp_senders_and_loses_nothing() {
    let cfg = PipelineConfig {
        queue_batches: 1,
        ..PipelineConfig::default()
    };
    let s = server(cfg, ListenerLimits::default()).await;
    let t = now_ms();
    let mut senders = Vec::new();
    for c in 0..4u64 {
        let addr = s.addr;
        senders.push(tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            for b in 0..200u64 {
                let fixes: Vec<(u64, Fix)> = (0..50)
                    .map(|i| {
                        (
                            c * 1000 + i,
                            Fix::at(t + b as i64 * 100, 50.0, -1.0 + i as f64 * 1e-4),
                        )
                    })
                    .collect();
                conn.write_all(&framed(&frame(&fixes))).await.expect("write");
            }
        }));
    }
    for h in senders {
        h.await.expect("sender");
    }
    let c = s.pipeline.counters.clone();
    until("every fix", || c.accepted() == 4 * 200 * 50).await;
    assert_eq!(c.udp_dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn cot_events_from_tak_clients_arrive_and_a_bad_event_is_skipped() {
    let engine = Arc::new(parking_lot::Mutex::new(
        Engine::new(EngineConfig::default()).expect("config"),
    ));
    let pipeline = start(&engine, PipelineConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(bluelight_ingest::transport::serve_cot_tcp(
        listener,
        pipeline.clone(),
        ListenerLimits::default(),
        None,
    ));
    let iso = |ms: i64| {
        let mut t = String::new();
        bluelight_ingest::cot::format_rfc3339_ms(ms, &mut t);
        t
    };
    let t = iso(now_ms());
    let atak = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><event version="2.0" uid="ANDROID-1" type="a-f-G-U-C" how="m-g" time="{t}" start="{t}" stale="{t}"><point lat="51.5074" lon="-0.1278" hae="35.2" ce="9.9" le="9999999.0"/><detail><contact callsign="ALPHA-1"/><track course="270.5" speed="12.3"/></detail></event>"#
    );
    let broken = r#"<event uid="BROKEN" time="nonsense"><point lat="1" lon="2"/></event>"#;
    let wintak = format!(
        r#"<event version="2.0" uid="WINTAK-7" type="a-f-G-E-V-A" how="h-e" time="{t}" start="{t}" stale="{t}"><point lat="50.9097" lon="-1.4044" hae="9999999.0" ce="9999999.0" le="9999999.0"/><detail/></event>"#
    );
    // A marker dropped on the map and a chat message: not units.
    let marker = format!(
        r#"<event version="2.0" uid="9f1c-marker" type="b-m-p-s-m" how="h-g-i-g-o" time="{t}" start="{t}" stale="{t}"><point lat="51.5" lon="-0.12" hae="0" ce="9999999" le="9999999"/><detail><contact callsign="RV point"/></detail></event>"#
    );
    let chat = format!(
        r#"<event version="2.0" uid="GeoChat.ANDROID-1.All Chat Rooms.5a1e" type="b-t-f" how="h-g-i-g-o" time="{t}" start="{t}" stale="{t}"><point lat="51.5" lon="-0.12" hae="0" ce="9999999" le="9999999"/><detail><remarks>on scene</remarks></detail></event>"#
    );
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    // Split mid-event across writes, as a real stream may be.
    let stream = format!("{atak}{marker}{broken}{chat}{wintak}");
    let (a, b) = stream.split_at(stream.len() / 2);
    conn.write_all(a.as_bytes()).await.expect("write");
    conn.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(20)).await;
    conn.write_all(b.as_bytes()).await.expect("write");
    let c = pipeline.counters.clone();
    until("both TAK fixes", || c.accepted() == 2).await;
    until("the broken event", || c.rejected(Reject::BadFrame) == 1).await;
    assert_eq!(
        c.ignored.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the marker and the chat"
    );
    let e = engine.lock();
    assert!(e.find_unit("9f1c-marker").is_none(), "a map marker is not a unit");
    let view = e
        .find_unit("ANDROID-1")
        .and_then(|s| e.unit_view(s))
        .expect("unit");
    assert_eq!(view.kind.as_deref(), Some("a-f-G-U-C"));
    assert_eq!(view.fix.map(|f| (f.lat, f.lon)), Some((51.5074, -0.1278)));
    assert!(e.find_unit("WINTAK-7").is_some());
}
