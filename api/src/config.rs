//! `bluelight serve` configuration: a TOML file (`--config`) whose keys
//! mirror the flags; flags and environment override the file.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

/// The server's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// HTTP and WebSocket address (PROTOCOL.md default 127.0.0.1:9600).
    pub listen: SocketAddr,
    /// UDP and TCP ingest address, both protocols on one port (default
    /// 127.0.0.1:9601).
    pub ingest: SocketAddr,
    /// Cursor-on-Target TCP address (conventionally port 8087); off when unset.
    pub cot_tcp: Option<SocketAddr>,
    /// Cursor-on-Target UDP address: one XML event a datagram; off when unset.
    pub cot_udp: Option<SocketAddr>,
    /// NMEA 0183 TCP address (conventionally port 10110); off when unset.
    pub nmea_tcp: Option<SocketAddr>,
    /// NMEA 0183 UDP address; off when unset.
    pub nmea_udp: Option<SocketAddr>,
    /// TETRA LIP UDP address (reports from an SDS gateway); off when unset.
    pub lip_udp: Option<SocketAddr>,
    /// Send the live picture back to every `cot_tcp` connection as CoT
    /// (XML, or TAK protocol v1 to a connection that spoke it): every unit
    /// when it connects, then each change at most once a second. With
    /// tokens configured, only to loopback connections and to devices
    /// whose client certificate maps to a token with `read` and no agency
    /// limit.
    pub cot_out: bool,
    /// A TAK Server (`HOST:PORT`) to push the same picture to, as a
    /// client, reconnecting with backoff.
    pub tak_out: Option<String>,
    /// PEM certificate chain: with `tls_key`, the HTTP listener serves
    /// HTTPS and WSS (PROTOCOL.md "TLS"); reloaded on SIGHUP.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM certificate(s) of the CA that signs device certificates: the
    /// TCP device listeners (ingest, CoT, NMEA) then require a client
    /// certificate it signed (mutual TLS), and a token whose `certs` names
    /// the certificate's common name says what the device may send.
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Serve a non-loopback address without tokens.
    pub insecure: bool,
    /// Seconds without a fix before a unit is stale.
    pub stale_after_s: u32,
    /// How long history keeps fixes, seconds.
    pub history_retention_s: u32,
    /// The most fixes history holds.
    pub history_max_fixes: usize,
    /// Run the threads on the path of a fix, an alert and an answer (the
    /// engine's writer and the runtime's workers) at real-time priority
    /// (Linux `SCHED_FIFO`; needs root or `CAP_SYS_NICE`, else a warning
    /// and normal priority). For a machine that serves bluelight first.
    pub realtime: bool,
    /// Redis URL (`redis://127.0.0.1:6379/0`): the journal, snapshots and
    /// the alert outbox, so a restart loses nothing (PROTOCOL.md
    /// "Durability and followers"). Unset: in memory.
    pub redis: Option<String>,
    /// Redis URL of a leader to follow: a read-only replica that tails its
    /// journal (PROTOCOL.md "Followers"); `POST /v1/admin/promote` makes
    /// it the leader. Not with `redis`.
    pub follow: Option<String>,
    /// Prefix of every Redis key, so deployments can share one Redis.
    pub redis_prefix: String,
    /// Alerts the Redis alerts stream keeps at least.
    pub alerts_retention: u64,
    /// With `redis`: keep history in Redis too, so a restart has the
    /// history within retention (each snapshot writes what history took
    /// since the last, about 17-29 bytes a fix, up to `history_max_fixes`). Off:
    /// Redis holds only the state, the journal and the alerts, and a
    /// restart's history starts at its latest snapshot.
    pub durable_history: bool,
    /// Subscriptions one WebSocket session may hold at once (PROTOCOL.md
    /// "Limits"); one more is refused with `overloaded`. Each holds state
    /// in the engine and a route in the hub, so a client cannot pile them
    /// up without bound.
    pub max_subscriptions: usize,
    /// Tokens (`[[auth.tokens]]`).
    pub auth: AuthConfig,
    /// The dispatch map page (`[map]`).
    pub map: MapConfig,
    /// Source networks UDP device listeners accept datagrams from, e.g.
    /// `["10.20.0.0/16"]` (PROTOCOL.md "TLS"); others are dropped and
    /// counted. Empty: any source. With tokens, a UDP listener on a
    /// non-loopback address needs it (devices send no token).
    pub ingest_allow: Vec<String>,
    /// Web origins besides the server's own (`https://cad.example.org`)
    /// whose pages may open `/v1/ws` and `/v1/ingest` (PROTOCOL.md
    /// "TLS"): a browser upgrade from any other site is refused 403.
    pub allowed_origins: Vec<String>,
    /// Queue bounds, chunk sizes and timers (`[tuning]`); the defaults
    /// are what the benchmarks were measured with.
    pub tuning: Tuning,
}

