//! The production store: PostgreSQL. Same tables and meaning as the SQLite store; fixes are
//! written with one `INSERT … SELECT FROM UNNEST(arrays)` per group commit, so a commit of
//! thousands of fixes is a single statement and a single WAL flush (`synchronous_commit`
//! stays at its durable default).

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

use super::postgres_ids::Ids;
use super::postgres_newest::Newest;
use super::{
    mark_inserted, DeviceRow, FixRow, NewSubject, Result, StoreError, SubjectRow, UserRow,
};
use crate::model::Micros;

/// A pooled connection idle at least this long is pinged before it is handed out (see
/// [`PgStore::connect`]).
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The segment indexer's memory of each device's newest fix; its lock is also held by
    /// each insert from before its statement to after its commit (one insert at a time per
    /// store: they queue on `fix_writes`' row lock anyway).
    newest: Arc<tokio::sync::Mutex<Newest>>,
    /// External ids of devices and subjects already read, by store key.
    ids: Arc<Ids>,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn user(r: &PgRow) -> std::result::Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        device_pk: r.try_get("device_pk")?,
        token_hash: r.try_get("token_hash")?,
    })
}

fn subject(r: &PgRow) -> std::result::Result<SubjectRow, sqlx::Error> {
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

/// Fix columns as read, widened to the Rust row's types.
pub(super) const FIX_SELECT: &str = "device_pk::int8 AS device_pk, ts, subject_pk::int8 AS subject_pk, lat_e7, lon_e7, accuracy_m, source, speed_mps, heading_deg, battery_pct, flags, received_at, cell";

pub(super) fn fix(r: &PgRow) -> std::result::Result<FixRow, sqlx::Error> {
    Ok(FixRow {
        device_pk: r.try_get("device_pk")?,
        ts: r.try_get("ts")?,
        subject_pk: r.try_get("subject_pk")?,
        lat_e7: r.try_get("lat_e7")?,
        lon_e7: r.try_get("lon_e7")?,
        accuracy_m: r.try_get("accuracy_m")?,
        source: r.try_get("source")?,
        speed_mps: r.try_get("speed_mps")?,
        heading_deg: r.try_get("heading_deg")?,
        battery_pct: r.try_get("battery_pct")?,
        flags: r.try_get("flags")?,
        received_at: r.try_get("received_at")?,
        cell: r.try_get("cell")?,
    })
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(e.to_string()))?
            // No JIT compilation on the store's sessions. Every statement here is short and
            // index-driven, but the planner's cost of a crime-scene lookup at 10 M fixes
            // passes `jit_above_cost` and `jit_inline_above_cost`, and compiling it took
            // 30–550 ms of a query whose execution took 10–80 (auto_explain, docs/BENCHMARKS.md).
            .options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings every idle connection before handing it out, a round trip on
            // every request's path (a fifth of location-at-time's). sqlx also pings each
            // connection as it comes back to the pool, closing it if that fails, so only a
            // connection that has sat idle can have lost its server unseen: those are
            // pinged, the others handed straight out.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool,
            newest: Arc::default(),
            ids: Arc::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) fn ids(&self) -> &Ids {
        &self.ids
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
            "INSERT INTO users (name, role, device_pk, token_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
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
        let done = sqlx::query("UPDATE users SET token_hash = $1 WHERE id = $2")
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
            "SELECT id, name, role, device_pk, token_hash FROM users WHERE token_hash = $1",
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
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
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
        let r = sqlx::query("SELECT * FROM subjects WHERE id = $1")
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
            "INSERT INTO devices (id, subject_pk, created_at) VALUES ($1, $2, $3) RETURNING pk",
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
            "INSERT INTO device_assignments (device_pk, subject_pk, from_us) VALUES ($1, $2, $3)",
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
            "UPDATE device_assignments SET to_us = $1 WHERE device_pk = $2 AND to_us IS NULL",
        )
        .bind(now)
        .bind(device_pk)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO device_assignments (device_pk, subject_pk, from_us) VALUES ($1, $2, $3) \
             ON CONFLICT (device_pk, from_us) DO UPDATE SET subject_pk = excluded.subject_pk, to_us = NULL",
        )
        .bind(device_pk)
        .bind(subject_pk)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE devices SET subject_pk = $1 WHERE pk = $2")
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

    /// Inserts a group of fixes (distinct keys: [`super::Store::insert_fixes`] sets later
    /// copies aside; a key already stored is left as it is) and indexes the long segments
    /// they form, in one transaction; says per row whether it was inserted.
    #[tracing::instrument(skip_all, fields(rows = rows.len()))]
    pub(super) async fn insert_fixes(&self, rows: &[FixRow]) -> Result<Vec<bool>> {
        let mut newest = self.newest.lock().await;
        let written = self.insert_fixes_with(rows, &mut newest).await;
        if written.is_err() {
            newest.forget();
        }
        written
    }

    async fn insert_fixes_with(&self, rows: &[FixRow], newest: &mut Newest) -> Result<Vec<bool>> {
        let col = |f: &dyn Fn(&FixRow) -> Option<f32>| rows.iter().map(f).collect::<Vec<_>>();
        let mut tx = self.pool.begin().await?;
        // The count of writes to `fixes`, bumped and read under its row's lock (migration
        // postgres/0006), in the insert's own statement. The outer SELECT reads `w` before
        // `ins`, so the lock is held before any fix is inserted: two servers inserting the
        // same key queue on the row instead of deadlocking on each other's key.
        let (seq, devices, times): (i64, Option<Vec<i64>>, Option<Vec<i64>>) = sqlx::query_as(
            "WITH w AS (UPDATE fix_writes SET seq = seq + 1 WHERE id = 1 RETURNING seq), \
             ins AS (INSERT INTO fixes (device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_m, source, speed_mps, \
             heading_deg, battery_pct, flags, received_at, cell) \
             SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::int4[], $4::int4[], $5::int4[], $6::float4[], \
             $7::int2[], $8::float4[], $9::float4[], $10::float4[], $11::int2[], $12::int8[], $13::int8[]) \
             ON CONFLICT (device_pk, ts) DO NOTHING RETURNING device_pk, ts) \
             SELECT (SELECT seq FROM w), (SELECT array_agg(device_pk::int8) FROM ins), \
                    (SELECT array_agg(ts) FROM ins)",
        )
        .bind(rows.iter().map(|r| r.device_pk as i32).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ts).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.subject_pk.map(|v| v as i32)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.lat_e7).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.lon_e7).collect::<Vec<_>>())
        .bind(col(&|r| r.accuracy_m))
        .bind(rows.iter().map(|r| r.source).collect::<Vec<_>>())
        .bind(col(&|r| r.speed_mps))
        .bind(col(&|r| r.heading_deg))
        .bind(col(&|r| r.battery_pct))
        .bind(rows.iter().map(|r| r.flags).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.received_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.cell).collect::<Vec<_>>())
        .fetch_one(&mut *tx)
        .await?;
        newest.check(seq);
        let inserted: HashSet<(i64, i64)> = devices
            .unwrap_or_default()
            .into_iter()
            .zip(times.unwrap_or_default())
            .collect();
        let stored = mark_inserted(rows, &inserted);
        let learned =
            super::postgres_lawful::index_segments(&mut tx, rows, &stored, &inserted, newest)
                .await?;
        tx.commit().await?;
        newest.committed(seq, learned);
        Ok(stored)
    }

    pub async fn device_fixes(
        &self,
        device_pk: i64,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<FixRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {FIX_SELECT} FROM fixes WHERE device_pk = $1 AND ts BETWEEN $2 AND $3 ORDER BY ts"
        ))
        .bind(device_pk as i32)
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
