//! The side-by-side table: one row per operation, one column per system, and the ratio of
//! tagwatch's better store to PostGIS in the row's own unit (for throughput above 1 means
//! tagwatch is faster; for latency and bytes below 1 means tagwatch is faster / smaller).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::{Disk, SystemResult};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The work dir holding `tagwatch-sqlite.json`, `tagwatch-postgres.json`, `postgis.json`
    /// and their `.disk.json`, and `load.log`.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where the Markdown goes.
    #[arg(long)]
    pub markdown: PathBuf,
    /// The machine, one line.
    #[arg(long)]
    pub machine: String,
    /// The command that produced the run.
    #[arg(long)]
    pub command: String,
    #[arg(long)]
    pub date: String,
}

const SYSTEMS: [&str; 3] = ["tagwatch-sqlite", "tagwatch-postgres", "postgis"];

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

struct Row {
    op: String,
    cells: [String; 3],
    ratio: String,
}

/// A row from one number per system (None = not measured / not applicable).
fn row(op: &str, vals: [Option<f64>; 3], extra: [Option<String>; 3], better: Better) -> Row {
    let cells = std::array::from_fn(|i| match (vals[i], &extra[i]) {
        (Some(v), Some(e)) => format!("{} ({e})", fmt_num(v)),
        (Some(v), None) => fmt_num(v),
        _ => "—".to_owned(),
    });
    let best = match (vals[0], vals[1]) {
        (Some(a), Some(b)) => Some(if better == Better::Higher {
            a.max(b)
        } else {
            a.min(b)
        }),
        (a, b) => a.or(b),
    };
    let ratio = match (best, vals[2]) {
        (Some(t), Some(p)) if p > 0.0 => {
            let r = t / p;
            let faster = match better {
                Better::Higher => r >= 1.0,
                Better::Lower => r <= 1.0,
            };
            let factor = if r >= 1.0 { r } else { 1.0 / r };
            format!(
                "{r:.2} (tagwatch {factor:.1}× {})",
                if faster { "better" } else { "worse" }
            )
        }
        _ => "—".to_owned(),
    };
    Row {
        op: op.to_owned(),
        cells,
        ratio,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let results: Vec<Option<SystemResult>> = SYSTEMS
        .iter()
        .map(|s| crate::read_json(&args.dir.join(format!("{s}.json"))).ok())
        .collect();
    let disks: Vec<Option<Disk>> = SYSTEMS
        .iter()
        .map(|s| crate::read_json(&args.dir.join(format!("{s}.disk.json"))).ok())
        .collect();
    let get = |f: &dyn Fn(&SystemResult) -> Option<f64>| -> [Option<f64>; 3] {
        std::array::from_fn(|i| results[i].as_ref().and_then(f))
    };
    let none: [Option<String>; 3] = [None, None, None];
    let mut rows = Vec::new();
    let fixes = results
        .iter()
        .flatten()
        .map(|r| r.bulk.fixes)
        .max()
        .unwrap_or(0);
    rows.push(row(
        "bulk ingest with zone checks, fixes/s (all acknowledged and evaluated)",
        get(&|r| (r.bulk.fixes > 0).then_some(r.bulk.fixes_per_s)),
        none.clone(),
        Better::Higher,
    ));
    let per_fix = |r: &SystemResult| median(r.per_fix.iter().map(|p| p.fixes_per_s).collect());
    rows.push(row(
        "per-fix durable ingest, fixes/s (median of runs; p50 / p99 ms)",
        get(&per_fix),
        std::array::from_fn(|i| {
            results[i].as_ref().and_then(|r| {
                Some(format!(
                    "{:.1} / {:.1} ms",
                    median(r.per_fix.iter().map(|p| p.latency.p50_ms).collect())?,
                    median(r.per_fix.iter().map(|p| p.latency.p99_ms).collect())?
                ))
            })
        }),
        Better::Higher,
    ));
    for (kind, label) in [
        ("scene_100m_1h", "crime scene 100 m / 1 h"),
        ("scene_100m_24h", "crime scene 100 m / 24 h"),
        ("scene_500m_1h", "crime scene 500 m / 1 h"),
        ("scene_500m_24h", "crime scene 500 m / 24 h"),
        ("at_time", "location at time"),
    ] {
        let q = |i: usize| results[i].as_ref().and_then(|r| r.queries.get(kind));
        let with_interp = if kind == "at_time" {
            ""
        } else {
            ", with interpolation"
        };
        rows.push(row(
            &format!("{label}{with_interp}, p50 ms (p99)"),
            std::array::from_fn(|i| q(i).map(|q| q.latency.p50_ms)),
            std::array::from_fn(|i| q(i).map(|q| format!("{:.1}", q.latency.p99_ms))),
            Better::Lower,
        ));
        if kind != "at_time" {
            let f = |i: usize| {
                results[i]
                    .as_ref()
                    .and_then(|r| r.queries.get(&format!("{kind}_fixes_only")))
            };
            rows.push(row(
                &format!("{label}, fixes only (PostGIS), p50 ms (p99)"),
                std::array::from_fn(|i| f(i).map(|q| q.latency.p50_ms)),
                std::array::from_fn(|i| f(i).map(|q| format!("{:.1}", q.latency.p99_ms))),
                Better::Lower,
            ));
        }
    }
    rows.push(row(
        "bytes per stored fix (fixes + indexes)",
        std::array::from_fn(|i| {
            disks[i]
                .as_ref()
                .map(|d| d.fix_bytes as f64 / d.fixes.max(1) as f64)
        }),
        std::array::from_fn(|i| {
            disks[i].as_ref().map(|d| {
                format!(
                    "{:.2} GB of {} fixes",
                    d.fix_bytes as f64 / 1e9,
                    fmt_num(d.fixes as f64)
                )
            })
        }),
        Better::Lower,
    ));
    rows.push(row(
        "server resident memory per tracked device, bytes (RSS after ingest − at start)",
        get(&|r| {
            let (a, b) = (r.rss_after_ingest_kb?, r.rss_start_kb?);
            Some((a.saturating_sub(b) * 1024) as f64 / r.devices.max(1) as f64)
        }),
        none.clone(),
        Better::Lower,
    ));

    // how far the answers agree: matches per query, and queries answered alike
    let mut agree = String::new();
    for (kind, _, _) in crate::gen::SCENE_KINDS {
        let m = |i: usize| {
            results[i]
                .as_ref()
                .and_then(|r| r.queries.get(kind))
                .map(|q| q.matches.clone())
        };
        let mean = |v: &Vec<usize>| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
        let parts: Vec<String> = (0..3)
            .filter_map(|i| m(i).map(|v| format!("{} {:.1}", SYSTEMS[i], mean(&v))))
            .collect();
        let same = match (m(0).or(m(1)), m(2)) {
            (Some(t), Some(p)) if t.len() == p.len() => format!(
                "; same number of matches as PostGIS in {} of {} queries",
                t.iter().zip(&p).filter(|(a, b)| a == b).count(),
                t.len()
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            agree,
            "- {kind}: matches per query {}{same}",
            parts.join(", ")
        );
    }

    let load = std::fs::read_to_string(args.dir.join("load.log")).unwrap_or_default();
    let loads: Vec<f64> = load
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let load_line = if loads.is_empty() {
        "load average not recorded".to_owned()
    } else {
        format!(
            "1-minute load average during the run: mean {:.1}, min {:.1}, max {:.1} ({} samples)",
            loads.iter().sum::<f64>() / loads.len() as f64,
            loads.iter().cloned().fold(f64::INFINITY, f64::min),
            loads.iter().cloned().fold(0.0, f64::max),
            loads.len()
        )
    };

    let mut md = String::new();
    let _ = writeln!(
        md,
        "tagwatch vs PostgreSQL+PostGIS, {} fixes; {}; {}",
        fmt_num(fixes as f64),
        args.date,
        args.machine
    );
    let _ = writeln!(md, "\n`{}`; {load_line}\n", args.command);
    let _ = writeln!(
        md,
        "| operation | tagwatch SQLite | tagwatch PostgreSQL | PostGIS | ratio tagwatch best / PostGIS |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r.op, r.cells[0], r.cells[1], r.cells[2], r.ratio
        );
    }
    let _ = writeln!(md, "\nAnswers:\n{agree}");
    for (i, r) in results.iter().enumerate() {
        if let Some(r) = r {
            for n in &r.notes {
                let _ = writeln!(md, "- {}: {n}", SYSTEMS[i]);
            }
            if r.bulk.fixes > 0 {
                let _ = writeln!(
                    md,
                    "- {}: bulk ingest acknowledged in {:.1} s, evaluated in {:.1} s; per batch p50 {:.0} ms, p99 {:.0} ms; {} resends after 429/503",
                    SYSTEMS[i], r.bulk.ack_seconds, r.bulk.seconds, r.bulk.batch_latency.p50_ms,
                    r.bulk.batch_latency.p99_ms, r.bulk.retries
                );
            }
        }
    }
    print!("{md}");
    if let Some(dir) = args.markdown.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.markdown, md)?;
    Ok(())
}
