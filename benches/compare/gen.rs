//! The seeded dataset both systems load: subjects, devices, exclusion zones, fixes and the
//! query workload, streamed to files in one pass (the fixes are never all in memory).
//!
//! Files written to `--out`:
//! - `meta.json`: devices, minutes, first and last fix time, seed;
//! - `zones.ndjson`: one zone a line (`subject`, `name`, tagwatch `geometry`, PostGIS `wkt`
//!   in lon/lat or `circle` {lon, lat, radius_m});
//! - `pings.ndjson`: one ping a line, time-major (every device's fix of minute 0, then
//!   minute 1, …), each line starting with `{"device_id":"CMP-D` and six digits so the
//!   driver can route it to the client that owns the device without parsing JSON;
//! - `fixes.csv`: the same fixes for PostgreSQL `COPY` (`device,ts,lon,lat,accuracy_m,speed_mps,battery_pct`);
//! - `queries.json`: crime scenes (four radius/window kinds) and location-at-time pairs.
//!
//! The walks are the query bench's (`benches/query.rs`): London-wide random walks, 90 % at
//! ~1.3 m/s, 10 % in vehicles at ~8 m/s, turning home beyond 25 km of Charing Cross. The
//! longest step is 8 × 60 × 1.3 = 624 m, which the PostGIS interpolating query relies on
//! (see `postgis.rs`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tagwatch::geodesy::{LatLon, LocalFrame};
use tagwatch::model::time::{now_micros, rfc3339};

