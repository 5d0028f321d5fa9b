//! The writer: the one thread that changes the engine. It takes batches
//! from the queue (or from a stage in front of it), resolves units, applies
//! the filters that need a unit's last fix, applies the fixes a chunk at a
//! time, and hands each chunk's outputs to the [`OutputConsumer`] it was
//! given when it was built. Between chunks it runs the tasks others queued
//! ([`tasks`](crate::tasks)) and hands the engine lock to a rare waiting
//! reader (`parking_lot`'s fair "bump").
//!
//! The engine lock is taken once per batch, never per fix, and nothing
//! awaits while holding it.

use std::ops::DerefMut;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bluelight_engine::{Agency, Applied, Engine, HistoryLog, Outputs, SharedEngine, UnitSlot};
use parking_lot::MutexGuard;

use crate::batch::{IngestBatch, UnitRef};
use crate::queue::{ApplyReport, Batches, ChangeError, Command, Job, Reply, SnapshotHistory};
use crate::tasks::{TaskQueues, run_query};
use crate::validate::{IngestCounters, Reject, ValidationConfig};

/// What consumes the engine's outputs: the api's hub (sessions), later an
/// alert outbox. Built before the writer and handed to it; the writer
/// calls it with the engine still locked, after every chunk of fixes, so
/// it must not wait on anything (a socket, Redis, a slow subscriber).
pub trait OutputConsumer: Send + Sync {
    /// Takes one chunk's outputs; `received` is when its fixes arrived
    /// (none for outputs of the clock or of a fence change).
    fn consume(&self, engine: &Engine, out: &Outputs, received: Option<Instant>);
}

/// Drops every output (benchmarks and tests of ingest alone).
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl OutputConsumer for Discard {
    fn consume(&self, _: &Engine, _: &Outputs, _: Option<Instant>) {}
}

/// Several consumers of the same outputs, in order: the hub, then (with
/// Redis) the alert outbox. Each is called with the engine still locked.
pub struct Fanout(pub Vec<Arc<dyn OutputConsumer>>);

impl OutputConsumer for Fanout {
    fn consume(&self, engine: &Engine, out: &Outputs, received: Option<Instant>) {
        for c in &self.0 {
            c.consume(engine, out, received);
        }
    }
}

/// Tuning of the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterConfig {
    /// Fixes applied (and their outputs consumed) before the writer runs
    /// waiting tasks and lets a waiting reader have the engine: about half
    /// a millisecond of work at 256.
    pub chunk: usize,
    /// Writer time given to bulk tasks at a time: a hundred maps' copies
    /// falling due together must not hold the fixes (and their alerts)
    /// for tens of milliseconds. A step that starts inside the slice runs
    /// to its end, so steps should be well under it.
    pub bulk_slice: Duration,
    /// Bulk work normally runs while no fixes wait (the writer idles most
    /// of the time). Only when it has had no slice for this long does it
    /// take one between chunks of a batch: a writer kept busy by fixes
    /// still gives it about a twentieth of its time.
    pub bulk_max_wait: Duration,
    /// Runs the writer at real-time priority
    /// ([`priority::realtime_this_thread`](crate::priority::realtime_this_thread)),
    /// so it takes a core the moment a batch arrives instead of waiting its
    /// turn behind other threads: on a busy machine that wait is most of
    /// the fix-to-alert tail. Off by default; when refused the writer runs
    /// as usual and a warning says why.
    pub realtime: bool,
    /// The writer's `nice` ([`priority::raise_writer`](crate::priority::raise_writer)):
    /// below 0 it runs ahead of the server's other threads and of other
    /// processes at the usual 0; 0 (the default) leaves it at the
    /// process's. Refused without the privilege to raise a thread, and
    /// then the writer runs as usual.
    pub nice: i32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            chunk: 256,
            bulk_slice: Duration::from_micros(250),
            bulk_max_wait: Duration::from_millis(5),
            realtime: false,
            nice: 0,
        }
    }
}

