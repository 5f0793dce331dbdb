//! Schedule windows as UTC intervals (SPEC §1 "Schedule").
//!
//! A window instance starts on a local date named in `days` at `start` and ends at `end` the
//! same day, or the next day when `end` is not after `start`. Local times become instants
//! with the IANA database: a local time that does not exist (spring forward) means the first
//! instant after the gap; an ambiguous one (fall back) means the earlier instant.
//!
//! Invariants:
//! - intervals are half-open `[start_us, end_us)`: a fix at the end instant is outside;
//! - overlapping or touching window instances are merged: the schedule is a set of instants,
//!   and a breach that runs through two back-to-back windows is one episode;
//! - a run of merged windows is looked for at most [`MAX_SPAN_DAYS`] days either side, so a
//!   schedule that is active without a break (every day 00:00–00:00) yields intervals of at
//!   most that length rather than looping forever;
//! - instants within `EDGE_MARGIN_DAYS` (404) of the ends of the calendar (chrono's years
//!   −262143 and 262142, a quarter of a million years from any real fix) are outside every
//!   window, so the date arithmetic of the search never overflows.

use chrono::{
    DateTime, Days, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::model::schedule::CompiledSchedule;

/// How far either side of an instant merged windows are followed.
pub const MAX_SPAN_DAYS: i64 = 400;
/// First search span; every non-empty schedule has a window each week.
const FIRST_SPAN_DAYS: i64 = 8;
/// Days kept clear at each end of the calendar: the search span, a window ending the next day,
/// and a day for the largest offset of local time from UTC.
const EDGE_MARGIN_DAYS: u64 = MAX_SPAN_DAYS as u64 + 4;

const US_PER_S: i64 = 1_000_000;

/// Whether the schedule is active at an instant, and the maximal interval `[from_us,
/// until_us)` around it with the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleStatus {
    pub active: bool,
    pub from_us: i64,
    pub until_us: i64,
}

impl ScheduleStatus {
    pub const ALWAYS: ScheduleStatus = ScheduleStatus {
        active: true,
        from_us: i64::MIN,
        until_us: i64::MAX,
    };
    pub const NEVER: ScheduleStatus = ScheduleStatus {
        active: false,
        from_us: i64::MIN,
        until_us: i64::MAX,
    };

    #[inline]
    pub fn covers(&self, ts_us: i64) -> bool {
        self.from_us <= ts_us && ts_us < self.until_us
    }
}

/// A local wall-clock time as an instant (µs), by the SPEC's DST rules.
pub fn resolve_local(tz: &Tz, local: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.timestamp_micros(),
        LocalResult::Ambiguous(a, b) => a.timestamp_micros().min(b.timestamp_micros()),
        LocalResult::None => first_instant_at_or_after(tz, local),
    }
}

/// Smallest instant whose local wall-clock time is at or after `local` (the end of the gap
/// that `local` falls in). Binary search over whole seconds: zone transitions happen on whole
/// seconds, and local time is monotonic within ±26 h of a spring-forward gap (no zone in the
/// database falls back within a day of springing forward).
fn first_instant_at_or_after(tz: &Tz, local: NaiveDateTime) -> i64 {
    let naive_s = local.and_utc().timestamp();
    let (mut lo, mut hi) = (naive_s - 26 * 3600, naive_s + 26 * 3600);
    let local_at = |s: i64| -> Option<NaiveDateTime> {
        DateTime::<Utc>::from_timestamp(s, 0).map(|u| u.with_timezone(tz).naive_local())
    };
    // invariant: local(lo) < local ≤ local(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match local_at(mid) {
            Some(l) if l >= local => hi = mid,
            Some(_) => lo = mid,
            None => return mid * US_PER_S,
        }
    }
    hi * US_PER_S
}

/// `[first, end)` in µs: the instants whose schedule status is computed; the rest of the
/// calendar is left to `EDGE_MARGIN_DAYS`.
fn computed_range() -> (i64, i64) {
    let us =
        |d: Option<NaiveDate>| d.map(|d| d.and_time(NaiveTime::MIN).and_utc().timestamp_micros());
    let margin = Days::new(EDGE_MARGIN_DAYS);
    (
        us(NaiveDate::MIN.checked_add_days(margin)).unwrap_or(i64::MIN),
        us(NaiveDate::MAX.checked_sub_days(margin)).unwrap_or(i64::MAX),
    )
}

fn at_minutes(date: NaiveDate, minutes: u16) -> NaiveDateTime {
    date.and_time(chrono::NaiveTime::MIN) + Duration::minutes(i64::from(minutes))
}

