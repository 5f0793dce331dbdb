//! `tagwatch loadgen`: drives a running server over HTTP with simulated tags and reports
//! durable fixes/s, acknowledgement latency percentiles and ping-to-alert latency (SPEC §6).
//!
//! The fleet: each device walks back and forth along a line through the centre of its own
//! exclusion circle (300 m either side, a full swing every `--swing-rounds` fixes), so it
//! enters the zone twice per swing; `--zones-per-device − 1` more zones lie far away, so
//! the engine checks each fix against the usual handful of zones. Each client owns a slice
//! of the devices and posts batches of their next fixes (one fix per device per simulated
//! second), waiting for each answer before sending the next batch — so every counted fix
//! was acknowledged as durably stored.
//!
//! Ping-to-alert latency: the load generator listens on `GET /v1/alerts/stream` and, for
//! every `exclusion_breach` opened during the run, takes the time from sending the request
//! that carried the alert's first inside fix (`started_at`, grace 0) to receiving the
//! event. It therefore includes the acknowledgement, the engine and the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::geodesy::{LatLon, LocalFrame};
use crate::model::time::{now_micros, parse_rfc3339, rfc3339};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin token (registers the simulated subjects, devices and zones and a gateway
    /// token, and listens to the alert stream).
    #[arg(long, env = "TAGWATCH_TOKEN")]
    pub token: String,
    /// Simulated devices.
    #[arg(long, default_value_t = 2000)]
    pub devices: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Fixes per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Target fixes per second over all clients (0 = as fast as acknowledged). Paced
    /// clients start spread over one request interval, as independent senders would be.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// With `--rate`: start every client at once, so that they send in bursts (a request
    /// from each client together, once per interval) instead of spread out.
    #[arg(long)]
    pub lockstep: bool,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Zones per device: one exclusion circle the device crosses, the rest far away. 0 =
    /// no zones and no alert measurement.
    #[arg(long, default_value_t = 4)]
    pub zones_per_device: usize,
    /// Fixes per full swing through the device's own zone (two entries per swing).
    #[arg(long, default_value_t = 600)]
    pub swing_rounds: usize,
    /// Seed of the simulated fleet.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// New fixes stored and acknowledged (duplicates not counted).
    pub fixes_acknowledged: u64,
    /// Fixes the server already had (a second run over the same store re-sends fix times
    /// the first one sent: both start six days back); acknowledged, not counted in the rate.
    pub duplicates: u64,
    pub requests: u64,
    pub refused_429: u64,
    pub seconds: f64,
    pub fixes_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
    /// Exclusion breaches opened on the stream during the run whose fix this run sent.
    pub alerts_seen: u64,
    pub alert_p50_ms: f64,
    pub alert_p99_ms: f64,
    pub alert_p999_ms: f64,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fixes acknowledged in {:.1} s = {:.0} fixes/s ({} duplicates, {} requests, {} refused 429); ack latency p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
            self.fixes_acknowledged, self.seconds, self.fixes_per_s, self.duplicates, self.requests, self.refused_429,
            self.ack_p50_ms, self.ack_p99_ms, self.ack_p999_ms
        )?;
        write!(
            f,
            "\n{} alerts opened on the stream; ping-to-alert latency p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
            self.alerts_seen, self.alert_p50_ms, self.alert_p99_ms, self.alert_p999_ms
        )
    }
}

/// Where a device is and where its zones are (the same for every run with one seed).
struct Track {
    /// Centre of the device's own exclusion circle, which it crosses.
    centre: LatLon,
    /// Direction of its swing, radians from east.
    heading: f64,
    /// Where in its swing it starts, in rounds.
    phase: usize,
}

/// Radius of the crossed exclusion circle, metres.
const OWN_ZONE_M: f64 = 60.0;
/// Half the length of a swing, metres.
const SWING_M: f64 = 300.0;
/// How long before their creation the zones are valid from.
const ZONE_VALID_BEFORE_US: i64 = 7 * 86_400 * 1_000_000;
/// How long before the run its fix times start.
const FIXES_START_BEFORE_US: i64 = 6 * 86_400 * 1_000_000;
/// Simulated seconds between a device's fixes.
const ROUND_US: i64 = 1_000_000;

