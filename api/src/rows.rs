//! Unit objects copied out of the engine, to be written after its lock is
//! released: a positions feed writes thousands of units a second per map,
//! and the writing (float formatting for JSON) is most of that work.
//! Copying a unit is its strings and a few numbers, into reused buffers;
//! the copy is then written as JSON text ([`UnitRows::write_message`]) or
//! as the FlatBuffers of `data/schema/positions.fbs`
//! ([`UnitRows::write_flatbuffers`]), whichever the feed asked for.

use bluelight_engine::{Agency, Engine, Status, UnitSlot};
use bluelight_ingest::wire::feed;

use crate::json::push_json_str;

/// Copied units; see the module doc.
#[derive(Debug, Default)]
pub struct UnitRows {
    /// Every row's strings, raw, back to back: its id, then its kind,
    /// tags, callsign and how where it has them.
    text: String,
    /// Where each string in `text` ends.
    ends: Vec<u32>,
    rows: Vec<Row>,
}

#[derive(Debug)]
struct Row {
    /// Index in `ends` of the row's id; its other strings follow it.
    first: u32,
    /// Which of kind, callsign and how follow ([`KIND`], [`CALLSIGN`], [`HOW`]).
    has: u8,
    /// Tags that follow the kind.
    tags: u16,
    agency: Agency,
    status: Status,
    fix: bluelight_engine::Fix,
    cell: Option<u64>,
    stale: bool,
}

const KIND: u8 = 1;
const CALLSIGN: u8 = 2;
const HOW: u8 = 4;

/// A row's strings.
struct Texts<'a> {
    id: &'a str,
    kind: Option<&'a str>,
    /// Indices of the tags' strings.
    tags: std::ops::Range<usize>,
    callsign: Option<&'a str>,
    how: Option<&'a str>,
}

