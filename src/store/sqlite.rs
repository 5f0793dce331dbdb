//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a commit
//! is on disk (the WAL fsynced) before it returns — what ingest's acknowledgement promises.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};

use std::sync::Arc;

use super::sqlite_lawful::{on_handle, plan_without_bound_values};
use super::sqlite_tail::{decode, encode, Chunk, Seen, Tail, CHUNK_ROWS};

use super::{
    rows_where, DeviceRow, FixRow, NewSubject, Result, StoreError, SubjectRow, Upkeep, UserRow,
};
use crate::model::fix::lag_ms;
use crate::model::Micros;
use crate::query::cells::fix_key;

/// The embedded store. Fixes are acknowledged through an append-only log and an
/// in-memory tail before they reach `fixes` (see `store::sqlite_tail`).
///
/// `gate`, the write gate, is held by every transaction that writes the log or `fixes`
/// or changes the tail's membership, and by every audited transaction ([`super::LawfulTx`],
/// which takes SQLite's write lock at `BEGIN IMMEDIATE`). SQLite has one writer at a time;
/// queueing for it here, in order, replaces its busy handler, which polls with sleeps of
/// up to 100 ms: under load a group commit waiting for an alert write sometimes slept for
/// most of a second.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    pub(super) tail: Arc<Tail>,
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Compaction's own connection ([`SqliteStore::move_chunk`]): opened on first use and
    /// again after a failed step.
    compactor: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    compactor_options: Arc<SqliteConnectOptions>,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn user(r: &SqliteRow) -> std::result::Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        device_pk: r.try_get("device_pk")?,
        token_hash: r.try_get("token_hash")?,
    })
}

