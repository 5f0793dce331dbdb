//! Persistence over sqlx: the one place that knows SQL.
//!
//! [`Store`] is an enum over the embedded SQLite store and the PostgreSQL store, both first
//! class, each with its own migrations (`migrations/{sqlite,postgres}`) run at connect.
//! Each table's queries live in one file per backend. Methods take plain rows and return plain
//! rows; callers never see SQL or a driver type.

mod compliance;
mod lawful;
mod postgres;
mod postgres_ids;
mod postgres_lawful;
mod postgres_newest;
mod sqlite;
mod sqlite_lawful;
mod sqlite_tail;

use crate::model::Micros;

pub use compliance::{
    AbsenceRow, AlertEventRow, AlertFields, AlertFilter, AlertRow, NewZone, ZoneRow,
};
pub use lawful::{
    AtTimeRead, AuditFilter, LawfulTx, PurgeCounts, SceneFound, SEGMENT_INDEX_MAX_GAP_US,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Fixes the SQLite ingest log's tail holds before compaction, unless configured.
pub const DEFAULT_COMPACT_ROWS: usize = 131_072;

/// How a store is opened (`Settings::store_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// SQLite: the tail is compacted into `fixes` once it holds this many fixes (see
    /// `sqlite_tail`).
    pub compact_rows: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            compact_rows: DEFAULT_COMPACT_ROWS,
        }
    }
}

/// What one call of [`Store::maintain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upkeep {
    /// Nothing was due.
    Idle,
    /// One step ran; `more` when further steps wait (the writer runs them while no request
    /// is queued).
    Step { more: bool },
}

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (e.g. a subject id).
    #[error("already exists: {0}")]
    Conflict(String),
    /// A referenced row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open store: {0}")]
    Open(String),
}

impl StoreError {
    /// True when the database is unreachable or failing, rather than the request being wrong:
    /// the request may succeed later (503 with `Retry-After`).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_),
            ) => true,
            StoreError::Db(sqlx::Error::Database(e)) => database_unavailable(e.as_ref()),
            _ => false,
        }
    }

    /// True when PostgreSQL refused a text value it cannot hold: U+0000 in `TEXT`
    /// (SQLSTATE 22021) or `\u0000` in `JSONB` (22P05). The request is at fault (422), not
    /// the service; the API refuses NUL at its edge, this is the backstop for paths that
    /// reach the store with a value the edge did not check (a query parameter, a path).
    pub fn is_invalid_text(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(e))
            if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some()
                && matches!(e.code().as_deref(), Some("22021" | "22P05")))
    }
}

/// Database errors that say the server or its disk is failing, not the statement: a full
/// disk or an I/O error, a database shutting down or restarting, a lost connection.
fn database_unavailable(e: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = e.code() else {
        return false;
    };
    if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // extended result code; the primary code is its low byte: SQLITE_BUSY (5, past the
        // busy timeout), SQLITE_IOERR (10), SQLITE_FULL (13), SQLITE_CANTOPEN (14)
        return code
            .parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 10 | 13 | 14));
    }
    // SQLSTATE classes: 08 connection exception, 53 insufficient resources (disk full, out
    // of memory, too many connections), 57P01–57P03 administrator/crash shutdown and
    // "cannot connect now" (starting up), 58 system error (I/O)
    ["08", "53", "57P", "58"]
        .iter()
        .any(|class| code.starts_with(class))
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A user as stored (never the token).
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub device_pk: Option<i64>,
    pub token_hash: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct NewSubject {
    pub id: String,
    pub display_name: Option<String>,
    pub borough: Option<String>,
    pub officer_id: Option<i64>,
    pub timezone: String,
}

#[derive(Debug, Clone)]
pub struct SubjectRow {
    pub pk: i64,
    pub id: String,
    pub display_name: Option<String>,
    pub borough: Option<String>,
    pub officer_id: Option<i64>,
    pub timezone: String,
    pub created_at: Micros,
}

#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub pk: i64,
    pub id: String,
    pub subject_pk: Option<i64>,
    pub subject_id: Option<String>,
}

