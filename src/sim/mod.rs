//! Seeded fleet simulator: tagged people living in the GtO pilot boroughs on real London
//! geodata, their zone plans, days of movement, and the pings their tags would post, with
//! the ground truth of the compliance episodes it caused.
//!
//! Pure: no I/O (the geodata is embedded, see [`geodata`]); deterministic for a seed.
//!
//! - [`FleetPlan::new`] places the subjects (homes inside their borough, near a listed
//!   place), gives each a zone plan (zone 0 is the curfew, 19:00–07:00 Europe/London around
//!   home; then 1–3 exclusion zones around real stations, a polygon, or a whole borough the
//!   subject lives outside of) and plans every day of movement (walk / bus / car legs between
//!   home and places or stations, dwells, nights at home). Cheap.
//! - [`FleetPlan::track`] generates one device's pings (a fix every `interval_s` with GPS
//!   noise, occasional spikes, gaps uploaded late, tamper, battery) and its ground truth.
//!   Tracks are independent, so a load generator can make them lazily, one device at a time.
//! - [`Fleet::generate`] does both for every subject (in parallel) and sorts all pings by
//!   delivery time, which is the order a "faster than real time" driver replays them in.
//!
//! # Guarantees (checked by `tests/sim.rs`)
//! - Every home lies inside its borough, at least 100 m from its boundary.
//! - **Normal subjects raise no compliance alert** under SPEC §3 with `grace_s` ≥ 0: every
//!   fix that is not a spike lies outside every exclusion zone by at least
//!   [`NORMAL_CLEARANCE_M`] + its accuracy; during curfew windows it lies inside the home
//!   circle by at least its accuracy (so it classifies *inside*); battery stays ≥ 30 %;
//!   `tamper` is false.
//! - **Spikes** (a wild position with a large `accuracy_m`) report an accuracy at least 1.5
//!   times their displacement, so they classify *uncertain* against any boundary the true
//!   position is not on the same side of: they never open or end an episode wrongly.
//! - No fix is within [`BORDERLINE_M`] of a classification threshold of any of its subject's
//!   zones, so an engine measuring distances slightly differently agrees with the truth.
//! - **Ground truth** ([`TruthEvent`]) is computed from the emitted fixes with the SPEC §3
//!   rules (inside/outside/uncertain by accuracy, `grace_s` = 0, curfew episodes start at the
//!   first outside fix in the window and end at the first inside fix or the window's end).
//!   Designed breaches are witnessed by at least [`MIN_WITNESSES`] fixes clear of the
//!   boundary by their accuracy plus 20 m. Only breachers, tamper and low-battery subjects
//!   have truth events.
//! - Gaps last 3–12 minutes (below the default 900 s comms-loss and no-fix thresholds); the
//!   fixes taken during a gap are delivered after the first fix after it, shuffled.
//! - Zone geometry, schedules and ids are exactly what `POST /v1/subjects/{id}/zones` takes.
//!   Zones must be registered with `valid_from` at or before `start`.

pub mod geodata;
mod plan;
pub mod shape;
mod track;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::geodesy::LatLon;

pub use geodata::{london, GeodataError, London, GTO_BOROUGHS};
pub use plan::FleetPlan;
pub use shape::Classification;

/// Normal subjects' fixes stay outside every exclusion zone by this much plus their accuracy.
pub const NORMAL_CLEARANCE_M: f64 = 150.0;
/// No fix lies within this distance of a classification threshold of its subject's zones.
pub const BORDERLINE_M: f64 = 3.0;
/// Designed breaches are witnessed by at least this many fixes.
pub const MIN_WITNESSES: usize = 2;
/// The curfew every subject has: 19:00–07:00 local time, every day.
pub const CURFEW_START: (u32, u32) = (19, 0);
pub const CURFEW_END: (u32, u32) = (7, 0);
/// The time zone of every subject and schedule.
pub const TIMEZONE: chrono_tz::Tz = chrono_tz::Europe::London;