fn subject(r: &SqliteRow) -> std::result::Result<SubjectRow, sqlx::Error> {
    Ok(SubjectRow {
        pk: r.try_get("pk")?,
        id: r.try_get("id")?,
        display_name: r.try_get("display_name")?,
        borough: r.try_get("borough")?,
        officer_id: r.try_get("officer_id")?,
        timezone: r.try_get("timezone")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn fix(r: &SqliteRow) -> std::result::Result<FixRow, sqlx::Error> {
    let real = |name: &str| -> std::result::Result<Option<f32>, sqlx::Error> {
        Ok(r.try_get::<Option<f64>, _>(name)?.map(|v| v as f32))
    };
    let (lat_e7, lon_e7) = (r.try_get("lat_e7")?, r.try_get("lon_e7")?);
    Ok(FixRow {
        device_pk: r.try_get("device_pk")?,
        ts: r.try_get("ts")?,
        subject_pk: r.try_get("subject_pk")?,
        lat_e7,
        lon_e7,
        accuracy_m: real("accuracy_m")?,
        source: r.try_get("source")?,
        speed_mps: real("speed_mps")?,
        heading_deg: real("heading_deg")?,
        battery_pct: real("battery_pct")?,
        flags: r.try_get("flags")?,
        received_at: r.try_get("received_at")?,
        // not a column of `fixes` (migration sqlite/0005)
        cell: FixRow::cell_of(lat_e7, lon_e7),
    })
}

/// A fix's columns as [`fix`] reads them, decoded from `fixes`' storage (migration
/// sqlite/0005): values in hundredths, `received_at` as a lag after `ts` in whole
/// milliseconds (migration sqlite/0007).
pub(super) const FIX_COLUMNS: &str = "device_pk, ts, subject_pk, lat_e7, lon_e7, \
    accuracy_cm / 100.0 AS accuracy_m, source, speed_cmps / 100.0 AS speed_mps, \
    heading_cdeg / 100.0 AS heading_deg, battery_cpct / 100.0 AS battery_pct, flags, \
    ts + received_lag_ms * 1000 AS received_at";

/// `v × 100` as `fixes` stores it: the whole number of hundredths when that reads back as
/// exactly `v` (always, for values ingest rounded to 0.01 below about 80 km), so that SQLite
/// writes it as a small integer; otherwise the exact product, which reads back as `v` too
/// (an `f32` survives `× 100 ÷ 100` in `f64`).
pub(super) fn hundredths_of(v: Option<f32>) -> Option<f64> {
    v.map(|v| {
        let x = f64::from(v) * 100.0;
        let whole = x.round();
        if (whole / 100.0) as f32 == v {
            whole
        } else {
            x
        }
    })
}

/// Width of a `fix_cells` time bucket (µs): one row per device, cell and minute.
pub(super) const CELL_MINUTE_US: i64 = 60_000_000;

/// How long a writer waits for its turn (the write gate, SQLite's busy handler).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the background checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A WAL longer than this (frames of 4 KiB) is caught up under the write gate, so that the
/// next writer starts it again from the beginning instead of growing it.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Copies the WAL into the database file once a second, on its own connection, while
/// writers go on (a PASSIVE checkpoint takes no write lock). A checkpoint inside a commit
/// (SQLite's default) made whichever group commit crossed the limit also copy and fsync
/// every page since the last one. A WAL that a passive pass cannot bring back to its start
/// (writers keep appending) gets a second pass under the write gate, which leaves it fully
/// copied with no writer active, so the next writer restarts it. Ends when the pool closes
/// or the store is dropped (`gate` no longer upgrades).
async fn checkpointer(pool: SqlitePool, gate: std::sync::Weak<tokio::sync::Mutex<()>>) {
    async fn passive(pool: &SqlitePool) -> std::result::Result<i64, sqlx::Error> {
        let (_busy, log, _done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await?;
        Ok(log)
    }
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(gate) = gate.upgrade() else {
            return;
        };
        if pool.is_closed() {
            return;
        }
        let pass = match passive(&pool).await {
            Ok(log) if log > WAL_RESTART_FRAMES => {
                let _gate = gate.lock().await;
                passive(&pool).await.map(|_| ())
            }
            other => other.map(|_| ()),
        };
        if let Err(e) = pass {
            // a full disk or a closing pool; the next tick tries again
            tracing::debug!(error = %e, "checkpoint failed");
        }
    }
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &super::StoreOptions) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is fsynced at every commit, so an acknowledged fix survives a
            // power cut, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .statement_cache_capacity(512)
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // checkpoints run in the background ([`checkpointer`]), not inside whichever
            // commit crosses the WAL size limit
            .pragma("wal_autocheckpoint", "0");
        if let Some(parent) = opts.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Open(format!("{}: {e}", parent.display())))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            // no ping before handing a connection out: a file's connection has no server
            // to lose, and the release check below already ran on it (the ping is a hop to
            // sqlx's worker thread on every request's path)
            .test_before_acquire(false)
            // A COMMIT that fails (disk full, I/O error) leaves sqlx counting the transaction
            // as open; the rollback it then queues either fails (SQLite already rolled back)
            // or, in the savepoint sqlx nests in such a connection's next transaction, only
            // rolls back to the savepoint and keeps SQLite's transaction, and its write lock,
            // open. Back in the pool, such a connection refuses every `BEGIN IMMEDIATE` or
            // locks every writer out until it is closed: ingest stayed down after the disk
            // had space again (tests/faults.rs). The ping runs behind the queued rollback; a
            // connection still in a transaction after it is closed, not reused.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    plan_without_bound_values(conn)
                        .await
                        .map_err(|e| sqlx::Error::Configuration(Box::new(e)))
                })
            })
            .after_release(|conn, _| {
                Box::pin(async move {
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let store = Self {
            pool,
            tail: Arc::new(Tail::new(options.compact_rows)),
            gate: Arc::new(tokio::sync::Mutex::new(())),
            compactor: Arc::new(tokio::sync::Mutex::new(None)),
            compactor_options: Arc::new(opts.synchronous(SqliteSynchronous::Normal)),
        };
        store.load_log().await?;
        tokio::spawn(checkpointer(
            store.pool.clone(),
            Arc::downgrade(&store.gate),
        ));
        Ok(store)
    }

    /// Waits for the write gate (see [`SqliteStore`]), as long as SQLite's own busy
    /// timeout would have: a writer that cannot get its turn fails as unavailable (503 with
    /// `Retry-After` on the API) instead of waiting for ever behind a stuck transaction.
    pub(super) async fn write_gate(&self) -> Result<tokio::sync::OwnedMutexGuard<()>> {
        tokio::time::timeout(BUSY_TIMEOUT, self.gate.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Db(sqlx::Error::PoolTimedOut))
    }

    /// Brings the ingest log's rows back into the tail after a restart, leaving out those
    /// an interrupted compaction had already moved into `fixes`.
    async fn load_log(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        // (in place: after a crash with a full tail that is ~10^5 key look-ups)
        let logged = on_handle(&mut conn, |db| {
            let mut exists = db.prepare("SELECT 1 FROM fixes WHERE device_pk = ? AND ts = ?")?;
            let mut st = db.prepare("SELECT seq, body FROM fix_log ORDER BY seq")?;
            let mut rows = st.query([])?;
            let mut logged: Vec<(i64, std::result::Result<Vec<FixRow>, String>)> = Vec::new();
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                let body: Vec<u8> = r.get(1)?;
                let kept = match decode(&body) {
                    Ok(fixes) => {
                        let mut keep = Vec::with_capacity(fixes.len());
                        for f in fixes {
                            if !exists.exists(rusqlite::params![f.device_pk, f.ts])? {
                                keep.push(f);
                            }
                        }
                        Ok(keep)
                    }
                    Err(e) => Err(e),
                };
                logged.push((seq, kept));
            }
            Ok(logged)
        })
        .await?;
        for (seq, kept) in logged {
            let rows = kept.map_err(|e| StoreError::Open(format!("fix_log row {seq}: {e}")))?;
            self.tail.append(seq, rows);
        }
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(skip(self, token_hash))]
    pub async fn create_user(
        &self,
        name: &str,
        role: &str,
        device_pk: Option<i64>,
        token_hash: &[u8],
    ) -> Result<UserRow> {
        let r = sqlx::query(
            "INSERT INTO users (name, role, device_pk, token_hash, created_at) VALUES (?, ?, ?, ?, ?) \
             RETURNING id, name, role, device_pk, token_hash",
        )
        .bind(name)
        .bind(role)
        .bind(device_pk)
        .bind(token_hash)
        .bind(crate::model::time::now_micros())
        .fetch_one(&self.pool)
        .await?;
        Ok(user(&r)?)
    }

    /// Replaces a user's token digest; false when there is no such user. Revocation stores
    /// the digest of a fresh token that is never shown, so no token matches the user.
    #[tracing::instrument(skip(self, token_hash))]
    pub async fn replace_token(&self, user_id: i64, token_hash: &[u8]) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET token_hash = ? WHERE id = ?")
            .bind(token_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        let rows =
            sqlx::query("SELECT id, name, role, device_pk, token_hash FROM users ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(user)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub async fn user_by_token(&self, token_hash: &[u8]) -> Result<Option<UserRow>> {
        let r = sqlx::query(
            "SELECT id, name, role, device_pk, token_hash FROM users WHERE token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(user).transpose()?)
    }

    #[tracing::instrument(skip(self, s), fields(subject = %s.id))]
    pub async fn create_subject(&self, s: &NewSubject) -> Result<SubjectRow> {
        let r = sqlx::query(
            "INSERT INTO subjects (id, display_name, borough, officer_id, timezone, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&s.id)
        .bind(&s.display_name)
        .bind(&s.borough)
        .bind(s.officer_id)
        .bind(&s.timezone)
        .bind(crate::model::time::now_micros())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("subject {}", s.id))
            } else {
                e.into()
            }
        })?;
        Ok(subject(&r)?)
    }

    pub async fn subject(&self, id: &str) -> Result<Option<SubjectRow>> {
        let r = sqlx::query("SELECT * FROM subjects WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(subject).transpose()?)
    }

    pub async fn subjects(&self) -> Result<Vec<SubjectRow>> {
        let rows = sqlx::query("SELECT * FROM subjects ORDER BY pk")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(subject)
            .collect::<std::result::Result<_, _>>()?)
    }

    #[tracing::instrument(skip(self))]
    pub async fn create_device(&self, id: &str, subject_pk: i64, now: Micros) -> Result<DeviceRow> {
        let mut tx = self.pool.begin().await?;
        let pk: i64 = sqlx::query_scalar(
            "INSERT INTO devices (id, subject_pk, created_at) VALUES (?, ?, ?) RETURNING pk",
        )
        .bind(id)
        .bind(subject_pk)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("device {id}"))
            } else {
                e.into()
            }
        })?;
        sqlx::query(
            "INSERT INTO device_assignments (device_pk, subject_pk, from_us) VALUES (?, ?, ?)",
        )
        .bind(pk)
        .bind(subject_pk)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DeviceRow {
            pk,
            id: id.to_owned(),
            subject_pk: Some(subject_pk),
            subject_id: None,
        })
    }

    #[tracing::instrument(skip(self))]
    pub async fn reassign_device(
        &self,
        device_pk: i64,
        subject_pk: i64,
        now: Micros,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE device_assignments SET to_us = ? WHERE device_pk = ? AND to_us IS NULL",
        )
        .bind(now)
        .bind(device_pk)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO device_assignments (device_pk, subject_pk, from_us) VALUES (?, ?, ?) \
             ON CONFLICT (device_pk, from_us) DO UPDATE SET subject_pk = excluded.subject_pk, to_us = NULL",
        )
        .bind(device_pk)
        .bind(subject_pk)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE devices SET subject_pk = ? WHERE pk = ?")
            .bind(subject_pk)
            .bind(device_pk)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRow>> {
        let rows = sqlx::query(
            "SELECT d.pk, d.id, d.subject_pk, s.id AS subject_id FROM devices d \
             LEFT JOIN subjects s ON s.pk = d.subject_pk ORDER BY d.pk",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceRow {
                    pk: r.try_get("pk")?,
                    id: r.try_get("id")?,
                    subject_pk: r.try_get("subject_pk")?,
                    subject_id: r.try_get("subject_id")?,
                })
            })
            .collect()
    }

    /// Acknowledges a group of fixes durably (distinct keys: [`super::Store::insert_fixes`]
    /// sets later copies aside): per row, whether it was new. The new rows
    /// are appended to the ingest log as one row and join the tail (see
    /// `store::sqlite_tail`); the long segments they form are indexed in the same
    /// transaction. Run in place, through rusqlite on the transaction's own handle
    /// (`on_handle`): through sqlx each bound value and each returned key is a message to
    /// and from its worker thread, which at tens of thousands of fixes a second cost more
    /// than SQLite's own work.
    #[tracing::instrument(skip_all, fields(rows = rows.len()))]
    pub(super) async fn insert_fixes(&self, rows: &[FixRow]) -> Result<Vec<bool>> {
        let _gate = self.write_gate().await?;
        let tail = &self.tail;
        // IMMEDIATE: the transaction reads before it writes, and a deferred one could not
        // take the write lock once another writer had committed after its first read
        // (SQLITE_BUSY at once, without the busy timeout)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (stored, seq) = on_handle(&mut tx, |db| {
            let mut newest = db.prepare("SELECT max(ts) FROM fixes WHERE device_pk = ?")?;
            for d in tail.unknown_devices(rows) {
                tail.set_stored_max(d, newest.query_row([d], |r| r.get(0))?);
            }
            let mut exists = db.prepare("SELECT 1 FROM fixes WHERE device_pk = ? AND ts = ?")?;
            let stored = tail
                .classify(rows)
                .into_iter()
                .zip(rows)
                .map(|(seen, r)| match seen {
                    Seen::InTail => Ok(false),
                    Seen::New => Ok(true),
                    Seen::Check => Ok(!exists.exists(rusqlite::params![r.device_pk, r.ts])?),
                })
                .collect::<rusqlite::Result<Vec<bool>>>()?;
            let new: Vec<&FixRow> = rows
                .iter()
                .zip(&stored)
                .filter(|(_, s)| **s)
                .map(|(r, _)| r)
                .collect();
            if new.is_empty() {
                return Ok((stored, 0));
            }
            let body =
                encode(&new).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            db.execute("INSERT INTO fix_log (body) VALUES (?)", [body])?;
            let seq = db.last_insert_rowid();
            super::sqlite_lawful::index_segments(db, tail, rows, &stored)?;
            Ok((stored, seq))
        })
        .await?;
        tx.commit().await?;
        let new = rows_where(rows, &stored);
        if !new.is_empty() {
            self.tail.append(seq, new);
        }
        Ok(stored)
    }

    /// Compaction after a group of `ingested` fixes (0 when idle): one chunk if one is due,
    /// and, while the tail holds more than its limit, more chunks until as many fixes have
    /// moved as were just ingested, so that compaction keeps pace with ingest and the tail
    /// (memory) stays bounded under sustained load. The write gate is taken per chunk, so
    /// an audited read waits for one chunk at most.
    pub(super) async fn compact_step(&self, ingested: usize) -> Result<Upkeep> {
        let mut moved = 0;
        loop {
            let chunk = {
                let _gate = self.write_gate().await?;
                // behind: what is left of the group's worth in one transaction
                let rows = if self.tail.over_limit() {
                    CHUNK_ROWS.max(ingested.saturating_sub(moved))
                } else {
                    CHUNK_ROWS
                };
                let Some(chunk) = self.tail.next_chunk(rows) else {
                    break;
                };
                self.move_chunk(&chunk).await?;
                self.tail.compacted(&chunk);
                chunk
            };
            moved += chunk.rows.len();
            if !(self.tail.over_limit() && moved < ingested) {
                break;
            }
        }
        Ok(if moved == 0 {
            Upkeep::Idle
        } else {
            Upkeep::Step {
                more: self.tail.compacting(),
            }
        })
    }

    /// Moves the whole tail into `fixes` now, whether due or not.
    pub(super) async fn compact_all(&self) -> Result<()> {
        let _gate = self.write_gate().await?;
        while let Some(chunk) = self.tail.next_chunk_now() {
            self.move_chunk(&chunk).await?;
            self.tail.compacted(&chunk);
        }
        Ok(())
    }

    /// Moves `chunk` into `fixes` and `fix_cells` and deletes the log rows it empties, in one
    /// transaction on compaction's own connection, which commits with `synchronous =
    /// NORMAL`: without an fsync of its own, one fewer in the ingest writer's path per step.
    /// Safe because the step only moves what the log already holds durably. A power cut can
    /// lose it, but only together with every later commit: WAL frames are appended in
    /// order, the next `FULL` commit's fsync covers this one's frames too, and recovery keeps
    /// the commits up to the first it cannot verify. A lost step leaves its rows in the log,
    /// and the restart reloads them into the tail.
    async fn move_chunk(&self, chunk: &Chunk) -> Result<()> {
        let mut slot = self.compactor.lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => {
                let mut conn = SqliteConnection::connect_with(&self.compactor_options).await?;
                plan_without_bound_values(&mut conn).await?;
                conn
            }
        };
        // on error the connection is dropped: a failed COMMIT can leave it inside its
        // transaction (see the pool's `after_release` in [`SqliteStore::connect`])
        Self::move_on(&mut conn, chunk).await?;
        *slot = Some(conn);
        Ok(())
    }

    async fn move_on(conn: &mut SqliteConnection, chunk: &Chunk) -> Result<()> {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        on_handle(&mut tx, |db| {
            let mut st = db.prepare(
                "INSERT INTO fixes (device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_cm, \
                 source, speed_cmps, heading_cdeg, battery_cpct, flags, received_lag_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_pk, ts) DO NOTHING",
            )?;
            let mut cells = db.prepare(
                "INSERT INTO fix_cells (cell, minute, device_pk) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            )?;
            // the chunk is sorted by device, then time: one fix_cells insert per new cell-minute
            let mut last_cell: Option<(i64, i64, i64)> = None;
            for r in &chunk.rows {
                st.execute(rusqlite::params![
                    r.device_pk,
                    r.ts,
                    r.subject_pk,
                    r.lat_e7,
                    r.lon_e7,
                    hundredths_of(r.accuracy_m),
                    r.source,
                    hundredths_of(r.speed_mps),
                    hundredths_of(r.heading_deg),
                    hundredths_of(r.battery_pct),
                    r.flags,
                    lag_ms(r.ts, r.received_at),
                ])?;
                // a fix without a position has no cell (`FixRow::cell_of`); the row's key
                // splits the cell by its children (`cells::fix_key`)
                if let (Some(cell), Some(pos)) = (r.cell, r.position()) {
                    let key = (
                        fix_key(cell, pos),
                        r.ts.div_euclid(CELL_MINUTE_US),
                        r.device_pk,
                    );
                    if last_cell != Some(key) {
                        cells.execute(rusqlite::params![key.0, key.1, key.2])?;
                        last_cell = Some(key);
                    }
                }
            }
            if let Some(upto) = chunk.delete_log_upto {
                db.execute("DELETE FROM fix_log WHERE seq <= ?", [upto])?;
            }
            Ok(())
        })
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn device_fixes(
        &self,
        device_pk: i64,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<FixRow>> {
        // the tail first, then the table (see sqlite_tail's module doc)
        let mut out = self.tail.range(device_pk, from, to);
        let rows = sqlx::query(&format!(
            "SELECT {FIX_COLUMNS} FROM fixes WHERE device_pk = ? AND ts BETWEEN ? AND ? ORDER BY ts"
        ))
        .bind(device_pk)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            out.push(fix(r)?);
        }
        out.sort_by_key(|r| r.ts);
        out.dedup_by_key(|r| r.ts);
        Ok(out)
    }

    /// Exact: no compaction step runs meanwhile, and at rest no key is in both places.
    pub async fn count_fixes(&self) -> Result<i64> {
        let _gate = self.write_gate().await?;
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM fixes")
            .fetch_one(&self.pool)
            .await?;
        Ok(stored + self.tail.len() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::hundredths_of;
    use crate::model::fix::hundredths;
    use proptest::prelude::*;

    /// Every pooled connection plans without the bound values: with `ANALYZE`'s histograms
    /// stored, a statement comparing an indexed column with a bound value is run for two
    /// values without being compiled again (it was at every step before
    /// `plan_without_bound_values`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_are_not_recompiled_for_each_bound_value() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = super::SqliteStore::connect(&url, &super::super::StoreOptions::default())
            .await
            .unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let recompiled = super::on_handle(&mut conn, |db| {
            db.execute_batch(
                "CREATE TABLE skewed (a INTEGER, b INTEGER); CREATE INDEX skewed_a ON skewed (a); \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
                 INSERT INTO skewed SELECT CASE WHEN i % 10 = 0 THEN i ELSE 7 END, i FROM n; \
                 ANALYZE;",
            )?;
            let mut st = db.prepare("SELECT count(*) FROM skewed WHERE a = ?1")?;
            let common: i64 = st.query_row([7], |r| r.get(0))?;
            let rare: i64 = st.query_row([10], |r| r.get(0))?;
            assert_eq!((common, rare), (1800, 1));
            Ok(st.get_status(rusqlite::StatementStatus::RePrepare))
        })
        .await
        .unwrap();
        assert_eq!(recompiled, 0);
    }

    /// What a read gives back: SQLite divides the stored REAL by 100.0 in `f64`.
    fn read_back(stored: f64) -> f32 {
        (stored / 100.0) as f32
    }

    proptest! {
        #[test]
        fn any_value_reads_back_exactly(bits in any::<u32>()) {
            let v = f32::from_bits(bits);
            prop_assume!(v.is_finite());
            let stored = hundredths_of(Some(v)).unwrap();
            prop_assert_eq!(read_back(stored).to_bits(), v.to_bits());
        }

        #[test]
        fn values_as_ingest_keeps_them_are_stored_as_whole_numbers(x in 0.0..80_000.0f64) {
            let v = hundredths(x);
            let stored = hundredths_of(Some(v)).unwrap();
            prop_assert_eq!(stored.fract(), 0.0);
            prop_assert_eq!(read_back(stored), v);
        }
    }
}
