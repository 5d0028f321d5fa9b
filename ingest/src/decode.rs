//! Decoders: FlatBuffers `FixBatch`, JSON `{"fixes":[...]}`, into an
//! [`IngestBatch`], validating each fix. A bad frame is an error for that
//! frame only; a bad fix inside a good frame is refused with its index and
//! reason while the fixes beside it go through.

use std::borrow::Cow;

use bluelight_engine::{Agency, Fix, Status};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::batch::{IngestBatch, MetaUpdate, UnitRef};
use crate::validate::{Reject, ValidationConfig};
use crate::wire;

/// Why a whole frame was refused.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DecodeError {
    /// Not a `FixBatch` (missing the `BLF1` file identifier).
    #[error("not a bluelight FixBatch: file identifier {found:?}, expected \"BLF1\"")]
    NotFixBatch {
        /// The four bytes where the identifier should be.
        found: String,
    },
    /// The FlatBuffer does not verify.
    #[error("invalid FlatBuffer: {0}")]
    Invalid(String),
    /// The JSON does not parse, or is not `{"fixes":[...]}`.
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Json {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Decodes and validates a FlatBuffers `FixBatch`.
///
/// # Errors
/// A frame that is not a verifiable `FixBatch`.
pub fn decode_flatbuffers(
    buf: &[u8],
    v: &ValidationConfig,
    now_ms: i64,
    out: &mut IngestBatch,
) -> Result<(), DecodeError> {
    // The crate's identifier check asserts (panics) on buffers shorter than
    // an offset and an identifier: check the length first.
    if buf.len() < 8 || !wire::fix_batch_buffer_has_identifier(buf) {
        let found = buf
            .get(4..8)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        return Err(DecodeError::NotFixBatch { found });
    }
    let batch = wire::root_as_fix_batch(buf).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if let Some(units) = batch.units() {
        for info in units.iter() {
            let key = info.unit();
            let unit = match info.id() {
                Some(id) if !id.is_empty() => UnitRef::Id(out.push_text(id)),
                _ => UnitRef::Key(key),
            };
            let kind = info.kind().map(|k| out.push_text(k));
            let tags = info.tags().map(|tags| {
                let start = out.tag_ranges.len() as u32;
                for t in tags.iter() {
                    let r = out.push_text(t);
                    out.tag_ranges.push(r);
                }
                start..out.tag_ranges.len() as u32
            });
            let key = matches!(unit, UnitRef::Id(_)).then_some(key);
            let agency = Some(Agency::from_u8(info.agency().0));
            out.metas.push(MetaUpdate {
                unit,
                key,
                agency,
                kind,
                tags,
                callsign: None,
                how: None,
                stale_at_ms: None,
            });
        }
    }
    if let Some(fixes) = batch.fixes() {
        for (i, f) in fixes.iter().enumerate() {
            let mut fix = Fix {
                time_ms: f.time_ms(),
                lat: f.lat(),
                lon: f.lon(),
                accuracy_m: f.accuracy_m(),
                speed_mps: f.speed_mps(),
                heading_deg: f.heading_deg(),
                status: Status::from_u8(f.status().0),
            };
            match v.check(&fix, now_ms) {
                Ok(()) => {
                    out.measurements_cleared += fix.clear_out_of_range();
                    out.fixes.push((UnitRef::Key(f.unit()), fix));
                    out.index.push(i as u32);
                }
                Err(r) => out.errors.push((i as u32, r)),
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct JsonBatch<'a> {
    #[serde(borrow)]
    fixes: Vec<&'a RawValue>,
}

/// A unit object (PROTOCOL.md); unknown fields are ignored.
#[derive(Deserialize)]
struct JsonFix<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    lat: f64,
    lon: f64,
    time_ms: i64,
    speed_mps: Option<f32>,
    heading_deg: Option<f32>,
    accuracy_m: Option<f32>,
    #[serde(borrow)]
    agency: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tags: Option<Vec<Cow<'a, str>>>,
}

/// Decodes and validates a JSON batch `{"fixes":[{...unit fields...}]}`.
///
/// # Errors
/// Text that is not JSON of that shape; a single bad fix is refused in the
/// batch instead (reason `bad_field`).
pub fn decode_json(
    text: &str,
    v: &ValidationConfig,
    now_ms: i64,
    out: &mut IngestBatch,
) -> Result<(), DecodeError> {
    let batch: JsonBatch<'_> = serde_json::from_str(text).map_err(|e| DecodeError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    // A refused fix: counted by reason, and said in words for the reply.
    fn bad_field(out: &mut IngestBatch, i: usize, detail: String) {
        out.errors.push((i as u32, Reject::BadField));
        out.error_details.push((i as u32, detail));
    }
    for (i, raw) in batch.fixes.iter().enumerate() {
        let Ok(f) = serde_json::from_str::<JsonFix<'_>>(raw.get()) else {
            bad_field(out, i, json_fix_problem(raw.get()));
            continue;
        };
        let status = match f.status.as_deref().map(Status::parse) {
            None => Status::Unknown,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                bad_field(out, i, format!("status: {e}"));
                continue;
            }
        };
        let agency = match f.agency.as_deref().map(Agency::parse) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                bad_field(out, i, format!("agency: {e}"));
                continue;
            }
        };
        if f.id.is_empty() {
            bad_field(out, i, "id: must not be empty".into());
            continue;
        }
        let mut fix = Fix {
            time_ms: f.time_ms,
            lat: f.lat,
            lon: f.lon,
            accuracy_m: f.accuracy_m.unwrap_or(f32::NAN),
            speed_mps: f.speed_mps.unwrap_or(f32::NAN),
            heading_deg: f.heading_deg.unwrap_or(f32::NAN),
            status,
        };
        if let Err(r) = v.check(&fix, now_ms) {
            out.errors.push((i as u32, r));
            continue;
        }
        out.measurements_cleared += fix.clear_out_of_range();
        let id = out.push_text(&f.id);
        if agency.is_some() || f.kind.is_some() || f.tags.is_some() {
            let kind = f.kind.as_deref().map(|k| out.push_text(k));
            let tags = f.tags.as_ref().map(|tags| {
                let start = out.tag_ranges.len() as u32;
                for t in tags {
                    let r = out.push_text(t);
                    out.tag_ranges.push(r);
                }
                start..out.tag_ranges.len() as u32
            });
            out.metas.push(MetaUpdate {
                unit: UnitRef::Id(id.clone()),
                key: None,
                agency,
                kind,
                tags,
                callsign: None,
                how: None,
                stale_at_ms: None,
            });
        }
        out.fixes.push((UnitRef::Id(id), fix));
        out.index.push(i as u32);
    }
    Ok(())
}

