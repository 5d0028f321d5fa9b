//! Start-up with a journal: the latest snapshot, then every journal entry
//! after it, applied in order by the same [`Applier`] the writer uses and
//! with the same consumer of outputs (the alert outbox keeps only the
//! alerts it does not hold yet). Then the stage may start.

use bluelight_engine::{Engine, EngineConfig, EngineError, HistoryMemory};
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Value};

use super::codec::{self, JournalError};
use super::{Keys, Segment};
use crate::batch::IngestBatch;
use crate::queue::Command;
use crate::writer::{Applier, OutputConsumer};

/// A page of decoded entries, or why reading stopped.
type PageResult = Result<Vec<Entry>, RecoveryError>;

/// One journal entry, decoded, with history memory readied for its fixes.
struct Entry {
    /// Its number.
    n: u64,
    /// Its commands.
    commands: Vec<Command>,
    /// Memory for history's records (see [`HistoryMemory`]).
    memory: Vec<HistoryMemory>,
}

/// Entries read from Redis at a time.
const PAGE: usize = 256;

/// Why start-up could not recover.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Redis did not answer.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The snapshot does not restore.
    #[error("the snapshot does not restore: {0}")]
    Snapshot(#[from] EngineError),
    /// An entry does not decode (a newer version wrote it, or it is damaged).
    #[error("journal entry {entry}: {error}")]
    Entry {
        /// The entry's number.
        entry: u64,
        /// What is wrong.
        error: JournalError,
    },
}

/// What start-up found and did.
#[derive(Debug)]
pub struct Recovered {
    /// The engine, as it was after the last journaled command.
    pub engine: Engine,
    /// The number the stage gives the next entry.
    pub next: u64,
    /// The first entry not applied (where a follower tails from).
    pub resume: u64,
    /// The snapshot's `next`, if there was a snapshot.
    pub snapshot_next: Option<u64>,
    /// Entries replayed after the snapshot.
    pub entries: u64,
    /// Commands replayed.
    pub commands: u64,
    /// The journal had a hole (Redis was away while the old leader
    /// served): entries after it were not replayed, and a snapshot must be
    /// written before anything is acknowledged.
    pub hole_at: Option<u64>,
}

/// Loads the latest snapshot and replays the journal after it. A leader
/// (`log_history`) logs what history takes in the replay, so its next
/// snapshot's history segment holds it.
///
/// # Errors
/// Redis does not answer, or the snapshot or an entry is unreadable: the
/// server must not start on a partial state.
pub async fn recover(
    conn: &mut ConnectionManager,
    keys: &Keys,
    cfg: EngineConfig,
    applier: &mut Applier,
    consumer: &dyn OutputConsumer,
    log_history: bool,
) -> Result<Recovered, RecoveryError> {
    let (mut engine, snapshot_next) = match load_snapshot(conn, keys, cfg.clone()).await? {
        Some((engine, next)) => (engine, Some(next)),
        None => (Engine::new(cfg)?, None),
    };
    if log_history {
        engine.log_history();
    }
    let mut expected = snapshot_next.unwrap_or(1);
    let (mut entries, mut commands, mut hole_at) = (0, 0, None);
    // Pages are read and decoded by a task of their own while the engine
    // applies the one before: Redis's time and the decoding overlap the
    // engine's.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<PageResult>(2);
    let reader = tokio::spawn(read_pages(
        conn.clone(),
        keys.journal.clone(),
        expected,
        engine.keeps_history(),
        tx,
    ));
    'pages: while let Some(page) = rx.recv().await {
        for Entry {
            n,
            commands: decoded,
            memory,
        } in page?
        {
            if n != expected {
                hole_at = Some(expected);
                tracing::error!(
                    expected,
                    found = n,
                    "the journal has a hole (Redis was away while the last leader served): replay stops before it"
                );
                break 'pages;
            }
            for m in memory {
                engine.give_history_memory(m);
            }
            for command in &decoded {
                applier.apply(&mut &mut engine, command, |e, out, _| {
                    consumer.consume(e, out, None)
                });
            }
            commands += decoded.len() as u64;
            entries += 1;
            expected += 1;
        }
    }
    reader.abort();
    // Entry ids must keep rising past anything in the stream (entries after
    // a hole stay until the next snapshot trims them), and a hole must stay
    // visible: start past the top with a gap.
    let top: StreamRangeReply = conn.xrevrange_count(&keys.journal, "+", "-", 1).await?;
    let top = top.ids.first().and_then(|e| entry_number(&e.id)).unwrap_or(0);
    let next = if hole_at.is_some() {
        top + 2
    } else {
        expected.max(top + 1)
    };
    Ok(Recovered {
        engine,
        next,
        resume: expected,
        snapshot_next,
        entries,
        commands,
        hole_at,
    })
}

