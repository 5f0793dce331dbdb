//! Lawful-query latency in process over a large store (issue #4): a 500 m / 24 h
//! crime-scene query and a location-at-time query, each the whole audited path the API runs
//! (index reads, exact maths, id lookups, audit append and its commit; SQLite wraps them in
//! one transaction, PostgreSQL runs them as statements, see `Store::scene_audited`), on
//! SQLite and PostgreSQL, with p50/p95/p99 printed beside criterion's estimates, and the
//! same percentiles for each phase of the path (crime-scene: `cover`, then one call:
//! `lookup` (reads, maths, ids) and `audit+commit`; location-at-time, one call: `begin+read`,
//! `maths`, `audit+commit`), so a figure says where its milliseconds went.
//!
//! The dataset: 2,000 devices (one subject each), one fix a minute, London-wide random walks
//! (90 % walking at ~1.3 m/s, 10 % in vehicles at ~8 m/s, whose minute-long segments are
//! often long enough for the coarse segment index), inserted through `Store::insert_fixes`
//! in time-major batches of five minutes (10,000 fixes) like live ingest. It is built once
//! and reused: SQLite in `target/bench-data/`, PostgreSQL in database `tw_bench_<fixes>`.
//!
//! ```sh
//! cargo bench --bench query                                  # 10 M fixes (slow first build)
//! TAGWATCH_BENCH_FIXES=1000000 cargo bench --bench query     # quick
//! TAGWATCH_BENCH_BACKENDS=sqlite cargo bench --bench query   # one store
//! ```
//! PostgreSQL: `TAGWATCH_BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! names a server and a database to connect to while creating the bench database, and
//! `TAGWATCH_BENCH_PG_DB` (letters, digits and `_`; default `tw_bench_<fixes>`) the bench
//! database itself: two builds whose migrations differ each need their own to be compared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tagwatch::audit::chain::AuditDraft;
use tagwatch::geodesy::{LatLon, LocalFrame};
use tagwatch::model::fix::hundredths;
use tagwatch::query::at_time::location_at_time;
use tagwatch::query::cells::scene_cover;
use tagwatch::query::scene::SceneQuery;
use tagwatch::query::QueryConfig;
use tagwatch::store::{FixRow, NewSubject, Store, Upkeep};

const DEVICES: usize = 2_000;
const MINUTE_US: i64 = 60_000_000;
/// The last fix time: 2024-06-30T00:00:00Z.
const END_US: i64 = 1_719_705_600_000_000;
const LONDON: LatLon = LatLon::new(51.5074, -0.1278);
const BATCH_MINUTES: i64 = 5;
/// Latency samples per query kind for the percentiles.
const SAMPLES: usize = 2_000;

struct Data {
    store: Store,
    backend: &'static str,
    minutes: i64,
    /// (subject_pk) of every subject
    subjects: Vec<String>,
}

