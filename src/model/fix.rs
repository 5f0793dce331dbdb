//! A location report from a tag: the wire form of a ping and its validated form (SPEC §1, §2
//! Ingest).
//!
//! [`PingIn`] is what a device posts; [`PingIn::validate`] turns it into a [`Fix`] or a
//! rejection reason that the API returns item by item. Positions are kept as integer
//! degrees × 10⁷ (about 1 cm), which is what the stores hold and what every reader sees, so a
//! fix reads back exactly as it was evaluated.

use serde::{Deserialize, Serialize};

use super::ids::DeviceId;
use super::time::{self, Micros, MICROS_PER_SEC};

/// How the tag obtained the position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FixSource {
    Gps,
    Wifi,
    Lbs,
    /// A health report without a position.
    None,
}

impl FixSource {
    pub fn code(self) -> i16 {
        match self {
            FixSource::None => 0,
            FixSource::Gps => 1,
            FixSource::Wifi => 2,
            FixSource::Lbs => 3,
        }
    }
    pub fn from_code(c: i16) -> FixSource {
        match c {
            1 => FixSource::Gps,
            2 => FixSource::Wifi,
            3 => FixSource::Lbs,
            _ => FixSource::None,
        }
    }
}

/// One ping as posted to `POST /v1/pings`. Unknown fields are ignored (vendors add their own).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PingIn {
    pub device_id: String,
    /// Fix time, RFC 3339.
    pub ts: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Metres, ≥ 0; kept to 0.01 (as are speed, heading and battery).
    pub accuracy_m: Option<f64>,
    pub fix: Option<FixSource>,
    /// Metres per second, ≥ 0; kept to 0.01.
    pub speed_mps: Option<f64>,
    /// Degrees in [0, 360]; kept to 0.01.
    pub heading_deg: Option<f64>,
    /// Percent in [0, 100]; kept to 0.01.
    pub battery_pct: Option<f64>,
    pub tamper: Option<bool>,
    pub charging: Option<bool>,
}

/// Degrees × 10⁷ as stored.
pub const E7: f64 = 10_000_000.0;

/// A validated fix, ready to store and evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    pub device_id: DeviceId,
    pub ts: Micros,
    /// `(lat_e7, lon_e7)`; `None` for `fix: "none"`.
    pub pos_e7: Option<(i32, i32)>,
    pub accuracy_m: Option<f32>,
    pub source: FixSource,
    pub speed_mps: Option<f32>,
    pub heading_deg: Option<f32>,
    pub battery_pct: Option<f32>,
    pub tamper: Option<bool>,
    pub charging: Option<bool>,
}

impl Fix {
    pub fn lat(&self) -> Option<f64> {
        self.pos_e7.map(|(la, _)| la as f64 / E7)
    }
    pub fn lon(&self) -> Option<f64> {
        self.pos_e7.map(|(_, lo)| lo as f64 / E7)
    }
}

/// The limits a ping's time must respect, fixed per request.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimits {
    pub now: Micros,
    pub retention_s: i64,
}

/// How far in the future a fix time may be (tag clocks drift; SPEC §2: 5 minutes).
pub const MAX_FUTURE_S: i64 = 300;

impl TimeLimits {
    fn check(&self, ts: Micros) -> Result<(), String> {
        if ts > self.now + MAX_FUTURE_S * MICROS_PER_SEC {
            return Err("ts more than 5 min in the future".into());
        }
        if ts < self.now - self.retention_s * MICROS_PER_SEC {
            return Err("ts older than the retention period".into());
        }
        Ok(())
    }
}

/// `v` unless it is not finite or too large for the `f32` the stores keep (past `f32::MAX` it
/// would be stored as infinity and read back as JSON `null`).
fn finite(name: &str, v: Option<f64>) -> Result<Option<f64>, String> {
    match v {
        Some(x) if !x.is_finite() => Err(format!("{name} is not a finite number")),
        Some(x) if x.abs() > f64::from(f32::MAX) => Err(format!("{name} is too large")),
        other => Ok(other),
    }
}

