//! WebSocket `/v1/ingest` (scope `ingest`): binary frames are `FixBatch`es,
//! text frames JSON batches, each into the ingest queue like any
//! transport's. A frame that does not decode gets an error message and is
//! counted; the connection stays up. A full queue slows the sender
//! (nothing is lost).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bluelight_ingest::decode::{decode_flatbuffers, decode_json};
use bluelight_ingest::validate::Reject;
use futures_util::StreamExt;
use serde_json::Value;

use crate::auth::Scope;
use crate::protocol::Refusal;
use crate::state::AppState;

/// Upgrades `/v1/ingest` for a token with the `ingest` scope.
pub async fn handler(
    ws: WebSocketUpgrade,
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(denied) = s.tokens.check_request(&headers, &q, Some(Scope::Ingest)) {
        return denied.into_response();
    }
    ws.max_message_size(s.tuning.ws_ingest_max_message_bytes)
        .on_upgrade(move |socket| run(socket, s))
}

async fn run(mut socket: WebSocket, s: Arc<AppState>) {
    let queue = &s.queue;
    while let Some(Ok(msg)) = socket.next().await {
        let mut batch = queue.batch();
        let decoded = match &msg {
            Message::Binary(b) => decode_flatbuffers(b, &queue.validation, queue.now_ms(), &mut batch)
                .map_err(|e| e.to_string()),
            Message::Text(t) => decode_json(t.as_str(), &queue.validation, queue.now_ms(), &mut batch)
                .map_err(|e| e.to_string()),
            Message::Close(_) => break,
            _ => continue,
        };
        match decoded {
            Ok(()) => {
                if queue.send(batch).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                queue.counters.reject(Reject::BadFrame);
                let m = Refusal::bad(e).frame(&Value::Null);
                if socket.send(Message::Text(m.into())).await.is_err() {
                    break;
                }
            }
        }
    }
}
