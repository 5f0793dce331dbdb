//! Crime-scene matching (SPEC §4): which tracks came within `radius_m` of a point between
//! `from` and `to`, how close, and when.
//!
//! Input: candidate devices' positioned fixes covering `[from − max_gap_s, to + max_gap_s]`
//! (the margin lets a segment that crosses a window edge be seen), in any order. Output:
//! one [`SceneMatch`] per matching (device, subject) — usually one per device; a device
//! reassigned to another subject inside the window gives one match per subject, since its
//! fixes are evidence about different people.
//!
//! Rules, per (device, subject):
//! - A device's consecutive fixes (by `ts`) form a segment when [`linked`]: same subject,
//!   gap ≤ `max_gap_s`. Only the part of the segment's time span inside `[from, to]` is
//!   considered (clipped by time, then by position on the constant-speed path).
//! - Distances are exact point-to-segment distances in a [`LocalFrame`] centred on the
//!   scene; `closest_at` is the time on the segment of its closest point (constant speed).
//! - Windows are inclusive at both ends; a fix exactly `radius_m` away is within it.
//! - `closest_approach_m` is the minimum over fixes in the window and clipped segments.
//!   Ties go to a fix over a segment, then to the earlier time.
//! - The track matches when `closest_approach_m ≤ radius_m`. `method` is `Fix` when any
//!   fix in `[from, to]` is within `radius_m` (`fixes_within > 0`), even when a segment
//!   passes closer, else `Interpolated`.
//! - `accuracy_m` is the accuracy of what the closest approach rests on: the fix itself,
//!   or the larger accuracy of the segment's two endpoint fixes; `basis_ts_us` names those
//!   fixes, so the analyst can look at them.
//!
//! Invariant: the answer does not depend on the order of the input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::planar::point_segment;
use super::{linked, QFix, QueryConfig};
use crate::geodesy::{LatLon, LocalFrame};

/// The scene and window of a crime-scene query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneQuery {
    pub center: LatLon,
    /// Must be finite and ≥ 0 (validated by the caller; otherwise nothing matches).
    pub radius_m: f64,
    /// Window start, inclusive, µs since the epoch.
    pub from_us: i64,
    /// Window end, inclusive. `from_us > to_us` matches nothing.
    pub to_us: i64,
}

/// Why a track matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMethod {
    /// A fix in the window lies within the radius.
    Fix,
    /// Only the interpolated path between linked fixes passes within the radius.
    Interpolated,
}

/// One track that came within the radius during the window.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneMatch {
    pub device: i64,
    pub subject: i64,
    pub closest_approach_m: f64,
    pub closest_at_us: i64,
    pub method: MatchMethod,
    /// Fixes in `[from, to]` within `radius_m`.
    pub fixes_within: i64,
    /// Accuracy of the fix, or the larger of the two fixes' of the segment, at the closest
    /// approach.
    pub accuracy_m: f64,
    /// `ts_us` of the fix (one entry) or segment endpoints (two) the closest approach
    /// rests on.
    pub basis_ts_us: Vec<i64>,
}

/// The closest point found so far for one track.
#[derive(Debug, Clone)]
struct Closest {
    dist_m: f64,
    at_us: i64,
    on_fix: bool,
    accuracy_m: f64,
    basis_ts_us: Vec<i64>,
}

impl Closest {
    /// Whether `self` is a better closest approach than `other` (see the module doc).
    fn beats(&self, other: &Closest) -> bool {
        self.dist_m
            .total_cmp(&other.dist_m)
            .then(other.on_fix.cmp(&self.on_fix))
            .then(self.at_us.cmp(&other.at_us))
            .is_lt()
    }
}

#[derive(Debug, Default)]
struct Track {
    closest: Option<Closest>,
    fixes_within: i64,
}

impl Track {
    fn offer(&mut self, c: Closest) {
        if self.closest.as_ref().is_none_or(|b| c.beats(b)) {
            self.closest = Some(c);
        }
    }
}

/// A fix loaded for a scene from a filtered part of its track, with the time of the fix
/// that precedes it on the device's whole track (positioned and attributed fixes only;
/// `None` when it has none or the loader does not know it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScenePoint {
    pub fix: QFix,
    pub prev_ts_us: Option<i64>,
}

