//! A positions feed's message written as JSON and as FlatBuffers, for the
//! units a district map receives in one update (copied rows, as the feeds
//! thread gets them). Prints the bytes a unit takes in each.

use bluelight_api::rows::UnitRows;
use bluelight_engine::{Agency, Engine, EngineConfig, Fix, Outputs, Status};
use bluelight_ingest::wire::feed;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// `n` units like loadgen's fleet: an id, an agency, a kind and a tag, a
/// full fix.
fn rows(n: u32) -> UnitRows {
    let mut e = Engine::new(EngineConfig::default()).unwrap_or_else(|err| panic!("{err}"));
    let mut rows = UnitRows::default();
    for i in 0..n {
        let slot = e.intern_unit(&format!("AMB-{i:06}"));
        if let Err(err) = e.set_meta(slot, Some(Agency::Ambulance), Some("rrv"), Some(&["paramedic"])) {
            panic!("{err}");
        }
        let mut fix = Fix::at(
            1_763_726_400_000 + i64::from(i),
            51.0 + f64::from(i) * 1.3e-5,
            -1.4 + f64::from(i) * 1.7e-5,
        );
        (fix.speed_mps, fix.heading_deg, fix.accuracy_m, fix.status) = (12.3, 271.5, 4.8, Status::Enroute);
        e.apply(slot, &fix, &mut Outputs::default());
        rows.push(&e, slot);
    }
    rows
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("feed_encoding");
    for n in [100u32, 2_000] {
        let rows = rows(n);
        let mut text = String::new();
        rows.write_message("positions", "p1", &mut text);
        let binary = rows.write_flatbuffers(feed::Kind::Positions, "p1");
        eprintln!(
            "{n} units: JSON {} B a unit, FlatBuffers {} B a unit",
            text.len() / n as usize,
            binary.len() / n as usize
        );
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function(BenchmarkId::new("json", format!("{n}_units")), |b| {
            b.iter(|| {
                let mut text = String::new();
                rows.write_message("positions", "p1", &mut text);
                text
            });
        });
        g.bench_function(BenchmarkId::new("flatbuffers", format!("{n}_units")), |b| {
            b.iter(|| rows.write_flatbuffers(feed::Kind::Positions, "p1"));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