/// `v` rounded to 0.01 (half away from zero) as the stores keep it: accuracy and speed to
/// the centimetre, heading to 0.01°, battery to 0.01 % — as fine as positions (10⁻⁷°, about
/// 1 cm), finer than any tag measures them, and a whole number of hundredths, which SQLite
/// stores in one to three bytes (DECISIONS "Fix values").
pub fn hundredths(v: f64) -> f32 {
    ((v * 100.0).round() / 100.0) as f32
}

/// When a fix of time `ts` received at `now` is kept as received: `ts` plus the lag rounded
/// to whole milliseconds (half up), as the stores keep it — within half a millisecond of
/// the server's clock, which is all the receipt time is for (how late a fix came), and a
/// lag SQLite stores in two to four bytes instead of three to six (DECISIONS "Receipt
/// times").
pub fn received_after(ts: Micros, now: Micros) -> Micros {
    ts.saturating_add(lag_ms(ts, now).saturating_mul(1_000))
}

/// `now − ts` in whole milliseconds, rounded half up: the lag SQLite stores (migration
/// sqlite/0007).
pub fn lag_ms(ts: Micros, now: Micros) -> i64 {
    now.saturating_sub(ts).saturating_add(500).div_euclid(1_000)
}

impl PingIn {
    /// Checks one ping against SPEC §2's per-item rules. The error is the `error` string of
    /// the item's rejection.
    pub fn validate(self, limits: TimeLimits) -> Result<Fix, String> {
        let device_id = DeviceId::parse(self.device_id).map_err(|e| e.to_string())?;
        let ts = time::parse_rfc3339(&self.ts).ok_or("ts is not an RFC 3339 time")?;
        limits.check(ts)?;
        let lat = finite("lat", self.lat)?;
        let lon = finite("lon", self.lon)?;
        let accuracy = finite("accuracy_m", self.accuracy_m)?;
        let speed = finite("speed_mps", self.speed_mps)?;
        let heading = finite("heading_deg", self.heading_deg)?;
        let battery = finite("battery_pct", self.battery_pct)?;
        let source = self.fix.unwrap_or(FixSource::Gps);
        let pos_e7 = match (source, lat, lon) {
            (FixSource::None, _, _) => None,
            (_, Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) {
                    return Err("lat out of range [-90, 90]".into());
                }
                if !(-180.0..=180.0).contains(&lon) {
                    return Err("lon out of range [-180, 180]".into());
                }
                Some(((lat * E7).round() as i32, (lon * E7).round() as i32))
            }
            _ => return Err("lat and lon are required unless fix is \"none\"".into()),
        };
        if let Some(a) = accuracy {
            if a < 0.0 {
                return Err("accuracy_m < 0".into());
            }
        }
        if let Some(b) = battery {
            if !(0.0..=100.0).contains(&b) {
                return Err("battery_pct out of range [0, 100]".into());
            }
        }
        if let Some(s) = speed {
            if s < 0.0 {
                return Err("speed_mps < 0".into());
            }
        }
        if let Some(h) = heading {
            if !(0.0..=360.0).contains(&h) {
                return Err("heading_deg out of range [0, 360]".into());
            }
        }
        Ok(Fix {
            device_id,
            ts,
            pos_e7,
            accuracy_m: accuracy.map(hundredths),
            source,
            speed_mps: speed.map(hundredths),
            heading_deg: heading.map(hundredths),
            battery_pct: battery.map(hundredths),
            tamper: self.tamper,
            charging: self.charging,
        })
    }
}

/// Packs the optional booleans into one small integer column:
/// bit 0 tamper known, bit 1 tamper, bit 2 charging known, bit 3 charging.
pub fn pack_flags(tamper: Option<bool>, charging: Option<bool>) -> i16 {
    let mut f = 0;
    if let Some(t) = tamper {
        f |= 1 | if t { 2 } else { 0 };
    }
    if let Some(c) = charging {
        f |= 4 | if c { 8 } else { 0 };
    }
    f
}

