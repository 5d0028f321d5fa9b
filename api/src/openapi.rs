//! `GET /openapi.json`: the OpenAPI 3.1 description of every HTTP path.
//!
//! It cannot drift from the server: each path is documented on its handler
//! (`#[utoipa::path]`) and routed from that same annotation
//! (`utoipa_axum::routes!`, see [`crate::http::router`]); query parameters
//! are the fields of the structs the handlers extract; replies that are
//! serialised from a type use it here. Replies written as text for speed
//! (units, nearest) are described by the types below, and `.ci/run`
//! checks every reply against them with Schemathesis
//! (`api/tests/openapi.rs`).

use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

/// The document's fixed part; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "bluelight",
        description = "Real-time locations of blue-light responders: units, fences, proximity rules, nearest units, history export. The WebSocket protocol of /v1/ws and /v1/ingest is described in the README.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    modifiers(&Security),
    tags(
        (name = "units", description = "Live positions and nearest units"),
        (name = "fences", description = "Geofences and proximity rules"),
        (name = "ingest", description = "Fixes in"),
        (name = "export", description = "History for analysts"),
        (name = "operations", description = "Health, metrics, failover, this document"),
        (name = "map", description = "The dispatch map page and its assets"),
    )
)]
pub struct ApiDoc;

/// The two ways a token is sent: `Authorization: Bearer T` everywhere,
/// `?token=T` only where a browser cannot set a header.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "token_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "Only on WebSocket upgrades and export downloads.",
            ))),
        );
    }
}

/// Every refusal: 4xx and 5xx replies are `{"error": "..."}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorReply {
    /// What is wrong, in plain words, naming the field or the limit.
    pub error: String,
}

/// The refusals of a path that needs a token.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "only described, never built")]
pub enum Refused {
    /// No token, or not one the server knows.
    #[response(status = 401)]
    Unauthorized(ErrorReply),
    /// The token lacks the path's scope.
    #[response(status = 403)]
    Forbidden(ErrorReply),
}

/// One of the five agencies.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum AgencyName {
    /// Police.
    Police,
    /// Fire and rescue.
    Fire,
    /// Ambulance.
    Ambulance,
    /// Coastguard.
    Coastguard,
    /// Anything else.
    Other,
}

/// One of the six statuses.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum StatusName {
    /// Free for a job.
    Available,
    /// On the way to one.
    Enroute,
    /// At one.
    AtScene,
    /// Off duty or otherwise unavailable.
    Unavailable,
    /// The responder needs help.
    Emergency,
    /// Not known.
    Unknown,
}

/// A unit object (PROTOCOL.md "A unit object"); unknown fields are omitted.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described: the server writes these as text")]
pub struct UnitObject {
    /// The unit's id.
    id: String,
    /// Degrees.
    #[schema(minimum = -90.0, maximum = 90.0)]
    lat: f64,
    /// Degrees.
    #[schema(minimum = -180.0, maximum = 180.0)]
    lon: f64,
    /// The fix's time, ms since the Unix epoch.
    time_ms: i64,
    /// Metres per second.
    #[schema(minimum = 0.0)]
    speed_mps: Option<f64>,
    /// Degrees clockwise from true north.
    #[schema(minimum = 0.0, maximum = 360.0)]
    heading_deg: Option<f64>,
    /// Metres.
    #[schema(minimum = 0.0)]
    accuracy_m: Option<f64>,
    agency: AgencyName,
    status: StatusName,
    /// What the unit is (`rrv`, `pumping_appliance`, ...).
    kind: Option<String>,
    /// Free labels.
    tags: Option<Vec<String>>,
    /// The callsign a TAK device gave.
    callsign: Option<String>,
    /// A Cursor-on-Target `how`.
    how: Option<String>,
    /// The H3 cell of the position, at the engine's shard resolution.
    h3: Option<String>,
    /// No fix for longer than `stale_after`.
    stale: bool,
}

/// `"Feature"`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub enum FeatureType {
    /// The one value.
    Feature,
}

/// `"FeatureCollection"`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub enum CollectionType {
    /// The one value.
    FeatureCollection,
}

/// `"Point"`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub enum PointType {
    /// The one value.
    Point,
}

/// A GeoJSON Point.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct PointGeometry {
    #[schema(rename = "type")]
    kind: PointType,
    /// `[lon, lat]`.
    coordinates: [f64; 2],
}

/// A unit as a GeoJSON Feature: its position as the geometry, the unit
/// object as the properties.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct UnitFeature {
    #[schema(rename = "type")]
    kind: FeatureType,
    /// The unit's id.
    id: String,
    geometry: PointGeometry,
    properties: UnitObject,
}

/// Units as a GeoJSON FeatureCollection.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct UnitCollection {
    #[schema(rename = "type")]
    kind: CollectionType,
    features: Vec<UnitFeature>,
}

/// `"nearest"`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub enum NearestType {
    /// The one value.
    #[schema(rename = "nearest")]
    Nearest,
}

/// The nearest units, nearest first.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct NearestReply {
    #[schema(rename = "type")]
    kind: NearestType,
    results: Vec<NearestResult>,
}

/// One of the nearest units.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct NearestResult {
    unit: UnitObject,
    /// Metres along the surface from the query point.
    #[schema(minimum = 0.0)]
    distance_m: f64,
}

/// A fence: a GeoJSON Feature whose geometry is a Polygon, a MultiPolygon,
/// or a Point with `properties.radius_m` (a circle).
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described: the server keeps the owner's JSON")]
pub struct FenceFeature {
    #[schema(rename = "type")]
    kind: FeatureType,
    /// Set from the path.
    id: Option<String>,
    /// Polygon, MultiPolygon or Point (GeoJSON, `[lon, lat]`).
    #[schema(value_type = Object)]
    geometry: (),
    properties: Option<FenceProperties>,
}

