//! `tagwatch demo`: the whole system on real London data, on the embedded store.
//!
//! Creates users (printing their tokens), subjects in the GtO pilot boroughs, their tags,
//! exclusion zones around real stations (one a whole borough) and 19:00–07:00 curfews; replays
//! a simulated fleet faster than real time through the real HTTP ingest path; prints alerts as
//! they open and end; runs a crime-scene query at a real burglary location; and ends with a
//! summary that compares the alerts with the simulator's ground truth. The web console stays
//! served until Ctrl-C (unless `--exit`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{TimeDelta, Utc};
use serde::Serialize;
use serde_json::json;

use crate::api::users::create_user;
use crate::model::{time, Role};
use crate::sim::{Fleet, FleetConfig};
use crate::Settings;

/// Options of `tagwatch demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The demo's own SQLite file, recreated at every run.
    #[arg(long, default_value = "sqlite://data/demo.db")]
    pub database_url: String,
    /// Address to serve on (`:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Simulated subjects.
    #[arg(long, default_value_t = 24)]
    pub subjects: usize,
    /// Hours of simulated time (ending now).
    #[arg(long, default_value_t = 24)]
    pub hours: i64,
    /// Seed of the simulated fleet.
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
    /// Exit after the summary instead of serving the console until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// How the alerts compare with the simulator's ground truth.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub fixes_posted: usize,
    pub fixes_accepted: u64,
    pub alerts_by_type: std::collections::BTreeMap<String, usize>,
    pub truth_breaches: usize,
    pub found: usize,
    pub missed: usize,
    pub false_alerts: usize,
    pub crime_scene_matches: Option<usize>,
}

/// Runs the demo; returns its summary.
pub async fn run(args: DemoArgs) -> anyhow::Result<Summary> {
    if let Some(path) = args.database_url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    } else {
        bail!("the demo runs on the embedded SQLite store (sqlite://…)");
    }
    let mut settings = Settings::with_database(&args.database_url);
    settings.listen = args.listen.clone();
    let running = crate::app::start(settings).await?;
    let state = running.state.clone();
    let url = format!("http://{}", running.addr);

    let hours = args.hours.max(1);
    let start = Utc::now() - TimeDelta::hours(hours);
    let fleet = Fleet::generate(FleetConfig {
        seed: args.seed,
        subjects: args.subjects.max(4),
        start,
        duration: TimeDelta::hours(hours),
        ..FleetConfig::default()
    })
    .context("simulating the fleet")?;

    let admin = create_user(&state, "demo administrator", Role::Admin, None).await?;
    let officer = create_user(&state, "Probation officer (demo)", Role::Officer, None).await?;
    let analyst = create_user(&state, "MPS analyst (demo)", Role::Analyst, None).await?;
    let auditor = create_user(&state, "Auditor (demo)", Role::Auditor, None).await?;
    let gateway = create_user(&state, "vendor gateway (demo)", Role::Device, None).await?;
    println!("tagwatch demo — console at {url}/");
    println!("  admin    token {}", admin.token);
    println!("  officer  token {}", officer.token);
    println!("  analyst  token {}", analyst.token);
    println!("  auditor  token {}", auditor.token);

    let client = reqwest::Client::new();
    let post = |path: String, token: String, body: serde_json::Value| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            if !status.is_success() {
                bail!("{path}: {status} {v}");
            }
            Ok::<_, anyhow::Error>(v)
        }
    };

    // subjects, tags, zones
    let mut zone_ids: HashMap<(String, usize), i64> = HashMap::new();
    let mut zone_count = 0;
    for s in &fleet.subjects {
        post(
            "/v1/subjects".into(),
            admin.token.clone(),
            json!({"id": s.id, "display_name": s.display_name, "borough": s.borough, "officer_id": officer.id}),
        )
        .await?;
        post(
            "/v1/devices".into(),
            admin.token.clone(),
            json!({"id": s.device_id, "subject_id": s.id}),
        )
        .await?;
        for (i, z) in s.zones.iter().enumerate() {
            let v = post(
                format!("/v1/subjects/{}/zones", s.id),
                officer.token.clone(),
                json!({"kind": z.kind, "name": z.name, "geometry": z.geometry, "schedule": z.schedule,
                       "valid_from": time::rfc3339(time::to_micros(start) - 3_600_000_000)}),
            )
            .await?;
            zone_ids.insert((s.id.clone(), i), v["id"].as_i64().unwrap_or_default());
            zone_count += 1;
        }
    }
    println!(
        "  {} subjects in {} boroughs, {} zones (curfews 19:00–07:00), {} pings over {} h to replay",
        fleet.subjects.len(),
        {
            let mut b: Vec<&str> = fleet.subjects.iter().map(|s| s.borough.as_str()).collect();
            b.sort();
            b.dedup();
            b.len()
        },
        zone_count,
        fleet.pings.len(),
        hours
    );

    // print alerts as they change
    let mut changes = state.monitor.subscribe();
    let names: HashMap<i64, String> = state
        .store
        .subjects()
        .await?
        .into_iter()
        .map(|s| (s.pk, s.id))
        .collect();
    let printer = tokio::spawn(async move {
        while let Ok(c) = changes.recv().await {
            if c.kind == "opened" || c.kind == "ended" || c.kind == "withdrawn" {
                println!(
                    "  alert {:>4} {:<9} {:<17} {} started {}{}",
                    c.alert.id,
                    c.kind,
                    c.alert.alert_type,
                    names
                        .get(&c.alert.subject_pk)
                        .map(String::as_str)
                        .unwrap_or("?"),
                    time::rfc3339(c.alert.started_at),
                    c.alert
                        .ended_at
                        .map(|e| format!(" ended {}", time::rfc3339(e)))
                        .unwrap_or_default()
                );
            }
        }
    });

    // replay in delivery order, in batches, through HTTP
    let started = Instant::now();
    let mut accepted = 0u64;
    let wires: Vec<_> = fleet.pings.iter().map(|p| fleet.wire(p)).collect();
    let replay = async {
        for chunk in wires.chunks(500) {
            let v = post("/v1/pings".into(), gateway.token.clone(), json!(chunk)).await?;
            accepted += v["accepted"].as_u64().unwrap_or(0);
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        r = replay => r?,
        _ = tokio::signal::ctrl_c() => {
            println!("interrupted");
            running.stop().await;
            bail!("interrupted");
        }
    }
    println!(
        "  replayed {} pings in {:.1} s ({} accepted)",
        wires.len(),
        started.elapsed().as_secs_f64(),
        accepted
    );

    // let the engine finish: wait until the alert list stops changing
    let mut last = usize::MAX;
    let mut stable = 0;
    let mut alerts = vec![];
    while stable < 3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        alerts = state
            .store
            .list_alerts(&crate::store::AlertFilter {
                limit: 100_000,
                ..Default::default()
            })
            .await?;
        let n = alerts.len() + alerts.iter().filter(|a| a.ended_at.is_some()).count();
        stable = if n == last { stable + 1 } else { 0 };
        last = n;
    }
    printer.abort();

    // the crime-scene query at a real burglary location
    let mut crime_scene_matches = None;
    if let Some(c) = &fleet.crime_scene {
        let body = json!({"lat": c.lat, "lon": c.lon, "radius_m": 100,
            "from": c.from.to_rfc3339(), "to": c.to.to_rfc3339(),
            "justification": {"crime_ref": c.crime_id, "legal_basis": "DPA 2018 s.35 (law enforcement)",
                              "reason": format!("burglary at {} ({}), demo", c.location, c.month)}});
        match post(
            "/v1/queries/crime-scene".into(),
            analyst.token.clone(),
            body,
        )
        .await
        {
            Ok(v) => {
                let matches = v["matches"].as_array().map(Vec::len).unwrap_or(0);
                println!(
                    "  crime-scene query at a real burglary location ({}, {}): {} subject(s) within 100 m{}",
                    c.location,
                    c.month,
                    matches,
                    v["matches"][0]["subject_id"]
                        .as_str()
                        .map(|s| format!(", closest {s}"))
                        .unwrap_or_default()
                );
                crime_scene_matches = Some(matches);
            }
            Err(e) => println!("  crime-scene query not available: {e}"),
        }
    }

    let mut summary = summarise(
        &fleet,
        &zone_ids,
        &names_by_pk(&state).await?,
        &alerts,
        accepted,
    );
    summary.crime_scene_matches = crime_scene_matches;
    println!(
        "summary: {} fixes ingested; alerts by type {:?}; ground-truth breaches {}: found {}, missed {}; false alerts {}",
        summary.fixes_accepted,
        summary.alerts_by_type,
        summary.truth_breaches,
        summary.found,
        summary.missed,
        summary.false_alerts
    );
    println!("SUMMARY {}", serde_json::to_string(&summary)?);
    if !args.exit {
        println!("serving the console at {url}/ — Ctrl-C to stop");
        let _ = tokio::signal::ctrl_c().await;
    }
    running.stop().await;
    Ok(summary)
}

