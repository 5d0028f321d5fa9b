//! What every request handler and session shares: the handles into the
//! pipeline, the hub, the stored definitions, the server's clock and its
//! tuning. Built by `server::start`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use bluelight_engine::{Clock, SharedEngine};
use bluelight_ingest::queue::IngestQueue;
use bluelight_ingest::tasks::WriterTasks;

use crate::config::Tuning;

/// What every request handler shares.
pub struct AppState {
    /// The engine; the writer takes the lock a chunk at a time, handlers
    /// once per request, and nothing awaits while holding it.
    pub engine: SharedEngine,
    /// Into the writer (HTTP and WebSocket ingest, `demo`).
    pub queue: IngestQueue,
    /// Queries and feed copies for the writer to run.
    pub tasks: WriterTasks,
    /// The server's one clock.
    pub clock: Arc<dyn Clock>,
    /// Routes outputs to WebSocket sessions; subscriptions register here.
    pub hub: Arc<crate::hub::Hub>,
    /// When the server started.
    pub started: Instant,
    /// WebSocket sessions open.
    pub sessions: AtomicU64,
    /// Set once on shutdown: HTTP stops accepting, sessions close with 1001.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Configured tokens.
    pub tokens: crate::auth::Tokens,
    /// Fix received to alert frame sent, per frame.
    pub alert_latency: crate::latency::LatencyHistogram,
    /// One-shot nearest over WebSocket: request frame read to reply sent.
    pub nearest_latency: crate::latency::LatencyHistogram,
    /// Writes positions feeds at a low priority.
    pub feed_writer: crate::feed_writer::FeedWriter,
    /// Queue bounds, chunk sizes and timers.
    pub tuning: Tuning,
    /// With Redis: the journal stage.
    pub journal: Option<bluelight_ingest::journal::stage::JournalHandle>,
    /// With Redis: the alert outbox.
    pub outbox: Option<Arc<crate::outbox::Outbox>>,
}

impl AppState {
    /// Now, by the server's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
