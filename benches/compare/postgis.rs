//! The same operations on PostgreSQL + PostGIS, built the way a careful DBA would for this
//! workload, on the same server tagwatch's PostgreSQL store uses.
//!
//! Schema (all geometry in British National Grid, EPSG:27700: planar metres, so
//! `ST_DWithin(geom, centre, 500)` is a metre radius that the GiST index answers directly;
//! over Greater London its scale error is under 0.04 %, far below GPS accuracy; `geography`
//! would measure on the spheroid at several times the CPU per distance):
//! - `fixes(device_id, ts timestamptz, subject_id, geom Point 27700, accuracy_m, speed_mps,
//!   heading_deg, battery_pct, source, flags, received_at)`, primary key `(device_id, ts)`
//!   (B-tree: idempotent retries, a device's history in time order, location-at-time),
//!   GiST on `geom` (crime scenes), BRIN on `ts` (fixes arrive in time order, so a BRIN is
//!   a few pages and narrows a window scan);
//! - `zones(id, subject_id, kind, name, geom Polygon 27700)`, GiST on `geom`, B-tree on
//!   `subject_id` (circles are buffered into 64-gon polygons);
//! - `breaches(device_id, ts, zone_id)`: one row per fix inside one of its subject's zones.
//!
//! Operations:
//! - bulk ingest with zone checks: `--concurrency` connections, each owning the devices
//!   `d % concurrency` like tagwatch's clients; per `--batch` fixes one transaction: `COPY`
//!   into a temporary staging table, then one statement that inserts the fixes (transformed
//!   to 27700, `ON CONFLICT DO NOTHING`) and the breaches (join on the subject's zones,
//!   `ST_Intersects`), commit (`synchronous_commit = on`). `VACUUM ANALYZE` afterwards, timed
//!   apart;
//! - per-fix durable ingest: the same statement for one fix, autocommit, from
//!   `--per-fix-clients` connections;
//! - crime scene, fixes only: per device the closest fix within R in [T1, T2];
//! - crime scene with interpolation (the like-for-like figure: tagwatch answers this): also
//!   every segment between consecutive fixes ≤ 300 s apart whose part inside [T1, T2] passes
//!   within R. Candidate segments are found by their later fix within R + 1,000 m of the
//!   scene (GiST) and its predecessor (primary key, `LATERAL … ORDER BY ts DESC LIMIT 1`);
//!   exact for segments up to 1 km long, which covers every segment of this dataset
//!   (longest 624 m). tagwatch's index has no such bound;
//! - location-at-time: the subject's device, the fix at or before and the fix after the
//!   instant (primary key, `LIMIT 1` each way), observed within 5 s, else interpolated
//!   along the segment when ≤ 300 s apart.
//!
//! Queries run one at a time over loopback TCP from this client (prepared statements),
//! latency per query. No audit row is written (tagwatch writes and commits one per query).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::gen::{self, Meta, Workload};
use crate::{Bulk, Latency, PerFixRun, QueryResult, SystemResult};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A database on the server to connect to while creating the bench database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub admin_url: String,
    /// The bench database (dropped and created).
    #[arg(long, default_value = "tw_compare_postgis")]
    pub database: String,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    #[arg(long, default_value_t = 16)]
    pub per_fix_clients: usize,
    #[arg(long, default_value_t = 10)]
    pub per_fix_seconds: u64,
    #[arg(long, default_value_t = 3)]
    pub per_fix_runs: usize,
    /// Skip the load (reuse the database as it is) and only run the measurements after it.
    #[arg(long)]
    pub reuse: bool,
}

const SCHEMA: &str = r#"
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE subjects (id integer PRIMARY KEY, ref text NOT NULL UNIQUE);
CREATE TABLE devices (
    id integer PRIMARY KEY, ref text NOT NULL UNIQUE,
    subject_id integer NOT NULL REFERENCES subjects(id));
CREATE INDEX devices_subject ON devices (subject_id);
CREATE TABLE zones (
    id serial PRIMARY KEY, subject_id integer NOT NULL REFERENCES subjects(id),
    kind text NOT NULL, name text NOT NULL, geom geometry(Polygon, 27700) NOT NULL);
