//! The bodies of bluelight's fuzz targets, one function per target, so the
//! same code runs under libFuzzer (`fuzz_targets/`, through `cargo fuzz`)
//! and over the committed seeds and found crashes as a plain test
//! (`benches/tests/fuzz_seeds.rs`, which compiles this file as a module).
//!
//! Each body takes bytes as a device or a client would send them, runs
//! them through what the server runs them through (the decoder, then the
//! writer's [`Applier`] into a real [`Engine`]; or the parser, then the
//! engine change), and lets a panic, an overflow (debug assertions are on
//! under `cargo fuzz`) or a hang be the finding. Refusals are fine: they
//! are the decoders' answers to bad input.
//!
//! Time is fixed ([`NOW_MS`]) so a finding replays the same way; the engine
//! is fresh for every input, so a finding needs nothing before it.
//!
//! # Layout
//! * one `pub fn` per target, named as the target;
//! * [`apply`]: a batch through the writer's applier into an engine, then a
//!   clock tick and a nearest query over what it holds.

use std::sync::Arc;

use bluelight_engine::{Engine, EngineConfig, Filter, NearestQuery, Outputs};
use bluelight_ingest::batch::IngestBatch;
use bluelight_ingest::definitions::{FenceDef, RuleDef, area_from_json, filter_from_json};
use bluelight_ingest::nmea::NmeaSession;
use bluelight_ingest::queue::Command;
use bluelight_ingest::tak::TakDecoder;
use bluelight_ingest::validate::{IngestCounters, ValidationConfig};
use bluelight_ingest::writer::Applier;
use bluelight_ingest::{cot, decode, lip, tak, transport};
use serde_json::Value;

/// The server's clock for every input: 2025-11-21T12:00:00Z.
pub const NOW_MS: i64 = 1_763_726_400_000;

/// The largest frame a device listener takes (the server's default).
const MAX_FRAME: usize = 4 << 20;

/// An engine as the server builds it, but refusing covers past 50,000
/// cells: a world-sized fence takes seconds to cover, and a fuzzer that
/// spends seconds an input finds nothing. The cap's refusal path is what
/// large areas exercise.
fn engine() -> Box<Engine> {
    let cfg = EngineConfig {
        max_cover_cells: 50_000,
        ..EngineConfig::default()
    };
    Box::new(Engine::new(cfg).expect("the default configuration is valid"))
}

fn applier() -> Applier {
    Applier::new(
        Arc::new(ValidationConfig::default()),
        Arc::new(IngestCounters::default()),
        64,
    )
}

/// Points every change is tried against: a town, both sides of the
/// antimeridian, both poles, the equator's crossing of the prime meridian's
/// neighbour.
const PROBES: [(f64, f64); 6] = [
    (50.9097, -1.4044),
    (-16.0, 179.9999),
    (-16.0, -179.9999),
    (90.0, 0.0),
    (-90.0, 45.0),
    (0.0001, 0.0001),
];

/// Applies `batch` as the writer does, then ticks the clock and asks for
/// the nearest units to each probe: the decoded values go everywhere a
/// real fix's would.
pub fn apply(engine: &mut Box<Engine>, batch: &IngestBatch) {
    let mut applier = applier();
    applier.apply_batch(engine, batch, |_, _, _| {});
    let mut out = Outputs::default();
    engine.tick(NOW_MS + 60_000, &mut out);
    for (lat, lon) in PROBES {
        let q = NearestQuery {
            lat,
            lon,
            k: 5,
            filter: Filter::all(),
            max_distance_m: None,
            include_stale: true,
        };
        let _ = engine.nearest(&q, NOW_MS);
    }
}

/// A FlatBuffers `FixBatch` (UDP datagram, TCP frame, WebSocket binary
/// frame, HTTP body).
pub fn fix_flatbuffers(data: &[u8]) {
    let mut batch = IngestBatch::default();
    if decode::decode_flatbuffers(data, &ValidationConfig::default(), NOW_MS, &mut batch).is_ok() {
        apply(&mut engine(), &batch);
    }
}

/// A JSON batch `{"fixes":[...]}` (WebSocket text frame, HTTP body).
pub fn fix_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut batch = IngestBatch::default();
    if decode::decode_json(text, &ValidationConfig::default(), NOW_MS, &mut batch).is_ok() {
        apply(&mut engine(), &batch);
    }
}

/// A CoT XML stream as `--cot-tcp` reads it: split into events, each
/// decoded (a control event is passed over, as the listener does).
pub fn cot_xml(data: &[u8]) {
    let v = ValidationConfig::default();
    let mut batch = IngestBatch::default();
    let mut index = 0;
    cot::split_events(data, |event| {
        if let Ok(xml) = std::str::from_utf8(event) {
            let _ = cot::decode_cot(xml, index, &v, NOW_MS, &mut batch);
        }
        index += 1;
    });
    apply(&mut engine(), &batch);
}

