//! Lawful location queries and the audit trail, as the store serves them (SPEC §2 Lawful
//! location queries, Trails, Audit; §4; §5 Audit integrity, Retention).
//!
//! ## Audited reads
//! An audited read runs in a [`LawfulTx`]: the read and the audit entry that records it
//! are one transaction, so an answer never leaves without its entry, and an entry that
//! cannot be written fails the read (fail closed). On SQLite the transaction starts with
//! `BEGIN IMMEDIATE` (it will write the entry, and a deferred read transaction could not
//! upgrade once ingest has committed in between); on PostgreSQL the append locks the
//! chain's head row (`audit_head`, held to commit), which serialises appenders so that the
//! entry's id is the head's id + 1 (see [`crate::audit::chain`]). Location-at-time and
//! crime-scene queries are one call each instead ([`Store::at_time_audited`],
//! [`Store::scene_audited`]): on SQLite the same transaction, run in one pass on a
//! connection's handle; on PostgreSQL the reads and then the append as statements on one
//! connection, each its own transaction, the append committing before anything is returned
//! (see [`Store::at_time_audited`]).
//!
//! ## The crime-scene index
//! The fine part holds every positioned fix's H3 res-9 cell: on PostgreSQL the
//! `fixes(cell, ts)` index; on SQLite the table `fix_cells(cell, minute, device)`, one row
//! per device, cell and minute with a fix (23.8 bytes a fix on the 10 M bench against 29
//! for the index row per fix it replaced, and `fixes` no longer carries the cell: migration
//! sqlite/0005), whose hits are whole minutes, and whose cell is split seven ways by its
//! res-10 children so that a scene reads only the parts of its rim cells that meet its
//! fine disk ([`crate::query::cells`], "SQLite's fine keys"). `fix_segments` holds the
//! res-7 cells of every long segment between consecutive fixes the matcher links
//! ([`Pt::of`]; see [`crate::query::cells`]), written by the fix insert path
//! ([`long_segments`]); on PostgreSQL with the segment's bounding box, which the lookup
//! tests against the scene's box (migration postgres/0009). A scene query
//! ([`Store::scene_audited`]) never reads a device's whole history:
//! 1. *hits*: `(device, ts)` of every fix in a fine cell of the cover with `ts` in the
//!    window widened by `max_gap`, read from the index alone, as intervals
//!    `[ts − gap, ts + gap]` (on SQLite: `[minute start − gap, minute end + gap]`); and `[t0, t1]` of every long segment in a coarse cell that
//!    meets the window;
//! 2. *islands*: per device, intervals merged when they are at most `gap` apart
//!    ([`merge_intervals`]). Between two islands more than `gap` of time is left out, so
//!    two loaded fixes that look consecutive are either truly consecutive or too far apart
//!    to be linked; every segment that can match has an endpoint hit (short) or an index
//!    row (long), so it lies inside one island;
//! 3. *fixes*: every positioned, attributed fix of each island, with its predecessor's
//!    time, of which only what [`SceneBox::keeps`] goes on: fixes near the scene and the
//!    ends of segments that pass near it. PostgreSQL reads only the part of an island
//!    around its hits and asks for a hit's neighbour beyond it when that part holds none
//!    ([`Island`], [`IslandEdges`]): the same fixes the matcher needs, fewer rows. Both
//!    stores read the hits, then the islands' fixes, and compute the islands, the
//!    predecessors and the box here ([`merge_intervals`], [`islands`],
//!    [`island_rows_near`]): window functions
//!    cost far more than the reads on both (see [`super::sqlite_lawful`] and
//!    [`super::postgres_lawful`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::audit::chain::{AuditDraft, AuditRecord, VerifyReport};
use crate::geodesy::LatLon;
use crate::model::Micros;
use crate::query::at_time::nearest_each_side;
use crate::query::cells::{is_long_segment, segment_cells, HitDisk, SceneCover};
use crate::query::scene::{scene_matches_sparse, SceneBox, SceneMatch, ScenePoint, SceneQuery};
use crate::query::{QFix, QueryConfig};

use super::sqlite_tail::Tail;
use super::{FixRow, Result, Store};

/// Consecutive positioned, attributed fixes (`Pt::of`) of one device at most this far
/// apart get `fix_segments` rows when they are long. One hour is far above any sensible
/// `--max-gap-s` (default 300 s), so the index holds every linked long segment whatever
/// the setting up to it.
pub const SEGMENT_INDEX_MAX_GAP_US: i64 = 3_600 * 1_000_000;

/// Audit entries read per round trip while verifying the chain.
pub(super) const VERIFY_PAGE: i64 = 2_000;

