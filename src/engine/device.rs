//! Per-device engine state: in-order evaluation, replay on late data, server-time sweeps.
//!
//! Order independence (SPEC §3) by checkpoint and replay: the fix-time rule state
//! (`rules::RuleState`) is snapshotted before the first fix of each `checkpoint_s` bucket of fix
//! time (and once, as *genesis*, before the device's first fix). A late fix (ts ≤ newest
//! already evaluated, or before a window end a sweep already applied) makes `apply` answer
//! `NeedsReplay { from_us }` with the checkpoint at or before it; `replay` restores that
//! snapshot and re-applies the stored fixes from there, so the state afterwards is exactly
//! the in-order state. Checkpoints older than the one covering `newest − horizon` are
//! pruned, so memory is bounded by `horizon_s / checkpoint_s + 2` snapshots.
//!
//! Why checkpoints rather than replaying the whole horizon: a replay reads at most one
//! checkpoint interval (default 1 h) of fixes before the late one from the store instead
//! of 24 h, at the price of a few hundred bytes per snapshot.
//!
//! Invariants:
//! - `state` reflects exactly the fixes with `ts ≤ state.newest_ts`, applied in order, plus
//!   window ends up to `swept_to_us`;
//! - each checkpoint reflects exactly the fixes with `ts < checkpoint.ts_us`;
//! - comms loss lives outside the replayed state: it is server time, changed only by
//!   receipt of pings and by sweeps, never rewound by replay.
//! - fixes older than `newest − horizon` (or older than every checkpoint) never trigger a
//!   replay; they are evaluated on their own (`rules::evaluate_alone`).

use crate::engine::reconcile::Reconciled;
use crate::engine::rules::{self, Events, RuleState};
use crate::engine::{AlertType, Ctx, Episode, EpisodeEvent, EvalFix, US_PER_S};

#[derive(Debug, Clone)]
struct Checkpoint {
    ts_us: i64,
    /// the empty state before the device's first fix: valid for any earlier instant too
    genesis: bool,
    state: RuleState,
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// All fixes applied; these are the episode changes (coalesced per episode).
    Events(Vec<EpisodeEvent>),
    /// A late fix within the horizon: nothing was applied to the rule state. Load the
    /// device's stored fixes with `ts ≥ from_us` and call `replay`. `events` (added field)
    /// are changes that happened anyway: a comms-loss episode ended by this delivery, and
    /// one-fix episodes of fixes older than the horizon.
    NeedsReplay {
        from_us: i64,
        events: Vec<EpisodeEvent>,
    },
}

/// Per-device state. See the module doc.
#[derive(Debug, Clone)]
pub struct DeviceEngine {
    state: RuleState,
    checkpoints: Vec<Checkpoint>,
    /// latest window end applied by a sweep (fixes before it are late)
    swept_to_us: i64,
    last_received_us: Option<i64>,
    /// start of the open comms-loss episode
    comms_open_us: Option<i64>,
}

impl Default for DeviceEngine {
    fn default() -> Self {
        Self::new()
    }
}

fn comms_episode(started: i64, ended: Option<i64>) -> Episode {
    Episode {
        alert_type: AlertType::CommsLoss,
        zone_id: None,
        started_us: started,
        ended_us: ended,
        evidence_ts: Vec::new(),
        evidence_count: 0,
        may_have_started_earlier: false,
    }
}

impl DeviceEngine {
    pub fn new() -> Self {
        Self {
            state: RuleState::default(),
            checkpoints: Vec::new(),
            swept_to_us: i64::MIN,
            last_received_us: None,
            comms_open_us: None,
        }
    }

    /// Newest fix time evaluated.
    pub fn newest_ts_us(&self) -> Option<i64> {
        self.state.newest_ts
    }

    /// Episodes open now (fix-time rules and comms loss).
    pub fn open_episodes(&self) -> Vec<Episode> {
        let mut v = self.state.open_episodes();
        if let Some(s) = self.comms_open_us {
            v.push(comms_episode(s, None));
        }
        v
    }

    /// Apply fixes of this device (any order within the batch). See [`Applied`].
    pub fn apply(&mut self, fixes: &[EvalFix], ctx: &Ctx) -> Applied {
        let mut events = Events::new();
        if fixes.is_empty() {
            return Applied::Events(events);
        }
        self.note_received(fixes, &mut events);
        let newest = self.state.newest_ts;
        let swept = self.swept_to_us;
        let is_late = |f: &EvalFix| newest.is_some_and(|n| f.ts_us <= n) || f.ts_us < swept;
        let batch_max = fixes.iter().map(|f| f.ts_us).fold(i64::MIN, i64::max);
        let floor = newest
            .unwrap_or(i64::MIN)
            .max(batch_max)
            .saturating_sub(ctx.config.horizon_s.max(0).saturating_mul(US_PER_S));
        let mut late_min: Option<i64> = None;
        let (mut in_order, mut prev) = (true, i64::MIN);
        for f in fixes {
            if is_late(f) {
                in_order = false;
                if f.ts_us < floor || !self.has_checkpoint_for(f.ts_us) {
                    rules::evaluate_alone(f, ctx, &mut events);
                } else {
                    late_min = Some(late_min.map_or(f.ts_us, |m: i64| m.min(f.ts_us)));
                }
            } else {
                in_order &= f.ts_us > prev;
                prev = f.ts_us;
            }
        }
        if let Some(l) = late_min {
            return Applied::NeedsReplay {
                from_us: self.replay_from(l),
                events: coalesce(events),
            };
        }
        if in_order {
            for f in fixes {
                self.step(f, ctx, &mut events);
            }
        } else {
            let mut v: Vec<&EvalFix> = fixes.iter().filter(|f| !is_late(f)).collect();
            v.sort_by_key(|f| f.ts_us);
            for f in v {
                self.step(f, ctx, &mut events);
            }
        }
        self.prune(ctx);
        Applied::Events(coalesce(events))
    }

