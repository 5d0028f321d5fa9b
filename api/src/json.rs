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
        if x.is_finite() {
            o.insert(k.into(), json!(short(x)));
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

/// An f32 as the f64 of its shortest text: 0.1, not 0.10000000149011612.
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends the unit object of [`unit_object`] as JSON text, without building
/// a `Value` (positions feeds write hundreds of thousands a second).
/// Returns false, writing nothing, for a unit never seen.
pub fn write_unit(engine: &Engine, slot: UnitSlot, out: &mut String) -> bool {
    use std::fmt::Write as _;
    let Some(v) = engine.unit_borrowed(slot) else {
        return false;
    };
    let fix = v.fix;
    out.push_str("{\"id\":");
    push_json_str(out, v.id);
    // Display of f64/f32 is the shortest text that reads back exactly, and
    // never uses an exponent: valid JSON numbers.
    let _ = write!(
        out,
        ",\"lat\":{},\"lon\":{},\"time_ms\":{}",
        fix.lat, fix.lon, fix.time_ms
    );
    for (k, x) in [
        ("speed_mps", fix.speed_mps),
        ("heading_deg", fix.heading_deg),
        ("accuracy_m", fix.accuracy_m),
    ] {
        if x.is_finite() {
            let _ = write!(out, ",\"{k}\":{x}");
        }
    }
    let _ = write!(
        out,
        ",\"agency\":\"{}\",\"status\":\"{}\"",
        v.agency.as_str(),
        v.status.as_str()
    );
    if let Some(k) = v.kind {
        out.push_str(",\"kind\":");
        push_json_str(out, k);
    }
    for (i, t) in v.tags().enumerate() {
        out.push_str(if i == 0 { ",\"tags\":[" } else { "," });
        push_json_str(out, t);
    }
    if v.tags().next().is_some() {
        out.push(']');
    }
    if let Some(c) = engine.unit_cell(slot) {
        let _ = write!(out, ",\"h3\":\"{c}\"");
    }
    let _ = write!(out, ",\"stale\":{}}}", v.stale);
    true
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

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{Agency, EngineConfig, Fix, Outputs};

    #[test]
    fn written_unit_text_is_the_unit_object() {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        let slot = e.unit("AMB \"1\"\\\n");
        e.set_meta(
            slot,
            Some(Agency::Ambulance),
            Some("rrv"),
            Some(&["para\"medic", "x"]),
        )
        .expect("meta");
        let mut fix = Fix::at(1_763_726_400_000, 50.909_712_345_678_9, -1.404_4);
        fix.speed_mps = 12.5;
        fix.heading_deg = 0.1;
        e.apply(slot, &fix, &mut Outputs::default());
        let mut text = String::new();
        assert!(write_unit(&e, slot, &mut text));
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(Some(parsed), unit_object(&e, slot), "{text}");
        let never = e.unit("never-seen");
        assert!(!write_unit(&e, never, &mut text));
    }
}