/// Why a fleet could not be generated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Geodata(#[from] GeodataError),
    #[error("invalid fleet configuration: {reason}")]
    Config { reason: String },
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub seed: u64,
    pub subjects: usize,
    /// First fix time (fix times are `start` + a per-device phase + k × `interval_s`).
    pub start: DateTime<Utc>,
    pub duration: TimeDelta,
    pub interval_s: u32,
    /// Subjects 0..breachers breach deliberately: `i % 3 == 2` stay out during curfew, the
    /// others enter an exclusion zone (subject 1's is a whole borough). A breach needs a
    /// daytime slot (09:00–14:30 local, ≥ 4 h before the end) or a curfew evening (19:00
    /// ≥ 1 h after the start, ≥ 3 h before the end) inside the run; a breacher whose breach
    /// cannot fit gets [`Role::Normal`].
    pub breachers: usize,
    /// The next subjects after the breachers have one tamper episode each.
    pub tamper_subjects: usize,
    /// The next ones after those run their battery below 20 % once, then charge.
    pub low_battery_subjects: usize,
    /// Expected spikes per device per day.
    pub spikes_per_day: f64,
    /// Expected gaps (with buffered late upload) per device per day.
    pub gaps_per_day: f64,
    /// Subject ids are `{subject_prefix}{i+1:05}`, device ids `{device_prefix}{i+1:05}`.
    pub subject_prefix: String,
    pub device_prefix: String,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            seed: 17,
            subjects: 24,
            start: DateTime::<Utc>::UNIX_EPOCH,
            duration: TimeDelta::days(1),
            interval_s: 60,
            breachers: 3,
            tamper_subjects: 1,
            low_battery_subjects: 1,
            spikes_per_day: 3.0,
            gaps_per_day: 3.0,
            subject_prefix: "GTO-SIM-".into(),
            device_prefix: "TAG-SIM-".into(),
        }
    }
}

/// A zone's kind as the API takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneKind {
    Exclusion,
    Inclusion,
}

/// One zone to register, as the body of `POST /v1/subjects/{id}/zones`.
#[derive(Debug, Clone, Serialize)]
pub struct ZonePlan {
    pub kind: ZoneKind,
    pub name: String,
    /// `Circle`, `Polygon` or `Borough` geometry (SPEC §1, §2).
    pub geometry: Value,
    /// SPEC §1 schedule; `None` = always active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Value>,
}

/// What the simulator makes a subject do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    Normal,
    /// Enters exclusion zone `zone` (index into the subject's zones) once.
    ExclusionBreacher {
        zone: usize,
    },
    /// Is out during one curfew window.
    CurfewBreacher,
    Tamper,
    LowBattery,
}

/// A simulated subject with their device and zone plan.
#[derive(Debug, Clone, Serialize)]
pub struct SimSubject {
    pub id: String,
    /// Fictional.
    pub display_name: String,
    pub borough: String,
    pub device_id: String,
    #[serde(serialize_with = "ser_latlon")]
    pub home: LatLon,
    /// The listed place the home is near.
    pub home_place: String,
    /// Zone 0 is the curfew (inclusion circle around home with the 19:00–07:00 schedule).
    pub zones: Vec<ZonePlan>,
    pub role: Role,
}

fn ser_latlon<S: serde::Serializer>(p: &LatLon, s: S) -> Result<S::Ok, S::Error> {
    [p.lat, p.lon].serialize(s)
}

/// How the tag got the position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FixKind {
    Gps,
    Wifi,
}

/// One simulated ping with its delivery time. `subject` indexes [`FleetPlan::subjects`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimPing {
    /// Simulated clock when the tag uploads it (late for fixes buffered during a gap).
    pub deliver_at: DateTime<Utc>,
    pub subject: u32,
    pub ts: DateTime<Utc>,
    /// Rounded to 1e-7° (what the store keeps).
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f32,
    pub fix: FixKind,
    pub speed_mps: f32,
    pub heading_deg: Option<f32>,
    pub battery_pct: f32,
    pub tamper: bool,
    pub charging: bool,
    /// Simulator metadata, not sent: this fix is a deliberate spike.
    pub spike: bool,
}

impl SimPing {
    /// The ping as `POST /v1/pings` takes it (SPEC §2), for serialising.
    pub fn wire<'a>(&self, device_id: &'a str) -> WirePing<'a> {
        WirePing {
            device_id,
            ts: self.ts,
            lat: self.lat,
            lon: self.lon,
            accuracy_m: self.accuracy_m,
            fix: self.fix,
            speed_mps: self.speed_mps,
            heading_deg: self.heading_deg,
            battery_pct: self.battery_pct,
            tamper: self.tamper,
            charging: self.charging,
        }
    }

    /// How long after its fix time the ping is delivered.
    pub fn delay(&self) -> TimeDelta {
        self.deliver_at - self.ts
    }
}

