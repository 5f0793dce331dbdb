#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Compliance-engine throughput on one core: 10,000 subjects × 4 zones (12–60-vertex
//! polygons around London, fixed seed; one of the four is a 19:00–07:00 home curfew), one
//! tag per subject random-walking around its zones.
//!
//! - `apply`: the whole engine, `DeviceEngine::apply` of one fix (all rules, state, events);
//! - `classify/subject_scan`: the engine's geometry path (the subject's zones, envelope
//!   test, exact test);
//! - `classify/rtree`: the shared R-tree answers candidates (all subjects), filtered to the
//!   subject, exact test on those;
//! - `classify/brute_force` (baseline): exact test against every zone of the subject.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::hint::black_box;

use geo::{Coord, LineString, MultiPolygon, Polygon};
use tagwatch::engine::{
    Applied, Classification, Ctx, DeviceEngine, EngineConfig, EvalFix, Probe, ZoneDef, ZoneIndex,
    ZoneKind,
};
use tagwatch::geodesy::{LatLon, LocalFrame};
use tagwatch::model::geometry::Shape;
use tagwatch::model::schedule::Schedule;

const SUBJECTS: usize = 10_000;
const ZONES_PER_SUBJECT: usize = 4;
const ROUNDS: usize = 32;
const STEP_S: i64 = 10;
/// Monday 2026-01-12 08:00Z: daytime, the curfew inactive
const DAY_US: i64 = 1_768_204_800_000_000;
/// Monday 2026-01-12 19:00Z: the curfew active and every walker away from home (worst case:
/// every fix extends a curfew breach and yields an `Updated` event)
const NIGHT_US: i64 = 1_768_244_400_000_000;

fn star(rng: &mut StdRng, c: LatLon, n: usize, r_min: f64, r_max: f64) -> Shape {
    let f = LocalFrame::new(c);
    let mut pts: Vec<Coord<f64>> = (0..n)
        .map(|i| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            let r = rng.gen_range(r_min..r_max);
            let p = f.to_latlon(r * a.cos(), r * a.sin());
            Coord { x: p.lon, y: p.lat }
        })
        .collect();
    pts.push(pts[0]);
    Shape::Area(MultiPolygon::new(vec![Polygon::new(
        LineString::new(pts),
        vec![],
    )]))
}

struct World {
    index: ZoneIndex,
    config: EngineConfig,
    /// per subject: its home (walk centre)
    homes: Vec<LatLon>,
    /// `[round][subject]` positions and accuracies
    walk: Vec<Vec<(LatLon, f64)>>,
}

fn world() -> World {
    let mut rng = StdRng::seed_from_u64(2026);
    let curfew = serde_json::from_value::<Schedule>(serde_json::json!({"timezone":"Europe/London",
        "windows":[{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"19:00","end":"07:00"}]}))
    .expect("json")
    .compile()
    .expect("schedule");
    let mut zones = Vec::with_capacity(SUBJECTS * ZONES_PER_SUBJECT);
    let mut homes = Vec::with_capacity(SUBJECTS);
    for s in 0..SUBJECTS {
        let home = LatLon::new(rng.gen_range(51.30..51.68), rng.gen_range(-0.50..0.30));
        homes.push(home);
        let f = LocalFrame::new(home);
        for k in 0..ZONES_PER_SUBJECT {
            let id = (s * ZONES_PER_SUBJECT + k) as i64;
            let n = rng.gen_range(12..=60);
            let (kind, centre, shape, schedule) = if k == 0 {
                (
                    ZoneKind::Inclusion,
                    home,
                    star(&mut rng, home, n, 30.0, 80.0),
                    Some(curfew.clone()),
                )
            } else {
                let c = f.to_latlon(
                    rng.gen_range(-1500.0..1500.0),
                    rng.gen_range(-1500.0..1500.0),
                );
                (
                    ZoneKind::Exclusion,
                    c,
                    star(&mut rng, c, n, 100.0, 600.0),
                    None,
                )
            };
            let _ = centre;
            zones.push(ZoneDef {
                id,
                subject: s as i64,
                kind,
                shape,
                schedule,
                grace_s: if k == 1 { 60 } else { 0 },
                valid_from_us: 0,
                valid_to_us: None,
            });
        }
    }
    let index = ZoneIndex::build(zones);
    // random walks: 0–40 m steps, drifting around the home within ~2 km
    let mut pos: Vec<(f64, f64)> = vec![(0.0, 0.0); SUBJECTS];
    let mut walk = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let mut round = Vec::with_capacity(SUBJECTS);
        for (s, p) in pos.iter_mut().enumerate() {
            p.0 = (p.0 + rng.gen_range(-40.0..40.0)).clamp(-2000.0, 2000.0);
            p.1 = (p.1 + rng.gen_range(-40.0..40.0)).clamp(-2000.0, 2000.0);
            let ll = LocalFrame::new(homes[s]).to_latlon(p.0, p.1);
            round.push((ll, rng.gen_range(3.0..30.0)));
        }
        walk.push(round);
    }
    World {
        index,
        config: EngineConfig::default(),
        homes,
        walk,
    }
}

