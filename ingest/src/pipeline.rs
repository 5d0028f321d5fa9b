//! The pipeline into the engine: decoded batches go through one bounded queue
//! to the engine's writer thread, which resolves units, applies the position
//! filters that need the unit's history, applies the fixes and hands the
//! outputs to a sink.
//!
//! The engine sits behind a `parking_lot::Mutex` that the writer takes once
//! per batch (never per fix); nothing awaits while holding it. The busy
//! reads (nearest queries, copies for positions feeds) do not take it:
//! they are tasks the writer runs itself between chunks of [`CHUNK`]
//! fixes ([`PipelineHandle::writer_slot`]). A reader holding the lock could
//! lose its CPU while the writer, and every fix behind it, waits; and a
//! runtime worker blocked on the lock stalls every session on it. Queries
//! run before the next chunk; bulk copies run a step at a time in slices of
//! [`BULK_SLICE`] when no fixes wait, and between chunks only when they
//! have had no slice for [`BULK_MAX_WAIT`] (a writer that never idles).
//! Rare readers and writers (HTTP, subscribing) still take the lock, and
//! the writer hands it to them between chunks (a fair "bump").
//!
//! Stream transports `send(...).await` into the queue, so a full queue slows
//! them (TCP flow control reaches the device) and nothing is lost; UDP uses
//! `try_send` and counts what it drops. Batches are recycled through a small
//! pool so steady state does not allocate.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bluelight_engine::{Applied, Engine, Outputs, UnitSlot, sphere};
use parking_lot::MutexGuard;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{IngestBatch, UnitRef};
use crate::validate::{IngestCounters, Reject, ValidationConfig};

/// The engine as every part of the server shares it.
pub type SharedEngine = Arc<parking_lot::Mutex<Engine>>;

/// Fixes the writer applies (and routes the outputs of) before it runs
/// waiting tasks and lets a waiting reader have the engine: about half a
/// millisecond of work.
pub const CHUNK: usize = 256;

/// What the writer did with a batch (the HTTP reply of `POST /v1/fixes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Fixes applied (including ones older than their unit's latest, which
    /// go to history).
    pub accepted: u32,
    /// Refused fixes: index in the input and reason (decode-time refusals
    /// first, then the writer's).
    pub errors: Vec<(u32, Reject)>,
}

/// A batch on its way to the writer.
#[derive(Debug)]
pub struct Job {
    /// The batch.
    pub batch: IngestBatch,
    /// Where to send the report, if the sender waits for one.
    pub reply: Option<oneshot::Sender<ApplyReport>>,
}

/// Work the writer runs with the engine in hand, between chunks of fixes.
pub type EngineTask = Box<dyn FnOnce(&mut Engine) + Send>;

/// Bulk work the writer runs a step at a time between chunks of fixes:
/// each call does a bounded step and returns whether the work is done.
pub type BulkTask = Box<dyn FnMut(&mut Engine) -> bool + Send>;

/// Engine tasks of each kind that may wait for the writer; past this,
/// callers are told the engine is overloaded.
pub const TASK_QUEUE: usize = 4096;

/// Writer time given to bulk tasks between two chunks of fixes: a hundred
/// maps' copies falling due together must not hold the fixes (and their
/// alerts) for tens of milliseconds. A step that starts inside the slice
/// runs to its end, so steps should be well under it.
pub const BULK_SLICE: std::time::Duration = std::time::Duration::from_micros(250);

/// Bulk work normally runs while no fixes wait (the writer idles most of
/// the time), so it never delays a batch by more than one slice. Only when
/// it has had no slice for this long does it take one between chunks of a
/// batch: a writer kept busy by fixes still gives it about a twentieth of
/// its time.
pub const BULK_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// Called by the writer, with the engine still locked, after every batch
/// with what it produced and when the batch was received. The api routes
/// outputs to sessions from here.
pub type OutputSink = Box<dyn FnMut(&Engine, &Outputs, Option<Instant>) + Send>;

