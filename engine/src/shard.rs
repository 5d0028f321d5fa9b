//! Shards of occupied cells: one `rstar` R-tree per coarse H3 cell, holding
//! the occupied fine cells inside it, plus a small R-tree over the shards so
//! searches visit shards nearest first.
//!
//! Units in the same fine cell share everything structural: the cell's
//! centre (their anchor in the tree), its inscribed cap (their safe region)
//! and its cover candidates. So the trees index occupied cells, each with an
//! intrusive list of its units, rather than every unit: trees are several
//! times smaller in cities, a tree is touched only when a cell empties or
//! fills, and a region change re-resolves candidates per cell. A cell's
//! units are a contiguous array of (f32 position, slot): a search bounds
//! every unit from that array and loads a unit's own record only when it may
//! be among the best.
//!
//! Every unit is within its cell's circumradius of the cell centre, so
//! `chord(q, centre) - slack` (slack = the largest circumradius seen, plus
//! f32 rounding) is an exact lower bound of the distance of every unit in the
//! cell, which keeps nearest searches exact.

use h3o::{CellIndex, Resolution};
use hashbrown::HashMap;
use rstar::{AABB, Envelope, PointDistance, RStarInsertionStrategy, RTree, RTreeObject, RTreeParams};

use crate::cell_geometry::cell_geometry;
use crate::shape::Aabb3;

/// Node sizes of the shard trees. Wider than rstar's default (6) so trees
/// are shallow: a search chases fewer pointers and scans leaves of
/// consecutive entries, which is what costs on a cold cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardTreeParams;

impl RTreeParams for ShardTreeParams {
    const MIN_SIZE: usize = WIDTH / 3;
    const MAX_SIZE: usize = WIDTH;
    const REINSERTION_COUNT: usize = WIDTH / 4;
    type DefaultInsertionStrategy = RStarInsertionStrategy;
}

/// Maximum children of a shard-tree node.
const WIDTH: usize = 16;

/// "No cell".
pub(crate) const NONE: u32 = u32::MAX;

/// An occupied cell in a shard tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Entry {
    /// Cell centre as an f32 unit vector.
    pub p: [f32; 3],
    /// Index into `ShardedIndex::cells`.
    pub cell: u32,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f32; 3]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_point(self.p)
    }
}

impl PointDistance for Entry {
    fn distance_2(&self, q: &[f32; 3]) -> f32 {
        let d = [self.p[0] - q[0], self.p[1] - q[1], self.p[2] - q[2]];
        d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    }
}

/// A shard as seen by the top-level tree: an envelope that contains every
/// cell the shard has held since the envelope last grew.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ShardBox {
    env: AABB<[f32; 3]>,
    shard: u32,
}

impl RTreeObject for ShardBox {
    type Envelope = AABB<[f32; 3]>;
    fn envelope(&self) -> Self::Envelope {
        self.env
    }
}

impl PointDistance for ShardBox {
    fn distance_2(&self, q: &[f32; 3]) -> f32 {
        self.env.distance_2(q)
    }
}

/// One shard.
#[derive(Debug)]
pub(crate) struct Shard {
    /// Occupied cells in it.
    pub tree: RTree<Entry, ShardTreeParams>,
    /// Its envelope as registered in the top tree (grows, never shrinks, so
    /// it always contains the tree).
    env: Option<AABB<[f32; 3]>>,
}

/// A unit in a cell's member array.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Member {
    /// The unit's latest position, f32: lets a search bound the unit's
    /// distance from contiguous memory and load the unit's own record only
    /// when it may be among the best.
    pub xyz: [f32; 3],
    /// The unit.
    pub slot: u32,
}

/// f32 rounding moves a unit vector by at most this chord (each component
/// is off by at most 2^-24 of its magnitude, which is at most 1).
pub(crate) const MEMBER_TOLERANCE: f64 = 2e-7;

/// An occupied fine cell.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    /// The H3 cell.
    pub cell: u64,
    /// Centre, f32 unit vector (the tree entry's point).
    pub anchor: [f32; 3],
    /// Squared chord of the inscribed cap around `anchor` (negative: none).
    pub inscribed_c2: f32,
    /// Its units. Kept (emptied, with its capacity) when the cell is
    /// released, so steady-state movement does not allocate.
    pub members: Vec<Member>,
    /// Its shard.
    pub shard: u32,
    /// Interned cover candidates of the cell.
    pub candset: u32,
}

