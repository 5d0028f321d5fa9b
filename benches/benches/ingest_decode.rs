//! Decode + validate throughput per format, one core, into a reused batch.

use bluelight_engine::{Fix, Status};
use bluelight_ingest::batch::IngestBatch;
use bluelight_ingest::cot::decode_cot;
use bluelight_ingest::decode::{decode_flatbuffers, decode_json, encode_flatbuffers};
use bluelight_ingest::validate::ValidationConfig;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const NOW: i64 = 1_763_726_400_000;

fn fixes(n: usize) -> Vec<(u64, Fix)> {
    (0..n)
        .map(|i| {
            let mut f = Fix::at(
                NOW - (i % 1000) as i64,
                51.0 + i as f64 * 1e-5,
                -1.0 - i as f64 * 1e-5,
            );
            f.speed_mps = 12.0;
            f.heading_deg = 90.0;
            f.accuracy_m = 5.0;
            (i as u64, f.with_status(Status::Available))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let v = ValidationConfig::default();
    let mut g = c.benchmark_group("ingest_decode");
    let mut batch = IngestBatch::default();
    for n in [100usize, 1_000] {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let frame = encode_flatbuffers(&mut fbb, "bench", &fixes(n), &[]).to_vec();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("flatbuffers", format!("batch_{n}")), |b| {
            b.iter(|| {
                batch.clear();
                decode_flatbuffers(&frame, &v, NOW, &mut batch).unwrap_or_else(|e| panic!("{e}"));
                batch.fixes.len()
            });
        });
        let json = format!(
            "{{\"fixes\":[{}]}}",
            fixes(n)
                .iter()
                .map(|(i, f)| format!(
                    r#"{{"id":"U-{i}","lat":{},"lon":{},"time_ms":{},"speed_mps":12.0,"heading_deg":90.0,"accuracy_m":5.0,"status":"available"}}"#,
                    f.lat, f.lon, f.time_ms
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        g.bench_function(BenchmarkId::new("json", format!("batch_{n}")), |b| {
            b.iter(|| {
                batch.clear();
                decode_json(&json, &v, NOW, &mut batch).unwrap_or_else(|e| panic!("{e}"));
                batch.fixes.len()
            });
        });
    }
    let event = r#"<event version="2.0" uid="ANDROID-1" type="a-f-G-U-C" how="m-g" time="2025-11-21T12:00:00.000Z" start="2025-11-21T12:00:00.000Z" stale="2025-11-21T12:06:00.000Z"><point lat="51.5074" lon="-0.1278" hae="35.2" ce="9.9" le="9999999.0"/><detail><contact callsign="ALPHA-1"/><track course="270.5" speed="12.3"/></detail></event>"#;
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("cot", "one_event"), |b| {
        b.iter(|| {
            batch.clear();
            decode_cot(event, 0, &v, 1_763_726_400_000, &mut batch).unwrap_or_else(|e| panic!("{e}"));
            batch.fixes.len()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