/// The sending side of the pipeline, cloned into every transport.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: mpsc::Sender<Job>,
    tasks: mpsc::Sender<EngineTask>,
    bulk_tasks: mpsc::Sender<BulkTask>,
    pool: Arc<Mutex<Vec<IngestBatch>>>,
    /// Shared counters.
    pub counters: Arc<IngestCounters>,
    /// Validation settings used by the decoders.
    pub validation: Arc<ValidationConfig>,
}

impl PipelineHandle {
    /// An empty batch, recycled when possible.
    pub fn batch(&self) -> IngestBatch {
        self.pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }

    /// Sends a batch, waiting while the queue is full (stream transports).
    ///
    /// # Errors
    /// The pipeline has stopped.
    pub async fn send(&self, mut batch: IngestBatch) -> Result<(), Stopped> {
        batch.received.get_or_insert_with(Instant::now);
        self.tx
            .send(Job { batch, reply: None })
            .await
            .map_err(|_| Stopped)
    }

    /// Sends a batch and waits for the writer's report (HTTP).
    ///
    /// # Errors
    /// The pipeline has stopped.
    pub async fn send_and_report(&self, mut batch: IngestBatch) -> Result<ApplyReport, Stopped> {
        batch.received.get_or_insert_with(Instant::now);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                batch,
                reply: Some(reply),
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// A place in the writer's task queue, or `None` when it is full (or the
    /// writer has stopped). Reserve first, then take the work out of
    /// wherever it waits: nothing is lost when there is no room. These
    /// tasks run before the next chunk of fixes: for answers someone waits
    /// for (a nearest query).
    pub fn writer_slot(&self) -> Option<WriterSlot<'_>> {
        self.tasks.try_reserve().ok().map(WriterSlot)
    }

    /// Like [`writer_slot`](Self::writer_slot), for bulk work done in
    /// steps (a positions feed's copy): these get [`BULK_SLICE`] of the
    /// writer between chunks of fixes, one task at a time, in order.
    pub fn writer_bulk_slot(&self) -> Option<BulkSlot<'_>> {
        self.bulk_tasks.try_reserve().ok().map(BulkSlot)
    }

    /// Batches waiting for the writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Sends a batch if the queue has room; otherwise drops it and counts
    /// its fixes (UDP).
    pub fn try_send(&self, mut batch: IngestBatch) -> bool {
        batch.received.get_or_insert_with(Instant::now);
        let n = batch.fixes.len() as u64;
        match self.tx.try_send(Job { batch, reply: None }) {
            Ok(()) => true,
            Err(_) => {
                self.counters.udp_dropped.fetch_add(n.max(1), Ordering::Relaxed);
                false
            }
        }
    }
}

/// A reserved place in the writer's task queue ([`PipelineHandle::writer_slot`]).
pub struct WriterSlot<'a>(mpsc::Permit<'a, EngineTask>);

impl WriterSlot<'_> {
    /// Runs `f` on the writer thread with the engine in hand, after the
    /// chunk of fixes in progress.
    pub fn run(self, f: impl FnOnce(&mut Engine) + Send + 'static) {
        self.0.send(Box::new(f));
    }
}

/// A reserved place in the writer's bulk queue ([`PipelineHandle::writer_bulk_slot`]).
pub struct BulkSlot<'a>(mpsc::Permit<'a, BulkTask>);

impl BulkSlot<'_> {
    /// Runs `step` on the writer, with the engine in hand, until it
    /// returns true (done). Each call should do a bounded piece of work.
    pub fn run(self, step: impl FnMut(&mut Engine) -> bool + Send + 'static) {
        self.0.send(Box::new(step));
    }
}

/// The pipeline has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ingest pipeline has stopped")]
pub struct Stopped;

