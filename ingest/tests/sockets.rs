//! Real UDP and TCP sockets on 127.0.0.1: good and bad frames interleaved;
//! exactly the good fixes reach the engine and the counters say why the rest
//! did not.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bluelight_engine::{Engine, EngineConfig, Fix};
use bluelight_ingest::decode::encode_flatbuffers;
use bluelight_ingest::pipeline::{self, PipelineConfig, PipelineHandle};
use bluelight_ingest::transport::{ListenerLimits, bind_ingest, now_ms, serve_tcp, serve_udp};
use bluelight_ingest::validate::Reject;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

struct Server {
    engine: Arc<Mutex<Engine>>,
    pipeline: PipelineHandle,
    addr: SocketAddr,
}

async fn server(cfg: PipelineConfig, limits: ListenerLimits) -> Server {
    let engine = Arc::new(Mutex::new(Engine::new(EngineConfig::default()).expect("config")));
    let (pipeline, _writer) = pipeline::start(engine.clone(), cfg, Box::new(|_, _| {}));
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

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fix(i: u64, t: i64) -> (u64, Fix) {
    (i, Fix::at(t, 50.0 + i as f64 * 0.001, -1.0))
}

#[tokio::test]
async fn tcp_garbage_frame_closes_only_that_connection() {
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
    bad.write_all(&framed(&frame(&[fix(3, t)]))).await.ok();
    good.write_all(&framed(&frame(&[fix(4, t), fix(5, t)])))
        .await
        .expect("write");
    let c = s.pipeline.counters.clone();
    until("the good fixes", || c.accepted() == 4).await;
    until("the bad frame", || c.rejected(Reject::BadFrame) == 1).await;
    let e = s.engine.lock().expect("lock");
    for key in [1, 2, 4, 5] {
        assert!(e.find_unit(&key.to_string()).is_some(), "unit {key}");
    }
    assert!(
        e.find_unit("3").is_none(),
        "nothing after the garbage frame on that connection"
    );
    assert_eq!(
        c.connections_closed_bad_frame
            .load(std::sync::atomic::Ordering::Relaxed),
        1
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
