//! Start-up with Redis (`--redis`): connect, start the alert outbox, load
//! the latest snapshot and replay the journal after it, then hand the
//! server what the journaled pipeline needs. Nothing is served before the
//! replay ends, so no client sees a state that is not yet whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bluelight_engine::{EngineConfig, SharedEngine};
use bluelight_ingest::journal::Keys;
use bluelight_ingest::journal::lease::Lease;
use bluelight_ingest::journal::replay::recover;
use bluelight_ingest::journal::stage::JournalConfig;
use bluelight_ingest::validate::{IngestCounters, ValidationConfig};
use bluelight_ingest::writer::{Applier, Fanout, OutputConsumer};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::ServeConfig;
use crate::hub::Hub;
use crate::outbox::Outbox;

/// What the journaled pipeline is built from.
pub struct Durable {
    /// The engine as the journal left it.
    pub engine: SharedEngine,
    /// The hub, then the outbox.
    pub outputs: Arc<dyn OutputConsumer>,
    /// The outbox alone (sessions resume from it).
    pub outbox: Arc<Outbox>,
    /// The journal's connection.
    pub conn: ConnectionManager,
    /// The snapshots' connection.
    pub snapshots: ConnectionManager,
    /// A follower's tail's connection (it blocks reading).
    pub tail: ConnectionManager,
    /// The next entry's number.
    pub next: u64,
    /// The first entry the replay did not apply.
    pub resume: u64,
    /// The stage's tuning.
    pub journal: JournalConfig,
    /// The journal had a hole: a snapshot must be written before anything
    /// is acknowledged.
    pub must_snapshot: bool,
}

/// A connection that reconnects by itself, with timeouts short enough that
/// a Redis gone away is noticed in seconds.
async fn connect(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client.clone(), cfg).await
}

/// How a server with Redis starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Takes the lease (waiting up to twice its life for a lapsed one),
    /// journals and snapshots.
    Leader,
    /// Tails the journal; writes nothing until promoted.
    Follower,
}

/// Connects, starts the outbox and recovers the engine; a leader takes
/// the lease first, so it never replays a journal another server still
/// appends to.
///
/// # Errors
/// Redis unreachable, another leader's lease live past the wait, or a
/// snapshot or journal entry that cannot be read.
pub async fn start(
    url: &str,
    cfg: &ServeConfig,
    engine_cfg: EngineConfig,
    validation: ValidationConfig,
    hub: Arc<Hub>,
    node: String,
    role: Role,
) -> anyhow::Result<Durable> {
    let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url:?}"))?;
    let mut conn = connect(&client)
        .await
        .with_context(|| format!("cannot reach Redis at {url}"))?;
    let snapshots = connect(&client)
        .await
        .with_context(|| format!("cannot reach Redis at {url}"))?;
    let t = &cfg.tuning;
    let keys = Keys::new(&cfg.redis_prefix);
    let lease = Lease {
        key: keys.lease.clone(),
        me: node,
        ttl: Duration::from_millis(t.lease_ms),
    };
    if role == Role::Leader {
        take_lease(&mut conn, &lease).await?;
    }
    let outbox = Outbox::start(
        connect(&client).await?,
        &cfg.redis_prefix,
        cfg.alerts_retention,
        role == Role::Leader,
    )
    .await
    .context("starting the alert outbox")?;
    let outputs: Arc<dyn OutputConsumer> = Arc::new(Fanout(vec![hub, outbox.clone()]));
    let history_retention = Duration::from_secs(u64::from(engine_cfg.history_retention_s));
    let history_max_fixes = engine_cfg.history_max_fixes as u64;
    let started = Instant::now();
    let mut applier = Applier::new(
        Arc::new(validation),
        Arc::new(IngestCounters::default()),
        t.writer_chunk,
    );
    let r = recover(
        &mut conn,
        &keys,
        engine_cfg,
        &mut applier,
        outputs.as_ref(),
        role == Role::Leader && cfg.durable_history,
    )
    .await
    .context("recovering from Redis")?;
    tracing::info!(
        units = r.engine.unit_count(),
        fences = r.engine.fence_ids().len(),
        seq = r.engine.last_seq(),
        snapshot_next = ?r.snapshot_next,
        entries = r.entries,
        commands = r.commands,
        took_ms = started.elapsed().as_millis() as u64,
        "recovered from Redis"
    );
    Ok(Durable {
        engine: Arc::new(parking_lot::Mutex::new(r.engine)),
        outputs,
        outbox,
        tail: connect(&client).await?,
        conn,
        snapshots,
        next: r.next,
        resume: r.resume,
        journal: JournalConfig {
            entry_bytes: t.journal_entry_bytes,
            in_flight: t.journal_in_flight,
            snapshot_every: Duration::from_secs(t.snapshot_every_s),
            ack_timeout: Duration::from_millis(t.journal_ack_timeout_ms),
            lease,
            history_retention,
            history_max_fixes,
            durable_history: cfg.durable_history,
            ..JournalConfig::new(&cfg.redis_prefix)
        },
        must_snapshot: r.hole_at.is_some() && role == Role::Leader,
    })
}

/// Takes the lease: at once if nobody holds it or this node does (a
/// restart of the same server), else once it lapses, waiting at most
/// twice its life for a leader that stopped renewing.
async fn take_lease(conn: &mut ConnectionManager, lease: &Lease) -> anyhow::Result<()> {
    let deadline = Instant::now() + lease.ttl * 2;
    loop {
        if lease.acquire(conn).await? {
            return Ok(());
        }
        match lease.holder(conn).await? {
            Some(h) if h.node == lease.me => {
                // This node's own lease, left by a process that died: the
                // HTTP address in the id is bound by this process now.
                let _: () = redis::cmd("SET")
                    .arg(&lease.key)
                    .arg(&lease.me)
                    .arg("PX")
                    .arg(lease.ttl.as_millis() as u64)
                    .query_async(conn)
                    .await?;
                return Ok(());
            }
            Some(h) if Instant::now() >= deadline => anyhow::bail!(
                "another server leads (node {}, lease for {} ms more): start this one with --follow, or stop that one",
                h.node,
                h.ttl_ms
            ),
            Some(h) => {
                tracing::warn!(holder = %h.node, ttl_ms = h.ttl_ms, "waiting for the leader lease to lapse")
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
