//! Local metric projection on the WGS84 ellipsoid.
//!
//! Compliance and query maths work in metres (SPEC §3: error < 0.5 % within 50 km). A
//! [`LocalFrame`] is an equirectangular projection centred on a reference point, scaled by
//! the ellipsoid's meridional and prime-vertical radii of curvature at that latitude. Over
//! the distances tagwatch measures (a zone, a crime-scene radius, the gap between two linked
//! fixes) its distortion is far below GPS accuracy: about 0.1 % at 50 km from the centre in
//! London's latitudes.
//!
//! Invariant: a frame is only used for points near its centre; callers centre a frame on the
//! thing they measure against (the zone, the crime scene), never on a global origin.

/// WGS84 semi-major axis, metres.
const WGS84_A: f64 = 6_378_137.0;
/// WGS84 first eccentricity squared.
const WGS84_E2: f64 = 6.694_379_990_141_3e-3;

/// A position in degrees (WGS84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

impl LatLon {
    pub const fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }
}

/// An equirectangular projection to metres around a centre point.
#[derive(Debug, Clone, Copy)]
pub struct LocalFrame {
    center: LatLon,
    /// metres per degree of longitude at the centre
    m_per_deg_lon: f64,
    /// metres per degree of latitude at the centre
    m_per_deg_lat: f64,
}

impl LocalFrame {
    pub fn new(center: LatLon) -> Self {
        let phi = center.lat.to_radians();
        let s = phi.sin();
        let w = 1.0 - WGS84_E2 * s * s;
        let n = WGS84_A / w.sqrt(); // prime vertical radius
        let m = WGS84_A * (1.0 - WGS84_E2) / (w * w.sqrt()); // meridional radius
        let deg = std::f64::consts::PI / 180.0;
        Self {
            center,
            m_per_deg_lon: n * phi.cos() * deg,
            m_per_deg_lat: m * deg,
        }
    }

    pub fn center(&self) -> LatLon {
        self.center
    }

    /// Metres east and north of the centre.
    #[inline]
    pub fn to_xy(&self, p: LatLon) -> (f64, f64) {
        (
            (p.lon - self.center.lon) * self.m_per_deg_lon,
            (p.lat - self.center.lat) * self.m_per_deg_lat,
        )
    }

    /// Inverse of [`LocalFrame::to_xy`].
    #[inline]
    pub fn to_latlon(&self, x: f64, y: f64) -> LatLon {
        LatLon {
            lat: self.center.lat + y / self.m_per_deg_lat,
            lon: self.center.lon + x / self.m_per_deg_lon,
        }
    }

    /// Degrees of latitude and longitude spanned by `metres` at the centre (for bounding boxes).
    pub fn degrees_for(&self, metres: f64) -> (f64, f64) {
        (metres / self.m_per_deg_lat, metres / self.m_per_deg_lon)
    }
}

/// Distance in metres between two nearby points, in a frame centred on the first.
pub fn distance_m(a: LatLon, b: LatLon) -> f64 {
    let f = LocalFrame::new(a);
    let (x, y) = f.to_xy(b);
    x.hypot(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_degree_of_latitude_in_london_is_about_111_25_km() {
        // Geodesic length of one degree of latitude at 51.5°N is 111.25 km (WGS84).
        let d = distance_m(LatLon::new(51.0, -0.1), LatLon::new(52.0, -0.1));
        assert!((d - 111_250.0).abs() < 111_250.0 * 0.005, "{d}");
    }

    #[test]
    fn east_west_distance_matches_the_geodesic_within_half_a_percent_at_50_km() {
        // Geodesic (Karney) distance between these points is 50,015 m.
        let a = LatLon::new(51.5, -0.8);
        let b = LatLon::new(51.5, -0.8 + 50_000.0 / 69_440.0);
        let d = distance_m(a, b);
        let geodesic = geo::Distance::distance(
            &geo::Geodesic,
            geo::Point::new(a.lon, a.lat),
            geo::Point::new(b.lon, b.lat),
        );
        assert!((d - geodesic).abs() / geodesic < 0.005, "{d} vs {geodesic}");
    }

    #[test]
    fn projection_round_trips() {
        let f = LocalFrame::new(LatLon::new(51.5, -0.12));
        let p = LatLon::new(51.52, -0.1);
        let (x, y) = f.to_xy(p);
        let q = f.to_latlon(x, y);
        assert!((p.lat - q.lat).abs() < 1e-12 && (p.lon - q.lon).abs() < 1e-12);
    }
}
