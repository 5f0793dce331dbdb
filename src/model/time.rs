//! Instants as microseconds since the Unix epoch, the unit the engine and stores use.
//!
//! The API speaks RFC 3339 in UTC; inside, an instant is an `i64` of microseconds so that
//! fixes sort, compare and key cheaply and the engine never touches a clock.

use std::sync::OnceLock;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

pub const MICROS_PER_SEC: i64 = 1_000_000;

pub fn to_micros(t: DateTime<Utc>) -> Micros {
    t.timestamp_micros()
}

pub fn from_micros(us: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(us)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// RFC 3339 in UTC with the precision the value needs (`Z` suffix).
pub fn rfc3339(us: Micros) -> String {
    from_micros(us).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 instant (any offset) to microseconds.
pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
}

/// Where server time was anchored: the wall clock read once, and the monotonic instant of
/// that reading.
static ANCHOR: OnceLock<(Instant, Micros)> = OnceLock::new();

fn anchor() -> (Instant, Micros) {
    *ANCHOR.get_or_init(|| (Instant::now(), Utc::now().timestamp_micros()))
}

/// The current server time: the wall clock as it read when the process first asked, advanced
/// by the monotonic clock since.
///
/// Why not the wall clock itself: a step of it (an operator's `date -s`, a bad NTP source, a
/// VM resumed with a stale clock) would otherwise move every silence measured by comms loss
/// (a forward step raises false `comms_loss` for devices that are still sending; a backward
/// one hides real losses), reject valid fixes as "in the future" after a backward step, and
/// run audit times backwards. The monotonic clock is slewed by NTP like the wall clock but
/// never stepped, so server time stays within NTP's slew of true time while running. A step
/// of the wall clock is logged (see [`wall_offset_micros`]) and adopted at the next start.
pub fn now_micros() -> Micros {
    let (at, wall) = anchor();
    let elapsed = i64::try_from(at.elapsed().as_micros()).unwrap_or(i64::MAX);
    wall.saturating_add(elapsed)
}

/// The wall clock minus server time: 0 until the wall clock is stepped (or the machine was
/// suspended, which the monotonic clock does not count).
pub fn wall_offset_micros() -> Micros {
    let now = now_micros();
    Utc::now().timestamp_micros().saturating_sub(now)
}

/// Serde adapter: `Micros` as an RFC 3339 string.
pub mod serde_rfc3339 {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(us: &Micros, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(*us))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
    }

    /// `Option<Micros>` as an optional RFC 3339 string.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(us: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
            match us {
                Some(us) => s.serialize_str(&rfc3339(*us)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
            let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            match s {
                None => Ok(None),
                Some(s) => parse_rfc3339(&s)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_time_advances_with_the_monotonic_clock() {
        let a = now_micros();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = now_micros();
        assert!(b - a >= 5_000, "{a} {b}");
        // no step happened in this test: server time is the wall clock
        assert!(wall_offset_micros().abs() < 1_000_000);
    }

    #[test]
    fn rfc3339_round_trips_through_micros() {
        let us = parse_rfc3339("2026-03-29T00:59:59.5+00:00").unwrap();
        assert_eq!(rfc3339(us), "2026-03-29T00:59:59.500Z");
        assert_eq!(parse_rfc3339("2026-03-29T01:59:59.5+01:00"), Some(us));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
