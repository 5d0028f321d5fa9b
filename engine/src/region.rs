//! Regions: anything a unit can be inside of — a fence, a feed's area, or a
//! standing-nearest zone — with their covers, the per-unit membership lists,
//! and the evaluation of one unit against them (enter, exit, dwell, feed
//! changes, touched zones).

use std::collections::HashMap;
use std::sync::Arc;

use crate::alert::{Alert, AlertEvent, FeedChange, FeedEvent, Outputs};
use crate::candidates::CoverIndex;
use crate::cover::CoverCell;
use crate::filter::Filter;
use crate::model::UnitSlot;
use crate::shape::Shape;
use crate::units::UnitState;

/// Events a fence detects (PROTOCOL.md `detect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detect {
    /// Fire `enter`.
    pub enter: bool,
    /// Fire `exit`.
    pub exit: bool,
    /// Fire `dwell` after `dwell_s` inside.
    pub dwell: bool,
}

impl Default for Detect {
    fn default() -> Self {
        Self {
            enter: true,
            exit: true,
            dwell: false,
        }
    }
}

/// A geofence as defined by its owner.
#[derive(Debug, Clone)]
pub struct FenceSpec {
    /// The fence's id (URL path segment).
    pub id: String,
    /// Its geometry.
    pub shape: Shape,
    /// Which events it fires.
    pub detect: Detect,
    /// Seconds inside before `dwell` fires; needed when `detect.dwell`.
    pub dwell_s: u32,
    /// An inside unit only exits once farther than this outside, metres.
    pub hysteresis_m: f64,
    /// Which units it applies to.
    pub filter: Filter,
    /// The definition as its owner sent it (the GeoJSON text of a PUT):
    /// what `GET` answers and a snapshot keeps. `None` for fences made in
    /// code.
    pub source: Option<Arc<str>>,
}

/// What a region is for.
#[derive(Debug, Clone)]
pub(crate) enum RegionKind {
    /// A geofence.
    Fence {
        /// Its id, shared by every alert it fires.
        name: Arc<str>,
        /// Which events it fires.
        detect: Detect,
        /// Seconds inside before `dwell`.
        dwell_s: u32,
        /// The owner's definition ([`FenceSpec::source`]).
        source: Option<Arc<str>>,
    },
    /// The area of a positions feed.
    Feed(u32),
    /// The zone around a standing-nearest query.
    Zone(u32),
}

/// A region in the cover index.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    /// What it is.
    pub kind: RegionKind,
    /// Exact geometry (for feeds and zones; fences use their spec's).
    pub shape: Shape,
    /// Units it applies to.
    pub filter: Filter,
    /// Exit hysteresis, metres.
    pub hysteresis_m: f64,
    /// Its cover, kept to remove it from the index.
    pub cover: Vec<CoverCell>,
    /// A fence's unchanging part (filter, shape, source, cover) encoded as
    /// a snapshot holds it, once, when it is installed: a snapshot then
    /// copies a pointer, not thousands of cells and vertices, while it
    /// holds the writer.
    pub frozen: Option<Arc<[u8]>>,
}

/// `Membership::flags`: the dwell alert of this stay has fired.
pub(crate) const DWELL_FIRED: u8 = 1;

/// A unit is inside a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Membership {
    /// Region id.
    pub region: u32,
    /// Device time it entered.
    pub since_ms: i64,
    /// `DWELL_FIRED`...
    pub flags: u8,
}

/// Membership lists of all units; index 0 is "none" so a unit needs only a
/// `u32`, and emptied lists are recycled with their capacity.
#[derive(Debug)]
pub(crate) struct Memberships {
    lists: Vec<Vec<Membership>>,
    free: Vec<u32>,
}

impl Default for Memberships {
    fn default() -> Self {
        Self {
            lists: vec![Vec::new()],
            free: Vec::new(),
        }
    }
}

