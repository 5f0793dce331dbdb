//! The crime-scene index, through the library's store API on both stores: for random
//! scenes over random tracks, what the store's scene statement returns, matched by
//! `scene_matches_sparse`, is exactly what `scene_matches` finds over every stored fix.
//!
//! The tracks are built to reach each part of the statement: walkers (short segments,
//! found through fine cells), vehicles (long segments, found through the coarse index),
//! gaps longer than `max_gap`, a device whose fixes change subject, fixes without a
//! subject or a position, and fixes that arrive late in a second insert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fresh_database, Backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tagwatch::geodesy::{LatLon, LocalFrame};
use tagwatch::query::cells::{fix_cell, scene_cover};
use tagwatch::query::scene::{scene_matches, scene_matches_sparse, SceneBox, SceneQuery};
use tagwatch::query::{QFix, QueryConfig};
use tagwatch::store::{FixRow, NewSubject, Store};

const MINUTE_US: i64 = 60_000_000;
const T0: i64 = 1_719_705_600_000_000;
const CENTRE: LatLon = LatLon::new(51.5074, -0.1278);
const DEVICES: usize = 24;
const MINUTES: i64 = 600;

fn qfix(r: &FixRow) -> Option<QFix> {
    Some(QFix {
        device: r.device_pk,
        subject: r.subject_pk?,
        ts_us: r.ts,
        pos: LatLon::new(f64::from(r.lat_e7?) / 1e7, f64::from(r.lon_e7?) / 1e7),
        accuracy_m: r.accuracy_m.map_or(0.0, f64::from),
    })
}

/// Tracks around a 3 km square, one fix a minute with random gaps; returns the rows in two
/// inserts (on time, then late).
async fn tracks(store: &Store, rng: &mut StdRng) -> (Vec<FixRow>, Vec<FixRow>) {
    let frame = LocalFrame::new(CENTRE);
    let mut on_time = Vec::new();
    let mut late = Vec::new();
    for i in 0..DEVICES {
        let s = store
            .create_subject(&NewSubject {
                id: format!("S-{i}"),
                display_name: None,
                borough: None,
                officer_id: None,
                timezone: "Europe/London".into(),
            })
            .await
            .unwrap();
        let d = store
            .create_device(&format!("D-{i}"), s.pk, T0)
            .await
            .unwrap();
        let vehicle = i % 4 == 0;
        let (mut x, mut y) = (
            rng.gen_range(-1500.0..1500.0),
            rng.gen_range(-1500.0..1500.0),
        );
        let mut heading: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
        let mut m = 0;
        while m < MINUTES {
            // occasionally a gap of 6–20 minutes (longer than the 5-minute max gap)
            m += if rng.gen_bool(0.03) {
                rng.gen_range(6..20)
            } else {
                1
            };
            heading += rng.gen_range(-0.7..0.7);
            let step = if vehicle {
                rng.gen_range(200.0..900.0)
            } else {
                rng.gen_range(20.0..110.0)
            };
            x += step * heading.cos();
            y += step * heading.sin();
            if x.hypot(y) > 2_000.0 {
                heading = (-y).atan2(-x);
            }
            let pos = frame.to_latlon(x, y);
            let positioned = !rng.gen_bool(0.02);
            // device 1's fixes belong to another subject for a stretch (reassignment)
            let subject = match (i, m) {
                (1, 200..=320) => Some(s.pk + 1_000),
                _ if rng.gen_bool(0.01) => None,
                _ => Some(s.pk),
            };
            let row = FixRow {
                device_pk: d.pk,
                ts: T0 + m * MINUTE_US,
                subject_pk: subject,
                lat_e7: positioned.then(|| (pos.lat * 1e7).round() as i32),
                lon_e7: positioned.then(|| (pos.lon * 1e7).round() as i32),
                accuracy_m: Some(rng.gen_range(3.0..30.0)),
                source: i16::from(positioned),
                speed_mps: None,
                heading_deg: None,
                battery_pct: None,
                flags: 0,
                received_at: T0 + m * MINUTE_US,
                cell: if positioned { fix_cell(pos).ok() } else { None },
            };
            if rng.gen_bool(0.1) {
                late.push(row);
            } else {
                on_time.push(row);
            }
        }
    }
    (on_time, late)
}

