//! The SPEC §3 rules as small state machines over one device's fixes in fix-time order.
//!
//! `RuleState` is everything a device's fix-time rules remember: one `Run` slot per rule
//! (per zone for zone rules). A run is a candidate or open episode; it becomes an episode
//! (`opened`) once its condition has held long enough (`grace_s` for zone rules, at once for
//! the others).
//!
//! Invariants:
//! - fixes are applied in strictly increasing `ts_us` (the device layer guarantees it); the
//!   state is then a pure function of the fixes applied and of the instants it was advanced
//!   to, which is what makes replay reproduce in-order evaluation exactly;
//! - an uncertain fix changes no zone run; a position-less fix carries no position (it only
//!   advances time, feeds `no_fix`, tamper and battery);
//! - a zone run lives inside one active interval (schedule window ∩ validity ∖ absences) and
//!   ends at the first contrary fix or at that interval's end instant, whichever is first;
//! - `ended_us > started_us` for every zone, tamper and battery episode ended in order.

use crate::engine::index::{Classification, Probe, ZoneIndex, ZoneKind};
use crate::engine::schedule::ScheduleStatus;
use crate::engine::{
    Absence, AlertType, Ctx, Episode, EpisodeEvent, EvalFix, EVIDENCE_HEAD, US_PER_S,
};

/// Battery below this opens `battery_low` (SPEC §3).
pub const BATTERY_LOW_PCT: f64 = 20.0;
/// Battery at or above this ends it (hysteresis, so a battery hovering at 20 % does not flap).
pub const BATTERY_OK_PCT: f64 = 25.0;

/// Evidence fix times: the first [`EVIDENCE_HEAD`], the latest, and the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evidence {
    head: Vec<i64>,
    last: i64,
    count: u32,
}

impl Evidence {
    fn none() -> Self {
        Self {
            head: Vec::new(),
            last: i64::MIN,
            count: 0,
        }
    }

    fn one(ts: i64) -> Self {
        let mut e = Self::none();
        e.push(ts);
        e
    }

    fn push(&mut self, ts: i64) {
        if self.head.len() < EVIDENCE_HEAD {
            self.head.push(ts);
        }
        self.last = ts;
        self.count = self.count.saturating_add(1);
    }

    fn to_vec(&self) -> Vec<i64> {
        let mut v = self.head.clone();
        if self.count as usize > self.head.len() {
            v.push(self.last);
        }
        v
    }
}

/// A candidate or open episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) started_us: i64,
    /// end of the active interval the run lives in (`i64::MAX` = none)
    pub(crate) end_at_us: i64,
    pub(crate) opened: bool,
    pub(crate) truncated: bool,
    pub(crate) evidence: Evidence,
}

impl Run {
    fn new(started_us: i64, end_at_us: i64, truncated: bool, evidence: Evidence) -> Box<Self> {
        Box::new(Self {
            started_us,
            end_at_us,
            opened: false,
            truncated,
            evidence,
        })
    }

    pub(crate) fn episode(&self, t: AlertType, zone: Option<i64>, ended: Option<i64>) -> Episode {
        Episode {
            alert_type: t,
            zone_id: zone,
            started_us: self.started_us,
            ended_us: ended,
            evidence_ts: self.evidence.to_vec(),
            evidence_count: self.evidence.count,
            may_have_started_earlier: self.truncated,
        }
    }
}

/// Per-zone rule state, in zone-id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZoneState {
    pub(crate) zone_id: i64,
    /// the zone's alert type, kept so a run can be ended after its zone left the index
    pub(crate) alert: AlertType,
    /// schedule status last computed (a cache: derived from the zone's schedule only)
    sched: Option<ScheduleStatus>,
    pub(crate) run: Option<Box<Run>>,
}

/// Everything the fix-time rules of one device remember.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RuleState {
    /// newest fix applied
    pub(crate) newest_ts: Option<i64>,
    /// the first fix applied to a fresh state (runs starting there may have begun earlier)
    pub(crate) fresh_first_ts: Option<i64>,
    pub(crate) zones: Vec<ZoneState>,
    pub(crate) tamper: Option<Box<Run>>,
    pub(crate) battery: Option<Box<Run>>,
    /// last positioned fix, or the first ping if none yet
    pub(crate) no_fix_since: Option<i64>,
    pub(crate) no_fix: Option<Box<Run>>,
}

