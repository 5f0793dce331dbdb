//! Zones, absences and alerts on both stores.
//!
//! These tables are small and written at human rates, so one body of SQL serves both
//! backends: statements are written with `?` placeholders and numbered (`$1`, `$2`, …) for
//! PostgreSQL by [`sql`]; every column is `BIGINT`/`INTEGER` or `TEXT` so rows decode the same.

use std::borrow::Cow;
use std::collections::HashMap;

use sqlx::Row;

use super::{LawfulTx, Result, Store, StoreError};
use crate::audit::chain::AuditDraft;
use crate::model::Micros;

/// Numbers `?` placeholders for PostgreSQL; SQLite takes them as they are.
fn sql(store: &Store, s: &'static str) -> Cow<'static, str> {
    numbered(matches!(store, Store::Postgres(_)), s)
}

/// [`sql`] for a statement run inside a [`LawfulTx`].
fn tx_sql(tx: &LawfulTx, s: &'static str) -> Cow<'static, str> {
    numbered(matches!(tx, LawfulTx::Postgres(_)), s)
}

fn numbered(postgres: bool, s: &'static str) -> Cow<'static, str> {
    if !postgres {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut n = 0;
    for c in s.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Runs `$body` with `$pool` bound to the backend's pool (the body compiles once per backend).
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Sqlite(s) => {
                let $pool = s.pool();
                $body
            }
            Store::Postgres(s) => {
                let $pool = s.pool();
                $body
            }
        }
    };
}

/// Runs `$body` with `$conn` bound to the connection of a [`LawfulTx`] (a write and its
/// audit entry in one transaction).
macro_rules! with_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            LawfulTx::Sqlite(t, ..) => {
                let $conn = &mut **t;
                $body
            }
            LawfulTx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

#[derive(Debug, Clone)]
pub struct NewZone {
    pub subject_pk: i64,
    pub kind: String,
    pub name: String,
    pub geometry: String,
    pub schedule: Option<String>,
    pub grace_s: i64,
    pub valid_from: Micros,
    pub valid_to: Option<Micros>,
    pub created_by: i64,
}

#[derive(Debug, Clone)]
pub struct ZoneRow {
    pub id: i64,
    pub subject_pk: i64,
    pub kind: String,
    pub name: String,
    pub geometry: String,
    pub schedule: Option<String>,
    pub grace_s: i64,
    pub valid_from: Micros,
    pub valid_to: Option<Micros>,
    pub created_at: Micros,
}

#[derive(Debug, Clone)]
pub struct AbsenceRow {
    pub id: i64,
    pub subject_pk: i64,
    pub from_us: Micros,
    pub to_us: Micros,
    pub reason: String,
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub id: i64,
    pub alert_type: String,
    pub subject_pk: i64,
    pub device_pk: i64,
    pub zone_id: Option<i64>,
    pub started_at: Micros,
    pub ended_at: Option<Micros>,
    pub detected_at: Micros,
    pub detected_late: bool,
    pub evidence_count: i64,
    /// Fix times of the evidence (µs).
    pub evidence: Vec<i64>,
    pub status: String,
    pub outcome: Option<String>,
    pub note: Option<String>,
    pub withdrawn_reason: Option<String>,
    pub updated_at: Micros,
}

#[derive(Debug, Clone)]
pub struct AlertEventRow {
    pub id: i64,
    pub alert_id: i64,
    pub at: Micros,
    pub kind: String,
    pub actor: Option<i64>,
    pub detail: String,
}

/// Which part of an alert a write changes (see [`LawfulTx::update_alert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFields {
    /// started/ended, zone, evidence, detected_late — the engine's
    Episode,
    /// status, outcome, note, withdrawn reason — the review's
    Review,
}

/// Filters of the alert list; `officer` restricts to that officer's caseload.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub status: Option<String>,
    pub subject_pk: Option<i64>,
    pub alert_type: Option<String>,
    pub since: Option<Micros>,
    pub officer: Option<i64>,
    /// Cursor: only alerts with a smaller id (newest first).
    pub before_id: Option<i64>,
    pub limit: i64,
}

