//! Location-at-time (SPEC §4): where was a subject at instant `at`?
//!
//! Input: the subject's positioned fixes around `at`, in any order. Per device, its latest
//! fix at or before `at` and its earliest fix after `at` decide the answer, and any other
//! fix changes nothing ([`nearest_each_side`] keeps just those; tested below against every
//! fix of random tracks), so that is all a store needs to read: two key seeks a device.
//!
//! Answer, in this order of preference:
//! 1. **observed** — some fix is within [`OBSERVED_WITHIN_S`] of `at` (inclusive): the
//!    nearest such fix's position. Ties go to the better accuracy, then the earlier fix,
//!    then the lower device id, so the answer never depends on input order.
//!    `uncertainty_m = accuracy_m + MAX_PLAUSIBLE_SPEED_MPS × |at − ts|`: the fix is not
//!    at `at`, and in up to 5 s a subject can have moved.
//! 2. **interpolated** — a linked pair (same device, same subject, gap ≤ `max_gap_s`)
//!    straddles `at`: the point on the straight constant-speed path. When several devices
//!    of the subject offer a pair (an overlap during a tag swap) the smallest gap wins.
//!    Fixes of different devices are never linked (see [`crate::query`]): a subject who
//!    changed tag between the two nearest fixes gets `none`, with both fixes shown.
//! 3. **none** — no position; `before`/`after` are the nearest fixes on each side.
//!
//! `before` is always a fix with `ts ≤ at` and `after` one with `ts > at`.
//!
//! ## Uncertainty model for interpolation
//! The subject was at A at `t0` and at B at `t1` and, we assume, never moved faster than
//! `v` = max([`MAX_PLAUSIBLE_SPEED_MPS`], |AB| / (t1 − t0)) — the second term only when the
//! fixes themselves imply a faster speed. At time `t` the subject was then within
//! `v·(t − t0)` of A *and* within `v·(t1 − t)` of B: inside the lens where those two discs
//! meet. `uncertainty_m` is
//!
//! ```text
//! max(accuracy_A, accuracy_B) + (greatest distance from the interpolated point to the lens)
//! ```
//!
//! so it is at least the larger accuracy (SPEC §4), is exactly that at the fixes
//! themselves, grows with the gap, is largest mid-gap, and shrinks when the fixes are far
//! apart for their gap (a subject who covered the distance at top speed had no time to
//! detour). The lens distance is computed exactly (see [`path_deviation_m`]). Adding the
//! larger accuracy to the lens bound, rather than inflating the lens by each fix's own
//! accuracy, is a deliberate simplification: it is what an analyst can check by hand.

use serde::{Deserialize, Serialize};

use super::{interpolate, linked, QFix, QueryConfig, US_PER_S};
use crate::geodesy::distance_m;

/// A fix this close to `at` (inclusive) is an observation of the subject at `at`.
pub const OBSERVED_WITHIN_S: i64 = 5;

/// Fastest a monitored subject is assumed to travel: 70 mph (31.3 m/s), the highest road
/// speed limit in Great Britain. Faster movement between two fixes is still handled: the
/// speed the fixes themselves imply is used instead (see the module doc).
pub const MAX_PLAUSIBLE_SPEED_MPS: f64 = 31.3;

/// How the position was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Observed,
    Interpolated,
    None,
}

/// The answer to a location-at-time query.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Radius in metres around (`lat`, `lon`) the subject is estimated to have been within.
    pub uncertainty_m: Option<f64>,
    pub method: Method,
    /// Observed/none: the nearest fix with `ts ≤ at`; interpolated: the pair's first fix.
    pub before: Option<QFix>,
    /// Observed/none: the nearest fix with `ts > at`; interpolated: the pair's second fix.
    pub after: Option<QFix>,
}

