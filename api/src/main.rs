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
    Serve(ServeArgs),
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
        if self.cot_tcp.is_some() {
            c.cot_tcp = self.cot_tcp;
        }
        c.insecure |= self.insecure;
        if let Some(v) = self.stale_after_s {
            c.stale_after_s = v;
        }
        if let Some(v) = self.history_retention_s {
            c.history_retention_s = v;
        }
        if let Some(v) = self.history_max_fixes {
            c.history_max_fixes = v;
        }
        Ok(c)
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let running = bluelight_api::server::start(&cfg).await?;
    if cfg.auth.tokens.is_empty() {
        println!("no tokens configured: serving loopback only, without authentication");
    }
    match running.cot {
        Some(cot) => println!(
            "listening http={} ingest={} cot={cot}",
            running.http, running.ingest
        ),
        None => println!("listening http={} ingest={}", running.http, running.ingest),
    }
    shutdown_signal().await;
    println!("shutting down: closing sessions (1001) and draining ingest");
    running.shutdown(Duration::from_secs(5)).await;
    println!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(args))?;
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