impl CompiledSchedule {
    /// Window instances starting on local dates `[first, last]`, merged and sorted.
    fn merged_instances(&self, first: NaiveDate, last: NaiveDate) -> Vec<(i64, i64)> {
        use chrono::Datelike;
        let mut out: Vec<(i64, i64)> = Vec::new();
        let mut d = first;
        while d <= last {
            let wd = d.weekday().num_days_from_monday();
            for w in &self.windows {
                if w.days_mask & (1 << wd) == 0 {
                    continue;
                }
                let start = resolve_local(&self.tz, at_minutes(d, w.start_min));
                let end_date = if w.crosses_midnight() {
                    d.succ_opt().unwrap_or(d)
                } else {
                    d
                };
                let end = resolve_local(&self.tz, at_minutes(end_date, w.end_min));
                if end > start {
                    out.push((start, end));
                }
            }
            match d.succ_opt() {
                Some(n) => d = n,
                None => break,
            }
        }
        out.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(out.len());
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    fn local_date(&self, ts_us: i64) -> Option<NaiveDate> {
        DateTime::<Utc>::from_timestamp_micros(ts_us)
            .map(|u| u.with_timezone(&self.tz).date_naive())
    }

    /// Active or not at `ts_us`, with the maximal constant interval around it.
    pub fn status_at(&self, ts_us: i64) -> ScheduleStatus {
        let (first, end) = computed_range();
        if ts_us < first {
            return ScheduleStatus {
                active: false,
                from_us: i64::MIN,
                until_us: first,
            };
        }
        if ts_us >= end {
            return ScheduleStatus {
                active: false,
                from_us: end,
                until_us: i64::MAX,
            };
        }
        let Some(d) = self.local_date(ts_us) else {
            return ScheduleStatus::NEVER;
        };
        let mut span = FIRST_SPAN_DAYS;
        loop {
            let merged = self.merged_instances(d - Duration::days(span), d + Duration::days(span));
            let last_try = span >= MAX_SPAN_DAYS;
            // index of the first interval that ends after ts
            let i = merged.partition_point(|&(_, e)| e <= ts_us);
            let at_edge = i == 0 || i + 1 >= merged.len();
            if let Some(&(s, e)) = merged.get(i) {
                if s <= ts_us {
                    if !at_edge || last_try {
                        return ScheduleStatus {
                            active: true,
                            from_us: s,
                            until_us: e,
                        };
                    }
                } else if i > 0 || last_try {
                    let from = if i > 0 { merged[i - 1].1 } else { i64::MIN };
                    return ScheduleStatus {
                        active: false,
                        from_us: from,
                        until_us: s,
                    };
                }
            } else if last_try {
                let from = merged.last().map_or(i64::MIN, |&(_, e)| e);
                return ScheduleStatus {
                    active: false,
                    from_us: from,
                    until_us: i64::MAX,
                };
            }
            span = (span * 4).min(MAX_SPAN_DAYS);
        }
    }

    /// The (merged) window instance containing `ts_us`, as `[start, end)` in µs.
    pub fn active_window_at(&self, ts_us: i64) -> Option<(i64, i64)> {
        let s = self.status_at(ts_us);
        s.active.then_some((s.from_us, s.until_us))
    }

    /// Merged window instances overlapping `[from_us, to_us)`, in time order.
    pub fn windows_overlapping(&self, from_us: i64, to_us: i64) -> Vec<(i64, i64)> {
        let (first, end) = computed_range();
        let (from_us, to_us) = (from_us.max(first), to_us.min(end));
        if from_us >= to_us {
            return Vec::new();
        }
        let (Some(a), Some(b)) = (self.local_date(from_us), self.local_date(to_us)) else {
            return Vec::new();
        };
        self.merged_instances(a - Duration::days(2), b + Duration::days(1))
            .into_iter()
            .filter(|&(s, e)| s < to_us && e > from_us)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schedule::Schedule;
    use serde_json::json;

    pub(crate) fn us(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("time")
            .timestamp_micros()
    }

    fn sched(days: &[&str], start: &str, end: &str) -> CompiledSchedule {
        serde_json::from_value::<Schedule>(json!({"timezone":"Europe/London",
            "windows":[{"days":days,"start":start,"end":end}]}))
        .expect("json")
        .compile()
        .expect("valid")
    }

    const H: i64 = 3600 * US_PER_S;

    #[test]
    fn a_19_to_07_curfew_lasts_11_hours_the_night_clocks_go_forward() {
        let s = sched(&["sat"], "19:00", "07:00");
        let (a, b) = s
            .active_window_at(us("2026-03-28T23:00:00Z"))
            .expect("active");
        assert_eq!(a, us("2026-03-28T19:00:00Z"));
        assert_eq!(b, us("2026-03-29T06:00:00Z"));
        assert_eq!(b - a, 11 * H);
    }

    #[test]
    fn a_19_to_07_curfew_lasts_13_hours_the_night_clocks_go_back() {
        let s = sched(&["sat"], "19:00", "07:00");
        let (a, b) = s
            .active_window_at(us("2026-10-25T03:00:00Z"))
            .expect("active");
        assert_eq!(a, us("2026-10-24T18:00:00Z"));
        assert_eq!(b, us("2026-10-25T07:00:00Z"));
        assert_eq!(b - a, 13 * H);
    }

    #[test]
    fn a_window_across_midnight_belongs_to_its_start_day() {
        // Monday 22:00 – Tuesday 02:00 (winter, UTC = local).
        let s = sched(&["mon"], "22:00", "02:00");
        assert_eq!(
            s.active_window_at(us("2026-01-13T01:30:00Z")),
            Some((us("2026-01-12T22:00:00Z"), us("2026-01-13T02:00:00Z")))
        );
        // Tuesday night is not in the schedule.
        assert_eq!(s.active_window_at(us("2026-01-13T23:00:00Z")), None);
        // End instant is outside.
        assert_eq!(s.active_window_at(us("2026-01-13T02:00:00Z")), None);
        let st = s.status_at(us("2026-01-13T12:00:00Z"));
        assert!(!st.active);
        assert_eq!(st.from_us, us("2026-01-13T02:00:00Z"));
        assert_eq!(st.until_us, us("2026-01-19T22:00:00Z"));
    }

    #[test]
    fn a_window_starting_in_the_spring_gap_starts_when_the_gap_ends() {
        // 01:30 does not exist in London on 2026-03-29; the gap ends at 02:00 BST = 01:00Z.
        let s = sched(&["sun"], "01:30", "05:00");
        let (a, b) = s
            .active_window_at(us("2026-03-29T02:00:00Z"))
            .expect("active");
        assert_eq!(a, us("2026-03-29T01:00:00Z"));
        assert_eq!(b, us("2026-03-29T04:00:00Z"));
    }

    #[test]
    fn an_ambiguous_start_in_the_autumn_means_the_earlier_instant() {
        // 01:30 happens twice in London on 2026-10-25: 00:30Z (BST) and 01:30Z (GMT).
        let s = sched(&["sun"], "01:30", "03:00");
        let (a, _) = s
            .active_window_at(us("2026-10-25T02:00:00Z"))
            .expect("active");
        assert_eq!(a, us("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn touching_windows_merge_into_one_interval() {
        let s = serde_json::from_value::<Schedule>(json!({"timezone":"Europe/London","windows":[
            {"days":["mon"],"start":"19:00","end":"07:00"},
            {"days":["tue"],"start":"07:00","end":"09:00"}]}))
        .expect("json")
        .compile()
        .expect("valid");
        assert_eq!(
            s.active_window_at(us("2026-01-13T08:00:00Z")),
            Some((us("2026-01-12T19:00:00Z"), us("2026-01-13T09:00:00Z")))
        );
        assert_eq!(
            s.windows_overlapping(us("2026-01-12T00:00:00Z"), us("2026-01-20T00:00:00Z")),
            vec![
                (us("2026-01-12T19:00:00Z"), us("2026-01-13T09:00:00Z")),
                (us("2026-01-19T19:00:00Z"), us("2026-01-20T09:00:00Z"))
            ]
        );
    }

    #[test]
    fn instants_at_the_ends_of_the_calendar_are_inactive_not_a_panic() {
        // found by the zone_schedule fuzz target seeded with the calendar's last day
        // (fuzz/regressions/zone_schedule/): the search overflowed `NaiveDate + TimeDelta`
        let s = sched(
            &["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "19:00",
            "24:00",
        );
        let last_day = NaiveDate::MAX.and_time(chrono::NaiveTime::MIN).and_utc();
        let first_day = NaiveDate::MIN.and_time(chrono::NaiveTime::MIN).and_utc();
        for ts in [
            last_day.timestamp_micros(),
            last_day.timestamp_micros() - 400 * 24 * H,
            first_day.timestamp_micros(),
            first_day.timestamp_micros() + 400 * 24 * H,
            i64::MIN,
            i64::MAX - 1,
        ] {
            let st = s.status_at(ts);
            assert!(!st.active && st.covers(ts), "{ts}: {st:?}");
            assert!(s
                .windows_overlapping(ts, ts.saturating_add(24 * H))
                .is_empty());
        }
        // far from the ends, schedules still work
        let far = us("9999-06-01T20:00:00Z");
        assert!(s.status_at(far).active);
        assert_eq!(s.windows_overlapping(far, far + H).len(), 1);
    }

    #[test]
    fn an_always_on_schedule_gives_long_but_finite_intervals() {
        let s = sched(
            &["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "00:00",
            "00:00",
        );
        let st = s.status_at(us("2026-06-01T12:00:00Z"));
        assert!(st.active);
        assert!(st.until_us - st.from_us > 300 * 24 * H);
    }
}
