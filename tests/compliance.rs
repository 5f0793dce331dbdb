//! The compliance engine through HTTP on both stores: each alert type, lifecycle, late data,
//! caseload isolation, SSE, zone validation, restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ago, spawn_app_with, Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_stores!(
    an_exclusion_breach_opens_ends_and_is_closed_by_its_officer,
    drift_at_the_boundary_within_accuracy_raises_nothing,
    a_curfew_breach_opens_when_outside_during_the_window,
    tamper_and_low_battery_open_and_end,
    late_fixes_give_the_same_alert_as_in_order_and_are_marked_detected_late,
    late_data_that_disproves_a_breach_withdraws_it,
    officers_see_only_their_caseloads_alerts,
    the_stream_pushes_alert_changes,
    comms_loss_is_found_by_the_sweep_and_ended_by_the_next_ping,
    zones_are_validated_deleted_without_erasure_and_boroughs_are_served,
    a_restart_rebuilds_state_without_duplicating_or_losing_alerts,
    the_engine_ending_an_acknowledged_alert_keeps_the_officers_review,
    an_alert_change_is_stored_with_its_audit_entry_or_not_at_all,
    a_revoked_officers_open_stream_ends_before_the_next_event,
    concurrent_acknowledgements_of_one_alert_succeed_once,
    breaches_of_many_devices_in_one_batch_each_keep_their_own_evidence_and_history,
    a_stream_sends_a_batch_of_changes_each_to_its_caseload_with_its_own_names,
);

const HOME: (f64, f64) = (51.5450, -0.1030); // Islington
const STATION: (f64, f64) = (51.5308, -0.1238); // King's Cross

/// Metres north of a point, in degrees of latitude.
fn north(p: (f64, f64), m: f64) -> (f64, f64) {
    (p.0 + m / 111_250.0, p.1)
}

struct Setup {
    app: TestApp,
    officer: String,
    officer_id: i64,
    device: String,
}

async fn setup(backend: Backend) -> Setup {
    setup_with(backend, |_| {}).await
}

async fn setup_with(backend: Backend, tweak: impl FnOnce(&mut tagwatch::Settings)) -> Setup {
    let app = spawn_app_with(backend, tweak).await;
    let (officer_id, officer) = app.user("officer", "officer").await;
    app.subject("GTO-1", Some(officer_id)).await;
    let device = app.device("TAG-1", "GTO-1").await;
    Setup {
        app,
        officer,
        officer_id,
        device,
    }
}

