//! PostgreSQL side of lawful queries and the audit trail (see [`super::lawful`]): the reads
//! of an audited transaction, the audit chain's rows, the segment index written with
//! fixes, and the retention purge. Key lists are bound as arrays (`= ANY`, `UNNEST`).

use std::collections::{HashMap, HashSet};

use sqlx::postgres::types::PgCircle;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::lawful::{
    batch_ranges, island_rows_near, islands, long_segments, new_points, stored_json,
    stored_subject_ids, AtTimeRead, AuditFilter, Island, IslandEdges, Pt, PurgeCounts, SceneLookup,
    SceneRow, VERIFY_PAGE,
};
use super::postgres::{fix, FIX_SELECT};
use super::postgres_ids::Ids;
use super::postgres_newest::Newest;
use super::{FixRow, PgStore, Result};
use crate::audit::chain::{seal, AuditDraft, AuditRecord, ChainError, Verifier, VerifyReport};
use crate::model::Micros;

fn audit_record(r: &PgRow) -> std::result::Result<AuditRecord, sqlx::Error> {
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

fn fixes(rows: &[PgRow]) -> Result<Vec<FixRow>> {
    Ok(rows
        .iter()
        .map(fix)
        .collect::<std::result::Result<_, _>>()?)
}

/// Called by [`PgStore::insert_fixes`] inside its transaction, after the insert: indexes
/// the long segments the new fixes form with their stored neighbours. A device whose new
/// fixes are all newer than its newest stored one, when `newest` knows that, needs no read;
/// the others' neighbours are read with key seeks. Returns what the devices' newest stored
/// fixes the indexer takes are once this commits (`None`: not known), for `newest`.
#[tracing::instrument(skip_all)]
pub(super) async fn index_segments(
    conn: &mut PgConnection,
    rows: &[FixRow],
    stored: &[bool],
    inserted: &HashSet<(i64, i64)>,
    newest: &Newest,
) -> Result<Vec<(i64, Option<Option<Pt>>)>> {
    let ranges = batch_ranges(rows, stored);
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    // the new fixes themselves (a device's read below returns them too: long_segments
    // keeps one copy of each key), and per device the newest of them
    let mut pts = new_points(rows, stored);
    let mut newest_new: HashMap<i64, Pt> = HashMap::with_capacity(ranges.len());
    for p in &pts {
        newest_new
            .entry(p.device_pk)
            .and_modify(|n| {
                if p.ts > n.ts {
                    *n = *p;
                }
            })
            .or_insert(*p);
    }
    let mut learned = Vec::with_capacity(ranges.len());
    let mut ask: Vec<(i64, i64, i64)> = Vec::new();
    for &(d, lo, hi) in &ranges {
        match newest.get(d) {
            Some(last) if last.is_none_or(|p| p.ts < lo) => {
                learned.push((d, Some(newest_new.get(&d).copied())));
                pts.extend(last);
            }
            _ => ask.push((d, lo, hi)),
        }
    }
    if !ask.is_empty() {
        let read = neighbours(conn, &ask).await?;
        let mut by_device: HashMap<i64, Vec<Pt>> = HashMap::new();
        for p in &read {
            by_device.entry(p.device_pk).or_default().push(*p);
        }
        for &(d, _, hi) in &ask {
            let mine = by_device.remove(&d).unwrap_or_default();
            // known only when nothing stored is newer than the group (the read reaches one
            // positioned fix past the group's last, when there is one)
            let known = (!mine.iter().any(|p| p.ts > hi))
                .then(|| mine.iter().max_by_key(|p| p.ts).copied());
            learned.push((d, known));
        }
        pts.extend(read);
    }
    let segs = long_segments(pts, inserted);
    if segs.is_empty() {
        return Ok(learned);
    }
    // A row already there with the same start stands for a segment this one shortens (a
    // fix arrived late in between): its box grows to hold this one's too (migration
    // postgres/0009). Its `t1` stays: the longer interval holds the shorter.
    sqlx::query(
        "INSERT INTO fix_segments AS s (cell, t0, t1, device_pk, lat_lo, lat_hi, lon_lo, lon_hi) \
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int4[], \
                              $5::int4[], $6::int4[], $7::int4[], $8::int4[]) \
         ON CONFLICT (cell, t0, device_pk) DO UPDATE SET \
             lat_lo = least(s.lat_lo, excluded.lat_lo), lat_hi = greatest(s.lat_hi, excluded.lat_hi), \
             lon_lo = least(s.lon_lo, excluded.lon_lo), lon_hi = greatest(s.lon_hi, excluded.lon_hi) \
         WHERE s.lat_lo IS NOT NULL AND NOT (s.lat_lo <= excluded.lat_lo AND s.lat_hi >= excluded.lat_hi \
             AND s.lon_lo <= excluded.lon_lo AND s.lon_hi >= excluded.lon_hi)",
    )
    .bind(segs.iter().map(|s| s.cell).collect::<Vec<_>>())
    .bind(segs.iter().map(|s| s.t0).collect::<Vec<_>>())
    .bind(segs.iter().map(|s| s.t1).collect::<Vec<_>>())
    .bind(segs.iter().map(|s| s.device_pk as i32).collect::<Vec<_>>())
    .bind(segs.iter().map(|s| s.lat_lo).collect::<Vec<_>>())
    .bind(segs.iter().map(|s| s.lat_hi).collect::<Vec<_>>())
    .bind(segs.iter().map(|s| s.lon_lo).collect::<Vec<_>>())
    .bind(segs.iter().map(|s| s.lon_hi).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(learned)
}

/// Per `(device, lo, hi)`: the device's stored fixes the indexer takes (`Pt::of`) from the
/// one before `lo` to the one after `hi` (new fixes included), by key seeks.
async fn neighbours(conn: &mut PgConnection, ranges: &[(i64, i64, i64)]) -> Result<Vec<Pt>> {
    Ok(sqlx::query_as::<_, (i64, i64, i32, i32)>(
        "SELECT f.device_pk::int8, f.ts, f.lat_e7, f.lon_e7 \
         FROM UNNEST($1::int4[], $2::int8[], $3::int8[]) AS j(d, lo, hi) \
         CROSS JOIN LATERAL (SELECT \
             coalesce((SELECT g.ts FROM fixes g WHERE g.device_pk = j.d AND g.ts < j.lo \
                       AND g.lat_e7 IS NOT NULL AND g.subject_pk IS NOT NULL ORDER BY g.ts DESC LIMIT 1), j.lo) AS a, \
             coalesce((SELECT g.ts FROM fixes g WHERE g.device_pk = j.d AND g.ts > j.hi \
                       AND g.lat_e7 IS NOT NULL AND g.subject_pk IS NOT NULL ORDER BY g.ts LIMIT 1), j.hi) AS b) r \
         JOIN fixes f ON f.device_pk = j.d AND f.ts BETWEEN r.a AND r.b \
         WHERE f.lat_e7 IS NOT NULL AND f.lon_e7 IS NOT NULL AND f.subject_pk IS NOT NULL",
    )
    .bind(ranges.iter().map(|r| r.0 as i32).collect::<Vec<_>>())
    .bind(ranges.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(ranges.iter().map(|r| r.2).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(device_pk, ts, lat_e7, lon_e7)| Pt {
        device_pk,
        ts,
        lat_e7,
        lon_e7,
    })
    .collect())
}

/// [`LawfulTx::at_time`](super::LawfulTx::at_time) on PostgreSQL: the subject, its
/// devices, the nearest fix on each side of `at` of each device and their ids in one
/// statement. Every fix is read from the primary key alone, an index-only scan: the key
/// carries the columns the maths takes (`subject_pk`, `lat_e7`, `lon_e7`, `accuracy_m`;
/// migration postgres/0005), so a seek also walks past a device's fixes that are not the
/// subject's (a tag since worn by someone else) without reading their rows. Reading rows,
/// such a walk over 5,000 fixes took 5.5 s on a cold cache, against 5.4 ms from the key.
/// The plan is the same for any values, and PostgreSQL settles on that generic plan after
/// its first five executions (it did not while the statement read every fix within the
/// gap: planning each call afresh then cost ~0.5 ms against ~0.1 ms of execution).
pub(super) async fn at_time(
    conn: &mut PgConnection,
    subject_id: &str,
    at: Micros,
) -> Result<Option<AtTimeRead>> {
    let rows = sqlx::query(
        "WITH s AS (SELECT pk FROM subjects WHERE id = $1), \
         d AS (SELECT DISTINCT device_pk::int4 AS pk FROM device_assignments \
               WHERE subject_pk = (SELECT pk FROM s)), \
         near AS ( \
             SELECT f.* FROM d CROSS JOIN LATERAL ( \
                 SELECT g.device_pk::int8 AS device_pk, g.ts, g.subject_pk::int8 AS subject_pk, \
                     g.lat_e7, g.lon_e7, g.accuracy_m, NULL::int8 AS prev_ts FROM fixes g \
                 WHERE g.device_pk = d.pk AND g.ts <= $2 AND g.subject_pk = (SELECT pk FROM s) \
                   AND g.lat_e7 IS NOT NULL AND g.lon_e7 IS NOT NULL ORDER BY g.ts DESC LIMIT 1) f \
             UNION ALL \
             SELECT f.* FROM d CROSS JOIN LATERAL ( \
                 SELECT g.device_pk::int8, g.ts, g.subject_pk::int8, \
                     g.lat_e7, g.lon_e7, g.accuracy_m, NULL::int8 FROM fixes g \
                 WHERE g.device_pk = d.pk AND g.ts > $2 AND g.subject_pk = (SELECT pk FROM s) \
                   AND g.lat_e7 IS NOT NULL AND g.lon_e7 IS NOT NULL ORDER BY g.ts LIMIT 1) f) \
         SELECT s.pk AS subject, near.*, v.id AS device_id \
         FROM s LEFT JOIN near ON true LEFT JOIN devices v ON v.pk = near.device_pk",
    )
    .bind(subject_id)
    .bind(at)
    .fetch_all(conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut read = AtTimeRead {
        subject_pk: first.try_get("subject")?,
        fixes: Vec::with_capacity(rows.len()),
        devices: HashMap::new(),
    };
    for r in &rows {
        // (one row of NULLs when the subject has no such fix)
        if r.try_get::<Option<i64>, _>("device_pk")?.is_none() {
            continue;
        }
        let f = <SceneRow as sqlx::FromRow<_>>::from_row(r)?.fix();
        read.devices.insert(f.device, r.try_get("device_id")?);
        read.fixes.push(f);
    }
    Ok(Some(read))
}

/// The scene lookup on PostgreSQL: the steps of [`super::lawful`]'s module doc in two
/// statements, hits then fixes, with the islands, the predecessors and the box computed
/// here ([`islands`], [`island_rows_near`]), as on SQLite, and a third only when an
/// island's read holds no neighbour of its first or last hit ([`IslandEdges`]). One
/// statement doing all three with window functions spent most of its time sorting and
/// windowing (on 10 M fixes, ≈5 k hits and ≈8 k loaded fixes: 23 ms at the median, against
/// the reads' few milliseconds). The reads are index-only scans: `fixes_cell_ts_at` for the
/// hits, which carries the positions so that hits outside the [`HitDisk`] are dropped in
/// the scan (migration postgres/0008), and `fix_segments`' key, which carries each
/// segment's bounding box so that segments whose box misses the scene's ([`SceneBox`]) are
/// dropped in the scan too (migration postgres/0009); and the primary key, which carries
/// the columns read here (migration postgres/0005), for each island's fixes.
///
/// [`HitDisk`]: crate::query::cells::HitDisk
/// [`SceneBox`]: crate::query::scene::SceneBox
pub(super) async fn scene_rows(
    conn: &mut PgConnection,
    q: &SceneLookup<'_>,
) -> Result<Vec<SceneRow>> {
    // A hit is `(device, ts, NULL)`, a long segment `(device, t0, t1)`: the intervals
    // around hits are made here, not by two more expressions a row in the server.
    let found: Vec<(i32, Micros, Option<Micros>)> = sqlx::query_as(
        "SELECT device_pk, ts, NULL::int8 FROM fixes \
         WHERE cell = ANY($1) AND ts BETWEEN $3 AND $4 AND point(lon_e7 * $7, lat_e7) <@ $8 \
         UNION ALL \
         SELECT device_pk, t0, t1 FROM fix_segments \
         WHERE cell = ANY($2) AND t0 BETWEEN $3 AND $6 AND t1 >= $5 \
           AND (lat_lo IS NULL \
                OR (lat_lo <= $10 AND lat_hi >= $9 AND lon_lo <= $12 AND lon_hi >= $11))",
    )
    .bind(q.fine)
    .bind(q.coarse)
    .bind(q.lo)
    .bind(q.hi)
    .bind(q.from)
    .bind(q.to)
    .bind(q.hits.lon_scale)
    .bind(PgCircle {
        x: q.hits.x,
        y: q.hits.y,
        radius: q.hits.radius,
    })
    .bind(q.bx.lat_lo)
    .bind(q.bx.lat_hi)
    .bind(q.bx.lon_lo)
    .bind(q.bx.lon_hi)
    .fetch_all(&mut *conn)
    .await?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let (mut hits, mut ranges) = (Vec::with_capacity(found.len()), Vec::new());
    for (d, t0, t1) in found {
        match t1 {
            None => hits.push((i64::from(d), t0)),
            Some(t1) => ranges.push((i64::from(d), t0, t1)),
        }
    }
    let islands = islands(&hits, &ranges, q.gap_us, ISLAND_EDGE_US);
    let mut rows = island_fixes(conn, &islands).await?;
    rows.sort_unstable_by_key(|r| (r.device_pk, r.ts));
    let loaded: Vec<(i64, Micros)> = rows.iter().map(|r| (r.device_pk, r.ts)).collect();
    let edges = IslandEdges::of(&islands, &loaded, q.gap_us);
    if !edges.is_empty() {
        rows.extend(edge_fixes(conn, &edges).await?);
    }
    Ok(island_rows_near(rows, &q.bx))
}

/// How far before its first hit and after its last an island's fixes are read whole (see
/// [`Island`]): twice the one-minute reporting interval that is usual for tags, so the
/// read holds the hits' neighbours even when a fix or two is late or lost; when it holds
/// none, [`edge_fixes`] asks for the neighbour (a third statement). Measured on the bench
/// (docs/BENCHMARKS.md "Crime-scene: the hits filter, the islands' edges and the ids"): the islands'
/// read returned a quarter fewer rows than with the whole `gap` and took a fifth less time.
const ISLAND_EDGE_US: i64 = 120 * 1_000_000;

/// Positioned, attributed fixes as the scene reads them; columns as stored, decoded by
/// position (the reads return thousands of rows, and sqlx's by-name decoding looked each
/// column's name up in a map, row after row).
type SceneTuple = (i32, Micros, i32, i32, i32, Option<f32>);

fn scene_row((d, ts, s, lat_e7, lon_e7, accuracy_m): SceneTuple) -> SceneRow {
    SceneRow {
        device_pk: i64::from(d),
        ts,
        subject_pk: i64::from(s),
        lat_e7,
        lon_e7,
        accuracy_m,
        prev_ts: None,
    }
}

/// Device keys for an `int4[]` parameter (read from the INTEGER column, so always in range).
fn int4_keys(keys: impl Iterator<Item = i64>) -> Vec<i32> {
    keys.map(|d| i32::try_from(d).unwrap_or(i32::MAX)).collect()
}

/// Every positioned, attributed fix of each island's `read`.
async fn island_fixes(conn: &mut PgConnection, islands: &[Island]) -> Result<Vec<SceneRow>> {
    let rows: Vec<SceneTuple> = sqlx::query_as(
        "SELECT g.device_pk, g.ts, g.subject_pk, g.lat_e7, g.lon_e7, g.accuracy_m \
         FROM UNNEST($1::int4[], $2::int8[], $3::int8[]) AS j(d, a, b) \
         CROSS JOIN LATERAL ( \
             SELECT device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_m FROM fixes \
             WHERE device_pk = j.d AND ts BETWEEN j.a AND j.b \
               AND lat_e7 IS NOT NULL AND lon_e7 IS NOT NULL AND subject_pk IS NOT NULL) g",
    )
    .bind(int4_keys(islands.iter().map(|i| i.device_pk)))
    .bind(islands.iter().map(|i| i.read.0).collect::<Vec<_>>())
    .bind(islands.iter().map(|i| i.read.1).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(scene_row).collect())
}

/// The latest positioned, attributed fix of each of `edges.before`, and the earliest of
/// each of `edges.after`, by key seeks.
async fn edge_fixes(conn: &mut PgConnection, edges: &IslandEdges) -> Result<Vec<SceneRow>> {
    let rows: Vec<SceneTuple> = sqlx::query_as(
        "SELECT g.* FROM UNNEST($1::int4[], $2::int8[], $3::int8[]) AS j(d, a, b) \
         CROSS JOIN LATERAL ( \
             SELECT device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_m FROM fixes \
             WHERE device_pk = j.d AND ts BETWEEN j.a AND j.b \
               AND lat_e7 IS NOT NULL AND lon_e7 IS NOT NULL AND subject_pk IS NOT NULL \
             ORDER BY ts DESC LIMIT 1) g \
         UNION ALL \
         SELECT g.* FROM UNNEST($4::int4[], $5::int8[], $6::int8[]) AS j(d, a, b) \
         CROSS JOIN LATERAL ( \
             SELECT device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_m FROM fixes \
             WHERE device_pk = j.d AND ts BETWEEN j.a AND j.b \
               AND lat_e7 IS NOT NULL AND lon_e7 IS NOT NULL AND subject_pk IS NOT NULL \
             ORDER BY ts LIMIT 1) g",
    )
    .bind(int4_keys(edges.before.iter().map(|e| e.0)))
    .bind(edges.before.iter().map(|e| e.1).collect::<Vec<_>>())
    .bind(edges.before.iter().map(|e| e.2).collect::<Vec<_>>())
    .bind(int4_keys(edges.after.iter().map(|e| e.0)))
    .bind(edges.after.iter().map(|e| e.1).collect::<Vec<_>>())
    .bind(edges.after.iter().map(|e| e.2).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(scene_row).collect())
}

pub(super) async fn trail_page(
    conn: &mut PgConnection,
    subject_pk: i64,
    from: Micros,
    to: Micros,
    after: Option<(Micros, i64)>,
    limit: i64,
) -> Result<Vec<FixRow>> {
    let (after_ts, after_dev) = after.unwrap_or((i64::MIN, i64::MIN));
    let rows = sqlx::query(&format!(
        "SELECT {FIX_SELECT} FROM fixes \
         WHERE device_pk IN (SELECT device_pk FROM device_assignments WHERE subject_pk = $1) \
           AND subject_pk = $1 AND ts BETWEEN $2 AND $3 AND (ts, device_pk::int8) > ($4, $5) \
         ORDER BY ts, device_pk LIMIT $6"
    ))
    .bind(subject_pk)
    .bind(from)
    .bind(to)
    .bind(after_ts)
    .bind(after_dev)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    fixes(&rows)
}

pub(super) async fn device_ids(
    conn: &mut PgConnection,
    pks: &[i64],
) -> Result<HashMap<i64, String>> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT pk, id FROM devices WHERE pk = ANY($1)")
        .bind(pks)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

pub(super) async fn subject_ids(
    conn: &mut PgConnection,
    pks: &[i64],
) -> Result<HashMap<i64, String>> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT pk, id FROM subjects WHERE pk = ANY($1)")
        .bind(pks)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// External ids of devices and of subjects by store key (for
/// [`Store::scene_audited`](super::Store::scene_audited)): those the store has read before
/// from its memory ([`Ids`]), the others in one read, which it then remembers.
pub(super) async fn external_ids(
    conn: &mut PgConnection,
    ids: &Ids,
    device_pks: &[i64],
    subject_pks: &[i64],
) -> Result<(HashMap<i64, String>, HashMap<i64, String>)> {
    let mut found = ids.lookup(device_pks, subject_pks);
    if found.missing_devices.is_empty() && found.missing_subjects.is_empty() {
        return Ok((found.devices, found.subjects));
    }
    let rows: Vec<(bool, i64, String)> = sqlx::query_as(
        "SELECT false, pk, id FROM devices WHERE pk = ANY($1) \
         UNION ALL SELECT true, pk, id FROM subjects WHERE pk = ANY($2)",
    )
    .bind(&found.missing_devices)
    .bind(&found.missing_subjects)
    .fetch_all(conn)
    .await?;
    let (mut devices, mut subjects) = (HashMap::new(), HashMap::new());
    for (is_subject, pk, id) in rows {
        if is_subject {
            &mut subjects
        } else {
            &mut devices
        }
        .insert(pk, id);
    }
    ids.learn(&devices, &subjects);
    found.devices.extend(devices);
    found.subjects.extend(subjects);
    Ok((found.devices, found.subjects))
}

/// Appends in the caller's transaction, in one statement: the update of the chain's head
/// row (migration postgres/0007) takes that row's lock, which serialises appenders (held to
/// commit or rollback), assigns the id and computes the hash from the canonical encoding
/// around the id; the insert takes both from the updated row. An update that waited for
/// another appender's lock works on the row that appender committed (READ COMMITTED
/// re-evaluates a waited-for row), so it always chains onto the newest entry. The hash is
/// computed again here and the entry refused when the two disagree.
pub(super) async fn append_audit(
    conn: &mut PgConnection,
    mut draft: AuditDraft,
) -> Result<AuditRecord> {
    let (before_id, after_id) = draft.canonical_around_id();
    let (id, prev, hash): (i64, String, String) = sqlx::query_as(
        "WITH h AS ( \
             UPDATE audit_head SET entry = entry + 1, prev_hash = hash, \
                 hash = encode(sha256(decode(hash, 'hex') || $1::bytea || int8send(entry + 1) \
                                      || $2::bytea), 'hex') \
             WHERE id = 1 RETURNING entry, prev_hash, hash) \
         INSERT INTO audit (id, at, actor, actor_name, role, action, parameters, justification, \
             subject_ids, result_count, prev_hash, hash) \
         SELECT h.entry, $3, $4, $5, $6, $7, $8, $9, $10, $11, h.prev_hash, h.hash FROM h \
         RETURNING id, prev_hash, hash",
    )
    .bind(before_id)
    .bind(after_id)
    .bind(draft.at_us)
    .bind(draft.actor)
    .bind(&draft.actor_name)
    .bind(&draft.role)
    .bind(&draft.action)
    .bind(draft.parameters.to_string())
    .bind(draft.justification.as_ref().map(|j| j.to_string()))
    .bind(serde_json::to_string(&draft.subject_ids).unwrap_or_else(|_| "[]".to_owned()))
    .bind(draft.result_count)
    .fetch_one(&mut *conn)
    .await?;
    draft.id = id;
    let rec = seal(&prev, draft).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    if rec.hash != hash {
        return Err(sqlx::Error::Decode(Box::new(ChainError::HashDisagrees { id })).into());
    }
    Ok(rec)
}

impl PgStore {
    pub async fn audit_page(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM audit WHERE ($1::int8 IS NULL OR at >= $1) AND ($2::int8 IS NULL OR at <= $2) \
             AND ($3::int8 IS NULL OR actor = $3) \
             AND ($4::text IS NULL OR strpos(subject_ids, '\"' || $4 || '\"') > 0) \
             AND ($5::int8 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6",
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

    /// Walks the chain in pages, requiring it to hold the head `audit_head` recorded when
    /// the walk began ([`Verifier::expecting_head`]): entries deleted from the end show.
    /// A missing head row is an error, as it is for every append.
    pub async fn verify_audit(&self) -> Result<VerifyReport> {
        let (entry, hash): (i64, String) =
            sqlx::query_as("SELECT entry, hash FROM audit_head WHERE id = 1")
                .fetch_one(self.pool())
                .await?;
        let mut v = Verifier::expecting_head(entry, &hash);
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query("SELECT * FROM audit WHERE id > $1 ORDER BY id LIMIT $2")
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
        let mut counts = PurgeCounts::default();
        for d in devices {
            counts.fixes += sqlx::query("DELETE FROM fixes WHERE device_pk = $1 AND ts < $2")
                .bind(d as i32)
                .bind(cutoff)
                .execute(self.pool())
                .await?
                .rows_affected();
        }
        counts.segments = sqlx::query("DELETE FROM fix_segments WHERE t1 < $1")
            .bind(cutoff)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(counts)
    }
}
