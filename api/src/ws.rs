//! WebSocket `/v1/ws` (PROTOCOL.md): the socket loop of one session.
//!
//! One task per connection: it reads client messages (handled in
//! [`crate::subscriptions`]) and sends, in order, the
//! replies and alerts queued for it, the conflated positions of its feeds
//! (at most `max_hz`, see [`feeds`](crate::feeds)) and changed nearest
//! answers. Pings every `ws_ping_s`; a client silent for `ws_idle_s` is
//! dropped. A client too slow for its alerts is closed with 1013.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

use crate::alert_record::alert_text;
use crate::auth::Caller;
use crate::feeds::{FeedsDone, due_nearest, next_due, start_feed_copy};
use crate::protocol::Refusal;
use crate::rows::UnitRows;
use crate::session::{Outgoing, Session, Subscription};
use crate::state::AppState;
use crate::subscriptions;

/// `/v1/ws`'s query.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// The token, for browsers, which cannot set a header on a WebSocket.
    pub token: Option<String>,
}

/// Upgrades `/v1/ws` for any valid token (`?token=T` for browsers); each
/// message then needs its own scope.
#[utoipa::path(get, path = "/v1/ws", tag = "units", params(WsQuery),
    description = "The WebSocket of live positions, alerts and standing nearest queries (see the README for its messages). A plain GET is refused.",
    responses(
        (status = 101, description = "Switched to WebSocket"),
        (status = 400, description = "Not a WebSocket upgrade", body = crate::openapi::ErrorReply),
        (status = 401, description = "No token, or not one the server knows", body = crate::openapi::ErrorReply),
        (status = 403, description = "An Origin header naming another site", body = crate::openapi::ErrorReply),
        (status = 426, description = "The connection cannot be upgraded", body = crate::openapi::ErrorReply),
        (status = 503, description = "The server holds max_sessions sessions already", body = crate::openapi::ErrorReply),
    ),
    security(("bearer" = []), ("token_query" = [])))]
pub async fn handler(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
) -> Response {
    if let Err(denied) = crate::auth::check_origin(&headers, &s.allowed_origins) {
        return denied.into_response();
    }
    let who = match s.tokens.check(&headers, q.token.as_deref(), None) {
        Ok(c) => c,
        Err(denied) => return denied.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(not_ws) => return not_ws.into_response(),
    };
    let place = match SessionPlace::take(&s) {
        Ok(place) => place,
        Err(open) => {
            s.hub.sessions_refused.fetch_add(1, Ordering::Relaxed);
            return crate::http::error(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this server holds {open} WebSocket sessions, the most max_sessions allows; try again later"
                ),
            );
        }
    };
    // A small read buffer: tungstenite zero-fills the whole buffer before
    // every read attempt, and client messages are small (128 KiB of memset
    // per poll was 8% of the server's CPU under load).
    ws.max_message_size(s.tuning.ws_max_message_bytes)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| run(socket, s, who, place))
}

/// A place among `max_sessions`, taken when the upgrade is asked for (a
/// count read then and raised once the session ran let concurrent
/// upgrades pass the limit together) and given back when the session
/// ends, or when the upgrade never completes.
struct SessionPlace(Arc<AppState>);

impl SessionPlace {
    /// A place, or the sessions open when there is none.
    fn take(s: &Arc<AppState>) -> Result<Self, u64> {
        let max = s.tuning.max_sessions as u64;
        s.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .map(|_| Self(Arc::clone(s)))
    }
}

