//! Spherical geometry on a mean-radius Earth.
//!
//! Points are kept as latitude/longitude degrees in the unit table and turned
//! into 3-D unit vectors (ECEF on a unit sphere) when distances are ordered:
//! the straight chord between two unit vectors grows monotonically with the
//! great-circle angle, so ordering by chord is exact and has no trouble at the
//! antimeridian or the poles.

/// Mean Earth radius in metres (IUGG), the radius every distance uses.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A point on the unit sphere.
pub type Vec3 = [f64; 3];

/// The unit vector of a latitude/longitude in degrees.
#[inline]
pub fn to_vec3(lat: f64, lon: f64) -> Vec3 {
    let (slat, clat) = lat.to_radians().sin_cos();
    let (slon, clon) = lon.to_radians().sin_cos();
    [clat * clon, clat * slon, slat]
}

/// Latitude and longitude in degrees of a (not necessarily unit) vector.
#[inline]
pub fn to_lat_lon(v: Vec3) -> (f64, f64) {
    let lat = v[2].atan2(v[0].hypot(v[1])).to_degrees();
    let lon = v[1].atan2(v[0]).to_degrees();
    (lat, lon)
}

/// Squared chord length between two unit vectors.
#[inline]
pub fn chord2(a: Vec3, b: Vec3) -> f64 {
    let dx = a[0] - b[0];
    let dy = a[1] - b[1];
    let dz = a[2] - b[2];
    dx * dx + dy * dy + dz * dz
}

/// Great-circle distance in metres for a squared chord on the unit sphere.
#[inline]
pub fn chord2_to_m(c2: f64) -> f64 {
    let half = (c2.max(0.0).sqrt() * 0.5).min(1.0);
    2.0 * half.asin() * EARTH_RADIUS_M
}

/// Squared chord on the unit sphere for a great-circle distance in metres.
#[inline]
pub fn m_to_chord2(m: f64) -> f64 {
    let angle = (m / EARTH_RADIUS_M).clamp(0.0, std::f64::consts::PI);
    let c = 2.0 * (angle * 0.5).sin();
    c * c
}

/// Great-circle distance in metres between two latitude/longitude points
/// (haversine, stable for small and antipodal distances alike).
#[inline]
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    chord2_to_m(chord2(to_vec3(lat1, lon1), to_vec3(lat2, lon2)))
}

/// A bound no smaller than [`distance_m`], without trigonometry: the path
/// along the meridian, then along the parallel (never longer at any
/// latitude than at the equator), is at least as long as the great circle.
/// For checks that most points pass by far (a responder's next fix is
/// nowhere near an impossible speed): the exact distance only when the
/// bound is not enough.
#[inline]
pub fn distance_upper_bound_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let dlon = (lon2 - lon1).abs();
    let dlon = if dlon > 180.0 { 360.0 - dlon } else { dlon };
    ((lat2 - lat1).abs() + dlon).to_radians() * EARTH_RADIUS_M
}

/// The point reached from `(lat, lon)` going `distance_m` along `bearing_deg`.
pub fn destination(lat: f64, lon: f64, bearing_deg: f64, distance_m: f64) -> (f64, f64) {
    let d = distance_m / EARTH_RADIUS_M;
    let (sl, cl) = lat.to_radians().sin_cos();
    let (sb, cb) = bearing_deg.to_radians().sin_cos();
    let (sd, cd) = d.sin_cos();
    let lat2 = (sl * cd + cl * sd * cb).clamp(-1.0, 1.0).asin();
    let lon2 = lon.to_radians() + (sb * sd * cl).atan2(cd - sl * lat2.sin());
    (lat2.to_degrees(), wrap_lon(lon2.to_degrees()))
}

/// Longitude folded into `[-180, 180]`.
#[inline]
pub fn wrap_lon(lon: f64) -> f64 {
    if (-180.0..=180.0).contains(&lon) {
        lon
    } else {
        (lon + 180.0).rem_euclid(360.0) - 180.0
    }
}

/// Cross product.
#[inline]
pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Dot product.
#[inline]
pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Angular distance (radians) from unit vector `p` to the great circle
/// through unit vectors `a` and `b`.
pub fn angle_to_great_circle(p: Vec3, a: Vec3, b: Vec3) -> f64 {
    let n = cross(a, b);
    let len = dot(n, n).sqrt();
    if len == 0.0 {
        return chord2_to_m(chord2(p, a)) / EARTH_RADIUS_M;
    }
    (dot(p, n).abs() / len).clamp(0.0, 1.0).asin()
}

/// Distance in metres from `(lat, lon)` to the segment between two
/// latitude/longitude points, measured in a local equirectangular frame
/// centred on the query point. Meant for short distances (hysteresis bands
/// of metres to kilometres); longitudes are unwrapped around the query point.
pub fn distance_to_segment_m(lat: f64, lon: f64, a: (f64, f64), b: (f64, f64)) -> f64 {
    let k = lat.to_radians().cos().max(1e-9);
    let m_per_deg = EARTH_RADIUS_M.to_radians();
    let ax = wrap_lon(a.1 - lon) * k * m_per_deg;
    let ay = (a.0 - lat) * m_per_deg;
    let bx = wrap_lon(b.1 - lon) * k * m_per_deg;
    let by = (b.0 - lat) * m_per_deg;
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
    };
    let (cx, cy) = (ax + t * dx, ay + t * dy);
    (cx * cx + cy * cy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_across_the_antimeridian_is_short() {
        let d = distance_m(0.0, 179.999, 0.0, -179.999);
        assert!((d - 222.39).abs() < 0.1, "{d}");
    }

    proptest::proptest! {
        #[test]
        fn the_cheap_bound_is_never_below_the_distance(
            lat1 in -90.0f64..=90.0, lon1 in -180.0f64..=180.0,
            lat2 in -90.0f64..=90.0, lon2 in -180.0f64..=180.0,
            near in proptest::bool::ANY,
        ) {
            // Half the cases a few metres apart, where the bound is used.
            let (lat2, lon2) = if near {
                ((lat1 + lat2 * 1e-4).clamp(-90.0, 90.0), wrap_lon(lon1 + lon2 * 1e-4))
            } else {
                (lat2, lon2)
            };
            let d = distance_m(lat1, lon1, lat2, lon2);
            let b = distance_upper_bound_m(lat1, lon1, lat2, lon2);
            proptest::prop_assert!(b >= d * (1.0 - 1e-12) - 1e-6, "{} < {}", b, d);
        }
    }

    #[test]
    fn chord_round_trips_through_metres() {
        for m in [0.0, 1.0, 1234.5, 1.0e6, 2.0e7] {
            let back = chord2_to_m(m_to_chord2(m));
            assert!((back - m).abs() < 1e-6 * m.max(1.0), "{m} -> {back}");
        }
    }

    #[test]
    fn destination_then_distance_is_the_distance() {
        let (lat, lon) = destination(51.5, -0.12, 77.0, 5000.0);
        assert!((distance_m(51.5, -0.12, lat, lon) - 5000.0).abs() < 1e-6);
    }
}