pub const MINUTE_US: i64 = 60_000_000;
const LONDON: LatLon = LatLon::new(51.5074, -0.1278);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub devices: usize,
    pub minutes: i64,
    pub fixes: u64,
    pub first_us: i64,
    pub last_us: i64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scene {
    pub kind: String,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    pub from_us: i64,
    pub to_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AtTime {
    pub subject: usize,
    pub at_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub scenes: Vec<Scene>,
    pub at_time: Vec<AtTime>,
}

/// The four crime-scene kinds: (name, radius m, window s).
pub const SCENE_KINDS: [(&str, f64, i64); 4] = [
    ("scene_100m_1h", 100.0, 3_600),
    ("scene_100m_24h", 100.0, 86_400),
    ("scene_500m_1h", 500.0, 3_600),
    ("scene_500m_24h", 500.0, 86_400),
];

pub fn subject_id(i: usize) -> String {
    format!("CMP-S{i:06}")
}

pub fn device_id(i: usize) -> String {
    format!("CMP-D{i:06}")
}

struct Walker {
    pos: LatLon,
    heading: f64,
    speed_mps: f64,
}

fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

/// A random point within `r_m` of `c`.
fn around(rng: &mut StdRng, c: LatLon, r_m: f64) -> LatLon {
    let r = r_m * rng.gen::<f64>().sqrt();
    let th = rng.gen_range(0.0..std::f64::consts::TAU);
    LocalFrame::new(c).to_latlon(r * th.cos(), r * th.sin())
}

/// Writes one subject's four exclusion zones: two circles and two star-shaped polygons, the
/// first circle near where the subject starts (so some subjects do breach).
fn write_zones(
    out: &mut impl Write,
    rng: &mut StdRng,
    subject: usize,
    start: LatLon,
) -> anyhow::Result<()> {
    for z in 0..4 {
        let centre = if z == 0 {
            around(rng, start, 3_000.0)
        } else {
            around(rng, LONDON, 20_000.0)
        };
        let line = if z < 2 {
            let radius_m = rng.gen_range(150.0..600.0_f64).round();
            serde_json::json!({
                "subject": subject, "name": format!("circle {z}"),
                "geometry": {"type": "Circle", "center": [round7(centre.lon), round7(centre.lat)], "radius_m": radius_m},
                "circle": {"lon": round7(centre.lon), "lat": round7(centre.lat), "radius_m": radius_m},
            })
        } else {
            // star-shaped: angles in order, radii within [0.6, 1] of the size, so the ring
            // never crosses itself
            let size = rng.gen_range(300.0..900.0);
            let n = rng.gen_range(6..12);
            let frame = LocalFrame::new(centre);
            let mut ring: Vec<[f64; 2]> = (0..n)
                .map(|k| {
                    let th =
                        std::f64::consts::TAU * (k as f64 + rng.gen_range(0.0..0.8)) / n as f64;
                    let r = size * rng.gen_range(0.6..1.0);
                    let p = frame.to_latlon(r * th.cos(), r * th.sin());
                    [round7(p.lon), round7(p.lat)]
                })
                .collect();
            ring.push(ring[0]);
            let wkt = format!(
                "POLYGON(({}))",
                ring.iter()
                    .map(|p| format!("{} {}", p[0], p[1]))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            serde_json::json!({
                "subject": subject, "name": format!("polygon {z}"),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "wkt": wkt,
            })
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Generates the dataset into `out`; `fixes` is rounded up to whole minutes of the fleet.
pub fn generate(
    out: &Path,
    devices: usize,
    fixes: u64,
    seed: u64,
    queries: usize,
) -> anyhow::Result<Meta> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let minutes = ((fixes as i64 + devices as i64 - 1) / devices as i64).max(2);
    // the last fix ten minutes before now, on a whole minute, so every fix is in the past
    // and inside the retention period when it is posted
    let last_us = (now_micros() / MINUTE_US - 10) * MINUTE_US;
    let first_us = last_us - (minutes - 1) * MINUTE_US;
    let mut rng = StdRng::seed_from_u64(seed);
    let frame = LocalFrame::new(LONDON);

    let mut zones = BufWriter::new(File::create(out.join("zones.ndjson"))?);
    let mut walkers = Vec::with_capacity(devices);
    for i in 0..devices {
        let r = 20_000.0 * rng.gen::<f64>().sqrt();
        let th = rng.gen_range(0.0..std::f64::consts::TAU);
        let start = frame.to_latlon(r * th.cos(), r * th.sin());
        write_zones(&mut zones, &mut rng, i, start)?;
        walkers.push(Walker {
            pos: start,
            heading: rng.gen_range(0.0..std::f64::consts::TAU),
            speed_mps: if i % 10 == 0 { 8.0 } else { 1.3 },
        });
    }
    zones.flush()?;

    // The workload is drawn first (which device, which minute), then filled in as the walk
    // reaches that minute: scenes are centred near where someone was.
    let mut wanted: Vec<(i64, usize, usize)> = Vec::new(); // (minute, device, scene index)
    let mut scenes = Vec::with_capacity(queries * SCENE_KINDS.len());
    let mut windows_us = Vec::with_capacity(queries * SCENE_KINDS.len());
    for (kind, radius_m, window_s) in SCENE_KINDS {
        for _ in 0..queries {
            wanted.push((
                rng.gen_range(0..minutes),
                rng.gen_range(0..devices),
                scenes.len(),
            ));
            windows_us.push(window_s * 1_000_000);
            scenes.push(Scene {
                kind: kind.to_owned(),
                lat: 0.0,
                lon: 0.0,
                radius_m,
                from_us: 0,
                to_us: 0,
            });
        }
    }
    wanted.sort_unstable();
    let span_us = last_us - first_us;
    let at_time = (0..queries)
        .map(|_| AtTime {
            subject: rng.gen_range(0..devices),
            at_us: first_us + rng.gen_range(0..=span_us),
        })
        .collect();

    let mut pings = BufWriter::with_capacity(1 << 20, File::create(out.join("pings.ndjson"))?);
    let mut csv = BufWriter::with_capacity(1 << 20, File::create(out.join("fixes.csv"))?);
    let mut next = 0;
    let mut written = 0u64;
    for m in 0..minutes {
        let ts_us = first_us + m * MINUTE_US;
        let ts = rfc3339(ts_us);
        for (d, w) in walkers.iter_mut().enumerate() {
            let (x, y) = frame.to_xy(w.pos);
            w.heading = if x.hypot(y) > 25_000.0 {
                (-y).atan2(-x)
            } else {
                w.heading + rng.gen_range(-0.6..0.6)
            };
            let step = w.speed_mps * 60.0 * rng.gen_range(0.3..1.3);
            w.pos =
                LocalFrame::new(w.pos).to_latlon(step * w.heading.cos(), step * w.heading.sin());
            let (lat, lon) = (round7(w.pos.lat), round7(w.pos.lon));
            let acc = (rng.gen_range(4.0..15.0_f64) * 10.0).round() / 10.0;
            let speed = w.speed_mps;
            writeln!(
                pings,
                r#"{{"device_id":"{}","ts":"{ts}","lat":{lat},"lon":{lon},"accuracy_m":{acc},"speed_mps":{speed},"battery_pct":80}}"#,
                device_id(d)
            )?;
            writeln!(csv, "{d},{ts},{lon},{lat},{acc},{speed},80")?;
            written += 1;
        }
        while next < wanted.len() && wanted[next].0 == m {
            let (_, d, si) = wanted[next];
            let c = around(&mut rng, walkers[d].pos, 150.0);
            // the window is centred on the minute, moved inside the data when near an end
            let window = windows_us[si];
            let from = (ts_us - window / 2).clamp(first_us, (last_us - window).max(first_us));
            let s = &mut scenes[si];
            s.lat = round7(c.lat);
            s.lon = round7(c.lon);
            s.from_us = from;
            s.to_us = from + window;
            next += 1;
        }
    }
    pings.flush()?;
    csv.flush()?;
    let meta = Meta {
        devices,
        minutes,
        fixes: written,
        first_us,
        last_us,
        seed,
    };
    std::fs::write(out.join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;
    std::fs::write(
        out.join("queries.json"),
        serde_json::to_vec(&Workload { scenes, at_time })?,
    )?;
    Ok(meta)
}

/// Reads a dataset file line by line and routes each line to the client that owns its
/// device (`device % clients`, so one device's fixes stay in order), in batches of `batch`
/// lines sent as `(bytes, lines)`; the last partial batch of each client is sent at the
/// end. Runs on a blocking thread. Returns the number of lines.
pub fn route_lines(
    path: &std::path::Path,
    batch: usize,
    device_of: impl Fn(&[u8]) -> anyhow::Result<usize>,
    senders: &[tokio::sync::mpsc::Sender<(Vec<u8>, usize)>],
) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let clients = senders.len();
    let mut file = std::io::BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut bufs: Vec<(Vec<u8>, usize)> = (0..clients).map(|_| (Vec::new(), 0)).collect();
    let mut line = Vec::with_capacity(256);
    let mut lines = 0u64;
    loop {
        line.clear();
        if file.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let c = device_of(&line)? % clients;
        let (buf, n) = &mut bufs[c];
        buf.extend_from_slice(&line);
        *n += 1;
        lines += 1;
        if *n == batch {
            senders[c].blocking_send((std::mem::take(buf), batch))?;
            *n = 0;
        }
    }
    for (c, (buf, n)) in bufs.into_iter().enumerate() {
        if n > 0 {
            senders[c].blocking_send((buf, n))?;
        }
    }
    Ok(lines)
}
