//! The device listeners over real sockets on 127.0.0.1: NMEA 0183 over
//! TCP and UDP, TETRA LIP and Cursor-on-Target over UDP. Good and bad input
//! interleaved; exactly the good fixes reach the engine, and the counters
//! name why the rest did not.

mod common;
use common::until;

use std::net::SocketAddr;
use std::sync::Arc;

use bluelight_engine::{Clock, Engine, EngineConfig, SharedEngine, Status, SystemClock};
use bluelight_ingest::calendar::{DAY_MS, civil_from_days};
use bluelight_ingest::lip::{PduWriter, REASON_EMERGENCY, ShortCodes};
use bluelight_ingest::nmea::with_checksum;
use bluelight_ingest::pipeline::{self, PipelineConfig};
use bluelight_ingest::queue::IngestQueue;
use bluelight_ingest::transport::{self, ListenerLimits};
use bluelight_ingest::validate::Reject;
use bluelight_ingest::writer::Discard;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

fn engine() -> SharedEngine {
    Arc::new(parking_lot::Mutex::new(
        Engine::new(EngineConfig::default()).expect("config"),
    ))
}

fn queue(engine: &SharedEngine) -> IngestQueue {
    pipeline::start(
        engine.clone(),
        PipelineConfig::default(),
        Arc::new(SystemClock),
        Arc::new(Discard),
    )
    .expect("writer")
    .queue
}

/// Serves a UDP device listener on a free port; its address.
fn udp_listener<F, Fut>(q: &IngestQueue, serve: F) -> SocketAddr
where
    F: FnOnce(UdpSocket, IngestQueue, ListenerLimits) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (socket, _) = transport::bind_udp(local()).expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(serve(socket, q.clone(), ListenerLimits::default()));
    addr
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// `hhmmss.ss` and `ddmmyy` of a time.
fn nmea_time(t: i64) -> (String, String) {
    let (y, mo, d) = civil_from_days(t.div_euclid(DAY_MS));
    let ms = t.rem_euclid(DAY_MS);
    let (h, mi, s, cs) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000 / 10);
    (
        format!("{h:02}{mi:02}{s:02}.{cs:02}"),
        format!("{d:02}{mo:02}{:02}", y % 100),
    )
}

fn rmc(t: i64, lat_min: f64) -> String {
    let (time, date) = nmea_time(t);
    with_checksum(&format!(
        "$GNRMC,{time},A,53{lat_min:07.4},N,00132.0000,W,12.0,45.0,{date},,,A"
    ))
}

fn gga(t: i64, lat_min: f64, hdop: f64) -> String {
    let (time, _) = nmea_time(t);
    with_checksum(&format!(
        "$GPGGA,{time},53{lat_min:07.4},N,00132.0000,W,1,09,{hdop:.1},120.0,M,48.0,M,,"
    ))
}

fn position(e: &SharedEngine, id: &str) -> Option<(f64, f64, f32, f32)> {
    let e = e.lock();
    let v = e.find_unit(id).and_then(|s| e.unit_view(s))?;
    v.fix.map(|f| (f.lat, f.lon, f.accuracy_m, f.speed_mps))
}

