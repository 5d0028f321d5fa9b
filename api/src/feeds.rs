//! When and how a session's rate-limited updates go out: positions feeds
//! (at most `max_hz`, conflated) and changed standing-nearest answers.
//!
//! The hub wakes a session only when a feed or answer gets its first
//! change since the last update; the session then sets its own timer for
//! when that falls due ([`next_due`]). A due feed's units are copied out
//! of the engine on the writer, a step at a time ([`FeedCopy`]), and their
//! JSON written on the low-priority feeds thread ([`write_feeds`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bluelight_engine::{Engine, Neighbor, UnitSlot};
use tokio::time::Instant;

use crate::json::write_nearest;
use crate::rows::UnitRows;
use crate::session::{Encoding, Outgoing, Session, Subscription};
use crate::state::AppState;
use axum::extract::ws::Message;
use bluelight_ingest::wire::feed;

/// A `snapshot` or `positions` message of `rows` in `encoding`: JSON text
/// `{"type":kind,"sub":sub,"units":[...]}`, or a binary `Positions`.
pub fn units_frame(rows: &UnitRows, encoding: Encoding, kind: feed::Kind, sub: &str) -> Message {
    match encoding {
        Encoding::Json => {
            let mut text = String::new();
            let name = if kind == feed::Kind::Snapshot {
                "snapshot"
            } else {
                "positions"
            };
            rows.write_message(name, sub, &mut text);
            Message::Text(text.into())
        }
        Encoding::FlatBuffers => Message::Binary(rows.write_flatbuffers(kind, sub)),
    }
}

/// A feed's snapshot of `units`.
pub fn snapshot_frame(
    e: &Engine,
    encoding: Encoding,
    sub: &str,
    units: impl Iterator<Item = UnitSlot>,
) -> Message {
    let mut rows = UnitRows::default();
    for u in units {
        rows.push(e, u);
    }
    units_frame(&rows, encoding, feed::Kind::Snapshot, sub)
}

/// A standing nearest answer.
pub fn nearest_text(e: &Engine, sub: &str, results: &[Neighbor]) -> String {
    let mut quoted = String::with_capacity(sub.len() + 2);
    crate::json::push_json_str(&mut quoted, sub);
    let mut text = String::new();
    write_nearest(e, Some(("sub", &quoted)), results, &mut text);
    text
}

/// How long a new feed's first update waits beyond `every`: feeds opened
/// together (a control room's maps after a restart, a load test) would
/// otherwise fall due in the same instant, twice a second for ever, and
/// their copying and writing would arrive as one burst that delays the
/// fixes and alerts behind it. Successive feeds take successive points
/// of the golden-ratio sequence, which spreads any number of them evenly
/// over the interval.
pub fn spread(every: Duration) -> Duration {
    static FEEDS: AtomicU64 = AtomicU64::new(0);
    const PHI_FRACTION: f64 = 0.618_033_988_749_894_9;
    let n = FEEDS.fetch_add(1, Ordering::Relaxed);
    every.mul_f64((n as f64 * PHI_FRACTION).fract())
}

/// A feed that is due: its conflated changes.
#[derive(Debug, PartialEq, Eq)]
pub struct DueFeed {
    /// The subscription.
    pub sub: String,
    /// How its messages are written.
    pub encoding: Encoding,
    /// Units moved or entered.
    pub changed: Vec<u32>,
    /// Units left.
    pub left: Vec<u32>,
}

/// Every feed of a session that is due.
pub type DueFeeds = Vec<DueFeed>;

/// One due feed's units copied out of the engine.
#[derive(Debug)]
pub struct FeedRows {
    /// The subscription.
    pub sub: String,
    /// How its messages are written.
    pub encoding: Encoding,
    /// Units moved or entered.
    pub moved: UnitRows,
    /// Ids of the units that left, as JSON strings separated by commas.
    pub left: String,
}

