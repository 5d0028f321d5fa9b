//! Regions in the engine: fences and positions feeds (their covers,
//! memberships, and what creating, replacing and removing them does).

use std::sync::Arc;

use h3o::{LatLng, Resolution};

use crate::alert::{Alert, AlertEvent, Outputs};
use crate::cover::{Cover, compute_cover};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::filter::Filter;
use crate::model::UnitSlot;
use crate::region::{Detect, FenceSpec, Membership, Region, RegionKind};
use crate::shape::Shape;
use crate::sphere;

impl Engine {
    // ----- regions -----------------------------------------------------

    /// Units that may be inside `shape` widened by `band_m` (anchors within
    /// slack), sorted and deduplicated, in `self.scratch_slots`.
    pub(crate) fn units_near(&mut self, shape: &Shape, band_m: f64) -> Vec<u32> {
        let mut b = shape.aabb();
        let pad = sphere::m_to_chord2(band_m).sqrt();
        for v in &mut b[0] {
            *v -= pad;
        }
        for v in &mut b[1] {
            *v += pad;
        }
        let mut slots = std::mem::take(&mut self.scratch_slots);
        slots.clear();
        self.index
            .for_each_cell_in(&b, |c| self.for_each_unit_in_cell(c, |s| slots.push(s)));
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    /// Whether a unit is inside a region now (filter and geometry).
    pub(crate) fn inside_region(&self, slot: u32, region: &Region, now_ms: i64) -> bool {
        let st = &self.units.state[slot as usize];
        let (lat, lon) = (st.lat, st.lon);
        st.seen() && self.matches(&region.filter, slot, now_ms) && region.shape.contains(lat, lon)
    }

    pub(crate) fn add_membership(&mut self, slot: u32, m: Membership) {
        let idx = self.units.state[slot as usize].member;
        let mut list = std::mem::take(&mut self.regions.scratch);
        list.clear();
        list.extend_from_slice(self.regions.members.get(idx));
        match list.binary_search_by_key(&m.region, |x| x.region) {
            Ok(i) => list[i] = m,
            Err(i) => list.insert(i, m),
        }
        let idx = self.regions.members.replace(idx, &mut list);
        self.units.state[slot as usize].member = idx;
        self.regions.scratch = list;
    }

    pub(crate) fn take_membership(&mut self, slot: u32, region: u32) -> Option<Membership> {
        let idx = self.units.state[slot as usize].member;
        if idx == 0 {
            return None;
        }
        let mut list = std::mem::take(&mut self.regions.scratch);
        list.clear();
        list.extend_from_slice(self.regions.members.get(idx));
        let found = list
            .binary_search_by_key(&region, |x| x.region)
            .ok()
            .map(|i| list.remove(i));
        let idx = self.regions.members.replace(idx, &mut list);
        self.units.state[slot as usize].member = idx;
        self.regions.scratch = list;
        found
    }

    pub(crate) fn remove_region(&mut self, id: u32) -> Option<Region> {
        let region = self.regions.take(id)?;
        let slots = self.units_near(&region.shape, region.hysteresis_m);
        for &s in &slots {
            self.take_membership(s, id);
        }
        self.invalidate(Some(&slots));
        self.scratch_slots = slots;
        Some(region)
    }

    pub(crate) fn build_region(
        &self,
        kind: RegionKind,
        shape: Shape,
        filter: Filter,
        hysteresis_m: f64,
        res: Resolution,
    ) -> Result<Region, EngineError> {
        self.build_region_covered(kind, shape, filter, hysteresis_m, res, None)
    }

    /// [`Engine::build_region`] with a cover computed elsewhere, used if it
    /// was computed for the same resolution, band and cap (else computed
    /// here).
    fn build_region_covered(
        &self,
        kind: RegionKind,
        shape: Shape,
        filter: Filter,
        hysteresis_m: f64,
        res: Resolution,
        cover: Option<&Cover>,
    ) -> Result<Region, EngineError> {
        // A cover is a function of the shape, the resolution (whose last
        // level is exact when it is the fine one), the band and the cap.
        let fits =
            |c: &Cover| c.res == res && c.band_m == hysteresis_m && c.max_cells == self.cfg.max_cover_cells;
        let cover = match cover {
            Some(c) if fits(c) => c.cells.clone(),
            _ => compute_cover(
                &shape,
                res,
                hysteresis_m,
                self.cfg.max_cover_cells,
                res == self.fine,
            )?,
        };
        Ok(Region {
            kind,
            shape,
            filter,
            hysteresis_m,
            cover,
            frozen: None,
        })
    }

    /// Creates or replaces a fence. Creating sets the membership of units
    /// already inside silently; replacing fires `enter`/`exit` for units
    /// whose membership changed (by the fence's `detect`), keeps the stay of
    /// units inside both, and returns `false`.
    ///
    /// # Errors
    /// Bad parameters, or a cover over the cap.
    pub fn put_fence(
        &mut self,
        spec: FenceSpec,
        now_ms: i64,
        out: &mut Outputs,
    ) -> Result<bool, EngineError> {
        self.put_fence_with_cover(spec, None, now_ms, out)
    }

    /// [`Engine::put_fence`] with its cover computed elsewhere
    /// ([`Cover::compute`] of the spec's shape and hysteresis), so the
    /// engine is held only to install it.
    ///
    /// # Errors
    /// As [`Engine::put_fence`].
    pub fn put_fence_with_cover(
        &mut self,
        spec: FenceSpec,
        cover: Option<&Cover>,
        now_ms: i64,
        out: &mut Outputs,
    ) -> Result<bool, EngineError> {
        if !(spec.hysteresis_m.is_finite() && spec.hysteresis_m >= 0.0 && spec.hysteresis_m <= 100_000.0) {
            return Err(EngineError::BadParameter {
                what: "hysteresis_m",
                value: spec.hysteresis_m,
                reason: "must be 0..=100000",
            });
        }
        if !self.regions.fences.contains_key(&spec.id) && self.regions.fences.len() >= self.cfg.max_fences {
            return Err(EngineError::Full {
                what: "fences",
                max: self.cfg.max_fences,
                key: "max_fences",
            });
        }
        let name: Arc<str> = Arc::from(spec.id.as_str());
        let kind = RegionKind::Fence {
            name: name.clone(),
            detect: spec.detect,
            dwell_s: spec.dwell_s,
            source: spec.source,
        };
        let mut region =
            self.build_region_covered(kind, spec.shape, spec.filter, spec.hysteresis_m, self.fine, cover)?;
        region.frozen = Some(crate::snapshot::fence_static_part(&region));
        let old = self.regions.fences.get(&spec.id).copied();
        let new_id = self.regions.install(region);
        self.regions.fences.insert(spec.id, new_id);
        let Some(new_region) = self.regions.get(new_id).cloned() else {
            return Ok(old.is_none());
        };
        let mut slots = self.units_near(&new_region.shape, new_region.hysteresis_m);
        if let Some(old_id) = old
            && let Some(r) = self.regions.get(old_id)
        {
            {
                let (shape, band) = (r.shape.clone(), r.hysteresis_m);
                let extra = self.units_near(&shape, band);
                slots.extend(extra);
                slots.sort_unstable();
                slots.dedup();
            }
        }
        let detect = spec_detect(&new_region);
        for &s in &slots {
            let inside_new = self.inside_region(s, &new_region, now_ms);
            let was = old.and_then(|o| self.take_membership(s, o));
            let t = self.units.state[s as usize].time_ms;
            match (was, inside_new) {
                (Some(m), true) => self.add_membership(s, Membership { region: new_id, ..m }),
                (Some(m), false) => {
                    let (lat, lon) = (self.units.state[s as usize].lat, self.units.state[s as usize].lon);
                    let within_band = new_region.hysteresis_m > 0.0
                        && self.matches(&new_region.filter, s, now_ms)
                        && new_region.shape.distance_to_boundary_m(lat, lon) <= new_region.hysteresis_m;
                    if within_band {
                        self.add_membership(s, Membership { region: new_id, ..m });
                    } else if detect.exit {
                        let a = Alert::about(AlertEvent::Exit, UnitSlot(s), t).of_fence(name.clone());
                        out.push_alert(&mut self.seq, a);
                    }
                }
                (None, true) => {
                    self.add_membership(
                        s,
                        Membership {
                            region: new_id,
                            since_ms: t,
                            flags: 0,
                        },
                    );
                    if old.is_some() && detect.enter {
                        let a = Alert::about(AlertEvent::Enter, UnitSlot(s), t).of_fence(name.clone());
                        out.push_alert(&mut self.seq, a);
                    }
                }
                (None, false) => {}
            }
        }
        self.invalidate(Some(&slots));
        self.scratch_slots = slots;
        if let Some(old_id) = old {
            self.remove_region(old_id);
        }
        Ok(old.is_none())
    }

    /// Removes a fence. Its memberships are forgotten silently: removing a
    /// fence is an edit, not a movement, so it fires no `exit`.
    ///
    /// # Errors
    /// [`EngineError::NotFound`].
    pub fn remove_fence(&mut self, id: &str) -> Result<(), EngineError> {
        let region = self
            .regions
            .fences
            .remove(id)
            .ok_or_else(|| EngineError::NotFound {
                what: "fence",
                id: id.to_owned(),
            })?;
        self.remove_region(region);
        Ok(())
    }

    /// A fence's definition.
    pub fn fence(&self, id: &str) -> Option<FenceSpec> {
        let r = self.regions.get(*self.regions.fences.get(id)?)?;
        let RegionKind::Fence {
            detect,
            dwell_s,
            source,
            ..
        } = &r.kind
        else {
            return None;
        };
        Some(FenceSpec {
            id: id.to_owned(),
            shape: r.shape.clone(),
            detect: *detect,
            dwell_s: *dwell_s,
            hysteresis_m: r.hysteresis_m,
            filter: r.filter.clone(),
            source: source.clone(),
        })
    }

    /// A fence's definition as its owner sent it: `None` for an unknown
    /// fence, `Some(None)` for one made in code.
    pub fn fence_source(&self, id: &str) -> Option<Option<Arc<str>>> {
        match &self.regions.get(*self.regions.fences.get(id)?)?.kind {
            RegionKind::Fence { source, .. } => Some(source.clone()),
            _ => None,
        }
    }

    /// How many fences there are.
    pub fn fence_count(&self) -> usize {
        self.regions.fences.len()
    }

    /// Fence ids, sorted.
    pub fn fence_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.regions.fences.keys().cloned().collect();
        v.sort();
        v
    }

