//! The cell maths of the crime-scene index: which H3 cells to store with a fix or a long
//! segment, and which cells to look up for a scene, such that no match is ever missed.
//!
//! ## The index (the store keeps two tables; this module only computes the cells)
//! - every positioned fix: `(fix_cell, ts)` with [`fix_cell`] at [`FIX_RES`] (res 9) —
//!   SQLite keeps it at minute granularity, `(fix_cell, minute, device)`, and loads each
//!   minute whole, which finds the same fixes;
//! - every **long** linked segment (straight length > [`LONG_SEGMENT_M`], see
//!   [`is_long_segment`]): one row `(coarse cell, t0, t1, device)` per cell of
//!   [`segment_cells`] at [`COARSE_RES`] (res 7).
//!
//! A crime-scene query takes [`scene_cover`]`(center, radius_m)` and gathers the devices
//! that have a fix in a `fine` cell (a cell meeting the disk of radius
//! `R_f = √(R² + (T/2)²)`, [`fine_radius_m`]) with `ts ∈ [from − max_gap, to + max_gap]`, or a long
//! segment in a `coarse` cell whose `[t0, t1]` meets `[from, to]`; it then loads those
//! devices' fixes over `[from − max_gap, to + max_gap]` and runs
//! [`scene_matches`](crate::query::scene::scene_matches) on them.
//!
//! ## Why nothing is missed
//! A track matches because a fix, or a point `q` of a linked segment, lies within `R`
//! (= `radius_m`) of the scene.
//! - A fix within `R` lies in a fine cell meeting the disk of radius `R_f` ⊇ disk `R`.
//! - A segment of length `L ≤ T` through `q`: let `p` be its point nearest the scene
//!   (`|p| ≤ |q| ≤ R`). If `p` is an endpoint, that fix is within `R`. Otherwise `p` is
//!   the foot of the perpendicular from the scene, and the endpoint on the shorter side is
//!   at most `L/2 ≤ T/2` from `p` along the line, so within `√(|p|² + (T/2)²) ≤ R_f` of
//!   the scene (Pythagoras; the triangle inequality's `R + T/2`, used until 2026-11-25,
//!   is a third wider for a 500 m scene). Either way that endpoint fix is in a fine cell
//!   of the cover, and its time lies within `max_gap` of the window because the segment
//!   meets it.
//! - A segment longer than `T`: `q`'s coarse cell is among the segment's cells (every cell
//!   the line touches) and among the cover's coarse cells (every cell meeting disk `R`).
//!
//! Both covers are computed exactly rather than by sampling: a flood fill from the cell
//! of the start point over H3 neighbours, keeping each cell whose boundary polygon (in a
//! [`LocalFrame`]) comes within the required distance of the disk centre / the segment.
//! Cells that meet a convex set are connected through shared edges (in a hexagon tiling
//! every shared vertex is also on a shared edge), so the flood fill reaches all of them.
//! [`MARGIN_M`] absorbs the difference between H3's edges (great-circle arcs) and straight
//! lines in the frame (≤ 4 cm at res 7), and the frame-scale difference between the place
//! a segment is measured and the scene (≤ 0.2 % of `T/2` for scenes up to 10 km away,
//! which moves `R_f` by under 0.5 m).
//!
//! ## Choices
//! - **Fine res 9** (mean hexagon 0.105 km², edge ≈ 174 m): the fine disk of a typical
//!   scene (`R` of 100–500 m, `R_f` of 269–559 m) needs 10–30 cells, each holding a city
//!   block's worth of fixes per time range. Res 10 (edge 66 m) would need about 7× more
//!   cells per query, res 8 (edge 461 m) would scan about 7× more fixes per cell. Where the
//!   index holds no positions (SQLite), the res-10 children split a res-9 cell's key
//!   instead (see "SQLite's fine keys"): 28 % less area read for a 500 m scene.
//! - **`T` = 500 m**: at the usual 30–60 s reporting interval, walking, cycling and most
//!   urban driving produce segments shorter than 500 m, so few segments need coarse rows,
//!   while the fine disk grows from `R` to `R_f`: by 59 m for a 500 m scene, 169 m for
//!   100 m.
//! - **Coarse res 7** (mean 5.16 km², edge ≈ 1.22 km): a long segment (500 m to a few km)
//!   touches 1–6 cells; a scene disk 1–4. Res 6 would put far more unrelated segments in
//!   each looked-up cell.
//!
//! ## SQLite's fine keys: a cell split by its children
//! PostgreSQL's fine index carries each fix's position and drops the entries outside the
//! fine disk ([`HitDisk`]); SQLite's (`fix_cells`) holds none, so every minute a device
//! spent anywhere in a cover cell became an island to load, and a 500 m scene's 18 res-9
//! cells cover 1.73 km² for a disk of 0.98 km². The res-10 cells meeting the same disk
//! cover 1.25 km². So SQLite keys a fix by [`fix_key`]: its res-9 cell `c` with the res-10
//! digit (bits 15–17 of the index, 7 in a res-9 index) set to the digit of the fix's res-10
//! cell `h`, when `h` is a child of `c`. H3's children do not tile their parent exactly:
//! about 7 % of positions lie in a res-10 cell whose parent is a neighbour of their res-9
//! cell; those keep the key `c` itself, as do the rows written before the split, which
//! thus read as "somewhere in `c`". A scene looks up [`scene_keys`]: each cover cell `c`,
//! and `c` with the digit of each child of `c` that meets the fine disk by the cover's own
//! test. Nothing is missed: a fix within `R_f` has its res-9 cell in the cover, and its key
//! is `c` (always looked up) or the key of the child holding it, which meets the disk. A
//! split key is not an H3 index (a res-9 header with a res-10 digit); nothing decodes one.
//!
//! Cell ids are stored as `i64`: an H3 index is a `u64` whose top (reserved) bit is always
//! 0, so the value is positive and round-trips.
//!
//! The maths assumes London-scale geography: no antimeridian, no poles, no pentagons
//! (all twelve H3 pentagons are at sea).

