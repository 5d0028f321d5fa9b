//! `GET /v1/export` and `GET /v1/export/h3`: history for analysts.
//!
//! Points are streamed a minute of history at a time: the minute's records
//! are copied out of the engine a bounded slice at a time, each slice by
//! the writer as a step of bulk work, then sorted and formatted on the
//! export's own low-priority thread, so neither a large window nor a busy
//! minute holds up the fixes, and memory holds one minute however large
//! the window. The export's thread never holds the engine itself (see
//! [`on_writer`]).
//! `shape=tracks` builds one LineString per unit and so holds one coordinate
//! pair per fix; the H3 aggregate holds one counter per cell.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bluelight_engine::{Agency, Engine, HistoryCursor, HistoryQuery, HistoryRecord, Shape, UnitSlot};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::auth::{Caller, Denied, Scope};
use crate::body_encoding::{BodyOut, Encoding};
use crate::state::AppState;

const MINUTE_MS: i64 = 60_000;

/// Records read from history per step on the writer: about a quarter of a
/// millisecond, the writer's default bulk slice.
const SLICE: usize = 16_384;

/// Records formatted into one piece of the body.
const PIECE: usize = 65_536;

#[derive(Clone, Copy, PartialEq)]
enum Format {
    GeoJson,
    Csv,
    Ndjson,
}

fn bad(message: impl Into<String>) -> Response {
    crate::http::error(StatusCode::BAD_REQUEST, message)
}

/// The parsed query.
struct Request {
    from_ms: i64,
    to_ms: i64,
    area: Option<Shape>,
    units: Option<Vec<String>>,
    agencies: Option<Vec<Agency>>,
    format: Format,
}

/// What history: the query parameters both exports share.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// The window's start, ms since the Unix epoch.
    #[param(value_type = i64, required = true)]
    pub from_ms: Option<String>,
    /// The window's end (inclusive), ms since the Unix epoch.
    #[param(value_type = i64, required = true)]
    pub to_ms: Option<String>,
    /// `w,s,e,n` in degrees.
    pub bbox: Option<String>,
    /// Unit ids, comma-separated.
    pub units: Option<String>,
    /// Agencies, comma-separated.
    pub agency: Option<String>,
    /// The token, for a browser's download link.
    pub token: Option<String>,
}

fn parse(q: &HistoryParams, format: Option<&str>, who: Caller) -> Result<Request, String> {
    let time = |k: &str, v: Option<&str>| -> Result<i64, String> {
        v.ok_or(format!("{k} is required"))?
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("{k} must be a whole number of milliseconds since the Unix epoch"))
    };
    let (from_ms, to_ms) = (
        time("from_ms", q.from_ms.as_deref())?,
        time("to_ms", q.to_ms.as_deref())?,
    );
    if to_ms < from_ms {
        return Err("to_ms must not be before from_ms".into());
    }
    let area = match q.bbox.as_deref() {
        Some(b) => {
            let v: Vec<f64> = b
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| "bbox must be four numbers: west,south,east,north")?;
            if v.len() != 4 {
                return Err("bbox must be four numbers: west,south,east,north".into());
            }
            Some(Shape::bbox([v[0], v[1], v[2], v[3]]).map_err(|e| format!("bbox: {e}"))?)
        }
        None => None,
    };
    let list = |v: Option<&str>| {
        v.map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
    };
    let mut agencies = list(q.agency.as_deref())
        .map(|l| l.iter().map(|a| Agency::parse(a)).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|e| format!("agency: {e}"))?;
    if let Some(mine) = who.agencies {
        let allowed: Vec<Agency> = Agency::ALL
            .into_iter()
            .filter(|a| mine & (1 << *a as u8) != 0)
            .collect();
        agencies = Some(agencies.map_or(allowed.clone(), |l| {
            l.into_iter().filter(|a| allowed.contains(a)).collect()
        }));
    }
    let format = match format {
        None | Some("geojson") => Format::GeoJson,
        Some("csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        Some(_) => return Err("format must be geojson, csv or ndjson".into()),
    };
    Ok(Request {
        from_ms,
        to_ms,
        area,
        units: list(q.units.as_deref()),
        agencies,
        format,
    })
}