/// One fix as stored (serde: SQLite's ingest log, `sqlite_tail`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FixRow {
    pub device_pk: i64,
    pub ts: Micros,
    pub subject_pk: Option<i64>,
    pub lat_e7: Option<i32>,
    pub lon_e7: Option<i32>,
    pub accuracy_m: Option<f32>,
    pub source: i16,
    pub speed_mps: Option<f32>,
    pub heading_deg: Option<f32>,
    pub battery_pct: Option<f32>,
    pub flags: i16,
    pub received_at: Micros,
    /// The crime-scene index cell, [`FixRow::cell_of`] the position (`None` without one):
    /// the stores index the row under it.
    pub cell: Option<i64>,
}

impl FixRow {
    /// A GPS fix of `device_pk` at `ts` (a health report without a position when `pos` is
    /// `None`), stored as ingest stores one: the position in degrees × 10⁷, its index cell
    /// derived from that, received at `ts`, no other values — set those with struct update.
    pub fn at(
        device_pk: i64,
        subject_pk: Option<i64>,
        ts: Micros,
        pos: Option<crate::geodesy::LatLon>,
    ) -> FixRow {
        use crate::model::fix::E7;
        let lat_e7 = pos.map(|p| (p.lat * E7).round() as i32);
        let lon_e7 = pos.map(|p| (p.lon * E7).round() as i32);
        FixRow {
            device_pk,
            ts,
            subject_pk,
            lat_e7,
            lon_e7,
            accuracy_m: None,
            source: i16::from(pos.is_some()),
            speed_mps: None,
            heading_deg: None,
            battery_pct: None,
            flags: 0,
            received_at: ts,
            cell: FixRow::cell_of(lat_e7, lon_e7),
        }
    }

    /// The crime-scene index cell of a stored position (`cell` of a row as ingest makes it,
    /// and as SQLite's reads give it back: its table does not keep it).
    pub fn cell_of(lat_e7: Option<i32>, lon_e7: Option<i32>) -> Option<i64> {
        crate::query::cells::fix_cell(position_of(lat_e7?, lon_e7?)).ok()
    }

    /// The fix's position, when it has one.
    pub fn position(&self) -> Option<crate::geodesy::LatLon> {
        Some(position_of(self.lat_e7?, self.lon_e7?))
    }

    /// The fix as the query maths sees it; `None` for a fix without a position or a
    /// subject, which no query answer rests on.
    pub fn qfix(&self) -> Option<crate::query::QFix> {
        Some(crate::query::QFix {
            device: self.device_pk,
            subject: self.subject_pk?,
            ts_us: self.ts,
            pos: self.position()?,
            accuracy_m: self.accuracy_m.map_or(0.0, f64::from),
        })
    }
}

/// A stored position (10⁻⁷ degrees) in degrees.
fn position_of(lat_e7: i32, lon_e7: i32) -> crate::geodesy::LatLon {
    crate::geodesy::LatLon::new(f64::from(lat_e7) / 1e7, f64::from(lon_e7) / 1e7)
}

/// The store the service runs on.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