fn fixes_wanted() -> usize {
    std::env::var("TAGWATCH_BENCH_FIXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

struct Walker {
    pos: LatLon,
    heading: f64,
    speed_mps: f64,
}

async fn open(backend: &'static str, fixes: usize) -> Data {
    let minutes = (fixes / DEVICES) as i64;
    let (url, fresh) = match backend {
        "sqlite" => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("query-{fixes}.db"));
            let fresh = !path.exists();
            (format!("sqlite://{}", path.display()), fresh)
        }
        _ => {
            let base = std::env::var("TAGWATCH_BENCH_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let name = std::env::var("TAGWATCH_BENCH_PG_DB")
                .unwrap_or_else(|_| format!("tw_bench_{fixes}"));
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "TAGWATCH_BENCH_PG_DB: letters, digits and _ only"
            );
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
                .await
                .expect("PostgreSQL for the bench");
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            if !exists {
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            let (prefix, _) = base.rsplit_once('/').unwrap();
            (format!("{prefix}/{name}"), !exists)
        }
    };
    let store = Store::connect(&url).await.unwrap();
    let have = store.count_fixes().await.unwrap();
    if !fresh && have as usize >= minutes as usize * DEVICES {
        let subjects = subject_ids(&store).await;
        eprintln!("[{backend}] reusing {have} fixes at {url}");
        return Data {
            store,
            backend,
            minutes,
            subjects,
        };
    }
    assert_eq!(
        have, 0,
        "[{backend}] a partial dataset at {url}: delete it and rerun"
    );
    build(&store, backend, minutes).await;
    let subjects = subject_ids(&store).await;
    Data {
        store,
        backend,
        minutes,
        subjects,
    }
}

async fn subject_ids(store: &Store) -> Vec<String> {
    store
        .subjects()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

async fn build(store: &Store, backend: &str, minutes: i64) {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x7a6_3a7c4);
    let frame = LocalFrame::new(LONDON);
    let mut devices = Vec::with_capacity(DEVICES);
    let mut walkers = Vec::with_capacity(DEVICES);
    for i in 0..DEVICES {
        let s = store
            .create_subject(&NewSubject {
                id: format!("GTO-{i:05}"),
                display_name: None,
                borough: None,
                officer_id: None,
                timezone: "Europe/London".into(),
            })
            .await
            .unwrap();
        let d = store
            .create_device(&format!("TAG-{i:05}"), s.pk, END_US - minutes * MINUTE_US)
            .await
            .unwrap();
        devices.push((d.pk, s.pk));
        let r = 20_000.0 * rng.gen::<f64>().sqrt();
        let th = rng.gen_range(0.0..std::f64::consts::TAU);
        walkers.push(Walker {
            pos: frame.to_latlon(r * th.cos(), r * th.sin()),
            heading: rng.gen_range(0.0..std::f64::consts::TAU),
            speed_mps: if i % 10 == 0 { 8.0 } else { 1.3 },
        });
    }
    let start = END_US - (minutes - 1) * MINUTE_US;
    let mut batch = Vec::with_capacity(DEVICES * BATCH_MINUTES as usize);
    let mut minute = 0;
    while minute < minutes {
        batch.clear();
        for m in minute..(minute + BATCH_MINUTES).min(minutes) {
            let ts = start + m * MINUTE_US;
            for (w, &(device_pk, subject_pk)) in walkers.iter_mut().zip(&devices) {
                let (x, y) = frame.to_xy(w.pos);
                // keep inside ~25 km of the centre: turn home when outside
                w.heading = if x.hypot(y) > 25_000.0 {
                    (-y).atan2(-x)
                } else {
                    w.heading + rng.gen_range(-0.6..0.6)
                };
                let step = w.speed_mps * 60.0 * rng.gen_range(0.3..1.3);
                let here = LocalFrame::new(w.pos);
                w.pos = here.to_latlon(step * w.heading.cos(), step * w.heading.sin());
                batch.push(FixRow {
                    // as ingest keeps it (to the centimetre)
                    accuracy_m: Some(hundredths(rng.gen_range(4.0..15.0))),
                    speed_mps: Some(w.speed_mps as f32),
                    battery_pct: Some(80.0),
                    received_at: ts + 2_000_000,
                    ..FixRow::at(device_pk, Some(subject_pk), ts, Some(w.pos))
                });
            }
        }
        store.insert_fixes(&batch).await.unwrap();
        // what the server's ingest writer does between groups (SQLite: compaction of the
        // ingest log's tail, once due)
        while store.maintain(batch.len()).await.unwrap() != Upkeep::Idle {}
        minute += BATCH_MINUTES;
        if minute % (BATCH_MINUTES * 200) == 0 {
            eprintln!(
                "[{backend}] {} fixes stored, {:.0} s",
                minute.min(minutes) as usize * DEVICES,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    // the queries below read the table (the tail they would merge is empty)
    store.compact_all().await.unwrap();
    // planner statistics, as an operator would have after autovacuum / `PRAGMA optimize`
    match store {
        Store::Sqlite(s) => {
            sqlx::query("ANALYZE").execute(s.pool()).await.unwrap();
        }
        Store::Postgres(s) => {
            sqlx::query("VACUUM ANALYZE")
                .execute(s.pool())
                .await
                .unwrap();
        }
    }
    eprintln!(
        "[{backend}] built {} fixes in {:.0} s",
        minutes as usize * DEVICES,
        t0.elapsed().as_secs_f64()
    );
}

fn draft(action: &str) -> AuditDraft {
    AuditDraft {
        id: 0,
        at_us: tagwatch::model::time::now_micros(),
        actor: 1,
        actor_name: "bench analyst".into(),
        role: "analyst".into(),
        action: action.into(),
        parameters: serde_json::json!({}),
        justification: Some(
            serde_json::json!({"crime_ref": "B-1", "legal_basis": "bench", "reason": "bench"}),
        ),
        subject_ids: vec![],
        result_count: 0,
    }
}

/// Time spent in each phase of the audited path, one sample per query.
#[derive(Default)]
struct Phases(Vec<(&'static str, Vec<Duration>)>);

impl Phases {
    /// Records the time since `*t` under `name` and restarts `*t`.
    fn lap(&mut self, name: &'static str, t: &mut Instant) {
        let now = Instant::now();
        let d = now - *t;
        *t = now;
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(d),
            None => self.0.push((name, vec![d])),
        }
    }

    fn report(self, backend: &str, what: &str) {
        for (name, v) in self.0 {
            let mean = v.iter().sum::<Duration>().as_secs_f64() * 1e3 / v.len() as f64;
            eprintln!(
                "[{backend}] {what} {name:>12}: mean {mean:.3} ms, {}",
                percentiles(v)
            );
        }
    }
}

/// The crime-scene path of `POST /v1/queries/crime-scene` after validation, one audited
/// call (`Store::scene_audited`), timed in three phases: the cover, the lookup (up to the
/// matches and their ids), and the audit append with the commit. Returns matches.
async fn crime_scene(
    store: &Store,
    scene: &SceneQuery,
    cfg: &QueryConfig,
    phases: &mut Phases,
) -> usize {
    let mut t = Instant::now();
    let cover = scene_cover(scene.center, scene.radius_m).unwrap();
    phases.lap("cover", &mut t);
    let (matches, _) = store
        .scene_audited(&cover, scene, cfg, |found| {
            phases.lap("lookup", &mut t);
            let mut d = draft("query.crime_scene");
            d.result_count = found.matches.len() as i64;
            (d, found.matches.len())
        })
        .await
        .unwrap();
    phases.lap("audit+commit", &mut t);
    matches
}

/// The path of `POST /v1/queries/location-at-time` after validation: one audited read
/// (`Store::at_time_audited`), timed in three phases: up to the read's end (`begin+read`:
/// with `BEGIN IMMEDIATE` on SQLite; PostgreSQL's read begins nothing), the maths, and the
/// audit append with its commit.
async fn at_time(
    store: &Store,
    subject_id: &str,
    at: i64,
    cfg: &QueryConfig,
    phases: &mut Phases,
) -> bool {
    let mut t = Instant::now();
    let (_, est, _) = store
        .at_time_audited(subject_id, at, |read| {
            phases.lap("begin+read", &mut t);
            let read = read.expect("a stored subject");
            let est = location_at_time(&read.fixes, at, cfg);
            phases.lap("maths", &mut t);
            (draft("query.location_at_time"), est)
        })
        .await
        .unwrap();
    phases.lap("audit+commit", &mut t);
    est.lat.is_some()
}

fn random_scene(rng: &mut StdRng, data: &Data) -> SceneQuery {
    let frame = LocalFrame::new(LONDON);
    let r = 20_000.0 * rng.gen::<f64>().sqrt();
    let th = rng.gen_range(0.0..std::f64::consts::TAU);
    let span = data.minutes * MINUTE_US;
    let day = 24 * 60 * MINUTE_US;
    let from = END_US - span + rng.gen_range(0..(span - day).max(1));
    SceneQuery {
        center: frame.to_latlon(r * th.cos(), r * th.sin()),
        radius_m: 500.0,
        from_us: from,
        to_us: from + day,
    }
}

fn random_instant(rng: &mut StdRng, data: &Data) -> i64 {
    let span = data.minutes * MINUTE_US;
    END_US - span + rng.gen_range(0..span)
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n = {})",
        p(0.50).as_secs_f64() * 1e3,
        p(0.95).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fixes = fixes_wanted();
    let backends =
        std::env::var("TAGWATCH_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    let cfg = QueryConfig::default();
    for backend in ["sqlite", "postgres"] {
        if !backends.split(',').any(|b| b.trim() == backend) {
            continue;
        }
        let data = rt.block_on(open(backend, fixes));

        // Percentiles over a fixed seed of random scenes and instants.
        let mut rng = StdRng::seed_from_u64(42);
        let mut scene_lat = Vec::with_capacity(SAMPLES);
        let mut matched = 0;
        let mut at_lat = Vec::with_capacity(SAMPLES);
        let mut located = 0;
        let mut scene_phases = Phases::default();
        let mut at_phases = Phases::default();
        rt.block_on(async {
            for _ in 0..SAMPLES {
                let s = random_scene(&mut rng, &data);
                let t = Instant::now();
                matched += crime_scene(&data.store, &s, &cfg, &mut scene_phases).await;
                scene_lat.push(t.elapsed());
            }
            for _ in 0..SAMPLES {
                let subject = &data.subjects[rng.gen_range(0..data.subjects.len())];
                let at = random_instant(&mut rng, &data);
                let t = Instant::now();
                located +=
                    usize::from(at_time(&data.store, subject, at, &cfg, &mut at_phases).await);
                at_lat.push(t.elapsed());
            }
        });
        eprintln!(
            "[{}] {} fixes: crime-scene 500 m / 24 h, audited: {} ({:.1} matches per query)",
            data.backend,
            data.minutes as usize * DEVICES,
            percentiles(scene_lat),
            matched as f64 / SAMPLES as f64
        );
        eprintln!(
            "[{}] {} fixes: location-at-time, audited: {} ({} of {} located)",
            data.backend,
            data.minutes as usize * DEVICES,
            percentiles(at_lat),
            located,
            SAMPLES
        );

        scene_phases.report(data.backend, "crime-scene");
        at_phases.report(data.backend, "location-at-time");

        let mut group = c.benchmark_group(format!("query/{backend}"));
        group.sample_size(50);
        let mut rng = StdRng::seed_from_u64(7);
        group.bench_function("crime_scene_500m_24h", |b| {
            b.iter(|| {
                let s = random_scene(&mut rng, &data);
                rt.block_on(crime_scene(&data.store, &s, &cfg, &mut Phases::default()))
            })
        });
        let mut rng = StdRng::seed_from_u64(8);
        group.bench_function("location_at_time", |b| {
            b.iter(|| {
                let subject = &data.subjects[rng.gen_range(0..data.subjects.len())];
                let at = random_instant(&mut rng, &data);
                rt.block_on(at_time(
                    &data.store,
                    subject,
                    at,
                    &cfg,
                    &mut Phases::default(),
                ))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
