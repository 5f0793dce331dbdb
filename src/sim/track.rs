//! One device's fixes from its subject's timeline, and the ground truth they cause.
//!
//! Noise is Gaussian with σ = accuracy/2 per axis, clamped to the accuracy, so a reported
//! position is never further from the truth than its own accuracy (spikes aside, which
//! report an accuracy 1.5–2.5 times their displacement). The truth is a direct evaluation of
//! the SPEC §3 rules over the emitted fixes in fix-time order.

use chrono::TimeDelta;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::plan::{mix, FleetPlan, Mode, Model, Seg, SegKind};
use super::shape::{Classification, Shape, Xy};
use super::{FixKind, SimPing, Track, TruthEvent, TruthKind, ZoneKind, BORDERLINE_M};
use crate::geodesy::LatLon;

/// A fix counts as a witness when it is clear of the boundary by its accuracy plus this.
pub(super) const WITNESS_MARGIN_M: f64 = 20.0;

/// Where the subject truly is at one instant.
struct State {
    p: Xy,
    /// `(speed, heading_deg, mode)` while moving.
    moving: Option<(f64, f64, Mode)>,
    home: bool,
    night: bool,
}

fn eval(seg: &Seg, t: f64) -> State {
    match seg.kind {
        SegKind::Stay {
            at,
            jitter_m,
            home,
            night,
            phase,
        } => {
            // A slow wander around the anchor, within the jitter radius.
            let w = 0.7 * jitter_m;
            State {
                p: (
                    at.0 + w * (t / 311.0 + phase).sin(),
                    at.1 + w * (t / 523.0 + 1.7 * phase).cos(),
                ),
                moving: None,
                home,
                night,
            }
        }
        SegKind::Move {
            a,
            via,
            b,
            mode,
            speed_mps,
        } => {
            let l1 = (via.0 - a.0).hypot(via.1 - a.1);
            let l2 = (b.0 - via.0).hypot(b.1 - via.1);
            let s = ((t - seg.t0) * speed_mps).clamp(0.0, l1 + l2);
            let (from, to, f) = if s < l1 || l2 == 0.0 {
                (a, via, if l1 > 0.0 { s / l1 } else { 0.0 })
            } else {
                (via, b, (s - l1) / l2)
            };
            let (dx, dy) = (to.0 - from.0, to.1 - from.1);
            State {
                p: (from.0 + f * dx, from.1 + f * dy),
                moving: Some((speed_mps, dx.atan2(dy).to_degrees().rem_euclid(360.0), mode)),
                home: false,
                night: false,
            }
        }
    }
}

fn gaussian_pair(rng: &mut StdRng) -> (f64, f64) {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    let r = (-2.0 * u1.ln()).sqrt();
    let a = std::f64::consts::TAU * u2;
    (r * a.cos(), r * a.sin())
}

/// Rounds to `1/per_unit` steps, dividing last so the result prints as a short decimal.
fn round_to(x: f64, per_unit: f64) -> f64 {
    (x * per_unit).round() / per_unit
}

/// Whether a fix sits within [`BORDERLINE_M`] of flipping its classification against `s`.
fn borderline(s: &Shape, q: Xy, acc: f64) -> bool {
    if s.clear_of(q, acc + 2.0 * BORDERLINE_M) {
        return false;
    }
    (s.signed_distance(q).abs() - acc).abs() < BORDERLINE_M
}

