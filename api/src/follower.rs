//! A follower (`serve --follow URL`): a read-only replica that tails the
//! leader's journal into its own engine, through the same queue and writer
//! as a leader's fixes, so it makes the same alerts with the same `seq`
//! and serves reads, feeds, nearest, alerts and export from its own copy.
//!
//! * **Holes.** Entries come numbered; a follower that finds one missing
//!   (the leader lost Redis and caught up with a snapshot, or the follower
//!   fell behind a trim) waits for the snapshot that covers it, puts it in
//!   place of its engine, and closes its WebSocket sessions (1012) so
//!   their subscriptions are made again on the new state.
//! * **Promotion** (`POST /v1/admin/promote`): once the leader's lease has
//!   lapsed the follower takes it (so the old leader can write no more),
//!   applies the journal to its end, and leads: its stage journals from
//!   there, its outbox appends, its clock runs and its ingest listeners
//!   are bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bluelight_engine::EngineConfig;
use bluelight_ingest::batch::IngestBatch;
use bluelight_ingest::journal::Keys;
use bluelight_ingest::journal::codec;
use bluelight_ingest::journal::replay::load_snapshot;
use bluelight_ingest::queue::{Command, IngestQueue};
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use tokio::sync::{oneshot, watch};

/// Entries read from Redis at a time.
const PAGE: usize = 256;

/// A follower's state, for health, metrics and promotion.
#[derive(Debug)]
pub struct Follower {
    /// How far behind the leader it is: now minus the leader's time of the
    /// last entry applied, 0 when it has applied everything, ms.
    pub lag_ms: AtomicI64,
    /// Times it put a newer snapshot in place of its engine.
    pub reloads: AtomicU64,
    /// Whether it reads the journal (false while Redis is away).
    pub up: AtomicBool,
    /// Set by a promotion: the tail applies the rest and hands back the
    /// next entry's number.
    promote: parking_lot::Mutex<Option<oneshot::Sender<u64>>>,
}

/// What the tail needs.
pub struct Tail {
    /// Its Redis connection.
    pub conn: ConnectionManager,
    /// The deployment's keys.
    pub keys: Keys,
    /// Into its writer.
    pub queue: IngestQueue,
    /// The engine's configuration (a reloaded snapshot is restored with it).
    pub engine_cfg: EngineConfig,
    /// Closes every WebSocket session (after a reload).
    pub resets: watch::Sender<u64>,
}

impl Follower {
    /// Starts tailing from entry `next`.
    pub fn start(tail: Tail, next: u64) -> Arc<Self> {
        let f = Arc::new(Self {
            lag_ms: AtomicI64::new(0),
            reloads: AtomicU64::new(0),
            up: AtomicBool::new(true),
            promote: parking_lot::Mutex::new(None),
        });
        tokio::spawn(run(f.clone(), tail, next));
        f
    }

    /// Stops following: applies the journal to its end and returns the
    /// number the next entry takes. Call holding the lease (nobody else
    /// appends any more).
    ///
    /// # Errors
    /// The tail has stopped.
    pub async fn finish(&self) -> Result<u64, oneshot::error::RecvError> {
        let (tx, rx) = oneshot::channel();
        *self.promote.lock() = Some(tx);
        rx.await
    }
}