async fn index_answers_equal_brute_force(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let mut rng = StdRng::seed_from_u64(0x5ce2e);
    let (on_time, late) = tracks(&store, &mut rng).await;
    for chunk in on_time.chunks(500) {
        store.insert_fixes(chunk).await.unwrap();
    }
    for chunk in late.chunks(97) {
        store.insert_fixes(chunk).await.unwrap();
    }
    let all: Vec<QFix> = on_time.iter().chain(&late).filter_map(qfix).collect();
    let cfg = QueryConfig::default();
    let frame = LocalFrame::new(CENTRE);
    let (mut matches, mut interpolated) = (0, 0);
    for _ in 0..150 {
        let from_us = T0 + rng.gen_range(-30..MINUTES) * MINUTE_US + rng.gen_range(0..MINUTE_US);
        let scene = SceneQuery {
            center: frame.to_latlon(
                rng.gen_range(-2500.0..2500.0),
                rng.gen_range(-2500.0..2500.0),
            ),
            radius_m: rng.gen_range(20.0..900.0),
            from_us,
            to_us: from_us + rng.gen_range(0..240) * MINUTE_US,
        };
        let cover = scene_cover(scene.center, scene.radius_m).unwrap();
        let mut tx = store.begin_lawful().await.unwrap();
        let points = tx
            .scene_points(
                &cover,
                scene.from_us,
                scene.to_us,
                cfg.max_gap_us(),
                &SceneBox::around(&scene),
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let got = scene_matches_sparse(&points, &scene, &cfg);
        let want = scene_matches(&all, &scene, &cfg);
        assert_eq!(got, want, "{scene:?}");
        assert!(
            points.len() <= all.len(),
            "the index returned more than exists"
        );
        matches += want.len();
        interpolated += want
            .iter()
            .filter(|m| m.method == tagwatch::query::scene::MatchMethod::Interpolated)
            .count();
    }
    // The comparison is only worth something if scenes matched, some between fixes.
    assert!(matches > 100, "only {matches} matches");
    assert!(interpolated > 5, "only {interpolated} interpolated matches");
}

/// Two hits 700 s apart give intervals `[−300, 300]` and `[400, 1000]` (max gap 300 s):
/// less than the max gap apart, so they must load as one, else the fix at 350 s (far away)
/// is skipped and the fixes at 290 s and 410 s, either side of the scene, look consecutive.
async fn a_fix_between_two_close_intervals_is_not_skipped(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let s = store
        .create_subject(&NewSubject {
            id: "S-1".into(),
            display_name: None,
            borough: None,
            officer_id: None,
            timezone: "Europe/London".into(),
        })
        .await
        .unwrap();
    let d = store.create_device("D-1", s.pk, T0).await.unwrap();
    let frame = LocalFrame::new(CENTRE);
    let row = |t_s: i64, x: f64, y: f64| {
        let pos = frame.to_latlon(x, y);
        FixRow {
            device_pk: d.pk,
            ts: T0 + t_s * 1_000_000,
            subject_pk: Some(s.pk),
            lat_e7: Some((pos.lat * 1e7).round() as i32),
            lon_e7: Some((pos.lon * 1e7).round() as i32),
            accuracy_m: Some(5.0),
            source: 1,
            speed_mps: None,
            heading_deg: None,
            battery_pct: None,
            flags: 0,
            received_at: T0,
            cell: fix_cell(pos).ok(),
        }
    };
    let rows = [
        row(0, -280.0, 0.0),
        row(290, -6_000.0, 10.0),
        row(350, 0.0, 20_000.0),
        row(410, 6_000.0, 10.0),
        row(700, 280.0, 0.0),
    ];
    store.insert_fixes(&rows).await.unwrap();
    let scene = SceneQuery {
        center: CENTRE,
        radius_m: 50.0,
        from_us: T0,
        to_us: T0 + 700 * 1_000_000,
    };
    let cfg = QueryConfig::default();
    let mut tx = store.begin_lawful().await.unwrap();
    let cover = scene_cover(scene.center, scene.radius_m).unwrap();
    let points = tx
        .scene_points(
            &cover,
            scene.from_us,
            scene.to_us,
            cfg.max_gap_us(),
            &SceneBox::around(&scene),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let all: Vec<QFix> = rows.iter().filter_map(qfix).collect();
    assert!(scene_matches(&all, &scene, &cfg).is_empty());
    assert_eq!(scene_matches_sparse(&points, &scene, &cfg), vec![]);
}

on_both_stores!(
    index_answers_equal_brute_force,
    a_fix_between_two_close_intervals_is_not_skipped
);
