//! The pure diff between stored alerts and re-evaluated episodes, after a replay or at
//! restart.
//!
//! Matching: an old alert and a new episode of the same type and zone whose time intervals
//! overlap (closed intervals, an open end = +∞) are the same alert. Exact identity
//! (same start) is matched first, then overlaps in start order; each side is matched at most
//! once. Matched: `Unchanged` if start, end and evidence count agree, else `Update`.
//! Unmatched old: `Withdraw` with a reason (SPEC §3: never deleted). Unmatched new: `Open`
//! (the caller sets `detected_late`).
//!
//! Comms loss is server time and outside replay: entries of that type on either side are
//! ignored (never withdrawn, never opened here).
//!
//! When the new episode is flagged `may_have_started_earlier` (a replay on a fresh engine
//! could not see the beginning) and the stored alert started earlier, the stored start is
//! kept, and the evidence count never drops below the stored one.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::engine::{AlertType, Episode};

/// A stored alert, as much as reconciliation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEpisode {
    pub alert_id: i64,
    pub alert_type: AlertType,
    pub zone_id: Option<i64>,
    pub started_us: i64,
    pub ended_us: Option<i64>,
    /// (added field) stored evidence count, so added evidence counts as a change
    pub evidence_count: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reconciled {
    Unchanged { alert_id: i64 },
    Update { alert_id: i64, episode: Episode },
    Withdraw { alert_id: i64, reason: String },
    Open(Episode),
}

fn overlaps(a: (i64, Option<i64>), b: (i64, Option<i64>)) -> bool {
    a.0 <= b.1.unwrap_or(i64::MAX) && b.0 <= a.1.unwrap_or(i64::MAX)
}