fn query(e: &Engine, r: &Request, from_ms: i64, to_ms: i64) -> HistoryQuery {
    HistoryQuery {
        from_ms,
        to_ms,
        area: r.area.clone(),
        // Unknown ids match nothing (an empty list, not "all").
        units: r
            .units
            .as_ref()
            .map(|ids| ids.iter().filter_map(|id| e.find_unit(id)).collect()),
        agencies: r.agencies.clone(),
    }
}

/// Appends `s` as a CSV field, quoted when it holds a comma, a quote or a
/// line break.
fn push_csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Units' ids and agencies, copied out of the engine as an export meets
/// them, so rows are formatted without holding it.
type Names = HashMap<UnitSlot, (Arc<str>, Option<Agency>)>;

fn name_of(names: &Names, u: UnitSlot) -> (&str, Option<Agency>) {
    names.get(&u).map_or(("", None), |(id, a)| (id, *a))
}

/// Text written a row at a time with the numbers as serde_json writes
/// them (ryu, itoa): formatting through `serde_json::Value`s ran at about
/// 35 MB/s, and an analyst's full export took a core for half a minute.
#[derive(Default)]
struct RowWriter {
    f64s: ryu::Buffer,
    ints: itoa::Buffer,
}

impl RowWriter {
    /// One fix as a unit-object-like JSON object, keys in order (the text
    /// serde_json gives the same object).
    fn object(&mut self, out: &mut String, id: &str, agency: Option<Agency>, r: &HistoryRecord) {
        let f = &r.fix;
        out.push('{');
        if f.accuracy_m.is_finite() {
            out.push_str("\"accuracy_m\":");
            out.push_str(self.f64s.format_finite(f.accuracy_m));
            out.push(',');
        }
        if let Some(a) = agency {
            out.push_str("\"agency\":\"");
            out.push_str(a.as_str());
            out.push_str("\",");
        }
        if f.heading_deg.is_finite() {
            out.push_str("\"heading_deg\":");
            out.push_str(self.f64s.format_finite(f.heading_deg));
            out.push(',');
        }
        out.push_str("\"id\":");
        crate::json::push_json_str(out, id);
        out.push_str(",\"lat\":");
        out.push_str(self.f64s.format(f.lat));
        out.push_str(",\"lon\":");
        out.push_str(self.f64s.format(f.lon));
        if f.speed_mps.is_finite() {
            out.push_str(",\"speed_mps\":");
            out.push_str(self.f64s.format_finite(f.speed_mps));
        }
        out.push_str(",\"status\":\"");
        out.push_str(f.status.as_str());
        out.push_str("\",\"time_ms\":");
        out.push_str(self.ints.format(f.time_ms));
        out.push('}');
    }

    fn feature(&mut self, out: &mut String, id: &str, agency: Option<Agency>, r: &HistoryRecord) {
        out.push_str("{\"geometry\":{\"coordinates\":[");
        out.push_str(self.f64s.format(r.fix.lon));
        out.push(',');
        out.push_str(self.f64s.format(r.fix.lat));
        out.push_str("],\"type\":\"Point\"},\"properties\":");
        self.object(out, id, agency, r);
        out.push_str(",\"type\":\"Feature\"}");
    }