/// `[tuning]`: every knob of the server's hot path and sessions, in one
/// place. Change them only with a benchmark in hand.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tuning {
    /// Batches the ingest queue holds before stream senders wait (and UDP
    /// drops, counted).
    pub queue_batches: usize,
    /// Fixes the writer applies before it routes their outputs, runs
    /// waiting queries and lets a waiting reader have the engine (256 is
    /// about half a millisecond of work).
    pub writer_chunk: usize,
    /// The writer's `nice` (-20 to 19; Linux; default 0, off): below 0
    /// it takes a core ahead of the server's other threads and of other
    /// processes, which on a full machine was most of the fix-to-alert
    /// tail (and comes out of their share). Raising a thread needs root,
    /// `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows it (systemd:
    /// `LimitNICE=-10`); refused, the writer runs at the server's own
    /// priority and the log says so.
    pub writer_nice: i32,
    /// Queries (and, apart, bulk copies) that may wait for the writer;
    /// past it a request is answered `overloaded`.
    pub task_queue: usize,
    /// Writer time given to positions-feed copies at a time, µs.
    pub bulk_slice_us: u64,
    /// Feed copies take a slice between chunks of a busy writer when they
    /// have had none for this long, ms.
    pub bulk_max_wait_ms: u64,
    /// Units a feed copy takes from the engine in one step on the writer.
    pub feed_copy_step: usize,
    /// How soon a session looks again at an update that was due but could
    /// not start (no room on the writer, or a copy under way), ms.
    pub feed_retry_ms: u64,
    /// Alerts kept in memory for `since_seq`.
    pub alert_ring: usize,
    /// Messages a WebSocket session may have waiting before it is closed
    /// with 1013 as too slow for its alerts.
    pub session_queue: usize,
    /// How often a WebSocket session is pinged, s.
    pub ws_ping_s: u64,
    /// A WebSocket client silent this long is dropped, s.
    pub ws_idle_s: u64,
    /// A client that takes no frame for this long is gone, s.
    pub ws_send_timeout_s: u64,
    /// Connections each TCP device listener (ingest, CoT) serves at once;
    /// more wait in the accept backlog.
    pub device_max_connections: usize,
    /// A device connection silent this long is closed, s.
    pub device_idle_s: u64,
    /// The largest frame a device listener accepts (a TCP frame, a UDP
    /// datagram up to 65,535), bytes.
    pub device_max_frame_bytes: usize,
    /// An HTTP client must send a whole request head within this, and an
    /// idle keep-alive connection is closed after it, s (slowloris).
    pub http_header_timeout_s: u64,
    /// HTTP connections (WebSockets included) served at once; more wait
    /// in the kernel's backlog.
    pub http_max_connections: usize,
    /// The largest HTTP request body (`POST /v1/fixes`, fence and rule
    /// bodies), bytes; a larger one is answered 413 with a JSON error.
    pub http_max_body_bytes: usize,
    /// The largest message a `/v1/ws` client may send, bytes (requests are
    /// small; a polygon area is the largest).
    pub ws_max_message_bytes: usize,
    /// The largest message a `/v1/ingest` client may send, bytes.
    pub ws_ingest_max_message_bytes: usize,
    /// The engine's clock scans every unit once a second in this many
    /// parts, evenly spaced, so it never holds the engine long (a tenth of
    /// a national fleet held it 2–8 ms).
    pub clock_parts: u32,
    /// With Redis: seconds between snapshots (each trims the journal
    /// behind it); one comes sooner once the journal since the last
    /// outgrows it, so Redis holds about twice the state.
    pub snapshot_every_s: u64,
    /// With Redis: an acknowledged write (`POST /v1/fixes`, a fence or
    /// rule change) waits this long for Redis while it is away, then is
    /// answered 503 "not journaled", ms.
    pub journal_ack_timeout_ms: u64,
    /// With Redis: bytes of commands in one journal entry.
    pub journal_entry_bytes: usize,
    /// With Redis: journal appends on their way at once.
    pub journal_in_flight: usize,
    /// With Redis: alerts a resuming session (`since_seq`) reads from the
    /// stream at most, beyond the in-memory ring.
    pub alert_resume_max: usize,
    /// WebSocket sessions (`/v1/ws`) open at once; one more is answered
    /// 503 with a JSON error naming this key.
    pub max_sessions: usize,
    /// Units the engine holds at most: a fix or registration of a new unit
    /// past it is refused (reason `too_many_units`). Units are never
    /// forgotten, so this bounds every per-unit table.
    pub max_units: usize,
    /// Fences at most; a new one past it is refused (400, naming this key;
    /// replacing one is not refused).
    pub max_fences: usize,
    /// Proximity rules at most, likewise.
    pub max_rules: usize,
    /// With Redis: the leader lease's life without renewal, ms. A follower
    /// can be promoted this long after the leader stopped (the leader
    /// renews it every fifth of it).
    pub lease_ms: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            queue_batches: 256,
            writer_chunk: 256,
            writer_nice: 0,
            task_queue: 4096,
            bulk_slice_us: 250,
            bulk_max_wait_ms: 5,
            feed_copy_step: 256,
            feed_retry_ms: 25,
            alert_ring: 100_000,
            session_queue: 20_000,
            ws_ping_s: 20,
            ws_idle_s: 60,
            ws_send_timeout_s: 10,
            device_max_connections: 10_000,
            device_idle_s: 120,
            device_max_frame_bytes: 4 << 20,
            http_header_timeout_s: 10,
            http_max_connections: 10_000,
            http_max_body_bytes: 2 << 20,
            ws_max_message_bytes: 1 << 20,
            ws_ingest_max_message_bytes: 4 << 20,
            clock_parts: 100,
            snapshot_every_s: 60,
            journal_ack_timeout_ms: 5000,
            journal_entry_bytes: 256 * 1024,
            journal_in_flight: 8,
            alert_resume_max: 100_000,
            lease_ms: 10_000,
            max_sessions: 5_000,
            max_units: 2_000_000,
            max_fences: 100_000,
            max_rules: 1_000,
        }
    }
}

