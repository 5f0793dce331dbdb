//! Turning a request body into items: a JSON array, NDJSON, or an OsmAnd query string.
//!
//! Parsing never fails the whole request for one bad item (SPEC §2): the body must be a JSON
//! array (or NDJSON with at least one parseable line), and each item is then decoded on its
//! own, so a malformed item becomes a rejection with its index while the others go on.

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::model::{FixSource, PingIn};

/// Why a whole body cannot be read as pings (→ 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is not a JSON array of pings: {0}")]
    NotAnArray(String),
    #[error("NDJSON body has no parseable line")]
    NoParseableLine,
}

/// One item of a batch: the ping, or why it could not be decoded.
pub type Item = Result<PingIn, String>;

fn decode(raw: &str) -> Item {
    serde_json::from_str::<PingIn>(raw).map_err(|e| format!("malformed ping: {e}"))
}

/// A JSON array body. Items are split first (as raw JSON) so one item of the wrong shape does
/// not hide the others.
pub fn json_array(body: &[u8]) -> Result<Vec<Item>, BodyError> {
    let raws: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(|e| BodyError::NotAnArray(e.to_string()))?;
    Ok(raws.into_iter().map(|r| decode(r.get())).collect())
}

/// An NDJSON body: one ping per line; `index` is the 0-based line number. Blank lines are
/// items too (rejected), so indexes always match the client's line numbers.
pub fn ndjson(body: &[u8]) -> Result<Vec<Item>, BodyError> {
    let text = String::from_utf8_lossy(body);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // a trailing newline does not start another line
    if lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let items: Vec<Item> = lines
        .iter()
        .map(|l| {
            let l = l.trim_end_matches('\r');
            if l.trim().is_empty() {
                Err("empty line".to_owned())
            } else {
                decode(l)
            }
        })
        .collect();
    if items.iter().all(|i| i.is_err()) {
        return Err(BodyError::NoParseableLine);
    }
    Ok(items)
}

/// Knots to metres per second: OsmAnd / Traccar Client report `speed` in knots.
const MPS_PER_KNOT: f64 = 0.514_444;

/// A unix time in seconds or milliseconds as RFC 3339; `None` when it is past the ends of the
/// calendar (about ±262,000 years), which a client must be told rather than have the time
/// wrap or fall back to the epoch.
fn unix_to_rfc3339(n: i64) -> Option<String> {
    // 10^11 seconds is the year 5138; larger values are milliseconds
    let us = if n.unsigned_abs() >= 100_000_000_000 {
        n.checked_mul(1_000)?
    } else {
        n.checked_mul(1_000_000)?
    };
    chrono::DateTime::from_timestamp_micros(us)?;
    Some(crate::model::time::rfc3339(us))
}

/// Reads an OsmAnd / Traccar Client report (`id, lat, lon, timestamp, hdop, accuracy, batt,
/// speed, bearing`). `timestamp` may be unix seconds, unix milliseconds or RFC 3339. When
/// `accuracy` is absent, `hdop` × 5 m stands in for it (a common receiver rule of thumb).
pub fn osmand(params: &HashMap<String, String>) -> Result<PingIn, String> {
    let get = |k: &str| params.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let num = |k: &str| -> Result<Option<f64>, String> {
        get(k)
            .map(|v| v.parse::<f64>().map_err(|_| format!("{k} is not a number")))
            .transpose()
    };
    let device_id = get("id")
        .or_else(|| get("deviceid"))
        .ok_or("id is required")?
        .to_owned();
    let ts = match get("timestamp") {
        None => crate::model::time::rfc3339(crate::model::time::now_micros()),
        Some(t) => match t.parse::<i64>() {
            Ok(n) => unix_to_rfc3339(n).ok_or("timestamp is out of range")?,
            Err(_) => t.to_owned(),
        },
    };
    let accuracy = match num("accuracy")? {
        Some(a) => Some(a),
        None => num("hdop")?.map(|h| h * 5.0),
    };
    Ok(PingIn {
        device_id,
        ts,
        lat: num("lat")?,
        lon: num("lon")?,
        accuracy_m: accuracy,
        fix: Some(FixSource::Gps),
        speed_mps: num("speed")?.map(|k| k * MPS_PER_KNOT),
        heading_deg: num("bearing")?.or(num("heading")?),
        battery_pct: num("batt")?,
        tamper: None,
        charging: get("charge").map(|c| c == "true" || c == "1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrongly_typed_item_is_rejected_alone() {
        let items = json_array(br#"[{"device_id":"A","ts":"2026-01-01T00:00:00Z","lat":1,"lon":2},{"device_id":7},"x"]"#).unwrap();
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
        assert!(items[2].is_err());
    }

    #[test]
    fn a_body_that_is_not_an_array_is_refused() {
        assert!(matches!(json_array(b"{}"), Err(BodyError::NotAnArray(_))));
        assert!(matches!(json_array(b"[1,"), Err(BodyError::NotAnArray(_))));
    }

    #[test]
    fn ndjson_indexes_are_line_numbers() {
        let body = b"{\"device_id\":\"A\",\"ts\":\"2026-01-01T00:00:00Z\",\"lat\":1,\"lon\":2}\nnot json\n\n{\"device_id\":\"A\",\"ts\":\"2026-01-01T00:00:01Z\",\"lat\":1,\"lon\":2}\n";
        let items = ndjson(body).unwrap();
        assert_eq!(items.len(), 4);
        assert!(items[0].is_ok() && items[1].is_err() && items[2].is_err() && items[3].is_ok());
        assert!(matches!(ndjson(b"nope\n"), Err(BodyError::NoParseableLine)));
    }

    #[test]
    fn osmand_timestamps_in_seconds_millis_and_rfc3339_agree() {
        let mut p = HashMap::from([
            ("id".to_owned(), "T1".to_owned()),
            ("lat".to_owned(), "51.5".to_owned()),
            ("lon".to_owned(), "-0.1".to_owned()),
            ("speed".to_owned(), "10".to_owned()),
        ]);
        let mut seen = vec![];
        for t in ["1780000000", "1780000000000", "2026-05-28T20:26:40Z"] {
            p.insert("timestamp".into(), t.into());
            seen.push(crate::model::time::parse_rfc3339(&osmand(&p).unwrap().ts));
        }
        assert!(
            seen.iter().all(|s| s.is_some() && *s == seen[0]),
            "{seen:?}"
        );
        assert!((osmand(&p).unwrap().speed_mps.unwrap() - 5.14444).abs() < 1e-6);
    }

    #[test]
    fn osmand_timestamps_past_the_calendar_are_refused_not_overflowed() {
        // found by the osmand_query fuzz target (fuzz/regressions/osmand_query/)
        let mut p = HashMap::from([("id".to_owned(), "T1".to_owned())]);
        for t in [
            "17803150000000000",
            "9223372036854775807",
            "-9223372036854775808",
            "-17803150000000000",
            "9000000000000000",
        ] {
            p.insert("timestamp".into(), t.into());
            assert_eq!(osmand(&p).unwrap_err(), "timestamp is out of range", "{t}");
        }
        p.insert("timestamp".into(), "-1780000000000".into());
        assert_eq!(osmand(&p).unwrap().ts, "1913-08-06T03:33:20Z");
    }
}
