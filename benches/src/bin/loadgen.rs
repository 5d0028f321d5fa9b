//! `loadgen`: see `bluelight_benches::loadgen` and `benches/README.md`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let opts = bluelight_benches::loadgen::plan::Options::parse();
    match bluelight_benches::loadgen::main_with(&opts) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: FAILED (see the report's failures)");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