/// All shards and occupied cells.
#[derive(Debug, Default)]
pub(crate) struct ShardedIndex {
    /// Shards by index.
    pub shards: Vec<Shard>,
    /// Shard index by shard cell.
    shard_by_cell: HashMap<u64, u32>,
    /// Shards by envelope.
    top: RTree<ShardBox>,
    /// Occupied cells by index (entries of freed cells are reused).
    pub cells: Vec<Cell>,
    /// Cell index by H3 cell.
    cell_by_h3: HashMap<u64, u32>,
    /// Freed entries of `cells`.
    free_cells: Vec<u32>,
    /// Chord bound on the distance between any unit and its cell's centre,
    /// plus f32 rounding of centres and query points.
    pub slack: f64,
    /// While a restore places every unit: each shard's entries, for one
    /// bulk load at the end instead of an insert each (several times
    /// faster, and better packed trees).
    pending: Option<Vec<Vec<Entry>>>,
}

/// f32 rounding of a unit vector moves it by less than this chord.
const F32_MARGIN: f64 = 2e-6;

impl ShardedIndex {
    /// The index of `cell`'s entry, creating it (geometry, shard, tree entry
    /// and candidates from `candset`) when the cell was unoccupied.
    pub fn cell_for(&mut self, cell: CellIndex, shard_res: Resolution, candset: impl FnOnce() -> u32) -> u32 {
        let key = u64::from(cell);
        if let Some(&c) = self.cell_by_h3.get(&key) {
            return c;
        }
        let geom = cell_geometry(cell);
        if geom.circum_chord + F32_MARGIN > self.slack {
            self.slack = geom.circum_chord + F32_MARGIN;
        }
        let anchor = [
            geom.center[0] as f32,
            geom.center[1] as f32,
            geom.center[2] as f32,
        ];
        let idx = self.free_cells.pop().unwrap_or_else(|| {
            self.cells.push(Cell {
                cell: 0,
                anchor,
                inscribed_c2: -1.0,
                members: Vec::new(),
                shard: 0,
                candset: 0,
            });
            u32::try_from(self.cells.len() - 1).unwrap_or(NONE)
        });
        let shard = self.insert(cell.parent(shard_res).map_or(0, u64::from), idx, anchor);
        let c = &mut self.cells[idx as usize];
        c.cell = key;
        c.anchor = anchor;
        // Rounded down so the f32 never admits more than the f64 cap.
        c.inscribed_c2 = if geom.inscribed_c2 > 0.0 {
            (geom.inscribed_c2 * (1.0 - 1e-6)) as f32
        } else {
            -1.0
        };
        c.members.clear();
        c.shard = shard;
        c.candset = candset();
        self.cell_by_h3.insert(key, idx);
        idx
    }

    /// Forgets a cell that has no units left.
    pub fn release(&mut self, idx: u32) {
        let c = &self.cells[idx as usize];
        if !c.members.is_empty() {
            return;
        }
        let (anchor, shard, key) = (c.anchor, c.shard, c.cell);
        if let Some(pending) = &mut self.pending {
            // A restore that placed a unit in the wrong cell (rare: only
            // a snapshot's stored cell that does not hold the unit).
            if let Some(p) = pending.get_mut(shard as usize) {
                p.retain(|e| e.cell != idx);
            }
        } else if let Some(s) = self.shards.get_mut(shard as usize) {
            s.tree.remove(&Entry { p: anchor, cell: idx });
        }
        self.cell_by_h3.remove(&key);
        self.free_cells.push(idx);
        self.cells[idx as usize].cell = 0;
    }

    /// Defers tree inserts until [`ShardedIndex::end_bulk`], with room
    /// for `cells` occupied cells. Only for an index with no cells yet.
    pub fn begin_bulk(&mut self, cells: usize) {
        self.cells.reserve(cells);
        self.cell_by_h3.reserve(cells);
        self.pending = Some(Vec::new());
    }

