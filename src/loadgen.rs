//! `tagwatch loadgen`: drives a running server over HTTP with simulated tags and reports
//! durable fixes/s and acknowledgement latency percentiles (SPEC §6).
//!
//! Each client owns a slice of the devices and posts batches of their next fixes (one fix per
//! device per simulated second, a random walk around London), waiting for each answer before
//! sending the next batch — so every counted fix was acknowledged as durably stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin token (registers the simulated subjects and devices and a gateway token).
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
    /// Target fixes per second over all clients (0 = as fast as acknowledged).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seed of the simulated fleet.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub fixes_acknowledged: u64,
    pub requests: u64,
    pub refused_429: u64,
    pub seconds: f64,
    pub fixes_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fixes acknowledged in {:.1} s = {:.0} fixes/s ({} requests, {} refused 429); ack latency p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
            self.fixes_acknowledged, self.seconds, self.fixes_per_s, self.requests, self.refused_429,
            self.ack_p50_ms, self.ack_p99_ms, self.ack_p999_ms
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

/// Registers the fleet (idempotent: existing ids are reused) and returns a gateway token.
async fn setup(client: &reqwest::Client, args: &LoadgenArgs) -> anyhow::Result<String> {
    let url = |p: &str| format!("{}{}", args.url, p);
    for d in 0..args.devices {
        let r = client
            .post(url("/v1/subjects"))
            .bearer_auth(&args.token)
            .json(&json!({"id": format!("LG-S{d:06}")}))
            .send()
            .await?;
        expect_created(r, "subject").await?;
        let r = client
            .post(url("/v1/devices"))
            .bearer_auth(&args.token)
            .json(&json!({"id": format!("LG-D{d:06}"), "subject_id": format!("LG-S{d:06}")}))
            .send()
            .await?;
        expect_created(r, "device").await?;
    }
    let r = client
        .post(url("/v1/users"))
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

/// Runs the load and reports.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<LoadReport> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let gateway = setup(&client, &args).await?;
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    // Fix times start in the recent past and advance one second per round, so they stay valid.
    let start_us = crate::model::time::now_micros() - 3_600 * 1_000_000;
    let per_client_rate = if args.rate == 0 {
        None
    } else {
        Some(args.rate as f64 / args.concurrency as f64)
    };
    let args = Arc::new(args);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.concurrency {
        let (client, gateway, args) = (client.clone(), gateway.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed + c as u64);
            let devices: Vec<usize> = (0..args.devices)
                .filter(|d| d % args.concurrency == c)
                .collect();
            let mut pos: Vec<(f64, f64)> = devices
                .iter()
                .map(|_| {
                    (
                        51.40 + rng.gen::<f64>() * 0.2,
                        -0.30 + rng.gen::<f64>() * 0.4,
                    )
                })
                .collect();
            let mut latencies = Vec::new();
            let (mut acked, mut refused, mut requests) = (0u64, 0u64, 0u64);
            let mut cursor = 0usize; // next (round, device) to emit
            let t0 = Instant::now();
            while Instant::now() < deadline && !devices.is_empty() {
                let mut batch = Vec::with_capacity(args.batch);
                for _ in 0..args.batch {
                    let round = cursor / devices.len();
                    let i = cursor % devices.len();
                    cursor += 1;
                    let p = &mut pos[i];
                    p.0 += (rng.gen::<f64>() - 0.5) * 0.0004;
                    p.1 += (rng.gen::<f64>() - 0.5) * 0.0006;
                    let ts = crate::model::time::rfc3339(start_us + round as i64 * 1_000_000);
                    batch.push(
                        json!({"device_id": format!("LG-D{:06}", devices[i]), "ts": ts,
                        "lat": p.0, "lon": p.1, "accuracy_m": 5.0 + rng.gen::<f64>() * 20.0,
                        "battery_pct": 80}),
                    );
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
                requests += 1;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        acked += v["accepted"].as_u64().unwrap_or(0)
                            + v["duplicates"].as_u64().unwrap_or(0);
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(r) if r.status().as_u16() == 429 || r.status().as_u16() == 503 => {
                        refused += 1;
                        cursor -= args.batch; // resend the same fixes
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        return Err(anyhow::anyhow!("ingest answered {status}: {text}"));
                    }
                    Err(e) => return Err(e.into()),
                }
                if let Some(rate) = per_client_rate {
                    let due = Duration::from_secs_f64(acked as f64 / rate);
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            Ok::<_, anyhow::Error>((acked, refused, requests, latencies))
        }));
    }
    let (mut acked, mut refused, mut requests, mut lat) = (0, 0, 0, Vec::new());
    for t in tasks {
        let (a, r, q, l) = t.await??;
        acked += a;
        refused += r;
        requests += q;
        lat.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    Ok(LoadReport {
        fixes_acknowledged: acked,
        requests,
        refused_429: refused,
        seconds,
        fixes_per_s: acked as f64 / seconds,
        ack_p50_ms: pct(0.50),
        ack_p99_ms: pct(0.99),
        ack_p999_ms: pct(0.999),
    })
}
