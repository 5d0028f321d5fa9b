//! Work the writer runs for others with the engine in hand: the busy reads
//! (a nearest query, a positions feed's copy) do not take the engine lock
//! on a runtime worker. A reader holding the lock could lose its CPU while
//! the writer, and every fix behind it, waits; and a worker blocked on the
//! lock stalls every session on it.
//!
//! A task carries its own way back: it pushes its answer onto the asking
//! session's queue (built before it, handed down), so the writer never
//! knows who asked.
//!
//! * Queries run before the next chunk of fixes: they wait at most a chunk.
//! * Bulk work runs a bounded step at a time, in slices of the writer's
//!   `bulk_slice` while no fixes wait, and between chunks only when it has
//!   had no slice for its `bulk_max_wait`. Bulk tasks take turns a step
//!   each, so an analyst's export of many steps does not hold up a map's
//!   feed copy of a few.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bluelight_engine::Engine;
use tokio::sync::mpsc;

/// A query the writer runs once, with the engine in hand, between chunks.
pub type EngineTask = Box<dyn FnOnce(&mut Engine) + Send>;

/// Bulk work the writer runs a step at a time between chunks of fixes:
/// each call does a bounded step and returns whether the work is done.
pub type BulkTask = Box<dyn FnMut(&mut Engine) -> bool + Send>;

/// The askers' end: cloned into whatever needs the writer to read for it.
#[derive(Clone, Debug)]
pub struct WriterTasks {
    queries: mpsc::Sender<EngineTask>,
    bulk: mpsc::Sender<BulkTask>,
    /// How many bulk tasks the writer has taken in and not finished.
    bulk_under_way: Arc<AtomicUsize>,
}

/// The writer's end of the task queues.
pub struct TaskQueues {
    pub(crate) queries: mpsc::Receiver<EngineTask>,
    pub(crate) bulk: mpsc::Receiver<BulkTask>,
    /// The bulk tasks under way, in turn order: about the queue's
    /// capacity at most, so the two together stay bounded.
    under_way: VecDeque<BulkTask>,
    /// `under_way`'s length, for the askers' [`WriterTasks::queued`].
    under_way_now: Arc<AtomicUsize>,
    /// When bulk work last had a slice.
    last_bulk: Instant,
}

impl std::fmt::Debug for TaskQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskQueues")
            .field("queries", &self.queries.len())
            .field("bulk", &self.bulk.len())
            .finish_non_exhaustive()
    }
}

/// Task queues of `capacity` each: past it, askers are told the engine is
/// overloaded.
pub fn channel(capacity: usize) -> (WriterTasks, TaskQueues) {
    let (queries_tx, queries) = mpsc::channel(capacity.max(1));
    let (bulk_tx, bulk) = mpsc::channel(capacity.max(1));
    let under_way_now = Arc::new(AtomicUsize::new(0));
    (
        WriterTasks {
            queries: queries_tx,
            bulk: bulk_tx,
            bulk_under_way: under_way_now.clone(),
        },
        TaskQueues {
            queries,
            bulk,
            under_way: VecDeque::new(),
            under_way_now,
            last_bulk: Instant::now(),
        },
    )
}

impl WriterTasks {
    /// A place in the writer's query queue, or `None` when it is full (or
    /// the writer has stopped). Reserve first, then take the work out of
    /// wherever it waits: nothing is lost when there is no room.
    pub fn query_slot(&self) -> Option<QuerySlot<'_>> {
        self.queries.try_reserve().ok().map(QuerySlot)
    }

    /// Like [`query_slot`](Self::query_slot), for bulk work done in steps
    /// (a positions feed's copy); tasks under way take turns a step each.
    pub fn bulk_slot(&self) -> Option<BulkSlot<'_>> {
        self.bulk.try_reserve().ok().map(BulkSlot)
    }

    /// Queues bulk work from a blocking thread (an export's), waiting for
    /// room. False when the writer has stopped. Never call it on a runtime
    /// worker: it blocks.
    pub fn bulk_blocking(&self, step: impl FnMut(&mut Engine) -> bool + Send + 'static) -> bool {
        self.bulk.blocking_send(Box::new(step)).is_ok()
    }

    /// Queries waiting for the writer now, and bulk tasks waiting or under
    /// way (for `/metrics`: a query queue that fills says the writer has
    /// stopped taking work).
    pub fn queued(&self) -> (usize, usize) {
        let waiting = |max: usize, free: usize| max.saturating_sub(free);
        (
            waiting(self.queries.max_capacity(), self.queries.capacity()),
            waiting(self.bulk.max_capacity(), self.bulk.capacity())
                + self.bulk_under_way.load(Ordering::Relaxed),
        )
    }
}