fn fix_at(w: &World, t0: i64, round: usize, subject: usize) -> EvalFix {
    let (pos, acc) = w.walk[round % ROUNDS][subject];
    let ts = t0 + round as i64 * STEP_S * 1_000_000;
    EvalFix {
        ts_us: ts,
        received_us: ts + 1_000_000,
        pos: Some(pos),
        accuracy_m: acc,
        tamper: Some(false),
        battery_pct: Some(80.0),
    }
}

fn bench(c: &mut Criterion) {
    let w = world();
    let _ = &w.homes;
    let absences = [];
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(SUBJECTS as u64));
    for (name, t0) in [("day", DAY_US), ("curfew_night", NIGHT_US)] {
        let mut engines: Vec<DeviceEngine> = (0..SUBJECTS).map(|_| DeviceEngine::new()).collect();
        let mut round = 0usize;
        let mut events = 0usize;
        g.bench_function(BenchmarkId::new("apply", name), |b| {
            b.iter(|| {
                for (s, eng) in engines.iter_mut().enumerate() {
                    let ctx = Ctx {
                        index: &w.index,
                        subject: s as i64,
                        absences: &absences,
                        config: &w.config,
                    };
                    match eng.apply(&[fix_at(&w, t0, round, s)], &ctx) {
                        Applied::Events(e) => events += e.len(),
                        Applied::NeedsReplay { .. } => unreachable!("in order"),
                    }
                }
                round += 1;
            })
        });
        let heap: usize = engines.iter().map(DeviceEngine::heap_bytes).sum();
        eprintln!(
            "{name}: {round} rounds ({:.1} h of fix time), {:.1} % of fixes gave an episode event; \
             size_of::<DeviceEngine>() = {} B, mean heap per device ≈ {} B",
            round as f64 * STEP_S as f64 / 3600.0,
            100.0 * events as f64 / (round * SUBJECTS) as f64,
            std::mem::size_of::<DeviceEngine>(),
            heap / SUBJECTS
        );
    }

    let probes: Vec<Vec<Probe>> = (0..ROUNDS)
        .map(|r| {
            (0..SUBJECTS)
                .map(|s| {
                    let f = fix_at(&w, DAY_US, r, s);
                    Probe::new(f.pos.unwrap_or(LatLon::new(0.0, 0.0)), f.accuracy_m)
                })
                .collect()
        })
        .collect();
    let mut r = 0usize;
    g.bench_function(BenchmarkId::new("classify", "subject_scan"), |b| {
        b.iter(|| {
            let mut n = 0u32;
            for (s, probe) in probes[r % ROUNDS].iter().enumerate() {
                let probe = Probe::new(probe.pos, probe.accuracy_m);
                for slot in w.index.subject_slots(s as i64) {
                    n += (w.index.classify(slot, &probe) != Classification::Outside) as u32;
                }
            }
            r += 1;
            black_box(n)
        })
    });
    g.bench_function(BenchmarkId::new("classify", "rtree"), |b| {
        b.iter(|| {
            let mut n = 0u32;
            for (s, probe) in probes[r % ROUNDS].iter().enumerate() {
                let probe = Probe::new(probe.pos, probe.accuracy_m);
                let mine = w.index.subject_slots(s as i64);
                for slot in w.index.candidates(&probe) {
                    if mine.contains(&slot) {
                        n += (w.index.classify(slot, &probe) != Classification::Outside) as u32;
                    }
                }
            }
            r += 1;
            black_box(n)
        })
    });
    g.bench_function(BenchmarkId::new("classify", "brute_force"), |b| {
        b.iter(|| {
            let mut n = 0u32;
            for (s, probe) in probes[r % ROUNDS].iter().enumerate() {
                let probe = Probe::new(probe.pos, probe.accuracy_m);
                for slot in w.index.subject_slots(s as i64) {
                    n += (w.index.classify_exhaustive(slot, &probe) != Classification::Outside)
                        as u32;
                }
            }
            r += 1;
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