    /// Re-evaluate from the checkpoint at or before `history[0]`: `history` is every stored
    /// fix of the device with `ts ≥ from_us` (as answered by `NeedsReplay`), in time order.
    /// Returns every episode touching `[from_us, ∞)` (ended at or after it, or open), comms
    /// loss excepted. On a fresh engine (restart) it starts from an empty state at the
    /// first fix of `history`, and episodes already under way there are flagged
    /// `may_have_started_earlier`.
    pub fn replay(&mut self, history: &[EvalFix], ctx: &Ctx) -> Vec<Episode> {
        let mut hist: Vec<&EvalFix> = history.iter().collect();
        if !hist.windows(2).all(|w| w[0].ts_us < w[1].ts_us) {
            hist.sort_by_key(|f| f.ts_us);
            hist.dedup_by_key(|f| f.ts_us);
        }
        let Some(first) = hist.first().map(|f| f.ts_us) else {
            return self.state.open_episodes();
        };
        if self.last_received_us.is_none() {
            self.last_received_us = hist.iter().map(|f| f.received_us).max();
        }
        let from_us = match self.checkpoints.iter().rposition(|c| c.ts_us <= first) {
            Some(i) if !self.checkpoints[i].genesis => {
                let ts = self.checkpoints[i].ts_us;
                // `step` re-creates this checkpoint at the first fix
                if let Some(c) = self.checkpoints.drain(i..).next() {
                    self.state = c.state;
                }
                ts
            }
            _ => {
                self.checkpoints.clear();
                self.state = RuleState::default();
                first
            }
        };
        let mut events = Events::new();
        for f in hist {
            if f.ts_us >= from_us && self.state.newest_ts.is_none_or(|n| f.ts_us > n) {
                self.step(f, ctx, &mut events);
            }
        }
        self.state.advance_to(self.swept_to_us, &mut events);
        self.prune(ctx);
        let mut out: Vec<Episode> = events
            .into_iter()
            .filter_map(|e| match e {
                EpisodeEvent::Ended(ep) if ep.ended_us.is_some_and(|t| t >= from_us) => Some(ep),
                _ => None,
            })
            .collect();
        out.extend(self.state.open_episodes());
        out.sort_by_key(|e| (e.started_us, e.alert_type, e.zone_id));
        out
    }

    /// Time-driven rules at server time `now_us`: comms loss opens when no ping has been
    /// received for `comms_loss_s`; zone episodes end at their window's end instant.
    pub fn sweep(&mut self, now_us: i64, ctx: &Ctx) -> Vec<EpisodeEvent> {
        let mut out = Events::new();
        if let (Some(last), None) = (self.last_received_us, self.comms_open_us) {
            let started = last.saturating_add(ctx.config.comms_loss_s.saturating_mul(US_PER_S));
            if now_us >= started {
                self.comms_open_us = Some(started);
                out.push(EpisodeEvent::Opened(comms_episode(started, None)));
            }
        }
        self.state.refresh_ends(ctx);
        if let Some(t) = self.state.advance_to(now_us, &mut out) {
            self.swept_to_us = self.swept_to_us.max(t);
        }
        out
    }

    /// Restart: restore comms-loss knowledge from the store (newest receive time of the
    /// device, and the start of its open comms-loss alert if any).
    pub fn resume_comms(&mut self, last_received_us: Option<i64>, open_started_us: Option<i64>) {
        self.last_received_us = self.last_received_us.max(last_received_us);
        self.comms_open_us = open_started_us;
    }

    /// After `reconcile`: where it kept a stored, earlier start for an open episode (restart),
    /// adopt that start so later events carry the stored identity.
    pub fn adopt(&mut self, reconciled: &[Reconciled]) {
        for r in reconciled {
            let Reconciled::Update { episode: ep, .. } = r else {
                continue;
            };
            if ep.ended_us.is_some() {
                continue;
            }
            let states = std::iter::once(&mut self.state)
                .chain(self.checkpoints.iter_mut().map(|c| &mut c.state));
            for st in states {
                for (t, zone, run) in st.runs_mut() {
                    if t == ep.alert_type
                        && zone == ep.zone_id
                        && run.opened
                        && run.truncated
                        && run.started_us > ep.started_us
                    {
                        run.started_us = ep.started_us;
                        run.truncated = false;
                    }
                }
            }
        }
    }

    /// Approximate heap bytes held (for capacity planning; see the bench).
    pub fn heap_bytes(&self) -> usize {
        fn state(s: &RuleState) -> usize {
            let runs = s.zones.iter().filter(|z| z.run.is_some()).count()
                + [&s.tamper, &s.battery, &s.no_fix]
                    .iter()
                    .filter(|r| r.is_some())
                    .count();
            s.zones.capacity() * std::mem::size_of::<rules::ZoneState>()
                + runs * (std::mem::size_of::<rules::Run>() + crate::engine::EVIDENCE_HEAD * 8)
        }
        state(&self.state)
            + self.checkpoints.capacity() * std::mem::size_of::<Checkpoint>()
            + self
                .checkpoints
                .iter()
                .map(|c| state(&c.state))
                .sum::<usize>()
    }

