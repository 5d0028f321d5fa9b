//! WebSocket `/v1/ws` (PROTOCOL.md): positions feeds, alerts with
//! `since_seq` replay, one-shot and standing nearest, unsubscribe.
//!
//! One task per connection: it reads client messages and sends, in order,
//! the replies and alerts queued for it, the conflated positions of its feeds
//! (at most `max_hz`) and changed nearest answers. Pings every 20 s; a client
//! silent for 60 s is dropped. A client too slow for its alerts is closed
//! with 1013.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bluelight_engine::{Engine, Filter, NearestQuery, Neighbor, Shape, UnitSlot};
use bluelight_ingest::transport::now_ms;
use futures_util::{SinkExt, StreamExt};
use geo::MultiPolygon;
use serde_json::{Value, json};

use crate::auth::{Caller, Scope};
use crate::fence_json::{filter_from_json, polygon};
use crate::hub::{AlertSelect, Outgoing, Session, alert_text};
use crate::json::{UnitRows, write_nearest};
use crate::server::AppState;

/// Upgrades `/v1/ws` for any valid token (`?token=T` for browsers); each
/// message then needs its own scope.
pub async fn handler(
    ws: WebSocketUpgrade,
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = match s.tokens.check(&headers, q.get("token").map(String::as_str), None) {
        Ok(c) => c,
        Err(denied) => return denied.into_response(),
    };
    // A small read buffer: tungstenite zero-fills the whole buffer before
    // every read attempt, and client messages are small (128 KiB of memset
    // per poll was 8% of the server's CPU under load).
    ws.max_message_size(1 << 20)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| run(socket, s, who))
}

/// Bytes tungstenite reads at a time from a client.
const READ_BUFFER: usize = 8 << 10;

/// A subscription this connection owns.
enum Owned {
    Feed {
        feed: u32,
        every: Duration,
        last: Instant,
    },
    Nearest {
        query: u32,
        every: Duration,
        last: Instant,
    },
    Alerts,
}

fn error(id: &Value, code: &str, message: impl Into<String>) -> String {
    json!({"type":"error","id":id,"code":code,"message":message.into()}).to_string()
}

