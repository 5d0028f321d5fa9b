//! Standing nearest queries, the state: each query's answer and zone, and
//! which queries a fix may have changed. What opens, re-runs and closes
//! them is in `continuous`.
//!
//! Each query watches a zone (a circle a little wider than its k-th distance)
//! registered as a region in the same cover index as fences, so a fix only
//! touches the queries whose zone it is in; a touched query is re-run once at
//! the next flush. With fewer than k matching units anywhere the zone is the
//! whole world.

use std::collections::HashMap;

use crate::filter::Filter;
use crate::model::Neighbor;
use crate::units::UnitState;
use h3o::Resolution;

/// A standing nearest query's state.
#[derive(Debug, Clone)]
pub(crate) struct StandingNearest {
    /// Query point latitude.
    pub lat: f64,
    /// Query point longitude.
    pub lon: f64,
    /// How many.
    pub k: usize,
    /// Which units.
    pub filter: Filter,
    /// Count stale units too.
    pub include_stale: bool,
    /// Latest answer.
    pub results: Vec<Neighbor>,
    /// Zone region, `None` when global.
    pub zone: Option<u32>,
    /// Zone radius, `None` when global.
    pub zone_radius_m: Option<f64>,
    /// Queued for re-run.
    pub dirty: bool,
}

impl StandingNearest {
    /// Whether a fix of `slot`, now at `(lat, lon)` and `inside` the zone
    /// (filter included), can change the answer. The answer is exact as of
    /// the last re-run, and every fix since then that could change it
    /// dirtied it; so a unit outside the answer that stays farther than
    /// the k-th changes nothing. In a town most fixes in a zone are of
    /// such units, and re-running every touched query cost up to a
    /// millisecond of the writer per chunk of fixes.
    pub(crate) fn may_change(&self, slot: u32, inside: bool, lat: f64, lon: f64) -> bool {
        if self.results.len() < self.k || self.results.iter().any(|n| n.unit.0 == slot) {
            return true;
        }
        let kth = self.results.last().map_or(f64::INFINITY, |n| n.distance_m);
        // Generous at a tie (a closer slot number wins one), and for the
        // rounding of two ways to the same distance.
        inside && crate::sphere::distance_m(self.lat, self.lon, lat, lon) <= kth * (1.0 + 1e-9) + 1e-3
    }
}

/// Every standing query, and which of them to re-run.
#[derive(Debug, Default)]
pub(crate) struct StandingQueries {
    /// Queries by id.
    pub by_id: HashMap<u32, StandingNearest>,
    /// Queries whose zone is the whole world (fewer than k matches).
    pub global: Vec<u32>,
    /// Queries to re-run at the next flush.
    pub dirty: Vec<u32>,
}

impl StandingQueries {
    /// A fix of `slot` at `(lat, lon)` touched query `q`'s zone (`inside`
    /// with the filter): marks it for a re-run if its answer may change.
    pub fn touch_zone(&mut self, q: u32, slot: u32, inside: bool, lat: f64, lon: f64) {
        if let Some(query) = self.by_id.get_mut(&q)
            && !query.dirty
            && query.may_change(slot, inside, lat, lon)
        {
            query.dirty = true;
            self.dirty.push(q);
        }
    }

    /// A fix of `slot` (record `st`): marks for a re-run every whole-world
    /// query it matches.
    pub fn touch_global(&mut self, slot: u32, st: &UnitState) {
        for &q in &self.global {
            if let Some(query) = self.by_id.get_mut(&q)
                && !query.dirty
                && query.filter.matches_state(slot, st, i64::MAX)
            {
                query.dirty = true;
                self.dirty.push(q);
            }
        }
    }
}

/// Zone radius for a k-th distance: wide enough that small changes of the
/// k-th distance do not move the zone.
pub(crate) fn zone_radius(kth_m: f64) -> f64 {
    kth_m * 1.25 + 200.0
}

/// The cover resolution of a zone of `radius_m`: cells about a tenth of the
/// radius, never finer than the fence resolution.
pub(crate) fn zone_resolution(radius_m: f64, fine: Resolution) -> Resolution {
    let mut res = fine;
    while let Some(coarser) = res.pred() {
        if coarser.edge_length_m() > radius_m / 10.0 {
            break;
        }
        res = coarser;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UnitSlot;
    use crate::sphere;

    #[test]
    fn only_a_unit_in_the_answer_or_within_the_kth_can_change_it() {
        let (lat, lon) = (51.5, -0.12);
        let q = StandingNearest {
            lat,
            lon,
            k: 2,
            filter: Filter::all(),
            include_stale: false,
            results: vec![
                Neighbor {
                    unit: UnitSlot(1),
                    distance_m: 100.0,
                },
                Neighbor {
                    unit: UnitSlot(2),
                    distance_m: 200.0,
                },
            ],
            zone: Some(0),
            zone_radius_m: Some(450.0),
            dirty: false,
        };
        let at = |d: f64| sphere::destination(lat, lon, 45.0, d);
        let far = at(300.0);
        // In the answer: any move may reorder it or take it out.
        assert!(q.may_change(1, true, far.0, far.1));
        assert!(q.may_change(2, false, far.0, far.1));
        // Another unit: only within the k-th (a tie included), and only if
        // it matches (inside the zone with its filter).
        assert!(!q.may_change(3, true, far.0, far.1));
        let near = at(150.0);
        assert!(q.may_change(3, true, near.0, near.1));
        assert!(!q.may_change(3, false, near.0, near.1));
        let tie = at(200.0);
        assert!(q.may_change(3, true, tie.0, tie.1));
        // Fewer than k: every unit may join.
        let short = StandingNearest { k: 3, ..q.clone() };
        assert!(short.may_change(3, true, far.0, far.1));
    }
}
