//! Applying fixes in steady state: units moving 1–30 m per fix, with fences
//! and feeds. Throughput is fixes per second on one core.

use std::time::{Duration, Instant};

use bluelight_benches::fixture::{World, WorldSpec};
use bluelight_engine::Outputs;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 10_000;

/// The server's writer applies fixes in chunks of this many (the
/// `writer_chunk` tuning default).
const WRITER_CHUNK: usize = 256;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_apply");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    // The headline first, then one dimension at a time around it.
    let cases = [
        (100_000, 1_000, 1_000),
        (10_000, 1_000, 1_000),
        (1_000_000, 1_000, 1_000),
        (100_000, 0, 0),
        (100_000, 1_000, 0),
        (100_000, 10_000, 0),
    ];
    let only = std::env::var("BLUELIGHT_BENCH_CASES").ok();
    for (units, fences, feeds) in cases {
        let name = format!("{units}u_{fences}f_{feeds}feeds");
        if only.as_deref().is_some_and(|o| !o.split(',').any(|x| x == name)) {
            continue;
        }
        let mut world = World::new(WorldSpec {
            units,
            fences,
            feeds,
            seed: 42,
        });
        let mut batch = Vec::with_capacity(BATCH);
        let mut out = Outputs::default();
        let mut feed_events = 0usize;
        let mut alerts = 0usize;
        let mut fixes = 0usize;
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    world.next_fixes(BATCH, &mut batch);
                    out.clear();
                    let t = Instant::now();
                    for (slot, fix) in &batch {
                        world.engine.apply(*slot, fix, &mut out);
                    }
                    world.engine.flush(&mut out);
                    total += t.elapsed();
                    feed_events += out.feed.len();
                    alerts += out.alerts.len();
                    fixes += batch.len();
                }
                total
            });
        });
        // As the writer applies them: chunks of `WRITER_CHUNK`, each
        // warmed first (`Engine::warm_for_fixes`).
        g.bench_function(BenchmarkId::new("warmed_chunks", &name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    world.next_fixes(BATCH, &mut batch);
                    out.clear();
                    let t = Instant::now();
                    for chunk in batch.chunks(WRITER_CHUNK) {
                        world.engine.warm_for_fixes(chunk.iter().map(|(slot, _)| *slot));
                        for (slot, fix) in chunk {
                            world.engine.apply(*slot, fix, &mut out);
                        }
                    }
                    world.engine.flush(&mut out);
                    total += t.elapsed();
                }
                total
            });
        });
        let c = world.engine.counters();
        eprintln!(
            "  {name}: refreshes {:.1}%, cell changes {:.1}% of fixes, {:.2} exact tests, {:.2} feed events, {:.4} alerts a fix; {} cover cells",
            100.0 * c.refreshes as f64 / c.fixes_moved.max(1) as f64,
            100.0 * c.cell_changes as f64 / c.fixes_moved.max(1) as f64,
            c.exact_tests as f64 / c.fixes_moved.max(1) as f64,
            feed_events as f64 / fixes.max(1) as f64,
            alerts as f64 / fixes.max(1) as f64,
            world.engine.cover_cells()
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
