//! The crime-scene index, through the library's store API on both stores: for random
//! scenes over random tracks, the store's answer (`Store::scene_audited`, the call the API
//! makes) is exactly what `scene_matches` finds over every stored fix.
//!
//! The tracks are built to reach each part of the statement: walkers (short segments,
//! found through fine cells), vehicles (long segments, found through the coarse index),
//! gaps longer than `max_gap` and gaps within it but longer than PostgreSQL's island
//! edge, a device whose fixes change subject, fixes without a
//! subject or a position, and fixes that arrive late in a second insert. On SQLite the
//! fixes are checked in the ingest log's tail, in the table, and split between the two.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fresh_database, Backend};
use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tagwatch::audit::chain::AuditDraft;
use tagwatch::geodesy::{LatLon, LocalFrame};
use tagwatch::query::cells::{is_long_segment, scene_cover, segment_cells};
use tagwatch::query::scene::{scene_matches, MatchMethod, SceneMatch, SceneQuery};
use tagwatch::query::{QFix, QueryConfig};
use tagwatch::store::{FixRow, Store, SEGMENT_INDEX_MAX_GAP_US};

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
        accuracy_m: Some(accuracy_m),
        ..FixRow::at(device_pk, subject_pk, ts, pos)
    }
}

/// The store's answer to `scene`, as the API gets it.
async fn index_answer(store: &Store, scene: &SceneQuery, cfg: &QueryConfig) -> Vec<SceneMatch> {
    let cover = scene_cover(scene.center, scene.radius_m).unwrap();
    let (got, _) = store
        .scene_audited(&cover, scene, cfg, |found| (draft(), found.matches))
        .await
        .unwrap();
    got
}

/// An audit entry for [`index_answer`]'s query.
fn draft() -> AuditDraft {
    AuditDraft {
        id: 0,
        at_us: T0,
        actor: 1,
        actor_name: "test analyst".into(),
        role: "analyst".into(),
        action: "query.crime_scene".into(),
        parameters: serde_json::json!({}),
        justification: Some(serde_json::json!({"reason": "scene index test"})),
        subject_ids: vec![],
        result_count: 0,
    }
}

/// `DEVICES` wearers of `store`.
async fn wearers(store: &Store) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for i in 0..DEVICES {
        out.push(wearer(store, i).await);
    }
    out
}

/// Tracks around a 3 km square, one fix a minute with random gaps, one per wearer; returns
/// the rows in two inserts (on time, then late).
fn tracks(wearers: &[(i64, i64)], rng: &mut StdRng) -> (Vec<FixRow>, Vec<FixRow>) {
    tracks_with(wearers, rng, 200.0..2_500.0)
}