/// TAK protocol v1: the bytes as a stream (`0xbf`, varint length,
/// message), as one mesh datagram, and as one bare message.
pub fn tak_v1(data: &[u8]) {
    let v = ValidationConfig::default();
    let mut batch = IngestBatch::default();
    let mut decoder = TakDecoder::new();
    let mut index = 0;
    let _ = tak::split_stream(data, MAX_FRAME, |message| {
        let _ = decoder.decode(message, index, &v, NOW_MS, &mut batch);
        index += 1;
    });
    if let Some(payload) = tak::mesh_payload(data) {
        let _ = decoder.decode(payload, index, &v, NOW_MS, &mut batch);
    }
    let _ = decoder.decode(data, index + 1, &v, NOW_MS, &mut batch);
    apply(&mut engine(), &batch);
}

/// NMEA 0183 as `--nmea-tcp` reads one connection's lines, and as
/// `--nmea-udp` reads one datagram.
pub fn nmea(data: &[u8]) {
    let v = ValidationConfig::default();
    let mut batch = IngestBatch::default();
    for mut session in [NmeaSession::new(), NmeaSession::whole()] {
        for (i, line) in transport::split_lines(data).enumerate() {
            let _ = session.line(line, i as u32, &v, NOW_MS, &mut batch);
        }
        session.flush(&v, NOW_MS, &mut batch);
    }
    apply(&mut engine(), &batch);
}

/// A TETRA LIP datagram as `--lip-udp` reads it (ISSI, then a PDU).
pub fn lip(data: &[u8]) {
    let mut batch = IngestBatch::default();
    let _ = lip::decode_lip(data, 0, &ValidationConfig::default(), NOW_MS, &mut batch);
    apply(&mut engine(), &batch);
}

/// A `/v1/ws` request's area and filter as a positions subscription takes
/// them: parsed, covered, installed as a feed in an engine holding units
/// at the probes, then moved past and removed.
pub fn ws_request(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut e = engine();
    let mut batch = IngestBatch::default();
    probe_fixes(&mut batch, NOW_MS - 10_000);
    apply(&mut e, &batch);
    let Some(Ok(shape)) = v.get("area").map(|a| area_from_json(&e, a)) else {
        return;
    };
    let filter = match v.get("filter") {
        Some(f) => match filter_from_json(&mut e, f) {
            Ok(f) => f,
            Err(_) => return,
        },
        None => Filter::all(),
    };
    let Ok(cover) = bluelight_engine::Cover::compute_feed(&shape, e.config()) else {
        return;
    };
    let Ok((feed, _)) = e.subscribe_feed_with_cover(shape, Some(&cover), filter, NOW_MS) else {
        return;
    };
    batch.clear();
    probe_fixes(&mut batch, NOW_MS - 5_000);
    apply(&mut e, &batch);
    e.unsubscribe_feed(feed)
        .expect("a feed just subscribed can be removed");
}

/// A fence (`PUT /v1/fences/{id}`) or a proximity rule (`PUT
/// /v1/rules/{id}`) body, put into an engine as the writer does, with
/// units at the probes before and after, then removed.
pub fn definitions(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut e = engine();
    let mut applier = applier();
    let mut batch = IngestBatch::default();
    probe_fixes(&mut batch, NOW_MS - 10_000);
    apply(&mut e, &batch);
    let (put, remove) = if let Ok(def) = FenceDef::parse("f", text) {
        let def = def.covered(e.config());
        (
            Command::PutFence {
                def: Arc::new(def),
                now_ms: NOW_MS,
            },
            Command::RemoveFence("f".into()),
        )
    } else if let Ok(def) = RuleDef::parse("r", text) {
        (Command::PutRule(Arc::new(def)), Command::RemoveRule("r".into()))
    } else {
        return;
    };
    let _ = applier.apply(&mut e, &put, |_, _, _| {});
    batch.clear();
    probe_fixes(&mut batch, NOW_MS - 5_000);
    apply(&mut e, &batch);
    let _ = applier.apply(&mut e, &remove, |_, _, _| {});
}

/// One fix a unit at each probe, at `time_ms`.
fn probe_fixes(batch: &mut IngestBatch, time_ms: i64) {
    let json = PROBES
        .iter()
        .enumerate()
        .map(|(i, (lat, lon))| {
            format!(
                r#"{{"id":"P{i}","lat":{lat},"lon":{lon},"time_ms":{},"agency":"police","status":"available"}}"#,
                time_ms
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    decode::decode_json(
        &format!(r#"{{"fixes":[{json}]}}"#),
        &ValidationConfig::default(),
        NOW_MS,
        batch,
    )
    .expect("the probes' batch is valid");
}
