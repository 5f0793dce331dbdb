//! Subjects, zone plans and day plans (timelines of stays and moves), before any fix.
//!
//! Each subject gets its own random stream (seed, index), so subject `i` is the same
//! whatever the fleet size. Timelines are in seconds from the run start, positions in
//! metres in a frame centred on the subject's home.

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::geodata::{london, Borough, London, GTO_BOROUGHS};
use super::shape::{Shape, Xy};
use super::{
    CrimeScene, FleetConfig, Role, SimError, SimSubject, Track, ZoneKind, ZonePlan, CURFEW_END,
    CURFEW_START, NORMAL_CLEARANCE_M, TIMEZONE,
};
use crate::geodesy::{LatLon, LocalFrame};

/// True paths of normal subjects keep this far from exclusion zones: the reported
/// clearance promise plus twice the largest accuracy (noise is clamped to the accuracy).
pub(super) const TRUE_CLEARANCE_M: f64 = NORMAL_CLEARANCE_M + 2.0 * MAX_ACCURACY_M;
/// The largest accuracy of an ordinary (non-spike) fix.
pub(super) const MAX_ACCURACY_M: f64 = 25.0;
/// How far a dwell wanders around its anchor.
pub(super) const DWELL_JITTER_M: f64 = 30.0;
pub(super) const HOME_JITTER_M: f64 = 5.0;
/// Trip destinations are within this distance of home.
const MAX_TRIP_M: f64 = 6_000.0;
/// Subjects with `i % BOROUGH_EVERY == 1` are excluded from a whole borough.
const BOROUGH_EVERY: usize = 50;
/// Boroughs a subject may be excluded from (the West End first), if they live far enough.
const EXCLUDED_BOROUGHS: [&str; 5] = [
    "Westminster",
    "City of London",
    "Kensington and Chelsea",
    "Southwark",
    "Lambeth",
];