pub(crate) fn zone_alert(kind: ZoneKind) -> AlertType {
    match kind {
        ZoneKind::Exclusion => AlertType::ExclusionBreach,
        ZoneKind::Inclusion => AlertType::CurfewBreach,
    }
}

fn is_bad(kind: ZoneKind, c: Classification) -> Option<bool> {
    match (kind, c) {
        (_, Classification::Uncertain) => None,
        (ZoneKind::Exclusion, Classification::Inside) => Some(true),
        (ZoneKind::Inclusion, Classification::Outside) => Some(true),
        _ => Some(false),
    }
}

/// Whether a zone's rule is active at `ts`, with the constant interval around it:
/// schedule window ∩ `[valid_from, valid_to)`, minus absences for inclusion zones.
pub(crate) fn zone_status(
    index: &ZoneIndex,
    slot: u32,
    cache: &mut Option<ScheduleStatus>,
    absences: &[Absence],
    ts: i64,
) -> ScheduleStatus {
    let z = index.meta(slot);
    if ts < z.valid_from_us {
        return ScheduleStatus {
            active: false,
            from_us: i64::MIN,
            until_us: z.valid_from_us,
        };
    }
    let valid_to = z.valid_to_us;
    if ts >= valid_to {
        return ScheduleStatus {
            active: false,
            from_us: valid_to,
            until_us: i64::MAX,
        };
    }
    let mut st = if !z.scheduled {
        ScheduleStatus::ALWAYS
    } else {
        match cache {
            Some(c) if c.covers(ts) => *c,
            _ => {
                let c = index
                    .zone(slot)
                    .schedule
                    .as_ref()
                    .map_or(ScheduleStatus::ALWAYS, |s| s.status_at(ts));
                *cache = Some(c);
                c
            }
        }
    };
    if !st.active {
        return st;
    }
    st.from_us = st.from_us.max(z.valid_from_us);
    st.until_us = st.until_us.min(valid_to);
    if z.kind == ZoneKind::Inclusion {
        for a in absences {
            if a.from_us >= a.to_us {
                continue;
            }
            if a.from_us <= ts && ts < a.to_us {
                return ScheduleStatus {
                    active: false,
                    from_us: a.from_us,
                    until_us: a.to_us,
                };
            } else if a.to_us <= ts {
                st.from_us = st.from_us.max(a.to_us);
            } else {
                st.until_us = st.until_us.min(a.from_us);
            }
        }
    }
    st
}

/// Sink for rule output.
pub(crate) type Events = Vec<EpisodeEvent>;

fn end_run(run: &mut Option<Box<Run>>, t: AlertType, zone: Option<i64>, at: i64, out: &mut Events) {
    if let Some(r) = run.take() {
        if r.opened {
            out.push(EpisodeEvent::Ended(r.episode(t, zone, Some(at))));
        }
    }
}