/// Starts the writer thread on `batches`; it stops when the queue closes
/// (every [`IngestQueue`](crate::queue::IngestQueue) dropped).
///
/// # Errors
/// The thread cannot be started.
pub fn spawn(
    engine: SharedEngine,
    batches: Batches,
    tasks: TaskQueues,
    consumer: Arc<dyn OutputConsumer>,
    validation: Arc<ValidationConfig>,
    cfg: WriterConfig,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("bluelight-writer".into())
        .spawn(move || {
            crate::priority::raise_writer(cfg.nice);
            if cfg.realtime {
                use crate::priority::{WRITER_PRIORITY, realtime_this_thread, warn_refused};
                match realtime_this_thread(WRITER_PRIORITY) {
                    Ok(()) => tracing::info!("the writer runs at real-time priority (SCHED_FIFO)"),
                    Err(e) => warn_refused("the writer", WRITER_PRIORITY, &e),
                }
            }
            let applier = Applier::new(validation, batches.counters.clone(), cfg.chunk);
            Writer {
                engine,
                batches,
                tasks,
                consumer,
                applier,
                cfg,
            }
            .run();
        })
}

/// A writer step this long or longer is counted and logged: at
/// `national` a step takes about a millisecond, so a quarter of a second
/// is a stall every client sees.
pub const LONG_STEP: Duration = Duration::from_millis(250);

struct Writer {
    engine: SharedEngine,
    batches: Batches,
    tasks: TaskQueues,
    consumer: Arc<dyn OutputConsumer>,
    applier: Applier,
    cfg: WriterConfig,
}

enum Work {
    Batch(Job),
    Query(crate::tasks::EngineTask),
    /// A slice of bulk work.
    Bulk,
    /// Nothing waits: a step of the engine's own work ahead.
    Idle,
    Stop,
}

impl Writer {
    fn run(mut self) {
        // Only to wait for whichever queue has work first.
        let waiter = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the writer's waiter; the writer stops");
                return;
            }
        };
        // Whether the engine has done its idle work since the last batch.
        let mut prepared = false;
        loop {
            let mut job = match self.next_work(&waiter, prepared) {
                Work::Batch(job) => job,
                Work::Query(task) => {
                    let started = Instant::now();
                    let mut engine = self.engine.lock();
                    run_query(&mut engine, task);
                    self.tasks.run_queries(&mut engine);
                    drop(engine);
                    self.stepped("queries", started);
                    continue;
                }
                Work::Bulk => {
                    let started = Instant::now();
                    let mut engine = self.engine.lock();
                    self.tasks.run_bulk(&mut engine, self.cfg.bulk_slice);
                    drop(engine);
                    self.stepped("bulk work", started);
                    continue;
                }
                Work::Idle => {
                    // Measured too: work that arrives meanwhile waits
                    // behind it (and behind whoever holds the engine).
                    let started = Instant::now();
                    prepared = !self.engine.lock().prepare();
                    self.stepped("idle work (readying history memory)", started);
                    continue;
                }
                Work::Stop => break,
            };
            let what = job.command.what();
            match job.command {
                Command::Snapshot { history, reply } => {
                    let started = Instant::now();
                    let mut engine = self.engine.lock();
                    let frozen = engine.freeze();
                    let history = match history {
                        SnapshotHistory::None => HistoryLog::default(),
                        SnapshotHistory::SinceLast => engine.take_history_log(false),
                        SnapshotHistory::Whole => engine.take_history_log(true),
                    };
                    drop(engine);
                    self.stepped(what, started);
                    let _ = reply.send((frozen, history));
                    continue;
                }
                Command::Replace(new) => {
                    *self.engine.lock() = *new;
                    prepared = false;
                    continue;
                }
                command => job.command = command,
            }
            let started = Instant::now();
            let outcome = {
                let mut engine = self.engine.lock();
                let received = match &job.command {
                    Command::Fixes(b) => b.received,
                    _ => None,
                };
                let (consumer, tasks, cfg) = (&self.consumer, &mut self.tasks, &self.cfg);
                self.applier
                    .apply(&mut engine, &job.command, |engine, out, last| {
                        consumer.consume(engine, out, received);
                        tasks.run_queries(engine);
                        if tasks.bulk_starved(cfg.bulk_max_wait) {
                            tasks.run_bulk(engine, cfg.bulk_slice);
                        }
                        if !last {
                            MutexGuard::bump(engine);
                        }
                    })
            };
            self.stepped(what, started);
            prepared = false;
            outcome.answer(job.reply.take());
            if let Command::Fixes(batch) = job.command {
                self.batches.pool.give_back(batch);
            }
        }
    }

    /// Counts a step that started at `started` (and logs a long one).
    fn stepped(&self, what: &str, started: Instant) {
        let took = started.elapsed();
        let c = &self.batches.counters;
        c.writer_longest_step_us
            .fetch_max(took.as_micros().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
        if took >= LONG_STEP {
            c.writer_long_steps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                step = what,
                took_ms = took.as_millis() as u64,
                "the writer took long over one step (waiting for the engine included): every fix and query waited behind it"
            );
        }
    }

    /// The next thing to do: a waiting query first (it must not queue
    /// behind a backlog of batches), else a batch, else a slice of bulk
    /// work, else it sleeps until something comes. `Stop` once the batch
    /// queue has closed. With nothing waiting and `prepared` false, the
    /// engine's idle work comes before sleeping.
    fn next_work(&mut self, waiter: &tokio::runtime::Runtime, prepared: bool) -> Work {
        if let Some(t) = self.tasks.try_query() {
            return Work::Query(t);
        }
        if let Some(j) = self.batches.try_recv() {
            return Work::Batch(j);
        }
        if self.tasks.bulk_waiting() {
            return Work::Bulk;
        }
        if !prepared {
            return Work::Idle;
        }
        let (batches, tasks) = (&mut self.batches, &mut self.tasks);
        waiter.block_on(async {
            tokio::select! {
                biased;
                Some(t) = tasks.queries.recv() => Work::Query(t),
                j = batches.recv() => j.map_or(Work::Stop, Work::Batch),
                Some(t) = tasks.bulk.recv() => {
                    tasks.take_in(t);
                    Work::Bulk
                }
            }
        })
    }
}

