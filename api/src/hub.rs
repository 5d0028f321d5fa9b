//! The hub: routes what the engine produces to WebSocket sessions.
//!
//! Alerts are serialised once, kept in a bounded ring (for `since_seq`
//! replay) and queued to every matching subscription; they are never
//! conflated or dropped: a session whose queue passes its cap is closed with
//! 1013 and resumes with `since_seq`. Feed changes are conflated per unit
//! (latest wins) and flushed by the session at most `max_hz`. The writer
//! calls [`Hub::route`] with the engine locked; nothing here waits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bluelight_engine::{AlertEvent, Engine, FeedChange, Filter, Outputs};
use bluelight_ingest::writer::OutputConsumer;
use parking_lot::Mutex;

use crate::alert_record::AlertRecord;
use crate::session::{Outgoing, Session, Subscription};

/// Alert kinds, in counter order.
pub const ALERT_EVENTS: [AlertEvent; 6] = [
    AlertEvent::Enter,
    AlertEvent::Exit,
    AlertEvent::Dwell,
    AlertEvent::Proximity,
    AlertEvent::Stale,
    AlertEvent::Fresh,
];

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
    /// Whether the subscription wants alert `a`.
    pub fn wants(&self, a: &AlertRecord, engine: &Engine) -> bool {
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

/// What the hub guards with one lock: the alert ring and the routing
/// index. Locked by the writer once per chunk and by subscribing; never
/// across an await.
#[derive(Default)]
struct Routes {
    /// The latest alerts, oldest first, for `since_seq`.
    ring: VecDeque<Arc<AlertRecord>>,
    /// Alert subscriptions and what each selects (the hub routes by it).
    alert_subs: HashMap<Arc<str>, (Arc<Session>, AlertSelect)>,
    /// Engine feed id → its session and sub id.
    feeds: HashMap<u32, (Arc<Session>, String)>,
    /// Engine standing-query id → its session and sub id.
    nearest: HashMap<u32, (Arc<Session>, String)>,
    /// Feed changes' indices, sorted by feed (reused between batches).
    order: Vec<(u32, u32)>,
}

/// Routes engine outputs to sessions.
pub struct Hub {
    /// `parking_lot`: a panic while it is held (in one session's routing)
    /// must not poison it and silence every later alert.
    routes: Mutex<Routes>,
    /// Alerts kept for `since_seq`.
    alert_ring: usize,
    next_sub: AtomicU64,
    /// Sessions closed for being too slow for their alerts.
    pub closed_slow: AtomicU64,
    /// Sessions closed for taking no frame within the send timeout.
    pub closed_stalled: AtomicU64,
    /// Position updates superseded by a later fix of the same unit before
    /// the feed flushed (conflation at work).
    pub conflated: AtomicU64,
    /// Alerts fired, by event (indexed like [`ALERT_EVENTS`]).
    pub alerts_fired: [AtomicU64; 6],
    /// Subscriptions refused because the session held `max_subscriptions`.
    pub subscriptions_refused: AtomicU64,
    /// WebSocket upgrades refused for `max_sessions`.
    pub sessions_refused: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("alert_ring", &self.alert_ring)
            .finish_non_exhaustive()
    }
}

impl OutputConsumer for Hub {
    fn consume(&self, engine: &Engine, out: &Outputs, received: Option<Instant>) {
        self.route(engine, out, received);
    }
}

impl Hub {
    /// A hub that keeps the last `alert_ring` alerts for `since_seq`.
    pub fn new(alert_ring: usize) -> Self {
        Self {
            routes: Mutex::default(),
            alert_ring: alert_ring.max(1),
            next_sub: AtomicU64::new(0),
            closed_slow: AtomicU64::new(0),
            closed_stalled: AtomicU64::new(0),
            conflated: AtomicU64::new(0),
            alerts_fired: Default::default(),
            subscriptions_refused: AtomicU64::new(0),
            sessions_refused: AtomicU64::new(0),
        }
    }

