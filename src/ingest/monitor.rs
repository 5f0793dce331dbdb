//! The compliance monitor: runs the pure engine over committed fixes and persists what it
//! decides. This is the I/O shell around [`crate::engine`].
//!
//! Invariants:
//! - the engine sees each device's fixes in fix-time order; a late fix (within the horizon)
//!   makes the device replay its stored fixes from a checkpoint, and the re-evaluated episodes
//!   are reconciled with the stored alerts: same episode → updated, disproved → `withdrawn`,
//!   new → opened with `detected_late`;
//! - every alert change is stored (with its event row) before it is broadcast;
//! - on start the state is rebuilt from the store the same way (replay + reconcile), so a
//!   restart neither duplicates nor loses an alert;
//! - one task owns all device state (a `tokio::sync::Mutex` held by that task and the sweep
//!   only); the zone index is an `Arc` swapped whole when zones change.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, Mutex};

use crate::engine::{
    reconcile, Absence, AlertType, Applied, Ctx, DeviceEngine, EngineConfig, Episode, EpisodeEvent,
    EvalFix, KnownEpisode, Reconciled, ZoneDef, ZoneIndex, ZoneKind,
};
use crate::geodesy::LatLon;
use crate::metrics::{AlertLabels, Metrics};
use crate::model::fix::{unpack_flags, E7};
use crate::model::geometry::{Boroughs, GeometryInput};
use crate::model::schedule::Schedule;
use crate::model::time::{now_micros, wall_offset_micros};
use crate::store::{AlertFields, AlertRow, FixRow, LawfulTx, Store, StoreError, ZoneRow};

use super::Committed;

/// The London borough boundaries shipped with the binary.
pub static BOROUGHS_GEOJSON: &str =
    include_str!("../../geodata/boundaries/london_boroughs.geojson");

/// A wall-clock step this large (against server time) is logged: far above NTP's slew, far
/// below anything that moves comms loss.
const CLOCK_STEP_LOG_US: i64 = 2_000_000;

/// One alert change, as broadcast to SSE subscribers.
#[derive(Debug, Clone)]
pub struct AlertChange {
    pub kind: &'static str,
    pub alert: AlertRow,
}

/// The alert changes of one evaluation (a committed batch, a sweep, a rebuild): written in
/// one transaction — each change with its event and audit entry — and broadcast only once
/// that has committed, so a subscriber never sees a change that a failure rolls back. One
/// transaction per batch instead of several per change is what keeps ping-to-alert latency
/// close to a commit when many devices are in breach at once.
///
/// Episode updates (the evidence of every ongoing breach, with each batch) are the many
/// writes: the alerts they change are read and locked together first ([`Writes::lock`]),
/// and the updates go to the store together when the transaction ends.
struct Writes {
    tx: Option<LawfulTx>,
    changes: Vec<AlertChange>,
    /// alerts read (and locked) in this transaction, as this evaluation last left them
    rows: HashMap<i64, AlertRow>,
    /// episode updates not yet written, in order
    episodes: Vec<(AlertRow, &'static str)>,
}

impl Writes {
    fn new() -> Writes {
        Writes {
            tx: None,
            changes: Vec::new(),
            rows: HashMap::new(),
            episodes: Vec::new(),
        }
    }

    /// Reads and locks, in one statement, the alerts this evaluation may change.
    async fn lock(&mut self, store: &Store, ids: Vec<i64>) -> Result<(), StoreError> {
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| !self.rows.contains_key(id));
        if ids.is_empty() {
            return Ok(());
        }
        for row in self.tx(store).await?.alerts(&ids).await? {
            self.rows.insert(row.id, row);
        }
        Ok(())
    }

    /// The alert as this transaction sees it (locked, with this evaluation's changes).
    async fn alert(&mut self, store: &Store, id: i64) -> Result<Option<AlertRow>, StoreError> {
        if let Some(row) = self.rows.get(&id) {
            return Ok(Some(row.clone()));
        }
        let row = self.tx(store).await?.alert(id).await?;
        if let Some(row) = &row {
            self.rows.insert(id, row.clone());
        }
        Ok(row)
    }