/// Why a JSON fix does not parse, naming the field: parsed again, on
/// this refusal path only, with the path of what failed kept.
fn json_fix_problem(raw: &str) -> String {
    let mut de = serde_json::Deserializer::from_str(raw);
    match serde_path_to_error::deserialize::<_, JsonFix<'_>>(&mut de) {
        Ok(_) => "a fix must be an object of unit fields".into(),
        Err(e) => {
            let text = e.inner().to_string();
            // serde_json's position is within this one fix: not useful.
            let text = text.rsplit_once(" at line ").map_or(text.as_str(), |(t, _)| t);
            match e.path().to_string().as_str() {
                "." | "" => text.to_owned(),
                path => format!("{path}: {text}"),
            }
        }
    }
}

/// A unit's metadata for [`encode_flatbuffers`].
#[derive(Debug, Clone, PartialEq)]
pub struct UnitInfoSpec<'a> {
    /// Numeric key.
    pub unit: u64,
    /// Human id.
    pub id: &'a str,
    /// Agency.
    pub agency: Agency,
    /// Kind.
    pub kind: &'a str,
    /// Tags.
    pub tags: &'a [&'a str],
}

/// Encodes fixes (by numeric key) and unit metadata as a `FixBatch`, into a
/// reusable builder (devices, tests, benches and loadgen use this).
pub fn encode_flatbuffers<'b>(
    fbb: &'b mut flatbuffers::FlatBufferBuilder<'static>,
    source: &str,
    fixes: &[(u64, Fix)],
    units: &[UnitInfoSpec<'_>],
) -> &'b [u8] {
    fbb.reset();
    let infos: Vec<_> = units
        .iter()
        .map(|u| {
            let id = fbb.create_string(u.id);
            let kind = fbb.create_string(u.kind);
            let tags: Vec<_> = u.tags.iter().map(|t| fbb.create_string(t)).collect();
            let tags = fbb.create_vector(&tags);
            wire::UnitInfo::create(
                fbb,
                &wire::UnitInfoArgs {
                    unit: u.unit,
                    id: Some(id),
                    agency: wire::Agency(u.agency as u8),
                    kind: Some(kind),
                    tags: Some(tags),
                },
            )
        })
        .collect();
    let structs: Vec<wire::Fix> = fixes
        .iter()
        .map(|(unit, f)| {
            wire::Fix::new(
                *unit,
                f.time_ms,
                f.lat,
                f.lon,
                f.accuracy_m,
                f.speed_mps,
                f.heading_deg,
                wire::Status(f.status as u8),
            )
        })
        .collect();
    let fixes = fbb.create_vector(&structs);
    let units = (!infos.is_empty()).then(|| fbb.create_vector(&infos));
    let source = fbb.create_string(source);
    let batch = wire::FixBatch::create(
        fbb,
        &wire::FixBatchArgs {
            source: Some(source),
            fixes: Some(fixes),
            units,
        },
    );
    wire::finish_fix_batch_buffer(fbb, batch);
    fbb.finished_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_763_726_400_000;

    fn fb(fixes: &[(u64, Fix)], units: &[UnitInfoSpec<'_>]) -> Vec<u8> {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        encode_flatbuffers(&mut fbb, "test", fixes, units).to_vec()
    }

    #[test]
    fn flatbuffers_round_trip_with_units_first() {
        let buf = fb(
            &[
                (7, Fix::at(NOW, 50.9, -1.4).with_status(Status::Enroute)),
                (8, Fix::at(NOW, 51.0, -1.0)),
            ],
            &[UnitInfoSpec {
                unit: 7,
                id: "AMB-104",
                agency: Agency::Ambulance,
                kind: "rrv",
                tags: &["paramedic"],
            }],
        );
        let mut out = IngestBatch::default();
        decode_flatbuffers(&buf, &ValidationConfig::default(), NOW, &mut out).expect("valid");
        assert_eq!(out.fixes.len(), 2);
        assert_eq!(out.fixes[0].0, UnitRef::Key(7));
        assert_eq!(out.fixes[0].1.status, Status::Enroute);
        let m = &out.metas[0];
        assert_eq!(m.key, Some(7));
        assert!(matches!(&m.unit, UnitRef::Id(r) if out.str(r) == "AMB-104"));
        assert_eq!(m.kind.as_ref().map(|k| out.str(k)), Some("rrv"));
        assert_eq!(
            out.tags(m.tags.as_ref().expect("tags")).collect::<Vec<_>>(),
            vec!["paramedic"]
        );
    }

    #[test]
    fn invalid_fixes_are_refused_with_index_and_reason_beside_good_ones() {
        let buf = fb(
            &[
                (1, Fix::at(NOW, 50.9, -1.4)),
                (2, Fix::at(NOW, f64::NAN, -1.4)),
                (3, Fix::at(NOW, 0.0, 0.0)),
                (4, Fix::at(NOW + 3_600_000, 50.0, 1.0)),
                (5, Fix::at(NOW, 51.0, -1.0)),
            ],
            &[],
        );
        let mut out = IngestBatch::default();
        decode_flatbuffers(&buf, &ValidationConfig::default(), NOW, &mut out).expect("frame is fine");
        assert_eq!(
            out.fixes.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
            vec![UnitRef::Key(1), UnitRef::Key(5)]
        );
        assert_eq!(
            out.errors,
            vec![
                (1, Reject::NotFinite),
                (2, Reject::NullIsland),
                (3, Reject::Future)
            ]
        );
    }

    #[test]
    fn frames_shorter_than_a_header_are_refused_not_panicked_on() {
        for n in 0..8 {
            let r = decode_flatbuffers(
                &vec![0u8; n],
                &ValidationConfig::default(),
                NOW,
                &mut IngestBatch::default(),
            );
            assert!(matches!(r, Err(DecodeError::NotFixBatch { .. })), "{n} bytes");
        }
    }

    #[test]
    fn frame_without_identifier_is_refused_by_name() {
        let mut buf = fb(&[(1, Fix::at(NOW, 50.9, -1.4))], &[]);
        buf[4..8].copy_from_slice(b"XXXX");
        let err = decode_flatbuffers(
            &buf,
            &ValidationConfig::default(),
            NOW,
            &mut IngestBatch::default(),
        )
        .expect_err("bad id");
        assert!(err.to_string().contains("XXXX"), "{err}");
    }

    #[test]
    fn json_bad_fix_is_refused_and_the_rest_accepted() {
        let text = r#"{"fixes":[
            {"id":"AMB-104","lat":50.9097,"lon":-1.4044,"time_ms":1763726400000,"speed_mps":12.5,"agency":"ambulance","status":"available","kind":"rrv","tags":["paramedic"]},
            {"id":"X","lat":"north","lon":-1.4,"time_ms":1763726400000},
            {"id":"Y","lat":50.0,"lon":-1.4,"time_ms":1763726400000,"status":"dancing"},
            {"lat":50.0,"lon":-1.4,"time_ms":1763726400000},
            {"id":"Z","lat":95.0,"lon":-1.4,"time_ms":1763726400000},
            {"id":"POL-1","lat":51.0,"lon":-1.0,"time_ms":1763726400000,"extra":true}
        ]}"#;
        let mut out = IngestBatch::default();
        decode_json(text, &ValidationConfig::default(), NOW, &mut out).expect("frame is fine");
        let ids: Vec<&str> = out
            .fixes
            .iter()
            .map(|(u, _)| if let UnitRef::Id(r) = u { out.str(r) } else { "" })
            .collect();
        assert_eq!(ids, vec!["AMB-104", "POL-1"]);
        assert_eq!(out.fixes[0].1.speed_mps, 12.5);
        assert_eq!(
            out.errors,
            vec![
                (1, Reject::BadField),
                (2, Reject::BadField),
                (3, Reject::BadField),
                (4, Reject::OutOfRange)
            ]
        );
        assert_eq!(out.metas.len(), 1);
    }

    #[test]
    fn json_that_is_not_a_batch_names_where() {
        let err = decode_json(
            "{\"fixes\": 3}",
            &ValidationConfig::default(),
            NOW,
            &mut IngestBatch::default(),
        )
        .expect_err("not a batch");
        assert!(matches!(err, DecodeError::Json { line: 1, .. }), "{err}");
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(10_000, |c: u32| c.max(1000) * 10)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn random_bytes_never_panic_the_flatbuffers_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut out = IngestBatch::default();
            let _ = decode_flatbuffers(&bytes, &ValidationConfig::default(), NOW, &mut out);
        }

        #[test]
        fn mutated_batches_never_panic_and_yield_only_valid_fixes(
            n in 1usize..20, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16),
        ) {
            let fixes: Vec<(u64, Fix)> = (0..n).map(|i| (i as u64, Fix::at(NOW, 50.0 + i as f64 * 0.01, -1.0))).collect();
            let mut buf = fb(&fixes, &[UnitInfoSpec { unit: 1, id: "A", agency: Agency::Police, kind: "car", tags: &["x"] }]);
            for (at, b) in flips {
                let i = at % buf.len();
                buf[i] ^= b;
            }
            let mut out = IngestBatch::default();
            if decode_flatbuffers(&buf, &ValidationConfig::default(), NOW, &mut out).is_ok() {
                for (_, f) in &out.fixes {
                    prop_assert!(ValidationConfig::default().check(f, NOW).is_ok());
                }
            }
        }

        #[test]
        fn random_text_never_panics_the_json_decoder(text in ".{0,256}") {
            let _ = decode_json(&text, &ValidationConfig::default(), NOW, &mut IngestBatch::default());
        }

        #[test]
        fn mutated_json_never_panics(cut in any::<usize>(), ch in any::<char>()) {
            let mut text = String::from(r#"{"fixes":[{"id":"A","lat":50.1,"lon":-1.2,"time_ms":1763726400000,"tags":["t"]}]}"#);
            let at = text.char_indices().nth(cut % text.chars().count()).map_or(0, |(i, _)| i);
            text.insert(at, ch);
            let _ = decode_json(&text, &ValidationConfig::default(), NOW, &mut IngestBatch::default());
        }
    }
}
