//! Point-in-polygon with the boundary counted as inside, in planar lon/lat.
//!
//! Fences are GeoJSON, whose edges are straight lines in longitude/latitude
//! (RFC 7946). geo's `Intersects<Point>` has the right semantics but walks
//! every edge; its `IntervalTreeMultiPolygon` is fast but leaves the boundary
//! out. This keeps geo's robust orientation predicate and indexes each
//! polygon's edges by horizontal bands, so a test touches only the few edges
//! whose latitude span holds the point.

use geo::kernels::{Kernel, RobustKernel};
use geo::{Coord, MultiPolygon, Orientation};

/// Edges of one polygon (exterior and holes), bucketed by latitude band.
#[derive(Debug, Clone)]
struct IndexedPolygon {
    /// Bounding box: min lon, min lat, max lon, max lat.
    bbox: [f64; 4],
    /// Every edge of every ring.
    edges: Vec<(Coord, Coord)>,
    /// Latitude of the bottom of band 0.
    y0: f64,
    /// Height of a band, degrees.
    band_h: f64,
    /// Edge indices per band, concatenated; band `b` is
    /// `band_edges[band_start[b]..band_start[b + 1]]`.
    band_edges: Vec<u32>,
    /// Offsets into `band_edges`, one more than the number of bands.
    band_start: Vec<u32>,
}

/// A multipolygon prepared for fast, boundary-inclusive point tests.
#[derive(Debug, Clone)]
pub struct IndexedMultiPolygon {
    polygons: Vec<IndexedPolygon>,
}

impl IndexedMultiPolygon {
    /// Prepares a multipolygon.
    pub fn new(mp: &MultiPolygon) -> Self {
        Self {
            polygons: mp.0.iter().map(IndexedPolygon::new).collect(),
        }
    }

    /// Whether `(lon, lat)` is inside or on the boundary of any polygon.
    #[inline]
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        let p = Coord { x: lon, y: lat };
        self.polygons.iter().any(|poly| poly.contains(p))
    }

    /// Every edge, for distance and cover computations.
    pub fn edges(&self) -> impl Iterator<Item = (Coord, Coord)> + '_ {
        self.polygons.iter().flat_map(|p| p.edges.iter().copied())
    }

    /// Bounding box: min lon, min lat, max lon, max lat.
    pub fn bbox(&self) -> [f64; 4] {
        self.polygons.iter().fold(
            [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY],
            |b, p| {
                [
                    b[0].min(p.bbox[0]),
                    b[1].min(p.bbox[1]),
                    b[2].max(p.bbox[2]),
                    b[3].max(p.bbox[3]),
                ]
            },
        )
    }
}