    /// Writes the waiting episode updates.
    async fn write_episodes(&mut self) -> Result<(), StoreError> {
        if self.episodes.is_empty() {
            return Ok(());
        }
        let Some(tx) = self.tx.as_mut() else {
            return Ok(());
        };
        tx.update_episodes(&self.episodes).await?;
        self.episodes.clear();
        Ok(())
    }

    /// The evaluation's transaction, begun at its first use.
    async fn tx(&mut self, store: &Store) -> Result<&mut LawfulTx, StoreError> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => store.begin_lawful().await?,
        };
        Ok(self.tx.insert(tx))
    }

    /// Commits, then counts, logs and broadcasts what was written.
    async fn commit(mut self, inner: &Inner) -> Result<(), StoreError> {
        self.flush(inner).await
    }

    /// Commits what is written so far (and announces it); later writes begin a new
    /// transaction. Called before reading through the pool: a transaction held while
    /// waiting for another pooled connection can deadlock with requests that hold the
    /// other connections while they wait for SQLite's write lock. After it, pool reads
    /// also see everything this evaluation wrote.
    async fn flush(&mut self, inner: &Inner) -> Result<(), StoreError> {
        self.write_episodes().await?;
        self.rows.clear();
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        for change in self.changes.drain(..) {
            if change.kind == "opened" {
                inner
                    .metrics
                    .alerts_opened
                    .get_or_create(&AlertLabels {
                        r#type: change.alert.alert_type.clone(),
                    })
                    .inc();
                tracing::info!(alert = change.alert.id, r#type = %change.alert.alert_type,
                    late = change.alert.detected_late, "alert opened");
            }
            let _ = inner.changes.send(change);
        }
        Ok(())
    }
}

struct DeviceSlot {
    engine: DeviceEngine,
    subject_pk: i64,
    /// episode identity (type, zone, started) → alert id
    alerts: HashMap<(AlertType, Option<i64>, i64), i64>,
}

/// The stored alerts that a device's events continue (the rest open new ones).
fn known_alert_ids<'a>(
    slot: Option<&'a DeviceSlot>,
    events: &'a [EpisodeEvent],
) -> impl Iterator<Item = i64> + 'a {
    events
        .iter()
        .filter_map(move |ev| slot?.alerts.get(&ev.episode().identity()).copied())
}

/// Handle to the monitor; cloning is an `Arc` increment.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: EngineConfig,
    boroughs: Boroughs,
    index: RwLock<Arc<ZoneIndex>>,
    absences: RwLock<Arc<HashMap<i64, Vec<Absence>>>>,
    devices: Mutex<HashMap<i64, DeviceSlot>>,
    changes: broadcast::Sender<AlertChange>,
    metrics: Metrics,
    stop: tokio::sync::watch::Sender<bool>,
    boroughs_json: String,
}

/// Turns a stored zone into the engine's definition (geometry resolved, schedule compiled).
pub fn zone_def(z: &ZoneRow, boroughs: &Boroughs) -> Result<ZoneDef, String> {
    let geometry: GeometryInput =
        serde_json::from_str(&z.geometry).map_err(|e| format!("zone {} geometry: {e}", z.id))?;
    let shape = geometry.resolve(boroughs).map_err(|e| e.to_string())?;
    let schedule = match &z.schedule {
        None => None,
        Some(s) => {
            let s: Schedule = serde_json::from_str(s).map_err(|e| e.to_string())?;
            Some(s.compile().map_err(|e| e.to_string())?)
        }
    };
    Ok(ZoneDef {
        id: z.id,
        subject: z.subject_pk,
        kind: if z.kind == "inclusion" {
            ZoneKind::Inclusion
        } else {
            ZoneKind::Exclusion
        },
        shape,
        schedule,
        grace_s: z.grace_s,
        valid_from_us: z.valid_from,
        valid_to_us: z.valid_to,
    })
}