/// All tracks among `fixes` that come within the scene's radius during its window, sorted
/// by [`sort_matches`]. `fixes` are whole tracks over the window and its `max_gap_s`
/// margin: consecutive fixes of a device are its consecutive fixes. See the module doc for
/// the rules.
pub fn scene_matches(fixes: &[QFix], scene: &SceneQuery, cfg: &QueryConfig) -> Vec<SceneMatch> {
    let mut sorted = fixes.to_vec();
    sorted.sort_by(track_order);
    matches_in(&sorted, |_| true, scene, cfg)
}

/// [`scene_matches`] over a subset of the tracks: two fixes of a device form a segment only
/// when the second one's `prev_ts_us` names the first. A subset gives the same answer as
/// the whole tracks when it holds every fix within the radius and both ends of every
/// segment that comes within it (see [`SceneBox`]).
pub fn scene_matches_sparse(
    points: &[ScenePoint],
    scene: &SceneQuery,
    cfg: &QueryConfig,
) -> Vec<SceneMatch> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| track_order(&a.fix, &b.fix));
    let fixes: Vec<QFix> = sorted.iter().map(|p| p.fix).collect();
    matches_in(
        &fixes,
        |i| sorted[i + 1].prev_ts_us == Some(sorted[i].fix.ts_us),
        scene,
        cfg,
    )
}

/// The order tracks are walked in: by device, time, then the rest so that equal input in
/// any order gives equal output.
fn track_order(a: &QFix, b: &QFix) -> std::cmp::Ordering {
    (a.device, a.ts_us, a.subject)
        .cmp(&(b.device, b.ts_us, b.subject))
        .then(a.accuracy_m.total_cmp(&b.accuracy_m))
}

/// The matching itself over `sorted` (in [`track_order`]); `adjacent(i)` says whether
/// `sorted[i]` and `sorted[i + 1]` are consecutive on their device's track.
fn matches_in(
    sorted: &[QFix],
    adjacent: impl Fn(usize) -> bool,
    scene: &SceneQuery,
    cfg: &QueryConfig,
) -> Vec<SceneMatch> {
    if !(scene.radius_m.is_finite() && scene.radius_m >= 0.0) || scene.from_us > scene.to_us {
        return Vec::new();
    }
    let frame = LocalFrame::new(scene.center);
    let in_window = |t: i64| scene.from_us <= t && t <= scene.to_us;
    let mut tracks: BTreeMap<(i64, i64), Track> = BTreeMap::new();

    for f in sorted.iter().filter(|f| in_window(f.ts_us)) {
        let (x, y) = frame.to_xy(f.pos);
        let dist_m = x.hypot(y);
        let track = tracks.entry((f.device, f.subject)).or_default();
        if dist_m <= scene.radius_m {
            track.fixes_within += 1;
        }
        track.offer(Closest {
            dist_m,
            at_us: f.ts_us,
            on_fix: true,
            accuracy_m: f.accuracy_m,
            basis_ts_us: vec![f.ts_us],
        });
    }

    for (i, pair) in sorted.windows(2).enumerate() {
        let (p, q) = (&pair[0], &pair[1]);
        if p.ts_us >= q.ts_us || !linked(p, q, cfg) || !adjacent(i) {
            continue;
        }
        let lo = p.ts_us.max(scene.from_us);
        let hi = q.ts_us.min(scene.to_us);
        if lo > hi {
            continue;
        }
        // Clip in time, then measure in metres: the path is linear in time in the frame.
        let (p_xy, q_xy) = (frame.to_xy(p.pos), frame.to_xy(q.pos));
        let span = (q.ts_us - p.ts_us) as f64;
        let at = |t: i64| {
            let s = (t - p.ts_us) as f64 / span;
            (
                p_xy.0 + s * (q_xy.0 - p_xy.0),
                p_xy.1 + s * (q_xy.1 - p_xy.1),
            )
        };
        let (dist_m, u) = point_segment((0.0, 0.0), at(lo), at(hi));
        let at_us = (lo + ((hi - lo) as f64 * u).round() as i64).clamp(lo, hi);
        tracks
            .entry((p.device, p.subject))
            .or_default()
            .offer(Closest {
                dist_m,
                at_us,
                on_fix: false,
                accuracy_m: p.accuracy_m.max(q.accuracy_m),
                basis_ts_us: vec![p.ts_us, q.ts_us],
            });
    }

    let mut matches: Vec<SceneMatch> = tracks
        .into_iter()
        .filter_map(|((device, subject), t)| {
            let c = t.closest?;
            (c.dist_m <= scene.radius_m).then_some(SceneMatch {
                device,
                subject,
                closest_approach_m: c.dist_m,
                closest_at_us: c.at_us,
                method: if t.fixes_within > 0 {
                    MatchMethod::Fix
                } else {
                    MatchMethod::Interpolated
                },
                fixes_within: t.fixes_within,
                accuracy_m: c.accuracy_m,
                basis_ts_us: c.basis_ts_us,
            })
        })
        .collect();
    sort_matches(&mut matches);
    matches
}