fn tracks(args: &LoadgenArgs) -> Vec<Track> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    (0..args.devices)
        .map(|_| Track {
            centre: LatLon::new(
                51.40 + rng.gen::<f64>() * 0.2,
                -0.30 + rng.gen::<f64>() * 0.4,
            ),
            heading: rng.gen_range(0.0..std::f64::consts::TAU),
            phase: rng.gen_range(0..args.swing_rounds.max(1)),
        })
        .collect()
}

impl Track {
    /// Position at `round` (plus a little GPS noise from `rng`).
    fn at(&self, round: usize, swing_rounds: usize, rng: &mut impl Rng) -> LatLon {
        let s = swing_rounds.max(2) as f64;
        let angle = std::f64::consts::TAU * ((round + self.phase) as f64 % s) / s;
        let along = SWING_M * angle.cos();
        LocalFrame::new(self.centre).to_latlon(
            along * self.heading.cos() + rng.gen_range(-3.0..3.0),
            along * self.heading.sin() + rng.gen_range(-3.0..3.0),
        )
    }
}

async fn expect_created(resp: reqwest::Response, what: &str) -> anyhow::Result<serde_json::Value> {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.as_u16() != 201 && status.as_u16() != 409 {
        bail!("creating {what}: {status} {body}");
    }
    Ok(body)
}

fn subject_id(d: usize) -> String {
    format!("LG-S{d:06}")
}

fn device_id(d: usize) -> String {
    format!("LG-D{d:06}")
}

