//! The Redis journal: the stage between the queue and the writer that
//! makes the engine's state survive a restart, and the replay that brings
//! it back.
//!
//! Every command the writer applies (fixes, fence and rule changes, the
//! clock's ticks) is first appended to a Redis stream, many to an entry,
//! and handed to the writer only once Redis has it; so whatever a client
//! was told, and every alert anyone saw, comes from journaled input, and a
//! replay of the journal after the latest snapshot reproduces the engine
//! exactly (the same alerts with the same `seq`). Appends are pipelined:
//! while the writer applies one entry, the next ones are on their way.
//!
//! ## Layout
//!
//! * [`codec`] — an entry's bytes.
//! * [`stage`] — the stage itself: appends, periodic snapshots, trimming,
//!   and what it does while Redis is away.
//! * [`lease`] — one leader at a time, checked by Redis on every write.
//! * [`replay`] — start-up: the latest snapshot, then the journal after it.
//!
//! ## Keys (under the prefix; the server's own, PROTOCOL.md)
//!
//! * `journal` — a stream; entry `n-0` holds the commands of the n-th
//!   append in field `c`, and the leader's time of the append in `t`.
//! * `leader` — the lease: the leader's node id, with a time to live.
//! * `snapshot` — a hash: `engine` (the engine's snapshot), `next` (the
//!   first journal entry it does not cover), `seq`, `time_ms`.

pub mod codec;
pub mod lease;
pub mod replay;
pub mod stage;

/// Redis keys of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The journal stream.
    pub journal: String,
    /// The snapshot hash.
    pub snapshot: String,
    /// The leader's lease.
    pub lease: String,
}

impl Keys {
    /// The keys under `prefix` (e.g. `bluelight:`).
    pub fn new(prefix: &str) -> Self {
        Self {
            journal: format!("{prefix}journal"),
            snapshot: format!("{prefix}snapshot"),
            lease: format!("{prefix}leader"),
        }
    }
}
