//! Prometheus metrics (SPEC §2 Operations): pings accepted / rejected / duplicate, evaluation
//! latency, alerts opened by type, queue depth, store commit latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub r#type: String,
}

/// Every metric the service exports; cloning is cheap (each metric is an `Arc`).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub pings_accepted: Counter,
    pub pings_rejected: Counter,
    pub pings_duplicate: Counter,
    pub queue_depth: Gauge,
    pub commit_seconds: Histogram,
    pub commit_rows: Histogram,
    pub upkeep_seconds: Histogram,
    pub evaluation_seconds: Histogram,
    pub alerts_opened: Family<AlertLabels, Counter>,
    registry: std::sync::Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tagwatch");
        let m = Metrics {
            pings_accepted: Counter::default(),
            pings_rejected: Counter::default(),
            pings_duplicate: Counter::default(),
            queue_depth: Gauge::default(),
            // 50 µs … ~3 s
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            commit_rows: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            upkeep_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            // 100 ns … ~0.1 s
            evaluation_seconds: Histogram::new(exponential_buckets(0.000_000_1, 2.0, 20)),
            alerts_opened: Family::default(),
            registry: std::sync::Arc::new(Registry::default()),
        };
        r.register(
            "pings_accepted",
            "Pings durably stored",
            m.pings_accepted.clone(),
        );
        r.register(
            "pings_rejected",
            "Pings rejected item by item",
            m.pings_rejected.clone(),
        );
        r.register(
            "pings_duplicate",
            "Pings already stored (retries)",
            m.pings_duplicate.clone(),
        );
        r.register(
            "ingest_queue_depth",
            "Pings waiting for the store",
            m.queue_depth.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Latency of one group commit",
            m.commit_seconds.clone(),
        );
        r.register(
            "store_commit_rows",
            "Fixes per group commit",
            m.commit_rows.clone(),
        );
        r.register(
            "store_upkeep_seconds",
            "Latency of one step of store upkeep between group commits (SQLite: moving part of the ingest log's tail into its table)",
            m.upkeep_seconds.clone(),
        );
        r.register(
            "evaluation_seconds",
            "Compliance evaluation time per batch of a device's fixes",
            m.evaluation_seconds.clone(),
        );
        r.register(
            "alerts_opened",
            "Alerts opened, by type",
            m.alerts_opened.clone(),
        );
        Metrics {
            registry: std::sync::Arc::new(r),
            ..m
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
