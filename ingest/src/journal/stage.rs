//! The journal stage: takes jobs from the queue, appends their commands to
//! the Redis stream, and hands them to the writer once Redis has them.
//!
//! * **In order.** Entries get consecutive ids (`n-0`) and are handed on in
//!   that order; a snapshot is asked of the writer between two entries, so
//!   it covers exactly the entries before its `next`.
//! * **Pipelined.** Up to `in_flight` appends are on their way at once on
//!   one multiplexed connection (Redis runs them in order); jobs wait only
//!   for their own entry.
//! * **Redis away.** The first failed append turns the stage *down*: from
//!   then on jobs go to the writer at once (the server keeps serving from
//!   memory), but their replies are held, and entry numbers skip one, so a
//!   replay from an older snapshot sees the hole and stops before it
//!   instead of applying what comes after without what is missing. Every
//!   second the stage tries Redis; once it answers, the stage is *catching
//!   up*: it asks the writer for a snapshot (which covers everything
//!   applied meanwhile) and journals new entries after it, still holding
//!   replies; once the snapshot is written, every held reply is answered
//!   as journaled. A reply held longer than `ack_timeout` is answered "not
//!   journaled" (`ApplyReport::unjournaled`, [`ChangeError::Unjournaled`]).
//!   The catch-up is one snapshot, so what the stage holds while Redis is
//!   away is bounded by the senders waiting for an answer, not by the
//!   fixes that arrive.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use bluelight_engine::{Frozen, HistoryLog};
use redis::AsyncCommands;

use super::codec;
use super::history::Segments;
use super::lease::Lease;
use super::{Keys, Segment};
use crate::queue::{ApplyReport, Batches, ChangeError, Command, Job, Reply, SnapshotHistory};

/// A snapshot is not asked for on size alone before this much journal
/// (a small fleet's snapshot is tiny; one a few seconds is waste).
const MIN_JOURNAL_BEFORE_SNAPSHOT: u64 = 16 << 20;

/// Snapshots on size alone come no closer than this: each holds the
/// writer for its copy (tens of milliseconds at a million units).
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(5);

/// Tuning of the journal stage.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalConfig {
    /// The deployment's keys.
    pub keys: Keys,
    /// An entry is closed once it holds this many bytes (more jobs wait
    /// for the next): big enough that Redis's per-command cost is small
    /// beside the bytes, small enough that one entry is applied quickly.
    pub entry_bytes: usize,
    /// Appends on their way at once.
    pub in_flight: usize,
    /// Time between snapshots (each trims the journal behind it); one is
    /// also taken once the journal since the last outgrows it (and 16 MiB).
    pub snapshot_every: Duration,
    /// How long a sender waiting for an acknowledgement waits while Redis
    /// is away before it is told "not journaled".
    pub ack_timeout: Duration,
    /// Jobs queued between the stage and the writer.
    pub writer_queue: usize,
    /// This node's claim on the leader lease: every append and snapshot
    /// checks it in Redis.
    pub lease: Lease,
    /// How long history keeps a fix (the engine's), so segments past it go.
    pub history_retention: Duration,
    /// The most fixes history holds (the engine's), so segments past it go.
    pub history_max_fixes: u64,
    /// Whether snapshots carry history segments (else they delete any).
    pub durable_history: bool,
}

impl JournalConfig {
    /// Defaults for the keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        let keys = Keys::new(prefix);
        Self {
            lease: Lease::new(keys.lease.clone(), Duration::from_secs(10)),
            keys,
            entry_bytes: 256 * 1024,
            in_flight: 8,
            snapshot_every: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(5),
            writer_queue: 64,
            history_retention: Duration::from_secs(3600),
            history_max_fixes: 20_000_000,
            durable_history: true,
        }
    }
}

