//! The writer's routing of moved units into positions feeds ([`Hub::route`]):
//! one `max_hz` period of a national picture (25 writer chunks of 4,096
//! changes, units spread over 200 dispatch maps' feeds), then each feed's
//! changes taken as its session does when it flushes.

use std::sync::Arc;
use std::time::Duration;

use bluelight_api::hub::Hub;
use bluelight_api::session::{Encoding, FeedChanges, Schedule, Session, Subscription};
use bluelight_engine::{Engine, EngineConfig, FeedChange, FeedEvent, Outputs, UnitSlot};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const FEEDS: u32 = 200;
const UNITS: u32 = 300_000;
const CHUNK: usize = 4_096;
const CHUNKS: usize = 25;

/// Takes every feed's waiting changes, as the sessions' flushes do.
fn flush(sessions: &[Arc<Session>]) -> usize {
    let (mut changed, mut left, mut n) = (Vec::new(), Vec::new(), 0);
    for s in sessions {
        if let Some(Subscription::Positions { changes, .. }) = s.subscriptions.lock().get_mut("p") {
            changes.take(&mut changed, &mut left);
            n += changed.len() + left.len();
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let hub = Hub::new(1_000);
    let sessions: Vec<Arc<Session>> = (0..FEEDS)
        .map(|feed| {
            let s = Arc::new(Session::new(1_000));
            s.subscriptions.lock().insert(
                "p".into(),
                Subscription::Positions {
                    feed,
                    schedule: Schedule {
                        every: Duration::from_millis(500),
                        last: tokio::time::Instant::now(),
                    },
                    encoding: Encoding::FlatBuffers,
                    changes: FeedChanges::default(),
                },
            );
            hub.route_feed(feed, &s, "p");
            s
        })
        .collect();
    // Each unit belongs to one map (its town's); fixes come in random
    // unit order, a few of them leaving.
    let mut rng = StdRng::seed_from_u64(1);
    let chunks: Vec<Outputs> = (0..CHUNKS)
        .map(|_| Outputs {
            feed: (0..CHUNK)
                .map(|_| {
                    let unit = rng.random_range(0..UNITS);
                    FeedEvent {
                        feed: unit % FEEDS,
                        unit: UnitSlot(unit),
                        change: if rng.random_range(0..100) == 0 {
                            FeedChange::Left
                        } else {
                            FeedChange::Moved
                        },
                    }
                })
                .collect(),
            ..Outputs::default()
        })
        .collect();
    let mut g = c.benchmark_group("hub_route");
    g.throughput(Throughput::Elements((CHUNK * CHUNKS) as u64));
    g.bench_function("writer_102400_changes_200_feeds", |b| {
        b.iter_batched(
            || flush(&sessions),
            |_| {
                for out in &chunks {
                    hub.route(&engine, out, None);
                }
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("writer_then_flush_102400_changes_200_feeds", |b| {
        b.iter(|| {
            for out in &chunks {
                hub.route(&engine, out, None);
            }
            flush(&sessions)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
