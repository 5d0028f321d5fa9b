//! The alert outbox (PROTOCOL.md "Alerts stream"): every alert goes to the
//! Redis stream `P` + `alerts`, entry id `seq-0`, with the contract's
//! fields, and is published on the channel of the same name; CAD systems
//! read the stream with consumer groups, and a session resuming with
//! `since_seq` reads what the in-memory ring no longer holds.
//!
//! A consumer of the writer's outputs like the hub: it only serialises and
//! queues (never waits on Redis with the engine locked); a task appends in
//! pipelined batches, in `seq` order, retrying until Redis takes them. A
//! replay after a restart makes the same alerts with the same `seq`; the
//! ones the stream already holds are skipped, so each alert is in the
//! stream once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bluelight_engine::{AlertEvent, Engine, Outputs};
use bluelight_ingest::writer::OutputConsumer;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Value};
use tokio::sync::mpsc;

use crate::alert_record::AlertRecord;

/// Alerts queued for Redis before new ones are dropped (and counted):
/// minutes of a national incident's alerts, a few hundred megabytes at most.
const QUEUE: usize = 1 << 20;

/// Alerts appended per round trip.
const BATCH: usize = 512;

/// One alert as the stream holds it.
#[derive(Debug)]
struct Entry {
    seq: u64,
    event: AlertEvent,
    unit: String,
    other: Option<String>,
    time_ms: i64,
    fence: Option<Arc<str>>,
    rule: Option<Arc<str>>,
    /// The alert object as the WebSocket sends it, without `sub`.
    alert: String,
}

/// Alerts a follower keeps while it does not append (the leader does):
/// what it made since the leader's outbox last appended must go to the
/// stream if it is promoted.
const PARKED: usize = 100_000;

/// Whether the outbox appends, and what it keeps meanwhile.
#[derive(Debug, Default)]
struct Parked {
    active: bool,
    list: std::collections::VecDeque<Entry>,
}

/// The outbox: the writer's consumer end and what it has done.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Entry>,
    /// Alerts with a `seq` up to this are in the stream already (found at
    /// start-up): a replay's copies are skipped.
    held_through: AtomicU64,
    /// A follower's outbox parks alerts instead of appending them; the
    /// lock also keeps `seq` order between the parked and the new.
    parked: parking_lot::Mutex<Parked>,
    /// The stream's key (and the channel's name).
    key: String,
    /// Read connection (resuming sessions).
    conn: ConnectionManager,
    /// The highest `seq` the stream holds.
    pub appended_through: AtomicU64,
    /// Alerts dropped because the queue to Redis was full.
    pub dropped: AtomicU64,
    /// Appends that failed (and were retried).
    pub failures: AtomicU64,
    /// Whether the last append succeeded.
    pub up: AtomicBool,
}

impl Outbox {
    /// Starts the outbox on `conn` for keys under `prefix`, keeping about
    /// `retention` alerts in the stream; a follower's (`active` false)
    /// parks alerts until [`Outbox::activate`].
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn start(
        conn: ConnectionManager,
        prefix: &str,
        retention: u64,
        active: bool,
    ) -> redis::RedisResult<Arc<Self>> {
        let key = format!("{prefix}alerts");
        let mut c = conn.clone();
        let top: StreamRangeReply = c.xrevrange_count(&key, "+", "-", 1).await?;
        let held_through = top.ids.first().and_then(|e| seq_of(&e.id)).unwrap_or(0);
        let (tx, rx) = mpsc::channel(QUEUE);
        let outbox = Arc::new(Self {
            tx,
            held_through: AtomicU64::new(held_through),
            parked: parking_lot::Mutex::new(Parked {
                active,
                list: Default::default(),
            }),
            key: key.clone(),
            conn: conn.clone(),
            appended_through: AtomicU64::new(held_through),
            dropped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            up: AtomicBool::new(true),
        });
        tokio::spawn(append(conn, key, retention, rx, outbox.clone()));
        Ok(outbox)
    }

