//! The real-time compliance engine (SPEC §3): pure, no I/O, never awaits, never reads the
//! clock — every instant is a parameter (`_us` = microseconds since the Unix epoch).
//!
//! Layout:
//! - [`index`] — zone index (R-tree of envelopes, per-subject zone lists, exact tests);
//! - [`schedule`] — schedule windows → UTC intervals, with the SPEC §1 DST rules;
//! - [`rules`] — one small state machine per rule, on a fix-time-ordered stream;
//! - [`device`] — per-device state, in-order evaluation, checkpoints and replay of late data;
//! - [`reconcile`](mod@reconcile) — the pure diff between stored alerts and re-evaluated episodes.
//!
//! Caller protocol (ingest):
//! 1. store the batch, then `DeviceEngine::apply(batch)`;
//! 2. on `Applied::Events`, persist them (identity of an episode = `(alert_type, zone_id,
//!    started_us)`; `Opened` inserts, `Updated`/`Ended` change the alert with that identity);
//! 3. on `Applied::NeedsReplay { from_us, events }`, persist `events`, load the device's stored
//!    fixes with `ts ≥ from_us` (sorted; they include the new batch), call `replay`, load the
//!    device's stored alerts with `ended_at ≥ from_us` or still open, `reconcile`, persist
//!    the result with `detected_late = true` on changes, and call `DeviceEngine::adopt`;
//! 4. every `--sweep-interval-s`, `sweep(now)` each device and persist the events;
//! 5. at restart, for each device: `replay` the last horizon of stored fixes on a fresh
//!    engine, `reconcile` against stored alerts from the first of them on, `adopt`, and
//!    `resume_comms` from the newest receive time and any open comms-loss alert.

pub mod device;
pub mod index;
pub mod reconcile;
pub mod rules;
pub mod schedule;

use serde::{Deserialize, Serialize};

use crate::geodesy::LatLon;

pub use device::{Applied, DeviceEngine};
pub use index::{Classification, Probe, ZoneDef, ZoneIndex, ZoneKind, ZoneMeta};
pub use reconcile::{reconcile, KnownEpisode, Reconciled};
pub use schedule::ScheduleStatus;

/// Microseconds per second.
pub const US_PER_S: i64 = 1_000_000;

/// Engine settings (SPEC §6), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    pub no_fix_s: i64,
    pub comms_loss_s: i64,
    /// re-evaluation horizon, counted back from the device's newest fix
    pub horizon_s: i64,
    /// spacing of replay checkpoints in fix time (added field; default 3600). Smaller = less
    /// history read per replay, more memory per device.
    pub checkpoint_s: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            no_fix_s: 900,
            comms_loss_s: 900,
            horizon_s: 86_400,
            checkpoint_s: 3_600,
        }
    }
}

/// An authorised absence `[from_us, to_us)`: curfew rules raise nothing inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absence {
    pub from_us: i64,
    pub to_us: i64,
}

/// One fix as the engine needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalFix {
    /// fix time (device clock)
    pub ts_us: i64,
    /// server receive time
    pub received_us: i64,
    /// `None` for `fix: "none"` (a health report)
    pub pos: Option<LatLon>,
    /// 0 when absent
    pub accuracy_m: f64,
    pub tamper: Option<bool>,
    pub battery_pct: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    ExclusionBreach,
    CurfewBreach,
    Tamper,
    BatteryLow,
    NoFix,
    CommsLoss,
}

impl AlertType {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::ExclusionBreach => "exclusion_breach",
            AlertType::CurfewBreach => "curfew_breach",
            AlertType::Tamper => "tamper",
            AlertType::BatteryLow => "battery_low",
            AlertType::NoFix => "no_fix",
            AlertType::CommsLoss => "comms_loss",
        }
    }
}

/// Evidence timestamps kept per episode: the first [`EVIDENCE_HEAD`] plus the latest.
pub const EVIDENCE_HEAD: usize = 20;

/// One compliance episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub alert_type: AlertType,
    pub zone_id: Option<i64>,
    pub started_us: i64,
    /// `None` while ongoing
    pub ended_us: Option<i64>,
    /// fix times of the evidence: the first [`EVIDENCE_HEAD`] and, if there are more, the
    /// latest (ascending). Evidence = the fixes showing the condition (inside fixes of an
    /// exclusion breach, outside fixes of a curfew breach, `tamper: true`, battery < 20,
    /// position-less pings of a no-fix episode); comms loss has none.
    pub evidence_ts: Vec<i64>,
    pub evidence_count: u32,
    /// (added field) the episode was already under way at the first fix of a replay on a
    /// fresh engine (restart), so it may have started earlier than `started_us`;
    /// [`reconcile`](fn@reconcile) then keeps the stored start.
    pub may_have_started_earlier: bool,
}

impl Episode {
    /// The identity of an episode: `(alert_type, zone_id, started_us)`.
    pub fn identity(&self) -> (AlertType, Option<i64>, i64) {
        (self.alert_type, self.zone_id, self.started_us)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EpisodeEvent {
    Opened(Episode),
    Updated(Episode),
    Ended(Episode),
}

impl EpisodeEvent {
    pub fn episode(&self) -> &Episode {
        match self {
            EpisodeEvent::Opened(e) | EpisodeEvent::Updated(e) | EpisodeEvent::Ended(e) => e,
        }
    }

    /// A batch's events without the `Updated` ones that a later event of the same episode
    /// supersedes. An episode's event carries its whole state, so the stored alert is the
    /// same with one write per batch instead of one per evidence fix, while every opening
    /// and every end is still written (and audited) as its own change.
    pub fn without_superseded_updates(events: Vec<EpisodeEvent>) -> Vec<EpisodeEvent> {
        let mut last = std::collections::HashMap::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            last.insert(ev.episode().identity(), i);
        }
        events
            .into_iter()
            .enumerate()
            .filter(|(i, ev)| {
                !matches!(ev, EpisodeEvent::Updated(_))
                    || last.get(&ev.episode().identity()) == Some(i)
            })
            .map(|(_, ev)| ev)
            .collect()
    }
}

/// What the engine needs besides the device's own state.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub index: &'a ZoneIndex,
    pub subject: i64,
    /// the subject's absences (any order)
    pub absences: &'a [Absence],
    pub config: &'a EngineConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(zone: i64, started_us: i64, count: u32, ended_us: Option<i64>) -> Episode {
        Episode {
            alert_type: AlertType::ExclusionBreach,
            zone_id: Some(zone),
            started_us,
            ended_us,
            evidence_ts: (0..count as i64).map(|i| started_us + i).collect(),
            evidence_count: count,
            may_have_started_earlier: false,
        }
    }

    #[test]
    fn a_batch_drops_only_the_updates_a_later_event_supersedes() {
        let events = vec![
            EpisodeEvent::Opened(episode(1, 100, 1, None)),
            EpisodeEvent::Updated(episode(2, 50, 4, None)),
            EpisodeEvent::Updated(episode(1, 100, 2, None)),
            EpisodeEvent::Updated(episode(1, 100, 3, None)),
            EpisodeEvent::Ended(episode(2, 50, 4, Some(200))),
            EpisodeEvent::Opened(episode(2, 300, 1, None)),
        ];
        assert_eq!(
            EpisodeEvent::without_superseded_updates(events),
            vec![
                EpisodeEvent::Opened(episode(1, 100, 1, None)),
                EpisodeEvent::Updated(episode(1, 100, 3, None)),
                EpisodeEvent::Ended(episode(2, 50, 4, Some(200))),
                EpisodeEvent::Opened(episode(2, 300, 1, None)),
            ]
        );
    }
}
