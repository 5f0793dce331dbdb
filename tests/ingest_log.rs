//! The SQLite ingest log and its tail (src/store/sqlite_tail.rs), through the library's store
//! API and the server: every read gives the same answer whether the fixes are still in the
//! tail, already compacted into the table, or split between the two; a fix is a duplicate
//! wherever its first copy is, across a restart too; and the ingest writer compacts the tail
//! by itself. The library scenarios run on PostgreSQL as well, where there is no tail and the
//! same answers are expected; location-at-time's are also worked out by hand from the rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fresh_database, ping, spawn_app_with, Backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use tagwatch::geodesy::{LatLon, LocalFrame};
use tagwatch::model::fix::received_after;
use tagwatch::query::at_time::location_at_time;
use tagwatch::query::{QFix, QueryConfig};
use tagwatch::store::{FixRow, Store};

const MINUTE_US: i64 = 60_000_000;
const T0: i64 = 1_719_705_600_000_000;
const CENTRE: LatLon = LatLon::new(51.5074, -0.1278);
const WEARERS: usize = 5;
const MINUTES: i64 = 240;

/// Subjects and devices `0..WEARERS`; device 0 is moved to subject 1 halfway (fixes keep
/// their own subject). Returns (subject pk, device pk) per wearer.
async fn wearers(store: &Store) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for i in 0..WEARERS {
        out.push(common::wearer(store, i, T0).await);
    }
    store
        .reassign_device(out[0].1, out[1].0, T0 + MINUTES / 2 * MINUTE_US)
        .await
        .unwrap();
    out
}

/// One fix a minute per wearer with gaps, a few without a position; device 0's second half
/// belongs to subject 1.
fn track(wearers: &[(i64, i64)], rng: &mut StdRng) -> Vec<FixRow> {
    let frame = LocalFrame::new(CENTRE);
    let mut rows = Vec::new();
    for (i, &(subject_pk, device_pk)) in wearers.iter().enumerate() {
        let (mut x, mut y) = (0.0_f64, 0.0_f64);
        let mut m = 0;
        while m < MINUTES {
            m += if rng.gen_bool(0.05) {
                rng.gen_range(4..12)
            } else {
                1
            };
            x += rng.gen_range(-120.0..120.0);
            y += rng.gen_range(-120.0..120.0);
            let pos = (!rng.gen_bool(0.05)).then(|| frame.to_latlon(x, y));
            let subject = if i == 0 && m >= MINUTES / 2 {
                wearers[1].0
            } else {
                subject_pk
            };
            rows.push(FixRow {
                accuracy_m: Some(rng.gen_range(3.0..30.0)),
                battery_pct: Some(50.0),
                ..FixRow::at(device_pk, Some(subject), T0 + m * MINUTE_US, pos)
            });
        }
    }
    rows
}

/// Everything the store answers about the fixes, through every read path that touches them.
#[derive(Debug, PartialEq)]
struct Reads {
    count: i64,
    device_fixes: Vec<Vec<FixRow>>,
    newest: Vec<Option<(i64, i64)>>,
    trails: Vec<Vec<FixRow>>,
    at_time: Vec<String>,
}