CREATE INDEX zones_geom ON zones USING gist (geom);
CREATE INDEX zones_subject ON zones (subject_id);
CREATE TABLE fixes (
    device_id   integer     NOT NULL,
    ts          timestamptz NOT NULL,
    subject_id  integer     NOT NULL,
    geom        geometry(Point, 27700) NOT NULL,
    accuracy_m  real,
    speed_mps   real,
    heading_deg real,
    battery_pct real,
    source      smallint    NOT NULL DEFAULT 1,
    flags       smallint    NOT NULL DEFAULT 0,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts));
CREATE INDEX fixes_geom ON fixes USING gist (geom);
CREATE INDEX fixes_ts ON fixes USING brin (ts);
CREATE TABLE breaches (
    device_id integer NOT NULL, ts timestamptz NOT NULL, zone_id integer NOT NULL,
    PRIMARY KEY (device_id, ts, zone_id));
"#;

/// Inserts fixes from `src` (columns device_id, ts, lon, lat, accuracy_m, speed_mps,
/// battery_pct) and their zone breaches, in one statement.
fn ingest_sql(src: &str) -> String {
    format!(
        "WITH f AS (
           INSERT INTO fixes (device_id, ts, subject_id, geom, accuracy_m, speed_mps, battery_pct)
           SELECT s.device_id, s.ts, d.subject_id,
                  ST_Transform(ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326), 27700),
                  s.accuracy_m, s.speed_mps, s.battery_pct
           FROM {src} s JOIN devices d ON d.id = s.device_id
           ON CONFLICT DO NOTHING
           RETURNING device_id, ts, subject_id, geom)
         INSERT INTO breaches (device_id, ts, zone_id)
         SELECT f.device_id, f.ts, z.id
         FROM f JOIN zones z ON z.subject_id = f.subject_id AND ST_Intersects(z.geom, f.geom)"
    )
}

const CENTRE: &str = "ST_Transform(ST_SetSRID(ST_MakePoint($1, $2), 4326), 27700)";

fn scene_fixes_sql() -> String {
    format!(
        "SELECT device_id, min(ST_Distance(geom, {CENTRE})) AS closest_m, count(*) AS fixes_within
         FROM fixes
         WHERE ts BETWEEN to_timestamp($4) AND to_timestamp($5) AND ST_DWithin(geom, {CENTRE}, $3)
         GROUP BY device_id ORDER BY closest_m"
    )
}

/// Longest segment the interpolating query is exact for, metres (see the module comment).
const MAX_SEGMENT_M: f64 = 1_000.0;

fn scene_interpolated_sql() -> String {
    format!(
        "WITH fx AS (
           SELECT device_id, min(ST_Distance(geom, {CENTRE})) AS d, count(*) AS n
           FROM fixes
           WHERE ts BETWEEN to_timestamp($4) AND to_timestamp($5) AND ST_DWithin(geom, {CENTRE}, $3)
           GROUP BY device_id),
         seg AS (
           SELECT f.device_id, p.ts AS t0, f.ts AS t1, ST_MakeLine(p.geom, f.geom) AS line
           FROM fixes f
           CROSS JOIN LATERAL (
             SELECT q.ts, q.geom FROM fixes q
             WHERE q.device_id = f.device_id AND q.ts < f.ts
             ORDER BY q.ts DESC LIMIT 1) p
           WHERE f.ts > to_timestamp($4) AND f.ts <= to_timestamp($5) + interval '300 seconds'
             AND ST_DWithin(f.geom, {CENTRE}, $3 + {MAX_SEGMENT_M})
             AND f.ts - p.ts <= interval '300 seconds' AND p.ts < to_timestamp($5)),
         part AS (
           SELECT device_id, ST_LineSubstring(line,
               greatest(0, extract(epoch FROM to_timestamp($4) - t0) / extract(epoch FROM t1 - t0))::float8,
               least(1, extract(epoch FROM to_timestamp($5) - t0) / extract(epoch FROM t1 - t0))::float8) AS g
           FROM seg),
         sg AS (
           SELECT device_id, min(ST_Distance(g, {CENTRE})) AS d
           FROM part WHERE ST_DWithin(g, {CENTRE}, $3) GROUP BY device_id)
         SELECT coalesce(fx.device_id, sg.device_id) AS device_id,
                least(fx.d, sg.d) AS closest_m,
                coalesce(fx.n, 0) AS fixes_within,
                CASE WHEN fx.device_id IS NULL THEN 'interpolated' ELSE 'fix' END AS method
         FROM fx FULL JOIN sg ON sg.device_id = fx.device_id
         ORDER BY closest_m"
    )
}