impl Memberships {
    /// The list at `idx` (empty for 0).
    #[inline]
    pub fn get(&self, idx: u32) -> &[Membership] {
        &self.lists[idx as usize]
    }

    /// Replaces the list at `idx` with `new` (keeping `new` sorted by region),
    /// returning the new index. `new` is left empty.
    pub fn replace(&mut self, idx: u32, new: &mut Vec<Membership>) -> u32 {
        if new.is_empty() {
            if idx != 0 {
                self.lists[idx as usize].clear();
                self.free.push(idx);
            }
            return 0;
        }
        let idx = if idx != 0 {
            idx
        } else if let Some(i) = self.free.pop() {
            i
        } else {
            self.lists.push(Vec::new());
            u32::try_from(self.lists.len() - 1).unwrap_or(u32::MAX)
        };
        let list = &mut self.lists[idx as usize];
        list.clear();
        list.append(new);
        idx
    }

    /// Mutable list at `idx`.
    pub fn get_mut(&mut self, idx: u32) -> &mut Vec<Membership> {
        &mut self.lists[idx as usize]
    }
}

/// Every region and what indexes them: one owner for fences, feed areas
/// and zones, their covers and the units inside them.
#[derive(Debug, Default)]
pub(crate) struct Regions {
    /// Regions by id; `None` where no region is (an id removed and not
    /// yet taken again, or one of the other kind's; see
    /// [`Regions::install`]).
    pub list: Vec<Option<Region>>,
    /// Odd ids of removed feeds and zones, to take again: maps panning and
    /// standing queries re-zoning make and drop regions all day, and the
    /// list would otherwise grow with every one.
    pub free: Vec<u32>,
    /// Odd ids feeds and zones have had: the next new one is
    /// `2 * feed_ids + 1`.
    pub feed_ids: u32,
    /// Even ids below `fence_next` that no fence holds.
    pub fence_free: std::collections::BTreeSet<u32>,
    /// The next even id no fence has had.
    pub fence_next: u32,
    /// Whether region `i` is a fence that detects dwell: the clock's scan
    /// reads this, not the regions (a cache miss per membership, most of a
    /// national scan's time), and skips dwell altogether when none is.
    pub dwell: Vec<bool>,
    /// Fence id → region.
    pub fences: HashMap<String, u32>,
    /// Feed id → region.
    pub feeds: HashMap<u32, u32>,
    /// Region covers: cell → candidate regions.
    pub cover: CoverIndex,
    /// Membership lists of every unit.
    pub members: Memberships,
    /// Reused membership list for the merge on the hot path.
    pub scratch: Vec<Membership>,
    /// Standing-query zones the last [`Regions::evaluate`] touched, with
    /// whether the unit is inside: the engine asks their queries whether
    /// the answer may change.
    pub zones_touched: Vec<(u32, bool)>,
}

