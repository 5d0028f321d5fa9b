//! Area queries among 1M units: circles, boxes and polygons of town sizes.

use bluelight_benches::fixture::{T0, World, WorldSpec, near_town, star_polygon};
use bluelight_engine::{Filter, Shape};
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
    let mut rng = StdRng::seed_from_u64(5);
    let mut g = c.benchmark_group("engine_area");
    for radius in [1_000.0, 5_000.0] {
        let shapes: Vec<(String, Shape)> = {
            let c = near_town(&mut rng, &towns, 2_000.0);
            let d = radius / 111_000.0;
            vec![
                (
                    format!("circle_{radius}m"),
                    Shape::circle(c.0, c.1, radius).unwrap_or_else(|e| panic!("{e}")),
                ),
                (
                    format!("bbox_{radius}m"),
                    Shape::bbox([c.1 - d * 1.6, c.0 - d, c.1 + d * 1.6, c.0 + d])
                        .unwrap_or_else(|e| panic!("{e}")),
                ),
                (
                    format!("polygon200v_{radius}m"),
                    star_polygon(&mut rng, c, radius, 200),
                ),
            ]
        };
        for (name, shape) in shapes {
            let n = world.engine.count_area(&shape, &Filter::all(), false, T0);
            g.bench_function(BenchmarkId::new(name, format!("{n}_units_inside")), |b| {
                b.iter(|| world.engine.area(&shape, &Filter::all(), false, T0));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