use std::collections::{BTreeSet, VecDeque};

use h3o::{CellIndex, LatLng, Resolution};

use super::planar::{segment_ring, Pt};
use crate::geodesy::{distance_m, LatLon, LocalFrame};

/// Resolution of the cell stored with every fix.
pub const FIX_RES: Resolution = Resolution::Nine;
/// Resolution of the children that split a fine cell in SQLite's keys ([`fix_key`]).
pub const SPLIT_RES: Resolution = Resolution::Ten;
/// Where an H3 index keeps its [`SPLIT_RES`] digit: three bits per resolution, the
/// finest (15) lowest.
const SPLIT_DIGIT_SHIFT: u32 = 3 * (15 - 10);
/// Resolution of the cells stored with every long segment.
pub const COARSE_RES: Resolution = Resolution::Seven;
/// Segments longer than this (metres) get coarse-cell rows; shorter ones are found through
/// their endpoints by widening the fine cover to [`fine_radius_m`].
pub const LONG_SEGMENT_M: f64 = 500.0;
/// Slack added to every cover distance (see the module doc).
pub const MARGIN_M: f64 = 2.0;
/// Largest scene radius a cover is computed for: about 3,000 fine cells at 10 km. Larger
/// radii are a different kind of query (and a disproportionate one); the API rejects them.
pub const MAX_COVER_RADIUS_M: f64 = 10_000.0;
/// Longest segment cells are computed for. 1,000 km in at most `max_gap_s` is no journey
/// but a position glitch; the caller logs it and indexes no coarse rows for it.
pub const MAX_SEGMENT_M: f64 = 1_000_000.0;
/// Long segments are covered piece by piece so that each piece is measured in a frame
/// centred on itself (the frame's error stays far below [`MARGIN_M`]).
const PIECE_M: f64 = 5_000.0;
/// Guard against a runaway flood fill (a bug, not data, could cause one).
const MAX_CELLS: usize = 200_000;

/// Why cells could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CellError {
    #[error("position ({lat}, {lon}) is not a valid WGS84 latitude/longitude")]
    InvalidPosition { lat: f64, lon: f64 },
    #[error("radius {radius_m} m is not in [0, {MAX_COVER_RADIUS_M}] m")]
    InvalidRadius { radius_m: f64 },
    #[error("segment of {length_m} m is longer than {MAX_SEGMENT_M} m")]
    SegmentTooLong { length_m: f64 },
    #[error("cell cover exceeded {MAX_CELLS} cells")]
    CoverTooLarge,
}

/// Cells to look up for a crime-scene query (sorted, no duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneCover {
    /// [`FIX_RES`] cells meeting the disk of radius [`fine_radius_m`]`(radius_m)`.
    pub fine: Vec<i64>,
    /// [`COARSE_RES`] cells meeting the disk of radius `radius_m`.
    pub coarse: Vec<i64>,
}