async fn run(f: Arc<Follower>, mut t: Tail, mut expected: u64) {
    loop {
        let promote = f.promote.lock().take();
        if let Some(done) = promote {
            // Everything the old leader appended, to the end.
            loop {
                match read(&mut t, expected, None).await {
                    Ok(page) if page.is_empty() => break,
                    Ok(page) => {
                        if !apply(&f, &mut t, &page, &mut expected).await {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the journal's end; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            let top: redis::RedisResult<StreamRangeReply> =
                t.conn.xrevrange_count(&t.keys.journal, "+", "-", 1).await;
            let top = top
                .ok()
                .and_then(|r| r.ids.first().and_then(|e| entry_number(&e.id)))
                .unwrap_or(0);
            let _ = done.send(expected.max(top + 1));
            return;
        }
        match read(&mut t, expected, Some(500)).await {
            Ok(page) if page.is_empty() => {
                f.up.store(true, Ordering::Relaxed);
                f.lag_ms.store(0, Ordering::Relaxed);
            }
            Ok(page) => {
                f.up.store(true, Ordering::Relaxed);
                if !apply(&f, &mut t, &page, &mut expected).await {
                    return;
                }
            }
            Err(e) => {
                if f.up.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "the follower cannot read the journal: Redis is away");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Entries from `expected` on: waiting up to `block_ms` for one, or not.
async fn read(t: &mut Tail, expected: u64, block_ms: Option<usize>) -> redis::RedisResult<Vec<StreamId>> {
    let after = format!("{}-0", expected.saturating_sub(1));
    match block_ms {
        Some(ms) => {
            let opts = StreamReadOptions::default().count(PAGE).block(ms);
            let r: StreamReadReply = t.conn.xread_options(&[&t.keys.journal], &[&after], &opts).await?;
            Ok(r.keys.into_iter().flat_map(|k| k.ids).collect())
        }
        None => {
            let r: StreamRangeReply = t
                .conn
                .xrange_count(&t.keys.journal, format!("{expected}-0"), "+", PAGE)
                .await?;
            Ok(r.ids)
        }
    }
}

/// Applies a page of entries in order; at a hole, reloads. False once the
/// writer has stopped.
async fn apply(f: &Follower, t: &mut Tail, page: &[StreamId], expected: &mut u64) -> bool {
    for entry in page {
        let Some(n) = entry_number(&entry.id) else {
            continue;
        };
        if n < *expected {
            continue;
        }
        if n > *expected {
            tracing::warn!(
                expected = *expected,
                found = n,
                "a hole in the journal: reloading the leader's snapshot"
            );
            match reload(t, n).await {
                Some(next) => {
                    *expected = next;
                    f.reloads.fetch_add(1, Ordering::Relaxed);
                }
                None => return false,
            }
            // The page was read before the reload: read again from `next`.
            return true;
        }
        let Some(Value::BulkString(bytes)) = entry.map.get("c") else {
            tracing::error!(entry = n, "a journal entry without its commands: skipped");
            *expected += 1;
            continue;
        };
        match codec::decode(bytes, IngestBatch::default) {
            Ok(commands) => {
                for c in commands {
                    if t.queue.send_command(c).await.is_err() {
                        return false;
                    }
                }
            }
            Err(e) => {
                // A leader newer than this follower: nothing it can do but
                // say so; it is not a faithful replica from here.
                tracing::error!(entry = n, error = %e, "a journal entry this follower cannot read");
            }
        }
        if let Some(Value::BulkString(t_ms)) = entry.map.get("t")
            && let Some(at) = std::str::from_utf8(t_ms).ok().and_then(|s| s.parse::<i64>().ok())
        {
            f.lag_ms.store((now_ms() - at).max(0), Ordering::Relaxed);
        }
        *expected += 1;
    }
    true
}

/// Waits for a snapshot that covers entries before `found`, puts it in
/// place of the engine, and closes the sessions; returns its `next`.
async fn reload(t: &mut Tail, found: u64) -> Option<u64> {
    loop {
        // The cheap question first: restoring a national fleet takes seconds.
        let next: redis::RedisResult<Option<u64>> = t.conn.hget(&t.keys.snapshot, "next").await;
        if matches!(next, Ok(Some(n)) if n >= found) {
            match load_snapshot(&mut t.conn, &t.keys, t.engine_cfg.clone()).await {
                Ok(Some((engine, next))) if next >= found => {
                    t.queue
                        .send_command(Command::Replace(Box::new(engine)))
                        .await
                        .ok()?;
                    t.resets.send_modify(|n| *n += 1);
                    tracing::warn!(
                        next,
                        "reloaded the leader's snapshot; sessions closed to subscribe again"
                    );
                    return Some(next);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "the leader's snapshot does not restore"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `n` of an entry id `n-0`.
fn entry_number(id: &str) -> Option<u64> {
    id.strip_suffix("-0")?.parse().ok()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
