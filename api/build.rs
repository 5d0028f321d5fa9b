//! Builds the dispatch map's third-party assets into the binary.
//!
//! The page's own code lives in `web/` beside this file; the map library,
//! H3 and the Natural Earth geography come from the npm packages pinned by
//! `web/package-lock.json`. This script installs them with `npm ci` when
//! they are missing or older than the lock file, and writes the offline
//! geography (`web/geography.mjs`) into `OUT_DIR`. Nothing is fetched when
//! the server runs, and no copy of a library is committed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let web = manifest.join("web");
    for watched in [
        "web/package.json",
        "web/package-lock.json",
        "web/geography.mjs",
        "web/node_modules/.package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={watched}");
    }
    let installed = web.join("node_modules/.package-lock.json");
    if modified(&installed) < modified(&web.join("package-lock.json")) {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&web),
            "npm ci (installs the dispatch map's packages from web/package-lock.json)",
        );
    }
    run(
        Command::new("node")
            .arg("geography.mjs")
            .arg(out.join("geography.json"))
            .current_dir(&web),
        "node geography.mjs (writes the map's offline coastline)",
    );
    println!(
        "cargo:rustc-env=BLUELIGHT_WEB_MODULES={}",
        web.join("node_modules").display()
    );
}

/// When `path` was last written; the epoch when it does not exist.
fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{what} failed ({s}); the dispatch map needs Node.js 18+ and npm with access to the npm registry"
        ),
        Err(e) => panic!(
            "{what} could not start ({e}); the dispatch map is built with Node.js and npm: install them (Debian: apt-get install nodejs npm)"
        ),
    }
}