    fn csv_row(&mut self, out: &mut String, id: &str, agency: Option<Agency>, r: &HistoryRecord) {
        let f = &r.fix;
        push_csv_field(out, id);
        out.push(',');
        out.push_str(self.ints.format(f.time_ms));
        out.push(',');
        out.push_str(self.f64s.format(f.lat));
        out.push(',');
        out.push_str(self.f64s.format(f.lon));
        for x in [f.speed_mps, f.heading_deg, f.accuracy_m] {
            out.push(',');
            if x.is_finite() {
                out.push_str(self.f64s.format_finite(x));
            }
        }
        out.push(',');
        out.push_str(f.status.as_str());
        out.push(',');
        out.push_str(agency.map_or("", Agency::as_str));
        out.push('\n');
    }
}

fn format_chunk(names: &Names, records: &[HistoryRecord], format: Format, first: &mut bool) -> String {
    let mut out = String::with_capacity(records.len() * 200);
    let mut w = RowWriter::default();
    for r in records {
        let (id, agency) = name_of(names, r.unit);
        match format {
            Format::GeoJson => {
                if !*first {
                    out.push(',');
                }
                w.feature(&mut out, id, agency, r);
            }
            Format::Ndjson => {
                w.object(&mut out, id, agency, r);
                out.push('\n');
            }
            Format::Csv => w.csv_row(&mut out, id, agency, r),
        }
        *first = false;
    }
    out
}

/// Authorises an export (scope `export`) and parses its query, with the
/// caller's agency limit folded in.
fn authorised(
    s: &AppState,
    headers: &HeaderMap,
    q: &HistoryParams,
    format: Option<&str>,
) -> Result<Request, Denied> {
    let who = s.tokens.check(headers, q.token.as_deref(), Some(Scope::Export))?;
    parse(q, format, who).map_err(|e| Denied(StatusCode::BAD_REQUEST, e))
}

/// `GET /v1/export`'s own parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `geojson` (default), `csv` or `ndjson`.
    #[param(value_type = Option<String>, pattern = "^(geojson|csv|ndjson)$")]
    pub format: Option<String>,
    /// `points` (default: one row a fix) or `tracks` (one LineString a unit).
    #[param(value_type = Option<String>, pattern = "^(points|tracks)$")]
    pub shape: Option<String>,
    /// Documented as [`HistoryParams`] beside this.
    #[serde(flatten)]
    #[param(ignore)]
    pub history: HistoryParams,
}

/// `GET /v1/export`.
#[utoipa::path(get, path = "/v1/export", tag = "export", params(ExportParams, HistoryParams),
    description = "History within retention, streamed: a minute of it at a time, so a large window costs no more memory than a busy minute. gzip-compressed (`Content-Encoding: gzip`) when the request's `Accept-Encoding` accepts it.",
    responses(
        (status = 200, description = "The fixes (or tracks), oldest first", content(
            (Object = "application/geo+json"),
            (String = "text/csv"),
            (String = "application/x-ndjson"),
        )),
        (status = 400, description = "A parameter is wrong: the reason names it", body = crate::openapi::ErrorReply),
        crate::openapi::Refused,
        (status = 503, description = "The server is stopping", body = crate::openapi::ErrorReply),
    ),
    security(("bearer" = []), ("token_query" = [])))]