/// The disk every fix a scene's fine cover must find lies in: radius
/// [`fine_radius_m`]`(radius_m)` around the scene's centre, measured in the scene's
/// [`LocalFrame`] as the cover is, plus twice [`MARGIN_M`] (the cover's slack, and the
/// centimetre of a stored position's rounding to 10⁻⁷ degrees). The fine cover's hexagons
/// reach well past it (a 500 m scene: about 20 res-9 cells, 2 km², for a disk of 0.98
/// km²), so a store whose fine index carries positions (PostgreSQL) drops the index hits
/// outside it: a fix outside is neither within the radius nor the end of a short segment
/// that comes within it (see the module doc), and long segments are found through their
/// own rows.
///
/// The disk is kept as a circle in stored units (10⁻⁷ degrees of latitude), longitudes
/// scaled by [`lon_scale`](Self::lon_scale), which is the shape PostgreSQL tests with one
/// operator (`point(lon_e7 * lon_scale, lat_e7) <@ circle`): the same test written out in
/// metres took about twice as long per index entry (a dozen arithmetic calls, the
/// differences computed twice).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitDisk {
    /// Metres per 10⁻⁷ degree of longitude over metres per 10⁻⁷ degree of latitude, at the
    /// centre: a stored longitude times this is in latitude's units.
    pub lon_scale: f64,
    /// The centre: longitude × 10⁷ × `lon_scale`, latitude × 10⁷.
    pub x: f64,
    pub y: f64,
    /// The radius in 10⁻⁷ degrees of latitude.
    pub radius: f64,
}

impl HitDisk {
    pub fn around(center: LatLon, radius_m: f64) -> HitDisk {
        let (dlat, dlon) = LocalFrame::new(center).degrees_for(1.0);
        let m_per_lat_e7 = 1e-7 / dlat;
        let lon_scale = (1e-7 / dlon) / m_per_lat_e7;
        HitDisk {
            lon_scale,
            x: center.lon * 1e7 * lon_scale,
            y: center.lat * 1e7,
            radius: (fine_radius_m(radius_m) + 2.0 * MARGIN_M) / m_per_lat_e7,
        }
    }

    /// Whether a stored position lies in the disk; the store's statement computes the same.
    pub fn holds(&self, lat_e7: i32, lon_e7: i32) -> bool {
        let x = f64::from(lon_e7) * self.lon_scale - self.x;
        let y = f64::from(lat_e7) - self.y;
        x.hypot(y) <= self.radius
    }
}

fn to_latlng(p: LatLon) -> Result<LatLng, CellError> {
    LatLng::new(p.lat, p.lon).map_err(|_| CellError::InvalidPosition {
        lat: p.lat,
        lon: p.lon,
    })
}

/// The stored form of a cell id (see the module doc).
pub fn cell_to_i64(cell: CellIndex) -> i64 {
    // The reserved top bit of every valid H3 index is 0, so this never wraps.
    u64::from(cell) as i64
}

/// The cell of a stored id, if it is one.
pub fn cell_from_i64(id: i64) -> Option<CellIndex> {
    u64::try_from(id)
        .ok()
        .and_then(|v| CellIndex::try_from(v).ok())
}

/// The [`FIX_RES`] cell of a fix position.
pub fn fix_cell(p: LatLon) -> Result<i64, CellError> {
    Ok(cell_to_i64(to_latlng(p)?.to_cell(FIX_RES)))
}

/// SQLite's fine-index key of a fix at `p` whose [`FIX_RES`] cell is `cell` (see the module
/// doc): `cell` with the [`SPLIT_RES`] digit of `p`'s child of it, or `cell` itself when
/// `p`'s [`SPLIT_RES`] cell is a child of a neighbour.
pub fn fix_key(cell: i64, p: LatLon) -> i64 {
    let Ok(ll) = to_latlng(p) else {
        return cell;
    };
    let h = ll.to_cell(SPLIT_RES);
    match (h.parent(FIX_RES), h.direction_at(SPLIT_RES)) {
        (Some(parent), Some(d)) if cell_to_i64(parent) == cell => with_split_digit(cell, d),
        _ => cell,
    }
}

fn with_split_digit(cell: i64, d: h3o::Direction) -> i64 {
    (cell & !(0b111 << SPLIT_DIGIT_SHIFT)) | (i64::from(u8::from(d)) << SPLIT_DIGIT_SHIFT)
}