/// A box in stored units (degrees × 10⁷) that holds the scene's disk, for a store to
/// filter what it loads: keeping every fix that lies in the box, or whose segment to its
/// predecessor or successor has a bounding box meeting it ([`SceneBox::keeps`]), keeps every
/// fix within the radius and both ends of every segment that comes within it — a subset
/// on which [`scene_matches_sparse`] gives the answer of the whole tracks.
///
/// Why: the frame is linear in latitude and longitude, so the disk's bounding box in
/// metres is a latitude/longitude rectangle, and a straight segment meets the disk only if
/// its own bounding box meets that rectangle. The box is rounded outwards by one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SceneBox {
    pub lat_lo: i32,
    pub lat_hi: i32,
    pub lon_lo: i32,
    pub lon_hi: i32,
}

impl SceneBox {
    /// The box around the disk of `scene`.
    pub fn around(scene: &SceneQuery) -> SceneBox {
        let r = if scene.radius_m.is_finite() {
            scene.radius_m.max(0.0)
        } else {
            0.0
        };
        let (dlat, dlon) = LocalFrame::new(scene.center).degrees_for(r);
        let e7 = |deg: f64| deg * 1e7;
        let lo = |deg: f64| {
            (e7(deg).floor() - 1.0).clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        };
        let hi = |deg: f64| {
            (e7(deg).ceil() + 1.0).clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        };
        SceneBox {
            lat_lo: lo(scene.center.lat - dlat),
            lat_hi: hi(scene.center.lat + dlat),
            lon_lo: lo(scene.center.lon - dlon),
            lon_hi: hi(scene.center.lon + dlon),
        }
    }

    /// Whether the point `(lat_e7, lon_e7)` lies in the box.
    pub fn holds(&self, p: (i32, i32)) -> bool {
        (self.lat_lo..=self.lat_hi).contains(&p.0) && (self.lon_lo..=self.lon_hi).contains(&p.1)
    }

    /// Whether the bounding box of the segment `a`–`b` meets the box.
    pub fn meets_segment(&self, a: (i32, i32), b: (i32, i32)) -> bool {
        a.0.min(b.0) <= self.lat_hi
            && a.0.max(b.0) >= self.lat_lo
            && a.1.min(b.1) <= self.lon_hi
            && a.1.max(b.1) >= self.lon_lo
    }

    /// The rule a store applies to each loaded fix `this`, given the loaded fixes before
    /// and after it on its device's track (the SQL of both stores spells out the same rule).
    pub fn keeps(
        &self,
        prev: Option<(i32, i32)>,
        this: (i32, i32),
        next: Option<(i32, i32)>,
    ) -> bool {
        self.holds(this)
            || prev.is_some_and(|p| self.meets_segment(p, this))
            || next.is_some_and(|n| self.meets_segment(this, n))
    }
}

