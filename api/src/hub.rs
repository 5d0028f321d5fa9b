//! The hub: routes what the engine produces to WebSocket sessions.
//!
//! Alerts are serialised once, kept in a bounded ring (for `since_seq`
//! replay) and queued to every matching subscription; they are never
//! conflated or dropped: a session whose queue passes its cap is closed with
//! 1013 and resumes with `since_seq`. Feed changes are conflated per unit
//! (latest wins) and flushed by the session at most `max_hz`. The writer
//! calls [`Hub::route`] with the engine locked; nothing here waits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bluelight_engine::{Alert, AlertEvent, Engine, FeedChange, Filter, Outputs};
use serde_json::json;
use tokio::sync::Notify;

use crate::json::unit_object;

/// Alerts kept for replay.
pub const ALERT_RING: usize = 100_000;
/// Messages a session may have queued before it is closed as too slow.
pub const SESSION_QUEUE: usize = 20_000;

/// An alert, serialised once.
#[derive(Debug)]
pub struct AlertRecord {
    /// Its seq.
    pub seq: u64,
    /// Its event.
    pub event: AlertEvent,
    /// Fence, for enter/exit/dwell.
    pub fence: Option<Arc<str>>,
    /// Rule, for proximity.
    pub rule: Option<Arc<str>>,
    /// The JSON members after `"sub"` (no braces), shared by every copy.
    pub body: String,
    /// The unit's slot (for subscription filters).
    pub unit: bluelight_engine::UnitSlot,
    /// The other unit of a proximity alert.
    pub other: Option<bluelight_engine::UnitSlot>,
    /// When the fix that fired it was received (none for the clock's
    /// alerts): sessions record fix-to-frame latency against it.
    pub received: Option<Instant>,
}

/// What an alerts subscription wants.
#[derive(Debug, Clone, Default)]
pub struct AlertSelect {
    /// Fences; `None` = all.
    pub fences: Option<HashSet<String>>,
    /// Rules; `None` = all.
    pub rules: Option<HashSet<String>>,
    /// Events; `None` = all.
    pub events: Option<HashSet<String>>,
    /// Units.
    pub filter: Filter,
    /// The caller's agency limit: alerts about (or involving) other
    /// agencies' units are never sent.
    pub agencies: Option<u8>,
}

impl AlertSelect {
    fn wants(&self, a: &AlertRecord, engine: &Engine) -> bool {
        if self
            .events
            .as_ref()
            .is_some_and(|e| !e.contains(a.event.as_str()))
        {
            return false;
        }
        if let (Some(f), Some(fence)) = (&self.fences, &a.fence)
            && !f.contains(fence.as_ref())
        {
            return false;
        }
        if self.fences.is_some()
            && a.fence.is_none()
            && matches!(a.event, AlertEvent::Enter | AlertEvent::Exit | AlertEvent::Dwell)
        {
            return false;
        }
        if let (Some(r), Some(rule)) = (&self.rules, &a.rule)
            && !r.contains(rule.as_ref())
        {
            return false;
        }
        let visible = |u: bluelight_engine::UnitSlot| {
            self.agencies
                .is_none_or(|m| engine.unit_agency(u).is_some_and(|ag| m & (1 << ag as u8) != 0))
        };
        visible(a.unit) && a.other.is_none_or(visible) && engine.unit_matches(a.unit, &self.filter)
    }
}

/// Something to send on a session.
#[derive(Debug)]
pub enum Outgoing {
    /// A text frame.
    Text(String),
    /// An alert for a subscription.
    Alert(String, Arc<AlertRecord>),
    /// A reply to a one-shot nearest request whose frame was read at the
    /// given instant: the session records the round trip when it is sent.
    Nearest(String, Instant),
}

/// Conflated state of one positions subscription (foldhash sets: the
/// writer inserts hundreds of thousands of slots a second).
#[derive(Debug, Default)]
pub struct FeedBuffer {
    /// Units that moved or entered since the last flush.
    pub changed: hashbrown::HashSet<u32>,
    /// Units that left since the last flush.
    pub left: hashbrown::HashSet<u32>,
}

