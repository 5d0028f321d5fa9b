//! Tokens, scopes and agency limits (PROTOCOL.md "Auth").
//!
//! With no tokens configured every request is allowed (the server then
//! serves loopback only). Otherwise a request carries `Authorization: Bearer
//! T` (the scheme in any case, RFC 7235); `?token=T` only where a browser
//! cannot send a header: the WebSocket upgrades and the export download
//! (a token in a URL ends up in logs). A missing or unknown token is 401, a
//! missing scope 403. Tokens are kept as SHA-256 digests (the config may
//! give only the digest) and compared in constant time, every one of them,
//! so the time of a refusal says nothing about how close a guess was.
//! A token limited to some agencies has that limit folded into every filter
//! it uses, so it never sees another agency's unit in any reply, feed,
//! alert or export.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bluelight_engine::{Agency, Filter};
use bluelight_ingest::tls::DeviceGrant;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::TokenConfig;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Send fixes.
    Ingest,
    /// Units, feeds, nearest.
    Read,
    /// Alerts.
    Alerts,
    /// Create and delete fences and rules.
    Fences,
    /// History export.
    Export,
    /// Operations (metrics).
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ingest" => Scope::Ingest,
            "read" => Scope::Read,
            "alerts" => Scope::Alerts,
            "fences" => Scope::Fences,
            "export" => Scope::Export,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Alerts => "alerts",
            Scope::Fences => "fences",
            Scope::Export => "export",
            Scope::Admin => "admin",
        }
    }
}

/// Who is asking: the scopes and agency limit of their token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    scopes: u8,
    /// Agencies it may see, as a bit set; `None` = all.
    pub agencies: Option<u8>,
    /// Which configured token it was (for [`Tokens::name`]); none when no
    /// tokens are configured.
    token: Option<u16>,
}

impl Caller {
    /// Anyone, when no tokens are configured.
    pub const OPEN: Caller = Caller {
        scopes: u8::MAX,
        agencies: None,
        token: None,
    };

    /// Whether the caller has a scope.
    pub fn has(&self, s: Scope) -> bool {
        self.scopes & s.bit() != 0
    }

    /// Whether the caller may see units of this agency.
    pub fn sees(&self, a: Agency) -> bool {
        self.agencies.is_none_or(|m| m & (1 << a as u8) != 0)
    }

    /// `f` narrowed to the caller's agencies.
    pub fn limit(&self, mut f: Filter) -> Filter {
        if let Some(mine) = self.agencies {
            f.agencies = Some(f.agencies.map_or(mine, |theirs| theirs & mine));
        }
        f
    }
}

/// 64 hex digits as 32 bytes.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *o = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// One configured token: its digest, what it may do, who holds it.
#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    caller: Caller,
    name: Arc<str>,
    /// Device certificates' common names that act with it (`*` at the end:
    /// a prefix).
    certs: Vec<String>,
}

/// The configured tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl Tokens {
    /// From configuration (already validated).
    pub fn new(cfg: &[TokenConfig]) -> Self {
        let entries = cfg
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let digest = match &t.token_sha256 {
                    Some(h) => parse_sha256(h)?,
                    None => Sha256::digest(t.token.as_bytes()).into(),
                };
                let scopes = t
                    .scopes
                    .iter()
                    .filter_map(|s| Scope::parse(s))
                    .fold(0, |m, s| m | s.bit());
                let agencies = t.agencies.as_ref().map(|l| {
                    l.iter()
                        .filter_map(|a| Agency::parse(a).ok())
                        .fold(0u8, |m, a| m | (1 << a as u8))
                });
                let name = t.name.clone().unwrap_or_else(|| format!("token #{}", i + 1));
                Some(Entry {
                    digest,
                    caller: Caller {
                        scopes,
                        agencies,
                        token: u16::try_from(i).ok(),
                    },
                    name: name.into(),
                    certs: t.certs.clone(),
                })
            })
            .collect();
        Self { entries }
    }

    /// The name of the caller's token ("anyone" without tokens), for the
    /// log.
    pub fn name(&self, caller: &Caller) -> Arc<str> {
        caller
            .token
            .and_then(|i| self.entries.get(usize::from(i)))
            .map_or_else(|| Arc::from("anyone"), |e| e.name.clone())
    }

    /// The token a device certificate's common name acts with.
    fn by_certificate(&self, cn: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.certs.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => cn.starts_with(prefix),
                None => cn == p,
            })
        })
    }

    /// Whether tokens are configured (without them the server is open,
    /// on loopback only).
    pub fn any(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Authorises a request for `scope` (`None`: any valid token).
    ///
    /// # Errors
    /// [`Denied`]: 401 or 403 with the reason.
    pub fn check(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        scope: Option<Scope>,
    ) -> Result<Caller, Denied> {
        if self.entries.is_empty() {
            return Ok(Caller::OPEN);
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let Some(token) = bearer.or(query_token) else {
            return Err(Denied(
                StatusCode::UNAUTHORIZED,
                "a token is required: Authorization: Bearer T".into(),
            ));
        };
        let Some(caller) = self.find(token) else {
            return Err(Denied(StatusCode::UNAUTHORIZED, "unknown token".into()));
        };
        if let Some(scope) = scope
            && !caller.has(scope)
        {
            return Err(Denied(
                StatusCode::FORBIDDEN,
                format!("this token lacks the {} scope", scope.as_str()),
            ));
        }
        Ok(caller)
    }

    /// The token whose digest is the presented one's, looking at every
    /// entry whatever matched, each compared without an early exit.
    fn find(&self, token: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            let diff = e
                .digest
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(diff) == 0 {
                found = Some(e.caller);
            }
        }
        found
    }
}

