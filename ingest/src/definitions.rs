//! Definitions as their owners write them: GeoJSON fences (PROTOCOL.md
//! `PUT /v1/fences/{id}`), proximity rules (`PUT /v1/rules/{id}`) and
//! filters, parsed without the engine.
//!
//! A definition is parsed where it arrives (so a bad one is refused at
//! once, with what is wrong) and compiled by the writer, in order with the
//! fixes: compiling interns the names a filter uses, which changes the
//! engine, so it happens at the definition's place in the ordered stream
//! and a journal's replay does it again at the same place. Each definition
//! keeps its source, the JSON text `GET` answers and the journal carries.
//!
//! A fence is a Feature whose geometry is a Polygon, a MultiPolygon, or a
//! Point with `properties.radius_m`; `properties` may hold `detect` (a list
//! of `enter`, `exit`, `dwell`), `dwell_s`, `hysteresis_m` and `filter`.

use std::sync::Arc;

use bluelight_engine::{
    Agency, Cover, Detect, Engine, EngineConfig, EngineError, FenceSpec, Filter, RuleSpec, Shape, Status,
};
use geo::{Coord, LineString, MultiPolygon, Polygon};
use geojson::{Feature, GeometryValue, JsonObject, JsonValue, Position};
use thiserror::Error;

/// Why a fence, rule or filter was refused; the message names what is wrong.
#[derive(Debug, Error)]
pub enum DefinitionError {
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
    /// A proximity rule that is not as PROTOCOL.md says.
    #[error("{0}")]
    Rule(String),
}

