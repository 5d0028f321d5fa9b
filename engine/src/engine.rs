//! The engine: owns every unit, shard, region, rule and query, and applies
//! fixes to them. Single-threaded by design: the caller owns the clock and
//! the threads.

use std::collections::HashMap as StdHashMap;
use std::sync::Arc;

use h3o::{CellIndex, LatLng, Resolution};

use crate::alert::{Alert, AlertEvent, FeedChange, FeedEvent, Outputs};
use crate::config::EngineConfig;
use crate::cover::CoverIndex;
use crate::error::EngineError;
use crate::history::History;
use crate::model::{Agency, Fix, Status, UnitSlot};
use crate::region::{DWELL_FIRED, Membership, Memberships, Region, RegionKind};
use crate::rules::Rule;
use crate::shard::{Member, NONE, ShardedIndex};
use crate::sphere;
use crate::standing::StandingNearest;
use crate::units::{FLAG_STALE, UnitState, UnitTable};

/// What became of one fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The unit moved to it (events, if any, are in the outputs).
    Moved,
    /// Older than the unit's latest: kept in history, changed nothing.
    Older,
    /// Same time as the unit's latest: dropped.
    Duplicate,
}

/// Counters the engine keeps about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Fixes that moved a unit.
    pub fixes_moved: u64,
    /// Fixes older than their unit's latest.
    pub fixes_older: u64,
    /// Fixes with the same time as their unit's latest.
    pub fixes_duplicate: u64,
    /// Fixes outside their unit's inscribed cap (one H3 lookup each).
    pub refreshes: u64,
    /// Fixes that moved their unit to another fine cell (cell geometry,
    /// candidate lookup, R-tree update).
    pub cell_changes: u64,
    /// Exact geometry tests (boundary-cell candidates) made by fixes.
    pub exact_tests: u64,
}

/// The in-memory spatial engine. See the crate docs for the model.
#[derive(Debug)]
pub struct Engine {
    /// Tuning.
    pub(crate) cfg: EngineConfig,
    /// `cfg.fence_res` as a resolution.
    pub(crate) fine: Resolution,
    /// `cfg.shard_res` as a resolution.
    pub(crate) shard_res: Resolution,
    /// Every unit.
    pub(crate) units: UnitTable,
    /// Shard trees of anchors.
    pub(crate) index: ShardedIndex,
    /// Region covers.
    pub(crate) cover: CoverIndex,
    /// Regions by id; `None` once removed (ids are never reused).
    pub(crate) regions: Vec<Option<Region>>,
    /// Whether region `i` is a fence that detects dwell: the clock's scan
    /// reads this, not the regions (a cache miss per membership, most of a
    /// national scan's time), and skips dwell altogether when none is.
    pub(crate) region_dwell: Vec<bool>,
    /// Fence id → region.
    pub(crate) fences: StdHashMap<String, u32>,
    /// Feed id → region.
    pub(crate) feeds: StdHashMap<u32, u32>,
    /// Standing-nearest queries by id.
    pub(crate) queries: StdHashMap<u32, StandingNearest>,
    /// Queries whose zone is the whole world (fewer than k matches).
    pub(crate) global_queries: Vec<u32>,
    /// Queries to re-run at the next flush.
    pub(crate) dirty_queries: Vec<u32>,
    /// Next feed or query id.
    pub(crate) next_id: u32,
    /// Membership lists.
    pub(crate) members: Memberships,
    /// Reused membership list for the merge on the hot path.
    pub(crate) scratch_members: Vec<Membership>,
    /// Reused slot list.
    pub(crate) scratch_slots: Vec<u32>,
    /// Reused list of a unit's rule partners (the rule pass runs per fix).
    pub(crate) scratch_partners: Vec<u32>,
    /// Proximity rules.
    pub(crate) rules: Vec<Rule>,
    /// Recent fixes.
    pub(crate) history: History,
    /// Last alert sequence number used.
    pub(crate) seq: u64,
    /// Counters.
    pub(crate) counters: EngineCounters,
    /// Latest device time applied (the clock of flush-time re-runs).
    pub(crate) latest_ms: i64,
}