impl FleetPlan {
    /// Device `i`'s pings (in fix-time order) and ground truth. Deterministic for the seed.
    pub fn track(&self, i: usize) -> Track {
        let cfg = &self.config;
        let m = &self.models[i];
        let mut rng = StdRng::seed_from_u64(mix(cfg.seed, i as u64, 2));
        let interval = i64::from(cfg.interval_s);
        let dur_s = cfg.duration.num_milliseconds() as f64 / 1000.0;
        // A per-device phase, so fixes rarely fall on whole minutes (window edges).
        let phase = if interval > 1 {
            rng.gen_range(1..interval)
        } else {
            0
        };
        let n = ((dur_s - phase as f64) / interval as f64).ceil().max(0.0) as usize;
        let p_spike = (cfg.spikes_per_day * interval as f64 / 86_400.0).clamp(0.0, 1.0);

        let mut gaps = Vec::new();
        if cfg.gaps_per_day > 0.0 {
            let mean = 86_400.0 / cfg.gaps_per_day;
            let mut t = 0.0;
            loop {
                t += -mean * (1.0 - rng.gen::<f64>()).ln();
                if t >= dur_s {
                    break;
                }
                // Shorter than the default comms-loss / no-fix thresholds (900 s).
                let len = rng.gen_range(180.0..720.0);
                gaps.push((t, t + len));
                t += len;
            }
        }

        let mut battery = match m.low_battery_h {
            Some(h) => (20.0 + 7.0 * h).clamp(25.0, 100.0),
            None => m.battery0,
        };
        let mut low_mode = m.low_battery_h.is_some();
        let mut plug_at: Option<f64> = None;

        let mut tsec = Vec::with_capacity(n);
        let mut deliver = Vec::with_capacity(n);
        let mut xys = Vec::with_capacity(n);
        let mut pings: Vec<SimPing> = Vec::with_capacity(n);
        let mut j = 0usize;
        let mut prev_t = phase as f64;
        let tl = &m.timeline;
        for k in 0..n {
            let ts = phase + k as i64 * interval;
            let t = ts as f64;
            while j + 1 < tl.len() && tl[j].t1 <= t {
                j += 1;
            }
            let st = eval(&tl[j], t);

            // Battery: drains ~2 %/h, charges at home overnight; a low-battery tag drains
            // ~7 %/h with no charge until it is plugged in a while after crossing 20 %.
            let dt_h = (t - prev_t) / 3600.0;
            prev_t = t;
            let charging;
            if low_mode {
                match plug_at {
                    Some(p) if t >= p => {
                        charging = true;
                        battery = (battery + 20.0 * dt_h).min(100.0);
                        if battery >= 100.0 {
                            low_mode = false;
                        }
                    }
                    _ => {
                        charging = false;
                        battery = (battery - 7.0 * dt_h).max(1.0);
                        if battery < 20.0 && plug_at.is_none() {
                            plug_at = Some(t + rng.gen_range(1_800.0..7_200.0));
                        }
                    }
                }
            } else {
                charging = st.home && st.night;
                battery = if charging {
                    (battery + 15.0 * dt_h).min(100.0)
                } else {
                    battery - 2.0 * dt_h
                };
            }
            let tamper = m.tamper.is_some_and(|(a, b)| t >= a && t < b);

            let (acc_range, fix) = match st.moving {
                _ if st.home => (
                    (5.0, 15.0),
                    if rng.gen_bool(0.3) {
                        FixKind::Wifi
                    } else {
                        FixKind::Gps
                    },
                ),
                None => ((6.0, 22.0), FixKind::Gps),
                Some((_, _, Mode::Walk)) => ((5.0, 18.0), FixKind::Gps),
                Some(_) => ((8.0, 25.0), FixKind::Gps),
            };
            let spike = rng.gen_bool(p_spike);
            let mut out = (0.0, 0.0, 0.0, (0.0, 0.0));
            for _ in 0..16 {
                let (acc, dx, dy) = if spike {
                    let d = rng.gen_range(300.0..1_500.0);
                    let a = rng.gen_range(0.0..std::f64::consts::TAU);
                    (
                        round_to(d * rng.gen_range(1.5..2.5), 1.0),
                        d * a.cos(),
                        d * a.sin(),
                    )
                } else {
                    let acc = round_to(rng.gen_range(acc_range.0..acc_range.1), 10.0);
                    let (gx, gy) = gaussian_pair(&mut rng);
                    let (mut dx, mut dy) = (gx * acc / 2.0, gy * acc / 2.0);
                    let r = dx.hypot(dy);
                    if r > acc {
                        (dx, dy) = (dx * acc / r, dy * acc / r);
                    }
                    (acc, dx, dy)
                };
                let ll = m.frame.to_latlon(st.p.0 + dx, st.p.1 + dy);
                let (lat, lon) = (round_to(ll.lat, 1e7), round_to(ll.lon, 1e7));
                let q = m.frame.to_xy(LatLon::new(lat, lon));
                out = (lat, lon, acc, q);
                if !m.shapes.iter().any(|s| borderline(s, q, acc)) {
                    break;
                }
            }
            let (lat, lon, acc, q) = out;
            let (speed, heading) = match st.moving {
                Some((v, h, _)) => (
                    round_to(v * rng.gen_range(0.9..1.1), 100.0),
                    Some(round_to(
                        (h + 4.0 * gaussian_pair(&mut rng).0).rem_euclid(360.0),
                        10.0,
                    )),
                ),
                None => (round_to(rng.gen_range(0.0..0.3), 100.0), None),
            };
            tsec.push(ts);
            deliver.push(t + rng.gen_range(1.0..8.0));
            xys.push(q);
            pings.push(SimPing {
                deliver_at: cfg.start,
                subject: i as u32,
                ts: cfg.start + TimeDelta::seconds(ts),
                lat,
                lon,
                accuracy_m: acc as f32,
                fix,
                speed_mps: speed as f32,
                heading_deg: heading.map(|h| h as f32),
                battery_pct: battery.round().clamp(0.0, 100.0) as f32,
                tamper,
                charging,
                spike,
            });
        }

        // Fixes taken during a gap are buffered and uploaded, shuffled, just after the first
        // fix after the gap: they arrive after a newer fix (late, SPEC §3).
        for (g0, g1) in gaps {
            let lo = tsec.partition_point(|&s| (s as f64) < g0);
            let hi = tsec.partition_point(|&s| (s as f64) < g1);
            if lo == hi {
                continue;
            }
            let base = deliver.get(hi).copied().unwrap_or(g1 + 5.0);
            let mut idx: Vec<usize> = (lo..hi).collect();
            idx.shuffle(&mut rng);
            for (q, k) in idx.into_iter().enumerate() {
                deliver[k] = base + 0.5 + 0.2 * q as f64;
            }
        }
        for (p, d) in pings.iter_mut().zip(&deliver) {
            p.deliver_at = cfg.start + TimeDelta::milliseconds((d * 1000.0).round() as i64);
        }

        let truth = self.truth(i, &pings, &tsec, &xys, dur_s);
        Track {
            subject: i,
            pings,
            truth,
        }
    }

