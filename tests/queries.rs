//! Lawful location queries, trails and the audit trail through HTTP on both stores
//! (SPEC §2 Lawful location queries, Trails, Audit; §4; §5 Access, Audit integrity,
//! Retention).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{spawn_app, Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tagwatch::geodesy::{LatLon, LocalFrame};

on_both_stores!(
    location_at_time_is_observed_near_a_fix_interpolated_between_linked_fixes_and_none_past_a_gap,
    a_subject_passing_through_the_scene_between_fixes_60_s_apart_matches_as_interpolated,
    fixes_20_minutes_apart_do_not_link,
    window_edges_are_inclusive_to_the_microsecond,
    matches_are_ordered_by_closest_approach,
    a_query_without_a_full_justification_is_422,
    the_role_matrix_of_queries_trails_and_audit,
    a_trail_is_paged_oldest_first_for_the_officers_caseload_and_audited,
    editing_or_deleting_a_stored_audit_row_breaks_verify_at_the_first_bad_id,
    a_query_fails_closed_when_its_audit_entry_cannot_be_written,
    the_purge_deletes_fixes_past_retention_and_audits_the_run,
    crime_match_takes_json_our_csv_and_the_police_uk_csv_with_one_audit_entry_per_crime,
    crime_match_refuses_a_bad_radius_or_query_parameter_even_without_crimes,
    a_geojson_trail_is_served_as_application_geo_json,
);

/// The scene every test measures against: Oxford Circus.
const SCENE: LatLon = LatLon::new(51.515_2, -0.141_8);

struct World {
    app: TestApp,
    analyst: String,
    auditor: String,
    officer_id: i64,
    officer: String,
    /// A whole minute a few hours ago; fixes are placed relative to it.
    base: DateTime<Utc>,
}

async fn world(backend: Backend) -> World {
    let app = spawn_app(backend).await;
    let (_, analyst) = app.user("analyst", "analyst").await;
    let (_, auditor) = app.user("auditor", "auditor").await;
    let (officer_id, officer) = app.user("officer", "officer").await;
    let base = (Utc::now() - Duration::hours(3))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    World {
        app,
        analyst,
        auditor,
        officer_id,
        officer,
        base,
    }
}

fn justification() -> Value {
    json!({"crime_ref": "CR-2024-0001", "legal_basis": "DPA 2018 s.35", "reason": "burglary, suspect description matches"})
}

impl World {
    fn t(&self, secs: i64) -> String {
        (self.base + Duration::seconds(secs)).to_rfc3339()
    }

    /// Registers subject `sid` on the officer's caseload with tag `did` and posts its track:
    /// `(seconds after base, metres east of the scene, metres north)`.
    async fn track(&self, sid: &str, did: &str, points: &[(i64, f64, f64)]) {
        self.app.subject(sid, Some(self.officer_id)).await;
        let token = self.app.device(did, sid).await;
        let frame = LocalFrame::new(SCENE);
        let pings: Vec<Value> = points
            .iter()
            .map(|&(s, x, y)| {
                let p = frame.to_latlon(x, y);
                json!({"device_id": did, "ts": self.t(s), "lat": p.lat, "lon": p.lon, "accuracy_m": 8.0})
            })
            .collect();
        let (s, v) = self.app.post_pings(&token, json!(pings)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["accepted"], points.len(), "{v}");
    }

