//! HTTP endpoints of PROTOCOL.md: health, metrics, fences, rules, units,
//! nearest, fixes, and the router of every path (with `/openapi.json`,
//! which the handlers' `#[utoipa::path]` annotations make).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bluelight_engine::{Agency, Engine, Filter, NearestQuery, RuleSpec, Shape, Status};
use bluelight_ingest::batch::IngestBatch;
use bluelight_ingest::decode::{decode_flatbuffers, decode_json};
use bluelight_ingest::definitions::{FenceDef, RuleDef};
use bluelight_ingest::queue::{ChangeError, Command};
use bluelight_ingest::validate::Reject;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Scope;
use crate::json::unit_feature;
use crate::openapi::{
    ErrorReply, FenceCollection, FenceFeature, FixBatchJson, FixError, FixesReply, Health, IdPath,
    NearestReply, Refused, Role, Rule, RuleList, UnitCollection, UnitFeature, Up,
};
use crate::state::AppState;

type Shared = State<Arc<AppState>>;

/// Authorises a request for `scope` (token in the header), or returns the
/// refusal.
macro_rules! authorise {
    ($s:expr, $headers:expr, $scope:expr) => {
        match $s.tokens.check(&$headers, None, Some($scope)) {
            Ok(c) => c,
            Err(denied) => return denied.into_response(),
        }
    };
}

/// The router of every HTTP path, and the OpenAPI document of them all,
/// made from the same annotations so that neither can lack a path.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.tuning.http_max_body_bytes;
    let (router, doc) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(crate::web::routes())
        .routes(routes!(healthz))
        .routes(routes!(crate::metrics::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(list_fences))
        .routes(routes!(get_fence, put_fence, delete_fence))
        .routes(routes!(list_rules))
        .routes(routes!(get_rule, put_rule, delete_rule))
        .routes(routes!(list_units))
        .routes(routes!(get_unit))
        .routes(routes!(nearest))
        .routes(routes!(post_fixes))
        .routes(routes!(crate::promote::promote))
        .routes(routes!(crate::ws::handler))
        .routes(routes!(crate::ws_ingest::handler))
        .routes(routes!(crate::export::export))
        .routes(routes!(crate::export::export_h3))
        .split_for_parts();
    let doc = OpenApiText(Bytes::from(doc.to_pretty_json().unwrap_or_default()));
    router
        .layer(axum::Extension(doc))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_query_token,
        ))
        .layer(axum::middleware::map_response(move |r: Response| {
            errors_as_json(r, body_limit)
        }))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such path (GET /openapi.json lists them)",
            )
        })
        .with_state(state)
}

/// The OpenAPI document as served.
#[derive(Clone)]
struct OpenApiText(Bytes);

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of every HTTP path", content_type = "application/json", body = Object)))]
async fn openapi_json(axum::Extension(doc): axum::Extension<OpenApiText>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0).into_response()
}

/// Paths where a browser cannot send a header, so `?token=` is allowed.
const TOKEN_IN_QUERY: [&str; 4] = ["/v1/ws", "/v1/ingest", "/v1/export", "/v1/export/h3"];

/// With tokens configured, `?token=` elsewhere is refused rather than
/// ignored: tokens in URLs end up in logs and histories.
async fn refuse_query_token(State(s): Shared, req: Request, next: Next) -> Response {
    let in_query = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "token" || p.starts_with("token=")));
    if in_query && s.tokens.any() && !TOKEN_IN_QUERY.contains(&req.uri().path()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "send the token as Authorization: Bearer T; ?token= is only for WebSocket upgrades and export downloads",
        );
    }
    next.run(req).await
}

/// Every refusal is the contract's `{"error": ...}`, including those axum
/// makes itself (a body over the limit, a malformed query string, a
/// method a path does not have, a plain GET of a WebSocket path).
async fn errors_as_json(r: Response, body_limit: usize) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return error(
            status,
            format!(
                "the request body is over the limit of {body_limit} bytes (config: tuning.http_max_body_bytes)"
            ),
        );
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_lowercase(),
        t => t.to_owned(),
    };
    let mut reply = error(status, message);
    // Keep what tells the client what to do instead (`Allow` on a 405).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            reply.headers_mut().insert(name, value.clone());
        }
    }
    reply
}

