//! SQLite's ingest log and its in-memory tail: how the embedded store acknowledges fixes
//! without paying for `fixes`' clustering on every commit.
//!
//! Why: `fixes` is clustered by `(device, ts)` and indexed by `(cell, ts)`, so a group
//! commit of fixes from thousands of devices touches a leaf page per device in each B-tree,
//! and SQLite's WAL logs whole pages. At the group sizes a 20,000 fixes/s load makes
//! (hundreds of fixes, most from different devices) each fix cost two 4 KiB pages of WAL,
//! and commits grew with the load (docs/BENCHMARKS.md). So an acknowledged fix is first
//! appended to `fix_log`, one row per group (the group's fixes in one [`postcard`] blob:
//! sequential pages, tens of bytes per fix), and kept in memory here. Compaction
//! ([`Tail::next_chunk`], run by the ingest writer between groups) moves the tail into
//! `fixes` in chunks sorted by `(device, ts)`, many fixes per device at once, so each page
//! written carries many fixes; the chunk that finishes an epoch deletes the log rows the
//! epoch covered, in the same transaction.
//!
//! Reads see both: every SQLite read of fixes takes the tail's rows first, then the
//! table's, and drops a key seen twice. Taken in that order nothing is missed: a compaction
//! step commits its rows to the table before it removes them from the tail.
//!
//! Invariants:
//! - a key is in the tail at most once, and only after its log row committed;
//! - only the holder of the store's write gate (see [`super::SqliteStore`]) writes the
//!   log or `fixes`, or adds to or removes from the tail;
//! - `stored_max` only ever over-states the newest stored `ts` of a device (compaction
//!   raises it, a purge leaves it): it decides which keys are looked up in the table
//!   before an insert, and over-stating only adds look-ups.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::lawful::Pt;
use super::FixRow;
use crate::model::Micros;
use crate::query::QFix;

/// The tail is compacted once it holds `compact_rows` fixes ([`super::StoreOptions`]) or
/// once its oldest fix has waited this long.
pub(super) const COMPACT_AGE: Duration = Duration::from_secs(30);
/// Fixes per compaction transaction while compaction keeps up: a chunk's commit holds up the
/// next group's, so it is kept to a few milliseconds; per-device locality comes from the
/// tail's size, not this. While the tail is over its limit a transaction moves a whole
/// group's worth instead (see `SqliteStore::compact_step`).
pub(super) const CHUNK_ROWS: usize = 2_048;

/// First byte of a `fix_log` blob: the encoding's version.
const LOG_FORMAT: u8 = 1;

/// Encodes a group's fixes as one `fix_log` body.
pub(super) fn encode(rows: &[&FixRow]) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![LOG_FORMAT];
    out.extend(postcard::to_allocvec(rows)?);
    Ok(out)
}

