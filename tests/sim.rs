//! The fleet simulator's promises: deterministic for a seed, homes in their boroughs, normal
//! subjects clear of every zone boundary, every ground-truth breach witnessed by clear fixes,
//! late uploads, realistic speeds, pings the API accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use geo::MultiPolygon;
use tagwatch::geodesy::{distance_m, LatLon, LocalFrame};
use tagwatch::model::fix::{PingIn, TimeLimits};
use tagwatch::sim::shape::Shape;
use tagwatch::sim::{
    london, Fleet, FleetConfig, FleetPlan, Role, SimPing, SimSubject, TruthKind, ZoneKind,
    GTO_BOROUGHS, NORMAL_CLEARANCE_M, TIMEZONE,
};

fn start() -> DateTime<Utc> {
    // A Monday in June; two days with two curfew evenings.
    "2024-06-03T05:00:00Z".parse().expect("time")
}

fn config() -> FleetConfig {
    FleetConfig {
        seed: 7,
        subjects: 48,
        start: start(),
        duration: TimeDelta::days(2),
        interval_s: 60,
        breachers: 6,
        tamper_subjects: 2,
        low_battery_subjects: 2,
        ..FleetConfig::default()
    }
}

fn fleet() -> &'static Fleet {
    static F: OnceLock<Fleet> = OnceLock::new();
    F.get_or_init(|| Fleet::generate(config()).expect("fleet"))
}

fn by_subject(f: &Fleet) -> Vec<Vec<&SimPing>> {
    let mut v = vec![Vec::new(); f.subjects.len()];
    for p in &f.pings {
        v[p.subject as usize].push(p);
    }
    for t in &mut v {
        t.sort_by_key(|p| p.ts);
    }
    v
}

/// Zone geometry from its plan JSON, in a frame centred on the subject's home.
fn shape_of(s: &SimSubject, z: usize) -> Shape {
    let frame = LocalFrame::new(s.home);
    let g = &s.zones[z].geometry;
    match g["type"].as_str() {
        Some("Circle") => Shape::circle(
            &frame,
            LatLon::new(
                g["center"][1].as_f64().expect("lat"),
                g["center"][0].as_f64().expect("lon"),
            ),
            g["radius_m"].as_f64().expect("radius"),
        ),
        Some("Borough") => {
            let l = london().expect("geodata");
            let b = l
                .borough(g["name"].as_str().expect("name"))
                .expect("borough");
            Shape::area(&frame, &b.geometry)
        }
        Some("Polygon") => {
            let mp: MultiPolygon<f64> = tagwatch::sim::geodata::multipolygon(g).expect("polygon");
            Shape::area(&frame, &mp)
        }
        other => panic!("unexpected geometry {other:?}"),
    }
}

fn xy(s: &SimSubject, p: &SimPing) -> (f64, f64) {
    LocalFrame::new(s.home).to_xy(LatLon::new(p.lat, p.lon))
}

fn in_curfew(ts: DateTime<Utc>) -> bool {
    let h = ts.with_timezone(&TIMEZONE).hour();
    !(7..19).contains(&h)
}

#[test]
fn the_same_seed_gives_the_same_fleet_and_another_seed_does_not() {
    let small = FleetConfig {
        subjects: 6,
        duration: TimeDelta::hours(12),
        ..config()
    };
    let a = Fleet::generate(small.clone()).expect("a");
    let b = Fleet::generate(small.clone()).expect("b");
    assert_eq!(a.pings, b.pings);
    assert_eq!(a.truth, b.truth);
    assert_eq!(
        serde_json::to_value(&a.subjects).expect("json"),
        serde_json::to_value(&b.subjects).expect("json")
    );
    let c = Fleet::generate(FleetConfig {
        seed: small.seed + 1,
        ..small
    })
    .expect("c");
    assert_ne!(a.pings, c.pings);
}

#[test]
fn a_subject_is_the_same_whatever_the_fleet_size() {
    let plan = FleetPlan::new(FleetConfig {
        subjects: 12,
        ..config()
    })
    .expect("plan");
    let big = FleetPlan::new(config()).expect("plan");
    assert_eq!(plan.track(11).pings, big.track(11).pings);
}

#[test]
fn every_home_lies_inside_its_pilot_borough() {
    let l = london().expect("geodata");
    for s in &fleet().subjects {
        assert!(GTO_BOROUGHS.contains(&s.borough.as_str()), "{}", s.borough);
        let b = l.borough(&s.borough).expect("borough");
        assert!(b.contains(s.home), "{} home outside {}", s.id, s.borough);
    }
}

