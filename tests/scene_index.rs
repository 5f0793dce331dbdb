//! The crime-scene index, through the library's store API on both stores: for random
//! scenes over random tracks, the store's answer (`LawfulTx::scene_matches`, as the API
//! runs it) is exactly what `scene_matches` finds over every stored fix.
//!
//! The tracks are built to reach each part of the statement: walkers (short segments,
//! found through fine cells), vehicles (long segments, found through the coarse index),
//! gaps longer than `max_gap`, a device whose fixes change subject, fixes without a
//! subject or a position, and fixes that arrive late in a second insert. On SQLite the
//! fixes are checked in the ingest log's tail, in the table, and split between the two.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fresh_database, Backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tagwatch::geodesy::{LatLon, LocalFrame};
use tagwatch::query::cells::{fix_cell, scene_cover};
use tagwatch::query::scene::{scene_matches, MatchMethod, SceneMatch, SceneQuery};
use tagwatch::query::{QFix, QueryConfig};
use tagwatch::store::{FixRow, Store};

const MINUTE_US: i64 = 60_000_000;
const T0: i64 = 1_719_705_600_000_000;
const CENTRE: LatLon = LatLon::new(51.5074, -0.1278);
const DEVICES: usize = 24;
const MINUTES: i64 = 600;

/// A subject wearing a device, both numbered `i`: (subject pk, device pk).
async fn wearer(store: &Store, i: usize) -> (i64, i64) {
    common::wearer(store, i, T0).await
}

/// A stored fix of `device` at `ts`, at `pos` if it has one.
fn fix_row(
    device_pk: i64,
    subject_pk: Option<i64>,
    ts: i64,
    pos: Option<LatLon>,
    accuracy_m: f32,
) -> FixRow {
    FixRow {
        device_pk,
        ts,
        subject_pk,
        lat_e7: pos.map(|p| (p.lat * 1e7).round() as i32),
        lon_e7: pos.map(|p| (p.lon * 1e7).round() as i32),
        accuracy_m: Some(accuracy_m),
        source: i16::from(pos.is_some()),
        speed_mps: None,
        heading_deg: None,
        battery_pct: None,
        flags: 0,
        received_at: ts,
        cell: pos.and_then(|p| fix_cell(p).ok()),
    }
}

/// The store's answer to `scene`, as the API gets it.
async fn index_answer(store: &Store, scene: &SceneQuery, cfg: &QueryConfig) -> Vec<SceneMatch> {
    let cover = scene_cover(scene.center, scene.radius_m).unwrap();
    let mut tx = store.begin_lawful().await.unwrap();
    let got = tx.scene_matches(&cover, scene, cfg).await.unwrap();
    tx.commit().await.unwrap();
    got
}

/// Tracks around a 3 km square, one fix a minute with random gaps; returns the rows in two
/// inserts (on time, then late).
async fn tracks(store: &Store, rng: &mut StdRng) -> (Vec<FixRow>, Vec<FixRow>) {
    let frame = LocalFrame::new(CENTRE);
    let mut on_time = Vec::new();
    let mut late = Vec::new();
    for i in 0..DEVICES {
        let (subject_pk, device_pk) = wearer(store, i).await;
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
                (1, 200..=320) => Some(subject_pk + 1_000),
                _ if rng.gen_bool(0.01) => None,
                _ => Some(subject_pk),
            };
            let row = fix_row(
                device_pk,
                subject,
                T0 + m * MINUTE_US,
                positioned.then_some(pos),
                rng.gen_range(3.0..30.0),
            );
            if rng.gen_bool(0.1) {
                late.push(row);
            } else {
                on_time.push(row);
            }
        }
    }
    (on_time, late)
}

/// Compares the store's answer with brute force over `scenes` random scenes; returns the
/// number of matches and of interpolated ones.
async fn compare_scenes(
    store: &Store,
    all: &[QFix],
    rng: &mut StdRng,
    scenes: usize,
) -> (usize, usize) {
    let cfg = QueryConfig::default();
    let frame = LocalFrame::new(CENTRE);
    let (mut matches, mut interpolated) = (0, 0);
    for _ in 0..scenes {
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
        let want = scene_matches(all, &scene, &cfg);
        assert_eq!(index_answer(store, &scene, &cfg).await, want, "{scene:?}");
        matches += want.len();
        interpolated += want
            .iter()
            .filter(|m| m.method == MatchMethod::Interpolated)
            .count();
    }
    (matches, interpolated)
}

/// On SQLite the answer is checked with the fixes in each place they can be: all in the
/// ingest log's tail, the on-time ones compacted into the table and the late ones in the
/// tail (tracks crossing from one to the other), and all compacted.
async fn index_answers_equal_brute_force(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let mut rng = StdRng::seed_from_u64(0x5ce2e);
    let (on_time, late) = tracks(&store, &mut rng).await;
    for chunk in on_time.chunks(500) {
        store.insert_fixes(chunk).await.unwrap();
    }
    let on_time_fixes: Vec<QFix> = on_time.iter().filter_map(FixRow::qfix).collect();
    let tail_only = compare_scenes(&store, &on_time_fixes, &mut rng, 60).await;
    store.compact_all().await.unwrap();
    for chunk in late.chunks(97) {
        store.insert_fixes(chunk).await.unwrap();
    }
    let all: Vec<QFix> = on_time
        .iter()
        .chain(&late)
        .filter_map(FixRow::qfix)
        .collect();
    let mixed = compare_scenes(&store, &all, &mut rng, 100).await;
    store.compact_all().await.unwrap();
    let compacted = compare_scenes(&store, &all, &mut rng, 100).await;
    // The comparison is only worth something if scenes matched, some between fixes.
    for (state, (matches, interpolated)) in [
        ("tail", tail_only),
        ("mixed", mixed),
        ("compacted", compacted),
    ] {
        assert!(matches > 40, "{state}: only {matches} matches");
        assert!(
            interpolated > 2,
            "{state}: only {interpolated} interpolated matches"
        );
    }
}

/// Two hits 700 s apart give intervals `[−300, 300]` and `[400, 1000]` (max gap 300 s):
/// less than the max gap apart, so they must load as one, else the fix at 350 s (far away)
/// is skipped and the fixes at 290 s and 410 s, either side of the scene, look consecutive.
async fn a_fix_between_two_close_intervals_is_not_skipped(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let (subject_pk, device_pk) = wearer(&store, 1).await;
    let frame = LocalFrame::new(CENTRE);
    let row = |t_s: i64, x: f64, y: f64| {
        fix_row(
            device_pk,
            Some(subject_pk),
            T0 + t_s * 1_000_000,
            Some(frame.to_latlon(x, y)),
            5.0,
        )
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
    let all: Vec<QFix> = rows.iter().filter_map(FixRow::qfix).collect();
    assert!(scene_matches(&all, &scene, &cfg).is_empty());
    assert_eq!(index_answer(&store, &scene, &cfg).await, vec![]);
}

on_both_stores!(
    index_answers_equal_brute_force,
    a_fix_between_two_close_intervals_is_not_skipped
);