impl FeedBuffer {
    /// Whether nothing has changed since the last flush.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

/// One WebSocket connection's outgoing side.
#[derive(Debug)]
pub struct Session {
    /// Alerts replayed for `since_seq` (and the reply before them): sent
    /// before `queue`, bounded by the ring rather than the live cap, so a
    /// client resuming far behind is not closed for its own replay.
    pub replay: Mutex<VecDeque<Outgoing>>,
    /// Replies and live alerts, in order.
    pub queue: Mutex<VecDeque<Outgoing>>,
    /// Conflated feeds by subscription id.
    pub feeds: Mutex<HashMap<String, FeedBuffer>>,
    /// Standing nearest subscriptions whose answer changed.
    pub nearest_dirty: Mutex<HashSet<String>>,
    /// Set when the session must close with 1013 (too slow).
    pub too_slow: AtomicBool,
    /// Wakes the session's sender.
    pub wake: Notify,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            replay: Mutex::default(),
            queue: Mutex::default(),
            feeds: Mutex::default(),
            nearest_dirty: Mutex::default(),
            too_slow: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }
}

impl Session {
    /// Queues a replayed message (no cap: the ring bounds it).
    pub fn push_replay(&self, m: Outgoing) {
        if let Ok(mut q) = self.replay.lock() {
            q.push_back(m);
        }
        self.wake.notify_one();
    }

    /// Queues a message; a queue past its cap marks the session too slow.
    pub fn push(&self, m: Outgoing) {
        if let Ok(mut q) = self.queue.lock() {
            if q.len() >= SESSION_QUEUE {
                self.too_slow.store(true, Ordering::Relaxed);
            } else {
                q.push_back(m);
            }
        }
        self.wake.notify_one();
    }
}

#[derive(Default)]
struct HubInner {
    ring: VecDeque<Arc<AlertRecord>>,
    alert_subs: HashMap<String, (Arc<Session>, AlertSelect)>,
    feeds: HashMap<u32, (Arc<Session>, String)>,
    nearest: HashMap<u32, (Arc<Session>, String)>,
    /// Feed changes' indices, sorted by feed (reused between batches).
    order: Vec<(u32, u32)>,
}

/// Routes engine outputs to sessions.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<HubInner>,
    next_sub: AtomicU64,
    /// Sessions closed for being too slow.
    pub closed_slow: AtomicU64,
    /// Position updates superseded by a later fix of the same unit before
    /// the feed flushed (conflation at work).
    pub conflated: AtomicU64,
}

fn record(engine: &Engine, a: &Alert, received: Option<Instant>) -> AlertRecord {
    let mut body = json!({
        "seq": a.seq,
        "event": a.event.as_str(),
        "unit": unit_object(engine, a.unit),
        "time_ms": a.time_ms,
    });
    if let Some(o) = body.as_object_mut() {
        if let Some(f) = &a.fence {
            o.insert("fence".into(), json!(f.as_ref()));
        }
        if let Some(r) = &a.rule {
            o.insert("rule".into(), json!(r.as_ref()));
        }
        if let Some(other) = a.other {
            o.insert("other".into(), json!(unit_object(engine, other)));
        }
        if let Some(d) = a.distance_m {
            o.insert("distance_m".into(), json!(d));
        }
    }
    let text = body.to_string();
    AlertRecord {
        seq: a.seq,
        event: a.event,
        fence: a.fence.clone(),
        rule: a.rule.clone(),
        body: text[1..text.len() - 1].to_owned(),
        unit: a.unit,
        other: a.other,
        received,
    }
}

/// The text of an alert for subscription `sub`.
pub fn alert_text(sub: &str, r: &AlertRecord) -> String {
    format!("{{\"type\":\"alert\",\"sub\":{},{}}}", json!(sub), r.body)
}