/// `[map]`: the dispatch map at `/`. Without a tile URL it draws its own
/// offline geography (Natural Earth, built in), so it works air-gapped.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MapConfig {
    /// An XYZ raster tile URL of the deployment's own map server, e.g.
    /// `https://tiles.example.org/{z}/{x}/{y}.png`; the browser fetches
    /// tiles from it (the only requests that leave the bluelight server).
    pub tile_url: Option<String>,
    /// The attribution the tiles' licence asks for, shown on the map.
    pub tile_attribution: String,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted tokens.
    pub tokens: Vec<TokenConfig>,
}

/// One `[[auth.tokens]]` entry (PROTOCOL.md "Auth").
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it, for the log (fence and rule changes name it); the
    /// secret never appears there.
    #[serde(default)]
    pub name: Option<String>,
    /// The secret (at least 16 characters). Or, so the config file need
    /// not hold secrets, `token_sha256` instead.
    #[serde(default)]
    pub token: String,
    /// The SHA-256 of the secret, 64 hex digits (`printf %s "$T" |
    /// sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// `ingest`, `read`, `alerts`, `fences`, `export`, `admin`.
    pub scopes: Vec<String>,
    /// Agencies it may see; absent = all. A device or client sending
    /// fixes with it may place only units of these agencies.
    pub agencies: Option<Vec<String>>,
    /// Device certificates that act with this token, by their subject's
    /// common name: exact, or a prefix ending in `*` (`"amb-*"`). Such a
    /// device needs `ingest` to send and `read` for CoT out.
    #[serde(default)]
    pub certs: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9600)),
            ingest: SocketAddr::from(([127, 0, 0, 1], 9601)),
            cot_tcp: None,
            cot_udp: None,
            nmea_tcp: None,
            nmea_udp: None,
            lip_udp: None,
            cot_out: false,
            tak_out: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            insecure: false,
            stale_after_s: 120,
            history_retention_s: 3600,
            history_max_fixes: 20_000_000,
            realtime: false,
            redis: None,
            follow: None,
            redis_prefix: "bluelight:".into(),
            alerts_retention: 1_000_000,
            durable_history: true,
            max_subscriptions: 256,
            auth: AuthConfig::default(),
            map: MapConfig::default(),
            allowed_origins: Vec::new(),
            ingest_allow: Vec::new(),
            tuning: Tuning::default(),
        }
    }
}

