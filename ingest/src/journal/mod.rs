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
//! * `history` — which history segments go with the snapshots.
//!
//! ## Keys (under the prefix; the server's own, PROTOCOL.md)
//!
//! * `journal` — a stream; entry `n-0` holds the commands of the n-th
//!   append in field `c`, and the leader's time of the append in `t`.
//! * `leader` — the lease: the leader's node id, with a time to live.
//! * `snapshot` — a hash: `next` (the first journal entry the snapshot
//!   does not cover), `time_ms`, and `history`: the history segments that
//!   go with it, oldest first, as `id:count:newest_ms` separated by commas.
//! * `snapshot:engine` — the engine's snapshot bytes (an older layout kept
//!   them in the hash's `engine` field: still read).
//! * `snapshot:staging` — the next snapshot's bytes while they are written,
//!   a megabyte at a time, so Redis never holds every client's appends
//!   behind one command of tens of megabytes.
//! * `history_seq` — the counter segment ids come from.
//! * `history:ID` — a history segment: the fixes history took between two
//!   snapshots (`bluelight_engine::HistoryLog`), deleted once retention or
//!   the history cap has passed all of it.

pub mod codec;
mod history;
pub mod lease;
pub mod replay;
pub mod stage;

/// Redis keys of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The journal stream.
    pub journal: String,
    /// The snapshot hash (where it covers to, its history segments).
    pub snapshot: String,
    /// The snapshot's engine bytes.
    pub snapshot_engine: String,
    /// Where the next snapshot's bytes are written, a piece at a time.
    pub snapshot_staging: String,
    /// The leader's lease.
    pub lease: String,
    /// History segments: this and the segment's id.
    pub history: String,
    /// The counter history segments take their ids from.
    pub history_seq: String,
}

/// A history segment a snapshot lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Its id (key `history:ID`); ids rise.
    pub id: u64,
    /// Records it holds.
    pub count: u64,
    /// The latest device time among them.
    pub newest_ms: i64,
}

impl Segment {
    /// A snapshot's `history` field; malformed items are left out (a
    /// segment not read is history not restored, never a wrong state).
    pub fn parse_list(s: &str) -> Vec<Segment> {
        s.split(',')
            .filter_map(|item| {
                let mut parts = item.split(':');
                let id = parts.next()?.parse().ok()?;
                let count = parts.next()?.parse().ok()?;
                let newest_ms = parts.next()?.parse().ok()?;
                Some(Segment { id, count, newest_ms })
            })
            .collect()
    }

    /// The `history` field for a list.
    pub fn format_list(list: &[Segment]) -> String {
        list.iter()
            .map(|s| format!("{}:{}:{}", s.id, s.count, s.newest_ms))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Keys {
    /// The keys under `prefix` (e.g. `bluelight:`).
    pub fn new(prefix: &str) -> Self {
        Self {
            journal: format!("{prefix}journal"),
            snapshot: format!("{prefix}snapshot"),
            snapshot_engine: format!("{prefix}snapshot:engine"),
            snapshot_staging: format!("{prefix}snapshot:staging"),
            lease: format!("{prefix}leader"),
            history: format!("{prefix}history:"),
            history_seq: format!("{prefix}history_seq"),
        }
    }
}
