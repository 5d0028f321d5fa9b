//! The requests of a `/v1/ws` session (PROTOCOL.md): subscribe to
//! positions, alerts or standing nearest; unsubscribe; one-shot nearest.
//! Replies go onto the session's own queue, like everything it is sent.
//!
//! Each subscription's record is made here and kept in its session
//! ([`Subscription`]); the hub is given its route, the engine its feed or
//! query, both under the engine lock so no change falls between a
//! snapshot and the first update.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bluelight_engine::{Cover, Engine, NearestQuery, Shape};
use serde_json::{Value, json};

use crate::alert_record::AlertRecord;
use crate::auth::{Caller, Scope};
use crate::feeds::{nearest_text, snapshot_frame, spread};
use crate::hub::AlertSelect;
use crate::json::write_nearest;
use crate::protocol::{self, Refusal};
use crate::session::{FeedChanges, Outgoing, Schedule, Session, Subscription};
use crate::state::AppState;

/// Handles one client text frame; `read` is when it was read (a one-shot
/// nearest reply carries it, so its round trip inside the server is timed).
pub async fn handle(s: &AppState, session: &Arc<Session>, text: &str, who: Caller, read: Instant) {
    let reply = |m: String| session.push(Outgoing::Text(m));
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return reply(Refusal::bad("not JSON").frame(&Value::Null));
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    // One reader per session: nothing subscribes between this and the
    // insert below.
    let held = session.subscriptions.lock().len();
    if kind == "subscribe" && held >= s.max_subscriptions {
        s.hub.subscriptions_refused.fetch_add(1, Ordering::Relaxed);
        let refusal = Refusal::limit(format!(
            "this session holds {held} subscriptions, the most max_subscriptions allows: unsubscribe one first"
        ));
        return reply(refusal.frame(&id));
    }
    let older = if kind == "subscribe" {
        older_alerts(s, &v).await
    } else {
        Vec::new()
    };
    let stream = v.get("stream").and_then(Value::as_str);
    let area = if kind == "subscribe" && stream == Some("positions") && who.has(Scope::Read) {
        Some(positions_area(s, &v).await)
    } else {
        None
    };
    let result = match kind {
        "subscribe" => subscribe(s, session, &v, &id, who, older, area),
        "nearest" => one_shot_nearest(s, session, &v, &id, who, read),
        "unsubscribe" => unsubscribe(s, session, &v),
        "" => Err(Refusal::bad("every message needs a type")),
        other => Err(Refusal::bad(format!("unknown type {other:?}"))),
    };
    match result {
        Ok(messages) => messages.into_iter().for_each(|m| session.push(m)),
        Err(refusal) => reply(refusal.frame(&id)),
    }
}

/// With Redis, the alerts a resuming alerts subscription (`since_seq`)
/// missed that the in-memory ring no longer holds, from the stream.
async fn older_alerts(s: &AppState, v: &Value) -> Vec<AlertRecord> {
    let (Some(outbox), Some("alerts"), Some(since)) = (
        s.redis.as_ref().map(|r| &r.outbox),
        v.get("stream").and_then(Value::as_str),
        v.get("since_seq").and_then(Value::as_u64),
    ) else {
        return Vec::new();
    };
    let oldest = s.hub.oldest_seq();
    if oldest.is_some_and(|o| o <= since + 1) {
        return Vec::new();
    }
    match outbox
        .read(&s.engine, since, oldest, s.tuning.alert_resume_max)
        .await
    {
        Ok(older) => older,
        Err(e) => {
            tracing::warn!(error = %e, since, "cannot read older alerts from Redis; resuming from memory");
            Vec::new()
        }
    }
}