macro_rules! dispatch {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens the store named by `url` with the default options and brings its schema up
    /// to date.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    /// Opens the store named by `url` and brings its schema up to date.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::connect(url, options).await?))
        } else {
            Ok(Store::Postgres(PgStore::connect(url).await?))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Round trip to the database (readiness).
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, ping())
    }

    pub async fn create_user(
        &self,
        name: &str,
        role: &str,
        device_pk: Option<i64>,
        token_hash: &[u8],
    ) -> Result<UserRow> {
        dispatch!(self, create_user(name, role, device_pk, token_hash))
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        dispatch!(self, users())
    }

    /// Replaces a user's token digest; false when there is no such user.
    pub async fn replace_token(&self, user_id: i64, token_hash: &[u8]) -> Result<bool> {
        dispatch!(self, replace_token(user_id, token_hash))
    }

    pub async fn user_by_token(&self, token_hash: &[u8]) -> Result<Option<UserRow>> {
        dispatch!(self, user_by_token(token_hash))
    }

    pub async fn create_subject(&self, s: &NewSubject) -> Result<SubjectRow> {
        dispatch!(self, create_subject(s))
    }

    pub async fn subject(&self, id: &str) -> Result<Option<SubjectRow>> {
        dispatch!(self, subject(id))
    }

    pub async fn subjects(&self) -> Result<Vec<SubjectRow>> {
        dispatch!(self, subjects())
    }

    /// Creates a device assigned to `subject_pk` (history row included).
    pub async fn create_device(&self, id: &str, subject_pk: i64, now: Micros) -> Result<DeviceRow> {
        dispatch!(self, create_device(id, subject_pk, now))
    }

    /// Ends the device's current assignment at `now` and starts one to `subject_pk`.
    pub async fn reassign_device(
        &self,
        device_pk: i64,
        subject_pk: i64,
        now: Micros,
    ) -> Result<()> {
        dispatch!(self, reassign_device(device_pk, subject_pk, now))
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRow>> {
        dispatch!(self, devices())
    }

    /// Inserts fixes in one transaction, synced before return. Returns, per input row,
    /// whether it was stored (false = a fix with the same `(device, ts)` already existed,
    /// or came earlier in `rows`: of a key given twice, the first copy is the one stored,
    /// DECISIONS.md "Duplicates inside one request"). The stores themselves take distinct
    /// keys; later copies are set aside here, the only place that looks for them (the
    /// ingest writer hands its whole group over).
    pub async fn insert_fixes(&self, rows: &[FixRow]) -> Result<Vec<bool>> {
        let first = first_of_each_key(rows);
        if first.iter().all(|f| *f) {
            return dispatch!(self, insert_fixes(rows));
        }
        let distinct = rows_where(rows, &first);
        let mut stored = dispatch!(self, insert_fixes(&distinct))?.into_iter();
        Ok(first
            .into_iter()
            .map(|f| f && stored.next().unwrap_or(false))
            .collect())
    }

    /// Every stored fix of a device in `[from, to]`, oldest first.
    pub async fn device_fixes(
        &self,
        device_pk: i64,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<FixRow>> {
        dispatch!(self, device_fixes(device_pk, from, to))
    }

    /// Number of stored fixes (operations and tests).
    pub async fn count_fixes(&self) -> Result<i64> {
        dispatch!(self, count_fixes())
    }

    /// Background upkeep the ingest writer runs between groups, after a group of
    /// `ingested` fixes (0 when idle): on SQLite, moving part of the ingest log's tail into
    /// `fixes` when due, keeping pace with ingest when the tail is over its limit.
    pub async fn maintain(&self, ingested: usize) -> Result<Upkeep> {
        match self {
            Store::Sqlite(s) => s.compact_step(ingested).await,
            Store::Postgres(_) => Ok(Upkeep::Idle),
        }
    }

    /// Moves everything the ingest has acknowledged into its final place (SQLite: the whole
    /// tail into `fixes`); benchmarks call it to measure reads of compacted data.
    pub async fn compact_all(&self) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.compact_all().await,
            Store::Postgres(_) => Ok(()),
        }
    }
}

/// Marks, for each row, whether its key is among `inserted` (the keys the database returned;
/// the rows' keys are distinct, see [`Store::insert_fixes`]).
fn mark_inserted(rows: &[FixRow], inserted: &std::collections::HashSet<(i64, i64)>) -> Vec<bool> {
    rows.iter()
        .map(|r| inserted.contains(&(r.device_pk, r.ts)))
        .collect()
}

/// Copies of the rows whose flag in `keep` is set.
fn rows_where(rows: &[FixRow], keep: &[bool]) -> Vec<FixRow> {
    rows.iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(r, _)| r.clone())
        .collect()
}

/// Marks, for each row, whether it is the first of `rows` with its key.
fn first_of_each_key(rows: &[FixRow]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    rows.iter()
        .map(|r| seen.insert((r.device_pk, r.ts)))
        .collect()
}