    /// Builds every tree from the cells placed since
    /// [`ShardedIndex::begin_bulk`].
    pub fn end_bulk(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        for (shard, entries) in self.shards.iter_mut().zip(pending) {
            shard.tree = RTree::bulk_load_with_params(entries);
        }
        let boxes = self
            .shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                Some(ShardBox {
                    env: s.env?,
                    shard: u32::try_from(i).ok()?,
                })
            })
            .collect();
        self.top = RTree::bulk_load(boxes);
    }

    /// Occupied cells.
    pub fn occupied(&self) -> usize {
        self.cell_by_h3.len()
    }

    /// Inserts a cell anchor into the shard of `shard_cell`.
    fn insert(&mut self, shard_cell: u64, cell: u32, p: [f32; 3]) -> u32 {
        let idx = match self.shard_by_cell.get(&shard_cell) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.shards.len()).unwrap_or(u32::MAX);
                self.shards.push(Shard {
                    tree: RTree::new_with_params(),
                    env: None,
                });
                self.shard_by_cell.insert(shard_cell, i);
                i
            }
        };
        let shards = self.shards.len();
        let shard = &mut self.shards[idx as usize];
        if let Some(pending) = &mut self.pending {
            pending.resize_with(shards, Vec::new);
            pending[idx as usize].push(Entry { p, cell });
            let mut env = shard.env.unwrap_or_else(|| AABB::from_point(p));
            env.merge(&AABB::from_point(p));
            shard.env = Some(env);
            return idx;
        }
        shard.tree.insert(Entry { p, cell });
        let grown = match shard.env {
            Some(env) if env.contains_point(&p) => None,
            Some(env) => {
                let mut g = env;
                g.merge(&AABB::from_point(p));
                self.top.remove(&ShardBox { env, shard: idx });
                Some(g)
            }
            None => Some(AABB::from_point(p)),
        };
        if let Some(env) = grown {
            shard.env = Some(env);
            self.top.insert(ShardBox { env, shard: idx });
        }
        idx
    }

    /// Shards nearest first, with the squared chord from `q` to their box.
    pub fn shards_by_distance<'a>(&'a self, q: &[f32; 3]) -> impl Iterator<Item = (&'a Shard, f32)> + 'a {
        self.top
            .nearest_neighbor_iter_with_distance_2(*q)
            .map(|(b, d2)| (&self.shards[b.shard as usize], d2))
    }

    /// Calls `f` with every occupied cell whose units may be inside the box.
    pub fn for_each_cell_in(&self, b: &Aabb3, mut f: impl FnMut(u32)) {
        let s = self.slack;
        let env = AABB::from_corners(
            [(b[0][0] - s) as f32, (b[0][1] - s) as f32, (b[0][2] - s) as f32],
            [(b[1][0] + s) as f32, (b[1][1] + s) as f32, (b[1][2] + s) as f32],
        );
        for sb in self.top.locate_in_envelope_intersecting(env) {
            for e in self.shards[sb.shard as usize]
                .tree
                .locate_in_envelope_intersecting(env)
            {
                f(e.cell);
            }
        }
    }

    /// Heap bytes of each part of the index (for the memory report).
    pub fn heap_parts(&self) -> [(&'static str, usize); 3] {
        let tree_entries: usize = self.shards.iter().map(|s| s.tree.size()).sum();
        let buckets = |cap: usize| {
            if cap == 0 {
                0
            } else {
                (cap * 8 / 7).next_power_of_two()
            }
        };
        [
            // rstar allocates every node for MAX_SIZE + 1 children.
            (
                "shard trees",
                tree_entries.div_ceil(ShardTreeParams::MIN_SIZE.max(1) * 3 / 2)
                    * (WIDTH + 1)
                    * std::mem::size_of::<rstar::RTreeNode<Entry>>(),
            ),
            (
                "cells",
                self.cells.capacity() * std::mem::size_of::<Cell>()
                    + buckets(self.cell_by_h3.capacity()) * 13
                    + self.free_cells.capacity() * 4,
            ),
            (
                "cell members",
                self.cells
                    .iter()
                    .map(|c| c.members.capacity() * std::mem::size_of::<Member>())
                    .sum::<usize>(),
            ),
        ]
    }
}