/// Filters of `GET /v1/audit` (all optional), newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: Option<Micros>,
    pub to: Option<Micros>,
    pub actor: Option<i64>,
    pub subject_id: Option<String>,
    /// Only entries with an id below this (the cursor).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// What one retention run deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeCounts {
    pub fixes: u64,
    pub segments: u64,
}

/// A fix's key and position, as the segment indexer reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pt {
    pub device_pk: i64,
    pub ts: Micros,
    pub lat_e7: i32,
    pub lon_e7: i32,
}

impl Pt {
    /// `r` as the segment indexer takes it: only a fix that is positioned and attributed
    /// to a subject. The matcher links the fixes a scene reads, which are those; a
    /// positioned fix without a subject between two of a subject's fixes is not one of
    /// them, so the segment between those two must be indexed as it stands (the store's
    /// statements spell out the same rule as `lat_e7 IS NOT NULL AND subject_pk IS NOT
    /// NULL`).
    pub fn of(r: &FixRow) -> Option<Pt> {
        r.subject_pk?;
        Some(Pt {
            device_pk: r.device_pk,
            ts: r.ts,
            lat_e7: r.lat_e7?,
            lon_e7: r.lon_e7?,
        })
    }
}

/// One `fix_segments` row, with the segment's bounding box (degrees × 10^7; stored on
/// PostgreSQL, migration postgres/0009).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SegRow {
    pub cell: i64,
    pub t0: Micros,
    pub t1: Micros,
    pub device_pk: i64,
    pub lat_lo: i32,
    pub lat_hi: i32,
    pub lon_lo: i32,
    pub lon_hi: i32,
}

fn latlon(lat_e7: i32, lon_e7: i32) -> LatLon {
    LatLon::new(f64::from(lat_e7) / 1e7, f64::from(lon_e7) / 1e7)
}

/// Per device of the batch: the time range of its stored, newly inserted fixes that the
/// indexer takes ([`Pt::of`]); it reads the stored neighbours just outside it.
pub(super) fn batch_ranges(rows: &[FixRow], stored: &[bool]) -> Vec<(i64, Micros, Micros)> {
    let mut by_device: BTreeMap<i64, (Micros, Micros)> = BTreeMap::new();
    for (r, _) in rows
        .iter()
        .zip(stored)
        .filter(|(r, s)| **s && Pt::of(r).is_some())
    {
        by_device
            .entry(r.device_pk)
            .and_modify(|(lo, hi)| {
                *lo = (*lo).min(r.ts);
                *hi = (*hi).max(r.ts);
            })
            .or_insert((r.ts, r.ts));
    }
    by_device
        .into_iter()
        .map(|(d, (lo, hi))| (d, lo, hi))
        .collect()
}

/// The fixes of a group that were stored (`stored[i]` for `rows[i]`), as the segment
/// indexer takes them ([`Pt::of`]).
pub(super) fn new_points(rows: &[FixRow], stored: &[bool]) -> Vec<Pt> {
    rows.iter()
        .zip(stored)
        .filter(|(_, s)| **s)
        .filter_map(|(r, _)| Pt::of(r))
        .collect()
}

