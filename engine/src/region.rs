//! Regions: anything a unit can be inside of — a fence, a feed's area, or a
//! standing-nearest zone — and the per-unit membership lists.

use std::sync::Arc;

use crate::cover::CoverCell;
use crate::filter::Filter;
use crate::shape::Shape;

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
