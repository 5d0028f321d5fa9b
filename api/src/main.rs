//! The `bluelight` command line.

use std::time::Duration;

use clap::{Parser, Subcommand};

/// bluelight: a real-time location engine for blue-light services.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine in memory with a simulated fleet and the sample fences,
    /// printing alerts as they happen and a summary every few seconds.
    Demo {
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            units,
            seconds,
            speed,
            seed,
            summary_every,
        } => {
            if !(speed.is_finite() && speed > 0.0) {
                anyhow::bail!("--speed must be a positive number");
            }
            let report = bluelight_api::demo::run(&bluelight_api::demo::DemoOptions {
                units,
                duration: seconds.map(Duration::from_secs),
                speed,
                seed,
                summary_every: Duration::from_secs(summary_every.max(1)),
            })?;
            println!(
                "{} fixes, {} alerts, {} units seen",
                report.fixes, report.alerts, report.units_seen
            );
        }
    }
    Ok(())
}