/// What a fence detects, and how.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct FenceProperties {
    /// A name for people.
    name: Option<String>,
    /// A circle's radius, for a Point geometry.
    #[schema(exclusive_minimum = 0.0)]
    radius_m: Option<f64>,
    /// Events to raise: `enter`, `exit`, `dwell` (default enter and exit).
    detect: Option<Vec<String>>,
    /// Seconds inside before `dwell`.
    #[schema(minimum = 0.0)]
    dwell_s: Option<f64>,
    /// Metres outside the edge before `exit`.
    #[schema(minimum = 0.0, maximum = 100_000.0)]
    hysteresis_m: Option<f64>,
    /// Which units the fence watches: `agency`, `status`, `kind`, `tags`.
    #[schema(value_type = Option<Object>)]
    filter: Option<()>,
}

/// Fences as a GeoJSON FeatureCollection.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct FenceCollection {
    #[schema(rename = "type")]
    kind: CollectionType,
    features: Vec<FenceFeature>,
}

/// A proximity rule: an alert when a unit matching `from` comes within
/// `radius_m` of one matching `to`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described: the server keeps the owner's JSON")]
pub struct Rule {
    /// Set from the path.
    id: Option<String>,
    /// `proximity`.
    #[schema(rename = "type")]
    kind: String,
    /// A filter: `agency`, `status`, `kind`, `tags`.
    #[schema(value_type = Option<Object>)]
    from: Option<()>,
    /// A filter: `agency`, `status`, `kind`, `tags`.
    #[schema(value_type = Option<Object>)]
    to: Option<()>,
    /// Metres.
    #[schema(exclusive_minimum = 0.0, maximum = 1_000_000.0)]
    radius_m: f64,
    /// Metres beyond the radius before the pair is apart again.
    #[schema(minimum = 0.0, maximum = 1_000_000.0)]
    hysteresis_m: Option<f64>,
}

/// Every proximity rule, by id.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct RuleList {
    rules: Vec<Rule>,
}

/// A JSON batch of fixes for `POST /v1/fixes`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described: decoded by bluelight_ingest::decode")]
pub struct FixBatchJson {
    /// Unit objects; a bad one is refused alone, in `errors`.
    fixes: Vec<FixJson>,
}

/// One fix: a unit object's fields (`id`, `lat`, `lon`, `time_ms`
/// required).
#[derive(ToSchema)]
#[allow(dead_code, reason = "only described")]
pub struct FixJson {
    id: String,
    lat: f64,
    lon: f64,
    time_ms: i64,
    speed_mps: Option<f64>,
    heading_deg: Option<f64>,
    accuracy_m: Option<f64>,
    agency: Option<AgencyName>,
    status: Option<StatusName>,
    kind: Option<String>,
    tags: Option<Vec<String>>,
}

/// What became of a batch of fixes.
#[derive(Serialize, ToSchema)]
pub struct FixesReply {
    /// Fixes applied (and, with Redis, journaled).
    pub accepted: u32,
    /// Fixes refused.
    pub rejected: usize,
    /// Each refused fix: its place in the batch and why.
    pub errors: Vec<FixError>,
}

/// A refused fix.
#[derive(Serialize, ToSchema)]
pub struct FixError {
    /// Its index in the batch, from 0.
    pub index: u32,
    /// The reason, as counted in `/metrics`.
    pub reason: &'static str,
    /// What is wrong, naming the field (a `bad_field` of a JSON fix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `leader` or `follower`.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Writes.
    Leader,
    /// A read-only replica.
    Follower,
}

/// `ok` or `down`.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Up {
    /// Answering.
    Ok,
    /// Not answering.
    Down,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: &'static str,
    /// This server's role.
    pub role: Role,
    /// Units known.
    pub units: usize,
    /// Fences stored.
    pub fences: usize,
    /// Seconds since start.
    pub uptime_s: u64,
    /// The latest alert's seq: subscribe with `since_seq` a little below
    /// it to see the recent past.
    pub alert_seq: u64,
    /// A follower's delay behind the leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,
    /// With Redis: whether it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Up>,
}

/// `POST /v1/admin/promote`: this server's role afterwards.
#[derive(Serialize, ToSchema)]
pub struct Promoted {
    /// `leader`.
    pub role: Role,
}

/// `GET /map/config.json`: what the page is told about the deployment.
#[derive(Serialize, ToSchema)]
pub struct MapConfig {
    /// An XYZ tile URL, or null for the built-in offline coast.
    pub tile_url: Option<String>,
    /// The tiles' attribution.
    pub tile_attribution: String,
}

/// The id in a path: a unit's, a fence's or a rule's.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The id (1 to 200 characters).
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{Agency, Status};

    #[test]
    fn agency_and_status_names_are_the_engines() {
        let names = |v: serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let agencies = [
            AgencyName::Police,
            AgencyName::Fire,
            AgencyName::Ambulance,
            AgencyName::Coastguard,
            AgencyName::Other,
        ];
        let mut ours = names(serde_json::json!(agencies));
        let mut theirs: Vec<String> = Agency::ALL.iter().map(|a| a.as_str().to_owned()).collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
        let statuses = [
            StatusName::Available,
            StatusName::Enroute,
            StatusName::AtScene,
            StatusName::Unavailable,
            StatusName::Emergency,
            StatusName::Unknown,
        ];
        for (ours, text) in statuses.iter().zip(names(serde_json::json!(statuses))) {
            let theirs = Status::parse(&text).map(Status::as_str);
            assert_eq!(theirs.ok(), Some(text.as_str()), "{}", serde_json::json!(ours));
        }
    }
}