/// A reserved place in the writer's query queue ([`WriterTasks::query_slot`]).
pub struct QuerySlot<'a>(mpsc::Permit<'a, EngineTask>);

impl QuerySlot<'_> {
    /// Runs `f` on the writer thread with the engine in hand, after the
    /// chunk of fixes in progress.
    pub fn run(self, f: impl FnOnce(&mut Engine) + Send + 'static) {
        self.0.send(Box::new(f));
    }
}

/// A reserved place in the writer's bulk queue ([`WriterTasks::bulk_slot`]).
pub struct BulkSlot<'a>(mpsc::Permit<'a, BulkTask>);

impl BulkSlot<'_> {
    /// Runs `step` on the writer, with the engine in hand, until it
    /// returns true (done). Each call should do a bounded piece of work.
    pub fn run(self, step: impl FnMut(&mut Engine) -> bool + Send + 'static) {
        self.0.send(Box::new(step));
    }
}

impl TaskQueues {
    /// A query waiting now.
    pub(crate) fn try_query(&mut self) -> Option<EngineTask> {
        self.queries.try_recv().ok()
    }

    /// Whether bulk work waits.
    pub(crate) fn bulk_waiting(&self) -> bool {
        !self.under_way.is_empty() || !self.bulk.is_empty()
    }

    /// Runs the queries waiting now (not ones queued while they run: the
    /// fixes come next).
    pub(crate) fn run_queries(&mut self, engine: &mut Engine) {
        for _ in 0..self.queries.len() {
            match self.queries.try_recv() {
                Ok(t) => run_query(engine, t),
                Err(_) => break,
            }
        }
    }

    /// Whether bulk work waits and has had no slice for `max_wait`.
    pub(crate) fn bulk_starved(&self, max_wait: Duration) -> bool {
        self.bulk_waiting() && self.last_bulk.elapsed() >= max_wait
    }

    /// Takes `task` in, behind the bulk tasks under way.
    pub(crate) fn take_in(&mut self, task: BulkTask) {
        self.under_way.push_back(task);
        self.under_way_now.store(self.under_way.len(), Ordering::Relaxed);
    }

    /// Runs bulk steps for `slice` (at least one step when there is bulk
    /// work, so it always moves), a step of each task under way in turn.
    pub(crate) fn run_bulk(&mut self, engine: &mut Engine, slice: Duration) {
        self.step_bulk(engine, slice);
        self.under_way_now.store(self.under_way.len(), Ordering::Relaxed);
    }

    fn step_bulk(&mut self, engine: &mut Engine, slice: Duration) {
        let started = Instant::now();
        self.last_bulk = started;
        loop {
            while self.under_way.len() < self.bulk.max_capacity() {
                match self.bulk.try_recv() {
                    Ok(t) => self.under_way.push_back(t),
                    Err(_) => break,
                }
            }
            let Some(mut task) = self.under_way.pop_front() else {
                return;
            };
            // A step that panics ends its task, not the writer.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(engine)));
            match step {
                Ok(false) => self.under_way.push_back(task),
                Ok(true) => {}
                Err(_) => tracing::error!("a bulk engine task panicked on the writer"),
            }
            if started.elapsed() >= slice {
                return;
            }
        }
    }
}

/// Runs one query; one bad query must not stop the writer, and with it
/// every fix.
pub(crate) fn run_query(engine: &mut Engine, task: EngineTask) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(engine))).is_err() {
        tracing::error!("an engine task panicked on the writer");
    }
}