impl Regions {
    /// The live region `id`.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&Region> {
        self.list.get(id as usize)?.as_ref()
    }

    /// Adds `region` (in the cover index too); returns its id.
    ///
    /// Fences take even ids, feeds and zones odd ones, and each kind takes
    /// its removed ids again, so the list is bounded by the most regions
    /// alive at once, however many come and go. A fence takes the
    /// smallest even id no fence holds: one fix's alerts come out in
    /// region-id order, so a replay must give each fence the id it had,
    /// and this choice depends only on the fences there are (which the
    /// journal and the snapshot reproduce; the snapshot keeps each fence's
    /// id), never on feeds and zones (which belong to sessions and are
    /// not replayed).
    ///
    /// Reuse is safe because a removed region leaves nothing behind that
    /// a newcomer could inherit: `Engine::remove_region` drops every
    /// membership (members are inside the shape, or its band, so among
    /// the units near it) and looks up again the candidates of their
    /// cells; a cell elsewhere that still lists the id lists it as a
    /// boundary candidate (an interior one would hold members), so its
    /// units are tested exactly against whichever region holds the id.
    pub fn install(&mut self, region: Region) -> u32 {
        let id = match region.kind {
            RegionKind::Fence { .. } => self.fence_free.pop_first().unwrap_or_else(|| {
                self.fence_next += 2;
                self.fence_next - 2
            }),
            RegionKind::Feed(_) | RegionKind::Zone(_) => self.free.pop().unwrap_or_else(|| {
                self.feed_ids += 1;
                2 * self.feed_ids - 1
            }),
        };
        self.install_at(id, region);
        id
    }

    /// Adds a fence at `id` (a restore: the snapshot says which): the
    /// even ids below it that no fence holds become free.
    ///
    /// # Errors
    /// An odd id, or one a fence holds.
    pub fn install_fence_at(&mut self, id: u32, region: Region) -> Result<(), String> {
        if !id.is_multiple_of(2) || self.get(id).is_some() {
            return Err(format!("fence region id {id} is odd or taken"));
        }
        while self.fence_next <= id {
            self.fence_free.insert(self.fence_next);
            self.fence_next += 2;
        }
        self.fence_free.remove(&id);
        self.install_at(id, region);
        Ok(())
    }

    fn install_at(&mut self, id: u32, region: Region) {
        if self.list.len() <= id as usize {
            self.list.resize_with(id as usize + 1, || None);
            self.dwell.resize(id as usize + 1, false);
        }
        self.cover.insert(id, &region.cover);
        self.dwell[id as usize] = matches!(&region.kind, RegionKind::Fence { detect, .. } if detect.dwell);
        self.list[id as usize] = Some(region);
    }

    /// Takes region `id` out of the list and the cover index (its
    /// memberships are the caller's to drop).
    pub fn take(&mut self, id: u32) -> Option<Region> {
        let region = self.list.get_mut(id as usize)?.take()?;
        if let Some(d) = self.dwell.get_mut(id as usize) {
            *d = false;
        }
        self.cover.remove(id, &region.cover);
        if id.is_multiple_of(2) {
            self.fence_free.insert(id);
        } else {
            self.free.push(id);
        }
        Some(region)
    }

    /// Whether any fence detects dwell.
    pub fn any_dwell(&self) -> bool {
        self.dwell.contains(&true)
    }

    /// Re-evaluates the regions unit `slot` (record `st`) is a candidate
    /// (`candset`, its cell's) or a member of: emits enter, exit and dwell
    /// alerts and feed changes, records touched zones, and returns the
    /// unit's new membership list index.
    ///
    /// Candidates and memberships are both sorted by region, so one merge
    /// visits each region once; interior candidates are certain hits, and
    /// only boundary candidates pay for the exact test.
    pub fn evaluate(
        &mut self,
        slot: u32,
        st: &UnitState,
        candset: u32,
        seq: &mut u64,
        exact_tests: &mut u64,
        out: &mut Outputs,
    ) -> u32 {
        let (lat, lon) = (st.lat, st.lon);
        let mut new = std::mem::take(&mut self.scratch);
        new.clear();
        self.zones_touched.clear();
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
            let Some(Some(region)) = self.list.get(region_id as usize) else {
                continue;
            };
            let matches = region.filter.matches_state(slot, st, st.time_ms);
            let geom = match cand {
                Some(true) => true,
                Some(false) if matches => {
                    *exact_tests += 1;
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
                    ..
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
                        let a = Alert::about(ev, UnitSlot(slot), st.time_ms).of_fence(name.clone());
                        out.push_alert(seq, a);
                    }
                    if let (true, Some(mut k)) = (dwell_due, kept) {
                        k.flags |= DWELL_FIRED;
                        let a = Alert::about(AlertEvent::Dwell, UnitSlot(slot), st.time_ms)
                            .of_fence(name.clone());
                        out.push_alert(seq, a);
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
                        self.zones_touched.push((*q, inside));
                    }
                }
            }
            if let Some(k) = kept {
                new.push(k);
            }
        }
        let idx = self.members.replace(st.member, &mut new);
        self.scratch = new;
        idx
    }
}