fn zone_row<R: Row>(r: &R) -> std::result::Result<ZoneRow, sqlx::Error>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(ZoneRow {
        id: r.try_get("id")?,
        subject_pk: r.try_get("subject_pk")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        geometry: r.try_get("geometry")?,
        schedule: r.try_get("schedule")?,
        grace_s: r.try_get("grace_s")?,
        valid_from: r.try_get("valid_from")?,
        valid_to: r.try_get("valid_to")?,
        created_at: r.try_get("created_at")?,
    })
}

fn alert_row<R: Row>(r: &R) -> std::result::Result<AlertRow, sqlx::Error>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let evidence: String = r.try_get("evidence")?;
    Ok(AlertRow {
        id: r.try_get("id")?,
        alert_type: r.try_get("type")?,
        subject_pk: r.try_get("subject_pk")?,
        device_pk: r.try_get("device_pk")?,
        zone_id: r.try_get("zone_id")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        detected_at: r.try_get("detected_at")?,
        detected_late: r.try_get::<i64, _>("detected_late")? != 0,
        evidence_count: r.try_get("evidence_count")?,
        evidence: serde_json::from_str(&evidence).unwrap_or_default(),
        status: r.try_get("status")?,
        outcome: r.try_get("outcome")?,
        note: r.try_get("note")?,
        withdrawn_reason: r.try_get("withdrawn_reason")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// An alert change's event detail: the alert as the change left it.
fn change_detail(a: &AlertRow) -> String {
    serde_json::json!({"started_at": a.started_at, "ended_at": a.ended_at,
        "status": a.status, "outcome": a.outcome, "note": a.note,
        "withdrawn_reason": a.withdrawn_reason, "evidence_count": a.evidence_count})
    .to_string()
}

fn evidence_json(a: &AlertRow) -> String {
    serde_json::to_string(&a.evidence).unwrap_or_else(|_| "[]".into())
}

const ALERT_EVENT_SQL: &str =
    "INSERT INTO alert_events (alert_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)";

impl Store {
    /// Inserts a zone and its audit entry (built from the stored row by `entry`) in one
    /// transaction: a zone is never in force without its entry, nor an entry left without
    /// its zone, whatever fails or is killed in between.
    pub async fn insert_zone(
        &self,
        z: &NewZone,
        entry: impl FnOnce(&ZoneRow) -> AuditDraft,
    ) -> Result<ZoneRow> {
        let q = sql(
            self,
            "INSERT INTO zones (subject_pk, kind, name, geometry, schedule, grace_s, valid_from, valid_to, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        );
        let now = crate::model::time::now_micros();
        let mut tx = self.begin_lawful().await?;
        let row = with_tx!(&mut tx, |conn| {
            let r = sqlx::query(&q)
                .bind(z.subject_pk)
                .bind(&z.kind)
                .bind(&z.name)
                .bind(&z.geometry)
                .bind(&z.schedule)
                .bind(z.grace_s)
                .bind(z.valid_from)
                .bind(z.valid_to)
                .bind(now)
                .bind(z.created_by)
                .fetch_one(conn)
                .await?;
            zone_row(&r)?
        });
        tx.append_audit(entry(&row)).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Every zone, ended ones included (replays need the zones valid at each fix's time).
    pub async fn zones(&self) -> Result<Vec<ZoneRow>> {
        with_pool!(self, |pool| {
            let rows = sqlx::query("SELECT * FROM zones ORDER BY id")
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(zone_row)
                .collect::<std::result::Result<_, _>>()?)
        })
    }

    /// One subject's zones (ended ones included), newest first.
    pub async fn subject_zones(&self, subject_pk: i64) -> Result<Vec<ZoneRow>> {
        let q = sql(
            self,
            "SELECT * FROM zones WHERE subject_pk = ? ORDER BY id DESC",
        );
        with_pool!(self, |pool| {
            let rows = sqlx::query(&q).bind(subject_pk).fetch_all(pool).await?;
            Ok(rows
                .iter()
                .map(zone_row)
                .collect::<std::result::Result<_, _>>()?)
        })
    }

    pub async fn zone(&self, id: i64) -> Result<Option<ZoneRow>> {
        let q = sql(self, "SELECT * FROM zones WHERE id = ?");
        with_pool!(self, |pool| {
            let r = sqlx::query(&q).bind(id).fetch_optional(pool).await?;
            Ok(r.as_ref().map(zone_row).transpose()?)
        })
    }

    /// Ends a zone's validity at `at` (never erases it) and appends `entry`, in one
    /// transaction. Returns false if the zone had already ended (the entry is appended all
    /// the same: it records the request).
    pub async fn end_zone(&self, id: i64, at: Micros, entry: AuditDraft) -> Result<bool> {
        let q = sql(
            self,
            "UPDATE zones SET valid_to = ? WHERE id = ? AND (valid_to IS NULL OR valid_to > ?)",
        );
        let mut tx = self.begin_lawful().await?;
        let changed = with_tx!(&mut tx, |conn| {
            let done = sqlx::query(&q)
                .bind(at)
                .bind(id)
                .bind(at)
                .execute(conn)
                .await?;
            done.rows_affected() > 0
        });
        tx.append_audit(entry).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Inserts an absence and its audit entry (built from the stored row by `entry`) in one
    /// transaction, like [`Store::insert_zone`].
    pub async fn insert_absence(
        &self,
        subject_pk: i64,
        from_us: Micros,
        to_us: Micros,
        reason: &str,
        created_by: i64,
        entry: impl FnOnce(&AbsenceRow) -> AuditDraft,
    ) -> Result<AbsenceRow> {
        let q = sql(
            self,
            "INSERT INTO absences (subject_pk, from_us, to_us, reason, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        );
        let mut tx = self.begin_lawful().await?;
        let id: i64 = with_tx!(&mut tx, |conn| {
            sqlx::query_scalar(&q)
                .bind(subject_pk)
                .bind(from_us)
                .bind(to_us)
                .bind(reason)
                .bind(crate::model::time::now_micros())
                .bind(created_by)
                .fetch_one(conn)
                .await?
        });
        let row = AbsenceRow {
            id,
            subject_pk,
            from_us,
            to_us,
            reason: reason.to_owned(),
        };
        tx.append_audit(entry(&row)).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn absences(&self) -> Result<Vec<AbsenceRow>> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, subject_pk, from_us, to_us, reason FROM absences ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(AbsenceRow {
                        id: r.try_get("id")?,
                        subject_pk: r.try_get("subject_pk")?,
                        from_us: r.try_get("from_us")?,
                        to_us: r.try_get("to_us")?,
                        reason: r.try_get("reason")?,
                    })
                })
                .collect::<std::result::Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    pub async fn alert(&self, id: i64) -> Result<Option<AlertRow>> {
        let q = sql(self, "SELECT * FROM alerts WHERE id = ?");
        with_pool!(self, |pool| {
            let r = sqlx::query(&q).bind(id).fetch_optional(pool).await?;
            Ok(r.as_ref().map(alert_row).transpose()?)
        })
    }

    pub async fn alert_events(&self, alert_id: i64) -> Result<Vec<AlertEventRow>> {
        let q = sql(
            self,
            "SELECT id, alert_id, at, kind, actor, detail FROM alert_events WHERE alert_id = ? ORDER BY id",
        );
        with_pool!(self, |pool| {
            let rows = sqlx::query(&q).bind(alert_id).fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(AlertEventRow {
                        id: r.try_get("id")?,
                        alert_id: r.try_get("alert_id")?,
                        at: r.try_get("at")?,
                        kind: r.try_get("kind")?,
                        actor: r.try_get("actor")?,
                        detail: r.try_get("detail")?,
                    })
                })
                .collect::<std::result::Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// A device's alerts that are not withdrawn and touch `[from, ∞)`: what a replay from
    /// `from` may confirm, change or withdraw.
    pub async fn device_alerts_since(&self, device_pk: i64, from: Micros) -> Result<Vec<AlertRow>> {
        let q = sql(
            self,
            "SELECT * FROM alerts WHERE device_pk = ? AND status <> 'withdrawn' \
             AND (ended_at IS NULL OR ended_at >= ?) ORDER BY id",
        );
        with_pool!(self, |pool| {
            let rows = sqlx::query(&q)
                .bind(device_pk)
                .bind(from)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(alert_row)
                .collect::<std::result::Result<_, _>>()?)
        })
    }

    /// Alerts newest first, filtered.
    pub async fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRow>> {
        let q = sql(
            self,
            "SELECT a.* FROM alerts a JOIN subjects s ON s.pk = a.subject_pk \
             WHERE (? IS NULL OR a.status = ?) AND (? IS NULL OR a.subject_pk = ?) \
             AND (? IS NULL OR a.type = ?) AND (? IS NULL OR a.detected_at >= ?) \
             AND (? IS NULL OR s.officer_id = ?) AND (? IS NULL OR a.id < ?) \
             ORDER BY a.id DESC LIMIT ?",
        );
        with_pool!(self, |pool| {
            let rows = sqlx::query(&q)
                .bind(&f.status)
                .bind(&f.status)
                .bind(f.subject_pk)
                .bind(f.subject_pk)
                .bind(&f.alert_type)
                .bind(&f.alert_type)
                .bind(f.since)
                .bind(f.since)
                .bind(f.officer)
                .bind(f.officer)
                .bind(f.before_id)
                .bind(f.before_id)
                .bind(f.limit)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(alert_row)
                .collect::<std::result::Result<_, _>>()?)
        })
    }

    /// The newest fix of a device: `(ts, received_at)`.
    pub async fn newest_fix(&self, device_pk: i64) -> Result<Option<(Micros, Micros)>> {
        let q = match self {
            // SQLite keeps `received_at` as a lag after `ts` (migrations sqlite/0005, 0007)
            Store::Sqlite(_) => {
                "SELECT ts, ts + received_lag_ms * 1000 FROM fixes \
                                 WHERE device_pk = ? ORDER BY ts DESC LIMIT 1"
            }
            Store::Postgres(_) => {
                "SELECT ts, received_at FROM fixes \
                                   WHERE device_pk = $1 ORDER BY ts DESC LIMIT 1"
            }
        };
        // the tail first, then the table (see sqlite_tail's module doc)
        let in_tail = match self {
            Store::Sqlite(s) => s.tail.newest(device_pk),
            Store::Postgres(_) => None,
        };
        let stored = with_pool!(self, |pool| {
            sqlx::query_as::<_, (i64, i64)>(q)
                .bind(device_pk)
                .fetch_optional(pool)
                .await?
        });
        Ok(in_tail.max(stored))
    }

    /// A subject's external id and officer, by primary key (one indexed row, not the table).
    pub async fn subject_ref(&self, pk: i64) -> Result<Option<(String, Option<i64>)>> {
        let q = sql(self, "SELECT id, officer_id FROM subjects WHERE pk = ?");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, (String, Option<i64>)>(&q)
                .bind(pk)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// [`Store::subject_ref`] for many subjects in one read; unknown keys are left out.
    pub async fn subject_refs(&self, pks: &[i64]) -> Result<HashMap<i64, (String, Option<i64>)>> {
        let rows: Vec<(i64, String, Option<i64>)> = match self {
            Store::Sqlite(s) => {
                sqlx::query_as(
                    "SELECT pk, id, officer_id FROM subjects \
                     WHERE pk IN (SELECT value FROM json_each(?))",
                )
                .bind(serde_json::to_string(pks).unwrap_or_else(|_| "[]".into()))
                .fetch_all(s.pool())
                .await?
            }
            Store::Postgres(s) => {
                sqlx::query_as("SELECT pk, id, officer_id FROM subjects WHERE pk = ANY($1)")
                    .bind(pks)
                    .fetch_all(s.pool())
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(pk, id, officer)| (pk, (id, officer)))
            .collect())
    }

    /// The subject primary keys on an officer's caseload.
    pub async fn caseload(&self, officer: i64) -> Result<Vec<i64>> {
        let q = sql(self, "SELECT pk FROM subjects WHERE officer_id = ?");
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar::<_, i64>(&q)
                .bind(officer)
                .fetch_all(pool)
                .await?)
        })
    }
}

/// Alert writes inside a [`LawfulTx`]: the compliance monitor writes every alert change of a
/// committed batch, with its events and audit entries, in one transaction; an officer's
/// acknowledge or close is written with its audit entry the same way.
impl LawfulTx {
    /// Inserts an alert and its `opened` event; returns the id.
    pub async fn insert_alert(&mut self, a: &AlertRow) -> Result<i64> {
        let q = tx_sql(
            self,
            "INSERT INTO alerts (type, subject_pk, device_pk, zone_id, started_at, ended_at, detected_at, detected_late, \
             evidence_count, evidence, status, outcome, note, withdrawn_reason, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        );
        let ev = tx_sql(self, ALERT_EVENT_SQL);
        let detail = serde_json::json!({"started_at": a.started_at, "ended_at": a.ended_at,
            "detected_late": a.detected_late, "evidence_count": a.evidence_count})
        .to_string();
        with_tx!(self, |conn| {
            let id: i64 = sqlx::query_scalar(&q)
                .bind(&a.alert_type)
                .bind(a.subject_pk)
                .bind(a.device_pk)
                .bind(a.zone_id)
                .bind(a.started_at)
                .bind(a.ended_at)
                .bind(a.detected_at)
                .bind(a.detected_late as i64)
                .bind(a.evidence_count)
                .bind(evidence_json(a))
                .bind(&a.status)
                .bind(&a.outcome)
                .bind(&a.note)
                .bind(&a.withdrawn_reason)
                .bind(a.updated_at)
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query(&ev)
                .bind(id)
                .bind(a.detected_at)
                .bind("opened")
                .bind(None::<i64>)
                .bind(&detail)
                .execute(&mut *conn)
                .await?;
            Ok(id)
        })
    }

    /// Writes the fields one writer owns and one event of `kind`. The
    /// engine owns the episode (times, evidence, late flag); officers own the review
    /// (status, outcome, note; the engine also sets `withdrawn`). Neither write touches the
    /// other's fields, so an acknowledge racing an engine update loses nothing.
    pub async fn update_alert(
        &mut self,
        a: &AlertRow,
        fields: AlertFields,
        kind: &str,
        actor: Option<i64>,
    ) -> Result<()> {
        let q = tx_sql(
            self,
            match fields {
                AlertFields::Episode => {
                    "UPDATE alerts SET zone_id = ?, started_at = ?, ended_at = ?, detected_late = ?, \
                     evidence_count = ?, evidence = ?, updated_at = ? WHERE id = ?"
                }
                AlertFields::Review => {
                    "UPDATE alerts SET status = ?, outcome = ?, note = ?, withdrawn_reason = ?, \
                     updated_at = ? WHERE id = ?"
                }
            },
        );
        let ev = tx_sql(self, ALERT_EVENT_SQL);
        let detail = change_detail(a);
        let evidence = evidence_json(a);
        with_tx!(self, |conn| {
            let update = match fields {
                AlertFields::Episode => sqlx::query(&q)
                    .bind(a.zone_id)
                    .bind(a.started_at)
                    .bind(a.ended_at)
                    .bind(a.detected_late as i64)
                    .bind(a.evidence_count)
                    .bind(&evidence),
                AlertFields::Review => sqlx::query(&q)
                    .bind(&a.status)
                    .bind(&a.outcome)
                    .bind(&a.note)
                    .bind(&a.withdrawn_reason),
            };
            let done = update
                .bind(a.updated_at)
                .bind(a.id)
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("alert {}", a.id)));
            }
            sqlx::query(&ev)
                .bind(a.id)
                .bind(a.updated_at)
                .bind(kind)
                .bind(actor)
                .bind(&detail)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    /// [`LawfulTx::update_alert`] of the episode fields for many alerts at once, each with
    /// its event of the given kind, events in the order given. On PostgreSQL that is one
    /// `UPDATE … FROM UNNEST` and one `INSERT … SELECT FROM UNNEST` whatever the count (the
    /// engine updates every open episode's evidence with each committed batch: a statement
    /// per alert cost a round trip each and made alerts wait seconds behind a busy fleet);
    /// SQLite, in process, writes them one by one. An alert given twice ends as its last.
    pub async fn update_episodes(&mut self, changes: &[(AlertRow, &str)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = match self {
            LawfulTx::Postgres(tx) => tx,
            LawfulTx::Sqlite(..) => {
                for (a, kind) in changes {
                    self.update_alert(a, AlertFields::Episode, kind, None)
                        .await?;
                }
                return Ok(());
            }
        };
        let mut last: HashMap<i64, &AlertRow> = HashMap::with_capacity(changes.len());
        for (a, _) in changes {
            last.insert(a.id, a);
        }
        let rows: Vec<&AlertRow> = last.into_values().collect();
        let col =
            |f: &dyn Fn(&AlertRow) -> Option<i64>| rows.iter().map(|a| f(a)).collect::<Vec<_>>();
        let done = sqlx::query(
            "UPDATE alerts a SET zone_id = u.zone_id, started_at = u.started_at, ended_at = u.ended_at, \
             detected_late = u.detected_late, evidence_count = u.evidence_count, evidence = u.evidence, \
             updated_at = u.updated_at \
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
                         $7::text[], $8::int8[]) \
                  AS u(id, zone_id, started_at, ended_at, detected_late, evidence_count, evidence, updated_at) \
             WHERE a.id = u.id",
        )
        .bind(col(&|a| Some(a.id)))
        .bind(col(&|a| a.zone_id))
        .bind(col(&|a| Some(a.started_at)))
        .bind(col(&|a| a.ended_at))
        .bind(col(&|a| Some(a.detected_late as i64)))
        .bind(col(&|a| Some(a.evidence_count)))
        .bind(rows.iter().map(|a| evidence_json(a)).collect::<Vec<_>>())
        .bind(col(&|a| Some(a.updated_at)))
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() != rows.len() as u64 {
            let ids: Vec<i64> = rows.iter().map(|a| a.id).collect();
            return Err(StoreError::NotFound(format!("one of alerts {ids:?}")));
        }
        sqlx::query(
            "INSERT INTO alert_events (alert_id, at, kind, actor, detail) \
             SELECT alert_id, at, kind, NULL, detail \
             FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[]) WITH ORDINALITY \
                  AS e(alert_id, at, kind, detail, n) \
             ORDER BY n",
        )
        .bind(changes.iter().map(|(a, _)| a.id).collect::<Vec<_>>())
        .bind(
            changes
                .iter()
                .map(|(a, _)| a.updated_at)
                .collect::<Vec<_>>(),
        )
        .bind(changes.iter().map(|(_, k)| *k).collect::<Vec<_>>())
        .bind(
            changes
                .iter()
                .map(|(a, _)| change_detail(a))
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// [`LawfulTx::alert`] for many alerts, locked the same way (PostgreSQL in id order, so
    /// two lockers of overlapping sets wait rather than deadlock). Missing ids are left out.
    pub async fn alerts(&mut self, ids: &[i64]) -> Result<Vec<AlertRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = match self {
            LawfulTx::Sqlite(t, ..) => {
                let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
                sqlx::query(
                    "SELECT * FROM alerts WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                )
                .bind(list)
                .fetch_all(&mut **t)
                .await?
                .iter()
                .map(alert_row)
                .collect::<std::result::Result<Vec<_>, _>>()?
            }
            LawfulTx::Postgres(t) => {
                sqlx::query("SELECT * FROM alerts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                    .bind(ids)
                    .fetch_all(&mut **t)
                    .await?
                    .iter()
                    .map(alert_row)
                    .collect::<std::result::Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// The alert, locked against other writers until this transaction ends: PostgreSQL
    /// takes the row lock (`FOR UPDATE`); on SQLite the transaction's `BEGIN IMMEDIATE`
    /// already holds the only write lock. Read here, a change's precondition still holds
    /// when the change is written.
    pub async fn alert(&mut self, id: i64) -> Result<Option<AlertRow>> {
        let q = match self {
            LawfulTx::Sqlite(..) => "SELECT * FROM alerts WHERE id = ?",
            LawfulTx::Postgres(_) => "SELECT * FROM alerts WHERE id = $1 FOR UPDATE",
        };
        with_tx!(self, |conn| {
            let r = sqlx::query(q).bind(id).fetch_optional(&mut *conn).await?;
            Ok(r.as_ref().map(alert_row).transpose()?)
        })
    }
}