/// A 4xx/5xx reply `{"error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorReply {
            error: message.into(),
        }),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// Whether the server answers, its role, and what it holds.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The server is up", body = Health)))]
async fn healthz(State(s): Shared) -> Response {
    let (units, fences, alert_seq) = {
        let e = s.engine.lock();
        (e.unit_count(), e.fence_ids().len(), e.last_seq())
    };
    let leading = s.leading.load(Ordering::Relaxed);
    let mut health = Health {
        status: "ok",
        role: if leading { Role::Leader } else { Role::Follower },
        units,
        fences,
        uptime_s: s.started.elapsed().as_secs(),
        alert_seq,
        lag_ms: None,
        redis: None,
    };
    if let Some(r) = &s.redis {
        let up = match (&r.follower, leading) {
            (Some(f), false) => {
                health.lag_ms = Some(f.lag_ms.load(Ordering::Relaxed));
                f.up.load(Ordering::Relaxed)
            }
            _ => r.journal.status.up.load(Ordering::Relaxed) && r.outbox.up.load(Ordering::Relaxed),
        };
        health.redis = Some(if up { Up::Ok } else { Up::Down });
    }
    axum::Json(health).into_response()
}

/// A stored definition's JSON (as its owner sent it, with `id` set).
fn stored(source: Option<&str>) -> Value {
    source
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// Sends a change through the writer (and, with Redis, the journal) and
/// waits for the engine's answer; `None` once the server is stopping.
async fn change(s: &AppState, command: Command) -> Option<Result<bool, ChangeError>> {
    s.queue.change(command).await.ok()
}

fn stopping() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down")
}