/// The coarse rows of the long segments that the new fixes form with their neighbours.
/// `pts` are, per device, the stored fixes [`Pt::of`] takes from the one before the batch's
/// range to the one after it (new fixes included); `new` are the keys inserted now. Only
/// pairs with a new fix are indexed (the others were when their later fix arrived).
pub(super) fn long_segments(mut pts: Vec<Pt>, new: &HashSet<(i64, i64)>) -> Vec<SegRow> {
    pts.sort_by_key(|p| (p.device_pk, p.ts));
    pts.dedup_by_key(|p| (p.device_pk, p.ts));
    let mut out = Vec::new();
    for w in pts.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.device_pk != b.device_pk
            || b.ts - a.ts > SEGMENT_INDEX_MAX_GAP_US
            || !(new.contains(&(a.device_pk, a.ts)) || new.contains(&(b.device_pk, b.ts)))
        {
            continue;
        }
        let (pa, pb) = (latlon(a.lat_e7, a.lon_e7), latlon(b.lat_e7, b.lon_e7));
        if !is_long_segment(pa, pb) {
            continue;
        }
        match segment_cells(pa, pb) {
            Ok(cells) => out.extend(cells.into_iter().map(|cell| SegRow {
                cell,
                t0: a.ts,
                t1: b.ts,
                device_pk: a.device_pk,
                lat_lo: a.lat_e7.min(b.lat_e7),
                lat_hi: a.lat_e7.max(b.lat_e7),
                lon_lo: a.lon_e7.min(b.lon_e7),
                lon_hi: a.lon_e7.max(b.lon_e7),
            })),
            // a jump of over 1,000 km is a position glitch, not a journey
            Err(e) => tracing::debug!(device_pk = a.device_pk, error = %e, "segment not indexed"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Per-device time intervals to load for a scene query: `[ts − gap, ts + gap]` around
/// every fine-cell hit and each of `ranges` as it is (`[t0, t1]` of a long segment; on
/// SQLite also a fine-cell minute widened by `gap`), merged when they are at most `gap`
/// apart. Inside an interval every fix of the device is loaded; between two intervals
/// more than `gap` of time is left out, so two loaded fixes that look consecutive are
/// either truly consecutive or too far apart to be linked. Every segment that can match
/// has an endpoint hit (short) or an index row (long), so it lies inside one interval.
/// (The [`islands`] of PostgreSQL's lookup with the whole `gap` read around each hit.)
pub(super) fn merge_intervals(
    hits: &[(i64, Micros)],
    ranges: &[(i64, Micros, Micros)],
    gap_us: i64,
) -> Vec<(i64, Micros, Micros)> {
    islands(hits, ranges, gap_us, gap_us)
        .into_iter()
        .map(|i| (i.device_pk, i.read.0, i.read.1))
        .collect()
}

/// One island of a scene lookup: `reach` is the interval of [`merge_intervals`], within
/// which every fix that can matter lies; `read` the part of it to load whole, which
/// reaches only `edge` before the first hit and after the last (it holds every long
/// segment's ends, and the hits, and all between them). A hit's neighbour beyond `read`
/// is asked for separately ([`IslandEdges`]), only when `read` holds none: at the usual
/// cadence the fixes a minute on either side of the hits are all a scene needs from an
/// island, not the `gap`'s worth (five minutes by default) that used to be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Island {
    pub device_pk: i64,
    pub reach: (Micros, Micros),
    pub read: (Micros, Micros),
    /// The island's first and last hit, when it has any.
    pub hits: Option<(Micros, Micros)>,
}

/// The islands of `hits` and `ranges` (see [`merge_intervals`] and [`Island`]), `edge_us`
/// at most `gap_us`.
pub(super) fn islands(
    hits: &[(i64, Micros)],
    ranges: &[(i64, Micros, Micros)],
    gap_us: i64,
    edge_us: i64,
) -> Vec<Island> {
    let edge_us = edge_us.min(gap_us);
    let around = |t: Micros, by: i64| (t.saturating_sub(by), t.saturating_add(by));
    let mut raw: Vec<Island> = hits
        .iter()
        .map(|&(device_pk, ts)| Island {
            device_pk,
            reach: around(ts, gap_us),
            read: around(ts, edge_us),
            hits: Some((ts, ts)),
        })
        .chain(ranges.iter().map(|&(device_pk, t0, t1)| Island {
            device_pk,
            reach: (t0, t1),
            read: (t0, t1),
            hits: None,
        }))
        .collect();
    raw.sort_unstable_by_key(|i| (i.device_pk, i.reach));
    let mut out: Vec<Island> = Vec::with_capacity(raw.len().min(1024));
    for i in raw {
        match out.last_mut() {
            Some(last)
                if last.device_pk == i.device_pk
                    && i.reach.0 <= last.reach.1.saturating_add(gap_us) =>
            {
                last.reach.1 = last.reach.1.max(i.reach.1);
                last.read = (last.read.0.min(i.read.0), last.read.1.max(i.read.1));
                last.hits = match (last.hits, i.hits) {
                    (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
                    (a, b) => a.or(b),
                };
            }
            _ => out.push(i),
        }
    }
    out
}

/// The neighbours [`islands`]' reads may have left out: per island with hits, the fix
/// before its first hit when the read holds none before it and stops short of `gap`, and
/// likewise after its last hit. Each is an interval of `(device, from, to)` (inclusive) of
/// which the store loads the latest fix (`before`) or the earliest (`after`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct IslandEdges {
    pub before: Vec<(i64, Micros, Micros)>,
    pub after: Vec<(i64, Micros, Micros)>,
}

impl IslandEdges {
    /// `loaded`: the `(device, ts)` of the fixes the islands' reads loaded, sorted.
    pub(super) fn of(islands: &[Island], loaded: &[(i64, Micros)], gap_us: i64) -> IslandEdges {
        let any_in = |d: i64, from: Micros, to: Micros| {
            let i = loaded.partition_point(|&k| k < (d, from));
            loaded.get(i).is_some_and(|&k| k <= (d, to))
        };
        let mut edges = IslandEdges::default();
        for i in islands {
            let Some((first, last)) = i.hits else {
                continue;
            };
            let d = i.device_pk;
            let (from, to) = (first.saturating_sub(gap_us), last.saturating_add(gap_us));
            // (`read.0 > from` and `read.1 < to`: their ± 1 cannot overflow; the hits
            // ± 1 saturate for a fix stored at the end of time by a library caller)
            if i.read.0 > from && !any_in(d, i.read.0, first.saturating_sub(1)) {
                edges.before.push((d, from, i.read.0 - 1));
            }
            if i.read.1 < to && !any_in(d, last.saturating_add(1), i.read.1) {
                edges.after.push((d, i.read.1 + 1, to));
            }
        }
        edges
    }

    pub(super) fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }
}

/// What both stores hand the matcher from the fixes of the loaded islands (in any order, a
/// key possibly twice — tail and table on SQLite): sorted by device, then time, each key
/// once, predecessors chained ([`chain_predecessors`]), kept when near the scene
/// ([`keep_in_box`]).
pub(super) fn island_rows_near(mut rows: Vec<SceneRow>, bx: &SceneBox) -> Vec<SceneRow> {
    rows.sort_unstable_by_key(|r| (r.device_pk, r.ts));
    rows.dedup_by_key(|r| (r.device_pk, r.ts));
    chain_predecessors(&mut rows);
    keep_in_box(&rows, bx)
}

/// Gives each fix of `rows` (sorted by device, then time) its predecessor's time: the
/// previous row of the same device. Right for rows loaded as whole intervals of
/// [`merge_intervals`]: between intervals more than `gap` passes, so a wrong predecessor
/// across two of them is never linked.
fn chain_predecessors(rows: &mut [SceneRow]) {
    let mut prev: Option<(i64, Micros)> = None;
    for r in rows.iter_mut() {
        r.prev_ts = prev.filter(|p| p.0 == r.device_pk).map(|p| p.1);
        prev = Some((r.device_pk, r.ts));
    }
}

/// The rows of `rows` (sorted by device, then time, predecessors chained) that
/// [`SceneBox::keeps`], judged with each row's neighbours on its device's loaded track (both
/// stores).
fn keep_in_box(rows: &[SceneRow], bx: &SceneBox) -> Vec<SceneRow> {
    let pos = |r: &SceneRow| (r.lat_e7, r.lon_e7);
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let neighbour = |j: Option<usize>| {
            j.and_then(|j| rows.get(j))
                .filter(|n| n.device_pk == r.device_pk)
                .map(pos)
        };
        if bx.keeps(
            neighbour(i.checked_sub(1)),
            pos(r),
            neighbour(i.checked_add(1)),
        ) {
            out.push(*r);
        }
    }
    out
}

