//! The `bluelight` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bluelight_api::config::ServeConfig;
use clap::{Args, Parser, Subcommand};

/// bluelight: a real-time location engine for blue-light services.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (127.0.0.1:9600) and UDP/TCP ingest (127.0.0.1:9601) around
    /// an in-memory engine. Prints `listening http=ADDR ingest=ADDR`.
    Serve(Box<ServeArgs>),
    /// The server in memory with a simulated national fleet sending through
    /// the real ingest, the sample fences, and the dispatch map at
    /// http://127.0.0.1:9600/; alerts and summaries also print here.
    Demo {
        /// HTTP address (the map is at `/`); port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:9600")]
        listen: SocketAddr,
        /// UDP/TCP ingest address; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:9601")]
        ingest: SocketAddr,
        /// Number of simulated units.
        #[arg(long, default_value_t = 3000)]
        units: usize,
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Seed of the simulated fleet.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds between summaries.
        #[arg(long, default_value_t = 5)]
        summary_every: u64,
    },
    /// Export history from a running server (`GET /v1/export`) to a file or
    /// stdout, with a progress bar on a terminal.
    ///
    /// Examples:
    ///   bluelight export --last 1h --format csv --out last-hour.csv
    ///   bluelight export --from-ms 1763726400000 --to-ms 1763730000000 --agency ambulance --shape tracks --out tracks.geojson
    ///   bluelight export --last 24h --h3-res 8 --out heat.geojson
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),
}

/// `export` options.
#[derive(Debug, Args)]
struct ExportArgs {
    /// The server's HTTP address.
    #[arg(long, env = "BLUELIGHT_SERVER", default_value = "http://127.0.0.1:9600")]
    server: String,
    /// A token with scope `export` (when the server has tokens).
    #[arg(long, env = "BLUELIGHT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Window start, ms since the Unix epoch (with --to-ms).
    #[arg(long, requires = "to_ms", conflicts_with = "last")]
    from_ms: Option<i64>,
    /// Window end, ms since the Unix epoch (with --from-ms).
    #[arg(long, requires = "from_ms")]
    to_ms: Option<i64>,
    /// Window ending now: a number with s, m, h or d (default 1h).
    #[arg(long)]
    last: Option<String>,
    /// Only fixes inside w,s,e,n (degrees).
    #[arg(long, allow_hyphen_values = true)]
    bbox: Option<String>,
    /// Only these units (comma-separated ids).
    #[arg(long)]
    units: Option<String>,
    /// Only these agencies (comma-separated: police, fire, ambulance, coastguard, other).
    #[arg(long)]
    agency: Option<String>,
    /// geojson, csv or ndjson (H3: geojson or csv).
    #[arg(long, default_value = "geojson", value_parser = ["geojson", "csv", "ndjson"])]
    format: String,
    /// points (one row per fix) or tracks (one LineString per unit).
    #[arg(long, default_value = "points", value_parser = ["points", "tracks"])]
    shape: String,
    /// Fix counts and distinct units per H3 cell at this resolution (0-15)
    /// instead of fixes.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=15))]
    h3_res: Option<u8>,
    /// Output file (written to FILE.part, renamed when complete); default stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Parses `90s`, `15m`, `2h`, `7d` into milliseconds.
fn parse_span_ms(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("--last {s:?}: use a number with s, m, h or d, e.g. 15m"))?;
    let per = match unit {
        "s" => 1_000,
        "m" | "" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("--last {s:?}: use a number with s, m, h or d, e.g. 15m"),
    };
    Ok(n.saturating_mul(per))
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let now = bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock);
    let (from_ms, to_ms) = match (args.from_ms, args.to_ms) {
        (Some(f), Some(t)) => (f, t),
        _ => (now - parse_span_ms(args.last.as_deref().unwrap_or("1h"))?, now),
    };
    if args.h3_res.is_some() && args.format == "ndjson" {
        anyhow::bail!("--h3-res exports geojson or csv");
    }
    let req = bluelight_api::cli_export::ExportRequest {
        server: args.server,
        token: args.token,
        from_ms,
        to_ms,
        bbox: args.bbox,
        units: args.units,
        agency: args.agency,
        format: args.format,
        shape: args.shape,
        h3_res: args.h3_res,
        out: args.out.clone(),
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let done = bluelight_api::cli_export::run(&req).await?;
    if let Some(out) = &args.out {
        eprintln!(
            "wrote {} rows, {} bytes to {}",
            done.rows,
            done.bytes,
            out.display()
        );
    }
    Ok(())
}