impl UnitRows {
    /// Empties the rows, keeping their buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.rows.clear();
    }

    /// Units held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn push_str(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
    }

    /// Copies one unit; false (nothing copied) for a unit never seen.
    pub fn push(&mut self, engine: &Engine, slot: UnitSlot) -> bool {
        let Some(v) = engine.unit_borrowed(slot) else {
            return false;
        };
        let first = u32::try_from(self.ends.len()).unwrap_or(u32::MAX);
        self.push_str(v.id);
        let mut has = 0;
        if let Some(k) = v.kind {
            self.push_str(k);
            has |= KIND;
        }
        let mut tags = 0u16;
        for t in v.tags().take(usize::from(u16::MAX)) {
            self.push_str(t);
            tags += 1;
        }
        for (bit, value) in [(CALLSIGN, v.callsign), (HOW, v.how)] {
            if let Some(value) = value {
                self.push_str(value);
                has |= bit;
            }
        }
        self.rows.push(Row {
            first,
            has,
            tags,
            agency: v.agency,
            status: v.status,
            fix: v.fix,
            cell: engine.unit_cell(slot).map(u64::from),
            stale: v.stale,
        });
        true
    }

    /// String `j` of `text`.
    fn string(&self, j: usize) -> &str {
        let start = j
            .checked_sub(1)
            .and_then(|p| self.ends.get(p))
            .map_or(0, |&e| e as usize);
        let end = self.ends.get(j).map_or(start, |&e| e as usize);
        self.text.get(start..end).unwrap_or("")
    }

    /// Row `r`'s strings, in the order [`UnitRows::push`] stored them.
    fn texts(&self, r: &Row) -> Texts<'_> {
        let id = r.first as usize;
        let kind = (r.has & KIND != 0).then_some(id + 1);
        let tags_start = id + 1 + usize::from(kind.is_some());
        let tags = tags_start..tags_start + usize::from(r.tags);
        let callsign = (r.has & CALLSIGN != 0).then_some(tags.end);
        let how = (r.has & HOW != 0).then_some(tags.end + usize::from(callsign.is_some()));
        Texts {
            id: self.string(id),
            kind: kind.map(|j| self.string(j)),
            tags,
            callsign: callsign.map(|j| self.string(j)),
            how: how.map(|j| self.string(j)),
        }
    }

    /// `{"type":kind,"sub":sub,"units":[...]}` with every row.
    pub fn write_message(&self, kind: &str, sub: &str, out: &mut String) {
        out.reserve(64 + self.rows.len() * 260);
        out.push_str("{\"type\":\"");
        out.push_str(kind);
        out.push_str("\",\"sub\":");
        push_json_str(out, sub);
        out.push_str(",\"units\":[");
        for i in 0..self.rows.len() {
            if i > 0 {
                out.push(',');
            }
            self.write_row(i, out);
        }
        out.push_str("]}");
    }

    /// Row `i` as a unit object. Numbers are written as serde_json writes
    /// them (ryu, itoa): the same text as [`crate::json::unit_object`],
    /// several times faster than `core::fmt`.
    pub fn write_row(&self, i: usize, out: &mut String) {
        let Some(r) = self.rows.get(i) else { return };
        let t = self.texts(r);
        let (mut f64s, mut ints) = (ryu::Buffer::new(), itoa::Buffer::new());
        out.push_str("{\"id\":");
        push_json_str(out, t.id);
        out.push_str(",\"lat\":");
        out.push_str(f64s.format(r.fix.lat));
        out.push_str(",\"lon\":");
        out.push_str(f64s.format(r.fix.lon));
        out.push_str(",\"time_ms\":");
        out.push_str(ints.format(r.fix.time_ms));
        for (k, x) in [
            (",\"speed_mps\":", r.fix.speed_mps),
            (",\"heading_deg\":", r.fix.heading_deg),
            (",\"accuracy_m\":", r.fix.accuracy_m),
        ] {
            if x.is_finite() {
                out.push_str(k);
                out.push_str(f64s.format_finite(x));
            }
        }
        out.push_str(",\"agency\":\"");
        out.push_str(r.agency.as_str());
        out.push_str("\",\"status\":\"");
        out.push_str(r.status.as_str());
        out.push('"');
        if let Some(k) = t.kind {
            out.push_str(",\"kind\":");
            push_json_str(out, k);
        }
        for (n, tag) in t.tags.clone().enumerate() {
            out.push_str(if n == 0 { ",\"tags\":[" } else { "," });
            push_json_str(out, self.string(tag));
        }
        if !t.tags.is_empty() {
            out.push(']');
        }
        for (key, value) in [(",\"callsign\":", t.callsign), (",\"how\":", t.how)] {
            if let Some(value) = value {
                out.push_str(key);
                push_json_str(out, value);
            }
        }
        if let Some(c) = r.cell {
            out.push_str(",\"h3\":\"");
            push_hex(out, c);
            out.push('"');
        }
        out.push_str(if r.stale {
            ",\"stale\":true}"
        } else {
            ",\"stale\":false}"
        });
    }

    /// Every row as one `Positions` FlatBuffer (`data/schema/positions.fbs`),
    /// ready to send as a binary frame. About a third of the JSON's bytes,
    /// and no float formatting.
    pub fn write_flatbuffers(&self, kind: feed::Kind, sub: &str) -> bytes::Bytes {
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(64 + self.rows.len() * 96);
        let mut units = Vec::with_capacity(self.rows.len());
        let mut tags = Vec::new();
        for r in &self.rows {
            let t = self.texts(r);
            let id = b.create_string(t.id);
            // Kinds and tags repeat across a fleet: stored once a message.
            let kind = t.kind.map(|k| b.create_shared_string(k));
            let tags = (!t.tags.is_empty()).then(|| {
                tags.clear();
                tags.extend(t.tags.clone().map(|j| b.create_shared_string(self.string(j))));
                b.create_vector(&tags)
            });
            let callsign = t.callsign.map(|c| b.create_string(c));
            let how = t.how.map(|h| b.create_shared_string(h));
            units.push(feed::Unit::create(
                &mut b,
                &feed::UnitArgs {
                    id: Some(id),
                    kind,
                    tags,
                    callsign,
                    how,
                },
            ));
        }
        let units = b.create_vector(&units);
        let positions: Vec<feed::Position> = self
            .rows
            .iter()
            .map(|r| {
                feed::Position::new(
                    r.fix.lat,
                    r.fix.lon,
                    r.fix.time_ms,
                    r.cell.unwrap_or(0),
                    r.fix.speed_mps,
                    r.fix.heading_deg,
                    r.fix.accuracy_m,
                    feed::Agency(r.agency as u8),
                    feed::Status(r.status as u8),
                    r.stale,
                )
            })
            .collect();
        let positions = b.create_vector(&positions);
        let sub = b.create_string(sub);
        let root = feed::Positions::create(
            &mut b,
            &feed::PositionsArgs {
                kind,
                sub: Some(sub),
                positions: Some(positions),
                units: Some(units),
            },
        );
        feed::finish_positions_buffer(&mut b, root);
        let (buf, head) = b.collapse();
        bytes::Bytes::from(buf).slice(head..)
    }
}

/// Lower-case hex without leading zeros (how H3 cells are written).
fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut n = 16;
    let mut v = v;
    loop {
        n -= 1;
        buf[n] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[n..] {
        out.push(char::from(b));
    }
}

