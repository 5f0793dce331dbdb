//! The ingest pipeline: validated fixes → bounded queue → group commit → acknowledgement →
//! (committed fixes onward to the compliance engine).
//!
//! Invariants:
//! - a request is acknowledged only after the transaction holding its fixes has committed
//!   (and, for SQLite, the WAL was fsynced): that is the durability promise of SPEC §5;
//! - one writer task drains the queue, so one transaction (one fsync) serves every request
//!   that arrived while the previous commit was in flight — throughput grows with
//!   concurrency instead of collapsing to one fsync per request;
//! - the queue is bounded in fixes, not requests: past `queue_pings` waiting fixes a request
//!   is refused at once ([`IngestError::Overloaded`] → 429 with `Retry-After`) rather than
//!   growing memory;
//! - a `(device, ts)` seen twice, in one group or already stored, is stored once; the
//!   engine receives only fixes that were actually inserted.

pub mod monitor;
pub mod parse;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;
use crate::store::{FixRow, Store, Upkeep};

/// Fixes per transaction, at most: large enough to amortise the fsync, small enough that a
/// commit stays in the low milliseconds.
const GROUP_MAX_ROWS: usize = 32_768;

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error, Clone)]
pub enum IngestError {
    #[error("ingest queue is full")]
    Overloaded,
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Fixes that were committed, handed to whoever consumes them (the engine).
#[derive(Debug)]
pub struct Committed {
    pub rows: Vec<FixRow>,
}

struct Job {
    rows: Vec<FixRow>,
    ack: oneshot::Sender<Result<Vec<bool>, IngestError>>,
    _permit: OwnedSemaphorePermit,
}

/// Handle to the pipeline; cloning is an `Arc` increment.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::UnboundedSender<Job>,
    depth: Arc<QueueDepth>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("capacity", &self.depth.capacity)
            .finish()
    }
}

impl Ingest {
    /// Starts the writer task. Committed fixes are sent to `committed` when given.
    pub fn start(
        store: Store,
        capacity: usize,
        metrics: Metrics,
        committed: Option<mpsc::Sender<Committed>>,
    ) -> (Ingest, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let depth = Arc::new(QueueDepth {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            metrics,
        });
        let handle = tokio::spawn(writer(store, rx, depth.clone(), committed));
        (Ingest { tx, depth }, handle)
    }

    /// Writes rows durably. Returns, per row, whether it was newly stored (false: duplicate).
    /// Rows must not repeat a `(device, ts)` among themselves.
    pub async fn write(&self, rows: Vec<FixRow>) -> Result<Vec<bool>, IngestError> {
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let n = u32::try_from(rows.len()).map_err(|_| IngestError::Overloaded)?;
        let permit = self
            .depth
            .permits
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| IngestError::Overloaded)?;
        self.depth.update();
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Job {
                rows,
                ack,
                _permit: permit,
            })
            .map_err(|_| IngestError::Unavailable("ingest writer stopped".into()))?;
        rx.await
            .map_err(|_| IngestError::Unavailable("ingest writer stopped".into()))?
    }
}

/// What the `ingest_queue_depth` gauge reads: fixes holding a queue permit. Set when a
/// request takes permits and again when a group's permits are returned, so an idle
/// pipeline reads 0.
struct QueueDepth {
    permits: Arc<Semaphore>,
    capacity: usize,
    metrics: Metrics,
}

impl QueueDepth {
    fn update(&self) {
        self.metrics
            .queue_depth
            .set((self.capacity - self.permits.available_permits()) as i64);
    }
}

async fn writer(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Job>,
    depth: Arc<QueueDepth>,
    committed: Option<mpsc::Sender<Committed>>,
) {
    let metrics = &depth.metrics;
    // Store upkeep (SQLite: compaction of the ingest log's tail) runs one step after each
    // group; while steps are waiting and no request is queued, they run back to back; when
    // nothing is waiting, the writer looks again once a second.
    let mut upkeep_waiting = false;
    loop {
        let first = if upkeep_waiting {
            match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    upkeep_waiting = upkeep(&store, 0, metrics).await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                () = tokio::time::sleep(UPKEEP_IDLE) => {
                    upkeep_waiting = upkeep(&store, 0, metrics).await;
                    continue;
                }
            }
        };
        let mut n = first.rows.len();
        let mut jobs = vec![first];
        while n < GROUP_MAX_ROWS {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.rows.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        // The whole group goes to the store, which stores the first occurrence of a key and
        // reports later ones (in the same request or another of the group) as duplicates.
        let mut group: Vec<FixRow> = Vec::with_capacity(n);
        let mut ends: Vec<usize> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            group.extend_from_slice(&job.rows);
            ends.push(group.len());
        }
        let started = Instant::now();
        let result = store.insert_fixes(&group).await;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.commit_rows.observe(group.len() as f64);
        // The queue slots are returned (and the gauge set) before anyone is answered, so a
        // client that has its acknowledgement never sees its own fixes still queued.
        let acks: Vec<_> = jobs.into_iter().map(|j| j.ack).collect();
        depth.update();
        match &result {
            Ok(inserted) => {
                let mut start = 0;
                for (ack, &end) in acks.into_iter().zip(&ends) {
                    let _ = ack.send(Ok(inserted.get(start..end).unwrap_or_default().to_vec()));
                    start = end;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows = group.len(), "group commit failed");
                let err = IngestError::Unavailable(e.to_string());
                for ack in acks {
                    let _ = ack.send(Err(err.clone()));
                }
            }
        }
        if let (Ok(inserted), Some(c)) = (result, &committed) {
            let rows: Vec<FixRow> = group
                .into_iter()
                .zip(inserted)
                .filter_map(|(r, ok)| ok.then_some(r))
                .collect();
            if !rows.is_empty() && c.send(Committed { rows }).await.is_err() {
                tracing::warn!("engine stopped; committed fixes are stored but not evaluated");
            }
        }
        upkeep_waiting = upkeep(&store, n, metrics).await;
    }
}

/// How often an idle writer checks whether store upkeep is due.
const UPKEEP_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// One step of store upkeep; true when more steps wait. A failure is logged and retried
/// later: what upkeep moves stays readable and durable where it is.
async fn upkeep(store: &Store, ingested: usize, metrics: &Metrics) -> bool {
    let started = Instant::now();
    match store.maintain(ingested).await {
        Ok(Upkeep::Idle) => false,
        Ok(Upkeep::Step { more }) => {
            metrics
                .upkeep_seconds
                .observe(started.elapsed().as_secs_f64());
            more
        }
        Err(e) => {
            tracing::warn!(error = %e, "store upkeep failed; will retry");
            false
        }
    }
}
