//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a commit
//! is on disk (the WAL fsynced) before it returns — what ingest's acknowledgement promises.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row};

use super::{
    mark_inserted, DeviceRow, FixRow, NewSubject, Result, StoreError, SubjectRow, UserRow,
};
use crate::model::Micros;

/// Rows per INSERT statement: 13 bound values each stays far below SQLite's variable limit,
/// and a fixed size lets the prepared statement be reused from the statement cache.
const ROWS_PER_INSERT: usize = 256;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
    Ok(FixRow {
        device_pk: r.try_get("device_pk")?,
        ts: r.try_get("ts")?,
        subject_pk: r.try_get("subject_pk")?,
        lat_e7: r.try_get("lat_e7")?,
        lon_e7: r.try_get("lon_e7")?,
        accuracy_m: r.try_get::<Option<f64>, _>("accuracy_m")?.map(|v| v as f32),
        source: r.try_get("source")?,
        speed_mps: r.try_get::<Option<f64>, _>("speed_mps")?.map(|v| v as f32),
        heading_deg: r
            .try_get::<Option<f64>, _>("heading_deg")?
            .map(|v| v as f32),
        battery_pct: r
            .try_get::<Option<f64>, _>("battery_pct")?
            .map(|v| v as f32),
        flags: r.try_get("flags")?,
        received_at: r.try_get("received_at")?,
        cell: r.try_get("cell")?,
    })
}

pub(super) const FIX_COLUMNS: &str = "device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_m, source, speed_mps, heading_deg, battery_pct, flags, received_at, cell";

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is fsynced at every commit, so an acknowledged fix survives a
            // power cut, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .statement_cache_capacity(512)
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        if let Some(parent) = opts.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Open(format!("{}: {e}", parent.display())))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            // A COMMIT that fails (disk full, I/O error) leaves sqlx counting the transaction
            // as open; the rollback it then queues either fails (SQLite already rolled back)
            // or, in the savepoint sqlx nests in such a connection's next transaction, only
            // rolls back to the savepoint and keeps SQLite's transaction, and its write lock,
            // open. Back in the pool, such a connection refuses every `BEGIN IMMEDIATE` or
            // locks every writer out until it is closed: ingest stayed down after the disk
            // had space again (tests/faults.rs). The ping runs behind the queued rollback; a
            // connection still in a transaction after it is closed, not reused.
            .after_release(|conn, _| {
                Box::pin(async move {
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
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

    #[tracing::instrument(skip_all, fields(rows = rows.len()))]
    pub async fn insert_fixes(&self, rows: &[FixRow]) -> Result<Vec<bool>> {
        let mut inserted = HashSet::with_capacity(rows.len());
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut qb = QueryBuilder::new(format!("INSERT INTO fixes ({FIX_COLUMNS}) "));
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.device_pk)
                    .push_bind(r.ts)
                    .push_bind(r.subject_pk)
                    .push_bind(r.lat_e7)
                    .push_bind(r.lon_e7)
                    .push_bind(r.accuracy_m)
                    .push_bind(r.source)
                    .push_bind(r.speed_mps)
                    .push_bind(r.heading_deg)
                    .push_bind(r.battery_pct)
                    .push_bind(r.flags)
                    .push_bind(r.received_at)
                    .push_bind(r.cell);
            });
            qb.push(" ON CONFLICT (device_pk, ts) DO NOTHING RETURNING device_pk, ts");
            let keys: Vec<(i64, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;
            inserted.extend(keys);
        }
        let stored = mark_inserted(rows, &inserted);
        super::sqlite_lawful::index_segments(&mut tx, rows, &stored, &inserted).await?;
        tx.commit().await?;
        Ok(stored)
    }

    pub async fn device_fixes(
        &self,
        device_pk: i64,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<FixRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {FIX_COLUMNS} FROM fixes WHERE device_pk = ? AND ts BETWEEN ? AND ? ORDER BY ts"
        ))
        .bind(device_pk)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(fix)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub async fn count_fixes(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM fixes")
            .fetch_one(&self.pool)
            .await?)
    }
}