/// The bound values of one scene statement (see the module doc).
pub(super) struct SceneLookup<'a> {
    pub fine: &'a [i64],
    pub coarse: &'a [i64],
    /// `from − gap`, `to + gap`: the range of hit times.
    pub lo: Micros,
    pub hi: Micros,
    pub from: Micros,
    pub to: Micros,
    pub gap_us: i64,
    pub bx: SceneBox,
    /// Where the fine hits can lie (PostgreSQL tests it in its index; SQLite's holds no
    /// positions).
    pub hits: HitDisk,
}

impl<'a> SceneLookup<'a> {
    pub(super) fn new(cover: &'a SceneCover, scene: &SceneQuery, cfg: &QueryConfig) -> Self {
        let gap_us = cfg.max_gap_us();
        SceneLookup {
            fine: &cover.fine,
            coarse: &cover.coarse,
            lo: scene.from_us.saturating_sub(gap_us),
            hi: scene.to_us.saturating_add(gap_us),
            from: scene.from_us,
            to: scene.to_us,
            gap_us,
            bx: SceneBox::around(scene),
            hits: HitDisk::around(scene.center, scene.radius_m),
        }
    }
}

/// What a crime-scene lookup found, as [`Store::scene_audited`] hands it over: the
/// matches and the external ids of their devices and subjects.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneFound {
    pub matches: Vec<SceneMatch>,
    pub devices: HashMap<i64, String>,
    pub subjects: HashMap<i64, String>,
}

/// The matches of a scene lookup's rows: the positioned, attributed fixes that can decide
/// it, each with its predecessor's time (see the module doc), go to
/// [`scene_matches_sparse`], which gives the answer of the whole tracks.
pub(super) fn matches_of(
    rows: Vec<SceneRow>,
    scene: &SceneQuery,
    cfg: &QueryConfig,
) -> Vec<SceneMatch> {
    let points: Vec<ScenePoint> = rows.into_iter().map(SceneRow::point).collect();
    scene_matches_sparse(&points, scene, cfg)
}

