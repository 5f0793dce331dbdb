//! Retention (SPEC §5): a background job deletes fixes older than `--retention-days`, with
//! their crime-scene segment rows, at start and every hour. Audit entries are kept; each run
//! is itself one audit entry (actor 0, `system`), written after its deletes with their counts.
//!
//! Deletes go device by device (PostgreSQL: a statement each; SQLite: 64 devices a
//! transaction, each under the store's write gate) so ingest is never blocked for long. A
//! run cut short (crash, store down) has deleted only fixes past retention anyway; the next
//! run deletes the rest and records its own count.

use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

use crate::audit::chain::{AuditDraft, AuditRecord};
use crate::config::Settings;
use crate::model::time::{self, Micros, MICROS_PER_SEC};
use crate::store::{PurgeCounts, Store, StoreError};

/// How often the purge runs.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3_600);

/// Actor id and name of entries the service writes itself.
pub const SYSTEM_ACTOR: i64 = 0;
pub const SYSTEM_NAME: &str = "system";

/// What one run did.
#[derive(Debug, Clone)]
pub struct PurgeReport {
    pub cutoff: Micros,
    pub counts: PurgeCounts,
    pub audit: AuditRecord,
}

/// Deletes fixes with `ts < now − retention_days` and audits the run.
#[tracing::instrument(skip(store))]
pub async fn purge_once(
    store: &Store,
    retention_days: i64,
    now: Micros,
) -> Result<PurgeReport, StoreError> {
    let cutoff = now.saturating_sub(retention_days.saturating_mul(86_400 * MICROS_PER_SEC));
    let counts = store.purge_fixes_before(cutoff).await?;
    let audit = store
        .append_audit(AuditDraft {
            id: 0,
            at_us: time::now_micros(),
            actor: SYSTEM_ACTOR,
            actor_name: SYSTEM_NAME.to_owned(),
            role: SYSTEM_NAME.to_owned(),
            action: "retention.purge".to_owned(),
            parameters: json!({
                "retention_days": retention_days,
                "cutoff": time::rfc3339(cutoff),
                "segments_deleted": counts.segments,
            }),
            justification: None,
            subject_ids: Vec::new(),
            result_count: i64::try_from(counts.fixes).unwrap_or(i64::MAX),
        })
        .await?;
    tracing::info!(
        fixes = counts.fixes,
        segments = counts.segments,
        audit_id = audit.id,
        "retention purge"
    );
    Ok(PurgeReport {
        cutoff,
        counts,
        audit,
    })
}

/// Runs [`purge_once`] now and every [`PURGE_INTERVAL`]; failures are logged and retried at
/// the next tick.
pub fn spawn(store: Store, settings: &Settings) -> JoinHandle<()> {
    let retention_days = settings.retention_days;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = purge_once(&store, retention_days, time::now_micros()).await {
                tracing::error!(error = %e, "retention purge failed");
            }
        }
    })
}
