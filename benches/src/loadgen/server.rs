//! The server under test: started by loadgen (`bluelight serve` on free
//! loopback ports, stopped at the end) or named by the caller; its
//! `/metrics`, and its memory and CPU time from `/proc` when it is local.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server loadgen drives.
pub struct Server {
    /// HTTP address.
    pub http: SocketAddr,
    /// Ingest address.
    pub ingest: SocketAddr,
    /// The device listener of a `--source` other than FlatBuffers.
    pub device: Option<SocketAddr>,
    /// The process, when loadgen started it.
    pub child: Option<Child>,
}

/// Finds `bluelight`: beside loadgen (cargo puts a workspace's binaries in
/// one folder), else builds it with the same profile.
///
/// # Errors
/// It is not there and cargo cannot build it.
pub fn find_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .ok_or_else(|| anyhow::anyhow!("loadgen has no folder"))?;
    // Test binaries live in target/PROFILE/deps; loadgen in target/PROFILE.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join(format!("bluelight{}", std::env::consts::EXE_SUFFIX));
        if p.is_file() {
            return Ok(p);
        }
    }
    let release = !cfg!(debug_assertions);
    eprintln!(
        "loadgen: building the bluelight binary ({})",
        if release { "release" } else { "dev" }
    );
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["build", "-p", "bluelight-api", "--bin", "bluelight"]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status()?;
    anyhow::ensure!(status.success(), "cargo build of bluelight failed");
    let p = dir.join(format!("bluelight{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        p.is_file(),
        "bluelight not found at {} after building it",
        p.display()
    );
    Ok(p)
}

/// Starts `bluelight serve` on free loopback ports, with `flags` beside
/// them; its log goes to `log`. `device` names a device listener on the
/// start-up line (`nmea-tcp=`) whose address to keep.
///
/// # Errors
/// It does not start, or does not say where it listens within 30 s.
pub fn start(bin: &Path, log: &Path, flags: &[&str], device: Option<&str>) -> anyhow::Result<Server> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--ingest", "127.0.0.1:0"])
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("listening ") {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        anyhow::bail!(
            "bluelight serve did not print its addresses within 30 s (log: {})",
            log.display()
        );
    };
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .ok_or_else(|| anyhow::anyhow!("no {key} in {line:?}"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("{key} in {line:?}: {e}"))
    };
    Ok(Server {
        http: addr("http=")?,
        ingest: addr("ingest=")?,
        device: device.map(addr).transpose()?,
        child: Some(child),
    })
}

impl Server {
    /// Stops a server loadgen started: SIGTERM, then kill after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Resident memory now and at peak (bytes) and CPU time (s) of a server
    /// loadgen started, from `/proc`.
    pub fn usage(&self) -> Option<(u64, u64, f64)> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = |key: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
                .map(|k| k * 1024)
        };
        Some((kb("VmRSS:")?, kb("VmHWM:")?, cpu_seconds(&pid.to_string())?))
    }
}

/// CPU seconds (user and system) a process has used so far: `pid`, or
/// `"self"` for loadgen's own.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's `/metrics` as name (with labels) → value.
///
/// # Errors
/// It does not answer.
pub async fn metrics(
    client: &reqwest::Client,
    http: SocketAddr,
    token: Option<&str>,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let mut req = client.get(format!("{}://{http}/metrics", super::tls::http_scheme()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let text = req.send().await?.error_for_status()?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}