/// The device and the subject keys of `matches`, each sorted and once.
pub(super) fn keys_of(matches: &[SceneMatch]) -> (Vec<i64>, Vec<i64>) {
    let devices: BTreeSet<i64> = matches.iter().map(|m| m.device).collect();
    let subjects: BTreeSet<i64> = matches.iter().map(|m| m.subject).collect();
    (
        devices.into_iter().collect(),
        subjects.into_iter().collect(),
    )
}

/// One row of a scene statement.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub(super) struct SceneRow {
    pub device_pk: i64,
    pub ts: Micros,
    pub subject_pk: i64,
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub accuracy_m: Option<f32>,
    pub prev_ts: Option<Micros>,
}

impl SceneRow {
    /// A positioned, attributed fix as a scene row (predecessor not yet chained).
    pub(super) fn from_fix(r: &FixRow) -> Option<SceneRow> {
        Some(SceneRow {
            device_pk: r.device_pk,
            ts: r.ts,
            subject_pk: r.subject_pk?,
            lat_e7: r.lat_e7?,
            lon_e7: r.lon_e7?,
            accuracy_m: r.accuracy_m,
            prev_ts: None,
        })
    }

    /// The fix as the query maths takes it.
    pub(super) fn fix(self) -> QFix {
        QFix {
            device: self.device_pk,
            subject: self.subject_pk,
            ts_us: self.ts,
            pos: LatLon::new(f64::from(self.lat_e7) / 1e7, f64::from(self.lon_e7) / 1e7),
            accuracy_m: self.accuracy_m.map_or(0.0, f64::from),
        }
    }

    fn point(self) -> ScenePoint {
        ScenePoint {
            fix: self.fix(),
            prev_ts_us: self.prev_ts,
        }
    }
}

/// What [`LawfulTx::at_time`] reads.
#[derive(Debug, Clone, PartialEq)]
pub struct AtTimeRead {
    pub subject_pk: i64,
    /// The subject's fixes that decide the answer (per device, the nearest on each side of
    /// the instant), as the maths takes them, by device and time.
    pub fixes: Vec<QFix>,
    /// External ids of the devices of `fixes`.
    pub devices: HashMap<i64, String>,
}

/// A store's location-at-time read at `at` as [`LawfulTx::at_time`] gives it: per device,
/// the nearest fix on each side ([`nearest_each_side`]; SQLite's tail and table each offer
/// theirs), ordered by device and time.
pub(super) fn settled(mut r: AtTimeRead, at: Micros) -> AtTimeRead {
    nearest_each_side(&mut r.fixes, at, |f| (f.device, f.ts_us));
    r
}

/// An audited read in progress: reads and the audit append share one transaction. Drop it
/// without [`LawfulTx::commit`] and nothing is written.
pub enum LawfulTx {
    /// With the ingest log's tail, which SQLite's reads of fixes merge (see
    /// `store::sqlite_tail`), and the store's write gate, held until the transaction ends.
    Sqlite(
        sqlx::Transaction<'static, sqlx::Sqlite>,
        Arc<Tail>,
        tokio::sync::OwnedMutexGuard<()>,
    ),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

macro_rules! tx_dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            LawfulTx::Sqlite(tx, ..) => super::sqlite_lawful::$f(&mut **tx, $($arg),*).await,
            LawfulTx::Postgres(tx) => super::postgres_lawful::$f(&mut **tx, $($arg),*).await,
        }
    };
}

impl LawfulTx {
    /// What location-at-time reads for subject `subject_id` (`None`: no such subject): its
    /// store key; of its positioned fixes attributed to it, per device it has worn, the
    /// latest at or before `at` and the earliest after it (what decides the answer: see
    /// [`crate::query::at_time`]), ordered by device and time; and those devices' external
    /// ids. On PostgreSQL this is one statement; on SQLite one pass on the connection's
    /// handle.
    pub async fn at_time(&mut self, subject_id: &str, at: Micros) -> Result<Option<AtTimeRead>> {
        let read = match self {
            LawfulTx::Sqlite(tx, tail, _) => {
                super::sqlite_lawful::at_time(tx, tail, subject_id, at).await?
            }
            LawfulTx::Postgres(tx) => super::postgres_lawful::at_time(tx, subject_id, at).await?,
        };
        Ok(read.map(|r| settled(r, at)))
    }