/// Orders matches by `closest_approach_m`, ties by subject then device, so a response is
/// reproducible byte for byte.
pub fn sort_matches(matches: &mut [SceneMatch]) {
    matches.sort_by(|a, b| {
        a.closest_approach_m
            .total_cmp(&b.closest_approach_m)
            .then(a.subject.cmp(&b.subject))
            .then(a.device.cmp(&b.device))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::US_PER_S;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000 * US_PER_S;
    const SCENE: LatLon = LatLon::new(51.5074, -0.1278);

    fn frame() -> LocalFrame {
        LocalFrame::new(SCENE)
    }

    fn fix(device: i64, subject: i64, t_s: i64, x: f64, y: f64) -> QFix {
        QFix {
            device,
            subject,
            ts_us: T0 + t_s * US_PER_S,
            pos: frame().to_latlon(x, y),
            accuracy_m: 10.0,
        }
    }

    fn scene(radius_m: f64, from_s: i64, to_s: i64) -> SceneQuery {
        SceneQuery {
            center: SCENE,
            radius_m,
            from_us: T0 + from_s * US_PER_S,
            to_us: T0 + to_s * US_PER_S,
        }
    }

    fn cfg() -> QueryConfig {
        QueryConfig::default()
    }

    #[test]
    fn a_subject_passing_through_the_scene_between_fixes_60_s_apart_matches_as_interpolated() {
        // 600 m west to 600 m east in 60 s, passing 30 m north of the scene at t = 30 s.
        let fixes = [fix(1, 7, 0, -600.0, 30.0), fix(1, 7, 60, 600.0, 30.0)];
        let m = scene_matches(&fixes, &scene(100.0, 0, 60), &cfg());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].method, MatchMethod::Interpolated);
        assert_eq!((m[0].device, m[0].subject, m[0].fixes_within), (1, 7, 0));
        assert!((m[0].closest_approach_m - 30.0).abs() < 1e-6);
        assert_eq!(m[0].closest_at_us, T0 + 30 * US_PER_S);
        assert_eq!(m[0].basis_ts_us, vec![fixes[0].ts_us, fixes[1].ts_us]);
        assert_eq!(m[0].accuracy_m, 10.0);
    }

    #[test]
    fn a_fix_within_the_radius_makes_the_method_fix_even_when_the_path_passes_closer() {
        let fixes = [fix(1, 7, 0, -80.0, 40.0), fix(1, 7, 60, 600.0, 5.0)];
        let m = scene_matches(&fixes, &scene(100.0, 0, 60), &cfg());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].method, MatchMethod::Fix);
        assert_eq!(m[0].fixes_within, 1);
        assert!(m[0].closest_approach_m < (80.0f64).hypot(40.0));
        assert_eq!(m[0].basis_ts_us.len(), 2);
    }

    #[test]
    fn fixes_20_minutes_apart_do_not_link_so_a_pass_between_them_does_not_match() {
        let fixes = [fix(1, 7, 0, -600.0, 0.0), fix(1, 7, 1200, 600.0, 0.0)];
        assert!(scene_matches(&fixes, &scene(100.0, 0, 1200), &cfg()).is_empty());
    }

    #[test]
    fn fixes_of_two_devices_of_one_subject_are_not_linked() {
        let fixes = [fix(1, 7, 0, -600.0, 0.0), fix(2, 7, 60, 600.0, 0.0)];
        assert!(scene_matches(&fixes, &scene(100.0, 0, 60), &cfg()).is_empty());
    }

    #[test]
    fn window_edges_are_inclusive_for_fixes() {
        let fixes = [fix(1, 7, 0, 10.0, 0.0), fix(2, 8, 60, 20.0, 0.0)];
        let m = scene_matches(&fixes, &scene(100.0, 0, 60), &cfg());
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.method == MatchMethod::Fix));
        // One microsecond later the first fix is outside the window.
        let mut s = scene(100.0, 0, 60);
        s.from_us += 1;
        let m = scene_matches(&fixes, &s, &cfg());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].device, 2);
    }

    #[test]
    fn a_fix_exactly_on_the_radius_is_within_it() {
        let fixes = [fix(1, 7, 0, 100.0, 0.0)];
        let (x, y) = frame().to_xy(fixes[0].pos);
        let m = scene_matches(&fixes, &scene(x.hypot(y), 0, 0), &cfg());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].fixes_within, 1);
    }

    #[test]
    fn a_pass_before_the_window_opens_does_not_match_and_clipping_moves_the_closest_point() {
        // Passes the scene at t = 30 s; the window opens at 50 s, when the subject is
        // 400 m past it.
        let fixes = [fix(1, 7, 0, -600.0, 0.0), fix(1, 7, 60, 600.0, 0.0)];
        assert!(scene_matches(&fixes, &scene(100.0, 50, 200), &cfg()).is_empty());
        let m = scene_matches(&fixes, &scene(500.0, 50, 200), &cfg());
        assert_eq!(m.len(), 1);
        assert!((m[0].closest_approach_m - 400.0).abs() < 1e-6);
        assert_eq!(m[0].closest_at_us, T0 + 50 * US_PER_S);
        assert_eq!(m[0].method, MatchMethod::Interpolated);
    }

    #[test]
    fn a_device_reassigned_inside_the_window_gives_one_match_per_subject() {
        let fixes = [
            fix(1, 7, 0, -600.0, 0.0),
            fix(1, 7, 60, -50.0, 0.0),
            fix(1, 8, 120, 50.0, 0.0),
            fix(1, 8, 180, 600.0, 0.0),
        ];
        let m = scene_matches(&fixes, &scene(60.0, 0, 180), &cfg());
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].subject, m[1].subject), (7, 8));
        // The 60 s between the two subjects' fixes is not a path of either.
        assert!(m.iter().all(|m| (m.closest_approach_m - 50.0).abs() < 1e-6));
    }

    #[test]
    fn matches_are_ordered_by_closest_approach_then_subject_then_device() {
        let fixes = [
            fix(3, 30, 0, 50.0, 0.0),
            fix(2, 20, 0, 0.0, 10.0),
            fix(1, 30, 0, -50.0, 0.0),
            fix(4, 10, 0, 0.0, -50.0),
        ];
        let m = scene_matches(&fixes, &scene(100.0, 0, 0), &cfg());
        let order: Vec<(i64, i64)> = m.iter().map(|m| (m.subject, m.device)).collect();
        assert_eq!(order, vec![(20, 2), (10, 4), (30, 1), (30, 3)]);
    }

    #[test]
    fn the_answer_does_not_depend_on_input_order() {
        let mut fixes = vec![
            fix(1, 7, 0, -600.0, 30.0),
            fix(1, 7, 60, 600.0, 30.0),
            fix(2, 8, 10, 0.0, 90.0),
            fix(1, 7, 120, 0.0, -20.0),
        ];
        let a = scene_matches(&fixes, &scene(100.0, 0, 120), &cfg());
        fixes.reverse();
        assert_eq!(a, scene_matches(&fixes, &scene(100.0, 0, 120), &cfg()));
    }

    #[test]
    fn a_reversed_window_or_a_nan_radius_matches_nothing() {
        let fixes = [fix(1, 7, 0, 0.0, 0.0)];
        assert!(scene_matches(&fixes, &scene(100.0, 10, 0), &cfg()).is_empty());
        assert!(scene_matches(&fixes, &scene(f64::NAN, 0, 10), &cfg()).is_empty());
    }

    /// Position on the track at `t`, if the track has one there (a fix, or a linked
    /// segment), by brute force over the input.
    fn brute_position(fixes: &[QFix], t: i64) -> Option<(f64, f64)> {
        if let Some(f) = fixes.iter().find(|f| f.ts_us == t) {
            return Some(frame().to_xy(f.pos));
        }
        let p = fixes
            .iter()
            .filter(|f| f.ts_us < t)
            .max_by_key(|f| f.ts_us)?;
        let q = fixes
            .iter()
            .filter(|f| f.ts_us > t)
            .min_by_key(|f| f.ts_us)?;
        linked(p, q, &cfg()).then(|| frame().to_xy(crate::query::interpolate(p, q, t)))
    }

    /// Stored units of a position, as a store keeps it.
    fn e7(p: LatLon) -> (i32, i32) {
        ((p.lat * 1e7).round() as i32, (p.lon * 1e7).round() as i32)
    }

    /// What a store returns for `fixes` (whole tracks) after the [`SceneBox`] filter.
    fn sparse_subset(fixes: &[QFix], s: &SceneQuery) -> Vec<ScenePoint> {
        let bx = SceneBox::around(s);
        let mut sorted = fixes.to_vec();
        sorted.sort_by(track_order);
        let same = |i: usize, j: usize| sorted[i].device == sorted[j].device;
        (0..sorted.len())
            .filter(|&i| {
                let prev = (i > 0 && same(i - 1, i)).then(|| e7(sorted[i - 1].pos));
                let next = (i + 1 < sorted.len() && same(i, i + 1)).then(|| e7(sorted[i + 1].pos));
                bx.keeps(prev, e7(sorted[i].pos), next)
            })
            .map(|i| ScenePoint {
                fix: sorted[i],
                prev_ts_us: (i > 0 && same(i - 1, i)).then(|| sorted[i - 1].ts_us),
            })
            .collect()
    }

    #[test]
    fn the_scene_box_holds_the_disk() {
        let s = scene(500.0, 0, 0);
        let bx = SceneBox::around(&s);
        for i in 0..3600 {
            let a = f64::from(i).to_radians() / 10.0;
            let p = frame().to_latlon(500.0 * a.cos(), 500.0 * a.sin());
            assert!(bx.holds(e7(p)), "{p:?} is on the disk's edge");
        }
        assert!(!bx.holds(e7(frame().to_latlon(510.0, 0.0))));
        assert!(!bx.holds(e7(frame().to_latlon(0.0, -510.0))));
    }

    #[test]
    fn a_segment_crossing_the_disk_keeps_both_ends_though_both_lie_outside_the_box() {
        let fixes = [
            fix(1, 7, 0, -900.0, 0.0),
            fix(1, 7, 60, 900.0, 0.0),
            fix(1, 7, 120, 900.0, 2000.0),
        ];
        let s = scene(100.0, 0, 120);
        let kept = sparse_subset(&fixes, &s);
        assert_eq!(kept.len(), 2);
        assert_eq!(
            scene_matches_sparse(&kept, &s, &cfg()),
            scene_matches(&fixes, &s, &cfg())
        );
    }

    #[test]
    fn sparse_fixes_that_are_not_predecessors_do_not_form_a_segment() {
        // The fix at 60 s (far away) was filtered out: 0 s and 120 s are not a segment.
        let a = fix(1, 7, 0, -300.0, 0.0);
        let b = fix(1, 7, 120, 300.0, 0.0);
        let points = [
            ScenePoint {
                fix: a,
                prev_ts_us: None,
            },
            ScenePoint {
                fix: b,
                prev_ts_us: Some(T0 + 60 * US_PER_S),
            },
        ];
        assert!(scene_matches_sparse(&points, &scene(100.0, 0, 120), &cfg()).is_empty());
        let linked = [
            points[0],
            ScenePoint {
                fix: b,
                prev_ts_us: Some(a.ts_us),
            },
        ];
        assert_eq!(
            scene_matches_sparse(&linked, &scene(100.0, 0, 120), &cfg()).len(),
            1
        );
    }

    proptest! {
        /// The box filter loses nothing: on what it keeps, the sparse matcher gives the
        /// answer of the whole tracks.
        #[test]
        fn the_box_filtered_subset_gives_the_whole_tracks_answer(
            steps in proptest::collection::vec(
                (0i64..3, 0i64..2, 1i64..400, -1500.0f64..1500.0, -1500.0f64..1500.0), 1..40),
            from_s in 0i64..3000,
            len_s in 0i64..3000,
            radius in 1.0f64..600.0,
        ) {
            let mut t = [0i64; 3];
            let fixes: Vec<QFix> = steps
                .iter()
                .map(|&(d, subj, dt, x, y)| {
                    t[d as usize] += dt;
                    let f = fix(d, 7 + subj, t[d as usize], x, y);
                    let (lat, lon) = e7(f.pos);
                    QFix { pos: LatLon::new(f64::from(lat) / 1e7, f64::from(lon) / 1e7), ..f }
                })
                .collect();
            let s = scene(radius, from_s, from_s + len_s);
            let kept = sparse_subset(&fixes, &s);
            prop_assert_eq!(scene_matches_sparse(&kept, &s, &cfg()), scene_matches(&fixes, &s, &cfg()));
        }
    }

    proptest! {
        /// The closest approach is no farther than any point of the path sampled in the
        /// window, the track matches exactly when some point is within the radius (up to
        /// sampling), and the position at `closest_at` is at `closest_approach_m`.
        #[test]
        fn closest_approach_is_at_most_every_sampled_point_distance(
            steps in proptest::collection::vec((1i64..400, -800.0f64..800.0, -800.0f64..800.0), 1..12),
            from_s in 0i64..1500,
            len_s in 0i64..1500,
            radius in 1.0f64..300.0,
        ) {
            let mut t = 0;
            let fixes: Vec<QFix> = steps.iter().map(|&(dt, x, y)| { t += dt; fix(1, 7, t, x, y) }).collect();
            let s = scene(radius, from_s, from_s + len_s);
            let m = scene_matches(&fixes, &s, &cfg());
            let n = 2000;
            let mut min_sampled = f64::INFINITY;
            for i in 0..=n {
                let t = s.from_us + (s.to_us - s.from_us) * i / n;
                if let Some((x, y)) = brute_position(&fixes, t) {
                    min_sampled = min_sampled.min(x.hypot(y));
                }
            }
            for f in fixes.iter().filter(|f| s.from_us <= f.ts_us && f.ts_us <= s.to_us) {
                let (x, y) = frame().to_xy(f.pos);
                min_sampled = min_sampled.min(x.hypot(y));
            }
            match m.first() {
                Some(m) => {
                    prop_assert!(m.closest_approach_m <= min_sampled + 1e-6);
                    prop_assert!(m.closest_approach_m <= radius);
                    let (x, y) = brute_position(&fixes, m.closest_at_us).unwrap_or((f64::NAN, f64::NAN));
                    // 1 µs of rounding at < 1000 km/s is under a metre.
                    prop_assert!((x.hypot(y) - m.closest_approach_m).abs() < 1.0);
                }
                None => prop_assert!(min_sampled > radius),
            }
        }
    }
}