fn eval_fix(r: &FixRow) -> EvalFix {
    let (tamper, _) = unpack_flags(r.flags);
    EvalFix {
        ts_us: r.ts,
        received_us: r.received_at,
        pos: match (r.lat_e7, r.lon_e7) {
            (Some(la), Some(lo)) => Some(LatLon::new(la as f64 / E7, lo as f64 / E7)),
            _ => None,
        },
        accuracy_m: r.accuracy_m.unwrap_or(0.0) as f64,
        tamper,
        battery_pct: r.battery_pct.map(f64::from),
    }
}

fn known(a: &AlertRow) -> Option<KnownEpisode> {
    let alert_type =
        serde_json::from_value(serde_json::Value::String(a.alert_type.clone())).ok()?;
    Some(KnownEpisode {
        alert_id: a.id,
        alert_type,
        zone_id: a.zone_id,
        started_us: a.started_at,
        ended_us: a.ended_at,
        evidence_count: a.evidence_count as u32,
    })
}

impl Monitor {
    /// Loads zones and absences and rebuilds every device's state from the store.
    pub async fn start(
        store: Store,
        config: EngineConfig,
        metrics: Metrics,
    ) -> Result<Monitor, StoreError> {
        let boroughs = Boroughs::from_geojson(BOROUGHS_GEOJSON)
            .map_err(|e| StoreError::Open(format!("borough boundaries: {e}")))?;
        let (changes, _) = broadcast::channel(4096);
        let m = Monitor {
            inner: Arc::new(Inner {
                store,
                config,
                index: RwLock::new(Arc::new(ZoneIndex::build(vec![]))),
                absences: RwLock::new(Arc::new(HashMap::new())),
                devices: Mutex::new(HashMap::new()),
                changes,
                metrics,
                stop: tokio::sync::watch::channel(false).0,
                boroughs_json: boroughs.to_feature_collection().to_string(),
                boroughs,
            }),
        };
        m.reload_zones().await?;
        m.reload_absences().await?;
        m.rebuild().await?;
        Ok(m)
    }

    pub fn boroughs(&self) -> &Boroughs {
        &self.inner.boroughs
    }

    /// The borough boundaries as a GeoJSON FeatureCollection with `properties.name`.
    pub fn boroughs_json(&self) -> String {
        self.inner.boroughs_json.clone()
    }

