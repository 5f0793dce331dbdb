//! The security review's regression tests (issue 8; docs/SECURITY.md says what each proves):
//! no positions, names of monitored people or tokens in the service's logs at `info`; hostile
//! strings stored and read back byte-identical through every text field on both stores, the
//! audit chain intact after them; SQL built only from constants; made-up tokens throttled on
//! every way in; no HTML sinks in the console's scripts; revoked tokens refused at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ago, fresh_database, spawn_app, Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_stores!(
    logs_at_info_carry_no_positions_names_or_tokens,
    hostile_strings_are_stored_and_read_back_byte_identical,
    text_with_a_nul_character_is_refused_with_422_on_every_store,
    made_up_tokens_on_osmand_and_the_alert_stream_are_throttled_too,
    a_revoked_token_is_refused_at_once,
);

const BIN: &str = env!("CARGO_BIN_EXE_tagwatch");

// ------------------------------------------------------------------ logs

/// Distinctive positions (seven decimals, as tags send them) whose every printed form the
/// logs are searched for: degrees as sent, and the stored degrees × 10⁷.
const ZONE: (f64, f64) = (51.5309871, -0.1238457); // near King's Cross
const HOME: (f64, f64) = (51.5447313, -0.1029461); // Islington
const OSMAND: (f64, f64) = (51.5377719, -0.1164837);
/// Out of range: refused with a reason that names it.
const BAD_LAT: f64 = 95.4242424;
const DISPLAY_NAME: &str = "Quintessa Marigold-Varga";

/// Every string a log line must not contain for these positions.
fn position_needles() -> Vec<String> {
    let mut out = Vec::new();
    for (lat, lon) in [ZONE, HOME, OSMAND, (BAD_LAT, 0.0)] {
        for v in [lat, lon] {
            if v == 0.0 {
                continue;
            }
            let s = format!("{:.7}", v.abs());
            // degrees to five decimals (any precision a formatter might choose shows them)
            out.push(s[..s.find('.').unwrap() + 6].to_owned());
            // degrees × 10⁷, as stored
            out.push(format!("{}", (v.abs() * 1e7).round() as i64));
        }
    }
    out
}

/// A running `tagwatch serve` whose stderr is collected line by line.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts the real binary at `RUST_LOG=info` (wider than the default `info,sqlx=warn`).
    fn start(database_url: &str) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--sweep-interval-s",
                "1",
            ])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap();
                if let Some(i) = line.find("http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line[i..].split_whitespace().next().unwrap().to_owned());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server did not log its address");
        Server {
            child,
            url,
            log,
            reader: Some(reader),
        }
    }

    /// Stops the server (SIGKILL: every line was written before it) and returns its log.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.log.lock().unwrap().clone()
    }
}

