//! `loadgen --redis`: the server under test journals to a `redis-server`
//! loadgen starts on a free port (append-only file, fsync every second, as
//! a deployment that means durability runs it), and the report gives the
//! journal's cost: Redis's CPU and memory beside the server's.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A `redis-server` of loadgen's own, stopped when dropped.
pub struct RedisProcess {
    child: Child,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl RedisProcess {
    /// Starts one on a free loopback port.
    ///
    /// # Errors
    /// `redis-server` is missing or does not answer within 10 s.
    pub fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("loadgen-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start redis-server ({e}): install it (apt-get install redis-server)")
            })?;
        let p = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(p.url())?.get_connection().is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(p)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// CPU seconds it has used.
    pub fn cpu_s(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0)
    }

    /// `used_memory` and the journal's and the snapshot's sizes.
    pub fn memory(&self) -> Value {
        let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) else {
            return Value::Null;
        };
        let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap_or_default();
        let used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let entries: Option<u64> = redis::cmd("XLEN").arg("bluelight:journal").query(&mut c).ok();
        let segments: Vec<String> = redis::cmd("KEYS")
            .arg("bluelight:history:*")
            .query(&mut c)
            .unwrap_or_default();
        let mut usage = |key: &str| -> Option<f64> {
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .query::<Option<f64>>(&mut c)
                .ok()
                .flatten()
                .map(|b| b / 1048576.0)
        };
        let journal = usage("bluelight:journal");
        let snapshot = [usage("bluelight:snapshot"), usage("bluelight:snapshot:engine")]
            .into_iter()
            .flatten()
            .sum::<f64>();
        let alerts = usage("bluelight:alerts");
        let history: f64 = segments.iter().filter_map(|k| usage(k)).sum();
        json!({
            "used_memory_mib": used.map(|b| b / 1048576.0),
            "journal_entries": entries,
            "journal_mib": journal,
            "snapshot_mib": snapshot,
            "alerts_mib": alerts,
            "history_mib": history,
            "history_segments": segments.len(),
        })
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