    fn note_received(&mut self, fixes: &[EvalFix], out: &mut Events) {
        let min_r = fixes.iter().map(|f| f.received_us).fold(i64::MAX, i64::min);
        let max_r = fixes.iter().map(|f| f.received_us).fold(i64::MIN, i64::max);
        if let Some(started) = self.comms_open_us.take() {
            out.push(EpisodeEvent::Ended(comms_episode(
                started,
                Some(min_r.max(started)),
            )));
        }
        self.last_received_us = Some(self.last_received_us.map_or(max_r, |l| l.max(max_r)));
    }

    fn has_checkpoint_for(&self, ts: i64) -> bool {
        self.checkpoints
            .first()
            .is_some_and(|c| c.genesis || c.ts_us <= ts)
    }

    fn replay_from(&self, late: i64) -> i64 {
        match self.checkpoints.iter().rposition(|c| c.ts_us <= late) {
            Some(i) if !self.checkpoints[i].genesis => self.checkpoints[i].ts_us,
            _ => late.min(self.checkpoints.first().map_or(late, |c| c.ts_us)),
        }
    }

    fn step(&mut self, f: &EvalFix, ctx: &Ctx, out: &mut Events) {
        let bucket_us = ctx.config.checkpoint_s.max(1).saturating_mul(US_PER_S);
        match self.state.newest_ts {
            None => {
                if self.checkpoints.is_empty() {
                    self.checkpoints.push(Checkpoint {
                        ts_us: f.ts_us,
                        genesis: true,
                        state: self.state.clone(),
                    });
                }
            }
            Some(n) if f.ts_us.div_euclid(bucket_us) > n.div_euclid(bucket_us) => {
                self.checkpoints.push(Checkpoint {
                    ts_us: f.ts_us,
                    genesis: false,
                    state: self.state.clone(),
                });
            }
            Some(_) => {}
        }
        self.state.apply_fix(f, ctx, out);
    }

    fn prune(&mut self, ctx: &Ctx) {
        let Some(n) = self.state.newest_ts else {
            return;
        };
        let floor = n.saturating_sub(ctx.config.horizon_s.max(0).saturating_mul(US_PER_S));
        if let Some(i) = self.checkpoints.iter().rposition(|c| c.ts_us <= floor) {
            if i > 0 {
                self.checkpoints.drain(..i);
            }
        }
    }
}

