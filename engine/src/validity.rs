//! Polygons whose rings cross are refused: a self-intersecting fence has no
//! inside a dispatcher could draw, and its point test would answer by
//! accident. One sweep over every edge of a polygon (sorted by their least
//! longitude; each edge is tested only against the edges that overlap it in
//! longitude), so a long coastline costs about `n log n`, not `n²`.

use geo::{Coord, Line, LineIntersection, Polygon, line_intersection::line_intersection};

/// One edge: its ring, its place in the ring, and its ends.
#[derive(Debug, Clone, Copy)]
struct Edge {
    ring: usize,
    index: usize,
    line: Line,
    min_x: f64,
    max_x: f64,
}

/// Checks that no ring of `poly` crosses itself or another ring (touching
/// only where consecutive edges of a ring meet). Repeated consecutive
/// positions are ignored.
///
/// # Errors
/// Which ring crosses which, and near where, in words.
pub(crate) fn check_simple(poly: &Polygon) -> Result<(), String> {
    let mut edges: Vec<Edge> = Vec::new();
    let mut ring_len: Vec<usize> = Vec::new();
    for (ring, ls) in std::iter::once(poly.exterior())
        .chain(poly.interiors())
        .enumerate()
    {
        let mut points: Vec<Coord> = Vec::with_capacity(ls.0.len());
        for c in &ls.0 {
            if points.last() != Some(c) {
                points.push(*c);
            }
        }
        if points.len() > 1 && points.first() == points.last() {
            points.pop();
        }
        if points.len() < 3 {
            return Err(format!("{} has fewer than 3 distinct positions", name(ring)));
        }
        let n = points.len();
        ring_len.push(n);
        for index in 0..n {
            let (a, b) = (points[index], points[(index + 1) % n]);
            edges.push(Edge {
                ring,
                index,
                line: Line::new(a, b),
                min_x: a.x.min(b.x),
                max_x: a.x.max(b.x),
            });
        }
    }
    edges.sort_unstable_by(|a, b| a.min_x.total_cmp(&b.min_x));
    for (i, e) in edges.iter().enumerate() {
        for o in edges.iter().skip(i + 1).take_while(|o| o.min_x <= e.max_x) {
            let Some(hit) = line_intersection(e.line, o.line) else {
                continue;
            };
            if e.ring == o.ring && adjacent(e.index, o.index, ring_len[e.ring]) {
                // Consecutive edges share one end; anything more is a spike
                // folding back on itself.
                if matches!(hit, LineIntersection::SinglePoint { is_proper: false, .. }) {
                    continue;
                }
            }
            let at = match hit {
                LineIntersection::SinglePoint { intersection, .. } => intersection,
                LineIntersection::Collinear { intersection } => intersection.start,
            };
            return Err(if e.ring == o.ring {
                format!("{} crosses itself near [{}, {}]", name(e.ring), at.x, at.y)
            } else {
                format!(
                    "{} and {} cross near [{}, {}]",
                    name(e.ring.min(o.ring)),
                    name(e.ring.max(o.ring)),
                    at.x,
                    at.y
                )
            });
        }
    }
    Ok(())
}

fn adjacent(a: usize, b: usize, n: usize) -> bool {
    (a + 1) % n == b || (b + 1) % n == a
}

fn name(ring: usize) -> String {
    match ring {
        0 => "the outer ring".into(),
        h => format!("hole {h}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{LineString, polygon};

    #[test]
    fn a_simple_polygon_with_a_hole_passes() {
        let p = polygon!(
            exterior: [(x: 0., y: 0.), (x: 4., y: 0.), (x: 4., y: 4.), (x: 0., y: 4.), (x: 0., y: 0.)],
            interiors: [[(x: 1., y: 1.), (x: 2., y: 1.), (x: 2., y: 2.), (x: 1., y: 1.)]],
        );
        assert_eq!(check_simple(&p), Ok(()));
    }

    #[test]
    fn repeated_positions_are_not_crossings() {
        let ring = LineString::from(vec![(0., 0.), (1., 0.), (1., 0.), (1., 1.), (0., 1.), (0., 0.)]);
        assert_eq!(check_simple(&Polygon::new(ring, vec![])), Ok(()));
    }

    #[test]
    fn a_bow_tie_is_refused_and_named() {
        let ring = LineString::from(vec![(0., 0.), (2., 2.), (2., 0.), (0., 2.), (0., 0.)]);
        let err = check_simple(&Polygon::new(ring, vec![])).expect_err("crosses");
        assert!(err.contains("outer ring crosses itself near [1, 1]"), "{err}");
    }

    #[test]
    fn a_spike_back_along_an_edge_is_refused() {
        let ring = LineString::from(vec![(0., 0.), (2., 0.), (1., 0.), (1., 1.), (0., 0.)]);
        assert!(check_simple(&Polygon::new(ring, vec![])).is_err());
    }

    #[test]
    fn a_hole_crossing_the_outer_ring_is_refused() {
        let p = polygon!(
            exterior: [(x: 0., y: 0.), (x: 4., y: 0.), (x: 4., y: 4.), (x: 0., y: 4.), (x: 0., y: 0.)],
            interiors: [[(x: 3., y: 1.), (x: 5., y: 1.), (x: 5., y: 2.), (x: 3., y: 1.)]],
        );
        let err = check_simple(&p).expect_err("crosses");
        assert!(err.contains("outer ring and hole 1 cross"), "{err}");
    }

    #[test]
    fn too_few_distinct_positions_are_refused() {
        let ring = LineString::from(vec![(0., 0.), (1., 1.), (1., 1.), (0., 0.)]);
        assert!(check_simple(&Polygon::new(ring, vec![])).is_err());
    }
}