    /// One page of a subject's trail in `[from, to]`, oldest first, after the cursor
    /// `(ts, device_pk)`; every fix attributed to the subject (positioned or not).
    pub async fn trail_page(
        &mut self,
        subject_pk: i64,
        from: Micros,
        to: Micros,
        after: Option<(Micros, i64)>,
        limit: i64,
    ) -> Result<Vec<FixRow>> {
        match self {
            LawfulTx::Sqlite(tx, tail, _) => {
                super::sqlite_lawful::trail_page(tx, tail, subject_pk, from, to, after, limit).await
            }
            LawfulTx::Postgres(tx) => {
                super::postgres_lawful::trail_page(tx, subject_pk, from, to, after, limit).await
            }
        }
    }

    /// External ids of devices by store key.
    pub async fn device_ids(&mut self, pks: &[i64]) -> Result<HashMap<i64, String>> {
        if pks.is_empty() {
            return Ok(HashMap::new());
        }
        tx_dispatch!(self, device_ids(pks))
    }

    /// External ids of subjects by store key.
    pub async fn subject_ids(&mut self, pks: &[i64]) -> Result<HashMap<i64, String>> {
        if pks.is_empty() {
            return Ok(HashMap::new());
        }
        tx_dispatch!(self, subject_ids(pks))
    }

