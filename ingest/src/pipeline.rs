//! The pipeline wired in memory: transports → [`crate::queue`] →
//! [`crate::writer`] → the [`OutputConsumer`] it is given, plus
//! the [`crate::tasks`] others queue for the writer.
//!
//! A stage between the queue and the writer (a journal) takes the
//! [`Batches`](crate::queue::Batches) that [`queue::channel`] returns and
//! hands the writer its own; nothing before or after it changes. This
//! module wires the in-memory case, which `demo`, tests and benches use.

use std::sync::Arc;
use std::thread::JoinHandle;

use bluelight_engine::{Clock, SharedEngine};

use redis::aio::ConnectionManager;

use crate::journal::stage::{self, JournalConfig, JournalHandle};
use crate::queue::{self, Batches, IngestQueue};
use crate::tasks::{self, WriterTasks};
use crate::validate::ValidationConfig;
use crate::writer::{self, OutputConsumer, WriterConfig};

/// Tuning of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Batches the queue holds before senders wait (or UDP drops).
    pub queue_batches: usize,
    /// Queries, and bulk tasks, that may wait for the writer; past this,
    /// askers are told the engine is overloaded.
    pub task_queue: usize,
    /// Validation and position filters.
    pub validation: ValidationConfig,
    /// The writer's chunking and priority.
    pub writer: WriterConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_batches: 256,
            task_queue: 4096,
            validation: ValidationConfig::default(),
            writer: WriterConfig::default(),
        }
    }
}

/// A running pipeline's handles.
#[derive(Debug)]
pub struct Pipeline {
    /// Into the writer: cloned into every transport.
    pub queue: IngestQueue,
    /// Work for the writer to run with the engine in hand.
    pub tasks: WriterTasks,
    /// The writer thread; it ends once every clone of `queue` is dropped.
    pub writer: JoinHandle<()>,
}

/// Starts the writer over `engine` with the Redis journal between queue
/// and writer: entries numbered from `next` (what the replay found); a
/// follower's (`follow`) journals nothing until it is told to lead.
/// Call on a tokio runtime (the stage is a task).
///
/// # Errors
/// The writer thread cannot be started.
#[allow(clippy::too_many_arguments, reason = "each piece is wired once, here")]
pub fn start_journaled(
    engine: SharedEngine,
    cfg: PipelineConfig,
    clock: Arc<dyn Clock>,
    consumer: Arc<dyn OutputConsumer>,
    conn: ConnectionManager,
    snapshots: ConnectionManager,
    next: u64,
    follow: bool,
    journal: JournalConfig,
) -> std::io::Result<(Pipeline, JournalHandle)> {
    let (queue, batches) = queue::channel(cfg.queue_batches, cfg.validation.clone(), clock);
    let (batches, handle) = stage::start(conn, snapshots, batches, next, follow, journal);
    Ok((with_writer(engine, &cfg, queue, batches, consumer)?, handle))
}

/// Starts the writer over `engine` with nothing between queue and writer.
///
/// # Errors
/// The writer thread cannot be started.
pub fn start(
    engine: SharedEngine,
    cfg: PipelineConfig,
    clock: Arc<dyn Clock>,
    consumer: Arc<dyn OutputConsumer>,
) -> std::io::Result<Pipeline> {
    let (queue, batches) = queue::channel(cfg.queue_batches, cfg.validation.clone(), clock);
    with_writer(engine, &cfg, queue, batches, consumer)
}

/// The writer and its task queues on `batches`.
fn with_writer(
    engine: SharedEngine,
    cfg: &PipelineConfig,
    queue: IngestQueue,
    batches: Batches,
    consumer: Arc<dyn OutputConsumer>,
) -> std::io::Result<Pipeline> {
    let (tasks, task_queues) = tasks::channel(cfg.task_queue);
    let writer = writer::spawn(
        engine,
        batches,
        task_queues,
        consumer,
        queue.validation.clone(),
        cfg.writer.clone(),
    )?;
    Ok(Pipeline { queue, tasks, writer })
}