impl Hub {
    /// A new subscription id.
    pub fn sub_id(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.next_sub.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Routes one batch's outputs (called with the engine locked);
    /// `received` is when the batch's fixes arrived.
    pub fn route(&self, engine: &Engine, out: &Outputs, received: Option<Instant>) {
        let Ok(mut inner) = self.inner.lock() else { return };
        for a in &out.alerts {
            let r = Arc::new(record(engine, a, received));
            inner.ring.push_back(r.clone());
            if inner.ring.len() > ALERT_RING {
                inner.ring.pop_front();
            }
            for (sub, (session, select)) in &inner.alert_subs {
                if select.wants(&r, engine) {
                    session.push(Outgoing::Alert(sub.clone(), r.clone()));
                }
            }
        }
        let mut woken: Vec<Arc<Session>> = Vec::new();
        // Grouped by feed (a unit's changes keep their order), so each
        // feed's buffer is locked and found once per batch, not per change.
        let mut order = std::mem::take(&mut inner.order);
        order.clear();
        order.extend(out.feed.iter().zip(0u32..).map(|(f, i)| (f.feed, i)));
        order.sort_unstable();
        let mut conflated = 0;
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let Some((session, sub)) = run.first().and_then(|(feed, _)| inner.feeds.get(feed)) else {
                continue;
            };
            if let Ok(mut feeds) = session.feeds.lock()
                && let Some(buf) = feeds.get_mut(sub)
            {
                // A session is woken only when its feed gets its first
                // change since the last flush; it sleeps until the feed is
                // due, not once per chunk of fixes (100 maps would be
                // tens of thousands of wake-ups a second).
                let was_empty = buf.is_empty();
                for f in run.iter().filter_map(|&(_, i)| out.feed.get(i as usize)) {
                    match f.change {
                        FeedChange::Entered | FeedChange::Moved => {
                            // Almost always empty: skip the lookup.
                            if !buf.left.is_empty() {
                                buf.left.remove(&f.unit.0);
                            }
                            if !buf.changed.insert(f.unit.0) {
                                conflated += 1;
                            }
                        }
                        FeedChange::Left => {
                            buf.changed.remove(&f.unit.0);
                            buf.left.insert(f.unit.0);
                        }
                    }
                }
                if was_empty {
                    woken.push(session.clone());
                }
            }
        }
        inner.order = order;
        self.conflated.fetch_add(conflated, Ordering::Relaxed);
        for q in &out.nearest {
            // Woken when first marked; the session's timer does the rest.
            if let Some((session, sub)) = inner.nearest.get(q)
                && let Ok(mut d) = session.nearest_dirty.lock()
                && !d.contains(sub)
            {
                d.insert(sub.clone());
                woken.push(session.clone());
            }
        }
        woken.sort_unstable_by_key(Arc::as_ptr);
        woken.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for s in woken {
            s.wake.notify_one();
        }
    }

    /// Subscribes to alerts; first queues every retained alert after
    /// `since_seq` (in order), then live ones, with no gap and no duplicate:
    /// both happen under the lock the writer routes under. Returns the
    /// oldest seq still retained, for the reply.
    pub fn subscribe_alerts(
        &self,
        engine: &Engine,
        session: &Arc<Session>,
        sub: String,
        select: AlertSelect,
        since_seq: Option<u64>,
    ) -> Option<u64> {
        let Ok(mut inner) = self.inner.lock() else {
            return None;
        };
        let oldest = inner.ring.front().map(|r| r.seq);
        if let Some(since) = since_seq {
            for r in inner.ring.iter().filter(|r| r.seq > since) {
                if select.wants(r, engine) {
                    session.push_replay(Outgoing::Alert(sub.clone(), r.clone()));
                }
            }
        }
        inner.alert_subs.insert(sub, (session.clone(), select));
        oldest
    }

    /// Registers a feed or nearest subscription of the engine.
    pub fn register_feed(&self, feed: u32, session: &Arc<Session>, sub: &str) {
        if let Ok(mut s) = session.feeds.lock() {
            s.insert(sub.to_owned(), FeedBuffer::default());
        }
        if let Ok(mut inner) = self.inner.lock() {
            inner.feeds.insert(feed, (session.clone(), sub.to_owned()));
        }
    }

