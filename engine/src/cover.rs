//! H3 covers of regions (fences, feeds, zones) and the index that turns a
//! unit's fine cell into its candidate regions with one lookup per level.
//!
//! A cover lists, for a region, cells that are *interior* (every point of
//! every fine cell below them is inside: a certain hit) and fine *boundary*
//! cells (the exact test decides). Interior cells are kept at the coarsest
//! level where that holds, so large areas stay small.
//!
//! Invariant relied on: every descendant of an H3 cell lies within the cell
//! and its first ring. So a coarse cell is interior only when it and all of
//! its neighbours are wholly inside, and a coarse cell is refined whenever it
//! or a neighbour touches the region.

use std::collections::{HashMap as StdHashMap, HashSet};

use h3o::{CellIndex, LatLng, Resolution};

use crate::error::EngineError;
use crate::shape::Shape;
use crate::sphere;

/// How many levels above the fine resolution a cover starts.
const COVER_LEVELS: u8 = 6;

/// One cover cell: `true` = interior.
pub(crate) type CoverCell = (CellIndex, bool);

/// A fence's or feed's cover, computed apart from the engine: it depends
/// only on the shape, the band and the configuration, and a large area
/// takes seconds, which must not be spent holding the engine (every fix
/// would wait). Hand it to [`Engine::put_fence_with_cover`] or
/// [`Engine::subscribe_feed_with_cover`].
///
/// [`Engine::put_fence_with_cover`]: crate::Engine::put_fence_with_cover
/// [`Engine::subscribe_feed_with_cover`]: crate::Engine::subscribe_feed_with_cover
#[derive(Debug, Clone, PartialEq)]
pub struct Cover {
    pub(crate) cells: Vec<CoverCell>,
    /// What it was computed for: an engine uses it only if these match.
    pub(crate) res: Resolution,
    pub(crate) band_m: f64,
    pub(crate) max_cells: usize,
}

impl Cover {
    /// The cover of `shape` (with a boundary band of `band_m`, a fence's
    /// hysteresis; 0 for a feed) as an engine of configuration `cfg`
    /// would compute it.
    ///
    /// # Errors
    /// [`EngineError::CoverTooLarge`] past `cfg.max_cover_cells`, and a bad
    /// `cfg.fence_res`.
    pub fn compute(shape: &Shape, cfg: &crate::EngineConfig, band_m: f64) -> Result<Self, EngineError> {
        let res = Resolution::try_from(cfg.fence_res).map_err(|_| EngineError::BadParameter {
            what: "fence_res",
            value: f64::from(cfg.fence_res),
            reason: "must be an H3 resolution, 0..=15",
        })?;
        Ok(Self {
            cells: compute_cover(shape, res, band_m, cfg.max_cover_cells, true)?,
            res,
            band_m,
            max_cells: cfg.max_cover_cells,
        })
    }

    /// The cover of a positions feed over `shape` (band 0), at
    /// [`feed_resolution`]: what [`Engine::subscribe_feed_with_cover`]
    /// takes.
    ///
    /// [`Engine::subscribe_feed_with_cover`]: crate::Engine::subscribe_feed_with_cover
    ///
    /// # Errors
    /// As [`Cover::compute`].
    pub fn compute_feed(shape: &Shape, cfg: &crate::EngineConfig) -> Result<Self, EngineError> {
        let fine = Resolution::try_from(cfg.fence_res).map_err(|_| EngineError::BadParameter {
            what: "fence_res",
            value: f64::from(cfg.fence_res),
            reason: "must be an H3 resolution, 0..=15",
        })?;
        let res = feed_resolution(shape, fine);
        Ok(Self {
            cells: compute_cover(shape, res, 0.0, cfg.max_cover_cells, res == fine)?,
            res,
            band_m: 0.0,
            max_cells: cfg.max_cover_cells,
        })
    }