    /// SPEC §3 over the fixes in time order, with `grace_s` = 0.
    fn truth(
        &self,
        i: usize,
        pings: &[SimPing],
        tsec: &[i64],
        xys: &[Xy],
        dur_s: f64,
    ) -> Vec<TruthEvent> {
        let subject = &self.subjects[i];
        let m: &Model = &self.models[i];
        let at = |s: f64| self.config.start + TimeDelta::milliseconds((s * 1000.0).round() as i64);
        let mut out = Vec::new();
        let mut push = |kind, zone, start, end, witnesses| {
            out.push(TruthEvent {
                subject: subject.id.clone(),
                device_id: subject.device_id.clone(),
                kind,
                zone,
                start,
                end,
                witnesses,
            })
        };
        for (z, zone) in subject.zones.iter().enumerate() {
            let shape = &m.shapes[z];
            let class = |k: usize| {
                let acc = f64::from(pings[k].accuracy_m);
                let sd = shape.signed_distance(xys[k]);
                (
                    super::shape::classify_signed(sd, acc),
                    sd.abs() >= acc + WITNESS_MARGIN_M,
                )
            };
            match zone.kind {
                ZoneKind::Exclusion => {
                    let mut open: Option<(usize, usize)> = None;
                    for k in 0..pings.len() {
                        if !shape.clear_of(xys[k], f64::from(pings[k].accuracy_m) + 1.0) {
                            match (class(k), &mut open) {
                                ((Classification::Inside, clear), None) => {
                                    open = Some((k, usize::from(clear)))
                                }
                                ((Classification::Inside, clear), Some((_, w))) => {
                                    *w += usize::from(clear)
                                }
                                ((Classification::Outside, _), Some((s, w))) => {
                                    push(
                                        TruthKind::ExclusionBreach,
                                        Some(z),
                                        pings[*s].ts,
                                        Some(pings[k].ts),
                                        *w,
                                    );
                                    open = None;
                                }
                                _ => {}
                            }
                        } else if let Some((s, w)) = open.take() {
                            push(
                                TruthKind::ExclusionBreach,
                                Some(z),
                                pings[s].ts,
                                Some(pings[k].ts),
                                w,
                            );
                        }
                    }
                    if let Some((s, w)) = open {
                        push(TruthKind::ExclusionBreach, Some(z), pings[s].ts, None, w);
                    }
                }
                ZoneKind::Inclusion => {
                    for &(ws, we) in &m.windows {
                        let lo = tsec.partition_point(|&s| (s as f64) < ws);
                        let hi = tsec.partition_point(|&s| (s as f64) < we);
                        let mut open: Option<(usize, usize)> = None;
                        for k in lo..hi {
                            match (class(k), &mut open) {
                                ((Classification::Outside, clear), None) => {
                                    open = Some((k, usize::from(clear)))
                                }
                                ((Classification::Outside, clear), Some((_, w))) => {
                                    *w += usize::from(clear)
                                }
                                ((Classification::Inside, _), Some((s, w))) => {
                                    push(
                                        TruthKind::CurfewBreach,
                                        Some(z),
                                        pings[*s].ts,
                                        Some(pings[k].ts),
                                        *w,
                                    );
                                    open = None;
                                }
                                _ => {}
                            }
                        }
                        if let Some((s, w)) = open {
                            let end = (we <= dur_s).then(|| at(we));
                            push(TruthKind::CurfewBreach, Some(z), pings[s].ts, end, w);
                        }
                    }
                }
            }
        }
        // Device health: tamper true opens, false ends; battery < 20 opens, >= 25 ends.
        let mut run = |opens: &dyn Fn(&SimPing) -> bool, ends: &dyn Fn(&SimPing) -> bool, kind| {
            let mut open: Option<(usize, usize)> = None;
            for (k, p) in pings.iter().enumerate() {
                match &mut open {
                    None if opens(p) => open = Some((k, 1)),
                    Some((_, w)) if opens(p) => *w += 1,
                    Some((s, w)) if ends(p) => {
                        push(kind, None, pings[*s].ts, Some(p.ts), *w);
                        open = None;
                    }
                    _ => {}
                }
            }
            if let Some((s, w)) = open {
                push(kind, None, pings[s].ts, None, w);
            }
        };
        run(&|p| p.tamper, &|p| !p.tamper, TruthKind::Tamper);
        run(
            &|p| p.battery_pct < 20.0,
            &|p| p.battery_pct >= 25.0,
            TruthKind::BatteryLow,
        );
        out.sort_by_key(|e| e.start);
        out
    }
}