    /// Ids of the fences whose geometry holds the point (filters ignored),
    /// sorted: the same cover lookup and exact tests a fix takes.
    pub fn fences_at(&self, lat: f64, lon: f64) -> Vec<Arc<str>> {
        let Ok(ll) = LatLng::new(lat, lon) else {
            return Vec::new();
        };
        let mut cands = Vec::new();
        self.regions.cover.collect(ll.to_cell(self.fine), &mut cands);
        let mut ids: Vec<Arc<str>> = cands
            .into_iter()
            .filter_map(|c| {
                let region = self.regions.get(c >> 1)?;
                let RegionKind::Fence { name, .. } = &region.kind else {
                    return None;
                };
                (c & 1 == 1 || region.shape.contains(lat, lon)).then(|| name.clone())
            })
            .collect();
        ids.sort();
        ids
    }

    /// Units inside a fence now (its members), sorted.
    pub fn fence_members(&self, id: &str) -> Vec<UnitSlot> {
        let Some(&r) = self.regions.fences.get(id) else {
            return Vec::new();
        };
        (0..self.units.len() as u32)
            .filter(|&s| {
                let m = self.units.state[s as usize].member;
                m != 0 && self.regions.members.get(m).iter().any(|x| x.region == r)
            })
            .map(UnitSlot)
            .collect()
    }