/// What the feeds thread gives back: the messages, and the row buffers
/// for next time.
#[derive(Debug)]
pub struct FeedsDone {
    /// (sub, message).
    pub frames: Vec<(String, Message)>,
    /// Row buffers to reuse.
    pub pool: Vec<UnitRows>,
}

/// The earliest time a feed with changes waiting, or a standing answer
/// marked changed, falls due; `None` with nothing waiting.
pub fn next_due(session: &Session) -> Option<Instant> {
    session
        .subscriptions
        .lock()
        .values()
        .filter_map(|sub| match sub {
            Subscription::Positions {
                schedule, changes, ..
            } if !changes.is_empty() => Some(schedule.due()),
            Subscription::Nearest {
                schedule,
                changed: true,
                ..
            } => Some(schedule.due()),
            _ => None,
        })
        .min()
}

/// Takes the conflated changes of every feed due (at most `max_hz`),
/// counting the changes conflated away in `conflated`.
pub fn due_feeds(session: &Session, now: Instant, conflated: &AtomicU64) -> Option<DueFeeds> {
    let mut due = Vec::new();
    for (sub, record) in session.subscriptions.lock().iter_mut() {
        if let Subscription::Positions {
            schedule,
            changes,
            encoding,
            ..
        } = record
            && now >= schedule.due()
            && !changes.is_empty()
        {
            schedule.last = now;
            let (mut changed, mut left) = (Vec::new(), Vec::new());
            conflated.fetch_add(changes.take(&mut changed, &mut left), Ordering::Relaxed);
            due.push(DueFeed {
                sub: sub.clone(),
                encoding: *encoding,
                changed,
                left,
            });
        }
    }
    (!due.is_empty()).then_some(due)
}

/// Starts a copy of the due feeds on the writer, whose text comes back on
/// `done` from the feeds thread. Returns false (the changes stay, for the
/// session's retry) when there is no room on the writer or nothing is due.
pub fn start_feed_copy(
    s: &AppState,
    session: &Session,
    pool: &mut Vec<UnitRows>,
    done: tokio::sync::oneshot::Sender<FeedsDone>,
) -> bool {
    let Some(slot) = s.tasks.bulk_slot() else {
        return false;
    };
    let Some(due) = due_feeds(session, Instant::now(), &s.hub.conflated) else {
        return false;
    };
    let writer = s.feed_writer.clone();
    let mut copy = Some(FeedCopy::new(due, std::mem::take(pool), s.tuning.feed_copy_step));
    let mut done = Some(done);
    slot.run(move |e| {
        if copy.as_mut().is_some_and(|c| !c.step(e)) {
            return false;
        }
        if let (Some(c), Some(done)) = (copy.take(), done.take()) {
            writer.spawn(move || {
                let _ = done.send(write_feeds(c.copies, c.pool));
            });
        }
        true
    });
    true
}

/// The due feeds' units copied out of the engine, on the writer, a step
/// at a time between chunks of fixes (a big map is thousands of units,
/// milliseconds of copying); never on the low-priority feeds thread,
/// which could lose its CPU holding the engine. Latest wins: a unit
/// copied late is copied as it is then.
pub struct FeedCopy {
    due: DueFeeds,
    /// Units copied a step (about 0.3 µs each: mostly cache misses).
    step_units: usize,
    /// Position: feed, then unit within its `changed`.
    feed: usize,
    unit: usize,
    /// One per feed started.
    pub copies: Vec<FeedRows>,
    pool: Vec<UnitRows>,
}

impl FeedCopy {
    /// A copy of `due`, `step_units` units a step, reusing `pool`'s rows.
    pub fn new(due: DueFeeds, pool: Vec<UnitRows>, step_units: usize) -> Self {
        Self {
            copies: Vec::with_capacity(due.len()),
            due,
            step_units: step_units.max(1),
            feed: 0,
            unit: 0,
            pool,
        }
    }