pub async fn export(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ExportParams>,
) -> Response {
    let r = match authorised(&s, &headers, &q.history, q.format.as_deref()) {
        Ok(r) => r,
        Err(denied) => return denied.into_response(),
    };
    let tracks = match q.shape.as_deref() {
        None | Some("points") => false,
        Some("tracks") => true,
        Some(_) => return bad("shape must be points or tracks"),
    };
    let encoding = Encoding::accepted(&headers);
    if tracks {
        return export_tracks(s, r, encoding).await;
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(4);
    let content_type = match r.format {
        Format::GeoJson => "application/geo+json",
        Format::Csv => "text/csv",
        Format::Ndjson => "application/x-ndjson",
    };
    // An upper bound of the rows to come, for clients' progress bars.
    let most = s.engine.lock().history_count_upper_bound(r.from_ms, r.to_ms);
    let state = s.clone();
    let started = export_thread(move || {
        let mut body = BodyOut::new(tx, encoding);
        let head = match r.format {
            Format::GeoJson => "{\"type\":\"FeatureCollection\",\"features\":[".to_owned(),
            Format::Csv => "id,time_ms,lat,lon,speed_mps,heading_deg,accuracy_m,status,agency\n".to_owned(),
            Format::Ndjson => String::new(),
        };
        if !body.send(head.into_bytes()) {
            return;
        }
        let mut first = true;
        // Only the span history holds: a window of years costs nothing extra.
        let Some(span) = on_writer(&state, |e| e.history_bounds()) else {
            return;
        };
        let (mut at, to) = match span {
            Some((lo, hi)) => (r.from_ms.max(lo), r.to_ms.min(hi)),
            None => (1, 0),
        };
        let r = Arc::new(r);
        let mut names = Names::new();
        let mut records = Vec::new();
        while at <= to {
            let end = at.saturating_add(MINUTE_MS - 1).min(to);
            // The minute's records, copied out a slice at a time, never
            // held for the minute's sorting or formatting (at `national`
            // a minute is 3.6M fixes: seconds of formatting every fix
            // used to wait for).
            records.clear();
            if !for_each_slice(&state, &r, at, end, |slice| records.extend_from_slice(slice)) {
                return;
            }
            // Nearly in order already (fixes arrive about in time order).
            records.sort_by_key(|x| (x.fix.time_ms, x.unit));
            for rows in records.chunks(PIECE) {
                if !learn_all_names(&state, rows, &mut names) {
                    return;
                }
                let text = format_chunk(&names, rows, r.format, &mut first);
                if !body.send(text.into()) {
                    return;
                }
            }
            at = end.saturating_add(1);
            if end == i64::MAX {
                break;
            }
        }
        if r.format == Format::GeoJson && !body.send(b"]}".to_vec()) {
            return;
        }
        body.finish();
    });
    if started.is_none() {
        return cannot_start();
    }
    let stream = tokio_stream_from(rx);
    let mut reply = reply(content_type, encoding, Body::from_stream(stream));
    reply.headers_mut().insert(
        header::HeaderName::from_static(FIXES_AT_MOST),
        HeaderValue::from(most),
    );
    reply
}

/// A 200 reply of `body`, encoded as `encoding` says (which depends on
/// the request's `Accept-Encoding`, as caches must know).
fn reply(content_type: &'static str, encoding: Encoding, body: Body) -> Response {
    let mut reply = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = reply.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some((name, value)) = encoding.header() {
        headers.insert(name, value);
    }
    reply
}

/// Response header of a points export: at most this many fixes follow (the
/// fixes of the window's minutes, before the area, unit and agency filters).
pub const FIXES_AT_MOST: &str = "x-bluelight-fixes-at-most";

/// Runs `step` on the writer, with the engine in hand, as one step of
/// bulk work (between chunks of fixes, taking turns with maps' feed
/// copies), and waits for its answer; `None` when the server stops first.
///
/// An export's thread runs below the writer's priority and never holds
/// the engine itself: holding it, it could lose its CPU to anything else,
/// and the writer, with every fix and alert behind it, would wait until
/// the kernel gave it one back (the maps' feed copies follow the same
/// rule). Each step must be bounded (a [`SLICE`] of history, a [`NAME_STEP`] of
/// names). Call it only from an export's thread ([`export_thread`]).
fn on_writer<T: Send + 'static>(s: &AppState, step: impl FnOnce(&Engine) -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A bulk task is called until it says it is done: this one is done
    // at its first call.
    let mut once = Some((step, tx));
    let queued = s.tasks.bulk_blocking(move |e| {
        if let Some((step, tx)) = once.take() {
            let _ = tx.send(step(e));
        }
        true
    });
    if !queued {
        return None;
    }
    rx.blocking_recv().ok()
}