impl RuleState {
    /// Apply one fix, `fix.ts_us` greater than every fix applied so far.
    pub(crate) fn apply_fix(&mut self, fix: &EvalFix, ctx: &Ctx, out: &mut Events) {
        let ts = fix.ts_us;
        if self.newest_ts.is_none() && self.fresh_first_ts.is_none() {
            self.fresh_first_ts = Some(ts);
        }
        let fresh_first = self.fresh_first_ts;
        self.newest_ts = Some(ts);

        // zone rules
        let slots = ctx.index.subject_slots(ctx.subject);
        let aligned = self.zones.len() == slots.len()
            && self
                .zones
                .iter()
                .zip(slots.clone())
                .all(|(s, slot)| s.zone_id == ctx.index.meta(slot).id);
        if !aligned {
            self.realign(ctx, ts, out);
        }
        let mut probe: Option<Probe> = None;
        for (st, slot) in self.zones.iter_mut().zip(slots) {
            let z = ctx.index.meta(slot);
            let t = zone_alert(z.kind);
            let zid = Some(z.id);
            if let Some(r) = &st.run {
                if r.end_at_us <= ts {
                    let at = r.end_at_us;
                    end_run(&mut st.run, t, zid, at, out);
                }
            }
            let status = zone_status(ctx.index, slot, &mut st.sched, ctx.absences, ts);
            if !status.active {
                if let Some(r) = &st.run {
                    // the interval was cut short after the run began (a new absence, a
                    // deleted zone): end where the active part ended, never before the run
                    let at = status.from_us.max(r.evidence.last).min(ts);
                    end_run(&mut st.run, t, zid, at, out);
                }
                continue;
            }
            let Some(pos) = fix.pos else { continue };
            let p = probe.get_or_insert_with(|| Probe::new(pos, fix.accuracy_m));
            let Some(bad) = is_bad(z.kind, ctx.index.classify(slot, p)) else {
                continue;
            };
            if !bad {
                end_run(&mut st.run, t, zid, ts, out);
                continue;
            }
            match &mut st.run {
                None => {
                    let mut r = Run::new(
                        ts,
                        status.until_us,
                        fresh_first == Some(ts),
                        Evidence::one(ts),
                    );
                    if z.grace_s <= 0 {
                        r.opened = true;
                        out.push(EpisodeEvent::Opened(r.episode(t, zid, None)));
                    }
                    st.run = Some(r);
                }
                Some(r) => {
                    r.end_at_us = status.until_us;
                    r.evidence.push(ts);
                    if r.opened {
                        out.push(EpisodeEvent::Updated(r.episode(t, zid, None)));
                    } else if ts - r.started_us >= z.grace_s.saturating_mul(US_PER_S) {
                        r.opened = true;
                        out.push(EpisodeEvent::Opened(r.episode(t, zid, None)));
                    }
                }
            }
        }

        // tamper
        match fix.tamper {
            Some(true) => {
                let truncated = fresh_first == Some(ts);
                open_or_extend(&mut self.tamper, AlertType::Tamper, ts, ts, truncated, out)
            }
            Some(false) => end_run(&mut self.tamper, AlertType::Tamper, None, ts, out),
            None => {}
        }
        // battery
        match fix.battery_pct {
            Some(p) if p < BATTERY_LOW_PCT => {
                let truncated = fresh_first == Some(ts);
                open_or_extend(
                    &mut self.battery,
                    AlertType::BatteryLow,
                    ts,
                    ts,
                    truncated,
                    out,
                )
            }
            Some(p) if p >= BATTERY_OK_PCT => {
                end_run(&mut self.battery, AlertType::BatteryLow, None, ts, out)
            }
            _ => {}
        }
        // no fix
        let since = *self.no_fix_since.get_or_insert(ts);
        if fix.pos.is_some() {
            end_run(&mut self.no_fix, AlertType::NoFix, None, ts, out);
            self.no_fix_since = Some(ts);
        } else {
            let limit = ctx.config.no_fix_s.saturating_mul(US_PER_S);
            if ts - since > limit {
                // the silence may have begun before a fresh state's first fix
                let truncated = fresh_first == Some(since);
                let started = since.saturating_add(limit);
                open_or_extend(
                    &mut self.no_fix,
                    AlertType::NoFix,
                    started,
                    ts,
                    truncated,
                    out,
                );
            }
        }
    }