/// Merge the events of one batch: one `Updated` per episode (the latest), folded into an
/// `Opened` of the same batch; an `Ended` supersedes a pending `Updated`.
fn coalesce(events: Events) -> Events {
    if events.len() <= 1 {
        return events;
    }
    let mut out: Events = Vec::with_capacity(events.len().min(16));
    for e in events {
        match e {
            EpisodeEvent::Updated(ep) => {
                let id = ep.identity();
                if let Some(EpisodeEvent::Opened(p) | EpisodeEvent::Updated(p)) =
                    out.iter_mut().rev().find(|p| p.episode().identity() == id)
                {
                    *p = ep;
                    continue;
                }
                out.push(EpisodeEvent::Updated(ep));
            }
            EpisodeEvent::Ended(ep) => {
                let id = ep.identity();
                if let Some(i) = out
                    .iter()
                    .rposition(|p| matches!(p, EpisodeEvent::Updated(x) if x.identity() == id))
                {
                    out.remove(i);
                }
                out.push(EpisodeEvent::Ended(ep));
            }
            opened @ EpisodeEvent::Opened(_) => out.push(opened),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::tests::zone;
    use crate::engine::reconcile::{reconcile, KnownEpisode};
    use crate::engine::{Absence, EngineConfig, ZoneDef, ZoneIndex, ZoneKind};
    use crate::geodesy::{LatLon, LocalFrame};
    use crate::model::geometry::Shape;
    use crate::model::schedule::Schedule;
    use std::collections::BTreeSet;

    const S: i64 = US_PER_S;
    const MIN: i64 = 60 * S;
    const HOUR: i64 = 3600 * S;

    fn t(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .expect("time")
            .timestamp_micros()
    }

    /// Monday 2026-01-12 00:00Z (winter: London = UTC).
    fn t0() -> i64 {
        t("2026-01-12T00:00:00Z")
    }

    fn centre() -> LatLon {
        LatLon::new(51.5, -0.1)
    }
    /// metres east/north of the centre
    fn p(x: f64, y: f64) -> LatLon {
        LocalFrame::new(centre()).to_latlon(x, y)
    }
    /// home: 2 km east
    fn home(x: f64) -> LatLon {
        p(2000.0 + x, 0.0)
    }

    fn fix(ts: i64, pos: Option<LatLon>) -> EvalFix {
        EvalFix {
            ts_us: ts,
            received_us: ts + 2 * S,
            pos,
            accuracy_m: 10.0,
            tamper: None,
            battery_pct: None,
        }
    }

    fn schedule(start: &str, end: &str) -> crate::model::schedule::CompiledSchedule {
        serde_json::from_value::<Schedule>(serde_json::json!({"timezone":"Europe/London",
            "windows":[{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":start,"end":end}]}))
        .expect("json")
        .compile()
        .expect("valid")
    }

    /// zone 1: exclusion circle r = 200 m at the centre; zone 2: home circle r = 50 m with
    /// a 19:00–07:00 curfew.
    fn zones() -> Vec<ZoneDef> {
        let mut home_zone = zone(
            2,
            1,
            ZoneKind::Inclusion,
            Shape::Circle {
                center: home(0.0),
                radius_m: 50.0,
            },
        );
        home_zone.schedule = Some(schedule("19:00", "07:00"));
        vec![
            zone(
                1,
                1,
                ZoneKind::Exclusion,
                Shape::Circle {
                    center: centre(),
                    radius_m: 200.0,
                },
            ),
            home_zone,
        ]
    }

    struct World {
        index: ZoneIndex,
        absences: Vec<Absence>,
        config: EngineConfig,
    }

    impl World {
        fn new(zones: Vec<ZoneDef>) -> Self {
            Self {
                index: ZoneIndex::build(zones),
                absences: Vec::new(),
                config: EngineConfig::default(),
            }
        }
        fn ctx(&self) -> Ctx<'_> {
            Ctx {
                index: &self.index,
                subject: 1,
                absences: &self.absences,
                config: &self.config,
            }
        }
    }

    type Key = (AlertType, Option<i64>, i64, Option<i64>);

    /// Stands in for the store and the ingest pipeline's side of the protocol.
    #[derive(Default)]
    struct Store {
        fixes: Vec<EvalFix>,
        alerts: Vec<(i64, Episode, bool)>,
        replays: usize,
    }

    impl Store {
        fn deliver(&mut self, eng: &mut DeviceEngine, batch: &[EvalFix], ctx: &Ctx) {
            self.fixes.extend_from_slice(batch);
            self.fixes.sort_by_key(|f| f.ts_us);
            match eng.apply(batch, ctx) {
                Applied::Events(ev) => self.events(ev),
                Applied::NeedsReplay { from_us, events } => {
                    self.replays += 1;
                    self.events(events);
                    let hist: Vec<EvalFix> = self
                        .fixes
                        .iter()
                        .filter(|f| f.ts_us >= from_us)
                        .copied()
                        .collect();
                    let new = eng.replay(&hist, ctx);
                    let r = reconcile(&self.known(from_us), &new);
                    self.reconciled(&r);
                    eng.adopt(&r);
                }
            }
        }
        fn known(&self, from_us: i64) -> Vec<KnownEpisode> {
            self.alerts
                .iter()
                .filter(|(_, e, w)| !w && e.ended_us.is_none_or(|x| x >= from_us))
                .map(|(id, e, _)| KnownEpisode {
                    alert_id: *id,
                    alert_type: e.alert_type,
                    zone_id: e.zone_id,
                    started_us: e.started_us,
                    ended_us: e.ended_us,
                    evidence_count: e.evidence_count,
                })
                .collect()
        }
        fn push(&mut self, e: Episode) {
            let id = self.alerts.len() as i64 + 1;
            self.alerts.push((id, e, false));
        }
        fn events(&mut self, ev: Vec<EpisodeEvent>) {
            for e in ev {
                match e {
                    EpisodeEvent::Opened(ep) => self.push(ep),
                    EpisodeEvent::Updated(ep) | EpisodeEvent::Ended(ep) => {
                        let a = self
                            .alerts
                            .iter_mut()
                            .find(|(_, e, w)| !w && e.identity() == ep.identity())
                            .unwrap_or_else(|| panic!("event for an unknown episode {ep:?}"));
                        a.1 = ep;
                    }
                }
            }
        }
        fn reconciled(&mut self, r: &[Reconciled]) {
            for x in r {
                match x {
                    Reconciled::Unchanged { .. } => {}
                    Reconciled::Update { alert_id, episode } => {
                        self.alerts[*alert_id as usize - 1].1 = episode.clone()
                    }
                    Reconciled::Withdraw { alert_id, .. } => {
                        self.alerts[*alert_id as usize - 1].2 = true
                    }
                    Reconciled::Open(ep) => self.push(ep.clone()),
                }
            }
        }
        fn keys(&self) -> BTreeSet<Key> {
            self.alerts
                .iter()
                .filter(|(_, e, w)| !w && e.alert_type != AlertType::CommsLoss)
                .map(|(_, e, _)| (e.alert_type, e.zone_id, e.started_us, e.ended_us))
                .collect()
        }
    }

    /// Feed fixes one by one in the given order, then sweep at `sweep_at`.
    fn run(w: &World, fixes: &[EvalFix], sweep_at: Option<i64>) -> Store {
        let mut eng = DeviceEngine::new();
        let mut st = Store::default();
        for f in fixes {
            st.deliver(&mut eng, std::slice::from_ref(f), &w.ctx());
        }
        if let Some(now) = sweep_at {
            let ev = eng.sweep(now, &w.ctx());
            st.events(ev);
        }
        st
    }

    const X: AlertType = AlertType::ExclusionBreach;
    const C: AlertType = AlertType::CurfewBreach;

    #[test]
    fn an_exclusion_breach_runs_from_the_first_inside_fix_to_the_first_outside_fix() {
        let w = World::new(zones());
        let b = t0() + 12 * HOUR;
        let fixes = [
            fix(b, Some(p(500.0, 0.0))),
            fix(b + MIN, Some(p(50.0, 0.0))),
            fix(b + 2 * MIN, Some(p(0.0, 20.0))),
            fix(b + 3 * MIN, Some(p(400.0, 0.0))),
            fix(b + 4 * MIN, Some(p(450.0, 0.0))),
        ];
        let st = run(&w, &fixes, None);
        assert_eq!(
            st.keys(),
            BTreeSet::from([(X, Some(1), b + MIN, Some(b + 3 * MIN))])
        );
        assert_eq!(st.alerts[0].1.evidence_ts, vec![b + MIN, b + 2 * MIN]);
        assert_eq!(st.alerts[0].1.evidence_count, 2);
    }

    #[test]
    fn gps_drift_across_a_boundary_within_the_accuracy_raises_nothing() {
        let w = World::new(zones());
        let b = t0() + 12 * HOUR;
        // radius 200 m, accuracy 30 m: 185–215 m from the centre is uncertain
        let fixes: Vec<EvalFix> = (0..40)
            .map(|i| EvalFix {
                accuracy_m: 30.0,
                ..fix(
                    b + i * 10 * S,
                    Some(p(if i % 2 == 0 { 190.0 } else { 212.0 }, 0.0)),
                )
            })
            .collect();
        assert!(run(&w, &fixes, Some(b + HOUR)).keys().is_empty());
    }

    #[test]
    fn an_uncertain_fix_neither_opens_nor_ends_a_breach() {
        let w = World::new(zones());
        let b = t0() + 12 * HOUR;
        let u = |ts| EvalFix {
            accuracy_m: 50.0,
            ..fix(ts, Some(p(200.0, 0.0)))
        };
        let fixes = [
            fix(b, Some(p(0.0, 0.0))),
            u(b + MIN),
            fix(b + 2 * MIN, Some(p(0.0, 0.0))),
            u(b + 3 * MIN),
            fix(b + 4 * MIN, Some(p(900.0, 0.0))),
        ];
        assert_eq!(
            run(&w, &fixes, None).keys(),
            BTreeSet::from([(X, Some(1), b, Some(b + 4 * MIN))])
        );
    }

    #[test]
    fn grace_needs_inside_fixes_spanning_grace_s_without_an_outside_fix_between() {
        let mut zs = zones();
        zs[0].grace_s = 120;
        let w = World::new(zs);
        let b = t0() + 12 * HOUR;
        let (i, o) = (Some(p(0.0, 0.0)), Some(p(900.0, 0.0)));
        // 90 s inside, then out: nothing
        let short = [fix(b, i), fix(b + 90 * S, i), fix(b + 100 * S, o)];
        assert!(run(&w, &short, None).keys().is_empty());
        // broken by an outside fix, then 120 s inside: the episode starts at the second run
        let long = [
            fix(b, i),
            fix(b + 60 * S, o),
            fix(b + 100 * S, i),
            fix(b + 160 * S, i),
            fix(b + 220 * S, i),
            fix(b + 300 * S, o),
        ];
        assert_eq!(
            run(&w, &long, None).keys(),
            BTreeSet::from([(X, Some(1), b + 100 * S, Some(b + 300 * S))])
        );
    }

    #[test]
    fn a_zone_raises_nothing_outside_its_validity_and_a_breach_ends_when_it_is_deleted() {
        let b = t0() + 12 * HOUR;
        let mut zs = zones();
        zs[0].valid_from_us = b + 10 * MIN;
        zs[0].valid_to_us = Some(b + 30 * MIN);
        let w = World::new(zs);
        let i = Some(p(0.0, 0.0));
        let fixes: Vec<EvalFix> = (0..8).map(|k| fix(b + k * 5 * MIN, i)).collect();
        assert_eq!(
            run(&w, &fixes, None).keys(),
            BTreeSet::from([(X, Some(1), b + 10 * MIN, Some(b + 30 * MIN))])
        );
    }

    #[test]
    fn a_breach_in_a_zone_deleted_later_is_ended_at_its_valid_to_by_the_sweep() {
        let b = t0() + 12 * HOUR;
        let mut w = World::new(zones());
        let mut eng = DeviceEngine::new();
        let mut st = Store::default();
        st.deliver(&mut eng, &[fix(b, Some(p(0.0, 0.0)))], &w.ctx());
        let mut zs = zones();
        zs[0].valid_to_us = Some(b + 5 * MIN);
        w.index = ZoneIndex::build(zs);
        let ev = eng.sweep(b + 6 * MIN, &w.ctx());
        st.events(ev);
        assert_eq!(
            st.keys(),
            BTreeSet::from([(X, Some(1), b, Some(b + 5 * MIN))])
        );
    }

    #[test]
    fn an_exclusion_with_a_schedule_ends_at_the_window_end_instant() {
        let mut zs = zones();
        zs.truncate(1);
        zs[0].schedule = Some(schedule("09:00", "17:00"));
        let w = World::new(zs);
        let d = t0();
        let i = Some(p(0.0, 0.0));
        // inside all day, a fix every 25 minutes
        let fixes: Vec<EvalFix> = (0..60)
            .map(|k| fix(d + 8 * HOUR + k * 25 * MIN, i))
            .collect();
        let first_in = d + 8 * HOUR + 3 * 25 * MIN; // 09:15
        let want = BTreeSet::from([(X, Some(1), first_in, Some(d + 17 * HOUR))]);
        assert_eq!(run(&w, &fixes, None).keys(), want);
        // the same ended by a sweep, when the last fix is before the end
        let until_16 = &fixes[..20];
        let st = run(&w, until_16, Some(d + 17 * HOUR + 5 * S));
        assert_eq!(st.keys(), want);
    }

    fn curfew_night(day: &str) -> (World, Vec<EvalFix>, i64) {
        let w = World::new(zones());
        let start = t(&format!("{day}T12:00:00Z"));
        // out (away from home) all night, a fix every 10 minutes for 24 h
        let fixes = (0..144)
            .map(|k| fix(start + k * 10 * MIN, Some(home(500.0))))
            .collect();
        (w, fixes, start)
    }

    #[test]
    fn a_19_to_07_curfew_breach_lasts_11_hours_the_night_clocks_go_forward() {
        let (w, fixes, _) = curfew_night("2026-03-28");
        let keys = run(&w, &fixes, None).keys();
        assert!(
            keys.contains(&(
                C,
                Some(2),
                t("2026-03-28T19:00:00Z"),
                Some(t("2026-03-29T06:00:00Z"))
            )),
            "{keys:?}"
        );
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn a_19_to_07_curfew_breach_lasts_13_hours_the_night_clocks_go_back() {
        let (w, fixes, _) = curfew_night("2026-10-24");
        let keys = run(&w, &fixes, None).keys();
        assert!(
            keys.contains(&(
                C,
                Some(2),
                t("2026-10-24T18:00:00Z"),
                Some(t("2026-10-25T07:00:00Z"))
            )),
            "{keys:?}"
        );
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn a_curfew_breach_can_cross_midnight_and_ends_at_the_first_inside_fix() {
        let w = World::new(zones());
        let d = t0();
        let fixes = [
            fix(d + 22 * HOUR, Some(home(0.0))),
            fix(d + 23 * HOUR + 30 * MIN, Some(home(800.0))),
            fix(d + 24 * HOUR + 10 * MIN, Some(home(700.0))),
            fix(d + 24 * HOUR + 30 * MIN, Some(home(5.0))),
        ];
        assert_eq!(
            run(&w, &fixes, None).keys(),
            BTreeSet::from([(
                C,
                Some(2),
                d + 23 * HOUR + 30 * MIN,
                Some(d + 24 * HOUR + 30 * MIN)
            )])
        );
    }

    #[test]
    fn an_absence_suppresses_the_curfew_and_the_breach_resumes_after_it() {
        let mut w = World::new(zones());
        let d = t0();
        w.absences = vec![Absence {
            from_us: d + 20 * HOUR,
            to_us: d + 22 * HOUR,
        }];
        let out = Some(home(800.0));
        let fixes = [
            fix(d + 19 * HOUR + 30 * MIN, Some(home(0.0))),
            fix(d + 20 * HOUR + 30 * MIN, out),
            fix(d + 21 * HOUR, out),
            fix(d + 22 * HOUR + 30 * MIN, out),
            fix(d + 23 * HOUR, Some(home(0.0))),
        ];
        assert_eq!(
            run(&w, &fixes, None).keys(),
            BTreeSet::from([(C, Some(2), d + 22 * HOUR + 30 * MIN, Some(d + 23 * HOUR))])
        );
    }

    #[test]
    fn a_breach_under_way_when_an_absence_starts_ends_at_the_absence() {
        let mut w = World::new(zones());
        let d = t0();
        w.absences = vec![Absence {
            from_us: d + 20 * HOUR,
            to_us: d + 22 * HOUR,
        }];
        let out = Some(home(800.0));
        let fixes = [
            fix(d + 19 * HOUR + 30 * MIN, out),
            fix(d + 19 * HOUR + 50 * MIN, out),
            fix(d + 21 * HOUR, out),
        ];
        assert_eq!(
            run(&w, &fixes, None).keys(),
            BTreeSet::from([(C, Some(2), d + 19 * HOUR + 30 * MIN, Some(d + 20 * HOUR))])
        );
    }

    #[test]
    fn comms_loss_is_found_by_the_sweep_and_ended_by_the_next_ping() {
        let w = World::new(zones());
        let mut eng = DeviceEngine::new();
        let b = t0() + 12 * HOUR;
        let f = fix(b, Some(p(900.0, 0.0)));
        assert!(matches!(eng.apply(&[f], &w.ctx()), Applied::Events(e) if e.is_empty()));
        let r0 = f.received_us;
        assert!(eng.sweep(r0 + 899 * S, &w.ctx()).is_empty());
        let ev = eng.sweep(r0 + 950 * S, &w.ctx());
        assert_eq!(ev.len(), 1);
        assert!(
            matches!(&ev[0], EpisodeEvent::Opened(e) if e.alert_type == AlertType::CommsLoss && e.started_us == r0 + 900 * S)
        );
        assert!(eng.sweep(r0 + 2000 * S, &w.ctx()).is_empty(), "opened once");
        let g = EvalFix {
            received_us: r0 + 3000 * S,
            ..fix(b + 2900 * S, Some(p(900.0, 0.0)))
        };
        let Applied::Events(ev) = eng.apply(&[g], &w.ctx()) else {
            panic!("in order")
        };
        assert!(
            matches!(&ev[0], EpisodeEvent::Ended(e) if e.alert_type == AlertType::CommsLoss
            && e.started_us == r0 + 900 * S && e.ended_us == Some(r0 + 3000 * S))
        );
    }

    #[test]
    fn no_fix_opens_after_no_fix_s_of_position_less_pings_and_ends_at_the_next_position() {
        let w = World::new(zones());
        let b = t0() + 12 * HOUR;
        let far = Some(p(900.0, 0.0));
        let fixes = [
            fix(b, far),
            fix(b + 300 * S, None),
            fix(b + 600 * S, None),
            fix(b + 900 * S, None),
            fix(b + 960 * S, None),
            fix(b + 1200 * S, None),
            fix(b + 1500 * S, far),
        ];
        let st = run(&w, &fixes, None);
        assert_eq!(
            st.keys(),
            BTreeSet::from([(AlertType::NoFix, None, b + 900 * S, Some(b + 1500 * S))])
        );
        assert_eq!(st.alerts[0].1.evidence_ts, vec![b + 960 * S, b + 1200 * S]);
    }

    #[test]
    fn tamper_and_low_battery_open_and_end_with_hysteresis() {
        let w = World::new(zones());
        let b = t0() + 12 * HOUR;
        let h = |k: i64, tamper: Option<bool>, batt: Option<f64>| EvalFix {
            tamper,
            battery_pct: batt,
            ..fix(b + k * MIN, Some(p(900.0, 0.0)))
        };
        let fixes = [
            h(0, Some(false), Some(30.0)),
            h(1, Some(true), Some(19.0)),
            h(2, None, Some(22.0)),
            h(3, Some(true), Some(24.9)),
            h(4, Some(false), Some(25.0)),
        ];
        assert_eq!(
            run(&w, &fixes, None).keys(),
            BTreeSet::from([
                (AlertType::Tamper, None, b + MIN, Some(b + 4 * MIN)),
                (AlertType::BatteryLow, None, b + MIN, Some(b + 4 * MIN)),
            ])
        );
    }

    #[test]
    fn a_late_outside_fix_splits_a_breach_and_a_late_inside_fix_moves_its_start() {
        let w = World::new(zones());
        let b = t0() + 12 * HOUR;
        let (i, o) = (Some(p(0.0, 0.0)), Some(p(900.0, 0.0)));
        let in_order = [
            fix(b, o),
            fix(b + MIN, o),
            fix(b + 2 * MIN, i),
            fix(b + 3 * MIN, o),
            fix(b + 4 * MIN, i),
            fix(b + 5 * MIN, i),
        ];
        let want = run(&w, &in_order, None).keys();
        assert_eq!(
            want,
            BTreeSet::from([
                (X, Some(1), b + 2 * MIN, Some(b + 3 * MIN)),
                (X, Some(1), b + 4 * MIN, None)
            ])
        );
        // arrival: everything but b+1min and b+3min, then those two late
        let order = [0, 2, 4, 5, 3, 1];
        let fixes: Vec<EvalFix> = order.iter().map(|&k| in_order[k]).collect();
        let st = run(&w, &fixes, None);
        assert_eq!(st.keys(), want);
        assert!(st.replays >= 2);
        assert!(st.alerts.iter().all(|(_, _, withdrawn)| !withdrawn));
        // a late inside fix before the start moves the start earlier
        let order = [0, 2, 3, 4, 5];
        let mut fixes: Vec<EvalFix> = order.iter().map(|&k| in_order[k]).collect();
        fixes.push(fix(b + MIN, i));
        let st = run(&w, &fixes, None);
        assert_eq!(
            st.keys(),
            BTreeSet::from([
                (X, Some(1), b + MIN, Some(b + 3 * MIN)),
                (X, Some(1), b + 4 * MIN, None)
            ])
        );
    }

    #[test]
    fn an_episode_that_late_data_disproves_is_withdrawn() {
        let mut zs = zones();
        zs[0].grace_s = 60;
        let w = World::new(zs);
        let b = t0() + 12 * HOUR;
        let (i, o) = (Some(p(0.0, 0.0)), Some(p(900.0, 0.0)));
        let fixes = [fix(b, i), fix(b + 70 * S, i), fix(b + 30 * S, o)];
        let st = run(&w, &fixes, None);
        assert!(st.keys().is_empty());
        assert_eq!(st.alerts.len(), 1);
        assert!(st.alerts[0].2, "withdrawn");
    }

    #[test]
    fn a_fix_older_than_the_horizon_is_evaluated_on_its_own() {
        let w = World::new(zones());
        let b = t0() + 48 * HOUR;
        let mut eng = DeviceEngine::new();
        let o = Some(p(900.0, 0.0));
        assert!(matches!(
            eng.apply(&[fix(b, o)], &w.ctx()),
            Applied::Events(_)
        ));
        let old = fix(b - 30 * HOUR, Some(p(0.0, 0.0)));
        let Applied::Events(ev) = eng.apply(&[old], &w.ctx()) else {
            panic!("no replay beyond the horizon")
        };
        assert_eq!(ev.len(), 1);
        assert!(
            matches!(&ev[0], EpisodeEvent::Opened(e) if e.started_us == old.ts_us && e.ended_us == Some(old.ts_us))
        );
        assert_eq!(eng.newest_ts_us(), Some(b));
    }

    #[test]
    fn a_restart_replay_on_a_fresh_engine_keeps_the_stored_start_of_an_ongoing_breach() {
        let w = World::new(zones());
        let b = t0() + 12 * HOUR;
        let i = Some(p(0.0, 0.0));
        let fixes: Vec<EvalFix> = (0..20).map(|k| fix(b + k * MIN, i)).collect();
        let before = run(&w, &fixes, None);
        // restart: only the last 10 fixes are within the reloaded range
        let mut eng = DeviceEngine::new();
        let new = eng.replay(&fixes[10..], &w.ctx());
        assert!(new[0].may_have_started_earlier);
        let r = reconcile(&before.known(fixes[10].ts_us), &new);
        match &r[0] {
            Reconciled::Update { episode, .. } => assert_eq!(episode.started_us, b),
            other => panic!("expected an update keeping the start, got {other:?}"),
        }
        eng.adopt(&r);
        let Applied::Events(ev) = eng.apply(&[fix(b + 30 * MIN, Some(p(900.0, 0.0)))], &w.ctx())
        else {
            panic!("in order")
        };
        assert!(
            matches!(&ev[0], EpisodeEvent::Ended(e) if e.started_us == b && e.ended_us == Some(b + 30 * MIN))
        );
    }

    #[test]
    fn replay_memory_is_bounded_by_the_horizon() {
        let w = World::new(zones());
        let mut eng = DeviceEngine::new();
        let b = t0();
        for k in 0..(72 * 60) {
            let _ = eng.apply(&[fix(b + k * MIN, Some(p(900.0, 0.0)))], &w.ctx());
        }
        assert!(eng.checkpoints.len() <= 26, "{}", eng.checkpoints.len());
    }

    mod order_independence {
        use super::*;
        use proptest::prelude::*;

        /// zone 1 exclusion (no grace), zone 3 exclusion with grace 120 s and a schedule of
        /// half-hour windows every hour, zone 2 the home curfew 19:00–07:00; an absence.
        fn world() -> World {
            let mut zs = zones();
            let mut z3 = zone(
                3,
                1,
                ZoneKind::Exclusion,
                Shape::Circle {
                    center: p(0.0, 1000.0),
                    radius_m: 150.0,
                },
            );
            z3.grace_s = 120;
            let windows: Vec<serde_json::Value> = (0..24)
                .map(|h| {
                    serde_json::json!({"days":["mon","tue","wed","thu","fri","sat","sun"],
                    "start": format!("{h:02}:00"), "end": format!("{h:02}:30")})
                })
                .collect();
            z3.schedule = Some(
                serde_json::from_value::<Schedule>(
                    serde_json::json!({"timezone":"Europe/London","windows":windows}),
                )
                .expect("json")
                .compile()
                .expect("valid"),
            );
            zs.push(z3);
            let mut w = World::new(zs);
            let b = t("2026-03-28T17:00:00Z");
            w.absences = vec![Absence {
                from_us: b + 4 * HOUR,
                to_us: b + 4 * HOUR + 40 * MIN,
            }];
            w.config.no_fix_s = 600;
            w.config.checkpoint_s = 1800;
            w
        }

        fn position(k: u8) -> Option<LatLon> {
            match k {
                0 => Some(p(0.0, 0.0)),     // in zone 1
                1 => Some(p(0.0, 1000.0)),  // in zone 3
                2 => Some(home(0.0)),       // at home
                3 => Some(p(-3000.0, 0.0)), // away from everything
                4 => Some(p(200.0, 0.0)),   // zone 1's boundary: uncertain
                _ => None,
            }
        }

        fn make(spec: &[(i64, u8, u8, u8)]) -> Vec<EvalFix> {
            let b = t("2026-03-28T17:00:00Z");
            let mut seen = BTreeSet::new();
            spec.iter()
                .filter(|(off, ..)| seen.insert(*off))
                .map(|&(off, pos, tamper, batt)| EvalFix {
                    tamper: [None, Some(true), Some(false)][tamper as usize % 3],
                    battery_pct: [None, Some(10.0), Some(22.0), Some(40.0)][batt as usize % 4],
                    ..fix(b + off * S, position(pos))
                })
                .collect()
        }

        struct Outcome {
            want: BTreeSet<Key>,
            got: BTreeSet<Key>,
            replays: usize,
            withdrawn: usize,
        }

        fn check(
            spec: &[(i64, u8, u8, u8)],
            perm_seed: u64,
            chunks: &[usize],
            sweep_lag_s: Option<i64>,
        ) -> Outcome {
            let w = world();
            let fixes = make(spec);
            let mut sorted = fixes.clone();
            sorted.sort_by_key(|f| f.ts_us);
            let end = sorted.last().map_or(0, |f| f.ts_us) + 48 * HOUR;
            let want = run(&w, &sorted, Some(end)).keys();

            // a seeded permutation, delivered in chunks, sweeping between deliveries
            let mut shuffled = fixes.clone();
            let mut s = perm_seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut eng = DeviceEngine::new();
            let mut st = Store::default();
            let (mut at, mut c, mut max_ts) = (0, 0, i64::MIN);
            while at < shuffled.len() {
                let n = chunks[c % chunks.len()].min(shuffled.len() - at);
                c += 1;
                let batch = &shuffled[at..at + n];
                at += n;
                st.deliver(&mut eng, batch, &w.ctx());
                max_ts = max_ts.max(batch.iter().map(|f| f.ts_us).max().unwrap_or(i64::MIN));
                if let Some(lag) = sweep_lag_s {
                    let ev = eng.sweep(max_ts + lag * S, &w.ctx());
                    st.events(ev);
                }
            }
            let ev = eng.sweep(end, &w.ctx());
            st.events(ev);
            Outcome {
                want,
                got: st.keys(),
                replays: st.replays,
                withdrawn: st.alerts.iter().filter(|a| a.2).count(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
            #[test]
            fn any_arrival_order_gives_the_same_alerts_as_in_order_evaluation(
                spec in prop::collection::vec((0i64..8 * 3600, 0u8..6, 0u8..6, 0u8..8), 1..80),
                perm_seed in any::<u64>(),
                chunks in prop::collection::vec(1usize..6, 1..40),
                sweep_lag_s in prop::option::of(0i64..4000),
            ) {
                let o = check(&spec, perm_seed, &chunks, sweep_lag_s);
                prop_assert_eq!(o.got, o.want);
            }
        }

        #[test]
        fn the_order_property_exercises_replays_withdrawals_and_every_fix_time_rule() {
            use rand::{rngs::StdRng, Rng, SeedableRng};
            let mut rng = StdRng::seed_from_u64(42);
            let (mut replays, mut withdrawn, mut types) = (0, 0, BTreeSet::new());
            for _ in 0..60 {
                let spec: Vec<(i64, u8, u8, u8)> = (0..rng.gen_range(20..80))
                    .map(|_| {
                        (
                            rng.gen_range(0..8 * 3600),
                            rng.gen_range(0..6),
                            rng.gen_range(0..6),
                            rng.gen_range(0..8),
                        )
                    })
                    .collect();
                let lag = rng.gen_bool(0.5).then(|| rng.gen_range(0..4000));
                let o = check(&spec, rng.gen(), &[1, 3, 2], lag);
                assert_eq!(o.got, o.want);
                replays += o.replays;
                withdrawn += o.withdrawn;
                types.extend(o.want.iter().map(|k| k.0));
            }
            assert!(replays > 100, "{replays}");
            assert!(withdrawn > 0);
            assert_eq!(types.len(), 5, "{types:?}");
        }
    }
}
