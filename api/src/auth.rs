//! Tokens, scopes and agency limits (PROTOCOL.md "Auth").
//!
//! With no tokens configured every request is allowed (the server then
//! serves loopback only). Otherwise a request carries `Authorization: Bearer
//! T` or `?token=T`; a missing or unknown token is 401, a missing scope 403.
//! A token limited to some agencies has that limit folded into every filter
//! it uses, so it never sees another agency's unit in any reply, feed,
//! alert or export.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bluelight_engine::{Agency, Filter};
use serde_json::json;

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
}

impl Caller {
    /// Anyone, when no tokens are configured.
    pub const OPEN: Caller = Caller {
        scopes: u8::MAX,
        agencies: None,
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

/// The configured tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    by_token: HashMap<String, Caller>,
}

impl Tokens {
    /// From configuration (already validated).
    pub fn new(cfg: &[TokenConfig]) -> Self {
        let by_token = cfg
            .iter()
            .map(|t| {
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
                (t.token.clone(), Caller { scopes, agencies })
            })
            .collect();
        Self { by_token }
    }

    /// [`check`](Self::check) with the token of `Authorization` or the
    /// request's `?token=` parameter.
    ///
    /// # Errors
    /// [`Denied`]: 401 or 403 with the reason.
    pub fn check_request(
        &self,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
        scope: Option<Scope>,
    ) -> Result<Caller, Denied> {
        self.check(headers, query.get("token").map(String::as_str), scope)
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
        if self.by_token.is_empty() {
            return Ok(Caller::OPEN);
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = bearer.or(query_token) else {
            return Err(Denied(
                StatusCode::UNAUTHORIZED,
                "a token is required: Authorization: Bearer T or ?token=T".into(),
            ));
        };
        let Some(caller) = self.by_token.get(token) else {
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
        Ok(*caller)
    }
}

/// A refused request: its status (401 or 403) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub StatusCode, pub String);

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}
