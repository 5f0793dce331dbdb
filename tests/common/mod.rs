//! Test harness: starts the real service on port 0 against a fresh SQLite file or a fresh
//! PostgreSQL database, and offers typed helpers for the API.
//!
//! PostgreSQL is required: if it is unreachable the tests fail loudly, never skip. The server
//! is `TAGWATCH_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`); each
//! [`TestApp`] gets its own database, named `tw_test_<random>`, dropped when it ends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tagwatch::app::Running;
use tagwatch::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_base_url() -> String {
    std::env::var("TAGWATCH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, empty database URL for `backend`. SQLite files live in a temp dir kept alive by
/// the returned guard.
pub async fn fresh_database(backend: Backend) -> (String, DbGuard) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/tagwatch.db", dir.path().display());
            (url, DbGuard::Dir(dir))
        }
        Backend::Postgres => {
            let base = pg_base_url();
            let name = format!(
                "tw_test_{}_{}_{:08x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                rand::thread_rng().gen::<u32>()
            );
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for these tests and is unreachable at {base}: {e}"
                    )
                });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let url = match base.rsplit_once('/') {
                Some((prefix, _)) => format!("{prefix}/{name}"),
                None => panic!("bad TAGWATCH_TEST_PG_URL {base}"),
            };
            (url, DbGuard::Pg { base, name })
        }
    }
}

pub enum DbGuard {
    Dir(tempfile::TempDir),
    Pg { base: String, name: String },
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        if let DbGuard::Pg { base, name } = self {
            let (base, name) = (base.clone(), name.clone());
            // best effort, on its own thread: Drop cannot await
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut c) =
                        <sqlx::PgConnection as sqlx::Connection>::connect(&base).await
                    {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub url: String,
    pub database_url: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub running: Option<Running>,
    pub settings: Settings,
    _guard: DbGuard,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (database_url, guard) = fresh_database(backend).await;
    let mut settings = Settings::with_database(&database_url);
    tweak(&mut settings);
    let running = tagwatch::app::start(settings.clone()).await.unwrap();
    let admin = tagwatch::api::users::create_user(
        &running.state,
        "admin",
        tagwatch::model::Role::Admin,
        None,
    )
    .await
    .unwrap();
    TestApp {
        url: format!("http://{}", running.addr),
        database_url,
        client: reqwest::Client::new(),
        admin_token: admin.token,
        running: Some(running),
        settings,
        _guard: guard,
    }
}

impl TestApp {
    /// Runs one SQL statement on the app's database behind its back (tampering, faults).
    pub async fn sql(&self, statement: &str) {
        if self.database_url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.database_url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&self.database_url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Stops the server and starts a new one on the same database (restart).
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        let running = tagwatch::app::start(self.settings.clone()).await.unwrap();
        self.url = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// Creates a user of `role`, returning `(id, token)`.
    pub async fn user(&self, name: &str, role: &str) -> (i64, String) {
        let (s, v) = self
            .post(
                "/v1/users",
                &self.admin_token,
                json!({"name": name, "role": role}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["id"].as_i64().unwrap(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn subject(&self, id: &str, officer_id: Option<i64>) {
        let (s, v) = self
            .post(
                "/v1/subjects",
                &self.admin_token,
                json!({"id": id, "officer_id": officer_id, "borough": "Camden"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Registers a device for a subject, returning the device token.
    pub async fn device(&self, id: &str, subject_id: &str) -> String {
        let (s, v) = self
            .post(
                "/v1/devices",
                &self.admin_token,
                json!({"id": id, "subject_id": subject_id}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    pub async fn post_pings(&self, token: &str, pings: Value) -> (StatusCode, Value) {
        self.post("/v1/pings", token, pings).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}{}", self.url, path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub fn store(&self) -> &tagwatch::store::Store {
        &self.running.as_ref().unwrap().state.store
    }
}

/// Through the library: a subject `S-{i}` wearing device `D-{i}` from `from_us`; returns
/// (subject pk, device pk).
pub async fn wearer(store: &tagwatch::store::Store, i: usize, from_us: i64) -> (i64, i64) {
    let s = store
        .create_subject(&tagwatch::store::NewSubject {
            id: format!("S-{i}"),
            display_name: None,
            borough: None,
            officer_id: None,
            timezone: "Europe/London".into(),
        })
        .await
        .unwrap();
    let d = store
        .create_device(&format!("D-{i}"), s.pk, from_us)
        .await
        .unwrap();
    (s.pk, d.pk)
}

/// An RFC 3339 time `secs_ago` seconds before now.
pub fn ago(secs_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(secs_ago)).to_rfc3339()
}

/// A statement that leaves the audit chain's head with a hash nothing can be chained
/// from, so every append fails: on SQLite the newest entry's, which appends read; on
/// PostgreSQL the head row's (migration postgres/0007), which appends update.
pub fn break_audit_head(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "UPDATE audit SET hash = 'not a hash' WHERE id = (SELECT max(id) FROM audit)"
        }
        Backend::Postgres => "UPDATE audit_head SET hash = 'not a hash'",
    }
}

/// A ping at `ts` near central London.
pub fn ping(device: &str, ts: &str, lat: f64, lon: f64) -> Value {
    json!({"device_id": device, "ts": ts, "lat": lat, "lon": lon, "accuracy_m": 8.0})
}

/// Generates `mod sqlite` and `mod postgres` with one `#[tokio::test]` per scenario.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Postgres).await } )*
        }
    };
}

/// The store's migrations (`migrations/sqlite` or `migrations/postgres`) up to `version`
/// only: for tests that write a store as an older version left it, then open it with
/// `Store::connect`, which runs the rest.
pub async fn migrations_up_to(backend: Backend, version: i64) -> sqlx::migrate::Migrator {
    let dir = match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut m = sqlx::migrate::Migrator::new(dir).await.unwrap();
    m.migrations = m
        .migrations
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    m
}

/// A pool on the SQLite file at `url` (created if missing), its migrations run up to
/// `version` only ([`migrations_up_to`]): a store as that version left it.
pub async fn sqlite_migrated_up_to(url: &str, version: i64) -> sqlx::SqlitePool {
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
        .await
        .unwrap();
    migrations_up_to(Backend::Sqlite, version)
        .await
        .run(&pool)
        .await
        .unwrap();
    pool
}
