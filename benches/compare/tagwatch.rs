//! Drives a running `tagwatch serve` over loopback HTTP, as tags and analysts would.
//!
//! - setup: the dataset's subjects, devices and exclusion zones through the API (zones valid
//!   from a day before the first fix, so every fix is checked against them), a gateway token
//!   and an analyst token;
//! - bulk ingest with zone checks: the dataset's pings, NDJSON, `--batch` per request from
//!   `--concurrency` clients; each client owns the devices `d % concurrency`, so every
//!   device's fixes arrive in time order (as from a real tag). 429/503 are resent after
//!   `Retry-After`. Timed until the last fix is acknowledged and then until the engine
//!   has evaluated every committed fix (its evaluation counter in `/metrics` stops moving);
//! - queries: the workload's crime scenes and location-at-time pairs, one request at a time
//!   with an analyst token and a justification (each is an audited, committed read);
//! - per-fix durable ingest (after the queries, which see only the dataset): one fix per
//!   request from `--per-fix-clients` clients for `--per-fix-seconds`, fresh fixes after
//!   the dataset's end, `--per-fix-runs` times.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::Connection;
use tagwatch::model::time::rfc3339;

use crate::gen::{self, Meta, Workload};
use crate::{Bulk, Latency, PerFixRun, QueryResult, SystemResult};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Label of this run in the report, e.g. `tagwatch-sqlite`.
    #[arg(long)]
    pub system: String,
    #[arg(long)]
    pub url: String,
    /// An admin token.
    #[arg(long, env = "TAGWATCH_TOKEN")]
    pub token: String,
    /// The server's process id (resident memory).
    #[arg(long)]
    pub pid: u32,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    #[arg(long, default_value_t = 16)]
    pub per_fix_clients: usize,
    #[arg(long, default_value_t = 10)]
    pub per_fix_seconds: u64,
    #[arg(long, default_value_t = 3)]
    pub per_fix_runs: usize,
    /// The PostgreSQL store's database: `VACUUM ANALYZE` it after the load (timed apart,
    /// as PostGIS's is), which a production server's autovacuum does by itself; this
    /// machine's server runs with autovacuum off. Without it the planner has no statistics
    /// and index-only scans read the heap.
    #[arg(long)]
    pub vacuum_url: Option<String>,
    /// Only the queries, against a store this driver already loaded with `--data` (a
    /// re-run, e.g. with the file in the page cache); the report holds only them.
    #[arg(long)]
    pub queries_only: bool,
}

struct Api {
    client: reqwest::Client,
    url: String,
}

impl Api {
    async fn post(&self, token: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST {path}: {status} {v}");
        }
        Ok(v)
    }
}