    /// The oldest alert `seq` the ring holds.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.routes.lock().ring.front().map(|r| r.seq)
    }

    /// A new subscription id.
    pub fn sub_id(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.next_sub.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Routes one batch's outputs (called with the engine locked);
    /// `received` is when the batch's fixes arrived.
    pub fn route(&self, engine: &Engine, out: &Outputs, received: Option<Instant>) {
        let mut routes = self.routes.lock();
        if !out.alerts.is_empty() {
            let mut records = Vec::with_capacity(out.alerts.len());
            for a in &out.alerts {
                if let Some(i) = ALERT_EVENTS.iter().position(|e| *e == a.event) {
                    self.alerts_fired[i].fetch_add(1, Ordering::Relaxed);
                }
                let r = Arc::new(AlertRecord::new(engine, a, received));
                routes.ring.push_back(r.clone());
                if routes.ring.len() > self.alert_ring {
                    routes.ring.pop_front();
                }
                records.push(r);
            }
            // A subscription at a time, its alerts in seq order, queued
            // under one lock with one wake-up.
            let mut batch = Vec::new();
            for (sub, (session, select)) in &routes.alert_subs {
                batch.extend(
                    records
                        .iter()
                        .filter(|r| select.wants(r, engine))
                        .map(|r| Outgoing::Alert(sub.clone(), r.clone())),
                );
                session.push_all(&mut batch);
            }
        }
        let mut woken: Vec<Arc<Session>> = Vec::new();
        // Grouped by feed (a unit's changes keep their order), so each
        // feed's buffer is locked and found once per batch, not per change.
        let mut order = std::mem::take(&mut routes.order);
        order.clear();
        order.extend(out.feed.iter().zip(0u32..).map(|(f, i)| (f.feed, i)));
        // Stable, so a unit's changes within a feed keep their order.
        radsort::sort_by_key(&mut order, |&(feed, _)| feed);
        let mut conflated = 0;
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let Some((session, sub)) = run.first().and_then(|(feed, _)| routes.feeds.get(feed)) else {
                continue;
            };
            let mut subs = session.subscriptions.lock();
            if let Some(Subscription::Positions { changes: buf, .. }) = subs.get_mut(sub) {
                // A session is woken only when its feed gets its first
                // change since the last flush; it sleeps until the feed is
                // due, not once per chunk of fixes (100 maps would be
                // tens of thousands of wake-ups a second).
                let was_empty = buf.is_empty();
                for f in run.iter().filter_map(|&(_, i)| out.feed.get(i as usize)) {
                    conflated += buf.push(f.unit.0, f.change == FeedChange::Left);
                }
                if was_empty {
                    woken.push(session.clone());
                }
            }
        }
        routes.order = order;
        self.conflated.fetch_add(conflated, Ordering::Relaxed);
        for q in &out.nearest {
            // Woken when first marked; the session's timer does the rest.
            if let Some((session, sub)) = routes.nearest.get(q)
                && let Some(Subscription::Nearest { changed, .. }) = session.subscriptions.lock().get_mut(sub)
                && !*changed
            {
                *changed = true;
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
        sub: Arc<str>,
        select: AlertSelect,
        since_seq: Option<u64>,
    ) -> Option<u64> {
        let mut routes = self.routes.lock();
        let oldest = routes.ring.front().map(|r| r.seq);
        if let Some(since) = since_seq {
            for r in routes.ring.iter().filter(|r| r.seq > since) {
                if select.wants(r, engine) {
                    session.push_replay(Outgoing::Alert(sub.clone(), r.clone()));
                }
            }
        }
        routes.alert_subs.insert(sub, (session.clone(), select));
        oldest
    }

    /// Routes an engine feed's changes to `sub` of `session` (whose record
    /// the caller has made): call with the engine locked, so no change
    /// falls between the feed's snapshot and its first update.
    pub fn route_feed(&self, feed: u32, session: &Arc<Session>, sub: &str) {
        self.routes
            .lock()
            .feeds
            .insert(feed, (session.clone(), sub.to_owned()));
    }

    /// Routes a standing query's changes to `sub` of `session`.
    pub fn route_nearest(&self, query: u32, session: &Arc<Session>, sub: &str) {
        self.routes
            .lock()
            .nearest
            .insert(query, (session.clone(), sub.to_owned()));
    }

    /// Stops routing to one subscription.
    pub fn unroute(&self, sub: &str, record: &Subscription) {
        let mut routes = self.routes.lock();
        match record {
            Subscription::Positions { feed, .. } => {
                routes.feeds.remove(feed);
            }
            Subscription::Nearest { query, .. } => {
                routes.nearest.remove(query);
            }
            Subscription::Alerts => {
                routes.alert_subs.remove(sub);
            }
        }
    }

    /// Stops routing to every subscription of a session.
    pub fn drop_session(&self, session: &Arc<Session>) {
        let mut routes = self.routes.lock();
        routes.alert_subs.retain(|_, (s, _)| !Arc::ptr_eq(s, session));
        routes.feeds.retain(|_, (s, _)| !Arc::ptr_eq(s, session));
        routes.nearest.retain(|_, (s, _)| !Arc::ptr_eq(s, session));
    }

    /// Messages waiting in session queues: the total and the largest one
    /// session holds (for metrics; a growing maximum names a slow client).
    pub fn queued_messages(&self) -> (usize, usize) {
        // Each session once (a session holds many routes), found by a sort
        // and not a search of those seen (quadratic in sessions), and
        // counted after the routes' lock, which the writer takes for every
        // chunk, is let go.
        let mut sessions: Vec<Arc<Session>> = {
            let routes = self.routes.lock();
            routes
                .alert_subs
                .values()
                .map(|(s, _)| s)
                .chain(routes.feeds.values().map(|(s, _)| s))
                .chain(routes.nearest.values().map(|(s, _)| s))
                .cloned()
                .collect()
        };
        sessions.sort_unstable_by_key(Arc::as_ptr);
        sessions.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let (mut total, mut max) = (0, 0);
        for s in &sessions {
            let n = s.queued();
            total += n;
            max = max.max(n);
        }
        (total, max)
    }

    /// Alert subscriptions open (for metrics).
    pub fn alert_subscriptions(&self) -> usize {
        self.routes.lock().alert_subs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{FeedChanges, Schedule};
    use bluelight_engine::{Alert, EngineConfig, FeedEvent, UnitSlot};
    use futures_util::FutureExt;
    use std::time::Duration;

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

    fn positions(feed: u32) -> Subscription {
        Subscription::Positions {
            feed,
            schedule: Schedule {
                every: Duration::from_millis(500),
                last: tokio::time::Instant::now(),
            },
            encoding: crate::session::Encoding::Json,
            changes: FeedChanges::default(),
        }
    }

    /// A feed's session is woken by the first change since its last flush,
    /// not by every chunk of fixes after it; the changes still all count.
    #[test]
    fn a_feed_wakes_its_session_on_its_first_change_only() {
        let e = Engine::new(EngineConfig::default()).expect("engine");
        let hub = Hub::new(100);
        let session = Arc::new(Session::new(100));
        session.subscriptions.lock().insert("p1".into(), positions(7));
        hub.route_feed(7, &session, "p1");
        assert!(!woken(&session));
        hub.route(&e, &changes(7, &[1, 2], FeedChange::Moved), None);
        assert!(woken(&session));
        hub.route(&e, &changes(7, &[2, 3], FeedChange::Moved), None);
        hub.route(&e, &changes(7, &[4], FeedChange::Left), None);
        assert!(!woken(&session), "changes already wait: no more wakes");
        let (changed, left, dropped) = {
            let mut subs = session.subscriptions.lock();
            let Some(Subscription::Positions { changes: b, .. }) = subs.get_mut("p1") else {
                panic!("the feed's record");
            };
            let (mut c, mut l) = (Vec::new(), Vec::new());
            let dropped = b.take(&mut c, &mut l);
            c.sort_unstable();
            l.sort_unstable();
            (c, l, dropped)
        };
        assert_eq!((changed, left), (vec![1, 2, 3], vec![4]));
        assert_eq!(dropped, 1, "2's first move was superseded");
        // Flushed: the next change wakes it again.
        hub.route(&e, &changes(7, &[4], FeedChange::Entered), None);
        assert!(woken(&session));
        // Changes of a feed nobody registered wake nobody.
        hub.route(&e, &changes(8, &[1], FeedChange::Moved), None);
        assert!(!woken(&session));
    }

    /// `/metrics`' queued messages count a session once however many
    /// routes it holds, and name the largest queue.
    #[test]
    fn queued_messages_count_each_session_once() {
        let hub = Hub::new(100);
        let (busy, quiet) = (Arc::new(Session::new(100)), Arc::new(Session::new(100)));
        hub.route_feed(1, &busy, "p1");
        hub.route_feed(2, &busy, "p2");
        hub.route_feed(3, &quiet, "p3");
        for _ in 0..3 {
            busy.push(Outgoing::Text("x".into()));
        }
        quiet.push(Outgoing::Text("y".into()));
        assert_eq!(hub.queued_messages(), (4, 3));
    }

    fn alert(seq: u64, unit: UnitSlot) -> Outputs {
        Outputs {
            alerts: vec![Alert {
                seq,
                event: AlertEvent::Enter,
                unit,
                time_ms: 1_000,
                fence: Some("f".into()),
                rule: None,
                other: None,
                distance_m: None,
            }],
            ..Outputs::default()
        }
    }

    fn alert_seqs(s: &Session) -> Vec<u64> {
        s.drain()
            .0
            .into_iter()
            .filter_map(|m| match m {
                Outgoing::Alert(_, r) => Some(r.seq),
                _ => None,
            })
            .collect()
    }

    /// Regression: with `std` locks that swallowed poisoning, one panic
    /// while the hub's lock (or a session's) was held made every later
    /// route return early, and alerts were dropped silently.
    #[test]
    fn a_panic_in_one_sessions_handling_does_not_stop_alerts_to_the_others() {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        let unit = e.intern_unit("AMB-1");
        let hub = Arc::new(Hub::new(100));
        let (one, other) = (Arc::new(Session::new(100)), Arc::new(Session::new(100)));
        for (sub, s) in [("a1", &one), ("a2", &other)] {
            s.subscriptions.lock().insert(sub.into(), Subscription::Alerts);
            hub.subscribe_alerts(&e, s, sub.into(), AlertSelect::default(), None);
        }
        hub.route(&e, &alert(1, unit), None);
        // One session's handling panics holding the hub's lock and its own queue.
        let (h, s1) = (hub.clone(), one.clone());
        let panicked = std::thread::spawn(move || {
            let _routes = h.routes.lock();
            let _queue = s1.queue.lock();
            panic!("one session's handling fails");
        })
        .join();
        assert!(panicked.is_err());
        hub.route(&e, &alert(2, unit), None);
        assert_eq!(
            alert_seqs(&other),
            vec![1, 2],
            "the other session still gets alerts"
        );
        assert_eq!(alert_seqs(&one), vec![1, 2]);
        assert_eq!(hub.alerts_fired[0].load(Ordering::Relaxed), 2);
    }
}
