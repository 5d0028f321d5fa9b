//! GeoJSON fences (PROTOCOL.md `PUT /v1/fences/{id}`) and filters.
//!
//! A fence is a Feature whose geometry is a Polygon, a MultiPolygon, or a
//! Point with `properties.radius_m`; `properties` may hold `detect` (a list
//! of `enter`, `exit`, `dwell`), `dwell_s`, `hysteresis_m` and `filter`.

use bluelight_engine::{Agency, Detect, Engine, EngineError, FenceSpec, Filter, Shape, Status};
use geo::{Coord, LineString, MultiPolygon, Polygon};
use geojson::{Feature, GeometryValue, JsonObject, JsonValue, Position};
use thiserror::Error;

/// Why a fence or filter was refused; the message names what is wrong.
#[derive(Debug, Error)]
pub enum FenceJsonError {
    /// The JSON is not a GeoJSON Feature.
    #[error("not a GeoJSON Feature: {0}")]
    NotFeature(String),
    /// A polygon whose rings are not as RFC 7946 requires.
    #[error("invalid polygon: {0}")]
    BadPolygon(String),
    /// A geometry type fences cannot have.
    #[error("unsupported geometry {0}: use Polygon, MultiPolygon, or Point with properties.radius_m")]
    Geometry(&'static str),
    /// A property with a bad value.
    #[error("properties.{key}: {reason}")]
    Property {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The engine refused it.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn prop_err(key: &str, reason: impl Into<String>) -> FenceJsonError {
    FenceJsonError::Property {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn ring(positions: &[Position]) -> Result<LineString, FenceJsonError> {
    // RFC 7946 §3.1.6: a ring's last position repeats its first. An open
    // ring is refused rather than closed silently: its owner may have cut
    // it short.
    if positions.len() >= 2 && positions.first() != positions.last() {
        return Err(FenceJsonError::BadPolygon(format!(
            "a ring of {} positions is not closed: its last position must repeat its first",
            positions.len()
        )));
    }
    positions
        .iter()
        .map(|p| match p.as_slice() {
            [x, y, ..] => Ok(Coord { x: *x, y: *y }),
            _ => Err(FenceJsonError::NotFeature("a position needs [lon, lat]".into())),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(LineString)
}

pub(crate) fn polygon(rings: &[Vec<Position>]) -> Result<Polygon, FenceJsonError> {
    let mut it = rings.iter();
    let ext = it
        .next()
        .ok_or_else(|| FenceJsonError::NotFeature("a polygon needs a ring".into()))?;
    Ok(Polygon::new(
        ring(ext)?,
        it.map(|r| ring(r)).collect::<Result<_, _>>()?,
    ))
}

/// Parses a fence from a Feature, with `id` from the URL.
///
/// # Errors
/// What is wrong, by key.
pub fn fence_from_feature(engine: &mut Engine, id: &str, f: &Feature) -> Result<FenceSpec, FenceJsonError> {
    let empty = JsonObject::new();
    let props = f.properties.as_ref().unwrap_or(&empty);
    let geometry = f
        .geometry
        .as_ref()
        .ok_or_else(|| FenceJsonError::NotFeature("no geometry".into()))?;
    let shape = match &geometry.value {
        GeometryValue::Polygon { coordinates } => Shape::polygon(MultiPolygon(vec![polygon(coordinates)?]))?,
        GeometryValue::MultiPolygon { coordinates } => Shape::polygon(MultiPolygon(
            coordinates.iter().map(|p| polygon(p)).collect::<Result<_, _>>()?,
        ))?,
        GeometryValue::Point { coordinates } => {
            let r = props
                .get("radius_m")
                .and_then(JsonValue::as_f64)
                .ok_or_else(|| prop_err("radius_m", "a Point fence needs a number radius_m"))?;
            match coordinates.as_slice() {
                [lon, lat, ..] => Shape::circle(*lat, *lon, r)?,
                _ => return Err(FenceJsonError::NotFeature("a position needs [lon, lat]".into())),
            }
        }
        GeometryValue::MultiPoint { .. } => return Err(FenceJsonError::Geometry("MultiPoint")),
        GeometryValue::LineString { .. } => return Err(FenceJsonError::Geometry("LineString")),
        GeometryValue::MultiLineString { .. } => return Err(FenceJsonError::Geometry("MultiLineString")),
        GeometryValue::GeometryCollection { .. } => {
            return Err(FenceJsonError::Geometry("GeometryCollection"));
        }
    };
    let detect = match props.get("detect") {
        None => Detect::default(),
        Some(v) => {
            let list = v.as_array().ok_or_else(|| prop_err("detect", "must be a list"))?;
            let mut d = Detect {
                enter: false,
                exit: false,
                dwell: false,
            };
            for e in list {
                match e.as_str() {
                    Some("enter") => d.enter = true,
                    Some("exit") => d.exit = true,
                    Some("dwell") => d.dwell = true,
                    _ => {
                        return Err(prop_err(
                            "detect",
                            format!("unknown event {e}; use enter, exit, dwell"),
                        ));
                    }
                }
            }
            d
        }
    };
    let num = |key: &str| -> Result<Option<f64>, FenceJsonError> {
        match props.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(Some)
                .ok_or_else(|| prop_err(key, "must be a non-negative number")),
        }
    };
    let dwell_s = num("dwell_s")?.unwrap_or(0.0);
    if detect.dwell && dwell_s <= 0.0 {
        return Err(prop_err("dwell_s", "detecting dwell needs dwell_s > 0"));
    }
    let filter = match props.get("filter") {
        None => Filter::all(),
        Some(v) => filter_from_json(engine, v).map_err(|e| prop_err("filter", e))?,
    };
    Ok(FenceSpec {
        id: id.to_owned(),
        shape,
        detect,
        dwell_s: dwell_s.min(f64::from(u32::MAX)) as u32,
        hysteresis_m: num("hysteresis_m")?.unwrap_or(0.0),
        filter,
    })
}

/// Parses a PROTOCOL.md filter object into a compiled [`Filter`].
///
/// # Errors
/// A message naming the key that is wrong.
pub fn filter_from_json(engine: &mut Engine, v: &JsonValue) -> Result<Filter, String> {
    let obj = v.as_object().ok_or("a filter must be an object")?;
    let strings = |key: &str| -> Result<Option<Vec<&str>>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .ok_or(format!("{key} must be a list of strings"))?
                .iter()
                .map(|s| s.as_str().ok_or(format!("{key} must be a list of strings")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    };
    for key in obj.keys() {
        if !["agency", "status", "kind", "tags", "ids", "max_age_s"].contains(&key.as_str()) {
            return Err(format!("unknown filter key {key:?}"));
        }
    }
    let agencies = strings("agency")?
        .map(|l| l.iter().map(|s| Agency::parse(s)).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|e| e.to_string())?;
    let statuses = strings("status")?
        .map(|l| l.iter().map(|s| Status::parse(s)).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|e| e.to_string())?;
    let max_age = match obj.get("max_age_s") {
        None => None,
        Some(v) => Some(v.as_f64().ok_or("max_age_s must be a number")?),
    };
    engine
        .compile_filter(
            agencies.as_deref(),
            statuses.as_deref(),
            strings("kind")?.as_deref(),
            strings("tags")?.as_deref(),
            strings("ids")?.as_deref(),
            max_age,
        )
        .map_err(|e| e.to_string())
}

/// The id of a Feature (string or number), if any.
pub fn feature_id(f: &Feature) -> Option<String> {
    match &f.id {
        Some(geojson::feature::Id::String(s)) => Some(s.clone()),
        Some(geojson::feature::Id::Number(n)) => Some(n.to_string()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::EngineConfig;

    fn engine() -> Engine {
        Engine::new(EngineConfig::default()).expect("config")
    }

    fn feature(json: &str) -> Feature {
        json.parse::<geojson::GeoJson>()
            .ok()
            .and_then(|g| Feature::try_from(g).ok())
            .expect("valid feature")
    }

    #[test]
    fn shipped_sample_fences_all_parse() {
        let mut e = engine();
        let text = include_str!("../../data/fences.geojson");
        let fc: geojson::FeatureCollection = text.parse().expect("collection");
        assert!(fc.features.len() >= 10);
        for f in &fc.features {
            let id = feature_id(f).expect("id");
            fence_from_feature(&mut e, &id, f).expect("valid fence");
        }
    }

    #[test]
    fn point_without_radius_names_the_key() {
        let mut e = engine();
        let f =
            feature(r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},"properties":{}}"#);
        let err = fence_from_feature(&mut e, "x", &f)
            .expect_err("no radius")
            .to_string();
        assert!(err.contains("radius_m"), "{err}");
    }

    #[test]
    fn unknown_detect_event_is_refused() {
        let mut e = engine();
        let f = feature(
            r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},"properties":{"radius_m":5,"detect":["teleport"]}}"#,
        );
        let err = fence_from_feature(&mut e, "x", &f)
            .expect_err("bad event")
            .to_string();
        assert!(err.contains("teleport"), "{err}");
    }

    #[test]
    fn unknown_agency_in_filter_is_refused() {
        let mut e = engine();
        let err = filter_from_json(&mut e, &serde_json::json!({"agency":["navy"]})).expect_err("bad");
        assert!(err.contains("navy"), "{err}");
    }
}