/// What applying a command came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The report of a batch of fixes.
    Applied(ApplyReport),
    /// A change: `Ok(created)` or why the engine refused it.
    Changed(Result<bool, ChangeError>),
    /// A tick (nobody waits for it).
    Ticked,
}

impl Outcome {
    /// Sends the outcome to whoever waits for it (a sender that stopped
    /// waiting is no error).
    pub fn answer(self, reply: Option<Reply>) {
        match (self, reply) {
            (Outcome::Applied(r), Some(Reply::Applied(tx))) => {
                let _ = tx.send(r);
            }
            (Outcome::Changed(r), Some(Reply::Changed(tx))) => {
                let _ = tx.send(r);
            }
            _ => {}
        }
    }
}

/// Applies commands: a batch's metadata first, then its fixes in order a
/// chunk at a time, then the standing queries they touched; a change or a
/// tick in one go. Keeps its scratch room between batches so nothing is
/// allocated per fix.
#[derive(Debug)]
pub struct Applier {
    validation: Arc<ValidationConfig>,
    counters: Arc<IngestCounters>,
    chunk: usize,
    out: Outputs,
    /// Each fix's unit, `None` for a new unit past `max_units`.
    slots: Vec<Option<UnitSlot>>,
}

impl Applier {
    /// An applier with these filters and counters, applying `chunk` fixes
    /// at a time.
    pub fn new(validation: Arc<ValidationConfig>, counters: Arc<IngestCounters>, chunk: usize) -> Self {
        Self {
            validation,
            counters,
            chunk: chunk.max(1),
            out: Outputs::default(),
            slots: Vec::with_capacity(chunk),
        }
    }

