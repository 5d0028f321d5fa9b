//! Polygons across the antimeridian and around the poles, taken the short
//! way.
//!
//! GeoJSON (RFC 7946) draws edges straight in lon/lat, so a ring with an
//! edge from 179° to -179° literally runs 358° the long way round the
//! globe. Nobody drawing an incident area over Fiji or the Bering Sea means
//! that, and RFC 7946 only asks writers to split such rings, which map
//! tools often do not. So an edge spanning more than 180° of longitude is
//! taken to cross the antimeridian the short way: the ring is unwrapped
//! (each vertex moved by a multiple of 360° to within 180° of the one
//! before), and the shape tests a point at its longitude and at ±360°.
//!
//! A ring whose unwrapped end lies 360° from its start goes round a pole:
//! it is closed over the pole on the side of its mean latitude (the
//! smaller of the two caps), so "everything north of this line round the
//! Arctic" is one ring. A hole that goes round a pole is refused.

use geo::{Coord, LineString, MultiPolygon, Polygon};

/// An edge spanning more than this much longitude crosses the antimeridian.
const HALF_TURN: f64 = 180.0;

/// `mp` unwrapped as the module says, or `None` when no edge of any ring
/// spans more than 180° (the common case: nothing to do).
///
/// # Errors
/// A hole that goes round a pole, or a ring round a pole whose mean
/// latitude is the equator (no side is the short way).
pub(crate) fn short_way(mp: &MultiPolygon) -> Result<Option<MultiPolygon>, String> {
    let crosses = |ls: &LineString| ls.0.windows(2).any(|w| (w[1].x - w[0].x).abs() > HALF_TURN);
    let any =
        mp.0.iter()
            .any(|p| std::iter::once(p.exterior()).chain(p.interiors()).any(crosses));
    if !any {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(mp.0.len());
    for poly in &mp.0 {
        let ext = unwrap(poly.exterior());
        let ext = match turns(&ext) {
            0 => ext,
            t => over_the_pole(ext, t)?,
        };
        let (lo, hi) = x_range(&ext);
        let mut holes = Vec::with_capacity(poly.interiors().len());
        for h in poly.interiors() {
            let h = unwrap(h);
            if turns(&h) != 0 {
                return Err("a hole may not go round a pole".into());
            }
            holes.push(beside(h, lo, hi));
        }
        out.push(Polygon::new(ext, holes));
    }
    Ok(Some(MultiPolygon(out)))
}

/// The ring with each vertex moved by a multiple of 360° to within 180° of
/// the one before it (the first stays where it is).
fn unwrap(ring: &LineString) -> LineString {
    // Whole turns added to each vertex, counted along the ring: each
    // vertex is its own longitude plus k × 360 in one addition, so a point
    // tested at its longitude ±360 meets a vertex exactly (on the boundary
    // is inside).
    let mut k = 0i32;
    let mut out: Vec<Coord> = Vec::with_capacity(ring.0.len() + 3);
    for (i, c) in ring.0.iter().enumerate() {
        if i > 0 {
            // Each edge the short way when it spans more than a half turn
            // (exactly 180° stays as written).
            let d = c.x - ring.0[i - 1].x;
            if d > HALF_TURN {
                k -= 1;
            } else if d < -HALF_TURN {
                k += 1;
            }
        }
        out.push(Coord {
            x: c.x + f64::from(k) * 360.0,
            y: c.y,
        });
    }
    LineString(out)
}

/// How many times the unwrapped ring goes round the pole: its end less its
/// start, in turns (0 for a ring that closes).
fn turns(ring: &LineString) -> i64 {
    match (ring.0.first(), ring.0.last()) {
        (Some(a), Some(b)) => ((b.x - a.x) / 360.0).round() as i64,
        _ => 0,
    }
}

/// A ring that goes round a pole, closed over the pole on the side of its
/// mean latitude.
fn over_the_pole(mut ring: LineString, turns: i64) -> Result<LineString, String> {
    if turns.abs() != 1 {
        return Err(format!("a ring goes round the pole {} times", turns.abs()));
    }
    let n = ring.0.len().saturating_sub(1).max(1) as f64;
    let mean = ring.0.iter().skip(1).map(|c| c.y).sum::<f64>() / n;
    if mean == 0.0 {
        return Err("a ring round the globe along the equator has no short side".into());
    }
    let pole = 90.0_f64.copysign(mean);
    let (Some(&first), Some(&last)) = (ring.0.first(), ring.0.last()) else {
        return Err("an empty ring".into());
    };
    // Up the last meridian to the pole, along it, and down to the start.
    ring.0.push(Coord { x: last.x, y: pole });
    ring.0.push(Coord { x: first.x, y: pole });
    ring.0.push(first);
    Ok(ring)
}

fn x_range(ring: &LineString) -> (f64, f64) {
    ring.0
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
            (lo.min(c.x), hi.max(c.x))
        })
}

/// A hole moved by a multiple of 360° to lie within its exterior's
/// longitudes (when some multiple does).
fn beside(hole: LineString, lo: f64, hi: f64) -> LineString {
    let (hlo, hhi) = x_range(&hole);
    for k in [0.0, -360.0, 360.0, -720.0, 720.0] {
        if hlo + k >= lo && hhi + k <= hi {
            return LineString(hole.0.iter().map(|c| Coord { x: c.x + k, y: c.y }).collect());
        }
    }
    hole
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(points: &[(f64, f64)]) -> LineString {
        LineString(points.iter().map(|&(x, y)| Coord { x, y }).collect())
    }

    #[test]
    fn a_ring_across_the_antimeridian_is_unwrapped_to_the_short_way() {
        let mp = MultiPolygon(vec![Polygon::new(
            ring(&[
                (179.0, -17.0),
                (-179.0, -17.0),
                (-179.0, -15.0),
                (179.0, -15.0),
                (179.0, -17.0),
            ]),
            vec![],
        )]);
        let got = short_way(&mp).expect("fine").expect("unwrapped");
        let xs: Vec<f64> = got.0[0].exterior().0.iter().map(|c| c.x).collect();
        assert_eq!(xs, vec![179.0, 181.0, 181.0, 179.0, 179.0]);
    }

    #[test]
    fn a_ring_within_one_side_is_left_alone() {
        let mp = MultiPolygon(vec![Polygon::new(
            ring(&[
                (170.0, 0.0),
                (180.0, 0.0),
                (180.0, 10.0),
                (170.0, 10.0),
                (170.0, 0.0),
            ]),
            vec![],
        )]);
        assert!(short_way(&mp).expect("fine").is_none());
    }

    #[test]
    fn a_ring_round_the_north_pole_is_closed_over_it() {
        let mp = MultiPolygon(vec![Polygon::new(
            ring(&[
                (0.0, 80.0),
                (90.0, 80.0),
                (180.0, 80.0),
                (-90.0, 80.0),
                (0.0, 80.0),
            ]),
            vec![],
        )]);
        let got = short_way(&mp).expect("fine").expect("unwrapped");
        let ext = got.0[0].exterior();
        assert_eq!(ext.0.first(), ext.0.last());
        assert!(ext.0.iter().any(|c| c.y == 90.0), "{ext:?}");
    }

    #[test]
    fn a_hole_round_a_pole_is_refused() {
        let mp = MultiPolygon(vec![Polygon::new(
            ring(&[(0.0, 60.0), (120.0, 60.0), (-120.0, 60.0), (0.0, 60.0)]),
            vec![ring(&[(0.0, 70.0), (120.0, 70.0), (-120.0, 70.0), (0.0, 70.0)])],
        )]);
        assert!(short_way(&mp).is_err());
    }
}