#[test]
fn zone_plans_have_a_curfew_and_one_to_three_exclusion_zones_one_of_them_a_borough() {
    let f = fleet();
    for s in &f.subjects {
        assert_eq!(s.zones[0].kind, ZoneKind::Inclusion);
        let sched = s.zones[0].schedule.as_ref().expect("curfew schedule");
        assert_eq!(sched["timezone"], "Europe/London");
        assert_eq!(sched["windows"][0]["start"], "19:00");
        assert_eq!(sched["windows"][0]["end"], "07:00");
        assert_eq!(
            sched["windows"][0]["days"].as_array().map(Vec::len),
            Some(7)
        );
        let r = s.zones[0].geometry["radius_m"].as_f64().expect("radius");
        assert!((50.0..=80.0).contains(&r));
        let excl = &s.zones[1..];
        assert!((1..=3).contains(&excl.len()), "{}: {}", s.id, excl.len());
        assert!(excl
            .iter()
            .all(|z| z.kind == ZoneKind::Exclusion && z.schedule.is_none()));
    }
    let borough = f.subjects[1].zones[1].geometry.clone();
    assert_eq!(borough["type"], "Borough");
    let name = borough["name"].as_str().expect("name");
    assert_ne!(name, f.subjects[1].borough);
    assert!(f
        .subjects
        .iter()
        .any(|s| s.zones.iter().any(|z| z.geometry["type"] == "Polygon")));
}

#[test]
fn normal_subjects_keep_clear_margins_and_cause_no_breach() {
    let f = fleet();
    let tracks = by_subject(f);
    let mut checked = 0;
    for (i, s) in f.subjects.iter().enumerate() {
        if matches!(
            s.role,
            Role::ExclusionBreacher { .. } | Role::CurfewBreacher
        ) {
            continue;
        }
        let shapes: Vec<Shape> = (0..s.zones.len()).map(|z| shape_of(s, z)).collect();
        let radius = s.zones[0].geometry["radius_m"].as_f64().expect("radius");
        for p in &tracks[i] {
            let q = xy(s, p);
            let acc = f64::from(p.accuracy_m);
            for shape in &shapes[1..] {
                let sd = shape.signed_distance(q);
                if p.spike {
                    assert!(sd > -acc, "{}: a spike classifies inside at {}", s.id, p.ts);
                } else {
                    assert!(
                        sd >= NORMAL_CLEARANCE_M + acc,
                        "{}: {} m from an exclusion zone at {} (accuracy {acc})",
                        s.id,
                        sd,
                        p.ts
                    );
                }
            }
            if in_curfew(p.ts) {
                let d = distance_m(s.home, LatLon::new(p.lat, p.lon));
                if p.spike {
                    assert!(
                        d - radius < acc,
                        "{}: a spike classifies outside at {}",
                        s.id,
                        p.ts
                    );
                } else {
                    assert!(
                        d + acc <= radius,
                        "{}: {d} m from home (r {radius}, acc {acc}) at {}",
                        s.id,
                        p.ts
                    );
                }
            }
            checked += 1;
        }
        let own: Vec<_> = f.truth.iter().filter(|t| t.subject == s.id).collect();
        match s.role {
            Role::Normal => assert!(own.is_empty(), "{}: {own:?}", s.id),
            Role::Tamper => {
                assert!(own.iter().all(|t| t.kind == TruthKind::Tamper) && !own.is_empty())
            }
            Role::LowBattery => {
                assert!(own.iter().all(|t| t.kind == TruthKind::BatteryLow) && !own.is_empty())
            }
            _ => {}
        }
        if s.role != Role::LowBattery {
            assert!(tracks[i].iter().all(|p| p.battery_pct >= 30.0), "{}", s.id);
        }
    }
    assert!(checked > 100_000, "{checked}");
}

#[test]
fn every_breach_in_the_ground_truth_is_witnessed_by_clear_fixes() {
    let f = fleet();
    let tracks = by_subject(f);
    let index: HashMap<&str, usize> = f
        .subjects
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut designed = 0;
    for (i, s) in f.subjects.iter().enumerate() {
        let own: Vec<_> = f.truth.iter().filter(|t| t.subject == s.id).collect();
        match s.role {
            Role::ExclusionBreacher { zone } => {
                designed += 1;
                assert!(
                    own.iter()
                        .any(|t| t.kind == TruthKind::ExclusionBreach && t.zone == Some(zone)),
                    "{}",
                    s.id
                );
            }
            Role::CurfewBreacher => {
                designed += 1;
                assert!(
                    own.iter()
                        .any(|t| t.kind == TruthKind::CurfewBreach && t.zone == Some(0)),
                    "{}",
                    s.id
                );
            }
            _ => {}
        }
        assert_eq!(s.device_id, f.subjects[i].device_id);
    }
    assert_eq!(designed, 6);
    let breaches: Vec<_> = f
        .truth
        .iter()
        .filter(|t| matches!(t.kind, TruthKind::ExclusionBreach | TruthKind::CurfewBreach))
        .collect();
    assert!(breaches.len() >= 6);
    for t in breaches {
        let i = index[t.subject.as_str()];
        let s = &f.subjects[i];
        let z = t.zone.expect("zone");
        let shape = shape_of(s, z);
        let end = t.end.expect("breaches end within the run");
        let clear = tracks[i]
            .iter()
            .filter(|p| p.ts >= t.start && p.ts < end)
            .filter(|p| {
                let sd = shape.signed_distance(xy(s, p));
                let acc = f64::from(p.accuracy_m);
                match t.kind {
                    TruthKind::ExclusionBreach => sd <= -(acc + 20.0),
                    _ => sd >= acc + 20.0 && in_curfew(p.ts),
                }
            })
            .count();
        assert!(clear >= 2, "{t:?}: {clear} clear fixes");
        assert_eq!(clear, t.witnesses, "{t:?}");
        // The episode opens at a fix, and the fix that ends it classifies the other way.
        assert!(tracks[i].iter().any(|p| p.ts == t.start));
    }
}