    /// Bring zone states in line with the subject's current zones: new zones start empty;
    /// open runs of zones that are gone end at `ts` (deleted zones should rather stay in the
    /// index with `valid_to_us` set, so that they end at that instant).
    fn realign(&mut self, ctx: &Ctx, ts: i64, out: &mut Events) {
        let slots = ctx.index.subject_slots(ctx.subject);
        let mut old = std::mem::take(&mut self.zones);
        let mut next = Vec::with_capacity(slots.len());
        for slot in slots {
            let z = ctx.index.meta(slot);
            match old.iter().position(|s| s.zone_id == z.id) {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    s.alert = zone_alert(z.kind);
                    next.push(s);
                }
                None => next.push(ZoneState {
                    zone_id: z.id,
                    alert: zone_alert(z.kind),
                    sched: None,
                    run: None,
                }),
            }
        }
        old.sort_by_key(|s| s.zone_id);
        for mut s in old {
            let at = s.run.as_ref().map_or(ts, |r| ts.max(r.started_us));
            end_run(&mut s.run, s.alert, Some(s.zone_id), at, out);
        }
        self.zones = next;
    }

    /// End opened zone runs whose active interval ended at or before `t` (time passing
    /// without a fix). Candidate runs are left for the next fix to clear. Returns the latest
    /// end instant applied.
    pub(crate) fn advance_to(&mut self, t: i64, out: &mut Events) -> Option<i64> {
        let mut latest = None;
        for st in &mut self.zones {
            let Some(r) = &st.run else { continue };
            if !r.opened || r.end_at_us > t {
                continue;
            }
            let at = r.end_at_us;
            end_run(&mut st.run, st.alert, Some(st.zone_id), at, out);
            latest = latest.max(Some(at));
        }
        latest
    }

    /// Re-read the end instant of open zone runs from the current index and absences (a zone
    /// deleted or an absence added since the last fix), as the next fix would.
    pub(crate) fn refresh_ends(&mut self, ctx: &Ctx) {
        let slots = ctx.index.subject_slots(ctx.subject);
        for st in &mut self.zones {
            let Some(r) = st.run.as_deref_mut() else {
                continue;
            };
            let Some(slot) = slots.clone().find(|&s| ctx.index.meta(s).id == st.zone_id) else {
                continue;
            };
            let last = r.evidence.last;
            let status = zone_status(ctx.index, slot, &mut st.sched, ctx.absences, last);
            r.end_at_us = if status.active {
                status.until_us
            } else {
                status.from_us.max(last)
            };
        }
    }

    /// Episodes open now.
    pub(crate) fn open_episodes(&self) -> Vec<Episode> {
        let mut v = Vec::new();
        for st in &self.zones {
            if let Some(r) = st.run.as_ref().filter(|r| r.opened) {
                v.push(r.episode(st.alert, Some(st.zone_id), None));
            }
        }
        for (run, t) in [
            (&self.tamper, AlertType::Tamper),
            (&self.battery, AlertType::BatteryLow),
            (&self.no_fix, AlertType::NoFix),
        ] {
            if let Some(r) = run.as_ref().filter(|r| r.opened) {
                v.push(r.episode(t, None, None));
            }
        }
        v
    }

    /// Runs, with their alert types, for [`crate::engine::DeviceEngine::adopt`].
    pub(crate) fn runs_mut(&mut self) -> impl Iterator<Item = (AlertType, Option<i64>, &mut Run)> {
        let zones = self
            .zones
            .iter_mut()
            .filter_map(|s| s.run.as_deref_mut().map(|r| (s.alert, Some(s.zone_id), r)));
        let others = [
            (self.tamper.as_deref_mut(), AlertType::Tamper),
            (self.battery.as_deref_mut(), AlertType::BatteryLow),
            (self.no_fix.as_deref_mut(), AlertType::NoFix),
        ]
        .into_iter()
        .filter_map(|(r, t)| r.map(|r| (t, None, r)));
        zones.chain(others)
    }
}

fn open_or_extend(
    run: &mut Option<Box<Run>>,
    t: AlertType,
    started: i64,
    ts: i64,
    truncated: bool,
    out: &mut Events,
) {
    match run {
        None => {
            let mut r = Run::new(started, i64::MAX, truncated, Evidence::one(ts));
            r.opened = true;
            out.push(EpisodeEvent::Opened(r.episode(t, None, None)));
            *run = Some(r);
        }
        Some(r) => {
            r.evidence.push(ts);
            out.push(EpisodeEvent::Updated(r.episode(t, None, None)));
        }
    }
}

/// A fix older than the horizon, evaluated on its own (SPEC §3): against the zones valid
/// and active at its time, it yields one-fix episodes (`started_us == ended_us == ts`) for a
/// zone breach with `grace_s == 0`, `tamper: true`, or battery < 20 %. No state is touched;
/// `no_fix` and comms loss need a sequence and are not evaluated.
pub(crate) fn evaluate_alone(fix: &EvalFix, ctx: &Ctx, out: &mut Events) {
    let ts = fix.ts_us;
    let one = |t: AlertType, zone: Option<i64>| Episode {
        alert_type: t,
        zone_id: zone,
        started_us: ts,
        ended_us: Some(ts),
        evidence_ts: vec![ts],
        evidence_count: 1,
        may_have_started_earlier: false,
    };
    if let Some(pos) = fix.pos {
        let probe = Probe::new(pos, fix.accuracy_m);
        for slot in ctx.index.subject_slots(ctx.subject) {
            let z = ctx.index.meta(slot);
            if z.grace_s > 0 || !zone_status(ctx.index, slot, &mut None, ctx.absences, ts).active {
                continue;
            }
            if is_bad(z.kind, ctx.index.classify(slot, &probe)) == Some(true) {
                out.push(EpisodeEvent::Opened(one(zone_alert(z.kind), Some(z.id))));
            }
        }
    }
    if fix.tamper == Some(true) {
        out.push(EpisodeEvent::Opened(one(AlertType::Tamper, None)));
    }
    if fix.battery_pct.is_some_and(|p| p < BATTERY_LOW_PCT) {
        out.push(EpisodeEvent::Opened(one(AlertType::BatteryLow, None)));
    }
}