/// A positions subscription's area and its cover, computed on a blocking
/// thread: the cover of a large area takes seconds, and the engine is held
/// only to install it (every fix waits while it is held).
async fn positions_area(s: &AppState, v: &Value) -> Result<(Shape, Option<Cover>), Refusal> {
    let (shape, cfg) = {
        let e = s.engine.lock();
        (protocol::area(&e, v)?, e.config().clone())
    };
    let Ok(_turn) = s.covers.acquire().await else {
        return Err(Refusal::overloaded());
    };
    let computed = tokio::task::spawn_blocking(move || {
        bluelight_ingest::priority::lower_this_thread();
        let cover = Cover::compute_feed(&shape, &cfg);
        (shape, cover)
    })
    .await;
    match computed {
        Ok((shape, Ok(cover))) => Ok((shape, Some(cover))),
        Ok((_, Err(e))) => Err(Refusal::bad(e.to_string())),
        Err(_) => Err(Refusal::overloaded()),
    }
}

/// Frames to send in reply, or why not.
type Handled = Result<Vec<Outgoing>, Refusal>;

fn need(who: Caller, scope: Scope) -> Result<(), Refusal> {
    if who.has(scope) {
        Ok(())
    } else {
        Err(Refusal::forbidden(format!(
            "this token lacks the {} scope",
            scope.as_str()
        )))
    }
}