async fn setup(api: &Api, token: &str, data: &std::path::Path, meta: &Meta) -> anyhow::Result<()> {
    let t = Instant::now();
    // subjects and devices, a few requests at a time
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for d in 0..meta.devices {
        pending.push(async move {
            api.post(token, "/v1/subjects", &json!({"id": gen::subject_id(d)}))
                .await?;
            api.post(
                token,
                "/v1/devices",
                &json!({"id": gen::device_id(d), "subject_id": gen::subject_id(d)}),
            )
            .await
        });
        if pending.len() >= 8 {
            pending.next().await.transpose()?;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    let valid_from = rfc3339(meta.first_us - 86_400_000_000);
    let zones = std::fs::read_to_string(data.join("zones.ndjson"))?;
    let mut zone_pending = futures::stream::FuturesUnordered::new();
    for line in zones.lines() {
        let z: Value = serde_json::from_str(line)?;
        let subject = gen::subject_id(z["subject"].as_u64().context("zone subject")? as usize);
        let valid_from = valid_from.clone();
        zone_pending.push(async move {
            api.post(
                token,
                &format!("/v1/subjects/{subject}/zones"),
                &json!({"kind": "exclusion", "name": z["name"], "geometry": z["geometry"],
                        "valid_from": valid_from}),
            )
            .await
        });
        if zone_pending.len() >= 4 {
            zone_pending.next().await.transpose()?;
        }
    }
    while let Some(r) = zone_pending.next().await {
        r?;
    }
    eprintln!(
        "tagwatch: {} subjects, devices and {} zones created in {:.0} s",
        meta.devices,
        zones.lines().count(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn user(api: &Api, token: &str, name: &str, role: &str) -> anyhow::Result<String> {
    let v = api
        .post(token, "/v1/users", &json!({"name": name, "role": role}))
        .await?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the user answer")
}

/// The device number of a `pings.ndjson` line (see `gen.rs`: a fixed prefix, six digits).
fn device_of(line: &[u8]) -> Option<usize> {
    const PREFIX: &[u8] = br#"{"device_id":"CMP-D"#;
    let digits = line.strip_prefix(PREFIX)?.get(..6)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The engine's evaluation counter (device batches evaluated) from `/metrics`.
async fn engine_progress(api: &Api, token: &str) -> anyhow::Result<u64> {
    let text = api
        .client
        .get(format!("{}/metrics", api.url))
        .bearer_auth(token)
        .send()
        .await?
        .text()
        .await?;
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    Ok(value("tagwatch_evaluation_seconds_count"))
}

async fn bulk(api: &Api, gateway: &str, admin: &str, args: &Args) -> anyhow::Result<Bulk> {
    let clients = args.concurrency.max(1);
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    for _ in 0..clients {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, usize)>(4);
        senders.push(tx);
        let (client, url, gateway, acked) = (
            api.client.clone(),
            api.url.clone(),
            gateway.to_owned(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut retries = 0u64;
            while let Some((body, n)) = rx.recv().await {
                let (v, latency, refused) =
                    post_until_acked(&client, &url, &gateway, bytes::Bytes::from(body)).await?;
                retries += refused;
                let ok =
                    v["accepted"].as_u64().unwrap_or(0) + v["duplicates"].as_u64().unwrap_or(0);
                if ok != n as u64 {
                    bail!("ingest acknowledged {ok} of {n}: {}", v["rejected"]);
                }
                latencies.push(latency);
                acked.fetch_add(ok, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>((latencies, retries))
        }));
    }
    // the reader: lines routed to the client owning their device
    let path = args.data.join("pings.ndjson");
    let batch = args.batch;
    let reader = tokio::task::spawn_blocking(move || {
        gen::route_lines(
            &path,
            batch,
            |line| device_of(line).context("a pings.ndjson line without the device prefix"),
            &senders,
        )
    });
    let lines = reader.await??;
    let mut latencies = Vec::new();
    let mut retries = 0;
    for t in tasks {
        let (l, r) = t.await??;
        latencies.extend(l);
        retries += r;
    }
    let ack_seconds = started.elapsed().as_secs_f64();
    // The engine evaluates committed fixes after the ack; wait until its evaluation counter
    // has rested for 5 s. (`tagwatch_ingest_queue_depth` is not used: it is set only when
    // a request enqueues, so it keeps its last value once ingest stops.)
    let mut last = engine_progress(api, admin).await?;
    let mut last_change = ack_seconds;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let count = engine_progress(api, admin).await?;
        let now = started.elapsed().as_secs_f64();
        if count != last {
            last = count;
            last_change = now;
        } else if now - last_change > 5.0 {
            break;
        }
    }
    let got = acked.load(Ordering::Relaxed);
    if got != lines {
        bail!("{got} of {lines} fixes acknowledged");
    }
    Ok(Bulk {
        fixes: lines,
        ack_seconds,
        seconds: last_change,
        fixes_per_s: lines as f64 / last_change,
        retries,
        breaches: 0,
        batch_latency: Latency::of(&latencies),
    })
}

async fn per_fix(
    api: &Api,
    gateway: &str,
    args: &Args,
    meta: &Meta,
    next_ts: &Arc<Vec<AtomicU64>>,
    run: usize,
) -> anyhow::Result<PerFixRun> {
    let deadline = Instant::now() + Duration::from_secs(args.per_fix_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.per_fix_clients {
        let (client, url, gateway, next_ts) = (
            api.client.clone(),
            api.url.clone(),
            gateway.to_owned(),
            next_ts.clone(),
        );
        let (clients, devices, last_us) = (args.per_fix_clients, meta.devices, meta.last_us);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64((run * 1000 + c) as u64);
            let mine: Vec<usize> = (0..devices).filter(|d| d % clients == c).collect();
            let mut latencies = Vec::new();
            let mut k = 0;
            while Instant::now() < deadline && !mine.is_empty() {
                let d = mine[k % mine.len()];
                k += 1;
                // a millisecond after the device's previous fix, from a minute after the
                // dataset: small steps, so that even a small fleet's fixes stay in the past
                // (ingest refuses fixes more than 5 min ahead of server time)
                let n = next_ts[d].fetch_add(1, Ordering::Relaxed) as i64;
                let ts = rfc3339(last_us + 60_000_000 + n * 1_000);
                let body = format!(
                    r#"{{"device_id":"{}","ts":"{ts}","lat":{},"lon":{},"accuracy_m":8,"speed_mps":1.3,"battery_pct":80}}"#,
                    gen::device_id(d),
                    51.40 + rng.gen::<f64>() * 0.2,
                    -0.30 + rng.gen::<f64>() * 0.4
                );
                let (v, latency, _) =
                    post_until_acked(&client, &url, &gateway, bytes::Bytes::from(body)).await?;
                if v["accepted"].as_u64() != Some(1) {
                    bail!("per-fix ingest answered {v}");
                }
                latencies.push(latency);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(PerFixRun {
        fixes: latencies.len() as u64,
        seconds,
        fixes_per_s: latencies.len() as f64 / seconds,
        latency: Latency::of(&latencies),
    })
}

fn justification() -> Value {
    json!({"crime_ref": "BENCH-1", "legal_basis": "benchmark on synthetic data", "reason": "tagwatch vs PostGIS"})
}

async fn queries(
    api: &Api,
    analyst: &str,
    work: &Workload,
    out: &mut SystemResult,
) -> anyhow::Result<()> {
    for (kind, _, _) in gen::SCENE_KINDS {
        let mut lat = Vec::new();
        let mut matches = Vec::new();
        for s in work.scenes.iter().filter(|s| s.kind == kind) {
            let body = json!({"lat": s.lat, "lon": s.lon, "radius_m": s.radius_m,
                "from": rfc3339(s.from_us), "to": rfc3339(s.to_us), "justification": justification()});
            let t = Instant::now();
            let v = api.post(analyst, "/v1/queries/crime-scene", &body).await?;
            lat.push(t.elapsed());
            matches.push(v["matches"].as_array().map_or(0, Vec::len));
        }
        let r = QueryResult {
            latency: Latency::of(&lat),
            matches,
        };
        eprintln!(
            "tagwatch: {kind}: p50 {:.2} ms, p99 {:.2} ms, {:.1} matches per query",
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.matches.iter().sum::<usize>() as f64 / r.matches.len().max(1) as f64
        );
        out.queries.insert(kind.to_owned(), r);
    }
    let mut lat = Vec::new();
    let mut located = Vec::new();
    for q in &work.at_time {
        let body = json!({"subject_id": gen::subject_id(q.subject), "at": rfc3339(q.at_us),
            "justification": justification()});
        let t = Instant::now();
        let v = api
            .post(analyst, "/v1/queries/location-at-time", &body)
            .await?;
        lat.push(t.elapsed());
        located.push(usize::from(!v["estimate"]["lat"].is_null()));
    }
    let r = QueryResult {
        latency: Latency::of(&lat),
        matches: located,
    };
    eprintln!(
        "tagwatch: location-at-time: p50 {:.2} ms, p99 {:.2} ms",
        r.latency.p50_ms, r.latency.p99_ms
    );
    out.queries.insert("at_time".into(), r);
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let meta: Meta = crate::read_json(&args.data.join("meta.json"))?;
    let work: Workload = crate::read_json(&args.data.join("queries.json"))?;
    let api = Api {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(300))
            .build()?,
        url: args.url.trim_end_matches('/').to_owned(),
    };
    let mut out = SystemResult {
        system: args.system.clone(),
        devices: meta.devices,
        rss_start_kb: crate::rss_kb(args.pid),
        ..Default::default()
    };
    if args.queries_only {
        let analyst = user(&api, &args.token, "compare analyst", "analyst").await?;
        queries(&api, &analyst, &work, &mut out).await?;
        return crate::write_json(&args.out, &out);
    }
    setup(&api, &args.token, &args.data, &meta).await?;
    let gateway = user(&api, &args.token, "compare gateway", "device").await?;
    let analyst = user(&api, &args.token, "compare analyst", "analyst").await?;

    out.bulk = bulk(&api, &gateway, &args.token, &args).await?;
    out.rss_after_ingest_kb = crate::rss_kb(args.pid);
    eprintln!(
        "{}: bulk ingest {} fixes: acknowledged in {:.1} s, evaluated in {:.1} s = {:.0} fixes/s ({} retries after 429/503)",
        args.system, out.bulk.fixes, out.bulk.ack_seconds, out.bulk.seconds, out.bulk.fixes_per_s, out.bulk.retries
    );
    let alerts = api
        .client
        .get(format!("{}/metrics", api.url))
        .bearer_auth(&args.token)
        .send()
        .await?
        .text()
        .await?;
    if let Some(url) = &args.vacuum_url {
        let t = Instant::now();
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::Executor::execute(&mut c, "VACUUM ANALYZE").await?;
        c.close().await?;
        out.notes.push(format!(
            "VACUUM ANALYZE after the load: {:.0} s (not counted in ingest)",
            t.elapsed().as_secs_f64()
        ));
    }
    out.bulk.breaches = alerts
        .lines()
        .filter(|l| l.starts_with("tagwatch_alerts_opened_total") && l.contains("exclusion"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    out.notes.push(format!(
        "{} exclusion-breach alerts opened (episodes, not fixes)",
        out.bulk.breaches
    ));

    // queries first, so they see exactly the dataset; per-fix ingest adds to it
    queries(&api, &analyst, &work, &mut out).await?;
    let next_ts = Arc::new(
        (0..meta.devices)
            .map(|_| AtomicU64::new(0))
            .collect::<Vec<_>>(),
    );
    for run in 0..args.per_fix_runs {
        let r = per_fix(&api, &gateway, &args, &meta, &next_ts, run).await?;
        eprintln!(
            "{}: per-fix ingest run {run}: {:.0} fixes/s, p50 {:.2} ms, p99 {:.2} ms",
            args.system, r.fixes_per_s, r.latency.p50_ms, r.latency.p99_ms
        );
        out.per_fix.push(r);
    }
    crate::write_json(&args.out, &out)
}

/// Posts an NDJSON `body` of pings until it is acknowledged, waiting as `Retry-After`
/// says (0.05–1 s) after each 429/503. Returns the answer, the latency of the attempt that
/// was acknowledged and how many attempts were refused.
async fn post_until_acked(
    client: &reqwest::Client,
    url: &str,
    gateway: &str,
    body: bytes::Bytes,
) -> anyhow::Result<(Value, Duration, u64)> {
    let mut refused = 0;
    loop {
        let sent = Instant::now();
        let r = client
            .post(format!("{url}/v1/pings"))
            .bearer_auth(gateway)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await?;
        let status = r.status();
        if status.as_u16() == 429 || status.as_u16() == 503 {
            refused += 1;
            let wait = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0.1, |s| s.clamp(0.05, 1.0));
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            continue;
        }
        let v: Value = r.json().await.unwrap_or_default();
        let latency = sent.elapsed();
        if !status.is_success() {
            bail!("ingest answered {status}: {v}");
        }
        return Ok((v, latency, refused));
    }
}
