//! The bounded queue between the transports and the writer: the first hop
//! of a fix after its socket. Transports hold an [`IngestQueue`] (cheap to
//! clone); the far end, [`Batches`], goes to the next stage (the writer,
//! or a journal in front of it).
//!
//! Stream transports `send(...).await`, so a full queue slows them (TCP flow
//! control reaches the device) and nothing is lost; UDP uses `try_send` and
//! counts what it drops. Batches are recycled through a small pool so
//! steady state does not allocate.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bluelight_engine::Clock;
use tokio::sync::{mpsc, oneshot};

use crate::batch::IngestBatch;
use crate::definitions::{FenceDef, RuleDef};
use crate::validate::{IngestCounters, Reject, ValidationConfig};

/// What the writer did with a batch (the HTTP reply of `POST /v1/fixes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Fixes applied (including ones older than their unit's latest, which
    /// go to history).
    pub accepted: u32,
    /// Refused fixes: index in the input and reason (decode-time refusals
    /// first, then the writer's).
    pub errors: Vec<(u32, Reject)>,
    /// With a journal: the fixes were applied in memory but Redis did not
    /// have them within the acknowledgement timeout, so they are not
    /// acknowledged as durable (a snapshot will hold them once Redis is
    /// back, unless the server stops first).
    pub unjournaled: bool,
}

/// Why a change (a fence or a rule) was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The engine refused it: the message says why.
    #[error("{0}")]
    Refused(String),
    /// Applied in memory, but Redis did not have it within the
    /// acknowledgement timeout.
    #[error("the change was applied in memory but could not be journaled: Redis is unavailable")]
    Unjournaled,
}

/// Which history a snapshot carries ([`Engine::take_history_log`]).
///
/// [`Engine::take_history_log`]: bluelight_engine::Engine::take_history_log
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotHistory {
    /// None (history is not kept durable).
    None,
    /// What history took since the last snapshot.
    SinceLast,
    /// All of it (the segments written so far are not known to be whole).
    Whole,
}

/// What the writer does, in the order it was queued. Every change to the
/// engine's durable state is one of these, so the ordered stream of
/// commands (which a journal records) reproduces the engine exactly: the
/// same units, fences, memberships and alerts with the same `seq`.
#[derive(Debug)]
pub enum Command {
    /// Fixes and unit metadata.
    Fixes(IngestBatch),
    /// Creates or replaces a fence; `now_ms` is the server's clock when it
    /// was asked (a replay must not read the clock again).
    PutFence {
        /// The definition, parsed and checked.
        def: Arc<FenceDef>,
        /// The server's time of the change.
        now_ms: i64,
    },
    /// Removes a fence.
    RemoveFence(Arc<str>),
    /// Creates or replaces a proximity rule.
    PutRule(Arc<RuleDef>),
    /// Removes a proximity rule.
    RemoveRule(Arc<str>),
    /// One part of the clock's scan (staleness, dwell, history expiry).
    Tick {
        /// The server's time.
        now_ms: i64,
        /// Which part, in `0..parts`.
        part: u32,
        /// Parts a whole scan is cut into.
        parts: u32,
    },
    /// Copies the engine's durable state out ([`Engine::freeze`]) and
    /// sends it back with what history took since the last one: the
    /// journal asks for it at a place in the stream, so the snapshot covers
    /// exactly the commands before it. Changes no state; never journaled.
    ///
    /// [`Engine::freeze`]: bluelight_engine::Engine::freeze
    Snapshot {
        /// Which history goes with it.
        history: SnapshotHistory,
        /// Where the copy goes.
        reply: oneshot::Sender<(bluelight_engine::Frozen, bluelight_engine::HistoryLog)>,
    },
    /// Puts another engine in place of the writer's (a follower that found
    /// a hole in the journal reloads the leader's newer snapshot). Never
    /// journaled.
    Replace(Box<bluelight_engine::Engine>),
}

impl Command {
    /// What it is, in a word or two (for logs).
    pub fn what(&self) -> &'static str {
        match self {
            Self::Fixes(_) => "a batch of fixes",
            Self::PutFence { .. } => "a fence put",
            Self::RemoveFence(_) => "a fence removal",
            Self::PutRule(_) => "a rule put",
            Self::RemoveRule(_) => "a rule removal",
            Self::Tick { .. } => "a part of the clock's scan",
            Self::Snapshot { .. } => "a snapshot's copy",
            Self::Replace(_) => "an engine replaced",
        }
    }
}

/// Where the writer answers a command, if its sender waits.
#[derive(Debug)]
pub enum Reply {
    /// The report of a [`Command::Fixes`].
    Applied(oneshot::Sender<ApplyReport>),
    /// The result of a change: `Ok(created)` or why it was not acknowledged.
    Changed(oneshot::Sender<Result<bool, ChangeError>>),
}

/// A command on its way to the writer.
#[derive(Debug)]
pub struct Job {
    /// What to do.
    pub command: Command,
    /// Where to answer, if the sender waits.
    pub reply: Option<Reply>,
}

/// The queue has closed (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ingest pipeline has stopped")]
pub struct Stopped;

/// Emptied batches waiting to be filled again.
#[derive(Debug, Clone, Default)]
pub struct BatchPool(Arc<parking_lot::Mutex<Vec<IngestBatch>>>);

impl BatchPool {
    /// Batches the pool keeps; more are freed.
    const KEEP: usize = 64;

    /// An empty batch, recycled when possible.
    pub fn take(&self) -> IngestBatch {
        self.0.lock().pop().unwrap_or_default()
    }

