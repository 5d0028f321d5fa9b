//! The request rules of PROTOCOL.md shared by HTTP and WebSocket: one
//! rule each for `k`, points, rates, areas and filters, and the typed
//! errors both answer with.

use std::time::Duration;

use bluelight_engine::{Engine, Filter, Shape};
use serde_json::{Value, json};

use bluelight_ingest::definitions::{area_from_json, filter_from_json};

/// The `code` of a WebSocket error (PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or out of range.
    BadRequest,
    /// The token lacks the scope.
    Forbidden,
    /// No such subscription, fence or unit.
    NotFound,
    /// The server cannot take it now; retry shortly.
    Overloaded,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

/// A refused request: its code and, in words, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code.
    pub code: ErrorCode,
    /// What is wrong, for a person.
    pub message: String,
}

impl Refusal {
    /// `bad_request`.
    pub fn bad(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Forbidden,
            message: message.into(),
        }
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::NotFound,
            message: message.into(),
        }
    }

    /// `overloaded`: the writer's query queue is full.
    pub fn overloaded() -> Self {
        Self {
            code: ErrorCode::Overloaded,
            message: "the engine has too many queries waiting; retry shortly".into(),
        }
    }

    /// `overloaded`: a limit of the session's (it names the limit).
    pub fn limit(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Overloaded,
            message: message.into(),
        }
    }

    /// The WebSocket error frame, repeating the request's `id`.
    pub fn frame(&self, id: &Value) -> String {
        error_frame(id, self.code, &self.message)
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Self::bad(message)
    }
}

/// `{"type":"error","id":...,"code":...,"message":...}`.
pub fn error_frame(id: &Value, code: ErrorCode, message: &str) -> String {
    json!({"type":"error","id":id,"code":code.as_str(),"message":message}).to_string()
}

/// Neighbours asked for when `k` is not given.
pub const K_DEFAULT: usize = 5;
/// The most neighbours one nearest request may ask for.
pub const K_MAX: usize = 1000;

fn k_message() -> String {
    format!("k must be an integer from 1 to {K_MAX}")
}

/// `k` of a nearest request (one-shot or standing, HTTP or WebSocket):
/// 1 to [`K_MAX`], [`K_DEFAULT`] when absent; anything else is refused,
/// never clamped.
///
/// # Errors
/// `k` out of range or not an integer.
pub fn k_json(v: Option<&Value>) -> Result<usize, String> {
    match v {
        None => Ok(K_DEFAULT),
        Some(x) => x
            .as_u64()
            .and_then(|k| usize::try_from(k).ok())
            .filter(|k| (1..=K_MAX).contains(k))
            .ok_or_else(k_message),
    }
}

/// [`k_json`] for a query-string value.
///
/// # Errors
/// `k` out of range or not an integer.
pub fn k_text(v: Option<&str>) -> Result<usize, String> {
    match v {
        None => Ok(K_DEFAULT),
        Some(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=K_MAX).contains(k))
            .ok_or_else(k_message),
    }
}

/// A point's coordinates, checked: returns `(lat, lon)`.
///
/// # Errors
/// Not finite or out of range.
pub fn lat_lon(lon: f64, lat: f64) -> Result<(f64, f64), String> {
    if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) {
        Ok((lat, lon))
    } else {
        Err("point must be [lon, lat] within range (lon -180..180, lat -90..90)".into())
    }
}

/// `point: [lon, lat]` of a WebSocket request, as `(lat, lon)`.
///
/// # Errors
/// Missing, malformed or out of range.
pub fn point(v: &Value) -> Result<(f64, f64), String> {
    match v.get("point").and_then(Value::as_array).map(Vec::as_slice) {
        Some([lon, lat]) => match (lon.as_f64(), lat.as_f64()) {
            (Some(lon), Some(lat)) => lat_lon(lon, lat),
            _ => Err("point must be [lon, lat] as numbers".into()),
        },
        _ => Err("point must be [lon, lat]".into()),
    }
}

/// `max_hz` as the interval between updates (`default` Hz when absent).
///
/// # Errors
/// Not a number in (0, 50].
pub fn max_hz(v: &Value, default: f64) -> Result<Duration, String> {
    match v.get("max_hz") {
        None => Ok(Duration::from_secs_f64(1.0 / default)),
        Some(x) => match x.as_f64() {
            Some(hz) if hz > 0.0 && hz <= 50.0 => Ok(Duration::from_secs_f64(1.0 / hz)),
            _ => Err("max_hz must be a number in (0, 50]".into()),
        },
    }
}

/// `encoding` of a positions subscription (JSON when absent).
///
/// # Errors
/// Neither `"json"` nor `"flatbuffers"`.
pub fn encoding(v: &Value) -> Result<crate::session::Encoding, String> {
    use crate::session::Encoding;
    match v.get("encoding") {
        None => Ok(Encoding::Json),
        Some(x) => match x.as_str() {
            Some("json") => Ok(Encoding::Json),
            Some("flatbuffers") => Ok(Encoding::FlatBuffers),
            _ => Err(format!("encoding must be \"json\" or \"flatbuffers\", got {x}")),
        },
    }
}

/// `filter` of a WebSocket request (every unit when absent).
///
/// # Errors
/// A malformed filter.
pub fn filter(e: &mut Engine, v: &Value) -> Result<Filter, String> {
    v.get("filter")
        .map_or(Ok(Filter::all()), |f| filter_from_json(e, f))
}

/// `area` of a WebSocket request (PROTOCOL.md "Areas").
///
/// # Errors
/// Missing, malformed, or naming an unknown fence.
pub fn area(e: &Engine, v: &Value) -> Result<Shape, String> {
    let a = v
        .get("area")
        .ok_or("area is required: bbox, circle, polygon, h3 or fence")?;
    area_from_json(e, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_has_one_rule_for_json_and_query_strings() {
        assert_eq!(k_json(None), Ok(K_DEFAULT));
        assert_eq!(k_text(None), Ok(K_DEFAULT));
        assert_eq!(k_json(Some(&json!(1))), Ok(1));
        assert_eq!(k_text(Some("1000")), Ok(1000));
        for bad in [
            json!(0),
            json!(-1),
            json!(1001),
            json!(1e9),
            json!(2.5),
            json!("5"),
        ] {
            assert!(k_json(Some(&bad)).is_err(), "{bad}");
        }
        for bad in ["0", "-1", "1001", "1e9", "x"] {
            assert!(k_text(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn points_are_lon_lat_within_range() {
        assert_eq!(point(&json!({"point":[-0.12, 51.5]})), Ok((51.5, -0.12)));
        assert!(point(&json!({"point":[51.5, -181.0]})).is_err());
        assert!(point(&json!({"point":[0.0, 91.0]})).is_err());
        assert!(point(&json!({"point":[0.0]})).is_err());
        assert!(point(&json!({})).is_err());
    }
}
