//! Areas in space: the one geometry type behind fences, feeds, area queries
//! and standing-nearest zones.
//!
//! Semantics, precisely:
//! * `Polygon`: GeoJSON (Multi)Polygon; edges are straight in lon/lat
//!   (RFC 7946), except that an edge spanning more than 180° of longitude
//!   crosses the antimeridian the short way, and a ring that so goes round
//!   a pole holds that pole (`crate::antimeridian`); a point on an edge or
//!   vertex is inside; holes are outside (their boundary is inside).
//!   Longitudes ±180 are the same meridian.
//! * `Circle`: every point whose great-circle distance to the centre is at
//!   most the radius.
//! * `BBox`: `[w, s, e, n]` in degrees, edges included; `w > e` crosses the
//!   antimeridian.
//! * `Cells`: a set of H3 cells of any resolutions; a point is inside when
//!   its own cell at a listed resolution is listed.

use std::collections::HashSet;

use geo::MultiPolygon;
use h3o::{CellIndex, LatLng, Resolution};

use crate::error::EngineError;
use crate::polygon::IndexedMultiPolygon;
use crate::sphere::{self, Vec3, m_to_chord2};

/// An axis-aligned box around unit vectors: `[min, max]`.
pub type Aabb3 = [[f64; 3]; 2];

/// A geometry with an exact point test.
#[derive(Debug, Clone)]
pub enum Shape {
    /// (Multi)polygon in lon/lat.
    Polygon(Box<PolygonShape>),
    /// Geodesic circle.
    Circle(Circle),
    /// Longitude/latitude box.
    BBox([f64; 4]),
    /// Set of H3 cells.
    Cells(CellSet),
}

/// A prepared multipolygon and its source.
#[derive(Debug, Clone)]
pub struct PolygonShape {
    /// The geometry as given.
    pub source: MultiPolygon,
    /// The prepared index used for point tests, of the geometry taken the
    /// short way across the antimeridian (`crate::antimeridian`): its
    /// longitudes may then run past ±180.
    pub index: IndexedMultiPolygon,
    /// The index's longitudes run past ±180, so a point is also tested at
    /// its longitude ±360.
    wraps: bool,
}

/// A geodesic circle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    /// Centre latitude.
    pub lat: f64,
    /// Centre longitude.
    pub lon: f64,
    /// Radius in metres.
    pub radius_m: f64,
    /// Centre as a unit vector.
    center: Vec3,
    /// Squared chord of the radius.
    c2: f64,
}

/// A set of H3 cells, grouped by resolution for point tests.
#[derive(Debug, Clone)]
pub struct CellSet {
    /// The cells as given.
    pub cells: Vec<CellIndex>,
    /// The same, for lookups.
    set: HashSet<u64>,
    /// Resolutions present, ascending.
    resolutions: Vec<Resolution>,
}

fn check_lat_lon(lat: f64, lon: f64) -> Result<(), EngineError> {
    if !lat.is_finite() || !lon.is_finite() {
        return Err(EngineError::BadCoordinate {
            lat,
            lon,
            reason: "not finite",
        });
    }
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(EngineError::BadCoordinate {
            lat,
            lon,
            reason: "out of range",
        });
    }
    Ok(())
}