    /// Applies `command`, calling `between(engine, outputs, last)` after
    /// each chunk of fixes (once for a change or a tick) with its outputs.
    pub fn apply<E: DerefMut<Target = Engine>>(
        &mut self,
        engine: &mut E,
        command: &Command,
        mut between: impl FnMut(&mut E, &Outputs, bool),
    ) -> Outcome {
        let change = match command {
            Command::Fixes(batch) => return Outcome::Applied(self.apply_batch(engine, batch, between)),
            Command::Tick { now_ms, part, parts } => {
                self.out.clear();
                engine.tick_part(*now_ms, *part as usize, *parts as usize, &mut self.out);
                between(engine, &self.out, true);
                return Outcome::Ticked;
            }
            Command::PutFence { def, now_ms } => {
                self.out.clear();
                let e: &mut Engine = engine;
                def.compile(e).and_then(|spec| {
                    e.put_fence_with_cover(spec, def.cover.as_deref(), *now_ms, &mut self.out)
                })
            }
            Command::RemoveFence(id) => {
                self.out.clear();
                engine.remove_fence(id).map(|()| false)
            }
            Command::PutRule(def) => {
                self.out.clear();
                let e: &mut Engine = engine;
                def.compile(e).and_then(|spec| e.put_rule(spec))
            }
            Command::RemoveRule(id) => {
                self.out.clear();
                engine.remove_rule(id).map(|()| false)
            }
            // The writer answers these before applying; a replay has none.
            Command::Snapshot { .. } | Command::Replace(_) => return Outcome::Ticked,
        };
        // A change's alerts (a replaced fence's enter and exit) go out
        // before any later fix's.
        between(engine, &self.out, true);
        Outcome::Changed(change.map_err(|e| ChangeError::Refused(e.to_string())))
    }

    /// Applies `batch`, calling `between(engine, outputs, last)` after each
    /// chunk with that chunk's outputs. The report is in input order.
    pub fn apply_batch<E: DerefMut<Target = Engine>>(
        &mut self,
        engine: &mut E,
        batch: &IngestBatch,
        mut between: impl FnMut(&mut E, &Outputs, bool),
    ) -> ApplyReport {
        let mut report = self.begin(engine, batch);
        let mut from = 0;
        loop {
            let to = (from + self.chunk).min(batch.fixes.len());
            self.out.clear();
            self.apply_fixes(engine, batch, from..to, &mut report);
            let last = to == batch.fixes.len();
            between(engine, &self.out, last);
            if last {
                break;
            }
            from = to;
        }
        report.errors.sort_unstable_by_key(|e| e.0);
        report
    }

    /// A batch's metadata and decode-time refusals, before its fixes.
    fn begin(&self, engine: &mut Engine, batch: &IngestBatch) -> ApplyReport {
        // Refused at decode, but taken in order like the rest.
        engine.count_fixes_seen(batch.errors.len() as u64);
        for m in &batch.metas {
            let slot = match (&m.unit, m.key) {
                (UnitRef::Id(r), Some(key)) => {
                    // A limited sender may not rename a key another
                    // agency's unit holds (that unit's fixes would follow).
                    if batch.agencies.is_some()
                        && let Some(held) = engine.find_key(key)
                        && !allowed(engine, held, None, batch.agencies)
                    {
                        self.counters.reject(Reject::Forbidden);
                        continue;
                    }
                    let id = batch.str(r);
                    (engine.find_unit(id).is_some() || room(engine)).then(|| engine.register_key(key, id))
                }
                (u, _) => resolve(engine, batch, u),
            };
            let Some(slot) = slot else {
                self.counters.reject(Reject::TooManyUnits);
                continue;
            };
            if !allowed(engine, slot, m.agency, batch.agencies) {
                self.counters.reject(Reject::Forbidden);
                continue;
            }
            let kind = m.kind.as_ref().map(|k| batch.str(k));
            let tags: Option<Vec<&str>> = m.tags.as_ref().map(|t| batch.tags(t).collect());
            if engine.set_meta(slot, m.agency, kind, tags.as_deref()).is_err() {
                self.counters.reject(Reject::BadField);
            }
            let text = |r: &Option<std::ops::Range<u32>>| r.as_ref().map(|r| batch.str(r));
            engine.set_details(slot, text(&m.callsign), text(&m.how), m.stale_at_ms);
        }
        for r in &batch.errors {
            self.counters.reject(r.1);
        }
        if batch.measurements_cleared > 0 {
            self.counters
                .measurements_cleared
                .fetch_add(u64::from(batch.measurements_cleared), Ordering::Relaxed);
        }
        ApplyReport {
            accepted: 0,
            errors: batch.errors.clone(),
            unjournaled: false,
        }
    }

