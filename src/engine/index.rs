//! The zone index: every zone of every subject, built whole and swapped whole.
//!
//! - An rstar R-tree, bulk-loaded, of zone envelopes (lon/lat AABBs) tagged with the zone's
//!   slot, answers "which zones could this fix be inside of, or uncertain for" across all
//!   subjects ([`ZoneIndex::candidates`]).
//! - Zones are stored sorted by `(subject, id)`, so a subject's zones are one contiguous run
//!   of slots ([`ZoneIndex::subject_slots`]). The engine classifies a fix against every zone
//!   of its subject — for both rule kinds an *outside* answer matters (it ends an exclusion
//!   breach, it opens a curfew breach), so the subject's list, with an envelope test first,
//!   is the hot path; the bench compares it with the R-tree path.
//! - [`ZoneIndex::classify`] is the exact SPEC §3 test: inside / outside by the even-odd rule,
//!   and distance to the boundary in metres in a [`LocalFrame`] centred on the fix. Polygon
//!   edges are bucketed in latitude bands so a 3,000-vertex borough costs a few dozen edge
//!   tests, not 3,000.
//!
//! Invariants: a probe rectangle (fix ± accuracy, in the fix's frame) contains every point
//! the classifier measures as closer than `accuracy_m`, so a zone whose envelope misses it is
//! certainly `Outside`; the envelope test and the exact test use the same frame, so the two
//! can never disagree. Zones of a `Shape::Area` are valid (non-overlapping rings), which the
//! even-odd rule over all rings relies on.

use std::collections::HashMap;
use std::ops::Range;

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, AABB};
use serde::{Deserialize, Serialize};

use crate::geodesy::{LatLon, LocalFrame};
use crate::model::geometry::Shape;
use crate::model::schedule::CompiledSchedule;

/// Exclusion: must not be inside. Inclusion: must be inside while active (a curfew).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    Exclusion,
    Inclusion,
}

/// A zone as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneDef {
    pub id: i64,
    pub subject: i64,
    pub kind: ZoneKind,
    pub shape: Shape,
    /// `None` = always active (while valid)
    pub schedule: Option<CompiledSchedule>,
    pub grace_s: i64,
    /// validity is `[valid_from_us, valid_to_us)`
    pub valid_from_us: i64,
    pub valid_to_us: Option<i64>,
}

/// SPEC §3: where a fix is with respect to a zone, given its accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Classification {
    /// inside and at least `accuracy_m` from the boundary
    Inside,
    /// outside and at least `accuracy_m` from the boundary
    Outside,
    /// within `accuracy_m` of the boundary: changes no episode
    Uncertain,
}

/// Relative slack on circle envelopes: the envelope is drawn in a frame at the circle's
/// centre, the exact test in a frame at the fix; over ≤ 100 km the scales differ by < 3 %.
const CIRCLE_ENVELOPE_SLACK: f64 = 1.05;
/// Probe rectangles are widened by this (relative, absolute metres) against rounding.
const PROBE_SLACK: (f64, f64) = (1.001, 0.5);
/// Mean number of edges per latitude band of a polygon.
const EDGES_PER_BAND: usize = 4;
const MAX_BANDS: usize = 4096;
const INLINE_BANDS: usize = 16;

/// A fix prepared for classification: its frame and its uncertainty rectangle.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub pos: LatLon,
    pub accuracy_m: f64,
    frame: LocalFrame,
    /// half-height and half-width of the probe rectangle, degrees
    dlat: f64,
    dlon: f64,
}

impl Probe {
    pub fn new(pos: LatLon, accuracy_m: f64) -> Self {
        let accuracy_m = if accuracy_m.is_finite() && accuracy_m > 0.0 {
            accuracy_m
        } else {
            0.0
        };
        let frame = LocalFrame::new(pos);
        let (dlat, dlon) = frame.degrees_for(accuracy_m * PROBE_SLACK.0 + PROBE_SLACK.1);
        Self {
            pos,
            accuracy_m,
            frame,
            dlat,
            dlon,
        }
    }