async fn reads(store: &Store, wearers: &[(i64, i64)]) -> Reads {
    let mut r = Reads {
        count: store.count_fixes().await.unwrap(),
        device_fixes: Vec::new(),
        newest: Vec::new(),
        trails: Vec::new(),
        at_time: Vec::new(),
    };
    let cfg = QueryConfig::default();
    for (i, &(subject_pk, device_pk)) in wearers.iter().enumerate() {
        r.device_fixes.push(
            store
                .device_fixes(device_pk, T0 + 30 * MINUTE_US, T0 + 200 * MINUTE_US)
                .await
                .unwrap(),
        );
        r.newest.push(store.newest_fix(device_pk).await.unwrap());
        // the whole trail, in pages of 37
        let mut tx = store.begin_lawful().await.unwrap();
        let mut trail: Vec<FixRow> = Vec::new();
        loop {
            let after = trail.last().map(|f| (f.ts, f.device_pk));
            let page = tx
                .trail_page(subject_pk, T0, T0 + MINUTES * MINUTE_US, after, 37)
                .await
                .unwrap();
            let done = page.len() < 37;
            trail.extend(page);
            if done {
                break;
            }
        }
        r.trails.push(trail);
        for at in at_times() {
            let read = tx
                .at_time(&format!("S-{i}"), at)
                .await
                .unwrap()
                .expect("a stored subject");
            assert_eq!(read.subject_pk, subject_pk);
            let devices: std::collections::BTreeMap<_, _> = read.devices.into_iter().collect();
            r.at_time.push(format!(
                "{:?} {devices:?}",
                location_at_time(&read.fixes, at, &cfg)
            ));
        }
        tx.commit().await.unwrap();
    }
    r
}

/// The instants location-at-time is asked at: every 20 minutes, on the minute (where most
/// wearers have a fix) and 17 s past it.
fn at_times() -> impl Iterator<Item = i64> {
    (0..12).flat_map(|k| [0, 17_000_000].map(|s| T0 + k * 20 * MINUTE_US + s))
}

/// Location-at-time as [`reads`] formats it, from the rows themselves: the maths over every
/// positioned fix attributed to subject `i`.
fn at_time_by_hand(rows: &[FixRow], wearers: &[(i64, i64)], i: usize, at: i64) -> String {
    let cfg = QueryConfig::default();
    let mut picked: Vec<FixRow> = rows
        .iter()
        .filter(|r| r.subject_pk == Some(wearers[i].0) && r.lat_e7.is_some())
        .cloned()
        .collect();
    picked.sort_by_key(|r| (r.device_pk, r.ts));
    let fixes: Vec<QFix> = picked.iter().filter_map(FixRow::qfix).collect();
    let devices: std::collections::BTreeMap<i64, String> = picked
        .iter()
        .map(|r| {
            let j = wearers.iter().position(|w| w.1 == r.device_pk).unwrap();
            (r.device_pk, format!("D-{j}"))
        })
        .collect();
    format!("{:?} {devices:?}", location_at_time(&fixes, at, &cfg))
}

async fn reads_agree_wherever_the_fixes_are(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let wearers = wearers(&store).await;
    let mut rng = StdRng::seed_from_u64(0x7a11);
    let rows = track(&wearers, &mut rng);
    // every third row arrives late, after the rest
    let late: Vec<FixRow> = rows.iter().step_by(3).cloned().collect();
    let on_time: Vec<FixRow> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, r)| r.clone())
        .collect();
    for chunk in on_time.chunks(113) {
        store.insert_fixes(chunk).await.unwrap();
    }
    store.compact_all().await.unwrap();
    for chunk in late.chunks(71) {
        store.insert_fixes(chunk).await.unwrap();
    }
    let mixed = reads(&store, &wearers).await;
    store.compact_all().await.unwrap();
    let compacted = reads(&store, &wearers).await;
    assert_eq!(mixed, compacted);
    let by_hand: Vec<String> = (0..wearers.len())
        .flat_map(|i| at_times().map(move |at| (i, at)))
        .map(|(i, at)| at_time_by_hand(&rows, &wearers, i, at))
        .collect();
    assert_eq!(
        mixed.at_time, by_hand,
        "location-at-time as the rows give it"
    );

    // and the answers are the rows themselves, not merely the same twice
    assert_eq!(mixed.count, rows.len() as i64);
    let mut want: Vec<FixRow> = rows
        .iter()
        .filter(|r| {
            r.device_pk == wearers[2].1
                && (T0 + 30 * MINUTE_US..=T0 + 200 * MINUTE_US).contains(&r.ts)
        })
        .cloned()
        .collect();
    want.sort_by_key(|r| r.ts);
    assert_eq!(mixed.device_fixes[2], want);
    let subject_1: Vec<i64> = rows
        .iter()
        .filter(|r| r.subject_pk == Some(wearers[1].0) && r.ts <= T0 + MINUTES * MINUTE_US)
        .map(|r| r.ts)
        .collect();
    let mut trail_1: Vec<i64> = mixed.trails[1].iter().map(|r| r.ts).collect();
    assert_eq!(
        trail_1.len(),
        subject_1.len(),
        "subject 1's trail spans two devices"
    );
    trail_1.dedup();
    assert!(
        trail_1.windows(2).all(|w| w[0] <= w[1]),
        "trail in time order"
    );
    assert!(
        mixed
            .at_time
            .iter()
            .filter(|e| e.contains("Observed") || e.contains("Interpolated"))
            .count()
            > 20,
        "{:?}",
        mixed.at_time
    );

    // all in the tail (a fresh store, nothing compacted) reads the same again
    let (url2, _guard2) = fresh_database(backend).await;
    let store2 = Store::connect(&url2).await.unwrap();
    let wearers2 = self::wearers(&store2).await;
    assert_eq!(wearers2, wearers);
    for chunk in on_time.chunks(113).chain(late.chunks(71)) {
        store2.insert_fixes(chunk).await.unwrap();
    }
    assert_eq!(reads(&store2, &wearers).await, compacted);
}

