//! The cell → candidate regions index, and the candidate sets it interns.
//!
//! Every occupied cell holds the id of its candidate set (the regions whose
//! covers reach it), so a fix that stays in its cell reads its candidates
//! without a lookup. Sets are interned: cells with the same regions share
//! one, and a set lives only while some occupied cell holds it. Each set
//! counts the cells that hold it; a set whose count falls to zero waits in
//! a list, and the list is swept once it holds [`SWEEP_BATCH`] sets. So the
//! sets alive are at most one per occupied cell plus that batch, however
//! many fences and feeds come and go; and a cell emptied and filled again
//! before the sweep (a unit going back and forth across a cell edge) finds
//! its set still there, with no allocation.

use std::hash::BuildHasher;

use h3o::{CellIndex, Resolution};
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use crate::cover::CoverCell;

/// Unheld candidate sets kept before they are freed together: bounds the
/// sweep's work under the engine lock (one hash removal each, about
/// 100 µs for the batch) and the memory of sets no cell holds.
pub(crate) const SWEEP_BATCH: usize = 4096;

/// Cell → candidate regions, and interned candidate sets.
///
/// A candidate is packed as `region << 1 | interior`. Set id 0 is the empty
/// set, never counted or freed.
#[derive(Debug, Default)]
pub(crate) struct CoverIndex {
    /// Candidates by cell (any resolution up to the fine one).
    cells: HashMap<u64, Vec<u32>>,
    /// How many cover cells each resolution has (to probe only those).
    per_res: [u32; 16],
    /// Interned candidate sets by id (a freed id holds an empty slice).
    sets: Vec<Box<[u32]>>,
    /// How many occupied cells hold each set, by id.
    holders: Vec<u32>,
    /// Ids of interned sets, hashed by their contents (kept once, in `sets`).
    by_contents: HashTable<u32>,
    /// Hasher of `by_contents`.
    hasher: DefaultHashBuilder,
    /// Sets whose holders fell to zero since the last sweep (one may have
    /// been taken again since: the sweep checks).
    unheld: Vec<u32>,
    /// Freed ids, reused before new ones.
    free: Vec<u32>,
    /// Reused buffer for lookups.
    scratch: Vec<u32>,
}

impl CoverIndex {
    /// Adds a region's cover.
    pub fn insert(&mut self, region: u32, cover: &[CoverCell]) {
        for &(cell, interior) in cover {
            let list = self.cells.entry(u64::from(cell)).or_default();
            if list.is_empty() {
                self.per_res[usize::from(u8::from(cell.resolution()))] += 1;
            }
            list.push(region << 1 | u32::from(interior));
        }
    }

    /// Removes a region's cover (the same cells it was inserted with).
    pub fn remove(&mut self, region: u32, cover: &[CoverCell]) {
        for &(cell, _) in cover {
            let key = u64::from(cell);
            if let Some(list) = self.cells.get_mut(&key) {
                list.retain(|c| c >> 1 != region);
                if list.is_empty() {
                    self.cells.remove(&key);
                    self.per_res[usize::from(u8::from(cell.resolution()))] -= 1;
                }
            }
        }
    }

    /// Appends the candidates of a fine cell (unsorted) to `out`.
    pub fn collect(&self, fine_cell: CellIndex, out: &mut Vec<u32>) {
        let fine = u8::from(fine_cell.resolution());
        for r in 0..=fine {
            if self.per_res[usize::from(r)] == 0 {
                continue;
            }
            let key = if r == fine {
                Some(fine_cell)
            } else {
                Resolution::try_from(r).ok().and_then(|res| fine_cell.parent(res))
            };
            if let Some(list) = key.and_then(|k| self.cells.get(&u64::from(k))) {
                out.extend_from_slice(list);
            }
        }
    }

    /// The candidate set of a fine cell, taken for an occupied cell: the
    /// caller holds it until it calls [`CoverIndex::put_back`] with it.
    pub fn take(&mut self, fine_cell: CellIndex) -> u32 {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.collect(fine_cell, &mut scratch);
        let id = if scratch.is_empty() {
            0
        } else {
            scratch.sort_unstable();
            self.intern(&scratch)
        };
        self.scratch = scratch;
        if id != 0 {
            self.holders[id as usize] += 1;
        }
        id
    }

