//! `bluelight serve`: binds the HTTP and ingest addresses, starts the
//! engine's writer and clock, and serves until shut down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bluelight_engine::{AlertEvent, Engine, EngineConfig, Outputs};
use bluelight_ingest::pipeline::{self, PipelineConfig, PipelineHandle};
use bluelight_ingest::transport::{self, ListenerLimits};
use bluelight_ingest::validate::ValidationConfig;
use tokio::net::TcpListener;

use crate::config::ServeConfig;

/// Alert kinds, in counter order.
pub const ALERT_EVENTS: [AlertEvent; 6] = [
    AlertEvent::Enter,
    AlertEvent::Exit,
    AlertEvent::Dwell,
    AlertEvent::Proximity,
    AlertEvent::Stale,
    AlertEvent::Fresh,
];

/// What every request handler shares.
pub struct AppState {
    /// The engine; the writer takes the lock once per batch, handlers once
    /// per request, and nothing awaits while holding it.
    pub engine: bluelight_ingest::pipeline::SharedEngine,
    /// Into the writer.
    pub pipeline: PipelineHandle,
    /// Fences as their owners sent them (GeoJSON Features), for GET.
    pub fence_json: crate::json::StoredJson,
    /// Rules as their owners sent them, for GET.
    pub rule_json: crate::json::StoredJson,
    /// Alerts fired, by event (indexed like `ALERT_EVENTS`).
    pub alerts: Arc<[AtomicU64; 6]>,
    /// When the server started.
    pub started: Instant,
    /// Routes outputs to WebSocket sessions.
    pub hub: crate::hub::Hub,
    /// WebSocket sessions open.
    pub sessions: AtomicU64,
    /// Set once on shutdown: HTTP stops accepting, sessions close with 1001.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Configured tokens.
    pub tokens: crate::auth::Tokens,
    /// Fix received to alert frame sent, per frame.
    pub alert_latency: crate::latency::LatencyHistogram,
    /// One-shot nearest over WebSocket: request frame read to reply sent.
    pub nearest_latency: crate::latency::LatencyHistogram,
    /// Writes positions feeds at a low priority.
    pub bulk: crate::bulk::Bulk,
}

impl AppState {
    /// Routes what the engine produced outside the writer (fence replaces,
    /// the clock).
    pub fn route(&self, engine: &Engine, out: &Outputs) {
        self.route_received(engine, out, None);
    }

    /// Routes a batch's outputs; `received` is when its fixes arrived.
    pub fn route_received(&self, engine: &Engine, out: &Outputs, received: Option<Instant>) {
        count_alerts(&self.alerts, out);
        self.hub.route(engine, out, received);
    }
}

fn count_alerts(counters: &[AtomicU64; 6], out: &Outputs) {
    for a in &out.alerts {
        if let Some(i) = ALERT_EVENTS.iter().position(|e| *e == a.event) {
            counters[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running server.
pub struct Running {
    /// The HTTP address bound.
    pub http: SocketAddr,
    /// The UDP and TCP ingest address bound.
    pub ingest: SocketAddr,
    /// The CoT address bound, if any.
    pub cot: Option<SocketAddr>,
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
        while (self.state.sessions.load(Ordering::Relaxed) > 0 || self.state.pipeline.queued() > 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Binds everything and starts serving in the background on the current
/// tokio runtime.
///
/// # Errors
/// An invalid configuration or an address that cannot be bound.
pub async fn start(cfg: &ServeConfig) -> anyhow::Result<Running> {
    cfg.validate()?;
    let engine_cfg = EngineConfig {
        stale_after_s: cfg.stale_after_s,
        history_retention_s: cfg.history_retention_s,
        history_max_fixes: cfg.history_max_fixes,
        ..EngineConfig::default()
    };
    let engine = Arc::new(parking_lot::Mutex::new(Engine::new(engine_cfg)?));
    let alerts: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    // The writer's sink needs the state, which needs the writer's handle.
    let sink_state: Arc<std::sync::OnceLock<std::sync::Weak<AppState>>> = Arc::default();
    let sink_cell = sink_state.clone();
    let validation = ValidationConfig {
        max_age_ms: i64::from(cfg.history_retention_s) * 1000,
        ..ValidationConfig::default()
    };
    let (pipeline, _writer) = pipeline::start(
        engine.clone(),
        PipelineConfig {
            validation,
            realtime_writer: cfg.realtime,
            ..PipelineConfig::default()
        },
        Box::new(move |engine, out, received| {
            if let Some(state) = sink_cell.get().and_then(std::sync::Weak::upgrade) {
                state.route_received(engine, out, received);
            }
        }),
    );
    let state = Arc::new(AppState {
        engine: engine.clone(),
        pipeline: pipeline.clone(),
        fence_json: crate::json::StoredJson::default(),
        rule_json: crate::json::StoredJson::default(),
        alerts,
        started: Instant::now(),
        hub: crate::hub::Hub::default(),
        sessions: AtomicU64::new(0),
        shutdown: tokio::sync::watch::channel(false).0,
        tokens: crate::auth::Tokens::new(&cfg.auth.tokens),
        alert_latency: crate::latency::LatencyHistogram::default(),
        nearest_latency: crate::latency::LatencyHistogram::default(),
        bulk: crate::bulk::Bulk::start()?,
    });
    let _ = sink_state.set(Arc::downgrade(&state));
    let limits = ListenerLimits::default();
    let (tcp, udp, ingest) = transport::bind_ingest(cfg.ingest).await?;
    tokio::spawn(transport::serve_tcp(tcp, pipeline.clone(), limits.clone()));
    tokio::spawn(transport::serve_udp(udp, pipeline.clone(), limits.clone()));
    let cot = match cfg.cot_tcp {
        Some(addr) => {
            let l = TcpListener::bind(addr).await?;
            let bound = l.local_addr()?;
            tokio::spawn(transport::serve_cot_tcp(l, pipeline.clone(), limits));
            Some(bound)
        }
        None => None,
    };
    let http_listener = TcpListener::bind(cfg.listen).await?;
    let http = http_listener.local_addr()?;
    // Nagle off: alert and nearest frames are small and must not wait to be
    // coalesced (it costs tens of milliseconds against a delayed ACK).
    let http_listener = axum::serve::ListenerExt::tap_io(http_listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let app = crate::http::router(state.clone());
    let mut stop = state.shutdown.subscribe();
    tokio::spawn(async move {
        let stopping = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(http_listener, app)
            .with_graceful_shutdown(stopping)
            .await
        {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    // The engine's clock: staleness, dwell for silent units, history expiry.
    // Each second's scan is done in a hundred parts, 10 ms apart, so the
    // engine is never held long: a tenth of a national fleet (30,000 units,
    // each read with its fence memberships) held it 2–8 ms, and every fix
    // and query behind it waited.
    let clock_state = state.clone();
    tokio::spawn(async move {
        const PARTS: usize = 100;
        let mut every = tokio::time::interval(Duration::from_millis(1000 / PARTS as u64));
        let mut out = Outputs::default();
        let mut part = 0;
        loop {
            every.tick().await;
            out.clear();
            {
                let mut e = clock_state.engine.lock();
                e.tick_part(transport::now_ms(), part, PARTS, &mut out);
                clock_state.route(&e, &out);
            }
            part = (part + 1) % PARTS;
        }
    });
    Ok(Running {
        http,
        ingest,
        cot,
        state,
    })
}