async fn run(socket: WebSocket, s: Arc<AppState>, who: Caller) {
    let (mut tx, mut rx) = socket.split();
    let session = Arc::new(Session::default());
    let mut owned: HashMap<String, Owned> = HashMap::new();
    // When a feed or standing answer with changes waiting falls due.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed = false;
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    let mut last_heard = Instant::now();
    let mut stop = s.shutdown.subscribe();
    let mut stamps: Vec<Instant> = Vec::new();
    let mut nearest_stamps: Vec<Instant> = Vec::new();
    // Positions are written on the bulk thread, one job at a time; their
    // text is sent when it comes back.
    let mut pool: Vec<UnitRows> = Vec::new();
    let mut feeds_job: Option<tokio::sync::oneshot::Receiver<FeedsDone>> = None;
    let mut ready: Vec<(String, String)> = Vec::new();
    s.sessions.fetch_add(1, Ordering::Relaxed);
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
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    last_heard = Instant::now();
                    handle(&s, &session, &mut owned, t.as_str(), who, last_heard);
                }
                Some(Ok(Message::Binary(_))) => {
                    session.push(Outgoing::Text(error(&Value::Null, "bad_request", "send JSON text frames")));
                }
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => last_heard = Instant::now(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break 'conn,
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
                    ready = done.texts;
                    pool = done.pool;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > Duration::from_secs(60) {
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
        let mut queued: Vec<Outgoing> = session
            .replay
            .lock()
            .map(|mut q| q.drain(..).collect())
            .unwrap_or_default();
        // Replayed alerts are old by design: only live ones count as latency.
        let replayed = queued.len();
        queued.extend(
            session
                .queue
                .lock()
                .map(|mut q| q.drain(..).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        // Everything due is written with one flush: a write per frame would
        // cost a system call per alert per subscriber.
        let mut written = 0usize;
        let mut ok = true;
        for (i, m) in queued.into_iter().enumerate() {
            let (text, received, asked) = match m {
                Outgoing::Text(t) => (t, None, None),
                Outgoing::Alert(sub, r) => (alert_text(&sub, &r), r.received.filter(|_| i >= replayed), None),
                Outgoing::Nearest(t, asked) => (t, None, Some(asked)),
            };
            if feed(&mut tx, text).await.is_err() {
                ok = false;
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
        if ok {
            due_nearest(&s, &session, &mut owned);
            // A feed unsubscribed while its job ran sends nothing more.
            let feeds = ready
                .drain(..)
                .filter(|(sub, _)| owned.contains_key(sub))
                .map(|(_, t)| t);
            for text in feeds {
                if feed(&mut tx, text).await.is_err() {
                    ok = false;
                    break;
                }
                written += 1;
            }
        }
        if ok && written > 0 {
            ok = flush(&mut tx).await.is_ok();
        }
        if !ok {
            if session.too_slow.load(Ordering::Relaxed) {
                close_too_slow(&s, &mut tx, &mut rx).await;
            }
            break 'conn;
        }
        // Copied on the writer, written on the bulk thread; with no room on
        // the writer the changes wait (conflated) for the session's retry.
        if feeds_job.is_none()
            && let Some(slot) = s.pipeline.writer_bulk_slot()
            && let Some(due) = due_feeds(&session, &mut owned)
        {
            let (done, job) = tokio::sync::oneshot::channel();
            let bulk = s.bulk.clone();
            let mut copy = Some(FeedCopy::new(due, std::mem::take(&mut pool)));
            let mut done = Some(done);
            slot.run(move |e| {
                if copy.as_mut().is_some_and(|c| !c.step(e)) {
                    return false;
                }
                if let (Some(c), Some(done)) = (copy.take(), done.take()) {
                    bulk.spawn(move || {
                        let _ = done.send(write_feeds(c.copies, c.pool));
                    });
                }
                true
            });
            feeds_job = Some(job);
        }
        for t in stamps.drain(..) {
            s.alert_latency.observe(t.elapsed());
        }
        for t in nearest_stamps.drain(..) {
            s.nearest_latency.observe(t.elapsed());
        }
        let now = Instant::now();
        armed = match next_due(&session, &owned) {
            Some(due) => {
                // Already due but not started (a feed job under way, or no
                // room on the writer): look again shortly.
                let at = if due > now { due } else { now + RETRY };
                timer.as_mut().reset(at.into());
                true
            }
            None => false,
        };
    }
    s.hub.drop_session(&session);
    {
        let mut e = s.engine.lock();
        for o in owned.values() {
            match o {
                Owned::Feed { feed, .. } => {
                    let _ = e.unsubscribe_feed(*feed);
                }
                Owned::Nearest { query, .. } => {
                    let _ = e.unsubscribe_nearest(*query);
                }
                Owned::Alerts => {}
            }
        }
    }
    s.sessions.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(subscriptions = owned.len(), "WebSocket session closed");
}

/// Closes with 1013: the client fell behind its alerts (none was dropped:
/// it resumes with `since_seq`). The close waits behind what the socket
/// already holds, so give the client time to read it.
async fn close_too_slow(
    s: &AppState,
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
) {
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

/// Queues a text frame in the socket's buffer (written when it fills or at
/// [`flush`]); a client that does not take it within 10 s is gone.
async fn feed(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, text: String) -> Result<(), ()> {
    match tokio::time::timeout(Duration::from_secs(10), tx.feed(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Writes what [`feed`] queued.
async fn flush(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>) -> Result<(), ()> {
    match tokio::time::timeout(Duration::from_secs(10), tx.flush()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// `{"type":kind,"sub":sub,"units":[...]}`, written straight to text.
fn units_message(kind: &str, sub: &str, e: &Engine, units: impl Iterator<Item = UnitSlot>) -> String {
    let mut rows = UnitRows::default();
    for u in units {
        rows.push(e, u);
    }
    let mut text = String::new();
    rows.write_message(kind, sub, &mut text);
    text
}

/// (sub, units moved or entered, units left) of each feed due.
type DueFeeds = Vec<(String, Vec<u32>, Vec<u32>)>;

/// What the bulk thread gives back: the messages, and the row buffers for
/// next time.
struct FeedsDone {
    /// (sub, message).
    texts: Vec<(String, String)>,
    pool: Vec<UnitRows>,
}

/// How soon a session looks again at work that was due but could not start.
const RETRY: Duration = Duration::from_millis(25);

/// The earliest time a feed with changes waiting, or a standing answer
/// marked changed, falls due. The hub wakes a session only when such work
/// first appears, so the session sets its own timer for the rest.
fn next_due(session: &Session, owned: &HashMap<String, Owned>) -> Option<Instant> {
    let mut next: Option<Instant> = None;
    let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
    if let Ok(feeds) = session.feeds.lock() {
        for (sub, o) in owned {
            if let Owned::Feed { every, last, .. } = o
                && feeds.get(sub).is_some_and(|b| !b.is_empty())
            {
                at(*last + *every);
            }
        }
    }
    if let Ok(dirty) = session.nearest_dirty.lock()
        && !dirty.is_empty()
    {
        for (sub, o) in owned {
            if let Owned::Nearest { every, last, .. } = o
                && dirty.contains(sub)
            {
                at(*last + *every);
            }
        }
    }
    next
}

/// Takes the conflated changes of every feed due (at most `max_hz`).
fn due_feeds(session: &Session, owned: &mut HashMap<String, Owned>) -> Option<DueFeeds> {
    let now = Instant::now();
    let mut due = Vec::new();
    let Ok(mut feeds) = session.feeds.lock() else {
        return None;
    };
    for (sub, o) in owned.iter_mut() {
        if let Owned::Feed { every, last, .. } = o
            && now.duration_since(*last) >= *every
            && let Some(b) = feeds.get_mut(sub)
            && !b.is_empty()
        {
            *last = now;
            // Drained, not taken: the sets keep their room, so the writer
            // does not grow them again (rehashing) after every update.
            due.push((sub.clone(), b.changed.drain().collect(), b.left.drain().collect()));
        }
    }
    (!due.is_empty()).then_some(due)
}

/// Units a feed copy takes from the engine in one step on the writer
/// (about 0.3 µs each: mostly cache misses).
const COPY_STEP: usize = 256;

/// The due feeds' units copied out of the engine, on the writer, a step
/// at a time between chunks of fixes (a big map is thousands of units,
/// milliseconds of copying); never on the low-priority bulk thread, which
/// could lose its CPU holding the engine. Latest wins: a unit copied late
/// is copied as it is then.
struct FeedCopy {
    due: DueFeeds,
    /// Position: feed, then unit within its `changed`.
    feed: usize,
    unit: usize,
    /// (sub, moved, left ids as JSON), one per feed started.
    copies: Vec<(String, UnitRows, String)>,
    pool: Vec<UnitRows>,
}

impl FeedCopy {
    fn new(due: DueFeeds, pool: Vec<UnitRows>) -> Self {
        Self {
            copies: Vec::with_capacity(due.len()),
            due,
            feed: 0,
            unit: 0,
            pool,
        }
    }

    /// Copies up to [`COPY_STEP`] units; true once every feed is copied.
    fn step(&mut self, e: &Engine) -> bool {
        let mut budget = COPY_STEP;
        while let Some((sub, changed, left)) = self.due.get_mut(self.feed) {
            if self.unit == 0 {
                let mut moved = self.pool.pop().unwrap_or_default();
                moved.clear();
                self.copies.push((std::mem::take(sub), moved, String::new()));
            }
            let Some((_, moved, ids)) = self.copies.last_mut() else {
                return true;
            };
            let end = (self.unit + budget).min(changed.len());
            let step = changed.get(self.unit..end).unwrap_or_default();
            e.warm_for_copies(step.iter().map(|u| UnitSlot(*u)));
            for u in step {
                moved.push(e, UnitSlot(*u));
            }
            budget -= end - self.unit;
            self.unit = end;
            if self.unit < changed.len() {
                return false;
            }
            for (i, u) in left.iter().enumerate() {
                if i > 0 {
                    ids.push(',');
                }
                crate::json::push_json_str(ids, e.unit_id(UnitSlot(*u)));
            }
            self.feed += 1;
            self.unit = 0;
            if budget == 0 {
                return self.feed >= self.due.len();
            }
        }
        true
    }
}

/// On the bulk thread: writes the copied feeds' messages.
fn write_feeds(copies: Vec<(String, UnitRows, String)>, mut pool: Vec<UnitRows>) -> FeedsDone {
    let mut texts = Vec::with_capacity(copies.len());
    for (sub, moved, left) in copies {
        if !moved.is_empty() {
            let mut text = String::new();
            moved.write_message("positions", &sub, &mut text);
            texts.push((sub.clone(), text));
        }
        if !left.is_empty() {
            let mut text = String::with_capacity(40 + sub.len() + left.len());
            text.push_str("{\"type\":\"left\",\"sub\":");
            crate::json::push_json_str(&mut text, &sub);
            text.push_str(",\"ids\":[");
            text.push_str(&left);
            text.push_str("]}");
            texts.push((sub, text));
        }
        pool.push(moved);
    }
    FeedsDone { texts, pool }
}

/// Changed standing nearest answers that are due: written on the writer
/// (small), which queues them to the session.
fn due_nearest(s: &AppState, session: &Arc<Session>, owned: &mut HashMap<String, Owned>) {
    let now = Instant::now();
    let Ok(mut dirty) = session.nearest_dirty.lock() else {
        return;
    };
    if dirty.is_empty() {
        return;
    }
    // No room on the writer: they stay dirty until the session's retry.
    let Some(slot) = s.pipeline.writer_slot() else {
        return;
    };
    let mut due = Vec::new();
    for (sub, o) in owned.iter_mut() {
        if let Owned::Nearest { query, every, last } = o
            && now.duration_since(*last) >= *every
            && dirty.remove(sub)
        {
            *last = now;
            due.push((sub.clone(), *query));
        }
    }
    drop(dirty);
    if due.is_empty() {
        return;
    }
    let session = session.clone();
    slot.run(move |e| {
        for (sub, query) in due {
            // Unsubscribed while this waited: nothing more for it.
            let Some(results) = e.nearest_results(query) else {
                continue;
            };
            session.push(Outgoing::Text(nearest_text(e, &sub, results)));
        }
    });
}

fn max_hz(v: &Value, default: f64) -> Result<Duration, String> {
    match v.get("max_hz") {
        None => Ok(Duration::from_secs_f64(1.0 / default)),
        Some(x) => match x.as_f64() {
            Some(hz) if hz > 0.0 && hz <= 50.0 => Ok(Duration::from_secs_f64(1.0 / hz)),
            _ => Err("max_hz must be a number in (0, 50]".into()),
        },
    }
}

fn point(v: &Value) -> Result<(f64, f64), String> {
    match v.get("point").and_then(Value::as_array).map(Vec::as_slice) {
        Some([lon, lat]) => match (lon.as_f64(), lat.as_f64()) {
            (Some(lon), Some(lat)) if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) => {
                Ok((lat, lon))
            }
            _ => Err("point must be [lon, lat] within range".into()),
        },
        _ => Err("point must be [lon, lat]".into()),
    }
}

fn filter(e: &mut Engine, v: &Value) -> Result<Filter, String> {
    v.get("filter")
        .map_or(Ok(Filter::all()), |f| filter_from_json(e, f))
}

/// Parses a PROTOCOL.md area.
fn area(e: &Engine, v: &Value) -> Result<Shape, String> {
    let a = v
        .get("area")
        .and_then(Value::as_object)
        .ok_or("area is required: bbox, circle, polygon, h3 or fence")?;
    let nums = |x: &Value| -> Option<Vec<f64>> { x.as_array()?.iter().map(Value::as_f64).collect() };
    if let Some(b) = a.get("bbox") {
        let b = nums(b)
            .filter(|b| b.len() == 4)
            .ok_or("bbox must be [w, s, e, n]")?;
        return Shape::bbox([b[0], b[1], b[2], b[3]]).map_err(|err| err.to_string());
    }
    if let Some(c) = a.get("circle") {
        let center = c
            .get("center")
            .and_then(nums)
            .filter(|c| c.len() == 2)
            .ok_or("circle.center must be [lon, lat]")?;
        let r = c
            .get("radius_m")
            .and_then(Value::as_f64)
            .ok_or("circle.radius_m must be a number")?;
        return Shape::circle(center[1], center[0], r).map_err(|err| err.to_string());
    }
    if let Some(p) = a.get("polygon") {
        let g: geojson::Geometry =
            serde_json::from_value(p.clone()).map_err(|err| format!("polygon: {err}"))?;
        let mp = match &g.value {
            geojson::GeometryValue::Polygon { coordinates } => {
                MultiPolygon(vec![polygon(coordinates).map_err(|err| err.to_string())?])
            }
            geojson::GeometryValue::MultiPolygon { coordinates } => MultiPolygon(
                coordinates
                    .iter()
                    .map(|p| polygon(p))
                    .collect::<Result<_, _>>()
                    .map_err(|err| err.to_string())?,
            ),
            _ => return Err("polygon must be a GeoJSON Polygon or MultiPolygon".into()),
        };
        return Shape::polygon(mp).map_err(|err| err.to_string());
    }
    if let Some(cells) = a.get("h3") {
        let list = cells.as_array().ok_or("h3 must be a list of cells")?;
        let cells = list
            .iter()
            .map(|c| {
                c.as_str()
                    .and_then(|s| s.parse::<h3o::CellIndex>().ok())
                    .ok_or(format!("invalid H3 cell {c}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Shape::cells(cells).map_err(|err| err.to_string());
    }
    if let Some(f) = a.get("fence") {
        let id = f.as_str().ok_or("fence must be a fence id")?;
        return e
            .fence(id)
            .map(|spec| spec.shape)
            .ok_or_else(|| format!("fence {id:?} not found"));
    }
    Err("area must have bbox, circle, polygon, h3 or fence".into())
}

/// `read` is when the frame was read: a one-shot nearest reply carries it
/// so its round trip inside the server is measured.
fn handle(
    s: &AppState,
    session: &Arc<Session>,
    owned: &mut HashMap<String, Owned>,
    text: &str,
    who: Caller,
    read: Instant,
) {
    let reply = |m: String| session.push(Outgoing::Text(m));
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return reply(error(&Value::Null, "bad_request", "not JSON"));
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let result = match kind {
        "subscribe" => subscribe(s, session, owned, &v, &id, who),
        "nearest" if !who.has(Scope::Read) => Err(("forbidden", "this token lacks the read scope".into())),
        "nearest" => one_shot_nearest(s, session, &v, &id, who, read),
        "unsubscribe" => unsubscribe(s, owned, &v),
        "" => Err(("bad_request", "every message needs a type".into())),
        other => Err(("bad_request", format!("unknown type {other:?}"))),
    };
    match result {
        Ok(messages) => messages.into_iter().for_each(reply),
        Err((code, message)) => reply(error(&id, code, message)),
    }
}

type Handled = Result<Vec<String>, (&'static str, String)>;

fn subscribe(
    s: &AppState,
    session: &Arc<Session>,
    owned: &mut HashMap<String, Owned>,
    v: &Value,
    id: &Value,
    who: Caller,
) -> Handled {
    let bad = |m: String| ("bad_request", m);
    let need = |scope: Scope| {
        if who.has(scope) {
            Ok(())
        } else {
            Err((
                "forbidden",
                format!("this token lacks the {} scope", scope.as_str()),
            ))
        }
    };
    let mut e = s.engine.lock();
    match v.get("stream").and_then(Value::as_str) {
        Some("positions") => {
            need(Scope::Read)?;
            let shape = area(&e, v).map_err(bad)?;
            let f = who.limit(filter(&mut e, v).map_err(bad)?);
            let every = max_hz(v, 1.0).map_err(bad)?;
            let (feed, snapshot) = e
                .subscribe_feed(shape, f, now_ms())
                .map_err(|err| bad(err.to_string()))?;
            let sub = s.hub.sub_id("p");
            // Registered while the engine is locked: no change can fall
            // between the snapshot and the first update.
            s.hub.register_feed(feed, session, &sub);
            owned.insert(
                sub.clone(),
                Owned::Feed {
                    feed,
                    every,
                    last: Instant::now() + spread(every),
                },
            );
            Ok(vec![
                json!({"type":"subscribed","id":id,"sub":sub}).to_string(),
                units_message("snapshot", &sub, &e, snapshot.iter().copied()),
            ])
        }
        Some("alerts") => {
            need(Scope::Alerts)?;
            let set = |key: &str| -> Result<Option<HashSet<String>>, (&'static str, String)> {
                match v.get(key) {
                    None => Ok(None),
                    Some(l) => l
                        .as_array()
                        .and_then(|l| {
                            l.iter()
                                .map(|x| x.as_str().map(str::to_owned))
                                .collect::<Option<HashSet<_>>>()
                        })
                        .map(Some)
                        .ok_or(("bad_request", format!("{key} must be a list of strings"))),
                }
            };
            let select = AlertSelect {
                fences: set("fences")?,
                rules: set("rules")?,
                events: set("events")?,
                filter: filter(&mut e, v).map_err(bad)?,
                agencies: who.agencies,
            };
            let since = match v.get("since_seq") {
                None => None,
                Some(x) => Some(
                    x.as_u64()
                        .ok_or(bad("since_seq must be a non-negative integer".into()))?,
                ),
            };
            let sub = s.hub.sub_id("a");
            session.push_replay(Outgoing::Text(
                json!({"type":"subscribed","id":id,"sub":sub}).to_string(),
            ));
            s.hub.subscribe_alerts(&e, session, sub.clone(), select, since);
            owned.insert(sub, Owned::Alerts);
            Ok(Vec::new())
        }
        Some("nearest") => {
            need(Scope::Read)?;
            let (lat, lon) = point(v).map_err(bad)?;
            let k = v.get("k").and_then(Value::as_u64).unwrap_or(5) as usize;
            let f = who.limit(filter(&mut e, v).map_err(bad)?);
            let every = max_hz(v, 1.0).map_err(bad)?;
            let include_stale = v.get("include_stale").and_then(Value::as_bool).unwrap_or(false);
            let (query, results) = e
                .subscribe_nearest(lat, lon, k, f, include_stale, now_ms())
                .map_err(|err| bad(err.to_string()))?;
            let sub = s.hub.sub_id("n");
            s.hub.register_nearest(query, session, &sub);
            owned.insert(
                sub.clone(),
                Owned::Nearest {
                    query,
                    every,
                    last: Instant::now(),
                },
            );
            Ok(vec![
                json!({"type":"subscribed","id":id,"sub":sub}).to_string(),
                nearest_text(&e, &sub, &results),
            ])
        }
        other => Err(bad(format!(
            "stream must be positions, alerts or nearest, got {other:?}"
        ))),
    }
}

/// Answers on the writer thread, which pushes the reply to the session: a
/// runtime worker never blocks on the engine lock for a query.
fn one_shot_nearest(
    s: &AppState,
    session: &Arc<Session>,
    v: &Value,
    id: &Value,
    who: Caller,
    read: Instant,
) -> Handled {
    let bad = |m: String| ("bad_request", m);
    let (lat, lon) = point(v).map_err(bad)?;
    let k = v.get("k").and_then(Value::as_u64).unwrap_or(5).clamp(1, 1000) as usize;
    let max_distance_m = v.get("max_distance_m").and_then(Value::as_f64);
    let include_stale = v.get("include_stale").and_then(Value::as_bool).unwrap_or(false);
    let slot = s.pipeline.writer_slot().ok_or_else(overloaded)?;
    let (v, id, session) = (v.clone(), id.clone(), session.clone());
    slot.run(move |e| {
        let text = match filter(e, &v) {
            Err(m) => error(&id, "bad_request", m),
            Ok(f) => {
                let results = e.nearest(
                    &NearestQuery {
                        lat,
                        lon,
                        k,
                        filter: who.limit(f),
                        max_distance_m,
                        include_stale,
                    },
                    now_ms(),
                );
                let mut text = String::new();
                write_nearest(e, Some(("id", &id.to_string())), &results, &mut text);
                text
            }
        };
        session.push(Outgoing::Nearest(text, read));
    });
    Ok(Vec::new())
}

/// How long a new feed's first update waits beyond `every`: feeds opened
/// together (a control room's maps after a restart, a load test) would
/// otherwise fall due in the same instant, twice a second for ever, and
/// their copying and writing would arrive as one burst that delays the
/// fixes and alerts behind it. Successive feeds take successive points
/// of the golden-ratio sequence, which spreads any number of them evenly
/// over the interval.
fn spread(every: Duration) -> Duration {
    static FEEDS: AtomicU64 = AtomicU64::new(0);
    const PHI_FRACTION: f64 = 0.618_033_988_749_894_9;
    let n = FEEDS.fetch_add(1, Ordering::Relaxed);
    every.mul_f64((n as f64 * PHI_FRACTION).fract())
}

/// A standing nearest answer.
fn nearest_text(e: &Engine, sub: &str, results: &[Neighbor]) -> String {
    let mut quoted = String::with_capacity(sub.len() + 2);
    crate::json::push_json_str(&mut quoted, sub);
    let mut text = String::new();
    write_nearest(e, Some(("sub", &quoted)), results, &mut text);
    text
}

fn overloaded() -> (&'static str, String) {
    (
        "overloaded",
        "the engine has too many queries waiting; retry shortly".to_string(),
    )
}

fn unsubscribe(s: &AppState, owned: &mut HashMap<String, Owned>, v: &Value) -> Handled {
    let sub = v
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(("bad_request", "sub is required".to_string()))?;
    match owned.remove(sub) {
        Some(Owned::Feed { feed, .. }) => {
            s.hub.unregister(Some(feed), None);
            let _ = s.engine.lock().unsubscribe_feed(feed);
        }
        Some(Owned::Nearest { query, .. }) => {
            s.hub.unregister(None, Some(query));
            let _ = s.engine.lock().unsubscribe_nearest(query);
        }
        Some(Owned::Alerts) => {
            s.hub.unsubscribe_alerts(sub);
        }
        None => return Err(("not_found", format!("no subscription {sub:?} on this connection"))),
    }
    Ok(vec![json!({"type":"unsubscribed","sub":sub}).to_string()])
}

/// Upgrades `/v1/ingest` (scope `ingest`): binary frames are `FixBatch`es,
/// text frames JSON batches. A frame that does not decode gets an error
/// message and is counted; the connection stays up. A full pipeline slows
/// the sender (nothing is lost).
pub async fn ingest_handler(
    ws: WebSocketUpgrade,
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(denied) = s
        .tokens
        .check(&headers, q.get("token").map(String::as_str), Some(Scope::Ingest))
    {
        return denied.into_response();
    }
    ws.max_message_size(4 << 20)
        .on_upgrade(move |socket| ingest(socket, s))
}

async fn ingest(mut socket: WebSocket, s: Arc<AppState>) {
    use bluelight_ingest::decode::{decode_flatbuffers, decode_json};
    use bluelight_ingest::validate::Reject;
    while let Some(Ok(msg)) = socket.next().await {
        let mut batch = s.pipeline.batch();
        let decoded = match &msg {
            Message::Binary(b) => {
                decode_flatbuffers(b, &s.pipeline.validation, now_ms(), &mut batch).map_err(|e| e.to_string())
            }
            Message::Text(t) => decode_json(t.as_str(), &s.pipeline.validation, now_ms(), &mut batch)
                .map_err(|e| e.to_string()),
            Message::Close(_) => break,
            _ => continue,
        };
        match decoded {
            Ok(()) => {
                if s.pipeline.send(batch).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                s.pipeline.counters.reject(Reject::BadFrame);
                let m = error(&Value::Null, "bad_request", e);
                if socket.send(Message::Text(m.into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{EngineConfig, Fix, Outputs};

    /// A session's timer is set for the earliest feed or standing answer
    /// with work waiting, and is not set with none waiting.
    #[test]
    fn the_session_timer_is_the_earliest_waiting_work() {
        let session = Session::default();
        let t0 = Instant::now();
        let mut owned: HashMap<String, Owned> = HashMap::new();
        let feed = |every_ms: u64, last_ms: u64| Owned::Feed {
            feed: 0,
            every: Duration::from_millis(every_ms),
            last: t0 + Duration::from_millis(last_ms),
        };
        owned.insert("p1".into(), feed(500, 0));
        owned.insert("p2".into(), feed(250, 100));
        owned.insert(
            "n1".into(),
            Owned::Nearest {
                query: 0,
                every: Duration::from_millis(1000),
                last: t0,
            },
        );
        owned.insert("a1".into(), Owned::Alerts);
        for sub in ["p1", "p2"] {
            session
                .feeds
                .lock()
                .expect("lock")
                .insert(sub.into(), crate::hub::FeedBuffer::default());
        }
        assert_eq!(next_due(&session, &owned), None, "nothing waits");
        let mark = |sub: &str, unit: u32| {
            if let Some(b) = session.feeds.lock().expect("lock").get_mut(sub) {
                b.changed.insert(unit);
            }
        };
        mark("p1", 1);
        assert_eq!(next_due(&session, &owned), Some(t0 + Duration::from_millis(500)));
        session.nearest_dirty.lock().expect("lock").insert("n1".into());
        assert_eq!(next_due(&session, &owned), Some(t0 + Duration::from_millis(500)));
        mark("p2", 2);
        assert_eq!(next_due(&session, &owned), Some(t0 + Duration::from_millis(350)));
        // A unit that left counts as a change too.
        if let Some(b) = session.feeds.lock().expect("lock").get_mut("p2") {
            b.changed.clear();
            b.left.insert(3);
        }
        assert_eq!(next_due(&session, &owned), Some(t0 + Duration::from_millis(350)));
    }

    /// A copy in steps gives what one copy would, and each step stays
    /// within its budget of units.
    #[test]
    fn a_feed_copy_in_steps_copies_every_unit_once() {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        let slots: Vec<u32> = (0..1000)
            .map(|n| {
                let slot = e.unit(&format!("U{n}"));
                let fix = Fix::at(1_763_726_400_000, 51.0 + f64::from(n) * 1e-4, -1.0);
                e.apply(slot, &fix, &mut Outputs::default());
                slot.0
            })
            .collect();
        let due: DueFeeds = vec![
            ("a".into(), slots[..600].to_vec(), slots[990..].to_vec()),
            ("b".into(), Vec::new(), slots[900..902].to_vec()),
            ("c".into(), slots[600..900].to_vec(), Vec::new()),
        ];
        let mut copy = FeedCopy::new(due, Vec::new());
        let mut steps = 1;
        while !copy.step(&e) {
            steps += 1;
            assert!(steps < 100, "the copy ends");
        }
        assert_eq!(steps, 900usize.div_ceil(COPY_STEP));
        let subs: Vec<&str> = copy.copies.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(subs, ["a", "b", "c"]);
        let ids = |rows: &UnitRows| {
            let mut text = String::new();
            rows.write_message("positions", "s", &mut text);
            let v: Value = serde_json::from_str(&text).expect("JSON");
            v["units"]
                .as_array()
                .expect("units")
                .iter()
                .map(|u| u["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        };
        let want = |r: std::ops::Range<u32>| r.map(|n| format!("U{n}")).collect::<Vec<_>>();
        assert_eq!(ids(&copy.copies[0].1), want(0..600));
        assert!(copy.copies[1].1.is_empty());
        assert_eq!(ids(&copy.copies[2].1), want(600..900));
        let left: Vec<String> = (990..1000).map(|n| format!("\"U{n}\"")).collect();
        assert_eq!(copy.copies[0].2, left.join(","));
        assert_eq!(copy.copies[1].2, "\"U900\",\"U901\"");
        assert_eq!(copy.copies[2].2, "");
    }
}
