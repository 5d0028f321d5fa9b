//! The `bluelight` binary, run as a user would.

use std::process::Command;

#[test]
fn demo_runs_a_moving_fleet_and_fires_alerts() {
    let out = Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .args([
            "demo",
            "--units",
            "2000",
            "--seconds",
            "4",
            "--speed",
            "60",
            "--summary-every",
            "1",
        ])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("nearest available ambulances to Trafalgar Square"),
        "{stdout}"
    );
    assert!(
        stdout.contains("alert #"),
        "four simulated minutes should fire some alerts:\n{stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let fixes: u64 = last
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(fixes > 10_000, "{last}");
    assert!(stdout.contains("for the dispatch map"), "{stdout}");
}

#[test]
fn help_documents_demo_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_bluelight"))
        .args(["demo", "--help"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--units", "--seconds", "--speed", "--seed", "--listen"] {
        assert!(text.contains(flag), "{text}");
    }
}

#[test]
fn the_readme_main_command_resolves_to_the_bluelight_binary() {
    // `cargo run --release -- demo` must not be ambiguous in the workspace.
    let manifest = include_str!("../../Cargo.toml");
    assert!(
        manifest.contains("default-members = [\"api\"]"),
        "the workspace must default to the api package"
    );
}
