//! Durability under SIGKILL: the real binary ingests from concurrent clients, is killed with
//! SIGKILL mid-stream, restarts on the same store; every acknowledged fix is present once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{fresh_database, Backend};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_tagwatch");

/// Starts `tagwatch serve` on a free port and returns the child and its base URL, read from
/// the one log line it prints when ready.
fn serve(database_url: &str) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(i) = line.find("http://") {
            break line[i..].split_whitespace().next().unwrap().to_owned();
        }
    };
    // keep draining the pipe so the server never blocks on a full stderr
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

fn create_admin(database_url: &str) -> String {
    let out = Command::new(BIN)
        .args(["user", "create", "--name", "admin", "--role", "admin"])
        .env("DATABASE_URL", database_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn every_acknowledged_fix_survives_sigkill(backend: Backend) {
    let (database_url, _guard) = fresh_database(backend).await;
    let admin = create_admin(&database_url);
    let (mut child, url) = serve(&database_url);
    let client = reqwest::Client::new();
    for d in 0..20 {
        let r = client
            .post(format!("{url}/v1/subjects"))
            .bearer_auth(&admin)
            .json(&json!({"id": format!("S{d}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = client
            .post(format!("{url}/v1/devices"))
            .bearer_auth(&admin)
            .json(&json!({"id": format!("D{d}"), "subject_id": format!("S{d}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = client
        .post(format!("{url}/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"name": "gateway", "role": "device"}))
        .send()
        .await
        .unwrap();
    let gateway = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // 6 clients post disjoint batches as fast as they are acknowledged
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let base = chrono::Utc::now() - chrono::Duration::hours(2);
    let mut clients = Vec::new();
    for c in 0..6i64 {
        let (client, url, gateway, acked) =
            (client.clone(), url.clone(), gateway.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for round in 0i64.. {
                let keys: Vec<(String, String)> = (0..100i64)
                    .map(|i| {
                        let seq = (round * 6 + c) * 100 + i;
                        let ts = (base + chrono::Duration::milliseconds(seq)).to_rfc3339();
                        (format!("D{}", seq % 20), ts)
                    })
                    .collect();
                let batch: Vec<_> = keys
                    .iter()
                    .map(|(d, ts)| json!({"device_id": d, "ts": ts, "lat": 51.5, "lon": -0.1}))
                    .collect();
                let resp = client
                    .post(format!("{url}/v1/pings"))
                    .bearer_auth(&gateway)
                    .json(&batch)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        let v: serde_json::Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => return,
                        };
                        assert_eq!(v["accepted"], 100, "{v}");
                        acked.lock().unwrap().extend(keys);
                    }
                    _ => return, // the server is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1000,
        "too little was acknowledged to test anything: {}",
        acked.len()
    );

    // restart on the same store and check every acknowledged fix is there, once
    let (mut child, _url) = serve(&database_url);
    let store = tagwatch::store::Store::connect(&database_url)
        .await
        .unwrap();
    let devices = store.devices().await.unwrap();
    let mut stored = std::collections::HashSet::new();
    let mut total = 0;
    for d in &devices {
        for f in store.device_fixes(d.pk, 0, i64::MAX).await.unwrap() {
            total += 1;
            stored.insert((d.id.clone(), f.ts));
        }
    }
    assert_eq!(total, stored.len(), "a fix is stored twice");
    for (device, ts) in &acked {
        let us = tagwatch::model::time::parse_rfc3339(ts).unwrap();
        assert!(
            stored.contains(&(device.clone(), us)),
            "acknowledged fix {device} {ts} lost"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_acknowledged_fix_survives_sigkill() {
    every_acknowledged_fix_survives_sigkill(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_acknowledged_fix_survives_sigkill() {
    every_acknowledged_fix_survives_sigkill(Backend::Postgres).await;
}
