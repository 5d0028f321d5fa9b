//! Device decoders, one core, into a reused batch: NMEA 0183 sentences
//! (line splitting, checksum, the RMC/GGA merge), TETRA LIP reports, and TAK
//! protocol version 1 events. Issue figures: NMEA 5M sentences/s, LIP 20M
//! reports/s, TAK v1 2M events/s.

use bluelight_ingest::batch::IngestBatch;
use bluelight_ingest::calendar::{DAY_MS, civil_from_days};
use bluelight_ingest::lip::{PduWriter, ShortCodes, decode_lip};
use bluelight_ingest::nmea::{NmeaSession, with_checksum};
use bluelight_ingest::tak::{self, proto};
use bluelight_ingest::transport;
use bluelight_ingest::validate::ValidationConfig;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// 2026-11-30 12:00:00 UTC.
const NOW: i64 = 1_796_040_000_000;

/// `seconds` of a receiver's output (RMC then GGA each second), ending at NOW.
fn nmea_stream(seconds: i64) -> Vec<u8> {
    let mut s = with_checksum("$PBLU,ID,RRV-7");
    for k in 0..seconds {
        let t = NOW - (seconds - k) * 1000;
        let (y, mo, d) = civil_from_days(t.div_euclid(DAY_MS));
        let ms = t.rem_euclid(DAY_MS);
        let time = format!(
            "{:02}{:02}{:02}.00",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60
        );
        let lat = 48.0 + k as f64 * 0.0001;
        s.push_str(&with_checksum(&format!(
            "$GNRMC,{time},A,53{lat:07.4},N,00132.0000,W,12.0,45.0,{d:02}{mo:02}{:02},,,A",
            y % 100
        )));
        s.push_str(&with_checksum(&format!(
            "$GPGGA,{time},53{lat:07.4},N,00132.0000,W,1,09,0.9,120.0,M,48.0,M,,"
        )));
    }
    s.into_bytes()
}

fn tak_message(uid: &str, t: i64) -> proto::TakMessage {
    proto::TakMessage {
        tak_control: None,
        cot_event: Some(proto::CotEvent {
            r#type: "a-f-G-U-C".into(),
            uid: uid.into(),
            send_time: t as u64,
            start_time: t as u64,
            stale_time: (t + 300_000) as u64,
            how: "m-g".into(),
            lat: 51.5074,
            lon: -0.1278,
            hae: 35.0,
            ce: 4.5,
            le: 999_999.0,
            detail: Some(proto::Detail {
                contact: Some(proto::Contact {
                    endpoint: "*:-1:stcp".into(),
                    callsign: "ALPHA-1".into(),
                }),
                group: Some(proto::Group {
                    name: "Cyan".into(),
                    role: "Team Member".into(),
                }),
                track: Some(proto::Track {
                    speed: 12.5,
                    course: 270.0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn bench(c: &mut Criterion) {
    let v = ValidationConfig::default();
    let mut g = c.benchmark_group("ingest_devices");
    let mut batch = IngestBatch::default();

    let stream = nmea_stream(1000);
    let sentences = stream.iter().filter(|b| **b == b'\n').count();
    g.throughput(Throughput::Elements(sentences as u64));
    g.bench_function(BenchmarkId::new("nmea", "rmc_gga_pairs_2001_lines"), |b| {
        b.iter(|| {
            batch.clear();
            let mut session = NmeaSession::new();
            for line in transport::split_lines(&stream) {
                let _ = session.line(line, 0, &v, NOW, &mut batch);
            }
            session.flush(&v, NOW, &mut batch);
            assert_eq!(batch.fixes.len(), 1000);
        });
    });

    let reports: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let mut w = PduWriter::for_issi(2_000_000 + i);
            w.short_report(
                51.0 + f64::from(i) * 1e-4,
                -3.0,
                ShortCodes {
                    position_error: 1,
                    velocity: 40,
                    direction: 4,
                    ..ShortCodes::default()
                },
            );
            w.bytes().to_vec()
        })
        .collect();
    g.throughput(Throughput::Elements(reports.len() as u64));
    g.bench_function(BenchmarkId::new("lip", "short_reports_1000"), |b| {
        b.iter(|| {
            batch.clear();
            for r in &reports {
                let _ = decode_lip(r, 0, &v, NOW, &mut batch);
            }
            assert_eq!(batch.fixes.len(), 1000);
        });
    });

    let mut framed = Vec::new();
    for i in 0..1000 {
        tak::encode_stream(&tak_message(&format!("ANDROID-{i}"), NOW - 1000), &mut framed);
    }
    g.throughput(Throughput::Elements(1000));
    g.bench_function(BenchmarkId::new("tak_v1", "stream_of_1000_events"), |b| {
        let mut decoder = tak::TakDecoder::new();
        b.iter(|| {
            batch.clear();
            let used = tak::split_stream(&framed, 1 << 20, |payload| {
                let _ = decoder.decode(payload, 0, &v, NOW, &mut batch);
            });
            assert_eq!(used, Ok(framed.len()));
            assert_eq!(batch.fixes.len(), 1000);
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