const AT_TIME_SQL: &str = "
WITH b AS (
  SELECT ts, geom FROM fixes
  WHERE device_id = (SELECT id FROM devices WHERE subject_id = $1) AND ts <= to_timestamp($2)
  ORDER BY ts DESC LIMIT 1),
a AS (
  SELECT ts, geom FROM fixes
  WHERE device_id = (SELECT id FROM devices WHERE subject_id = $1) AND ts > to_timestamp($2)
  ORDER BY ts LIMIT 1),
e AS (
  SELECT CASE
    WHEN b.ts >= to_timestamp($2) - interval '5 seconds'
         AND (a.ts IS NULL OR to_timestamp($2) - b.ts <= a.ts - to_timestamp($2)) THEN b.geom
    WHEN a.ts <= to_timestamp($2) + interval '5 seconds' THEN a.geom
    WHEN a.ts - b.ts <= interval '300 seconds' THEN ST_LineInterpolatePoint(ST_MakeLine(b.geom, a.geom),
         (extract(epoch FROM to_timestamp($2) - b.ts) / extract(epoch FROM a.ts - b.ts))::float8)
  END AS pos
  FROM (SELECT 1) one LEFT JOIN b ON true LEFT JOIN a ON true)
SELECT ST_Y(ST_Transform(pos, 4326)) AS lat, ST_X(ST_Transform(pos, 4326)) AS lon FROM e";

fn db_url(admin_url: &str, database: &str) -> anyhow::Result<String> {
    let (prefix, _) = admin_url
        .rsplit_once('/')
        .context("--admin-url has no database")?;
    Ok(format!("{prefix}/{database}"))
}

async fn create(args: &Args, meta: &Meta) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.admin_url)
        .await
        .with_context(|| format!("connecting to {}", args.admin_url))?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", args.database).as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE {}", args.database).as_str())
        .await?;
    // latency-bound OLTP queries: JIT compilation (default on) adds tens of ms to a plan
    // whose cost crosses jit_above_cost and saves nothing on queries this short
    admin
        .execute(format!("ALTER DATABASE {} SET jit = off", args.database).as_str())
        .await?;
    admin.close().await?;
    let mut c = PgConnection::connect(&db_url(&args.admin_url, &args.database)?).await?;
    c.execute(SCHEMA).await?;
    let mut tx = c.begin().await?;
    for d in 0..meta.devices {
        sqlx::query("INSERT INTO subjects (id, ref) VALUES ($1, $2)")
            .bind(d as i32)
            .bind(gen::subject_id(d))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO devices (id, ref, subject_id) VALUES ($1, $2, $1)")
            .bind(d as i32)
            .bind(gen::device_id(d))
            .execute(&mut *tx)
            .await?;
    }
    let zones = std::fs::read_to_string(args.data.join("zones.ndjson"))?;
    for line in zones.lines() {
        let z: Value = serde_json::from_str(line)?;
        let subject = z["subject"].as_i64().context("zone subject")? as i32;
        let name = z["name"].as_str().unwrap_or("zone");
        if let Some(wkt) = z["wkt"].as_str() {
            sqlx::query(
                "INSERT INTO zones (subject_id, kind, name, geom)
                 VALUES ($1, 'exclusion', $2, ST_Transform(ST_GeomFromText($3, 4326), 27700))",
            )
            .bind(subject)
            .bind(name)
            .bind(wkt)
            .execute(&mut *tx)
            .await?;
        } else {
            let c = &z["circle"];
            sqlx::query(
                "INSERT INTO zones (subject_id, kind, name, geom)
                 VALUES ($1, 'exclusion', $2, ST_Buffer(ST_Transform(ST_SetSRID(
                   ST_MakePoint($3, $4), 4326), 27700), $5, 'quad_segs=16'))",
            )
            .bind(subject)
            .bind(name)
            .bind(c["lon"].as_f64())
            .bind(c["lat"].as_f64())
            .bind(c["radius_m"].as_f64())
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    c.execute("ANALYZE").await?;
    c.close().await?;
    Ok(())
}

async fn bulk(args: &Args) -> anyhow::Result<Bulk> {
    let url = db_url(&args.admin_url, &args.database)?;
    let clients = args.concurrency.max(1);
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    let insert = ingest_sql("staging");
    let started = Instant::now();
    for _ in 0..clients {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, usize)>(4);
        senders.push(tx);
        let (url, insert) = (url.clone(), insert.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = PgConnection::connect(&url).await?;
            c.execute(
                "CREATE TEMP TABLE staging (device_id integer, ts timestamptz, lon float8,
                   lat float8, accuracy_m real, speed_mps real, battery_pct real)
                 ON COMMIT DELETE ROWS",
            )
            .await?;
            let mut latencies = Vec::new();
            let mut breaches = 0u64;
            while let Some((body, _)) = rx.recv().await {
                let t = Instant::now();
                let mut tx = c.begin().await?;
                let mut copy = tx
                    .copy_in_raw("COPY staging FROM STDIN (FORMAT csv)")
                    .await?;
                copy.send(body).await?;
                copy.finish().await?;
                breaches += sqlx::query(&insert)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                latencies.push(t.elapsed());
            }
            c.close().await?;
            Ok::<_, anyhow::Error>((latencies, breaches))
        }));
    }
    let path = args.data.join("fixes.csv");
    let batch = args.batch;
    let reader = tokio::task::spawn_blocking(move || {
        gen::route_lines(
            &path,
            batch,
            |line| {
                let comma = line
                    .iter()
                    .position(|b| *b == b',')
                    .context("a fixes.csv line without a comma")?;
                Ok(std::str::from_utf8(&line[..comma])?.parse()?)
            },
            &senders,
        )
    });
    let lines = reader.await??;
    let mut latencies = Vec::new();
    let mut breaches = 0;
    for t in tasks {
        let (l, b) = t.await??;
        latencies.extend(l);
        breaches += b;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Bulk {
        fixes: lines,
        ack_seconds: seconds,
        seconds,
        fixes_per_s: lines as f64 / seconds,
        retries: 0,
        breaches,
        batch_latency: Latency::of(&latencies),
    })
}