/// What the journal is doing, for health and metrics.
#[derive(Debug, Default)]
pub struct JournalStatus {
    /// Redis took the last append (or snapshot) and the journal has no hole.
    pub up: AtomicBool,
    /// Entries appended.
    pub entries: AtomicU64,
    /// Bytes appended.
    pub bytes: AtomicU64,
    /// Appends or snapshot writes that failed.
    pub failures: AtomicU64,
    /// Commands applied while Redis was away (a snapshot holds them once
    /// it is back).
    pub unjournaled_commands: AtomicU64,
    /// Senders told "not journaled" (their fixes or change are in memory
    /// only until the next snapshot).
    pub not_acknowledged: AtomicU64,
    /// Snapshots written.
    pub snapshots: AtomicU64,
    /// Size of the latest snapshot, bytes.
    pub snapshot_bytes: AtomicU64,
    /// Size of the latest snapshot's history segment, bytes.
    pub history_segment_bytes: AtomicU64,
    /// How long copying the state out for the latest snapshot held the
    /// writer, µs.
    pub snapshot_copy_us: AtomicU64,
    /// How long encoding the latest snapshot took (off the writer), µs.
    pub snapshot_encode_us: AtomicU64,
    /// Another server holds the leader lease: this one must stop writing.
    pub fenced: AtomicBool,
}

/// What can be asked of a running stage.
#[derive(Debug)]
enum Ask {
    /// A snapshot now; answered once written.
    Snapshot(oneshot::Sender<bool>),
    /// Stop following and journal from entry `next` on (a promoted
    /// follower, which holds the lease now).
    Lead(u64, oneshot::Sender<()>),
}

/// Asks the stage for a snapshot now (shutdown), or to lead.
#[derive(Debug, Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<Ask>,
    /// The stage's state.
    pub status: Arc<JournalStatus>,
}