async fn a_fix_is_a_duplicate_wherever_its_first_copy_is(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    let wearers = wearers(&store).await;
    let mut rng = StdRng::seed_from_u64(0xd0b1);
    let rows = track(&wearers, &mut rng);
    let (first, second) = rows.split_at(rows.len() / 2);
    assert!(store.insert_fixes(first).await.unwrap().iter().all(|s| *s));
    // in the tail
    assert!(store.insert_fixes(first).await.unwrap().iter().all(|s| !*s));
    store.compact_all().await.unwrap();
    // in the table
    assert!(store.insert_fixes(first).await.unwrap().iter().all(|s| !*s));
    // a group mixing new fixes, fixes in the table and fixes in the tail
    let stored = store.insert_fixes(second).await.unwrap();
    assert!(stored.iter().all(|s| *s));
    let mixed: Vec<FixRow> = first
        .iter()
        .step_by(5)
        .chain(second.iter().step_by(7))
        .cloned()
        .collect();
    assert!(store
        .insert_fixes(&mixed)
        .await
        .unwrap()
        .iter()
        .all(|s| !*s));
    // after a restart, with the second half still in the ingest log only
    drop(store);
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.count_fixes().await.unwrap(), rows.len() as i64);
    assert!(store
        .insert_fixes(second)
        .await
        .unwrap()
        .iter()
        .all(|s| !*s));
    assert!(store.insert_fixes(first).await.unwrap().iter().all(|s| !*s));
    let mut read_back = Vec::new();
    for &(_, device_pk) in &wearers {
        read_back.extend(store.device_fixes(device_pk, 0, i64::MAX).await.unwrap());
    }
    let mut want = rows.clone();
    want.sort_by_key(|r| (r.device_pk, r.ts));
    assert_eq!(read_back, want, "each fix once, as written");
    store.compact_all().await.unwrap();
    assert_eq!(store.count_fixes().await.unwrap(), rows.len() as i64);
}

on_both_stores!(
    reads_agree_wherever_the_fixes_are,
    a_fix_is_a_duplicate_wherever_its_first_copy_is
);

/// A positioned fix at `ts` near 51.5 N 0.12 W, `north_e7` × 10⁻⁷ degrees further north.
fn fix_near_centre(device_pk: i64, subject_pk: i64, ts: i64, north_e7: i32) -> FixRow {
    let pos = LatLon::new(51.5 + f64::from(north_e7) / 1e7, -0.12);
    FixRow {
        accuracy_m: Some(5.0),
        ..FixRow::at(device_pk, Some(subject_pk), ts, Some(pos))
    }
}

