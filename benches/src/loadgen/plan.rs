//! loadgen's options, the named presets, and the plan they resolve to.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Standard scenarios (issue figures in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// Seconds, small: the CI test.
    Smoke,
    /// The ESN shape: 300k units every 5 s, 5k fences, 200 maps, 50 alerts
    /// subscribers, 500 nearest/s.
    National,
    /// 300k units at 1 Hz.
    Surge,
    /// The api target: 100k units at 200k fixes/s, 1k fences, 100 maps, 20
    /// alerts subscribers, 2,000 nearest/s.
    Api,
    /// 1M units at 1 Hz: more than the server takes; reports what it sustains.
    Max,
    /// `national` for an hour with fences, feeds, standing queries and
    /// sessions created and removed all the time (`--churn`), the server's
    /// memory read each minute.
    Soak,
}

/// How fixes reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Length-prefixed FlatBuffers frames over TCP.
    Tcp,
    /// One FlatBuffers batch per UDP datagram.
    Udp,
}

/// Which device protocol carries the fixes (units are registered over
/// FlatBuffers TCP in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// FlatBuffers `FixBatch`es over `--transport`.
    Flatbuffers,
    /// NMEA 0183 over TCP (`--nmea-tcp`): `$PBLU`, RMC and GGA per fix.
    Nmea,
    /// TETRA LIP over UDP (`--lip-udp`): a short location report per fix.
    Lip,
    /// TAK protocol v1 over TCP (`--cot-tcp`, streaming): a `TakMessage`
    /// per fix.
    Tak,
}

/// How the analyst's export asks for its body (`--export-encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportEncoding {
    /// `Accept-Encoding: gzip`, as a browser asks.
    Gzip,
    /// No `Accept-Encoding`: the body as it is.
    Identity,
}

/// How the dispatch maps' positions feeds are encoded (the `encoding` of
/// their subscriptions, PROTOCOL.md "Positions in binary").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MapEncoding {
    /// JSON text frames (the server's default).
    Json,
    /// FlatBuffers binary frames (`data/schema/positions.fbs`).
    Flatbuffers,
}

impl MapEncoding {
    /// The subscription's `encoding` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Flatbuffers => "flatbuffers",
        }
    }
}

impl Source {
    /// The server flag that opens its listener, and the name the start-up
    /// line gives it.
    pub fn listener(self) -> Option<(&'static str, &'static str)> {
        match self {
            Source::Flatbuffers => None,
            Source::Nmea => Some(("--nmea-tcp", "nmea-tcp=")),
            Source::Lip => Some(("--lip-udp", "lip-udp=")),
            Source::Tak => Some(("--cot-tcp", "cot=")),
        }
    }
}