/// Calls `f` with the records of `r` from `from_ms` to `to_ms`, unsorted,
/// a slice at a time, each copied out on the writer into a buffer this
/// thread keeps (so its pages are faulted in here, not on the writer).
/// False when the server stops first.
fn for_each_slice(
    s: &AppState,
    r: &Arc<Request>,
    from_ms: i64,
    to_ms: i64,
    mut f: impl FnMut(&[HistoryRecord]),
) -> bool {
    let r = r.clone();
    let Some(q) = on_writer(s, move |e| Arc::new(query(e, &r, from_ms, to_ms))) else {
        return false;
    };
    let mut cursor = HistoryCursor::new();
    let mut slice = Vec::with_capacity(SLICE);
    loop {
        let q = q.clone();
        let mut out = std::mem::take(&mut slice);
        let copied = on_writer(s, move |e| {
            out.clear();
            let done = e.history_slice(&q, &mut cursor, SLICE, &mut out);
            (cursor, out, done)
        });
        let Some((next, filled, done)) = copied else {
            return false;
        };
        f(&filled);
        if done {
            return true;
        }
        (cursor, slice) = (next, filled);
    }
}

/// Units' ids and agencies copied out per step on the writer: about a
/// third of a millisecond. A minute of a national fleet names 300,000
/// units, and learning a 64k-record piece's names in one go (an id
/// copied and a map insert each) held the writer for tens of
/// milliseconds, which every alert behind it waited for.
const NAME_STEP: usize = 4096;

/// Adds the units of `records` that `names` lacks: which they are is found
/// without the engine, and their ids are copied out on the writer
/// [`NAME_STEP`] at a step. False when the server stops first.
fn learn_all_names(s: &AppState, records: &[HistoryRecord], names: &mut Names) -> bool {
    let mut unknown: Vec<UnitSlot> = records
        .iter()
        .map(|r| r.unit)
        .filter(|u| !names.contains_key(u))
        .collect();
    unknown.sort_unstable_by_key(|u| u.0);
    unknown.dedup();
    for part in unknown.chunks(NAME_STEP) {
        let part = part.to_vec();
        let copied = on_writer(s, move |e| {
            let mut ids = String::with_capacity(part.len() * 16);
            let found: Vec<(UnitSlot, usize, Option<Agency>)> = part
                .iter()
                .map(|&u| {
                    ids.push_str(e.unit_id(u));
                    (u, ids.len(), e.unit_agency(u))
                })
                .collect();
            (ids, found)
        });
        let Some((ids, found)) = copied else {
            return false;
        };
        let mut start = 0;
        for (u, end, agency) in found {
            names.insert(u, (Arc::from(&ids[start..end]), agency));
            start = end;
        }
    }
    true
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn export_tracks(s: Arc<AppState>, r: Request, encoding: Encoding) -> Response {
    if r.format != Format::GeoJson {
        return bad("shape=tracks is GeoJSON only");
    }
    // The whole window's fixes are read (tracks hold one position per fix),
    // a slice at a time, and put in order off the runtime.
    let Some(built) = export_thread(move || {
        let r = Arc::new(r);
        let mut records = Vec::new();
        if !for_each_slice(&s, &r, r.from_ms, r.to_ms, |slice| {
            records.extend_from_slice(slice)
        }) {
            return None;
        }
        records.sort_by_key(|x| (x.unit, x.fix.time_ms));
        let mut names = Names::new();
        if !learn_all_names(&s, &records, &mut names) {
            return None;
        }
        let mut features: Vec<Value> = records
            .chunk_by(|a, b| a.unit == b.unit)
            .map(|fixes| {
                let (id, agency) = name_of(&names, fixes[0].unit);
                let mut coords: Vec<[f64; 2]> = fixes.iter().map(|x| [x.fix.lon, x.fix.lat]).collect();
                // A LineString needs two positions: a lone fix repeats itself.
                if coords.len() == 1 {
                    coords.push(coords[0]);
                }
                json!({"type":"Feature","id":id,"geometry":{"type":"LineString","coordinates":coords},
                       "properties":{"id":id,"fixes":coords.len(),"agency":agency.map(|a| a.as_str())}})
            })
            .collect();
        features.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        // Written out (and compressed) here, not on the runtime.
        let text = json!({"type":"FeatureCollection","features":features}).to_string();
        Some(encoding.whole(text.into_bytes()))
    }) else {
        return cannot_start();
    };
    match built.await {
        Ok(Some(body)) => reply("application/geo+json", encoding, Body::from(body)),
        Ok(None) | Err(_) => stopping(),
    }
}

/// Runs `work` on a thread of its own under `SCHED_IDLE`
/// ([`bluelight_ingest::priority::idle_this_thread`]): an export's sorting,
/// naming and formatting take a core for seconds, and on a busy machine
/// the writer, the sessions and the devices' connections must have it the
/// moment they wake. At `national` on two cores the export's window moved
/// the alerts' p99 by about 5 ms with this thread at `nice` 10, and by
/// about 1 ms under `SCHED_IDLE` (`benches/README.md`). `None` when no
/// thread can be started.
fn export_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<tokio::sync::oneshot::Receiver<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bluelight-export".into())
        .spawn(move || {
            bluelight_ingest::priority::idle_this_thread();
            let _ = tx.send(work());
        })
        .inspect_err(|e| tracing::warn!(error = %e, "cannot start an export's thread"))
        .ok()?;
    Some(rx)
}