/// Decodes a `fix_log` body.
pub(super) fn decode(body: &[u8]) -> Result<Vec<FixRow>, String> {
    match body.split_first() {
        Some((&LOG_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown fix_log format {v}")),
        None => Err("empty fix_log body".to_owned()),
    }
}

/// One step of compaction: rows to move into `fixes` (sorted by key), and, when it is the
/// epoch's last, the log rows to delete with them.
#[derive(Debug)]
pub(super) struct Chunk {
    pub rows: Vec<FixRow>,
    /// `Some(seq)`: delete `fix_log` rows with `seq <= seq` in the same transaction.
    pub delete_log_upto: Option<i64>,
}

/// Fixes acknowledged but not yet compacted into `fixes`, by key.
#[derive(Debug)]
pub struct Tail {
    state: Mutex<State>,
    compact_rows: usize,
}

impl Default for Tail {
    fn default() -> Self {
        Tail::new(super::DEFAULT_COMPACT_ROWS)
    }
}

#[derive(Debug, Default)]
struct State {
    /// key → (log seq, row); rows are added only through [`State::insert`], which
    /// also notes them in `cells`
    rows: BTreeMap<(i64, Micros), (i64, FixRow)>,
    /// `(cell, ts, device)` of the rows added with a cell (in the order added, key order
    /// after a rebuild): what a crime scene scans for its hits instead of the rows
    /// themselves (24 bytes an entry, read in order, against ~150 scattered bytes a row:
    /// under sustained ingest the tail holds `compact_rows` fixes, under the lock ingest
    /// appends through). Entries of rows that have since left the tail are skipped on
    /// reading (the row is looked up) and dropped when the array is rebuilt
    /// ([`State::reindex_if_stale`]). Appending is one push: an ordered index (tried: a
    /// `BTreeSet`) cost ingest 8–12 % at saturation.
    cells: Vec<(i64, Micros, i64)>,
    /// When the oldest fix now in the tail arrived (approximately: when the tail last
    /// became non-empty, or when the last epoch ended).
    since: Option<Instant>,
    /// Per device, the newest `ts` that may be in `fixes` (`i64::MIN`: none).
    stored_max: HashMap<i64, Micros>,
    /// Per device, when known exactly, the newest fix in `fixes` the segment indexer takes
    /// ([`Pt::of`]: positioned and attributed; `None`: it has none): the indexer's
    /// neighbour before a group newer than everything stored, without a read.
    stored_last: HashMap<i64, Option<Pt>>,
    epoch: Option<Epoch>,
}

impl State {
    fn insert(&mut self, seq: i64, r: FixRow) {
        let (device_pk, ts, cell) = (r.device_pk, r.ts, r.cell);
        self.rows.insert((device_pk, ts), (seq, r));
        if let Some(c) = cell {
            self.cells.push((c, ts, device_pk));
        }
    }

    /// Rebuilds `cells` from `rows` once stale entries outnumber live rows (plus a floor,
    /// so a small tail is not rebuilt at every step): each rebuild is paid for by as many
    /// removals as it drops, so it costs a constant per fix.
    fn reindex_if_stale(&mut self) {
        if self.cells.len() <= 2 * self.rows.len() + REINDEX_FLOOR {
            return;
        }
        let live = self
            .rows
            .iter()
            .filter_map(|(&(device_pk, ts), (_, r))| r.cell.map(|c| (c, ts, device_pk)));
        self.cells = live.collect();
    }
}

/// The pre-filter of [`Tail::scene_hits`]: a set of cells as 1,024 bits, each cell one bit
/// chosen by a multiplicative hash (a scene's 10–60 cells set few enough that most entries
/// of other cells fail it).
#[derive(Default)]
struct CellFilter([u64; 16]);

impl CellFilter {
    fn bit(cell: i64) -> (usize, u64) {
        let h = (cell as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54;
        ((h >> 6) as usize, 1 << (h & 63))
    }

    fn insert(&mut self, cell: i64) {
        let (w, b) = Self::bit(cell);
        self.0[w] |= b;
    }

    fn may_contain(&self, cell: i64) -> bool {
        let (w, b) = Self::bit(cell);
        self.0[w] & b != 0
    }
}

/// Stale `cells` entries tolerated before a rebuild, beyond twice the live rows.
const REINDEX_FLOOR: usize = 4_096;

/// A compaction in progress: every tail row from log rows up to `upto` is moved, in key
/// order, past `cursor`.
#[derive(Debug)]
struct Epoch {
    upto: i64,
    cursor: Option<(i64, Micros)>,
}

/// What [`Tail::classify`] says of one row of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Already in the tail: a duplicate.
    InTail,
    /// Newer than anything stored for its device: new.
    New,
    /// May be in `fixes`: look it up.
    Check,
}

impl Tail {
    /// An empty tail compacted once it holds `compact_rows` fixes.
    pub(super) fn new(compact_rows: usize) -> Tail {
        Tail {
            state: Mutex::default(),
            compact_rows,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when no fix waits in the tail (reads can skip it).
    pub(super) fn is_empty(&self) -> bool {
        self.lock().rows.is_empty()
    }

    /// Number of fixes in the tail.
    pub(super) fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// Devices of `rows` whose newest stored `ts` is not known yet.
    pub(super) fn unknown_devices(&self, rows: &[FixRow]) -> Vec<i64> {
        let s = self.lock();
        let mut out: Vec<i64> = rows
            .iter()
            .map(|r| r.device_pk)
            .filter(|d| !s.stored_max.contains_key(d))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Records the newest stored `ts` of a device, as read from `fixes`.
    pub(super) fn set_stored_max(&self, device_pk: i64, ts: Option<Micros>) {
        let mut s = self.lock();
        s.stored_max.insert(device_pk, ts.unwrap_or(i64::MIN));
        if ts.is_none() {
            s.stored_last.insert(device_pk, None);
        }
    }

    /// Learns the newest stored fix of a device that the indexer takes from its read of the
    /// table before `lo`, when nothing stored is newer than `lo`.
    pub(super) fn learn_stored_last(&self, device_pk: i64, lo: Micros, read: &[Pt]) {
        let mut s = self.lock();
        if s.stored_max.get(&device_pk).is_some_and(|m| *m < lo) {
            let newest = read
                .iter()
                .filter(|p| p.ts < lo)
                .max_by_key(|p| p.ts)
                .copied();
            s.stored_last.insert(device_pk, newest);
        }
    }

    /// Per row of a group (keys distinct among themselves): in the tail, surely new, or to
    /// be looked up in `fixes`. Devices must be known ([`Tail::unknown_devices`]).
    pub(super) fn classify(&self, rows: &[FixRow]) -> Vec<Seen> {
        let s = self.lock();
        rows.iter()
            .map(|r| {
                if s.rows.contains_key(&(r.device_pk, r.ts)) {
                    Seen::InTail
                } else if s.stored_max.get(&r.device_pk).is_some_and(|m| r.ts > *m) {
                    Seen::New
                } else {
                    Seen::Check
                }
            })
            .collect()
    }

    /// Adds the rows of log row `seq` (just committed).
    pub(super) fn append(&self, seq: i64, rows: Vec<FixRow>) {
        let mut s = self.lock();
        if s.rows.is_empty() && !rows.is_empty() {
            s.since = Some(Instant::now());
        }
        for r in rows {
            s.insert(seq, r);
        }
    }

    /// Every row of `device` with `ts` in `[from, to]`, oldest first.
    pub(super) fn range(&self, device_pk: i64, from: Micros, to: Micros) -> Vec<FixRow> {
        if from > to {
            return Vec::new();
        }
        self.lock()
            .rows
            .range((device_pk, from)..=(device_pk, to))
            .map(|(_, (_, r))| r.clone())
            .collect()
    }

    /// The newest row of `device`: `(ts, received_at)`.
    pub(super) fn newest(&self, device_pk: i64) -> Option<(Micros, Micros)> {
        self.lock()
            .rows
            .range((device_pk, i64::MIN)..=(device_pk, i64::MAX))
            .next_back()
            .map(|(_, (_, r))| (r.ts, r.received_at))
    }

    /// Location-at-time's rows from the tail (see `LawfulTx::at_time`): per device, the
    /// latest positioned fix attributed to `subject_pk` at or before `at` and the earliest
    /// after it.
    pub(super) fn at_time(&self, devices: &[i64], subject_pk: i64, at: Micros) -> Vec<QFix> {
        let s = self.lock();
        let mut out = Vec::new();
        let mine = |(_, (_, r)): (_, &(_, FixRow))| r.qfix().filter(|q| q.subject == subject_pk);
        for &d in devices {
            out.extend(s.rows.range((d, i64::MIN)..=(d, at)).rev().find_map(mine));
            if at < i64::MAX {
                out.extend(s.rows.range((d, at + 1)..=(d, i64::MAX)).find_map(mine));
            }
        }
        out
    }

    /// A trail page's rows from the tail: fixes of `devices` attributed to `subject_pk`
    /// with `ts` in `[from, to]` and `(ts, device)` after `after`, at most `limit` of them,
    /// in `(ts, device)` order.
    pub(super) fn trail(
        &self,
        devices: &[i64],
        subject_pk: i64,
        from: Micros,
        to: Micros,
        after: (Micros, i64),
        limit: usize,
    ) -> Vec<FixRow> {
        if from > to {
            return Vec::new();
        }
        let s = self.lock();
        let mut out: Vec<FixRow> = Vec::new();
        for &d in devices {
            out.extend(
                s.rows
                    .range((d, from)..=(d, to))
                    .map(|(_, (_, r))| r)
                    .filter(|r| r.subject_pk == Some(subject_pk) && (r.ts, r.device_pk) > after)
                    .take(limit)
                    .cloned(),
            );
        }
        out.sort_by_key(|r| (r.ts, r.device_pk));
        out.truncate(limit);
        out
    }

    /// Crime-scene hits from the tail: `(device, ts)` of every fix in one of `cells` with
    /// `ts` in `[lo, hi]`, in key order. One pass over the compact `cells` array: a window
    /// test, a bit filter of the wanted cells, then an exact test of those that pass.
    pub(super) fn scene_hits(&self, cells: &[i64], lo: Micros, hi: Micros) -> Vec<(i64, Micros)> {
        if lo > hi || cells.is_empty() {
            return Vec::new();
        }
        let mut wanted = cells.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut filter = CellFilter::default();
        for &c in &wanted {
            filter.insert(c);
        }
        let mut out: Vec<(i64, Micros)> = {
            let s = self.lock();
            s.cells
                .iter()
                .filter(|&&(c, ts, d)| {
                    ts >= lo
                        && ts <= hi
                        && filter.may_contain(c)
                        && wanted.binary_search(&c).is_ok()
                        // still in the tail, and with this cell
                        && s.rows
                            .get(&(d, ts))
                            .is_some_and(|(_, r)| r.cell == Some(c))
                })
                .map(|&(_, ts, d)| (d, ts))
                .collect()
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every row inside one of `intervals` (`(device, from, to)`).
    pub(super) fn in_intervals(&self, intervals: &[(i64, Micros, Micros)]) -> Vec<FixRow> {
        let s = self.lock();
        intervals
            .iter()
            .filter(|(_, a, b)| a <= b)
            .flat_map(|&(d, a, b)| s.rows.range((d, a)..=(d, b)).map(|(_, (_, r))| r.clone()))
            .collect()
    }

    /// The segment indexer's points from the tail for one device of a group whose new
    /// fixes it takes ([`Pt::of`]) span `[lo, hi]`: the tail's such fixes from the one before
    /// `lo` to the one after `hi`. Also says whether the table can hold a nearer
    /// neighbour: not when the tail's fix before `lo` is newer than anything stored.
    pub(super) fn neighbours(&self, device_pk: i64, lo: Micros, hi: Micros) -> (Vec<Pt>, bool) {
        let s = self.lock();
        let pt = Pt::of;
        let before = s
            .rows
            .range((device_pk, i64::MIN)..(device_pk, lo))
            .rev()
            .find_map(|(_, (_, r))| pt(r));
        let after = s
            .rows
            .range((device_pk, hi)..=(device_pk, i64::MAX))
            .filter(|(k, _)| k.1 > hi)
            .find_map(|(_, (_, r))| pt(r));
        let a = before.map_or(lo, |p| p.ts);
        let b = after.map_or(hi, |p| p.ts);
        let mut pts: Vec<Pt> = s
            .rows
            .range((device_pk, a)..=(device_pk, b))
            .filter_map(|(_, (_, r))| pt(r))
            .collect();
        let stored_max = s.stored_max.get(&device_pk).copied().unwrap_or(i64::MAX);
        if before.is_some_and(|p| p.ts > stored_max) {
            return (pts, false);
        }
        match s.stored_last.get(&device_pk) {
            // everything stored is older than the group: its newest positioned fix is the
            // only stored neighbour, and it is known
            Some(last) if stored_max < lo => {
                pts.extend(*last);
                (pts, false)
            }
            _ => (pts, true),
        }
    }

    /// The next compaction step, if one is due: a new epoch starts when the tail holds
    /// `compact_rows` fixes or its oldest has waited [`COMPACT_AGE`].
    pub(super) fn next_chunk(&self, max_rows: usize) -> Option<Chunk> {
        self.chunk(false, max_rows)
    }

    /// The next compaction step while the tail holds anything, due or not.
    pub(super) fn next_chunk_now(&self) -> Option<Chunk> {
        self.chunk(true, CHUNK_ROWS)
    }

    fn chunk(&self, force: bool, max_rows: usize) -> Option<Chunk> {
        let mut s = self.lock();
        if s.epoch.is_none() {
            let due = force
                || s.rows.len() >= self.compact_rows
                || (!s.rows.is_empty() && s.since.is_some_and(|t| t.elapsed() >= COMPACT_AGE));
            if !due {
                return None;
            }
            let upto = s.rows.values().map(|(seq, _)| *seq).max()?;
            s.epoch = Some(Epoch { upto, cursor: None });
        }
        let epoch = s.epoch.as_ref()?;
        let (upto, cursor) = (epoch.upto, epoch.cursor);
        let mut rest = match cursor {
            Some(c) => s
                .rows
                .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)),
            None => s.rows.range(..),
        }
        .filter(|(_, (seq, _))| *seq <= upto);
        let rows: Vec<FixRow> = rest
            .by_ref()
            .take(max_rows.max(1))
            .map(|(_, (_, r))| r.clone())
            .collect();
        let last = rest.next().is_none();
        Some(Chunk {
            rows,
            delete_log_upto: last.then_some(upto),
        })
    }

    /// `chunk` is committed to `fixes`: its rows leave the tail and the epoch moves on.
    pub(super) fn compacted(&self, chunk: &Chunk) {
        let mut s = self.lock();
        for r in &chunk.rows {
            s.rows.remove(&(r.device_pk, r.ts));
            let m = s.stored_max.entry(r.device_pk).or_insert(i64::MIN);
            *m = (*m).max(r.ts);
            if let Some(p) = Pt::of(r) {
                // only a known newest stays known; an unknown one stays unknown
                if let Some(known) = s.stored_last.get_mut(&r.device_pk) {
                    if known.is_none_or(|k| p.ts > k.ts) {
                        *known = Some(p);
                    }
                }
            }
        }
        s.reindex_if_stale();
        if chunk.delete_log_upto.is_some() {
            s.epoch = None;
            s.since = (!s.rows.is_empty()).then(Instant::now);
        } else if let (Some(e), Some(r)) = (s.epoch.as_mut(), chunk.rows.last()) {
            e.cursor = Some((r.device_pk, r.ts));
        }
    }

    /// True when the tail holds more than `compact_rows` fixes: compaction is behind.
    pub(super) fn over_limit(&self) -> bool {
        self.lock().rows.len() > self.compact_rows
    }

    /// True while a compaction epoch is under way (more steps to run).
    pub(super) fn compacting(&self) -> bool {
        self.lock().epoch.is_some()
    }

    /// Drops rows older than `cutoff` (the retention purge); returns how many. Their log
    /// rows go with the epoch that covers them; a crash before then brings them back, for
    /// the next purge.
    pub(super) fn purge_before(&self, cutoff: Micros) -> u64 {
        let mut s = self.lock();
        let before = s.rows.len();
        s.rows.retain(|_, (_, r)| r.ts >= cutoff);
        s.reindex_if_stale();
        // the purge may have deleted a device's newest stored fix
        s.stored_last.clear();
        (before - s.rows.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(device_pk: i64, ts: Micros) -> FixRow {
        FixRow {
            device_pk,
            ts,
            subject_pk: Some(1),
            lat_e7: Some(515_000_000),
            lon_e7: Some(-1_000_000),
            accuracy_m: Some(5.0),
            source: 1,
            speed_mps: None,
            heading_deg: None,
            battery_pct: Some(80.0),
            flags: 0,
            received_at: ts,
            cell: Some(42),
        }
    }

    /// `scene_hits` by brute force over what the tail holds.
    fn hits_by_scan(t: &Tail, cells: &[i64], lo: Micros, hi: Micros) -> Vec<(i64, Micros)> {
        t.lock()
            .rows
            .values()
            .map(|(_, r)| r)
            .filter(|r| r.ts >= lo && r.ts <= hi && r.cell.is_some_and(|c| cells.contains(&c)))
            .map(|r| (r.device_pk, r.ts))
            .collect()
    }

    #[test]
    fn scene_hits_are_the_rows_in_the_cells_and_window_through_appends_compaction_and_purge() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(9);
        let t = Tail::new(1_000);
        let check = |t: &Tail, rng: &mut StdRng| {
            for _ in 0..20 {
                let cells: Vec<i64> = (0..rng.gen_range(0..4))
                    .map(|_| rng.gen_range(0..6))
                    .collect();
                let lo = rng.gen_range(-50..6_050);
                let hi = lo + rng.gen_range(-10..3_000);
                assert_eq!(
                    t.scene_hits(&cells, lo, hi),
                    hits_by_scan(t, &cells, lo, hi)
                );
            }
            // stale entries are dropped: the array stays within a constant of the live rows
            let s = t.lock();
            assert!(
                s.cells.len() <= 2 * s.rows.len() + REINDEX_FLOOR + 100,
                "{}",
                s.cells.len()
            );
        };
        let mut rebuilt = false;
        for seq in 1..=400 {
            let mut seen = std::collections::HashSet::new();
            let rows: Vec<FixRow> = (0..100)
                .map(|_| {
                    let mut r = fix(rng.gen_range(1..50), rng.gen_range(0..6_000));
                    r.cell = (rng.gen_range(0..6) != 0).then(|| rng.gen_range(0..6));
                    r
                })
                // a key is appended once (Tail's invariant)
                .filter(|r| !t.lock().rows.contains_key(&(r.device_pk, r.ts)))
                .filter(|r| seen.insert((r.device_pk, r.ts)))
                .collect();
            t.append(seq, rows);
            // compaction moves part of the tail out (once it holds `compact_rows`)
            let before = t.lock().cells.len();
            if let Some(c) = t.next_chunk(120) {
                t.compacted(&c);
            }
            rebuilt |= t.lock().cells.len() < before;
            check(&t, &mut rng);
        }
        assert!(rebuilt, "compaction never rebuilt the cells array");
        assert!(!t.scene_hits(&[0, 1, 2, 3, 4, 5], 0, 6_000).is_empty());
        assert!(t.purge_before(3_000) > 0);
        check(&t, &mut rng);
        while let Some(c) = t.next_chunk_now() {
            t.compacted(&c);
        }
        check(&t, &mut rng);
        assert!(t
            .scene_hits(&[0, 1, 2, 3, 4, 5], i64::MIN, i64::MAX)
            .is_empty());
    }

    #[test]
    fn log_bodies_round_trip_and_refuse_unknown_formats() {
        let rows = [fix(1, 10), fix(2, 20)];
        let body = encode(&rows.iter().collect::<Vec<_>>()).expect("encode");
        assert_eq!(decode(&body).expect("decode"), rows.to_vec());
        let mut bad = body.clone();
        bad[0] = 9;
        assert!(decode(&bad).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn classification_separates_tail_duplicates_new_and_possibly_stored_rows() {
        let t = Tail::default();
        t.set_stored_max(1, Some(100));
        t.set_stored_max(2, None);
        t.append(1, vec![fix(1, 200)]);
        let seen = t.classify(&[fix(1, 200), fix(1, 300), fix(1, 100), fix(1, 50), fix(2, 5)]);
        assert_eq!(
            seen,
            [Seen::InTail, Seen::New, Seen::Check, Seen::Check, Seen::New]
        );
        assert_eq!(t.unknown_devices(&[fix(3, 1), fix(1, 1), fix(3, 2)]), [3]);
    }

    #[test]
    fn an_epoch_moves_every_row_it_covers_once_in_key_order_then_deletes_its_log() {
        let t = Tail::default();
        let n = crate::store::DEFAULT_COMPACT_ROWS + CHUNK_ROWS / 2;
        // two log rows, interleaved devices
        let rows: Vec<FixRow> = (0..n as i64).map(|i| fix(i % 7, i)).collect();
        let (a, b) = rows.split_at(n / 2);
        t.append(1, a.to_vec());
        t.append(2, b.to_vec());
        let mut moved: Vec<(i64, Micros)> = Vec::new();
        let mut deleted = None;
        while let Some(c) = t.next_chunk(CHUNK_ROWS) {
            assert!(c.rows.len() <= CHUNK_ROWS);
            moved.extend(c.rows.iter().map(|r| (r.device_pk, r.ts)));
            // a row arriving mid-epoch belongs to the next epoch
            t.append(3, vec![fix(99, moved.len() as i64)]);
            t.compacted(&c);
            if let Some(upto) = c.delete_log_upto {
                deleted = Some(upto);
                break;
            }
        }
        assert_eq!(deleted, Some(2));
        let mut want: Vec<(i64, Micros)> = rows.iter().map(|r| (r.device_pk, r.ts)).collect();
        want.sort_unstable();
        assert_eq!(moved, want, "every covered row once, in key order");
        assert!(!t.compacting());
        assert!(!t.is_empty() && t.range(99, 0, i64::MAX).len() == t.len());
        assert!(
            t.next_chunk(CHUNK_ROWS).is_none(),
            "a small fresh tail is not due"
        );
        assert_eq!(
            t.classify(&[fix(3, 3), fix(3, n as i64 + 1)]),
            [Seen::Check, Seen::New],
            "stored max raised by the moved rows"
        );
    }

    #[test]
    fn neighbours_reach_one_positioned_fix_past_each_end() {
        let t = Tail::default();
        let mut unpositioned = fix(1, 15);
        unpositioned.lat_e7 = None;
        t.append(
            1,
            vec![fix(1, 5), fix(1, 10), unpositioned, fix(1, 30), fix(1, 40)],
        );
        t.set_stored_max(1, Some(7));
        let (pts, table_needed) = t.neighbours(1, 20, 25);
        let ts: Vec<Micros> = pts.iter().map(|p| p.ts).collect();
        assert_eq!(ts, [10, 30]);
        assert!(
            !table_needed,
            "the tail's fix before is newer than the table's newest"
        );
        t.set_stored_max(1, Some(12));
        assert!(t.neighbours(1, 20, 25).1);
    }

    #[test]
    fn the_newest_stored_fix_stands_in_for_a_read_once_known() {
        let t = Tail::default();
        let pt = |ts| Pt {
            device_pk: 1,
            ts,
            lat_e7: 1,
            lon_e7: 2,
        };
        t.set_stored_max(1, Some(100));
        assert!(t.neighbours(1, 200, 300).1, "unknown: read the table");
        t.learn_stored_last(1, 200, &[pt(90), pt(100)]);
        let (pts, needed) = t.neighbours(1, 200, 300);
        assert!(!needed);
        assert_eq!(pts.iter().map(|p| p.ts).collect::<Vec<_>>(), [100]);
        assert!(
            t.neighbours(1, 50, 60).1,
            "a late group still reads the table"
        );
        // compaction moves a newer positioned fix: it becomes the stored neighbour
        t.append(1, vec![fix(1, 150)]);
        let c = t.next_chunk_now().expect("chunk");
        t.compacted(&c);
        let (pts, needed) = t.neighbours(1, 200, 300);
        assert!(!needed);
        assert_eq!(pts.iter().map(|p| p.ts).collect::<Vec<_>>(), [150]);
        t.purge_before(0);
        assert!(t.neighbours(1, 200, 300).1, "forgotten after a purge");
    }

    #[test]
    fn at_time_and_trail_reads_follow_the_tables_rules() {
        let t = Tail::default();
        let mut other = fix(1, 20);
        other.subject_pk = Some(2);
        t.append(
            1,
            vec![
                fix(1, 5),
                fix(1, 10),
                other,
                fix(1, 30),
                fix(2, 25),
                fix(1, 50),
            ],
        );
        let ts = |v: Vec<FixRow>| v.iter().map(|r| (r.device_pk, r.ts)).collect::<Vec<_>>();
        let keys = |v: Vec<QFix>| v.iter().map(|q| (q.device, q.ts_us)).collect::<Vec<_>>();
        assert_eq!(keys(t.at_time(&[1, 2], 1, 30)), [(1, 30), (1, 50), (2, 25)]);
        // (device 1's fix at 20 is another subject's)
        assert_eq!(keys(t.at_time(&[1, 2], 1, 25)), [(1, 10), (1, 30), (2, 25)]);
        assert_eq!(
            ts(t.trail(&[1, 2], 1, 0, 100, (10, 1), 2)),
            [(2, 25), (1, 30)]
        );
    }
}
