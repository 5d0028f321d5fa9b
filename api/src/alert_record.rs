//! An alert serialised once: the record the hub keeps in its ring and
//! queues to every session that wants it.

use std::sync::Arc;
use std::time::Instant;

use bluelight_engine::{Alert, AlertEvent, Engine};
use serde_json::json;

use crate::json::unit_object;

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

impl AlertRecord {
    /// Serialises `a` once, with the unit (and other unit) as they are now.
    pub fn new(engine: &Engine, a: &Alert, received: Option<Instant>) -> Self {
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
        Self {
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
}

/// The text of an alert for subscription `sub`.
pub fn alert_text(sub: &str, r: &AlertRecord) -> String {
    format!("{{\"type\":\"alert\",\"sub\":{},{}}}", json!(sub), r.body)
}