    /// Registers a standing nearest query.
    pub fn register_nearest(&self, query: u32, session: &Arc<Session>, sub: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.nearest.insert(query, (session.clone(), sub.to_owned()));
        }
    }

    /// Forgets an alert subscription.
    pub fn unsubscribe_alerts(&self, sub: &str) -> bool {
        self.inner
            .lock()
            .is_ok_and(|mut i| i.alert_subs.remove(sub).is_some())
    }

    /// Forgets a feed or query (by engine id), returning whether it existed.
    pub fn unregister(&self, feed: Option<u32>, query: Option<u32>) {
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(f) = feed {
                inner.feeds.remove(&f);
            }
            if let Some(q) = query {
                inner.nearest.remove(&q);
            }
        }
    }

    /// Forgets every subscription of a session.
    pub fn drop_session(&self, session: &Arc<Session>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.alert_subs.retain(|_, (s, _)| !Arc::ptr_eq(s, session));
            inner.feeds.retain(|_, (s, _)| !Arc::ptr_eq(s, session));
            inner.nearest.retain(|_, (s, _)| !Arc::ptr_eq(s, session));
        }
    }

    /// Messages waiting in session queues: the total and the largest one
    /// session holds (for metrics; a growing maximum names a slow client).
    pub fn queued_messages(&self) -> (usize, usize) {
        let Ok(inner) = self.inner.lock() else {
            return (0, 0);
        };
        let mut seen: Vec<*const Session> = Vec::new();
        let (mut total, mut max) = (0, 0);
        let sessions = inner
            .alert_subs
            .values()
            .map(|(s, _)| s)
            .chain(inner.feeds.values().map(|(s, _)| s))
            .chain(inner.nearest.values().map(|(s, _)| s));
        for s in sessions {
            if seen.contains(&Arc::as_ptr(s)) {
                continue;
            }
            seen.push(Arc::as_ptr(s));
            let n = s.queue.lock().map_or(0, |q| q.len()) + s.replay.lock().map_or(0, |q| q.len());
            total += n;
            max = max.max(n);
        }
        (total, max)
    }

    /// Alert subscriptions open (for metrics).
    pub fn alert_subscriptions(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.alert_subs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{EngineConfig, FeedEvent, UnitSlot};
    use futures_util::FutureExt;

    fn woken(s: &Session) -> bool {
        s.wake.notified().now_or_never().is_some()
    }

    fn changes(feed: u32, units: &[u32], change: FeedChange) -> Outputs {
        Outputs {
            feed: units
                .iter()
                .map(|&u| FeedEvent {
                    feed,
                    unit: UnitSlot(u),
                    change,
                })
                .collect(),
            ..Outputs::default()
        }
    }

    /// A feed's session is woken by the first change since its last flush,
    /// not by every chunk of fixes after it; the changes still all count.
    #[test]
    fn a_feed_wakes_its_session_on_its_first_change_only() {
        let e = Engine::new(EngineConfig::default()).expect("engine");
        let hub = Hub::default();
        let session = Arc::new(Session::default());
        hub.register_feed(7, &session, "p1");
        assert!(!woken(&session));
        hub.route(&e, &changes(7, &[1, 2], FeedChange::Moved), None);
        assert!(woken(&session));
        hub.route(&e, &changes(7, &[2, 3], FeedChange::Moved), None);
        hub.route(&e, &changes(7, &[4], FeedChange::Left), None);
        assert!(!woken(&session), "changes already wait: no more wakes");
        let (changed, left) = {
            let mut feeds = session.feeds.lock().expect("lock");
            let b = feeds.get_mut("p1").expect("buffer");
            let mut c: Vec<u32> = b.changed.drain().collect();
            let mut l: Vec<u32> = b.left.drain().collect();
            c.sort_unstable();
            l.sort_unstable();
            (c, l)
        };
        assert_eq!((changed, left), (vec![1, 2, 3], vec![4]));
        assert_eq!(hub.conflated.load(Ordering::Relaxed), 1);
        // Flushed: the next change wakes it again.
        hub.route(&e, &changes(7, &[4], FeedChange::Entered), None);
        assert!(woken(&session));
        // Changes of a feed nobody registered wake nobody.
        hub.route(&e, &changes(8, &[1], FeedChange::Moved), None);
        assert!(!woken(&session));
    }
}