impl IndexedPolygon {
    fn new(poly: &geo::Polygon) -> Self {
        let mut edges = Vec::new();
        for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
            for w in ring.0.windows(2) {
                if w[0] != w[1] {
                    edges.push((w[0], w[1]));
                }
            }
        }
        let mut bbox = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
        for (a, _) in &edges {
            bbox = [
                bbox[0].min(a.x),
                bbox[1].min(a.y),
                bbox[2].max(a.x),
                bbox[3].max(a.y),
            ];
        }
        // About four edges a band keeps each test to a handful of edges.
        let bands = (edges.len() / 4).clamp(1, 1024);
        let height = (bbox[3] - bbox[1]).max(1e-12);
        let band_h = height / bands as f64;
        let band_of = |y: f64| (((y - bbox[1]) / band_h) as usize).min(bands - 1);
        let mut lists = vec![Vec::new(); bands];
        for (i, (a, b)) in edges.iter().enumerate() {
            for list in &mut lists[band_of(a.y.min(b.y))..=band_of(a.y.max(b.y))] {
                list.push(i as u32);
            }
        }
        let mut band_start = Vec::with_capacity(bands + 1);
        let mut band_edges = Vec::new();
        band_start.push(0);
        for l in lists {
            band_edges.extend(l);
            band_start.push(band_edges.len() as u32);
        }
        Self {
            bbox,
            edges,
            y0: bbox[1],
            band_h,
            band_edges,
            band_start,
        }
    }

    #[inline]
    fn contains(&self, p: Coord) -> bool {
        if !(p.x >= self.bbox[0] && p.x <= self.bbox[2] && p.y >= self.bbox[1] && p.y <= self.bbox[3]) {
            return false;
        }
        let bands = self.band_start.len() - 1;
        let b = (((p.y - self.y0) / self.band_h) as usize).min(bands - 1);
        let (lo, hi) = (self.band_start[b] as usize, self.band_start[b + 1] as usize);
        let mut inside = false;
        for &e in &self.band_edges[lo..hi] {
            let (a, c) = self.edges[e as usize];
            let (ylo, yhi) = if a.y <= c.y { (a.y, c.y) } else { (c.y, a.y) };
            if p.y < ylo || p.y > yhi {
                continue;
            }
            let (xlo, xhi) = if a.x <= c.x { (a.x, c.x) } else { (c.x, a.x) };
            // Wholly left of the point: neither crosses the rightward ray nor
            // holds the point.
            if xhi < p.x {
                continue;
            }
            // Half-open rule: an edge counts when it straddles the ray's
            // latitude with one end strictly above.
            let straddles = (a.y > p.y) != (c.y > p.y);
            // Wholly right of the point: crosses exactly when it straddles.
            if xlo > p.x {
                inside ^= straddles;
                continue;
            }
            let o = RobustKernel::orient2d(a, c, p);
            if o == Orientation::Collinear {
                return true;
            }
            if straddles {
                let up = c.y > a.y;
                if (up && o == Orientation::CounterClockwise) || (!up && o == Orientation::Clockwise) {
                    inside = !inside;
                }
            }
        }
        inside
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{Intersects, Point, polygon};
    use proptest::prelude::*;

    fn square_with_hole() -> MultiPolygon {
        MultiPolygon(vec![polygon!(
            exterior: [(x: 0.0, y: 0.0), (x: 10.0, y: 0.0), (x: 10.0, y: 10.0), (x: 0.0, y: 10.0), (x: 0.0, y: 0.0)],
            interiors: [[(x: 4.0, y: 4.0), (x: 6.0, y: 4.0), (x: 6.0, y: 6.0), (x: 4.0, y: 6.0), (x: 4.0, y: 4.0)]],
        )])
    }

    #[test]
    fn boundary_points_count_as_inside() {
        let p = IndexedMultiPolygon::new(&square_with_hole());
        assert!(p.contains(0.0, 5.0));
        assert!(p.contains(10.0, 10.0));
        assert!(p.contains(5.0, 0.0));
        assert!(p.contains(4.0, 5.0), "hole boundary belongs to the polygon");
        assert!(!p.contains(5.0, 5.0), "hole interior is outside");
        assert!(!p.contains(10.000001, 5.0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn agrees_with_geo_intersects(
            pts in proptest::collection::vec((-10.0f64..10.0, -10.0f64..10.0), 3..40),
            qx in -12.0f64..12.0, qy in -12.0f64..12.0,
            on_vertex in any::<bool>(), pick in any::<usize>(),
        ) {
            // A star-shaped polygon from random radii keeps it simple (valid).
            let n = pts.len();
            let mut ring: Vec<Coord> = pts.iter().enumerate().map(|(i, (r, _))| {
                let a = i as f64 / n as f64 * std::f64::consts::TAU;
                let r = 1.0 + r.abs();
                Coord { x: r * a.cos(), y: r * a.sin() }
            }).collect();
            ring.push(ring[0]);
            let mp = MultiPolygon(vec![geo::Polygon::new(geo::LineString(ring.clone()), vec![])]);
            let idx = IndexedMultiPolygon::new(&mp);
            let q = if on_vertex { ring[pick % n] } else { Coord { x: qx, y: qy } };
            prop_assert_eq!(idx.contains(q.x, q.y), mp.intersects(&Point(q)));
        }
    }
}