impl Shape {
    /// A polygon shape from a geo multipolygon.
    ///
    /// # Errors
    /// [`EngineError::BadGeometry`] for an empty geometry, a ring of fewer
    /// than four positions, coordinates out of range, or a ring that
    /// crosses itself or another ring of its polygon.
    pub fn polygon(mp: MultiPolygon) -> Result<Self, EngineError> {
        if mp.0.is_empty() {
            return Err(EngineError::BadGeometry("multipolygon has no polygons".into()));
        }
        for poly in &mp.0 {
            for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
                if ring.0.len() < 4 {
                    return Err(EngineError::BadGeometry(format!(
                        "a ring needs at least 4 positions, got {}",
                        ring.0.len()
                    )));
                }
                for c in &ring.0 {
                    check_lat_lon(c.y, c.x).map_err(|e| EngineError::BadGeometry(e.to_string()))?;
                }
            }
        }
        let short = crate::antimeridian::short_way(&mp).map_err(EngineError::BadGeometry)?;
        let drawn = short.as_ref().unwrap_or(&mp);
        for poly in &drawn.0 {
            crate::validity::check_simple(poly).map_err(EngineError::BadGeometry)?;
        }
        let index = IndexedMultiPolygon::new(drawn);
        Ok(Shape::Polygon(Box::new(PolygonShape {
            wraps: short.is_some(),
            source: mp,
            index,
        })))
    }

    /// A geodesic circle.
    ///
    /// # Errors
    /// Bad centre, or a radius that is not finite and positive.
    pub fn circle(lat: f64, lon: f64, radius_m: f64) -> Result<Self, EngineError> {
        check_lat_lon(lat, lon)?;
        if !(radius_m.is_finite() && radius_m > 0.0 && radius_m <= 20_000_000.0) {
            return Err(EngineError::BadParameter {
                what: "radius_m",
                value: radius_m,
                reason: "must be > 0 and at most 20,000 km",
            });
        }
        Ok(Shape::Circle(Circle {
            lat,
            lon,
            radius_m,
            center: sphere::to_vec3(lat, lon),
            c2: m_to_chord2(radius_m),
        }))
    }

    /// A longitude/latitude box `[w, s, e, n]`.
    ///
    /// # Errors
    /// Coordinates out of range, or `s > n`.
    pub fn bbox(b: [f64; 4]) -> Result<Self, EngineError> {
        check_lat_lon(b[1], b[0])?;
        check_lat_lon(b[3], b[2])?;
        if b[1] > b[3] {
            return Err(EngineError::BadParameter {
                what: "bbox south",
                value: b[1],
                reason: "south must not be above north",
            });
        }
        Ok(Shape::BBox(b))
    }

    /// A set of H3 cells.
    ///
    /// # Errors
    /// An empty set.
    pub fn cells(cells: Vec<CellIndex>) -> Result<Self, EngineError> {
        if cells.is_empty() {
            return Err(EngineError::BadGeometry("empty H3 cell list".into()));
        }
        let set = cells.iter().map(|&c| u64::from(c)).collect();
        let mut resolutions: Vec<Resolution> = cells.iter().map(|c| c.resolution()).collect();
        resolutions.sort_unstable();
        resolutions.dedup();
        Ok(Shape::Cells(CellSet {
            cells,
            set,
            resolutions,
        }))
    }

    /// Whether the point is inside (boundary included).
    #[inline]
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        match self {
            Shape::Polygon(p) => {
                p.index.contains(lon, lat)
                    || (lon.abs() == 180.0 && p.index.contains(-lon, lat))
                    || (p.wraps && (p.index.contains(lon + 360.0, lat) || p.index.contains(lon - 360.0, lat)))
            }
            Shape::Circle(c) => sphere::chord2(c.center, sphere::to_vec3(lat, lon)) <= c.c2,
            Shape::BBox([w, s, e, n]) => {
                if lat < *s || lat > *n {
                    return false;
                }
                let in_lon = |x: f64| {
                    if w <= e {
                        x >= *w && x <= *e
                    } else {
                        x >= *w || x <= *e
                    }
                };
                in_lon(lon) || (lon.abs() == 180.0 && in_lon(-lon))
            }
            Shape::Cells(cs) => {
                let Ok(ll) = LatLng::new(lat, lon) else {
                    return false;
                };
                cs.resolutions
                    .iter()
                    .any(|&r| cs.set.contains(&u64::from(ll.to_cell(r))))
            }
        }
    }

    /// Calls `f(lat, lon)` for points along the whole boundary, no two
    /// consecutive ones more than `spacing_m` apart along it.
    pub fn boundary_samples(&self, spacing_m: f64, f: &mut dyn FnMut(f64, f64)) {
        match self {
            Shape::Polygon(p) => {
                for (a, b) in p.index.edges() {
                    sample_planar_segment((a.y, a.x), (b.y, b.x), spacing_m, f);
                }
            }
            Shape::Circle(c) => {
                let circumference = std::f64::consts::TAU
                    * sphere::EARTH_RADIUS_M
                    * (c.radius_m / sphere::EARTH_RADIUS_M)
                        .min(std::f64::consts::FRAC_PI_2)
                        .sin();
                let n = ((circumference / spacing_m).ceil() as usize).clamp(8, 50_000_000);
                for i in 0..n {
                    let (lat, lon) =
                        sphere::destination(c.lat, c.lon, 360.0 * i as f64 / n as f64, c.radius_m);
                    f(lat, lon);
                }
            }
            Shape::BBox([w, s, e, n]) => {
                let spans: &[(f64, f64)] = if w <= e {
                    &[(*w, *e)]
                } else {
                    &[(*w, 180.0), (-180.0, *e)]
                };
                for &(a, b) in spans {
                    sample_planar_segment((*s, a), (*s, b), spacing_m, f);
                    sample_planar_segment((*n, a), (*n, b), spacing_m, f);
                    sample_planar_segment((*s, a), (*n, a), spacing_m, f);
                    sample_planar_segment((*s, b), (*n, b), spacing_m, f);
                }
            }
            Shape::Cells(cs) => {
                for cell in &cs.cells {
                    let verts: Vec<Vec3> = cell
                        .boundary()
                        .iter()
                        .map(|v| sphere::to_vec3(v.lat(), v.lng()))
                        .collect();
                    for i in 0..verts.len() {
                        sample_great_circle(verts[i], verts[(i + 1) % verts.len()], spacing_m, f);
                    }
                }
            }
        }
    }

    /// Distance in metres from a point to the shape's boundary (used for
    /// exit hysteresis, so metres-to-kilometres accuracy is what matters).
    pub fn distance_to_boundary_m(&self, lat: f64, lon: f64) -> f64 {
        match self {
            Shape::Polygon(p) => p
                .index
                .edges()
                .map(|(a, b)| sphere::distance_to_segment_m(lat, lon, (a.y, a.x), (b.y, b.x)))
                .fold(f64::INFINITY, f64::min),
            Shape::Circle(c) => (sphere::distance_m(c.lat, c.lon, lat, lon) - c.radius_m).abs(),
            Shape::BBox([w, s, e, n]) => {
                let spans: &[(f64, f64)] = if w <= e {
                    &[(*w, *e)]
                } else {
                    &[(*w, 180.0), (-180.0, *e)]
                };
                let mut d = f64::INFINITY;
                for &(a, b) in spans {
                    for (p, q) in [
                        ((*s, a), (*s, b)),
                        ((*n, a), (*n, b)),
                        ((*s, a), (*n, a)),
                        ((*s, b), (*n, b)),
                    ] {
                        d = d.min(sphere::distance_to_segment_m(lat, lon, p, q));
                    }
                }
                d
            }
            Shape::Cells(cs) => {
                let mut d = f64::INFINITY;
                for cell in &cs.cells {
                    let b = cell.boundary();
                    for i in 0..b.len() {
                        let (p, q) = (b[i], b[(i + 1) % b.len()]);
                        d = d.min(sphere::distance_to_segment_m(
                            lat,
                            lon,
                            (p.lat(), p.lng()),
                            (q.lat(), q.lng()),
                        ));
                    }
                }
                d
            }
        }
    }

    /// A box around every point of the shape, as unit vectors.
    pub fn aabb(&self) -> Aabb3 {
        match self {
            Shape::Polygon(p) => {
                let [w, s, e, n] = p.index.bbox();
                lat_lon_box_aabb(w, s, e, n)
            }
            Shape::Circle(c) => cap_aabb(c.center, c.radius_m / sphere::EARTH_RADIUS_M),
            Shape::BBox([w, s, e, n]) => {
                if w <= e {
                    lat_lon_box_aabb(*w, *s, *e, *n)
                } else {
                    union(
                        lat_lon_box_aabb(*w, *s, 180.0, *n),
                        lat_lon_box_aabb(-180.0, *s, *e, *n),
                    )
                }
            }
            Shape::Cells(cs) => {
                let mut acc = [[f64::INFINITY; 3], [f64::NEG_INFINITY; 3]];
                for cell in &cs.cells {
                    let c = LatLng::from(*cell);
                    let cv = sphere::to_vec3(c.lat(), c.lng());
                    let r = cell
                        .boundary()
                        .iter()
                        .map(|v| sphere::chord2_to_m(sphere::chord2(cv, sphere::to_vec3(v.lat(), v.lng()))))
                        .fold(0.0, f64::max);
                    acc = union(acc, cap_aabb(cv, r * 1.01 / sphere::EARTH_RADIUS_M + 1e-9));
                }
                acc
            }
        }
    }
}

