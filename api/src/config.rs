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
    /// Tokens (`[[auth.tokens]]`).
    pub auth: AuthConfig,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted tokens.
    pub tokens: Vec<TokenConfig>,
}

/// One `[[auth.tokens]]` entry (PROTOCOL.md "Auth").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret.
    pub token: String,
    /// `ingest`, `read`, `alerts`, `fences`, `export`, `admin`.
    pub scopes: Vec<String>,
    /// Agencies it may see; absent = all.
    pub agencies: Option<Vec<String>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9600)),
            ingest: SocketAddr::from(([127, 0, 0, 1], 9601)),
            cot_tcp: None,
            insecure: false,
            stale_after_s: 120,
            history_retention_s: 3600,
            history_max_fixes: 20_000_000,
            realtime: false,
            auth: AuthConfig::default(),
        }
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
        for t in &self.auth.tokens {
            if t.token.len() < 16 {
                return Err(ConfigError::Invalid(
                    "a token must be at least 16 characters".into(),
                ));
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
    fn unknown_scope_is_named() {
        let mut c = ServeConfig::default();
        c.auth.tokens.push(TokenConfig {
            token: "x".repeat(20),
            scopes: vec!["root".into()],
            agencies: None,
        });
        assert!(c.validate().expect_err("bad scope").to_string().contains("root"));
    }
}