    /// Cells it holds.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

/// Cells of its own resolution a feed's area spans at most, edge to edge.
const FEED_CELLS_ACROSS: f64 = 150.0;

/// The resolution a positions feed's cover goes down to: the fine one for
/// a town-sized area, one coarser each time the area grows sevenfold, so
/// a national or world view is a few thousand cells, not millions (the
/// world at the fine resolution took 13 s). A unit in a coarse boundary
/// cell takes the exact test instead: nanoseconds for a feed's box or
/// circle. Fences keep the fine resolution: their exact tests are the
/// costly ones and their edges are where alerts are decided.
pub(crate) fn feed_resolution(shape: &Shape, fine: Resolution) -> Resolution {
    let [lo, hi] = shape.aabb();
    let diagonal = (0..3).map(|i| (hi[i] - lo[i]).powi(2)).sum::<f64>().sqrt();
    let extent_m = diagonal * sphere::EARTH_RADIUS_M;
    let mut res = fine;
    while res.edge_length_m() * FEED_CELLS_ACROSS < extent_m {
        match res.pred() {
            Some(coarser) => res = coarser,
            None => break,
        }
    }
    res
}

/// Computes the cover of `shape` down to `fine`, with boundary cells widened
/// so every point within `band_m` outside the shape is in a boundary cell.
///
/// `exact_last`: units look up this cover with their own cell at `fine`
/// (true), or with an ancestor of a finer cell (false; then the last level
/// keeps the same margins as coarser ones, since such an ancestor need not
/// hold the unit's point).
pub(crate) fn compute_cover(
    shape: &Shape,
    fine: Resolution,
    band_m: f64,
    max_cells: usize,
    exact_last: bool,
) -> Result<Vec<CoverCell>, EngineError> {
    let too_large = || EngineError::CoverTooLarge {
        max: max_cells,
        res: u8::from(fine),
    };
    let fine_u8 = u8::from(fine);
    let start = Resolution::try_from(fine_u8.saturating_sub(COVER_LEVELS)).map_err(|_| too_large())?;
    let mut out = Vec::new();
    let mut inside_memo: StdHashMap<u64, bool> = StdHashMap::new();
    let inside = |c: CellIndex, memo: &mut StdHashMap<u64, bool>| -> bool {
        *memo.entry(u64::from(c)).or_insert_with(|| {
            let ll = LatLng::from(c);
            shape.contains(ll.lat(), ll.lng())
        })
    };

    // Level `start`: boundary band, then flood the interior from it.
    let mut boundary = boundary_cells(shape, start, band_m, max_cells).ok_or_else(too_large)?;
    let mut current: HashSet<u64> = boundary.clone();
    let mut frontier: Vec<CellIndex> = boundary
        .iter()
        .filter_map(|&c| CellIndex::try_from(c).ok())
        .collect();
    while let Some(c) = frontier.pop() {
        for n in c.grid_disk::<Vec<_>>(1) {
            let key = u64::from(n);
            if current.contains(&key) || boundary.contains(&key) {
                continue;
            }
            if inside(n, &mut inside_memo) {
                current.insert(key);
                frontier.push(n);
                if current.len() > max_cells {
                    return Err(too_large());
                }
            }
        }
    }
    // Plus one ring: descendants of a neighbour may reach into the region.
    let ring: Vec<u64> = current
        .iter()
        .filter_map(|&c| CellIndex::try_from(c).ok())
        .flat_map(|c| c.grid_disk::<Vec<_>>(1))
        .map(u64::from)
        .collect();
    current.extend(ring);

    let mut res = start;
    loop {
        let is_fine = res == fine;
        let mut next = Vec::new();
        for &key in &current {
            let Ok(x) = CellIndex::try_from(key) else { continue };
            // What to do with a cell that is not certain: refine it, or at the
            // last level leave it to the exact test.
            let uncertain = |next: &mut Vec<CellIndex>, out: &mut Vec<CoverCell>| {
                if is_fine {
                    out.push((x, false));
                } else {
                    next.extend(x.children(res.succ().unwrap_or(fine)));
                }
            };
            if boundary.contains(&key) {
                // The sampled band is generous; at the exact last level keep
                // only cells the boundary (widened by the band) can reach.
                if is_fine
                    && exact_last
                    && let Some(far) = clear_of_boundary(shape, x, band_m)
                {
                    if far == Side::Inside {
                        out.push((x, true));
                    }
                } else {
                    uncertain(&mut next, &mut out);
                }
            } else if inside(x, &mut inside_memo) {
                let deep = (is_fine && exact_last)
                    || x.grid_disk::<Vec<_>>(1)
                        .into_iter()
                        .all(|n| !boundary.contains(&u64::from(n)) && inside(n, &mut inside_memo));
                if deep {
                    out.push((x, true));
                } else {
                    uncertain(&mut next, &mut out);
                }
            } else if !(is_fine && exact_last)
                && x.grid_disk::<Vec<_>>(1)
                    .into_iter()
                    .any(|n| boundary.contains(&u64::from(n)) || inside(n, &mut inside_memo))
            {
                uncertain(&mut next, &mut out);
            }
            if out.len() + next.len() > max_cells {
                return Err(too_large());
            }
        }
        if is_fine {
            break;
        }
        res = res.succ().unwrap_or(fine);
        boundary = boundary_cells(shape, res, band_m, max_cells).ok_or_else(too_large)?;
        current = next.into_iter().map(u64::from).collect();
        inside_memo.clear();
    }
    // In cell order, not the hash sets' (random per process): the same
    // area gives the same cover, so snapshots of equal engines are equal.
    out.sort_unstable_by_key(|&(c, _)| u64::from(c));
    Ok(out)
}

/// Which side of a shape a whole cell is on.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Inside,
    Outside,
}