/// Refuses a browser's cross-site WebSocket upgrade (PROTOCOL.md "TLS"):
/// an `Origin` naming another site than the server itself (its `Host`)
/// and not in `allowed`. Without tokens (loopback) this is all that stops
/// any page the dispatcher opens from reading live positions. Clients that
/// send no `Origin` are not browsers and are judged by their token alone.
///
/// # Errors
/// [`Denied`] 403 naming the origin.
pub fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), Denied> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim().trim_end_matches('/');
    let authority = origin.split_once("://").map(|(_, a)| a);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::trim);
    let same_site = matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h));
    if same_site
        || allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    Err(Denied(
        StatusCode::FORBIDDEN,
        format!(
            "a WebSocket from the web page of another site ({origin}) is refused; list the site in allowed_origins to allow it"
        ),
    ))
}

/// A refused request: its status (401 or 403) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub StatusCode, pub String);

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

/// With tokens configured, a device connection acts with the token its
/// certificate's common name maps to (one with neither `ingest` nor `read`
/// is refused): it sends only with `ingest`, places
/// only units of the token's agencies, and receives the live picture (CoT
/// out) only with `read`, and of the token's agencies only. A certificate no token maps is
/// refused. A connection without a certificate is one the start-up rules
/// let through (loopback, or `--insecure`): it sends anything, and CoT
/// out decides by its address.
impl bluelight_ingest::tls::DeviceAuthority for Tokens {
    fn grant(&self, common_name: Option<&str>) -> Option<DeviceGrant> {
        let e = self.by_certificate(common_name?)?;
        let (ingest, read) = (e.caller.has(Scope::Ingest), e.caller.has(Scope::Read));
        (ingest || read).then(|| DeviceGrant {
            // A device that only listens (`read`) places nothing.
            agencies: if ingest { e.caller.agencies } else { Some(0) },
            picture: read.then(|| e.caller.agencies.unwrap_or(bluelight_ingest::tls::ALL_AGENCIES)),
            name: e.name.clone(),
            certified: true,
        })
    }

    fn anonymous(&self) -> Option<DeviceGrant> {
        Some(DeviceGrant::open())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_ingest::tls::{ALL_AGENCIES, DeviceAuthority};

    fn tokens() -> Tokens {
        let t = |name: &str, scopes: &[&str], agencies: Option<&[&str]>, certs: &[&str]| TokenConfig {
            name: Some(name.into()),
            token: format!("{name}-secret-0123456789"),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            agencies: agencies.map(|a| a.iter().map(|s| s.to_string()).collect()),
            certs: certs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Tokens::new(&[
            t("crews", &["ingest"], Some(&["ambulance"]), &["amb-*"]),
            t("listener", &["read"], None, &["atak-1"]),
            t("gateway", &["ingest", "read"], None, &["gw-1"]),
            t("auditor", &["export"], None, &["audit-1"]),
            t("medics", &["read"], Some(&["ambulance"]), &["medic-1"]),
        ])
    }

    #[test]
    fn a_certificate_acts_with_the_token_that_names_it() {
        let t = tokens();
        let amb = t.grant(Some("amb-12")).expect("prefix match");
        assert_eq!(amb.agencies, Some(1 << Agency::Ambulance as u8));
        assert_eq!(amb.picture, None, "ingest alone: no picture");
        let gw = t.grant(Some("gw-1")).expect("exact match");
        assert_eq!((gw.agencies, gw.picture), (None, Some(ALL_AGENCIES)));
        assert!(t.grant(Some("gw-10")).is_none(), "exact names match exactly");
    }

    #[test]
    fn a_listening_device_places_nothing_and_one_without_ingest_or_read_is_refused() {
        let t = tokens();
        let atak = t.grant(Some("atak-1")).expect("read alone is enough to listen");
        assert_eq!((atak.agencies, atak.picture), (Some(0), Some(ALL_AGENCIES)));
        let medic = t.grant(Some("medic-1")).expect("read, limited");
        assert_eq!(
            (medic.agencies, medic.picture),
            (Some(0), Some(1 << Agency::Ambulance as u8)),
            "a limited listener sees its agencies' units only"
        );
        assert!(t.grant(Some("audit-1")).is_none());
        assert!(t.grant(Some("stranger")).is_none());
        assert!(t.grant(None).is_none(), "a certificate without a common name");
    }
}
