//! Shards: one `rstar` R-tree of unit anchors per coarse H3 cell, plus a small
//! R-tree over the shards themselves so searches visit shards nearest first.
//!
//! Trees hold each unit's *anchor* (the centre of its fine H3 cell), not its
//! latest position: a unit only moves in its tree when it changes cell. Every unit is within `slack` (chord on the unit sphere) of its
//! anchor, so `chord(q, anchor) - slack` is an exact lower bound of its
//! distance, which keeps nearest searches exact.

use hashbrown::HashMap;
use rstar::{AABB, Envelope, PointDistance, RTree, RTreeObject};

use crate::shape::Aabb3;

/// A unit's anchor in a shard tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Entry {
    /// Anchor as an f32 unit vector.
    pub p: [f32; 3],
    /// Unit slot.
    pub slot: u32,
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
/// anchor the shard has held since the envelope last grew.
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
    /// Anchors of the units in it.
    pub tree: RTree<Entry>,
    /// Its envelope as registered in the top tree (grows, never shrinks, so
    /// it always contains the tree).
    env: Option<AABB<[f32; 3]>>,
}

/// All shards.
#[derive(Debug, Default)]
pub(crate) struct ShardedIndex {
    /// Shards by index.
    pub shards: Vec<Shard>,
    /// Shard index by cell.
    by_cell: HashMap<u64, u32>,
    /// Shards by envelope.
    top: RTree<ShardBox>,
    /// Chord bound on the distance between any unit and its anchor, plus
    /// f32 rounding of anchors and query points.
    pub slack: f64,
}

/// f32 rounding of a unit vector moves it by less than this chord.
const F32_MARGIN: f64 = 2e-6;

impl ShardedIndex {
    /// Raises the slack to cover a unit anywhere within chord `r` of its anchor.
    pub fn cover_radius(&mut self, r: f64) {
        if r + F32_MARGIN > self.slack {
            self.slack = r + F32_MARGIN;
        }
    }

    /// Inserts an anchor into the shard of `cell`; returns the shard index.
    pub fn insert(&mut self, cell: u64, slot: u32, p: [f32; 3]) -> u32 {
        let idx = match self.by_cell.get(&cell) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.shards.len()).unwrap_or(u32::MAX);
                self.shards.push(Shard {
                    tree: RTree::new(),
                    env: None,
                });
                self.by_cell.insert(cell, i);
                i
            }
        };
        let shard = &mut self.shards[idx as usize];
        shard.tree.insert(Entry { p, slot });
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

    /// Removes an anchor.
    pub fn remove(&mut self, shard: u32, slot: u32, p: [f32; 3]) {
        if let Some(s) = self.shards.get_mut(shard as usize) {
            s.tree.remove(&Entry { p, slot });
        }
    }

    /// Shards nearest first, with the squared chord from `q` to their box.
    pub fn shards_by_distance<'a>(&'a self, q: &[f32; 3]) -> impl Iterator<Item = (&'a Shard, f32)> + 'a {
        self.top
            .nearest_neighbor_iter_with_distance_2(*q)
            .map(|(b, d2)| (&self.shards[b.shard as usize], d2))
    }

    /// Calls `f` with the slot of every unit whose anchor is within `slack`
    /// of the box (so every unit that may be inside it).
    pub fn for_each_in(&self, b: &Aabb3, mut f: impl FnMut(u32)) {
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
                f(e.slot);
            }
        }
    }

    /// Units held in trees.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.tree.size()).sum()
    }
}