    /// A promoted follower's outbox starts appending: what it parked and
    /// the stream does not hold yet first, in `seq` order.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn activate(&self) -> redis::RedisResult<()> {
        let mut c = self.conn.clone();
        let top: StreamRangeReply = c.xrevrange_count(&self.key, "+", "-", 1).await?;
        let top = top.ids.first().and_then(|e| seq_of(&e.id)).unwrap_or(0);
        self.held_through.store(top, Ordering::Relaxed);
        self.appended_through.store(top, Ordering::Relaxed);
        let mut p = self.parked.lock();
        p.active = true;
        for e in std::mem::take(&mut p.list).into_iter().filter(|e| e.seq > top) {
            if self.tx.try_send(e).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Alerts after `since` and before `until` (exclusive) from the stream,
    /// at most `max`, oldest first, as records a session can be sent.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn read(
        &self,
        engine: &parking_lot::Mutex<Engine>,
        since: u64,
        until: Option<u64>,
        max: usize,
    ) -> redis::RedisResult<Vec<AlertRecord>> {
        let mut conn = self.conn.clone();
        let end = until.map_or_else(|| "+".to_owned(), |u| format!("{}-0", u.saturating_sub(1)));
        if until.is_some_and(|u| u <= since + 1) {
            return Ok(Vec::new());
        }
        let page: StreamRangeReply = conn
            .xrange_count(&self.key, format!("{}-0", since + 1), end, max)
            .await?;
        let e = engine.lock();
        Ok(page
            .ids
            .iter()
            .filter_map(|entry| {
                let field = |k: &str| match entry.map.get(k) {
                    Some(Value::BulkString(b)) => std::str::from_utf8(b).ok().map(str::to_owned),
                    _ => None,
                };
                let unit = e.find_unit(&field("unit")?)?;
                let alert = field("alert")?;
                // `{"type":"alert",` ... `}` around the members a record keeps.
                let body = alert
                    .strip_prefix("{\"type\":\"alert\",")?
                    .strip_suffix('}')?
                    .to_owned();
                Some(AlertRecord {
                    seq: seq_of(&entry.id)?,
                    event: AlertEvent::parse(&field("event")?)?,
                    fence: field("fence").map(Arc::from),
                    rule: field("rule").map(Arc::from),
                    body,
                    unit,
                    other: field("other").and_then(|o| e.find_unit(&o)),
                    received: None,
                })
            })
            .collect())
    }
}

impl OutputConsumer for Outbox {
    fn consume(&self, engine: &Engine, out: &Outputs, _: Option<Instant>) {
        if out.alerts.is_empty() {
            return;
        }
        let held_through = self.held_through.load(Ordering::Relaxed);
        let mut parked = self.parked.lock();
        for a in out.alerts.iter().filter(|a| a.seq > held_through) {
            let r = AlertRecord::new(engine, a, None);
            let entry = Entry {
                seq: a.seq,
                event: a.event,
                unit: engine.unit_id(a.unit).to_owned(),
                other: a.other.map(|o| engine.unit_id(o).to_owned()),
                time_ms: a.time_ms,
                fence: a.fence.clone(),
                rule: a.rule.clone(),
                alert: format!("{{\"type\":\"alert\",{}}}", r.body),
            };
            if !parked.active {
                if parked.list.len() >= PARKED {
                    parked.list.pop_front();
                }
                parked.list.push_back(entry);
                continue;
            }
            if self.tx.try_send(entry).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Appends queued alerts in order, a batch a round trip, until the
/// writer's end closes.
async fn append(
    mut conn: ConnectionManager,
    key: String,
    retention: u64,
    mut rx: mpsc::Receiver<Entry>,
    outbox: Arc<Outbox>,
) {
    let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            // After a failure part of the batch may be in: skip what is.
            let through = outbox.appended_through.load(Ordering::Relaxed);
            batch.retain(|e| e.seq > through);
            if batch.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for e in &batch {
                let cmd = pipe
                    .cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(retention)
                    .arg(format!("{}-0", e.seq))
                    .arg("seq")
                    .arg(e.seq)
                    .arg("event")
                    .arg(e.event.as_str())
                    .arg("unit")
                    .arg(&e.unit)
                    .arg("time_ms")
                    .arg(e.time_ms);
                if let Some(f) = &e.fence {
                    cmd.arg("fence").arg(f.as_ref());
                }
                if let Some(r) = &e.rule {
                    cmd.arg("rule").arg(r.as_ref());
                }
                if let Some(o) = &e.other {
                    cmd.arg("other").arg(o);
                }
                cmd.arg("alert").arg(&e.alert).ignore();
                pipe.cmd("PUBLISH").arg(&key).arg(&e.alert).ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    if let Some(last) = batch.last() {
                        outbox.appended_through.store(last.seq, Ordering::Relaxed);
                    }
                    outbox.up.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    outbox.failures.fetch_add(1, Ordering::Relaxed);
                    if outbox.up.swap(false, Ordering::Relaxed) {
                        tracing::error!(error = %e, "the alert outbox cannot reach Redis; alerts wait in memory and are retried");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    // What the stream holds now decides what to send again.
                    let top: redis::RedisResult<StreamRangeReply> =
                        conn.xrevrange_count(&key, "+", "-", 1).await;
                    if let Ok(top) = top
                        && let Some(seq) = top.ids.first().and_then(|e| seq_of(&e.id))
                    {
                        outbox.appended_through.fetch_max(seq, Ordering::Relaxed);
                    }
                }
            }
        }
        batch.clear();
    }
}

/// `seq` of an entry id `seq-0`.
fn seq_of(id: &str) -> Option<u64> {
    id.strip_suffix("-0")?.parse().ok()
}
