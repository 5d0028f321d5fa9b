//! One-shot queries: exact k-nearest and area queries.

use std::collections::BinaryHeap;

use crate::engine::Engine;
use crate::filter::Filter;
use crate::model::UnitSlot;
use crate::shape::Shape;
use crate::sphere::{self, Vec3};

/// A k-nearest query.
#[derive(Debug, Clone, PartialEq)]
pub struct NearestQuery {
    /// Latitude of the point.
    pub lat: f64,
    /// Longitude of the point.
    pub lon: f64,
    /// How many units at most.
    pub k: usize,
    /// Which units count.
    pub filter: Filter,
    /// Only units at most this far, metres.
    pub max_distance_m: Option<f64>,
    /// Count stale units too.
    pub include_stale: bool,
}

/// One result of a nearest query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// The unit.
    pub unit: UnitSlot,
    /// Great-circle distance, metres.
    pub distance_m: f64,
}

/// Max-heap entry: (squared chord, slot), ordered by chord then slot so ties
/// resolve the same way every time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate(f64, u32);
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl Engine {
    /// The k nearest units to a point by great-circle distance, nearest
    /// first (ties by slot). Exact: shards and tree entries are visited in
    /// order of a lower bound of their distance, and the search stops when no
    /// bound can beat the k-th best.
    pub fn nearest(&self, q: &NearestQuery, now_ms: i64) -> Vec<Neighbor> {
        if q.k == 0 {
            return Vec::new();
        }
        let qv = sphere::to_vec3(q.lat, q.lon);
        let max_c2 = q.max_distance_m.map_or(f64::INFINITY, sphere::m_to_chord2);
        let best = self.nearest_search(qv, q.k, max_c2, |slot| {
            let st = self.state(slot);
            st.seen()
                && (q.include_stale || !st.stale())
                && q.filter.matches(
                    UnitSlot(slot),
                    st.agency,
                    st.status,
                    st.kind,
                    st.tags,
                    st.time_ms,
                    now_ms,
                )
        });
        best.into_iter()
            .map(|Candidate(c2, slot)| Neighbor {
                unit: UnitSlot(slot),
                distance_m: sphere::chord2_to_m(c2),
            })
            .collect()
    }

    fn nearest_search(
        &self,
        qv: Vec3,
        k: usize,
        max_c2: f64,
        accept: impl Fn(u32) -> bool,
    ) -> Vec<Candidate> {
        let qf = [qv[0] as f32, qv[1] as f32, qv[2] as f32];
        let slack = self.index.slack;
        let max_c = max_c2.sqrt();
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
        // Lower bound of the true chord for an anchor at chord² `d2`.
        let bound = |d2: f32| (f64::from(d2).sqrt() - slack).max(0.0);
        let beaten = |heap: &BinaryHeap<Candidate>, lb: f64| {
            lb > max_c || (heap.len() == k && heap.peek().is_some_and(|w| lb * lb > w.0))
        };
        for (shard, d2) in self.index.shards_by_distance(&qf) {
            if beaten(&heap, bound(d2)) {
                break;
            }
            for (e, d2) in shard.tree.nearest_neighbor_iter_with_distance_2(qf) {
                if beaten(&heap, bound(d2)) {
                    break;
                }
                if !accept(e.slot) {
                    continue;
                }
                let st = self.state(e.slot);
                let c2 = sphere::chord2(qv, sphere::to_vec3(st.lat, st.lon));
                if c2 > max_c2 {
                    continue;
                }
                let cand = Candidate(c2, e.slot);
                if heap.len() < k {
                    heap.push(cand);
                } else if heap.peek().is_some_and(|w| cand < *w) {
                    heap.pop();
                    heap.push(cand);
                }
            }
        }
        heap.into_sorted_vec()
    }

    /// Units inside `shape` matching `filter`, sorted by slot.
    pub fn area(&self, shape: &Shape, filter: &Filter, include_stale: bool, now_ms: i64) -> Vec<UnitSlot> {
        let mut out = Vec::new();
        self.index.for_each_in(&shape.aabb(), |slot| {
            let st = self.state(slot);
            if st.seen()
                && (include_stale || !st.stale())
                && filter.matches(
                    UnitSlot(slot),
                    st.agency,
                    st.status,
                    st.kind,
                    st.tags,
                    st.time_ms,
                    now_ms,
                )
                && shape.contains(st.lat, st.lon)
            {
                out.push(UnitSlot(slot));
            }
        });
        out.sort_unstable();
        out.dedup();
        out
    }

    /// How many units are inside `shape` matching `filter`.
    pub fn count_area(&self, shape: &Shape, filter: &Filter, include_stale: bool, now_ms: i64) -> usize {
        self.area(shape, filter, include_stale, now_ms).len()
    }
}