/// Where was the subject whose `fixes` these are at `at_us`? See the module doc.
pub fn location_at_time(fixes: &[QFix], at_us: i64, cfg: &QueryConfig) -> Estimate {
    let nearest_before = fixes
        .iter()
        .filter(|f| f.ts_us <= at_us)
        .min_by(|a, b| {
            b.ts_us
                .cmp(&a.ts_us)
                .then(a.accuracy_m.total_cmp(&b.accuracy_m))
                .then(a.device.cmp(&b.device))
        })
        .copied();
    let nearest_after = fixes
        .iter()
        .filter(|f| f.ts_us > at_us)
        .min_by(|a, b| {
            a.ts_us
                .cmp(&b.ts_us)
                .then(a.accuracy_m.total_cmp(&b.accuracy_m))
                .then(a.device.cmp(&b.device))
        })
        .copied();

    // 1. Observed.
    let observed = fixes
        .iter()
        .filter(|f| f.ts_us.abs_diff(at_us) <= (OBSERVED_WITHIN_S * US_PER_S).unsigned_abs())
        .min_by(|a, b| {
            a.ts_us
                .abs_diff(at_us)
                .cmp(&b.ts_us.abs_diff(at_us))
                .then(a.accuracy_m.total_cmp(&b.accuracy_m))
                .then(a.ts_us.cmp(&b.ts_us))
                .then(a.device.cmp(&b.device))
        });
    if let Some(f) = observed {
        let offset_s = f.ts_us.abs_diff(at_us) as f64 / US_PER_S as f64;
        return Estimate {
            lat: Some(f.pos.lat),
            lon: Some(f.pos.lon),
            uncertainty_m: Some(f.accuracy_m + MAX_PLAUSIBLE_SPEED_MPS * offset_s),
            method: Method::Observed,
            before: nearest_before,
            after: nearest_after,
        };
    }

    // 2. Interpolated: for each device, its last fix before and first fix after `at`.
    let mut best: Option<(i64, f64, QFix, QFix, f64, f64)> = None; // gap, unc, b, a, lat, lon
    let mut devices: Vec<i64> = fixes.iter().map(|f| f.device).collect();
    devices.sort_unstable();
    devices.dedup();
    for device in devices {
        let b = fixes
            .iter()
            .filter(|f| f.device == device && f.ts_us < at_us)
            .max_by_key(|f| f.ts_us);
        let a = fixes
            .iter()
            .filter(|f| f.device == device && f.ts_us > at_us)
            .min_by_key(|f| f.ts_us);
        let (Some(b), Some(a)) = (b, a) else { continue };
        if !linked(b, a, cfg) {
            continue;
        }
        let gap_us = a.ts_us - b.ts_us;
        let s = (at_us - b.ts_us) as f64 / gap_us as f64;
        let dev = path_deviation_m(distance_m(b.pos, a.pos), gap_us as f64 / US_PER_S as f64, s);
        let unc = b.accuracy_m.max(a.accuracy_m) + dev;
        let p = interpolate(b, a, at_us);
        // Devices are visited in id order and only a strictly better pair replaces the
        // current one, so ties go to the lower device id.
        let better = match &best {
            None => true,
            Some((g, u, ..)) => gap_us < *g || (gap_us == *g && unc < *u),
        };
        if better {
            best = Some((gap_us, unc, *b, *a, p.lat, p.lon));
        }
    }
    if let Some((_, unc, b, a, lat, lon)) = best {
        return Estimate {
            lat: Some(lat),
            lon: Some(lon),
            uncertainty_m: Some(unc),
            method: Method::Interpolated,
            before: Some(b),
            after: Some(a),
        };
    }

    // 3. None.
    Estimate {
        lat: None,
        lon: None,
        uncertainty_m: None,
        method: Method::None,
        before: nearest_before,
        after: nearest_after,
    }
}

/// Keeps of `items` what [`location_at_time`] at `at_us` needs (see the module doc): per
/// device, the item with the latest time at or before `at_us` and the one with the earliest
/// time after it. `key` gives an item's `(device, time)`; the items are left sorted by it,
/// each key once.
pub fn nearest_each_side<T>(items: &mut Vec<T>, at_us: i64, key: impl Fn(&T) -> (i64, i64)) {
    items.sort_by_key(&key);
    items.dedup_by_key(|t| key(t));
    let keys: Vec<(i64, i64)> = items.iter().map(&key).collect();
    let mut i = 0;
    items.retain(|_| {
        let (device, ts) = keys[i];
        let keep = if ts <= at_us {
            // the last of its device at or before `at`
            keys.get(i + 1)
                .is_none_or(|&(d, t)| d != device || t > at_us)
        } else {
            // the first of its device after `at`
            i == 0 || keys[i - 1].0 != device || keys[i - 1].1 <= at_us
        };
        i += 1;
        keep
    });
}