impl Engine {
    /// A new, empty engine.
    ///
    /// # Errors
    /// [`EngineError::BadParameter`] for resolutions outside 0..=15 or a
    /// shard resolution finer than the fence resolution.
    pub fn new(cfg: EngineConfig) -> Result<Self, EngineError> {
        let res = |what, v: u8| {
            Resolution::try_from(v).map_err(|_| EngineError::BadParameter {
                what,
                value: f64::from(v),
                reason: "H3 resolutions are 0..=15",
            })
        };
        let fine = res("fence_res", cfg.fence_res)?;
        let shard_res = res("shard_res", cfg.shard_res)?;
        if cfg.shard_res > cfg.fence_res {
            return Err(EngineError::BadParameter {
                what: "shard_res",
                value: f64::from(cfg.shard_res),
                reason: "must not be finer than fence_res",
            });
        }
        let history = History::new(cfg.history_retention_s, cfg.history_max_fixes);
        Ok(Self {
            cfg,
            fine,
            shard_res,
            units: UnitTable::default(),
            index: ShardedIndex::default(),
            cover: CoverIndex::default(),
            regions: Vec::new(),
            region_dwell: Vec::new(),
            fences: StdHashMap::new(),
            feeds: StdHashMap::new(),
            queries: StdHashMap::new(),
            global_queries: Vec::new(),
            dirty_queries: Vec::new(),
            next_id: 1,
            members: Memberships::default(),
            scratch_members: Vec::new(),
            scratch_slots: Vec::new(),
            scratch_partners: Vec::new(),
            rules: Vec::new(),
            history,
            seq: 0,
            counters: EngineCounters::default(),
            latest_ms: i64::MIN,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Counters since start.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// The last alert `seq` used (0 before any alert).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    // ----- the hot path ------------------------------------------------

    /// Applies one fix. Fixes of a batch are applied in order; call
    /// [`Engine::flush`] after a batch so standing-nearest queries update.
    ///
    /// The fix must be valid (finite, in range): ingest validates.
    pub fn apply(&mut self, slot: UnitSlot, fix: &Fix, out: &mut Outputs) -> Applied {
        let i = slot.index();
        let st = &mut self.units.state[i];
        if st.seen() {
            if fix.time_ms == st.time_ms {
                self.counters.fixes_duplicate += 1;
                return Applied::Duplicate;
            }
            if fix.time_ms < st.time_ms {
                self.counters.fixes_older += 1;
                self.history.push(slot, fix);
                return Applied::Older;
            }
        }
        st.time_ms = fix.time_ms;
        st.set_measurements(fix);
        if fix.status != Status::Unknown {
            st.status = fix.status as u8;
        }
        let was_stale = st.stale();
        st.flags &= !FLAG_STALE;
        st.lat = fix.lat;
        st.lon = fix.lon;
        let p = sphere::to_vec3(fix.lat, fix.lon);
        let cell = st.cell;
        self.counters.fixes_moved += 1;
        self.latest_ms = self.latest_ms.max(fix.time_ms);
        self.history.push(slot, fix);
        if was_stale {
            self.emit(out, AlertEvent::Fresh, slot, fix.time_ms, None, None, None, None);
        }
        let inside_safe = cell != NONE && {
            let c = &self.index.cells[cell as usize];
            let a = [
                f64::from(c.anchor[0]),
                f64::from(c.anchor[1]),
                f64::from(c.anchor[2]),
            ];
            sphere::chord2(p, a) <= f64::from(c.inscribed_c2)
        };
        if !inside_safe {
            self.refresh(slot.0);
        }
        let st = &self.units.state[i];
        if st.cell != NONE {
            let p32 = [p[0] as f32, p[1] as f32, p[2] as f32];
            self.index.cells[st.cell as usize].members[st.pos_in_cell as usize].xyz = p32;
        }
        let candset = if st.cell == NONE {
            0
        } else {
            self.index.cells[st.cell as usize].candset
        };
        if candset != 0 || st.member != 0 {
            self.evaluate_regions(slot.0, candset, out);
        }
        if !self.global_queries.is_empty() {
            self.dirty_global(slot.0);
        }
        if !self.rules.is_empty() {
            self.evaluate_rules(slot.0, out);
        }
        Applied::Moved
    }

    /// Applies a batch in order, then flushes standing queries.
    pub fn apply_batch(&mut self, fixes: &[(UnitSlot, Fix)], out: &mut Outputs) {
        for (slot, fix) in fixes {
            self.apply(*slot, fix, out);
        }
        self.flush(out);
    }

    /// Called for a fix outside its cell's inscribed cap: one H3 lookup; on a
    /// change of cell, the unit moves from one cell's members to the other's
    /// (creating or releasing cells, which touches the trees).
    fn refresh(&mut self, slot: u32) {
        self.counters.refreshes += 1;
        let st = self.units.state[slot as usize];
        let Ok(ll) = LatLng::new(st.lat, st.lon) else {
            return;
        };
        let h3 = ll.to_cell(self.fine);
        if st.cell != NONE && self.index.cells[st.cell as usize].cell == u64::from(h3) {
            return;
        }
        self.counters.cell_changes += 1;
        if st.cell != NONE {
            self.unlink(slot, st.cell);
        }
        let (index, cover) = (&mut self.index, &mut self.cover);
        let c = index.cell_for(h3, self.shard_res, || cover.lookup(h3));
        let members = &mut self.index.cells[c as usize].members;
        let xyz = self.units.state[slot as usize].xyz();
        if members.len() == members.capacity() {
            // Grow by a quarter, not double: cells hold a few units each and
            // keep their capacity, so tight arrays are worth a rare realloc.
            members.reserve_exact((members.len() / 4).max(2));
        }
        members.push(Member {
            xyz: [xyz[0] as f32, xyz[1] as f32, xyz[2] as f32],
            slot,
        });
        let pos = (members.len() - 1) as u32;
        let st = &mut self.units.state[slot as usize];
        st.cell = c;
        st.pos_in_cell = pos;
    }

    /// Takes a unit out of its cell, releasing the cell when empty.
    fn unlink(&mut self, slot: u32, c: u32) {
        let pos = self.units.state[slot as usize].pos_in_cell as usize;
        let members = &mut self.index.cells[c as usize].members;
        members.swap_remove(pos);
        if let Some(moved) = members.get(pos) {
            self.units.state[moved.slot as usize].pos_in_cell = pos as u32;
        }
        let empty = members.is_empty();
        self.units.state[slot as usize].cell = NONE;
        if empty {
            self.index.release(c);
        }
    }

    /// Calls `f` with every unit in the occupied cell `c`.
    #[inline]
    pub(crate) fn for_each_unit_in_cell(&self, c: u32, mut f: impl FnMut(u32)) {
        for m in &self.index.cells[c as usize].members {
            f(m.slot);
        }
    }

    /// Refresh for restore: places a unit in its shard and cover cell.
    pub(crate) fn refresh_slot(&mut self, slot: u32) {
        self.refresh(slot);
    }

    /// Looks up again the candidates of the cells of `slots` (or of every
    /// occupied cell) after the cover changed there.
    pub(crate) fn invalidate(&mut self, slots: Option<&[u32]>) {
        let cells: Vec<u32> = match slots {
            Some(list) => {
                let mut v: Vec<u32> = list
                    .iter()
                    .map(|&s| self.units.state[s as usize].cell)
                    .filter(|&c| c != NONE)
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            None => (0..self.index.cells.len() as u32)
                .filter(|&c| !self.index.cells[c as usize].members.is_empty())
                .collect(),
        };
        for c in cells {
            if let Ok(h3) = CellIndex::try_from(self.index.cells[c as usize].cell) {
                self.index.cells[c as usize].candset = self.cover.lookup(h3);
            }
        }
    }

    /// Re-evaluates the regions a unit is a candidate or member of.
    fn evaluate_regions(&mut self, slot: u32, candset: u32, out: &mut Outputs) {
        let st = self.units.state[slot as usize];
        let (lat, lon) = (st.lat, st.lon);
        let mut new = std::mem::take(&mut self.scratch_members);
        new.clear();
        let cands = self.cover.set(candset);
        let old = self.members.get(st.member);
        let (mut ci, mut mi) = (0, 0);
        loop {
            let c = cands.get(ci).map(|&c| (c >> 1, c & 1 == 1));
            let m = old.get(mi).copied();
            let region_id = match (c, m) {
                (None, None) => break,
                (Some((r, _)), None) => r,
                (None, Some(m)) => m.region,
                (Some((r, _)), Some(m)) => r.min(m.region),
            };
            let cand = c.filter(|(r, _)| *r == region_id).map(|(_, interior)| interior);
            let mem = m.filter(|m| m.region == region_id);
            if cand.is_some() {
                ci += 1;
            }
            if mem.is_some() {
                mi += 1;
            }
            let Some(Some(region)) = self.regions.get(region_id as usize) else {
                continue;
            };
            let matches = region.filter.matches_state(slot, &st, st.time_ms);
            let geom = match cand {
                Some(true) => true,
                Some(false) if matches => {
                    self.counters.exact_tests += 1;
                    region.shape.contains(lat, lon)
                }
                _ => false,
            };
            let mut inside = matches && geom;
            if !inside && matches && mem.is_some() && cand.is_some() && region.hysteresis_m > 0.0 {
                inside = region.shape.distance_to_boundary_m(lat, lon) <= region.hysteresis_m;
            }
            let kept = match (mem, inside) {
                (Some(m), true) => Some(m),
                (None, true) => Some(Membership {
                    region: region_id,
                    since_ms: st.time_ms,
                    flags: 0,
                }),
                _ => None,
            };
            match &region.kind {
                RegionKind::Fence {
                    name,
                    detect,
                    dwell_s,
                } => {
                    let ev = match (mem.is_some(), inside) {
                        (false, true) if detect.enter => Some(AlertEvent::Enter),
                        (true, false) if detect.exit => Some(AlertEvent::Exit),
                        _ => None,
                    };
                    let dwell_due = detect.dwell
                        && kept.is_some_and(|k| {
                            k.flags & DWELL_FIRED == 0
                                && st.time_ms - k.since_ms >= i64::from(*dwell_s) * 1000
                        });
                    if let Some(ev) = ev {
                        self.seq += 1;
                        out.alerts.push(Alert {
                            seq: self.seq,
                            event: ev,
                            unit: UnitSlot(slot),
                            time_ms: st.time_ms,
                            fence: Some(name.clone()),
                            rule: None,
                            other: None,
                            distance_m: None,
                        });
                    }
                    if let (true, Some(mut k)) = (dwell_due, kept) {
                        k.flags |= DWELL_FIRED;
                        self.seq += 1;
                        out.alerts.push(Alert {
                            seq: self.seq,
                            event: AlertEvent::Dwell,
                            unit: UnitSlot(slot),
                            time_ms: st.time_ms,
                            fence: Some(name.clone()),
                            rule: None,
                            other: None,
                            distance_m: None,
                        });
                        new.push(k);
                        continue;
                    }
                }
                RegionKind::Feed(feed) => {
                    let change = match (mem.is_some(), inside) {
                        (false, true) => Some(FeedChange::Entered),
                        (true, true) => Some(FeedChange::Moved),
                        (true, false) => Some(FeedChange::Left),
                        (false, false) => None,
                    };
                    if let Some(change) = change {
                        out.feed.push(FeedEvent {
                            feed: *feed,
                            unit: UnitSlot(slot),
                            change,
                        });
                    }
                }
                RegionKind::Zone(q) => {
                    if mem.is_some() || inside {
                        let q = *q;
                        if let Some(query) = self.queries.get_mut(&q)
                            && !query.dirty
                            && query.may_change(slot, inside, lat, lon)
                        {
                            query.dirty = true;
                            self.dirty_queries.push(q);
                        }
                    }
                }
            }
            if let Some(k) = kept {
                new.push(k);
            }
        }
        let idx = self.members.replace(st.member, &mut new);
        self.units.state[slot as usize].member = idx;
        self.scratch_members = new;
    }

    #[allow(clippy::too_many_arguments, reason = "mirrors the alert's optional fields")]
    pub(crate) fn emit(
        &mut self,
        out: &mut Outputs,
        event: AlertEvent,
        unit: UnitSlot,
        time_ms: i64,
        fence: Option<Arc<str>>,
        rule: Option<Arc<str>>,
        other: Option<UnitSlot>,
        distance_m: Option<f64>,
    ) {
        self.seq += 1;
        out.alerts.push(Alert {
            seq: self.seq,
            event,
            unit,
            time_ms,
            fence,
            rule,
            other,
            distance_m,
        });
    }

    // ----- time --------------------------------------------------------

    /// Advances the engine's notion of time: marks units stale, fires dwell
    /// for units that stopped reporting inside a fence, expires history.
    /// Call about once a second with the clock's time.
    pub fn tick(&mut self, now_ms: i64, out: &mut Outputs) {
        self.tick_part(now_ms, 0, 1, out);
    }

    /// [`Engine::tick`] over one of `parts` equal runs of units (`part` in
    /// `0..parts`; history expires with part 0). A server calls the parts in
    /// turn, so the engine is never held for a whole scan of a national
    /// fleet (about 40 ms at 300k units) and fixes and queries wait at most
    /// one part.
    pub fn tick_part(&mut self, now_ms: i64, part: usize, parts: usize, out: &mut Outputs) {
        let parts = parts.max(1);
        let part = part % parts;
        let len = self.units.state.len();
        // One pass over a few bytes a region, against one per unit below.
        let any_dwell = self.region_dwell.contains(&true);
        for i in len * part / parts..len * (part + 1) / parts {
            let st = self.units.state[i];
            if !st.seen() {
                continue;
            }
            if !st.stale() && now_ms - st.time_ms > self.cfg.stale_after_ms(Agency::from_u8(st.agency)) {
                self.units.state[i].flags |= FLAG_STALE;
                self.emit(
                    out,
                    AlertEvent::Stale,
                    UnitSlot(i as u32),
                    now_ms,
                    None,
                    None,
                    None,
                    None,
                );
            }
            if st.member != 0 && any_dwell {
                self.tick_dwell(i as u32, st.member, now_ms, out);
            }
        }
        if part == 0 {
            self.history.expire(now_ms);
        }
    }

    fn tick_dwell(&mut self, slot: u32, member: u32, now_ms: i64, out: &mut Outputs) {
        let n = self.members.get(member).len();
        for j in 0..n {
            let m = self.members.get(member)[j];
            if m.flags & DWELL_FIRED != 0
                || !self.region_dwell.get(m.region as usize).copied().unwrap_or(false)
            {
                continue;
            }
            let Some(Some(Region {
                kind:
                    RegionKind::Fence {
                        name,
                        detect,
                        dwell_s,
                    },
                ..
            })) = self.regions.get(m.region as usize)
            else {
                continue;
            };
            if detect.dwell && now_ms - m.since_ms >= i64::from(*dwell_s) * 1000 {
                let name = name.clone();
                self.members.get_mut(member)[j].flags |= DWELL_FIRED;
                self.emit(
                    out,
                    AlertEvent::Dwell,
                    UnitSlot(slot),
                    now_ms,
                    Some(name),
                    None,
                    None,
                    None,
                );
            }
        }
    }

    // ----- standing nearest -------------------------------------------

    fn dirty_global(&mut self, slot: u32) {
        for i in 0..self.global_queries.len() {
            let q = self.global_queries[i];
            let Some(query) = self.queries.get(&q) else {
                continue;
            };
            if query.dirty || !self.matches(&query.filter, slot, i64::MAX) {
                continue;
            }
            if let Some(query) = self.queries.get_mut(&q) {
                query.dirty = true;
            }
            self.dirty_queries.push(q);
        }
    }

    /// Re-runs the standing queries that fixes since the last flush touched;
    /// pushes the ids of those whose result set or order changed.
    pub fn flush(&mut self, out: &mut Outputs) {
        while let Some(q) = self.dirty_queries.pop() {
            let now = self.queries.get(&q).map_or(0, |_| self.latest_ms);
            self.rerun_query(q, out, now);
        }
    }

    /// A fresh id for a feed or query.
    pub(crate) fn alloc_query_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The fine cell of a unit now (PROTOCOL.md `h3`, at the fence resolution).
    pub fn unit_cell(&self, slot: UnitSlot) -> Option<CellIndex> {
        let st = self.units.state.get(slot.index())?;
        let c = self.index.cells.get(st.cell as usize)?;
        CellIndex::try_from(c.cell).ok()
    }

    /// Work done ahead while the caller is idle, so that it does not fall
    /// inside a later batch: readies history memory. Returns whether it
    /// did anything (call again until false).
    pub fn prepare(&mut self) -> bool {
        self.history.prepare()
    }

    /// Touches what applying a fix reads first for each of `slots` (the
    /// unit's record, its cell and its entry there), so that the cache
    /// misses of a chunk of fixes overlap instead of coming one after
    /// another: the loads of one unit do not wait for the last unit's.
    pub fn warm_for_fixes(&self, slots: &[UnitSlot]) {
        let mut acc = 0u64;
        for s in slots {
            if let Some(st) = self.units.state.get(s.index()) {
                acc ^= st.time_ms as u64;
                if let Some(c) = self.index.cells.get(st.cell as usize) {
                    acc ^= u64::from(c.candset);
                    acc ^= c
                        .members
                        .get(st.pos_in_cell as usize)
                        .map_or(0, |m| u64::from(m.slot));
                }
            }
        }
        std::hint::black_box(acc);
    }

    /// The same for copying units out ([`Engine::unit_borrowed`] and
    /// [`Engine::unit_cell`]): the record, the cell and the id.
    pub fn warm_for_copies(&self, slots: impl Iterator<Item = UnitSlot>) {
        let mut acc = 0u64;
        for s in slots {
            if let Some(st) = self.units.state.get(s.index()) {
                acc ^= st.time_ms as u64;
                acc ^= self.index.cells.get(st.cell as usize).map_or(0, |c| c.cell);
                acc ^= self.units.id(s).as_bytes().first().map_or(0, |b| u64::from(*b));
            }
        }
        std::hint::black_box(acc);
    }

    /// Occupied fine cells (for metrics and memory reports).
    pub fn occupied_cells(&self) -> usize {
        self.index.occupied()
    }

    /// A unit's latest `[lat, lon]`.
    #[inline]
    pub(crate) fn lat_lon(&self, slot: u32) -> [f64; 2] {
        let st = &self.units.state[slot as usize];
        [st.lat, st.lon]
    }

    /// Read access to a unit's hot state for crate modules.
    pub(crate) fn state(&self, slot: u32) -> &UnitState {
        &self.units.state[slot as usize]
    }

    /// Heap bytes of live state by part, excluding history and regions, as
    /// the engine counts them from its own capacities (the memory benchmark
    /// checks the total against a counting allocator).
    pub fn memory_parts(&self) -> Vec<(&'static str, usize)> {
        let mut v: Vec<(&'static str, usize)> = self.units.heap_parts().into();
        v.extend(self.index.heap_parts());
        v
    }
}