async fn names_by_pk(state: &crate::api::AppState) -> anyhow::Result<HashMap<i64, String>> {
    Ok(state
        .store
        .subjects()
        .await?
        .into_iter()
        .map(|s| (s.pk, s.id))
        .collect())
}

/// Matches alerts to ground-truth events: same subject, type, zone, start and end.
fn summarise(
    fleet: &Fleet,
    zone_ids: &HashMap<(String, usize), i64>,
    names: &HashMap<i64, String>,
    alerts: &[crate::store::AlertRow],
    accepted: u64,
) -> Summary {
    let live: Vec<&crate::store::AlertRow> =
        alerts.iter().filter(|a| a.status != "withdrawn").collect();
    let mut used = vec![false; live.len()];
    let mut found = 0;
    for t in &fleet.truth {
        let zone = t
            .zone
            .and_then(|z| zone_ids.get(&(t.subject.clone(), z)).copied());
        let hit = live.iter().enumerate().position(|(i, a)| {
            !used[i]
                && names.get(&a.subject_pk) == Some(&t.subject)
                && a.alert_type == t.kind.as_str()
                && a.zone_id == zone
                && a.started_at == time::to_micros(t.start)
                && a.ended_at == t.end.map(time::to_micros)
        });
        if let Some(i) = hit {
            used[i] = true;
            found += 1;
        }
    }
    let mut by_type = std::collections::BTreeMap::new();
    for a in &live {
        *by_type.entry(a.alert_type.clone()).or_insert(0) += 1;
    }
    Summary {
        fixes_posted: fleet.pings.len(),
        fixes_accepted: accepted,
        alerts_by_type: by_type,
        truth_breaches: fleet.truth.len(),
        found,
        missed: fleet.truth.len() - found,
        false_alerts: used.iter().filter(|u| !**u).count(),
        crime_scene_matches: None,
    }
}
