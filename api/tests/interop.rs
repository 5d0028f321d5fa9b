//! Device interop against the whole server, with third-party clients where
//! they exist: NMEA built by `pynmeagps` (PyPI) over `--nmea-tcp` and
//! `--nmea-udp`; TETRA LIP reports over `--lip-udp` for a radio registered
//! by a `UnitInfo`. `.ci/run` installs the Python packages; a test that
//! cannot run them fails, saying what is missing.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bluelight_api::config::ServeConfig;
use bluelight_api::server::Running;
use bluelight_engine::{Agency, Fix};
use bluelight_ingest::decode::{UnitInfoSpec, encode_flatbuffers};
use bluelight_ingest::lip::{PduWriter, REASON_EMERGENCY, ShortCodes};
use serde_json::Value;
use support::open::{get_json, now_ms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn devices_server() -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    support::server_with(ServeConfig {
        nmea_tcp: Some(any),
        nmea_udp: Some(any),
        lip_udp: Some(any),
        cot_udp: Some(any),
        ..ServeConfig::default()
    })
    .await
}

/// Runs a script of `tests/interop/` with python3; its stdout as JSON.
fn python(script: &str, args: &[String]) -> Value {
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("missing: python3 ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "{script} failed (missing: `python3 -m pip install pynmeagps takproto pytak`?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// Polls a unit until `done` holds (bounded).
async fn unit_until(http: SocketAddr, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, v) = get_json(http, &format!("/v1/units/{id}")).await;
        if status == 200 && done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "unit {id} never got there: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(http: SocketAddr, line_start: &str) -> f64 {
    let (_, body) = support::request(http, "GET", "/metrics", None, b"", None).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynmeagps_tracks_over_tcp_and_udp_arrive_as_one_fix_a_second() {
    let s = devices_server().await;
    for (mode, addr, unit) in [
        ("tcp", s.devices.nmea_tcp, "AMB-NMEA-T"),
        ("udp", s.devices.nmea_udp, "AMB-NMEA-U"),
    ] {
        let addr = addr.expect("bound").to_string();
        let sent = python(
            "nmea_send.py",
            &[mode, &addr, unit, "5", "53.8008", "-1.5491"].map(String::from),
        );
        let (lat, lon) = (
            sent["lat"].as_f64().expect("lat"),
            sent["lon"].as_f64().expect("lon"),
        );
        let v = unit_until(s.http, unit, |v| {
            v["geometry"]["coordinates"][1]
                .as_f64()
                .is_some_and(|y| (y - lat).abs() < 1e-6)
        })
        .await;
        let p = &v["properties"];
        assert!(
            (v["geometry"]["coordinates"][0].as_f64().expect("lon") - lon).abs() < 1e-6,
            "{v}"
        );
        assert_eq!(p["accuracy_m"].as_f64(), Some(4.0), "GGA's HDOP 0.8 × 5 m: {v}");
        let speed = p["speed_mps"].as_f64().expect("RMC's speed");
        assert!((speed - 19.4 * 1852.0 / 3600.0).abs() < 0.01, "{v}");
        assert_eq!(p["heading_deg"].as_f64(), Some(0.0), "{v}");
    }
    // Ten fixes (five seconds of each unit), each an RMC and GGA merged:
    // nothing refused as a duplicate.
    let accepted = metric(s.http, "bluelight_fixes_accepted_total").await;
    assert_eq!(accepted, 10.0);
    assert_eq!(
        metric(s.http, "bluelight_fixes_rejected_total{reason=\"duplicate\"}").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takproto_v1_streams_and_mesh_datagrams_arrive() {
    let s = support::server_with(ServeConfig {
        cot_tcp: Some("127.0.0.1:0".parse().expect("addr")),
        cot_udp: Some("127.0.0.1:0".parse().expect("addr")),
        ..ServeConfig::default()
    })
    .await;
    for (mode, addr, uid) in [
        ("tcp", s.devices.cot_tcp, "ANDROID-TAK-S"),
        ("udp", s.devices.cot_udp, "ANDROID-TAK-M"),
    ] {
        let addr = addr.expect("bound").to_string();
        let sent = python(
            "tak_send.py",
            &[mode, &addr, uid, "4", "51.5007", "-0.1246"].map(String::from),
        );
        let lat = sent["lat"].as_f64().expect("lat");
        let v = unit_until(s.http, uid, |v| {
            v["geometry"]["coordinates"][1]
                .as_f64()
                .is_some_and(|y| (y - lat).abs() < 1e-7)
        })
        .await;
        let p = &v["properties"];
        assert_eq!(p["kind"], "a-f-G-U-C", "{v}");
        assert_eq!(p["accuracy_m"].as_f64(), Some(4.5), "{v}");
        assert_eq!(p["speed_mps"].as_f64(), Some(10.0), "{v}");
        assert_eq!(p["callsign"], format!("{uid}-CS"), "{v}");
        assert_eq!(p["how"], "m-g", "{v}");
        assert_eq!(p["tags"], serde_json::json!(["group:Cyan"]), "{v}");
    }
    assert_eq!(metric(s.http, "bluelight_fixes_accepted_total").await, 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lip_report_moves_the_radio_a_unit_info_registered_and_flags_an_emergency() {
    let s = devices_server().await;
    let issi = 2_001_234;
    // Register the radio's ISSI as POL-1234, police, over TCP ingest.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let info = UnitInfoSpec {
        unit: issi,
        id: "POL-1234",
        agency: Agency::Police,
        kind: "officer",
        tags: &[],
    };
    let t = now_ms();
    let body = encode_flatbuffers(
        &mut fbb,
        "registry",
        &[(issi, Fix::at(t - 10_000, 51.48, -3.18))],
        &[info],
    )
    .to_vec();
    let mut tcp = tokio::net::TcpStream::connect(s.devices.ingest)
        .await
        .expect("ingest");
    tcp.write_all(&(body.len() as u32).to_le_bytes())
        .await
        .expect("write");
    tcp.write_all(&body).await.expect("write");
    unit_until(s.http, "POL-1234", |_| true).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let lip = s.devices.lip_udp.expect("bound");
    let mut report = PduWriter::for_issi(issi as u32);
    report.short_report(
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
    udp.send_to(&report.bytes()[..5], lip).await.expect("send");
    udp.send_to(report.bytes(), lip).await.expect("send");
    let v = unit_until(s.http, "POL-1234", |v| v["properties"]["status"] == "emergency").await;
    let c = &v["geometry"]["coordinates"];
    assert!((c[1].as_f64().expect("lat") - 51.4816).abs() < 1e-5, "{v}");
    assert!((c[0].as_f64().expect("lon") + 3.1791).abs() < 1e-5, "{v}");
    assert_eq!(v["properties"]["agency"], "police");
    assert_eq!(
        v["properties"]["accuracy_m"].as_f64(),
        Some(20.0),
        "position error < 20 m"
    );
    assert_eq!(
        metric(s.http, "bluelight_fixes_rejected_total{reason=\"bad_frame\"}").await,
        1.0
    );
}

/// `serve` with every listener on a free port.
const EVERY_LISTENER: [&str; 15] = [
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--ingest",
    "127.0.0.1:0",
    "--nmea-tcp",
    "127.0.0.1:0",
    "--nmea-udp",
    "127.0.0.1:0",
    "--lip-udp",
    "127.0.0.1:0",
    "--cot-tcp",
    "127.0.0.1:0",
    "--cot-udp",
    "127.0.0.1:0",
];

#[tokio::test]
async fn the_start_up_line_names_every_device_listener() {
    let out = Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .args(EVERY_LISTENER)
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--nmea-tcp", "--nmea-udp", "--lip-udp", "--cot-udp"] {
        assert!(help.contains(flag), "{help}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .args(EVERY_LISTENER)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find(|l| l.starts_with("listening "));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a listening line");
    let names: Vec<&str> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| {
            w.split_once('=').map(|(k, v)| {
                assert!(v.parse::<SocketAddr>().is_ok_and(|a| a.port() != 0), "{line}");
                k
            })
        })
        .collect();
    assert_eq!(
        names,
        [
            "http", "ingest", "cot", "cot-udp", "nmea-tcp", "nmea-udp", "lip-udp"
        ],
        "{line}"
    );
}

/// A CoT event past its own `stale` time makes its unit stale, long before
/// the server's `stale_after` (120 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cot_event_goes_stale_at_its_stale_time() {
    let s = support::server_with(ServeConfig {
        cot_udp: Some("127.0.0.1:0".parse().expect("addr")),
        ..ServeConfig::default()
    })
    .await;
    let iso = |ms: i64| {
        let mut t = String::new();
        bluelight_ingest::cot::format_rfc3339_ms(ms, &mut t);
        t
    };
    let now = now_ms();
    let event = format!(
        r#"<event version="2.0" uid="ANDROID-STALE" type="a-f-G-U-C" how="h-e" time="{}" start="{}" stale="{}"><point lat="51.5" lon="-0.12" hae="0" ce="10" le="9999999"/><detail><contact callsign="BRAVO"/></detail></event>"#,
        iso(now),
        iso(now),
        iso(now + 1500)
    );
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    udp.send_to(event.as_bytes(), s.devices.cot_udp.expect("bound"))
        .await
        .expect("send");
    let v = unit_until(s.http, "ANDROID-STALE", |_| true).await;
    assert_eq!(v["properties"]["stale"], false, "{v}");
    assert_eq!(v["properties"]["callsign"], "BRAVO", "{v}");
    assert_eq!(v["properties"]["how"], "h-e", "{v}");
    let v = unit_until(s.http, "ANDROID-STALE", |v| v["properties"]["stale"] == true).await;
    assert_eq!(v["properties"]["callsign"], "BRAVO");
}

/// CoT out: a `pytak` client on `--cot-tcp` sees every unit within 2 s of
/// its fix, with its callsign (its id when it has none), the type of the
/// README's table and a stale time of its fix time plus `stale_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pytak_client_sees_every_unit_with_its_callsign_type_and_stale_time() {
    use bluelight_api::cot_out::cot_type;
    let s = support::server_with(ServeConfig {
        cot_tcp: Some("127.0.0.1:0".parse().expect("addr")),
        cot_out: true,
        ..ServeConfig::default()
    })
    .await;
    let cot = s.devices.cot_tcp.expect("bound");
    let kinds = ["rrv", "officer", "helicopter", "lifeboat", "appliance"];
    let agencies = [
        Agency::Ambulance,
        Agency::Police,
        Agency::Fire,
        Agency::Coastguard,
        Agency::Other,
    ];
    let units: Vec<(u64, String, Agency, &str)> = (0..300u64)
        .map(|i| {
            let a = agencies[i as usize % 5];
            (1000 + i, format!("U-{i}"), a, kinds[(i / 5) as usize % 5])
        })
        .collect();
    // One unit over CoT, with a callsign of its own.
    let mut cot_in = tokio::net::TcpStream::connect(cot).await.expect("cot");
    let mut event_time = String::new();
    bluelight_ingest::cot::format_rfc3339_ms(now_ms(), &mut event_time);
    let xml = format!(
        r#"<event version="2.0" uid="ANDROID-X" type="a-f-G-U-C-I" how="m-g" time="{event_time}" start="{event_time}" stale="{event_time}"><point lat="51.5" lon="-0.12" hae="0" ce="5" le="9999999"/><detail><contact callsign="XRAY"/></detail></event>"#
    );
    cot_in.write_all(xml.as_bytes()).await.expect("write");
    // Every unit reports every second while the client listens.
    let ingest = s.devices.ingest;
    let reporting = units.clone();
    let sender = tokio::spawn(async move {
        let mut tcp = tokio::net::TcpStream::connect(ingest).await.expect("ingest");
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        for round in 0..7 {
            let t = now_ms();
            let fixes: Vec<(u64, Fix)> = reporting
                .iter()
                .map(|(k, ..)| {
                    (
                        *k,
                        Fix::at(t, 52.0 + *k as f64 * 1e-3 + round as f64 * 1e-5, -1.0),
                    )
                })
                .collect();
            let infos: Vec<UnitInfoSpec<'_>> = reporting
                .iter()
                .map(|(k, id, a, kind)| UnitInfoSpec {
                    unit: *k,
                    id,
                    agency: *a,
                    kind,
                    tags: &[],
                })
                .collect();
            let body =
                encode_flatbuffers(&mut fbb, "fleet", &fixes, if round == 0 { &infos } else { &[] }).to_vec();
            tcp.write_all(&(body.len() as u32).to_le_bytes())
                .await
                .expect("write");
            tcp.write_all(&body).await.expect("write");
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    });
    unit_until(s.http, "U-299", |_| true).await;
    let addr = cot.to_string();
    let seen = tokio::task::spawn_blocking(move || python("pytak_listen.py", &[addr, "4.5".into()]))
        .await
        .expect("pytak");
    sender.abort();
    let seen = seen.as_object().expect("an object of units");
    for (_, id, agency, kind) in &units {
        let u = seen
            .get(id)
            .unwrap_or_else(|| panic!("{id} never reached the TAK client"));
        assert_eq!(u["callsign"], id.as_str(), "{id}: {u}");
        assert_eq!(u["type"], cot_type(*agency, Some(kind)), "{id}: {u}");
        let (time, stale) = (
            u["time_ms"].as_i64().expect("time"),
            u["stale_ms"].as_i64().expect("stale"),
        );
        assert_eq!(stale - time, 120_000, "{id}: stale = time + stale_after: {u}");
        let delay = u["received_ms"].as_i64().expect("received") - time;
        assert!(delay <= 2000, "{id}: {delay} ms after its fix: {u}");
        assert!(
            u["events"].as_i64().is_some_and(|n| n >= 3),
            "{id}: a change a second: {u}"
        );
    }
    let x = seen.get("ANDROID-X").expect("the CoT unit");
    assert_eq!(
        (x["callsign"].as_str(), x["type"].as_str()),
        (Some("XRAY"), Some("a-f-G-U-C-I")),
        "{x}"
    );
}

/// A TAK client that only listens for longer than the device idle timeout
/// is still read when it speaks: its connection is the picture's as long
/// as the picture goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_tak_client_is_still_heard_after_the_idle_timeout() {
    let mut cfg = ServeConfig {
        cot_tcp: Some("127.0.0.1:0".parse().expect("addr")),
        cot_out: true,
        ..ServeConfig::default()
    };
    cfg.tuning.device_idle_s = 1;
    let s = support::server_with(cfg).await;
    let mut client = tokio::net::TcpStream::connect(s.devices.cot_tcp.expect("bound"))
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut t = String::new();
    bluelight_ingest::cot::format_rfc3339_ms(now_ms(), &mut t);
    let event = format!(
        r#"<event version="2.0" uid="ANDROID-LATE" type="a-f-G-U-C" how="m-g" time="{t}" start="{t}" stale="{t}"><point lat="51.5" lon="-0.12" hae="0" ce="5" le="9999999"/></event>"#
    );
    client.write_all(event.as_bytes()).await.expect("write");
    unit_until(s.http, "ANDROID-LATE", |_| true).await;
}

/// Regression: ATAK pings its TAK server (`t-x-c-t`, a point at 0,0 with
/// unknown error) and asks for TAK protocol v1 (`t-x-takp-q`) in XML on
/// the same connection as its position reports; each was read as a fix
/// and refused as `null_island`, so every phone's keep-alive counted as
/// bad input on the SRE's dashboard, and no phone was ever answered. Now
/// the server offers v1 as a client connects (`t-x-takp-v`), answers a
/// ping with a pong and a request with its acceptance, after which the
/// connection speaks v1; control messages are neither units nor refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tak_clients_are_offered_v1_answered_and_switched() {
    use bluelight_ingest::tak::{encode_stream, proto};
    let s = support::server_with(ServeConfig {
        cot_tcp: Some("127.0.0.1:0".parse().expect("addr")),
        ..ServeConfig::default()
    })
    .await;
    let mut t = String::new();
    bluelight_ingest::cot::format_rfc3339_ms(now_ms(), &mut t);
    let ping = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><event version="2.0" uid="ANDROID-9-ping" type="t-x-c-t" how="h-g-i-g-o" time="{t}" start="{t}" stale="{t}"><point lat="0.0" lon="0.0" hae="0.0" ce="9999999.0" le="9999999.0"/><detail/></event>"#
    );
    let me = format!(
        r#"<event version="2.0" uid="ANDROID-9" type="a-f-G-U-C" how="m-g" time="{t}" start="{t}" stale="{t}"><point lat="51.5" lon="-0.12" hae="0" ce="5" le="9999999"/><detail><contact callsign="NINER"/></detail></event>"#
    );
    let mut cot = tokio::net::TcpStream::connect(s.devices.cot_tcp.expect("bound"))
        .await
        .expect("connect");
    let offer = read_until(&mut cot, |got| got.contains("</event>")).await;
    assert!(
        offer.contains(r#"type="t-x-takp-v""#) && offer.contains(r#"<TakProtocolSupport version="1"/>"#),
        "{offer}"
    );
    cot.write_all(format!("{ping}{me}").as_bytes())
        .await
        .expect("write");
    let pong = read_until(&mut cot, |got| got.contains("</event>")).await;
    assert!(pong.contains(r#"type="t-x-c-t-r""#), "{pong}");
    unit_until(s.http, "ANDROID-9", |v| v["properties"]["callsign"] == "NINER").await;
    // The phone asks for v1, repeating the offer's uid, then waits.
    let uid = offer
        .split("uid=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the offer's uid");
    let ask = format!(
        r#"<event version="2.0" uid="{uid}" type="t-x-takp-q" how="m-g" time="{t}" start="{t}" stale="{t}"><point lat="0.0" lon="0.0" hae="0.0" ce="999999" le="999999"/><detail><TakControl><TakRequest version="1"/></TakControl></detail></event>"#
    );
    cot.write_all(ask.as_bytes()).await.expect("write");
    let answer = read_until(&mut cot, |got| got.contains("</event>")).await;
    assert!(
        answer.contains(r#"type="t-x-takp-r""#) && answer.contains(r#"<TakResponse status="true"/>"#),
        "{answer}"
    );
    // From the next byte on, v1: a report, then a ping answered in v1.
    let event = |kind: &str, uid: &str, lat: f64| proto::TakMessage {
        tak_control: None,
        cot_event: Some(proto::CotEvent {
            r#type: kind.into(),
            uid: uid.into(),
            // Ten seconds on: 11 m in a few milliseconds is a speed jump.
            send_time: u64::try_from(now_ms() + 10_000).unwrap_or(0),
            how: "m-g".into(),
            lat,
            lon: -0.12,
            ce: 5.0,
            ..proto::CotEvent::default()
        }),
    };
    let mut frames = Vec::new();
    encode_stream(&event("a-f-G-U-C", "ANDROID-9", 51.5001), &mut frames);
    encode_stream(&event("t-x-c-t", "ANDROID-9-ping", 0.0), &mut frames);
    cot.write_all(&frames).await.expect("write");
    unit_until(s.http, "ANDROID-9", |v| {
        v["geometry"]["coordinates"][1] == 51.5001
    })
    .await;
    let mut got = Vec::new();
    let pong_v1 = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = cot.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
            let mut kinds = Vec::new();
            let _ = bluelight_ingest::tak::split_stream(&got, 1 << 20, |payload| {
                use prost::Message as _;
                if let Ok(m) = proto::TakMessage::decode(payload) {
                    kinds.push(m.cot_event.map(|e| e.r#type).unwrap_or_default());
                }
            });
            if !kinds.is_empty() {
                return kinds;
            }
        }
    })
    .await
    .expect("a v1 pong");
    assert_eq!(pong_v1, ["t-x-c-t-r"]);
    for id in ["ANDROID-9-ping", uid] {
        let (status, v) = get_json(s.http, &format!("/v1/units/{id}")).await;
        assert_eq!(status, 404, "{id}: {v}");
    }
    for reason in ["null_island", "bad_frame"] {
        let line = format!("bluelight_fixes_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(s.http, &line).await, 0.0, "{reason}");
    }
}

/// Reads `stream` until `done` holds for what came (as text); panics after
/// 5 s.
async fn read_until(stream: &mut tokio::net::TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done(&String::from_utf8_lossy(&got)) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing more after {:?}", String::from_utf8_lossy(&got)));
    String::from_utf8_lossy(&got).into_owned()
}
