//! `bluelight serve`: builds the pipeline and the hub, binds the HTTP and
//! ingest addresses, starts the engine's clock, and serves until shut down.
//!
//! Built in the order a fix travels backwards: the hub (the outputs'
//! consumer) first, then the writer that feeds it, then the queue's
//! transports; so nothing needs to find its way back up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bluelight_engine::{Clock, Engine, EngineConfig, SystemClock};
use bluelight_ingest::pipeline::{self, PipelineConfig};
use bluelight_ingest::queue::Command;
use bluelight_ingest::transport::{self, ListenerLimits};
use bluelight_ingest::validate::ValidationConfig;
use bluelight_ingest::writer::{OutputConsumer, WriterConfig};
use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::durable::Role;
use crate::follower::Follower;
use crate::state::{AppState, Devices};

/// Covers computed at once (see `AppState::covers`): every core but the
/// writer's, at least one.
fn covers_at_once() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// A running server.
pub struct Running {
    /// The HTTP address bound.
    pub http: SocketAddr,
    /// The device listeners bound (a follower's: as configured, none bound).
    pub devices: Devices,
    /// Shared state (for tests and `demo`).
    pub state: Arc<AppState>,
}

impl Running {
    /// Shuts down gracefully: stops accepting HTTP, closes every WebSocket
    /// session with 1001, and waits (at most `grace`) for the sessions to
    /// close and the writer to apply what is queued.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.state.shutdown.send(true);
        let deadline = Instant::now() + grace;
        while (self.state.sessions.load(Ordering::Relaxed) > 0 || self.state.queue.queued() > 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // With Redis, a last snapshot, so the next start replays nothing.
        if let Some(j) = self.state.redis.as_ref().map(|r| &r.journal)
            && self.state.leading.load(Ordering::Relaxed)
        {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(5));
            match tokio::time::timeout(left, j.snapshot_now()).await {
                Ok(true) => tracing::info!("final snapshot written"),
                _ => tracing::warn!("no final snapshot: the next start replays the journal"),
            }
        }
    }
}

