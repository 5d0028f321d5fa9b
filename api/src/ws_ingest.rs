//! WebSocket `/v1/ingest` (scope `ingest`): binary frames are `FixBatch`es,
//! text frames JSON batches, each into the ingest queue like any
//! transport's. A frame that does not decode gets an error message and is
//! counted; the connection stays up. A full queue slows the sender
//! (nothing is lost).
//!
//! With `?ack=1` the N-th frame of the connection (from 1) is answered
//! `{"type":"ack","frame":N,"accepted":A,"rejected":R}` once its fixes are
//! applied, and with Redis only once they are journaled; acknowledgements
//! are pipelined (up to 256 outstanding) and come in frame order. A frame
//! that does not decode is answered with an error whose `id` is N.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bluelight_ingest::decode::{decode_flatbuffers, decode_json};
use bluelight_ingest::queue::ApplyReport;
use bluelight_ingest::validate::Reject;
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::auth::Scope;
use crate::protocol::{ErrorCode, Refusal};
use crate::state::AppState;

/// `/v1/ingest`'s query.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IngestQuery {
    /// `1` or `true`: each frame is acknowledged once its fixes are
    /// applied (with Redis: journaled).
    #[param(value_type = Option<String>, pattern = "^(0|1|true|false)$")]
    pub ack: Option<String>,
    /// The token, for browsers, which cannot set a header on a WebSocket.
    pub token: Option<String>,
}

/// Upgrades `/v1/ingest` for a token with the `ingest` scope.
#[utoipa::path(get, path = "/v1/ingest", tag = "ingest", params(IngestQuery),
    description = "The WebSocket for fixes in: binary frames are FixBatch FlatBuffers, text frames JSON batches. A plain GET is refused.",
    responses(
        (status = 101, description = "Switched to WebSocket"),
        (status = 400, description = "Not a WebSocket upgrade, or a bad parameter", body = crate::openapi::ErrorReply),
        (status = 401, description = "No token, or not one the server knows", body = crate::openapi::ErrorReply),
        (status = 403, description = "The token lacks `ingest`, or an Origin header names another site", body = crate::openapi::ErrorReply),
        (status = 409, description = "This server is a follower", body = crate::openapi::ErrorReply),
        (status = 426, description = "The connection cannot be upgraded", body = crate::openapi::ErrorReply),
    ),
    security(("bearer" = []), ("token_query" = [])))]
pub async fn handler(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<IngestQuery>,
) -> Response {
    if let Err(denied) = crate::auth::check_origin(&headers, &s.allowed_origins) {
        return denied.into_response();
    }
    let who = match s.tokens.check(&headers, q.token.as_deref(), Some(Scope::Ingest)) {
        Ok(c) => c,
        Err(denied) => return denied.into_response(),
    };
    if let Some(refused) = s.refuse_writes() {
        return refused;
    }
    let ack = match q.ack.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => return crate::http::error(axum::http::StatusCode::BAD_REQUEST, "ack must be 1 or 0"),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(not_ws) => return not_ws.into_response(),
    };
    ws.max_message_size(s.tuning.ws_ingest_max_message_bytes)
        .on_upgrade(move |socket| run(socket, s, ack, who.agencies))
}

/// Acknowledgements a connection may have outstanding before it stops
/// reading (its fixes wait in the queue meanwhile).
const MAX_PENDING_ACKS: usize = 256;

/// A frame whose report is on its way: its number and where it comes.
type PendingAck = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, Option<ApplyReport>)> + Send>>;

/// `agencies`: those whose units the token may place (`None`: any).
async fn run(socket: WebSocket, s: Arc<AppState>, ack: bool, agencies: Option<u8>) {
    let queue = &s.queue;
    let (mut out, mut inp) = socket.split();
    let mut pending: FuturesOrdered<PendingAck> = FuturesOrdered::new();
    let mut frame: u64 = 0;
    let mut reading = true;
    let mut closing = None;
    while reading || !pending.is_empty() {
        tokio::select! {
            biased;
            Some((n, report)) = pending.next(), if !pending.is_empty() => {
                let m = match report {
                    Some(r) if r.unjournaled => Refusal {
                        code: ErrorCode::Overloaded,
                        message: format!(
                            "frame {n}: {} fixes were applied in memory but could not be journaled (Redis is unavailable): not acknowledged; send them again later",
                            r.accepted
                        ),
                    }
                    .frame(&json!(n)),
                    Some(r) => json!({"type":"ack","frame":n,"accepted":r.accepted,"rejected":r.errors.len()}).to_string(),
                    None => break,
                };
                if out.send(Message::Text(m.into())).await.is_err() {
                    break;
                }
            }
            msg = inp.next(), if reading && pending.len() < MAX_PENDING_ACKS => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        // Its acks still go out first; then the close says why.
                        let max = s.tuning.ws_ingest_max_message_bytes;
                        closing = crate::ws::over_limit(e, "ws_ingest_max_message_bytes", max);
                        reading = false;
                        continue;
                    }
                    None => {
                        reading = false;
                        continue;
                    }
                };
                let mut batch = queue.batch();
                batch.agencies = agencies;
                let decoded = match &msg {
                    Message::Binary(b) => decode_flatbuffers(b, &queue.validation, queue.now_ms(), &mut batch)
                        .map_err(|e| e.to_string()),
                    Message::Text(t) => decode_json(t.as_str(), &queue.validation, queue.now_ms(), &mut batch)
                        .map_err(|e| e.to_string()),
                    Message::Close(_) => {
                        reading = false;
                        continue;
                    }
                    _ => continue,
                };
                frame += 1;
                match decoded {
                    Ok(()) if ack => match queue.send_for_report(batch).await {
                        Ok(rx) => {
                            let n = frame;
                            pending.push_back(Box::pin(async move { (n, rx.await.ok()) }));
                        }
                        Err(_) => break,
                    },
                    Ok(()) => {
                        if queue.send(batch).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        queue.counters.reject(Reject::BadFrame);
                        let id = if ack { json!(frame) } else { Value::Null };
                        let m = Refusal::bad(e).frame(&id);
                        if out.send(Message::Text(m.into())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    if let Some(frame) = closing {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            out.send(Message::Close(Some(frame))),
        )
        .await;
    }
}