/// Union of two boxes.
pub fn union(a: Aabb3, b: Aabb3) -> Aabb3 {
    let mut r = a;
    for i in 0..3 {
        r[0][i] = a[0][i].min(b[0][i]);
        r[1][i] = a[1][i].max(b[1][i]);
    }
    r
}

/// The box of a spherical cap of angular radius `r` around unit vector `c`.
pub fn cap_aabb(c: Vec3, r: f64) -> Aabb3 {
    let mut b = [[0.0; 3], [0.0; 3]];
    for i in 0..3 {
        let theta = c[i].clamp(-1.0, 1.0).acos();
        b[1][i] = (theta - r).max(0.0).cos();
        b[0][i] = (theta + r).min(std::f64::consts::PI).cos();
    }
    b
}

/// The exact box of a lon/lat rectangle with `w <= e`.
pub fn lat_lon_box_aabb(w: f64, s: f64, e: f64, n: f64) -> Aabb3 {
    let mut lats = vec![s, n];
    if s < 0.0 && n > 0.0 {
        lats.push(0.0);
    }
    let mut lons = vec![w, e];
    // Every quarter meridian between (a polygon taken the short way
    // across the antimeridian runs past ±180, up to a turn and a half).
    let mut l = (w / 90.0).floor() * 90.0 + 90.0;
    while l < e && lons.len() < 12 {
        lons.push(l);
        l += 90.0;
    }
    let mut b = [[f64::INFINITY; 3], [f64::NEG_INFINITY; 3]];
    for &lat in &lats {
        for &lon in &lons {
            let v = sphere::to_vec3(lat, lon);
            for i in 0..3 {
                b[0][i] = b[0][i].min(v[i]);
                b[1][i] = b[1][i].max(v[i]);
            }
        }
    }
    // Rounding of sin/cos must not shrink the box.
    for v in &mut b[0] {
        *v -= 1e-12;
    }
    for v in &mut b[1] {
        *v += 1e-12;
    }
    b
}