/// `loadgen`: drives a bluelight server like a national network would and
/// writes a report (JSON and Markdown).
///
/// Without --server it starts `bluelight serve` on free loopback ports and
/// stops it at the end. Every flag overrides the preset's value.
///
/// Examples:
///   cargo run --release -p bluelight-benches --bin loadgen -- --preset national
///   cargo run --release -p bluelight-benches --bin loadgen -- --preset smoke --target redis-geo redis://127.0.0.1:6379
#[derive(Debug, Clone, Parser)]
#[command(version, verbatim_doc_comment)]
pub struct Options {
    /// A standard scenario (default smoke).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Simulated units.
    #[arg(long)]
    pub units: Option<usize>,
    /// Each unit reports every this many ms.
    #[arg(long)]
    pub interval_ms: Option<u32>,
    /// Run this long, seconds (after registering the fleet).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Polygon fences loaded before the run.
    #[arg(long)]
    pub fences: Option<usize>,
    /// Positions subscribers (dispatch maps with town-sized viewports).
    #[arg(long)]
    pub positions: Option<usize>,
    /// Alerts subscribers (each gets every alert).
    #[arg(long)]
    pub alerts: Option<usize>,
    /// Standing nearest subscribers.
    #[arg(long)]
    pub standing: Option<usize>,
    /// One-shot nearest queries per second (over WebSocket).
    #[arg(long)]
    pub nearest_qps: Option<u32>,
    /// Latencies of the first this many seconds are reported apart, as
    /// warm-up (the fleet's first reports: every unit inside a fence enters
    /// it at once); the checks cover the whole run.
    #[arg(long)]
    pub warmup_s: Option<u64>,
    /// Check one nearest answer in this many against brute force.
    #[arg(long, default_value_t = 10)]
    pub check_every: u32,
    /// How fixes are sent.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// The device protocol of the fixes (not FlatBuffers: the server loadgen
    /// starts opens that protocol's listener, and every fix goes there).
    #[arg(long, value_enum, default_value = "flatbuffers", conflicts_with = "server")]
    pub source: Source,
    /// A running server's HTTP address (with --ingest); default: start one.
    #[arg(long, requires = "ingest")]
    pub server: Option<SocketAddr>,
    /// A running server's ingest address.
    #[arg(long, requires = "server")]
    pub ingest: Option<SocketAddr>,
    /// Real-time scheduling (Linux SCHED_FIFO; needs root or
    /// CAP_SYS_NICE) for the timed clients (alerts, nearest, standing
    /// nearest), above the server's workers and below its writer, and,
    /// when loadgen starts the server, for the server too (`bluelight
    /// serve --realtime`). On one machine, loadgen's own wait for a core
    /// otherwise adds to every latency it measures. The report says which
    /// threads got it.
    #[arg(long)]
    pub realtime: bool,
    /// A flag for `bluelight serve` when loadgen starts it, e.g.
    /// `--server-flag=--history-max-fixes=0`; repeatable.
    #[arg(long = "server-flag", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_flags: Vec<String>,
    /// Start the server with `--redis` against a redis-server of loadgen's
    /// own (append-only file, fsync every second): the journal's cost, to
    /// set beside the same run in memory.
    #[arg(long, conflicts_with = "server")]
    pub redis: bool,
    /// HTTPS and WSS: loadgen makes a CA and a server certificate, starts
    /// the server with `--tls-cert`/`--tls-key`, and its clients speak TLS
    /// (trusting that CA alone), fixes over TCP included (UDP stays
    /// plaintext).
    #[arg(long, conflicts_with = "server")]
    pub tls: bool,
    /// How the dispatch maps ask for their positions feeds.
    #[arg(long, value_enum, default_value = "json")]
    pub map_encoding: MapEncoding,
    /// This many seconds into the run, an analyst downloads a full-retention
    /// export (`GET /v1/export` over all history, GeoJSON); the report gives
    /// fix-to-alert of the fixes sent while it ran beside the rest of the
    /// run's (issue 16: an export must not move the alerts).
    #[arg(long, value_name = "SECONDS")]
    pub export_at: Option<u64>,
    /// How the analyst's download asks for its body: `gzip`
    /// (`Accept-Encoding: gzip`, as a browser asks; the report's MiB are
    /// then the compressed bytes) or `identity` (as it is).
    #[arg(long, value_enum, default_value = "gzip")]
    pub export_encoding: ExportEncoding,
    /// Fences, positions feeds, standing nearest queries and sessions
    /// created and removed all the time beside the load (a fence and a
    /// session a second); on in `--preset soak`.
    #[arg(long)]
    pub churn: bool,
    /// A token with every scope, for a server that has tokens.
    #[arg(long, env = "BLUELIGHT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The `bluelight` binary to start (default: beside loadgen, else built
    /// with cargo).
    #[arg(long)]
    pub bluelight: Option<PathBuf>,
    /// Also run the fleet and nearest workload against Redis GEO:
    /// `--target redis-geo redis://HOST:PORT`.
    #[arg(long, num_args = 2, value_names = ["KIND", "URL"])]
    pub target: Option<Vec<String>>,
    /// Where the reports go.
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
    /// Seed of the fleet, fences and queries.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Concrete parameters of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Preset name.
    pub preset: &'static str,
    /// Units.
    pub units: usize,
    /// Report interval, ms.
    pub interval_ms: u32,
    /// Seconds of load.
    pub seconds: u64,
    /// Fences.
    pub fences: usize,
    /// Positions subscribers.
    pub positions: usize,
    /// Alerts subscribers.
    pub alerts: usize,
    /// Standing nearest subscribers.
    pub standing: usize,
    /// Nearest queries per second.
    pub nearest_qps: u32,
    /// Seconds whose latencies are reported as warm-up.
    pub warmup_s: u64,
    /// Checked 1 in this many.
    pub check_every: u32,
    /// Transport.
    pub transport: Transport,
    /// The fixes' device protocol.
    pub source: Source,
    /// Seed.
    pub seed: u64,
    /// Redis URL for the comparison.
    pub redis: Option<String>,
    /// The server journals to Redis (`--redis`).
    pub journal: bool,
    /// HTTPS and WSS to the server (`--tls`).
    pub tls: bool,
    /// The maps' positions encoding (`--map-encoding`).
    pub map_encoding: MapEncoding,
    /// Seconds into the run of the analyst's export (`--export-at`).
    pub export_at: Option<u64>,
    /// Whether it asks for gzip (`--export-encoding`).
    pub export_gzip: bool,
    /// Fences, feeds, queries and sessions come and go (`--churn`).
    pub churn: bool,
}