/// Registers one device's subject, device and zones (idempotent: existing ids are reused,
/// and zones are only added to a subject that has none).
async fn register(
    client: &reqwest::Client,
    args: &LoadgenArgs,
    d: usize,
    track: &Track,
) -> anyhow::Result<()> {
    let url = |p: &str| format!("{}{}", args.url, p);
    let r = client
        .post(url("/v1/subjects"))
        .bearer_auth(&args.token)
        .json(&json!({"id": subject_id(d)}))
        .send()
        .await?;
    expect_created(r, "subject").await?;
    let r = client
        .post(url("/v1/devices"))
        .bearer_auth(&args.token)
        .json(&json!({"id": device_id(d), "subject_id": subject_id(d)}))
        .send()
        .await?;
    expect_created(r, "device").await?;
    if args.zones_per_device == 0 {
        return Ok(());
    }
    let zones_url = url(&format!("/v1/subjects/{}/zones", subject_id(d)));
    let existing: serde_json::Value = client
        .get(&zones_url)
        .bearer_auth(&args.token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let has_zones = existing
        .as_array()
        .or_else(|| existing["items"].as_array())
        .is_some_and(|z| !z.is_empty());
    if has_zones {
        return Ok(());
    }
    let frame = LocalFrame::new(track.centre);
    for z in 0..args.zones_per_device {
        // the first is crossed; the others lie 2–5 km away
        let (centre, radius) = if z == 0 {
            (track.centre, OWN_ZONE_M)
        } else {
            let a = track.heading + std::f64::consts::FRAC_PI_2 * z as f64;
            let r = 1_500.0 + 1_000.0 * z as f64;
            (frame.to_latlon(r * a.cos(), r * a.sin()), 150.0)
        };
        let r = client
            .post(&zones_url)
            .bearer_auth(&args.token)
            .json(&json!({"kind": "exclusion", "name": format!("loadgen zone {z}"),
                "geometry": {"type": "Circle", "center": [centre.lon, centre.lat], "radius_m": radius},
                // valid before the fixes, which start six days in the past
                "valid_from": rfc3339(now_micros() - ZONE_VALID_BEFORE_US)}))
            .send()
            .await?;
        expect_created(r, "zone").await?;
    }
    Ok(())
}

/// Registers the fleet with `args.concurrency` clients and returns a gateway token.
async fn setup(
    client: &reqwest::Client,
    args: &Arc<LoadgenArgs>,
    tracks: &Arc<Vec<Track>>,
) -> anyhow::Result<String> {
    let mut tasks = Vec::new();
    for c in 0..args.concurrency.max(1) {
        let (client, args, tracks) = (client.clone(), args.clone(), tracks.clone());
        tasks.push(tokio::spawn(async move {
            for d in (c..args.devices).step_by(args.concurrency.max(1)) {
                register(&client, &args, d, &tracks[d]).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let r = client
        .post(format!("{}/v1/users", args.url))
        .bearer_auth(&args.token)
        .json(&json!({"name": "loadgen gateway", "role": "device"}))
        .send()
        .await?;
    let v = expect_created(r, "gateway user").await?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the gateway user answer")
}

/// An alert opening seen on the stream: which device, its first inside fix, when it came.
struct Seen {
    device: usize,
    started_us: i64,
    at: Instant,
}

/// Listens to the alert stream until `stop`, collecting exclusion breaches opened on
/// loadgen devices. Returns once the stream is open (`ready`).
async fn listen(
    client: reqwest::Client,
    url: String,
    token: String,
    ready: tokio::sync::oneshot::Sender<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Seen>> {
    let mut resp = client
        .get(format!("{url}/v1/alerts/stream"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?;
    let _ = ready.send(());
    let mut seen = Vec::new();
    let mut buf = String::new();
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c?,
            _ = stop.changed() => break,
        };
        let Some(chunk) = chunk else { break };
        let at = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(s) = parse_event(&event, at) {
                seen.push(s);
            }
        }
    }
    Ok(seen)
}

/// An `opened` exclusion breach of a loadgen device in one SSE event, if it is one.
fn parse_event(event: &str, at: Instant) -> Option<Seen> {
    let data: String = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    let v: serde_json::Value = serde_json::from_str(&data).ok()?;
    if v["change"] != "opened" || v["alert"]["type"] != "exclusion_breach" {
        return None;
    }
    let device = v["alert"]["device_id"]
        .as_str()?
        .strip_prefix("LG-D")?
        .parse()
        .ok()?;
    let started_us = parse_rfc3339(v["alert"]["started_at"].as_str()?)?;
    Some(Seen {
        device,
        started_us,
        at,
    })
}

/// What one client did: counts, ack latencies, and when it sent each acknowledged batch
/// (first cursor of the batch, send instant) in cursor order.
struct ClientLog {
    /// accepted + duplicates: every fix sent and acknowledged (the pacing counts these)
    acked: u64,
    duplicates: u64,
    refused: u64,
    requests: u64,
    latencies_ms: Vec<f64>,
    sent: Vec<(usize, Instant)>,
    devices: usize,
}

async fn drive(
    c: usize,
    client: reqwest::Client,
    gateway: String,
    args: Arc<LoadgenArgs>,
    tracks: Arc<Vec<Track>>,
    start_us: i64,
    deadline: Instant,
) -> anyhow::Result<ClientLog> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed + 1 + c as u64);
    let devices: Vec<usize> = (c..args.devices).step_by(args.concurrency.max(1)).collect();
    let per_client_rate = (args.rate > 0).then(|| args.rate as f64 / args.concurrency as f64);
    let mut log = ClientLog {
        acked: 0,
        duplicates: 0,
        refused: 0,
        requests: 0,
        latencies_ms: Vec::new(),
        sent: Vec::new(),
        devices: devices.len(),
    };
    let mut cursor = 0usize; // next (round, device) to emit
    if let (Some(rate), false) = (per_client_rate, args.lockstep) {
        // client c of n starts c/n of a request interval late, and keeps that phase
        let interval = args.batch as f64 / rate;
        let phase = interval * c as f64 / args.concurrency.max(1) as f64;
        tokio::time::sleep(Duration::from_secs_f64(phase)).await;
    }
    let t0 = Instant::now();
    while Instant::now() < deadline && !devices.is_empty() {
        let first = cursor;
        let mut batch = Vec::with_capacity(args.batch);
        for _ in 0..args.batch {
            let (round, i) = (cursor / devices.len(), cursor % devices.len());
            cursor += 1;
            let d = devices[i];
            let p = tracks[d].at(round, args.swing_rounds, &mut rng);
            batch.push(json!({"device_id": device_id(d),
                "ts": rfc3339(start_us + round as i64 * ROUND_US),
                "lat": p.lat, "lon": p.lon, "accuracy_m": rng.gen_range(3.0..8.0),
                "battery_pct": 80}));
        }
        let body = serde_json::to_vec(&batch).unwrap_or_default();
        let sent = Instant::now();
        let resp = client
            .post(format!("{}/v1/pings", args.url))
            .bearer_auth(&gateway)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        log.requests += 1;
        match resp {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                // every fix loadgen sends is valid: a rejected one means the run measures
                // something else (e.g. a retention shorter than six days), so it stops
                if let Some(first) = v["rejected"].as_array().and_then(|r| r.first()) {
                    bail!("ingest rejected fixes of a batch, e.g. {first}");
                }
                let duplicates = v["duplicates"].as_u64().unwrap_or(0);
                log.acked += v["accepted"].as_u64().unwrap_or(0) + duplicates;
                log.duplicates += duplicates;
                log.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                log.sent.push((first, sent));
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().as_u16() == 503 => {
                log.refused += 1;
                cursor = first; // resend the same fixes
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                bail!("ingest answered {status}: {text}");
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(rate) = per_client_rate {
            let due = Duration::from_secs_f64(log.acked as f64 / rate);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(log)
}

/// The `p` quantile of sorted `v` (nearest rank), 0 when empty.
fn quantile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Runs the load and reports.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<LoadReport> {
    if args.concurrency == 0 || args.batch == 0 {
        bail!("--concurrency and --batch must be at least 1");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency + 1)
        .build()?;
    let args = Arc::new(args);
    let fleet = Arc::new(tracks(&args));
    let gateway = setup(&client, &args, &fleet).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = if args.zones_per_device > 0 {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(listen(
            client.clone(),
            args.url.clone(),
            args.token.clone(),
            ready_tx,
            stop_rx,
        ));
        ready_rx
            .await
            .context("the alert stream did not open (is the token an admin's?)")?;
        Some(task)
    } else {
        None
    };

    // Fix times start six days ago (the zones are valid from seven days back) and advance one
    // second per round: 518,400 rounds before they would reach ingest's limit of 5 minutes
    // ahead of the clock, which a run at 2,000 devices and 150,000 fixes/s reaches after
    // about two hours. (An hour back, as before, capped a 60 s run at 2,000 devices to
    // ~132,000 fixes/s, the rest rejected and not counted.)
    let start_us = now_micros() - FIXES_START_BEFORE_US;
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.concurrency {
        tasks.push(tokio::spawn(drive(
            c,
            client.clone(),
            gateway.clone(),
            args.clone(),
            fleet.clone(),
            start_us,
            deadline,
        )));
    }
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await??);
    }
    let seconds = started.elapsed().as_secs_f64();

    // Let the last evaluations reach the stream, then stop listening.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let seen = match listener {
        Some(t) => t.await??,
        None => Vec::new(),
    };
    let mut alert_ms: Vec<f64> = seen
        .iter()
        .filter_map(|s| {
            let log = &logs[s.device % args.concurrency];
            let i = s.device / args.concurrency;
            let round = usize::try_from((s.started_us - start_us) / ROUND_US).ok()?;
            let cursor = round * log.devices + i;
            // the acknowledged batch that carried this fix: the last one starting at or before it
            let k = log.sent.partition_point(|(first, _)| *first <= cursor);
            let (_, sent) = log.sent.get(k.checked_sub(1)?)?;
            Some(s.at.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    alert_ms.sort_by(f64::total_cmp);

    let mut lat: Vec<f64> = logs
        .iter()
        .flat_map(|l| l.latencies_ms.iter().copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    let duplicates: u64 = logs.iter().map(|l| l.duplicates).sum();
    let acked: u64 = logs.iter().map(|l| l.acked).sum::<u64>() - duplicates;
    Ok(LoadReport {
        fixes_acknowledged: acked,
        duplicates,
        requests: logs.iter().map(|l| l.requests).sum(),
        refused_429: logs.iter().map(|l| l.refused).sum(),
        seconds,
        fixes_per_s: acked as f64 / seconds,
        ack_p50_ms: quantile(&lat, 0.50),
        ack_p99_ms: quantile(&lat, 0.99),
        ack_p999_ms: quantile(&lat, 0.999),
        alerts_seen: alert_ms.len() as u64,
        alert_p50_ms: quantile(&alert_ms, 0.50),
        alert_p99_ms: quantile(&alert_ms, 0.99),
        alert_p999_ms: quantile(&alert_ms, 0.999),
    })
}