impl Drop for SessionPlace {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes tungstenite reads at a time from a client.
const READ_BUFFER: usize = 8 << 10;

type Tx = SplitSink<WebSocket, Message>;
type Rx = SplitStream<WebSocket>;

async fn run(socket: WebSocket, s: Arc<AppState>, who: Caller, _place: SessionPlace) {
    let (mut tx, mut rx) = socket.split();
    let t = &s.tuning;
    let send_timeout = Duration::from_secs(t.ws_send_timeout_s);
    let idle = Duration::from_secs(t.ws_idle_s);
    let retry = Duration::from_millis(t.feed_retry_ms);
    let session = Arc::new(Session::new(t.session_queue));
    // When a feed or standing answer with changes waiting falls due.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed = false;
    let mut ping = tokio::time::interval(Duration::from_secs(t.ws_ping_s));
    let mut last_heard = tokio::time::Instant::now();
    let mut stop = s.shutdown.subscribe();
    let mut resets = s.resets.subscribe();
    let mut stamps: Vec<Instant> = Vec::new();
    let mut nearest_stamps: Vec<Instant> = Vec::new();
    // Positions are written on the feeds thread, one job at a time; their
    // text is sent when it comes back.
    let mut pool: Vec<UnitRows> = Vec::new();
    let mut feeds_job: Option<tokio::sync::oneshot::Receiver<FeedsDone>> = None;
    let mut ready: Vec<(String, Message)> = Vec::new();
    'conn: loop {
        tokio::select! {
            changed = stop.changed() => {
                // Copied out at once: the guard must not live across an await.
                let stopping = changed.is_err() || *stop.borrow();
                if stopping {
                    let frame = CloseFrame { code: 1001, reason: "server shutting down".into() };
                    let _ = tokio::time::timeout(Duration::from_secs(2), tx.send(Message::Close(Some(frame)))).await;
                    break 'conn;
                }
            }
            _ = resets.changed() => {
                // A follower put a newer snapshot in place of its engine:
                // this session's feeds and queries were on the old one.
                let frame = CloseFrame { code: 1012, reason: "the follower reloaded its state: reconnect and subscribe again".into() };
                let _ = tokio::time::timeout(Duration::from_secs(2), tx.send(Message::Close(Some(frame)))).await;
                break 'conn;
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    last_heard = tokio::time::Instant::now();
                    subscriptions::handle(&s, &session, text.as_str(), who, Instant::now()).await;
                }
                Some(Ok(Message::Binary(_))) => {
                    session.push(Outgoing::Text(Refusal::bad("send JSON text frames").frame(&Value::Null)));
                }
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => last_heard = tokio::time::Instant::now(),
                Some(Err(e)) => {
                    if let Some(frame) = over_limit(e, "ws_max_message_bytes", t.ws_max_message_bytes) {
                        let _ = tokio::time::timeout(Duration::from_secs(2), tx.send(Message::Close(Some(frame)))).await;
                    }
                    break 'conn;
                }
                Some(Ok(Message::Close(_))) | None => break 'conn,
            },
            _ = session.wake.notified() => {}
            () = &mut timer, if armed => {}
            done = async {
                match feeds_job.as_mut() {
                    Some(job) => job.await,
                    None => std::future::pending().await,
                }
            } => {
                feeds_job = None;
                if let Ok(done) = done {
                    ready = done.frames;
                    pool = done.pool;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > idle {
                    break 'conn;
                }
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break 'conn;
                }
            }
        }
        if session.too_slow.load(Ordering::Relaxed) {
            close_too_slow(&s, &mut tx, &mut rx).await;
            break 'conn;
        }
        let (queued, replayed) = session.drain();
        // Everything due is written with one flush: a write per frame would
        // cost a system call per alert per subscriber.
        let mut written = 0usize;
        let mut sent: Result<(), SendFailed> = Ok(());
        for (i, m) in queued.into_iter().enumerate() {
            let (frame, received, asked) = match m {
                Outgoing::Text(t) => (Message::Text(t.into()), None, None),
                Outgoing::Frame(f) => (f, None, None),
                // Replayed alerts are old by design: only live ones count as latency.
                Outgoing::Alert(sub, r) => (
                    Message::Text(alert_text(&sub, &r).into()),
                    r.received.filter(|_| i >= replayed),
                    None,
                ),
                Outgoing::Nearest(t, asked) => (Message::Text(t.into()), None, Some(asked)),
            };
            sent = queue_frame(&mut tx, frame, send_timeout).await;
            if sent.is_err() {
                break;
            }
            written += 1;
            if let Some(t) = received {
                stamps.push(t);
            }
            if let Some(t) = asked {
                nearest_stamps.push(t);
            }
        }
        if sent.is_ok() {
            due_nearest(&s, &session);
            // A feed unsubscribed while its job ran sends nothing more.
            let frames: Vec<Message> = {
                let subs = session.subscriptions.lock();
                ready
                    .drain(..)
                    .filter(|(sub, _)| matches!(subs.get(sub), Some(Subscription::Positions { .. })))
                    .map(|(_, t)| t)
                    .collect()
            };
            for frame in frames {
                sent = queue_frame(&mut tx, frame, send_timeout).await;
                if sent.is_err() {
                    break;
                }
                written += 1;
            }
        }
        if sent.is_ok() && written > 0 {
            sent = match tokio::time::timeout(send_timeout, tx.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(SendFailed::Closed),
                Err(_) => Err(SendFailed::TimedOut),
            };
        }
        if let Err(failed) = sent {
            if session.too_slow.load(Ordering::Relaxed) {
                close_too_slow(&s, &mut tx, &mut rx).await;
            } else if failed == SendFailed::TimedOut {
                close_stalled(&s, &mut tx, send_timeout).await;
            }
            break 'conn;
        }
        // Copied on the writer, written on the feeds thread; with no room on
        // the writer the changes wait (conflated) for the session's retry.
        if feeds_job.is_none() {
            let (done, job) = tokio::sync::oneshot::channel();
            if start_feed_copy(&s, &session, &mut pool, done) {
                feeds_job = Some(job);
            }
        }
        for t in stamps.drain(..) {
            s.alert_latency.observe(t.elapsed());
        }
        for t in nearest_stamps.drain(..) {
            s.nearest_latency.observe(t.elapsed());
        }
        let now = tokio::time::Instant::now();
        armed = match next_due(&session) {
            Some(due) => {
                // Already due but not started (a feed job under way, or no
                // room on the writer): look again shortly.
                timer.as_mut().reset(if due > now { due } else { now + retry });
                true
            }
            None => false,
        };
    }
    let closed = subscriptions::close_all(&s, &session);
    tracing::debug!(subscriptions = closed, "WebSocket session closed");
}