/// Stores a fence (created or replaced). Units inside it are judged
/// against it from their next fix.
#[utoipa::path(put, path = "/v1/fences/{id}", tag = "fences", params(IdPath),
    request_body(content = FenceFeature, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced; the fence as stored", body = FenceFeature),
        (status = 201, description = "Created; the fence as stored", body = FenceFeature),
        (status = 400, description = "Not a fence: the reason names the field", body = ErrorReply),
        Refused,
        (status = 409, description = "This server is a follower", body = ErrorReply),
        (status = 413, description = "Body over tuning.http_max_body_bytes", body = ErrorReply),
        (status = 503, description = "Redis is down (not stored) or the server is stopping", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn put_fence(State(s): Shared, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let who = authorise!(s, headers, Scope::Fences);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    if id.is_empty() || id.len() > 200 {
        return bad("fence id must be 1 to 200 characters");
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad("the body is not UTF-8 text");
    };
    let def = match FenceDef::parse(&id, text) {
        Ok(d) => d,
        Err(e) => return bad(e.to_string()),
    };
    // The cover of a large area takes seconds: here, on a blocking
    // thread, not on the writer with every fix waiting behind it.
    let cfg = s.engine.lock().config().clone();
    let Ok(_turn) = s.covers.acquire().await else {
        return stopping();
    };
    let covering = move || {
        bluelight_ingest::priority::lower_this_thread();
        def.covered(&cfg)
    };
    let Ok(def) = tokio::task::spawn_blocking(covering).await else {
        return stopping();
    };
    let def = Arc::new(def);
    let command = Command::PutFence {
        def: def.clone(),
        now_ms: s.now_ms(),
    };
    let created = match change(&s, command).await {
        Some(Ok(created)) => created,
        Some(Err(ChangeError::Refused(why))) => return bad(why),
        Some(Err(e @ ChangeError::Unjournaled)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        None => return stopping(),
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    tracing::info!(fence = %id, created, by = %s.tokens.name(&who), "fence stored");
    (status, axum::Json(stored(Some(&def.source)))).into_response()
}

/// One fence as its owner stored it.
#[utoipa::path(get, path = "/v1/fences/{id}", tag = "fences", params(IdPath),
    responses(
        (status = 200, description = "The fence", body = FenceFeature),
        Refused,
        (status = 404, description = "No such fence", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn get_fence(State(s): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    authorise!(s, headers, Scope::Read);
    let source = s.engine.lock().fence_source(&id);
    match source {
        Some(f) => axum::Json(stored(f.as_deref())).into_response(),
        None => not_found("fence", &id),
    }
}

/// 404 naming what was not found.
fn not_found(what: &str, id: &str) -> Response {
    let id = crate::json::quoted(id);
    error(StatusCode::NOT_FOUND, format!("no {what} has the id {id}"))
}

/// Every fence.
#[utoipa::path(get, path = "/v1/fences", tag = "fences",
    responses((status = 200, description = "Every fence", body = FenceCollection), Refused),
    security(("bearer" = [])))]
async fn list_fences(State(s): Shared, headers: HeaderMap) -> Response {
    authorise!(s, headers, Scope::Read);
    let sources: Vec<_> = {
        let e = s.engine.lock();
        e.fence_ids().iter().filter_map(|id| e.fence_source(id)).collect()
    };
    let features: Vec<Value> = sources.iter().map(|f| stored(f.as_deref())).collect();
    axum::Json(json!({"type":"FeatureCollection","features":features})).into_response()
}

/// Deletes a fence; units inside it leave without an `exit`.
#[utoipa::path(delete, path = "/v1/fences/{id}", tag = "fences", params(IdPath),
    responses(
        (status = 204, description = "Deleted"),
        Refused,
        (status = 404, description = "No such fence", body = ErrorReply),
        (status = 409, description = "This server is a follower", body = ErrorReply),
        (status = 503, description = "Redis is down (not deleted) or the server is stopping", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn delete_fence(State(s): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let who = authorise!(s, headers, Scope::Fences);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    match change(&s, Command::RemoveFence(Arc::from(id.as_str()))).await {
        Some(Ok(_)) => {
            tracing::info!(fence = %id, by = %s.tokens.name(&who), "fence deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Err(e @ ChangeError::Unjournaled)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Some(Err(ChangeError::Refused(_))) => not_found("fence", &id),
        None => stopping(),
    }
}

/// Stores a proximity rule (created or replaced).
#[utoipa::path(put, path = "/v1/rules/{id}", tag = "fences", params(IdPath),
    request_body(content = Rule, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced; the rule as stored", body = Rule),
        (status = 201, description = "Created; the rule as stored", body = Rule),
        (status = 400, description = "Not a rule: the reason names the field", body = ErrorReply),
        Refused,
        (status = 409, description = "This server is a follower", body = ErrorReply),
        (status = 413, description = "Body over tuning.http_max_body_bytes", body = ErrorReply),
        (status = 503, description = "Redis is down (not stored) or the server is stopping", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn put_rule(State(s): Shared, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let who = authorise!(s, headers, Scope::Fences);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    if id.is_empty() || id.len() > 200 {
        return bad("rule id must be 1 to 200 characters");
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad("the body is not UTF-8 text");
    };
    let def = match RuleDef::parse(&id, text) {
        Ok(d) => Arc::new(d),
        Err(e) => return bad(e.to_string()),
    };
    let created = match change(&s, Command::PutRule(def.clone())).await {
        Some(Ok(created)) => created,
        Some(Err(ChangeError::Refused(why))) => return bad(why),
        Some(Err(e @ ChangeError::Unjournaled)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        None => return stopping(),
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    tracing::info!(rule = %id, created, by = %s.tokens.name(&who), "rule stored");
    (status, axum::Json(stored(Some(&def.source)))).into_response()
}

/// A rule as stored: its owner's JSON, or (for a rule made in code) its
/// fields.
fn rule_json(r: &RuleSpec) -> Value {
    match r.source.as_deref() {
        Some(src) => stored(Some(src)),
        None => {
            json!({"id": r.id, "type": "proximity", "radius_m": r.radius_m, "hysteresis_m": r.hysteresis_m})
        }
    }
}

/// One proximity rule as its owner stored it.
#[utoipa::path(get, path = "/v1/rules/{id}", tag = "fences", params(IdPath),
    responses(
        (status = 200, description = "The rule", body = Rule),
        Refused,
        (status = 404, description = "No such rule", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn get_rule(State(s): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    authorise!(s, headers, Scope::Read);
    let rule = s.engine.lock().rules().into_iter().find(|r| r.id == id);
    match rule {
        Some(r) => axum::Json(rule_json(&r)).into_response(),
        None => not_found("rule", &id),
    }
}

/// Every proximity rule, by id.
#[utoipa::path(get, path = "/v1/rules", tag = "fences",
    responses((status = 200, description = "Every rule", body = RuleList), Refused),
    security(("bearer" = [])))]
async fn list_rules(State(s): Shared, headers: HeaderMap) -> Response {
    authorise!(s, headers, Scope::Read);
    let mut rules = s.engine.lock().rules();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    let rules: Vec<Value> = rules.iter().map(rule_json).collect();
    axum::Json(json!({ "rules": rules })).into_response()
}

/// Deletes a proximity rule.
#[utoipa::path(delete, path = "/v1/rules/{id}", tag = "fences", params(IdPath),
    responses(
        (status = 204, description = "Deleted"),
        Refused,
        (status = 404, description = "No such rule", body = ErrorReply),
        (status = 409, description = "This server is a follower", body = ErrorReply),
        (status = 503, description = "Redis is down (not deleted) or the server is stopping", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn delete_rule(State(s): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let who = authorise!(s, headers, Scope::Fences);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    match change(&s, Command::RemoveRule(Arc::from(id.as_str()))).await {
        Some(Ok(_)) => {
            tracing::info!(rule = %id, by = %s.tokens.name(&who), "rule deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Err(e @ ChangeError::Unjournaled)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Some(Err(ChangeError::Refused(_))) => not_found("rule", &id),
        None => stopping(),
    }
}

/// Comma-separated list.
fn list(v: Option<&str>) -> Option<Vec<&str>> {
    v.map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
}

/// Which units: each a comma-separated list, a unit matching any entry of
/// every list given. The caller's token may narrow the agencies further.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct UnitFilter {
    /// Agencies: `police`, `fire`, `ambulance`, `coastguard`, `other`.
    #[param(
        pattern = r"^\s*(police|fire|ambulance|coastguard|other)?\s*(,\s*(police|fire|ambulance|coastguard|other)?\s*)*$"
    )]
    pub agency: Option<String>,
    /// Statuses: `available`, `enroute`, `at_scene`, `unavailable`, `emergency`, `unknown`.
    #[param(
        pattern = r"^\s*(available|enroute|at_scene|unavailable|emergency|unknown)?\s*(,\s*(available|enroute|at_scene|unavailable|emergency|unknown)?\s*)*$"
    )]
    pub status: Option<String>,
    /// Kinds (`rrv`, `pumping_appliance`, ...).
    pub kind: Option<String>,
    /// Tags; a unit with any of them matches.
    pub tags: Option<String>,
}

impl UnitFilter {
    /// The engine's filter.
    fn compile(&self, e: &mut Engine) -> Result<Filter, String> {
        let agencies = list(self.agency.as_deref())
            .map(|l| l.iter().map(|a| Agency::parse(a)).collect::<Result<Vec<_>, _>>())
            .transpose()
            .map_err(|err| format!("agency: {err}"))?;
        let statuses = list(self.status.as_deref())
            .map(|l| l.iter().map(|x| Status::parse(x)).collect::<Result<Vec<_>, _>>())
            .transpose()
            .map_err(|err| format!("status: {err}"))?;
        e.compile_filter(
            agencies.as_deref(),
            statuses.as_deref(),
            list(self.kind.as_deref()).as_deref(),
            list(self.tags.as_deref()).as_deref(),
            None,
            None,
        )
        .map_err(|err| err.to_string())
    }
}

/// A query parameter that must be a finite number.
fn number(key: &str, v: Option<&str>) -> Result<Option<f64>, String> {
    v.map(|v| {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{key} must be a number, got {}", crate::json::quoted(v)))
    })
    .transpose()
}

/// `GET /v1/units`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnitsQuery {
    /// `w,s,e,n` in degrees; west may be greater than east across the
    /// antimeridian. Absent: the whole world.
    #[param(example = "-1.6,50.8,-1.2,51.0")]
    pub bbox: Option<String>,
    /// Documented as [`UnitFilter`] beside this (`params(.., UnitFilter)`).
    #[serde(flatten)]
    #[param(ignore)]
    pub filter: UnitFilter,
}

/// Units in an area, matching a filter, with their latest positions.
#[utoipa::path(get, path = "/v1/units", tag = "units", params(UnitsQuery, UnitFilter),
    responses(
        (status = 200, description = "The units", body = UnitCollection),
        (status = 400, description = "A parameter is wrong: the reason names it", body = ErrorReply),
        Refused,
    ),
    security(("bearer" = [])))]
async fn list_units(State(s): Shared, headers: HeaderMap, Query(q): Query<UnitsQuery>) -> Response {
    let who = authorise!(s, headers, Scope::Read);
    let area = match q.bbox.as_deref() {
        Some(b) => {
            let v: Result<Vec<f64>, _> = b.split(',').map(|x| x.trim().parse::<f64>()).collect();
            match v
                .ok()
                .filter(|v| v.len() == 4)
                .map(|v| Shape::bbox([v[0], v[1], v[2], v[3]]))
            {
                Some(Ok(shape)) => shape,
                Some(Err(err)) => return bad(format!("bbox: {err}")),
                None => return bad("bbox must be four numbers: west,south,east,north"),
            }
        }
        None => match Shape::bbox([-180.0, -90.0, 180.0, 90.0]) {
            Ok(all) => all,
            Err(err) => return bad(err.to_string()),
        },
    };
    let mut e = s.engine.lock();
    let filter = match q.filter.compile(&mut e) {
        Ok(f) => who.limit(f),
        Err(err) => return bad(err),
    };
    let units = e.area(&area, &filter, true, s.now_ms());
    let features: Vec<Value> = units.iter().filter_map(|u| unit_feature(&e, *u)).collect();
    axum::Json(json!({"type":"FeatureCollection","features":features})).into_response()
}

/// One unit by id.
#[utoipa::path(get, path = "/v1/units/{id}", tag = "units", params(IdPath),
    responses(
        (status = 200, description = "The unit", body = UnitFeature),
        Refused,
        (status = 404, description = "No such unit, or one the token may not see", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn get_unit(State(s): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let who = authorise!(s, headers, Scope::Read);
    let e = s.engine.lock();
    // Another agency's unit is not found, not forbidden: its existence is
    // not this caller's to know.
    let visible = e
        .find_unit(&id)
        .filter(|u| e.unit_view(*u).is_some_and(|v| who.sees(v.agency)));
    match visible.and_then(|u| unit_feature(&e, u)) {
        Some(f) => axum::Json(f).into_response(),
        None => not_found("unit", &id),
    }
}

/// `GET /v1/nearest`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NearestParams {
    /// Longitude of the incident, degrees.
    #[param(value_type = f64, required = true, minimum = -180.0, maximum = 180.0)]
    pub lon: Option<String>,
    /// Latitude of the incident, degrees.
    #[param(value_type = f64, required = true, minimum = -90.0, maximum = 90.0)]
    pub lat: Option<String>,
    /// How many units, 1 to 1000 (default 5).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub k: Option<String>,
    /// Only units within this many metres.
    #[param(value_type = Option<f64>, minimum = 0.0)]
    pub max_distance_m: Option<String>,
    /// Include units whose last fix is stale (default false).
    #[param(value_type = Option<bool>)]
    pub include_stale: Option<String>,
    /// Documented as [`UnitFilter`] beside this (`params(.., UnitFilter)`).
    #[serde(flatten)]
    #[param(ignore)]
    pub filter: UnitFilter,
}

/// The `k` units nearest a point, along the surface, nearest first.
#[utoipa::path(get, path = "/v1/nearest", tag = "units", params(NearestParams, UnitFilter),
    responses(
        (status = 200, description = "The nearest units", body = NearestReply),
        (status = 400, description = "A parameter is wrong: the reason names it", body = ErrorReply),
        Refused,
    ),
    security(("bearer" = [])))]
async fn nearest(State(s): Shared, headers: HeaderMap, Query(q): Query<NearestParams>) -> Response {
    let who = authorise!(s, headers, Scope::Read);
    let point = match (number("lon", q.lon.as_deref()), number("lat", q.lat.as_deref())) {
        (Ok(Some(lon)), Ok(Some(lat))) => crate::protocol::lat_lon(lon, lat),
        (Err(err), _) | (_, Err(err)) => Err(err),
        (Ok(None), _) => Err("lon is required".into()),
        (_, Ok(None)) => Err("lat is required".into()),
    };
    let (lat, lon) = match point {
        Ok(p) => p,
        Err(err) => return bad(err),
    };
    let k = match crate::protocol::k_text(q.k.as_deref()) {
        Ok(k) => k,
        Err(err) => return bad(err),
    };
    let max_distance_m = match number("max_distance_m", q.max_distance_m.as_deref()) {
        Ok(d) => d,
        Err(err) => return bad(err),
    };
    let include_stale = match q.include_stale.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return bad("include_stale must be true or false"),
    };
    let mut e = s.engine.lock();
    let filter = match q.filter.compile(&mut e) {
        Ok(f) => who.limit(f),
        Err(err) => return bad(err),
    };
    let found = e.nearest(
        &NearestQuery {
            lat,
            lon,
            k,
            filter,
            max_distance_m,
            include_stale,
        },
        s.now_ms(),
    );
    let mut text = String::new();
    crate::json::write_nearest(&e, None, &found, &mut text);
    drop(e);
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// Fixes in, JSON or FlatBuffers; the reply comes once they are applied
/// (with Redis: journaled).
#[utoipa::path(post, path = "/v1/fixes", tag = "ingest",
    request_body(
        description = "`application/json` `{\"fixes\":[...]}`, or `application/x-flatbuffers` with a `FixBatch` (data/schema/fix.fbs)",
        content(
            (FixBatchJson = "application/json"),
            (Vec<u8> = "application/x-flatbuffers"),
        ),
    ),
    responses(
        (status = 200, description = "Each fix accepted or refused with its reason", body = FixesReply),
        (status = 400, description = "Not a batch: the reason says why", body = ErrorReply),
        Refused,
        (status = 409, description = "This server is a follower", body = ErrorReply),
        (status = 413, description = "Body over tuning.http_max_body_bytes", body = ErrorReply),
        (status = 503, description = "Not acknowledged: Redis is down or the server is stopping; send again", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn post_fixes(State(s): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let who = authorise!(s, headers, Scope::Ingest);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut batch: IngestBatch = s.queue.batch();
    // A token limited to some agencies places only their units.
    batch.agencies = who.agencies;
    let decoded = if ct.starts_with("application/json") {
        match std::str::from_utf8(&body) {
            Ok(text) => {
                decode_json(text, &s.queue.validation, s.now_ms(), &mut batch).map_err(|e| e.to_string())
            }
            Err(_) => Err("the body is not UTF-8 text".into()),
        }
    } else if ct.starts_with("application/x-flatbuffers") {
        decode_flatbuffers(&body, &s.queue.validation, s.now_ms(), &mut batch).map_err(|e| e.to_string())
    } else {
        return bad(format!(
            "content type {}: use application/json or application/x-flatbuffers",
            crate::json::quoted(ct)
        ));
    };
    if let Err(e) = decoded {
        s.queue.counters.reject(Reject::BadFrame);
        return bad(e);
    }
    let mut details = std::mem::take(&mut batch.error_details);
    match s.queue.send_and_report(batch).await {
        Ok(r) if r.unjournaled => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} fixes were applied in memory but could not be journaled (Redis is unavailable): not acknowledged; send them again later",
                r.accepted
            ),
        ),
        Ok(r) => axum::Json(FixesReply {
            accepted: r.accepted,
            rejected: r.errors.len(),
            errors: r
                .errors
                .iter()
                .map(|(i, why)| FixError {
                    index: *i,
                    reason: why.as_str(),
                    detail: details
                        .iter_mut()
                        .find(|(at, _)| at == i)
                        .map(|(_, d)| std::mem::take(d)),
                })
                .collect(),
        })
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