    /// Gives back a set taken by [`CoverIndex::take`] (a cell emptied, or
    /// its candidates looked up again).
    pub fn put_back(&mut self, id: u32) {
        if id == 0 {
            return;
        }
        let Some(h) = self.holders.get_mut(id as usize) else {
            return;
        };
        *h = h.saturating_sub(1);
        if *h == 0 {
            self.unheld.push(id);
            if self.unheld.len() >= SWEEP_BATCH {
                self.sweep();
            }
        }
    }

    /// The id of `set` (sorted), interning it when new.
    fn intern(&mut self, set: &[u32]) -> u32 {
        let hash = self.hasher.hash_one(set);
        let sets = &self.sets;
        if let Some(&id) = self.by_contents.find(hash, |&id| *sets[id as usize] == *set) {
            return id;
        }
        if self.sets.is_empty() {
            self.sets.push(Box::new([]));
            self.holders.push(0);
        }
        let boxed: Box<[u32]> = set.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.sets[id as usize] = boxed;
                id
            }
            None => {
                self.sets.push(boxed);
                self.holders.push(0);
                u32::try_from(self.sets.len() - 1).unwrap_or(0)
            }
        };
        let (sets, hasher) = (&self.sets, &self.hasher);
        self.by_contents
            .insert_unique(hash, id, |&i| hasher.hash_one(&*sets[i as usize]));
        id
    }

    /// Frees the sets no occupied cell holds (at most [`SWEEP_BATCH`]).
    fn sweep(&mut self) {
        for id in std::mem::take(&mut self.unheld) {
            let i = id as usize;
            if self.holders[i] != 0 || self.sets[i].is_empty() {
                continue;
            }
            let hash = self.hasher.hash_one(&*self.sets[i]);
            if let Ok(entry) = self.by_contents.find_entry(hash, |&x| x == id) {
                entry.remove();
            }
            self.sets[i] = Box::new([]);
            self.free.push(id);
        }
    }

    /// The candidates of an interned set.
    #[inline]
    pub fn set(&self, id: u32) -> &[u32] {
        if id == 0 { &[] } else { &self.sets[id as usize] }
    }

    /// Candidate sets interned now: those held by occupied cells, and
    /// those awaiting the sweep.
    pub fn interned(&self) -> usize {
        self.by_contents.len()
    }

    /// Total cover cells held.
    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(lat: f64, lon: f64) -> CellIndex {
        h3o::LatLng::new(lat, lon)
            .expect("lat lng")
            .to_cell(Resolution::Nine)
    }

    #[test]
    fn a_set_no_cell_holds_is_freed_by_the_sweep_and_its_id_reused() {
        let mut idx = CoverIndex::default();
        let c = cell(51.5, -0.12);
        let mut held = Vec::new();
        // Regions come and go over one occupied cell: each leaves a set.
        for region in 0..(SWEEP_BATCH as u32 * 3) {
            idx.insert(region, &[(c, false)]);
            let id = idx.take(c);
            assert_eq!(idx.set(id), &[region << 1]);
            if let Some(old) = held.pop() {
                idx.put_back(old);
            }
            held.push(id);
            idx.remove(region, &[(c, false)]);
        }
        assert!(
            idx.interned() <= SWEEP_BATCH + 1,
            "{} sets interned",
            idx.interned()
        );
        assert!(idx.sets.len() <= SWEEP_BATCH + 2, "{} set slots", idx.sets.len());
        // The one still held is intact.
        let last = held[0];
        assert_eq!(idx.set(last), &[(SWEEP_BATCH as u32 * 3 - 1) << 1]);
    }

    #[test]
    fn a_set_taken_again_before_the_sweep_is_kept() {
        let mut idx = CoverIndex::default();
        let c = cell(51.5, -0.12);
        idx.insert(7, &[(c, true)]);
        let id = idx.take(c);
        idx.put_back(id);
        assert_eq!(idx.take(c), id, "the unheld set is found again");
        // Fill the sweep with other sets; the retaken one must survive it.
        for region in 100..(100 + SWEEP_BATCH as u32) {
            let other = cell(10.0 + f64::from(region) * 0.01, 20.0);
            idx.insert(region, &[(other, false)]);
            let o = idx.take(other);
            idx.put_back(o);
        }
        assert_eq!(idx.set(id), &[7 << 1 | 1]);
        assert_eq!(idx.take(c), id);
    }
}
