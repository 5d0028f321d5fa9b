//! Tasks on the writer thread: queries and bulk copies run there, between
//! chunks of fixes, instead of taking the engine lock on a runtime worker.

mod common;
use common::until;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluelight_engine::{Engine, EngineConfig, Fix, SharedEngine, SystemClock};
use bluelight_ingest::decode::{decode_flatbuffers, encode_flatbuffers};
use bluelight_ingest::pipeline::{self, Pipeline, PipelineConfig};
use bluelight_ingest::writer::Discard;

fn writer() -> (SharedEngine, Pipeline) {
    let engine = Arc::new(parking_lot::Mutex::new(
        Engine::new(EngineConfig::default()).expect("config"),
    ));
    let pipeline = pipeline::start(
        engine.clone(),
        PipelineConfig::default(),
        Arc::new(SystemClock),
        Arc::new(Discard),
    )
    .expect("writer");
    (engine, pipeline)
}

/// Sends `n` fixes of units `first..first + n` and waits until they are applied.
async fn apply(pipeline: &Pipeline, first: u64, n: u64) -> u32 {
    let pipeline = &pipeline.queue;
    let now = pipeline.now_ms();
    let fixes: Vec<(u64, Fix)> = (first..first + n)
        .map(|k| (k, Fix::at(now, 51.5 + k as f64 * 1e-4, -0.12)))
        .collect();
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let frame = encode_flatbuffers(&mut fbb, "test", &fixes, &[]).to_vec();
    let mut batch = pipeline.batch();
    decode_flatbuffers(&frame, &pipeline.validation, now, &mut batch).expect("decodes");
    pipeline.send_and_report(batch).await.expect("applied").accepted
}

#[tokio::test]
async fn a_task_runs_on_the_writer_after_the_fixes_before_it() {
    let (_engine, pipeline) = writer();
    assert_eq!(apply(&pipeline, 1, 600).await, 600);
    let (tx, rx) = tokio::sync::oneshot::channel();
    pipeline.tasks.query_slot().expect("room").run(move |e| {
        let _ = tx.send((
            e.find_unit("600").is_some(),
            std::thread::current().name().map(str::to_owned),
        ));
    });
    let (seen, thread) = rx.await.expect("the task ran");
    assert!(seen, "the task sees every fix applied before it was queued");
    assert_eq!(thread.as_deref(), Some("bluelight-writer"));
}

#[tokio::test]
async fn bulk_tasks_take_turns_a_step_each_while_fixes_go_on() {
    let (engine, pipeline) = writer();
    let steps: Arc<Mutex<Vec<(char, u32)>>> = Arc::default();
    // Both are queued before the writer can step either: it waits for the
    // engine meanwhile.
    let held = engine.lock();
    for (name, last) in [('a', 5), ('b', 3)] {
        let steps = steps.clone();
        let mut n = 0;
        pipeline.tasks.bulk_slot().expect("room").run(move |_| {
            n += 1;
            steps.lock().expect("steps").push((name, n));
            n == last
        });
    }
    drop(held);
    // Fixes are not held up behind them.
    assert_eq!(apply(&pipeline, 1, 2_000).await, 2_000);
    until("both bulk tasks to finish", || {
        steps.lock().expect("steps").len() == 8
    })
    .await;
    // Turns: a long task does not hold a short one up until it is done.
    let order = vec![
        ('a', 1),
        ('b', 1),
        ('a', 2),
        ('b', 2),
        ('a', 3),
        ('b', 3),
        ('a', 4),
        ('a', 5),
    ];
    assert_eq!(*steps.lock().expect("steps"), order);
    // Done tasks are not stepped again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(steps.lock().expect("steps").len(), 8);
}

#[tokio::test]
async fn bulk_tasks_under_way_are_counted_until_they_finish() {
    let (_engine, pipeline) = writer();
    let finish = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steps = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (finish, steps) = (finish.clone(), steps.clone());
        pipeline.tasks.bulk_slot().expect("room").run(move |_| {
            steps.fetch_add(1, Ordering::Relaxed);
            finish.load(Ordering::Relaxed)
        });
    }
    // Taken in by the writer and stepped, out of the queue, yet not done.
    until("the writer to step all three", || {
        steps.load(Ordering::Relaxed) >= 6
    })
    .await;
    assert_eq!(pipeline.tasks.queued(), (0, 3));
    finish.store(true, Ordering::Relaxed);
    until("every bulk task to finish", || pipeline.tasks.queued() == (0, 0)).await;
}

#[tokio::test]
async fn a_task_that_panics_stops_neither_the_writer_nor_other_tasks() {
    let (_engine, pipeline) = writer();
    pipeline
        .tasks
        .query_slot()
        .expect("room")
        .run(|_| panic!("a bad query"));
    pipeline
        .tasks
        .bulk_slot()
        .expect("room")
        .run(|_| panic!("a bad copy"));
    assert_eq!(apply(&pipeline, 1, 10).await, 10);
    let (tx, rx) = tokio::sync::oneshot::channel();
    pipeline.tasks.query_slot().expect("room").run(move |e| {
        let _ = tx.send(e.find_unit("10").is_some());
    });
    assert!(rx.await.expect("the writer still runs tasks"));
}

#[tokio::test]
async fn a_full_task_queue_refuses_more_and_runs_every_task_it_took() {
    let (engine, pipeline) = writer();
    let ran = Arc::new(AtomicUsize::new(0));
    let held = engine.lock();
    // The writer takes the first task and waits for the lock; the rest queue.
    let mut taken = 0;
    while let Some(slot) = pipeline.tasks.query_slot() {
        let ran = ran.clone();
        slot.run(move |_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        taken += 1;
        assert!(
            taken <= PipelineConfig::default().task_queue + 1,
            "the queue is bounded"
        );
    }
    assert!(
        taken >= PipelineConfig::default().task_queue,
        "{taken} tasks taken"
    );
    assert!(pipeline.tasks.query_slot().is_none());
    drop(held);
    until("every task taken to run", || ran.load(Ordering::Relaxed) == taken).await;
    assert!(pipeline.tasks.query_slot().is_some(), "room again");
}

/// An SRE paged for a stall must be able to see it: a step the writer
/// could not finish for a quarter of a second (here, the engine held by
/// someone else meanwhile) is counted, and the longest step is kept.
#[tokio::test]
async fn a_long_writer_step_is_counted_with_its_length() {
    let (engine, pipeline) = writer();
    assert_eq!(apply(&pipeline, 1, 10).await, 10);
    let c = pipeline.queue.counters.clone();
    assert_eq!(c.writer_long_steps.load(Ordering::Relaxed), 0);
    let held = engine.clone();
    let holder = std::thread::spawn(move || {
        let _e = held.lock();
        std::thread::sleep(Duration::from_millis(400));
    });
    // Queued while the engine is held: the writer's step waits for it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(apply(&pipeline, 11, 10).await, 10);
    holder.join().expect("holder");
    assert_eq!(c.writer_long_steps.load(Ordering::Relaxed), 1);
    let longest = c.writer_longest_step_us.load(Ordering::Relaxed);
    assert!(
        (250_000..5_000_000).contains(&longest),
        "longest step {longest} µs"
    );
}