impl ServeConfig {
    /// `ingest_allow` parsed: `None` when it is empty (any source). A bare
    /// address is a network of one.
    ///
    /// # Errors
    /// An entry that is neither a network (`10.20.0.0/16`) nor an address.
    pub fn ingest_allow_nets(&self) -> Result<Option<Vec<ipnet::IpNet>>, ConfigError> {
        if self.ingest_allow.is_empty() {
            return Ok(None);
        }
        self.ingest_allow
            .iter()
            .map(|n| {
                n.trim()
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| n.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "ingest_allow: {n:?} is not a network such as 10.20.0.0/16 or an address"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its place.
        message: String,
    },
    /// The configuration is unsafe or contradictory.
    #[error("{0}")]
    Invalid(String),
}

const SCOPES: [&str; 6] = ["ingest", "read", "alerts", "fences", "export", "admin"];

impl ServeConfig {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// Unreadable, unparsable or unknown keys.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Checks the rules PROTOCOL.md sets: without tokens only loopback
    /// addresses are served unless `insecure`; scopes and agencies are known
    /// names.
    ///
    /// # Errors
    /// What is wrong, in words an operator can act on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.tokens.is_empty() && !self.insecure {
            for (what, addr) in [
                ("listen", Some(self.listen)),
                ("ingest", Some(self.ingest)),
                ("cot_tcp", self.cot_tcp),
                ("cot_udp", self.cot_udp),
                ("nmea_tcp", self.nmea_tcp),
                ("nmea_udp", self.nmea_udp),
                ("lip_udp", self.lip_udp),
            ] {
                if let Some(a) = addr
                    && !a.ip().is_loopback()
                {
                    return Err(ConfigError::Invalid(format!(
                        "refusing to serve {what} on non-loopback {a} without tokens: configure [[auth.tokens]] or pass --insecure"
                    )));
                }
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "TLS needs both tls_cert and tls_key (--tls-cert FILE --tls-key FILE)".into(),
            ));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError::Invalid(
                "tls_client_ca needs the server's own certificate too (--tls-cert FILE --tls-key FILE)"
                    .into(),
            ));
        }
        let allow = self.ingest_allow_nets()?;
        if !self.auth.tokens.is_empty() && !self.insecure {
            // Devices carry no token: with tokens configured, a device
            // listener that anyone on the network can reach would let them
            // place units and raise emergencies (PROTOCOL.md "TLS"), unless
            // each device proves who it is with a certificate.
            for (what, addr) in [
                ("ingest (its TCP side)", Some(self.ingest)),
                ("cot_tcp", self.cot_tcp),
                ("nmea_tcp", self.nmea_tcp),
            ] {
                if let Some(a) = addr
                    && !a.ip().is_loopback()
                    && self.tls_client_ca.is_none()
                {
                    return Err(ConfigError::Invalid(format!(
                        "refusing the TCP device listener {what} on non-loopback {a}: devices send no token, so require client certificates (--tls-cert, --tls-key and --tls-client-ca), bind it to loopback, or pass --insecure"
                    )));
                }
            }
            for (what, addr) in [
                ("cot_udp", self.cot_udp),
                ("nmea_udp", self.nmea_udp),
                ("lip_udp", self.lip_udp),
            ] {
                if let Some(a) = addr
                    && !a.ip().is_loopback()
                    && allow.is_none()
                {
                    return Err(ConfigError::Invalid(format!(
                        "refusing the UDP device listener {what} on non-loopback {a} without ingest_allow: devices send no token, so list the networks they send from (ingest_allow = [\"10.20.0.0/16\"]), or pass --insecure"
                    )));
                }
            }
        }
        if self.redis.is_some() && self.follow.is_some() {
            return Err(ConfigError::Invalid(
                "redis and follow are exclusive: a server leads (--redis URL) or follows (--follow URL)"
                    .into(),
            ));
        }
        let t = &self.tuning;
        for (key, v) in [
            ("max_sessions", t.max_sessions),
            ("max_units", t.max_units),
            ("max_fences", t.max_fences),
            ("max_rules", t.max_rules),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("tuning.{key} must be at least 1")));
            }
        }
        if self.max_subscriptions == 0 {
            return Err(ConfigError::Invalid(
                "max_subscriptions must be at least 1".into(),
            ));
        }
        let t = &self.tuning;
        if !(-20..=19).contains(&t.writer_nice) {
            return Err(ConfigError::Invalid(format!(
                "tuning.writer_nice is {}: a nice value is from -20 to 19",
                t.writer_nice
            )));
        }
        for (key, value) in [
            ("queue_batches", t.queue_batches),
            ("writer_chunk", t.writer_chunk),
            ("task_queue", t.task_queue),
            ("feed_copy_step", t.feed_copy_step),
            ("alert_ring", t.alert_ring),
            ("session_queue", t.session_queue),
            ("clock_parts", t.clock_parts as usize),
            ("snapshot_every_s", t.snapshot_every_s as usize),
            ("journal_entry_bytes", t.journal_entry_bytes),
            ("journal_in_flight", t.journal_in_flight),
            ("lease_ms", t.lease_ms as usize),
            ("ws_ping_s", t.ws_ping_s as usize),
            ("device_max_connections", t.device_max_connections),
            ("device_idle_s", t.device_idle_s as usize),
            ("device_max_frame_bytes", t.device_max_frame_bytes),
            ("http_header_timeout_s", t.http_header_timeout_s as usize),
            ("http_max_connections", t.http_max_connections),
            ("http_max_body_bytes", t.http_max_body_bytes),
            ("ws_max_message_bytes", t.ws_max_message_bytes),
            ("ws_ingest_max_message_bytes", t.ws_ingest_max_message_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("tuning.{key} must be at least 1")));
            }
        }
        if t.clock_parts > 1000 {
            return Err(ConfigError::Invalid(
                "tuning.clock_parts must be at most 1000 (a part a millisecond)".into(),
            ));
        }
        for t in &self.auth.tokens {
            match (&t.token_sha256, t.token.is_empty()) {
                (Some(_), false) => {
                    return Err(ConfigError::Invalid(
                        "a token has both token and token_sha256: give one".into(),
                    ));
                }
                (Some(h), true) => {
                    if crate::auth::parse_sha256(h).is_none() {
                        return Err(ConfigError::Invalid(format!(
                            "token_sha256 must be 64 hex digits (a SHA-256), got {} characters",
                            h.len()
                        )));
                    }
                }
                (None, _) if t.token.chars().count() < 16 => {
                    return Err(ConfigError::Invalid(
                        "a token must be at least 16 characters".into(),
                    ));
                }
                (None, _) => {}
            }
            for s in &t.scopes {
                if !SCOPES.contains(&s.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "unknown scope {s:?}; scopes are {}",
                        SCOPES.join(", ")
                    )));
                }
            }
            for a in t.agencies.iter().flatten() {
                bluelight_engine::Agency::parse(a).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_mirror_the_flags_and_unknown_keys_are_refused() {
        let c: ServeConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:0"
            ingest = "127.0.0.1:0"
            stale_after_s = 60
            realtime = true
            [[auth.tokens]]
            token = "a-long-random-secret"
            scopes = ["read", "alerts"]
            agencies = ["ambulance"]
            "#,
        )
        .expect("valid");
        assert_eq!(c.stale_after_s, 60);
        assert!(c.realtime);
        assert!(!ServeConfig::default().realtime, "off unless asked for");
        assert_eq!(
            c.auth.tokens[0].agencies.as_deref(),
            Some(&["ambulance".to_string()][..])
        );
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<ServeConfig>("listne = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn non_loopback_without_tokens_is_refused_unless_insecure() {
        let mut c = ServeConfig {
            listen: "0.0.0.0:9600".parse().expect("addr"),
            ..ServeConfig::default()
        };
        let err = c.validate().expect_err("unsafe").to_string();
        assert!(err.contains("--insecure"), "{err}");
        c.insecure = true;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn tuning_has_defaults_and_refuses_zero() {
        let c: ServeConfig = toml::from_str("[tuning]\nwriter_nice = -30").expect("parses");
        let err = c.validate().expect_err("out of range").to_string();
        assert!(err.contains("writer_nice is -30"), "{err}");
        let c: ServeConfig = toml::from_str("[tuning]\nwriter_nice = -10").expect("parses");
        assert!(c.validate().is_ok());
        assert_eq!(
            ServeConfig::default().tuning.writer_nice,
            0,
            "off unless asked for"
        );
        let c: ServeConfig = toml::from_str("[tuning]\nwriter_chunk = 128").expect("valid");
        assert_eq!(c.tuning.writer_chunk, 128);
        assert_eq!(c.tuning.alert_ring, Tuning::default().alert_ring);
        assert!(c.validate().is_ok());
        let zero: ServeConfig = toml::from_str("[tuning]\nsession_queue = 0").expect("parses");
        let err = zero.validate().expect_err("zero").to_string();
        assert!(err.contains("tuning.session_queue"), "{err}");
        assert!(
            toml::from_str::<ServeConfig>("[tuning]\nchunk = 1").is_err(),
            "unknown key"
        );
    }

    #[test]
    fn unknown_scope_is_named() {
        let mut c = ServeConfig::default();
        c.auth.tokens.push(TokenConfig {
            token: "x".repeat(20),
            scopes: vec!["root".into()],
            agencies: None,
            ..Default::default()
        });
        assert!(c.validate().expect_err("bad scope").to_string().contains("root"));
    }

    fn with_a_token() -> ServeConfig {
        let mut c = ServeConfig::default();
        c.auth.tokens.push(TokenConfig {
            token: "x".repeat(20),
            scopes: vec!["read".into()],
            ..Default::default()
        });
        c
    }

    #[test]
    fn with_tokens_a_tcp_device_listener_off_loopback_is_refused_unless_insecure() {
        let open: SocketAddr = "0.0.0.0:8087".parse().expect("addr");
        for set in [
            (|c: &mut ServeConfig, a| c.ingest = a) as fn(&mut ServeConfig, SocketAddr),
            |c, a| c.cot_tcp = Some(a),
            |c, a| c.nmea_tcp = Some(a),
        ] {
            let mut c = with_a_token();
            set(&mut c, open);
            let err = c
                .validate()
                .expect_err("a device listener anyone can reach")
                .to_string();
            assert!(
                err.contains("TCP device listener") && err.contains("--insecure"),
                "{err}"
            );
            c.insecure = true;
            assert!(c.validate().is_ok());
            // Or each device proves who it is (mutual TLS).
            let mut c = with_a_token();
            set(&mut c, open);
            c.tls_cert = Some("server.crt".into());
            c.tls_key = Some("server.key".into());
            c.tls_client_ca = Some("devices-ca.crt".into());
            assert!(c.validate().is_ok());
        }
        // A client CA without the server's own certificate is a mistake.
        let mut c = with_a_token();
        c.tls_client_ca = Some("devices-ca.crt".into());
        assert!(
            c.validate()
                .expect_err("no server certificate")
                .to_string()
                .contains("--tls-cert")
        );
        // The HTTP listener has tokens of its own.
        let mut c = with_a_token();
        c.listen = open;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn with_tokens_a_udp_device_listener_off_loopback_needs_ingest_allow() {
        let mut c = with_a_token();
        c.lip_udp = Some("0.0.0.0:5000".parse().expect("addr"));
        let err = c.validate().expect_err("no allow-list").to_string();
        assert!(err.contains("ingest_allow"), "{err}");
        c.ingest_allow = vec!["10.20.0.0/16".into(), "192.0.2.7".into()];
        assert!(c.validate().is_ok());
        let nets = c.ingest_allow_nets().expect("parsed").expect("some");
        assert!(nets[1].contains(&"192.0.2.7".parse::<std::net::IpAddr>().expect("ip")));
        c.ingest_allow = vec!["10.20.0.0/33".into()];
        let err = c.validate().expect_err("not a network").to_string();
        assert!(err.contains("10.20.0.0/33"), "{err}");
    }

    #[test]
    fn a_token_is_its_secret_or_its_sha256_never_both() {
        let token = |token: &str, hash: Option<&str>| {
            let mut c = ServeConfig::default();
            c.auth.tokens.push(TokenConfig {
                token: token.into(),
                token_sha256: hash.map(Into::into),
                scopes: vec!["read".into()],
                ..Default::default()
            });
            c.validate().map_err(|e| e.to_string())
        };
        let hash = "ab".repeat(32);
        assert!(token("", Some(&hash)).is_ok());
        assert!(token(&"x".repeat(20), Some(&hash)).is_err_and(|e| e.contains("both")));
        assert!(token("", Some("abc")).is_err_and(|e| e.contains("64 hex digits")));
        assert!(token("", Some(&"zz".repeat(32))).is_err_and(|e| e.contains("64 hex digits")));
        assert!(token("", None).is_err_and(|e| e.contains("16 characters")));
    }
}
