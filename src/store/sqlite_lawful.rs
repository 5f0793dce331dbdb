//! SQLite side of lawful queries and the audit trail (see [`super::lawful`]): the reads of
//! an audited transaction, the audit chain's rows, the segment index written with fixes,
//! and the retention purge.
//!
//! Variable-length key lists are bound as one JSON text and read with `json_each`, so each
//! statement has a fixed text (and, through sqlx, stays in the statement cache).
//!
//! The reads that return many rows (a crime-scene lookup's hits and fixes, the ids of its
//! matches) go through rusqlite on sqlx's own connection handle ([`on_handle`]), inside the
//! audited transaction: sqlx-sqlite hands every row from its worker thread to the caller as
//! a message of owned values, which cost several times SQLite's own read (on 10 M fixes, the
//! ≈7 k index hits and ≈11 k fixes of a 500 m / 24 h scene took 29 ms to read through sqlx,
//! 6 ms in place). So do location-at-time's lookups and the audit append
//! ([`on_handle_briefly`]): several statements of a handful of rows each, where a hop to
//! sqlx's worker per statement cost more than preparing them afresh in one pass. Other
//! statements that return a handful of rows stay on sqlx, whose cached prepared statements
//! are cheaper there.

use std::collections::{HashMap, HashSet};

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::lawful::{
    batch_ranges, island_rows_near, keys_of, long_segments, matches_of, merge_intervals,
    new_points, stored_json, stored_subject_ids, AtTimeRead, AuditFilter, Pt, PurgeCounts,
    SceneFound, SceneLookup, SceneRow, VERIFY_PAGE,
};
use super::sqlite::{fix, CELL_MINUTE_US, FIX_COLUMNS};
use super::sqlite_tail::Tail;
use super::{FixRow, Result, SqliteStore};
use crate::audit::chain::{
    seal, AuditDraft, AuditRecord, ChainError, Verifier, VerifyReport, GENESIS_HASH,
};
use crate::model::Micros;
use crate::query::cells::scene_keys;
use crate::query::scene::SceneQuery;
use crate::query::QueryConfig;

