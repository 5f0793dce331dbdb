//! Fault injection: the real binary under database faults, crashes and clock jumps.
//!
//! What must hold under every fault: a fix counted in `accepted` is stored, exactly once;
//! the service never panics and stays up; a write it cannot make answers 503 with
//! `Retry-After` and a problem+json body (never a 500, never a hang past a bounded wait);
//! every query answer a client received has its audit entry; the audit chain verifies.
//!
//! | test | fault |
//! |---|---|
//! | `postgres_restarted_mid_ingest_…` | a private PostgreSQL 15 stopped (fast, then immediate) and started again under concurrent ingest |
//! | `sqlite_disk_full_…` | the SQLite file's tmpfs filled up under concurrent ingest, then space freed |
//! | `{sqlite,postgres}::sigkill_during_queries_and_zone_changes_…` | SIGKILL at a random moment during audited queries, zone creates/deletes and ingest |
//! | `{sqlite,postgres}::a_zone_change_whose_audit_entry_cannot_be_written_is_not_made` | the audit append fails (a head that cannot be chained from) |
//! | `clock_jumps_…` | the server's wall clock stepped 3 h forward, then 2 h back (libfaketime) |
//!
//! Prerequisites are required, never skipped: PostgreSQL 15's server binaries
//! (`/usr/lib/postgresql/15/bin`) and `runuser` (PostgreSQL refuses to run as root, so the
//! private server runs as `postgres`), permission to mount a tmpfs (the tests run as root),
//! and Debian's `faketime` package (`.ci/run` installs it). A missing one fails the test
//! with what to install. Each test prints its figures (`cargo test --test faults --
//! --nocapture`). The random kill moment's seed is printed; `TAGWATCH_FAULT_SEED` replays it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fresh_database, Backend};
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_tagwatch");
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// Liveness bound for any one request, whatever the fault: far above the store's own
/// timeouts (5 s pool acquire on PostgreSQL, 10 s busy timeout on SQLite).
const REQUEST_BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------

/// `tagwatch serve` as a child process; its stderr is kept (to look for panics).
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("http://") {
                    let _ = tx.send(line[i..].split_whitespace().next().unwrap().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "tagwatch did not start:\n{}",
                    log.lock().unwrap().join("\n")
                )
            });
        Server { child, url, log }
    }

    fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// The server is still running and has logged no panic.
    fn assert_healthy(&mut self) {
        let panics: Vec<String> = self
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("panicked"))
            .cloned()
            .collect();
        assert!(panics.is_empty(), "tagwatch panicked: {panics:#?}");
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "tagwatch exited:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// SIGKILL.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- tagwatch's last log lines ---\n{}", self.log_tail(40));
        }
        self.kill();
    }
}