    fn aabb(&self) -> AABB<[f64; 2]> {
        AABB::from_corners(
            [self.pos.lon - self.dlon, self.pos.lat - self.dlat],
            [self.pos.lon + self.dlon, self.pos.lat + self.dlat],
        )
    }

    #[inline]
    fn misses(&self, b: &[f64; 4]) -> bool {
        self.pos.lon + self.dlon < b[0]
            || self.pos.lon - self.dlon > b[2]
            || self.pos.lat + self.dlat < b[1]
            || self.pos.lat - self.dlat > b[3]
    }
}

/// Polygon edges in lon/lat, bucketed by latitude band and stored band-major (an edge
/// spanning several bands is copied into each), so a test reads one contiguous run of
/// memory: the edges of band `b` are `band_edges[band_start[b]..band_start[b + 1]]`.
#[derive(Debug, Clone)]
struct Banded {
    /// `[x1, y1, x2, y2]` (lon, lat), each edge once (grid building)
    edges: Vec<[f64; 4]>,
    /// band offsets, inline for polygons of up to [`INLINE_BANDS`] bands (most zones): the
    /// offsets then sit in the dense per-zone array and cost no cache miss of their own
    band_start_inline: [u32; INLINE_BANDS + 1],
    band_start_heap: Vec<u32>,
    n_bands: usize,
    band_edges: Vec<[f64; 4]>,
    lat0: f64,
    band_h: f64,
}

impl Banded {
    fn new(shape: &geo::MultiPolygon<f64>) -> Self {
        let mut edges = Vec::new();
        for p in &shape.0 {
            for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
                for l in ring.lines() {
                    if l.start != l.end {
                        edges.push([l.start.x, l.start.y, l.end.x, l.end.y]);
                    }
                }
            }
        }
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for e in &edges {
            lo = lo.min(e[1].min(e[3]));
            hi = hi.max(e[1].max(e[3]));
        }
        if edges.is_empty() {
            lo = 0.0;
            hi = 0.0;
        }
        let n = (edges.len() / EDGES_PER_BAND).clamp(1, MAX_BANDS);
        let band_h = ((hi - lo) / n as f64).max(1e-12);
        let mut bands: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, e) in edges.iter().enumerate() {
            let (a, b) = (e[1].min(e[3]), e[1].max(e[3]));
            let (ba, bb) = (band_of(lo, band_h, n, a), band_of(lo, band_h, n, b));
            for band in &mut bands[ba..=bb] {
                band.push(i as u32);
            }
        }
        let mut band_start = Vec::with_capacity(n + 1);
        let mut band_edges = Vec::with_capacity(bands.iter().map(Vec::len).sum());
        for b in &bands {
            band_start.push(band_edges.len() as u32);
            band_edges.extend(b.iter().map(|&i| edges[i as usize]));
        }
        band_start.push(band_edges.len() as u32);
        let mut band_start_inline = [0u32; INLINE_BANDS + 1];
        let band_start_heap = if n <= INLINE_BANDS {
            band_start_inline[..=n].copy_from_slice(&band_start);
            Vec::new()
        } else {
            band_start
        };
        Self {
            edges,
            band_start_inline,
            band_start_heap,
            n_bands: n,
            band_edges,
            lat0: lo,
            band_h,
        }
    }

    #[inline]
    fn n_bands(&self) -> usize {
        self.n_bands
    }

    #[inline]
    fn band_start(&self, b: usize) -> usize {
        if self.n_bands <= INLINE_BANDS {
            self.band_start_inline[b] as usize
        } else {
            self.band_start_heap[b] as usize
        }
    }

    fn band(&self, lat: f64) -> usize {
        band_of(self.lat0, self.band_h, self.n_bands(), lat)
    }

    /// Edges of bands `a..=b`.
    fn band_slice(&self, a: usize, b: usize) -> &[[f64; 4]] {
        &self.band_edges[self.band_start(a)..self.band_start(b + 1)]
    }

    /// Even-odd containment in the lon/lat plane (containment is invariant under the
    /// frame's affine projection, so no projection is needed).
    fn contains(&self, p: LatLon) -> bool {
        if p.lat < self.lat0 || p.lat > self.lat0 + self.band_h * self.n_bands() as f64 {
            return false;
        }
        let mut inside = false;
        let b = self.band(p.lat);
        for &[x1, y1, x2, y2] in self.band_slice(b, b) {
            if (y1 > p.lat) != (y2 > p.lat) {
                let x = x1 + (p.lat - y1) * (x2 - x1) / (y2 - y1);
                if p.lon < x {
                    inside = !inside;
                }
            }
        }
        inside
    }

    /// True when some edge is closer than `probe.accuracy_m` metres to the fix.
    fn boundary_within(&self, probe: &Probe) -> bool {
        let acc = probe.accuracy_m;
        if acc <= 0.0 || self.edges.is_empty() {
            return false;
        }
        let acc2 = acc * acc;
        let (p, f) = (probe.pos, &probe.frame);
        let b0 = self.band(p.lat - probe.dlat);
        let b1 = self.band(p.lat + probe.dlat);
        // an edge spanning several bands appears in each: harmless for a minimum
        for &[x1, y1, x2, y2] in self.band_slice(b0, b1) {
            if x1.max(x2) < p.lon - probe.dlon
                || x1.min(x2) > p.lon + probe.dlon
                || y1.max(y2) < p.lat - probe.dlat
                || y1.min(y2) > p.lat + probe.dlat
            {
                continue;
            }
            let a = f.to_xy(LatLon::new(y1, x1));
            let b = f.to_xy(LatLon::new(y2, x2));
            if seg_dist2_from_origin(a, b) < acc2 {
                return true;
            }
        }
        false
    }
}

