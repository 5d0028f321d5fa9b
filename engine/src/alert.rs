//! What the engine tells the outside world after a fix or a tick.

use std::sync::Arc;

use crate::model::UnitSlot;

/// The kinds of alert (PROTOCOL.md `event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertEvent {
    /// A unit came inside a fence.
    Enter,
    /// A unit left a fence (beyond its hysteresis).
    Exit,
    /// A unit has been inside a fence for the fence's `dwell_s`.
    Dwell,
    /// Two units of a rule came within its radius.
    Proximity,
    /// No fix for `stale_after`.
    Stale,
    /// A fix after being stale.
    Fresh,
}

impl AlertEvent {
    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Enter => "enter",
            AlertEvent::Exit => "exit",
            AlertEvent::Dwell => "dwell",
            AlertEvent::Proximity => "proximity",
            AlertEvent::Stale => "stale",
            AlertEvent::Fresh => "fresh",
        }
    }

    /// The event of a protocol name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            AlertEvent::Enter,
            AlertEvent::Exit,
            AlertEvent::Dwell,
            AlertEvent::Proximity,
            AlertEvent::Stale,
            AlertEvent::Fresh,
        ]
        .into_iter()
        .find(|e| e.as_str() == name)
    }
}

/// One alert. `seq` increases by one per alert across the whole engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Engine-wide sequence number.
    pub seq: u64,
    /// What happened.
    pub event: AlertEvent,
    /// The unit it is about.
    pub unit: UnitSlot,
    /// Device time of the fix that caused it, or the clock time of a tick.
    pub time_ms: i64,
    /// The fence, for enter, exit and dwell.
    pub fence: Option<Arc<str>>,
    /// The rule, for proximity.
    pub rule: Option<Arc<str>>,
    /// The other unit, for proximity.
    pub other: Option<UnitSlot>,
    /// Distance between the two units, for proximity.
    pub distance_m: Option<f64>,
}

impl Alert {
    /// An alert of `event` about `unit` at `time_ms`, with no fence, rule
    /// or other unit and no seq yet ([`Outputs::push_alert`] gives it one).
    pub(crate) fn about(event: AlertEvent, unit: UnitSlot, time_ms: i64) -> Self {
        Self {
            seq: 0,
            event,
            unit,
            time_ms,
            fence: None,
            rule: None,
            other: None,
            distance_m: None,
        }
    }

    /// The same alert, of a fence.
    pub(crate) fn of_fence(mut self, fence: Arc<str>) -> Self {
        self.fence = Some(fence);
        self
    }
}

/// What a unit did relative to a positions feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedChange {
    /// Came into the area (or started matching the filter).
    Entered,
    /// Moved while inside.
    Moved,
    /// Left the area or stopped matching.
    Left,
}

/// A feed output: the api conflates these per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedEvent {
    /// The feed.
    pub feed: u32,
    /// The unit.
    pub unit: UnitSlot,
    /// What happened.
    pub change: FeedChange,
}

/// Everything one call produced. Reuse one across calls (clear it) so the
/// hot path does not allocate.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Alerts, in `seq` order.
    pub alerts: Vec<Alert>,
    /// Feed changes, in order.
    pub feed: Vec<FeedEvent>,
    /// Standing-nearest queries whose result changed.
    pub nearest: Vec<u32>,
}

impl Outputs {
    /// Empties every list, keeping capacity.
    pub fn clear(&mut self) {
        self.alerts.clear();
        self.feed.clear();
        self.nearest.clear();
    }

    /// Pushes `alert` with the next `seq` (the engine's one counter).
    pub(crate) fn push_alert(&mut self, seq: &mut u64, mut alert: Alert) {
        *seq += 1;
        alert.seq = *seq;
        self.alerts.push(alert);
    }

    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.feed.is_empty() && self.nearest.is_empty()
    }
}