impl JournalHandle {
    /// Writes a snapshot of everything handed to the writer so far and
    /// trims the journal behind it; `false` if Redis did not take it.
    pub async fn snapshot_now(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Ask::Snapshot(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// A follower's stage starts journaling, entries numbered from `next`
    /// (past everything the journal holds); the caller holds the lease.
    pub async fn lead(&self, next: u64) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Ask::Lead(next, tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the stage on the current tokio runtime: jobs from `batches` are
/// journaled (entries numbered from `next`) and handed on through the
/// returned `Batches`, which the writer takes. A follower's stage
/// (`follow`) hands jobs on unjournaled until [`JournalHandle::lead`].
pub fn start(
    conn: ConnectionManager,
    snapshots: ConnectionManager,
    batches: Batches,
    next: u64,
    follow: bool,
    cfg: JournalConfig,
) -> (Batches, JournalHandle) {
    let (to_writer, writer_rx) = mpsc::channel(cfg.writer_queue.max(1));
    let (ask_tx, ask_rx) = mpsc::channel(4);
    let status = Arc::new(JournalStatus::default());
    status.up.store(true, Ordering::Relaxed);
    let out = Batches::relay(writer_rx, &batches);
    let segments = Segments {
        list: Vec::new(),
        whole: true,
        retention_ms: cfg.history_retention.as_millis() as i64,
        max_fixes: cfg.history_max_fixes,
    };
    let stage = Stage {
        segments,
        conn,
        snapshots,
        from: batches,
        to_writer,
        asks: ask_rx,
        cfg,
        status: status.clone(),
        next,
        forwarded: next,
        mode: if follow { Mode::Follow } else { Mode::Up },
        held: VecDeque::new(),
        snapshot: None,
        last_snapshot: Instant::now(),
        journal_since_snapshot: 0,
    };
    tokio::spawn(stage.run());
    (out, JournalHandle { tx: ask_tx, status })
}

/// An append on its way: its entry number, result, and jobs.
type Append =
    std::pin::Pin<Box<dyn std::future::Future<Output = (u64, redis::RedisResult<()>, Vec<Job>)> + Send>>;

/// A reply held back while Redis is away.
struct Held {
    /// The sender's reply.
    reply: Reply,
    /// The writer's answer, taken in its place.
    answer: HeldAnswer,
    /// After this the sender is told "not journaled".
    deadline: Instant,
    /// The snapshot that holds it must be asked for after this many jobs
    /// were handed on (its place in the stream).
    after: u64,
}

enum HeldAnswer {
    Applied(oneshot::Receiver<ApplyReport>),
    Changed(oneshot::Receiver<Result<bool, ChangeError>>),
}

/// A snapshot asked of the writer, not yet written.
struct PendingSnapshot {
    /// The state and the history log, when the writer has copied them out.
    frozen: oneshot::Receiver<(Frozen, HistoryLog)>,
    /// Which history it asked for.
    history: SnapshotHistory,
    /// The first entry it does not cover.
    next: u64,
    /// Jobs handed on before it (held replies up to here are covered).
    covers: u64,
    /// Who waits for it (shutdown).
    waiters: Vec<oneshot::Sender<bool>>,
    /// The write, once under way: the new segment list once written.
    write: Option<tokio::task::JoinHandle<Option<Vec<Segment>>>>,
}

/// Whether the journal holds everything handed on.
enum Mode {
    /// Every job handed on is journaled, in order, with no hole.
    Up,
    /// Redis is away: jobs are handed on unjournaled, replies held.
    Down {
        /// When Redis was last tried.
        tried: Instant,
    },
    /// Redis is back and the snapshot that covers the hole is on its way:
    /// jobs are journaled after it, replies held until it is written.
    CatchingUp,
    /// A follower: jobs come from the journal and are handed on as they
    /// are.
    Follow,
}

struct Stage {
    conn: ConnectionManager,
    /// A second connection: a snapshot's tens of megabytes must not sit
    /// in front of the appends on the same socket.
    snapshots: ConnectionManager,
    from: Batches,
    to_writer: mpsc::Sender<Job>,
    asks: mpsc::Receiver<Ask>,
    cfg: JournalConfig,
    status: Arc<JournalStatus>,
    /// The next entry's number.
    next: u64,
    /// Jobs handed to the writer so far (a position in the stream).
    forwarded: u64,
    mode: Mode,
    held: VecDeque<Held>,
    snapshot: Option<PendingSnapshot>,
    last_snapshot: Instant,
    /// Bytes journaled since the last snapshot was asked for.
    journal_since_snapshot: u64,
    /// The history segments in Redis.
    segments: Segments,
}

impl Stage {
    async fn run(mut self) {
        if !matches!(self.mode, Mode::Follow) {
            self.read_segments().await;
        }
        let mut in_flight: FuturesOrdered<Append> = FuturesOrdered::new();
        let mut every = tokio::time::interval(Duration::from_millis(100));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        let mut buf = Vec::new();
        while open || !in_flight.is_empty() {
            tokio::select! {
                biased;
                Some((n, result, jobs)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(()) => {
                            self.status.entries.fetch_add(1, Ordering::Relaxed);
                            if matches!(self.mode, Mode::Up) {
                                for job in jobs {
                                    self.hand_on(job).await;
                                }
                            } else {
                                // Appended after a hole: durable once the
                                // snapshot that covers the hole is written.
                                for job in jobs {
                                    self.hand_on_held(job).await;
                                }
                            }
                        }
                        Err(e) => {
                            self.status.failures.fetch_add(1, Ordering::Relaxed);
                            if !matches!(self.mode, Mode::Down { .. }) {
                                tracing::error!(error = %e, entry = n, "Redis did not take a journal entry: serving from memory; acknowledgements wait until a snapshot is written");
                                self.go_down();
                            }
                            for job in jobs {
                                self.hand_on_held(job).await;
                            }
                        }
                    }
                }
                job = self.from.recv(), if open && in_flight.len() < self.cfg.in_flight => {
                    let Some(job) = job else {
                        open = false;
                        continue;
                    };
                    let mut jobs = vec![job];
                    if matches!(self.mode, Mode::Follow) {
                        while let Some(j) = self.from.try_recv() {
                            jobs.push(j);
                        }
                        for job in jobs {
                            self.hand_on(job).await;
                        }
                        continue;
                    }
                    if matches!(self.mode, Mode::Down { .. }) {
                        while let Some(j) = self.from.try_recv() {
                            jobs.push(j);
                        }
                        for job in jobs {
                            self.hand_on_held(job).await;
                        }
                        continue;
                    }
                    // Fill the entry with what waits now.
                    let mut size = 0;
                    while size < self.cfg.entry_bytes {
                        match self.from.try_recv() {
                            Some(j) => {
                                size += approx_size(&j.command);
                                jobs.push(j);
                            }
                            None => break,
                        }
                    }
                    codec::encode(jobs.iter().map(|j| &j.command), &mut buf);
                    let n = self.next;
                    self.next += 1;
                    self.status.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    self.journal_since_snapshot += buf.len() as u64;
                    let mut conn = self.conn.clone();
                    let (journal, lease, me) = (self.cfg.keys.journal.clone(), self.cfg.lease.key.clone(), self.cfg.lease.me.clone());
                    let bytes = buf.clone();
                    in_flight.push_back(Box::pin(async move {
                        // EVAL, not EVALSHA: a script Redis does not know yet
                        // is loaded and retried one call at a time, which
                        // would let a later entry overtake an earlier one.
                        let r = redis::cmd("EVAL")
                            .arg(super::lease::APPEND)
                            .arg(2)
                            .arg(lease)
                            .arg(journal)
                            .arg(me)
                            .arg(format!("{n}-0"))
                            .arg(bytes)
                            .arg(now_ms())
                            .query_async::<()>(&mut conn)
                            .await;
                        (n, r, jobs)
                    }));
                }
                Some(ask) = self.asks.recv() => match ask {
                    Ask::Snapshot(waiter) => self.ask_snapshot(Some(waiter)).await,
                    Ask::Lead(next, done) => {
                        // It logged no history while following.
                        self.read_segments().await;
                        self.segments.whole = false;
                        self.next = self.next.max(next);
                        self.mode = Mode::Up;
                        self.last_snapshot = Instant::now();
                        tracing::warn!(next = self.next, "leading: journaling from here");
                        let _ = done.send(());
                    }
                },
                _ = every.tick() => {
                    self.housekeeping().await;
                }
            }
        }
        // The queue has closed: a last snapshot, then the writer's queue
        // closes behind us.
        if matches!(self.mode, Mode::Follow) {
            return;
        }
        self.ask_snapshot(None).await;
        while self.snapshot.is_some() {
            self.housekeeping().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Hands a journaled job to the writer.
    async fn hand_on(&mut self, job: Job) {
        self.forwarded += 1;
        let _ = self.to_writer.send(job).await;
    }

    /// Hands a job to the writer with its reply held until a snapshot
    /// covers it (Redis away, or an append after a hole).
    async fn hand_on_held(&mut self, mut job: Job) {
        self.status.unjournaled_commands.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.cfg.ack_timeout;
        let after = self.forwarded + 1;
        match job.reply.take() {
            Some(Reply::Applied(orig)) => {
                let (tx, rx) = oneshot::channel();
                job.reply = Some(Reply::Applied(tx));
                self.held.push_back(Held {
                    reply: Reply::Applied(orig),
                    answer: HeldAnswer::Applied(rx),
                    deadline,
                    after,
                });
            }
            Some(Reply::Changed(orig)) => {
                let (tx, rx) = oneshot::channel();
                job.reply = Some(Reply::Changed(tx));
                self.held.push_back(Held {
                    reply: Reply::Changed(orig),
                    answer: HeldAnswer::Changed(rx),
                    deadline,
                    after,
                });
            }
            None => {}
        }
        self.hand_on(job).await;
    }

    fn go_down(&mut self) {
        self.status.up.store(false, Ordering::Relaxed);
        self.mode = Mode::Down {
            tried: Instant::now(),
        };
        // The hole a replay must see: no entry takes this number.
        self.next += 1;
        // A snapshot asked for before the hole may still be written: it
        // covers only what came before it, which is whole.
    }

    /// The segment list the latest snapshot wrote (a leader holding the
    /// lease is the only writer of it). Unread, the list starts empty and
    /// history is written whole next time.
    async fn read_segments(&mut self) {
        let list: redis::RedisResult<Option<String>> =
            self.snapshots.hget(&self.cfg.keys.snapshot, "history").await;
        match list {
            Ok(list) => self.segments.list = Segment::parse_list(list.as_deref().unwrap_or("")),
            Err(e) => {
                tracing::error!(error = %e, "reading the history segments: the next snapshot writes history whole");
                self.segments.whole = false;
                return;
            }
        }
        // Segments no snapshot lists: written by a leader that stopped
        // before listing them. Nobody else writes them (this node leads).
        let listed: std::collections::HashSet<String> = self
            .segments
            .list
            .iter()
            .map(|s| format!("{}{}", self.cfg.keys.history, s.id))
            .collect();
        let pattern = format!("{}*", self.cfg.keys.history);
        let mut found = Vec::new();
        if let Ok(mut iter) = self.snapshots.scan_match::<_, String>(&pattern).await {
            while let Some(Ok(key)) = iter.next_item().await {
                found.push(key);
            }
        }
        for key in found {
            if !listed.contains(&key) {
                tracing::warn!(%key, "deleting a history segment no snapshot lists");
                let _: redis::RedisResult<()> = self.snapshots.del(&key).await;
            }
        }
    }

    /// Asks the writer for a snapshot at this place in the stream.
    async fn ask_snapshot(&mut self, waiter: Option<oneshot::Sender<bool>>) {
        if matches!(self.mode, Mode::Follow) {
            // A follower writes nothing.
            if let Some(w) = waiter {
                let _ = w.send(false);
            }
            return;
        }
        if let Some(p) = &mut self.snapshot {
            // One at a time; a waiter gets the next one's result... or this
            // one's, which covers everything handed on before it was asked.
            if let Some(w) = waiter {
                p.waiters.push(w);
            }
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.journal_since_snapshot = 0;
        let history = match (self.cfg.durable_history, self.segments.whole) {
            (false, _) => SnapshotHistory::None,
            (true, true) => SnapshotHistory::SinceLast,
            (true, false) => SnapshotHistory::Whole,
        };
        let _ = self
            .to_writer
            .send(Job {
                command: Command::Snapshot { history, reply: tx },
                reply: None,
            })
            .await;
        self.snapshot = Some(PendingSnapshot {
            frozen: rx,
            history,
            next: self.next,
            covers: self.forwarded,
            waiters: waiter.into_iter().collect(),
            write: None,
        });
    }

    async fn housekeeping(&mut self) {
        self.answer_held();
        if let Mode::Down { tried } = &mut self.mode
            && tried.elapsed() >= Duration::from_secs(1)
            && self.snapshot.is_none()
        {
            *tried = Instant::now();
            let mut conn = self.conn.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            if tokio::time::timeout(Duration::from_secs(1), ping)
                .await
                .is_ok_and(|r| r.is_ok())
            {
                tracing::warn!("Redis answers again: writing a snapshot to catch up the journal");
                self.mode = Mode::CatchingUp;
                self.ask_snapshot(None).await;
            }
        }
        // Every `snapshot_every`, and sooner once the journal since the
        // last snapshot outgrows it: Redis then holds at most about twice
        // the state (a national fleet at 1 Hz journals a snapshot's worth
        // in seconds).
        let outgrown = self.journal_since_snapshot
            >= self
                .status
                .snapshot_bytes
                .load(Ordering::Relaxed)
                .max(MIN_JOURNAL_BEFORE_SNAPSHOT)
            && self.last_snapshot.elapsed() >= MIN_SNAPSHOT_INTERVAL;
        if matches!(self.mode, Mode::Up)
            && self.snapshot.is_none()
            && (self.last_snapshot.elapsed() >= self.cfg.snapshot_every || outgrown)
        {
            self.ask_snapshot(None).await;
        }
        self.progress_snapshot().await;
    }

    /// Moves a pending snapshot on: bytes from the writer, then the write.
    async fn progress_snapshot(&mut self) {
        let Some(p) = &mut self.snapshot else {
            return;
        };
        if p.write.is_none() {
            match p.frozen.try_recv() {
                Ok((frozen, history)) => {
                    self.status
                        .snapshot_copy_us
                        .store(frozen.took().as_micros() as u64, Ordering::Relaxed);
                    let write = SnapshotWrite {
                        next: p.next,
                        history: p.history,
                        segments: self.segments.clone(),
                        added: history.newest_ms().map(|n| (history.len() as u64, n)),
                    };
                    let conn = self.snapshots.clone();
                    let keys = self.cfg.keys.clone();
                    let lease = self.cfg.lease.clone();
                    let status = self.status.clone();
                    p.write = Some(tokio::spawn(async move {
                        let started = Instant::now();
                        // Encoding a national fleet takes a core for a
                        // few hundred milliseconds: off the runtime, on a
                        // thread of its own at the bulk priority, so on
                        // a machine short of cores the writer, the
                        // sessions and the ingest go first.
                        let (tx, rx) = oneshot::channel();
                        let spawned = std::thread::Builder::new()
                            .name("bluelight-snapshot".into())
                            .spawn(move || {
                                crate::priority::lower_this_thread();
                                let segment = (!history.is_empty()).then(|| history.encode());
                                let _ = tx.send((frozen.encode(), segment));
                            });
                        if spawned.is_err() {
                            return None;
                        }
                        let Ok((bytes, segment)) = rx.await else {
                            return None;
                        };
                        status
                            .snapshot_encode_us
                            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        write_snapshot(conn, keys, &lease, bytes, segment, write, status).await
                    }));
                }
                Err(oneshot::error::TryRecvError::Empty) => return,
                Err(oneshot::error::TryRecvError::Closed) => {
                    // The writer has stopped.
                    for w in p.waiters.drain(..) {
                        let _ = w.send(false);
                    }
                    self.snapshot = None;
                    return;
                }
            }
        }
        let Some(write) = &mut p.write else {
            return;
        };
        if !write.is_finished() {
            return;
        }
        let written = write.await.ok().flatten();
        let ok = written.is_some();
        let Some(p) = self.snapshot.take() else {
            return;
        };
        for w in p.waiters {
            let _ = w.send(ok);
        }
        self.last_snapshot = Instant::now();
        // A failed write's history log is gone with it.
        self.segments.whole = ok;
        if let Some(list) = written {
            self.segments.list = list;
        } else {
            self.status.failures.fetch_add(1, Ordering::Relaxed);
            if !matches!(self.mode, Mode::Down { .. }) {
                tracing::error!("Redis did not take a snapshot: serving from memory");
                self.go_down();
            }
            return;
        }
        if matches!(self.mode, Mode::CatchingUp) {
            // What came before the snapshot is in it, what came after is
            // journaled after it: everything held is durable.
            tracing::warn!("the journal has caught up: acknowledgements are durable again");
            self.mode = Mode::Up;
            self.status.up.store(true, Ordering::Relaxed);
            self.release_held(u64::MAX);
        } else {
            self.release_held(p.covers);
        }
    }

    /// Answers held replies covered by a written snapshot as journaled
    /// (once the writer has answered them).
    fn release_held(&mut self, covers: u64) {
        while self.held.front().is_some_and(|h| h.after <= covers) {
            if let Some(h) = self.held.pop_front() {
                h.answer(true);
            }
        }
    }

    /// Answers held replies past their deadline as not journaled.
    fn answer_held(&mut self) {
        let now = Instant::now();
        while self.held.front().is_some_and(|h| h.deadline <= now) {
            if let Some(h) = self.held.pop_front() {
                self.status.not_acknowledged.fetch_add(1, Ordering::Relaxed);
                h.answer(false);
            }
        }
    }
}

impl Held {
    /// Passes the writer's answer on when it comes, marked journaled or not.
    fn answer(self, journaled: bool) {
        match (self.reply, self.answer) {
            (Reply::Applied(tx), HeldAnswer::Applied(rx)) => {
                tokio::spawn(async move {
                    if let Ok(mut r) = rx.await {
                        r.unjournaled = !journaled;
                        let _ = tx.send(r);
                    }
                });
            }
            (Reply::Changed(tx), HeldAnswer::Changed(rx)) => {
                tokio::spawn(async move {
                    if let Ok(r) = rx.await {
                        let r = match r {
                            Ok(_) if !journaled => Err(ChangeError::Unjournaled),
                            r => r,
                        };
                        let _ = tx.send(r);
                    }
                });
            }
            _ => {}
        }
    }
}

/// Where a snapshot goes besides its bytes.
struct SnapshotWrite {
    /// The first entry it does not cover.
    next: u64,
    /// Which history it carries.
    history: SnapshotHistory,
    /// The segments before it.
    segments: Segments,
    /// Its history segment's records and newest time, if it has one.
    added: Option<(u64, i64)>,
}

/// Writes a snapshot with its history segment and trims the journal
/// behind it, if this node holds the lease; returns the segment list then
/// in Redis. The bytes go a piece at a time to a staging key (and the
/// segment to its own key, its id from a counter in Redis, so no two
/// leaders ever write the same one), then one script, O(1) in their size,
/// checks the lease, puts the staged bytes in place and lists the segment:
/// a crash leaves the old snapshot or the new one, never half (and a
/// segment no snapshot lists is deleted when a leader next starts); the
/// trim comes last, so a crash before it only leaves entries a replay
/// skips.
async fn write_snapshot(
    mut conn: ConnectionManager,
    keys: Keys,
    lease: &Lease,
    bytes: Vec<u8>,
    segment: Option<Vec<u8>>,
    w: SnapshotWrite,
    status: Arc<JournalStatus>,
) -> Option<Vec<Segment>> {
    let now_ms = now_ms();
    let len = bytes.len();
    let segment_len = segment.as_ref().map_or(0, Vec::len);
    let next = w.next;
    let written: redis::RedisResult<(u64, Vec<Segment>)> = async {
        write_pieces(&mut conn, &keys.snapshot_staging, &bytes).await?;
        let added = match (w.added, &segment) {
            (Some((count, newest_ms)), Some(segment)) => {
                let id: u64 = conn.incr(&keys.history_seq, 1).await?;
                write_pieces(&mut conn, &format!("{}{id}", keys.history), segment).await?;
                Some(Segment { id, count, newest_ms })
            }
            _ => None,
        };
        let list = match w.history {
            // No history kept: the list empties, and the script deletes
            // what an earlier run wrote.
            SnapshotHistory::None => Vec::new(),
            h => w.segments.after(added, h == SnapshotHistory::Whole, now_ms),
        };
        let trimmed = redis::Script::new(super::lease::SNAPSHOT)
            .key(&lease.key)
            .key(&keys.snapshot)
            .key(&keys.journal)
            .key(&keys.snapshot_staging)
            .key(&keys.snapshot_engine)
            .arg(&lease.me)
            .arg(next)
            .arg(now_ms)
            .arg(format!("{next}-0"))
            .arg(Segment::format_list(&list))
            .arg(&keys.history)
            .invoke_async::<u64>(&mut conn)
            .await?;
        Ok((trimmed, list))
    }
    .await;
    match written {
        Ok((trimmed, list)) => {
            status.snapshots.fetch_add(1, Ordering::Relaxed);
            status.snapshot_bytes.store(len as u64, Ordering::Relaxed);
            status
                .history_segment_bytes
                .store(segment_len as u64, Ordering::Relaxed);
            tracing::info!(
                bytes = len,
                history_bytes = segment_len,
                next,
                trimmed,
                "snapshot written"
            );
            Some(list)
        }
        Err(e) => {
            tracing::error!(error = %e, "writing the snapshot failed");
            None
        }
    }
}

/// Bytes a piece of a snapshot or a segment is written in: Redis serves
/// every client's appends between two pieces, so a piece is a stall of a
/// millisecond, where one command of the whole took hundreds (measured at
/// `national --redis`: fix-to-alert p99 375-438 -> 191 ms once snapshots
/// and their segments, ~50 MB, went in pieces).
const PIECE: usize = 1 << 20;

/// Writes `bytes` to `key` (replacing it) a [`PIECE`] at a time.
async fn write_pieces(conn: &mut ConnectionManager, key: &str, bytes: &[u8]) -> redis::RedisResult<()> {
    let _: () = conn.del(key).await?;
    for piece in bytes.chunks(PIECE) {
        let _: () = conn.append(key, piece).await?;
    }
    Ok(())
}

/// Now, by the machine's clock (entry and snapshot times, for operators
/// and followers' lag).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// About how many bytes a command takes in an entry.
fn approx_size(c: &Command) -> usize {
    match c {
        Command::Fixes(b) => 16 + b.text.len() + b.fixes.len() * 46 + b.metas.len() * 32,
        Command::PutFence { def, .. } => def.source.len() + 32,
        Command::PutRule(def) => def.source.len() + 32,
        _ => 24,
    }
}