    /// Broadcasts a change made outside the engine (acknowledge, close).
    pub fn announce(&self, kind: &'static str, alert: AlertRow) {
        let _ = self.inner.changes.send(AlertChange { kind, alert });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AlertChange> {
        self.inner.changes.subscribe()
    }

    /// Rebuilds the zone index from the store and swaps it in whole.
    pub async fn reload_zones(&self) -> Result<(), StoreError> {
        let rows = self.inner.store.zones().await?;
        let defs: Vec<ZoneDef> = rows
            .iter()
            .filter_map(|z| match zone_def(z, &self.inner.boroughs) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(zone = z.id, error = %e, "stored zone cannot be loaded");
                    None
                }
            })
            .collect();
        let index = Arc::new(ZoneIndex::build(defs));
        *self.inner.index.write().unwrap_or_else(|e| e.into_inner()) = index;
        Ok(())
    }

    /// Brings one created or ended zone into the index: reads that zone's row and swaps in
    /// an index with it added or replaced (the others' prepared geometry reused). Changes are
    /// applied under the index's write lock, so two zones changed at once are both kept.
    pub async fn zone_changed(&self, id: i64) -> Result<(), StoreError> {
        let Some(row) = self.inner.store.zone(id).await? else {
            return self.reload_zones().await;
        };
        let def = zone_def(&row, &self.inner.boroughs).map_err(StoreError::Open)?;
        let mut index = self.inner.index.write().unwrap_or_else(|e| e.into_inner());
        *index = Arc::new(index.with_zone(def));
        Ok(())
    }

    pub async fn reload_absences(&self) -> Result<(), StoreError> {
        let mut map: HashMap<i64, Vec<Absence>> = HashMap::new();
        for a in self.inner.store.absences().await? {
            map.entry(a.subject_pk).or_default().push(Absence {
                from_us: a.from_us,
                to_us: a.to_us,
            });
        }
        *self
            .inner
            .absences
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        Ok(())
    }

    fn snapshot(&self) -> (Arc<ZoneIndex>, Arc<HashMap<i64, Vec<Absence>>>) {
        (
            self.inner
                .index
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            self.inner
                .absences
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Restart path: replay each device's last horizon of stored fixes and reconcile.
    async fn rebuild(&self) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let (index, absences) = self.snapshot();
        let mut devices = self.inner.devices.lock().await;
        for d in store.devices().await? {
            let Some(subject_pk) = d.subject_pk else {
                continue;
            };
            let Some((newest, _)) = store.newest_fix(d.pk).await? else {
                continue;
            };
            let from = newest - self.inner.config.horizon_s * 1_000_000;
            let history: Vec<EvalFix> = store
                .device_fixes(d.pk, from, i64::MAX)
                .await?
                .iter()
                .map(eval_fix)
                .collect();
            let last_received = history.iter().map(|f| f.received_us).max();
            let mut slot = DeviceSlot {
                engine: DeviceEngine::new(),
                subject_pk,
                alerts: HashMap::new(),
            };
            let no_absences = Vec::new();
            let ctx = Ctx {
                index: &index,
                subject: subject_pk,
                absences: absences.get(&subject_pk).unwrap_or(&no_absences),
                config: &self.inner.config,
            };
            let episodes = slot.engine.replay(&history, &ctx);
            let first = history.first().map(|f| f.ts_us).unwrap_or(from);
            let stored = store.device_alerts_since(d.pk, first).await?;
            let mut w = Writes::new();
            let open_comms = stored
                .iter()
                .find(|a| a.alert_type == "comms_loss" && a.ended_at.is_none())
                .map(|a| a.started_at);
            self.reconcile_and_persist(&mut w, d.pk, &mut slot, &stored, &episodes, false)
                .await?;
            w.commit(&self.inner).await?;
            slot.engine.resume_comms(last_received, open_comms);
            if let Some(start) = open_comms {
                if let Some(a) = stored
                    .iter()
                    .find(|a| a.started_at == start && a.alert_type == "comms_loss")
                {
                    slot.alerts
                        .insert((AlertType::CommsLoss, None, start), a.id);
                }
            }
            devices.insert(d.pk, slot);
        }
        Ok(())
    }

    /// Diffs stored alerts against re-evaluated episodes and writes the differences.
    async fn reconcile_and_persist(
        &self,
        w: &mut Writes,
        device_pk: i64,
        slot: &mut DeviceSlot,
        stored: &[AlertRow],
        episodes: &[Episode],
        late: bool,
    ) -> Result<(), StoreError> {
        let known: Vec<KnownEpisode> = stored.iter().filter_map(known).collect();
        let result = reconcile(&known, episodes);
        for r in &result {
            match r {
                Reconciled::Unchanged { alert_id } => {
                    if let Some(k) = known.iter().find(|k| k.alert_id == *alert_id) {
                        slot.alerts
                            .insert((k.alert_type, k.zone_id, k.started_us), *alert_id);
                    }
                }
                Reconciled::Update { alert_id, episode } => {
                    slot.alerts.retain(|_, id| id != alert_id);
                    slot.alerts.insert(episode.identity(), *alert_id);
                    if let Some(mut row) = stored.iter().find(|a| a.id == *alert_id).cloned() {
                        let before = (row.started_at, row.ended_at, row.evidence_count);
                        apply_episode(&mut row, episode);
                        if before != (row.started_at, row.ended_at, row.evidence_count) {
                            row.detected_late |= late;
                            self.write_update(w, row, "updated").await?;
                        }
                    }
                }
                Reconciled::Withdraw { alert_id, reason } => {
                    slot.alerts.retain(|_, id| id != alert_id);
                    if let Some(mut row) = stored.iter().find(|a| a.id == *alert_id).cloned() {
                        row.status = "withdrawn".into();
                        row.withdrawn_reason = Some(reason.clone());
                        self.write_update(w, row, "withdrawn").await?;
                    }
                }
                Reconciled::Open(episode) => {
                    let id = self
                        .write_open(w, device_pk, slot.subject_pk, episode, late)
                        .await?;
                    slot.alerts.insert(episode.identity(), id);
                }
            }
        }
        slot.engine.adopt(&result);
        Ok(())
    }

    async fn write_open(
        &self,
        w: &mut Writes,
        device_pk: i64,
        subject_pk: i64,
        e: &Episode,
        late: bool,
    ) -> Result<i64, StoreError> {
        let now = now_micros();
        let mut row = AlertRow {
            id: 0,
            alert_type: e.alert_type.as_str().to_owned(),
            subject_pk,
            device_pk,
            zone_id: e.zone_id,
            started_at: e.started_us,
            ended_at: e.ended_us,
            detected_at: now,
            detected_late: late,
            evidence_count: 0,
            evidence: vec![],
            status: "open".into(),
            outcome: None,
            note: None,
            withdrawn_reason: None,
            updated_at: now,
        };
        apply_episode(&mut row, e);
        row.id = w.tx(&self.inner.store).await?.insert_alert(&row).await?;
        self.audit(w, "opened", &row).await?;
        w.changes.push(AlertChange {
            kind: "opened",
            alert: row.clone(),
        });
        Ok(row.id)
    }

    async fn write_update(
        &self,
        w: &mut Writes,
        mut row: AlertRow,
        kind: &'static str,
    ) -> Result<(), StoreError> {
        row.updated_at = now_micros();
        if kind == "withdrawn" {
            // a review write: the episode writes before it keep their place in the history
            w.write_episodes().await?;
            w.tx(&self.inner.store)
                .await?
                .update_alert(&row, AlertFields::Review, kind, None)
                .await?;
        } else {
            // written at the transaction's end (`Writes::write_episodes`), which must exist
            w.tx(&self.inner.store).await?;
            w.episodes.push((row.clone(), kind));
        }
        w.rows.insert(row.id, row.clone());
        if kind != "updated" || row.detected_late {
            self.audit(w, kind, &row).await?;
        }
        w.changes.push(AlertChange { kind, alert: row });
        Ok(())
    }

    /// Audits an engine-made alert change (SPEC §2 Audit: every alert change is an entry).
    /// Evidence-only updates of an ongoing episode are kept in the alert's event history
    /// but not repeated in the audit trail.
    async fn audit(&self, w: &mut Writes, kind: &str, row: &AlertRow) -> Result<(), StoreError> {
        let tx = w.tx(&self.inner.store).await?;
        let subject = tx
            .subject_ids(&[row.subject_pk])
            .await?
            .remove(&row.subject_pk);
        tx.append_audit(crate::audit::chain::AuditDraft {
                id: 0,
                at_us: now_micros(),
                actor: 0,
                actor_name: "compliance engine".into(),
                role: "system".into(),
                action: format!("alert.{kind}"),
                parameters: serde_json::json!({"alert_id": row.id, "type": row.alert_type,
                    "zone_id": row.zone_id, "started_at": crate::model::time::rfc3339(row.started_at),
                    "ended_at": row.ended_at.map(crate::model::time::rfc3339),
                    "status": row.status, "detected_late": row.detected_late}),
                justification: None,
                subject_ids: subject.into_iter().collect(),
                result_count: 1,
            })
            .await?;
        Ok(())
    }

    /// Persists in-order engine events.
    async fn persist_events(
        &self,
        w: &mut Writes,
        device_pk: i64,
        slot: &mut DeviceSlot,
        events: Vec<EpisodeEvent>,
        late: bool,
    ) -> Result<(), StoreError> {
        for ev in EpisodeEvent::without_superseded_updates(events) {
            let e = ev.episode();
            match (&ev, slot.alerts.get(&e.identity()).copied()) {
                (EpisodeEvent::Opened(_), None) | (_, None) => {
                    let id = self
                        .write_open(w, device_pk, slot.subject_pk, e, late)
                        .await?;
                    slot.alerts.insert(e.identity(), id);
                }
                (_, Some(id)) => {
                    let Some(mut row) = w.alert(&self.inner.store, id).await? else {
                        continue;
                    };
                    apply_episode(&mut row, e);
                    row.detected_late |= late;
                    let kind = if e.ended_us.is_some() {
                        "ended"
                    } else {
                        "updated"
                    };
                    self.write_update(w, row, kind).await?;
                }
            }
        }
        Ok(())
    }

    /// Evaluates one committed batch (fixes of any devices). The engine runs over every
    /// device first; only then are the changes written, so the transaction that writes
    /// them (which on SQLite holds the store's one write lock, wanted by ingest's next
    /// group commit) lasts as long as the writes, not the evaluation.
    pub async fn evaluate(&self, rows: Vec<FixRow>) -> Result<(), StoreError> {
        let mut by_device: HashMap<i64, Vec<&FixRow>> = HashMap::new();
        for r in &rows {
            by_device.entry(r.device_pk).or_default().push(r);
        }
        let (index, absences) = self.snapshot();
        let no_absences = Vec::new();
        let mut devices = self.inner.devices.lock().await;
        let mut applied_all: Vec<(i64, Applied)> = Vec::new();
        for (device_pk, mut fixes) in by_device {
            fixes.sort_by_key(|f| f.ts);
            let Some(subject_pk) = fixes.last().and_then(|f| f.subject_pk) else {
                continue;
            };
            let slot = devices.entry(device_pk).or_insert_with(|| DeviceSlot {
                engine: DeviceEngine::new(),
                subject_pk,
                alerts: HashMap::new(),
            });
            if slot.subject_pk != subject_pk {
                // reassigned tag: a new wearer starts from a clean state
                *slot = DeviceSlot {
                    engine: DeviceEngine::new(),
                    subject_pk,
                    alerts: HashMap::new(),
                };
            }
            let ctx = Ctx {
                index: &index,
                subject: subject_pk,
                absences: absences.get(&subject_pk).unwrap_or(&no_absences),
                config: &self.inner.config,
            };
            let batch: Vec<EvalFix> = fixes.iter().map(|f| eval_fix(f)).collect();
            let started = Instant::now();
            let applied = slot.engine.apply(&batch, &ctx);
            self.inner
                .metrics
                .evaluation_seconds
                .observe(started.elapsed().as_secs_f64());
            if !matches!(&applied, Applied::Events(events) if events.is_empty()) {
                applied_all.push((device_pk, applied));
            }
        }
        let mut w = Writes::new();
        let ids = applied_all.iter().flat_map(|(device_pk, applied)| {
            let events = match applied {
                Applied::Events(events) | Applied::NeedsReplay { events, .. } => events,
            };
            known_alert_ids(devices.get(device_pk), events)
        });
        w.lock(&self.inner.store, ids.collect()).await?;
        for (device_pk, applied) in applied_all {
            let Some(slot) = devices.get_mut(&device_pk) else {
                continue;
            };
            match applied {
                Applied::Events(events) => {
                    self.persist_events(&mut w, device_pk, slot, events, false)
                        .await?
                }
                Applied::NeedsReplay { from_us, events } => {
                    self.persist_events(&mut w, device_pk, slot, events, true)
                        .await?;
                    w.flush(&self.inner).await?;
                    let history: Vec<EvalFix> = self
                        .inner
                        .store
                        .device_fixes(device_pk, from_us, i64::MAX)
                        .await?
                        .iter()
                        .map(eval_fix)
                        .collect();
                    let subject_pk = slot.subject_pk;
                    let ctx = Ctx {
                        index: &index,
                        subject: subject_pk,
                        absences: absences.get(&subject_pk).unwrap_or(&no_absences),
                        config: &self.inner.config,
                    };
                    let episodes = slot.engine.replay(&history, &ctx);
                    let stored = self
                        .inner
                        .store
                        .device_alerts_since(device_pk, from_us)
                        .await?;
                    self.reconcile_and_persist(&mut w, device_pk, slot, &stored, &episodes, true)
                        .await?;
                }
            }
        }
        w.commit(&self.inner).await
    }

    /// Time-driven rules: comms loss and schedule-window ends, at server time `now`.
    pub async fn sweep(&self, now: i64) -> Result<(), StoreError> {
        let (index, absences) = self.snapshot();
        let no_absences = Vec::new();
        let mut devices = self.inner.devices.lock().await;
        let mut due = Vec::new();
        for (device_pk, slot) in devices.iter_mut() {
            let ctx = Ctx {
                index: &index,
                subject: slot.subject_pk,
                absences: absences.get(&slot.subject_pk).unwrap_or(&no_absences),
                config: &self.inner.config,
            };
            let events = slot.engine.sweep(now, &ctx);
            if !events.is_empty() {
                due.push((*device_pk, events));
            }
        }
        let mut w = Writes::new();
        let ids = due
            .iter()
            .flat_map(|(device_pk, events)| known_alert_ids(devices.get(device_pk), events));
        w.lock(&self.inner.store, ids.collect()).await?;
        for (device_pk, events) in due {
            if let Some(slot) = devices.get_mut(&device_pk) {
                self.persist_events(&mut w, device_pk, slot, events, false)
                    .await?;
            }
        }
        w.commit(&self.inner).await
    }

    /// Consumes committed batches until the channel closes.
    pub fn spawn(self, mut rx: mpsc::Receiver<Committed>, sweep_every: std::time::Duration) {
        let m = self.clone();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if let Err(e) = m.evaluate(c.rows).await {
                    // The fixes are stored; rebuilding replays them from the store and
                    // reconciles, so no alert is lost or duplicated once the store is back.
                    tracing::error!(error = %e, "evaluation failed; rebuilding engine state from the store");
                    let mut wait = std::time::Duration::from_millis(200);
                    while let Err(e) = m.rebuild().await {
                        tracing::error!(error = %e, "rebuild failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(10));
                    }
                }
            }
        });
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep_every);
            let mut logged_offset = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let offset = wall_offset_micros();
                if (offset - logged_offset).abs() >= CLOCK_STEP_LOG_US {
                    tracing::warn!(
                        offset_s = offset / 1_000_000,
                        "wall clock stepped; server time goes on from the monotonic clock \
                         (a restart adopts the wall clock)"
                    );
                    logged_offset = offset;
                }
                if let Err(e) = self.sweep(now_micros()).await {
                    tracing::error!(error = %e, "sweep failed");
                }
            }
        });
    }

    /// Stops the sweep (the evaluation task ends when ingest closes its channel).
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// Bytes of engine state per tracked device (approximate; for the operations note).
    pub async fn state_bytes_per_device(&self) -> Option<usize> {
        let devices = self.inner.devices.lock().await;
        if devices.is_empty() {
            return None;
        }
        let total: usize = devices
            .values()
            .map(|s| {
                std::mem::size_of::<DeviceSlot>() + s.engine.heap_bytes() + s.alerts.capacity() * 40
            })
            .sum();
        Some(total / devices.len())
    }
}

/// Copies an episode's times and evidence onto an alert row.
fn apply_episode(row: &mut AlertRow, e: &Episode) {
    row.zone_id = e.zone_id;
    row.started_at = e.started_us;
    row.ended_at = e.ended_us;
    if e.evidence_count as i64 >= row.evidence_count || !e.may_have_started_earlier {
        row.evidence_count = e.evidence_count as i64;
        let mut ev = e.evidence_ts.clone();
        if e.may_have_started_earlier {
            // keep stored evidence from before the replayed fixes
            ev.extend(row.evidence.iter().copied());
            ev.sort_unstable();
            ev.dedup();
        }
        row.evidence = ev;
    }
}