    /// Empties `batch` and keeps it for reuse.
    pub fn give_back(&self, mut batch: IngestBatch) {
        batch.clear();
        let mut pool = self.0.lock();
        if pool.len() < Self::KEEP {
            pool.push(batch);
        }
    }
}

/// The transports' end of the queue, cloned into every listener.
#[derive(Debug, Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<Job>,
    pool: BatchPool,
    /// Accepted and refused fixes, shared with the writer.
    pub counters: Arc<IngestCounters>,
    /// Validation settings used by the decoders.
    pub validation: Arc<ValidationConfig>,
    /// The server's clock: decoders judge "too old" and "future" by it.
    pub clock: Arc<dyn Clock>,
}

/// The far end of the queue: what the next stage reads.
#[derive(Debug)]
pub struct Batches {
    rx: mpsc::Receiver<Job>,
    /// Where the last stage gives emptied batches back.
    pub pool: BatchPool,
    /// The same counters the transports count into.
    pub counters: Arc<IngestCounters>,
}

impl Batches {
    /// The far end of a later stage's queue (`rx`), sharing `before`'s pool
    /// and counters: what a stage between the queue and the writer hands
    /// the writer.
    pub fn relay(rx: mpsc::Receiver<Job>, before: &Batches) -> Self {
        Self {
            rx,
            pool: before.pool.clone(),
            counters: before.counters.clone(),
        }
    }

    /// The next job, waiting for one; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Job> {
        self.rx.recv().await
    }

    /// The next job if one waits now.
    pub fn try_recv(&mut self) -> Option<Job> {
        self.rx.try_recv().ok()
    }
}

/// A queue of `capacity` batches: the transports' end and the far end.
pub fn channel(
    capacity: usize,
    validation: ValidationConfig,
    clock: Arc<dyn Clock>,
) -> (IngestQueue, Batches) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let pool = BatchPool::default();
    let counters: Arc<IngestCounters> = Arc::default();
    let queue = IngestQueue {
        tx,
        pool: pool.clone(),
        counters: counters.clone(),
        validation: Arc::new(validation),
        clock,
    };
    (queue, Batches { rx, pool, counters })
}

impl IngestQueue {
    /// An empty batch, recycled when possible.
    pub fn batch(&self) -> IngestBatch {
        self.pool.take()
    }

    /// Now, by the server's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Sends a batch, waiting while the queue is full (stream transports).
    ///
    /// # Errors
    /// The queue has closed.
    pub async fn send(&self, mut batch: IngestBatch) -> Result<(), Stopped> {
        batch.received.get_or_insert_with(Instant::now);
        self.tx
            .send(Job {
                command: Command::Fixes(batch),
                reply: None,
            })
            .await
            .map_err(|_| Stopped)
    }

    /// Sends a batch and waits for the writer's report (HTTP).
    ///
    /// # Errors
    /// The queue has closed, or the batch was dropped unapplied.
    pub async fn send_and_report(&self, batch: IngestBatch) -> Result<ApplyReport, Stopped> {
        self.send_for_report(batch).await?.await.map_err(|_| Stopped)
    }

    /// Sends a batch and returns where its report will come, without
    /// waiting for it (a sender that pipelines its acknowledgements).
    ///
    /// # Errors
    /// The queue has closed.
    pub async fn send_for_report(
        &self,
        mut batch: IngestBatch,
    ) -> Result<oneshot::Receiver<ApplyReport>, Stopped> {
        batch.received.get_or_insert_with(Instant::now);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                command: Command::Fixes(batch),
                reply: Some(Reply::Applied(reply)),
            })
            .await
            .map_err(|_| Stopped)?;
        Ok(rx)
    }

    /// Sends a change (a fence or a rule) and waits for the writer's
    /// answer: `Ok(created)`, or why the engine refused it.
    ///
    /// # Errors
    /// The queue has closed, or the change was dropped unapplied.
    pub async fn change(&self, command: Command) -> Result<Result<bool, ChangeError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                command,
                reply: Some(Reply::Changed(reply)),
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Queues a command nobody waits for, waiting for room (a follower
    /// applying the leader's journal).
    ///
    /// # Errors
    /// The queue has closed.
    pub async fn send_command(&self, command: Command) -> Result<(), Stopped> {
        self.tx
            .send(Job { command, reply: None })
            .await
            .map_err(|_| Stopped)
    }

    /// Queues a command nobody waits for if there is room (the clock's
    /// ticks: a tick skipped when the writer is behind is made up by the
    /// next, which scans with a later time).
    pub fn try_command(&self, command: Command) -> bool {
        self.tx.try_send(Job { command, reply: None }).is_ok()
    }

    /// Sends a batch if the queue has room; otherwise drops it and counts
    /// its fixes (UDP).
    pub fn try_send(&self, mut batch: IngestBatch) -> bool {
        batch.received.get_or_insert_with(Instant::now);
        let n = batch.fixes.len() as u64;
        let job = Job {
            command: Command::Fixes(batch),
            reply: None,
        };
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                self.counters.udp_dropped.fetch_add(n.max(1), Ordering::Relaxed);
                false
            }
        }
    }

    /// Sends a batch if the queue has room; otherwise gives it back,
    /// untouched (for a transport that can hold it a moment and add to
    /// it): `None` when sent.
    pub fn offer(&self, mut batch: IngestBatch) -> Option<IngestBatch> {
        batch.received.get_or_insert_with(Instant::now);
        let job = Job {
            command: Command::Fixes(batch),
            reply: None,
        };
        match self.tx.try_send(job) {
            Ok(()) => None,
            Err(e) => match e.into_inner().command {
                Command::Fixes(b) => Some(b),
                _ => Some(IngestBatch::default()),
            },
        }
    }

    /// Batches waiting for the next stage.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}