/// Counts rows of `table` in the app's SQLite file, behind the server's back.
async fn rows_in(url: &str, table: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// The server's ingest writer compacts the tail by itself once it holds `compact_rows`
/// fixes: the table fills, the log empties, and the API reads the same trail throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_ingest_writer_compacts_the_tail() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.compact_rows = 400).await;
    let (officer_id, officer) = app.user("officer", "officer").await;
    app.subject("S-1", Some(officer_id)).await;
    let device = app.device("D-1", "S-1").await;
    let start = chrono::Utc::now() - chrono::Duration::hours(3);
    let total = 1_500;
    for batch in 0..(total / 100) {
        let pings: Vec<Value> = (0..100)
            .map(|i| {
                let t = start + chrono::Duration::seconds(((batch * 100 + i) * 5) as i64);
                let lat = 51.5 + f64::from(i) * 1e-5;
                ping("D-1", &t.to_rfc3339(), lat, -0.12)
            })
            .collect();
        let (s, v) = app.post_pings(&device, Value::Array(pings)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["accepted"], 100, "{v}");
    }
    // the writer runs compaction steps between groups and, idle, once a second
    let mut waited = 0;
    while rows_in(&app.database_url, "fixes").await < 1_200 {
        waited += 1;
        assert!(waited < 100, "the tail was not compacted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        rows_in(&app.database_url, "fix_log").await < (total / 100) as i64,
        "compaction deletes the log rows it covered"
    );
    let from = start.to_rfc3339();
    let to = (start + chrono::Duration::hours(4)).to_rfc3339();
    let query = serde_urlencoded::to_string([
        ("from", from.as_str()),
        ("to", to.as_str()),
        ("limit", "1000"),
    ])
    .unwrap();
    let path = format!("/v1/subjects/S-1/trail?{query}");
    let mut seen = Vec::new();
    let mut next = path.clone();
    loop {
        let (status, v) = app.get(&next, &officer).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        seen.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["ts"].clone()),
        );
        // each receipt time a whole number of milliseconds after its fix's time, from the
        // tail and from the table alike
        for f in v["items"].as_array().unwrap() {
            let at = |k: &str| {
                chrono::DateTime::parse_from_rfc3339(f[k].as_str().unwrap())
                    .unwrap()
                    .timestamp_micros()
            };
            let lag = at("received_at") - at("ts");
            assert!(lag > 0 && lag % 1_000 == 0, "{f}");
        }
        match v["next_cursor"].as_str() {
            Some(c) => next = format!("{path}&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        total as usize,
        "every fix once, table and tail together"
    );
}

/// Under sustained ingest compaction keeps pace: after each group the writer's upkeep
/// (`Store::maintain`) moves at least as many fixes as arrived while the tail is over its
/// limit, so the tail (memory) stays within the limit, a group and a chunk. One chunk of
/// 2,048 per group, as it first was, let it grow by every group's excess without bound
/// (43,472 fixes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_compaction_keeps_pace_with_sustained_ingest() {
    let (url, _guard) = fresh_database(Backend::Sqlite).await;
    let options = tagwatch::store::StoreOptions {
        compact_rows: 5_000,
    };
    let store = Store::connect_with(&url, &options).await.unwrap();
    let wearers = wearers(&store).await;
    let (subject_pk, device_pk) = wearers[2];
    let group = 3_000;
    let mut total = 0_i64;
    let (mut largest_tail, mut largest_before) = (0, 0);
    for g in 0..40 {
        let rows: Vec<FixRow> = (0..group)
            .map(|i| {
                let ts = T0 + (g * group + i) * 1_000_000;
                fix_near_centre(device_pk, subject_pk, ts, i as i32)
            })
            .collect();
        assert!(store.insert_fixes(&rows).await.unwrap().iter().all(|s| *s));
        total += group;
        let before = total - rows_in(&url, "fixes").await;
        largest_before = largest_before.max(before);
        store.maintain(rows.len()).await.unwrap();
        let tail = total - rows_in(&url, "fixes").await;
        largest_tail = largest_tail.max(tail);
    }
    assert!(
        largest_tail <= 5_000 + group + 2_048,
        "the tail grew to {largest_tail} fixes"
    );
    assert!(
        largest_before > 5_000,
        "the tail never went over its limit ({largest_before}): nothing was tested"
    );
    assert_eq!(store.count_fixes().await.unwrap(), total);
}