fn subscribe(
    s: &AppState,
    session: &Arc<Session>,
    v: &Value,
    id: &Value,
    who: Caller,
    older: Vec<AlertRecord>,
    area: Option<Result<(Shape, Option<Cover>), Refusal>>,
) -> Handled {
    let mut e = s.engine.lock();
    let now = tokio::time::Instant::now();
    match v.get("stream").and_then(Value::as_str) {
        Some("positions") => {
            need(who, Scope::Read)?;
            let (shape, cover) = match area {
                Some(prepared) => prepared?,
                None => (protocol::area(&e, v)?, None),
            };
            let f = who.limit(protocol::filter(&mut e, v)?);
            let every = protocol::max_hz(v, 1.0)?;
            let encoding = protocol::encoding(v)?;
            let (feed, snapshot) = e
                .subscribe_feed_with_cover(shape, cover.as_ref(), f, s.now_ms())
                .map_err(|err| Refusal::bad(err.to_string()))?;
            let sub = s.hub.sub_id("p");
            session.subscriptions.lock().insert(
                sub.clone(),
                Subscription::Positions {
                    feed,
                    schedule: Schedule {
                        every,
                        last: now + spread(every),
                    },
                    encoding,
                    changes: FeedChanges::default(),
                },
            );
            s.hub.route_feed(feed, session, &sub);
            Ok(vec![
                Outgoing::Text(json!({"type":"subscribed","id":id,"sub":sub}).to_string()),
                Outgoing::Frame(snapshot_frame(&e, encoding, &sub, snapshot.iter().copied())),
            ])
        }
        Some("alerts") => {
            need(who, Scope::Alerts)?;
            let set = |key: &str| -> Result<Option<HashSet<String>>, Refusal> {
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
                        .ok_or_else(|| Refusal::bad(format!("{key} must be a list of strings"))),
                }
            };
            let select = AlertSelect {
                fences: set("fences")?,
                rules: set("rules")?,
                events: set("events")?,
                filter: protocol::filter(&mut e, v)?,
                agencies: who.agencies,
            };
            let since = match v.get("since_seq") {
                None => None,
                Some(x) => Some(
                    x.as_u64()
                        .ok_or_else(|| Refusal::bad("since_seq must be a non-negative integer"))?,
                ),
            };
            let sub = s.hub.sub_id("a");
            session.push_replay(Outgoing::Text(
                json!({"type":"subscribed","id":id,"sub":sub}).to_string(),
            ));
            session
                .subscriptions
                .lock()
                .insert(sub.clone(), Subscription::Alerts);
            // From the stream first, then the ring after the last of them.
            let mut since = since;
            let sub: Arc<str> = sub.into();
            for r in older {
                since = since.max(Some(r.seq));
                if select.wants(&r, &e) {
                    session.push_replay(Outgoing::Alert(sub.clone(), Arc::new(r)));
                }
            }
            s.hub.subscribe_alerts(&e, session, sub, select, since);
            Ok(Vec::new())
        }
        Some("nearest") => {
            need(who, Scope::Read)?;
            let (lat, lon) = protocol::point(v)?;
            let k = protocol::k_json(v.get("k"))?;
            let f = who.limit(protocol::filter(&mut e, v)?);
            let every = protocol::max_hz(v, 1.0)?;
            let include_stale = v.get("include_stale").and_then(Value::as_bool).unwrap_or(false);
            let (query, results) = e
                .subscribe_nearest(lat, lon, k, f, include_stale, s.now_ms())
                .map_err(|err| Refusal::bad(err.to_string()))?;
            let sub = s.hub.sub_id("n");
            session.subscriptions.lock().insert(
                sub.clone(),
                Subscription::Nearest {
                    query,
                    schedule: Schedule { every, last: now },
                    changed: false,
                },
            );
            s.hub.route_nearest(query, session, &sub);
            Ok(vec![
                Outgoing::Text(json!({"type":"subscribed","id":id,"sub":sub}).to_string()),
                Outgoing::Text(nearest_text(&e, &sub, &results)),
            ])
        }
        other => Err(Refusal::bad(format!(
            "stream must be positions, alerts or nearest, got {}",
            other.unwrap_or("nothing")
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
    need(who, Scope::Read)?;
    let (lat, lon) = protocol::point(v)?;
    let k = protocol::k_json(v.get("k"))?;
    let max_distance_m = v.get("max_distance_m").and_then(Value::as_f64);
    let include_stale = v.get("include_stale").and_then(Value::as_bool).unwrap_or(false);
    let fixes_seen = v.get("fixes_seen").and_then(Value::as_bool).unwrap_or(false);
    let slot = s.tasks.query_slot().ok_or_else(Refusal::overloaded)?;
    let (v, id, session, clock) = (v.clone(), id.clone(), session.clone(), s.clock.clone());
    slot.run(move |e| {
        let text = match protocol::filter(e, &v) {
            Err(m) => Refusal::bad(m).frame(&id),
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
                    clock.now_ms(),
                );
                let mut text = String::new();
                write_nearest(e, Some(("id", &id.to_string())), &results, &mut text);
                if fixes_seen && text.ends_with('}') {
                    // Where the answer stands in the input: see README "nearest".
                    text.pop();
                    text.push_str(&format!(",\"fixes_seen\":{}}}", e.counters().fixes_seen));
                }
                text
            }
        };
        session.push(Outgoing::Nearest(text, read));
    });
    Ok(Vec::new())
}

fn unsubscribe(s: &AppState, session: &Arc<Session>, v: &Value) -> Handled {
    let sub = v
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::bad("sub is required"))?;
    let record = session.subscriptions.lock().remove(sub);
    match record {
        Some(record) => close(s, sub, &record),
        None => {
            return Err(Refusal::not_found(format!(
                "no subscription {sub:?} on this connection"
            )));
        }
    }
    Ok(vec![Outgoing::Text(
        json!({"type":"unsubscribed","sub":sub}).to_string(),
    )])
}

/// Ends one subscription in the hub and the engine.
fn close(s: &AppState, sub: &str, record: &Subscription) {
    s.hub.unroute(sub, record);
    end_in_engine(&mut s.engine.lock(), record);
}

/// Drops a subscription's feed or standing query from the engine.
fn end_in_engine(e: &mut Engine, record: &Subscription) {
    match record {
        Subscription::Positions { feed, .. } => {
            let _ = e.unsubscribe_feed(*feed);
        }
        Subscription::Nearest { query, .. } => {
            let _ = e.unsubscribe_nearest(*query);
        }
        Subscription::Alerts => {}
    }
}

/// Ends every subscription of a closing session; returns how many.
pub fn close_all(s: &AppState, session: &Arc<Session>) -> usize {
    s.hub.drop_session(session);
    let records: Vec<(String, Subscription)> = session.subscriptions.lock().drain().collect();
    let mut e = s.engine.lock();
    for (_, record) in &records {
        end_in_engine(&mut e, record);
    }
    records.len()
}