/// Runs the CLI; returns stdout, and pushes its stderr to `log`.
fn cli(database_url: &str, args: &[&str], log: &mut Vec<String>) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    log.extend(stderr.lines().map(str::to_owned));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A small client for a server started from the binary.
struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (s, v) = self.call(Method::POST, path, token, Some(body)).await;
        assert!((200..300).contains(&s), "POST {path}: {s} {v}");
        v
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, token, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    async fn get_status(&self, path_and_query: &str) -> u16 {
        self.http
            .get(format!("{}{path_and_query}", self.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn justification() -> Value {
    json!({"crime_ref": "CR-LOG-1", "legal_basis": "DPA 2018 s.35", "reason": "log test"})
}

/// SPEC §5 and docs/SECURITY.md: positions and names of monitored people never reach the
/// logs above `debug`, nor do tokens. The real binary at `RUST_LOG=info` goes through ingest
/// (JSON and OsmAnd, good and bad), a breach, its review, trail reads, every lawful query and
/// refused requests with positions and tokens in the URL; its stderr must hold none of them.
async fn logs_at_info_carry_no_positions_names_or_tokens(backend: Backend) {
    let (database_url, _guard) = fresh_database(backend).await;
    let mut log = Vec::new();
    let admin = cli(
        &database_url,
        &["user", "create", "--name", "admin", "--role", "admin"],
        &mut log,
    );
    let server = Server::start(&database_url);
    let c = Client {
        http: reqwest::Client::new(),
        url: server.url.clone(),
    };

    let officer = c
        .post(
            "/v1/users",
            &admin,
            json!({"name": "officer", "role": "officer"}),
        )
        .await;
    let analyst = c
        .post(
            "/v1/users",
            &admin,
            json!({"name": "analyst", "role": "analyst"}),
        )
        .await;
    let auditor = c
        .post(
            "/v1/users",
            &admin,
            json!({"name": "auditor", "role": "auditor"}),
        )
        .await;
    let (officer_id, officer) = (
        officer["id"].as_i64().unwrap(),
        officer["token"].as_str().unwrap().to_owned(),
    );
    let analyst = analyst["token"].as_str().unwrap().to_owned();
    let auditor = auditor["token"].as_str().unwrap().to_owned();
    c.post(
        "/v1/subjects",
        &admin,
        json!({"id": "GTO-77", "display_name": DISPLAY_NAME, "borough": "Camden", "officer_id": officer_id}),
    )
    .await;
    let device = c
        .post(
            "/v1/devices",
            &admin,
            json!({"id": "TAG-77", "subject_id": "GTO-77"}),
        )
        .await;
    let device = device["token"].as_str().unwrap().to_owned();
    c.post(
        "/v1/subjects/GTO-77/zones",
        &officer,
        json!({"kind": "exclusion", "name": "station", "grace_s": 0, "valid_from": ago(7200),
               "geometry": {"type": "Circle", "center": [ZONE.1, ZONE.0], "radius_m": 300}}),
    )
    .await;

    // ingest: a breach (still open), a refused item naming its bad latitude, a retried
    // duplicate
    let pings = json!([
        {"device_id": "TAG-77", "ts": ago(400), "lat": HOME.0, "lon": HOME.1, "accuracy_m": 8.0},
        {"device_id": "TAG-77", "ts": ago(300), "lat": ZONE.0, "lon": ZONE.1, "accuracy_m": 8.0},
        {"device_id": "TAG-77", "ts": ago(250), "lat": BAD_LAT, "lon": ZONE.1},
    ]);
    let v = c.post("/v1/pings", &device, pings.clone()).await;
    assert_eq!(v["rejected"].as_array().unwrap().len(), 1, "{v}");
    c.post("/v1/pings", &device, pings).await;
    let mut alert = Value::Null;
    for _ in 0..200 {
        let v = c.get("/v1/alerts", &officer).await;
        if let Some(a) = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["type"] == "exclusion_breach")
        {
            alert = a.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = alert["id"].as_i64().expect("the breach opens");
    c.get(&format!("/v1/alerts/{id}"), &officer).await;
    c.post(
        &format!("/v1/alerts/{id}/acknowledge"),
        &officer,
        json!({"note": "seen"}),
    )
    .await;
    c.get("/v1/subjects/GTO-77", &officer).await;
    c.get("/v1/subjects", &admin).await;
    c.get("/v1/subjects/GTO-77/trail", &officer).await;
    c.get("/v1/subjects/GTO-77/trail?format=geojson", &officer)
        .await;

    // lawful queries, JSON and CSV (the justification and positions in the query string)
    let (from, to) = (ago(3600), ago(-60));
    c.post(
        "/v1/queries/location-at-time",
        &analyst,
        json!({"subject_id": "GTO-77", "at": ago(300), "justification": justification()}),
    )
    .await;
    c.post(
        "/v1/queries/crime-scene",
        &analyst,
        json!({"lat": ZONE.0, "lon": ZONE.1, "radius_m": 200.0, "from": from, "to": to,
               "justification": justification()}),
    )
    .await;
    c.post(
        "/v1/queries/crime-match",
        &analyst,
        json!({"radius_m": 200.0, "justification": justification(),
               "crimes": [{"ref": "C1", "lat": ZONE.0, "lon": ZONE.1, "from": from, "to": to}]}),
    )
    .await;
    let csv = format!(
        "ref,lat,lon,from,to\nC2,{},{},{from},{to}\n",
        ZONE.0, ZONE.1
    );
    let r = c
        .http
        .post(format!(
            "{}/v1/queries/crime-match?radius_m=200&crime_ref=CR-LOG-2&legal_basis=DPA&reason=csv",
            c.url
        ))
        .bearer_auth(&analyst)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.get("/v1/audit", &auditor).await;
    c.get("/v1/audit/verify", &auditor).await;

    // OsmAnd: positions and the token in the URL, with a made-up token, the real one, and a
    // refused latitude; a form body; an unknown route with positions in its query
    let made_up = format!("tw_{}", "ab".repeat(32));
    let osmand = |token: &str, lat: f64| {
        format!(
            "/osmand?id=TAG-77&lat={lat}&lon={}&timestamp={}&hdop=1.2&token={token}",
            OSMAND.1,
            chrono::Utc::now().timestamp()
        )
    };
    assert_eq!(c.get_status(&osmand(&made_up, OSMAND.0)).await, 401);
    assert_eq!(c.get_status(&osmand(&device, OSMAND.0)).await, 200);
    assert_eq!(c.get_status(&osmand(&device, BAD_LAT)).await, 400);
    let r = c
        .http
        .post(format!("{}/osmand", c.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "id=TAG-77&lat={}&lon={}&token={made_up}",
            OSMAND.0, OSMAND.1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        c.get_status(&format!(
            "/v1/where?lat={}&lon={}&token={device}",
            ZONE.0, ZONE.1
        ))
        .await,
        404
    );
    // a token that is not one, a bearer header with a made-up token
    let (s, _) = c.call(Method::GET, "/v1/subjects", &made_up, None).await;
    assert_eq!(s, 401);
    // let the sweep run over the fresh state
    tokio::time::sleep(Duration::from_millis(1500)).await;
    log.extend(server.stop());

    let text = log.join("\n");
    // the log is there and at info: the breach and the listening line were logged
    assert!(text.contains("alert opened"), "{text}");
    assert!(text.contains("tagwatch listening"), "{text}");
    let mut needles = position_needles();
    needles.push(DISPLAY_NAME.to_owned());
    needles.extend(DISPLAY_NAME.split([' ', '-']).map(str::to_owned));
    for token in [&admin, &officer, &analyst, &auditor, &device, &made_up] {
        // the secret part, and any 16 hex digits of it a truncating formatter might keep
        let secret = token.trim_start_matches("tw_");
        needles.push(secret[..16].to_owned());
        needles.push(secret[secret.len() - 16..].to_owned());
    }
    for needle in &needles {
        let hits: Vec<&String> = log.iter().filter(|l| l.contains(needle.as_str())).collect();
        assert!(hits.is_empty(), "{needle:?} logged at info: {hits:#?}");
    }
}

// ------------------------------------------------------------------ hostile strings

/// Strings that break naive SQL building, quoting, escaping or encoding. No NUL: PostgreSQL
/// text cannot hold one, so it is refused at the edge (see the next test).
fn hostile() -> Vec<String> {
    vec![
        "'; DROP TABLE fixes; --".to_owned(),
        "Robert'); DROP TABLE subjects;--".to_owned(),
        "\" OR \"1\"=\"1\" -- ' OR '1'='1".to_owned(),
        "$1 $2 ? ?1 :name @p0 %s %d {0} $$quoted$$ $tag$x$tag$".to_owned(),
        "back\\slash \\' \\\" \\\\ \\n \\u0000 LIKE '%_' ESCAPE '\\'".to_owned(),
        "line\nbreak\r\ttab \u{1b}[31mred\u{1b}[0m \u{7f}".to_owned(),
        "Zoë Ñandú Łódź 北京 Ελληνικά עברית 🚓👮 \u{202e}gnp.exe \u{feff}\u{200b}".to_owned(),
        "<script>alert(1)</script><img src=x onerror=alert(2)>".to_owned(),
        // long, within every field's limit (200 characters: zone and user names), with
        // multi-byte characters
        "é'\"".repeat(66) + "xx",
    ]
}

/// A 4,000-character justification field (the limit), quotes and multi-byte included.
fn long_text() -> String {
    let s = "Ω'; DELETE FROM audit; -\"".repeat(160);
    assert_eq!(s.chars().count(), 4000);
    s
}

async fn ok(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let (s, v) = app.call(method.clone(), path, Some(token), body).await;
    assert!(s.is_success(), "{method} {path}: {s} {v}");
    v
}

/// Every free-text field that reaches SQL, through the HTTP API on both stores: subject
/// display names and boroughs, user names (the audit's actor name), zone names, absence
/// reasons, alert notes, justifications, crime refs and categories. Each comes back
/// byte-identical from the API, the tables are all still there, and the audit chain,
/// whose hashes cover these strings, verifies.
async fn hostile_strings_are_stored_and_read_back_byte_identical(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let (_, auditor) = app.user("auditor", "auditor").await;
    let long = long_text();
    for (i, s) in hostile().iter().enumerate() {
        let (sid, tag) = (format!("GTO-H{i}"), format!("TAG-H{i}"));
        let (officer_id, officer) = app.user(s, "officer").await;
        let (_, analyst) = app.user(s, "analyst").await;
        let v = ok(
            &app,
            Method::POST,
            "/v1/subjects",
            &admin,
            Some(json!({"id": sid, "display_name": s, "borough": s, "officer_id": officer_id})),
        )
        .await;
        assert_eq!(
            (v["display_name"].as_str(), v["borough"].as_str()),
            (Some(s.as_str()), Some(s.as_str()))
        );
        let v = ok(
            &app,
            Method::GET,
            &format!("/v1/subjects/{sid}"),
            &officer,
            None,
        )
        .await;
        assert_eq!(v["display_name"].as_str(), Some(s.as_str()), "{v}");
        assert_eq!(v["borough"].as_str(), Some(s.as_str()), "{v}");
        let device = app.device(&tag, &sid).await;

        let zone = ok(
            &app,
            Method::POST,
            &format!("/v1/subjects/{sid}/zones"),
            &officer,
            Some(json!({"kind": "exclusion", "name": s, "valid_from": ago(7200),
                        "geometry": {"type": "Circle", "center": [-0.1238, 51.5308], "radius_m": 100}})),
        )
        .await;
        assert_eq!(zone["name"].as_str(), Some(s.as_str()), "{zone}");
        let zones = ok(
            &app,
            Method::GET,
            &format!("/v1/subjects/{sid}/zones"),
            &officer,
            None,
        )
        .await;
        assert_eq!(
            zones["items"][0]["name"].as_str(),
            Some(s.as_str()),
            "{zones}"
        );
        let absence = ok(
            &app,
            Method::POST,
            &format!("/v1/subjects/{sid}/absences"),
            &officer,
            Some(json!({"from": ago(100), "to": ago(-3600), "reason": s})),
        )
        .await;
        assert_eq!(absence["reason"].as_str(), Some(s.as_str()), "{absence}");

        // an alert to review: a tamper report opens one at once
        let (st, v) = app
            .post_pings(
                &device,
                json!([{"device_id": tag, "ts": ago(300), "lat": 51.545, "lon": -0.103, "tamper": true}]),
            )
            .await;
        assert_eq!(
            (st, v["accepted"].as_i64()),
            (StatusCode::OK, Some(1)),
            "{v}"
        );
        let mut alert_id = None;
        for _ in 0..200 {
            let v = ok(
                &app,
                Method::GET,
                &format!("/v1/alerts?subject_id={sid}"),
                &officer,
                None,
            )
            .await;
            alert_id = v["items"]
                .as_array()
                .unwrap()
                .first()
                .and_then(|a| a["id"].as_i64());
            if alert_id.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let alert_id = alert_id.expect("a tamper alert opens");
        let v = ok(
            &app,
            Method::POST,
            &format!("/v1/alerts/{alert_id}/acknowledge"),
            &officer,
            Some(json!({"note": s})),
        )
        .await;
        assert_eq!(v["note"].as_str(), Some(s.as_str()), "{v}");
        let note = format!("{s}{long}");
        let v = ok(
            &app,
            Method::POST,
            &format!("/v1/alerts/{alert_id}/close"),
            &officer,
            Some(json!({"outcome": "equipment_fault", "note": note})),
        )
        .await;
        assert_eq!(v["note"].as_str(), Some(note.as_str()));
        let v = ok(
            &app,
            Method::GET,
            &format!("/v1/alerts/{alert_id}"),
            &officer,
            None,
        )
        .await;
        assert_eq!(v["note"].as_str(), Some(note.as_str()));

        // lawful queries: the justification and crime refs, JSON and CSV
        let j = json!({"crime_ref": s, "legal_basis": long, "reason": s});
        ok(
            &app,
            Method::POST,
            "/v1/queries/location-at-time",
            &analyst,
            Some(json!({"subject_id": sid, "at": ago(300), "justification": j})),
        )
        .await;
        let v = ok(
            &app,
            Method::POST,
            "/v1/queries/crime-match",
            &analyst,
            Some(json!({"radius_m": 100.0, "justification": j, "crimes": [
                {"ref": s, "category": s, "lat": 51.5308, "lon": -0.1238, "from": ago(3600), "to": ago(0)}]})),
        )
        .await;
        assert_eq!(v["results"][0]["ref"].as_str(), Some(s.as_str()), "{v}");
        assert_eq!(
            v["results"][0]["category"].as_str(),
            Some(s.as_str()),
            "{v}"
        );
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["ref", "lat", "lon", "from", "to", "category"])
            .unwrap();
        w.write_record([
            s.as_str(),
            "51.5308",
            "-0.1238",
            &ago(3600),
            &ago(0),
            s.as_str(),
        ])
        .unwrap();
        let csv_body = w.into_inner().unwrap();
        let params = serde_urlencoded::to_string([
            ("radius_m", "100"),
            ("crime_ref", s.as_str()),
            ("legal_basis", s.as_str()),
            ("reason", long.as_str()),
        ])
        .unwrap();
        let r = app
            .post_raw(
                &format!("/v1/queries/crime-match?{params}"),
                &analyst,
                "text/csv",
                csv_body,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["results"][0]["ref"].as_str(), Some(s.as_str()), "{v}");

        // the audit trail holds them as given
        let entries = ok(&app, Method::GET, "/v1/audit?limit=1000", &auditor, None).await;
        let entries = entries["items"].as_array().unwrap();
        let mine: Vec<&Value> = entries
            .iter()
            .filter(|e| {
                e["subject_ids"]
                    .as_array()
                    .is_some_and(|a| a.contains(&json!(sid)))
                    || e["justification"]["crime_ref"] == json!(s)
            })
            .collect();
        assert!(
            mine.iter().any(|e| e["action"] == "query.location_at_time"
                && e["justification"] == j
                && e["actor_name"].as_str() == Some(s.as_str())),
            "{mine:#?}"
        );
        let csv_j = json!({"crime_ref": s, "legal_basis": s, "reason": long});
        assert!(
            mine.iter().any(|e| e["justification"] == csv_j),
            "{mine:#?}"
        );
        assert!(
            entries
                .iter()
                .any(|e| e["actor_name"].as_str() == Some(s.as_str())
                    && e["action"].as_str().is_some_and(|a| a.starts_with("zone"))),
            "zone change audited under the officer's name"
        );
    }
    // nothing was dropped or rewritten: every table is there and the chain verifies
    let v = ok(&app, Method::GET, "/v1/audit/verify", &auditor, None).await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(app.store().count_fixes().await.unwrap() >= hostile().len() as i64);
    let v = ok(&app, Method::GET, "/v1/subjects", &admin, None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), hostile().len());
    let report = app.store().verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
}

/// Found in review: PostgreSQL text cannot hold U+0000, so a display name, note or
/// justification with one was a 500 there (and stored on SQLite). It is now refused with
/// 422 on both stores, before anything is written, wherever it comes in: a JSON body, a
/// query parameter, a CSV upload.
async fn text_with_a_nul_character_is_refused_with_422_on_every_store(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let (officer_id, officer) = app.user("officer", "officer").await;
    let (_, analyst) = app.user("analyst", "analyst").await;
    app.subject("GTO-1", Some(officer_id)).await;
    let nul = "Jo\u{0}Bloggs";
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "/v1/subjects",
            admin.as_str(),
            json!({"id": "GTO-2", "display_name": nul}),
        ),
        (
            "/v1/subjects",
            admin.as_str(),
            json!({"id": "GTO-3", "borough": nul}),
        ),
        (
            "/v1/users",
            admin.as_str(),
            json!({"name": nul, "role": "officer"}),
        ),
        (
            "/v1/subjects/GTO-1/zones",
            officer.as_str(),
            json!({"kind": "exclusion", "name": nul, "valid_from": ago(60),
                   "geometry": {"type": "Circle", "center": [-0.1238, 51.5308], "radius_m": 100}}),
        ),
        (
            "/v1/subjects/GTO-1/absences",
            officer.as_str(),
            json!({"from": ago(100), "to": ago(-3600), "reason": nul}),
        ),
        (
            "/v1/queries/location-at-time",
            analyst.as_str(),
            json!({"subject_id": "GTO-1", "at": ago(60),
                   "justification": {"crime_ref": nul, "legal_basis": "x", "reason": "y"}}),
        ),
        (
            "/v1/queries/crime-match",
            analyst.as_str(),
            json!({"radius_m": 100.0, "justification": {"crime_ref": "a", "legal_basis": "b", "reason": "c"},
                   "crimes": [{"ref": nul, "lat": 51.5, "lon": -0.1, "from": ago(60), "to": ago(0)}]}),
        ),
    ];
    for (path, token, body) in cases {
        let (s, v) = app.post(path, token, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {v}");
    }
    // CSV: a NUL in a query parameter, and in a crime's ref
    let j = "radius_m=100&crime_ref=a&legal_basis=b";
    let r = app
        .post_raw(
            &format!("/v1/queries/crime-match?{j}&reason=x%00y"),
            &analyst,
            "text/csv",
            format!("ref,lat,lon,from,to\nC1,51.5,-0.1,{},{}\n", ago(60), ago(0)).into_bytes(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .post_raw(
            &format!("/v1/queries/crime-match?{j}&reason=x"),
            &analyst,
            "text/csv",
            format!(
                "ref,lat,lon,from,to\nC\u{0}1,51.5,-0.1,{},{}\n",
                ago(60),
                ago(0)
            )
            .into_bytes(),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(
        status == StatusCode::UNPROCESSABLE_ENTITY
            || (status == StatusCode::OK && v["results"].as_array().unwrap().is_empty()),
        "{status} {v}"
    );
    // in a path or a query parameter of a read: not found, refused or an empty list, never
    // a 500
    let (_, auditor) = app.user("auditor", "auditor").await;
    for (path, token) in [
        ("/v1/subjects/GTO%00-1", &officer),
        ("/v1/subjects/GTO%00-1/zones", &officer),
        ("/v1/subjects/GTO%00-1/trail", &officer),
        ("/v1/alerts?subject_id=GTO%00-1", &officer),
        ("/v1/audit?subject_id=GTO%00-1", &auditor),
    ] {
        let (s, v) = app.get(path, token).await;
        assert!(!s.is_server_error(), "{path}: {s} {v}");
    }
    // nothing of it was stored, and the service still answers
    let v = app.get("/v1/subjects", &admin).await.1;
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    let (s, _) = app.get("/v1/subjects/GTO-1/zones", &officer).await;
    assert_eq!(s, StatusCode::OK);
}

// ------------------------------------------------------------------ throttling

/// The lookup budget for unknown tokens (tests/spine.rs floods the bearer header of a JSON
/// route) also covers OsmAnd's `token=` parameter and the alert stream: a flood of made-up
/// tokens there is 401 or 429 with `Retry-After`, and the real device still posts.
async fn made_up_tokens_on_osmand_and_the_alert_stream_are_throttled_too(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subject("GTO-1", None).await;
    let device = app.device("TAG-1", "GTO-1").await;
    for route in ["osmand", "stream"] {
        let guesses = (0..600).map(|i| {
            let token = format!("tw_{i:064x}");
            let req = match route {
                "osmand" => app.client.get(format!(
                    "{}/osmand?id=TAG-1&lat=51.5&lon=-0.1&token={token}",
                    app.url
                )),
                _ => app
                    .client
                    .get(format!("{}/v1/alerts/stream", app.url))
                    .bearer_auth(token),
            };
            async move {
                let r = req.send().await.unwrap();
                (r.status(), r.headers().get("retry-after").cloned())
            }
        });
        let results = futures::future::join_all(guesses).await;
        assert!(
            results
                .iter()
                .all(|(s, _)| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
            "{route}: {results:?}"
        );
        let throttled: Vec<_> = results
            .iter()
            .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
            .collect();
        assert!(
            !throttled.is_empty(),
            "{route}: 600 made-up tokens exceed the budget"
        );
        assert!(
            throttled
                .iter()
                .all(|(_, r)| r.as_ref().is_some_and(|v| v == "1")),
            "{route}: every 429 says Retry-After: 1"
        );
        let r = app
            .client
            .get(format!(
                "{}/osmand?id=TAG-1&lat=51.5&lon=-0.1&timestamp={}&token={device}",
                app.url,
                chrono::Utc::now().timestamp()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{route}: the real device still posts"
        );
        // the next second has a fresh budget
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

// ------------------------------------------------------------------ revocation

/// `DELETE /v1/users/{id}/token` makes the token 401 on every route from its answer on (the
/// in-memory cache drops it), and after a restart; other tokens keep working. `tagwatch user
/// revoke` does the same from another process, and the running service refuses the token
/// once it reloads its cache (within 5 s).
async fn a_revoked_token_is_refused_at_once(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let (officer_id, officer) = app.user("officer", "officer").await;
    let (_, other_officer) = app.user("other", "officer").await;
    app.subject("GTO-1", Some(officer_id)).await;
    let device = app.device("TAG-1", "GTO-1").await;
    let (s, _) = app.get("/v1/subjects/GTO-1", &officer).await;
    assert_eq!(s, StatusCode::OK);

    // only admins revoke; an unknown user is 404
    let revoke = |id: i64| format!("/v1/users/{id}/token");
    let (s, _) = app
        .call(
            Method::DELETE,
            &revoke(officer_id),
            Some(&other_officer),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .call(Method::DELETE, &revoke(999_999), Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, _) = app
        .call(Method::DELETE, &revoke(officer_id), Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for path in ["/v1/subjects/GTO-1", "/v1/subjects", "/v1/alerts", "/v1/me"] {
        let (s, _) = app.get(path, &officer).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    // the stream: the status only (a 200 would stream for ever)
    let r = app
        .client
        .get(format!("{}/v1/alerts/stream", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    drop(r);
    // the others are untouched
    let (s, _) = app.get("/v1/subjects", &other_officer).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app
        .post_pings(
            &device,
            json!([{"device_id": "TAG-1", "ts": ago(10), "lat": 51.5, "lon": -0.1}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.restart().await;
    let (s, _) = app.get("/v1/subjects/GTO-1", &officer).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "still refused after a restart");
    let (s, _) = app.get("/v1/subjects", &admin).await;
    assert_eq!(s, StatusCode::OK);

    // the CLI, from another process, while the service runs with the token cached
    let (analyst_id, analyst) = app.user("Analyst Ada", "analyst").await;
    app.user("twin", "auditor").await;
    app.user("twin", "auditor").await;
    let (s, _) = app.get("/v1/me", &analyst).await;
    assert_eq!(s, StatusCode::OK);
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(["user", "revoke"])
            .args(args)
            .env("DATABASE_URL", &app.database_url)
            .output()
            .unwrap()
    };
    let out = cli(&["--name", "twin"]);
    assert!(!out.status.success(), "an ambiguous name is refused");
    let out = cli(&["--name", "Analyst Ada"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        analyst_id.to_string()
    );
    let started = std::time::Instant::now();
    loop {
        let (s, _) = app.get("/v1/me", &analyst).await;
        if s == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(s, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the running service still takes a token revoked by the CLI"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, _) = app.get("/v1/subjects", &admin).await;
    assert_eq!(s, StatusCode::OK);
}

// ------------------------------------------------------------------ source checks

/// The string literals of the call whose arguments start at `rest` (just after its opening
/// parenthesis), and the code outside them, up to the matching closing parenthesis.
fn call_args(rest: &str) -> (Vec<String>, String) {
    let (mut literals, mut code, mut depth) = (Vec::new(), String::new(), 1);
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut lit = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            lit.push(c);
                            lit.extend(chars.next());
                        }
                        '"' => break,
                        c => lit.push(c),
                    }
                }
                literals.push(lit);
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            c => code.push(c),
        }
    }
    (literals, code)
}

/// How many SQL `format!`s and `QueryBuilder::push`es the scan saw, and what it found wrong.
#[derive(Debug, Default)]
struct SqlScan {
    formatted: usize,
    pushed: usize,
    findings: Vec<String>,
}

/// Scans one Rust source for SQL text that is not a constant: a `format!` whose text is SQL
/// may interpolate only the column-list constants and take no other argument;
/// `QueryBuilder::push` may take only literals (values go through `push_bind`).
fn scan_sql(path: &str, text: &str, scan: &mut SqlScan) {
    const COLUMN_LISTS: [&str; 2] = ["FIX_COLUMNS", "FIX_SELECT"];
    let code: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let at = |i: usize| format!("{path}:{}", code[..i].lines().count());
    for (i, _) in code.match_indices("format!(") {
        let (literals, rest) = call_args(&code[i + "format!(".len()..]);
        let sql = literals.concat();
        if !["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"]
            .iter()
            .any(|k| sql.contains(k))
        {
            continue;
        }
        scan.formatted += 1;
        if !rest.trim().is_empty() {
            scan.findings
                .push(format!("{}: format! argument {:?}", at(i), rest.trim()));
        }
        for part in sql.split('{').skip(1) {
            let name = part.split('}').next().unwrap_or_default();
            if !COLUMN_LISTS.contains(&name) {
                scan.findings
                    .push(format!("{}: {{{name}}} interpolated into SQL", at(i)));
            }
        }
    }
    for (i, _) in code.match_indices("QueryBuilder::new(") {
        let decl = &code[..i];
        let Some(let_at) = decl.rfind("let mut ") else {
            scan.findings
                .push(format!("{}: QueryBuilder not bound by `let mut`", at(i)));
            continue;
        };
        let var = decl[let_at + 8..]
            .split([' ', ':', '='])
            .next()
            .unwrap_or_default()
            .to_owned();
        for (j, _) in code.match_indices(&format!("{var}.push(")) {
            scan.pushed += 1;
            if !code[j + var.len() + 6..].trim_start().starts_with('"') {
                scan.findings
                    .push(format!("{}: {var}.push of a non-literal", at(j)));
            }
        }
    }
    // sql()/tx_sql() take &'static str: a leaked String would get past that
    for bad in ["Box::leak", "raw_sql("] {
        if code.contains(bad) {
            scan.findings.push(format!("{path}: {bad}"));
        }
    }
}

/// Every `.rs` file under `src/store/`.
fn store_sources() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 5,
        "store sources not found under {}",
        root.display()
    );
    out
}

/// SQL only through bound parameters: in `src/store/`, SQL text that is not a plain literal
/// is a `format!` of the column-list constants, `sql`/`tx_sql` (which take `&'static str`
/// and only number `?` placeholders) or `QueryBuilder` with values through `push_bind` and
/// literals through `push`. Interpolating anything else (a name, a filter, a value) into a
/// statement fails here. The scan is itself checked against sources with an injection.
#[test]
fn store_sql_is_built_only_from_constants_and_bound_parameters() {
    let mut scan = SqlScan::default();
    for (path, text) in store_sources() {
        scan_sql(&path, &text, &mut scan);
    }
    assert!(scan.findings.is_empty(), "{:#?}", scan.findings);
    // the scan sees what is there (a scan that finds nothing proves nothing); the store has
    // no `QueryBuilder` left since SQLite's inserts run through rusqlite's prepared
    // statements, so the pushes are checked on the injected sources below only
    assert!(scan.formatted >= 5, "{scan:?}");

    // and it catches each way of building SQL from a value
    let injected = [
        r#"sqlx::query(&format!("SELECT * FROM subjects WHERE id = '{id}'"))"#,
        r#"sqlx::query(&format!("SELECT {FIX_COLUMNS} FROM fixes WHERE ts > {}", from))"#,
        r#"let mut qb = QueryBuilder::new("SELECT 1 WHERE x = "); qb.push(name);"#,
        r#"let q: &'static str = Box::leak(s.into_boxed_str());"#,
    ];
    for bad in injected {
        let mut scan = SqlScan::default();
        scan_sql(
            "injected.rs",
            &format!("fn f() {{\n    {bad}\n}}\n"),
            &mut scan,
        );
        assert!(!scan.findings.is_empty(), "not caught: {bad}");
    }
}

/// What an HTML sink or a token outside sessionStorage in a console script looks like.
fn console_findings(name: &str, text: &str) -> Vec<String> {
    const SINKS: [&str; 16] = [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setTimeout('",
        "setTimeout(\"",
        "setTimeout(`",
        "setInterval('",
        "createContextualFragment",
        "srcdoc",
        "document.cookie",
        "localStorage",
        "javascript:",
        "DOMParser",
    ];
    // Leaflet parses a string given to these as HTML; they must get a label(…) node
    const LEAFLET: [&str; 5] = [
        "bindTooltip(",
        "bindPopup(",
        "setContent(",
        "setTooltipContent(",
        "setPopupContent(",
    ];
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for sink in SINKS {
            if code.contains(sink) {
                out.push(format!("console/{name}:{}: {sink}", n + 1));
            }
        }
        for call in LEAFLET {
            for (i, _) in code.match_indices(call) {
                if !code[i + call.len()..].starts_with("label(") {
                    out.push(format!("console/{name}:{}: {call} without label(…)", n + 1));
                }
            }
        }
    }
    out
}

/// The console's scripts put server data into the page only as text: no HTML sinks, no
/// code from strings, Leaflet tooltips and popups only from DOM nodes, no cookies or
/// localStorage (the token lives in sessionStorage). The scan is itself checked against
/// lines with each kind of sink.
#[test]
fn console_scripts_have_no_html_sinks_and_keep_the_token_in_session_storage() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let mut lines = 0;
    for name in ["app.js", "map.js"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let findings = console_findings(name, &text);
        assert!(findings.is_empty(), "{findings:#?}");
        lines += text.lines().count();
    }
    assert!(lines > 500, "{lines} lines scanned");
    // the token: kept in sessionStorage, sent as a bearer header (no cookie to ride)
    let app = std::fs::read_to_string(dir.join("app.js")).unwrap();
    assert!(app.contains("sessionStorage.setItem(TOKEN_KEY"));
    assert!(app.contains("Authorization: `Bearer ${session.token}`"));
    for bad in [
        "el.innerHTML = `<b>${a.note}</b>`;",
        "main.insertAdjacentHTML('beforeend', s.display_name);",
        "m.bindTooltip(`${z.name}`);",
        "setTimeout('refresh()', 10);",
        "localStorage.setItem('tagwatch.token', t);",
    ] {
        assert!(
            !console_findings("x.js", bad).is_empty(),
            "not caught: {bad}"
        );
    }
}