/// Samples a straight lon/lat segment densely enough that consecutive samples
/// are at most `spacing_m` apart along it.
fn sample_planar_segment(a: (f64, f64), b: (f64, f64), spacing_m: f64, f: &mut dyn FnMut(f64, f64)) {
    let dlat = (b.0 - a.0).to_radians();
    let dlon = (b.1 - a.1).to_radians();
    // The widest parallel the segment touches bounds the east-west metric.
    let max_cos = if a.0.signum() != b.0.signum() {
        1.0
    } else {
        a.0.abs().min(b.0.abs()).to_radians().cos()
    };
    let len = sphere::EARTH_RADIUS_M * (dlat * dlat + dlon * dlon * max_cos * max_cos).sqrt();
    let n = ((len / spacing_m).ceil() as usize).clamp(1, 50_000_000);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        f(a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
    }
}

/// Samples the great-circle arc between two unit vectors.
fn sample_great_circle(a: Vec3, b: Vec3, spacing_m: f64, f: &mut dyn FnMut(f64, f64)) {
    let len = sphere::chord2_to_m(sphere::chord2(a, b));
    let n = ((len / spacing_m).ceil() as usize).clamp(1, 1_000_000);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let v = [
            a[0] + (b[0] - a[0]) * t,
            a[1] + (b[1] - a[1]) * t,
            a[2] + (b[2] - a[2]) * t,
        ];
        let (lat, lon) = sphere::to_lat_lon(v);
        f(lat, lon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antimeridian_bbox_holds_both_sides() {
        let s = Shape::bbox([170.0, -10.0, -170.0, 10.0]).expect("valid");
        assert!(s.contains(0.0, 175.0));
        assert!(s.contains(0.0, -175.0));
        assert!(s.contains(0.0, 180.0));
        assert!(s.contains(0.0, -180.0));
        assert!(!s.contains(0.0, 0.0));
    }

    #[test]
    fn circle_edge_is_inside() {
        let s = Shape::circle(51.5, -0.1, 1000.0).expect("valid");
        let (lat, lon) = sphere::destination(51.5, -0.1, 33.0, 999.999);
        assert!(s.contains(lat, lon));
        let (lat, lon) = sphere::destination(51.5, -0.1, 33.0, 1000.01);
        assert!(!s.contains(lat, lon));
    }

    #[test]
    fn box_of_a_polar_cap_reaches_the_pole() {
        let b = cap_aabb(sphere::to_vec3(89.0, 10.0), 2f64.to_radians());
        assert!(b[1][2] >= 1.0 - 1e-12);
    }
}
