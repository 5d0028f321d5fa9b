//! The engine: owns every unit, shard, region, rule and query, and applies
//! fixes to them. Single-threaded by design: the caller owns the clock and
//! the threads.

use h3o::{CellIndex, LatLng, Resolution};

use crate::alert::{Alert, AlertEvent, Outputs};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::history::History;
use crate::model::{Fix, Status, UnitSlot};
use crate::region::Regions;
use crate::rules::Rules;
use crate::shard::{Member, NONE, ShardedIndex};
use crate::sphere;
use crate::standing::StandingQueries;
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
    /// Fixes the writer has taken, in order, accepted or refused
    /// ([`Engine::count_fixes_seen`]): with one sender on one ordered
    /// connection, an answer read with this count says exactly which of
    /// its fixes it reflects (the exact nearest checker of `loadgen`).
    pub fixes_seen: u64,
}

/// The in-memory spatial engine. See the crate docs for the model.
///
/// Its state, by owner: units (records and ids), the shard index of
/// occupied cells, regions (fences, feed areas, zones, their covers and
/// memberships), standing queries, proximity rules and history. The
/// behaviour that reads several of them is in `impl Engine` blocks, one
/// file a concern (`fences`, `query`, `continuous`, `proximity`, `scan`,
/// `registry`, `snapshot`).
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
    /// Shard trees of occupied cells.
    pub(crate) index: ShardedIndex,
    /// Fences, feed areas and zones, their covers and memberships.
    pub(crate) regions: Regions,
    /// Standing-nearest queries.
    pub(crate) standing: StandingQueries,
    /// Proximity rules.
    pub(crate) rules: Rules,
    /// Recent fixes.
    pub(crate) history: History,
    /// Next feed or query id.
    pub(crate) next_id: u32,
    /// Reused slot list (units near a region or a rule's radius).
    pub(crate) scratch_slots: Vec<u32>,
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
            regions: Regions::default(),
            standing: StandingQueries::default(),
            rules: Rules::default(),
            next_id: 1,
            scratch_slots: Vec::new(),
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

    /// Counts `n` more fixes as taken by the writer (after they are applied
    /// or refused, before any query runs).
    pub fn count_fixes_seen(&mut self, n: u64) {
        self.counters.fixes_seen += n;
    }

    /// Counters since start.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Regions (fences, feed areas, standing-query zones) live, and the
    /// slots their table holds: about twice the most of either kind alive
    /// at once (fences take even ids, feeds and zones odd ones, and each
    /// takes removed ids again).
    pub fn region_counts(&self) -> (usize, usize) {
        let live = self.regions.list.iter().filter(|r| r.is_some()).count();
        (live, self.regions.list.len())
    }

    /// Candidate sets interned now: at most one per occupied cell, plus
    /// those no cell holds awaiting release (fewer than 4,096).
    pub fn candidate_sets(&self) -> usize {
        self.regions.cover.interned()
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
            out.push_alert(&mut self.seq, Alert::about(AlertEvent::Fresh, slot, fix.time_ms));
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
            let st = self.units.state[i];
            let member = self.regions.evaluate(
                slot.0,
                &st,
                candset,
                &mut self.seq,
                &mut self.counters.exact_tests,
                out,
            );
            self.units.state[i].member = member;
            for &(q, inside) in &self.regions.zones_touched {
                self.standing.touch_zone(q, slot.0, inside, st.lat, st.lon);
            }
        }
        if !self.standing.global.is_empty() {
            self.standing.touch_global(slot.0, &self.units.state[i]);
        }
        if !self.rules.list.is_empty() {
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
        self.move_to_cell(slot, ll.to_cell(self.fine));
    }

    /// Puts a unit in the fine cell `h3` (which must hold its position).
    fn move_to_cell(&mut self, slot: u32, h3: CellIndex) {
        let st = self.units.state[slot as usize];
        if st.cell != NONE && self.index.cells[st.cell as usize].cell == u64::from(h3) {
            return;
        }
        self.counters.cell_changes += 1;
        if st.cell != NONE {
            self.unlink(slot, st.cell);
        }
        let (index, cover) = (&mut self.index, &mut self.regions.cover);
        let c = index.cell_for(h3, self.shard_res, || cover.take(h3));
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
            let held = self.index.cells[c as usize].candset;
            self.regions.cover.put_back(held);
            self.index.cells[c as usize].candset = 0;
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

    /// Places a restored unit in its shard and cover cell: in `stored`,
    /// the fine cell the snapshot gives, when it holds the unit. Only the
    /// units outside the cell's inscribed cap (about a tenth) need the H3
    /// lookup to tell; without a stored cell, every unit does.
    pub(crate) fn place_restored(&mut self, slot: u32, stored: u64) {
        let Some(h3) = CellIndex::try_from(stored)
            .ok()
            .filter(|c| c.resolution() == self.fine)
        else {
            self.refresh(slot);
            return;
        };
        self.move_to_cell(slot, h3);
        let st = &self.units.state[slot as usize];
        let c = &self.index.cells[st.cell as usize];
        let a = c.anchor.map(f64::from);
        if sphere::chord2(st.xyz(), a) <= f64::from(c.inscribed_c2) {
            return;
        }
        let holds = LatLng::new(st.lat, st.lon).is_ok_and(|ll| ll.to_cell(self.fine) == h3);
        if !holds {
            self.refresh(slot);
        }
    }

    /// The fine cell a unit is in (0 when it has none), for snapshots.
    pub(crate) fn fine_cells(&self) -> Vec<u64> {
        self.index.cells.iter().map(|c| c.cell).collect()
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
                // Taken before the old is given back, so a set that stays
                // the same never counts zero holders.
                let new = self.regions.cover.take(h3);
                let old = std::mem::replace(&mut self.index.cells[c as usize].candset, new);
                self.regions.cover.put_back(old);
            }
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

    /// Takes history memory readied on another thread, for the next
    /// fixes' records (see [`crate::HistoryMemory`]).
    pub fn give_history_memory(&mut self, m: crate::HistoryMemory) {
        self.history.give(m);
    }

    /// Whether history keeps fixes (so memory readied for it is used).
    pub fn keeps_history(&self) -> bool {
        self.history.keeps()
    }

    /// Touches what applying a fix reads first for each of `slots` (the
    /// unit's record, its cell and its entry there), so that the cache
    /// misses of a chunk of fixes overlap instead of coming one after
    /// another: the loads of one unit do not wait for the last unit's.
    pub fn warm_for_fixes(&self, slots: impl IntoIterator<Item = UnitSlot>) {
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