impl Running {
    /// Resolves if another server took the leader lease: this one must
    /// stop writing (the binary exits).
    pub async fn fenced(&self) {
        loop {
            if self
                .state
                .redis
                .as_ref()
                .is_some_and(|r| r.journal.status.fenced.load(Ordering::Relaxed))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Binds everything and starts serving in the background on the current
/// tokio runtime, on the machine's clock.
///
/// # Errors
/// An invalid configuration or an address that cannot be bound.
pub async fn start(cfg: &ServeConfig) -> anyhow::Result<Running> {
    start_with_clock(cfg, Arc::new(SystemClock)).await
}

/// [`start`] with a given clock (tests set time instead of sleeping).
///
/// # Errors
/// An invalid configuration or an address that cannot be bound.
pub async fn start_with_clock(cfg: &ServeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    cfg.validate()?;
    let t = &cfg.tuning;
    let engine_cfg = EngineConfig {
        stale_after_s: cfg.stale_after_s,
        history_retention_s: cfg.history_retention_s,
        history_max_fixes: cfg.history_max_fixes,
        max_units: t.max_units,
        max_fences: t.max_fences,
        max_rules: t.max_rules,
        ..EngineConfig::default()
    };
    let hub = Arc::new(crate::hub::Hub::new(t.alert_ring));
    let validation = ValidationConfig {
        max_age_ms: i64::from(cfg.history_retention_s) * 1000,
        ..ValidationConfig::default()
    };
    let pipeline_cfg = PipelineConfig {
        queue_batches: t.queue_batches,
        task_queue: t.task_queue,
        validation: validation.clone(),
        writer: WriterConfig {
            chunk: t.writer_chunk,
            bulk_slice: Duration::from_micros(t.bulk_slice_us),
            bulk_max_wait: Duration::from_millis(t.bulk_max_wait_ms),
            realtime: cfg.realtime,
            nice: t.writer_nice,
        },
    };
    // Bound first: a node's id names its HTTP address, which no other
    // live process on this host can hold (so a restarted leader may take
    // back its own lease at once).
    let http_listener = TcpListener::bind(cfg.listen).await?;
    let http = http_listener.local_addr()?;
    let node = format!("{}:{http}", hostname());
    let resets = tokio::sync::watch::channel(0u64).0;
    let durable = match (&cfg.redis, &cfg.follow) {
        (Some(url), _) => Some((url, Role::Leader)),
        (None, Some(url)) => Some((url, Role::Follower)),
        (None, None) => None,
    };
    let (engine, pipeline, redis) = match durable {
        None => {
            let engine = Arc::new(parking_lot::Mutex::new(Engine::new(engine_cfg)?));
            let outputs: Arc<dyn OutputConsumer> = hub.clone();
            let pipeline = pipeline::start(engine.clone(), pipeline_cfg, clock.clone(), outputs)?;
            (engine, pipeline, None)
        }
        Some((url, role)) => {
            let d = crate::durable::start(
                url,
                cfg,
                engine_cfg.clone(),
                validation,
                hub.clone(),
                node,
                role.clone(),
            )
            .await?;
            let lease = d.journal.lease.clone();
            let keys = d.journal.keys.clone();
            let lease_conn = d.conn.clone();
            let (pipeline, handle) = pipeline::start_journaled(
                d.engine.clone(),
                pipeline_cfg,
                clock.clone(),
                d.outputs,
                d.conn,
                d.snapshots,
                d.next,
                role == Role::Follower,
                d.journal,
            )?;
            let follower = match role {
                Role::Leader => {
                    lease.clone().keep(lease_conn.clone(), handle.status.clone());
                    if d.must_snapshot && !handle.snapshot_now().await {
                        // The journal had a hole: nothing may be acknowledged
                        // until a snapshot stands in front of what comes next.
                        anyhow::bail!("Redis did not take the snapshot that closes the journal's hole");
                    }
                    None
                }
                Role::Follower => Some(Follower::start(
                    crate::follower::Tail {
                        conn: d.tail,
                        keys,
                        queue: pipeline.queue.clone(),
                        engine_cfg,
                        resets: resets.clone(),
                    },
                    d.resume,
                )),
            };
            let redis = crate::state::Redis {
                journal: handle,
                outbox: d.outbox,
                follower,
                lease,
                conn: lease_conn,
            };
            (d.engine, pipeline, Some(redis))
        }
    };
    let leading = redis.as_ref().is_none_or(|r| r.follower.is_none());
    let queue = pipeline.queue;
    let cot_out = cfg.cot_out.then(|| {
        let loopback_only = !cfg.auth.tokens.is_empty();
        if loopback_only {
            tracing::info!("cot out: tokens are configured, so the picture goes to loopback connections and to devices whose certificate maps to a token with read");
        }
        crate::cot_out::CotOut::new(pipeline.tasks.clone(), loopback_only, cfg.tak_out.clone())
    });
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = bluelight_ingest::tls::Tls::load(bluelight_ingest::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: cfg.tls_client_ca.clone(),
            })?;
            tls.reload_on_sighup();
            Some(tls)
        }
        _ => None,
    };
    let state = Arc::new(AppState {
        tls: tls.clone(),
        engine: engine.clone(),
        queue: queue.clone(),
        tasks: pipeline.tasks,
        clock,
        hub,
        started: Instant::now(),
        sessions: AtomicU64::new(0),
        shutdown: tokio::sync::watch::channel(false).0,
        tokens: Arc::new(crate::auth::Tokens::new(&cfg.auth.tokens)),
        alert_latency: crate::latency::LatencyHistogram::default(),
        nearest_latency: crate::latency::LatencyHistogram::default(),
        feed_writer: crate::feed_writer::FeedWriter::start()?,
        tuning: cfg.tuning.clone(),
        map: cfg.map.clone(),
        allowed_origins: cfg.allowed_origins.clone(),
        ingest_allow: cfg.ingest_allow_nets()?.map(Arc::from),
        leading: AtomicBool::new(leading),
        redis,
        resets,
        devices: Devices::of(cfg),
        promoting: tokio::sync::Mutex::new(()),
        max_subscriptions: cfg.max_subscriptions,
        covers: tokio::sync::Semaphore::new(covers_at_once()),
        cot_out: cot_out.clone(),
    });
    if let Some(c) = &cot_out {
        tokio::spawn(c.clone().run());
    }
    let devices = if leading {
        let bound = bind_devices(&state).await?;
        lead(&state);
        bound
    } else {
        // A follower binds none: its ingest comes from the journal.
        state.devices
    };
    tokio::spawn(crate::http_serve::serve(
        http_listener,
        crate::http::router(state.clone()),
        state.shutdown.subscribe(),
        crate::http_serve::HttpLimits {
            header_timeout: Duration::from_secs(t.http_header_timeout_s),
            max_connections: t.http_max_connections,
        },
        tls,
    ));
    Ok(Running { http, devices, state })
}

