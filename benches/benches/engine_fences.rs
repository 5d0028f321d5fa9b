//! Fence lookup alone: which fences hold a point (cover lookup plus exact
//! tests on boundary cells), and the exact polygon test by situation.

use bluelight_benches::fixture::{World, WorldSpec, near_town, star_polygon};
use bluelight_ingest::places;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn bench(c: &mut Criterion) {
    let towns = places::uk().unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("engine_fences");
    for fences in [1_000, 10_000] {
        let world = World::new(WorldSpec {
            units: 0,
            fences,
            feeds: 0,
            seed: 3,
        });
        let mut rng = StdRng::seed_from_u64(11);
        let points: Vec<(f64, f64)> = (0..4096).map(|_| near_town(&mut rng, &towns, 4_000.0)).collect();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("fences_at", format!("{fences}_fences")), |b| {
            b.iter(|| {
                let (lat, lon) = points[i % points.len()];
                i += 1;
                world.engine.fences_at(lat, lon)
            });
        });
    }
    let mut rng = StdRng::seed_from_u64(1);
    for n in [50, 500] {
        let c = (51.5, -0.1);
        let shape = star_polygon(&mut rng, c, 1000.0, n);
        let cases = [
            ("inside", (51.5 + rng.random_range(-0.001..0.001), -0.1)),
            ("outside_in_box", (51.5 + 0.0085, -0.1 + 0.0135)),
            ("outside_box", (51.6, -0.1)),
        ];
        for (case, (lat, lon)) in cases {
            g.bench_function(BenchmarkId::new(format!("polygon_{n}v"), case), |b| {
                b.iter(|| shape.contains(std::hint::black_box(lat), std::hint::black_box(lon)));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