fn audit_record(r: &SqliteRow) -> std::result::Result<AuditRecord, sqlx::Error> {
    let justification: Option<String> = r.try_get("justification")?;
    Ok(AuditRecord {
        id: r.try_get("id")?,
        at_us: r.try_get("at")?,
        actor: r.try_get("actor")?,
        actor_name: r.try_get("actor_name")?,
        role: r.try_get("role")?,
        action: r.try_get("action")?,
        parameters: stored_json(r.try_get("parameters")?),
        justification: justification.as_deref().map(stored_json),
        subject_ids: stored_subject_ids(r.try_get("subject_ids")?),
        result_count: r.try_get("result_count")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

fn json_list(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

fn fixes(rows: &[SqliteRow]) -> Result<Vec<FixRow>> {
    Ok(rows
        .iter()
        .map(fix)
        .collect::<std::result::Result<_, _>>()?)
}

/// Called by [`SqliteStore::insert_fixes`] inside its transaction, on its handle: indexes
/// the long segments the new fixes form with their neighbours, stored or in the tail.
pub(super) fn index_segments(
    db: &rusqlite::Connection,
    tail: &Tail,
    rows: &[FixRow],
    stored: &[bool],
) -> rusqlite::Result<()> {
    let ranges = batch_ranges(rows, stored);
    if ranges.is_empty() {
        return Ok(());
    }
    let inserted: HashSet<(i64, i64)> = rows
        .iter()
        .zip(stored)
        .filter(|(_, s)| **s)
        .map(|(r, _)| (r.device_pk, r.ts))
        .collect();
    // the new fixes themselves, then per device the fixes the indexer takes (`Pt::of`:
    // positioned and attributed) from the one before the group's range to the one after
    // it, in the tail and (by key seeks) in the table
    let mut pts = new_points(rows, stored);
    let mut st = db.prepare_cached(
        "SELECT f.device_pk, f.ts, f.lat_e7, f.lon_e7 FROM fixes f \
         WHERE f.device_pk = ?1 \
           AND f.ts >= coalesce((SELECT g.ts FROM fixes g WHERE g.device_pk = ?1 AND g.ts < ?2 \
                                 AND g.lat_e7 IS NOT NULL AND g.subject_pk IS NOT NULL ORDER BY g.ts DESC LIMIT 1), ?2) \
           AND f.ts <= coalesce((SELECT g.ts FROM fixes g WHERE g.device_pk = ?1 AND g.ts > ?3 \
                                 AND g.lat_e7 IS NOT NULL AND g.subject_pk IS NOT NULL ORDER BY g.ts LIMIT 1), ?3) \
           AND f.lat_e7 IS NOT NULL AND f.lon_e7 IS NOT NULL AND f.subject_pk IS NOT NULL",
    )?;
    for &(d, lo, hi) in &ranges {
        let (near, table_needed) = tail.neighbours(d, lo, hi);
        pts.extend(near);
        if !table_needed {
            continue;
        }
        let mut read: Vec<Pt> = Vec::new();
        let mut found = st.query(rusqlite::params![d, lo, hi])?;
        while let Some(r) = found.next()? {
            read.push(Pt {
                device_pk: r.get(0)?,
                ts: r.get(1)?,
                lat_e7: r.get(2)?,
                lon_e7: r.get(3)?,
            });
        }
        tail.learn_stored_last(d, lo, &read);
        pts.extend(read);
    }
    let mut st = db.prepare_cached(
        "INSERT INTO fix_segments (cell, t0, t1, device_pk) VALUES (?, ?, ?, ?) \
         ON CONFLICT DO NOTHING",
    )?;
    for s in long_segments(pts, &inserted) {
        st.execute(rusqlite::params![s.cell, s.t0, s.t1, s.device_pk])?;
    }
    Ok(())
}

/// The devices a subject (`?1`) has worn.
const WORN_DEVICES: &str = "SELECT device_pk FROM device_assignments WHERE subject_pk = ?1";

/// External ids of the devices whose keys are in the JSON list `?1`.
const DEVICE_IDS: &str = "SELECT pk, id FROM devices WHERE pk IN (SELECT value FROM json_each(?1))";

/// The devices a subject has worn.
async fn worn_devices(conn: &mut SqliteConnection, subject_pk: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(WORN_DEVICES)
        .bind(subject_pk)
        .fetch_all(conn)
        .await?)
}

/// [`LawfulTx::at_time`](super::LawfulTx::at_time) on SQLite: [`read_at_time`] in one pass
/// on the handle ([`on_handle_briefly`]): through sqlx each of its four statements cost a hop
/// to its worker thread and back.
pub(super) async fn at_time(
    conn: &mut SqliteConnection,
    tail: &Tail,
    subject_id: &str,
    at: Micros,
) -> Result<Option<AtTimeRead>> {
    on_handle_briefly(conn, |db| read_at_time(db, tail, subject_id, at)).await
}

/// What location-at-time reads, on a handle: the subject, per device its nearest fix on
/// each side of `at` (the tail's, then the table's: see [`super::sqlite_tail`]'s module doc;
/// the caller keeps the nearer of the two) and their devices' ids.
fn read_at_time(
    db: &rusqlite::Connection,
    tail: &Tail,
    subject_id: &str,
    at: Micros,
) -> rusqlite::Result<Option<AtTimeRead>> {
    use rusqlite::OptionalExtension;
    let fixes_sql = format!(
        "SELECT {FIX_COLUMNS} FROM fixes WHERE (device_pk, ts) IN ( \
             SELECT a.device_pk, (SELECT g.ts FROM fixes g WHERE g.device_pk = a.device_pk \
                 AND g.ts <= ?2 AND g.subject_pk = ?1 AND g.lat_e7 IS NOT NULL \
                 AND g.lon_e7 IS NOT NULL ORDER BY g.ts DESC LIMIT 1) \
             FROM device_assignments a WHERE a.subject_pk = ?1) \
         UNION ALL \
         SELECT {FIX_COLUMNS} FROM fixes WHERE (device_pk, ts) IN ( \
             SELECT a.device_pk, (SELECT g.ts FROM fixes g WHERE g.device_pk = a.device_pk \
                 AND g.ts > ?2 AND g.subject_pk = ?1 AND g.lat_e7 IS NOT NULL \
                 AND g.lon_e7 IS NOT NULL ORDER BY g.ts LIMIT 1) \
             FROM device_assignments a WHERE a.subject_pk = ?1)"
    );
    let subject_pk: Option<i64> = db
        .prepare_cached("SELECT pk FROM subjects WHERE id = ?1")?
        .query_row([subject_id], |r| r.get(0))
        .optional()?;
    let Some(subject_pk) = subject_pk else {
        return Ok(None);
    };
    let mut fixes = if tail.is_empty() {
        Vec::new() // (the common case when ingest is quiet: no statement for the devices)
    } else {
        let devices = db
            .prepare_cached(WORN_DEVICES)?
            .query_map([subject_pk], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        tail.at_time(&devices, subject_pk, at)
    };
    let mut st = db.prepare_cached(&fixes_sql)?;
    for f in st.query_map(rusqlite::params![subject_pk, at], fix_of_row)? {
        fixes.extend(f?.qfix());
    }
    let mut pks: Vec<i64> = fixes.iter().map(|f| f.device).collect();
    pks.sort_unstable();
    pks.dedup();
    let devices = read_ids(db, DEVICE_IDS, &pks)?;
    Ok(Some(AtTimeRead {
        subject_pk,
        fixes,
        devices,
    }))
}

/// [`fix`] for a row read through rusqlite: the columns of [`FIX_COLUMNS`], in order.
fn fix_of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FixRow> {
    let real = |i: usize| -> rusqlite::Result<Option<f32>> {
        Ok(r.get::<_, Option<f64>>(i)?.map(|v| v as f32))
    };
    let (lat_e7, lon_e7) = (r.get(3)?, r.get(4)?);
    Ok(FixRow {
        device_pk: r.get(0)?,
        ts: r.get(1)?,
        subject_pk: r.get(2)?,
        lat_e7,
        lon_e7,
        accuracy_m: real(5)?,
        source: r.get(6)?,
        speed_mps: real(7)?,
        heading_deg: real(8)?,
        battery_pct: real(9)?,
        flags: r.get(10)?,
        received_at: r.get(11)?,
        // not a column of `fixes` (migration sqlite/0005)
        cell: FixRow::cell_of(lat_e7, lon_e7),
    })
}

/// Runs `read` on `conn`'s own SQLite handle through rusqlite, inside whatever transaction
/// `conn` has open (an audited read's `BEGIN IMMEDIATE`), so the read and its audit entry
/// stay one transaction. Why: sqlx-sqlite steps statements on a worker thread and sends
/// every row to the caller as a message of owned values, which costs far more than SQLite's
/// own read for the thousands of rows of a scene lookup (see docs/BENCHMARKS.md);
/// rusqlite reads them in place. `read` runs statements only and must not end the
/// transaction (sqlx keeps its own count of it). It runs on the calling task's thread
/// while it holds the handle; on a multi-threaded runtime (the server's) that thread is
/// first handed over as a blocking one ([`tokio::task::block_in_place`]), so a read of
/// several milliseconds does not hold up the other tasks queued on it (ingest
/// acknowledgements, the alert stream). [`on_handle_briefly`] skips that hand-over, for
/// work of a few key lookups.
///
/// The only `unsafe` in the crate.
pub(super) async fn on_handle<T>(
    conn: &mut SqliteConnection,
    read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> Result<T> {
    run_on_handle(conn, true, read).await
}

/// [`on_handle`] for work that takes a fraction of a millisecond (location-at-time's
/// lookups, an audit append): it runs on the task's thread without handing the thread
/// over first, which costs about as much as such work (a thread wake-up).
pub(super) async fn on_handle_briefly<T>(
    conn: &mut SqliteConnection,
    read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> Result<T> {
    run_on_handle(conn, false, read).await
}

async fn run_on_handle<T>(
    conn: &mut SqliteConnection,
    long: bool,
    read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> Result<T> {
    let mut locked = conn.lock_handle().await?;
    let raw = locked.as_raw_handle();
    // SAFETY: `raw` is the open handle of `conn`, and while `locked` lives sqlx's worker
    // thread makes no call on it or on its statements (that is `lock_handle`'s contract),
    // so this thread is its only user. `from_handle` does not take ownership: dropping
    // `db` finalizes the statements prepared through it and leaves the handle open and its
    // hooks in place (rusqlite 0.32 without its `hooks` feature). `db` is dropped below,
    // before `locked`, so no statement outlives the lock. rusqlite and sqlx link the same
    // `libsqlite3-sys` (Cargo allows one crate with `links = "sqlite3"`), hence the same
    // SQLite library and the same `sqlite3` type.
    #[allow(unsafe_code)]
    let db = unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) };
    let run = || {
        db.and_then(|db| {
            let out = read(&db);
            drop(db);
            out
        })
    };
    let out = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread if long => tokio::task::block_in_place(run),
        _ => run(),
    };
    out.map_err(|e| {
        match e {
            // the handle's own error, so that `StoreError::is_unavailable` sees the extended
            // result code (a full disk or an I/O error is 503, as on every other path)
            rusqlite::Error::SqliteFailure(..) => match locked.last_error() {
                Some(db_err) => sqlx::Error::Database(Box::new(db_err)),
                None => sqlx::Error::Protocol(e.to_string()),
            },
            other => sqlx::Error::Decode(Box::new(other)),
        }
        .into()
    })
}

/// Makes SQLite plan each statement without looking at the values bound to it (the query
/// planner stability guarantee, `SQLITE_DBCONFIG_ENABLE_QPSG`); every connection gets it
/// when it opens. Why: this SQLite is built with `SQLITE_ENABLE_STAT4`, and once `ANALYZE`
/// (or `PRAGMA optimize`) has stored histograms, a statement whose WHERE clause compares an
/// indexed column with a bound value is compiled again at its first step after every bind,
/// in case the value favours another plan. Every statement here has one sensible plan (the
/// big tables have their primary key alone), so that recompiling bought nothing: on 10 M
/// fixes it was ~0.08 ms of location-at-time's ~0.29 ms read (docs/BENCHMARKS.md).
pub(super) async fn plan_without_bound_values(conn: &mut SqliteConnection) -> Result<()> {
    on_handle_briefly(conn, |db| {
        db.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map(|_| ())
    })
    .await
}

/// The scene lookup on SQLite: the steps of [`super::lawful`]'s module doc, with the
/// islands, the predecessors and the box filter computed here rather than by window
/// functions, which SQLite evaluates an order of magnitude slower than the reads
/// themselves (measured on 10 M fixes: 7,300 hits and 11,300 loaded fixes took 3 ms to
/// read and 60 ms to window). Read through rusqlite on a connection's handle (in
/// [`scene_audited`]'s pass); only the columns the maths needs.
fn read_scene_rows(
    db: &rusqlite::Connection,
    tail: &Tail,
    q: &SceneLookup<'_>,
    keys: &[i64],
) -> rusqlite::Result<Vec<SceneRow>> {
    let (keys, coarse) = (json_list(&keys), json_list(&q.coarse));
    // the tail first, then the table (see sqlite_tail's module doc); long segments are
    // indexed when their later fix is acknowledged, so the table's index has them all
    let hits: Vec<(i64, Micros)> = tail.scene_hits(q.fine, q.lo, q.hi);
    // `fix_cells` says in which minutes a device had a fix in a cell, by split keys
    // (`cells::scene_keys`: the children of the cover's cells clear of the fine disk are
    // left out); each such minute is loaded whole (widened by the gap like any hit), so it
    // is a range, like a segment's
    let mut ranges: Vec<(i64, Micros, Micros)> = Vec::new();
    let mut st = db.prepare(
        "SELECT device_pk, minute FROM fix_cells \
         WHERE cell IN (SELECT value FROM json_each(?1)) AND minute BETWEEN ?2 AND ?3",
    )?;
    let minutes = (
        q.lo.div_euclid(CELL_MINUTE_US),
        q.hi.div_euclid(CELL_MINUTE_US),
    );
    let mut rows = st.query(rusqlite::params![keys, minutes.0, minutes.1])?;
    while let Some(r) = rows.next()? {
        let (device_pk, minute): (i64, i64) = (r.get(0)?, r.get(1)?);
        let start = minute.saturating_mul(CELL_MINUTE_US);
        ranges.push((
            device_pk,
            start.saturating_sub(q.gap_us),
            start
                .saturating_add(CELL_MINUTE_US - 1)
                .saturating_add(q.gap_us),
        ));
    }
    let mut st = db.prepare(
        "SELECT device_pk, t0, t1 FROM fix_segments \
         WHERE cell IN (SELECT value FROM json_each(?1)) AND t0 BETWEEN ?2 AND ?3 AND t1 >= ?4",
    )?;
    let mut rows = st.query(rusqlite::params![coarse, q.lo, q.to, q.from])?;
    while let Some(r) = rows.next()? {
        ranges.push((r.get(0)?, r.get(1)?, r.get(2)?));
    }
    if hits.is_empty() && ranges.is_empty() {
        return Ok(Vec::new());
    }
    let intervals = merge_intervals(&hits, &ranges, q.gap_us);
    let mut out: Vec<SceneRow> = tail
        .in_intervals(&intervals)
        .iter()
        .filter_map(SceneRow::from_fix)
        .collect();
    // One cached statement run per interval: SQLite plans it once (its plan does not
    // depend on bound values, `plan_without_bound_values`), and a step loop per interval
    // cost less than one statement over all intervals passed as JSON, whose three
    // `json_extract`s per interval parse the interval's text again each (islands' read
    // 5.8–6.0 → 4.8–5.4 ms on the 10 M bench, docs/BENCHMARKS.md "SQLite: split cells").
    let mut st = db.prepare_cached(
        "SELECT device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_cm / 100.0 FROM fixes \
         WHERE device_pk = ?1 AND ts BETWEEN ?2 AND ?3 \
           AND lat_e7 IS NOT NULL AND lon_e7 IS NOT NULL AND subject_pk IS NOT NULL",
    )?;
    for &(device_pk, from, to) in &intervals {
        let mut rows = st.query(rusqlite::params![device_pk, from, to])?;
        while let Some(r) = rows.next()? {
            out.push(SceneRow {
                device_pk: r.get(0)?,
                ts: r.get(1)?,
                subject_pk: r.get(2)?,
                lat_e7: r.get(3)?,
                lon_e7: r.get(4)?,
                accuracy_m: r.get::<_, Option<f64>>(5)?.map(|v| v as f32),
                prev_ts: None,
            });
        }
    }
    Ok(island_rows_near(out, &q.bx))
}

pub(super) async fn trail_page(
    conn: &mut SqliteConnection,
    tail: &Tail,
    subject_pk: i64,
    from: Micros,
    to: Micros,
    after: Option<(Micros, i64)>,
    limit: i64,
) -> Result<Vec<FixRow>> {
    let (after_ts, after_dev) = after.unwrap_or((i64::MIN, i64::MIN));
    // the tail first, then the table (see sqlite_tail's module doc): the page is the first
    // `limit` of both together
    let page = usize::try_from(limit).unwrap_or(0);
    let mut out = if tail.is_empty() {
        Vec::new()
    } else {
        let devices = worn_devices(conn, subject_pk).await?;
        tail.trail(&devices, subject_pk, from, to, (after_ts, after_dev), page)
    };
    let rows = sqlx::query(&format!(
        "SELECT {FIX_COLUMNS} FROM fixes \
         WHERE device_pk IN (SELECT device_pk FROM device_assignments WHERE subject_pk = ?1) \
           AND subject_pk = ?1 AND ts BETWEEN ?2 AND ?3 AND (ts, device_pk) > (?4, ?5) \
         ORDER BY ts, device_pk LIMIT ?6"
    ))
    .bind(subject_pk)
    .bind(from)
    .bind(to)
    .bind(after_ts)
    .bind(after_dev)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    out.extend(fixes(&rows)?);
    out.sort_by_key(|r| (r.ts, r.device_pk));
    out.dedup_by_key(|r| (r.ts, r.device_pk));
    out.truncate(page);
    Ok(out)
}

/// External ids by store key, read through rusqlite ([`on_handle`]): a crime-scene answer
/// names a hundred devices and subjects, and through sqlx each row costs a message.
async fn ids(
    conn: &mut SqliteConnection,
    sql: &'static str,
    pks: &[i64],
) -> Result<HashMap<i64, String>> {
    on_handle(conn, |db| read_ids(db, sql, pks)).await
}

/// [`ids`]' read, on a handle (no statement for no keys).
fn read_ids(
    db: &rusqlite::Connection,
    sql: &'static str,
    pks: &[i64],
) -> rusqlite::Result<HashMap<i64, String>> {
    if pks.is_empty() {
        return Ok(HashMap::new());
    }
    let mut st = db.prepare(sql)?;
    let rows = st.query_map([json_list(&pks)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub(super) async fn device_ids(
    conn: &mut SqliteConnection,
    pks: &[i64],
) -> Result<HashMap<i64, String>> {
    ids(conn, DEVICE_IDS, pks).await
}

pub(super) async fn subject_ids(
    conn: &mut SqliteConnection,
    pks: &[i64],
) -> Result<HashMap<i64, String>> {
    ids(conn, SUBJECT_IDS, pks).await
}

/// External ids of the subjects whose keys are in the JSON list `?1`.
const SUBJECT_IDS: &str =
    "SELECT pk, id FROM subjects WHERE pk IN (SELECT value FROM json_each(?1))";

/// Appends in the caller's transaction, which already holds SQLite's write lock
/// (`BEGIN IMMEDIATE`), so no other appender can read the same head: [`append_on`] in one
/// pass on the handle ([`on_handle_briefly`]).
pub(super) async fn append_audit(
    conn: &mut SqliteConnection,
    draft: AuditDraft,
) -> Result<AuditRecord> {
    on_handle_briefly(conn, |db| append_on(db, draft))
        .await?
        .map_err(refused)
}

/// Reads the chain's head and inserts `draft` sealed onto it, on a handle inside a
/// transaction holding the write lock. `Ok(Err(_))`: the head cannot be chained onto
/// (nothing written).
fn append_on(
    db: &rusqlite::Connection,
    mut draft: AuditDraft,
) -> rusqlite::Result<std::result::Result<AuditRecord, ChainError>> {
    use rusqlite::OptionalExtension;
    let head: Option<(i64, String)> = db
        .prepare_cached("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (id, prev) = head.map_or((1, GENESIS_HASH.to_owned()), |(id, h)| (id + 1, h));
    draft.id = id;
    let rec = match seal(&prev, draft) {
        Ok(rec) => rec,
        Err(e) => return Ok(Err(e)),
    };
    db.prepare_cached(
        "INSERT INTO audit (id, at, actor, actor_name, role, action, parameters, \
         justification, subject_ids, result_count, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(rusqlite::params![
        rec.id,
        rec.at_us,
        rec.actor,
        rec.actor_name,
        rec.role,
        rec.action,
        rec.parameters.to_string(),
        rec.justification.as_ref().map(|j| j.to_string()),
        json_list(&rec.subject_ids),
        rec.result_count,
        rec.prev_hash,
        rec.hash,
    ])?;
    Ok(Ok(rec))
}

/// An audit entry the chain refused: a store error, so the request fails closed.
fn refused(e: ChainError) -> super::StoreError {
    sqlx::Error::Decode(Box::new(e)).into()
}

/// Runs `work` as one audited transaction in a single pass on a pooled connection's handle,
/// from `BEGIN IMMEDIATE` to `COMMIT`, behind the store's write gate like every writer.
/// For audited work of a few key lookups (location-at-time, an audit entry on its own),
/// where the hops to sqlx's worker thread for begin, statements and commit cost more than
/// the work besides the commit's fsync. `work` returning `Ok(Err(_))` (the chain refused
/// the entry) or failing rolls the transaction back; a connection that cannot be brought
/// back out of it (its `ROLLBACK` failed) is closed rather than returned to the pool, where
/// it would hold SQLite's write lock. sqlx's own count of the connection's transactions
/// stays at zero throughout, as the transaction begins and ends inside the pass.
async fn audited_in_one_pass<T>(
    store: &SqliteStore,
    long: bool,
    work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<std::result::Result<T, ChainError>>,
) -> Result<T> {
    let _gate = store.write_gate().await?;
    let mut conn = store.pool().acquire().await?;
    let out = run_on_handle(&mut conn, long, |db| {
        db.execute_batch("BEGIN IMMEDIATE")?;
        let _unwinding = RollbackOnPanic(db);
        let done = work(db)?;
        if done.is_ok() {
            db.execute_batch("COMMIT")?;
        }
        Ok(done)
    })
    .await;
    if !matches!(out, Ok(Ok(_))) {
        let still_open = on_handle_briefly(&mut conn, |db| {
            if !db.is_autocommit() {
                db.execute_batch("ROLLBACK")?;
            }
            Ok(!db.is_autocommit())
        })
        .await;
        if !matches!(still_open, Ok(false)) {
            // (closing can only fail on a connection that is gone anyway)
            let _ = conn.close().await;
        }
    }
    out?.map_err(refused)
}

/// Rolls back the transaction of [`audited_in_one_pass`] when `work` panics: the pooled
/// connection goes back to the pool as the stack unwinds, and sqlx, which never saw the
/// transaction begin, would not roll it back.
struct RollbackOnPanic<'a>(&'a rusqlite::Connection);

impl Drop for RollbackOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.0.is_autocommit() {
            // (nothing more can be done while unwinding if this fails)
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// [`Store::at_time_audited`](super::Store::at_time_audited) on SQLite: one pass
/// ([`audited_in_one_pass`]).
pub(super) async fn at_time_audited<T>(
    store: &SqliteStore,
    subject_id: &str,
    at: Micros,
    entry: impl FnOnce(Option<&AtTimeRead>) -> (AuditDraft, T),
) -> Result<(Option<AtTimeRead>, T, AuditRecord)> {
    let tail = store.tail.clone();
    audited_in_one_pass(store, false, |db| {
        let read = read_at_time(db, &tail, subject_id, at)?.map(|r| super::lawful::settled(r, at));
        let (draft, t) = entry(read.as_ref());
        Ok(append_on(db, draft)?.map(|rec| (read, t, rec)))
    })
    .await
}

/// [`Store::scene_audited`](super::Store::scene_audited) on SQLite: one pass
/// ([`audited_in_one_pass`], the thread handed over first as for any read of several
/// milliseconds: see [`on_handle`]).
pub(super) async fn scene_audited<T>(
    store: &SqliteStore,
    q: &SceneLookup<'_>,
    scene: &SceneQuery,
    cfg: &QueryConfig,
    entry: impl FnOnce(SceneFound) -> (AuditDraft, T),
) -> Result<(T, AuditRecord)> {
    let tail = store.tail.clone();
    let keys = scene_keys(scene.center, scene.radius_m, q.fine);
    audited_in_one_pass(store, true, |db| {
        let matches = matches_of(read_scene_rows(db, &tail, q, &keys)?, scene, cfg);
        let (device_pks, subject_pks) = keys_of(&matches);
        let found = SceneFound {
            devices: read_ids(db, DEVICE_IDS, &device_pks)?,
            subjects: read_ids(db, SUBJECT_IDS, &subject_pks)?,
            matches,
        };
        let (draft, t) = entry(found);
        Ok(append_on(db, draft)?.map(|rec| (t, rec)))
    })
    .await
}

/// [`Store::append_audit`](super::Store::append_audit) on SQLite: one pass
/// ([`audited_in_one_pass`]).
pub(super) async fn append_audit_alone(
    store: &SqliteStore,
    draft: AuditDraft,
) -> Result<AuditRecord> {
    audited_in_one_pass(store, false, |db| append_on(db, draft)).await
}

impl SqliteStore {
    pub async fn audit_page(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM audit WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at <= ?2) \
             AND (?3 IS NULL OR actor = ?3) \
             AND (?4 IS NULL OR instr(subject_ids, '\"' || ?4 || '\"') > 0) \
             AND (?5 IS NULL OR id < ?5) ORDER BY id DESC LIMIT ?6",
        )
        .bind(f.from)
        .bind(f.to)
        .bind(f.actor)
        .bind(&f.subject_id)
        .bind(f.before_id)
        .bind(f.limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(audit_record)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub async fn verify_audit(&self) -> Result<VerifyReport> {
        let mut v = Verifier::new();
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?")
                .bind(after)
                .bind(VERIFY_PAGE)
                .fetch_all(self.pool())
                .await?;
            for r in &rows {
                let rec = audit_record(r)?;
                after = rec.id;
                v.push(&rec);
            }
            if (rows.len() as i64) < VERIFY_PAGE {
                return Ok(v.report());
            }
        }
    }

    pub async fn purge_fixes_before(&self, cutoff: Micros) -> Result<PurgeCounts> {
        let devices: Vec<i64> = sqlx::query_scalar("SELECT pk FROM devices ORDER BY pk")
            .fetch_all(self.pool())
            .await?;
        const DEVICES_PER_TX: usize = 64;
        let mut counts = PurgeCounts::default();
        // like every writer of `fixes`, under the write gate; a batch of devices per
        // transaction, so ingest waits for at most one batch
        for batch in devices.chunks(DEVICES_PER_TX) {
            let _gate = self.write_gate().await?;
            let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
            for &d in batch {
                counts.fixes += sqlx::query("DELETE FROM fixes WHERE device_pk = ? AND ts < ?")
                    .bind(d)
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
        }
        {
            let _gate = self.write_gate().await?;
            // the tail changes only under the write gate (see sqlite_tail's invariants)
            counts.fixes += self.tail.purge_before(cutoff);
        }
        // a segment ends after it starts, so `t0 < cutoff` bounds the key range read
        counts.segments = self
            .purge_by_cell(
                "SELECT min(cell) FROM fix_segments WHERE cell > ?1",
                "DELETE FROM fix_segments WHERE cell = ?1 AND t0 < ?2 AND t1 < ?2",
                cutoff,
            )
            .await?;
        // the minutes that end before the cutoff (a minute holding a fix at or after it stays)
        self.purge_by_cell(
            "SELECT min(cell) FROM fix_cells WHERE cell > ?1",
            "DELETE FROM fix_cells WHERE cell = ?1 AND minute < ?2",
            cutoff.div_euclid(CELL_MINUTE_US),
        )
        .await?;
        Ok(counts)
    }

    /// Deletes old rows of a crime-scene index table keyed by cell first (`fix_cells`,
    /// `fix_segments`): each cell is reached by a seek (`seek`: the next cell after `?1`)
    /// and `delete` (`?1` the cell, `?2` `bound`) removes its old rows through the key, so
    /// only they are read; cells go in batches, one short transaction each under the write
    /// gate, so ingest waits for at most one batch. Returns the rows deleted.
    async fn purge_by_cell(&self, seek: &str, delete: &str, bound: i64) -> Result<u64> {
        const CELLS_PER_TX: usize = 256;
        let (mut after, mut deleted) = (i64::MIN, 0u64);
        loop {
            let _gate = self.write_gate().await?;
            let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
            let (n, next) = on_handle(&mut tx, |db| {
                let mut seek = db.prepare(seek)?;
                let mut delete = db.prepare(delete)?;
                let (mut at, mut n) = (after, 0u64);
                for _ in 0..CELLS_PER_TX {
                    match seek.query_row([at], |r| r.get::<_, Option<i64>>(0))? {
                        Some(cell) => {
                            n += delete.execute([cell, bound])? as u64;
                            at = cell;
                        }
                        None => return Ok((n, None)),
                    }
                }
                Ok((n, Some(at)))
            })
            .await?;
            tx.commit().await?;
            deleted += n;
            match next {
                Some(at) => after = at,
                None => return Ok(deleted),
            }
        }
    }
}