fn prop_err(key: &str, reason: impl Into<String>) -> DefinitionError {
    DefinitionError::Property {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn ring(positions: &[Position]) -> Result<LineString, DefinitionError> {
    // RFC 7946 §3.1.6: a ring's last position repeats its first. An open
    // ring is refused rather than closed silently: its owner may have cut
    // it short.
    // Counted as sent (geo would close a short ring and count one more).
    if positions.len() < 4 {
        return Err(DefinitionError::BadPolygon(format!(
            "a ring needs at least 4 positions (3 corners and the first again), got {}",
            positions.len()
        )));
    }
    if positions.first() != positions.last() {
        return Err(DefinitionError::BadPolygon(format!(
            "a ring of {} positions is not closed: its last position must repeat its first",
            positions.len()
        )));
    }
    positions
        .iter()
        .map(|p| match p.as_slice() {
            [x, y, ..] => Ok(Coord { x: *x, y: *y }),
            _ => Err(DefinitionError::NotFeature("a position needs [lon, lat]".into())),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(LineString)
}

/// A GeoJSON Polygon's rings as a polygon (rings must be closed).
///
/// # Errors
/// An open ring, a position without two numbers, or no ring.
pub fn polygon(rings: &[Vec<Position>]) -> Result<Polygon, DefinitionError> {
    let mut it = rings.iter();
    let ext = it
        .next()
        .ok_or_else(|| DefinitionError::NotFeature("a polygon needs a ring".into()))?;
    Ok(Polygon::new(
        ring(ext)?,
        it.map(|r| ring(r)).collect::<Result<_, _>>()?,
    ))
}

/// A fence as its owner defined it, parsed and checked but not compiled.
#[derive(Debug, Clone)]
pub struct FenceDef {
    /// The fence's id (URL path segment).
    pub id: String,
    /// Its geometry, checked (closed, simple rings; a valid circle).
    pub shape: Shape,
    /// Which events it fires.
    pub detect: Detect,
    /// Seconds inside before `dwell`.
    pub dwell_s: u32,
    /// Exit hysteresis, metres.
    pub hysteresis_m: f64,
    /// Which units it applies to, by name.
    pub filter: FilterDef,
    /// The Feature as stored: the owner's, with `id` set.
    pub source: Arc<str>,
    /// Its cover, when computed where it arrived ([`FenceDef::covered`]),
    /// so the writer only installs it. Never journaled: a replay computes
    /// it again (the same, it depends only on the shape).
    pub cover: Option<Arc<Cover>>,
}

impl FenceDef {
    /// With its cover computed for an engine of configuration `cfg`:
    /// seconds for a large area, so call it off the runtime's threads
    /// (`spawn_blocking`) and never holding the engine. A cover over the
    /// cap is left for the writer, which refuses the fence with the reason.
    #[must_use]
    pub fn covered(mut self, cfg: &EngineConfig) -> Self {
        self.cover = Cover::compute(&self.shape, cfg, self.hysteresis_m)
            .ok()
            .map(Arc::new);
        self
    }

    /// Parses a fence from GeoJSON text, with `id` from the URL.
    ///
    /// # Errors
    /// Text that is not a Feature, and what is wrong, by key.
    pub fn parse(id: &str, text: &str) -> Result<Self, DefinitionError> {
        let gj: geojson::GeoJson = text
            .parse()
            .map_err(|e| DefinitionError::NotFeature(format!("body is not GeoJSON: {e}")))?;
        let f = Feature::try_from(gj)
            .map_err(|_| DefinitionError::NotFeature("body must be a GeoJSON Feature".into()))?;
        Self::from_feature(id, &f)
    }

    /// Parses a fence from a Feature, with `id` from the URL.
    ///
    /// # Errors
    /// What is wrong, by key.
    pub fn from_feature(id: &str, f: &Feature) -> Result<Self, DefinitionError> {
        let mut stored = serde_json::to_value(f).unwrap_or(JsonValue::Null);
        if let JsonValue::Object(o) = &mut stored {
            o.insert("id".into(), JsonValue::String(id.to_owned()));
        }
        fence_from_feature(id, f, Arc::from(stored.to_string()))
    }

    /// The engine's fence: the filter's names interned.
    ///
    /// # Errors
    /// A filter over the engine's tag limit.
    pub fn compile(&self, engine: &mut Engine) -> Result<FenceSpec, EngineError> {
        Ok(FenceSpec {
            id: self.id.clone(),
            shape: self.shape.clone(),
            detect: self.detect,
            dwell_s: self.dwell_s,
            hysteresis_m: self.hysteresis_m,
            filter: self.filter.compile(engine)?,
            source: Some(self.source.clone()),
        })
    }
}

fn fence_from_feature(id: &str, f: &Feature, source: Arc<str>) -> Result<FenceDef, DefinitionError> {
    let empty = JsonObject::new();
    let props = f.properties.as_ref().unwrap_or(&empty);
    let geometry = f
        .geometry
        .as_ref()
        .ok_or_else(|| DefinitionError::NotFeature("no geometry".into()))?;
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
                _ => return Err(DefinitionError::NotFeature("a position needs [lon, lat]".into())),
            }
        }
        GeometryValue::MultiPoint { .. } => return Err(DefinitionError::Geometry("MultiPoint")),
        GeometryValue::LineString { .. } => return Err(DefinitionError::Geometry("LineString")),
        GeometryValue::MultiLineString { .. } => return Err(DefinitionError::Geometry("MultiLineString")),
        GeometryValue::GeometryCollection { .. } => {
            return Err(DefinitionError::Geometry("GeometryCollection"));
        }
    };
    // The map and the logs show it as text.
    if props.get("name").is_some_and(|n| !n.is_string()) {
        return Err(prop_err("name", "must be a string"));
    }
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
    let num = |key: &str| -> Result<Option<f64>, DefinitionError> {
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
        None => FilterDef::default(),
        Some(v) => FilterDef::parse(v).map_err(|e| prop_err("filter", e))?,
    };
    let hysteresis_m = num("hysteresis_m")?.unwrap_or(0.0);
    if hysteresis_m > 100_000.0 {
        return Err(prop_err("hysteresis_m", "must be at most 100000"));
    }
    Ok(FenceDef {
        id: id.to_owned(),
        shape,
        detect,
        dwell_s: dwell_s.min(f64::from(u32::MAX)) as u32,
        hysteresis_m,
        filter,
        source,
        cover: None,
    })
}

/// A proximity rule as its owner defined it (PROTOCOL.md `PUT /v1/rules`).
#[derive(Debug, Clone)]
pub struct RuleDef {
    /// The rule's id.
    pub id: String,
    /// One set of units.
    pub from: FilterDef,
    /// The other set.
    pub to: FilterDef,
    /// Fire when closer than this, metres.
    pub radius_m: f64,
    /// Re-arm only beyond `radius_m + hysteresis_m`.
    pub hysteresis_m: f64,
    /// The rule as stored: the owner's JSON, with `id` set.
    pub source: Arc<str>,
}

impl RuleDef {
    /// Parses a rule from JSON text, with `id` from the URL.
    ///
    /// # Errors
    /// What is wrong, by key.
    pub fn parse(id: &str, text: &str) -> Result<Self, DefinitionError> {
        let rule = |m: &str| DefinitionError::Rule(m.to_owned());
        let mut v: JsonValue = serde_json::from_str(text).map_err(|_| rule("body is not JSON"))?;
        if v.get("type").and_then(JsonValue::as_str) != Some("proximity") {
            return Err(rule("type must be \"proximity\""));
        }
        let num = |k: &str| v.get(k).and_then(JsonValue::as_f64);
        let radius_m = num("radius_m").ok_or_else(|| rule("radius_m must be a number"))?;
        let hysteresis_m = match v.get("hysteresis_m") {
            None => 0.0,
            Some(h) => h.as_f64().ok_or_else(|| rule("hysteresis_m must be a number"))?,
        };
        if !(radius_m > 0.0 && radius_m <= 1_000_000.0) {
            return Err(DefinitionError::Rule(format!(
                "radius_m must be more than 0 and at most 1000000 metres, got {radius_m}"
            )));
        }
        if !(0.0..=1_000_000.0).contains(&hysteresis_m) {
            return Err(DefinitionError::Rule(format!(
                "hysteresis_m must be 0 to 1000000 metres, got {hysteresis_m}"
            )));
        }
        let filter = |k: &str| -> Result<FilterDef, DefinitionError> {
            v.get(k)
                .map(FilterDef::parse)
                .transpose()
                .map(Option::unwrap_or_default)
                .map_err(|e| DefinitionError::Rule(format!("{k}: {e}")))
        };
        let (from, to) = (filter("from")?, filter("to")?);
        if let JsonValue::Object(o) = &mut v {
            o.insert("id".into(), JsonValue::String(id.to_owned()));
        }
        Ok(Self {
            id: id.to_owned(),
            from,
            to,
            radius_m,
            hysteresis_m,
            source: Arc::from(v.to_string()),
        })
    }

    /// The engine's rule: the filters' names interned.
    ///
    /// # Errors
    /// A filter over the engine's tag limit.
    pub fn compile(&self, engine: &mut Engine) -> Result<RuleSpec, EngineError> {
        Ok(RuleSpec {
            id: self.id.clone(),
            from: self.from.compile(engine)?,
            to: self.to.compile(engine)?,
            radius_m: self.radius_m,
            hysteresis_m: self.hysteresis_m,
            source: Some(self.source.clone()),
        })
    }
}

/// A PROTOCOL.md filter by name: agencies and statuses parsed, kinds,
/// tags and unit ids as written (compiling interns them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterDef {
    /// `agency`.
    pub agencies: Option<Vec<Agency>>,
    /// `status`.
    pub statuses: Option<Vec<Status>>,
    /// `kind`.
    pub kinds: Option<Vec<String>>,
    /// `tags`.
    pub tags: Option<Vec<String>>,
    /// `ids`.
    pub ids: Option<Vec<String>>,
    /// `max_age_s`.
    pub max_age_s: Option<f64>,
}

