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
    /// TLS of the HTTP and TCP device listeners (`--tls-cert`), mutual on
    /// the device listeners with `--tls-client-ca`.
    pub tls: Option<Arc<bluelight_ingest::tls::Tls>>,
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
    pub tokens: Arc<crate::auth::Tokens>,
    /// Fix received to alert frame sent, per frame.
    pub alert_latency: crate::latency::LatencyHistogram,
    /// One-shot nearest over WebSocket: request frame read to reply sent.
    pub nearest_latency: crate::latency::LatencyHistogram,
    /// Writes positions feeds at a low priority.
    pub feed_writer: crate::feed_writer::FeedWriter,
    /// Queue bounds, chunk sizes and timers.
    pub tuning: Tuning,
    /// Networks UDP device listeners accept datagrams from; any if none.
    pub ingest_allow: Option<Arc<[ipnet::IpNet]>>,
    /// Web origins besides the server's own allowed to open WebSockets.
    pub allowed_origins: Vec<String>,
    /// What the dispatch map page is told at `/map/config.json`.
    pub map: crate::config::MapConfig,
    /// Whether this server takes writes: in memory or a leader (false for
    /// a follower until it is promoted).
    pub leading: std::sync::atomic::AtomicBool,
    /// With Redis (`--redis` or `--follow`): the journal, the outbox, the
    /// lease, and a follower's tail.
    pub redis: Option<Redis>,
    /// Bumped when a follower reloads a snapshot: every WebSocket session
    /// closes (1012) so its subscriptions are made on the new state.
    pub resets: tokio::sync::watch::Sender<u64>,
    /// Where the device listeners bind (at start, or on promotion).
    pub devices: Devices,
    /// One promotion at a time.
    pub promoting: tokio::sync::Mutex<()>,
    /// Subscriptions one WebSocket session may hold.
    pub max_subscriptions: usize,
    /// Covers computed at once (fences, positions feeds): each may take a
    /// core for seconds, so a burst of large areas queues here instead of
    /// taking every core from the writer.
    pub covers: tokio::sync::Semaphore,
    /// CoT out (`cot_out`): the live picture sent back on `--cot-tcp`
    /// connections and pushed to `tak_out`.
    pub cot_out: Option<Arc<crate::cot_out::CotOut>>,
}

/// The server's Redis side.
pub struct Redis {
    /// The journal stage (passing jobs through on a follower).
    pub journal: bluelight_ingest::journal::stage::JournalHandle,
    /// The alert outbox (parking alerts on a follower).
    pub outbox: Arc<crate::outbox::Outbox>,
    /// A follower's tail; `None` on a leader.
    pub follower: Option<Arc<crate::follower::Follower>>,
    /// This node's claim on the leader lease.
    pub lease: bluelight_ingest::journal::lease::Lease,
    /// A connection for the lease (promotion, renewal).
    pub conn: redis::aio::ConnectionManager,
}

/// The device listeners: where they are configured to bind, or where they
/// are bound (port 0 resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    /// UDP and TCP ingest.
    pub ingest: std::net::SocketAddr,
    /// Cursor-on-Target TCP, if any.
    pub cot_tcp: Option<std::net::SocketAddr>,
    /// Cursor-on-Target UDP, if any.
    pub cot_udp: Option<std::net::SocketAddr>,
    /// NMEA 0183 TCP, if any.
    pub nmea_tcp: Option<std::net::SocketAddr>,
    /// NMEA 0183 UDP, if any.
    pub nmea_udp: Option<std::net::SocketAddr>,
    /// TETRA LIP UDP, if any.
    pub lip_udp: Option<std::net::SocketAddr>,
}

impl Devices {
    /// The configured listeners.
    pub fn of(cfg: &crate::config::ServeConfig) -> Self {
        Self {
            ingest: cfg.ingest,
            cot_tcp: cfg.cot_tcp,
            cot_udp: cfg.cot_udp,
            nmea_tcp: cfg.nmea_tcp,
            nmea_udp: cfg.nmea_udp,
            lip_udp: cfg.lip_udp,
        }
    }

    /// Each listener by its name on the start-up line (PROTOCOL.md
    /// "Device interop"), `ingest` first.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, std::net::SocketAddr)> {
        [
            ("ingest", Some(self.ingest)),
            ("cot", self.cot_tcp),
            ("cot-udp", self.cot_udp),
            ("nmea-tcp", self.nmea_tcp),
            ("nmea-udp", self.nmea_udp),
            ("lip-udp", self.lip_udp),
        ]
        .into_iter()
        .filter_map(|(name, addr)| addr.map(|a| (name, a)))
    }
}

/// `ingest=ADDR cot=ADDR ...`, as the start-up line names them.
impl std::fmt::Display for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, addr)) in self.named().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={addr}")?;
        }
        Ok(())
    }
}

impl AppState {
    /// A follower answers writes 409: the refusal, if this is one.
    pub fn refuse_writes(&self) -> Option<axum::response::Response> {
        use axum::response::IntoResponse as _;
        if self.leading.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        Some(
            (
                axum::http::StatusCode::CONFLICT,
                axum::Json(serde_json::json!({"error": "this server is a follower (read-only): send writes to the leader, or promote this one with POST /v1/admin/promote"})),
            )
                .into_response(),
        )
    }

    /// Now, by the server's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