async fn exclusion_zone(s: &Setup, grace_s: i64) -> i64 {
    let (st, v) = s
        .app
        .post(
            "/v1/subjects/GTO-1/zones",
            &s.officer,
            json!({"kind": "exclusion", "name": "King's Cross", "grace_s": grace_s,
                   "valid_from": ago(7200),
                   "geometry": {"type": "Circle", "center": [STATION.1, STATION.0], "radius_m": 300}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["id"].as_i64().unwrap()
}

fn fix(ts: &str, p: (f64, f64), acc: f64) -> Value {
    json!({"device_id": "TAG-1", "ts": ts, "lat": p.0, "lon": p.1, "accuracy_m": acc})
}

async fn post(s: &Setup, pings: Value) {
    let (st, v) = s.app.post_pings(&s.device, pings).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["rejected"].as_array().unwrap().is_empty(), "{v}");
}

/// The kinds of an alert's events, in order (`GET /v1/alerts/{id}`).
fn event_kinds(d: &Value) -> Vec<&str> {
    d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}

/// The officer acknowledges alert `id` with the note "seen".
async fn acknowledge(s: &Setup, id: i64) -> (StatusCode, Value) {
    s.app
        .post(
            &format!("/v1/alerts/{id}/acknowledge"),
            &s.officer,
            json!({"note": "seen"}),
        )
        .await
}

/// Polls the alert list until `done` holds (evaluation runs after the ack).
async fn alerts_until(app: &TestApp, token: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = vec![];
    for _ in 0..100 {
        let (st, v) = app.get("/v1/alerts", token).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        last = v["items"].as_array().unwrap().clone();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached; alerts: {last:#?}");
}

/// Waits until the engine has evaluated everything posted so far (a quiet period).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

async fn an_exclusion_breach_opens_ends_and_is_closed_by_its_officer(backend: Backend) {
    let s = setup(backend).await;
    let zone = exclusion_zone(&s, 0).await;
    let (t0, t1, t2, t3) = (ago(400), ago(300), ago(200), ago(100));
    post(
        &s,
        json!([
            fix(&t0, HOME, 10.0),
            fix(&t1, STATION, 10.0),
            fix(&t2, north(STATION, 50.0), 10.0),
            fix(&t3, HOME, 10.0)
        ]),
    )
    .await;
    let alerts = alerts_until(&s.app, &s.officer, |a| {
        a.len() == 1 && !a[0]["ended_at"].is_null()
    })
    .await;
    let a = &alerts[0];
    assert_eq!(a["type"], "exclusion_breach");
    assert_eq!(a["zone_id"], zone);
    assert_eq!(a["subject_id"], "GTO-1");
    assert_eq!(a["device_id"], "TAG-1");
    assert_eq!(a["status"], "open");
    assert_eq!(a["detected_late"], false);
    let ts = |t: &str| tagwatch::model::time::parse_rfc3339(t).unwrap();
    assert_eq!(ts(a["started_at"].as_str().unwrap()), ts(&t1));
    assert_eq!(ts(a["ended_at"].as_str().unwrap()), ts(&t3));
    let id = a["id"].as_i64().unwrap();

    let (st, d) = s.app.get(&format!("/v1/alerts/{id}"), &s.officer).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(d["evidence"].as_array().unwrap().len(), 2, "{d}");
    assert!((d["evidence"][0]["lat"].as_f64().unwrap() - STATION.0).abs() < 1e-6);

    let (st, d) = acknowledge(&s, id).await;
    assert_eq!(
        (st, d["status"].as_str()),
        (StatusCode::OK, Some("acknowledged"))
    );
    let (st, _) = s
        .app
        .post(
            &format!("/v1/alerts/{id}/close"),
            &s.officer,
            json!({"outcome": "maybe", "note": "x"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, d) = s
        .app
        .post(
            &format!("/v1/alerts/{id}/close"),
            &s.officer,
            json!({"outcome": "breach_confirmed", "note": "spoke to subject"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (d["status"].as_str(), d["outcome"].as_str()),
        (Some("closed"), Some("breach_confirmed"))
    );
    let kinds = event_kinds(&d);
    assert_eq!(kinds.first(), Some(&"opened"));
    assert!(kinds.ends_with(&["acknowledged", "closed"]), "{kinds:?}");
    let (st, _) = s
        .app
        .post(
            &format!("/v1/alerts/{id}/acknowledge"),
            &s.officer,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (_, closed) = s.app.get("/v1/alerts?status=closed", &s.officer).await;
    assert_eq!(closed["items"].as_array().unwrap().len(), 1);
    let (_, open) = s.app.get("/v1/alerts?status=open", &s.officer).await;
    assert_eq!(open["items"].as_array().unwrap().len(), 0);

    // every zone change, alert change and evidence read is in the audit trail
    let (_, auditor) = s.app.user("auditor", "auditor").await;
    let (st, log) = s.app.get("/v1/audit?limit=1000", &auditor).await;
    assert_eq!(st, StatusCode::OK, "{log}");
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "zone.create",
        "alert.opened",
        "alert.ended",
        "alert.read",
        "alert.acknowledge",
        "alert.close",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let (_, verify) = s.app.get("/v1/audit/verify", &auditor).await;
    assert_eq!(verify["ok"], true, "{verify}");
}

async fn drift_at_the_boundary_within_accuracy_raises_nothing(backend: Backend) {
    let s = setup(backend).await;
    exclusion_zone(&s, 0).await;
    // fixes within ±20 m of the 300 m circle's edge, with 25 m accuracy: all uncertain
    let pings: Vec<Value> = (0..20)
        .map(|i| {
            let off = if i % 2 == 0 { 285.0 } else { 318.0 };
            fix(&ago(1200 - i * 30), north(STATION, off), 25.0)
        })
        .collect();
    post(&s, json!(pings)).await;
    settle().await;
    let (_, v) = s.app.get("/v1/alerts", &s.officer).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
}

async fn a_curfew_breach_opens_when_outside_during_the_window(backend: Backend) {
    let s = setup(backend).await;
    let (st, v) = s.app.post("/v1/subjects/GTO-1/zones", &s.officer, json!({
        "kind": "inclusion", "name": "home curfew", "valid_from": ago(7200),
        "geometry": {"type": "Circle", "center": [HOME.1, HOME.0], "radius_m": 80},
        "schedule": {"timezone": "Europe/London", "windows": [{"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "00:00", "end": "00:00"}]}
    })).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    post(
        &s,
        json!([
            fix(&ago(500), HOME, 5.0),
            fix(&ago(400), STATION, 10.0),
            fix(&ago(300), STATION, 10.0),
            fix(&ago(200), HOME, 5.0)
        ]),
    )
    .await;
    let alerts = alerts_until(&s.app, &s.officer, |a| {
        a.len() == 1 && !a[0]["ended_at"].is_null()
    })
    .await;
    assert_eq!(alerts[0]["type"], "curfew_breach");
    assert_eq!(alerts[0]["evidence_count"], 2);
}

async fn tamper_and_low_battery_open_and_end(backend: Backend) {
    let s = setup(backend).await;
    post(&s, json!([
        {"device_id": "TAG-1", "ts": ago(500), "lat": HOME.0, "lon": HOME.1, "battery_pct": 50, "tamper": false},
        {"device_id": "TAG-1", "ts": ago(400), "lat": HOME.0, "lon": HOME.1, "battery_pct": 15, "tamper": true},
        {"device_id": "TAG-1", "ts": ago(300), "fix": "none", "battery_pct": 22, "tamper": true},
        {"device_id": "TAG-1", "ts": ago(200), "lat": HOME.0, "lon": HOME.1, "battery_pct": 30, "tamper": false},
    ])).await;
    let alerts = alerts_until(&s.app, &s.officer, |a| {
        a.len() == 2 && a.iter().all(|x| !x["ended_at"].is_null())
    })
    .await;
    let mut types: Vec<&str> = alerts.iter().map(|a| a["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(types, vec!["battery_low", "tamper"]);
}

async fn late_fixes_give_the_same_alert_as_in_order_and_are_marked_detected_late(backend: Backend) {
    let s = setup(backend).await;
    exclusion_zone(&s, 0).await;
    let (t0, t1, t2, t3) = (ago(400), ago(300), ago(200), ago(100));
    // the tag uploads the ends first, the buffered middle later
    post(&s, json!([fix(&t0, HOME, 10.0), fix(&t3, HOME, 10.0)])).await;
    settle().await;
    post(
        &s,
        json!([fix(&t2, STATION, 10.0), fix(&t1, STATION, 10.0)]),
    )
    .await;
    let alerts = alerts_until(&s.app, &s.officer, |a| {
        a.len() == 1 && !a[0]["ended_at"].is_null()
    })
    .await;
    let ts = |t: &str| tagwatch::model::time::parse_rfc3339(t).unwrap();
    assert_eq!(ts(alerts[0]["started_at"].as_str().unwrap()), ts(&t1));
    assert_eq!(ts(alerts[0]["ended_at"].as_str().unwrap()), ts(&t3));
    assert_eq!(alerts[0]["detected_late"], true);
}

async fn late_data_that_disproves_a_breach_withdraws_it(backend: Backend) {
    let s = setup(backend).await;
    exclusion_zone(&s, 60).await;
    // two inside fixes 70 s apart: the 60 s grace is met → a breach
    post(
        &s,
        json!([fix(&ago(300), STATION, 10.0), fix(&ago(230), STATION, 10.0)]),
    )
    .await;
    alerts_until(&s.app, &s.officer, |a| a.len() == 1).await;
    // a buffered fix between them shows the subject outside: inside never lasted 60 s
    post(&s, json!([fix(&ago(265), HOME, 10.0)])).await;
    let alerts = alerts_until(&s.app, &s.officer, |a| {
        a.len() == 1 && a[0]["status"] == "withdrawn"
    })
    .await;
    assert!(alerts[0]["withdrawn_reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    let id = alerts[0]["id"].as_i64().unwrap();
    let (_, d) = s.app.get(&format!("/v1/alerts/{id}"), &s.officer).await;
    let kinds = event_kinds(&d);
    assert_eq!(
        (kinds.first(), kinds.last()),
        (Some(&"opened"), Some(&"withdrawn")),
        "{kinds:?}"
    );
}

async fn officers_see_only_their_caseloads_alerts(backend: Backend) {
    let s = setup(backend).await;
    let (_, other) = s.app.user("other officer", "officer").await;
    let (_, analyst) = s.app.user("analyst", "analyst").await;
    exclusion_zone(&s, 0).await;
    post(&s, json!([fix(&ago(300), STATION, 10.0)])).await;
    let alerts = alerts_until(&s.app, &s.officer, |a| a.len() == 1).await;
    let id = alerts[0]["id"].as_i64().unwrap();
    let (_, v) = s.app.get("/v1/alerts", &other).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    for path in [format!("/v1/alerts/{id}")] {
        let (st, _) = s.app.get(&path, &other).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = s.app.get(&path, &analyst).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, _) = s.app.get(&path, &s.app.admin_token).await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, _) = s
        .app
        .post(
            &format!("/v1/alerts/{id}/close"),
            &other,
            json!({"outcome": "no_action", "note": "x"}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.app.get("/v1/subjects/GTO-1/zones", &other).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .app
        .post(
            "/v1/subjects/GTO-1/zones",
            &other,
            json!({"kind": "exclusion", "name": "x",
        "geometry": {"type": "Circle", "center": [0, 51], "radius_m": 10}}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// Opens `GET /v1/alerts/stream` with `token`; 200 or the test fails.
async fn open_stream(app: &TestApp, token: &str) -> reqwest::Response {
    let resp = app
        .client
        .get(format!("{}/v1/alerts/stream", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp
}

async fn the_stream_pushes_alert_changes(backend: Backend) {
    let s = setup(backend).await;
    exclusion_zone(&s, 0).await;
    let mut resp = open_stream(&s.app, &s.officer).await;
    // An officer with another caseload listens too, and must see nothing of GTO-1.
    let (_, stranger) = s.app.user("other officer", "officer").await;
    let mut other = open_stream(&s.app, &stranger).await;
    post(&s, json!([fix(&ago(300), STATION, 10.0)])).await;
    let v = next_events(&mut resp, 1).await.remove(0);
    assert_eq!(
        (v["change"].as_str(), v["alert"]["type"].as_str()),
        (Some("opened"), Some("exclusion_breach"))
    );
    assert_eq!(
        (
            v["alert"]["subject_id"].as_str(),
            v["alert"]["device_id"].as_str()
        ),
        (Some("GTO-1"), Some("TAG-1"))
    );
    // The event went out; within a further second the stranger's stream carries nothing
    // but keep-alive comments.
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut seen = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(quiet_until, other.chunk()).await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("event: alert"), "{seen}");
    let (st, _) = s.app.get("/v1/alerts/stream", "tw_nobody").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

async fn comms_loss_is_found_by_the_sweep_and_ended_by_the_next_ping(backend: Backend) {
    let s = setup_with(backend, |c| {
        c.comms_loss_s = 1;
        c.sweep_interval_s = 1;
    })
    .await;
    post(&s, json!([fix(&ago(5), HOME, 5.0)])).await;
    let alerts = alerts_until(&s.app, &s.officer, |a| {
        a.iter().any(|x| x["type"] == "comms_loss")
    })
    .await;
    assert!(alerts
        .iter()
        .all(|a| a["type"] != "comms_loss" || a["ended_at"].is_null()));
    post(&s, json!([fix(&ago(0), HOME, 5.0)])).await;
    alerts_until(&s.app, &s.officer, |a| {
        a.iter()
            .any(|x| x["type"] == "comms_loss" && !x["ended_at"].is_null())
    })
    .await;
}

async fn zones_are_validated_deleted_without_erasure_and_boroughs_are_served(backend: Backend) {
    let s = setup(backend).await;
    let bad = [
        (
            json!({"type": "Polygon", "coordinates": [[[0,51],[0.1,51],[0.1,51.1]]]}),
            "4",
        ),
        (
            json!({"type": "Polygon", "coordinates": [[[0,51],[0.1,51],[0.1,51.1],[0,51.1]]]}),
            "closed",
        ),
        (
            json!({"type": "Polygon", "coordinates": [[[0,51],[0.1,51.1],[0.1,51],[0,51.1],[0,51]]]}),
            "intersect",
        ),
        (
            json!({"type": "Circle", "center": [0, 51], "radius_m": 0}),
            "radius",
        ),
        (
            json!({"type": "Circle", "center": [200, 51], "radius_m": 10}),
            "outside",
        ),
        (json!({"type": "Borough", "name": "Atlantis"}), "Atlantis"),
    ];
    for (geometry, reason) in bad {
        let (st, v) = s
            .app
            .post(
                "/v1/subjects/GTO-1/zones",
                &s.officer,
                json!({"kind": "exclusion", "name": "bad", "geometry": geometry}),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{geometry}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(&reason.to_lowercase()),
            "{geometry}: {v}"
        );
    }
    let (st, v) = s
        .app
        .post(
            "/v1/subjects/GTO-1/zones",
            &s.officer,
            json!({"kind": "exclusion", "name": "n",
        "geometry": {"type": "Circle", "center": [0, 51], "radius_m": 10},
        "schedule": {"timezone": "Europe/Nowhere", "windows": []}}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = s.app.post("/v1/subjects/GTO-1/zones", &s.officer,
        json!({"kind": "exclusion", "name": "Hackney", "geometry": {"type": "Borough", "name": "Hackney"}})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let zid = v["id"].as_i64().unwrap();
    let (st, _) = s
        .app
        .call(
            Method::DELETE,
            &format!("/v1/zones/{zid}"),
            Some(&s.officer),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, zones) = s.app.get("/v1/subjects/GTO-1/zones", &s.officer).await;
    assert_eq!(zones["items"].as_array().unwrap().len(), 1);
    assert!(zones["items"][0]["valid_to"].is_string(), "{zones}");
    let (st, _) = s
        .app
        .call(Method::DELETE, "/v1/zones/99999", Some(&s.officer), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, a) = s
        .app
        .post(
            "/v1/subjects/GTO-1/absences",
            &s.officer,
            json!({"from": ago(100), "to": ago(-3600), "reason": "court hearing"}),
        )
        .await;
    assert_eq!(
        (st, a["reason"].as_str()),
        (StatusCode::CREATED, Some("court hearing"))
    );
    let (st, _) = s
        .app
        .post(
            "/v1/subjects/GTO-1/absences",
            &s.officer,
            json!({"from": ago(100), "to": ago(200), "reason": "backwards"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, b) = s.app.get("/v1/geodata/boroughs", &s.officer).await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> = b["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["properties"]["name"].as_str())
        .collect();
    assert!(
        names.len() >= 33 && names.contains(&"Camden") && names.contains(&"Tower Hamlets"),
        "{names:?}"
    );
}

async fn a_restart_rebuilds_state_without_duplicating_or_losing_alerts(backend: Backend) {
    let mut s = setup(backend).await;
    exclusion_zone(&s, 0).await;
    // one finished breach and one still going on
    post(
        &s,
        json!([
            fix(&ago(600), STATION, 10.0),
            fix(&ago(500), HOME, 10.0),
            fix(&ago(400), STATION, 10.0)
        ]),
    )
    .await;
    let before = alerts_until(&s.app, &s.officer, |a| a.len() == 2).await;
    s.app.restart().await;
    // the ongoing breach continues, then ends: still two alerts, the second now ended
    post(
        &s,
        json!([fix(&ago(300), STATION, 10.0), fix(&ago(200), HOME, 10.0)]),
    )
    .await;
    let after = alerts_until(&s.app, &s.officer, |a| {
        a.len() == 2 && a.iter().all(|x| !x["ended_at"].is_null())
    })
    .await;
    let ids = |v: &[Value]| {
        let mut i: Vec<i64> = v.iter().map(|a| a["id"].as_i64().unwrap()).collect();
        i.sort();
        i
    };
    assert_eq!(ids(&before), ids(&after));
    assert!(after.iter().all(|a| a["status"] == "open"));
    s.app.restart().await;
    settle().await;
    let (_, v) = s.app.get("/v1/alerts", &s.officer).await;
    assert_eq!(ids(v["items"].as_array().unwrap()), ids(&before));
}

async fn the_engine_ending_an_acknowledged_alert_keeps_the_officers_review(backend: Backend) {
    let s = setup(backend).await;
    exclusion_zone(&s, 0).await;
    post(&s, json!([fix(&ago(300), STATION, 10.0)])).await;
    let alerts = alerts_until(&s.app, &s.officer, |a| a.len() == 1).await;
    let id = alerts[0]["id"].as_i64().unwrap();
    let (st, _) = s
        .app
        .post(
            &format!("/v1/alerts/{id}/acknowledge"),
            &s.officer,
            json!({"note": "calling the subject"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // the engine extends and then ends the episode: it owns the times, not the review
    post(
        &s,
        json!([fix(&ago(200), STATION, 10.0), fix(&ago(100), HOME, 10.0)]),
    )
    .await;
    let alerts = alerts_until(&s.app, &s.officer, |a| !a[0]["ended_at"].is_null()).await;
    assert_eq!(alerts[0]["status"], "acknowledged", "{alerts:?}");
    assert_eq!(alerts[0]["note"], "calling the subject");
    assert_eq!(alerts[0]["evidence_count"], 2);
}

/// Makes the database refuse audit entries of `action` (a trigger), as a failing disk or a
/// broken connection would at the worst moment.
async fn refuse_audit(app: &TestApp, backend: Backend, action: &str) {
    match backend {
        Backend::Sqlite => {
            app.sql(&format!(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit WHEN NEW.action = '{action}' \
                 BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
            ))
            .await
        }
        Backend::Postgres => {
            app.sql(
                "CREATE OR REPLACE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
            )
            .await;
            app.sql(&format!(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit FOR EACH ROW \
                 WHEN (NEW.action = '{action}') EXECUTE FUNCTION refuse_audit()"
            ))
            .await
        }
    }
}

async fn allow_audit(app: &TestApp, backend: Backend) {
    app.sql(match backend {
        Backend::Sqlite => "DROP TRIGGER refuse_audit",
        Backend::Postgres => "DROP TRIGGER refuse_audit ON audit",
    })
    .await;
}

/// Every alert change is an audit entry (SPEC §2 Audit): the change, its event and its
/// entry are one transaction, whether the engine or an officer makes it. While the entry
/// cannot be written, nothing of the change is stored; once it can, the engine's change is
/// made again from the stored fixes, exactly once.
async fn an_alert_change_is_stored_with_its_audit_entry_or_not_at_all(backend: Backend) {
    let s = setup(backend).await;
    exclusion_zone(&s, 0).await;
    let (_, auditor) = s.app.user("auditor", "auditor").await;
    let entries = |action: &'static str| {
        let app = &s.app;
        let auditor = auditor.clone();
        async move {
            let (st, log) = app.get("/v1/audit?limit=1000", &auditor).await;
            assert_eq!(st, StatusCode::OK, "{log}");
            log["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == action)
                .count()
        }
    };

    refuse_audit(&s.app, backend, "alert.opened").await;
    post(
        &s,
        json!([
            fix(&ago(300), HOME, 10.0),
            fix(&ago(200), STATION, 10.0),
            fix(&ago(100), north(STATION, 50.0), 10.0)
        ]),
    )
    .await;
    settle().await;
    settle().await;
    let (_, v) = s.app.get("/v1/alerts", &s.officer).await;
    assert_eq!(
        v["items"],
        json!([]),
        "an alert was stored without its audit entry"
    );
    assert_eq!(entries("alert.opened").await, 0);

    allow_audit(&s.app, backend).await;
    let mut alerts = vec![];
    for _ in 0..300 {
        let (_, v) = s.app.get("/v1/alerts", &s.officer).await;
        alerts = v["items"].as_array().unwrap().clone();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["type"], "exclusion_breach");
    assert_eq!(entries("alert.opened").await, 1);
    let id = alerts[0]["id"].as_i64().unwrap();

    refuse_audit(&s.app, backend, "alert.acknowledge").await;
    let (st, v) = acknowledge(&s, id).await;
    assert!(st.is_server_error(), "{st} {v}");
    let (_, d) = s.app.get(&format!("/v1/alerts/{id}"), &s.officer).await;
    assert_eq!(
        d["status"], "open",
        "acknowledged without an audit entry: {d}"
    );
    assert!(d["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["kind"] != "acknowledged"));

    allow_audit(&s.app, backend).await;
    let (st, d) = acknowledge(&s, id).await;
    assert_eq!(
        (st, d["status"].as_str()),
        (StatusCode::OK, Some("acknowledged"))
    );
    assert_eq!(entries("alert.acknowledge").await, 1);
    assert_eq!(entries("alert.opened").await, 1);
}

/// The stream checks its token when it opens; a token revoked while it is open must not
/// go on receiving alerts (SECURITY.md: revocation is immediate).
async fn a_revoked_officers_open_stream_ends_before_the_next_event(backend: Backend) {
    let s = setup(backend).await;
    exclusion_zone(&s, 0).await;
    let mut resp = open_stream(&s.app, &s.officer).await;
    let (st, v) = s
        .app
        .call(
            Method::DELETE,
            &format!("/v1/users/{}/token", s.officer_id),
            Some(&s.app.admin_token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    post(&s, json!([fix(&ago(300), STATION, 10.0)])).await;
    alerts_until(&s.app, &s.app.admin_token, |a| a.len() == 1).await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break, // the stream ended
            Err(_) => panic!("the revoked token's stream is still open: {seen}"),
        }
    }
    assert!(!seen.contains("event: alert"), "{seen}");
}

/// The review precondition (only an open alert is acknowledged) is checked on the alert as
/// read inside the writing transaction: of several officers' clicks at once, one wins and
/// the others are told 409, with one event and one audit entry.
async fn concurrent_acknowledgements_of_one_alert_succeed_once(backend: Backend) {
    let s = setup(backend).await;
    exclusion_zone(&s, 0).await;
    post(
        &s,
        json!([fix(&ago(300), HOME, 10.0), fix(&ago(200), STATION, 10.0)]),
    )
    .await;
    let alerts = alerts_until(&s.app, &s.officer, |a| a.len() == 1).await;
    let id = alerts[0]["id"].as_i64().unwrap();
    let clicks = (0..8).map(|_| acknowledge(&s, id));
    let statuses: Vec<StatusCode> = futures::future::join_all(clicks)
        .await
        .into_iter()
        .map(|(st, _)| st)
        .collect();
    let ok = statuses.iter().filter(|st| **st == StatusCode::OK).count();
    let conflict = statuses
        .iter()
        .filter(|st| **st == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflict), (1, 7), "{statuses:?}");
    let (_, d) = s.app.get(&format!("/v1/alerts/{id}"), &s.officer).await;
    let acks = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "acknowledged")
        .count();
    assert_eq!(acks, 1, "{d}");
    let (_, auditor) = s.app.user("auditor", "auditor").await;
    let (_, log) = s.app.get("/v1/audit?limit=1000", &auditor).await;
    let entries = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "alert.acknowledge")
        .count();
    assert_eq!(entries, 1);
}

/// The engine writes the episode updates of a batch together (one statement on
/// PostgreSQL): each alert must still get its own evidence, end and event history.
async fn breaches_of_many_devices_in_one_batch_each_keep_their_own_evidence_and_history(
    backend: Backend,
) {
    let s = setup(backend).await;
    let (_, gateway) = s.app.user("gateway", "device").await;
    let tags = ["TAG-1", "TAG-2", "TAG-3"];
    for (i, tag) in tags.iter().enumerate().skip(1) {
        let subject = format!("GTO-{}", i + 1);
        s.app.subject(&subject, Some(s.officer_id)).await;
        s.app.device(tag, &subject).await;
    }
    for i in 1..=tags.len() {
        let (st, v) = s.app.post(&format!("/v1/subjects/GTO-{i}/zones"), &s.officer,
            json!({"kind": "exclusion", "name": "King's Cross", "grace_s": 0, "valid_from": ago(7200),
                   "geometry": {"type": "Circle", "center": [STATION.1, STATION.0], "radius_m": 300}}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let at = |tag: &str, secs_ago: i64, p: (f64, f64)| json!({"device_id": tag, "ts": ago(secs_ago), "lat": p.0, "lon": p.1, "accuracy_m": 5.0});
    let send = |pings: Vec<Value>| {
        let app = &s.app;
        let gateway = gateway.clone();
        async move {
            let (st, v) = app.post_pings(&gateway, json!(pings)).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            assert!(v["rejected"].as_array().unwrap().is_empty(), "{v}");
        }
    };
    // all three enter in one request
    send(tags.iter().map(|t| at(t, 600, STATION)).collect()).await;
    alerts_until(&s.app, &s.officer, |a| a.len() == 3).await;
    // tag i stays inside for i more fixes, in one request
    let mut more = vec![];
    for (i, tag) in tags.iter().enumerate() {
        for k in 0..=i as i64 {
            more.push(at(tag, 500 - 10 * k, north(STATION, 10.0 * k as f64)));
        }
    }
    send(more).await;
    alerts_until(&s.app, &s.officer, |a| {
        a.iter()
            .map(|x| x["evidence_count"].as_i64().unwrap())
            .sum::<i64>()
            == 3 + 6
    })
    .await;
    // the first and the third leave, the second stays inside
    send(vec![
        at("TAG-1", 300, HOME),
        at("TAG-2", 300, STATION),
        at("TAG-3", 300, HOME),
    ])
    .await;
    let alerts = alerts_until(&s.app, &s.officer, |a| {
        a.iter().filter(|x| !x["ended_at"].is_null()).count() == 2
    })
    .await;
    for a in &alerts {
        let tag = a["device_id"].as_str().unwrap();
        let i = tags.iter().position(|t| *t == tag).unwrap() as i64;
        let still_inside = tag == "TAG-2";
        let evidence = 2 + i + i64::from(still_inside);
        assert_eq!(a["evidence_count"], evidence, "{a}");
        assert_eq!(a["ended_at"].is_null(), still_inside, "{a}");
        let id = a["id"].as_i64().unwrap();
        let (st, d) = s.app.get(&format!("/v1/alerts/{id}"), &s.officer).await;
        assert_eq!(st, StatusCode::OK, "{d}");
        assert_eq!(
            d["evidence"].as_array().unwrap().len() as i64,
            evidence,
            "{d}"
        );
        let kinds = event_kinds(&d);
        let last = if still_inside { "updated" } else { "ended" };
        assert_eq!(kinds, ["opened", "updated", last], "{tag}: {d}");
    }
}

/// The next `n` alert events of a stream (keep-alive comments skipped), as JSON.
async fn next_events(resp: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                assert!(event.contains("event: alert"), "{event}");
                out.push(serde_json::from_str(data).unwrap());
            }
        }
        if out.len() >= n {
            break;
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("no event")
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    out
}

/// The stream reads the names of a whole batch of changes at once: each change must still
/// go only to its subject's officer, named with its own subject and device.
async fn a_stream_sends_a_batch_of_changes_each_to_its_caseload_with_its_own_names(
    backend: Backend,
) {
    let s = setup(backend).await;
    let (other_id, other) = s.app.user("other officer", "officer").await;
    let (_, gateway) = s.app.user("gateway", "device").await;
    s.app.subject("GTO-2", Some(s.officer_id)).await;
    s.app.device("TAG-2", "GTO-2").await;
    s.app.subject("GTO-3", Some(other_id)).await;
    s.app.device("TAG-3", "GTO-3").await;
    for (subject, token) in [
        ("GTO-1", &s.officer),
        ("GTO-2", &s.officer),
        ("GTO-3", &other),
    ] {
        let (st, v) = s.app.post(&format!("/v1/subjects/{subject}/zones"), token,
            json!({"kind": "exclusion", "name": "King's Cross", "grace_s": 0, "valid_from": ago(7200),
                   "geometry": {"type": "Circle", "center": [STATION.1, STATION.0], "radius_m": 300}}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let mut mine = open_stream(&s.app, &s.officer).await;
    let mut theirs = open_stream(&s.app, &other).await;
    let pings: Vec<Value> = ["TAG-1", "TAG-2", "TAG-3"]
        .iter()
        .map(|t| json!({"device_id": t, "ts": ago(300), "lat": STATION.0, "lon": STATION.1, "accuracy_m": 5.0}))
        .collect();
    let (st, v) = s.app.post_pings(&gateway, json!(pings)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let names = |events: Vec<Value>| {
        let mut n: Vec<(String, String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["change"].as_str().unwrap().to_owned(),
                    e["alert"]["subject_id"].as_str().unwrap().to_owned(),
                    e["alert"]["device_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        n.sort();
        n
    };
    let opened =
        |subject: &str, device: &str| ("opened".to_owned(), subject.to_owned(), device.to_owned());
    assert_eq!(
        names(next_events(&mut mine, 2).await),
        [opened("GTO-1", "TAG-1"), opened("GTO-2", "TAG-2")]
    );
    assert_eq!(
        names(next_events(&mut theirs, 1).await),
        [opened("GTO-3", "TAG-3")]
    );
    // the next change is GTO-3's alone: the first officer's stream must not carry it
    let (st, _) = s
        .app
        .post_pings(&gateway, json!([{"device_id": "TAG-3", "ts": ago(200), "lat": HOME.0, "lon": HOME.1, "accuracy_m": 5.0},
                                     {"device_id": "TAG-1", "ts": ago(200), "lat": HOME.0, "lon": HOME.1, "accuracy_m": 5.0}]))
        .await;
    assert_eq!(st, StatusCode::OK);
    let ended = names(next_events(&mut mine, 1).await);
    assert_eq!(
        ended,
        [("ended".to_owned(), "GTO-1".to_owned(), "TAG-1".to_owned())]
    );
    assert_eq!(
        names(next_events(&mut theirs, 1).await),
        [("ended".to_owned(), "GTO-3".to_owned(), "TAG-3".to_owned())]
    );
}