fn cannot_start() -> Response {
    crate::http::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server cannot start a thread for the export now: try again",
    )
}

fn stopping() -> Response {
    crate::http::error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
}

/// `GET /v1/export/h3`'s own parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportH3Params {
    /// The H3 resolution of the cells, 0 to 15.
    #[param(value_type = u8, required = true, minimum = 0, maximum = 15)]
    pub res: Option<String>,
    /// `geojson` (default: cell polygons) or `csv`.
    #[param(value_type = Option<String>, pattern = "^(geojson|csv)$")]
    pub format: Option<String>,
    /// Documented as [`HistoryParams`] beside this.
    #[serde(flatten)]
    #[param(ignore)]
    pub history: HistoryParams,
}

/// `GET /v1/export/h3`: fix counts and distinct units per cell.
#[utoipa::path(get, path = "/v1/export/h3", tag = "export", params(ExportH3Params, HistoryParams),
    description = "Fix counts and distinct units per H3 cell over a window (heatmaps). gzip-compressed (`Content-Encoding: gzip`) when the request's `Accept-Encoding` accepts it.",
    responses(
        (status = 200, description = "One row or Feature a cell", content(
            (Object = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A parameter is wrong: the reason names it", body = crate::openapi::ErrorReply),
        crate::openapi::Refused,
        (status = 503, description = "The server is stopping", body = crate::openapi::ErrorReply),
    ),
    security(("bearer" = []), ("token_query" = [])))]
pub async fn export_h3(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ExportH3Params>,
) -> Response {
    if q.format.as_deref() == Some("ndjson") {
        return bad("format must be geojson or csv");
    }
    let r = match authorised(&s, &headers, &q.history, q.format.as_deref()) {
        Ok(r) => r,
        Err(denied) => return denied.into_response(),
    };
    let encoding = Encoding::accepted(&headers);
    let res = match q.res.as_deref().map(|v| {
        v.parse::<u8>()
            .ok()
            .and_then(|r| h3o::Resolution::try_from(r).ok())
    }) {
        Some(Some(res)) => res,
        _ => return bad("res must be an H3 resolution 0..=15"),
    };
    // Read a slice at a time and counted off the runtime: an H3 lookup a
    // fix is seconds for a full retention, none of it holding the engine.
    let Some(counted) = export_thread(move || {
        let r = Arc::new(r);
        let mut cells: HashMap<h3o::CellIndex, (u64, HashSet<UnitSlot>)> = HashMap::new();
        let read = for_each_slice(&s, &r, r.from_ms, r.to_ms, |slice| {
            for rec in slice {
                if let Ok(ll) = h3o::LatLng::new(rec.fix.lat, rec.fix.lon) {
                    let c = cells.entry(ll.to_cell(res)).or_default();
                    c.0 += 1;
                    c.1.insert(rec.unit);
                }
            }
        });
        if !read {
            return None;
        }
        let mut rows: Vec<(h3o::CellIndex, u64, usize)> =
            cells.into_iter().map(|(c, (n, u))| (c, n, u.len())).collect();
        rows.sort_by_key(|r| u64::from(r.0));
        // Written out (and compressed) here, not on the runtime: at a fine
        // resolution a cell's boundary is a few microseconds, and there
        // may be a cell a fix.
        let (content_type, text) = match r.format {
            Format::Csv => {
                let mut out = String::from("h3,fixes,units\n");
                for (c, n, u) in rows {
                    let _ = writeln!(out, "{c},{n},{u}");
                }
                ("text/csv", out)
            }
            _ => {
                let features: Vec<Value> = rows
                    .iter()
                    .map(|(c, n, u)| {
                        let mut ring: Vec<[f64; 2]> = c.boundary().iter().map(|v| [v.lng(), v.lat()]).collect();
                        if let Some(&first) = ring.first() {
                            ring.push(first);
                        }
                        json!({"type":"Feature","id":c.to_string(),"geometry":{"type":"Polygon","coordinates":[ring]},
                               "properties":{"h3":c.to_string(),"fixes":n,"units":u}})
                    })
                    .collect();
                let fc = json!({"type":"FeatureCollection","features":features});
                ("application/json", fc.to_string())
            }
        };
        Some((content_type, encoding.whole(text.into_bytes())))
    }) else {
        return cannot_start();
    };
    match counted.await {
        Ok(Some((content_type, body))) => reply(content_type, encoding, Body::from(body)),
        Ok(None) | Err(_) => stopping(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{Fix, Status};

    /// A fix as serde_json writes it from a built object: the text the
    /// row writer must give, byte for byte.
    fn as_values(id: &str, agency: Option<Agency>, r: &HistoryRecord) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("id".into(), json!(id));
        o.insert("time_ms".into(), json!(r.fix.time_ms));
        o.insert("lat".into(), json!(r.fix.lat));
        o.insert("lon".into(), json!(r.fix.lon));
        for (k, x) in [
            ("speed_mps", r.fix.speed_mps),
            ("heading_deg", r.fix.heading_deg),
            ("accuracy_m", r.fix.accuracy_m),
        ] {
            if !x.is_nan() {
                o.insert(k.into(), json!(x));
            }
        }
        if let Some(a) = agency {
            o.insert("agency".into(), json!(a.as_str()));
        }
        o.insert("status".into(), json!(r.fix.status.as_str()));
        Value::Object(o)
    }

    fn records() -> Vec<(&'static str, Option<Agency>, HistoryRecord)> {
        let cases: [(f64, f64, f32, f32, f32); 5] = [
            (0.0, 0.0, 0.0, 0.0, 1.0),
            (-89.999_999_999, 179.999_999_999_9, 1e-7, 359.9, 1e7),
            (1e-7, -1e-12, 3.0, 90.0, 0.1),
            (51.5, -0.12, f32::NAN, 12.25, f32::NAN),
            (90.0, -180.0, 250.5, f32::NAN, 1.5e-3),
        ];
        let ids = ["AMB-1", "POL,\"7\"", "line\nbreak", "x\\y", ""];
        let agencies = [
            Some(Agency::Ambulance),
            Some(Agency::Police),
            None,
            Some(Agency::Coastguard),
            None,
        ];
        cases
            .into_iter()
            .enumerate()
            .map(|(n, (lat, lon, speed, heading, accuracy))| {
                let mut fix = Fix::at(1_763_726_400_000 + n as i64, lat, lon);
                (fix.speed_mps, fix.heading_deg, fix.accuracy_m) = (speed, heading, accuracy);
                fix.status = if n % 2 == 0 {
                    Status::Available
                } else {
                    Status::Unknown
                };
                (
                    ids[n],
                    agencies[n],
                    HistoryRecord {
                        unit: UnitSlot(0),
                        fix,
                    },
                )
            })
            .collect()
    }

    /// The objects serde_json would build, read back from the written text:
    /// the same keys and values, except that speed, heading and accuracy
    /// (f32s) are written as the shortest text of the f32, as live unit
    /// objects are, where serde_json widens them (359.9 and not
    /// 359.8999938964844).
    fn assert_same_object(text: &str, want: &Value) {
        let got: Value = serde_json::from_str(text).expect("valid JSON");
        let (Some(got), Some(want)) = (got.as_object(), want.as_object()) else {
            panic!("objects: {text}");
        };
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{text}"
        );
        for (k, v) in want {
            if ["speed_mps", "heading_deg", "accuracy_m"].contains(&k.as_str()) {
                assert_eq!(
                    got[k].as_f64().map(|x| x as f32),
                    v.as_f64().map(|x| x as f32),
                    "{k}: {text}"
                );
            } else {
                assert_eq!(&got[k], v, "{k}: {text}");
            }
        }
    }

    #[test]
    fn written_rows_are_what_serde_json_writes() {
        let mut w = RowWriter::default();
        for (id, agency, r) in records() {
            let want = as_values(id, agency, &r);
            let mut text = String::new();
            w.object(&mut text, id, agency, &r);
            assert_same_object(&text, &want);
            text.clear();
            w.feature(&mut text, id, agency, &r);
            let feature: Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(feature["type"], "Feature", "{text}");
            assert_eq!(
                feature["geometry"],
                json!({"type":"Point","coordinates":[r.fix.lon, r.fix.lat]}),
                "{text}"
            );
            assert_same_object(&feature["properties"].to_string(), &want);
        }
    }

    #[test]
    fn csv_rows_quote_ids_and_read_back_exactly() {
        let mut w = RowWriter::default();
        for (id, agency, r) in records() {
            let mut text = String::new();
            w.csv_row(&mut text, id, agency, &r);
            assert!(text.ends_with('\n'), "{text:?}");
            // The id is quoted when it must be; the eight fields after it
            // have no commas of their own.
            let cut = text.trim_end_matches('\n').rsplitn(9, ',').collect::<Vec<_>>();
            let [
                agency_text,
                status,
                accuracy,
                heading,
                speed,
                lon,
                lat,
                time,
                first,
            ] = cut[..]
            else {
                panic!("nine fields: {text:?}");
            };
            let quoted = id.contains([',', '"', '\n']);
            assert_eq!(
                first,
                if quoted {
                    format!("\"{}\"", id.replace('"', "\"\""))
                } else {
                    id.to_owned()
                }
            );
            assert_eq!(time.parse::<i64>().ok(), Some(r.fix.time_ms));
            assert_eq!(lat.parse::<f64>().ok(), Some(r.fix.lat));
            assert_eq!(lon.parse::<f64>().ok(), Some(r.fix.lon));
            for (t, x) in [
                (speed, r.fix.speed_mps),
                (heading, r.fix.heading_deg),
                (accuracy, r.fix.accuracy_m),
            ] {
                if x.is_nan() {
                    assert_eq!(t, "");
                } else {
                    assert_eq!(t.parse::<f32>().ok(), Some(x));
                }
            }
            assert_eq!(status, r.fix.status.as_str());
            assert_eq!(agency_text, agency.map_or("", Agency::as_str));
        }
    }
}
