//! HTTP endpoints of PROTOCOL.md (all but export, which comes with the
//! export step): health, metrics, fences, rules, units, nearest, fixes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bluelight_engine::{Agency, Engine, Filter, NearestQuery, RuleSpec, Shape, Status};
use bluelight_ingest::batch::IngestBatch;
use bluelight_ingest::decode::{decode_flatbuffers, decode_json};
use bluelight_ingest::definitions::{FenceDef, RuleDef};
use bluelight_ingest::queue::{ChangeError, Command};
use bluelight_ingest::validate::Reject;
use serde_json::{Value, json};

use crate::auth::Scope;
use crate::json::unit_feature;
use crate::state::AppState;

type Shared = State<Arc<AppState>>;
type Params = Query<HashMap<String, String>>;

/// Authorises a request for `scope` (token in the header), or returns the
/// refusal.
macro_rules! authorise {
    ($s:expr, $headers:expr, $q:expr, $scope:expr) => {
        match $s
            .tokens
            .check_request(&$headers, &$q, crate::auth::TokenIn::Header, Some($scope))
        {
            Ok(c) => c,
            Err(denied) => return denied.into_response(),
        }
    };
}

/// The router of every HTTP path.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.tuning.http_max_body_bytes;
    Router::new()
        .merge(crate::web::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/v1/fences", get(list_fences))
        .route(
            "/v1/fences/{id}",
            get(get_fence).put(put_fence).delete(delete_fence),
        )
        .route("/v1/rules", get(list_rules))
        .route("/v1/rules/{id}", get(get_rule).put(put_rule).delete(delete_rule))
        .route("/v1/units", get(list_units))
        .route("/v1/units/{id}", get(get_unit))
        .route("/v1/nearest", get(nearest))
        .route("/v1/fixes", axum::routing::post(post_fixes))
        .route("/v1/admin/promote", axum::routing::post(crate::promote::promote))
        .route("/v1/ws", get(crate::ws::handler))
        .route("/v1/ingest", get(crate::ws_ingest::handler))
        .route("/v1/export", get(crate::export::export))
        .route("/v1/export/h3", get(crate::export::export_h3))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(move |r: Response| async move {
            body_too_large_as_json(r, body_limit)
        }))
        .with_state(state)
}

/// axum answers a body over the limit with 413 and plain text; the
/// contract's errors are JSON, naming the limit and where it is set.
fn body_too_large_as_json(r: Response, limit: usize) -> Response {
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over the limit of {limit} bytes (config: tuning.http_max_body_bytes)"
            ),
        );
    }
    r
}

/// A 4xx/5xx reply `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

