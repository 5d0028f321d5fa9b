//! JSON shapes of PROTOCOL.md: unit objects and unit Features.

use std::collections::HashMap;
use std::sync::Mutex;

use bluelight_engine::{Engine, Neighbor, UnitSlot};
use serde_json::{Map, Value, json};

/// A unit object (PROTOCOL.md "A unit object"); unknown fields are omitted.
pub fn unit_object(engine: &Engine, slot: UnitSlot) -> Option<Value> {
    let v = engine.unit_view(slot)?;
    let fix = v.fix?;
    let mut o = Map::new();
    o.insert("id".into(), json!(v.id));
    o.insert("lat".into(), json!(fix.lat));
    o.insert("lon".into(), json!(fix.lon));
    o.insert("time_ms".into(), json!(fix.time_ms));
    for (k, x) in [
        ("speed_mps", fix.speed_mps),
        ("heading_deg", fix.heading_deg),
        ("accuracy_m", fix.accuracy_m),
    ] {
        if !x.is_nan() {
            o.insert(k.into(), json!(x));
        }
    }
    o.insert("agency".into(), json!(v.agency.as_str()));
    o.insert("status".into(), json!(v.status.as_str()));
    if let Some(k) = v.kind {
        o.insert("kind".into(), json!(k));
    }
    if !v.tags.is_empty() {
        o.insert("tags".into(), json!(v.tags));
    }
    if let Some(c) = engine.unit_cell(slot) {
        o.insert("h3".into(), json!(c.to_string()));
    }
    o.insert("stale".into(), json!(v.stale));
    Some(Value::Object(o))
}

/// A unit as a GeoJSON Feature (Point geometry, unit object as properties).
pub fn unit_feature(engine: &Engine, slot: UnitSlot) -> Option<Value> {
    let o = unit_object(engine, slot)?;
    let (lon, lat) = (o.get("lon").cloned()?, o.get("lat").cloned()?);
    let id = o.get("id").cloned()?;
    Some(json!({"type":"Feature","id":id,"geometry":{"type":"Point","coordinates":[lon,lat]},"properties":o}))
}

/// Nearest results as PROTOCOL.md lists them: `[{"unit": {...}, "distance_m": D}]`.
pub fn nearest_results(engine: &Engine, results: &[Neighbor]) -> Vec<Value> {
    results
        .iter()
        .filter_map(|n| Some(json!({"unit": unit_object(engine, n.unit)?, "distance_m": n.distance_m})))
        .collect()
}

/// Definitions as their owners sent them (fences, rules), keyed by id, for
/// GET: a client reads back exactly what it wrote.
#[derive(Debug, Default)]
pub struct StoredJson(Mutex<HashMap<String, Value>>);

impl StoredJson {
    /// Stores `v` under `id` (setting its `id` member) and returns it.
    pub fn put(&self, id: &str, mut v: Value) -> Value {
        if let Value::Object(o) = &mut v {
            o.insert("id".into(), json!(id));
        }
        if let Ok(mut m) = self.0.lock() {
            m.insert(id.to_owned(), v.clone());
        }
        v
    }

    /// The definition of `id`.
    pub fn get(&self, id: &str) -> Option<Value> {
        self.0.lock().ok()?.get(id).cloned()
    }

    /// Every definition, by id.
    pub fn sorted(&self) -> Vec<Value> {
        let Ok(m) = self.0.lock() else { return Vec::new() };
        let mut ids: Vec<&String> = m.keys().collect();
        ids.sort();
        ids.into_iter().filter_map(|id| m.get(id).cloned()).collect()
    }

    /// Forgets `id`.
    pub fn remove(&self, id: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(id);
        }
    }
}
