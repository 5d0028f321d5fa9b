//! Snapshots: the engine's durable state as bytes, and back.
//!
//! Holds units (ids, metadata, latest fix, staleness), numeric key aliases,
//! fences with their memberships (entry times and dwell state, so a restart
//! neither re-fires nor forgets an enter or a dwell), proximity rules with
//! their active pairs, and the alert `seq`. Feeds and standing queries belong
//! to client sessions and are not in it; history goes in segments of its own
//! (`history_log`).
//!
//! Taken in two steps: [`Engine::freeze`] copies the state out (flat
//! vectors, a few copies: the only step that needs the engine, so the
//! writer waits for a copy, not for the encoding), and [`Frozen::encode`]
//! makes the bytes anywhere.
//!
//! Format: little-endian, length-prefixed, `MAGIC` first. Encoding is
//! deterministic (fences by id, members by unit, pairs sorted), so equal
//! engines give equal bytes.

use std::sync::Arc;

use geo::{Coord, LineString, MultiPolygon, Polygon};
use h3o::CellIndex;

use crate::config::EngineConfig;
use crate::cover::CoverCell;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::filter::Filter;
use crate::model::UnitSlot;
use crate::region::{Detect, Membership, Region, RegionKind};
use crate::rules::{Rule, RuleSpec};
use crate::shape::Shape;
use crate::units::{FLAG_HAS_DETAILS, FLAG_HAS_KIND, FLAG_STALE, UnitDetails, UnitState};

const MAGIC: &[u8; 8] = b"BLSNAP05";

/// The format before each fence kept its region id (fences then took
/// ids in the order they were made, which a restore reproduced by
/// installing them in order): still read.
const MAGIC_04: &[u8; 8] = b"BLSNAP04";

/// The format before units' callsigns and stale times (a section after
/// the rules): still read.
const MAGIC_03: &[u8; 8] = b"BLSNAP03";