/// The close frame for a client message over a size limit (1009, "message
/// too big", RFC 6455), naming the limit's key; `None` for any other read
/// error (the connection is gone).
pub(crate) fn over_limit(e: axum::Error, key: &str, max: usize) -> Option<CloseFrame> {
    let e = e.into_inner();
    match e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) => {
            tracing::debug!(
                key,
                max,
                "closing a WebSocket with 1009: a message over the limit"
            );
            Some(CloseFrame {
                code: 1009,
                reason: format!("a message over {key} ({max} bytes)").into(),
            })
        }
        _ => None,
    }
}

/// Closes with 1013: the client fell behind its alerts (none was dropped:
/// it resumes with `since_seq`). The close waits behind what the socket
/// already holds, so give the client time to read it.
async fn close_too_slow(s: &AppState, tx: &mut Tx, rx: &mut Rx) {
    s.hub.closed_slow.fetch_add(1, Ordering::Relaxed);
    tracing::warn!("closing a WebSocket session with 1013: it fell behind its alerts");
    let frame = CloseFrame {
        code: 1013,
        reason: "too slow for alerts; reconnect with since_seq".into(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    if tokio::time::timeout_at(deadline, tx.send(Message::Close(Some(frame))))
        .await
        .is_err()
    {
        return;
    }
    // Closing handshake: read until the client's close, so the socket is not
    // dropped with unread input (which would reset it and discard the alerts
    // and the close frame still on their way).
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, rx.next()).await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
}

/// Why a frame could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendFailed {
    /// The client took nothing for the send timeout: it is not reading.
    TimedOut,
    /// The connection is gone.
    Closed,
}

/// Queues a text frame in the socket's buffer (written when it fills or at
/// the flush); a client that does not take it within `timeout` is stalled.
async fn queue_frame(tx: &mut Tx, frame: Message, timeout: Duration) -> Result<(), SendFailed> {
    match tokio::time::timeout(timeout, tx.feed(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendFailed::Closed),
        Err(_) => Err(SendFailed::TimedOut),
    }
}

/// Closes a client that took no frame for the send timeout (a map that
/// stopped reading): counted, logged, and told with 1013 if the close
/// frame still gets through (its socket is full, so it may not).
async fn close_stalled(s: &AppState, tx: &mut Tx, timeout: Duration) {
    s.hub.closed_stalled.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        timeout_s = timeout.as_secs(),
        "closing a WebSocket session with 1013: it took no frame within the send timeout"
    );
    let frame = CloseFrame {
        code: 1013,
        reason: "not reading; reconnect".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Message::Close(Some(frame)))).await;
}
