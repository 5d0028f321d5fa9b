//! One WebSocket connection's outgoing side and its subscriptions: what the
//! hub fills and the socket loop drains.
//!
//! A subscription has one record, here, in the session that owns it
//! ([`Subscription`]): its engine id, its schedule and its waiting changes.
//! The hub holds only an index from engine ids to (session, sub id) for
//! routing, and the engine its own feed or query state.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::alert_record::AlertRecord;

/// Something to send on a session.
#[derive(Debug)]
pub enum Outgoing {
    /// A text frame.
    Text(String),
    /// A frame written elsewhere (a positions snapshot, text or binary).
    Frame(axum::extract::ws::Message),
    /// An alert for a subscription (its id shared by every alert routed
    /// to it: the writer routes tens of thousands a second).
    Alert(Arc<str>, Arc<AlertRecord>),
    /// A reply to a one-shot nearest request whose frame was read at the
    /// given instant: the session records the round trip when it is sent.
    Nearest(String, Instant),
}

pub use crate::feed_changes::FeedChanges;

/// When a rate-limited subscription may next send.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// At most one update this often (`1 / max_hz`).
    pub every: Duration,
    /// When the last update went (or, for a new feed, a spread start).
    pub last: tokio::time::Instant,
}

impl Schedule {
    /// When the next update may go.
    pub fn due(&self) -> tokio::time::Instant {
        self.last + self.every
    }
}

/// How a positions feed's `snapshot` and `positions` messages are written
/// (PROTOCOL.md "Positions in binary").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON text frames, the default.
    #[default]
    Json,
    /// Binary frames, `data/schema/positions.fbs`.
    FlatBuffers,
}

/// One subscription of a session: everything the server keeps about it
/// outside the engine.
#[derive(Debug)]
pub enum Subscription {
    /// `stream: positions`.
    Positions {
        /// The engine's feed.
        feed: u32,
        /// `max_hz`.
        schedule: Schedule,
        /// How its updates are written.
        encoding: Encoding,
        /// Changes waiting for the next update.
        changes: FeedChanges,
    },
    /// `stream: nearest` (standing).
    Nearest {
        /// The engine's standing query.
        query: u32,
        /// `max_hz`.
        schedule: Schedule,
        /// The answer changed since it was last sent.
        changed: bool,
    },
    /// `stream: alerts` (what it selects lives in the hub, which routes by it).
    Alerts,
}

/// One WebSocket connection's outgoing side.
///
/// Its locks are `parking_lot`'s: held for a push or a drain, never across
/// an await, and never poisoned, so a panic elsewhere cannot stop alerts.
#[derive(Debug)]
pub struct Session {
    /// Alerts replayed for `since_seq` (and the reply before them): sent
    /// before `queue`, bounded by the ring rather than the live cap, so a
    /// client resuming far behind is not closed for its own replay.
    pub replay: Mutex<VecDeque<Outgoing>>,
    /// Replies and live alerts, in order.
    pub queue: Mutex<VecDeque<Outgoing>>,
    /// This session's subscriptions by sub id.
    pub subscriptions: Mutex<HashMap<String, Subscription>>,
    /// Set when the session must close with 1013 (too slow).
    pub too_slow: AtomicBool,
    /// Wakes the session's sender.
    pub wake: Notify,
    /// Messages `queue` may hold before the session is too slow.
    queue_cap: usize,
}

impl Session {
    /// A session whose live queue holds at most `queue_cap` messages.
    pub fn new(queue_cap: usize) -> Self {
        Self {
            replay: Mutex::default(),
            queue: Mutex::default(),
            subscriptions: Mutex::default(),
            too_slow: AtomicBool::new(false),
            wake: Notify::new(),
            queue_cap,
        }
    }

    /// Queues a replayed message (no cap: the ring bounds it).
    pub fn push_replay(&self, m: Outgoing) {
        self.replay.lock().push_back(m);
        self.wake.notify_one();
    }

    /// Queues a message; a queue past its cap marks the session too slow.
    pub fn push(&self, m: Outgoing) {
        self.enqueue(std::iter::once(m));
    }

    /// Queues every message of `batch` (emptying it) under one lock and
    /// wakes the session once: the writer routes a chunk's alerts this
    /// way, not one lock, and one contended wake-up, an alert.
    pub fn push_all(&self, batch: &mut Vec<Outgoing>) {
        if !batch.is_empty() {
            self.enqueue(batch.drain(..));
        }
    }

    /// Queues what fits under the cap (what does not marks the session
    /// too slow: it closes and resumes with `since_seq`), then wakes it.
    fn enqueue(&self, msgs: impl ExactSizeIterator<Item = Outgoing>) {
        {
            let mut q = self.queue.lock();
            let room = self.queue_cap.saturating_sub(q.len());
            if msgs.len() > room {
                self.too_slow.store(true, Ordering::Relaxed);
            }
            q.extend(msgs.take(room));
        }
        self.wake.notify_one();
    }

    /// Everything queued, replays first; and how many of them are replays.
    pub fn drain(&self) -> (Vec<Outgoing>, usize) {
        let mut all: Vec<Outgoing> = self.replay.lock().drain(..).collect();
        let replayed = all.len();
        all.extend(self.queue.lock().drain(..));
        (all, replayed)
    }

    /// Messages waiting.
    pub fn queued(&self) -> usize {
        self.queue.lock().len() + self.replay.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn texts(n: usize) -> Vec<Outgoing> {
        (0..n).map(|i| Outgoing::Text(i.to_string())).collect()
    }

    /// A batch is queued in order with one wake-up; one past the cap
    /// queues what fits and marks the session too slow, as single pushes do.
    #[test]
    fn a_batch_is_queued_in_order_up_to_the_cap() {
        let s = Session::new(5);
        let mut batch = texts(3);
        s.push_all(&mut batch);
        assert!(batch.is_empty());
        assert!(s.wake.notified().now_or_never().is_some(), "woken");
        assert!(s.wake.notified().now_or_never().is_none(), "once");
        assert!(!s.too_slow.load(Ordering::Relaxed));
        let mut batch = texts(4);
        s.push_all(&mut batch);
        assert!(
            batch.is_empty(),
            "what did not fit is dropped: the session closes"
        );
        assert!(s.too_slow.load(Ordering::Relaxed));
        let (queued, replayed) = s.drain();
        let queued: Vec<String> = queued
            .into_iter()
            .map(|m| match m {
                Outgoing::Text(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            (queued, replayed),
            (
                vec!["0", "1", "2", "0", "1"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                0
            )
        );
    }
}
