//! Zone schedules: the serde input type (local wall-clock windows in an IANA time zone) and
//! its validated, compiled form.
//!
//! `{"timezone": "Europe/London", "windows": [{"days": ["mon"], "start": "19:00", "end": "07:00"}]}`
//!
//! Invariants of a [`CompiledSchedule`]: the zone is a known IANA zone; there is at least one
//! window; each window names at least one day; `start` is in 00:00–23:59 and `end` in
//! 00:00–24:00 (`"24:00"` is accepted as an end only, meaning the next midnight). A window
//! whose end is not after its start ends on the next day (so `start == end` is a 24 h
//! window); `days` name the day the window starts. Turning windows into UTC instants is the
//! engine's job (`engine::schedule`).

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid schedule: {reason}")]
pub struct InvalidSchedule {
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> InvalidSchedule {
    InvalidSchedule {
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    /// 0 = Monday … 6 = Sunday (chrono's `num_days_from_monday`).
    pub fn index(self) -> u32 {
        self as u32
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub days: Vec<Day>,
    /// "HH:MM", local time
    pub start: String,
    /// "HH:MM", local time; not after `start` means the next day
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub timezone: String,
    pub windows: Vec<Window>,
}

/// One window with parsed times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledWindow {
    /// bit `d` set = the window starts on day `d` (0 = Monday)
    pub days_mask: u8,
    /// minutes after local midnight, 0..1440
    pub start_min: u16,
    /// minutes after local midnight, 0..=1440
    pub end_min: u16,
}

impl CompiledWindow {
    /// True when the window ends on the day after it starts.
    pub fn crosses_midnight(&self) -> bool {
        self.end_min <= self.start_min
    }
}

/// A validated schedule, ready for `engine::schedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledSchedule {
    pub tz: Tz,
    pub windows: Vec<CompiledWindow>,
}

fn parse_hhmm(s: &str, what: &str, allow_24: bool) -> Result<u16, InvalidSchedule> {
    let b = s.as_bytes();
    let ok = b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
    if !ok {
        return Err(bad(format!("{what} {s:?} is not HH:MM")));
    }
    let h = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
    let m = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
    if allow_24 && h == 24 && m == 0 {
        return Ok(1440);
    }
    if h > 23 || m > 59 {
        let range = if allow_24 {
            "00:00–24:00"
        } else {
            "00:00–23:59"
        };
        return Err(bad(format!("{what} {s:?} is outside {range}")));
    }
    Ok(h * 60 + m)
}

impl Schedule {
    pub fn compile(&self) -> Result<CompiledSchedule, InvalidSchedule> {
        let tz: Tz = self.timezone.parse().map_err(|_| {
            bad(format!(
                "unknown time zone {:?} (use an IANA name such as Europe/London)",
                self.timezone
            ))
        })?;
        if self.windows.is_empty() {
            return Err(bad(
                "a schedule needs at least one window (use null for always active)",
            ));
        }
        let mut windows = Vec::with_capacity(self.windows.len());
        for (i, w) in self.windows.iter().enumerate() {
            if w.days.is_empty() {
                return Err(bad(format!("window {i} names no days")));
            }
            let start_min = parse_hhmm(&w.start, &format!("window {i} start"), false)?;
            let end_min = parse_hhmm(&w.end, &format!("window {i} end"), true)?;
            let days_mask = w.days.iter().fold(0u8, |m, d| m | (1 << d.index()));
            windows.push(CompiledWindow {
                days_mask,
                start_min,
                end_min,
            });
        }
        Ok(CompiledSchedule { tz, windows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(v: serde_json::Value) -> Result<CompiledSchedule, InvalidSchedule> {
        serde_json::from_value::<Schedule>(v)
            .expect("json")
            .compile()
    }

    #[test]
    fn a_nightly_curfew_compiles() {
        let s = compile(json!({"timezone":"Europe/London","windows":[
            {"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"19:00","end":"07:00"}]}))
        .expect("valid");
        assert_eq!(s.tz, chrono_tz::Europe::London);
        assert_eq!(s.windows[0].days_mask, 0b111_1111);
        assert_eq!((s.windows[0].start_min, s.windows[0].end_min), (1140, 420));
        assert!(s.windows[0].crosses_midnight());
    }

    #[test]
    fn unknown_zones_bad_times_and_empty_lists_are_refused() {
        let w = |s: &str, e: &str| json!({"timezone":"Europe/London","windows":[{"days":["mon"],"start":s,"end":e}]});
        assert!(compile(json!({"timezone":"Mars/Olympus","windows":[{"days":["mon"],"start":"19:00","end":"07:00"}]}))
            .expect_err("tz").reason.contains("unknown time zone"));
        assert!(compile(w("25:00", "07:00"))
            .expect_err("h")
            .reason
            .contains("outside"));
        assert!(compile(w("19:60", "07:00"))
            .expect_err("m")
            .reason
            .contains("outside"));
        assert!(compile(w("7:00", "09:00"))
            .expect_err("fmt")
            .reason
            .contains("HH:MM"));
        assert!(compile(w("24:00", "09:00")).is_err());
        assert_eq!(
            compile(w("22:00", "24:00")).expect("24:00 end").windows[0].end_min,
            1440
        );
        assert!(compile(json!({"timezone":"Europe/London","windows":[]})).is_err());
        assert!(compile(json!({"timezone":"Europe/London","windows":[{"days":[],"start":"19:00","end":"07:00"}]}))
            .expect_err("days").reason.contains("no days"));
        assert!(serde_json::from_value::<Schedule>(
            json!({"timezone":"Europe/London","windows":[{"days":["funday"],"start":"19:00","end":"07:00"}]})
        ).is_err());
    }
}