    /// Seals `draft` onto the chain (its `id` is replaced by the head's + 1) and inserts it.
    pub async fn append_audit(&mut self, draft: AuditDraft) -> Result<AuditRecord> {
        tx_dispatch!(self, append_audit(draft))
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            LawfulTx::Sqlite(tx, ..) => tx.commit().await?,
            LawfulTx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

impl Store {
    /// Starts an audited read (see the module doc).
    pub async fn begin_lawful(&self) -> Result<LawfulTx> {
        Ok(match self {
            Store::Sqlite(s) => {
                let gate = s.write_gate().await?;
                LawfulTx::Sqlite(
                    s.pool().begin_with("BEGIN IMMEDIATE").await?,
                    s.tail.clone(),
                    gate,
                )
            }
            Store::Postgres(s) => LawfulTx::Postgres(s.pool().begin().await?),
        })
    }

    /// Appends one audit entry in its own transaction: the entry point for accesses audited
    /// on their own (an alert read with its evidence, the retention purge; alert and zone
    /// changes append inside their own [`LawfulTx`]). `draft.id` is ignored: the entry gets
    /// the head's id + 1.
    pub async fn append_audit(&self, draft: AuditDraft) -> Result<AuditRecord> {
        if let Store::Sqlite(s) = self {
            return super::sqlite_lawful::append_audit_alone(s, draft).await;
        }
        let mut tx = self.begin_lawful().await?;
        let rec = tx.append_audit(draft).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// A crime-scene query as one audited read: the tracks that came within `scene`'s radius
    /// during its window (SPEC §4), read through the index (`cover` =
    /// [`scene_cover`](crate::query::cells::scene_cover) of the scene, see the module doc)
    /// and matched exactly in code (`matches_of`), with the external ids of the matches'
    /// devices and subjects, and the audit entry `entry` makes of it (with anything else
    /// `entry` works out, returned beside it); nothing is returned unless the entry is
    /// committed. On SQLite it is one transaction in one pass on a connection's handle, as
    /// for [`Store::at_time_audited`]. On PostgreSQL it is statements on one connection,
    /// each its own transaction, as location-at-time's two are: the reads of
    /// `postgres_lawful::scene_rows` (hits, islands, and the islands' edges when needed),
    /// the external ids the store does not remember yet (`postgres_ids`), then the append,
    /// which commits as it returns. `BEGIN … COMMIT` around them added
    /// two round trips and nothing else: at the store's READ COMMITTED each statement reads
    /// its own snapshot inside a transaction too (see DECISIONS.md, "PostgreSQL's audited
    /// reads are statements, not one transaction").
    pub async fn scene_audited<T>(
        &self,
        cover: &SceneCover,
        scene: &SceneQuery,
        cfg: &QueryConfig,
        entry: impl FnOnce(SceneFound) -> (AuditDraft, T),
    ) -> Result<(T, AuditRecord)> {
        let q = SceneLookup::new(cover, scene, cfg);
        let s = match self {
            Store::Sqlite(s) => {
                return super::sqlite_lawful::scene_audited(s, &q, scene, cfg, entry).await
            }
            Store::Postgres(s) => s,
        };
        let mut conn = s.pool().acquire().await?;
        let rows = super::postgres_lawful::scene_rows(&mut conn, &q).await?;
        let matches = matches_of(rows, scene, cfg);
        let (device_pks, subject_pks) = keys_of(&matches);
        let (devices, subjects) = if matches.is_empty() {
            (HashMap::new(), HashMap::new())
        } else {
            super::postgres_lawful::external_ids(&mut conn, s.ids(), &device_pks, &subject_pks)
                .await?
        };
        let (draft, t) = entry(SceneFound {
            matches,
            devices,
            subjects,
        });
        let rec = super::postgres_lawful::append_audit(&mut conn, draft).await?;
        Ok((t, rec))
    }

    /// Location-at-time as one audited read: what [`LawfulTx::at_time`] reads for
    /// `subject_id`, and the audit entry `entry` makes of it (with anything else `entry`
    /// works out, returned beside it); nothing is returned unless the entry is committed.
    /// On SQLite it is one transaction in one pass on a connection's handle,
    /// `BEGIN IMMEDIATE` to `COMMIT` (sqlx's worker thread was a hop for each of begin,
    /// read, append and commit). On PostgreSQL it is two statements on one connection, each
    /// its own transaction: the read, then the append, which commits as it returns — two
    /// round trips where `BEGIN … COMMIT` around them took four, and nothing a transaction
    /// would add: at the store's READ COMMITTED each statement of a transaction reads its
    /// own snapshot anyway, and a read leaves nothing to roll back (see DECISIONS.md,
    /// "PostgreSQL's audited reads are statements, not one transaction").
    pub async fn at_time_audited<T>(
        &self,
        subject_id: &str,
        at: Micros,
        entry: impl FnOnce(Option<&AtTimeRead>) -> (AuditDraft, T),
    ) -> Result<(Option<AtTimeRead>, T, AuditRecord)> {
        let s = match self {
            Store::Sqlite(s) => {
                return super::sqlite_lawful::at_time_audited(s, subject_id, at, entry).await
            }
            Store::Postgres(s) => s,
        };
        let mut conn = s.pool().acquire().await?;
        let read = super::postgres_lawful::at_time(&mut conn, subject_id, at)
            .await?
            .map(|r| settled(r, at));
        let (draft, t) = entry(read.as_ref());
        let rec = super::postgres_lawful::append_audit(&mut conn, draft).await?;
        Ok((read, t, rec))
    }

    /// Audit entries matching `filter`, newest first.
    pub async fn audit_page(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        match self {
            Store::Sqlite(s) => s.audit_page(filter).await,
            Store::Postgres(s) => s.audit_page(filter).await,
        }
    }

    /// Walks the whole chain in id order, a page at a time.
    pub async fn verify_audit(&self) -> Result<VerifyReport> {
        match self {
            Store::Sqlite(s) => s.verify_audit().await,
            Store::Postgres(s) => s.verify_audit().await,
        }
    }

    /// Deletes fixes with `ts < cutoff` and the segment rows that end before it, device by
    /// device in short transactions (ingest is not held up by one long delete).
    pub async fn purge_fixes_before(&self, cutoff: Micros) -> Result<PurgeCounts> {
        match self {
            Store::Sqlite(s) => s.purge_fixes_before(cutoff).await,
            Store::Postgres(s) => s.purge_fixes_before(cutoff).await,
        }
    }
}

/// Decodes the stored JSON text of an audit column. Text that is not JSON (a tampered row)
/// is kept as a string, so verification reports a hash mismatch rather than failing.
pub(super) fn stored_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// Decodes the stored `subject_ids` column (see [`stored_json`]).
pub(super) fn stored_subject_ids(text: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(text) {
        Ok(v) => v,
        Err(_) => vec![text.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn hits_close_in_time_merge_and_far_ones_do_not() {
        let gap = 5 * MIN;
        let iv = merge_intervals(&[(1, 0), (1, 8 * MIN), (1, 30 * MIN), (2, 0)], &[], gap);
        assert_eq!(
            iv,
            vec![
                (1, -5 * MIN, 13 * MIN),
                (1, 25 * MIN, 35 * MIN),
                (2, -5 * MIN, 5 * MIN)
            ]
        );
    }

    #[test]
    fn islands_merge_as_intervals_do_and_read_only_the_edge_around_their_hits() {
        let gap = 5 * MIN;
        let got = islands(
            &[(1, 0), (1, 8 * MIN), (1, 30 * MIN)],
            &[(1, 40 * MIN, 50 * MIN), (2, 0, 20 * MIN)],
            gap,
            2 * MIN,
        );
        let island = |device_pk, reach, read, hits| Island {
            device_pk,
            reach,
            read,
            hits,
        };
        assert_eq!(
            got,
            vec![
                island(
                    1,
                    (-5 * MIN, 13 * MIN),
                    (-2 * MIN, 10 * MIN),
                    Some((0, 8 * MIN))
                ),
                // a hit and a segment 5 minutes apart: one island, read from one to the other
                island(
                    1,
                    (25 * MIN, 50 * MIN),
                    (28 * MIN, 50 * MIN),
                    Some((30 * MIN, 30 * MIN))
                ),
                island(2, (0, 20 * MIN), (0, 20 * MIN), None),
            ]
        );
        // with the edge at the gap, an island's read is its reach: the intervals
        let whole = islands(&[(1, 0), (1, 8 * MIN)], &[], gap, gap);
        assert_eq!(whole[0].read, whole[0].reach);
    }

    #[test]
    fn an_islands_edges_are_asked_for_only_when_its_read_holds_no_neighbour() {
        let gap = 5 * MIN;
        let isl = islands(&[(1, 0), (1, 8 * MIN), (2, 0)], &[], gap, 2 * MIN);
        // device 1: a fix a minute before its first hit, none after its last; device 2:
        // none either side of its hit
        let loaded = [(1, -MIN), (1, 0), (1, 8 * MIN), (2, 0)];
        let edges = IslandEdges::of(&isl, &loaded, gap);
        assert_eq!(
            edges,
            IslandEdges {
                before: vec![(2, -5 * MIN, -2 * MIN - 1)],
                after: vec![(1, 10 * MIN + 1, 13 * MIN), (2, 2 * MIN + 1, 5 * MIN)],
            }
        );
        // read to the gap: nothing beyond it can be linked
        let isl = islands(&[(1, 0)], &[], gap, gap);
        assert!(IslandEdges::of(&isl, &[(1, 0)], gap).is_empty());
    }

    #[test]
    fn a_gap_of_exactly_max_gap_between_intervals_is_merged() {
        let gap = 5 * MIN;
        // [−5, 5] and [10, 20]: 5 minutes apart, so a fix at 5 and one at 10 could be
        // linked; they must be in one interval.
        let iv = merge_intervals(&[(1, 0), (1, 15 * MIN)], &[], gap);
        assert_eq!(iv, vec![(1, -5 * MIN, 20 * MIN)]);
    }

    #[test]
    fn the_box_keeps_fixes_inside_it_and_both_ends_of_segments_that_cross_it() {
        let bx = SceneBox {
            lat_lo: 0,
            lat_hi: 10,
            lon_lo: 0,
            lon_hi: 10,
        };
        let row = |device_pk: i64, ts: i64, lat_e7: i32, lon_e7: i32| SceneRow {
            device_pk,
            ts,
            subject_pk: 1,
            lat_e7,
            lon_e7,
            accuracy_m: None,
            prev_ts: None,
        };
        let mut rows = vec![
            row(1, 0, 100, 100),  // far, and so is its successor: dropped
            row(1, 1, 100, -5),   // its segment to the next crosses the box: kept
            row(1, 2, -100, 5),   // the other end of that segment: kept
            row(1, 3, 5, 5),      // inside: kept
            row(1, 4, 5, 100),    // segment from the fix inside: kept
            row(2, 0, 5, -100),   // would cross the box from device 1's last fix: dropped
            row(2, 1, 200, -200), // far: dropped
        ];
        chain_predecessors(&mut rows);
        let kept: Vec<(i64, i64)> = keep_in_box(&rows, &bx)
            .iter()
            .map(|r| (r.device_pk, r.ts))
            .collect();
        assert_eq!(kept, vec![(1, 1), (1, 2), (1, 3), (1, 4)]);
        // predecessors are those of the whole loaded track, not of the kept subset
        assert_eq!(keep_in_box(&rows, &bx)[0].prev_ts, Some(0));
    }

    #[test]
    fn only_long_pairs_with_a_new_fix_are_indexed() {
        let p = |ts: i64, lat: f64| Pt {
            device_pk: 1,
            ts,
            lat_e7: (lat * 1e7) as i32,
            lon_e7: -1_000_000,
        };
        // 0 → 60 s: ~1.1 km (long, new); 60 → 120 s: ~11 m (short); 120 → 2 h: too far apart
        let pts = vec![
            p(0, 51.50),
            p(60 * 1_000_000, 51.51),
            p(120 * 1_000_000, 51.5101),
            p(7_200 * 1_000_000, 51.60),
        ];
        let new: HashSet<(i64, i64)> = [(1, 60 * 1_000_000), (1, 7_200 * 1_000_000)].into();
        let segs = long_segments(pts, &new);
        assert!(!segs.is_empty());
        assert!(segs
            .iter()
            .all(|s| s.t0 == 0 && s.t1 == 60 * 1_000_000 && s.device_pk == 1));
    }
}