/// The [`fix_key`]s a scene of `radius_m` around `center` looks up, given its cover's `fine`
/// cells (sorted, no duplicates): every cell itself, and the cell with the digit of each of
/// its [`SPLIT_RES`] children that meets the fine disk by the cover's test, or holds the
/// centre (see the module doc).
pub fn scene_keys(center: LatLon, radius_m: f64, fine: &[i64]) -> Vec<i64> {
    let frame = LocalFrame::new(center);
    let reach = fine_radius_m(radius_m) + MARGIN_M;
    // (an invalid centre has no cover to split: every child is looked up)
    let holds_centre = to_latlng(center).ok().map(|ll| ll.to_cell(SPLIT_RES));
    let mut keys = Vec::with_capacity(fine.len() * 8);
    for &c in fine {
        keys.push(c);
        let Some(cell) = cell_from_i64(c) else {
            continue;
        };
        for child in cell.children(SPLIT_RES) {
            let looked_up = holds_centre.is_none_or(|h| h == child)
                || ring_within(child, &frame, (0.0, 0.0), (0.0, 0.0), reach);
            if let (true, Some(d)) = (looked_up, child.direction_at(SPLIT_RES)) {
                keys.push(with_split_digit(c, d));
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether `cell`'s boundary, projected in `frame`, comes within `reach` metres of the
/// segment `a`–`b` (a point when `a == b`).
fn ring_within(cell: CellIndex, frame: &LocalFrame, a: Pt, b: Pt, reach: f64) -> bool {
    let ring: Vec<Pt> = cell
        .boundary()
        .iter()
        .map(|v| frame.to_xy(LatLon::new(v.lat(), v.lng())))
        .collect();
    segment_ring(a, b, &ring) <= reach
}

/// The radius of a scene's fine disk, `R_f = √(R² + (T/2)²)` for `R = radius_m` and
/// `T =` [`LONG_SEGMENT_M`]: it holds every fix within `radius_m` and an end of every short
/// segment that comes within `radius_m` (see the module doc).
pub fn fine_radius_m(radius_m: f64) -> f64 {
    radius_m.hypot(LONG_SEGMENT_M / 2.0)
}

/// Whether the segment `a`–`b` needs coarse-cell rows (is longer than [`LONG_SEGMENT_M`]).
pub fn is_long_segment(a: LatLon, b: LatLon) -> bool {
    distance_m(midpoint(a, b), a) * 2.0 > LONG_SEGMENT_M
}

fn midpoint(a: LatLon, b: LatLon) -> LatLon {
    LatLon::new((a.lat + b.lat) / 2.0, (a.lon + b.lon) / 2.0)
}

/// Every [`COARSE_RES`] cell the straight segment `a`–`b` passes through (sorted). Only
/// meant for long segments, but correct for any.
pub fn segment_cells(a: LatLon, b: LatLon) -> Result<Vec<i64>, CellError> {
    to_latlng(a)?;
    to_latlng(b)?;
    let length_m = distance_m(midpoint(a, b), a) * 2.0;
    if !length_m.is_finite() || length_m > MAX_SEGMENT_M {
        return Err(CellError::SegmentTooLong { length_m });
    }
    let pieces = (length_m / PIECE_M).ceil().max(1.0) as usize;
    let at = |i: usize| {
        let s = i as f64 / pieces as f64;
        LatLon::new(a.lat + s * (b.lat - a.lat), a.lon + s * (b.lon - a.lon))
    };
    let mut cells = BTreeSet::new();
    for i in 0..pieces {
        let (p, q) = (at(i), at(i + 1));
        let frame = LocalFrame::new(midpoint(p, q));
        let (pxy, qxy) = (frame.to_xy(p), frame.to_xy(q));
        let start = to_latlng(p)?.to_cell(COARSE_RES);
        cells.extend(flood(start, &frame, (pxy, qxy), MARGIN_M)?);
    }
    Ok(cells.into_iter().map(cell_to_i64).collect())
}

/// The cells to look up for a scene of `radius_m` around `center` (see [`SceneCover`]).
pub fn scene_cover(center: LatLon, radius_m: f64) -> Result<SceneCover, CellError> {
    if !(radius_m.is_finite() && (0.0..=MAX_COVER_RADIUS_M).contains(&radius_m)) {
        return Err(CellError::InvalidRadius { radius_m });
    }
    let ll = to_latlng(center)?;
    let frame = LocalFrame::new(center);
    let disk = |res: Resolution, r: f64| -> Result<Vec<i64>, CellError> {
        let cells = flood(
            ll.to_cell(res),
            &frame,
            ((0.0, 0.0), (0.0, 0.0)),
            r + MARGIN_M,
        )?;
        Ok(cells.into_iter().map(cell_to_i64).collect())
    };
    Ok(SceneCover {
        fine: disk(FIX_RES, fine_radius_m(radius_m))?,
        coarse: disk(COARSE_RES, radius_m)?,
    })
}

/// Breadth-first flood fill from `start` over neighbouring cells whose boundary (projected
/// in `frame`) comes within `reach` of the segment `a`–`b` ([`ring_within`]). `start` is
/// always kept: it contains the start point.
fn flood(
    start: CellIndex,
    frame: &LocalFrame,
    (a, b): (Pt, Pt),
    reach: f64,
) -> Result<BTreeSet<CellIndex>, CellError> {
    let mut kept = BTreeSet::from([start]);
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(cell) = queue.pop_front() {
        for n in cell.grid_disk::<Vec<_>>(1) {
            if !seen.insert(n) {
                continue;
            }
            if ring_within(n, frame, a, b, reach) {
                kept.insert(n);
                if kept.len() > MAX_CELLS {
                    return Err(CellError::CoverTooLarge);
                }
                queue.push_back(n);
            }
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::scene::{scene_matches, SceneQuery};
    use crate::query::{linked, QFix, QueryConfig, US_PER_S};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    const LONDON: LatLon = LatLon::new(51.5074, -0.1278);

    fn cell_of(p: LatLon, res: Resolution) -> i64 {
        LatLng::new(p.lat, p.lon)
            .map(|ll| cell_to_i64(ll.to_cell(res)))
            .unwrap_or(-1)
    }

    /// A uniformly random point within `r` metres of `c`.
    fn random_in_disk(rng: &mut StdRng, c: LatLon, r: f64) -> LatLon {
        let f = LocalFrame::new(c);
        let rho = r * rng.gen::<f64>().sqrt();
        let th = rng.gen_range(0.0..std::f64::consts::TAU);
        f.to_latlon(rho * th.cos(), rho * th.sin())
    }

    /// A random scene of up to 1.5 km around London: centre, radius, cover and hit disk.
    fn random_scene(rng: &mut StdRng) -> (LatLon, f64, SceneCover, HitDisk) {
        let c = random_london_point(rng);
        let r = rng.gen_range(0.0..1500.0);
        let cover = scene_cover(c, r).unwrap_or(SceneCover {
            fine: vec![],
            coarse: vec![],
        });
        (c, r, cover, HitDisk::around(c, r))
    }

    fn random_london_point(rng: &mut StdRng) -> LatLon {
        random_in_disk(rng, LONDON, 25_000.0)
    }

    #[test]
    fn a_cell_id_round_trips_through_i64_and_is_positive() {
        let id = fix_cell(LONDON).unwrap_or(-1);
        assert!(id > 0);
        let cell = cell_from_i64(id);
        assert_eq!(cell.map(|c| c.resolution()), Some(FIX_RES));
        assert_eq!(cell_from_i64(-5), None);
    }

    #[test]
    fn an_impossible_position_has_no_cell() {
        assert!(matches!(
            fix_cell(LatLon::new(f64::NAN, 0.0)),
            Err(CellError::InvalidPosition { .. })
        ));
    }

    #[test]
    fn scene_cover_rejects_negative_huge_and_nan_radii() {
        for r in [-1.0, f64::NAN, f64::INFINITY, MAX_COVER_RADIUS_M + 1.0] {
            assert!(matches!(
                scene_cover(LONDON, r),
                Err(CellError::InvalidRadius { .. })
            ));
        }
    }

    #[test]
    fn scene_cover_misses_no_cell_of_random_points_in_the_disks() {
        let mut rng = StdRng::seed_from_u64(0x5ce7e);
        for _ in 0..60 {
            let (c, r, cover, hits) = random_scene(&mut rng);
            for _ in 0..500 {
                let p = random_in_disk(&mut rng, c, fine_radius_m(r));
                assert!(cover.fine.binary_search(&cell_of(p, FIX_RES)).is_ok());
                assert!(hits.holds((p.lat * 1e7).round() as i32, (p.lon * 1e7).round() as i32));
                let p = random_in_disk(&mut rng, c, r);
                assert!(cover.coarse.binary_search(&cell_of(p, COARSE_RES)).is_ok());
            }
            // Points on the rim are the hardest case.
            let f = LocalFrame::new(c);
            for k in 0..720 {
                let th = k as f64 * std::f64::consts::TAU / 720.0;
                let rim = |rr: f64| f.to_latlon(rr * th.cos(), rr * th.sin());
                let p = rim(fine_radius_m(r));
                assert!(cover.fine.binary_search(&cell_of(p, FIX_RES)).is_ok());
                let e7 = |deg: f64| (deg * 1e7).round() as i32;
                assert!(hits.holds(e7(p.lat), e7(p.lon)), "{p:?} outside {hits:?}");
                // ... and not much beyond it
                let q = rim(fine_radius_m(r) + 3.0 * MARGIN_M);
                assert!(!hits.holds(e7(q.lat), e7(q.lon)), "{q:?} inside {hits:?}");
                assert!(cover
                    .coarse
                    .binary_search(&cell_of(rim(r), COARSE_RES))
                    .is_ok());
            }
        }
    }

    /// The case the fine radius is cut to: a short segment whose nearest point to the scene
    /// is inside the radius and between its ends (worst: the ends equally far from it, on
    /// the rim of the radius).
    #[test]
    fn an_end_of_every_short_segment_within_the_radius_is_in_the_fine_cover() {
        let mut rng = StdRng::seed_from_u64(0x5e9);
        for _ in 0..60 {
            let (c, r, cover, hits) = random_scene(&mut rng);
            let f = LocalFrame::new(c);
            let e7 = |deg: f64| (deg * 1e7).round() as i32;
            let keys = scene_keys(c, r, &cover.fine);
            let found = |p: LatLon| {
                let cell = cell_of(p, FIX_RES);
                hits.holds(e7(p.lat), e7(p.lon))
                    && cover.fine.binary_search(&cell).is_ok()
                    && keys.binary_search(&fix_key(cell, p)).is_ok()
            };
            for k in 0..200 {
                let th = rng.gen_range(0.0..std::f64::consts::TAU);
                // nearest point at the rim half the time, anywhere within it otherwise
                let rho = if k % 2 == 0 {
                    r
                } else {
                    r * rng.gen::<f64>().sqrt()
                };
                let length = rng.gen_range(0.9..1.0) * LONG_SEGMENT_M;
                let before = if k % 4 < 2 {
                    length / 2.0
                } else {
                    rng.gen_range(0.0..length)
                };
                let (px, py) = (rho * th.cos(), rho * th.sin());
                let (ux, uy) = (-th.sin(), th.cos());
                let a = f.to_latlon(px - before * ux, py - before * uy);
                let b = f.to_latlon(px + (length - before) * ux, py + (length - before) * uy);
                if is_long_segment(a, b) {
                    continue;
                }
                assert!(found(a) || found(b), "{a:?}–{b:?} around {c:?}, {r} m");
            }
        }
    }

    /// SQLite's split keys (module doc): the key of every stored position in the fine disk
    /// (rounded to 10⁻⁷ degrees, as stored) is looked up, rim included.
    #[test]
    fn scene_keys_miss_no_key_of_random_points_in_the_fine_disk() {
        let mut rng = StdRng::seed_from_u64(0x5e1);
        let stored = |p: LatLon| {
            let e7 = |deg: f64| (deg * 1e7).round() / 1e7;
            LatLon::new(e7(p.lat), e7(p.lon))
        };
        for _ in 0..60 {
            let (c, r, cover, _) = random_scene(&mut rng);
            let keys = scene_keys(c, r, &cover.fine);
            let f = LocalFrame::new(c);
            let rim = (0..720).map(|k| {
                let th = k as f64 * std::f64::consts::TAU / 720.0;
                f.to_latlon(fine_radius_m(r) * th.cos(), fine_radius_m(r) * th.sin())
            });
            let inside: Vec<LatLon> = (0..500)
                .map(|_| random_in_disk(&mut rng, c, fine_radius_m(r)))
                .chain(rim)
                .collect();
            for p in inside {
                let p = stored(p);
                let key = fix_key(cell_of(p, FIX_RES), p);
                assert!(
                    keys.binary_search(&key).is_ok(),
                    "{p:?} around {c:?}, {r} m"
                );
            }
        }
    }

    /// A key is the fix's res-9 cell, or that cell with the digit of the res-10 child that
    /// holds the fix; the second is the rule (H3's children overhang their parent, so not
    /// always), and a scene of typical size leaves a good part of its rim cells' children
    /// out of its keys.
    #[test]
    fn a_fine_key_names_the_child_of_its_cell_that_holds_the_fix() {
        let mut rng = StdRng::seed_from_u64(0x5e2);
        let n = 20_000;
        let mut split = 0;
        for _ in 0..n {
            let p = random_london_point(&mut rng);
            let cell = cell_of(p, FIX_RES);
            let key = fix_key(cell, p);
            let child = cell_from_i64(cell_of(p, SPLIT_RES)).and_then(|h| h.parent(FIX_RES));
            if key == cell {
                assert_ne!(child.map(cell_to_i64), Some(cell), "{p:?}");
                continue;
            }
            split += 1;
            let digit = (key >> SPLIT_DIGIT_SHIFT) & 0b111;
            assert!(digit < 7, "{p:?}");
            assert_eq!(
                key & !(0b111 << SPLIT_DIGIT_SHIFT),
                cell & !(0b111 << SPLIT_DIGIT_SHIFT)
            );
            assert_eq!(child.map(cell_to_i64), Some(cell), "{p:?}");
        }
        // about 93 % (measured: 7 % of positions lie in a neighbour's child)
        assert!(
            split > n * 88 / 100 && split < n * 97 / 100,
            "{split} of {n}"
        );
        let (mut looked_up, mut all) = (0, 0);
        for _ in 0..100 {
            let c = random_london_point(&mut rng);
            let cover = scene_cover(c, 500.0).unwrap_or(SceneCover {
                fine: vec![],
                coarse: vec![],
            });
            looked_up += scene_keys(c, 500.0, &cover.fine).len();
            all += 8 * cover.fine.len();
        }
        // (measured: about 75 %, the children of the cover cells that meet the disk)
        assert!(looked_up < all * 4 / 5, "{looked_up} of {all} keys");
        println!("500 m scenes look up {looked_up} of {all} keys");
    }

    #[test]
    fn scene_cover_is_small_for_typical_radii() {
        let mut rng = StdRng::seed_from_u64(7);
        for (r, max_fine, max_coarse) in [(100.0, 20, 4), (500.0, 45, 5)] {
            let (mut worst, mut total) = ((0, 0), (0, 0));
            let n = 200;
            for _ in 0..n {
                let c = random_london_point(&mut rng);
                let cover = scene_cover(c, r).unwrap_or(SceneCover {
                    fine: vec![],
                    coarse: vec![],
                });
                worst = (
                    worst.0.max(cover.fine.len()),
                    worst.1.max(cover.coarse.len()),
                );
                total = (total.0 + cover.fine.len(), total.1 + cover.coarse.len());
            }
            println!(
                "radius {r} m: fine mean {:.1} max {}, coarse mean {:.1} max {}",
                total.0 as f64 / n as f64,
                worst.0,
                total.1 as f64 / n as f64,
                worst.1
            );
            assert!(
                worst.0 <= max_fine && worst.1 <= max_coarse,
                "{r}: {worst:?}"
            );
        }
    }

    #[test]
    fn segment_cells_contain_every_cell_the_line_passes_through() {
        let mut rng = StdRng::seed_from_u64(0x5e6);
        for _ in 0..80 {
            let a = random_london_point(&mut rng);
            let b = random_in_disk(&mut rng, a, 20_000.0);
            let cells = segment_cells(a, b).unwrap_or_default();
            // Sample every ~2 m along the line (linear in lat/lon, as the path is).
            let n = (distance_m(a, b) / 2.0).ceil().max(1.0) as usize;
            for i in 0..=n {
                let s = i as f64 / n as f64;
                let p = LatLon::new(a.lat + s * (b.lat - a.lat), a.lon + s * (b.lon - a.lon));
                assert!(
                    cells.binary_search(&cell_of(p, COARSE_RES)).is_ok(),
                    "{p:?} of {a:?}–{b:?}"
                );
            }
            // Tight: a 20 km line at res 7 (edge 1.2 km) touches tens of cells, not hundreds.
            assert!(cells.len() <= 10 + (distance_m(a, b) / 600.0) as usize);
        }
    }

    #[test]
    fn a_short_segment_inside_one_cell_has_exactly_that_cell() {
        let cells = segment_cells(LONDON, LONDON).unwrap_or_default();
        assert_eq!(cells, vec![cell_of(LONDON, COARSE_RES)]);
    }

    #[test]
    fn an_absurdly_long_segment_is_refused() {
        assert!(matches!(
            segment_cells(LatLon::new(51.5, -0.1), LatLon::new(41.0, 12.0)),
            Err(CellError::SegmentTooLong { .. })
        ));
    }

    #[test]
    fn only_segments_longer_than_500_m_are_long() {
        let f = LocalFrame::new(LONDON);
        assert!(!is_long_segment(LONDON, f.to_latlon(0.0, 499.0)));
        assert!(is_long_segment(LONDON, f.to_latlon(0.0, 501.0)));
    }

    /// The index answer (candidate devices) contains every device a scan of all fixes
    /// matches: random fleets and scenes from a fixed seed, index against brute force.
    #[test]
    fn index_candidates_include_every_brute_force_match() {
        let mut rng = StdRng::seed_from_u64(0xc0ffee);
        let cfg = QueryConfig::default();
        let t0 = 1_700_000_000 * US_PER_S;
        for _round in 0..20 {
            let centre = random_london_point(&mut rng);
            let f = LocalFrame::new(centre);
            // 40 devices wandering around the centre, some fast, with irregular gaps.
            let mut fixes = Vec::new();
            for device in 0..40 {
                let (mut x, mut y): (f64, f64) = (
                    rng.gen_range(-3000.0..3000.0),
                    rng.gen_range(-3000.0..3000.0),
                );
                let speed = [1.5, 5.0, 15.0, 40.0][device as usize % 4];
                let mut t = t0 + rng.gen_range(0..600) * US_PER_S;
                for _ in 0..30 {
                    fixes.push(QFix {
                        device,
                        subject: device,
                        ts_us: t,
                        pos: f.to_latlon(x, y),
                        accuracy_m: 10.0,
                    });
                    let dt = [30, 60, 120, 400][rng.gen_range(0..4)];
                    let th = rng.gen_range(0.0..std::f64::consts::TAU);
                    x += speed * dt as f64 * th.cos();
                    y += speed * dt as f64 * th.sin();
                    t += dt * US_PER_S;
                }
            }
            // The "store": fix cells, and coarse rows of long linked segments.
            let fix_rows: Vec<(i64, i64, i64)> = fixes
                .iter()
                .map(|q| (fix_cell(q.pos).unwrap_or(-1), q.ts_us, q.device))
                .collect();
            let mut seg_rows: Vec<(i64, i64, i64, i64)> = Vec::new();
            for w in fixes.windows(2) {
                if linked(&w[0], &w[1], &cfg) && is_long_segment(w[0].pos, w[1].pos) {
                    for c in segment_cells(w[0].pos, w[1].pos).unwrap_or_default() {
                        seg_rows.push((c, w[0].ts_us, w[1].ts_us, w[0].device));
                    }
                }
            }
            for _ in 0..10 {
                let scene = SceneQuery {
                    center: random_in_disk(&mut rng, centre, 2000.0),
                    radius_m: rng.gen_range(20.0..600.0),
                    from_us: t0 + rng.gen_range(0..3600) * US_PER_S,
                    to_us: 0,
                };
                let scene = SceneQuery {
                    to_us: scene.from_us + rng.gen_range(0..1800) * US_PER_S,
                    ..scene
                };
                let cover = scene_cover(scene.center, scene.radius_m).unwrap_or(SceneCover {
                    fine: vec![],
                    coarse: vec![],
                });
                let gap = cfg.max_gap_us();
                let mut candidates: BTreeSet<i64> = fix_rows
                    .iter()
                    .filter(|(c, ts, _)| {
                        cover.fine.binary_search(c).is_ok()
                            && scene.from_us - gap <= *ts
                            && *ts <= scene.to_us + gap
                    })
                    .map(|r| r.2)
                    .collect();
                candidates.extend(
                    seg_rows
                        .iter()
                        .filter(|(c, a, b, _)| {
                            cover.coarse.binary_search(c).is_ok()
                                && *a <= scene.to_us
                                && scene.from_us <= *b
                        })
                        .map(|r| r.3),
                );
                for m in scene_matches(&fixes, &scene, &cfg) {
                    assert!(candidates.contains(&m.device), "missed {m:?}");
                }
            }
        }
    }
}