/// Tuning of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Batches the queue holds before senders wait (or UDP drops).
    pub queue_batches: usize,
    /// Position filters and validation.
    pub validation: ValidationConfig,
    /// A jump is refused only within this long of the unit's latest fix; a
    /// unit that really moved (or whose previous fix was the wrong one) is
    /// accepted again after it.
    pub speed_check_window_ms: i64,
    /// Runs the writer at real-time priority ([`priority::realtime_this_thread`](crate::priority::realtime_this_thread)),
    /// so it takes a core the moment a batch arrives instead of waiting its
    /// turn behind other threads: on a busy machine that wait is most of
    /// the fix-to-alert tail. Off by default; when refused the writer runs
    /// as usual and a warning says why.
    pub realtime_writer: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_batches: 256,
            validation: ValidationConfig::default(),
            speed_check_window_ms: 60_000,
            realtime_writer: false,
        }
    }
}

/// Starts the writer thread. It stops when every handle is dropped.
pub fn start(
    engine: SharedEngine,
    cfg: PipelineConfig,
    mut sink: OutputSink,
) -> (PipelineHandle, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Job>(cfg.queue_batches.max(1));
    let (tasks_tx, tasks) = mpsc::channel::<EngineTask>(TASK_QUEUE);
    let (bulk_tx, bulk) = mpsc::channel::<BulkTask>(TASK_QUEUE);
    let mut tasks = Tasks {
        urgent: tasks,
        bulk,
        current: None,
        last_bulk: Instant::now(),
    };
    let pool: Arc<Mutex<Vec<IngestBatch>>> = Arc::default();
    let counters: Arc<IngestCounters> = Arc::default();
    let handle = PipelineHandle {
        tx,
        tasks: tasks_tx,
        bulk_tasks: bulk_tx,
        pool: pool.clone(),
        counters: counters.clone(),
        validation: Arc::new(cfg.validation.clone()),
    };
    let writer = std::thread::Builder::new()
        .name("bluelight-writer".into())
        .spawn(move || {
            if cfg.realtime_writer {
                use crate::priority::{WRITER_PRIORITY, realtime_this_thread, warn_refused};
                match realtime_this_thread(WRITER_PRIORITY) {
                    Ok(()) => tracing::info!("the writer runs at real-time priority (SCHED_FIFO)"),
                    Err(e) => warn_refused("the writer", WRITER_PRIORITY, &e),
                }
            }
            let mut out = Outputs::default();
            let mut slots = Vec::with_capacity(CHUNK);
            // Only to wait for whichever queue has work first.
            let waiter = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap_or_else(|e| panic!("cannot start the writer's waiter: {e}"));
            // Whether the engine has done its idle work since the last batch.
            let mut prepared = false;
            loop {
                let mut job = match next_work(&waiter, &mut rx, &mut tasks, prepared) {
                    Work::Batch(job) => job,
                    Work::Task(task) => {
                        let mut engine = engine.lock();
                        run_task(&mut engine, task);
                        tasks.run_urgent(&mut engine);
                        continue;
                    }
                    Work::Bulk => {
                        let mut engine = engine.lock();
                        tasks.run_bulk(&mut engine);
                        continue;
                    }
                    Work::Idle => {
                        prepared = !engine.lock().prepare();
                        continue;
                    }
                    Work::Stop => break,
                };
                let report = {
                    let mut engine = engine.lock();
                    let batch = &job.batch;
                    let mut report = begin(&mut engine, batch, &counters);
                    let mut from = 0;
                    loop {
                        let to = (from + CHUNK).min(batch.fixes.len());
                        out.clear();
                        apply_fixes(
                            &mut engine,
                            batch,
                            from..to,
                            &cfg,
                            &counters,
                            &mut out,
                            &mut report,
                            &mut slots,
                        );
                        sink(&engine, &out, batch.received);
                        tasks.run_urgent(&mut engine);
                        if tasks.bulk_starved() {
                            tasks.run_bulk(&mut engine);
                        }
                        if to == batch.fixes.len() {
                            break;
                        }
                        from = to;
                        MutexGuard::bump(&mut engine);
                    }
                    finish(report)
                };
                prepared = false;
                if let Some(reply) = job.reply.take() {
                    let _ = reply.send(report);
                }
                job.batch.clear();
                if let Ok(mut p) = pool.lock()
                    && p.len() < 64
                {
                    p.push(job.batch);
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the writer thread: {e}"));
    (handle, writer)
}

enum Work {
    Batch(Job),
    Task(EngineTask),
    /// A slice of bulk work.
    Bulk,
    /// Nothing waits: a step of the engine's own work ahead.
    Idle,
    Stop,
}

/// The writer's task queues.
struct Tasks {
    urgent: mpsc::Receiver<EngineTask>,
    bulk: mpsc::Receiver<BulkTask>,
    /// The bulk task under way.
    current: Option<BulkTask>,
    /// When bulk work last had a slice.
    last_bulk: Instant,
}

impl Tasks {
    /// Runs the urgent tasks waiting now (not ones queued while they run:
    /// the fixes come next).
    fn run_urgent(&mut self, engine: &mut Engine) {
        for _ in 0..self.urgent.len() {
            match self.urgent.try_recv() {
                Ok(t) => run_task(engine, t),
                Err(_) => break,
            }
        }
    }

    /// Whether bulk work waits and has had no slice for [`BULK_MAX_WAIT`].
    fn bulk_starved(&self) -> bool {
        (self.current.is_some() || !self.bulk.is_empty()) && self.last_bulk.elapsed() >= BULK_MAX_WAIT
    }

    /// Runs bulk steps for [`BULK_SLICE`] (at least one step when there is
    /// bulk work, so it always moves).
    fn run_bulk(&mut self, engine: &mut Engine) {
        let started = Instant::now();
        self.last_bulk = started;
        loop {
            let Some(mut task) = self.current.take().or_else(|| self.bulk.try_recv().ok()) else {
                return;
            };
            // A step that panics ends its task, not the writer.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(engine)));
            match step {
                Ok(false) => self.current = Some(task),
                Ok(true) => {}
                Err(_) => tracing::error!("a bulk engine task panicked on the writer"),
            }
            if started.elapsed() >= BULK_SLICE {
                return;
            }
        }
    }
}

/// The next thing for the writer: a waiting urgent task first (a query
/// must not queue behind a backlog of batches), else a batch, else a slice
/// of bulk work, else it sleeps until something comes. `Stop` once the
/// batch queue has closed. With nothing waiting and `prepared` false, the
/// engine's idle work comes before sleeping.
fn next_work(
    waiter: &tokio::runtime::Runtime,
    batches: &mut mpsc::Receiver<Job>,
    tasks: &mut Tasks,
    prepared: bool,
) -> Work {
    if let Ok(t) = tasks.urgent.try_recv() {
        return Work::Task(t);
    }
    if let Ok(j) = batches.try_recv() {
        return Work::Batch(j);
    }
    if tasks.current.is_some() || !tasks.bulk.is_empty() {
        return Work::Bulk;
    }
    if !prepared {
        return Work::Idle;
    }
    waiter.block_on(async {
        tokio::select! {
            biased;
            Some(t) = tasks.urgent.recv() => Work::Task(t),
            j = batches.recv() => j.map_or(Work::Stop, Work::Batch),
            Some(t) = tasks.bulk.recv() => {
                tasks.current = Some(t);
                Work::Bulk
            }
        }
    })
}

fn run_task(engine: &mut Engine, task: EngineTask) {
    // One bad task must not stop the writer, and with it every fix.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(engine))).is_err() {
        tracing::error!("an engine task panicked on the writer");
    }
}

/// Applies one batch: metadata first, then fixes in order, then flush.
pub fn apply(
    engine: &mut Engine,
    batch: &IngestBatch,
    cfg: &PipelineConfig,
    counters: &IngestCounters,
    out: &mut Outputs,
) -> ApplyReport {
    let mut report = begin(engine, batch, counters);
    apply_fixes(
        engine,
        batch,
        0..batch.fixes.len(),
        cfg,
        counters,
        out,
        &mut report,
        &mut Vec::new(),
    );
    finish(report)
}

fn resolve(engine: &mut Engine, batch: &IngestBatch, u: &UnitRef) -> UnitSlot {
    match u {
        UnitRef::Key(k) => engine.unit_by_key(*k),
        UnitRef::Id(r) => engine.unit(batch.str(r)),
    }
}

/// A batch's metadata and decode-time refusals, before its fixes.
fn begin(engine: &mut Engine, batch: &IngestBatch, counters: &IngestCounters) -> ApplyReport {
    for m in &batch.metas {
        let slot = match (&m.unit, m.key) {
            (UnitRef::Id(r), Some(key)) => engine.register_key(key, batch.str(r)),
            (u, _) => resolve(engine, batch, u),
        };
        let kind = m.kind.as_ref().map(|k| batch.str(k));
        let tags: Option<Vec<&str>> = m.tags.as_ref().map(|t| batch.tags(t).collect());
        if engine.set_meta(slot, m.agency, kind, tags.as_deref()).is_err() {
            counters.reject(Reject::BadField);
        }
    }
    for r in &batch.errors {
        counters.reject(r.1);
    }
    ApplyReport {
        accepted: 0,
        errors: batch.errors.clone(),
    }
}

/// Fixes `range` of a batch, in order, then the standing queries they
/// touched. `slots` is scratch room.
///
/// The units are resolved and their records touched first, in a pass of
/// independent lookups whose cache misses overlap; applying the fixes one
/// by one then finds them in cache (a fix is mostly waiting on memory).
#[allow(
    clippy::too_many_arguments,
    reason = "the writer's state and scratch room, passed apart"
)]
fn apply_fixes(
    engine: &mut Engine,
    batch: &IngestBatch,
    range: std::ops::Range<usize>,
    cfg: &PipelineConfig,
    counters: &IngestCounters,
    out: &mut Outputs,
    report: &mut ApplyReport,
    slots: &mut Vec<UnitSlot>,
) {
    let max_speed = cfg.validation.max_implied_speed_mps;
    let accepted_before = report.accepted;
    let fixes = batch.fixes.get(range.clone()).unwrap_or_default();
    slots.clear();
    slots.extend(fixes.iter().map(|(unit, _)| resolve(engine, batch, unit)));
    engine.warm_for_fixes(slots);
    for ((n, (_, fix)), &slot) in range.zip(fixes).zip(slots.iter()) {
        let i = batch.index.get(n).copied().unwrap_or(n as u32);
        if let Some((t, lat, lon)) = engine.last_position(slot) {
            let dt = fix.time_ms - t;
            if dt > 0 && dt <= cfg.speed_check_window_ms {
                let d = sphere::distance_m(lat, lon, fix.lat, fix.lon);
                if d / (dt as f64 / 1000.0) > max_speed {
                    counters.reject(Reject::SpeedJump);
                    report.errors.push((i, Reject::SpeedJump));
                    continue;
                }
            }
        }
        match engine.apply(slot, fix, out) {
            Applied::Moved | Applied::Older => report.accepted += 1,
            Applied::Duplicate => {
                counters.reject(Reject::Duplicate);
                report.errors.push((i, Reject::Duplicate));
            }
        }
    }
    counters
        .accepted
        .fetch_add(u64::from(report.accepted - accepted_before), Ordering::Relaxed);
    engine.flush(out);
}

/// The report in input order.
fn finish(mut report: ApplyReport) -> ApplyReport {
    report.errors.sort_unstable_by_key(|e| e.0);
    report
}
