//! `tagwatch loadgen` against a real server: it registers its fleet and zones, drives
//! ingest, and measures ping-to-alert latency from the alert stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{spawn_app, spawn_app_with, Backend};
use tagwatch::loadgen::{run, LoadgenArgs};

async fn loadgen_reports_acknowledged_fixes_and_alerts_from_the_stream(backend: Backend) {
    let app = spawn_app(backend).await;
    let args = LoadgenArgs {
        url: app.url.clone(),
        token: app.admin_token.clone(),
        devices: 12,
        concurrency: 3,
        batch: 24,
        rate: 0,
        lockstep: false,
        duration: 3,
        zones_per_device: 4,
        swing_rounds: 20,
        seed: 11,
    };
    let report = run(args.clone()).await.unwrap();
    assert!(report.fixes_acknowledged >= 24, "{report}");
    assert!(report.ack_p50_ms > 0.0 && report.ack_p99_ms >= report.ack_p50_ms);
    // Every device crosses its own zone every 10 fixes.
    assert!(report.alerts_seen >= 12, "{report}");
    assert!(report.alert_p50_ms > 0.0 && report.alert_p999_ms >= report.alert_p50_ms);

    // What the stream showed is what the server stored: exclusion breaches, each on the
    // device's own (first) zone.
    let (_, alerts) = app
        .get(
            "/v1/alerts?type=exclusion_breach&limit=500",
            &app.admin_token,
        )
        .await;
    let items = alerts["items"].as_array().unwrap();
    assert!(items.len() as u64 >= report.alerts_seen.min(500));
    let zones = zones_of_first_subject(&app).await;
    assert_eq!(zones.len(), 4);
    let own = zones
        .iter()
        .map(|z| z["id"].as_i64().unwrap())
        .min()
        .unwrap();
    assert!(items
        .iter()
        .filter(|a| a["subject_id"] == "LG-S000000")
        .all(|a| a["zone_id"].as_i64() == Some(own)));

    // A second run reuses the fleet and its zones.
    let again = run(LoadgenArgs {
        duration: 1,
        ..args
    })
    .await
    .unwrap();
    assert!(again.fixes_acknowledged + again.duplicates > 0, "{again}");
    assert_eq!(zones_of_first_subject(&app).await.len(), 4);
}

/// The zones of the fleet's first subject.
async fn zones_of_first_subject(app: &common::TestApp) -> Vec<serde_json::Value> {
    let (_, v) = app
        .get("/v1/subjects/LG-S000000/zones", &app.admin_token)
        .await;
    v.as_array()
        .or_else(|| v["items"].as_array())
        .cloned()
        .unwrap()
}

/// Loadgen's fixes start six days back: against a server keeping fixes for one day they are
/// rejected, and the run fails with the server's reason instead of reporting a rate for
/// fixes that were never stored.
#[tokio::test]
async fn loadgen_fails_when_the_server_rejects_its_fixes() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.retention_days = 1).await;
    let err = run(LoadgenArgs {
        url: app.url.clone(),
        token: app.admin_token.clone(),
        devices: 4,
        concurrency: 1,
        batch: 8,
        rate: 0,
        lockstep: false,
        duration: 2,
        zones_per_device: 0,
        swing_rounds: 20,
        seed: 3,
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("older than the retention period"), "{err}");
}

/// A paced run sends at its rate, whether its clients start spread over a request
/// interval (the default) or all at once (`--lockstep`): never more than the rate allows
/// (plus the requests in flight at the end), and not far less.
#[tokio::test]
async fn loadgen_paces_its_clients() {
    let app = spawn_app(Backend::Sqlite).await;
    for lockstep in [false, true] {
        let report = run(LoadgenArgs {
            url: app.url.clone(),
            token: app.admin_token.clone(),
            devices: 16,
            concurrency: 4,
            batch: 10,
            rate: 400,
            lockstep,
            duration: 2,
            zones_per_device: 0,
            swing_rounds: 20,
            seed: 5,
        })
        .await
        .unwrap();
        let sent = report.fixes_acknowledged + report.duplicates;
        assert!(
            (400..=400 * 2 + 4 * 10).contains(&sent),
            "lockstep {lockstep}: {report}"
        );
    }
}

on_both_stores!(loadgen_reports_acknowledged_fixes_and_alerts_from_the_stream);