/// Greatest distance from the interpolated point to anywhere the subject could have been,
/// given fixes `d_m` metres apart taken `gap_s` seconds apart, at fraction `s ∈ [0, 1]` of
/// the gap (accuracies excluded; see the module doc).
///
/// On the axis through the fixes (A at 0, B at `d`): the reachable set is the lens
/// `|P − A| ≤ r0 ∧ |P − B| ≤ r1` with `r0 = L·s`, `r1 = L·(1 − s)`, `L = v·gap` the
/// longest possible path, and the interpolated point is `I = d·s` on the axis. A point
/// on the axis is farthest from the lens either at one of the lens's two ends on the
/// axis or at its two corners (where the circles cross): on each boundary arc the
/// distance to `I` grows monotonically away from the axis.
pub fn path_deviation_m(d_m: f64, gap_s: f64, s: f64) -> f64 {
    let d = d_m.max(0.0);
    let s = s.clamp(0.0, 1.0);
    let l = (MAX_PLAUSIBLE_SPEED_MPS * gap_s.max(0.0)).max(d);
    let (r0, r1) = (l * s, l * (1.0 - s));
    let xi = d * s;
    let right = r0.min(d + r1);
    let left = (-r0).max(d - r1);
    let mut m = (right - xi).max(xi - left);
    if d > 0.0 {
        let xc = (r0 * r0 - r1 * r1 + d * d) / (2.0 * d);
        let yc2 = r0 * r0 - xc * xc;
        if yc2 > 0.0 {
            m = m.max((xc - xi).hypot(yc2.sqrt()));
        }
    }
    m.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geodesy::{LatLon, LocalFrame};
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000 * US_PER_S;

    fn frame() -> LocalFrame {
        LocalFrame::new(LatLon::new(51.5, -0.12))
    }

    /// A fix of device 1 / subject 7, `x`,`y` metres from the frame centre, `t_s` after T0.
    fn fix_at(t_s: i64, x: f64, y: f64, acc: f64) -> QFix {
        QFix {
            device: 1,
            subject: 7,
            ts_us: T0 + t_s * US_PER_S,
            pos: frame().to_latlon(x, y),
            accuracy_m: acc,
        }
    }

    fn at(t_s: i64) -> i64 {
        T0 + t_s * US_PER_S
    }

    #[test]
    fn a_fix_3_s_from_the_asked_time_is_an_observation() {
        let fixes = [fix_at(0, 0.0, 0.0, 8.0), fix_at(60, 100.0, 0.0, 8.0)];
        let e = location_at_time(&fixes, at(3), &QueryConfig::default());
        assert_eq!(e.method, Method::Observed);
        assert_eq!(e.lat, Some(fixes[0].pos.lat));
        // 8 m of accuracy plus up to 3 s of movement at 31.3 m/s.
        let unc = e.uncertainty_m.unwrap_or(f64::NAN);
        assert!((unc - (8.0 + 3.0 * MAX_PLAUSIBLE_SPEED_MPS)).abs() < 1e-9);
        assert_eq!(e.before, Some(fixes[0]));
        assert_eq!(e.after, Some(fixes[1]));
    }

    #[test]
    fn a_fix_exactly_5_s_away_is_still_an_observation_but_6_s_is_not() {
        let fixes = [fix_at(0, 0.0, 0.0, 5.0), fix_at(60, 60.0, 0.0, 5.0)];
        let cfg = QueryConfig::default();
        assert_eq!(
            location_at_time(&fixes, at(5), &cfg).method,
            Method::Observed
        );
        assert_eq!(
            location_at_time(&fixes, at(55), &cfg).method,
            Method::Observed
        );
        assert_eq!(
            location_at_time(&fixes, at(6), &cfg).method,
            Method::Interpolated
        );
    }

    #[test]
    fn the_nearest_of_two_observations_wins_whatever_the_input_order() {
        let a = fix_at(-4, 0.0, 0.0, 5.0);
        let b = fix_at(2, 10.0, 0.0, 5.0);
        let cfg = QueryConfig::default();
        let e1 = location_at_time(&[a, b], at(0), &cfg);
        let e2 = location_at_time(&[b, a], at(0), &cfg);
        assert_eq!(e1, e2);
        assert_eq!(e1.lon, Some(b.pos.lon));
    }

    #[test]
    fn halfway_between_linked_fixes_the_estimate_is_the_midpoint() {
        let fixes = [fix_at(0, 0.0, 0.0, 10.0), fix_at(120, 600.0, 0.0, 20.0)];
        let e = location_at_time(&fixes, at(60), &QueryConfig::default());
        assert_eq!(e.method, Method::Interpolated);
        let (x, y) = frame().to_xy(LatLon::new(
            e.lat.unwrap_or(f64::NAN),
            e.lon.unwrap_or(f64::NAN),
        ));
        assert!((x - 300.0).abs() < 1e-6 && y.abs() < 1e-6, "{x} {y}");
        assert_eq!(e.before, Some(fixes[0]));
        assert_eq!(e.after, Some(fixes[1]));
        assert!(e.uncertainty_m.unwrap_or(0.0) >= 20.0);
    }

    #[test]
    fn interpolated_uncertainty_grows_with_the_gap() {
        let cfg = QueryConfig::default();
        let mut last = 0.0;
        for gap in [20, 60, 120, 240, 300] {
            let fixes = [fix_at(0, 0.0, 0.0, 10.0), fix_at(gap, 200.0, 0.0, 10.0)];
            let e = location_at_time(&fixes, at(gap / 2), &cfg);
            assert_eq!(e.method, Method::Interpolated);
            let u = e.uncertainty_m.unwrap_or(0.0);
            assert!(u > last, "gap {gap}: {u} <= {last}");
            last = u;
        }
    }

    #[test]
    fn interpolated_uncertainty_is_smallest_next_to_a_fix() {
        let cfg = QueryConfig::default();
        let fixes = [fix_at(0, 0.0, 0.0, 10.0), fix_at(200, 300.0, 0.0, 10.0)];
        let near = location_at_time(&fixes, at(10), &cfg).uncertainty_m;
        let mid = location_at_time(&fixes, at(100), &cfg).uncertainty_m;
        assert!(near < mid, "{near:?} {mid:?}");
    }

    #[test]
    fn fixes_20_minutes_apart_give_none_with_both_neighbours() {
        let fixes = [fix_at(0, 0.0, 0.0, 10.0), fix_at(1200, 300.0, 0.0, 10.0)];
        let e = location_at_time(&fixes, at(600), &QueryConfig::default());
        assert_eq!(e.method, Method::None);
        assert_eq!((e.lat, e.lon, e.uncertainty_m), (None, None, None));
        assert_eq!(e.before, Some(fixes[0]));
        assert_eq!(e.after, Some(fixes[1]));
    }

    #[test]
    fn a_subject_who_changed_device_mid_gap_is_not_interpolated() {
        let old = fix_at(0, 0.0, 0.0, 10.0);
        let new = QFix {
            device: 2,
            ..fix_at(60, 50.0, 0.0, 10.0)
        };
        let e = location_at_time(&[old, new], at(30), &QueryConfig::default());
        assert_eq!(e.method, Method::None);
        assert_eq!(e.before, Some(old));
        assert_eq!(e.after, Some(new));
    }

    #[test]
    fn during_a_tag_swap_the_device_with_a_linked_pair_is_interpolated() {
        // Old tag 1 reports at 0 and 90 s; new tag 2 first reports at 40 s.
        let a = fix_at(0, 0.0, 0.0, 10.0);
        let b = fix_at(90, 90.0, 0.0, 10.0);
        let other = QFix {
            device: 2,
            ..fix_at(40, 500.0, 0.0, 10.0)
        };
        let e = location_at_time(&[a, other, b], at(30), &QueryConfig::default());
        assert_eq!(e.method, Method::Interpolated);
        assert_eq!((e.before, e.after), (Some(a), Some(b)));
    }

    #[test]
    fn with_no_fixes_at_all_the_answer_is_none() {
        let e = location_at_time(&[], at(0), &QueryConfig::default());
        assert_eq!(e.method, Method::None);
        assert_eq!((e.before, e.after), (None, None));
    }

    #[test]
    fn a_subject_moving_at_top_speed_has_no_room_to_deviate() {
        let d = MAX_PLAUSIBLE_SPEED_MPS * 100.0;
        assert!(path_deviation_m(d, 100.0, 0.3) < 1e-6);
    }

    #[test]
    fn a_subject_that_ended_where_it_started_may_have_gone_half_the_way_out() {
        let dev = path_deviation_m(0.0, 100.0, 0.5);
        assert!((dev - MAX_PLAUSIBLE_SPEED_MPS * 50.0).abs() < 1e-9);
        assert_eq!(path_deviation_m(250.0, 100.0, 0.0), 0.0);
        assert!(path_deviation_m(250.0, 100.0, 1.0) < 1e-9);
    }

    #[test]
    fn nearest_each_side_keeps_per_device_the_last_fix_at_or_before_and_the_first_after() {
        let f = |device: i64, t_s: i64| QFix {
            device,
            ..fix_at(t_s, 0.0, 0.0, 5.0)
        };
        let mut fixes = vec![f(2, 50), f(1, 0), f(1, 30), f(1, 30), f(1, 31), f(1, 90)];
        fixes.extend([f(2, 10), f(2, 20), f(3, 40), f(4, 10), f(1, 200)]);
        nearest_each_side(&mut fixes, at(30), |q| (q.device, q.ts_us));
        let kept: Vec<(i64, i64)> = fixes
            .iter()
            .map(|q| (q.device, (q.ts_us - T0) / US_PER_S))
            .collect();
        assert_eq!(kept, [(1, 30), (1, 31), (2, 20), (2, 50), (3, 40), (4, 10)]);
    }

    proptest! {
        /// What a store reads (per device, the nearest fix on each side of `at`) gives the
        /// answer every fix gives: tracks of up to three devices with fixes 1 s to 15 min
        /// apart (some within 5 s of `at`, some pairs beyond the gap, ties in time across
        /// devices and in accuracy).
        #[test]
        fn the_nearest_fix_on_each_side_of_each_device_decide_the_answer(
            tracks in proptest::collection::vec(
                (1i64..=3, proptest::collection::btree_set(-1800i64..1800, 0..12)),
                0..4,
            ),
            at_s in -900i64..900,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut all: Vec<QFix> = Vec::new();
            for (device, times) in tracks {
                for t in times {
                    if all.iter().any(|q| q.device == device && q.ts_us == at(t)) {
                        continue;
                    }
                    let (x, y) = (rng.gen_range(-3000.0..3000.0), rng.gen_range(-3000.0..3000.0));
                    let acc = [5.0, 10.0, 25.0][rng.gen_range(0..3)];
                    all.push(QFix { device, ..fix_at(t, x, y, acc) });
                }
            }
            let cfg = QueryConfig::default();
            let mut kept = all.clone();
            nearest_each_side(&mut kept, at(at_s), |q| (q.device, q.ts_us));
            prop_assert!(kept.len() <= all.len());
            prop_assert_eq!(
                location_at_time(&kept, at(at_s), &cfg),
                location_at_time(&all, at(at_s), &cfg)
            );
        }

        /// Every point of the reachable lens lies within the deviation bound of the
        /// interpolated point, and the bound never exceeds the longest possible path.
        #[test]
        fn the_deviation_bound_covers_every_reachable_point(
            d in 0.0f64..20_000.0,
            gap_s in 1.0f64..600.0,
            s in 0.0f64..=1.0,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let bound = path_deviation_m(d, gap_s, s);
            let l = (MAX_PLAUSIBLE_SPEED_MPS * gap_s).max(d);
            let (r0, r1, xi) = (l * s, l * (1.0 - s), d * s);
            for _ in 0..4000 {
                let x = rng.gen_range(-r0..=r0.max(-r0 + 1e-9));
                let y = rng.gen_range(-r0..=r0.max(-r0 + 1e-9));
                if x.hypot(y) <= r0 && (x - d).hypot(y) <= r1 {
                    let dist = (x - xi).hypot(y);
                    prop_assert!(dist <= bound + 1e-6 * (1.0 + l), "{dist} > {bound}");
                }
            }
            prop_assert!(bound <= l + 1e-9);
        }
    }
}