fn cli(database_url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

fn create_admin(database_url: &str) -> String {
    let out = cli(
        database_url,
        &["user", "create", "--name", "admin", "--role", "admin"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `tagwatch audit verify` exits 0.
fn assert_cli_verify(database_url: &str) {
    let out = cli(database_url, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "tagwatch audit verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    url: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Api {
    fn new(url: &str) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(REQUEST_BOUND)
                .build()
                .unwrap(),
            url: url.to_owned(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let a = self
            .send(reqwest::Method::POST, path, Some(token), Some(&body))
            .await
            .unwrap();
        (a.status, a.body)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let a = self
            .send(reqwest::Method::GET, path, Some(token), None)
            .await
            .unwrap();
        (a.status, a.body)
    }

    async fn readyz(&self) -> Option<StatusCode> {
        self.send(reqwest::Method::GET, "/readyz", None, None)
            .await
            .ok()
            .map(|a| a.status)
    }
}

/// A 503 as SPEC §5 and DECISIONS promise it: `Retry-After` and a problem+json body.
fn check_unavailable(a: &Answer) -> Result<(), String> {
    let retry = a.headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
    let ct = a.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if retry.and_then(|r| r.parse::<u64>().ok()).is_none() {
        return Err(format!("503 without a Retry-After: {:?}", a.headers));
    }
    if ct != Some("application/problem+json") || a.body["status"] != 503 {
        return Err(format!(
            "503 without a problem+json body: {ct:?} {}",
            a.body
        ));
    }
    Ok(())
}

/// Polls `f` every 100 ms until it holds; panics after `limit` saying what was awaited.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn justification() -> Value {
    json!({"crime_ref": "CR-FAULT-1", "legal_basis": "s.19 PACE", "reason": "fault injection test"})
}

fn rfc3339(us: i64) -> String {
    tagwatch::model::time::rfc3339(us)
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Users, subjects `S0…` on the officer's caseload and devices `D0…`, made over HTTP.
struct Fleet {
    gateway: String,
    officer: String,
    analyst: String,
    auditor: String,
    subjects: Vec<String>,
    devices: Vec<String>,
}

async fn fleet(api: &Api, admin: &str, n: usize) -> Fleet {
    let mut tokens = HashMap::new();
    let mut officer_id = 0;
    for role in ["device", "officer", "analyst", "auditor"] {
        let (s, v) = api
            .post("/v1/users", admin, json!({"name": role, "role": role}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        tokens.insert(role, v["token"].as_str().unwrap().to_owned());
        if role == "officer" {
            officer_id = v["id"].as_i64().unwrap();
        }
    }
    let mut subjects = Vec::new();
    let mut devices = Vec::new();
    for i in 0..n {
        let (s, v) = api
            .post(
                "/v1/subjects",
                admin,
                json!({"id": format!("S{i}"), "officer_id": officer_id}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = api
            .post(
                "/v1/devices",
                admin,
                json!({"id": format!("D{i}"), "subject_id": format!("S{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        subjects.push(format!("S{i}"));
        devices.push(format!("D{i}"));
    }
    Fleet {
        gateway: tokens["device"].clone(),
        officer: tokens["officer"].clone(),
        analyst: tokens["analyst"].clone(),
        auditor: tokens["auditor"].clone(),
        subjects,
        devices,
    }
}

// ---------------------------------------------------------------------------------------
// Concurrent ingest that keeps score
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct IngestScore {
    /// `(device, ts µs)` of every fix in a 200 answer (accepted, or a duplicate of a retry
    /// whose first attempt was stored after all).
    acked: Vec<(String, i64)>,
    requests: u64,
    /// fixes counted `accepted`
    accepted: u64,
    /// fixes counted `duplicates` (a retried batch whose failed attempt had committed)
    duplicates: u64,
    /// 503 answers (each checked for `Retry-After` and a problem+json body)
    unavailable: u64,
    overloaded: u64,
    /// anything else: a 500, a malformed 503, a timeout, a dropped connection
    failures: Vec<String>,
    slowest: Duration,
}

struct Ingest {
    stop: Arc<AtomicBool>,
    score: Arc<Mutex<IngestScore>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Ingest {
    /// `clients` tasks posting batches of `batch` distinct fixes as fast as they are
    /// answered; a batch refused with 503/429 is retried (same fixes) until acknowledged.
    /// With `until_gone`, a connection error ends the client quietly (the server was killed).
    fn start(
        api: &Api,
        gateway: &str,
        devices: &[String],
        clients: usize,
        batch: usize,
        until_gone: bool,
    ) -> Ingest {
        let stop = Arc::new(AtomicBool::new(false));
        let score: Arc<Mutex<IngestScore>> = Arc::default();
        let base = now_us() - 2 * 3_600 * 1_000_000 + rand::thread_rng().gen_range(0..1_000_000);
        let tasks = (0..clients)
            .map(|c| {
                let (api, gateway, devices) = (api.clone(), gateway.to_owned(), devices.to_vec());
                let (stop, score) = (stop.clone(), score.clone());
                tokio::spawn(async move {
                    for round in 0usize.. {
                        let keys: Vec<(String, i64)> = (0..batch)
                            .map(|i| {
                                let seq = (round * clients + c) * batch + i;
                                (
                                    devices[seq % devices.len()].clone(),
                                    base + seq as i64 * 1_000,
                                )
                            })
                            .collect();
                        let body = Value::Array(
                            keys.iter()
                                .enumerate()
                                .map(|(i, (d, ts))| {
                                    json!({"device_id": d, "ts": rfc3339(*ts),
                                           "lat": 51.5 + (i % 100) as f64 * 1e-4, "lon": -0.12,
                                           "accuracy_m": 5.0})
                                })
                                .collect(),
                        );
                        loop {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let sent = Instant::now();
                            let answer = api
                                .send(
                                    reqwest::Method::POST,
                                    "/v1/pings",
                                    Some(&gateway),
                                    Some(&body),
                                )
                                .await;
                            let took = sent.elapsed();
                            // Some(true): acknowledged; Some(false): retry; None: server gone
                            let next = {
                                let mut s = score.lock().unwrap();
                                s.requests += 1;
                                s.slowest = s.slowest.max(took);
                                match answer {
                                    Ok(a) if a.status == StatusCode::OK => {
                                        let (acc, dup) = (
                                            a.body["accepted"].as_u64().unwrap_or(0),
                                            a.body["duplicates"].as_u64().unwrap_or(0),
                                        );
                                        if acc + dup != batch as u64
                                            || a.body["rejected"]
                                                .as_array()
                                                .is_none_or(|r| !r.is_empty())
                                        {
                                            s.failures.push(format!(
                                                "200 not covering the batch: {}",
                                                a.body
                                            ));
                                        }
                                        s.accepted += acc;
                                        s.duplicates += dup;
                                        s.acked.extend(keys.iter().cloned());
                                        Some(true)
                                    }
                                    Ok(a) if a.status == StatusCode::SERVICE_UNAVAILABLE => {
                                        s.unavailable += 1;
                                        if let Err(e) = check_unavailable(&a) {
                                            s.failures.push(e);
                                        }
                                        Some(false)
                                    }
                                    Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS => {
                                        s.overloaded += 1;
                                        Some(false)
                                    }
                                    Ok(a) => {
                                        s.failures.push(format!("{} {}", a.status, a.body));
                                        Some(false)
                                    }
                                    Err(_) if until_gone => None,
                                    Err(e) => {
                                        s.failures
                                            .push(format!("request failed after {took:?}: {e}"));
                                        Some(false)
                                    }
                                }
                            };
                            match next {
                                Some(true) => break,
                                Some(false) => {}
                                None => return,
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                })
            })
            .collect();
        Ingest { stop, score, tasks }
    }

    fn acked(&self) -> usize {
        self.score.lock().unwrap().acked.len()
    }

    fn unavailable(&self) -> u64 {
        self.score.lock().unwrap().unavailable
    }

    async fn wait_acked(&self, at_least: usize, limit: Duration) {
        wait_for(&format!("{at_least} acknowledged fixes"), limit, || async {
            let s = self.score.lock().unwrap();
            assert!(s.failures.is_empty(), "ingest failures: {:#?}", s.failures);
            s.acked.len() >= at_least
        })
        .await;
    }

    async fn wait_unavailable(&self, at_least: u64, limit: Duration) {
        wait_for(&format!("{at_least} answers 503"), limit, || async {
            let s = self.score.lock().unwrap();
            assert!(s.failures.is_empty(), "ingest failures: {:#?}", s.failures);
            s.unavailable >= at_least
        })
        .await;
    }

    async fn finish(self) -> IngestScore {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.score)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// Every acknowledged fix is in the store, and nothing is stored twice. Returns the number
/// of fixes stored.
async fn assert_acked_stored_once(database_url: &str, acked: &[(String, i64)]) -> usize {
    let store = tagwatch::store::Store::connect(database_url).await.unwrap();
    let mut stored = HashSet::new();
    let mut total = 0;
    for d in store.devices().await.unwrap() {
        for f in store.device_fixes(d.pk, 0, i64::MAX).await.unwrap() {
            total += 1;
            stored.insert((d.id.clone(), f.ts));
        }
    }
    assert_eq!(total, stored.len(), "a fix is stored twice");
    let lost: Vec<_> = acked.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged fixes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    total
}

async fn assert_http_verify(api: &Api, auditor: &str) -> Value {
    let (s, v) = api.get("/v1/audit/verify", auditor).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "audit chain broken: {v}");
    v
}

/// Every audit entry, by id (auditor, paged).
async fn audit_entries(api: &Api, auditor: &str) -> HashMap<i64, Value> {
    let mut out = HashMap::new();
    let mut cursor = String::new();
    loop {
        let (s, v) = api
            .get(&format!("/v1/audit?limit=1000{cursor}"), auditor)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for e in v["items"].as_array().unwrap() {
            out.insert(e["id"].as_i64().unwrap(), e.clone());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. PostgreSQL stopped and started mid-ingest
// ---------------------------------------------------------------------------------------

/// A PostgreSQL 15 of the test's own, in a temp dir, on a free port, run as `postgres`.
struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
}

fn as_postgres(args: &[&str]) -> Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("runuser is required for the private PostgreSQL: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PrivatePg {
    fn start() -> PrivatePg {
        for b in ["initdb", "pg_ctl", "postgres"] {
            assert!(
                Path::new(PG_BIN).join(b).exists(),
                "this test needs PostgreSQL 15's server binaries: {PG_BIN}/{b} is missing \
                 (apt-get install postgresql-15)"
            );
        }
        let dir = tempfile::Builder::new().prefix("tw-pg-").tempdir().unwrap();
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "chown of the private PostgreSQL's directory failed"
        );
        let pg = PrivatePg {
            port: free_port(),
            dir,
        };
        let data = pg.data();
        as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            &data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        pg.start_server();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &self.data(),
            "-l",
            &log,
            "-o",
            &opts,
            "-w",
            "-t",
            "60",
            "start",
        ]);
    }

    /// `pg_ctl stop -m fast` (sessions terminated, clean shutdown) or `-m immediate` (no
    /// shutdown checkpoint: crash recovery at the next start).
    fn stop_server(&self, mode: &str) {
        as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &self.data(),
            "-m",
            mode,
            "-w",
            "-t",
            "60",
            "stop",
        ]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_ingest_answers_503_then_resumes_and_loses_no_acknowledged_fix() {
    let started = Instant::now();
    let pg = PrivatePg::start();
    let url = pg.url();
    let admin = create_admin(&url);
    let mut server = Server::start(&url, &[], &[]);
    let api = server.api();
    let f = fleet(&api, &admin, 20).await;
    let ingest = Ingest::start(&api, &f.gateway, &f.devices, 4, 100, false);
    ingest.wait_acked(2_000, Duration::from_secs(60)).await;

    let mut outages = Vec::new();
    for mode in ["fast", "immediate"] {
        let before = ingest.unavailable();
        let down_at = Instant::now();
        pg.stop_server(mode);
        ingest
            .wait_unavailable(before + 4, Duration::from_secs(60))
            .await;
        wait_for(
            "/readyz to say not ready",
            Duration::from_secs(60),
            || async { api.readyz().await == Some(StatusCode::SERVICE_UNAVAILABLE) },
        )
        .await;
        // the service itself stays up and answers what needs no store
        let (s, _) = api.get("/healthz", "").await;
        assert_eq!(s, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acked_while_down = ingest.acked();
        pg.start_server();
        let up_at = Instant::now();
        wait_for("/readyz to say ready", Duration::from_secs(60), || async {
            api.readyz().await == Some(StatusCode::OK)
        })
        .await;
        // ingest resumes on the same tagwatch process
        ingest
            .wait_acked(acked_while_down + 2_000, Duration::from_secs(90))
            .await;
        outages.push(format!(
            "{mode}: down {:.1} s, {} answers 503, ingest resumed {:.1} s after the start",
            (up_at - down_at).as_secs_f64(),
            ingest.unavailable() - before,
            up_at.elapsed().as_secs_f64()
        ));
    }
    let score = ingest.finish().await;
    assert!(score.failures.is_empty(), "{:#?}", score.failures);
    server.assert_healthy();
    let stored = assert_acked_stored_once(&url, &score.acked).await;
    assert_cli_verify(&url);
    assert_http_verify(&api, &f.auditor).await;
    println!(
        "postgres restart: {} requests, {} fixes acknowledged ({} accepted, {} duplicates of \
         retried batches), {} stored, 0 lost; {} answers 503, {} 429; slowest answer {:?}; \
         outages: {}; {:.1} s",
        score.requests,
        score.acked.len(),
        score.accepted,
        score.duplicates,
        stored,
        score.unavailable,
        score.overloaded,
        score.slowest,
        outages.join("; "),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// 2. Disk full on the SQLite path
// ---------------------------------------------------------------------------------------

/// A small tmpfs mounted on a temp dir (unmounted on drop).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("tw-full-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root with mount permission: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros to `path` until the filesystem is full; returns the bytes written.
fn fill(path: &PathBuf) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0u8; chunk];
        while file.write_all(&buf).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = file.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_answers_503_never_acknowledges_an_unstored_fix_and_resumes() {
    let started = Instant::now();
    let fs = Tmpfs::mount("24m");
    let url = format!("sqlite://{}/tagwatch.db", fs.path().display());
    let admin = create_admin(&url);
    let mut server = Server::start(&url, &[], &[]);
    let api = server.api();
    let f = fleet(&api, &admin, 20).await;
    let ingest = Ingest::start(&api, &f.gateway, &f.devices, 3, 200, false);
    ingest.wait_acked(3_000, Duration::from_secs(60)).await;

    // Fill the filesystem: from here on the store's writes fail.
    let ballast = fs.path().join("ballast");
    let ballast_bytes = fill(&ballast);
    let before = ingest.unavailable();
    ingest
        .wait_unavailable(before + 5, Duration::from_secs(60))
        .await;
    let acked_full = ingest.acked();
    // While full, an audited query must not answer without its entry: 503, or an answer
    // whose entry is there afterwards.
    let mut answered = Vec::new();
    let mut refused = 0;
    for i in 0..5 {
        let a = api
            .send(
                reqwest::Method::POST,
                "/v1/queries/location-at-time",
                Some(&f.analyst),
                Some(
                    &json!({"subject_id": format!("S{i}"), "at": rfc3339(now_us() - 7_000_000_000),
                             "justification": justification()}),
                ),
            )
            .await
            .unwrap();
        match a.status {
            StatusCode::OK => answered.push(a.body["audit_id"].as_i64().unwrap()),
            StatusCode::SERVICE_UNAVAILABLE => {
                check_unavailable(&a).unwrap();
                refused += 1;
            }
            s => panic!(
                "a query on a full disk answered {s}: {}\n{}",
                a.body,
                server.log_tail(20)
            ),
        }
    }
    let answered_while_full = answered.len();
    let ready_while_full = api.readyz().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked_before_free = ingest.acked();

    // Free the space: ingest resumes on the same process.
    std::fs::remove_file(&ballast).unwrap();
    ingest
        .wait_acked(acked_before_free + 3_000, Duration::from_secs(90))
        .await;
    // Audited reads work again on every pooled connection (a connection left believing it
    // is inside a transaction by a failed COMMIT used to refuse every later one).
    let queries: Vec<_> = (0..16)
        .map(|i| {
            let (api, analyst) = (api.clone(), f.analyst.clone());
            tokio::spawn(async move {
                api.send(
                    reqwest::Method::POST,
                    "/v1/queries/location-at-time",
                    Some(&analyst),
                    Some(&json!({"subject_id": format!("S{}", i % 20), "at": rfc3339(now_us() - 7_000_000_000),
                                 "justification": justification()})),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    for q in queries {
        let a = q.await.unwrap();
        assert_eq!(
            a.status,
            StatusCode::OK,
            "an audited query after space was freed: {}\n{}",
            a.body,
            server.log_tail(10)
        );
        answered.push(a.body["audit_id"].as_i64().unwrap());
    }
    let score = ingest.finish().await;
    assert!(score.failures.is_empty(), "{:#?}", score.failures);
    server.assert_healthy();
    let stored = assert_acked_stored_once(&url, &score.acked).await;
    assert_http_verify(&api, &f.auditor).await;
    assert_cli_verify(&url);
    let entries = audit_entries(&api, &f.auditor).await;
    for id in &answered {
        assert_eq!(
            entries.get(id).map(|e| e["action"].clone()),
            Some(json!("query.location_at_time")),
            "an answer given on a full disk has no audit entry {id}"
        );
    }
    println!(
        "sqlite disk full: tmpfs 24 MiB, ballast {} KiB; {} requests, {} fixes acknowledged \
         ({} accepted, {} duplicates of retried batches; {} before the disk filled), {} stored, \
         0 lost; {} answers 503, {} 429; queries while full: {} answered (each with its entry), \
         {} refused 503; 16 concurrent queries after, all answered; /readyz while full: {:?}; \
         slowest answer {:?}; {:.1} s",
        ballast_bytes / 1024,
        score.requests,
        score.acked.len(),
        score.accepted,
        score.duplicates,
        acked_full,
        stored,
        score.unavailable,
        score.overloaded,
        answered_while_full,
        refused,
        ready_while_full,
        score.slowest,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// 3. SIGKILL during audited queries and zone changes
// ---------------------------------------------------------------------------------------

#[derive(Default, Clone)]
struct Acts {
    /// `(audit_id, action)` of every query answer received
    answers: Vec<(i64, &'static str)>,
    zones_created: Vec<i64>,
    zones_deleted: Vec<i64>,
}

/// Kill-and-restart rounds per store: each kills at a fresh random moment.
const KILL_ROUNDS: u64 = 3;

/// Starts the load of one round: analysts' audited queries, officers' zone creates and
/// deletes, and ingest beside them. Tasks end when the server is gone.
fn start_round_load(
    api: &Api,
    f: &Fleet,
    acts: &Arc<Mutex<Acts>>,
    (t_lo, t_hi): (i64, i64),
    seed: u64,
) -> (Vec<tokio::task::JoinHandle<()>>, Ingest) {
    let mut tasks = Vec::new();
    for analyst in 0..2u64 {
        let (api, token, acts) = (api.clone(), f.analyst.clone(), acts.clone());
        let subjects = f.subjects.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ analyst);
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let at = rng.gen_range(t_lo..=t_hi);
                let (path, action, body) = if i % 2 == 0 {
                    let s = &subjects[rng.gen_range(0..subjects.len())];
                    ("/v1/queries/location-at-time", "query.location_at_time",
                     json!({"subject_id": s, "at": rfc3339(at), "justification": justification()}))
                } else {
                    ("/v1/queries/crime-scene", "query.crime_scene",
                     json!({"lat": 51.502, "lon": -0.12, "radius_m": 300.0, "from": rfc3339(at - 60_000_000),
                            "to": rfc3339(at + 60_000_000), "justification": justification()}))
                };
                match api.send(reqwest::Method::POST, path, Some(&token), Some(&body)).await {
                    Ok(a) if a.status == StatusCode::OK => acts
                        .lock()
                        .unwrap()
                        .answers
                        .push((a.body["audit_id"].as_i64().unwrap(), action)),
                    Ok(a) => panic!("{path} answered {} before the kill: {}", a.status, a.body),
                    Err(_) => return, // killed
                }
            }
        }));
    }
    for officer in 0..2u64 {
        let (api, token, acts) = (api.clone(), f.officer.clone(), acts.clone());
        let subjects = f.subjects.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (officer + 10));
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<i64> = Vec::new();
            for i in 0u64.. {
                let answer = if i % 3 == 2 && !mine.is_empty() {
                    let zid = mine.swap_remove(rng.gen_range(0..mine.len()));
                    match api.send(reqwest::Method::DELETE, &format!("/v1/zones/{zid}"), Some(&token), None).await {
                        Ok(a) if a.status == StatusCode::NO_CONTENT => {
                            acts.lock().unwrap().zones_deleted.push(zid);
                            continue;
                        }
                        other => other,
                    }
                } else {
                    let s = &subjects[rng.gen_range(0..subjects.len())];
                    let body = json!({"kind": "exclusion", "name": format!("fault zone {seed}-{officer}-{i}"),
                        "geometry": {"type": "Circle", "center": [-0.12 + rng.gen_range(-0.05..0.05), 51.5], "radius_m": 150.0}});
                    match api.send(reqwest::Method::POST, &format!("/v1/subjects/{s}/zones"), Some(&token), Some(&body)).await {
                        Ok(a) if a.status == StatusCode::CREATED => {
                            let zid = a.body["id"].as_i64().unwrap();
                            mine.push(zid);
                            acts.lock().unwrap().zones_created.push(zid);
                            continue;
                        }
                        other => other,
                    }
                };
                match answer {
                    Ok(a) => panic!("a zone change answered {} before the kill: {}", a.status, a.body),
                    Err(_) => return, // killed
                }
            }
        }));
    }
    let ingest = Ingest::start(api, &f.gateway, &f.devices, 1, 100, true);
    (tasks, ingest)
}

/// After a restart: the chain verifies; every answer received has its entry; every
/// acknowledged zone change is there with its entries, and nothing is half-written.
/// Returns `(entries, zones stored)`.
async fn check_after_restart(
    url: &str,
    api: &Api,
    f: &Fleet,
    acts: &Acts,
    seed: u64,
) -> (Value, usize) {
    assert_cli_verify(url);
    let verified = assert_http_verify(api, &f.auditor).await;
    let entries = audit_entries(api, &f.auditor).await;
    for (id, action) in &acts.answers {
        let e = entries.get(id).unwrap_or_else(|| {
            panic!("query answer with audit_id {id} has no entry (seed {seed})")
        });
        assert_eq!(e["action"], *action, "{e}");
        assert_eq!(e["justification"], justification(), "{e}");
    }
    let mut zones: HashMap<i64, Value> = HashMap::new();
    for s in &f.subjects {
        let (st, v) = api
            .get(&format!("/v1/subjects/{s}/zones"), &f.officer)
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        for z in v["items"].as_array().unwrap() {
            zones.insert(z["id"].as_i64().unwrap(), z.clone());
        }
    }
    let entry_for = |action: &str, zid: i64| {
        entries
            .values()
            .filter(|e| e["action"] == action && e["parameters"]["zone_id"] == zid)
            .count()
    };
    for zid in &acts.zones_created {
        assert!(
            zones.contains_key(zid),
            "acknowledged zone {zid} lost (seed {seed})"
        );
    }
    for zid in &acts.zones_deleted {
        assert!(
            !zones[zid]["valid_to"].is_null(),
            "acknowledged delete of zone {zid} lost (seed {seed})"
        );
    }
    for (zid, z) in &zones {
        assert_eq!(
            entry_for("zone.create", *zid),
            1,
            "zone {zid} without its one zone.create entry (seed {seed})"
        );
        let ended = !z["valid_to"].is_null();
        assert_eq!(
            entry_for("zone.delete", *zid),
            usize::from(ended),
            "zone {zid} (ended: {ended}) and its zone.delete entries disagree (seed {seed})"
        );
    }
    for e in entries
        .values()
        .filter(|e| e["action"] == "zone.create" || e["action"] == "zone.delete")
    {
        let zid = e["parameters"]["zone_id"].as_i64().unwrap();
        assert!(
            zones.contains_key(&zid),
            "audit entry for a zone that does not exist: {e}"
        );
    }
    (verified["entries"].clone(), zones.len())
}

async fn sigkill_during_queries_and_zone_changes_leaves_every_answer_audited(backend: Backend) {
    let started = Instant::now();
    let seed: u64 = std::env::var("TAGWATCH_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (url, _guard) = fresh_database(backend).await;
    let admin = create_admin(&url);
    let mut server = Server::start(&url, &[], &[]);
    let f = fleet(&server.api(), &admin, 8).await;
    // some history to query
    let ingest = Ingest::start(&server.api(), &f.gateway, &f.devices, 2, 200, false);
    ingest.wait_acked(2_000, Duration::from_secs(60)).await;
    let history = ingest.finish().await;
    assert!(history.failures.is_empty(), "{:#?}", history.failures);
    let window = history
        .acked
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), (_, ts)| {
            (lo.min(*ts), hi.max(*ts))
        });

    let acts: Arc<Mutex<Acts>> = Arc::default();
    let mut acked = history.acked;
    let mut kills = Vec::new();
    let mut summary = (Value::Null, 0);
    for round in 0..KILL_ROUNDS {
        let (tasks, ingest) =
            start_round_load(&server.api(), &f, &acts, window, seed ^ (round << 32));
        let kill_after = Duration::from_millis(rng.gen_range(500..2_500));
        tokio::time::sleep(kill_after).await;
        server.assert_healthy();
        server.kill();
        kills.push(kill_after);
        for t in tasks {
            t.await.unwrap();
        }
        let score = ingest.finish().await;
        assert!(score.failures.is_empty(), "{:#?}", score.failures);
        acked.extend(score.acked);

        // Restart on the same store.
        server = Server::start(&url, &[], &[]);
        let acts = acts.lock().unwrap().clone();
        summary = check_after_restart(&url, &server.api(), &f, &acts, seed).await;
    }
    let acts = acts.lock().unwrap().clone();
    assert!(
        acts.answers.len() >= 5 && !acts.zones_created.is_empty(),
        "too little happened before the kills to test anything (seed {seed}): {} answers, {} zones",
        acts.answers.len(),
        acts.zones_created.len()
    );
    let stored = assert_acked_stored_once(&url, &acked).await;
    server.assert_healthy();
    println!(
        "sigkill {backend:?} (seed {seed}): {KILL_ROUNDS} kills after {kills:?}; {} query \
         answers, all audited; zones {} created / {} deleted acknowledged, {} stored, every one \
         with its entries; audit chain {} entries ok; {} fixes acknowledged (history and \
         ingest beside the load), {} stored, 0 lost; {:.1} s",
        acts.answers.len(),
        acts.zones_created.len(),
        acts.zones_deleted.len(),
        summary.1,
        summary.0,
        acked.len(),
        stored,
        started.elapsed().as_secs_f64()
    );
}

/// Regression: a zone was inserted (and enforced) even when its audit entry could not be
/// written, because the insert and the entry were two transactions.
async fn a_zone_change_whose_audit_entry_cannot_be_written_is_not_made(backend: Backend) {
    let app = common::spawn_app(backend).await;
    let (officer_id, officer) = app.user("officer", "officer").await;
    app.subject("S1", Some(officer_id)).await;
    let zone = |name: &str| {
        json!({"kind": "exclusion", "name": name,
               "geometry": {"type": "Circle", "center": [-0.12, 51.5], "radius_m": 100.0}})
    };
    let (s, v) = app
        .post("/v1/subjects/S1/zones", &officer, zone("kept"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let kept = v["id"].as_i64().unwrap();
    // The retention job's start-up entry first (it would otherwise chain from the head
    // read before the corruption below, and become a sound head itself).
    wait_for(
        "the retention job's start-up entry",
        Duration::from_secs(30),
        || async {
            let filter = tagwatch::store::AuditFilter {
                limit: 100,
                ..Default::default()
            };
            app.store()
                .audit_page(&filter)
                .await
                .unwrap()
                .iter()
                .any(|e| e.action == "retention.purge")
        },
    )
    .await;
    // A head hash that cannot be chained from makes every append fail.
    let statement = common::break_audit_head(backend);
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let (s, v) = app
        .post("/v1/subjects/S1/zones", &officer, zone("refused"))
        .await;
    assert!(s.is_server_error(), "{s} {v}");
    let (s, v) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/zones/{kept}"),
            Some(&officer),
            None,
        )
        .await;
    assert!(s.is_server_error(), "{s} {v}");
    let (_, v) = app.get("/v1/subjects/S1/zones", &officer).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the unaudited zone was stored: {v}");
    assert_eq!(items[0]["id"], kept);
    assert!(
        items[0]["valid_to"].is_null(),
        "the unaudited delete was made: {v}"
    );
}

on_both_stores!(
    sigkill_during_queries_and_zone_changes_leaves_every_answer_audited,
    a_zone_change_whose_audit_entry_cannot_be_written_is_not_made,
);

// ---------------------------------------------------------------------------------------
// 4. Clock jumps
// ---------------------------------------------------------------------------------------

/// Alerts of `kind` for a subject.
async fn alerts_of(api: &Api, admin: &str, kind: &str, subject: &str) -> Vec<Value> {
    let (s, v) = api
        .get(
            &format!("/v1/alerts?type={kind}&subject_id={subject}"),
            admin,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

/// One ping per device at the test's (true) time; every one must be accepted.
/// Waits (up to 60 s) until `subject` has a comms-loss alert, while `alive` devices keep
/// pinging about once a second.
async fn comms_loss_found(
    what: &str,
    api: &Api,
    admin: &str,
    gateway: &str,
    alive: &[&str],
    subject: &str,
) {
    let mut rounds = 0;
    wait_for(what, Duration::from_secs(60), || {
        rounds += 1;
        let round = rounds;
        async move {
            if round % 10 == 0 {
                ping_now(api, gateway, alive).await;
            }
            !alerts_of(api, admin, "comms_loss", subject)
                .await
                .is_empty()
        }
    })
    .await;
}

async fn ping_now(api: &Api, gateway: &str, devices: &[&str]) {
    let ts = rfc3339(now_us());
    let body: Vec<Value> = devices
        .iter()
        .map(|d| json!({"device_id": d, "ts": ts, "lat": 51.5, "lon": -0.12, "accuracy_m": 5.0}))
        .collect();
    let (s, v) = api.post("/v1/pings", gateway, Value::Array(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["accepted"].as_u64(),
        Some(devices.len() as u64),
        "valid fixes refused: {v}"
    );
}

/// `(device, ts)` query through the audited path; must answer.
async fn audited_query(api: &Api, analyst: &str, subject: &str) {
    let (s, v) = api
        .post(
            "/v1/queries/location-at-time",
            analyst,
            json!({"subject_id": subject, "at": rfc3339(now_us() - 1_000_000), "justification": justification()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_raise_no_false_comms_loss_reject_no_valid_fix_and_keep_the_audit_chain() {
    let started = Instant::now();
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "this test needs Debian's faketime package ({LIBFAKETIME} is missing; apt-get install \
         faketime — .ci/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("faketime");
    let set_clock = |offset: &str| std::fs::write(&clock, format!("{offset}\n")).unwrap();
    set_clock("+0");
    let clock_s = clock.display().to_string();
    let env = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", clock_s.as_str()),
        ("FAKETIME_NO_CACHE", "1"),
        // a wall-clock step moves CLOCK_REALTIME only, as the kernel does
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    // The preload works: `date` under it sees the offset.
    set_clock("+10800");
    let out = Command::new("date").arg("+%s").envs(env).output().unwrap();
    let faked: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        faked - now_us() / 1_000_000 > 10_000,
        "libfaketime did not move the clock ({faked})"
    );
    set_clock("+0");

    let url = format!("sqlite://{}/tagwatch.db", dir.path().display());
    let admin = create_admin(&url);
    const COMMS_LOSS_S: i64 = 10;
    let mut server = Server::start(
        &url,
        &[
            "--comms-loss-s",
            &COMMS_LOSS_S.to_string(),
            "--sweep-interval-s",
            "1",
        ],
        &env,
    );
    let api = server.api();
    let f = fleet(&api, &admin, 4).await;
    let (d, s) = (&f.devices, &f.subjects);
    let alive = [d[0].as_str(), d[1].as_str(), d[2].as_str()];

    // D3 pings once, then falls silent: its comms loss is due COMMS_LOSS_S after this.
    let silent_since = now_us();
    ping_now(&api, &f.gateway, &[d[3].as_str()]).await;
    ping_now(&api, &f.gateway, &alive).await;
    audited_query(&api, &f.analyst, &s[0]).await;

    // Forward 3 h, just after a ping round; sweeps run (every 1 s) before the next round.
    set_clock("+10800");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    ping_now(&api, &f.gateway, &alive).await;
    // A fix an hour ahead of true time is still in the future, whatever the wall clock says.
    let (st, v) = api
        .post(
            "/v1/pings",
            &f.gateway,
            json!([{"device_id": d[0], "ts": rfc3339(now_us() + 3_600_000_000), "lat": 51.5, "lon": -0.12}]),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["accepted"], 0,
        "a fix an hour in the future was accepted: {v}"
    );
    audited_query(&api, &f.analyst, &s[0]).await;
    // The silent device is found after COMMS_LOSS_S of true time; the others keep pinging.
    comms_loss_found(
        "the silent device's comms loss",
        &api,
        &admin,
        &f.gateway,
        &alive,
        &f.subjects[3],
    )
    .await;
    let silent = alerts_of(&api, &admin, "comms_loss", &s[3]).await;
    assert_eq!(silent.len(), 1, "{silent:?}");
    let started_at =
        tagwatch::model::time::parse_rfc3339(silent[0]["started_at"].as_str().unwrap()).unwrap();
    let expected = silent_since + COMMS_LOSS_S * 1_000_000;
    assert!(
        (started_at - expected).abs() < 30_000_000,
        "comms loss started_at {} is off true server time by {} s",
        silent[0]["started_at"],
        (started_at - expected) / 1_000_000
    );
    for subject in &s[..3] {
        let a = alerts_of(&api, &admin, "comms_loss", subject).await;
        assert!(
            a.is_empty(),
            "false comms loss after a forward jump for {subject}: {a:?}"
        );
    }

    // Back 4 h, to 1 h behind true time: valid fixes are still accepted.
    set_clock("-3600");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    ping_now(&api, &f.gateway, &alive).await;
    audited_query(&api, &f.analyst, &s[1]).await;
    // D0 now falls silent; D1 and D2 keep pinging. D0's comms loss is still found in time.
    let d0_silent_since = now_us();
    comms_loss_found(
        "D0's comms loss after the backward jump",
        &api,
        &admin,
        &f.gateway,
        &[f.devices[1].as_str(), f.devices[2].as_str()],
        &f.subjects[0],
    )
    .await;
    let d0_found_after = now_us() - d0_silent_since;
    for subject in &s[1..3] {
        let a = alerts_of(&api, &admin, "comms_loss", subject).await;
        assert!(
            a.is_empty(),
            "false comms loss after a backward jump for {subject}: {a:?}"
        );
    }

    set_clock("+0");
    ping_now(&api, &f.gateway, &alive).await;
    audited_query(&api, &f.analyst, &s[2]).await;
    server.assert_healthy();
    assert!(
        server.log_contains("wall clock stepped"),
        "the clock step was not logged"
    );
    let verified = assert_http_verify(&api, &f.auditor).await;
    assert_cli_verify(&url);
    // Audit times follow the entries' order: server time never stepped back. (An entry's
    // time is taken before the append is serialised, so neighbours written concurrently
    // may be a few milliseconds out of order; a step is hours.)
    let entries = audit_entries(&api, &f.auditor).await;
    let mut ids: Vec<i64> = entries.keys().copied().collect();
    ids.sort_unstable();
    let at = |id: &i64| {
        tagwatch::model::time::parse_rfc3339(entries[id]["at"].as_str().unwrap()).unwrap()
    };
    for w in ids.windows(2) {
        assert!(
            at(&w[0]) - at(&w[1]) < 5_000_000,
            "audit time ran backwards: {} then {}",
            entries[&w[0]],
            entries[&w[1]]
        );
    }
    println!(
        "clock jumps: +3 h then -1 h (vs true time) under libfaketime; comms loss {COMMS_LOSS_S} \
         s: silent device found with started_at {} s off true time, device silenced after the \
         backward jump found after {:.1} s, 0 false comms-loss alerts on 3 live devices; \
         fix 1 h ahead refused; every valid fix accepted; audit chain {} entries ok; {:.1} s",
        (started_at - expected) / 1_000_000,
        d0_found_after as f64 / 1e6,
        verified["entries"],
        started.elapsed().as_secs_f64()
    );
}