const FIRST_NAMES: [&str; 16] = [
    "Alex", "Sam", "Jordan", "Casey", "Riley", "Jamie", "Morgan", "Taylor", "Charlie", "Robin",
    "Drew", "Frankie", "Kai", "Remi", "Sasha", "Ellis",
];
const SURNAMES: [&str; 16] = [
    "Okafor", "Smith", "Novak", "Begum", "Murphy", "Kowalski", "Hughes", "Ahmed", "Clarke",
    "Mensah", "Evans", "Silva", "Patel", "Doyle", "Reid", "Osei",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Walk,
    Bus,
    Car,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum SegKind {
    Stay {
        at: Xy,
        jitter_m: f64,
        home: bool,
        /// The evening-to-morning stay at home (the tag charges).
        night: bool,
        phase: f64,
    },
    Move {
        a: Xy,
        via: Xy,
        b: Xy,
        mode: Mode,
        speed_mps: f64,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Seg {
    pub t0: f64,
    pub t1: f64,
    pub kind: SegKind,
}

/// Everything the track generator needs about one subject.
#[derive(Debug, Clone)]
pub(super) struct Model {
    pub frame: LocalFrame,
    /// Aligned with the subject's zones; zone 0 is the curfew circle.
    pub shapes: Vec<Shape>,
    pub timeline: Vec<Seg>,
    /// Curfew windows, seconds from the run start.
    pub windows: Vec<(f64, f64)>,
    pub tamper: Option<(f64, f64)>,
    /// Hours from the start at which the battery should cross 20 %.
    pub low_battery_h: Option<f64>,
    pub battery0: f64,
}

/// The planned fleet: subjects, zones, and every day's movements.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    pub(super) config: FleetConfig,
    pub(super) subjects: Vec<SimSubject>,
    pub(super) models: Vec<Model>,
    crime_scene: Option<CrimeScene>,
}

/// A splitmix64 step, to derive independent per-subject seeds.
pub(super) fn mix(seed: u64, i: u64, stream: u64) -> u64 {
    let mut z =
        seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

fn dist(a: Xy, b: Xy) -> f64 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

/// Per pilot borough: its outline in a frame at its first place, and the places inside it.
struct BoroughHomes<'a> {
    borough: &'a Borough,
    frame: LocalFrame,
    shape: Shape,
    places: Vec<(&'a str, LatLon)>,
}

impl FleetPlan {
    pub fn new(config: FleetConfig) -> Result<FleetPlan, SimError> {
        let bad = |reason: &str| {
            Err(SimError::Config {
                reason: reason.into(),
            })
        };
        if config.interval_s == 0 {
            return bad("interval_s must be positive");
        }
        if config.duration <= TimeDelta::zero() {
            return bad("duration must be positive");
        }
        let london = london()?;
        let mut homes = Vec::new();
        for name in GTO_BOROUGHS {
            let Some(borough) = london.borough(name) else {
                return bad("a pilot borough is missing from the boundaries");
            };
            let places: Vec<(&str, LatLon)> = london
                .places
                .iter()
                .filter(|p| borough.contains(p.pos))
                .map(|p| (p.name.as_str(), p.pos))
                .collect();
            let Some(&(_, c)) = places.first() else {
                return bad("a pilot borough has no listed place");
            };
            let frame = LocalFrame::new(c);
            homes.push(BoroughHomes {
                borough,
                frame,
                shape: Shape::area(&frame, &borough.geometry),
                places,
            });
        }
        let mut subjects = Vec::with_capacity(config.subjects);
        let mut models = Vec::with_capacity(config.subjects);
        let mut crime_scene = None;
        let first_normal = config.breachers + config.tamper_subjects + config.low_battery_subjects;
        for i in 0..config.subjects {
            let (s, m, scene) = plan_subject(&config, london, &homes, i, i == first_normal)?;
            if scene.is_some() {
                crime_scene = scene;
            }
            subjects.push(s);
            models.push(m);
        }
        Ok(FleetPlan {
            config,
            subjects,
            models,
            crime_scene,
        })
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    pub fn subjects(&self) -> &[SimSubject] {
        &self.subjects
    }

    pub fn crime_scene(&self) -> Option<&CrimeScene> {
        self.crime_scene.as_ref()
    }

    /// Every device's track, generated on all cores; index `i` is subject `i`.
    pub fn tracks(&self) -> Vec<Track> {
        let n = self.subjects.len();
        let threads = std::thread::available_parallelism()
            .map(|t| t.get())
            .unwrap_or(1)
            .clamp(1, n.max(1));
        let chunk = n.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(chunk)
                .map(|lo| {
                    s.spawn(move || {
                        (lo..(lo + chunk).min(n))
                            .map(|i| self.track(i))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
}

/// Run-relative seconds of a local wall-clock time (the earlier instant when ambiguous, the
/// first instant after the gap when it does not exist).
fn local_s(start: DateTime<Utc>, date: NaiveDate, (h, m): (u32, u32)) -> f64 {
    let Some(naive) = date.and_hms_opt(h, m, 0) else {
        return f64::NAN;
    };
    let at = match TIMEZONE.from_local_datetime(&naive).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => match TIMEZONE
            .from_local_datetime(&(naive + TimeDelta::hours(1)))
            .earliest()
        {
            Some(t) => t.with_timezone(&Utc),
            None => return f64::NAN,
        },
    };
    (at - start).num_milliseconds() as f64 / 1000.0
}

/// Local dates covering the run, with a day either side.
fn dates(config: &FleetConfig) -> Vec<NaiveDate> {
    let first = config.start.with_timezone(&TIMEZONE).date_naive() - TimeDelta::days(1);
    let last = (config.start + config.duration)
        .with_timezone(&TIMEZONE)
        .date_naive()
        + TimeDelta::days(1);
    first.iter_days().take_while(|d| *d <= last).collect()
}

/// A trip the subject must make on a given day, planned ahead.
#[derive(Debug, Clone, Copy)]
struct Forced {
    date: NaiveDate,
    kind: ForcedKind,
    leave: f64,
    target: Xy,
    via_out: Xy,
    via_back: Xy,
    jitter_m: f64,
    /// For trips: how long to dwell; for curfew breaches: dwell until this time.
    dwell_s: f64,
    mode: Mode,
    speed_mps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForcedKind {
    /// Leave home at `leave`, dwell `dwell_s`, come home.
    Trip,
    /// Go out after the day's trips, dwell until `dwell_s` (past curfew start), come home.
    LateEvening,
}

struct Ctx<'a> {
    config: &'a FleetConfig,
    frame: LocalFrame,
    shapes: &'a [Shape],
    /// Indices of exclusion zones in `shapes`.
    excl: Vec<usize>,
    cands: Vec<Xy>,
    has_car: bool,
}

impl Ctx<'_> {
    fn dur_s(&self) -> f64 {
        self.config.duration.num_milliseconds() as f64 / 1000.0
    }

    fn leg_clear(&self, a: Xy, via: Xy, b: Xy, ignore: Option<usize>) -> bool {
        self.excl.iter().filter(|z| Some(**z) != ignore).all(|&z| {
            self.shapes[z].segment_clear(a, via, TRUE_CLEARANCE_M)
                && self.shapes[z].segment_clear(via, b, TRUE_CLEARANCE_M)
        })
    }

    fn route(&self, rng: &mut StdRng, a: Xy, b: Xy, ignore: Option<usize>) -> Option<Xy> {
        let len = dist(a, b);
        for k in 0..16 {
            let mid = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
            // Roads are not straight: bend the leg through a point off the midpoint.
            let off = if len > 300.0 && k > 0 {
                rng.gen_range(-0.25..0.25) * len
            } else {
                0.0
            };
            let (nx, ny) = if len > 0.0 {
                (-(b.1 - a.1) / len, (b.0 - a.0) / len)
            } else {
                (0.0, 0.0)
            };
            let via = (mid.0 + nx * off, mid.1 + ny * off);
            if self.leg_clear(a, via, b, ignore) {
                return Some(via);
            }
        }
        None
    }

    fn mode(&self, rng: &mut StdRng, len: f64) -> (Mode, f64) {
        if len < 1_200.0 {
            (Mode::Walk, rng.gen_range(1.2..1.6))
        } else if self.has_car && rng.gen_bool(0.6) || len > 9_000.0 {
            (Mode::Car, rng.gen_range(7.5..10.5))
        } else {
            (Mode::Bus, rng.gen_range(4.0..6.0))
        }
    }
}

fn path_len(a: Xy, via: Xy, b: Xy) -> f64 {
    dist(a, via) + dist(via, b)
}

fn plan_subject(
    config: &FleetConfig,
    london: &London,
    homes: &[BoroughHomes<'_>],
    i: usize,
    crime_visitor: bool,
) -> Result<(SimSubject, Model, Option<CrimeScene>), SimError> {
    let mut rng = StdRng::seed_from_u64(mix(config.seed, i as u64, 1));
    let bh = &homes[i % homes.len()];

    // Home: near a listed place in the borough, at least 100 m inside its boundary.
    let (home_place, home) = {
        let mut found = None;
        for _ in 0..200 {
            let (name, p) = bh.places[rng.gen_range(0..bh.places.len())];
            let (x0, y0) = bh.frame.to_xy(p);
            let (r, a) = (
                rng.gen_range(100.0..700.0),
                rng.gen_range(0.0..std::f64::consts::TAU),
            );
            let xy = (x0 + r * a.cos(), y0 + r * a.sin());
            if bh.shape.signed_distance(xy) <= -100.0 {
                let ll = bh.frame.to_latlon(xy.0, xy.1);
                found = Some((name, LatLon::new(round7(ll.lat), round7(ll.lon))));
                break;
            }
        }
        found.ok_or_else(|| SimError::Config {
            reason: format!("no home found in {}", bh.borough.name),
        })?
    };
    let frame = LocalFrame::new(home);

    let role = if i < config.breachers {
        if i % 3 == 2 {
            Role::CurfewBreacher
        } else {
            Role::ExclusionBreacher { zone: 0 } // zone fixed below
        }
    } else if i < config.breachers + config.tamper_subjects {
        Role::Tamper
    } else if i < config.breachers + config.tamper_subjects + config.low_battery_subjects {
        Role::LowBattery
    } else {
        Role::Normal
    };

    // Zone 0: the curfew.
    let home_radius = (rng.gen_range(50..=80) / 5 * 5) as f64;
    let mut zones = vec![ZonePlan {
        kind: ZoneKind::Inclusion,
        name: "Curfew: home address".into(),
        geometry: json!({"type": "Circle", "center": [home.lon, home.lat], "radius_m": home_radius}),
        schedule: Some(json!({
            "timezone": TIMEZONE.name(),
            "windows": [{
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start": format!("{:02}:{:02}", CURFEW_START.0, CURFEW_START.1),
                "end": format!("{:02}:{:02}", CURFEW_END.0, CURFEW_END.1),
            }],
        })),
    }];
    let mut shapes = vec![Shape::circle(&frame, home, home_radius)];

    // Exclusion zones.
    let mut n_excl = rng.gen_range(1..=3usize);
    if i % BOROUGH_EVERY == 1 {
        let excluded = EXCLUDED_BOROUGHS
            .iter()
            .filter_map(|n| london.borough(n))
            .map(|b| (b, Shape::area(&frame, &b.geometry)))
            .find(|(b, s)| b.name != bh.borough.name && s.clear_of((0.0, 0.0), 1_500.0));
        if let Some((b, s)) = excluded {
            zones.push(ZonePlan {
                kind: ZoneKind::Exclusion,
                name: format!("Exclusion: borough of {}", b.name),
                geometry: json!({"type": "Borough", "name": b.name}),
                schedule: None,
            });
            shapes.push(s);
            n_excl -= 1;
        }
    }
    let mut stations: Vec<(&str, LatLon, f64)> = london
        .stations
        .iter()
        .map(|s| (s.name.as_str(), s.pos, dist((0.0, 0.0), frame.to_xy(s.pos))))
        .filter(|(_, _, d)| *d >= 1_700.0)
        .collect();
    // Stations 1.7–5 km away; in outer boroughs with few stations, the eight nearest.
    stations.sort_by(|a, b| a.2.total_cmp(&b.2));
    let near = stations.iter().filter(|s| s.2 < 5_000.0).count();
    stations.truncate(near.max(8));
    for k in 0..n_excl {
        if stations.is_empty() {
            break;
        }
        let (name, pos, _) = stations.swap_remove(rng.gen_range(0..stations.len()));
        let pos = LatLon::new(round7(pos.lat), round7(pos.lon));
        let radius = (rng.gen_range(200..=400) / 10 * 10) as f64;
        if i % 4 == 3 && k + 1 == n_excl {
            // A hexagon around the station, as an officer might draw it.
            let sf = LocalFrame::new(pos);
            let rot = rng.gen_range(0.0..std::f64::consts::TAU);
            let mut ring: Vec<[f64; 2]> = (0..6)
                .map(|j| {
                    let a = rot + j as f64 * std::f64::consts::TAU / 6.0;
                    let ll = sf.to_latlon(radius * a.cos(), radius * a.sin());
                    [round7(ll.lon), round7(ll.lat)]
                })
                .collect();
            ring.push(ring[0]);
            let geometry = json!({"type": "Polygon", "coordinates": [ring]});
            let Some(mp) = super::geodata::multipolygon(&geometry) else {
                continue;
            };
            zones.push(ZonePlan {
                kind: ZoneKind::Exclusion,
                name: format!("Exclusion: around {name} station"),
                geometry,
                schedule: None,
            });
            shapes.push(Shape::area(&frame, &mp));
        } else {
            zones.push(ZonePlan {
                kind: ZoneKind::Exclusion,
                name: format!("Exclusion: {radius} m around {name} station"),
                geometry: json!({"type": "Circle", "center": [pos.lon, pos.lat], "radius_m": radius}),
                schedule: None,
            });
            shapes.push(Shape::circle(&frame, pos, radius));
        }
    }
    let excl: Vec<usize> = (1..zones.len()).collect();
    let mut role = match role {
        // A borough if they have one, else their last zone.
        Role::ExclusionBreacher { .. } if !excl.is_empty() => Role::ExclusionBreacher {
            zone: if matches!(shapes[1], Shape::Area { .. }) && i % BOROUGH_EVERY == 1 {
                1
            } else {
                zones.len() - 1
            },
        },
        Role::ExclusionBreacher { .. } => Role::Normal,
        r => r,
    };

    // Destinations: places and stations within reach, well clear of every exclusion zone.
    let margin = TRUE_CLEARANCE_M + DWELL_JITTER_M + 20.0;
    let cands: Vec<Xy> = london
        .places
        .iter()
        .chain(&london.stations)
        .map(|p| frame.to_xy(p.pos))
        .filter(|&xy| {
            (400.0..MAX_TRIP_M).contains(&dist((0.0, 0.0), xy))
                && excl.iter().all(|&z| shapes[z].clear_of(xy, margin))
        })
        .collect();
    let ctx = Ctx {
        config,
        frame,
        shapes: &shapes,
        excl: excl.clone(),
        cands,
        has_car: rng.gen_bool(0.4),
    };
    let all_dates = dates(config);
    let dur = ctx.dur_s();
    let interval = config.interval_s as f64;

    // The planned trip that makes this subject's story.
    let mut forced = None;
    let mut scene = None;
    match role {
        Role::ExclusionBreacher { zone } => {
            // The preferred zone, else another one (the way into a zone can be blocked by a
            // neighbouring zone); a subject whose breach cannot fit the run is normal.
            let others = excl.iter().rev().copied().filter(|z| *z != zone);
            for z in std::iter::once(zone).chain(others) {
                forced = plan_breach_trip(&mut rng, &ctx, &all_dates, z, interval);
                if forced.is_some() {
                    role = Role::ExclusionBreacher { zone: z };
                    break;
                }
            }
        }
        Role::CurfewBreacher => {
            forced = plan_late_evening(&mut rng, &ctx, &all_dates, interval);
        }
        Role::Normal if crime_visitor => {
            if let Some((f, b)) = plan_crime_visit(&mut rng, &ctx, &frame, london, &all_dates) {
                let arrive = f.leave + path_len((0.0, 0.0), f.via_out, f.target) / f.speed_mps;
                let at = |s: f64| config.start + TimeDelta::milliseconds((s * 1000.0) as i64);
                scene = Some(CrimeScene {
                    crime_id: b.crime_id.clone(),
                    month: b.month.clone(),
                    location: b.location.clone(),
                    lsoa_name: b.lsoa_name.clone(),
                    lat: b.pos.lat,
                    lon: b.pos.lon,
                    subject: i,
                    from: at(arrive),
                    to: at(arrive + f.dwell_s),
                });
                forced = Some(f);
            }
        }
        _ => {}
    }
    if forced.is_none() && matches!(role, Role::ExclusionBreacher { .. } | Role::CurfewBreacher) {
        role = Role::Normal;
    }
    let timeline = plan_days(&mut rng, &ctx, &all_dates, forced);

    let windows = all_dates
        .iter()
        .map(|d| {
            (
                local_s(config.start, *d, CURFEW_START),
                local_s(config.start, d.succ_opt().unwrap_or(*d), CURFEW_END),
            )
        })
        .filter(|(a, b)| a.is_finite() && b.is_finite() && *b > 0.0 && *a < dur)
        .collect();
    let tamper = (role == Role::Tamper).then(|| {
        let t0 = rng.gen_range(0.3..0.6) * dur;
        let len = rng.gen_range(600.0..1_800.0f64).max(3.0 * interval);
        (t0, t0 + len)
    });
    let low_battery_h = (role == Role::LowBattery).then(|| rng.gen_range(0.2..0.4) * dur / 3600.0);
    let battery0 = rng.gen_range(75.0..100.0);

    let subject = SimSubject {
        id: format!("{}{:05}", config.subject_prefix, i + 1),
        display_name: format!(
            "{} {}",
            FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())],
            SURNAMES[rng.gen_range(0..SURNAMES.len())]
        ),
        borough: bh.borough.name.clone(),
        device_id: format!("{}{:05}", config.device_prefix, i + 1),
        home,
        home_place: home_place.to_owned(),
        zones,
        role,
    };
    let model = Model {
        frame,
        shapes,
        timeline,
        windows,
        tamper,
        low_battery_h,
        battery0,
    };
    Ok((subject, model, scene))
}

/// A daytime window of a date, within the run with room to finish the trip.
fn day_slot(ctx: &Ctx<'_>, d: NaiveDate, from: (u32, u32), to: (u32, u32)) -> Option<(f64, f64)> {
    let lo = local_s(ctx.config.start, d, from).max(1_200.0);
    let hi = local_s(ctx.config.start, d, to).min(ctx.dur_s() - 4.0 * 3600.0);
    (lo <= hi).then_some((lo, hi))
}

fn plan_breach_trip(
    rng: &mut StdRng,
    ctx: &Ctx<'_>,
    dates: &[NaiveDate],
    zone: usize,
    interval: f64,
) -> Option<Forced> {
    let shape = &ctx.shapes[zone];
    // Somewhere deep inside: near a circle's centre, or a listed point well inside a polygon.
    let targets: Vec<(Xy, f64)> = match shape {
        Shape::Circle { center, radius_m } => {
            let a = rng.gen_range(0.0..std::f64::consts::TAU);
            let r = rng.gen_range(0.0..radius_m / 4.0);
            vec![(
                (center.0 + r * a.cos(), center.1 + r * a.sin()),
                radius_m / 8.0,
            )]
        }
        Shape::Area { .. } => {
            let l = london().ok()?;
            let mut inside: Vec<(Xy, f64)> = l
                .places
                .iter()
                .chain(&l.stations)
                .map(|p| ctx.frame.to_xy(p.pos))
                .filter(|xy| shape.signed_distance(*xy) <= -400.0)
                .map(|xy| (xy, DWELL_JITTER_M))
                .collect();
            inside.sort_by(|a, b| dist((0.0, 0.0), a.0).total_cmp(&dist((0.0, 0.0), b.0)));
            if inside.is_empty() {
                // A hexagon too small for a listed point: its centre.
                if let Shape::Area { rings, .. } = shape {
                    let r = rings.first()?;
                    let n = (r.len() - 1).max(1) as f64;
                    let c = r
                        .iter()
                        .take(r.len() - 1)
                        .fold((0.0, 0.0), |s, p| (s.0 + p.0 / n, s.1 + p.1 / n));
                    inside.push((c, 15.0));
                }
            }
            inside.truncate(5);
            inside
        }
    };
    for d in dates {
        let Some((lo, hi)) = day_slot(ctx, *d, (9, 0), (14, 30)) else {
            continue;
        };
        for &(target, jitter_m) in &targets {
            let Some(via_out) = ctx.route(rng, (0.0, 0.0), target, Some(zone)) else {
                continue;
            };
            let Some(via_back) = ctx.route(rng, target, (0.0, 0.0), Some(zone)) else {
                continue;
            };
            let (mode, speed_mps) = ctx.mode(rng, dist((0.0, 0.0), target));
            return Some(Forced {
                date: *d,
                kind: ForcedKind::Trip,
                leave: rng.gen_range(lo..=hi),
                target,
                via_out,
                via_back,
                jitter_m,
                dwell_s: rng.gen_range(600.0..1_200.0f64).max(4.0 * interval),
                mode,
                speed_mps,
            });
        }
    }
    None
}

fn plan_late_evening(
    rng: &mut StdRng,
    ctx: &Ctx<'_>,
    dates: &[NaiveDate],
    interval: f64,
) -> Option<Forced> {
    let far: Vec<Xy> = ctx
        .cands
        .iter()
        .copied()
        .filter(|c| dist((0.0, 0.0), *c) >= 1_500.0)
        .collect();
    if far.is_empty() {
        return None;
    }
    for d in dates {
        let curfew = local_s(ctx.config.start, *d, CURFEW_START);
        if !(curfew >= 3_600.0 && curfew + 3.0 * 3600.0 <= ctx.dur_s()) {
            continue;
        }
        for _ in 0..20 {
            let target = far[rng.gen_range(0..far.len())];
            let Some(via_out) = ctx.route(rng, (0.0, 0.0), target, None) else {
                continue;
            };
            let Some(via_back) = ctx.route(rng, target, (0.0, 0.0), None) else {
                continue;
            };
            let (mode, speed_mps) = ctx.mode(rng, dist((0.0, 0.0), target));
            let out_after = rng
                .gen_range(1_500.0..4_200.0f64)
                .max(4.0 * interval + 60.0);
            return Some(Forced {
                date: *d,
                kind: ForcedKind::LateEvening,
                leave: local_s(ctx.config.start, *d, (17, 15)),
                target,
                via_out,
                via_back,
                jitter_m: DWELL_JITTER_M,
                dwell_s: curfew + out_after,
                mode,
                speed_mps,
            });
        }
    }
    None
}

fn plan_crime_visit<'l>(
    rng: &mut StdRng,
    ctx: &Ctx<'_>,
    frame: &LocalFrame,
    london: &'l London,
    dates: &[NaiveDate],
) -> Option<(Forced, &'l super::geodata::Burglary)> {
    let margin = TRUE_CLEARANCE_M + DWELL_JITTER_M + 20.0;
    let near: Vec<(&super::geodata::Burglary, Xy)> = london
        .burglaries
        .iter()
        .map(|b| (b, frame.to_xy(b.pos)))
        .filter(|(_, xy)| {
            (500.0..4_000.0).contains(&dist((0.0, 0.0), *xy))
                && ctx
                    .excl
                    .iter()
                    .all(|&z| ctx.shapes[z].clear_of(*xy, margin))
        })
        .collect();
    if near.is_empty() {
        return None;
    }
    for d in dates {
        let Some((lo, hi)) = day_slot(ctx, *d, (10, 0), (14, 30)) else {
            continue;
        };
        for _ in 0..10 {
            let (b, target) = near[rng.gen_range(0..near.len())];
            let Some(via_out) = ctx.route(rng, (0.0, 0.0), target, None) else {
                continue;
            };
            let Some(via_back) = ctx.route(rng, target, (0.0, 0.0), None) else {
                continue;
            };
            let (mode, speed_mps) = ctx.mode(rng, dist((0.0, 0.0), target));
            let f = Forced {
                date: *d,
                kind: ForcedKind::Trip,
                leave: rng.gen_range(lo..=hi),
                target,
                via_out,
                via_back,
                jitter_m: 15.0,
                dwell_s: rng.gen_range(900.0..2_400.0),
                mode,
                speed_mps,
            };
            return Some((f, b));
        }
    }
    None
}

/// Builds the stays and moves of every day. Normal days: home until 07:30–10:00, up to five
/// trips with dwells of 20–150 min, home by 17:30–18:40, night at home.
fn plan_days(
    rng: &mut StdRng,
    ctx: &Ctx<'_>,
    dates: &[NaiveDate],
    forced: Option<Forced>,
) -> Vec<Seg> {
    const HOME: Xy = (0.0, 0.0);
    let mut b = Builder {
        segs: Vec::new(),
        t: f64::MIN,
    };
    b.stay(rng, HOME, HOME_JITTER_M, true, true);
    for d in dates {
        let start = ctx.config.start;
        let today = forced.filter(|f| f.date == *d);
        let mut leave = local_s(start, *d, (7, 30)) + rng.gen_range(0.0..150.0) * 60.0;
        let mut home_by = local_s(start, *d, (17, 30)) + rng.gen_range(0.0..70.0) * 60.0;
        if !(leave.is_finite() && home_by.is_finite()) {
            continue;
        }
        if let Some(f) = today {
            match f.kind {
                ForcedKind::Trip => leave = f.leave,
                ForcedKind::LateEvening => home_by = f.leave,
            }
        }
        b.until(leave);
        let mut pos = HOME;
        if let Some(f) = today.filter(|f| f.kind == ForcedKind::Trip) {
            b.go(HOME, f.via_out, f.target, f.mode, f.speed_mps);
            b.stay(rng, f.target, f.jitter_m, false, false);
            b.until(b.t + f.dwell_s);
            b.go(f.target, f.via_back, HOME, f.mode, f.speed_mps);
            b.stay(rng, HOME, HOME_JITTER_M, true, false);
            b.until(b.t + rng.gen_range(1_800.0..3_600.0));
        }
        // Ordinary trips; each must leave time to get home by `home_by`.
        let mut back: Option<(Xy, Mode, f64)> = None;
        'trips: for _ in 0..5 {
            for _ in 0..10 {
                if ctx.cands.is_empty() {
                    break 'trips;
                }
                let dest = ctx.cands[rng.gen_range(0..ctx.cands.len())];
                if dist(pos, dest) < 300.0 {
                    continue;
                }
                let Some(via) = ctx.route(rng, pos, dest, None) else {
                    continue;
                };
                let Some(via_home) = ctx.route(rng, dest, HOME, None) else {
                    continue;
                };
                let (mode, speed) = ctx.mode(rng, dist(pos, dest));
                let (mode_home, speed_home) = ctx.mode(rng, dist(dest, HOME));
                let dwell = rng.gen_range(20.0..150.0) * 60.0;
                let t_there = path_len(pos, via, dest) / speed;
                let t_home = path_len(dest, via_home, HOME) / speed_home;
                if b.t + t_there + dwell + t_home + 60.0 > home_by {
                    continue;
                }
                b.go(pos, via, dest, mode, speed);
                b.stay(rng, dest, DWELL_JITTER_M, false, false);
                b.until(b.t + dwell);
                pos = dest;
                back = Some((via_home, mode_home, speed_home));
                if rng.gen_bool(0.3) {
                    b.go(pos, via_home, HOME, mode_home, speed_home);
                    pos = HOME;
                    back = None;
                    b.stay(rng, HOME, HOME_JITTER_M, true, false);
                    let rest = rng.gen_range(20.0..90.0) * 60.0;
                    b.until((b.t + rest).min(home_by.max(b.t)));
                }
                continue 'trips;
            }
            break;
        }
        if let Some((via_home, mode, speed)) = back.filter(|_| pos != HOME) {
            b.go(pos, via_home, HOME, mode, speed);
        }
        if let Some(f) = today.filter(|f| f.kind == ForcedKind::LateEvening) {
            b.stay(rng, HOME, HOME_JITTER_M, true, false);
            b.until(b.t.max(f.leave) + rng.gen_range(0.0..1_200.0));
            b.go(HOME, f.via_out, f.target, f.mode, f.speed_mps);
            b.stay(rng, f.target, f.jitter_m, false, false);
            b.until(f.dwell_s.max(b.t + 600.0));
            b.go(f.target, f.via_back, HOME, f.mode, f.speed_mps);
        }
        b.stay(rng, HOME, HOME_JITTER_M, true, true);
    }
    b.until(f64::MAX);
    b.segs
}

struct Builder {
    segs: Vec<Seg>,
    t: f64,
}

impl Builder {
    /// Starts a stay at `at` from now; its end is set by [`Builder::until`] or the next move.
    fn stay(&mut self, rng: &mut StdRng, at: Xy, jitter_m: f64, home: bool, night: bool) {
        self.segs.push(Seg {
            t0: self.t,
            t1: self.t,
            kind: SegKind::Stay {
                at,
                jitter_m,
                home,
                night,
                phase: rng.gen_range(0.0..std::f64::consts::TAU),
            },
        });
    }

    /// Extends the current stay until `t`.
    fn until(&mut self, t: f64) {
        let t = t.max(self.t);
        if let Some(s) = self.segs.last_mut() {
            s.t1 = t;
        }
        self.t = t;
    }

    fn go(&mut self, a: Xy, via: Xy, b: Xy, mode: Mode, speed_mps: f64) {
        let d = path_len(a, via, b) / speed_mps;
        if let Some(s) = self.segs.last_mut() {
            s.t1 = self.t;
        }
        self.segs.push(Seg {
            t0: self.t,
            t1: self.t + d,
            kind: SegKind::Move {
                a,
                via,
                b,
                mode,
                speed_mps,
            },
        });
        self.t += d;
    }
}