async fn healthz(State(s): Shared) -> Response {
    let (units, fences, alert_seq) = {
        let e = s.engine.lock();
        (e.unit_count(), e.fence_ids().len(), e.last_seq())
    };
    let leading = s.leading.load(Ordering::Relaxed);
    let mut v = json!({
        "status": "ok",
        "role": if leading { "leader" } else { "follower" },
        "units": units,
        "fences": fences,
        "uptime_s": s.started.elapsed().as_secs(),
        // The latest alert's seq: a client shows the recent past by
        // subscribing with `since_seq` a little below it.
        "alert_seq": alert_seq,
    });
    if let Some(r) = &s.redis {
        let up = match (&r.follower, leading) {
            (Some(f), false) => {
                v["lag_ms"] = json!(f.lag_ms.load(Ordering::Relaxed));
                f.up.load(Ordering::Relaxed)
            }
            _ => r.journal.status.up.load(Ordering::Relaxed) && r.outbox.up.load(Ordering::Relaxed),
        };
        v["redis"] = json!(if up { "ok" } else { "down" });
    }
    axum::Json(v).into_response()
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

async fn put_fence(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let who = authorise!(s, headers, q, Scope::Fences);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    if id.is_empty() || id.len() > 200 {
        return bad("fence id must be 1 to 200 characters");
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad("body is not UTF-8");
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

async fn get_fence(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    authorise!(s, headers, q, Scope::Read);
    let source = s.engine.lock().fence_source(&id);
    match source {
        Some(f) => axum::Json(stored(f.as_deref())).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("fence {id:?} not found")),
    }
}

async fn list_fences(State(s): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    authorise!(s, headers, q, Scope::Read);
    let sources: Vec<_> = {
        let e = s.engine.lock();
        e.fence_ids().iter().filter_map(|id| e.fence_source(id)).collect()
    };
    let features: Vec<Value> = sources.iter().map(|f| stored(f.as_deref())).collect();
    axum::Json(json!({"type":"FeatureCollection","features":features})).into_response()
}

async fn delete_fence(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let who = authorise!(s, headers, q, Scope::Fences);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    match change(&s, Command::RemoveFence(Arc::from(id.as_str()))).await {
        Some(Ok(_)) => {
            tracing::info!(fence = %id, by = %s.tokens.name(&who), "fence deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Err(e @ ChangeError::Unjournaled)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Some(Err(ChangeError::Refused(_))) => error(StatusCode::NOT_FOUND, format!("fence {id:?} not found")),
        None => stopping(),
    }
}

async fn put_rule(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let who = authorise!(s, headers, q, Scope::Fences);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    if id.is_empty() || id.len() > 200 {
        return bad("rule id must be 1 to 200 characters");
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad("body is not UTF-8");
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

async fn get_rule(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    authorise!(s, headers, q, Scope::Read);
    let rule = s.engine.lock().rules().into_iter().find(|r| r.id == id);
    match rule {
        Some(r) => axum::Json(rule_json(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("rule {id:?} not found")),
    }
}

async fn list_rules(State(s): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    authorise!(s, headers, q, Scope::Read);
    let mut rules = s.engine.lock().rules();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    let rules: Vec<Value> = rules.iter().map(rule_json).collect();
    axum::Json(json!({ "rules": rules })).into_response()
}

async fn delete_rule(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let who = authorise!(s, headers, q, Scope::Fences);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    match change(&s, Command::RemoveRule(Arc::from(id.as_str()))).await {
        Some(Ok(_)) => {
            tracing::info!(rule = %id, by = %s.tokens.name(&who), "rule deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Err(e @ ChangeError::Unjournaled)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Some(Err(ChangeError::Refused(_))) => error(StatusCode::NOT_FOUND, format!("rule {id:?} not found")),
        None => stopping(),
    }
}

/// Comma-separated list of a query parameter.
fn list<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<Vec<&'a str>> {
    q.get(key)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
}

fn query_filter(e: &mut Engine, q: &HashMap<String, String>) -> Result<Filter, String> {
    let agencies = list(q, "agency")
        .map(|l| l.iter().map(|a| Agency::parse(a)).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|err| err.to_string())?;
    let statuses = list(q, "status")
        .map(|l| l.iter().map(|x| Status::parse(x)).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|err| err.to_string())?;
    e.compile_filter(
        agencies.as_deref(),
        statuses.as_deref(),
        list(q, "kind").as_deref(),
        list(q, "tags").as_deref(),
        None,
        None,
    )
    .map_err(|err| err.to_string())
}

fn number(q: &HashMap<String, String>, key: &str) -> Result<Option<f64>, String> {
    q.get(key)
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or(format!("{key} must be a number, got {v:?}"))
        })
        .transpose()
}

async fn list_units(State(s): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    let who = authorise!(s, headers, q, Scope::Read);
    let mut e = s.engine.lock();
    let filter = match query_filter(&mut e, &q) {
        Ok(f) => who.limit(f),
        Err(err) => return bad(err),
    };
    let area = match q.get("bbox") {
        Some(b) => {
            let v: Result<Vec<f64>, _> = b.split(',').map(|x| x.trim().parse::<f64>()).collect();
            match v
                .ok()
                .filter(|v| v.len() == 4)
                .map(|v| Shape::bbox([v[0], v[1], v[2], v[3]]))
            {
                Some(Ok(shape)) => shape,
                Some(Err(err)) => return bad(format!("bbox: {err}")),
                None => return bad("bbox must be w,s,e,n"),
            }
        }
        None => match Shape::bbox([-180.0, -90.0, 180.0, 90.0]) {
            Ok(all) => all,
            Err(err) => return bad(err.to_string()),
        },
    };
    let units = e.area(&area, &filter, true, s.now_ms());
    let features: Vec<Value> = units.iter().filter_map(|u| unit_feature(&e, *u)).collect();
    axum::Json(json!({"type":"FeatureCollection","features":features})).into_response()
}

async fn get_unit(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let who = authorise!(s, headers, q, Scope::Read);
    let e = s.engine.lock();
    // Another agency's unit is not found, not forbidden: its existence is
    // not this caller's to know.
    let visible = e
        .find_unit(&id)
        .filter(|u| e.unit_view(*u).is_some_and(|v| who.sees(v.agency)));
    match visible.and_then(|u| unit_feature(&e, u)) {
        Some(f) => axum::Json(f).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("unit {id:?} not found")),
    }
}

async fn nearest(State(s): Shared, headers: HeaderMap, Query(q): Params) -> Response {
    let who = authorise!(s, headers, q, Scope::Read);
    let (lat, lon) = match (number(&q, "lon"), number(&q, "lat")) {
        (Ok(Some(lon)), Ok(Some(lat))) => match crate::protocol::lat_lon(lon, lat) {
            Ok(p) => p,
            Err(err) => return bad(err),
        },
        _ => return bad("lon and lat are required numbers"),
    };
    let k = match crate::protocol::k_text(q.get("k").map(String::as_str)) {
        Ok(k) => k,
        Err(err) => return bad(err),
    };
    let max_distance_m = match number(&q, "max_distance_m") {
        Ok(d) => d,
        Err(err) => return bad(err),
    };
    let include_stale = q.get("include_stale").is_some_and(|v| v == "true");
    let mut e = s.engine.lock();
    let filter = match query_filter(&mut e, &q) {
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

async fn post_fixes(State(s): Shared, headers: HeaderMap, Query(q): Params, body: Bytes) -> Response {
    authorise!(s, headers, q, Scope::Ingest);
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut batch: IngestBatch = s.queue.batch();
    let decoded = if ct.starts_with("application/json") {
        match std::str::from_utf8(&body) {
            Ok(text) => {
                decode_json(text, &s.queue.validation, s.now_ms(), &mut batch).map_err(|e| e.to_string())
            }
            Err(_) => Err("body is not UTF-8".into()),
        }
    } else if ct.starts_with("application/x-flatbuffers") {
        decode_flatbuffers(&body, &s.queue.validation, s.now_ms(), &mut batch).map_err(|e| e.to_string())
    } else {
        return bad(format!(
            "content type {ct:?}: use application/json or application/x-flatbuffers"
        ));
    };
    if let Err(e) = decoded {
        s.queue.counters.reject(Reject::BadFrame);
        return bad(e);
    }
    match s.queue.send_and_report(batch).await {
        Ok(r) if r.unjournaled => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} fixes were applied in memory but could not be journaled (Redis is unavailable): not acknowledged; send them again later",
                r.accepted
            ),
        ),
        Ok(r) => axum::Json(json!({
            "accepted": r.accepted,
            "rejected": r.errors.len(),
            "errors": r.errors.iter().map(|(i, why)| json!({"index": i, "reason": why.as_str()})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