async fn per_fix(
    args: &Args,
    meta: &Meta,
    next_ts: &Arc<Vec<AtomicU64>>,
    run: usize,
) -> anyhow::Result<PerFixRun> {
    let url = db_url(&args.admin_url, &args.database)?;
    let deadline = Instant::now() + Duration::from_secs(args.per_fix_seconds);
    let insert = ingest_sql(
        "(SELECT $1::integer AS device_id, to_timestamp($2) AS ts, $3::float8 AS lon, \
          $4::float8 AS lat, $5::real AS accuracy_m, $6::real AS speed_mps, 80::real AS battery_pct)",
    );
    let mut conns = Vec::new();
    for _ in 0..args.per_fix_clients {
        conns.push(PgConnection::connect(&url).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let (insert, next_ts) = (insert.clone(), next_ts.clone());
        let (clients, devices, last_us) = (args.per_fix_clients, meta.devices, meta.last_us);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64((run * 1000 + c) as u64);
            let mine: Vec<usize> = (0..devices).filter(|d| d % clients == c).collect();
            let mut latencies = Vec::new();
            let mut k = 0;
            while Instant::now() < deadline && !mine.is_empty() {
                let d = mine[k % mine.len()];
                k += 1;
                let n = next_ts[d].fetch_add(1, Ordering::Relaxed) as i64;
                let ts_s = (last_us as f64) / 1e6 + 60.0 + n as f64 / 1e3; // as tagwatch's per-fix fixes
                let t = Instant::now();
                sqlx::query(&insert)
                    .bind(d as i32)
                    .bind(ts_s)
                    .bind(-0.30 + rng.gen::<f64>() * 0.4)
                    .bind(51.40 + rng.gen::<f64>() * 0.2)
                    .bind(8.0_f32)
                    .bind(1.3_f32)
                    .execute(&mut conn)
                    .await?;
                latencies.push(t.elapsed());
            }
            conn.close().await?;
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

async fn queries(args: &Args, work: &Workload, out: &mut SystemResult) -> anyhow::Result<()> {
    let mut c = PgConnection::connect(&db_url(&args.admin_url, &args.database)?).await?;
    let fixes_sql = scene_fixes_sql();
    let interp_sql = scene_interpolated_sql();
    for (kind, _, _) in gen::SCENE_KINDS {
        for (suffix, sql) in [("", &interp_sql), ("_fixes_only", &fixes_sql)] {
            let mut lat = Vec::new();
            let mut matches = Vec::new();
            for s in work.scenes.iter().filter(|s| s.kind == kind) {
                let t = Instant::now();
                let rows = sqlx::query(sql)
                    .bind(s.lon)
                    .bind(s.lat)
                    .bind(s.radius_m)
                    .bind(s.from_us as f64 / 1e6)
                    .bind(s.to_us as f64 / 1e6)
                    .fetch_all(&mut c)
                    .await?;
                lat.push(t.elapsed());
                matches.push(rows.len());
            }
            let r = QueryResult {
                latency: Latency::of(&lat),
                matches,
            };
            eprintln!(
                "postgis: {kind}{suffix}: p50 {:.2} ms, p99 {:.2} ms, {:.1} matches per query",
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.matches.iter().sum::<usize>() as f64 / r.matches.len().max(1) as f64
            );
            out.queries.insert(format!("{kind}{suffix}"), r);
        }
    }
    let mut lat = Vec::new();
    let mut located = Vec::new();
    for q in &work.at_time {
        let t = Instant::now();
        let row = sqlx::query(AT_TIME_SQL)
            .bind(q.subject as i32)
            .bind(q.at_us as f64 / 1e6)
            .fetch_one(&mut c)
            .await?;
        lat.push(t.elapsed());
        let la: Option<f64> = row.try_get("lat")?;
        located.push(usize::from(la.is_some()));
    }
    let r = QueryResult {
        latency: Latency::of(&lat),
        matches: located,
    };
    eprintln!(
        "postgis: location-at-time: p50 {:.2} ms, p99 {:.2} ms",
        r.latency.p50_ms, r.latency.p99_ms
    );
    out.queries.insert("at_time".into(), r);
    c.close().await?;
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let meta: Meta = crate::read_json(&args.data.join("meta.json"))?;
    let work: Workload = crate::read_json(&args.data.join("queries.json"))?;
    let mut out = SystemResult {
        system: "postgis".into(),
        devices: meta.devices,
        ..Default::default()
    };
    let url = db_url(&args.admin_url, &args.database)?;
    if !args.reuse {
        create(&args, &meta).await?;
        out.bulk = bulk(&args).await?;
        eprintln!(
            "postgis: bulk ingest {} fixes in {:.1} s = {:.0} fixes/s, {} breach rows",
            out.bulk.fixes, out.bulk.seconds, out.bulk.fixes_per_s, out.bulk.breaches
        );
        let t = Instant::now();
        let mut c = PgConnection::connect(&url).await?;
        c.execute("VACUUM ANALYZE").await?;
        c.close().await?;
        out.notes.push(format!(
            "VACUUM ANALYZE after the load: {:.0} s (not counted in ingest)",
            t.elapsed().as_secs_f64()
        ));
    } else if let Ok(prev) = crate::read_json::<SystemResult>(&args.out) {
        out.bulk = prev.bulk;
        out.notes = prev.notes;
    }
    if !args.reuse {
        // the dataset alone, before per-fix ingest adds to it
        let mut c = PgConnection::connect(&url).await?;
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM fixes) AS n,
                    pg_total_relation_size('fixes') AS bytes,
                    pg_database_size(current_database()) AS total",
        )
        .fetch_one(&mut c)
        .await?;
        let disk = crate::Disk {
            fixes: row.try_get("n")?,
            fix_bytes: row.try_get("bytes")?,
            total_bytes: row.try_get("total")?,
        };
        c.close().await?;
        if disk.fixes as u64 != meta.fixes {
            bail!("{} fixes stored, {} in the dataset", disk.fixes, meta.fixes);
        }
        crate::write_json(&args.out.with_extension("disk.json"), &disk)?;
    }
    // queries first, so they see exactly the dataset; per-fix ingest adds to it
    queries(&args, &work, &mut out).await?;
    let next_ts = Arc::new(
        (0..meta.devices)
            .map(|_| AtomicU64::new(0))
            .collect::<Vec<_>>(),
    );
    for run in 0..args.per_fix_runs {
        let r = per_fix(&args, &meta, &next_ts, run).await?;
        eprintln!(
            "postgis: per-fix ingest run {run}: {:.0} fixes/s, p50 {:.2} ms, p99 {:.2} ms",
            r.fixes_per_s, r.latency.p50_ms, r.latency.p99_ms
        );
        out.per_fix.push(r);
    }
    crate::write_json(&args.out, &out)
}
