//! `cargo run --release --example compare -- <step>`: the steps of `benches/compare.sh`, which
//! measures tagwatch (SQLite and PostgreSQL stores) and a PostgreSQL+PostGIS build of the
//! same operations side by side on one seeded dataset.
//!
//! - `gen` writes the dataset and the query workload (`gen.rs`);
//! - `tagwatch` drives a running `tagwatch serve` over HTTP (`tagwatch.rs`);
//! - `postgis` builds and drives the PostGIS database (`postgis.rs`);
//! - `disk` measures bytes per stored fix of a store after its server stopped;
//! - `report` prints the side-by-side table and writes it as Markdown (`report.rs`).
//!
//! Every step writes what it measured as JSON under the work dir, so a step can be rerun
//! alone and the report rebuilt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gen;
mod postgis;
mod report;
mod tagwatch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "tagwatch vs PostGIS, side by side (benches/compare.sh)")]
struct Cli {
    #[command(subcommand)]
    step: Step,
}

#[derive(Subcommand)]
enum Step {
    /// Write the seeded dataset and query workload.
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2_000)]
        devices: usize,
        #[arg(long, default_value_t = 10_000_000)]
        fixes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Queries of each kind (four crime-scene kinds, location-at-time).
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
    /// Drive a running tagwatch server.
    Tagwatch(tagwatch::Args),
    /// Build and drive the PostGIS database.
    Postgis(postgis::Args),
    /// Bytes per stored fix of a tagwatch store (run after its server stopped).
    Disk {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the table and write `results.md`.
    Report(report::Args),
}

/// Latency samples of one operation, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let pct = |q: f64| -> f64 {
            if ms.is_empty() {
                return f64::NAN;
            }
            ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1]
        };
        Latency {
            n: ms.len(),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            mean_ms: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        }
    }
}

/// One run of per-fix durable ingest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PerFixRun {
    pub fixes: u64,
    pub seconds: f64,
    pub fixes_per_s: f64,
    pub latency: Latency,
}

/// One query kind: latency and how many subjects each query matched (to check that both
/// systems answer the same question).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryResult {
    pub latency: Latency,
    pub matches: Vec<usize>,
}

/// Bulk ingest of the whole dataset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bulk {
    pub fixes: u64,
    /// until the last fix was acknowledged (tagwatch) / committed (PostGIS)
    pub ack_seconds: f64,
    /// until every fix was also evaluated against the zones (tagwatch's engine runs after
    /// commit; PostGIS checks zones inside the transaction, so the same as `ack_seconds`)
    pub seconds: f64,
    pub fixes_per_s: f64,
    pub retries: u64,
    pub breaches: u64,
    pub batch_latency: Latency,
}

/// What one system measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SystemResult {
    pub system: String,
    pub bulk: Bulk,
    pub per_fix: Vec<PerFixRun>,
    pub queries: std::collections::BTreeMap<String, QueryResult>,
    pub rss_start_kb: Option<u64>,
    pub rss_after_ingest_kb: Option<u64>,
    pub devices: usize,
    pub notes: Vec<String>,
}

/// Disk use of a store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Disk {
    pub fixes: i64,
    /// the fixes table, its indexes and (tagwatch) the crime-scene segment index
    pub fix_bytes: i64,
    /// the whole database file(s) or database
    pub total_bytes: i64,
}

/// Resident set size of a process, from `/proc/<pid>/status`.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn write_json<T: Serialize>(path: &std::path::Path, v: &T) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(v)?)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

async fn disk(database_url: &str) -> anyhow::Result<Disk> {
    use sqlx::Connection;
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        let mut c = sqlx::SqliteConnection::connect(database_url).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut c)
            .await?;
        let fixes: i64 = sqlx::query_scalar("SELECT count(*) FROM fixes")
            .fetch_one(&mut c)
            .await?;
        // dbstat splits the file by table and index when the library has it
        let fix_bytes: Option<i64> = sqlx::query_scalar(
            "SELECT sum(pgsize) FROM dbstat WHERE name IN \
             (SELECT name FROM sqlite_schema WHERE tbl_name IN ('fixes', 'fix_cells', 'fix_segments'))",
        )
        .fetch_one(&mut c)
        .await
        .ok()
        .flatten();
        c.close().await?;
        let size = |p: String| std::fs::metadata(p).map(|m| m.len() as i64).unwrap_or(0);
        let total = size(path.to_owned()) + size(format!("{path}-wal"));
        Ok(Disk {
            fixes,
            fix_bytes: fix_bytes.unwrap_or(total),
            total_bytes: total,
        })
    } else {
        let mut c = sqlx::PgConnection::connect(database_url).await?;
        let fixes: i64 = sqlx::query_scalar("SELECT count(*) FROM fixes")
            .fetch_one(&mut c)
            .await?;
        let fix_bytes: i64 = sqlx::query_scalar(
            "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c \
             WHERE c.relname IN ('fixes', 'fix_segments') AND c.relkind = 'r'",
        )
        .fetch_one(&mut c)
        .await?;
        let total_bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&mut c)
            .await?;
        Ok(Disk {
            fixes,
            fix_bytes,
            total_bytes,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.step {
        Step::Gen {
            out,
            devices,
            fixes,
            seed,
            queries,
        } => {
            let t = std::time::Instant::now();
            let meta = gen::generate(&out, devices, fixes, seed, queries)?;
            eprintln!(
                "gen: {} fixes of {} devices over {} minutes in {:.0} s → {}",
                meta.fixes,
                meta.devices,
                meta.minutes,
                t.elapsed().as_secs_f64(),
                out.display()
            );
            Ok(())
        }
        Step::Tagwatch(args) => rt.block_on(tagwatch::run(args)),
        Step::Postgis(args) => rt.block_on(postgis::run(args)),
        Step::Disk { database_url, out } => {
            let d = rt.block_on(disk(&database_url))?;
            eprintln!(
                "disk: {} fixes, {} bytes for fixes and indexes ({:.0} B/fix), {} bytes in all",
                d.fixes,
                d.fix_bytes,
                d.fix_bytes as f64 / d.fixes.max(1) as f64,
                d.total_bytes
            );
            write_json(&out, &d)
        }
        Step::Report(args) => report::run(args),
    }
}
