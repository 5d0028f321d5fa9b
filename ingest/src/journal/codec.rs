//! A journal entry's bytes: the commands of one or more jobs, in order.
//!
//! The wire's `FixBatch` cannot carry everything a command holds (fixes
//! named by id as JSON sends them, metadata that changes only some fields,
//! fence and rule changes, ticks), so an entry has its own compact form:
//! little-endian, a fix in 46 bytes, text once per batch. `MAGIC` first,
//! so a format change is refused loudly instead of misread.
//!
//! | record | tag | payload |
//! |---|---|---|
//! | fixes | 1 | text, tag ranges, metas, fixes |
//! | put fence | 2 | id, now_ms, source (GeoJSON text) |
//! | remove fence | 3 | id |
//! | put rule | 4 | id, source (JSON text) |
//! | remove rule | 5 | id |
//! | tick | 6 | now_ms, part, parts |
//! | fixes with details | 7 | as fixes, each meta adding a callsign, a `how` and a stale time |
//! | fixes of limited agencies | 8 | the sender's agencies (a byte of bits), then as 7 |

use std::ops::Range;
use std::sync::Arc;

use bluelight_engine::{Agency, Fix, Status};

use crate::batch::{IngestBatch, MetaUpdate, UnitRef};
use crate::definitions::{FenceDef, RuleDef};
use crate::queue::Command;

/// The first bytes of every entry (the format's version).
pub const MAGIC: &[u8; 4] = b"BLJ1";

const FIXES: u8 = 1;
const PUT_FENCE: u8 = 2;
const REMOVE_FENCE: u8 = 3;
const PUT_RULE: u8 = 4;
const REMOVE_RULE: u8 = 5;
const TICK: u8 = 6;
/// Fixes whose metadata carries callsigns and stale times (CoT); entries
/// written before it hold `FIXES`, still read.
const FIXES_DETAILED: u8 = 7;
/// Fixes from a sender limited to some agencies (`IngestBatch::agencies`):
/// the writer's refusals depend on it, so replay needs it too.
const FIXES_LIMITED: u8 = 8;

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The entry does not start with [`MAGIC`].
    #[error("not a bluelight journal entry (found {0:?})")]
    NotAnEntry(Vec<u8>),
    /// The entry ends inside a record.
    #[error("journal entry truncated while reading {0}")]
    Truncated(&'static str),
    /// A record of a kind this version does not know.
    #[error("unknown journal record {0}")]
    UnknownRecord(u8),
    /// A value out of its domain (a count past the entry's end, bad UTF-8,
    /// an unknown enum value).
    #[error("journal entry has a bad {0}")]
    Bad(&'static str),
    /// A definition that no longer parses.
    #[error("journal entry holds a bad definition: {0}")]
    Definition(String),
}

/// Encodes commands into one entry, appending to `out` (cleared first).
/// Commands that are not changes to the engine (none yet) are skipped.
pub fn encode<'a>(commands: impl IntoIterator<Item = &'a Command>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(MAGIC);
    let mut w = Writer(out);
    for c in commands {
        match c {
            Command::Fixes(b) => {
                if let Some(mask) = b.agencies {
                    w.u8(FIXES_LIMITED);
                    w.u8(mask);
                } else {
                    w.u8(FIXES_DETAILED);
                }
                w.fixes(b, true);
            }
            Command::PutFence { def, now_ms } => {
                w.u8(PUT_FENCE);
                w.str(&def.id);
                w.i64(*now_ms);
                w.str(&def.source);
            }
            Command::RemoveFence(id) => {
                w.u8(REMOVE_FENCE);
                w.str(id);
            }
            Command::PutRule(def) => {
                w.u8(PUT_RULE);
                w.str(&def.id);
                w.str(&def.source);
            }
            Command::RemoveRule(id) => {
                w.u8(REMOVE_RULE);
                w.str(id);
            }
            Command::Tick { now_ms, part, parts } => {
                w.u8(TICK);
                w.i64(*now_ms);
                w.u32(*part);
                w.u32(*parts);
            }
            Command::Snapshot { .. } | Command::Replace(_) => {}
        }
    }
}

