//! The body of every fuzz target: which library entry point an untrusted input goes through,
//! and what is checked afterwards.
//!
//! Shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`, one line each) and by the
//! stable `cargo test --test fuzz_corpus`, which includes this file with `#[path]` and
//! replays every committed corpus file and crash reproducer through [`TARGETS`]. So it only
//! uses `tagwatch` and the crates `tagwatch` itself depends on (`serde_json`,
//! `serde_urlencoded`).
//!
//! Each body feeds the bytes through the same functions, in the same order, as the service
//! does, and asserts no panic plus only what the code promises (module docs and the
//! validation it performs): an accepted fix is in range and inside the request's time
//! limits, a resolved [`Shape`] keeps the invariants listed in `model::geometry` and
//! resolves again to itself, a schedule's status interval contains the instant asked about,
//! an accepted crime row has a position in range and `from ≤ to`.

use std::collections::HashMap;

use tagwatch::geodesy::LatLon;
use tagwatch::ingest::parse::{self, Item};
use tagwatch::model::fix::{TimeLimits, MAX_FUTURE_S};
use tagwatch::model::geometry::{Boroughs, GeometryInput, Shape, MAX_RADIUS_M};
use tagwatch::model::schedule::Schedule;
use tagwatch::model::time::{Micros, MICROS_PER_SEC};
use tagwatch::model::{FixSource, PingIn};
use tagwatch::query::cells::fix_cell;
use tagwatch::query::crime_csv::{parse_crime_csv, CsvLayout};

/// A target's body: one input in, a panic when it finds a bug.
pub type Body = fn(&[u8]);

/// Every target by name (the name of its `fuzz_targets/` file and corpus directory).
pub const TARGETS: &[(&str, Body)] = &[
    ("ping_json_array", ping_json_array),
    ("ping_ndjson", ping_ndjson),
    ("osmand_query", osmand_query),
    ("zone_geometry", zone_geometry),
    ("zone_schedule", zone_schedule),
    ("crime_csv", crime_csv),
];

/// Request time limits fixed at 2026-06-01T12:00:00Z with the default 365-day retention, so
/// that a corpus file exercises the same branches on every run, whatever the date.
const LIMITS: TimeLimits = TimeLimits {
    now: 1_780_315_200 * MICROS_PER_SEC,
    retention_s: 365 * 86_400,
};

/// `POST /v1/pings` with a JSON array body.
pub fn ping_json_array(data: &[u8]) {
    if let Ok(items) = parse::json_array(data) {
        validate_items(items);
    }
}

/// `POST /v1/pings` with an NDJSON body.
pub fn ping_ndjson(data: &[u8]) {
    if let Ok(items) = parse::ndjson(data) {
        validate_items(items);
    }
}

/// `GET /osmand?…`: the bytes are the query string, read into a map as axum's `Query`
/// extractor does (`serde_urlencoded`); the token is taken out before the report is read.
pub fn osmand_query(data: &[u8]) {
    let Ok(mut params) = serde_urlencoded::from_bytes::<HashMap<String, String>>(data) else {
        return;
    };
    params.remove("token");
    if let Ok(ping) = parse::osmand(&params) {
        assert_eq!(ping.fix, Some(FixSource::Gps));
        validate_like_ingest(ping);
    }
}

/// A zone's `geometry` (`POST /v1/subjects/{id}/zones`): JSON → [`GeometryInput`] →
/// [`Shape`]. No borough file is loaded (a borough resolves by a map lookup, nothing to fuzz).
pub fn zone_geometry(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<GeometryInput>(data) else {
        return;
    };
    let boroughs = Boroughs::default();
    let Ok(shape) = input.resolve(&boroughs) else {
        return;
    };
    check_shape(&shape);
    // Validation is idempotent: the resolved outline, posted again, is accepted as itself.
    // (Through `serde_json::Value`, not text: float text round trips are not exact.)
    let again = serde_json::from_value::<GeometryInput>(shape.to_geojson())
        .map_err(|e| e.to_string())
        .and_then(|g| g.resolve(&boroughs).map_err(|e| e.to_string()));
    assert_eq!(
        again,
        Ok(shape),
        "a resolved shape does not resolve to itself"
    );
}