#[tokio::test]
async fn nmea_tcp_takes_split_lines_any_ending_and_garbage_between() {
    let e = engine();
    let q = queue(&e);
    let listener = TcpListener::bind(local()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(transport::serve_nmea_tcp(
        listener,
        q.clone(),
        ListenerLimits::default(),
    ));
    let t = now_ms() / 1000 * 1000 - 2000;
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let stream = [
        rmc(t - 1000, 48.0), // before $PBLU: no_unit
        with_checksum("$PBLU,ID,RRV-7"),
        "binary garbage \u{1}\u{2}\r\n".to_owned(),  // bad_frame
        rmc(t, 48.0).replace("\r\n", "\n"),          // LF only; alone (no GGA seen yet)
        gga(t, 48.0, 0.8),                           // its late half: dropped
        with_checksum("$GPGSV,1,1,01,03,03,111,00"), // ignored
        rmc(t + 1000, 48.5).replace("*", "*0"),      // a damaged checksum field: bad_frame
        "$GNRMC,000000.00,A,5300.0000,N,00100.0000,W,0,0,010125,,,A*00\r\n".to_owned(), // bad_checksum
        with_checksum("$GNRMC,000000.00,V,,,,,,,010125,,,N"), // no_fix
        rmc(t + 1000, 48.001),
        gga(t + 1000, 48.001, 1.2), // merged with the RMC before it
    ]
    .concat();
    // Written in small pieces, cutting lines anywhere.
    for piece in stream.as_bytes().chunks(7) {
        conn.write_all(piece).await.expect("write");
        conn.flush().await.expect("flush");
    }
    let c = q.counters.clone();
    until("two fixes", || c.accepted() == 2).await;
    until("the refusals", || {
        c.rejected(Reject::NoUnit) == 1
            && c.rejected(Reject::BadFrame) == 2
            && c.rejected(Reject::BadChecksum) == 1
            && c.rejected(Reject::NoFix) == 1
    })
    .await;
    assert_eq!(c.ignored.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(c.rejected(Reject::Duplicate), 0, "a pair is one fix");
    let (lat, lon, accuracy, speed) = position(&e, "RRV-7").expect("unit");
    assert!((lat - (53.0 + 48.001 / 60.0)).abs() < 1e-9, "{lat}");
    assert!((lon + (1.0 + 32.0 / 60.0)).abs() < 1e-9, "{lon}");
    assert_eq!(accuracy, 1.2 * 5.0, "the GGA's HDOP");
    assert!(
        (speed - 12.0 * 1852.0 / 3600.0).abs() < 0.01,
        "the RMC's knots: {speed}"
    );
    // A lone RMC after both kinds were seen goes within the pair wait.
    conn.write_all(rmc(t + 2000, 48.002).as_bytes())
        .await
        .expect("write");
    until("the lone RMC", || c.accepted() == 3).await;
}

#[tokio::test]
async fn nmea_udp_names_its_unit_per_datagram() {
    let e = engine();
    let q = queue(&e);
    let addr = udp_listener(&q, transport::serve_nmea_udp);
    let t = now_ms() / 1000 * 1000 - 1000;
    let tx = UdpSocket::bind(local()).await.expect("bind");
    let good = [with_checksum("$PBLU,ID,BOAT-3"), rmc(t, 10.0), gga(t, 10.0, 2.0)].concat();
    tx.send_to(good.as_bytes(), addr).await.expect("send");
    // Without $PBLU: refused, even from the same sender.
    tx.send_to(rmc(t + 1000, 11.0).as_bytes(), addr)
        .await
        .expect("send");
    let c = q.counters.clone();
    until("the datagrams", || {
        c.accepted() == 1 && c.rejected(Reject::NoUnit) == 1
    })
    .await;
    let (lat, ..) = position(&e, "BOAT-3").expect("unit");
    assert!((lat - (53.0 + 10.0 / 60.0)).abs() < 1e-9);
}

#[tokio::test]
async fn lip_udp_reports_move_the_unit_of_their_issi() {
    let e = engine();
    let q = queue(&e);
    let addr = udp_listener(&q, transport::serve_lip_udp);
    // The ISSI's unit has a human id, as a UnitInfo would give it.
    e.lock().register_key(2_001_234, "POL-1234");
    let tx = UdpSocket::bind(local()).await.expect("bind");
    let mut short = PduWriter::for_issi(2_001_234);
    short.short_report(
        51.4816,
        -3.1791,
        ShortCodes {
            time_elapsed: 0,
            position_error: 1,
            velocity: 20,
            direction: 4,
            reason: REASON_EMERGENCY,
        },
    );
    let mut cut = short.bytes().to_vec();
    cut.truncate(6);
    let mut ack = PduWriter::for_issi(2_001_234);
    ack.put(1, 2).put(4, 4).put(0, 10);
    for d in [&cut[..], ack.bytes(), short.bytes()] {
        tx.send_to(d, addr).await.expect("send");
    }
    let c = q.counters.clone();
    until("the report", || c.accepted() == 1).await;
    until("the refusals", || {
        c.rejected(Reject::BadFrame) == 1 && c.ignored.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    let e = e.lock();
    let view = e
        .find_unit("POL-1234")
        .and_then(|s| e.unit_view(s))
        .expect("unit");
    let fix = view.fix.expect("fix");
    assert!((fix.lat - 51.4816).abs() < 1e-5 && (fix.lon + 3.1791).abs() < 1e-5);
    assert_eq!(view.status, Status::Emergency, "reason for sending: emergency");
    assert_eq!(fix.heading_deg, 90.0);
}

#[tokio::test]
async fn cot_udp_takes_one_event_a_datagram() {
    let e = engine();
    let q = queue(&e);
    let addr = udp_listener(&q, transport::serve_cot_udp);
    let mut t = String::new();
    bluelight_ingest::cot::format_rfc3339_ms(now_ms(), &mut t);
    let event = format!(
        r#"<event version="2.0" uid="ANDROID-9" type="a-f-G-U-C" how="m-g" time="{t}" start="{t}" stale="{t}"><point lat="51.5" lon="-0.12" hae="0" ce="5" le="9999999"/></event>"#
    );
    let tx = UdpSocket::bind(local()).await.expect("bind");
    tx.send_to(b"<event uid=", addr).await.expect("send");
    tx.send_to(event.as_bytes(), addr).await.expect("send");
    let c = q.counters.clone();
    until("the event", || {
        c.accepted() == 1 && c.rejected(Reject::BadFrame) == 1
    })
    .await;
    assert!(position(&e, "ANDROID-9").is_some());
}

/// A burst of single-fix datagrams larger than the queue is held and
/// coalesced, not dropped (at 100k LIP datagrams a second, 5% were lost
/// before: one batch a datagram filled the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lip_burst_beyond_the_queue_is_held_not_dropped() {
    let e = engine();
    let q = pipeline::start(
        e.clone(),
        PipelineConfig {
            queue_batches: 1,
            ..PipelineConfig::default()
        },
        Arc::new(SystemClock),
        Arc::new(Discard),
    )
    .expect("writer")
    .queue;
    let addr = udp_listener(&q, transport::serve_lip_udp);
    let tx = UdpSocket::bind(local()).await.expect("bind");
    let n = 5_000u32;
    for i in 0..n {
        let mut w = PduWriter::for_issi(100_000 + i);
        w.short_report(
            50.0 + f64::from(i) * 1e-4,
            -2.0,
            ShortCodes {
                position_error: 1,
                ..ShortCodes::default()
            },
        );
        tx.send_to(w.bytes(), addr).await.expect("send");
    }
    let c = q.counters.clone();
    until("every report", || c.accepted() == u64::from(n)).await;
    assert_eq!(c.udp_dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}