fn rfc3339(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us).map_or_else(
        || us.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

pub fn reconcile(old: &[KnownEpisode], new: &[Episode]) -> Vec<Reconciled> {
    let mut olds: Vec<&KnownEpisode> = old
        .iter()
        .filter(|o| o.alert_type != AlertType::CommsLoss)
        .collect();
    olds.sort_by_key(|o| (o.started_us, o.alert_id));
    let mut news: Vec<&Episode> = new
        .iter()
        .filter(|n| n.alert_type != AlertType::CommsLoss)
        .collect();
    news.sort_by_key(|n| (n.started_us, n.alert_type, n.zone_id));

    let same_kind =
        |o: &KnownEpisode, n: &Episode| o.alert_type == n.alert_type && o.zone_id == n.zone_id;
    let mut pair: Vec<Option<usize>> = vec![None; olds.len()];
    let mut taken = vec![false; news.len()];
    for (oi, o) in olds.iter().enumerate() {
        if let Some(ni) = (0..news.len())
            .find(|&ni| !taken[ni] && same_kind(o, news[ni]) && news[ni].started_us == o.started_us)
        {
            pair[oi] = Some(ni);
            taken[ni] = true;
        }
    }
    for (oi, o) in olds.iter().enumerate() {
        if pair[oi].is_some() {
            continue;
        }
        if let Some(ni) = (0..news.len()).find(|&ni| {
            !taken[ni]
                && same_kind(o, news[ni])
                && overlaps(
                    (o.started_us, o.ended_us),
                    (news[ni].started_us, news[ni].ended_us),
                )
        }) {
            pair[oi] = Some(ni);
            taken[ni] = true;
        }
    }

    let mut out = Vec::with_capacity(olds.len() + news.len());
    for (oi, o) in olds.iter().enumerate() {
        match pair[oi] {
            Some(ni) => {
                let mut ep = news[ni].clone();
                // a restart replay could not see the start: keep the stored one, and always
                // report an Update so that `DeviceEngine::adopt` learns it
                let kept_start = ep.may_have_started_earlier && o.started_us < ep.started_us;
                if kept_start {
                    ep.started_us = o.started_us;
                    ep.evidence_count = ep.evidence_count.max(o.evidence_count);
                    ep.may_have_started_earlier = false;
                }
                if !kept_start
                    && ep.started_us == o.started_us
                    && ep.ended_us == o.ended_us
                    && ep.evidence_count == o.evidence_count
                {
                    out.push(Reconciled::Unchanged {
                        alert_id: o.alert_id,
                    });
                } else {
                    out.push(Reconciled::Update {
                        alert_id: o.alert_id,
                        episode: ep,
                    });
                }
            }
            None => {
                let until = o.ended_us.map_or_else(|| "ongoing".to_string(), rfc3339);
                out.push(Reconciled::Withdraw {
                    alert_id: o.alert_id,
                    reason: format!(
                        "re-evaluation with late fixes found no {} episode overlapping {} – {}",
                        o.alert_type.as_str(),
                        rfc3339(o.started_us),
                        until
                    ),
                });
            }
        }
    }
    for (ni, n) in news.iter().enumerate() {
        if !taken[ni] {
            out.push(Reconciled::Open((*n).clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(t: AlertType, zone: Option<i64>, s: i64, e: Option<i64>, n: u32) -> Episode {
        Episode {
            alert_type: t,
            zone_id: zone,
            started_us: s,
            ended_us: e,
            evidence_ts: vec![s],
            evidence_count: n,
            may_have_started_earlier: false,
        }
    }

    fn known(
        id: i64,
        t: AlertType,
        zone: Option<i64>,
        s: i64,
        e: Option<i64>,
        n: u32,
    ) -> KnownEpisode {
        KnownEpisode {
            alert_id: id,
            alert_type: t,
            zone_id: zone,
            started_us: s,
            ended_us: e,
            evidence_count: n,
        }
    }

    const X: AlertType = AlertType::ExclusionBreach;

    #[test]
    fn identical_episodes_are_unchanged_and_a_changed_end_is_an_update() {
        let old = [
            known(1, X, Some(7), 10, Some(20), 3),
            known(2, X, Some(7), 30, None, 2),
        ];
        let new = [
            ep(X, Some(7), 10, Some(20), 3),
            ep(X, Some(7), 30, Some(35), 2),
        ];
        let r = reconcile(&old, &new);
        assert_eq!(r[0], Reconciled::Unchanged { alert_id: 1 });
        assert!(
            matches!(&r[1], Reconciled::Update { alert_id: 2, episode } if episode.ended_us == Some(35))
        );
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_breach_split_by_a_late_outside_fix_updates_one_and_opens_the_other() {
        let old = [known(1, X, Some(7), 10, None, 5)];
        let new = [ep(X, Some(7), 10, Some(15), 2), ep(X, Some(7), 18, None, 3)];
        let r = reconcile(&old, &new);
        assert!(
            matches!(&r[0], Reconciled::Update { alert_id: 1, episode } if episode.ended_us == Some(15))
        );
        assert!(matches!(&r[1], Reconciled::Open(e) if e.started_us == 18));
    }

    #[test]
    fn an_episode_late_data_disproves_is_withdrawn_with_a_reason() {
        let old = [
            known(1, X, Some(7), 10, Some(20), 1),
            known(2, AlertType::CommsLoss, None, 5, None, 0),
        ];
        let r = reconcile(&old, &[ep(X, Some(8), 10, Some(20), 1)]);
        assert!(
            matches!(&r[0], Reconciled::Withdraw { alert_id: 1, reason } if reason.contains("exclusion_breach"))
        );
        assert!(matches!(&r[1], Reconciled::Open(e) if e.zone_id == Some(8)));
        assert_eq!(r.len(), 2, "comms loss is ignored");
    }

    #[test]
    fn a_restart_replay_keeps_the_stored_start_of_an_ongoing_breach() {
        let old = [known(1, X, Some(7), 10, None, 40)];
        let mut n = ep(X, Some(7), 100, None, 12);
        n.may_have_started_earlier = true;
        let r = reconcile(&old, &[n]);
        assert!(
            matches!(&r[..], [Reconciled::Update { alert_id: 1, episode }]
            if episode.started_us == 10 && episode.evidence_count == 40)
        );
    }
}
