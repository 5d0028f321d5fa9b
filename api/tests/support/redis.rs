//! Real processes for the durability tests: a `redis-server` on a free
//! port, and the `bluelight` binary serving with `--redis`; each is killed
//! when dropped (redis-rs's `tests/support` is the model).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free loopback port, in its own directory.
pub struct RedisServer {
    child: Child,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    /// Starts one; fails the test, saying what is missing, without
    /// `redis-server` (`.ci/run` installs it).
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (a restart of a killed one).
    pub fn start_on(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("bluelight-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it (apt-get install redis-server; .ci/run does)"
                )
            });
        let server = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.client().get_connection().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A client of it.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("url")
    }

    /// A connection to it.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().expect("redis connection")
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where a test server's log goes (warnings and errors): a failing
/// test's story.
fn log_file(http_port: u16) -> Stdio {
    let path = std::env::temp_dir().join(format!("bluelight-test-{http_port}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The `bluelight` binary serving, killed (SIGKILL) when dropped.
pub struct Bluelight {
    child: Child,
    /// HTTP address.
    pub http: SocketAddr,
    /// UDP and TCP ingest address (none on a follower).
    pub ingest: Option<SocketAddr>,
}

impl Bluelight {
    /// `bluelight serve --redis URL` with `flags`, on fixed ports (a
    /// restarted server keeps its addresses) or free ones.
    pub fn serve(redis: &str, http_port: u16, flags: &[&str]) -> Self {
        Self::spawn(&["--redis", redis], http_port, flags)
    }

    /// `bluelight serve --follow URL`: a follower (its `ingest` is unbound
    /// until it is promoted).
    pub fn follow(redis: &str, http_port: u16, flags: &[&str]) -> Self {
        Self::spawn(&["--follow", redis], http_port, flags)
    }

    fn spawn(role: &[&str], http_port: u16, flags: &[&str]) -> Self {
        let listen = format!("127.0.0.1:{http_port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bluelight"))
            .args(["serve", "--listen", &listen, "--ingest", "127.0.0.1:0"])
            .args(role)
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log_file(http_port))
            .spawn()
            .expect("bluelight starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("listening "))
            .expect("a listening line (the server started)");
        // Keep reading, as a terminal would: the server prints at shutdown.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        let addr = |key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
        };
        Self {
            http: addr("http=").unwrap_or_else(|| panic!("http=ADDR in {line:?}")),
            ingest: addr("ingest="),
            child,
        }
    }

    /// Waits for it to exit by itself; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kills it at once (SIGKILL): no final snapshot, no draining.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it as an operator does (SIGTERM) and waits for it.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Bluelight {
    fn drop(&mut self) {
        self.kill();
    }
}
