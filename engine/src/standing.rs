//! Standing nearest queries: the answer is kept and re-sent whenever its set
//! or order changes.
//!
//! Each query watches a zone (a circle a little wider than its k-th distance)
//! registered as a region in the same cover index as fences, so a fix only
//! touches the queries whose zone it is in; a touched query is re-run once at
//! the next [`Engine::flush`]. With fewer than k matching units anywhere the
//! zone is the whole world.

use crate::alert::Outputs;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::filter::Filter;
use crate::query::{NearestQuery, Neighbor};
use crate::region::{Membership, RegionKind};
use crate::shape::Shape;
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

/// Zone radius for a k-th distance: wide enough that small changes of the
/// k-th distance do not move the zone.
fn zone_radius(kth_m: f64) -> f64 {
    kth_m * 1.25 + 200.0
}

impl Engine {
    /// Opens a standing nearest query; returns its id and first answer.
    ///
    /// # Errors
    /// Bad point or `k` of 0.
    pub fn subscribe_nearest(
        &mut self,
        lat: f64,
        lon: f64,
        k: usize,
        filter: Filter,
        include_stale: bool,
        now_ms: i64,
    ) -> Result<(u32, Vec<Neighbor>), EngineError> {
        crate::shape::Shape::circle(lat, lon, 1.0)?;
        if k == 0 || k > 10_000 {
            return Err(EngineError::BadParameter {
                what: "k",
                value: k as f64,
                reason: "must be 1..=10000",
            });
        }
        let q = self.alloc_query_id();
        self.queries.insert(
            q,
            StandingNearest {
                lat,
                lon,
                k,
                filter,
                include_stale,
                results: Vec::new(),
                zone: None,
                zone_radius_m: Some(-1.0),
                dirty: false,
            },
        );
        let mut out = Outputs::default();
        self.rerun_query(q, &mut out, now_ms);
        Ok((
            q,
            self.queries
                .get(&q)
                .map(|s| s.results.clone())
                .unwrap_or_default(),
        ))
    }

    /// The current answer of a standing query.
    pub fn nearest_results(&self, q: u32) -> Option<&[Neighbor]> {
        self.queries.get(&q).map(|s| s.results.as_slice())
    }

    /// Closes a standing query.
    ///
    /// # Errors
    /// [`EngineError::NotFound`].
    pub fn unsubscribe_nearest(&mut self, q: u32) -> Result<(), EngineError> {
        let s = self.queries.remove(&q).ok_or_else(|| EngineError::NotFound {
            what: "nearest query",
            id: q.to_string(),
        })?;
        if let Some(z) = s.zone {
            self.remove_region(z);
        }
        self.global_queries.retain(|&g| g != q);
        Ok(())
    }

    pub(crate) fn rerun_query(&mut self, q: u32, out: &mut Outputs, now_ms: i64) {
        let Some(s) = self.queries.get(&q) else { return };
        let query = NearestQuery {
            lat: s.lat,
            lon: s.lon,
            k: s.k,
            filter: s.filter.clone(),
            max_distance_m: None,
            include_stale: s.include_stale,
        };
        let results = self.nearest(&query, now_ms);
        let changed =
            results.len() != s.results.len() || results.iter().zip(&s.results).any(|(a, b)| a.unit != b.unit);
        let want = (results.len() == s.k).then(|| results.last().map_or(0.0, |n| n.distance_m));
        let rezone = match (want, s.zone_radius_m) {
            (None, None) => false,
            (None, Some(_)) | (Some(_), None) => true,
            (Some(kth), Some(r)) => kth > r || zone_radius(kth) * 2.0 < r,
        };
        if let Some(s) = self.queries.get_mut(&q) {
            s.results = results;
            s.dirty = false;
        }
        if changed {
            out.nearest.push(q);
        }
        if rezone {
            self.set_zone(q, want.map(zone_radius));
        }
    }
}

impl Engine {
    /// Installs a zone region for a standing query of radius `radius_m`
    /// (`None` = whole world).
    pub(crate) fn set_zone(&mut self, q: u32, radius_m: Option<f64>) {
        let Some(query) = self.queries.get(&q) else { return };
        let (old_zone, lat, lon, filter) = (query.zone, query.lat, query.lon, query.filter.clone());
        if let Some(z) = old_zone {
            self.remove_region(z);
        }
        self.global_queries.retain(|&g| g != q);
        let zone = radius_m.and_then(|r| {
            let shape = Shape::circle(lat, lon, r).ok()?;
            // Coarse enough that the zone is tens of cells across.
            let res = zone_resolution(r, self.fine);
            let region = self
                .build_region(RegionKind::Zone(q), shape, filter, 0.0, res)
                .ok()?;
            Some(self.install_region(region))
        });
        match zone {
            Some(z) => {
                let Some(Some(region)) = self.regions.get(z as usize).cloned() else {
                    return;
                };
                let slots = self.units_near(&region.shape, 0.0);
                for &s in &slots {
                    if self.inside_region(s, &region, i64::MAX) {
                        let t = self.units.state[s as usize].time_ms;
                        self.add_membership(
                            s,
                            Membership {
                                region: z,
                                since_ms: t,
                                flags: 0,
                            },
                        );
                    }
                }
                self.invalidate(Some(&slots));
                self.scratch_slots = slots;
            }
            None => self.global_queries.push(q),
        }
        if let Some(query) = self.queries.get_mut(&q) {
            query.zone = zone;
            query.zone_radius_m = radius_m;
        }
    }
}

/// The cover resolution of a zone of `radius_m`: cells about a tenth of the
/// radius, never finer than the fence resolution.
fn zone_resolution(radius_m: f64, fine: Resolution) -> Resolution {
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