    /// Fixes `range` of a batch, in order, then the standing queries they
    /// touched.
    ///
    /// The units are resolved and their records touched first, in a pass
    /// of independent lookups whose cache misses overlap; applying the
    /// fixes one by one then finds them in cache (a fix is mostly waiting
    /// on memory).
    fn apply_fixes(
        &mut self,
        engine: &mut Engine,
        batch: &IngestBatch,
        range: std::ops::Range<usize>,
        report: &mut ApplyReport,
    ) {
        let accepted_before = report.accepted;
        let fixes = batch.fixes.get(range.clone()).unwrap_or_default();
        self.slots.clear();
        self.slots
            .extend(fixes.iter().map(|(unit, _)| resolve(engine, batch, unit)));
        engine.warm_for_fixes(self.slots.iter().flatten().copied());
        for ((n, (_, fix)), &slot) in range.zip(fixes).zip(self.slots.iter()) {
            let i = batch.index.get(n).copied().unwrap_or(n as u32);
            let Some(slot) = slot else {
                self.counters.reject(Reject::TooManyUnits);
                report.errors.push((i, Reject::TooManyUnits));
                continue;
            };
            if !allowed(engine, slot, None, batch.agencies) {
                self.counters.reject(Reject::Forbidden);
                report.errors.push((i, Reject::Forbidden));
                continue;
            }
            if let Err(r) = self
                .validation
                .check_implied_speed(engine.last_position(slot), fix)
            {
                self.counters.reject(r);
                report.errors.push((i, r));
                continue;
            }
            match engine.apply(slot, fix, &mut self.out) {
                Applied::Moved | Applied::Older => report.accepted += 1,
                Applied::Duplicate => {
                    self.counters.reject(Reject::Duplicate);
                    report.errors.push((i, Reject::Duplicate));
                }
            }
        }
        self.counters
            .accepted
            .fetch_add(u64::from(report.accepted - accepted_before), Ordering::Relaxed);
        engine.flush(&mut self.out);
        engine.count_fixes_seen(fixes.len() as u64);
    }
}

/// Whether a sender limited to `mask` may place `slot` (giving it
/// `agency`): the unit's agency must be one of the sender's as the update
/// would make it, and as it is once the unit has been seen (a limited
/// sender cannot take over another agency's unit by renaming it).
fn allowed(engine: &Engine, slot: UnitSlot, agency: Option<Agency>, mask: Option<u8>) -> bool {
    let Some(mask) = mask else { return true };
    let ok = |a: Agency| mask & (1 << a as u8) != 0;
    let now = engine.unit_agency(slot).unwrap_or(Agency::Other);
    match agency {
        Some(a) => ok(a) && (engine.last_position(slot).is_none() || ok(now)),
        None => ok(now),
    }
}

/// The unit a fix or an update names, created on first sight while the
/// engine has room for it (`max_units`).
fn resolve(engine: &mut Engine, batch: &IngestBatch, u: &UnitRef) -> Option<UnitSlot> {
    match u {
        UnitRef::Key(k) => match engine.find_key(*k) {
            Some(s) => Some(s),
            None => room(engine).then(|| engine.intern_key(*k)),
        },
        UnitRef::Id(r) => {
            let id = batch.str(r);
            match engine.find_unit(id) {
                Some(s) => Some(s),
                None => room(engine).then(|| engine.intern_unit(id)),
            }
        }
    }
}

/// Whether the engine may take one more unit.
fn room(engine: &Engine) -> bool {
    engine.unit_count() < engine.config().max_units
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{EngineConfig, FeedChange, FeedEvent};
    use parking_lot::Mutex;

    /// Records what it was given, tagged with its name.
    struct Recorder(&'static str, Arc<Mutex<Vec<(&'static str, usize)>>>);

    impl OutputConsumer for Recorder {
        fn consume(&self, _: &Engine, out: &Outputs, _: Option<Instant>) {
            self.1.lock().push((self.0, out.feed.len()));
        }
    }

    #[test]
    fn a_fanout_hands_the_same_outputs_to_every_consumer_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fanout = Fanout(vec![
            Arc::new(Recorder("hub", seen.clone())),
            Arc::new(Recorder("outbox", seen.clone())),
        ]);
        let engine = Engine::new(EngineConfig::default()).expect("engine");
        let out = Outputs {
            feed: vec![FeedEvent {
                feed: 1,
                unit: UnitSlot(0),
                change: FeedChange::Moved,
            }],
            ..Outputs::default()
        };
        fanout.consume(&engine, &out, None);
        assert_eq!(*seen.lock(), vec![("hub", 1), ("outbox", 1)]);
    }
}