impl Plan {
    /// Whether nearest answers can be checked exactly: every fix goes to
    /// the server in one ordered stream it counts as loadgen does
    /// (FlatBuffers over TCP; UDP reorders and drops, and a device
    /// protocol's decoder may merge or split reports).
    pub fn exact_nearest_check(&self) -> bool {
        self.transport == Transport::Tcp && self.source == Source::Flatbuffers
    }

    /// Fixes per second the fleet offers.
    pub fn offered_rate(&self) -> f64 {
        self.units as f64 * 1000.0 / f64::from(self.interval_ms.max(1))
    }
}

impl Options {
    /// The plan: the preset's values with every given flag over them.
    ///
    /// # Errors
    /// A `--target` other than `redis-geo URL`.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let preset = self.preset.unwrap_or(Preset::Smoke);
        // units, interval, seconds, fences, positions, alerts, standing, qps;
        // warm-up: two report intervals and at least 5 s (smoke: 2 s).
        let (name, d, warmup) = match preset {
            Preset::Smoke => ("smoke", (2_000, 1_000, 8, 30, 5, 3, 3, 50), 2),
            Preset::National => ("national", (300_000, 5_000, 60, 5_000, 200, 50, 50, 500), 10),
            Preset::Surge => ("surge", (300_000, 1_000, 60, 5_000, 200, 50, 50, 500), 5),
            Preset::Api => ("api", (100_000, 500, 60, 1_000, 100, 20, 0, 2_000), 5),
            Preset::Max => ("max", (1_000_000, 1_000, 30, 1_000, 20, 5, 10, 100), 5),
            Preset::Soak => ("soak", (300_000, 5_000, 3_600, 5_000, 200, 50, 50, 500), 10),
        };
        let seconds = self.seconds.unwrap_or(d.2).max(1);
        let redis = match &self.target {
            None => None,
            Some(t) if t.len() == 2 && t[0] == "redis-geo" => Some(t[1].clone()),
            Some(t) => anyhow::bail!("--target {t:?}: the one target is `redis-geo URL`"),
        };
        Ok(Plan {
            preset: name,
            units: self.units.unwrap_or(d.0).max(1),
            interval_ms: self.interval_ms.unwrap_or(d.1).max(100),
            seconds,
            warmup_s: self.warmup_s.unwrap_or(warmup).min(seconds - 1),
            fences: self.fences.unwrap_or(d.3),
            positions: self.positions.unwrap_or(d.4),
            alerts: self.alerts.unwrap_or(d.5),
            standing: self.standing.unwrap_or(d.6),
            nearest_qps: self.nearest_qps.unwrap_or(d.7),
            check_every: self.check_every.max(1),
            transport: self.transport,
            source: self.source,
            seed: self.seed,
            redis,
            journal: self.redis,
            tls: self.tls,
            map_encoding: self.map_encoding,
            export_at: self.export_at.map(|at| at.min(seconds.saturating_sub(1))),
            export_gzip: self.export_encoding == ExportEncoding::Gzip,
            churn: self.churn || preset == Preset::Soak,
        })
    }
}