    /// Opens a positions feed over `shape` for units matching `filter`.
    /// Returns its id and the units inside now (its snapshot), which become
    /// its members silently; later changes come as [`FeedEvent`](crate::FeedEvent)s.
    ///
    /// # Errors
    /// A cover over the cap.
    pub fn subscribe_feed(
        &mut self,
        shape: Shape,
        filter: Filter,
        now_ms: i64,
    ) -> Result<(u32, Vec<UnitSlot>), EngineError> {
        self.subscribe_feed_with_cover(shape, None, filter, now_ms)
    }

    /// [`Engine::subscribe_feed`] with its cover computed elsewhere
    /// ([`Cover::compute_feed`] of the shape).
    ///
    /// # Errors
    /// As [`Engine::subscribe_feed`].
    pub fn subscribe_feed_with_cover(
        &mut self,
        shape: Shape,
        cover: Option<&Cover>,
        filter: Filter,
        now_ms: i64,
    ) -> Result<(u32, Vec<UnitSlot>), EngineError> {
        let feed = self.next_id;
        self.next_id += 1;
        let res = crate::cover::feed_resolution(&shape, self.fine);
        let region = self.build_region_covered(RegionKind::Feed(feed), shape, filter, 0.0, res, cover)?;
        let id = self.regions.install(region);
        self.regions.feeds.insert(feed, id);
        let Some(region) = self.regions.get(id).cloned() else {
            return Ok((feed, Vec::new()));
        };
        let slots = self.units_near(&region.shape, 0.0);
        let mut snapshot = Vec::new();
        for &s in &slots {
            if self.inside_region(s, &region, now_ms) {
                let t = self.units.state[s as usize].time_ms;
                self.add_membership(
                    s,
                    Membership {
                        region: id,
                        since_ms: t,
                        flags: 0,
                    },
                );
                snapshot.push(UnitSlot(s));
            }
        }
        self.invalidate(Some(&slots));
        self.scratch_slots = slots;
        Ok((feed, snapshot))
    }

    /// Closes a feed.
    ///
    /// # Errors
    /// [`EngineError::NotFound`].
    pub fn unsubscribe_feed(&mut self, feed: u32) -> Result<(), EngineError> {
        let id = self
            .regions
            .feeds
            .remove(&feed)
            .ok_or_else(|| EngineError::NotFound {
                what: "feed",
                id: feed.to_string(),
            })?;
        self.remove_region(id);
        Ok(())
    }

    /// Cells in the cover index (for metrics and memory reports).
    pub fn cover_cells(&self) -> usize {
        self.regions.cover.cell_count()
    }
}

fn spec_detect(region: &Region) -> Detect {
    match &region.kind {
        RegionKind::Fence { detect, .. } => *detect,
        _ => Detect::default(),
    }
}