/// [`tracks`] with the vehicles' minute-long steps drawn from `vehicle_step_m`.
fn tracks_with(
    wearers: &[(i64, i64)],
    rng: &mut StdRng,
    vehicle_step_m: std::ops::Range<f64>,
) -> (Vec<FixRow>, Vec<FixRow>) {
    let frame = LocalFrame::new(CENTRE);
    let mut on_time = Vec::new();
    let mut late = Vec::new();
    for (i, &(subject_pk, device_pk)) in wearers.iter().enumerate() {
        let vehicle = i % 4 == 0;
        let (mut x, mut y) = (
            rng.gen_range(-1500.0..1500.0),
            rng.gen_range(-1500.0..1500.0),
        );
        let mut heading: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
        let mut m = 0;
        while m < MINUTES {
            // occasionally a gap of 6–20 minutes (longer than the 5-minute max gap), or
            // of 3–5 (linked, but past the two minutes PostgreSQL reads around its hits)
            m += if rng.gen_bool(0.03) {
                rng.gen_range(6..20)
            } else if rng.gen_bool(0.05) {
                rng.gen_range(3..=5)
            } else {
                1
            };
            heading += rng.gen_range(-0.7..0.7);
            let step = if vehicle {
                rng.gen_range(vehicle_step_m.clone())
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
                // anywhere in its minute (SQLite's fine index keeps minutes)
                T0 + m * MINUTE_US + rng.gen_range(0..MINUTE_US),
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
    let (on_time, late) = tracks(&wearers(&store).await, &mut rng);
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

/// A track's only fix near the scene lies just outside the window, and its neighbour is
/// four minutes away (within the 5-minute max gap) and 850 m out, past every fine cell of
/// the scene: only the segment between them, clipped at the window's edge, comes within
/// the radius. PostgreSQL reads an island two minutes either side of its hits and must ask
/// for the neighbour beyond (`IslandEdges`); checked at the window's start (the neighbour
/// after the hit) and at its end (the neighbour before), and on SQLite with the fixes in
/// the ingest log's tail and then in the table.
async fn a_neighbour_beyond_an_islands_read_is_asked_for(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let frame = LocalFrame::new(CENTRE);
    let mut rows = Vec::new();
    // (wearer, first fix, second fix): x in metres east of the scene, 240 s apart
    for (i, a, b) in [(1, -400.0, -850.0), (2, 850.0, 400.0)] {
        let (subject_pk, device_pk) = wearer(&store, i).await;
        for (t_s, x) in [(0, a), (240, b)] {
            rows.push(fix_row(
                device_pk,
                Some(subject_pk),
                T0 + t_s * 1_000_000,
                Some(frame.to_latlon(x, 0.0)),
                5.0,
            ));
        }
    }
    store.insert_fixes(&rows).await.unwrap();
    let all: Vec<QFix> = rows.iter().filter_map(FixRow::qfix).collect();
    let cfg = QueryConfig::default();
    let hour = 60 * MINUTE_US;
    for (from_us, to_us) in [(T0 + 10_000_000, T0 + hour), (T0 - hour, T0 + 230_000_000)] {
        let scene = SceneQuery {
            center: CENTRE,
            radius_m: 500.0,
            from_us,
            to_us,
        };
        let want = scene_matches(&all, &scene, &cfg);
        let edge = want
            .iter()
            .find(|m| m.method == MatchMethod::Interpolated)
            .expect("the clipped segment matches");
        assert!((edge.closest_approach_m - 418.75).abs() < 0.5, "{edge:?}");
        assert_eq!(index_answer(&store, &scene, &cfg).await, want, "{scene:?}");
        store.compact_all().await.unwrap();
        assert_eq!(index_answer(&store, &scene, &cfg).await, want, "{scene:?}");
    }
}

/// As above, with two fixes beyond the island's read that could be the hit's neighbour:
/// one stored first, and one that arrives late and lies between the hit and it. The
/// neighbour is the late one, and the segment to it, clipped at the window's edge, comes
/// 468.75 m from the scene; linking the hit to the other gives 464.05 m. On SQLite the
/// late fix is in the ingest log's tail and the other in the table. Checked after the hit
/// (window's start) and before it (window's end). Every segment is short and every fix but
/// the hit is past the fine cells, so on PostgreSQL the island's read holds only the hit
/// and the neighbour is the edge's seek.
async fn a_late_neighbour_nearer_than_a_stored_one_is_the_one_linked(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let frame = LocalFrame::new(CENTRE);
    // per wearer, in seconds from its own start (the wearers hours apart, so that each
    // window holds one track): hit, stored neighbour, late neighbour, window
    let cases = [(0, 280, 240, (10, 3_600)), (280, 0, 40, (-3_600, 270))];
    let start_s = |i: usize| i as i64 * 10_000;
    let (mut stored, mut late) = (Vec::new(), Vec::new());
    for (i, &(hit, far, near, _)) in cases.iter().enumerate() {
        let (subject_pk, device_pk) = wearer(&store, i + 1).await;
        let row = |t_s: i64, x: f64, y: f64| {
            fix_row(
                device_pk,
                Some(subject_pk),
                T0 + (start_s(i) + t_s) * 1_000_000,
                Some(frame.to_latlon(x, y)),
                5.0,
            )
        };
        stored.push(row(hit, -450.0, 0.0));
        stored.push(row(far, -840.0, 300.0));
        late.push(row(near, -900.0, 0.0));
    }
    store.insert_fixes(&stored).await.unwrap();
    store.compact_all().await.unwrap();
    store.insert_fixes(&late).await.unwrap();
    let all: Vec<QFix> = stored
        .iter()
        .chain(&late)
        .filter_map(FixRow::qfix)
        .collect();
    let cfg = QueryConfig::default();
    for (i, &(_, _, _, (from_s, to_s))) in cases.iter().enumerate() {
        let scene = SceneQuery {
            center: CENTRE,
            radius_m: 500.0,
            from_us: T0 + (start_s(i) + from_s) * 1_000_000,
            to_us: T0 + (start_s(i) + to_s) * 1_000_000,
        };
        let want = scene_matches(&all, &scene, &cfg);
        assert_eq!(want.len(), 1, "{want:?}");
        assert_eq!(want[0].method, MatchMethod::Interpolated);
        assert!(
            (want[0].closest_approach_m - 468.75).abs() < 0.5,
            "{want:?}"
        );
        assert_eq!(index_answer(&store, &scene, &cfg).await, want, "{scene:?}");
    }
}

/// A short segment (490 m, a minute) passing 99 m from a 100 m scene, both its ends 264 m
/// away: the pass is found through its ends' fine cells, which must reach
/// `√(R² + (T/2)²)` = 269 m from the scene (`cells::fine_radius_m`), not just the radius
/// plus a little. Also checked with the pass a little outside the radius (no match).
async fn a_short_pass_between_two_far_ends_is_found(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let frame = LocalFrame::new(CENTRE);
    let mut rows = Vec::new();
    // (wearer, the pass's distance from the scene)
    for (i, y) in [(1, 99.0), (2, -101.0)] {
        let (subject_pk, device_pk) = wearer(&store, i).await;
        let at = |x: f64| Some(frame.to_latlon(x, y));
        assert!(!is_long_segment(at(-245.0).unwrap(), at(245.0).unwrap()));
        for (t_s, x) in [(-60, -900.0), (0, -245.0), (60, 245.0), (120, 900.0)] {
            rows.push(fix_row(
                device_pk,
                Some(subject_pk),
                T0 + t_s * 1_000_000,
                at(x),
                5.0,
            ));
        }
    }
    store.insert_fixes(&rows).await.unwrap();
    let all: Vec<QFix> = rows.iter().filter_map(FixRow::qfix).collect();
    let cfg = QueryConfig::default();
    let scene = SceneQuery {
        center: CENTRE,
        radius_m: 100.0,
        from_us: T0 - 600_000_000,
        to_us: T0 + 600_000_000,
    };
    let want = scene_matches(&all, &scene, &cfg);
    assert_eq!(want.len(), 1, "{want:?}");
    assert_eq!(want[0].method, MatchMethod::Interpolated);
    assert!((want[0].closest_approach_m - 99.0).abs() < 0.5, "{want:?}");
    assert_eq!(index_answer(&store, &scene, &cfg).await, want);
    // on SQLite, also from the table, whose fine keys split a cell by its children
    // (`cells::scene_keys` must look up every child that meets the fine disk)
    store.compact_all().await.unwrap();
    assert_eq!(index_answer(&store, &scene, &cfg).await, want);
}

/// Answers name their matches' devices and subjects by their own ids, over a sequence of
/// scenes whose matches are partly those of earlier answers (PostgreSQL remembers the ids
/// it has read and reads only the others).
async fn answers_name_matches_by_their_ids_whether_read_before_or_not(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let mut rows = Vec::new();
    let mut keys = Vec::new();
    for i in 1..=3 {
        let (subject_pk, device_pk) = wearer(&store, i).await;
        keys.push((subject_pk, device_pk));
        // one fix at the scene, wearer i at minute 10 i
        rows.push(fix_row(
            device_pk,
            Some(subject_pk),
            T0 + 10 * i as i64 * MINUTE_US,
            Some(CENTRE),
            5.0,
        ));
    }
    store.insert_fixes(&rows).await.unwrap();
    let cfg = QueryConfig::default();
    // (window in minutes, the wearers it finds)
    for ((from, to), want) in [
        ((5, 25), vec![1, 2]),
        ((15, 35), vec![2, 3]),
        ((0, 40), vec![1, 2, 3]),
        ((25, 35), vec![3]),
    ] {
        let scene = SceneQuery {
            center: CENTRE,
            radius_m: 100.0,
            from_us: T0 + from * MINUTE_US,
            to_us: T0 + to * MINUTE_US,
        };
        let cover = scene_cover(scene.center, scene.radius_m).unwrap();
        let (found, _) = store
            .scene_audited(&cover, &scene, &cfg, |found| (draft(), found))
            .await
            .unwrap();
        let want_devices: HashMap<i64, String> = want
            .iter()
            .map(|&i| (keys[i - 1].1, format!("D-{i}")))
            .collect();
        let want_subjects: HashMap<i64, String> = want
            .iter()
            .map(|&i| (keys[i - 1].0, format!("S-{i}")))
            .collect();
        assert_eq!(found.matches.len(), want.len(), "{scene:?}");
        assert_eq!(found.devices, want_devices, "{scene:?}");
        assert_eq!(found.subjects, want_subjects, "{scene:?}");
    }
}

/// A key sent twice in one group, the first copy without a position: that copy is the one
/// stored (the second meets it and is skipped), so the track runs straight from the fix
/// before it to the fix after it, 10 km across the scene, and the segment indexer must
/// index that segment, not the two legs through where the second copy says it was (30 km
/// north, far from every cell the scene looks up).
async fn a_key_sent_twice_in_one_group_is_indexed_as_stored(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let (subject_pk, device_pk) = wearer(&store, 1).await;
    let frame = LocalFrame::new(CENTRE);
    let row = |t_s: i64, pos: Option<(f64, f64)>| {
        fix_row(
            device_pk,
            Some(subject_pk),
            T0 + t_s * 1_000_000,
            pos.map(|(x, y)| frame.to_latlon(x, y)),
            5.0,
        )
    };
    let group = [
        row(0, Some((-5_000.0, 0.0))),
        row(120, None),
        row(120, Some((0.0, 30_000.0))),
        row(240, Some((5_000.0, 0.0))),
    ];
    store.insert_fixes(&group).await.unwrap();
    let stored = store
        .device_fixes(device_pk, T0, T0 + 240 * 1_000_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[1].lat_e7, None, "the first copy is the one stored");
    let scene = SceneQuery {
        center: CENTRE,
        radius_m: 50.0,
        from_us: T0 + 60 * 1_000_000,
        to_us: T0 + 180 * 1_000_000,
    };
    let cfg = QueryConfig::default();
    let all: Vec<QFix> = stored.iter().filter_map(FixRow::qfix).collect();
    let want = scene_matches(&all, &scene, &cfg);
    assert_eq!(want.len(), 1, "the stored track crosses the scene");
    assert_eq!(want[0].method, MatchMethod::Interpolated);
    assert_eq!(index_answer(&store, &scene, &cfg).await, want);
}

/// A long segment indexed, then a fix that arrives late between its ends: the segment from
/// the same start to the late fix passes through the scene, the one it replaced does not
/// come near it, and both cross the same coarse cells around the scene, so the new one's
/// index rows have the old rows' keys. The index must still offer it (on PostgreSQL the
/// rows carry their segment's bounding box, which the late insert widens). The
/// configuration is placed where that premise holds, and the test says so if none is.
async fn a_late_fix_that_turns_a_long_segment_through_the_scene_is_found(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let (subject_pk, device_pk) = wearer(&store, 1).await;
    let cfg = QueryConfig::default();
    let radius_m = 50.0;
    // start and old end below the scene's box, the late fix across it from the start
    let (a, old_end, late) = ((-700.0, -70.0), (700.0, -270.0), (700.0, 70.0));
    let (frame, centre) = (0..400)
        .map(|k| {
            let c = LocalFrame::new(CENTRE)
                .to_latlon(f64::from(k % 20) * 150.0, f64::from(k / 20) * 150.0);
            (LocalFrame::new(c), c)
        })
        .find(|(frame, c)| {
            let at = |p: (f64, f64)| frame.to_latlon(p.0, p.1);
            let cover = scene_cover(*c, radius_m).unwrap().coarse;
            let old = segment_cells(at(a), at(old_end)).unwrap();
            let new = segment_cells(at(a), at(late)).unwrap();
            let shared: Vec<&i64> = cover.iter().filter(|c| new.contains(c)).collect();
            !shared.is_empty() && shared.iter().all(|c| old.contains(c))
        })
        .expect("a placement where the late segment's cells near the scene are the old one's");
    let row = |t_s: i64, p: (f64, f64)| {
        fix_row(
            device_pk,
            Some(subject_pk),
            T0 + t_s * 1_000_000,
            Some(frame.to_latlon(p.0, p.1)),
            5.0,
        )
    };
    let on_time = [row(0, a), row(120, old_end)];
    let late_fix = [row(60, late)];
    store.insert_fixes(&on_time).await.unwrap();
    store.insert_fixes(&late_fix).await.unwrap();
    let scene = SceneQuery {
        center: centre,
        radius_m,
        from_us: T0,
        to_us: T0 + 120 * 1_000_000,
    };
    let all: Vec<QFix> = on_time
        .iter()
        .chain(&late_fix)
        .filter_map(FixRow::qfix)
        .collect();
    let want = scene_matches(&all, &scene, &cfg);
    assert_eq!(want.len(), 1, "the late segment passes through the scene");
    assert_eq!(want[0].method, MatchMethod::Interpolated);
    assert_eq!(index_answer(&store, &scene, &cfg).await, want);
}

/// A SQLite file written before migration 5 (which moved the fine index out of `fixes` into
/// `fix_cells` and shrank the rows): after the migration every fix reads back as it was
/// stored, its values rounded to hundredths as ingest now does, and scenes find the same
/// matches as brute force over them.
#[tokio::test]
async fn sqlite_fixes_stored_before_migration_5_read_back_and_are_found() {
    let (url, _guard) = fresh_database(Backend::Sqlite).await;
    let pool = common::sqlite_migrated_up_to(&url, 4).await;
    let wearers: Vec<(i64, i64)> = (1..=DEVICES as i64).map(|i| (i, i)).collect();
    for &(pk, _) in &wearers {
        for insert in [
            "INSERT INTO subjects (pk, id, timezone, created_at) \
             VALUES (?1, 'S-' || ?1, 'Europe/London', 0)",
            "INSERT INTO devices (pk, id, subject_pk, created_at) VALUES (?1, 'D-' || ?1, ?1, 0)",
            "INSERT INTO device_assignments (device_pk, subject_pk, from_us) VALUES (?1, ?1, 0)",
        ] {
            sqlx::query(insert).bind(pk).execute(&pool).await.unwrap();
        }
    }
    let mut rng = StdRng::seed_from_u64(0x0005);
    let (on_time, late) = tracks(&wearers, &mut rng);
    let mut rows: Vec<FixRow> = on_time.into_iter().chain(late).collect();
    for (i, r) in rows.iter_mut().enumerate() {
        // every value column in use, received a varying time after the fix
        r.speed_mps = Some(rng.gen_range(0.0..40.0));
        r.heading_deg = (i % 3 != 0).then(|| rng.gen_range(0.0..360.0));
        r.battery_pct = Some(rng.gen_range(0.0..100.0));
        r.received_at = r.ts + rng.gen_range(-300_000_000..86_400_000_000);
        r.flags = (i % 16) as i16;
        sqlx::query(
            "INSERT INTO fixes (device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_m, source, \
             speed_mps, heading_deg, battery_pct, flags, received_at, cell) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.device_pk)
        .bind(r.ts)
        .bind(r.subject_pk)
        .bind(r.lat_e7)
        .bind(r.lon_e7)
        .bind(r.accuracy_m)
        .bind(r.source)
        .bind(r.speed_mps)
        .bind(r.heading_deg)
        .bind(r.battery_pct)
        .bind(r.flags)
        .bind(r.received_at)
        .bind(r.cell)
        .execute(&pool)
        .await
        .unwrap();
    }
    // and the long segments' index rows, as the indexer wrote them
    let mut sorted = rows.clone();
    sorted.sort_by_key(|r| (r.device_pk, r.ts));
    let keys: HashSet<(i64, i64)> = sorted.iter().map(|r| (r.device_pk, r.ts)).collect();
    for (cell, t0, t1, d) in segment_rows(&sorted, &keys) {
        sqlx::query(
            "INSERT OR IGNORE INTO fix_segments (cell, t0, t1, device_pk) VALUES (?, ?, ?, ?)",
        )
        .bind(cell)
        .bind(t0)
        .bind(t1)
        .bind(d)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = Store::connect(&url).await.unwrap();
    let hundredths = |v: Option<f32>| v.map(|v| tagwatch::model::fix::hundredths(f64::from(v)));
    for r in &mut rows {
        r.received_at = tagwatch::model::fix::received_after(r.ts, r.received_at);
        r.accuracy_m = hundredths(r.accuracy_m);
        r.speed_mps = hundredths(r.speed_mps);
        r.heading_deg = hundredths(r.heading_deg);
        r.battery_pct = hundredths(r.battery_pct);
    }
    rows.sort_by_key(|r| (r.device_pk, r.ts));
    let mut read = Vec::new();
    for &(_, device_pk) in &wearers {
        read.extend(
            store
                .device_fixes(device_pk, i64::MIN, i64::MAX)
                .await
                .unwrap(),
        );
    }
    assert_eq!(read, rows);
    let all: Vec<QFix> = rows.iter().filter_map(FixRow::qfix).collect();
    let (matches, interpolated) = compare_scenes(&store, &all, &mut rng, 100).await;
    assert!(
        matches > 40 && interpolated > 2,
        "{matches} matches, {interpolated} interpolated"
    );
}

/// The `fix_segments` rows `(cell, t0, t1, device)` the segment indexer writes when the
/// keys `new` of `stored` (sorted by device, then time) arrive: a row per coarse cell of
/// every long pair of consecutive positioned, attributed fixes with a new one, at most
/// [`SEGMENT_INDEX_MAX_GAP_US`] apart. For stores written by hand in an older schema.
fn segment_rows(stored: &[FixRow], new: &HashSet<(i64, i64)>) -> Vec<(i64, i64, i64, i64)> {
    let positioned: Vec<(i64, i64, LatLon)> = stored
        .iter()
        .filter_map(|r| r.qfix().map(|q| (r.device_pk, r.ts, q.pos)))
        .collect();
    let mut out = Vec::new();
    for w in positioned.windows(2) {
        let ((d, t0, a), (e, t1, b)) = (w[0], w[1]);
        if d == e
            && t1 - t0 <= SEGMENT_INDEX_MAX_GAP_US
            && (new.contains(&(d, t0)) || new.contains(&(d, t1)))
            && is_long_segment(a, b)
        {
            out.extend(
                segment_cells(a, b)
                    .unwrap()
                    .into_iter()
                    .map(|c| (c, t0, t1, d)),
            );
        }
    }
    out
}

/// A PostgreSQL store written before migration 9 (which gave each `fix_segments` row its
/// segment's bounding box, and the lookup a filter on it): its rows, stale ones left by
/// late fixes included, get boxes that hold every segment they stand for, and scenes find
/// the same matches as brute force.
#[tokio::test]
async fn postgres_segments_indexed_before_migration_9_get_boxes_and_are_found() {
    let (url, _guard) = fresh_database(Backend::Postgres).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    common::migrations_up_to(Backend::Postgres, 8)
        .await
        .run(&pool)
        .await
        .unwrap();
    let wearers: Vec<(i64, i64)> = (1..=DEVICES as i64).map(|i| (i, i)).collect();
    for &(pk, _) in &wearers {
        for insert in [
            "INSERT INTO subjects (pk, id, timezone, created_at) \
             VALUES ($1, 'S-' || $1, 'Europe/London', 0)",
            "INSERT INTO devices (pk, id, subject_pk, created_at) VALUES ($1, 'D-' || $1, $1, 0)",
            "INSERT INTO device_assignments (device_pk, subject_pk, from_us) VALUES ($1, $1, 0)",
        ] {
            sqlx::query(insert).bind(pk).execute(&pool).await.unwrap();
        }
    }
    let mut rng = StdRng::seed_from_u64(0x0009);
    // vehicles whose segments are mostly found through the coarse index alone: longer than
    // twice the reach of the fine index's hit disk beyond a scene's radius
    let (on_time, late) = tracks_with(&wearers, &mut rng, 1_000.0..2_500.0);
    // the index rows as the indexer writes them (`segment_rows`) but without boxes, as
    // before migration 9: after each insert, keys already there left as they were
    let mut stored: Vec<FixRow> = Vec::new();
    for batch in [on_time, late] {
        for r in &batch {
            sqlx::query(
                "INSERT INTO fixes (device_pk, ts, subject_pk, lat_e7, lon_e7, accuracy_m, \
                 source, flags, received_at, cell) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(r.device_pk)
            .bind(r.ts)
            .bind(r.subject_pk)
            .bind(r.lat_e7)
            .bind(r.lon_e7)
            .bind(r.accuracy_m)
            .bind(r.source)
            .bind(r.flags)
            .bind(r.received_at)
            .bind(r.cell)
            .execute(&pool)
            .await
            .unwrap();
        }
        let new: HashSet<(i64, i64)> = batch.iter().map(|r| (r.device_pk, r.ts)).collect();
        stored.extend(batch);
        stored.sort_by_key(|r| (r.device_pk, r.ts));
        for (cell, t0, t1, d) in segment_rows(&stored, &new) {
            sqlx::query(
                "INSERT INTO fix_segments (cell, t0, t1, device_pk) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(cell)
            .bind(t0)
            .bind(t1)
            .bind(d)
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    pool.close().await;

    let store = Store::connect(&url).await.unwrap();
    let Store::Postgres(pg) = &store else {
        unreachable!()
    };
    let (rows, unboxed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE lat_lo IS NULL OR lat_hi IS NULL \
             OR lon_lo IS NULL OR lon_hi IS NULL) FROM fix_segments",
    )
    .fetch_one(pg.pool())
    .await
    .unwrap();
    assert!(rows > 100, "{rows} segment rows");
    assert_eq!(unboxed, 0, "every row written before gets its box");
    let all: Vec<QFix> = stored.iter().filter_map(FixRow::qfix).collect();
    let (matches, interpolated) = compare_scenes(&store, &all, &mut rng, 100).await;
    assert!(
        matches > 40 && interpolated > 2,
        "{matches} matches, {interpolated} interpolated"
    );
}

/// The retention purge leaves the index whole for the fixes it keeps: with the cutoff in the
/// middle of a minute (SQLite's fine index keeps minutes), scenes over what is left still
/// equal brute force, and on SQLite no index row older than the cutoff's minute is left.
async fn the_purge_keeps_the_index_of_what_it_keeps(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let mut rng = StdRng::seed_from_u64(0x9e7e);
    let (on_time, late) = tracks(&wearers(&store).await, &mut rng);
    let rows: Vec<FixRow> = on_time.into_iter().chain(late).collect();
    store.insert_fixes(&rows).await.unwrap();
    store.compact_all().await.unwrap();
    let cutoff = T0 + (MINUTES / 2) * MINUTE_US + 30_000_000;
    let counts = store.purge_fixes_before(cutoff).await.unwrap();
    let kept: Vec<QFix> = rows
        .iter()
        .filter(|r| r.ts >= cutoff)
        .filter_map(FixRow::qfix)
        .collect();
    assert_eq!(
        counts.fixes as usize,
        rows.len() - rows.iter().filter(|r| r.ts >= cutoff).count()
    );
    let (matches, interpolated) = compare_scenes(&store, &kept, &mut rng, 100).await;
    assert!(
        matches > 20 && interpolated > 0,
        "{matches} matches, {interpolated} interpolated"
    );
    if backend == Backend::Sqlite {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let minutes: (i64, i64) = sqlx::query_as("SELECT min(minute), count(*) FROM fix_cells")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            minutes.0,
            cutoff.div_euclid(MINUTE_US),
            "older rows are gone, the cutoff's minute stays"
        );
        assert!(minutes.1 > 1_000);
        let segments: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE t1 < ?1), count(*) FILTER (WHERE t0 < ?1) FROM fix_segments",
        )
        .bind(cutoff)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            segments.0, 0,
            "segments that ended before the cutoff are gone"
        );
        assert!(segments.1 > 0, "a segment across the cutoff stays");
        assert!(counts.segments > 0);
    }
}

on_both_stores!(
    the_purge_keeps_the_index_of_what_it_keeps,
    index_answers_equal_brute_force,
    a_fix_between_two_close_intervals_is_not_skipped,
    a_late_fix_that_turns_a_long_segment_through_the_scene_is_found,
    a_key_sent_twice_in_one_group_is_indexed_as_stored,
    a_neighbour_beyond_an_islands_read_is_asked_for,
    a_late_neighbour_nearer_than_a_stored_one_is_the_one_linked,
    a_short_pass_between_two_far_ends_is_found,
    answers_name_matches_by_their_ids_whether_read_before_or_not
);

/// Two servers on one PostgreSQL database, taking turns with every device's fixes: each
/// server remembers the newest fixes it wrote (so its segment indexer need not read them),
/// and must notice the other's writes in between, and a retention purge's, or it would link
/// a new fix to a fix that is no longer the one before it and miss the segment between
/// them. Answers equal brute force over every stored fix.
#[tokio::test]
async fn two_postgres_servers_taking_turns_with_each_device_index_every_segment() {
    let (url, _guard) = fresh_database(Backend::Postgres).await;
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let mut rng = StdRng::seed_from_u64(0x25e7);
    let (mut on_time, late) = tracks(&wearers(&a).await, &mut rng);
    // time-major, as a fleet sends them: each group holds a minute or two of every device
    on_time.sort_by_key(|r| (r.ts, r.device_pk));
    for (i, group) in on_time.chunks(DEVICES * 3 / 2).enumerate() {
        let server = if i % 3 == 2 { &b } else { &a };
        server.insert_fixes(group).await.unwrap();
    }
    // a purge (of nothing here) is a writer of fixes too
    a.purge_fixes_before(T0 - 3_600_000_000).await.unwrap();
    for (i, group) in late.chunks(7).enumerate() {
        let server = if i % 2 == 0 { &b } else { &a };
        server.insert_fixes(group).await.unwrap();
    }
    let all: Vec<QFix> = on_time
        .iter()
        .chain(&late)
        .filter_map(FixRow::qfix)
        .collect();
    let (matches, interpolated) = compare_scenes(&a, &all, &mut rng, 150).await;
    assert!(matches > 40, "only {matches} matches");
    assert!(interpolated > 2, "only {interpolated} interpolated matches");

    // The case in one device: a stores X, b stores Y, a stores Z, two minutes apart at
    // the corners of a 2 km triangle. Only the segment Y→Z passes the scene; were `a` to
    // take X for Z's neighbour it would index X→Z, which does not.
    let (subject_pk, device_pk) = common::wearer(&a, DEVICES, T0).await;
    let frame = LocalFrame::new(CENTRE);
    let t = T0 + (MINUTES + 60) * MINUTE_US;
    let corner = |i: i64, x: f64, y: f64| {
        fix_row(
            device_pk,
            Some(subject_pk),
            t + 2 * i * MINUTE_US,
            Some(frame.to_latlon(x, y)),
            5.0,
        )
    };
    let triangle = [
        corner(0, 0.0, 0.0),
        corner(1, 2000.0, 0.0),
        corner(2, 1000.0, 2000.0),
    ];
    for (row, server) in triangle.iter().zip([&a, &b, &a]) {
        server
            .insert_fixes(std::slice::from_ref(row))
            .await
            .unwrap();
    }
    let scene = SceneQuery {
        center: frame.to_latlon(1500.0, 1000.0),
        radius_m: 60.0,
        from_us: t + 2 * MINUTE_US,
        to_us: t + 4 * MINUTE_US,
    };
    let cfg = QueryConfig::default();
    let fixes: Vec<QFix> = triangle.iter().filter_map(FixRow::qfix).collect();
    let want = scene_matches(&fixes, &scene, &cfg);
    assert!(
        want.iter().any(|m| m.method == MatchMethod::Interpolated),
        "{want:?}"
    );
    assert_eq!(index_answer(&a, &scene, &cfg).await, want);
}

/// The store's PostgreSQL sessions run without JIT compilation: a 500 m / 24 h scene read at
/// 10 M fixes costs enough in the planner's eyes to be compiled, which took far longer than
/// running it (DECISIONS "PostgreSQL sessions run without JIT"). The setting must hold on
/// every pooled session, whatever the server's default.
#[tokio::test]
async fn postgres_store_sessions_run_without_jit() {
    let (url, _guard) = fresh_database(Backend::Postgres).await;
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let server_default: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(
        server_default, "on",
        "the test server's default, which the store overrides"
    );
    let store = Store::connect(&url).await.unwrap();
    let Store::Postgres(pg) = &store else {
        panic!("a PostgreSQL URL opens the PostgreSQL store")
    };
    // several sessions at once, so that more than one pooled connection is checked
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(pg.pool().acquire().await.unwrap());
    }
    for conn in &mut sessions {
        let jit: String = sqlx::query_scalar("SHOW jit")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(jit, "off");
    }
}