/// The format before each unit carried its fine cell: still read.
const MAGIC_02: &[u8; 8] = b"BLSNAP02";

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
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
    fn source(&mut self, s: Option<&str>) {
        self.u8(u8::from(s.is_some()));
        self.str(s.unwrap_or(""));
    }
    fn filter(&mut self, f: &Filter) {
        let present = u8::from(f.agencies.is_some())
            | u8::from(f.statuses.is_some()) << 1
            | u8::from(f.kinds.is_some()) << 2
            | u8::from(f.tags.is_some()) << 3
            | u8::from(f.ids.is_some()) << 4
            | u8::from(f.max_age_ms.is_some()) << 5;
        self.u8(present);
        self.u8(f.agencies.unwrap_or(0));
        self.u8(f.statuses.unwrap_or(0));
        let kinds = f.kinds.as_deref().unwrap_or(&[]);
        self.len(kinds.len());
        kinds.iter().for_each(|&k| self.u16(k));
        self.u64(f.tags.unwrap_or(0));
        let ids = f.ids.as_deref().unwrap_or(&[]);
        self.len(ids.len());
        ids.iter().for_each(|s| self.u32(s.0));
        self.i64(f.max_age_ms.unwrap_or(0));
    }
    fn shape(&mut self, s: &Shape) {
        match s {
            Shape::Polygon(p) => {
                self.u8(0);
                self.len(p.source.0.len());
                for poly in &p.source.0 {
                    let rings: Vec<&LineString> =
                        std::iter::once(poly.exterior()).chain(poly.interiors()).collect();
                    self.len(rings.len());
                    for r in rings {
                        self.len(r.0.len());
                        for c in &r.0 {
                            self.f64(c.x);
                            self.f64(c.y);
                        }
                    }
                }
            }
            Shape::Circle(c) => {
                self.u8(1);
                self.f64(c.lat);
                self.f64(c.lon);
                self.f64(c.radius_m);
            }
            Shape::BBox(b) => {
                self.u8(2);
                b.iter().for_each(|&v| self.f64(v));
            }
            Shape::Cells(cs) => {
                self.u8(3);
                self.len(cs.cells.len());
                cs.cells.iter().for_each(|&c| self.u64(u64::from(c)));
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn short(what: &str) -> EngineError {
    EngineError::Snapshot(format!("truncated while reading {what}"))
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EngineError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| short(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], EngineError> {
        let s = self.take(N, what)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self, w: &str) -> Result<u8, EngineError> {
        Ok(self.arr::<1>(w)?[0])
    }
    fn u16(&mut self, w: &str) -> Result<u16, EngineError> {
        Ok(u16::from_le_bytes(self.arr(w)?))
    }
    fn u32(&mut self, w: &str) -> Result<u32, EngineError> {
        Ok(u32::from_le_bytes(self.arr(w)?))
    }
    fn u64(&mut self, w: &str) -> Result<u64, EngineError> {
        Ok(u64::from_le_bytes(self.arr(w)?))
    }
    fn i64(&mut self, w: &str) -> Result<i64, EngineError> {
        Ok(i64::from_le_bytes(self.arr(w)?))
    }
    fn f64(&mut self, w: &str) -> Result<f64, EngineError> {
        Ok(f64::from_le_bytes(self.arr(w)?))
    }
    /// A count, refused when it could not possibly fit in what is left.
    fn len(&mut self, w: &str) -> Result<usize, EngineError> {
        let n = self.u32(w)? as usize;
        if n > self.buf.len() - self.pos {
            return Err(EngineError::Snapshot(format!(
                "{w}: count {n} exceeds the snapshot"
            )));
        }
        Ok(n)
    }
    fn str(&mut self, w: &str) -> Result<String, EngineError> {
        let n = self.len(w)?;
        let b = self.take(n, w)?;
        String::from_utf8(b.to_vec()).map_err(|_| EngineError::Snapshot(format!("{w}: not UTF-8")))
    }
    fn source(&mut self, w: &str) -> Result<Option<Arc<str>>, EngineError> {
        let present = self.u8(w)? != 0;
        let s = self.str(w)?;
        Ok(present.then(|| Arc::from(s)))
    }
    fn slot(&mut self, units: usize, w: &str) -> Result<UnitSlot, EngineError> {
        let s = self.u32(w)?;
        if s as usize >= units {
            return Err(EngineError::Snapshot(format!("{w}: unit slot {s} out of range")));
        }
        Ok(UnitSlot(s))
    }
    fn filter(&mut self, units: usize) -> Result<Filter, EngineError> {
        let present = self.u8("filter")?;
        let agencies = self.u8("filter agencies")?;
        let statuses = self.u8("filter statuses")?;
        let nk = self.len("filter kinds")?;
        let kinds = (0..nk).map(|_| self.u16("kind")).collect::<Result<Vec<_>, _>>()?;
        let tags = self.u64("filter tags")?;
        let ni = self.len("filter ids")?;
        let ids = (0..ni)
            .map(|_| self.slot(units, "filter id"))
            .collect::<Result<Vec<_>, _>>()?;
        let age = self.i64("filter max age")?;
        let on = |bit: u8| present & (1 << bit) != 0;
        Ok(Filter {
            agencies: on(0).then_some(agencies),
            statuses: on(1).then_some(statuses),
            kinds: on(2).then_some(kinds),
            tags: on(3).then_some(tags),
            ids: on(4).then_some(ids),
            max_age_ms: on(5).then_some(age),
        })
    }
    fn shape(&mut self) -> Result<Shape, EngineError> {
        match self.u8("shape kind")? {
            0 => {
                let np = self.len("polygons")?;
                let mut polys = Vec::with_capacity(np);
                for _ in 0..np {
                    let nr = self.len("rings")?;
                    let mut rings = Vec::with_capacity(nr);
                    for _ in 0..nr {
                        let nc = self.len("ring")?;
                        let coords = (0..nc)
                            .map(|_| {
                                Ok(Coord {
                                    x: self.f64("x")?,
                                    y: self.f64("y")?,
                                })
                            })
                            .collect::<Result<Vec<_>, EngineError>>()?;
                        rings.push(LineString(coords));
                    }
                    if rings.is_empty() {
                        return Err(EngineError::Snapshot("polygon without rings".into()));
                    }
                    let ext = rings.remove(0);
                    polys.push(Polygon::new(ext, rings));
                }
                Shape::polygon(MultiPolygon(polys))
            }
            1 => Shape::circle(self.f64("lat")?, self.f64("lon")?, self.f64("radius")?),
            2 => Shape::bbox([self.f64("w")?, self.f64("s")?, self.f64("e")?, self.f64("n")?]),
            3 => {
                let n = self.len("cells")?;
                let cells = (0..n)
                    .map(|_| {
                        let v = self.u64("cell")?;
                        CellIndex::try_from(v).map_err(|_| EngineError::BadCell(format!("{v:x}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Shape::cells(cells)
            }
            k => Err(EngineError::Snapshot(format!("unknown shape kind {k}"))),
        }
    }
}

/// A fence as a snapshot holds it.
#[derive(Debug, Clone)]
struct FrozenFence {
    id: String,
    /// Its region id: a restored fence takes the same one, so one fix's
    /// alerts still come out in the same order (region-id order).
    region: u32,
    detect: Detect,
    dwell_s: u32,
    hysteresis_m: f64,
    /// Filter, shape, source and H3 cover, encoded when the fence was
    /// installed (the cover is kept so a restore installs it instead of
    /// computing it again: a thousand detailed fences, seconds).
    fixed: Arc<[u8]>,
    /// (unit slot, membership), by slot.
    members: Vec<(u32, Membership)>,
}

/// The engine's durable state copied out of it: flat vectors copied in
/// one go, so the writer is held for the copy (tens of milliseconds for a
/// million units) and not for the encoding, which runs anywhere after.
#[derive(Debug, Clone)]
pub struct Frozen {
    seq: u64,
    kind_names: Vec<String>,
    tag_names: Vec<String>,
    state: Vec<UnitState>,
    ids: Vec<u8>,
    id_end: Vec<u32>,
    keys: Vec<(u64, UnitSlot)>,
    fences: Vec<FrozenFence>,
    rules: Vec<(RuleSpec, Vec<(u32, u32)>)>,
    /// Callsigns and stale times, by slot.
    details: Vec<(u32, UnitDetails)>,
    /// The H3 cell of each occupied cell entry (units name theirs by
    /// entry): a restore places units without an H3 lookup each.
    cells: Vec<u64>,
    /// How long the copy held the engine.
    took: std::time::Duration,
}

impl Frozen {
    /// How long [`Engine::freeze`] held the engine for it.
    pub fn took(&self) -> std::time::Duration {
        self.took
    }

    /// Units it holds.
    pub fn units(&self) -> usize {
        self.state.len()
    }

    /// The alert `seq` it holds.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn id(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.id_end[i - 1] as usize };
        &self.ids[start..self.id_end[i] as usize]
    }

    /// Encodes it (see the module docs).
    pub fn encode(mut self) -> Vec<u8> {
        // Sorted here, off the writer: a million keys take tens of ms.
        self.keys.sort_unstable();
        self.details.sort_unstable_by_key(|d| d.0);
        let mut w = Writer(Vec::with_capacity(64 + self.ids.len() + self.state.len() * 64));
        w.0.extend_from_slice(MAGIC);
        w.u64(self.seq);
        w.len(self.kind_names.len());
        self.kind_names.iter().for_each(|k| w.str(k));
        w.len(self.tag_names.len());
        self.tag_names.iter().for_each(|t| w.str(t));
        w.len(self.state.len());
        for (i, st) in self.state.iter().enumerate() {
            let id = self.id(i);
            w.len(id.len());
            w.0.extend_from_slice(id);
            w.u8(st.agency);
            w.u8(st.status);
            w.u8(st.flags & (FLAG_STALE | FLAG_HAS_KIND));
            w.u16(st.kind);
            w.u64(st.tags);
            w.i64(st.time_ms);
            w.f64(st.lat);
            w.f64(st.lon);
            // Quantised as the engine keeps them: restored exactly.
            w.u16(st.speed);
            w.u16(st.heading);
            w.u16(st.accuracy);
            w.u64(self.cells.get(st.cell as usize).copied().unwrap_or(0));
        }
        w.len(self.keys.len());
        for &(k, s) in &self.keys {
            w.u64(k);
            w.u32(s.0);
        }
        w.len(self.fences.len());
        for f in &self.fences {
            w.str(&f.id);
            w.u32(f.region);
            w.u8(u8::from(f.detect.enter) | u8::from(f.detect.exit) << 1 | u8::from(f.detect.dwell) << 2);
            w.u32(f.dwell_s);
            w.f64(f.hysteresis_m);
            w.0.extend_from_slice(&f.fixed);
            w.len(f.members.len());
            for &(slot, m) in &f.members {
                w.u32(slot);
                w.i64(m.since_ms);
                w.u8(m.flags);
            }
        }
        w.len(self.rules.len());
        for (spec, pairs) in &self.rules {
            w.str(&spec.id);
            w.filter(&spec.from);
            w.filter(&spec.to);
            w.f64(spec.radius_m);
            w.f64(spec.hysteresis_m);
            w.source(spec.source.as_deref());
            w.len(pairs.len());
            for &(a, b) in pairs {
                w.u32(a);
                w.u32(b);
            }
        }
        w.len(self.details.len());
        for (slot, d) in &self.details {
            w.u32(*slot);
            w.source(d.callsign.as_deref());
            w.source(d.how.as_deref());
            w.u8(u8::from(d.stale_at_ms.is_some()));
            w.i64(d.stale_at_ms.unwrap_or(0));
        }
        w.0
    }
}

/// A fence's unchanging part as a snapshot holds it: filter, shape,
/// source, cover.
pub(crate) fn fence_static_part(r: &Region) -> Arc<[u8]> {
    let mut w = Writer(Vec::with_capacity(64 + r.cover.len() * 9));
    w.filter(&r.filter);
    w.shape(&r.shape);
    let source = match &r.kind {
        RegionKind::Fence { source, .. } => source.as_deref(),
        _ => None,
    };
    w.source(source);
    w.len(r.cover.len());
    for &(cell, interior) in &r.cover {
        w.u64(u64::from(cell));
        w.u8(u8::from(interior));
    }
    Arc::from(w.0)
}

impl Engine {
    /// Encodes the engine's durable state (see the module docs): [`freeze`]
    /// then [`Frozen::encode`].
    ///
    /// [`freeze`]: Engine::freeze
    pub fn snapshot(&self) -> Vec<u8> {
        self.freeze().encode()
    }

    /// Copies the durable state out, to be encoded elsewhere: the only part
    /// of a snapshot that needs the engine.
    pub fn freeze(&self) -> Frozen {
        let started = std::time::Instant::now();
        // Fences in region-id order, which is their order of creation: a
        // restored engine installs them in that order, so a fix that crosses
        // several at once fires its alerts in the same order (and `seq`s) as
        // before the restart.
        let mut order: Vec<(u32, &str)> = self
            .regions
            .fences
            .iter()
            .map(|(id, &r)| (r, id.as_str()))
            .collect();
        order.sort_unstable();
        // Members of every fence in one pass over the units, not one a fence;
        // region ids are list indices, so a flat table says which fence (if
        // any) a membership is of, without hashing (feeds' memberships are
        // most of them).
        let mut index: Vec<u32> = vec![u32::MAX; self.regions.list.len()];
        for (i, &(r, _)) in order.iter().enumerate() {
            if let Some(x) = index.get_mut(r as usize) {
                *x = i as u32;
            }
        }
        let mut members: Vec<Vec<(u32, Membership)>> = vec![Vec::new(); order.len()];
        for (i, st) in self.units.state.iter().enumerate() {
            if st.member == 0 {
                continue;
            }
            for m in self.regions.members.get(st.member) {
                if let Some(&f) = index.get(m.region as usize)
                    && f != u32::MAX
                {
                    members[f as usize].push((i as u32, *m));
                }
            }
        }
        let fences = order
            .iter()
            .zip(members)
            .filter_map(|(&(rid, id), members)| {
                let r = self.regions.get(rid)?;
                let RegionKind::Fence { detect, dwell_s, .. } = &r.kind else {
                    return None;
                };
                Some(FrozenFence {
                    id: id.to_owned(),
                    region: rid,
                    detect: *detect,
                    dwell_s: *dwell_s,
                    hysteresis_m: r.hysteresis_m,
                    fixed: r.frozen.clone().unwrap_or_else(|| fence_static_part(r)),
                    members,
                })
            })
            .collect();
        let keys: Vec<(u64, UnitSlot)> = self.units.keys().collect();
        let rules = self
            .rules
            .list
            .iter()
            .map(|r| {
                let mut pairs: Vec<(u32, u32)> = r
                    .partners
                    .iter()
                    .flat_map(|(&a, l)| l.iter().filter(move |&&b| a < b).map(move |&b| (a, b)))
                    .collect();
                pairs.sort_unstable();
                (r.spec.clone(), pairs)
            })
            .collect();
        let (ids, id_end) = self.units.id_arena();
        Frozen {
            seq: self.seq,
            kind_names: self.units.kind_names.clone(),
            tag_names: self.units.tag_names.clone(),
            state: self.units.state.clone(),
            ids: ids.as_bytes().to_vec(),
            id_end: id_end.to_vec(),
            keys,
            fences,
            rules,
            details: self.units.details.iter().map(|(&s, d)| (s, d.clone())).collect(),
            cells: self.fine_cells(),
            took: started.elapsed(),
        }
    }

    /// Rebuilds an engine from [`Engine::snapshot`] bytes.
    ///
    /// # Errors
    /// [`EngineError::Snapshot`] for bytes that are not a whole snapshot, and
    /// the errors of [`Engine::new`] for the configuration.
    pub fn restore(cfg: EngineConfig, bytes: &[u8]) -> Result<Self, EngineError> {
        let mut e = Engine::new(cfg)?;
        let mut r = Reader { buf: bytes, pos: 0 };
        let (with_cells, with_details, with_region_ids) = match r.take(MAGIC.len(), "magic")? {
            m if m == MAGIC => (true, true, true),
            m if m == MAGIC_04 => (true, true, false),
            m if m == MAGIC_03 => (true, false, false),
            m if m == MAGIC_02 => (false, false, false),
            _ => {
                return Err(EngineError::Snapshot(
                    "not a bluelight snapshot (bad magic)".into(),
                ));
            }
        };
        e.seq = r.u64("seq")?;
        let nk = r.len("kinds")?;
        for _ in 0..nk {
            let k = r.str("kind")?;
            e.units.intern_kind(&k);
        }
        let nt = r.len("tags")?;
        for _ in 0..nt {
            let t = r.str("tag")?;
            e.units.intern_tag(&t)?;
        }
        let nu = r.len("units")?;
        // Each unit takes at least 40 bytes: a count the bytes cannot hold
        // reserves nothing.
        if nu <= bytes.len() / 40 {
            e.units.reserve(nu, nu * 8, nu);
        }
        let mut cells: Vec<u64> = Vec::with_capacity(if with_cells { nu.min(bytes.len() / 40) } else { 0 });
        for i in 0..nu {
            let id = r.str("unit id")?;
            let slot = e.units.intern(&id);
            if slot.index() != i {
                return Err(EngineError::Snapshot(format!("duplicate unit id {id:?}")));
            }
            let st = &mut e.units.state[i];
            st.agency = r.u8("agency")?;
            st.status = r.u8("status")?;
            st.flags = r.u8("flags")?;
            st.kind = r.u16("kind")?;
            st.tags = r.u64("tags")?;
            st.time_ms = r.i64("time")?;
            let lat = r.f64("lat")?;
            let lon = r.f64("lon")?;
            st.speed = r.u16("speed")?;
            st.heading = r.u16("heading")?;
            st.accuracy = r.u16("accuracy")?;
            st.lat = lat;
            st.lon = lon;
            if with_cells {
                cells.push(r.u64("unit cell")?);
            }
            if e.units.state[i].seen() && (!(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon))
            {
                return Err(EngineError::Snapshot(format!(
                    "unit {id:?} has an invalid position"
                )));
            }
        }
        let nkeys = r.len("keys")?;
        for _ in 0..nkeys {
            let k = r.u64("key")?;
            let s = r.slot(nu, "key slot")?;
            e.units.register_key_of(k, s);
        }
        // Units are placed in the index after the fences are installed: a
        // fence installed over placed units would look for its members
        // among them, and the snapshot's memberships are the truth anyway
        // (a million units under a thousand fences: seconds, not minutes).
        let nf = r.len("fences")?;
        for _ in 0..nf {
            let id = r.str("fence id")?;
            let region_id = if with_region_ids {
                Some(r.u32("fence region id")?)
            } else {
                None
            };
            let d = r.u8("detect")?;
            let dwell_s = r.u32("dwell")?;
            let hysteresis_m = r.f64("hysteresis")?;
            let fixed_from = r.pos;
            let filter = r.filter(nu)?;
            let shape = r.shape()?;
            if !(hysteresis_m.is_finite() && (0.0..=100_000.0).contains(&hysteresis_m)) {
                return Err(EngineError::Snapshot(format!("fence {id:?}: bad hysteresis")));
            }
            let source = r.source("fence source")?;
            let nc = r.len("cover")?;
            let cover = (0..nc)
                .map(|_| {
                    let v = r.u64("cover cell")?;
                    let cell = CellIndex::try_from(v).map_err(|_| EngineError::BadCell(format!("{v:x}")))?;
                    Ok((cell, r.u8("cover interior")? != 0))
                })
                .collect::<Result<Vec<CoverCell>, EngineError>>()?;
            let kind = RegionKind::Fence {
                name: Arc::from(id.as_str()),
                detect: Detect {
                    enter: d & 1 != 0,
                    exit: d & 2 != 0,
                    dwell: d & 4 != 0,
                },
                dwell_s,
                source,
            };
            if e.regions.fences.contains_key(&id) {
                return Err(EngineError::Snapshot(format!("fence {id:?} twice")));
            }
            // No unit is placed yet: installing fires nothing and finds no
            // member; the snapshot's memberships follow.
            let fixed: Arc<[u8]> = Arc::from(bytes.get(fixed_from..r.pos).unwrap_or_default());
            let region = Region {
                kind,
                shape,
                filter,
                hysteresis_m,
                cover,
                frozen: Some(fixed),
            };
            let rid = match region_id {
                Some(rid) => {
                    e.regions
                        .install_fence_at(rid, region)
                        .map_err(|why| EngineError::Snapshot(format!("fence {id:?}: {why}")))?;
                    rid
                }
                // Older snapshots list fences in the order they were
                // made, which was their region ids' order.
                None => e.regions.install(region),
            };
            e.regions.fences.insert(id, rid);
            let nm = r.len("members")?;
            for _ in 0..nm {
                let s = r.slot(nu, "member")?;
                let since_ms = r.i64("since")?;
                let flags = r.u8("member flags")?;
                e.add_membership(
                    s.0,
                    Membership {
                        region: rid,
                        since_ms,
                        flags,
                    },
                );
            }
        }
        let nr = r.len("rules")?;
        for _ in 0..nr {
            let spec = RuleSpec {
                id: r.str("rule id")?,
                from: r.filter(nu)?,
                to: r.filter(nu)?,
                radius_m: r.f64("radius")?,
                hysteresis_m: r.f64("hysteresis")?,
                source: r.source("rule source")?,
            };
            let mut rule = Rule::new(spec);
            rule.name = Arc::from(rule.spec.id.as_str());
            let np = r.len("pairs")?;
            for _ in 0..np {
                let a = r.slot(nu, "pair")?.0;
                let b = r.slot(nu, "pair")?.0;
                rule.partners.entry(a).or_default().push(b);
                rule.partners.entry(b).or_default().push(a);
            }
            e.rules.list.push(rule);
        }
        let nd = if with_details { r.len("details")? } else { 0 };
        for _ in 0..nd {
            let slot = r.slot(nu, "details slot")?;
            let callsign = r.source("callsign")?;
            let how = r.source("how")?;
            let has_stale = r.u8("stale time")? != 0;
            let stale_at_ms = r.i64("stale time")?;
            let d = UnitDetails {
                callsign: callsign.map(|c| Box::from(c.as_ref())),
                how: how.map(|h| Box::from(h.as_ref())),
                stale_at_ms: has_stale.then_some(stale_at_ms),
            };
            e.units.state[slot.index()].flags |= FLAG_HAS_DETAILS;
            e.units.details.insert(slot.0, d);
        }
        if r.pos != bytes.len() {
            return Err(EngineError::Snapshot(format!(
                "{} trailing bytes",
                bytes.len() - r.pos
            )));
        }
        e.index.begin_bulk(nu);
        for i in 0..nu {
            if e.units.state[i].seen() {
                e.place_restored(i as u32, cells.get(i).copied().unwrap_or(0));
            }
        }
        e.index.end_bulk();
        Ok(e)
    }
}