/// Inverse of [`pack_flags`].
pub fn unpack_flags(f: i16) -> (Option<bool>, Option<bool>) {
    let t = (f & 1 != 0).then_some(f & 2 != 0);
    let c = (f & 4 != 0).then_some(f & 8 != 0);
    (t, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TimeLimits {
        TimeLimits {
            now: time::parse_rfc3339("2026-06-01T12:00:00Z").unwrap(),
            retention_s: 365 * 86_400,
        }
    }

    fn ping(json: &str) -> Result<Fix, String> {
        serde_json::from_str::<PingIn>(json)
            .unwrap()
            .validate(limits())
    }

    #[test]
    fn receipt_times_are_kept_to_the_millisecond_after_the_fix_half_up() {
        let ts = 1_000_000_123;
        for (now, lag) in [
            (ts, 0),
            (ts + 499, 0),
            (ts + 500, 1),
            (ts + 1_499, 1),
            (ts + 1_500, 2),
            (ts - 499, 0),
            (ts - 500, 0),
            (ts - 501, -1),
            (ts - 1_500, -1),
            (ts - 1_501, -2),
        ] {
            assert_eq!(lag_ms(ts, now), lag, "{}", now - ts);
            let kept = received_after(ts, now);
            assert_eq!(kept, ts + lag * 1_000);
            assert!((kept - now).abs() <= 500);
        }
        assert_eq!(lag_ms(i64::MIN, i64::MAX), i64::MAX / 1_000);
    }

    #[test]
    fn a_plain_gps_ping_validates() {
        let f = ping(r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z","lat":51.5,"lon":-0.12,"accuracy_m":8}"#).unwrap();
        assert_eq!(f.pos_e7, Some((515_000_000, -1_200_000)));
        assert_eq!(f.source, FixSource::Gps);
    }

    #[test]
    fn measured_values_are_kept_to_hundredths() {
        let f = ping(r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z","lat":51.5,"lon":0,"accuracy_m":12.862000465393066,"speed_mps":1.005,"heading_deg":359.996,"battery_pct":87.25}"#).unwrap();
        assert_eq!(f.accuracy_m, Some(12.86));
        // 1.005 is 1.00499999999999989… in binary: rounds down
        assert_eq!(f.speed_mps, Some(1.0));
        assert_eq!(f.heading_deg, Some(360.0));
        assert_eq!(f.battery_pct, Some(87.25));
        assert_eq!(hundredths(f64::from(f32::MAX)), f32::MAX);
    }

    #[test]
    fn a_number_too_large_for_storage_is_rejected_not_stored_as_infinity() {
        for field in ["accuracy_m", "speed_mps"] {
            let json = format!(
                r#"{{"device_id":"T1","ts":"2026-06-01T11:59:00Z","lat":51.5,"lon":0,"{field}":1e300}}"#
            );
            assert_eq!(ping(&json), Err(format!("{field} is too large")));
        }
        let f = ping(r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z","lat":51.5,"lon":0,"accuracy_m":3.0e38}"#).unwrap();
        assert!(f.accuracy_m.is_some_and(f32::is_finite));
    }

    #[test]
    fn each_rule_rejects_with_its_reason() {
        let cases = [
            (
                r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z","lat":91,"lon":0}"#,
                "lat out of range",
            ),
            (
                r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z","lat":0,"lon":-181}"#,
                "lon out of range",
            ),
            (
                r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z","lat":0,"lon":0,"accuracy_m":-1}"#,
                "accuracy_m < 0",
            ),
            (
                r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z","lat":0,"lon":0,"battery_pct":101}"#,
                "battery_pct out of range",
            ),
            (
                r#"{"device_id":"T1","ts":"2026-06-01T12:06:00Z","lat":0,"lon":0}"#,
                "future",
            ),
            (
                r#"{"device_id":"T1","ts":"2025-05-01T12:00:00Z","lat":0,"lon":0}"#,
                "retention",
            ),
            (
                r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z"}"#,
                "required",
            ),
            (
                r#"{"device_id":"T 1","ts":"2026-06-01T11:59:00Z","lat":0,"lon":0}"#,
                "invalid device id",
            ),
        ];
        for (json, reason) in cases {
            let err = ping(json).unwrap_err();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }

    #[test]
    fn a_health_report_needs_no_position() {
        let f =
            ping(r#"{"device_id":"T1","ts":"2026-06-01T11:59:00Z","fix":"none","battery_pct":15}"#)
                .unwrap();
        assert_eq!(f.pos_e7, None);
    }

    #[test]
    fn flags_round_trip() {
        for t in [None, Some(false), Some(true)] {
            for c in [None, Some(false), Some(true)] {
                assert_eq!(unpack_flags(pack_flags(t, c)), (t, c));
            }
        }
    }
}