/// The SPEC §2 ping fields, serialised exactly as the API takes them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WirePing<'a> {
    pub device_id: &'a str,
    pub ts: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f32,
    pub fix: FixKind,
    pub speed_mps: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f32>,
    pub battery_pct: f32,
    pub tamper: bool,
    pub charging: bool,
}

/// The type of a ground-truth episode (the alert type the engine should raise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TruthKind {
    ExclusionBreach,
    CurfewBreach,
    Tamper,
    BatteryLow,
}

impl TruthKind {
    /// The SPEC alert type name.
    pub fn as_str(self) -> &'static str {
        match self {
            TruthKind::ExclusionBreach => "exclusion_breach",
            TruthKind::CurfewBreach => "curfew_breach",
            TruthKind::Tamper => "tamper",
            TruthKind::BatteryLow => "battery_low",
        }
    }
}

/// One episode the simulation caused, as the engine should report it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruthEvent {
    /// Subject id.
    pub subject: String,
    pub device_id: String,
    #[serde(rename = "type")]
    pub kind: TruthKind,
    /// Index into the subject's zone plan (breaches only).
    pub zone: Option<usize>,
    /// The first fix that opens the episode.
    pub start: DateTime<Utc>,
    /// The fix that ends it, or the curfew window's end instant; `None` if still open when
    /// the simulation ends.
    pub end: Option<DateTime<Utc>>,
    /// Fixes in the episode that classify clearly (inside an exclusion zone, outside the
    /// curfew circle, tamper true, battery < 20).
    pub witnesses: usize,
}

/// One device's simulated pings (in fix-time order) and its ground truth.
#[derive(Debug, Clone)]
pub struct Track {
    pub subject: usize,
    pub pings: Vec<SimPing>,
    pub truth: Vec<TruthEvent>,
}

impl Track {
    /// Pings delivered after a ping of the same device with a later `ts` (SPEC §3 "late").
    pub fn late_count(&self) -> usize {
        let mut by_delivery: Vec<&SimPing> = self.pings.iter().collect();
        by_delivery.sort_by_key(|p| (p.deliver_at, p.ts));
        let mut newest = None;
        let mut late = 0;
        for p in by_delivery {
            if newest.is_some_and(|n| n > p.ts) {
                late += 1;
            }
            newest = newest.max(Some(p.ts));
        }
        late
    }
}

/// A real burglary location one subject visits, for the demo's crime-scene query.
#[derive(Debug, Clone, Serialize)]
pub struct CrimeScene {
    pub crime_id: String,
    pub month: String,
    pub location: String,
    pub lsoa_name: String,
    pub lat: f64,
    pub lon: f64,
    /// Index into the subjects of the one who dwells there.
    pub subject: usize,
    /// The dwell: the subject is within ~40 m of the point throughout.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A whole simulated fleet: subjects, all pings sorted by delivery time, ground truth.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub subjects: Vec<SimSubject>,
    /// Sorted by `(deliver_at, subject, ts)`.
    pub pings: Vec<SimPing>,
    /// Sorted by `(start, subject)`.
    pub truth: Vec<TruthEvent>,
    pub crime_scene: Option<CrimeScene>,
}

impl Fleet {
    /// Plans and generates every track (on all cores), merged in delivery order.
    pub fn generate(config: FleetConfig) -> Result<Fleet, SimError> {
        let plan = FleetPlan::new(config)?;
        let tracks = plan.tracks();
        let mut pings = Vec::with_capacity(tracks.iter().map(|t| t.pings.len()).sum());
        let mut truth = Vec::new();
        for t in tracks {
            pings.extend_from_slice(&t.pings);
            truth.extend(t.truth);
        }
        pings.sort_unstable_by_key(|p| (p.deliver_at, p.subject, p.ts));
        truth.sort_by(|a, b| (a.start, &a.subject).cmp(&(b.start, &b.subject)));
        Ok(Fleet {
            crime_scene: plan.crime_scene().cloned(),
            subjects: plan.subjects().to_vec(),
            pings,
            truth,
        })
    }

    /// The ping as the API takes it.
    pub fn wire<'a>(&'a self, p: &SimPing) -> WirePing<'a> {
        p.wire(&self.subjects[p.subject as usize].device_id)
    }
}
