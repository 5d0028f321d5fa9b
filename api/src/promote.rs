//! `POST /v1/admin/promote` (scope `admin`): a follower becomes the leader
//! once the old leader's lease has lapsed (409 while it is live). It takes
//! the lease first, so the old leader can append nothing more; applies the
//! journal to its end; then its stage journals, its outbox appends (what it
//! made that the old leader's outbox had not yet appended goes first), its
//! ingest listeners are bound, and its clock and its push to `--tak-out`
//! run.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Scope;
use crate::state::AppState;

fn reply(status: StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// The promotion.
#[utoipa::path(post, path = "/v1/admin/promote", tag = "operations",
    responses(
        (status = 200, description = "This server leads (it already did, or it now does)", body = crate::openapi::Promoted),
        crate::openapi::Refused,
        (status = 409, description = "The old leader's lease is still live", body = crate::openapi::ErrorReply),
        (status = 503, description = "Redis did not answer", body = crate::openapi::ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn promote(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = s.tokens.check(&headers, None, Some(Scope::Admin)) {
        return denied.into_response();
    }
    let _one = s.promoting.lock().await;
    if s.leading.load(Ordering::Relaxed) {
        return reply(StatusCode::OK, json!({"role": "leader"}));
    }
    let Some(r) = &s.redis else {
        return reply(StatusCode::OK, json!({"role": "leader"}));
    };
    let Some(follower) = &r.follower else {
        return reply(StatusCode::OK, json!({"role": "leader"}));
    };
    let mut conn = r.conn.clone();
    match r.lease.acquire(&mut conn).await {
        Ok(true) => {}
        Ok(false) => {
            let holder = r.lease.holder(&mut conn).await.ok().flatten();
            let (node, ttl) = holder.map_or((String::new(), 0), |h| (h.node, h.ttl_ms));
            return reply(
                StatusCode::CONFLICT,
                json!({"error": format!("the leader's lease is live (node {node}, {ttl} ms more): stop the leader or wait for its lease to lapse")}),
            );
        }
        Err(e) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("Redis did not answer: {e}")}),
            );
        }
    }
    // The lease is ours: nobody else appends. Apply the rest, then lead.
    let Ok(next) = follower.finish().await else {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "the follower's tail has stopped"}),
        );
    };
    r.journal.lead(next).await;
    r.lease.clone().keep(conn, r.journal.status.clone());
    if let Err(e) = r.outbox.activate().await {
        tracing::error!(error = %e, "the outbox could not start appending; it retries with the next alert");
    }
    s.leading.store(true, Ordering::Relaxed);
    let devices = match crate::server::bind_devices(&s).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "promoted, but the device listeners could not be bound");
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"role": "leader", "error": format!("the device listeners could not be bound: {e}")}),
            );
        }
    };
    crate::server::lead(&s);
    tracing::warn!(next, %devices, "promoted: this server leads");
    let mut v = json!({"role": "leader", "next_entry": next});
    for (name, addr) in devices.named() {
        v[name] = json!(addr.to_string());
    }
    reply(StatusCode::OK, v)
}