/// The JSON message a binary `Positions` stands for (`{"type","sub","units"}`
/// with unit objects as PROTOCOL.md writes them): how a client reads the
/// binary form, and what the tests hold it to.
///
/// # Errors
/// Not a valid `Positions` buffer.
pub fn positions_as_json(buf: &[u8]) -> Result<serde_json::Value, flatbuffers::InvalidFlatbuffer> {
    use serde_json::{Map, Value, json};
    let p = feed::root_as_positions(buf)?;
    let kind = if p.kind() == feed::Kind::Snapshot {
        "snapshot"
    } else {
        "positions"
    };
    let positions = p.positions().unwrap_or_default();
    let units = p.units().unwrap_or_default();
    let mut out = Vec::with_capacity(units.len());
    for (pos, unit) in positions.iter().zip(units.iter()) {
        let mut o = Map::new();
        o.insert("id".into(), json!(unit.id()));
        o.insert("lat".into(), json!(pos.lat()));
        o.insert("lon".into(), json!(pos.lon()));
        o.insert("time_ms".into(), json!(pos.time_ms()));
        for (k, x) in [
            ("speed_mps", pos.speed_mps()),
            ("heading_deg", pos.heading_deg()),
            ("accuracy_m", pos.accuracy_m()),
        ] {
            if x.is_finite() {
                // The f32's shortest text, as the JSON form writes it.
                o.insert(
                    k.into(),
                    json!(x.to_string().parse::<f64>().unwrap_or(f64::from(x))),
                );
            }
        }
        let agency = Agency::from_u8(pos.agency().0);
        let status = Status::from_u8(pos.status().0);
        o.insert("agency".into(), json!(agency.as_str()));
        o.insert("status".into(), json!(status.as_str()));
        if let Some(k) = unit.kind() {
            o.insert("kind".into(), json!(k));
        }
        if let Some(tags) = unit.tags() {
            o.insert("tags".into(), json!(tags.iter().collect::<Vec<_>>()));
        }
        if let Some(c) = unit.callsign() {
            o.insert("callsign".into(), json!(c));
        }
        if let Some(h) = unit.how() {
            o.insert("how".into(), json!(h));
        }
        if pos.h3() != 0 {
            o.insert("h3".into(), json!(format!("{:x}", pos.h3())));
        }
        o.insert("stale".into(), json!(pos.stale()));
        out.push(Value::Object(o));
    }
    Ok(json!({"type": kind, "sub": p.sub().unwrap_or_default(), "units": out}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluelight_engine::{EngineConfig, Fix, Outputs};
    use serde_json::Value;

    /// Both encodings of the same rows say the same thing, field for field:
    /// escapes, tags, callsign and how, unknown numbers, every agency and
    /// status.
    #[test]
    fn flatbuffers_rows_read_back_as_the_json_rows() {
        let mut e = Engine::new(EngineConfig::default()).expect("engine");
        let mut rows = UnitRows::default();
        let mut slots = Vec::new();
        let (agencies, statuses) = (Agency::ALL, Status::ALL);
        for n in 0..12u8 {
            let slot = e.intern_unit(&format!("U\"{n}\\\n"));
            let tags: &[&str] = match n % 3 {
                0 => &[],
                1 => &["para\"medic"],
                _ => &["a", "b", "para\"medic"],
            };
            let kind = (n % 2 == 0).then_some("rrv");
            e.set_meta(slot, Some(agencies[usize::from(n) % 5]), kind, Some(tags))
                .expect("meta");
            if n % 4 == 1 {
                e.set_details(slot, Some("ALPHA \"1\""), Some("m-g"), None);
            }
            let mut fix = Fix::at(
                1_763_726_400_000 + i64::from(n),
                -89.9 + f64::from(n) * 15.0,
                179.999 - f64::from(n) * 30.0,
            );
            fix.status = statuses[usize::from(n) % 6];
            if n % 2 == 1 {
                (fix.speed_mps, fix.heading_deg, fix.accuracy_m) = (12.5, 0.1, 65_504.0);
            }
            e.apply(slot, &fix, &mut Outputs::default());
            assert!(rows.push(&e, slot));
            slots.push(slot);
        }
        // Against the values built from the engine, not the JSON text
        // parsed back: serde_json's float parsing may miss by an ulp.
        let built: Vec<Value> = slots
            .iter()
            .filter_map(|&u| crate::json::unit_object(&e, u))
            .collect();
        let binary = rows.write_flatbuffers(feed::Kind::Positions, "p\"1");
        assert_eq!(
            positions_as_json(&binary).expect("valid"),
            serde_json::json!({"type":"positions","sub":"p\"1","units":built})
        );
        let mut text = String::new();
        rows.write_message("positions", "p\"1", &mut text);
        assert!(
            binary.len() * 2 < text.len(),
            "{} bytes against {}",
            binary.len(),
            text.len()
        );
        let snapshot = UnitRows::default().write_flatbuffers(feed::Kind::Snapshot, "s");
        assert_eq!(
            positions_as_json(&snapshot).expect("valid"),
            serde_json::json!({"type":"snapshot","sub":"s","units":[]})
        );
        assert!(positions_as_json(b"not a buffer").is_err());
    }
}