    async fn at_time(&self, sid: &str, secs: i64) -> Value {
        let (s, v) = self
            .app
            .post(
                "/v1/queries/location-at-time",
                &self.analyst,
                json!({"subject_id": sid, "at": self.t(secs), "justification": justification()}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    async fn scene_at(&self, radius_m: f64, from: &str, to: &str) -> Value {
        let (s, v) = self
            .app
            .post(
                "/v1/queries/crime-scene",
                &self.analyst,
                json!({"lat": SCENE.lat, "lon": SCENE.lon, "radius_m": radius_m, "from": from, "to": to,
                       "justification": justification()}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    async fn scene(&self, radius_m: f64, from_s: i64, to_s: i64) -> Value {
        self.scene_at(radius_m, &self.t(from_s), &self.t(to_s))
            .await
    }

    async fn audit(&self, query: &str) -> Vec<Value> {
        let (s, v) = self
            .app
            .get(&format!("/v1/audit{query}"), &self.auditor)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().clone()
    }

    async fn verify(&self) -> Value {
        let (s, v) = self.app.get("/v1/audit/verify", &self.auditor).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    fn cli_verify(&self) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_tagwatch"))
            .args(["audit", "verify", "--database-url", &self.app.database_url])
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    }
}

fn subjects_of(matches: &Value) -> Vec<String> {
    matches
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn location_at_time_is_observed_near_a_fix_interpolated_between_linked_fixes_and_none_past_a_gap(
    backend: Backend,
) {
    let w = world(backend).await;
    // 120 m north in 60 s, then silence for 20 minutes.
    w.track(
        "GTO-1",
        "TAG-1",
        &[(0, 0.0, 0.0), (60, 0.0, 120.0), (1_260, 0.0, 240.0)],
    )
    .await;

    let v = w.at_time("GTO-1", 30).await;
    assert_eq!(v["estimate"]["method"], "interpolated", "{v}");
    let frame = LocalFrame::new(SCENE);
    let (x, y) = frame.to_xy(LatLon::new(
        v["estimate"]["lat"].as_f64().unwrap(),
        v["estimate"]["lon"].as_f64().unwrap(),
    ));
    assert!(
        x.abs() < 0.5 && (y - 60.0).abs() < 0.5,
        "midpoint, got ({x}, {y})"
    );
    let u = v["estimate"]["uncertainty_m"].as_f64().unwrap();
    assert!(u >= 8.0, "at least the larger accuracy: {u}");
    assert_eq!(v["before"]["device_id"], "TAG-1");
    assert_eq!(v["before"]["ts"], w.t(0).replace("+00:00", "Z"));
    assert!(v["audit_id"].as_i64().unwrap() > 0);

    let v = w.at_time("GTO-1", 62).await;
    assert_eq!(v["estimate"]["method"], "observed", "{v}");
    let u62 = v["estimate"]["uncertainty_m"].as_f64().unwrap();
    assert!(u62 >= 8.0);

    // asked at a fix's very time: that fix, to its accuracy, is `before`
    let v = w.at_time("GTO-1", 60).await;
    assert_eq!(v["estimate"]["method"], "observed", "{v}");
    assert_eq!(v["estimate"]["uncertainty_m"], 8.0, "{v}");
    assert_eq!(v["before"]["ts"], w.t(60).replace("+00:00", "Z"));
    assert_eq!(v["after"]["ts"], w.t(1_260).replace("+00:00", "Z"));

    let v = w.at_time("GTO-1", 600).await;
    assert_eq!(v["estimate"]["method"], "none", "{v}");
    assert!(v["estimate"]["lat"].is_null());
    assert_eq!(v["before"]["ts"], w.t(60).replace("+00:00", "Z"));
    assert_eq!(v["after"]["ts"], w.t(1_260).replace("+00:00", "Z"));

    // a subject with no fixes at all: nothing to estimate from, nothing disclosed
    w.app.subject("GTO-QUIET", Some(w.officer_id)).await;
    let v = w.at_time("GTO-QUIET", 0).await;
    assert_eq!(v["estimate"]["method"], "none", "{v}");
    assert!(v["before"].is_null() && v["after"].is_null(), "{v}");

    // unknown subject: 404, but the attempt is audited
    let (s, _) = w
        .app
        .post(
            "/v1/queries/location-at-time",
            &w.analyst,
            json!({"subject_id": "GTO-404", "at": w.t(0), "justification": justification()}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let entries = w.audit("").await;
    let lat: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "query.location_at_time")
        .collect();
    assert_eq!(lat.len(), 6);
    assert_eq!(lat[0]["parameters"]["subject_id"], "GTO-404");
    assert_eq!(lat[0]["parameters"]["found"], false);
    assert_eq!(lat[0]["subject_ids"], json!([]));
    assert_eq!(lat[1]["parameters"]["subject_id"], "GTO-QUIET");
    assert_eq!(lat[1]["parameters"]["found"], true);
    assert_eq!(lat[1]["subject_ids"], json!([]));
    assert_eq!(lat[2]["subject_ids"], json!(["GTO-1"]));
    assert_eq!(lat[2]["justification"], justification());
}

async fn a_subject_passing_through_the_scene_between_fixes_60_s_apart_matches_as_interpolated(
    backend: Backend,
) {
    let w = world(backend).await;
    // A long segment (2 km in 100 s, ends far outside the fine cells: found only through
    // the coarse segment index) passing 20 m from the scene, and a short one (300 m in
    // 60 s, found through its endpoints' cells) passing 10 m.
    w.track(
        "GTO-LONG",
        "TAG-L",
        &[(-20, -1_000.0, 20.0), (80, 1_000.0, 20.0)],
    )
    .await;
    w.track(
        "GTO-SHORT",
        "TAG-S",
        &[(0, -150.0, -10.0), (60, 150.0, -10.0)],
    )
    .await;
    // Far away at the same time: not a match.
    w.track("GTO-FAR", "TAG-F", &[(0, 3_000.0, 0.0), (60, 3_100.0, 0.0)])
        .await;

    let cover = tagwatch::query::cells::scene_cover(SCENE, 50.0).unwrap();
    let frame = LocalFrame::new(SCENE);
    for x in [-1_000.0, 1_000.0] {
        let cell = tagwatch::query::cells::fix_cell(frame.to_latlon(x, 20.0)).unwrap();
        assert!(
            !cover.fine.contains(&cell),
            "the long segment's ends are not candidates"
        );
    }

    let v = w.scene(50.0, -600, 600).await;
    let m = &v["matches"];
    assert_eq!(subjects_of(m), ["GTO-SHORT", "GTO-LONG"], "{v}");
    for (i, expect) in [(0, 10.0), (1, 20.0)] {
        assert_eq!(m[i]["method"], "interpolated");
        assert_eq!(m[i]["fixes_within"], 0);
        let d = m[i]["closest_approach_m"].as_f64().unwrap();
        assert!((d - expect).abs() < 0.5, "{d} vs {expect}");
        assert_eq!(m[i]["closest_at"], w.t(30).replace("+00:00", "Z"));
        assert_eq!(m[i]["basis"].as_array().unwrap().len(), 2);
    }
    assert_eq!(m[1]["device_id"], "TAG-L");

    // The audit entry names both subjects in the answer's order.
    let e = &w.audit("?subject_id=GTO-LONG").await[0];
    assert_eq!(e["action"], "query.crime_scene");
    assert_eq!(e["subject_ids"], json!(["GTO-SHORT", "GTO-LONG"]));
    assert_eq!(e["result_count"], 2);
    assert_eq!(e["id"], v["audit_id"]);
    assert!(w.audit("?subject_id=GTO-FAR").await.is_empty());
}

async fn fixes_20_minutes_apart_do_not_link(backend: Backend) {
    let w = world(backend).await;
    w.track("GTO-1", "TAG-1", &[(0, -150.0, 0.0), (1_200, 150.0, 0.0)])
        .await;
    let v = w.scene(50.0, 0, 1_200).await;
    assert_eq!(v["matches"], json!([]), "{v}");
    let v = w.at_time("GTO-1", 600).await;
    assert_eq!(v["estimate"]["method"], "none");
    // The same track 60 s apart would have matched.
    w.track("GTO-2", "TAG-2", &[(0, -150.0, 0.0), (60, 150.0, 0.0)])
        .await;
    let v = w.scene(50.0, 0, 1_200).await;
    assert_eq!(subjects_of(&v["matches"]), ["GTO-2"]);
}

async fn window_edges_are_inclusive_to_the_microsecond(backend: Backend) {
    let w = world(backend).await;
    // An isolated fix 5 m from the scene at base + 100 s.
    w.track("GTO-1", "TAG-1", &[(100, 5.0, 0.0)]).await;
    let at = w.base + Duration::seconds(100);
    let us = Duration::microseconds(1);
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    for (from, to, hit) in [
        (at, at, true),
        (at, at + Duration::hours(1), true),
        (at - Duration::hours(1), at, true),
        (at + us, at + Duration::hours(1), false),
        (at - Duration::hours(1), at - us, false),
    ] {
        let v = w.scene_at(10.0, &fmt(from), &fmt(to)).await;
        let n = v["matches"].as_array().unwrap().len();
        assert_eq!(n == 1, hit, "window {from}..{to}: {v}");
        if hit {
            assert_eq!(v["matches"][0]["method"], "fix");
            assert_eq!(v["matches"][0]["fixes_within"], 1);
        }
    }
}

async fn matches_are_ordered_by_closest_approach(backend: Backend) {
    let w = world(backend).await;
    w.track("GTO-A", "TAG-A", &[(0, 40.0, 0.0)]).await;
    w.track("GTO-B", "TAG-B", &[(0, 0.0, 10.0)]).await;
    w.track("GTO-C", "TAG-C", &[(0, -25.0, 0.0)]).await;
    w.track("GTO-D", "TAG-D", &[(0, 0.0, 400.0)]).await;
    let v = w.scene(50.0, -60, 60).await;
    assert_eq!(
        subjects_of(&v["matches"]),
        ["GTO-B", "GTO-C", "GTO-A"],
        "{v}"
    );
    let d: Vec<f64> = v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["closest_approach_m"].as_f64().unwrap())
        .collect();
    assert!(d.windows(2).all(|p| p[0] <= p[1]), "{d:?}");
}

async fn a_query_without_a_full_justification_is_422(backend: Backend) {
    let w = world(backend).await;
    w.app.subject("GTO-1", Some(w.officer_id)).await;
    let scene = |j: Option<Value>| {
        let mut b = json!({"lat": SCENE.lat, "lon": SCENE.lon, "radius_m": 100.0, "from": w.t(0), "to": w.t(60)});
        if let Some(j) = j {
            b["justification"] = j;
        }
        b
    };
    let at = |j: Option<Value>| {
        let mut b = json!({"subject_id": "GTO-1", "at": w.t(0)});
        if let Some(j) = j {
            b["justification"] = j;
        }
        b
    };
    let crimes = |j: Option<Value>| {
        let mut b = json!({"radius_m": 100.0, "crimes": [{"ref": "C1", "lat": SCENE.lat, "lon": SCENE.lon, "from": w.t(0), "to": w.t(60)}]});
        if let Some(j) = j {
            b["justification"] = j;
        }
        b
    };
    let bad = [
        None,
        Some(json!({})),
        Some(json!({"crime_ref": "CR-1", "legal_basis": "DPA 2018 s.35"})),
        Some(json!({"crime_ref": "", "legal_basis": "DPA 2018 s.35", "reason": "r"})),
        Some(json!({"crime_ref": "CR-1", "legal_basis": "  ", "reason": "r"})),
        Some(json!({"crime_ref": "CR-1", "legal_basis": "b", "reason": ""})),
    ];
    for j in bad {
        for (path, body) in [
            ("/v1/queries/crime-scene", scene(j.clone())),
            ("/v1/queries/location-at-time", at(j.clone())),
            ("/v1/queries/crime-match", crimes(j.clone())),
        ] {
            let (s, v) = w.app.post(path, &w.analyst, body).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {j:?}: {v}");
        }
    }
    // CSV without the justification parameters
    let csv = format!(
        "ref,lat,lon,from,to\nC1,{},{},{},{}\n",
        SCENE.lat,
        SCENE.lon,
        w.t(0),
        w.t(60)
    );
    let r = w
        .app
        .post_raw(
            "/v1/queries/crime-match?radius_m=100&crime_ref=CR-1&legal_basis=x",
            &w.analyst,
            "text/csv",
            csv.into_bytes(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // nothing was read, so nothing was audited
    assert!(w
        .audit("")
        .await
        .iter()
        .all(|e| e["action"] == "retention.purge"));
}

async fn the_role_matrix_of_queries_trails_and_audit(backend: Backend) {
    let w = world(backend).await;
    let (_, other_officer) = w.app.user("officer two", "officer").await;
    w.track("GTO-1", "TAG-1", &[(0, 0.0, 0.0)]).await;
    let (_, device) = (0, w.app.device("TAG-2", "GTO-1").await);
    let admin = w.app.admin_token.clone();

    let scene = json!({"lat": SCENE.lat, "lon": SCENE.lon, "radius_m": 100.0, "from": w.t(-60), "to": w.t(60), "justification": justification()});
    let at = json!({"subject_id": "GTO-1", "at": w.t(0), "justification": justification()});
    let crimes = json!({"radius_m": 100.0, "justification": justification(),
                        "crimes": [{"ref": "C1", "lat": SCENE.lat, "lon": SCENE.lon, "from": w.t(-60), "to": w.t(60)}]});
    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::POST, "/v1/queries/location-at-time", Some(at)),
        (Method::POST, "/v1/queries/crime-scene", Some(scene)),
        (Method::POST, "/v1/queries/crime-match", Some(crimes)),
        (Method::GET, "/v1/subjects/GTO-1/trail", None),
        (Method::GET, "/v1/audit", None),
        (Method::GET, "/v1/audit/verify", None),
    ];
    use StatusCode as S;
    // analyst, officer (own caseload), other officer, auditor, device, admin
    let expected: [[S; 6]; 6] = [
        [
            S::OK,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ],
        [
            S::OK,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ],
        [
            S::OK,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ],
        [
            S::FORBIDDEN,
            S::OK,
            S::NOT_FOUND,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
        ],
        [
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ],
        [
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ],
    ];
    let tokens = [
        &w.analyst,
        &w.officer,
        &other_officer,
        &w.auditor,
        &device,
        &admin,
    ];
    for ((method, path, body), row) in calls.iter().zip(expected) {
        let (s, _) = w.app.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(s, S::UNAUTHORIZED, "{path} without a token");
        for (token, want) in tokens.iter().zip(row) {
            let (s, v) = w
                .app
                .call(method.clone(), path, Some(token.as_str()), body.clone())
                .await;
            assert_eq!(s, want, "{method} {path}: {v}");
        }
    }
}

async fn a_trail_is_paged_oldest_first_for_the_officers_caseload_and_audited(backend: Backend) {
    let w = world(backend).await;
    let points: Vec<(i64, f64, f64)> = (0..5).map(|i| (i * 60, i as f64 * 50.0, 0.0)).collect();
    w.track("GTO-1", "TAG-1", &points).await;

    let mut seen = Vec::new();
    let mut path = format!(
        "/v1/subjects/GTO-1/trail?limit=2&from={}",
        w.t(0).replace('+', "%2B")
    );
    loop {
        let (s, v) = w.app.get(&path, &w.officer).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["subject_id"], "GTO-1");
        for f in v["items"].as_array().unwrap() {
            assert_eq!(f["device_id"], "TAG-1");
            assert_eq!(f["fix"], "gps");
            assert!(f["received_at"].is_string());
            seen.push(f["ts"].as_str().unwrap().to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/subjects/GTO-1/trail?limit=2&cursor={c}"),
            None => break,
        }
    }
    let want: Vec<String> = points
        .iter()
        .map(|p| w.t(p.0).replace("+00:00", "Z"))
        .collect();
    assert_eq!(seen, want);

    let (s, v) = w
        .app
        .get(
            "/v1/subjects/GTO-1/trail?format=geojson",
            &w.app.admin_token,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["type"], "FeatureCollection");
    let features = v["features"].as_array().unwrap();
    assert_eq!(features[0]["geometry"]["type"], "LineString");
    assert_eq!(
        features[0]["geometry"]["coordinates"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(features.len(), 6);
    assert_eq!(features[1]["geometry"]["type"], "Point");

    let reads: Vec<Value> = w
        .audit("?subject_id=GTO-1")
        .await
        .into_iter()
        .filter(|e| e["action"] == "trail.read")
        .collect();
    assert_eq!(reads.len(), 4, "three pages and the GeoJSON read");
    assert_eq!(reads[0]["actor_name"], "admin");
    assert_eq!(reads[0]["result_count"], 5);
    assert_eq!(reads[3]["actor"], w.officer_id);
    assert_eq!(reads[3]["role"], "officer");
    assert!(reads[3]["justification"].is_null());
}

async fn editing_or_deleting_a_stored_audit_row_breaks_verify_at_the_first_bad_id(
    backend: Backend,
) {
    let w = world(backend).await;
    w.track("GTO-1", "TAG-1", &[(0, 0.0, 0.0)]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(w.scene(50.0, -60, 60).await["audit_id"].as_i64().unwrap());
    }
    let v = w.verify().await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(w.cli_verify().status.success());
    let k = ids[0];

    // Edit one field of entry k: its hash no longer matches.
    let e = w
        .audit("")
        .await
        .into_iter()
        .find(|e| e["id"] == k)
        .unwrap();
    w.app
        .sql(&format!("UPDATE audit SET result_count = 7 WHERE id = {k}"))
        .await;
    let v = w.verify().await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad_id"], k);
    let out = w.cli_verify();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("\"first_bad_id\": {k}")));

    // Put it back: intact again.
    w.app
        .sql(&format!(
            "UPDATE audit SET result_count = {} WHERE id = {k}",
            e["result_count"]
        ))
        .await;
    assert_eq!(w.verify().await["ok"], true);

    // Edit the justification text (a JSON column).
    w.app.sql(&format!("UPDATE audit SET justification = '{{\"crime_ref\":\"X\",\"legal_basis\":\"Y\",\"reason\":\"Z\"}}' WHERE id = {}", ids[1]),
    )
    .await;
    assert_eq!(w.verify().await["first_bad_id"], ids[1]);
    w.app
        .sql(&format!(
            "UPDATE audit SET justification = '{}' WHERE id = {}",
            justification(),
            ids[1]
        ))
        .await;
    assert_eq!(w.verify().await["ok"], true);

    // Delete entry k: the next entry is out of sequence.
    w.app
        .sql(&format!("DELETE FROM audit WHERE id = {k}"))
        .await;
    let v = w.verify().await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_bad_id"], k + 1, "{v}");
    assert!(!w.cli_verify().status.success());
}

async fn a_query_fails_closed_when_its_audit_entry_cannot_be_written(backend: Backend) {
    let w = world(backend).await;
    w.track("GTO-1", "TAG-1", &[(0, 0.0, 0.0)]).await;
    w.scene(50.0, -60, 60).await["audit_id"].as_i64().unwrap();
    // The retention job's start-up entry may land after the query: wait for it, so that
    // the head read here is the head broken below.
    let started = std::time::Instant::now();
    while !w
        .audit("")
        .await
        .iter()
        .any(|e| e["action"] == "retention.purge")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no start-up purge entry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let head = w.audit("").await[0].clone();
    // A head hash that cannot be chained from makes every append fail.
    w.app.sql(common::break_audit_head(backend)).await;
    let id = w.audit("").await[0]["id"].as_i64().unwrap();
    assert_eq!(head["id"], id);
    let (s, v) = w
        .app
        .post(
            "/v1/queries/crime-scene",
            &w.analyst,
            json!({"lat": SCENE.lat, "lon": SCENE.lon, "radius_m": 50.0, "from": w.t(-60), "to": w.t(60), "justification": justification()}),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert!(!v.to_string().contains("GTO-1"), "no answer leaks: {v}");
    let (s, _) = w.app.get("/v1/subjects/GTO-1/trail", &w.officer).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let at_time = || async {
        w.app
            .post(
                "/v1/queries/location-at-time",
                &w.analyst,
                json!({"subject_id": "GTO-1", "at": w.t(0), "justification": justification()}),
            )
            .await
    };
    for _ in 0..6 {
        // (more than the pool's connections: none may be left inside a transaction)
        let (s, v) = at_time().await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
        assert!(!v.to_string().contains("lat"), "no answer leaks: {v}");
    }
    assert_eq!(w.audit("").await[0]["id"], id, "nothing was appended");

    // Once the head is put back, audited reads answer again at once: the refused ones left
    // no transaction open and no write lock held.
    let head = head["hash"].as_str().unwrap();
    w.app
        .sql(&match backend {
            Backend::Sqlite => format!("UPDATE audit SET hash = '{head}' WHERE id = {id}"),
            Backend::Postgres => format!("UPDATE audit_head SET hash = '{head}'"),
        })
        .await;
    for _ in 0..6 {
        let (s, v) = at_time().await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(v["audit_id"].as_i64().unwrap() > id);
    }
    assert_eq!(w.verify().await["ok"], true);
}

async fn the_purge_deletes_fixes_past_retention_and_audits_the_run(backend: Backend) {
    let w = world(backend).await;
    w.track("GTO-1", "TAG-1", &[(0, 0.0, 0.0)]).await;
    let store = w.app.store();
    let device = store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == "TAG-1")
        .unwrap();
    let now = tagwatch::model::time::now_micros();
    let old = now - 400 * 86_400 * 1_000_000;
    let frame = LocalFrame::new(SCENE);
    // two old fixes 1 km apart a minute apart: a long segment, indexed
    let rows: Vec<tagwatch::store::FixRow> = [(old, 0.0), (old + 60_000_000, 1_000.0)]
        .iter()
        .map(|&(ts, x)| tagwatch::store::FixRow {
            accuracy_m: Some(5.0),
            received_at: now,
            ..tagwatch::store::FixRow::at(
                device.pk,
                device.subject_pk,
                ts,
                Some(frame.to_latlon(x, 0.0)),
            )
        })
        .collect();
    assert_eq!(store.insert_fixes(&rows).await.unwrap(), [true, true]);
    assert_eq!(store.count_fixes().await.unwrap(), 3);

    let report = tagwatch::retention::purge_once(store, 365, now)
        .await
        .unwrap();
    assert!(report.counts.segments >= 1, "the old segment's rows go too");
    assert_eq!(
        store.count_fixes().await.unwrap(),
        1,
        "the recent fix stays"
    );
    assert!(store
        .device_fixes(device.pk, old - 1, old + 120_000_000)
        .await
        .unwrap()
        .is_empty());

    let purges: Vec<Value> = w
        .audit("")
        .await
        .into_iter()
        .filter(|e| e["action"] == "retention.purge")
        .collect();
    assert!(!purges.is_empty());
    assert_eq!(purges[0]["actor"], 0);
    assert_eq!(purges[0]["actor_name"], "system");
    // the start-up run may have taken them first; between them the runs deleted both
    let total: i64 = purges
        .iter()
        .map(|e| e["result_count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 2);
    assert_eq!(w.verify().await["ok"], true);
}

async fn crime_match_takes_json_our_csv_and_the_police_uk_csv_with_one_audit_entry_per_crime(
    backend: Backend,
) {
    let w = world(backend).await;
    w.track("GTO-1", "TAG-1", &[(0, 0.0, 30.0), (60, 0.0, 60.0)])
        .await;
    let far = LocalFrame::new(SCENE).to_latlon(5_000.0, 0.0);

    // JSON
    let (s, v) = w
        .app
        .post(
            "/v1/queries/crime-match",
            &w.analyst,
            json!({"radius_m": 100.0, "justification": justification(), "crimes": [
                {"ref": "C-NEAR", "lat": SCENE.lat, "lon": SCENE.lon, "from": w.t(-300), "to": w.t(300), "category": "burglary"},
                {"ref": "C-FAR", "lat": far.lat, "lon": far.lon, "from": w.t(-300), "to": w.t(300)},
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["ref"], "C-NEAR");
    assert_eq!(subjects_of(&r[0]["matches"]), ["GTO-1"]);
    assert_eq!(r[0]["matches"][0]["method"], "fix");
    assert_eq!(r[1]["matches"], json!([]));
    assert_ne!(r[0]["audit_id"], r[1]["audit_id"]);

    // our CSV, with a bad row that does not stop the others
    let csv = format!(
        "ref,lat,lon,from,to,category\nC-1,{},{},{},{},theft\nC-BAD,91,0,{},{},theft\n",
        SCENE.lat,
        SCENE.lon,
        w.t(-300),
        w.t(300),
        w.t(-300),
        w.t(300)
    );
    let q = "radius_m=100&crime_ref=CR-9&legal_basis=DPA%202018%20s.35&reason=batch";
    let resp = w
        .app
        .post_raw(
            &format!("/v1/queries/crime-match?{q}"),
            &w.analyst,
            "text/csv",
            csv.into_bytes(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["results"][0]["line"], 2);
    assert_eq!(subjects_of(&v["results"][0]["matches"]), ["GTO-1"]);
    assert_eq!(v["errors"][0]["line"], 3);

    // data.police.uk street-level: the window is the whole month
    let month = w.base.format("%Y-%m");
    let csv = format!(
        "Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,Last outcome category,Context\n\
         abc123,{month},Metropolitan Police Service,Metropolitan Police Service,{},{},On or near Regent Street,E01004734,Westminster 013B,Burglary,Under investigation,\n\
         ,{month},Metropolitan Police Service,Metropolitan Police Service,{},{},On or near Oxford Street,E01004734,Westminster 013B,Anti-social behaviour,,\n\
         def456,{month},Metropolitan Police Service,Metropolitan Police Service,,,No location,,,Burglary,Under investigation,\n",
        SCENE.lon, SCENE.lat, far.lon, far.lat
    );
    let resp = w
        .app
        .post_raw(
            &format!("/v1/queries/crime-match?{q}"),
            &w.analyst,
            "text/csv; charset=utf-8",
            csv.into_bytes(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2, "{v}");
    assert_eq!(r[0]["ref"], "abc123");
    assert_eq!(r[0]["category"], "Burglary");
    assert_eq!(subjects_of(&r[0]["matches"]), ["GTO-1"]);
    assert_eq!(r[1]["ref"], "line-3");
    assert_eq!(r[1]["matches"], json!([]));
    assert_eq!(v["errors"][0]["line"], 4);

    let entries: Vec<Value> = w
        .audit("")
        .await
        .into_iter()
        .filter(|e| e["action"] == "query.crime_match")
        .collect();
    assert_eq!(entries.len(), 5, "one entry per crime answered");
    assert_eq!(entries[0]["parameters"]["ref"], "line-3");
    assert_eq!(entries[1]["subject_ids"], json!(["GTO-1"]));
    assert_eq!(entries[1]["justification"]["crime_ref"], "CR-9");
    assert_eq!(w.verify().await["ok"], true);
}

/// Found by Schemathesis: with an empty `crimes` list the radius was never checked, and the
/// CSV form's query parameters were ignored (even when invalid) with a JSON body.
async fn crime_match_refuses_a_bad_radius_or_query_parameter_even_without_crimes(backend: Backend) {
    let w = world(backend).await;
    for radius_m in [json!(0), json!(-5), json!(10_000.5)] {
        let body = json!({"crimes": [], "radius_m": radius_m, "justification": justification()});
        let (s, v) = w
            .app
            .post("/v1/queries/crime-match", &w.analyst, body)
            .await;
        assert_eq!(
            s,
            StatusCode::UNPROCESSABLE_ENTITY,
            "radius {radius_m}: {v}"
        );
    }
    let ok = json!({"crimes": [], "radius_m": 100, "justification": justification()});
    for q in ["radius_m=0", "reason=%0C", "crime_ref=", "legal_basis=%20"] {
        let (s, v) = w
            .app
            .post(
                &format!("/v1/queries/crime-match?{q}"),
                &w.analyst,
                ok.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {v}");
    }
    // valid parameters beside a JSON body are harmless
    let (s, v) = w
        .app
        .post(
            "/v1/queries/crime-match?radius_m=50&crime_ref=CR-1&legal_basis=b&reason=r",
            &w.analyst,
            ok,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"], json!([]));
}

/// Found by Schemathesis: `format=geojson` answered a FeatureCollection under
/// `application/json`, whose documented schema is the JSON page.
async fn a_geojson_trail_is_served_as_application_geo_json(backend: Backend) {
    let w = world(backend).await;
    w.track("GTO-1", "TAG-1", &[(0, 0.0, 0.0), (60, 50.0, 0.0)])
        .await;
    let get = |format: &'static str| {
        w.app
            .client
            .get(format!(
                "{}/v1/subjects/GTO-1/trail?format={format}",
                w.app.url
            ))
            .bearer_auth(&w.officer)
            .send()
    };
    let r = get("geojson").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/geo+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "FeatureCollection");
    assert_eq!(v["features"].as_array().unwrap().len(), 3);
    let r = get("json").await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
}
