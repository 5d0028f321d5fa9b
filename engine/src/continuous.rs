//! Continuous nearest: opening, re-running and closing standing queries
//! (their state is in `standing`).

use crate::alert::Outputs;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::filter::Filter;
use crate::model::Neighbor;
use crate::query::NearestQuery;
use crate::region::{Membership, RegionKind};
use crate::shape::Shape;
use crate::standing::{StandingNearest, zone_radius, zone_resolution};

impl Engine {
    /// Re-runs the standing queries that fixes since the last flush touched;
    /// pushes the ids of those whose result set or order changed.
    pub fn flush(&mut self, out: &mut Outputs) {
        while let Some(q) = self.standing.dirty.pop() {
            let now = self.standing.by_id.get(&q).map_or(0, |_| self.latest_ms);
            self.rerun_query(q, out, now);
        }
    }

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
        self.standing.by_id.insert(
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
            self.standing
                .by_id
                .get(&q)
                .map(|s| s.results.clone())
                .unwrap_or_default(),
        ))
    }

    /// The current answer of a standing query.
    pub fn nearest_results(&self, q: u32) -> Option<&[Neighbor]> {
        self.standing.by_id.get(&q).map(|s| s.results.as_slice())
    }

    /// Closes a standing query.
    ///
    /// # Errors
    /// [`EngineError::NotFound`].
    pub fn unsubscribe_nearest(&mut self, q: u32) -> Result<(), EngineError> {
        let s = self
            .standing
            .by_id
            .remove(&q)
            .ok_or_else(|| EngineError::NotFound {
                what: "nearest query",
                id: q.to_string(),
            })?;
        if let Some(z) = s.zone {
            self.remove_region(z);
        }
        self.standing.global.retain(|&g| g != q);
        Ok(())
    }

    pub(crate) fn rerun_query(&mut self, q: u32, out: &mut Outputs, now_ms: i64) {
        let Some(s) = self.standing.by_id.get(&q) else {
            return;
        };
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
        if let Some(s) = self.standing.by_id.get_mut(&q) {
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

    /// Installs a zone region for a standing query of radius `radius_m`
    /// (`None` = whole world).
    pub(crate) fn set_zone(&mut self, q: u32, radius_m: Option<f64>) {
        let Some(query) = self.standing.by_id.get(&q) else {
            return;
        };
        let (old_zone, lat, lon, filter) = (query.zone, query.lat, query.lon, query.filter.clone());
        if let Some(z) = old_zone {
            self.remove_region(z);
        }
        self.standing.global.retain(|&g| g != q);
        let zone = radius_m.and_then(|r| {
            let shape = Shape::circle(lat, lon, r).ok()?;
            // Coarse enough that the zone is tens of cells across.
            let res = zone_resolution(r, self.fine);
            let region = self
                .build_region(RegionKind::Zone(q), shape, filter, 0.0, res)
                .ok()?;
            Some(self.regions.install(region))
        });
        match zone {
            Some(z) => {
                let Some(region) = self.regions.get(z).cloned() else {
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
            None => self.standing.global.push(q),
        }
        if let Some(query) = self.standing.by_id.get_mut(&q) {
            query.zone = zone;
            query.zone_radius_m = radius_m;
        }
    }
}
