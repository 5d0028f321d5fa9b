//! Exact k-nearest among 1M units spread over the UK.

use bluelight_benches::fixture::{T0, World, WorldSpec, near_town};
use bluelight_engine::{Filter, NearestQuery, Status};
use bluelight_ingest::places;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn bench(c: &mut Criterion) {
    let world = World::new(WorldSpec {
        units: 1_000_000,
        fences: 0,
        feeds: 0,
        seed: 7,
    });
    let towns = places::uk().unwrap_or_else(|e| panic!("{e}"));
    let mut rng = StdRng::seed_from_u64(9);
    let points: Vec<(f64, f64)> = (0..4096).map(|_| near_town(&mut rng, &towns, 4_000.0)).collect();
    let mut g = c.benchmark_group("engine_nearest");
    for (name, filter) in [
        ("k10_1M_all", Filter::all()),
        ("k10_1M_status_available", Filter::statuses(&[Status::Available])),
        ("k10_1M_status_enroute", Filter::statuses(&[Status::Enroute])),
    ] {
        let mut i = 0;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let (lat, lon) = points[i % points.len()];
                i += 1;
                let q = NearestQuery {
                    lat,
                    lon,
                    k: 10,
                    filter: filter.clone(),
                    max_distance_m: None,
                    include_stale: false,
                };
                world.engine.nearest(&q, T0)
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
