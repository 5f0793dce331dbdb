//! Settings from flags and environment (SPEC §6), validated once at start.
//!
//! Every setting is a flag with an environment twin: `--database-url` / `DATABASE_URL`, the
//! rest `TAGWATCH_*`. The same [`Settings`] struct is flattened into every subcommand that
//! needs it, so `serve`, `demo`, `user create` and `audit verify` read the store the same way.

use std::time::Duration;

/// Service settings shared by every subcommand that touches the store or the engine.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// `sqlite://PATH` (created on first run) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/tagwatch.db"
    )]
    pub database_url: String,
    /// Address to serve on (`:0` picks a free port and logs it).
    #[arg(long, env = "TAGWATCH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// SPEC §3 comms loss, seconds of server time without a ping.
    #[arg(long, env = "TAGWATCH_COMMS_LOSS_S", default_value_t = 900)]
    pub comms_loss_s: i64,
    /// SPEC §3 no fix, seconds without a positioned fix while pings arrive.
    #[arg(long, env = "TAGWATCH_NO_FIX_S", default_value_t = 900)]
    pub no_fix_s: i64,
    /// SPEC §4 largest gap between two fixes that are linked for interpolation.
    #[arg(long, env = "TAGWATCH_MAX_GAP_S", default_value_t = 300)]
    pub max_gap_s: i64,
    /// SPEC §3 re-evaluation horizon, seconds of fix time.
    #[arg(long, env = "TAGWATCH_HORIZON_S", default_value_t = 86_400)]
    pub horizon_s: i64,
    /// SPEC §5 retention of fixes, days.
    #[arg(long, env = "TAGWATCH_RETENTION_DAYS", default_value_t = 365)]
    pub retention_days: i64,
    /// How often time-driven rules (comms loss, window ends) run, seconds.
    #[arg(long, env = "TAGWATCH_SWEEP_INTERVAL_S", default_value_t = 10)]
    pub sweep_interval_s: u64,
    /// Ingest body limit in bytes.
    #[arg(long, env = "TAGWATCH_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Ingest items per request.
    #[arg(long, env = "TAGWATCH_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Pings that may wait for the store at once; past it ingest answers 429.
    #[arg(long, env = "TAGWATCH_QUEUE_PINGS", default_value_t = 200_000)]
    pub queue_pings: usize,
    /// SQLite: acknowledged fixes held in the ingest log's tail (in memory, and durable in
    /// the log) before they are compacted into the fixes table. Larger amortises more
    /// (more fixes per device per page written) for more memory (~150 bytes a fix).
    #[arg(long, env = "TAGWATCH_COMPACT_ROWS", default_value_t = crate::store::DEFAULT_COMPACT_ROWS)]
    pub compact_rows: usize,
    /// Optional map tile URL template for the web console (borough outlines otherwise).
    #[arg(long, env = "TAGWATCH_TILE_URL")]
    pub tile_url: Option<String>,
}

/// A settings value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct InvalidSetting {
    pub name: &'static str,
    pub reason: String,
}

impl Settings {
    /// Settings with the documented defaults, for tests and library users.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            listen: "127.0.0.1:0".into(),
            comms_loss_s: 900,
            no_fix_s: 900,
            max_gap_s: 300,
            horizon_s: 86_400,
            retention_days: 365,
            sweep_interval_s: 10,
            max_body_bytes: 16 * 1024 * 1024,
            max_batch: 10_000,
            queue_pings: 200_000,
            compact_rows: crate::store::DEFAULT_COMPACT_ROWS,
            tile_url: None,
        }
    }

    /// Checks every value once, so the rest of the code can trust them.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = [
            ("comms-loss-s", self.comms_loss_s),
            ("no-fix-s", self.no_fix_s),
            ("max-gap-s", self.max_gap_s),
            ("horizon-s", self.horizon_s),
            ("retention-days", self.retention_days),
        ];
        for (name, v) in positive {
            if v <= 0 {
                return Err(InvalidSetting {
                    name,
                    reason: format!("must be positive, got {v}"),
                });
            }
        }
        // the crime-scene segment index holds linked pairs up to an hour apart
        if self.max_gap_s > 3_600 {
            return Err(InvalidSetting {
                name: "max-gap-s",
                reason: format!("at most 3600, got {}", self.max_gap_s),
            });
        }
        if self.sweep_interval_s == 0 {
            return Err(InvalidSetting {
                name: "sweep-interval-s",
                reason: "must be positive".into(),
            });
        }
        if self.max_batch == 0 || self.max_body_bytes == 0 || self.queue_pings < self.max_batch {
            return Err(InvalidSetting {
                name: "max-batch",
                reason: "max-batch and max-body-bytes must be positive and queue-pings ≥ max-batch"
                    .into(),
            });
        }
        if self.compact_rows == 0 {
            return Err(InvalidSetting {
                name: "compact-rows",
                reason: "must be positive".into(),
            });
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(InvalidSetting {
                name: "database-url",
                reason: "expected sqlite://PATH or postgres://…".into(),
            });
        }
        Ok(())
    }

    /// What the store is opened with.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            compact_rows: self.compact_rows,
        }
    }

    /// The address to bind; `:0` means any free port on loopback.
    pub fn listen_addr(&self) -> String {
        if let Some(port) = self.listen.strip_prefix(':') {
            format!("127.0.0.1:{port}")
        } else {
            self.listen.clone()
        }
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days as u64 * 86_400)
    }
}