/// `serve` options; each overrides the same key of `--config`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML file whose keys mirror these flags (tokens live here).
    #[arg(long, env = "BLUELIGHT_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP and WebSocket address; port 0 picks a free one.
    #[arg(long, env = "BLUELIGHT_LISTEN")]
    listen: Option<SocketAddr>,
    /// UDP and TCP ingest address (both on one port); port 0 picks a free one.
    #[arg(long, env = "BLUELIGHT_INGEST")]
    ingest: Option<SocketAddr>,
    /// Cursor-on-Target TCP address (conventionally port 8087).
    #[arg(long, env = "BLUELIGHT_COT_TCP")]
    cot_tcp: Option<SocketAddr>,
    /// Cursor-on-Target UDP address: one XML event a datagram.
    #[arg(long, env = "BLUELIGHT_COT_UDP")]
    cot_udp: Option<SocketAddr>,
    /// NMEA 0183 TCP address (conventionally port 10110): RMC and GGA
    /// lines, the unit named first by $PBLU,ID,<unit id>.
    #[arg(long, env = "BLUELIGHT_NMEA_TCP")]
    nmea_tcp: Option<SocketAddr>,
    /// NMEA 0183 UDP address: each datagram names its unit with $PBLU
    /// first.
    #[arg(long, env = "BLUELIGHT_NMEA_UDP")]
    nmea_udp: Option<SocketAddr>,
    /// TETRA LIP UDP address: each datagram is the sender's ISSI (3 bytes,
    /// big-endian) then a LIP PDU, as an SDS gateway forwards them.
    #[arg(long, env = "BLUELIGHT_LIP_UDP")]
    lip_udp: Option<SocketAddr>,
    /// Send the live picture back on every --cot-tcp connection as CoT
    /// (XML, or TAK protocol v1 to a client that spoke it): every unit on
    /// connecting, then each change at most once a second. With tokens
    /// configured, to loopback clients and to devices whose certificate
    /// maps to a token with read and no agency limit.
    #[arg(long, env = "BLUELIGHT_COT_OUT")]
    cot_out: bool,
    /// Push the same picture to a TAK Server at HOST:PORT, as a client,
    /// reconnecting with backoff (implies --cot-out).
    #[arg(long, env = "BLUELIGHT_TAK_OUT")]
    tak_out: Option<String>,
    /// XYZ raster tile URL for the dispatch map's background, e.g.
    /// https://tiles.example.org/{z}/{x}/{y}.png (default: the built-in
    /// offline coastline; no request leaves the machine).
    #[arg(long, env = "BLUELIGHT_MAP_TILES")]
    map_tiles: Option<String>,
    /// PEM certificate chain: the HTTP listener serves HTTPS and WSS, and
    /// the TCP device listeners (ingest, CoT, NMEA) speak TLS (with
    /// --tls-key); the files are read again on SIGHUP, without dropping
    /// open sessions.
    #[arg(long, env = "BLUELIGHT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "BLUELIGHT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that sign device certificates: the TCP device
    /// listeners (ingest, CoT, NMEA) then speak mutual TLS and refuse a
    /// device without one; a token's `certs` maps a certificate's common
    /// name to what the device may send (its agencies).
    #[arg(long, env = "BLUELIGHT_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Serve non-loopback addresses without tokens.
    #[arg(long, env = "BLUELIGHT_INSECURE")]
    insecure: bool,
    /// Seconds without a fix before a unit is stale (default 120).
    #[arg(long, env = "BLUELIGHT_STALE_AFTER_S")]
    stale_after_s: Option<u32>,
    /// How long history keeps fixes, seconds (default 3600).
    #[arg(long, env = "BLUELIGHT_HISTORY_RETENTION_S")]
    history_retention_s: Option<u32>,
    /// The most fixes history holds (default 20,000,000).
    #[arg(long, env = "BLUELIGHT_HISTORY_MAX_FIXES")]
    history_max_fixes: Option<usize>,
    /// Run the threads that carry fixes, alerts and answers (the engine's
    /// writer and the runtime's workers) at real-time priority (Linux
    /// SCHED_FIFO), so on a busy machine they take a core the moment work
    /// arrives instead of waiting their turn. Bulk work (map feeds,
    /// exports) keeps normal priority. For a machine that serves bluelight
    /// first. Needs root or CAP_SYS_NICE (`setcap cap_sys_nice+ep
    /// bluelight`); without it the server warns and runs as usual.
    /// `/metrics` shows `bluelight_realtime_threads`.
    #[arg(long, env = "BLUELIGHT_REALTIME")]
    realtime: bool,
    /// The engine writer's nice value (-20 to 19; default 0, or
    /// `tuning.writer_nice`): at -10 the one thread every fix and alert
    /// passes through takes a core ahead of the server's other threads
    /// and other programs, at their expense on a full machine. Needs root,
    /// CAP_SYS_NICE or an RLIMIT_NICE that allows it (systemd:
    /// LimitNICE=-10); without it the server says so and runs as usual.
    /// `/metrics` shows `bluelight_writer_nice`.
    #[arg(long, env = "BLUELIGHT_WRITER_NICE", allow_hyphen_values = true)]
    writer_nice: Option<i32>,
    /// Redis URL, e.g. redis://127.0.0.1:6379/0: every accepted fix and
    /// change is journaled before it is applied, snapshots are written
    /// every minute, every alert goes to the stream PREFIX + "alerts"; a
    /// restart loses nothing. Without it the server runs in memory.
    #[arg(long, env = "BLUELIGHT_REDIS")]
    redis: Option<String>,
    /// Follow the leader whose Redis this is: a read-only replica that
    /// tails its journal and serves reads, feeds, nearest, alerts and
    /// export; writes answer 409; POST /v1/admin/promote makes it the
    /// leader once the old leader's lease has lapsed.
    #[arg(long, env = "BLUELIGHT_FOLLOW", conflicts_with = "redis")]
    follow: Option<String>,
    /// Prefix of every Redis key (default "bluelight:"), so deployments
    /// can share one Redis.
    #[arg(long, env = "BLUELIGHT_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// Alerts the Redis alerts stream keeps at least (default 1,000,000).
    #[arg(long, env = "BLUELIGHT_ALERTS_RETENTION")]
    alerts_retention: Option<u64>,
    /// With --redis: keep history in Redis too, so a restart has the
    /// history within retention (default true; about 17-29 bytes a fix
    /// of --history-max-fixes in Redis).
    #[arg(long, env = "BLUELIGHT_DURABLE_HISTORY")]
    durable_history: Option<bool>,
    /// Subscriptions one WebSocket session may hold (default 256); one
    /// more is refused with `overloaded`.
    #[arg(long)]
    max_subscriptions: Option<usize>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let mut c = match &self.config {
            Some(path) => ServeConfig::from_file(path)?,
            None => ServeConfig::default(),
        };
        if let Some(a) = self.listen {
            c.listen = a;
        }
        if let Some(a) = self.ingest {
            c.ingest = a;
        }
        for (flag, key) in [
            (self.cot_tcp, &mut c.cot_tcp),
            (self.cot_udp, &mut c.cot_udp),
            (self.nmea_tcp, &mut c.nmea_tcp),
            (self.nmea_udp, &mut c.nmea_udp),
            (self.lip_udp, &mut c.lip_udp),
        ] {
            if flag.is_some() {
                *key = flag;
            }
        }
        c.insecure |= self.insecure;
        if self.tls_client_ca.is_some() {
            c.tls_client_ca.clone_from(&self.tls_client_ca);
        }
        if self.tls_cert.is_some() {
            c.tls_cert.clone_from(&self.tls_cert);
            c.tls_key.clone_from(&self.tls_key);
        }
        if self.map_tiles.is_some() {
            c.map.tile_url.clone_from(&self.map_tiles);
        }
        if self.tak_out.is_some() {
            c.tak_out.clone_from(&self.tak_out);
        }
        c.cot_out |= self.cot_out || c.tak_out.is_some();
        if let Some(v) = self.stale_after_s {
            c.stale_after_s = v;
        }
        if let Some(v) = self.history_retention_s {
            c.history_retention_s = v;
        }
        if self.redis.is_some() {
            c.redis.clone_from(&self.redis);
        }
        if self.follow.is_some() {
            c.follow.clone_from(&self.follow);
        }
        if let Some(p) = &self.redis_prefix {
            c.redis_prefix.clone_from(p);
        }
        if let Some(v) = self.alerts_retention {
            c.alerts_retention = v;
        }
        if let Some(v) = self.durable_history {
            c.durable_history = v;
        }
        if let Some(v) = self.max_subscriptions {
            c.max_subscriptions = v;
        }
        if let Some(v) = self.history_max_fixes {
            c.history_max_fixes = v;
        }
        c.realtime |= self.realtime;
        if let Some(n) = self.writer_nice {
            c.tuning.writer_nice = n;
        }
        Ok(c)
    }
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let running = bluelight_api::server::start(&cfg).await?;
    // Before the line that says it is up: a SIGTERM sent the moment it is
    // read must reach the graceful stop (its final snapshot), not kill the
    // process as an unhandled signal does.
    let stop = shutdown_signal();
    if cfg.auth.tokens.is_empty() {
        println!("no tokens configured: serving loopback only, without authentication");
    }
    if cfg.follow.is_some() {
        // A follower binds no device listener until it is promoted.
        println!("listening http={} role=follower", running.http);
    } else {
        println!("listening http={} {}", running.http, running.devices);
    }
    tracing::info!(http = %running.http, devices = %running.devices, "serving");
    tokio::select! {
        () = stop => {}
        () = running.fenced() => {
            // Another server leads now: write nothing more, at once.
            eprintln!("another server took the leader lease: stopping without writing");
            std::process::exit(3);
        }
    }
    tracing::info!("shutdown signal received");
    // Not println!: a closed stdout (a supervisor gone) must not panic the
    // shutdown before its final snapshot.
    say("shutting down: closing sessions (1001), draining ingest, writing a final snapshot with Redis");
    running.shutdown(Duration::from_secs(5)).await;
    say("stopped");
    Ok(())
}