/// Binds the device listeners (UDP and TCP ingest, CoT, NMEA, LIP) and
/// starts serving them into the queue: at start, or when a follower is
/// promoted. Returns the addresses bound.
///
/// # Errors
/// An address that cannot be bound.
pub async fn bind_devices(state: &Arc<AppState>) -> anyhow::Result<Devices> {
    let t = &state.tuning;
    let queue = &state.queue;
    let limits = ListenerLimits {
        max_connections: t.device_max_connections,
        idle_timeout: Duration::from_secs(t.device_idle_s),
        max_frame_bytes: t.device_max_frame_bytes,
        udp_allow: state.ingest_allow.clone(),
        tls: state.tls.clone(),
        authority: state
            .tokens
            .any()
            .then(|| state.tokens.clone() as Arc<dyn bluelight_ingest::tls::DeviceAuthority>),
    };
    let want = state.devices;
    let (tcp, udp, ingest) = transport::bind_ingest(want.ingest).await?;
    tokio::spawn(transport::serve_tcp(tcp, queue.clone(), limits.clone()));
    tokio::spawn(transport::serve_udp(udp, queue.clone(), limits.clone()));
    let mut bound = Devices {
        ingest,
        cot_tcp: None,
        cot_udp: None,
        nmea_tcp: None,
        nmea_udp: None,
        lip_udp: None,
    };
    let (q, l) = (|| queue.clone(), || limits.clone());
    if let Some(a) = want.cot_tcp {
        let listener = bind_stream(a).await?;
        bound.cot_tcp = Some(listener.local_addr()?);
        let outlet = state.cot_out.as_ref().map(crate::cot_out::CotOut::outlet);
        tokio::spawn(transport::serve_cot_tcp(listener, q(), l(), outlet));
    }
    if let Some(a) = want.nmea_tcp {
        let listener = bind_stream(a).await?;
        bound.nmea_tcp = Some(listener.local_addr()?);
        tokio::spawn(transport::serve_nmea_tcp(listener, q(), l()));
    }
    if let Some(a) = want.cot_udp {
        let socket = bind_datagram(a)?;
        bound.cot_udp = Some(socket.local_addr()?);
        tokio::spawn(transport::serve_cot_udp(socket, q(), l()));
    }
    if let Some(a) = want.nmea_udp {
        let socket = bind_datagram(a)?;
        bound.nmea_udp = Some(socket.local_addr()?);
        tokio::spawn(transport::serve_nmea_udp(socket, q(), l()));
    }
    if let Some(a) = want.lip_udp {
        let socket = bind_datagram(a)?;
        bound.lip_udp = Some(socket.local_addr()?);
        tokio::spawn(transport::serve_lip_udp(socket, q(), l()));
    }
    Ok(bound)
}

async fn bind_stream(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind TCP {addr}: {e}"))
}

fn bind_datagram(addr: SocketAddr) -> anyhow::Result<tokio::net::UdpSocket> {
    transport::bind_udp(addr)
        .map(|(socket, _)| socket)
        .map_err(|e| anyhow::anyhow!("cannot bind UDP {addr}: {e}"))
}

/// This machine's name (a node id's first part).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// What only the leader runs besides its device listeners: the clock
/// (staleness, dwell) and the push to `--tak-out`. At start, or when a
/// follower is promoted.
pub(crate) fn lead(state: &Arc<AppState>) {
    tokio::spawn(run_clock(state.clone()));
    if let Some(c) = &state.cot_out {
        c.lead();
    }
}

/// The engine's clock: staleness, dwell for silent units, history expiry.
/// Each second's scan is done in `clock_parts` parts, evenly spaced, so
/// the engine is never held long: a tenth of a national fleet (30,000
/// units, each read with its fence memberships) held it 2–8 ms, and every
/// fix and query behind it waited.
///
/// A tick is a command in the writer's queue like a batch of fixes: the
/// writer runs it in order with them, and a journal records it with its
/// time, so a replay marks units stale at the same place in the stream.
async fn run_clock(state: Arc<AppState>) {
    let parts = state.tuning.clock_parts.max(1);
    let mut every = tokio::time::interval(Duration::from_secs(1) / parts);
    let mut part = 0;
    loop {
        every.tick().await;
        let tick = Command::Tick {
            now_ms: state.now_ms(),
            part,
            parts,
        };
        // A full queue skips a part; the next turn scans it later.
        if state.queue.try_command(tick) {
            part = (part + 1) % parts;
        }
    }
}
