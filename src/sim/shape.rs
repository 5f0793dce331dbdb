//! Zone shapes in a subject's local metric frame, and the SPEC §3 classification of a fix.
//!
//! The simulator uses these to keep normal subjects clear of their zones, to place
//! breaches well inside them, and to compute the ground truth the same way the SPEC states
//! the rules. Polygons are tested by even-odd ray casting over all rings and measured by
//! the distance to the nearest ring segment.

use geo::MultiPolygon;

use crate::geodesy::{LatLon, LocalFrame};

/// A point in metres east/north of the frame centre.
pub type Xy = (f64, f64);

/// SPEC §3 classification of a fix against a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    Inside,
    Outside,
    Uncertain,
}

/// A zone geometry projected into a local frame.
#[derive(Debug, Clone)]
pub enum Shape {
    Circle {
        center: Xy,
        radius_m: f64,
    },
    Area {
        rings: Vec<Vec<Xy>>,
        min: Xy,
        max: Xy,
    },
}

impl Shape {
    pub fn circle(frame: &LocalFrame, center: LatLon, radius_m: f64) -> Shape {
        Shape::Circle {
            center: frame.to_xy(center),
            radius_m,
        }
    }

    /// A lon/lat multipolygon projected into `frame`.
    pub fn area(frame: &LocalFrame, mp: &MultiPolygon<f64>) -> Shape {
        let mut rings = Vec::new();
        let (mut min, mut max) = ((f64::MAX, f64::MAX), (f64::MIN, f64::MIN));
        for poly in &mp.0 {
            for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
                let r: Vec<Xy> = ring
                    .coords()
                    .map(|c| frame.to_xy(LatLon::new(c.y, c.x)))
                    .collect();
                for &(x, y) in &r {
                    min = (min.0.min(x), min.1.min(y));
                    max = (max.0.max(x), max.1.max(y));
                }
                rings.push(r);
            }
        }
        Shape::Area { rings, min, max }
    }

    /// Signed distance to the boundary in metres: negative inside, positive outside.
    pub fn signed_distance(&self, p: Xy) -> f64 {
        match self {
            Shape::Circle { center, radius_m } => (p.0 - center.0).hypot(p.1 - center.1) - radius_m,
            Shape::Area { rings, .. } => {
                let mut inside = false;
                let mut d2 = f64::MAX;
                for r in rings {
                    for w in r.windows(2) {
                        let (a, b) = (w[0], w[1]);
                        if (a.1 > p.1) != (b.1 > p.1) {
                            let x = a.0 + (p.1 - a.1) / (b.1 - a.1) * (b.0 - a.0);
                            if p.0 < x {
                                inside = !inside;
                            }
                        }
                        d2 = d2.min(seg_dist2(p, a, b));
                    }
                }
                let d = d2.sqrt();
                if inside {
                    -d
                } else {
                    d
                }
            }
        }
    }

    /// Whether `p` is outside by at least `margin_m`, cheaply when far from a polygon's box.
    pub fn clear_of(&self, p: Xy, margin_m: f64) -> bool {
        if let Shape::Area { min, max, .. } = self {
            let dx = (min.0 - p.0).max(p.0 - max.0).max(0.0);
            let dy = (min.1 - p.1).max(p.1 - max.1).max(0.0);
            if dx.hypot(dy) >= margin_m {
                return true;
            }
        }
        self.signed_distance(p) >= margin_m
    }

    /// Whether the segment `a`–`b` stays outside by at least `margin_m`.
    pub fn segment_clear(&self, a: Xy, b: Xy, margin_m: f64) -> bool {
        match self {
            Shape::Circle { center, radius_m } => {
                seg_dist2(*center, a, b).sqrt() >= radius_m + margin_m
            }
            Shape::Area { .. } => {
                // Sampled every STEP metres; a boundary feature between samples can come at
                // most STEP/2 closer, so the samples are held to a margin that much wider.
                const STEP: f64 = 20.0;
                let len = (b.0 - a.0).hypot(b.1 - a.1);
                let n = (len / STEP).ceil().max(1.0) as usize;
                (0..=n).all(|i| {
                    let f = i as f64 / n as f64;
                    self.clear_of(
                        (a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1)),
                        margin_m + STEP / 2.0,
                    )
                })
            }
        }
    }

    /// SPEC §3: inside (resp. outside) when inside (outside) and at least `accuracy_m` from
    /// the boundary, else uncertain.
    pub fn classify(&self, p: Xy, accuracy_m: f64) -> Classification {
        classify_signed(self.signed_distance(p), accuracy_m)
    }
}

/// SPEC §3 classification from a signed distance (negative inside).
pub fn classify_signed(sd: f64, accuracy_m: f64) -> Classification {
    if sd < 0.0 && -sd >= accuracy_m {
        Classification::Inside
    } else if sd > 0.0 && sd >= accuracy_m {
        Classification::Outside
    } else {
        Classification::Uncertain
    }
}

/// Squared distance from `p` to the segment `a`–`b`.
fn seg_dist2(p: Xy, a: Xy, b: Xy) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (ex, ey) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    ex * ex + ey * ey
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> Shape {
        let r = vec![
            (0.0, 0.0),
            (100.0, 0.0),
            (100.0, 100.0),
            (0.0, 100.0),
            (0.0, 0.0),
        ];
        Shape::Area {
            rings: vec![r],
            min: (0.0, 0.0),
            max: (100.0, 100.0),
        }
    }

    #[test]
    fn signed_distance_is_negative_inside_and_positive_outside() {
        let s = square();
        assert!((s.signed_distance((50.0, 20.0)) + 20.0).abs() < 1e-9);
        assert!((s.signed_distance((130.0, 50.0)) - 30.0).abs() < 1e-9);
        let c = Shape::Circle {
            center: (0.0, 0.0),
            radius_m: 50.0,
        };
        assert!((c.signed_distance((30.0, 40.0))).abs() < 1e-9);
    }

    #[test]
    fn a_fix_near_the_boundary_relative_to_its_accuracy_is_uncertain() {
        let s = square();
        assert_eq!(s.classify((50.0, 20.0), 10.0), Classification::Inside);
        assert_eq!(s.classify((50.0, 20.0), 25.0), Classification::Uncertain);
        assert_eq!(s.classify((150.0, 50.0), 25.0), Classification::Outside);
    }

    #[test]
    fn a_segment_passing_a_corner_is_not_clear() {
        let s = square();
        assert!(!s.segment_clear((-50.0, 150.0), (150.0, -50.0), 10.0));
        assert!(s.segment_clear((-50.0, 300.0), (300.0, 300.0), 150.0));
    }
}