impl FilterDef {
    /// Parses a PROTOCOL.md filter object.
    ///
    /// # Errors
    /// A message naming the key that is wrong.
    pub fn parse(v: &JsonValue) -> Result<Self, String> {
        parse_filter(v)
    }

    /// The engine's filter. Unknown kinds, tags and ids are interned so the
    /// filter matches units that appear later.
    ///
    /// # Errors
    /// Past the engine's tag limit, or a bad `max_age_s`.
    pub fn compile(&self, engine: &mut Engine) -> Result<Filter, EngineError> {
        fn strs(v: &Option<Vec<String>>) -> Option<Vec<&str>> {
            v.as_ref().map(|l| l.iter().map(String::as_str).collect())
        }
        engine.compile_filter(
            self.agencies.as_deref(),
            self.statuses.as_deref(),
            strs(&self.kinds).as_deref(),
            strs(&self.tags).as_deref(),
            strs(&self.ids).as_deref(),
            self.max_age_s,
        )
    }
}

/// An area of PROTOCOL.md ("Areas"): `{"bbox":..}`, `{"circle":..}`,
/// `{"polygon":..}`, `{"h3":[..]}` or `{"fence":"id"}` (a fence of `e`).
///
/// # Errors
/// Malformed, or naming an unknown fence; the text says which.
pub fn area_from_json(e: &Engine, area: &JsonValue) -> Result<Shape, String> {
    let a = area
        .as_object()
        .ok_or("area must be an object with bbox, circle, polygon, h3 or fence")?;
    let nums = |x: &JsonValue| -> Option<Vec<f64>> { x.as_array()?.iter().map(JsonValue::as_f64).collect() };
    if let Some(b) = a.get("bbox") {
        let b = nums(b)
            .filter(|b| b.len() == 4)
            .ok_or("bbox must be [w, s, e, n]")?;
        return Shape::bbox([b[0], b[1], b[2], b[3]]).map_err(|err| err.to_string());
    }
    if let Some(c) = a.get("circle") {
        let center = c
            .get("center")
            .and_then(nums)
            .filter(|c| c.len() == 2)
            .ok_or("circle.center must be [lon, lat]")?;
        let r = c
            .get("radius_m")
            .and_then(JsonValue::as_f64)
            .ok_or("circle.radius_m must be a number")?;
        return Shape::circle(center[1], center[0], r).map_err(|err| err.to_string());
    }
    if let Some(p) = a.get("polygon") {
        let g: geojson::Geometry =
            serde_json::from_value(p.clone()).map_err(|err| format!("polygon: {err}"))?;
        let mp = match &g.value {
            geojson::GeometryValue::Polygon { coordinates } => {
                MultiPolygon(vec![polygon(coordinates).map_err(|err| err.to_string())?])
            }
            geojson::GeometryValue::MultiPolygon { coordinates } => MultiPolygon(
                coordinates
                    .iter()
                    .map(|p| polygon(p))
                    .collect::<Result<_, _>>()
                    .map_err(|err| err.to_string())?,
            ),
            _ => return Err("polygon must be a GeoJSON Polygon or MultiPolygon".into()),
        };
        return Shape::polygon(mp).map_err(|err| err.to_string());
    }
    if let Some(cells) = a.get("h3") {
        let list = cells.as_array().ok_or("h3 must be a list of cells")?;
        let cells = list
            .iter()
            .map(|c| {
                c.as_str()
                    .and_then(|s| s.parse::<h3o::CellIndex>().ok())
                    .ok_or(format!("invalid H3 cell {c}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Shape::cells(cells).map_err(|err| err.to_string());
    }
    if let Some(f) = a.get("fence") {
        let id = f.as_str().ok_or("fence must be a fence id")?;
        return e
            .fence(id)
            .map(|spec| spec.shape)
            .ok_or_else(|| format!("fence {id:?} not found"));
    }
    Err("area must have bbox, circle, polygon, h3 or fence".into())
}

/// Parses a PROTOCOL.md filter object and compiles it (a session's filter,
/// which lives and dies with its session).
///
/// # Errors
/// A message naming the key that is wrong.
pub fn filter_from_json(engine: &mut Engine, v: &JsonValue) -> Result<Filter, String> {
    parse_filter(v)?.compile(engine).map_err(|e| e.to_string())
}

fn parse_filter(v: &JsonValue) -> Result<FilterDef, String> {
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
    let max_age_s = match obj.get("max_age_s") {
        None => None,
        Some(v) => match v.as_f64() {
            Some(s) if s.is_finite() && s >= 0.0 => Some(s),
            _ => return Err("max_age_s must be a non-negative number".into()),
        },
    };
    let owned = |l: Option<Vec<&str>>| l.map(|l| l.into_iter().map(str::to_owned).collect());
    Ok(FilterDef {
        agencies,
        statuses,
        kinds: owned(strings("kind")?),
        tags: owned(strings("tags")?),
        ids: owned(strings("ids")?),
        max_age_s,
    })
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
            let def = FenceDef::from_feature(&id, f).expect("valid fence");
            def.compile(&mut e).expect("compiles");
            // The stored source parses back to the same definition.
            let again = FenceDef::parse(&id, &def.source).expect("source parses");
            assert_eq!(again.source, def.source);
        }
    }

    #[test]
    fn point_without_radius_names_the_key() {
        let f =
            feature(r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},"properties":{}}"#);
        let err = FenceDef::from_feature("x", &f)
            .expect_err("no radius")
            .to_string();
        assert!(err.contains("radius_m"), "{err}");
    }

    #[test]
    fn unknown_detect_event_is_refused() {
        let f = feature(
            r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},"properties":{"radius_m":5,"detect":["teleport"]}}"#,
        );
        let err = FenceDef::from_feature("x", &f)
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

#[cfg(test)]
mod rule_tests {
    use super::*;

    #[test]
    fn a_rule_keeps_its_source_with_its_id() {
        let r = RuleDef::parse(
            "r1",
            r#"{"type":"proximity","from":{"agency":["police"]},"radius_m":50}"#,
        )
        .expect("valid rule");
        assert_eq!(r.radius_m, 50.0);
        assert_eq!(r.from.agencies, Some(vec![Agency::Police]));
        assert_eq!(r.to, FilterDef::default());
        let v: JsonValue = serde_json::from_str(&r.source).expect("json");
        assert_eq!(v["id"], "r1");
    }

    #[test]
    fn a_short_ring_is_counted_as_sent() {
        let text = r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,1]]]}}"#;
        let err = FenceDef::parse("f", text).expect_err("refused").to_string();
        assert!(
            err.contains("at least 4 positions") && err.contains("got 2"),
            "{err}"
        );
    }

    #[test]
    fn a_rule_of_radius_zero_is_refused() {
        let err = RuleDef::parse("r", r#"{"type":"proximity","radius_m":0}"#).expect_err("refused");
        assert!(err.to_string().contains("radius_m must be more than 0"), "{err}");
    }

    #[test]
    fn a_fence_name_that_is_not_text_is_refused() {
        let text = r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},"properties":{"radius_m":5,"name":{}}}"#;
        let err = FenceDef::parse("f", text).expect_err("refused").to_string();
        assert!(err.contains("name") && err.contains("string"), "{err}");
    }

    #[test]
    fn a_rule_without_radius_names_it() {
        let err = RuleDef::parse("r1", r#"{"type":"proximity"}"#).expect_err("no radius");
        assert!(err.to_string().contains("radius_m"), "{err}");
    }
}
