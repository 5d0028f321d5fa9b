//! One-shot queries: exact k-nearest and area queries.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rstar::{ParentNode, PointDistance, RTreeNode};

use crate::engine::Engine;
use crate::filter::Filter;
use crate::model::{Neighbor, UnitSlot};
use crate::shape::Shape;
use crate::shard::{Entry, MEMBER_TOLERANCE};
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
            self.eligible(slot, &q.filter, q.include_stale, now_ms)
        });
        best.into_iter()
            .map(|Candidate(c2, slot)| Neighbor {
                unit: UnitSlot(slot),
                distance_m: sphere::chord2_to_m(c2),
            })
            .collect()
    }

    /// Best-first search over every shard tree with one heap: shard roots
    /// join in order of their box's distance; a node's children enter the
    /// heap only when their bound can still beat the k-th best, and a cell's
    /// units are bounded from the cell's f32 member copies before their
    /// records are read.
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
        let mut best: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
        // Lower bound of the true chord of any unit under a node whose
        // envelope (or cell centre) is at squared chord `d2`.
        let bound = |d2: f32| (f64::from(d2).sqrt() - slack).max(0.0);
        let limit = |best: &BinaryHeap<Candidate>| {
            if best.len() == k {
                best.peek().map_or(max_c, |w| w.0.sqrt().min(max_c))
            } else {
                max_c
            }
        };
        let mut queue: BinaryHeap<Reverse<Pending<'_>>> = BinaryHeap::with_capacity(64);
        let mut shards = self.index.shards_by_distance(&qf).peekable();
        let mut near: Vec<u32> = Vec::with_capacity(64);
        loop {
            let next_shard = shards.peek().map_or(f64::INFINITY, |(_, d2)| bound(*d2));
            let next_queued = queue.peek().map_or(f64::INFINITY, |Reverse(p)| p.lb);
            let lb = next_shard.min(next_queued);
            if lb == f64::INFINITY || lb > limit(&best) {
                break;
            }
            if next_shard <= next_queued {
                if let Some((shard, _)) = shards.next() {
                    queue.push(Reverse(Pending {
                        lb: next_shard,
                        node: Node::Inner(shard.tree.root()),
                    }));
                }
                continue;
            }
            let Some(Reverse(p)) = queue.pop() else { break };
            match p.node {
                Node::Inner(parent) => {
                    for child in parent.children() {
                        let (lb, node) = match child {
                            RTreeNode::Parent(n) => (bound(n.envelope().distance_2(&qf)), Node::Inner(n)),
                            RTreeNode::Leaf(e) => (bound(e.distance_2(&qf)), Node::Cell(e.cell)),
                        };
                        if lb <= limit(&best) {
                            queue.push(Reverse(Pending { lb, node }));
                        }
                    }
                }
                Node::Cell(c) => {
                    // Bound every unit from the f32 copies first, then touch
                    // the records that may count in one pass of independent
                    // loads (they overlap), then use them.
                    let lim = limit(&best);
                    near.clear();
                    for m in &self.index.cells[c as usize].members {
                        let approx = sphere::chord2(
                            qv,
                            [f64::from(m.xyz[0]), f64::from(m.xyz[1]), f64::from(m.xyz[2])],
                        );
                        if approx.sqrt() - MEMBER_TOLERANCE <= lim {
                            near.push(m.slot);
                        }
                    }
                    let mut touch = 0i64;
                    for &slot in &near {
                        touch ^= self.state(slot).time_ms;
                    }
                    std::hint::black_box(touch);
                    for &slot in &near {
                        if !accept(slot) {
                            continue;
                        }
                        let c2 = sphere::chord2(qv, self.state(slot).xyz());
                        if c2 > max_c2 {
                            continue;
                        }
                        let cand = Candidate(c2, slot);
                        if best.len() < k {
                            best.push(cand);
                        } else if best.peek().is_some_and(|w| cand < *w) {
                            best.pop();
                            best.push(cand);
                        }
                    }
                }
            }
        }
        best.into_sorted_vec()
    }

    /// Units inside `shape` matching `filter`, sorted by slot.
    pub fn area(&self, shape: &Shape, filter: &Filter, include_stale: bool, now_ms: i64) -> Vec<UnitSlot> {
        let mut out = Vec::new();
        self.index.for_each_cell_in(&shape.aabb(), |c| {
            self.for_each_unit_in_cell(c, |slot| {
                if self.eligible(slot, filter, include_stale, now_ms) && {
                    let [lat, lon] = self.lat_lon(slot);
                    shape.contains(lat, lon)
                } {
                    out.push(UnitSlot(slot));
                }
            });
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

/// A part of a shard tree waiting to be searched.
#[derive(Debug, Clone, Copy)]
enum Node<'a> {
    /// An inner node (or a shard's root).
    Inner(&'a ParentNode<Entry>),
    /// An occupied cell.
    Cell(u32),
}

/// A queued node with the lower bound of its units' chords.
#[derive(Debug, Clone, Copy)]
struct Pending<'a> {
    lb: f64,
    node: Node<'a>,
}

impl PartialEq for Pending<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.lb == other.lb
    }
}
impl Eq for Pending<'_> {}
impl PartialOrd for Pending<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.lb.total_cmp(&other.lb)
    }
}