/// The latest snapshot, restored with the history segments it lists, and
/// its `next`; `None` when there is none yet.
///
/// A segment that is missing or does not read is left out, loudly: history
/// is then short, but the state is whole, and refusing to start over it
/// would keep a control room blind.
///
/// # Errors
/// Redis does not answer, or the snapshot does not restore.
pub async fn load_snapshot(
    conn: &mut ConnectionManager,
    keys: &Keys,
    cfg: EngineConfig,
) -> Result<Option<(Engine, u64)>, RecoveryError> {
    let (next, history, legacy): (Option<u64>, Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
        .arg(&keys.snapshot)
        .arg("next")
        .arg("history")
        .arg("engine")
        .query_async(conn)
        .await?;
    let Some(next) = next else {
        return Ok(None);
    };
    let bytes = match legacy {
        Some(b) => Some(b),
        None => conn.get(&keys.snapshot_engine).await?,
    };
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let mut engine = Engine::restore(cfg, &bytes)?;
    drop(bytes);
    for segment in Segment::parse_list(history.as_deref().unwrap_or("")) {
        let key = format!("{}{}", keys.history, segment.id);
        let bytes: Option<Vec<u8>> = conn.get(&key).await?;
        match bytes.map(|b| engine.restore_history(&b)) {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::error!(%key, error = %e, "a history segment does not read: its fixes are not in history")
            }
            None => tracing::error!(
                %key,
                count = segment.count,
                "a history segment is missing: its fixes are not in history"
            ),
        }
    }
    Ok(Some((engine, next)))
}

/// Reads and decodes the journal from entry `from` on, a page at a time,
/// until its end (or the receiver stops listening). With `history`, each
/// entry comes with the history memory its fixes will fill, readied here
/// on this task's core rather than in the middle of the replay.
async fn read_pages(
    mut conn: ConnectionManager,
    journal: String,
    from: u64,
    history: bool,
    tx: tokio::sync::mpsc::Sender<PageResult>,
) {
    let mut from = format!("{from}-0");
    // Fixes read so far; a chunk of memory is readied each time they pass
    // a multiple of its size, and one at the start.
    let mut fixes = 0usize;
    let mut readied = 0usize;
    loop {
        let page: StreamRangeReply = match conn.xrange_count(&journal, &from, "+", PAGE).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let full = page.ids.len() == PAGE;
        let mut decoded = Vec::with_capacity(page.ids.len());
        for entry in &page.ids {
            let Some(n) = entry_number(&entry.id) else {
                continue;
            };
            let Some(Value::BulkString(bytes)) = entry.map.get("c") else {
                let _ = tx
                    .send(Err(RecoveryError::Entry {
                        entry: n,
                        error: JournalError::Bad("field c"),
                    }))
                    .await;
                return;
            };
            match codec::decode(bytes, IngestBatch::default) {
                Ok(commands) => {
                    fixes += commands
                        .iter()
                        .map(|c| match c {
                            Command::Fixes(b) => b.fixes.len(),
                            _ => 0,
                        })
                        .sum::<usize>();
                    let want = if history {
                        fixes / HistoryMemory::RECORDS + 1
                    } else {
                        0
                    };
                    let memory = (readied..want).map(|_| HistoryMemory::ready()).collect();
                    readied = readied.max(want);
                    decoded.push(Entry { n, commands, memory });
                }
                Err(error) => {
                    let _ = tx.send(Err(RecoveryError::Entry { entry: n, error })).await;
                    return;
                }
            }
            from = format!("{}-0", n + 1);
        }
        if tx.send(Ok(decoded)).await.is_err() || !full {
            return;
        }
    }
}

/// `n` of an entry id `n-0`.
fn entry_number(id: &str) -> Option<u64> {
    id.strip_suffix("-0")?.parse().ok()
}