/// `Some(side)` when every point of `cell` is farther than `band_m` from
/// the shape's boundary (so the cell is wholly on one side), `None` when the
/// boundary may pass through it or within `band_m` of it.
fn clear_of_boundary(shape: &Shape, cell: CellIndex, band_m: f64) -> Option<Side> {
    if matches!(shape, Shape::Cells(_)) {
        return None;
    }
    let c = LatLng::from(cell);
    // The planar distance estimate fails near the poles: stay conservative.
    if c.lat().abs() > 80.0 {
        return None;
    }
    let cv = sphere::to_vec3(c.lat(), c.lng());
    let circumradius = cell
        .boundary()
        .iter()
        .map(|v| sphere::chord2_to_m(sphere::chord2(cv, sphere::to_vec3(v.lat(), v.lng()))))
        .fold(0.0, f64::max);
    // The boundary distance is a local planar estimate: keep a wide margin.
    let d = shape.distance_to_boundary_m(c.lat(), c.lng());
    if d > (circumradius + band_m) * 1.02 + 2.0 {
        Some(if shape.contains(c.lat(), c.lng()) {
            Side::Inside
        } else {
            Side::Outside
        })
    } else {
        None
    }
}

/// Every cell at `res` that holds a point of the shape's boundary or lies
/// within `band_m` of it (conservatively: more cells, never fewer).
fn boundary_cells(shape: &Shape, res: Resolution, band_m: f64, max_cells: usize) -> Option<HashSet<u64>> {
    let edge = res.edge_length_m();
    // Samples this close fall in the cell of every boundary point or in a
    // neighbour of it, even for the smallest cells of a resolution.
    let spacing = 0.3 * edge;
    let rings = 1 + (band_m / (0.8 * edge)).ceil() as u32;
    let mut seen_sample_cells = HashSet::new();
    let mut cells = HashSet::new();
    let mut overflow = false;
    shape.boundary_samples(spacing, &mut |lat, lon| {
        if overflow {
            return;
        }
        let Ok(ll) = LatLng::new(lat, sphere::wrap_lon(lon)) else {
            return;
        };
        let c = ll.to_cell(res);
        if seen_sample_cells.insert(u64::from(c)) {
            cells.extend(c.grid_disk::<Vec<_>>(rings).into_iter().map(u64::from));
            overflow = cells.len() > max_cells;
        }
    });
    (!overflow).then_some(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_over_a_town_keeps_the_fine_resolution_and_one_over_the_world_does_not() {
        let fine = Resolution::Nine;
        let town = Shape::circle(51.5, -0.12, 3000.0).expect("circle");
        assert_eq!(feed_resolution(&town, fine), fine);
        let world = Shape::bbox([-180.0, -90.0, 180.0, 90.0]).expect("bbox");
        let res = feed_resolution(&world, fine);
        assert!(res <= Resolution::Two, "the world's feed cover is at {res:?}");
        let cover = compute_cover(&world, res, 0.0, 1_000_000, false).expect("cover");
        assert!(cover.len() < 20_000, "the world takes {} cells", cover.len());
    }
}