/// A zone's `schedule`. Input layout: the first 8 bytes are an instant `t` (µs, i64 little
/// endian; zero-padded when shorter), the rest is the schedule JSON. The compiled schedule is
/// asked about `t` itself (any i64, to reach the ends of the calendar) and about `t` folded
/// into 1900–2100, where the time zone database has its DST transitions.
pub fn zone_schedule(data: &[u8]) {
    let (head, json) = data.split_at(data.len().min(8));
    let mut t = [0u8; 8];
    t[..head.len()].copy_from_slice(head);
    let t = i64::from_le_bytes(t);
    let Ok(schedule) = serde_json::from_slice::<Schedule>(json) else {
        return;
    };
    let Ok(compiled) = schedule.compile() else {
        return;
    };
    assert!(!compiled.windows.is_empty());
    for w in &compiled.windows {
        assert!(w.days_mask != 0 && w.days_mask < 1 << 7, "{w:?}");
        assert!(w.start_min < 1440 && w.end_min <= 1440, "{w:?}");
    }
    const FROM_1900_US: Micros = -2_208_988_800 * MICROS_PER_SEC;
    const SPAN_200Y_US: Micros = 6_311_433_600 * MICROS_PER_SEC;
    let folded = FROM_1900_US + t.rem_euclid(SPAN_200Y_US);
    for ts in [t, folded] {
        let status = compiled.status_at(ts);
        // `until_us == i64::MAX` stands for "no end", so it covers i64::MAX too
        let covered = status.covers(ts) || (status.from_us <= ts && status.until_us == i64::MAX);
        assert!(covered, "status at {ts} is {status:?}");
        let window = compiled.active_window_at(ts);
        assert_eq!(window.is_some(), status.active);
    }
    const DAY_US: Micros = 86_400 * MICROS_PER_SEC;
    let (from, to) = (folded - DAY_US, folded + DAY_US);
    let windows = compiled.windows_overlapping(from, to);
    for (i, &(s, e)) in windows.iter().enumerate() {
        assert!(s < e && s < to && e > from, "{windows:?}");
        // merged: sorted, and neither overlapping nor touching
        assert!(i == 0 || windows[i - 1].1 < s, "{windows:?}");
    }
}

/// `POST /v1/queries/crime-match` with a CSV body.
pub fn crime_csv(data: &[u8]) {
    let Ok(parsed) = parse_crime_csv(data) else {
        return;
    };
    let mut last_line = 1;
    for c in &parsed.crimes {
        assert!(c.line > last_line, "crime lines out of order: {c:?}");
        last_line = c.line;
        assert!(!c.crime_ref.is_empty());
        assert!(in_range(c.pos), "{c:?}");
        assert!(c.from_us <= c.to_us, "{c:?}");
        if parsed.layout == CsvLayout::PoliceUk {
            assert!(c.from_us < c.to_us, "a month is not empty: {c:?}");
        }
    }
    assert!(
        parsed.errors.iter().all(|e| e.line >= 2),
        "{:?}",
        parsed.errors
    );
}

fn validate_items(items: Vec<Item>) {
    for ping in items.into_iter().flatten() {
        validate_like_ingest(ping);
    }
}

/// What `api::pings::ingest_items` does with one decoded item before it is queued: validate
/// against the request's limits and compute the H3 cell of the position.
fn validate_like_ingest(ping: PingIn) {
    let Ok(fix) = ping.validate(LIMITS) else {
        return;
    };
    assert!(
        fix.ts <= LIMITS.now + MAX_FUTURE_S * MICROS_PER_SEC,
        "{fix:?}"
    );
    assert!(
        fix.ts >= LIMITS.now - LIMITS.retention_s * MICROS_PER_SEC,
        "{fix:?}"
    );
    assert_eq!(
        fix.pos_e7.is_none(),
        fix.source == FixSource::None,
        "{fix:?}"
    );
    if let (Some(lat), Some(lon)) = (fix.lat(), fix.lon()) {
        assert!(in_range(LatLon::new(lat, lon)), "{fix:?}");
        // the ingest stores no cell when this fails; it must only not panic
        let _ = fix_cell(LatLon::new(lat, lon));
    }
    assert!(fix.accuracy_m.is_none_or(|a| a >= 0.0), "{fix:?}");
    assert!(fix.speed_mps.is_none_or(|s| s >= 0.0), "{fix:?}");
    assert!(
        fix.heading_deg.is_none_or(|h| (0.0..=360.0).contains(&h)),
        "{fix:?}"
    );
    assert!(
        fix.battery_pct.is_none_or(|b| (0.0..=100.0).contains(&b)),
        "{fix:?}"
    );
}

fn in_range(p: LatLon) -> bool {
    (-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lon)
}

/// The invariants `model::geometry` documents for a resolved [`Shape`].
fn check_shape(shape: &Shape) {
    match shape {
        Shape::Circle { center, radius_m } => {
            assert!(in_range(*center), "{shape:?}");
            assert!(*radius_m > 0.0 && *radius_m <= MAX_RADIUS_M, "{shape:?}");
        }
        Shape::Area(mp) => {
            assert!(!mp.0.is_empty(), "{shape:?}");
            for p in &mp.0 {
                for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
                    assert!(ring.0.len() >= 4 && ring.is_closed(), "{shape:?}");
                    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                    for c in &ring.0 {
                        assert!(in_range(LatLon::new(c.y, c.x)), "{shape:?}");
                        lo = lo.min(c.x);
                        hi = hi.max(c.x);
                    }
                    assert!(hi - lo < 180.0, "{shape:?}");
                }
            }
        }
    }
}