/// Decodes an entry's commands, in order; batches are taken from `batch`
/// (a pool's, or `IngestBatch::default`).
///
/// # Errors
/// Bytes that are not a whole entry of this version.
pub fn decode(bytes: &[u8], mut batch: impl FnMut() -> IngestBatch) -> Result<Vec<Command>, JournalError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let magic = r.take(MAGIC.len(), "magic")?;
    if magic != MAGIC {
        return Err(JournalError::NotAnEntry(magic.to_vec()));
    }
    let mut commands = Vec::new();
    while r.pos < bytes.len() {
        let c = match r.u8("record")? {
            record @ (FIXES | FIXES_DETAILED) => {
                let mut b = batch();
                r.fixes(&mut b, record == FIXES_DETAILED)?;
                Command::Fixes(b)
            }
            FIXES_LIMITED => {
                let mask = r.u8("agencies")?;
                let mut b = batch();
                r.fixes(&mut b, true)?;
                b.agencies = Some(mask);
                Command::Fixes(b)
            }
            PUT_FENCE => {
                let id = r.str("fence id")?;
                let now_ms = r.i64("fence time")?;
                let source = r.str("fence source")?;
                let def = FenceDef::parse(id, source).map_err(|e| JournalError::Definition(e.to_string()))?;
                Command::PutFence {
                    def: Arc::new(def),
                    now_ms,
                }
            }
            REMOVE_FENCE => Command::RemoveFence(Arc::from(r.str("fence id")?)),
            PUT_RULE => {
                let id = r.str("rule id")?;
                let source = r.str("rule source")?;
                let def = RuleDef::parse(id, source).map_err(|e| JournalError::Definition(e.to_string()))?;
                Command::PutRule(Arc::new(def))
            }
            REMOVE_RULE => Command::RemoveRule(Arc::from(r.str("rule id")?)),
            TICK => Command::Tick {
                now_ms: r.i64("tick time")?,
                part: r.u32("tick part")?,
                parts: r.u32("tick parts")?,
            },
            other => return Err(JournalError::UnknownRecord(other)),
        };
        commands.push(c);
    }
    Ok(commands)
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn range(&mut self, r: &Range<u32>) {
        self.u32(r.start);
        self.u32(r.end);
    }
    fn opt_range(&mut self, r: Option<&Range<u32>>) {
        self.u8(u8::from(r.is_some()));
        if let Some(r) = r {
            self.range(r);
        }
    }
    fn unit(&mut self, u: &UnitRef) {
        match u {
            UnitRef::Key(k) => {
                self.u8(0);
                self.u64(*k);
            }
            UnitRef::Id(r) => {
                self.u8(1);
                self.range(r);
            }
        }
    }
    /// A batch; `detailed` adds the metas' callsign, how and stale time
    /// (`FIXES_DETAILED`; without them, the earlier `FIXES`).
    fn fixes(&mut self, b: &IngestBatch, detailed: bool) {
        self.str(&b.text);
        self.len(b.tag_ranges.len());
        b.tag_ranges.iter().for_each(|r| self.range(r));
        self.len(b.metas.len());
        for m in &b.metas {
            self.unit(&m.unit);
            self.u8(u8::from(m.key.is_some()));
            self.u64(m.key.unwrap_or(0));
            self.u8(m.agency.map_or(u8::MAX, |a| a as u8));
            self.opt_range(m.kind.as_ref());
            self.opt_range(m.tags.as_ref());
            if detailed {
                self.opt_range(m.callsign.as_ref());
                self.opt_range(m.how.as_ref());
                self.u8(u8::from(m.stale_at_ms.is_some()));
                self.i64(m.stale_at_ms.unwrap_or(0));
            }
        }
        self.len(b.fixes.len());
        for (u, f) in &b.fixes {
            self.unit(u);
            self.i64(f.time_ms);
            self.f64(f.lat);
            self.f64(f.lon);
            self.f32(f.accuracy_m);
            self.f32(f.speed_mps);
            self.f32(f.heading_deg);
            self.u8(f.status as u8);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], JournalError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(JournalError::Truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], JournalError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, w: &'static str) -> Result<u8, JournalError> {
        Ok(self.arr::<1>(w)?[0])
    }
    fn u32(&mut self, w: &'static str) -> Result<u32, JournalError> {
        Ok(u32::from_le_bytes(self.arr(w)?))
    }
    fn u64(&mut self, w: &'static str) -> Result<u64, JournalError> {
        Ok(u64::from_le_bytes(self.arr(w)?))
    }
    fn i64(&mut self, w: &'static str) -> Result<i64, JournalError> {
        Ok(i64::from_le_bytes(self.arr(w)?))
    }
    fn f32(&mut self, w: &'static str) -> Result<f32, JournalError> {
        Ok(f32::from_le_bytes(self.arr(w)?))
    }
    fn f64(&mut self, w: &'static str) -> Result<f64, JournalError> {
        Ok(f64::from_le_bytes(self.arr(w)?))
    }
    /// A count of items of at least `min` bytes each, refused when they
    /// could not fit in what is left (a corrupt count must not allocate).
    fn count(&mut self, min: usize, w: &'static str) -> Result<usize, JournalError> {
        let n = self.u32(w)? as usize;
        if n.saturating_mul(min) > self.buf.len() - self.pos {
            return Err(JournalError::Bad(w));
        }
        Ok(n)
    }
    fn str(&mut self, w: &'static str) -> Result<&'a str, JournalError> {
        let n = self.count(1, w)?;
        std::str::from_utf8(self.take(n, w)?).map_err(|_| JournalError::Bad(w))
    }
    /// A range of a text of `len` bytes (or of a list of `len` items).
    fn range(&mut self, len: usize, w: &'static str) -> Result<Range<u32>, JournalError> {
        let (a, b) = (self.u32(w)?, self.u32(w)?);
        if a > b || b as usize > len {
            return Err(JournalError::Bad(w));
        }
        Ok(a..b)
    }
    fn opt_range(&mut self, len: usize, w: &'static str) -> Result<Option<Range<u32>>, JournalError> {
        match self.u8(w)? {
            0 => Ok(None),
            1 => self.range(len, w).map(Some),
            _ => Err(JournalError::Bad(w)),
        }
    }
    fn unit(&mut self, text: &str) -> Result<UnitRef, JournalError> {
        match self.u8("unit")? {
            0 => Ok(UnitRef::Key(self.u64("unit key")?)),
            1 => {
                let r = self.range(text.len(), "unit id")?;
                // A range that splits a character would panic on slicing later.
                if !text.is_char_boundary(r.start as usize) || !text.is_char_boundary(r.end as usize) {
                    return Err(JournalError::Bad("unit id"));
                }
                Ok(UnitRef::Id(r))
            }
            _ => Err(JournalError::Bad("unit")),
        }
    }
    fn fixes(&mut self, b: &mut IngestBatch, detailed: bool) -> Result<(), JournalError> {
        b.clear();
        b.text.push_str(self.str("text")?);
        let n = self.count(8, "tag ranges")?;
        for _ in 0..n {
            let r = self.range(b.text.len(), "tag range")?;
            b.tag_ranges.push(r);
        }
        let n = self.count(21, "metas")?;
        for _ in 0..n {
            let unit = self.unit(&b.text)?;
            let has_key = self.u8("meta key")? != 0;
            let key = self.u64("meta key")?;
            let agency = match self.u8("meta agency")? {
                u8::MAX => None,
                a @ 0..=4 => Some(Agency::from_u8(a)),
                _ => return Err(JournalError::Bad("meta agency")),
            };
            let kind = self.opt_range(b.text.len(), "meta kind")?;
            let tags = self.opt_range(b.tag_ranges.len(), "meta tags")?;
            let (callsign, how, stale_at_ms) = if detailed {
                let callsign = self.opt_range(b.text.len(), "meta callsign")?;
                let how = self.opt_range(b.text.len(), "meta how")?;
                let has_stale = self.u8("meta stale time")? != 0;
                let stale = self.i64("meta stale time")?;
                (callsign, how, has_stale.then_some(stale))
            } else {
                (None, None, None)
            };
            b.metas.push(MetaUpdate {
                unit,
                key: has_key.then_some(key),
                agency,
                kind,
                tags,
                callsign,
                how,
                stale_at_ms,
            });
        }
        let n = self.count(42, "fixes")?;
        b.fixes.reserve(n);
        for i in 0..n {
            let unit = self.unit(&b.text)?;
            let fix = Fix {
                time_ms: self.i64("fix time")?,
                lat: self.f64("fix lat")?,
                lon: self.f64("fix lon")?,
                accuracy_m: self.f32("fix accuracy")?,
                speed_mps: self.f32("fix speed")?,
                heading_deg: self.f32("fix heading")?,
                status: Status::from_u8(self.u8("fix status")?),
            };
            b.fixes.push((unit, fix));
            b.index.push(i as u32);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A test fix: id (or key), time, lat, lon, status.
    type TestFix<'a> = (Option<&'a str>, u64, i64, f64, f64, u8);

    fn batch_of(fixes: &[TestFix<'_>]) -> IngestBatch {
        let mut b = IngestBatch::default();
        let kind = b.push_text("car");
        let t0 = b.tag_ranges.len() as u32;
        let tag = b.push_text("armed");
        b.tag_ranges.push(tag);
        for &(id, key, t, lat, lon, s) in fixes {
            let unit = match id {
                Some(id) => UnitRef::Id(b.push_text(id)),
                None => UnitRef::Key(key),
            };
            let mut f = Fix::at(t, lat, lon).with_status(Status::from_u8(s));
            f.speed_mps = 3.5;
            b.fixes.push((unit, f));
        }
        b.metas.push(MetaUpdate {
            unit: UnitRef::Key(7),
            key: None,
            agency: Some(Agency::Fire),
            kind: Some(kind),
            tags: Some(t0..t0 + 1),
            callsign: None,
            how: None,
            stale_at_ms: None,
        });
        // A CoT unit's details.
        let (callsign, how) = (b.push_text("ALPHA-1"), b.push_text("m-g"));
        b.metas.push(MetaUpdate {
            unit: UnitRef::Key(8),
            key: None,
            agency: None,
            kind: None,
            tags: None,
            callsign: Some(callsign),
            how: Some(how),
            stale_at_ms: Some(1_796_040_300_000),
        });
        b
    }

    /// Entries written before callsigns (record 1, metas without them)
    /// still replay.
    #[test]
    fn a_fixes_record_of_the_earlier_format_is_read() {
        let mut b = batch_of(&[(Some("AMB-1"), 0, 1_000, 53.8, -1.5, 1)]);
        b.metas.truncate(1);
        let mut bytes = MAGIC.to_vec();
        let mut w = Writer(&mut bytes);
        w.u8(FIXES);
        w.fixes(&b, false);
        let back = decode(&bytes, IngestBatch::default).expect("decodes");
        assert!(same(&back[0], &Command::Fixes(b)), "{back:?}");
    }

    fn same(a: &Command, b: &Command) -> bool {
        match (a, b) {
            (Command::Fixes(x), Command::Fixes(y)) => {
                x.text == y.text
                    && x.agencies == y.agencies
                    && x.tag_ranges == y.tag_ranges
                    && x.metas == y.metas
                    && x.fixes.len() == y.fixes.len()
                    && x.fixes
                        .iter()
                        .zip(&y.fixes)
                        .all(|(p, q)| p.0 == q.0 && format!("{:?}", p.1) == format!("{:?}", q.1))
            }
            (Command::PutFence { def: d, now_ms: t }, Command::PutFence { def: e, now_ms: u }) => {
                d.id == e.id && d.source == e.source && t == u
            }
            (Command::PutRule(d), Command::PutRule(e)) => d.id == e.id && d.source == e.source,
            (Command::RemoveFence(x), Command::RemoveFence(y))
            | (Command::RemoveRule(x), Command::RemoveRule(y)) => x == y,
            (
                Command::Tick { now_ms, part, parts },
                Command::Tick {
                    now_ms: n,
                    part: p,
                    parts: q,
                },
            ) => (now_ms, part, parts) == (n, p, q),
            _ => false,
        }
    }

    fn every_kind() -> Vec<Command> {
        let fence = FenceDef::parse(
            "depot",
            r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[-1.5,53.8]},"properties":{"radius_m":300,"filter":{"ids":["AMB-1"]}}}"#,
        )
        .expect("fence");
        let rule = RuleDef::parse("near", r#"{"type":"proximity","radius_m":40}"#).expect("rule");
        let mut limited = batch_of(&[(Some("AMB-2"), 0, 3_000, 53.9, -1.6, 1)]);
        limited.agencies = Some(1 << Agency::Ambulance as u8);
        vec![
            Command::Fixes(limited),
            Command::Fixes(batch_of(&[
                (Some("AMB-1"), 0, 1_000, 53.8, -1.5, 1),
                (None, 42, 2_000, -33.9, 151.2, 5),
            ])),
            Command::PutFence {
                def: Arc::new(fence),
                now_ms: 99,
            },
            Command::RemoveFence(Arc::from("old")),
            Command::PutRule(Arc::new(rule)),
            Command::RemoveRule(Arc::from("gone")),
            Command::Tick {
                now_ms: 5_000,
                part: 3,
                parts: 100,
            },
        ]
    }

    #[test]
    fn every_command_kind_round_trips_in_order() {
        let commands = every_kind();
        let mut bytes = Vec::new();
        encode(&commands, &mut bytes);
        let back = decode(&bytes, IngestBatch::default).expect("decodes");
        assert_eq!(back.len(), commands.len());
        for (a, b) in commands.iter().zip(&back) {
            assert!(same(a, b), "{a:?} != {b:?}");
        }
    }

    #[test]
    fn a_fix_by_key_costs_46_bytes() {
        let one = batch_of(&[(None, 1, 1, 0.0, 0.0, 0)]);
        let two = batch_of(&[(None, 1, 1, 0.0, 0.0, 0), (None, 2, 2, 0.0, 0.0, 0)]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode([&Command::Fixes(one)], &mut a);
        encode([&Command::Fixes(two)], &mut b);
        assert_eq!(b.len() - a.len(), 46);
    }

    #[test]
    fn another_format_is_refused_by_name() {
        let err = decode(b"BLSNAP02....", IngestBatch::default).expect_err("not an entry");
        assert_eq!(err, JournalError::NotAnEntry(b"BLSN".to_vec()));
    }

    proptest! {
        /// Any cut or corruption of an entry is an error or other
        /// commands, never a panic.
        #[test]
        fn damaged_entries_never_panic(cut in 0usize..600, flip in 0usize..600, bit in 0u8..8) {
            let mut bytes = Vec::new();
            encode(&every_kind(), &mut bytes);
            let cut = cut.min(bytes.len());
            let _ = decode(&bytes[..cut], IngestBatch::default);
            if let Some(b) = bytes.get_mut(flip) {
                *b ^= 1 << bit;
            }
            let _ = decode(&bytes, IngestBatch::default);
        }
    }
}