fn band_of(lo: f64, h: f64, n: usize, lat: f64) -> usize {
    let b = ((lat - lo) / h).floor();
    if b <= 0.0 || b.is_nan() {
        0
    } else {
        (b as usize).min(n - 1)
    }
}

/// Squared distance from (0, 0) to the segment a–b.
#[inline]
fn seg_dist2_from_origin(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (-(a.0 * dx + a.1 * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (x, y) = (a.0 + t * dx, a.1 + t * dy);
    x * x + y * y
}

/// Side of the coarse grid laid over each polygon's envelope.
const GRID: usize = 16;

/// A 16 × 16 grid over a polygon's envelope, each cell known to be wholly inside, wholly
/// outside, or (neither bit set) touched by the boundary. Built conservatively: a cell is
/// `boundary` when any edge's bounding box meets it; other cells take the even-odd answer of
/// their centre. A probe rectangle covering only inside (or only outside) cells is `Inside`
/// (`Outside`) without reading an edge: no boundary point lies in it, and the rectangle
/// contains every point closer than the accuracy. One cache line per zone.
#[derive(Debug, Clone, Copy, Default)]
struct Grid {
    inside: [u64; GRID * GRID / 64],
    outside: [u64; GRID * GRID / 64],
}

impl Grid {
    fn build(env: &[f64; 4], b: &Banded) -> Grid {
        let mut g = Grid::default();
        let (w, h) = (
            (env[2] - env[0]) / GRID as f64,
            (env[3] - env[1]) / GRID as f64,
        );
        if !(w > 0.0 && h > 0.0) {
            return g;
        }
        let cell = |v: f64, lo: f64, step: f64| {
            (((v - lo) / step).floor().max(0.0) as usize).min(GRID - 1)
        };
        let mut boundary = [false; GRID * GRID];
        for e in &b.edges {
            let (x0, x1) = (
                cell(e[0].min(e[2]), env[0], w),
                cell(e[0].max(e[2]), env[0], w),
            );
            let (y0, y1) = (
                cell(e[1].min(e[3]), env[1], h),
                cell(e[1].max(e[3]), env[1], h),
            );
            for y in y0.saturating_sub(1)..=(y1 + 1).min(GRID - 1) {
                for x in x0.saturating_sub(1)..=(x1 + 1).min(GRID - 1) {
                    boundary[y * GRID + x] = true;
                }
            }
        }
        for y in 0..GRID {
            let mut state: Option<bool> = None;
            for x in 0..GRID {
                let i = y * GRID + x;
                if boundary[i] {
                    state = None;
                    continue;
                }
                let inside = *state.get_or_insert_with(|| {
                    b.contains(LatLon::new(
                        env[1] + (y as f64 + 0.5) * h,
                        env[0] + (x as f64 + 0.5) * w,
                    ))
                });
                let word = if inside {
                    &mut g.inside
                } else {
                    &mut g.outside
                };
                word[i / 64] |= 1 << (i % 64);
            }
        }
        g
    }

    /// `Some(class)` when every cell the probe rectangle meets agrees.
    #[inline]
    fn decide(&self, env: &[f64; 4], probe: &Probe) -> Option<Classification> {
        let (w, h) = (
            (env[2] - env[0]) / GRID as f64,
            (env[3] - env[1]) / GRID as f64,
        );
        if !(w > 0.0 && h > 0.0) {
            return None;
        }
        let (lx, hx) = (
            (probe.pos.lon - probe.dlon - env[0]) / w,
            (probe.pos.lon + probe.dlon - env[0]) / w,
        );
        let (ly, hy) = (
            (probe.pos.lat - probe.dlat - env[1]) / h,
            (probe.pos.lat + probe.dlat - env[1]) / h,
        );
        // parts of the rectangle beyond the envelope are outside the polygon
        let beyond = lx < 0.0 || ly < 0.0 || hx >= GRID as f64 || hy >= GRID as f64;
        let clamp = |v: f64| (v.floor().max(0.0) as usize).min(GRID - 1);
        let (x0, x1, y0, y1) = (clamp(lx), clamp(hx), clamp(ly), clamp(hy));
        let row_mask = ((1u64 << (x1 - x0 + 1)) - 1) << x0;
        let (mut all_in, mut all_out) = (!beyond, true);
        for y in y0..=y1 {
            let shift = (y * GRID) % 64;
            let m = row_mask << shift;
            let (i, o) = (self.inside[y * GRID / 64], self.outside[y * GRID / 64]);
            all_in &= i & m == m;
            all_out &= o & m == m;
            if !all_in && !all_out {
                return None;
            }
        }
        if all_in {
            Some(Classification::Inside)
        } else if all_out {
            Some(Classification::Outside)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
enum Prepared {
    Area(Banded),
    Circle { center: LatLon, radius_m: f64 },
}

/// The per-fix facts of a zone, kept dense and apart from the geometry so that the common
/// case (envelope missed, schedule status cached) touches one or two cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneMeta {
    pub id: i64,
    pub kind: ZoneKind,
    pub scheduled: bool,
    pub grace_s: i64,
    pub valid_from_us: i64,
    /// `i64::MAX` = open-ended
    pub valid_to_us: i64,
}

/// Hasher for integer ids (subject ids): a multiplicative mix, much cheaper than SipHash;
/// the keys come from our own database, not from an adversary.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, i: u64) {
        let h = (self.0 ^ i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
}

type IdMap<V> = HashMap<i64, V, std::hash::BuildHasherDefault<IdHasher>>;

fn envelope_of(shape: &Shape) -> [f64; 4] {
    match shape {
        Shape::Circle { center, radius_m } => {
            let (dlat, dlon) =
                LocalFrame::new(*center).degrees_for(radius_m * CIRCLE_ENVELOPE_SLACK + 1.0);
            [
                center.lon - dlon,
                center.lat - dlat,
                center.lon + dlon,
                center.lat + dlat,
            ]
        }
        Shape::Area(mp) => {
            let mut b = [
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ];
            for p in &mp.0 {
                for c in &p.exterior().0 {
                    b[0] = b[0].min(c.x);
                    b[1] = b[1].min(c.y);
                    b[2] = b[2].max(c.x);
                    b[3] = b[3].max(c.y);
                }
            }
            b
        }
    }
}

/// All zones, read-only once built; the caller swaps an `Arc<ZoneIndex>` when zones change.
#[derive(Debug)]
pub struct ZoneIndex {
    /// all by slot
    defs: Vec<ZoneDef>,
    meta: Vec<ZoneMeta>,
    /// `[min_lon, min_lat, max_lon, max_lat]`
    envelopes: Vec<[f64; 4]>,
    grids: Vec<Grid>,
    prepared: Vec<Prepared>,
    tree: RTree<GeomWithData<Rectangle<[f64; 2]>, u32>>,
    subjects: IdMap<(u32, u32)>,
}

impl Default for ZoneIndex {
    fn default() -> Self {
        Self::build(Vec::new())
    }
}

/// One zone with what the index derives from its geometry.
struct Part {
    def: ZoneDef,
    prepared: Prepared,
    envelope: [f64; 4],
    grid: Grid,
}

impl Part {
    fn prepare(def: ZoneDef) -> Part {
        let prepared = match &def.shape {
            Shape::Area(mp) => Prepared::Area(Banded::new(mp)),
            Shape::Circle { center, radius_m } => Prepared::Circle {
                center: *center,
                radius_m: *radius_m,
            },
        };
        let envelope = envelope_of(&def.shape);
        let grid = match &prepared {
            Prepared::Area(b) => Grid::build(&envelope, b),
            Prepared::Circle { .. } => Grid::default(),
        };
        Part {
            def,
            prepared,
            envelope,
            grid,
        }
    }
}

impl ZoneIndex {
    /// Build from every zone (deleted zones should stay until past the horizon, with
    /// `valid_to_us` set, so open episodes end at that instant).
    pub fn build(defs: Vec<ZoneDef>) -> Self {
        Self::assemble(defs.into_iter().map(Part::prepare).collect())
    }

    /// This index with `def` added, or replacing the zone of the same id: the other zones'
    /// prepared geometry is reused, so a zone change costs one zone's preparation plus an
    /// R-tree bulk load, not a reload of every zone. Zones are ended, never reopened, so an
    /// end already in the index is kept when `def` (a read that may have raced the ending)
    /// has none or a later one.
    pub fn with_zone(&self, mut def: ZoneDef) -> Self {
        if let Some(ended) = self
            .defs
            .iter()
            .find(|d| d.id == def.id)
            .and_then(|d| d.valid_to_us)
        {
            def.valid_to_us = Some(def.valid_to_us.map_or(ended, |t| t.min(ended)));
        }
        let mut parts: Vec<Part> = (0..self.defs.len())
            .filter(|&i| self.defs[i].id != def.id)
            .map(|i| Part {
                def: self.defs[i].clone(),
                prepared: self.prepared[i].clone(),
                envelope: self.envelopes[i],
                grid: self.grids[i],
            })
            .collect();
        parts.push(Part::prepare(def));
        Self::assemble(parts)
    }

    fn assemble(mut parts: Vec<Part>) -> Self {
        parts.sort_by_key(|p| (p.def.subject, p.def.id));
        let mut defs = Vec::with_capacity(parts.len());
        let mut prepared = Vec::with_capacity(parts.len());
        let mut envelopes = Vec::with_capacity(parts.len());
        let mut grids = Vec::with_capacity(parts.len());
        for p in parts {
            defs.push(p.def);
            prepared.push(p.prepared);
            envelopes.push(p.envelope);
            grids.push(p.grid);
        }
        let meta = defs
            .iter()
            .map(|d| ZoneMeta {
                id: d.id,
                kind: d.kind,
                scheduled: d.schedule.is_some(),
                grace_s: d.grace_s,
                valid_from_us: d.valid_from_us,
                valid_to_us: d.valid_to_us.unwrap_or(i64::MAX),
            })
            .collect();
        let mut subjects: IdMap<(u32, u32)> = IdMap::default();
        for (i, z) in defs.iter().enumerate() {
            let e = subjects.entry(z.subject).or_insert((i as u32, i as u32));
            e.1 = i as u32 + 1;
        }
        let tree = RTree::bulk_load(
            envelopes
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    GeomWithData::new(
                        Rectangle::from_corners([b[0], b[1]], [b[2], b[3]]),
                        i as u32,
                    )
                })
                .collect(),
        );
        Self {
            defs,
            meta,
            envelopes,
            grids,
            prepared,
            tree,
            subjects,
        }
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The zone in a slot. Panics on a slot not from this index (a programming error).
    pub fn zone(&self, slot: u32) -> &ZoneDef {
        &self.defs[slot as usize]
    }

    /// The per-fix facts of the zone in a slot.
    #[inline]
    pub fn meta(&self, slot: u32) -> &ZoneMeta {
        &self.meta[slot as usize]
    }

    /// The subject's zones, as slots in zone-id order.
    pub fn subject_slots(&self, subject: i64) -> Range<u32> {
        self.subjects.get(&subject).map_or(0..0, |&(a, b)| a..b)
    }

    /// Slots (of any subject) whose envelope meets the fix's uncertainty rectangle: every
    /// zone the fix is inside of or uncertain for is among them (R-tree query).
    pub fn candidates(&self, probe: &Probe) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .tree
            .locate_in_envelope_intersecting(&probe.aabb())
            .map(|g| g.data)
            .collect();
        v.sort_unstable();
        v
    }

    /// Brute-force twin of [`ZoneIndex::candidates`] (tests and the bench baseline).
    pub fn candidates_by_scan(&self, probe: &Probe) -> Vec<u32> {
        (0..self.len() as u32)
            .filter(|&i| !probe.misses(&self.envelopes[i as usize]))
            .collect()
    }

    /// The exact SPEC §3 classification of a fix against one zone.
    #[inline]
    pub fn classify(&self, slot: u32, probe: &Probe) -> Classification {
        let env = &self.envelopes[slot as usize];
        if probe.misses(env) {
            return Classification::Outside;
        }
        if let Some(c) = self.grids[slot as usize].decide(env, probe) {
            return c;
        }
        classify_prepared(&self.prepared[slot as usize], probe)
    }

    /// The same without the envelope short-cut (bench baseline, tests).
    pub fn classify_exhaustive(&self, slot: u32, probe: &Probe) -> Classification {
        classify_prepared(&self.prepared[slot as usize], probe)
    }
}

fn classify_prepared(p: &Prepared, probe: &Probe) -> Classification {
    match p {
        Prepared::Circle { center, radius_m } => {
            let (x, y) = probe.frame.to_xy(*center);
            let d = x.hypot(y);
            if d <= radius_m - probe.accuracy_m {
                Classification::Inside
            } else if d >= radius_m + probe.accuracy_m {
                Classification::Outside
            } else {
                Classification::Uncertain
            }
        }
        Prepared::Area(b) => {
            if b.boundary_within(probe) {
                Classification::Uncertain
            } else if b.contains(probe.pos) {
                Classification::Inside
            } else {
                Classification::Outside
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use geo::{Contains, Coord, LineString, MultiPolygon, Polygon};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// A star-shaped (hence simple) polygon of `n` vertices around a centre, radii in metres.
    pub(crate) fn star(rng: &mut StdRng, c: LatLon, n: usize, r_min: f64, r_max: f64) -> Shape {
        let f = LocalFrame::new(c);
        let mut pts: Vec<Coord<f64>> = (0..n)
            .map(|i| {
                let a = i as f64 / n as f64 * std::f64::consts::TAU;
                let r = rng.gen_range(r_min..r_max);
                let p = f.to_latlon(r * a.cos(), r * a.sin());
                Coord { x: p.lon, y: p.lat }
            })
            .collect();
        pts.push(pts[0]);
        Shape::Area(MultiPolygon::new(vec![Polygon::new(
            LineString::new(pts),
            vec![],
        )]))
    }

    pub(crate) fn zone(id: i64, subject: i64, kind: ZoneKind, shape: Shape) -> ZoneDef {
        ZoneDef {
            id,
            subject,
            kind,
            shape,
            schedule: None,
            grace_s: 0,
            valid_from_us: i64::MIN,
            valid_to_us: None,
        }
    }

    fn random_zones(seed: u64, n: usize) -> Vec<ZoneDef> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let c = LatLon::new(rng.gen_range(51.3..51.7), rng.gen_range(-0.5..0.3));
                let shape = if i % 3 == 0 {
                    Shape::Circle {
                        center: c,
                        radius_m: rng.gen_range(50.0..2000.0),
                    }
                } else {
                    let n = rng.gen_range(12..60);
                    star(&mut rng, c, n, 200.0, 3000.0)
                };
                zone(i as i64, (i / 4) as i64, ZoneKind::Exclusion, shape)
            })
            .collect()
    }

    /// Reference classification with geo and a frame at the fix.
    fn reference(shape: &Shape, pos: LatLon, acc: f64) -> Classification {
        let f = LocalFrame::new(pos);
        let (inside, dist) = match shape {
            Shape::Circle { center, radius_m } => {
                let (x, y) = f.to_xy(*center);
                let d = x.hypot(y);
                (d <= *radius_m, (d - radius_m).abs())
            }
            Shape::Area(mp) => {
                let inside = mp.contains(&geo::Point::new(pos.lon, pos.lat));
                let mut d = f64::INFINITY;
                for p in &mp.0 {
                    for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
                        for l in ring.lines() {
                            let a = f.to_xy(LatLon::new(l.start.y, l.start.x));
                            let b = f.to_xy(LatLon::new(l.end.y, l.end.x));
                            d = d.min(seg_dist2_from_origin(a, b).sqrt());
                        }
                    }
                }
                (inside, d)
            }
        };
        if dist < acc {
            Classification::Uncertain
        } else if inside {
            Classification::Inside
        } else {
            Classification::Outside
        }
    }

    #[test]
    fn rtree_candidates_equal_a_brute_force_scan_on_random_zones() {
        let zones = random_zones(7, 400);
        let idx = ZoneIndex::build(zones);
        let mut rng = StdRng::seed_from_u64(11);
        let mut hits = 0;
        for _ in 0..3000 {
            let pos = LatLon::new(rng.gen_range(51.28..51.72), rng.gen_range(-0.52..0.32));
            let acc = if rng.gen_bool(0.2) {
                0.0
            } else {
                rng.gen_range(1.0..800.0)
            };
            let probe = Probe::new(pos, acc);
            let a = idx.candidates(&probe);
            assert_eq!(a, idx.candidates_by_scan(&probe));
            // every zone that is not certainly outside is a candidate
            for slot in 0..idx.len() as u32 {
                let c = idx.classify(slot, &probe);
                assert_eq!(c, idx.classify_exhaustive(slot, &probe));
                if c != Classification::Outside {
                    assert!(a.binary_search(&slot).is_ok());
                    hits += 1;
                }
            }
        }
        assert!(hits > 100, "the test should exercise hits ({hits})");
    }

    #[test]
    fn an_index_with_a_zone_added_or_replaced_equals_one_built_from_scratch() {
        let zones = random_zones(9, 120);
        let mut idx = ZoneIndex::build(zones[..60].to_vec());
        for z in &zones[60..] {
            idx = idx.with_zone(z.clone());
        }
        // replace one zone (ended) and move another
        let mut ended = zones[10].clone();
        ended.valid_to_us = Some(1_000);
        let mut moved = zones[70].clone();
        moved.shape = zones[3].shape.clone();
        idx = idx.with_zone(ended.clone()).with_zone(moved.clone());
        // a stale read of the ended zone (no end yet) does not reopen it
        idx = idx.with_zone(zones[10].clone());
        let mut all = zones.clone();
        all[10] = ended;
        all[70] = moved;
        let fresh = ZoneIndex::build(all);
        assert_eq!(idx.len(), fresh.len());
        for slot in 0..idx.len() as u32 {
            assert_eq!(idx.zone(slot), fresh.zone(slot));
            assert_eq!(idx.meta(slot), fresh.meta(slot));
        }
        let mut rng = StdRng::seed_from_u64(13);
        for _ in 0..2000 {
            let pos = LatLon::new(rng.gen_range(51.28..51.72), rng.gen_range(-0.52..0.32));
            let probe = Probe::new(pos, rng.gen_range(0.0..400.0));
            let got = idx.candidates(&probe);
            assert_eq!(got, fresh.candidates(&probe));
            for slot in got {
                assert_eq!(idx.classify(slot, &probe), fresh.classify(slot, &probe));
            }
        }
        for subject in 0..31 {
            assert_eq!(idx.subject_slots(subject), fresh.subject_slots(subject));
        }
    }

    #[test]
    fn exact_classification_agrees_with_geo_on_random_zones_and_points() {
        let zones = random_zones(3, 60);
        let idx = ZoneIndex::build(zones.clone());
        let mut rng = StdRng::seed_from_u64(5);
        let mut seen = HashMap::new();
        for slot in 0..idx.len() as u32 {
            let z = idx.zone(slot);
            let b = envelope_of(&z.shape);
            for _ in 0..200 {
                let pos = LatLon::new(
                    rng.gen_range(b[1] - 0.01..b[3] + 0.01),
                    rng.gen_range(b[0] - 0.01..b[2] + 0.01),
                );
                let acc = rng.gen_range(0.0..300.0);
                let got = idx.classify(slot, &Probe::new(pos, acc));
                assert_eq!(
                    got,
                    reference(&z.shape, pos, acc),
                    "zone {} at {pos:?} ±{acc}",
                    z.id
                );
                *seen.entry(got).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 3, "all three classes exercised: {seen:?}");
    }

    #[test]
    fn a_fix_within_its_accuracy_of_the_boundary_is_uncertain() {
        let c = LatLon::new(51.5, -0.1);
        let idx = ZoneIndex::build(vec![zone(
            1,
            1,
            ZoneKind::Exclusion,
            Shape::Circle {
                center: c,
                radius_m: 100.0,
            },
        )]);
        let f = LocalFrame::new(c);
        let at = |m: f64| f.to_latlon(m, 0.0);
        assert_eq!(
            idx.classify(0, &Probe::new(at(60.0), 30.0)),
            Classification::Inside
        );
        assert_eq!(
            idx.classify(0, &Probe::new(at(80.0), 30.0)),
            Classification::Uncertain
        );
        assert_eq!(
            idx.classify(0, &Probe::new(at(120.0), 30.0)),
            Classification::Uncertain
        );
        assert_eq!(
            idx.classify(0, &Probe::new(at(140.0), 30.0)),
            Classification::Outside
        );
    }

    #[test]
    fn holes_are_outside() {
        let sq = |x0: f64, y0: f64, d: f64| {
            LineString::from(vec![
                (x0, y0),
                (x0 + d, y0),
                (x0 + d, y0 + d),
                (x0, y0 + d),
                (x0, y0),
            ])
        };
        let mp = MultiPolygon::new(vec![Polygon::new(
            sq(-0.1, 51.5, 0.02),
            vec![sq(-0.095, 51.505, 0.01)],
        )]);
        let idx = ZoneIndex::build(vec![zone(1, 1, ZoneKind::Exclusion, Shape::Area(mp))]);
        assert_eq!(
            idx.classify(0, &Probe::new(LatLon::new(51.51, -0.09), 10.0)),
            Classification::Outside
        );
        assert_eq!(
            idx.classify(0, &Probe::new(LatLon::new(51.502, -0.098), 10.0)),
            Classification::Inside
        );
        assert_eq!(idx.subject_slots(1), 0..1);
        assert_eq!(idx.subject_slots(2), 0..0);
    }
}
