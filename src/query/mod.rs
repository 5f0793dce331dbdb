//! Lawful location queries (SPEC §4): the pure maths behind "where was subject S at time
//! T" and "which tagged subjects were near this crime scene between T1 and T2".
//!
//! Layout:
//! - [`at_time`] — location-at-time: observed / interpolated / none, with an uncertainty.
//! - [`scene`] — crime-scene matching of one or more devices' tracks: exact closest
//!   approach over fixes and interpolated segments.
//! - [`cells`] — the H3 cell maths of the spatial-temporal index that finds candidate
//!   devices for a crime-scene query without scanning every fix.
//! - [`crime_csv`] — parsing a batch crime-match CSV (our own header or data.police.uk's).
//!
//! Everything here is pure: no I/O, no clock. Times are parameters in microseconds since
//! the Unix epoch (`_us`), distances are metres (`_m`).
//!
//! Shared definitions (SPEC §4):
//! - Two fixes are **linked** when they come from the same device, are attributed to the
//!   same subject, and their gap is at most `max_gap_s` (see [`linked`]). Fixes of different
//!   devices are never linked: a tag swap happens at an unknown time and place, two tags'
//!   clocks and accuracies differ, and a tag may be worn by someone else before or after
//!   it is (re)assigned. Fixes of one device attributed to different subjects are not
//!   linked either: the device changed hands between them.
//! - Between linked fixes the subject moves in a **straight line at constant speed**.
//!   "Straight" means linear in (lat, lon) degrees, which is the same as straight in every
//!   [`LocalFrame`](crate::geodesy::LocalFrame) (the projection is affine), so the path is
//!   the same line whichever frame measures it.

pub mod at_time;
pub mod cells;
pub mod crime_csv;
pub mod scene;

use crate::geodesy::LatLon;

/// Microseconds per second.
pub(crate) const US_PER_S: i64 = 1_000_000;

/// One positioned fix as the query maths sees it (fixes with `fix: "none"` carry no
/// position and never reach a query).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QFix {
    /// Store id of the device (tag) that reported the fix.
    pub device: i64,
    /// Store id of the subject the fix was attributed to when it was stored.
    pub subject: i64,
    /// Fix time, µs since the Unix epoch.
    pub ts_us: i64,
    pub pos: LatLon,
    /// Horizontal accuracy radius in metres (0 when the device did not report one).
    pub accuracy_m: f64,
}

/// Settings of the query maths (SPEC §6 `--max-gap-s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryConfig {
    /// Consecutive fixes at most this far apart are linked (default 300 s).
    pub max_gap_s: i64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self { max_gap_s: 300 }
    }
}

impl QueryConfig {
    /// `max_gap_s` in µs, saturating so a silly configuration cannot overflow.
    pub fn max_gap_us(&self) -> i64 {
        self.max_gap_s.saturating_mul(US_PER_S)
    }
}

/// Whether `a` and `b` (in either order) are linked: same device, same subject, and a gap
/// of at most `max_gap_s`. A zero gap cannot occur for one device (`(device, ts)` is
/// unique) and is treated as linked; the caller then has a point, not a segment.
pub fn linked(a: &QFix, b: &QFix, cfg: &QueryConfig) -> bool {
    a.device == b.device
        && a.subject == b.subject
        && b.ts_us.abs_diff(a.ts_us) <= cfg.max_gap_us().unsigned_abs()
}

/// The position at `t_us` on the straight, constant-speed path from `a` to `b`
/// (`a.ts_us <= t_us <= b.ts_us`; outside that range the line is extrapolated, which
/// callers never ask for).
pub(crate) fn interpolate(a: &QFix, b: &QFix, t_us: i64) -> LatLon {
    let span = b.ts_us - a.ts_us;
    if span == 0 {
        return a.pos;
    }
    let s = (t_us - a.ts_us) as f64 / span as f64;
    LatLon::new(
        a.pos.lat + s * (b.pos.lat - a.pos.lat),
        a.pos.lon + s * (b.pos.lon - a.pos.lon),
    )
}

/// Small planar helpers in metres, shared by the scene matcher and the cell cover.
pub(crate) mod planar {
    pub(crate) type Pt = (f64, f64);

