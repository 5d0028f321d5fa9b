//! JSON shapes of PROTOCOL.md: unit objects and unit Features.

use bluelight_engine::{Engine, Neighbor, UnitSlot};

use crate::rows::UnitRows;
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
    if let Some(c) = v.callsign {
        o.insert("callsign".into(), json!(c));
    }
    if let Some(h) = v.how {
        o.insert("how".into(), json!(h));
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

/// `s` as a JSON string, for quoting what a client sent in an error text.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    // Ids are almost always plain: copy them whole.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
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
/// a `Value`. Returns false, writing nothing, for a unit never seen.
pub fn write_unit(engine: &Engine, slot: UnitSlot, out: &mut String) -> bool {
    let mut rows = UnitRows::default();
    if !rows.push(engine, slot) {
        return false;
    }
    rows.write_row(0, out);
    true
}

/// A unit as a GeoJSON Feature (Point geometry, unit object as properties).
pub fn unit_feature(engine: &Engine, slot: UnitSlot) -> Option<Value> {
    let o = unit_object(engine, slot)?;
    let (lon, lat) = (o.get("lon").cloned()?, o.get("lat").cloned()?);
    let id = o.get("id").cloned()?;
    Some(json!({"type":"Feature","id":id,"geometry":{"type":"Point","coordinates":[lon,lat]},"properties":o}))
}

/// A nearest answer as text, `{"type":"nearest",<key>:<value>,"results":[...]}`,
/// the same JSON as building it from [`unit_object`]s gives, written directly: building
/// `Value`s cost about 100 µs an answer of ten, on the writer thread.
/// `member` is the key and its value as JSON text (a request's `id`, a
/// quoted `sub`), or none.
pub fn write_nearest(engine: &Engine, member: Option<(&str, &str)>, results: &[Neighbor], out: &mut String) {
    let mut rows = UnitRows::default();
    out.push_str("{\"type\":\"nearest\",");
    if let Some((key, value)) = member {
        push_json_str(out, key);
        out.push(':');
        out.push_str(value);
        out.push(',');
    }
    out.push_str("\"results\":[");
    let mut f64s = ryu::Buffer::new();
    for n in results {
        if !rows.push(engine, n.unit) {
            continue;
        }
        if rows.len() > 1 {
            out.push(',');
        }
        out.push_str("{\"unit\":");
        rows.write_row(rows.len() - 1, out);
        out.push_str(",\"distance_m\":");
        out.push_str(if n.distance_m.is_finite() {
            f64s.format_finite(n.distance_m)
        } else {
            "null"
        });
        out.push('}');
    }
    out.push_str("]}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{Agency, EngineConfig, Fix, Outputs};

    /// Nearest results built as values: what [`write_nearest`] must match.
    fn nearest_results(engine: &Engine, results: &[Neighbor]) -> Vec<Value> {
        results
            .iter()
            .filter_map(|n| Some(json!({"unit": unit_object(engine, n.unit)?, "distance_m": n.distance_m})))
            .collect()
    }

    #[test]
    fn written_unit_text_is_the_unit_object() {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        let slot = e.intern_unit("AMB \"1\"\\\n");
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
        let never = e.intern_unit("never-seen");
        assert!(!write_unit(&e, never, &mut text));
    }

    /// ryu writes some numbers differently from `Display` (exponents, a
    /// trailing `.0`): they must still read back as the same values.
    #[test]
    fn written_numbers_read_back_exactly() {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        let cases: [(f64, f64, f32, f32, f32); 6] = [
            (0.0, 0.0, 0.0, 0.0, 1.0),
            (-89.999_999_999, 179.999_999_999_9, 1e-7, 359.9, 1e7),
            (1e-7, -1e-12, 3.0, 90.0, 0.1),
            (51.5, -0.12, f32::NAN, 12.25, f32::NAN),
            (90.0, -180.0, 250.5, f32::NAN, 1.5e-3),
            (-33.868_820_123_456_78, 151.209_295_000_000_1, 1.1, 0.3, 65_504.0),
        ];
        let mut rows = UnitRows::default();
        for (n, (lat, lon, speed, heading, accuracy)) in cases.into_iter().enumerate() {
            let slot = e.intern_unit(&format!("U{n}"));
            let mut fix = Fix::at(1_763_726_400_000 + n as i64, lat, lon);
            (fix.speed_mps, fix.heading_deg, fix.accuracy_m) = (speed, heading, accuracy);
            e.apply(slot, &fix, &mut Outputs::default());
            assert!(rows.push(&e, slot));
        }
        let mut text = String::new();
        rows.write_message("positions", "p1", &mut text);
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        let units = parsed["units"].as_array().expect("units");
        assert_eq!(units.len(), cases.len());
        for (n, u) in units.iter().enumerate() {
            let slot = e.find_unit(&format!("U{n}")).expect("unit");
            assert_eq!(Some(u), unit_object(&e, slot).as_ref(), "{text}");
        }
    }

    #[test]
    fn written_nearest_is_the_built_answer() {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        for (n, (lat, lon)) in [(51.5, -0.12), (51.501, -0.121), (51.6, -0.2), (-33.9, 151.2)]
            .into_iter()
            .enumerate()
        {
            let slot = e.intern_unit(&format!("U\"{n}"));
            e.set_meta(slot, Some(Agency::Fire), None, Some(&["t"]))
                .expect("meta");
            e.apply(
                slot,
                &Fix::at(1_763_726_400_000, lat, lon),
                &mut Outputs::default(),
            );
        }
        let never = e.intern_unit("never-seen");
        let mut found = e.nearest(
            &bluelight_engine::NearestQuery {
                lat: 51.5,
                lon: -0.12,
                k: 3,
                filter: bluelight_engine::Filter::all(),
                max_distance_m: None,
                include_stale: true,
            },
            1_763_726_400_000,
        );
        assert_eq!(found.len(), 3);
        found.push(Neighbor {
            unit: never,
            distance_m: 1.0,
        });
        for (key, value, expect) in [
            ("id", "{\"a\":[1,\"x\"]}", json!({"a":[1,"x"]})),
            ("sub", "\"n\\\"1\"", json!("n\"1")),
        ] {
            let mut text = String::new();
            write_nearest(&e, Some((key, value)), &found, &mut text);
            let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
            let mut built = json!({"type":"nearest","results":nearest_results(&e, &found)});
            built[key] = expect;
            assert_eq!(parsed, built, "{text}");
        }
        let mut text = String::new();
        write_nearest(&e, Some(("id", "null")), &[], &mut text);
        assert_eq!(text, r#"{"type":"nearest","id":null,"results":[]}"#);
        text.clear();
        write_nearest(&e, None, &found, &mut text);
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            parsed,
            json!({"type":"nearest","results":nearest_results(&e, &found)})
        );
    }
}