/// A writer that cannot get its turn fails as unavailable rather than waiting for ever: an
/// audited transaction left open holds SQLite's write gate, and a group commit behind it
/// gives up after the busy timeout (10 s), as it did on SQLite's own lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_writer_behind_a_stuck_transaction_fails_as_unavailable() {
    let (url, _guard) = fresh_database(Backend::Sqlite).await;
    let store = Store::connect(&url).await.unwrap();
    let (subject_pk, device_pk) = common::wearer(&store, 1, T0).await;
    let row = fix_near_centre(device_pk, subject_pk, T0, 0);
    let stuck = store.begin_lawful().await.unwrap();
    let attempt = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.insert_fixes(std::slice::from_ref(&row)),
    )
    .await
    .expect("the writer waited for ever");
    let err = attempt.expect_err("written past an open audited transaction");
    assert!(err.is_unavailable(), "{err}");
    drop(stuck);
    assert_eq!(store.insert_fixes(&[row]).await.unwrap(), [true]);
}

/// A SQLite file written before migration 7 (which keeps `received_at`'s lag after `ts` in
/// whole milliseconds, not microseconds): every lag is rounded half up, as ingest now
/// rounds it (`received_after`), negative lags (a fix stamped ahead of the server's clock)
/// and exact halves included.
#[tokio::test]
async fn sqlite_lags_kept_in_microseconds_before_migration_7_read_back_to_the_millisecond() {
    let (url, _guard) = fresh_database(Backend::Sqlite).await;
    let pool = common::sqlite_migrated_up_to(&url, 6).await;
    for insert in [
        "INSERT INTO subjects (pk, id, timezone, created_at) VALUES (1, 'S-1', 'Europe/London', 0)",
        "INSERT INTO devices (pk, id, subject_pk, created_at) VALUES (1, 'D-1', 1, 0)",
        "INSERT INTO device_assignments (device_pk, subject_pk, from_us) VALUES (1, 1, 0)",
    ] {
        sqlx::query(insert).execute(&pool).await.unwrap();
    }
    let lags_us: [i64; 14] = [
        -86_400_000_001,
        -1_500,
        -1_499,
        -501,
        -500,
        -499,
        0,
        499,
        500,
        1_499,
        1_500,
        2_000_123,
        259_200_000_000,
        259_200_000_500,
    ];
    let mut want = Vec::new();
    for (i, lag) in lags_us.iter().enumerate() {
        let ts = T0 + i as i64 * MINUTE_US + 123;
        sqlx::query(
            "INSERT INTO fixes (device_pk, ts, subject_pk, lat_e7, lon_e7, source, flags, \
             received_lag_us) VALUES (1, ?, 1, 515000000, -1000000, 1, 0, ?)",
        )
        .bind(ts)
        .bind(lag)
        .execute(&pool)
        .await
        .unwrap();
        want.push((ts, received_after(ts, ts + lag)));
    }
    pool.close().await;

    let store = Store::connect(&url).await.unwrap();
    let got: Vec<(i64, i64)> = store
        .device_fixes(1, i64::MIN, i64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|f| (f.ts, f.received_at))
        .collect();
    assert_eq!(got, want);
    // half up: −1.5 ms → −1 ms, −0.5 ms → 0, 0.5 ms → 1 ms, 1.5 ms → 2 ms
    let ms = |i: usize| (got[i].1 - got[i].0) / 1_000;
    assert_eq!(
        [
            ms(1),
            ms(2),
            ms(3),
            ms(4),
            ms(5),
            ms(7),
            ms(8),
            ms(10),
            ms(13)
        ],
        [-1, -1, -1, 0, 0, 0, 1, 2, 259_200_001]
    );
}