    /// Closest point of segment `a`–`b` to `p`: returns `(distance, u)` where `u ∈ [0, 1]`
    /// is the parameter of the closest point along the segment (0 at `a`). A degenerate
    /// segment returns `u = 0`.
    pub(crate) fn point_segment(p: Pt, a: Pt, b: Pt) -> (f64, f64) {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        let u = if len2 > 0.0 {
            (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (cx, cy) = (a.0 + u * dx, a.1 + u * dy);
        ((p.0 - cx).hypot(p.1 - cy), u)
    }

    fn cross(o: Pt, a: Pt, b: Pt) -> f64 {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    }

    /// Whether segments `a`–`b` and `c`–`d` properly cross (collinear overlaps are caught
    /// by the endpoint distances in [`segment_segment`]).
    fn segments_cross(a: Pt, b: Pt, c: Pt, d: Pt) -> bool {
        let d1 = cross(c, d, a);
        let d2 = cross(c, d, b);
        let d3 = cross(a, b, c);
        let d4 = cross(a, b, d);
        ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
            && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    }

    /// Distance between segments `a`–`b` and `c`–`d`.
    pub(crate) fn segment_segment(a: Pt, b: Pt, c: Pt, d: Pt) -> f64 {
        if segments_cross(a, b, c, d) {
            return 0.0;
        }
        point_segment(a, c, d)
            .0
            .min(point_segment(b, c, d).0)
            .min(point_segment(c, a, b).0)
            .min(point_segment(d, a, b).0)
    }

    /// Whether `p` is inside the simple polygon `ring` (not closed: last vertex ≠ first).
    /// Points exactly on the boundary may go either way; callers use a distance margin.
    pub(crate) fn point_in_ring(p: Pt, ring: &[Pt]) -> bool {
        let mut inside = false;
        let n = ring.len();
        for i in 0..n {
            let a = ring[i];
            let b = ring[(i + 1) % n];
            if (a.1 > p.1) != (b.1 > p.1) {
                let x = a.0 + (p.1 - a.1) / (b.1 - a.1) * (b.0 - a.0);
                if p.0 < x {
                    inside = !inside;
                }
            }
        }
        inside
    }

    /// Distance from segment `a`–`b` (possibly a point) to the polygon `ring` (0 when it
    /// touches or enters it).
    pub(crate) fn segment_ring(a: Pt, b: Pt, ring: &[Pt]) -> f64 {
        if point_in_ring(a, ring) || point_in_ring(b, ring) {
            return 0.0;
        }
        let n = ring.len();
        (0..n)
            .map(|i| segment_segment(a, b, ring[i], ring[(i + 1) % n]))
            .fold(f64::INFINITY, f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(device: i64, subject: i64, ts_s: i64) -> QFix {
        QFix {
            device,
            subject,
            ts_us: ts_s * US_PER_S,
            pos: LatLon::new(51.5, -0.1),
            accuracy_m: 5.0,
        }
    }

    #[test]
    fn fixes_exactly_max_gap_apart_link() {
        let cfg = QueryConfig::default();
        assert!(linked(&fix(1, 1, 0), &fix(1, 1, 300), &cfg));
        assert!(linked(&fix(1, 1, 300), &fix(1, 1, 0), &cfg));
    }

    #[test]
    fn fixes_20_minutes_apart_do_not_link() {
        assert!(!linked(
            &fix(1, 1, 0),
            &fix(1, 1, 1200),
            &QueryConfig::default()
        ));
    }

    #[test]
    fn fixes_of_different_devices_or_subjects_never_link() {
        let cfg = QueryConfig::default();
        assert!(!linked(&fix(1, 1, 0), &fix(2, 1, 10), &cfg));
        assert!(!linked(&fix(1, 1, 0), &fix(1, 2, 10), &cfg));
    }

    #[test]
    fn a_point_inside_a_square_is_inside_and_one_outside_is_not() {
        let sq = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)];
        assert!(planar::point_in_ring((5.0, 5.0), &sq));
        assert!(!planar::point_in_ring((15.0, 5.0), &sq));
        assert_eq!(planar::segment_ring((-5.0, 5.0), (15.0, 5.0), &sq), 0.0);
        assert!((planar::segment_ring((12.0, -5.0), (12.0, 15.0), &sq) - 2.0).abs() < 1e-12);
    }
}