#[test]
fn tamper_and_low_battery_episodes_open_and_close() {
    let f = fleet();
    for kind in [TruthKind::Tamper, TruthKind::BatteryLow] {
        let events: Vec<_> = f.truth.iter().filter(|t| t.kind == kind).collect();
        assert_eq!(events.len(), 2, "{kind:?}: {events:?}");
        assert!(
            events.iter().all(|t| t.end.is_some() && t.witnesses >= 2),
            "{events:?}"
        );
    }
}

#[test]
fn gaps_are_uploaded_late_after_newer_fixes() {
    let f = fleet();
    assert!(f
        .pings
        .windows(2)
        .all(|w| w[0].deliver_at <= w[1].deliver_at));
    let mut newest: HashMap<u32, DateTime<Utc>> = HashMap::new();
    let mut late = 0;
    for p in &f.pings {
        let n = newest.entry(p.subject).or_insert(p.ts);
        if *n > p.ts {
            late += 1;
        }
        *n = (*n).max(p.ts);
        assert!(p.deliver_at > p.ts);
        assert!(p.deliver_at - p.ts < TimeDelta::minutes(15), "{:?}", p);
    }
    assert!(late > 100, "{late} late pings");
}

#[test]
fn speeds_are_realistic() {
    let f = fleet();
    for (i, track) in by_subject(f).iter().enumerate() {
        let s = &f.subjects[i];
        let fixes: Vec<_> = track.iter().filter(|p| !p.spike).collect();
        for p in &fixes {
            assert!((0.0..=12.0).contains(&p.speed_mps), "{}", p.speed_mps);
        }
        for w in fixes.windows(2) {
            let dt = (w[1].ts - w[0].ts).num_seconds() as f64;
            let d = distance_m(
                LatLon::new(w[0].lat, w[0].lon),
                LatLon::new(w[1].lat, w[1].lon),
            );
            let slack = f64::from(w[0].accuracy_m + w[1].accuracy_m);
            assert!((d - slack) / dt <= 12.0, "{}: {d} m in {dt} s", s.id);
        }
        let moving = track.iter().filter(|p| p.speed_mps > 1.0).count();
        assert!(moving > 0, "{} never moves", s.id);
    }
}

#[test]
fn pings_are_what_the_api_takes() {
    let f = fleet();
    let limits = TimeLimits {
        now: tagwatch::model::time::to_micros(start() + TimeDelta::days(3)),
        retention_s: 365 * 86_400,
    };
    for p in f.pings.iter().step_by(97) {
        let v = serde_json::to_value(f.wire(p)).expect("json");
        for k in [
            "device_id",
            "ts",
            "lat",
            "lon",
            "accuracy_m",
            "fix",
            "speed_mps",
            "battery_pct",
            "tamper",
            "charging",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        let ping: PingIn = serde_json::from_value(v.clone()).expect("PingIn");
        let fix = ping.validate(limits).expect("valid");
        assert_eq!(
            fix.pos_e7,
            Some(((p.lat * 1e7).round() as i32, (p.lon * 1e7).round() as i32))
        );
    }
}

#[test]
fn one_subject_visits_a_real_burglary_location() {
    let f = fleet();
    let scene = f.crime_scene.as_ref().expect("crime scene");
    assert!(london()
        .expect("geodata")
        .burglaries
        .iter()
        .any(|b| b.crime_id == scene.crime_id));
    let near: Vec<_> = f
        .pings
        .iter()
        .filter(|p| {
            p.subject as usize == scene.subject
                && p.ts >= scene.from
                && p.ts <= scene.to
                && !p.spike
        })
        .map(|p| distance_m(LatLon::new(scene.lat, scene.lon), LatLon::new(p.lat, p.lon)))
        .collect();
    assert!(near.len() >= 5);
    assert!(near.iter().all(|d| *d < 60.0), "{near:?}");
}

/// `cargo test --release --test sim -- --ignored --nocapture generation_speed`
#[test]
#[ignore]
fn generation_speed() {
    let t0 = std::time::Instant::now();
    let f = Fleet::generate(FleetConfig {
        subjects: 2_000,
        duration: TimeDelta::days(1),
        ..config()
    })
    .expect("fleet");
    let el = t0.elapsed();
    println!(
        "2000 devices x 1 day at 60 s: {} pings, {} truth events in {:.2} s",
        f.pings.len(),
        f.truth.len(),
        el.as_secs_f64()
    );
}
