//! A cell's geometry, and with it the safe region of a unit: the cap
//! inscribed in its fine H3 cell.
//!
//! While a unit's fixes stay in the cap, its fine cell (so its cover
//! candidates) and its tree anchor cannot change, so a fix skips the H3 lookup
//! (about 0.5 µs, more than the rest of a fix). A fix outside the cap pays
//! one H3 lookup; only a change of cell pays for geometry, candidates and
//! the R-tree update.

use h3o::{CellIndex, LatLng};

use crate::sphere::{self, EARTH_RADIUS_M, Vec3};

/// Metres kept between a safe cap and its cell's edges, for the f32 anchor
/// and floating-point noise in h3o's own cell assignment.
const MARGIN_M: f64 = 1.5;

/// Where a cell is: its centre, the cap inscribed in it, and the cap that
/// holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CellGeometry {
    /// Centre (the anchor of every unit in the cell).
    pub center: Vec3,
    /// Squared chord of the inscribed cap, less a margin: a fix within it is
    /// certainly in the cell, with no H3 lookup.
    pub inscribed_c2: f64,
    /// Chord from the centre to the farthest vertex: every point of the cell
    /// is within it.
    pub circum_chord: f64,
}

/// Computes a cell's geometry.
pub(crate) fn cell_geometry(cell: CellIndex) -> CellGeometry {
    let center = cell_center(cell);
    let boundary = cell.boundary();
    let mut verts = [[0.0; 3]; 10];
    let n = boundary.len().min(10);
    for (v, ll) in verts.iter_mut().zip(boundary.iter()) {
        *v = sphere::to_vec3(ll.lat(), ll.lng());
    }
    let circum_chord = verts[..n]
        .iter()
        .map(|&v| sphere::chord2(center, v))
        .fold(0.0, f64::max)
        .sqrt();
    // Distance to each edge's great circle bounds the distance to the edge,
    // so a cap that clears every great circle is inside the cell.
    let r = (0..n)
        .map(|i| sphere::angle_to_great_circle(center, verts[i], verts[(i + 1) % n]))
        .fold(f64::INFINITY, f64::min)
        - MARGIN_M / EARTH_RADIUS_M;
    let inscribed_c2 = if r > 0.0 {
        let c = 2.0 * (r * 0.5).sin();
        c * c
    } else {
        -1.0
    };
    CellGeometry {
        center,
        inscribed_c2,
        circum_chord,
    }
}

/// The centre of a cell as a unit vector.
pub(crate) fn cell_center(cell: CellIndex) -> Vec3 {
    let c = LatLng::from(cell);
    sphere::to_vec3(c.lat(), c.lng())
}

#[cfg(test)]
mod tests {
    use super::*;
    use h3o::Resolution;

    #[test]
    fn every_point_of_the_inscribed_cap_is_in_the_cell() {
        // Around GB, near a pentagon, the poles and the antimeridian.
        let places = [
            (51.5, -0.12),
            (89.9, 10.0),
            (-89.9, 170.0),
            (0.0, 179.9999),
            (58.0, 10.5),
        ];
        for (lat, lon) in places {
            let Ok(ll) = LatLng::new(lat, lon) else {
                panic!("valid")
            };
            let cell = ll.to_cell(Resolution::Nine);
            let g = cell_geometry(cell);
            assert!(g.inscribed_c2 > 0.0);
            let (clat, clon) = sphere::to_lat_lon(g.center);
            let r = sphere::chord2_to_m(g.inscribed_c2);
            for b in 0..72 {
                let (qlat, qlon) = sphere::destination(clat, clon, f64::from(b) * 5.0, r * 0.999);
                let Ok(q) = LatLng::new(qlat, qlon) else {
                    panic!("valid")
                };
                assert_eq!(q.to_cell(Resolution::Nine), cell, "{lat},{lon} bearing {b}");
            }
            for v in cell.boundary().iter() {
                let d = sphere::chord2(g.center, sphere::to_vec3(v.lat(), v.lng())).sqrt();
                assert!(d <= g.circum_chord + 1e-12);
            }
        }
    }
}