/// A line on stdout, if anyone reads it.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
    );
    async move {
        #[cfg(unix)]
        if let (Ok(mut int), Ok(mut term)) = signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`); stdout keeps
/// the lines scripts read (`listening http=... ingest=...`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs();
    match cli.command {
        Command::Export(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(export(args))?;
        }
        Command::Serve(args) => {
            // Read first: the runtime is built for it.
            let cfg = args.config()?;
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.enable_all();
            if cfg.realtime {
                bluelight_ingest::priority::realtime_workers(
                    &mut rt,
                    bluelight_ingest::priority::REALTIME_PRIORITY,
                );
            }
            rt.build()?.block_on(serve(cfg))?;
        }
        Command::Demo {
            listen,
            ingest,
            units,
            seconds,
            speed,
            seed,
            summary_every,
        } => {
            if !(speed.is_finite() && speed > 0.0) {
                anyhow::bail!("--speed must be a positive number");
            }
            let opts = bluelight_api::demo::DemoOptions {
                listen,
                ingest,
                units,
                duration: seconds.map(Duration::from_secs),
                speed,
                seed,
                summary_every: Duration::from_secs(summary_every.max(1)),
            };
            let rt = tokio::runtime::Runtime::new()?;
            let report = rt.block_on(async {
                tokio::select! {
                    r = bluelight_api::demo::run(&opts) => r,
                    _ = shutdown_signal() => Ok(bluelight_api::demo::DemoReport::default()),
                }
            })?;
            println!(
                "{} fixes, {} alerts, {} units seen",
                report.fixes, report.alerts, report.units_seen
            );
        }
    }
    Ok(())
}