    /// Copies up to a step of units; true once every feed is copied.
    pub fn step(&mut self, e: &Engine) -> bool {
        let mut budget = self.step_units;
        while let Some(DueFeed {
            sub,
            encoding,
            changed,
            left,
        }) = self.due.get_mut(self.feed)
        {
            if self.unit == 0 {
                let mut moved = self.pool.pop().unwrap_or_default();
                moved.clear();
                self.copies.push(FeedRows {
                    sub: std::mem::take(sub),
                    encoding: *encoding,
                    moved,
                    left: String::new(),
                });
            }
            let Some(FeedRows { moved, left: ids, .. }) = self.copies.last_mut() else {
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

/// On the feeds thread: writes the copied feeds' messages.
pub fn write_feeds(copies: Vec<FeedRows>, mut pool: Vec<UnitRows>) -> FeedsDone {
    let mut frames = Vec::with_capacity(copies.len());
    for FeedRows {
        sub,
        encoding,
        moved,
        left,
    } in copies
    {
        if !moved.is_empty() {
            frames.push((
                sub.clone(),
                units_frame(&moved, encoding, feed::Kind::Positions, &sub),
            ));
        }
        if !left.is_empty() {
            let mut text = String::with_capacity(40 + sub.len() + left.len());
            text.push_str("{\"type\":\"left\",\"sub\":");
            crate::json::push_json_str(&mut text, &sub);
            text.push_str(",\"ids\":[");
            text.push_str(&left);
            text.push_str("]}");
            frames.push((sub, Message::Text(text.into())));
        }
        pool.push(moved);
    }
    FeedsDone { frames, pool }
}

/// Changed standing nearest answers that are due: written on the writer
/// (small), which queues them to the session.
pub fn due_nearest(s: &AppState, session: &Arc<Session>) {
    let now = Instant::now();
    let mut subs = session.subscriptions.lock();
    let due_now = |record: &Subscription| matches!(record, Subscription::Nearest { schedule, changed: true, .. } if now >= schedule.due());
    if !subs.values().any(due_now) {
        return;
    }
    // No room on the writer: they stay marked until the session's retry.
    let Some(slot) = s.tasks.query_slot() else {
        return;
    };
    let mut due = Vec::new();
    for (sub, record) in subs.iter_mut() {
        if due_now(record)
            && let Subscription::Nearest {
                query,
                schedule,
                changed,
            } = record
        {
            *changed = false;
            schedule.last = now;
            due.push((sub.clone(), *query));
        }
    }
    drop(subs);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{FeedChanges, Schedule};
    use bluelight_engine::{EngineConfig, Fix, Outputs};
    use serde_json::Value;

    fn feed(every_ms: u64, last: Instant) -> Subscription {
        Subscription::Positions {
            feed: 0,
            schedule: Schedule {
                every: Duration::from_millis(every_ms),
                last,
            },
            encoding: Encoding::Json,
            changes: FeedChanges::default(),
        }
    }

    /// A session's timer is set for the earliest feed or standing answer
    /// with work waiting, and is not set with none waiting.
    #[test]
    fn the_session_timer_is_the_earliest_waiting_work() {
        let session = Session::new(100);
        let t0 = Instant::now();
        {
            let mut subs = session.subscriptions.lock();
            subs.insert("p1".into(), feed(500, t0));
            subs.insert("p2".into(), feed(250, t0 + Duration::from_millis(100)));
            subs.insert(
                "n1".into(),
                Subscription::Nearest {
                    query: 0,
                    schedule: Schedule {
                        every: Duration::from_millis(1000),
                        last: t0,
                    },
                    changed: false,
                },
            );
            subs.insert("a1".into(), Subscription::Alerts);
        }
        assert_eq!(next_due(&session), None, "nothing waits");
        let mark = |sub: &str, unit: u32, left: bool| {
            if let Some(Subscription::Positions { changes, .. }) = session.subscriptions.lock().get_mut(sub) {
                changes.push(unit, left);
            }
        };
        mark("p1", 1, false);
        assert_eq!(next_due(&session), Some(t0 + Duration::from_millis(500)));
        if let Some(Subscription::Nearest { changed, .. }) = session.subscriptions.lock().get_mut("n1") {
            *changed = true;
        }
        assert_eq!(next_due(&session), Some(t0 + Duration::from_millis(500)));
        mark("p2", 2, false);
        assert_eq!(next_due(&session), Some(t0 + Duration::from_millis(350)));
        // A unit that left counts as a change too.
        mark("p2", 3, true);
        assert_eq!(next_due(&session), Some(t0 + Duration::from_millis(350)));
    }

    /// `max_hz` holds by the runtime's clock: a feed with changes waiting
    /// is not due before its interval has passed since its last update,
    /// and is at once after (time advanced, not slept).
    #[tokio::test(start_paused = true)]
    async fn a_feed_is_due_once_per_interval() {
        let session = Session::new(100);
        session
            .subscriptions
            .lock()
            .insert("p1".into(), feed(500, Instant::now()));
        let change = |unit: u32| {
            if let Some(Subscription::Positions { changes, .. }) = session.subscriptions.lock().get_mut("p1")
            {
                changes.push(unit, false);
            }
        };
        change(1);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(
            due_feeds(&session, Instant::now(), &AtomicU64::new(0)).is_none(),
            "not before max_hz allows"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let due = due_feeds(&session, Instant::now(), &AtomicU64::new(0)).expect("due after its interval");
        assert_eq!(
            due,
            vec![DueFeed {
                sub: "p1".into(),
                encoding: Encoding::Json,
                changed: vec![1],
                left: vec![]
            }]
        );
        // The next change waits a whole interval from this update.
        change(2);
        assert!(due_feeds(&session, Instant::now(), &AtomicU64::new(0)).is_none());
        assert_eq!(
            next_due(&session),
            Some(Instant::now() + Duration::from_millis(500))
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(due_feeds(&session, Instant::now(), &AtomicU64::new(0)).is_some());
    }

    /// A copy in steps gives what one copy would, and each step stays
    /// within its budget of units.
    #[test]
    fn a_feed_copy_in_steps_copies_every_unit_once() {
        const STEP: usize = 256;
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        let slots: Vec<u32> = (0..1000)
            .map(|n| {
                let slot = e.intern_unit(&format!("U{n}"));
                let fix = Fix::at(1_763_726_400_000, 51.0 + f64::from(n) * 1e-4, -1.0);
                e.apply(slot, &fix, &mut Outputs::default());
                slot.0
            })
            .collect();
        let due_feed = |sub: &str, changed: &[u32], left: &[u32]| DueFeed {
            sub: sub.into(),
            encoding: Encoding::Json,
            changed: changed.to_vec(),
            left: left.to_vec(),
        };
        let due: DueFeeds = vec![
            due_feed("a", &slots[..600], &slots[990..]),
            due_feed("b", &[], &slots[900..902]),
            due_feed("c", &slots[600..900], &[]),
        ];
        let mut copy = FeedCopy::new(due, Vec::new(), STEP);
        let mut steps = 1;
        while !copy.step(&e) {
            steps += 1;
            assert!(steps < 100, "the copy ends");
        }
        assert_eq!(steps, 900usize.div_ceil(STEP));
        let subs: Vec<&str> = copy.copies.iter().map(|c| c.sub.as_str()).collect();
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
        assert_eq!(ids(&copy.copies[0].moved), want(0..600));
        assert!(copy.copies[1].moved.is_empty());
        assert_eq!(ids(&copy.copies[2].moved), want(600..900));
        let left: Vec<String> = (990..1000).map(|n| format!("\"U{n}\"")).collect();
        assert_eq!(copy.copies[0].left, left.join(","));
        assert_eq!(copy.copies[1].left, "\"U900\",\"U901\"");
        assert_eq!(copy.copies[2].left, "");
    }
}
