//! Alerts: the officer's queue (SPEC §2 Alerts). Officers see their caseload only (anything
//! else is 404); admins see all. Acknowledge and close record who did it in the alert's
//! event history; the stream pushes every change as a Server-Sent Event.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::{problems, AppState, JsonBody, List};
use crate::audit::chain::AuditDraft;
use crate::error::ApiError;
use crate::model::fix::E7;
use crate::model::time;
use crate::model::Role;
use crate::store::{AlertFields, AlertFilter, AlertRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/alerts", get(list))
        .route("/v1/alerts/stream", get(stream))
        .route("/v1/alerts/{id}", get(show))
        .route("/v1/alerts/{id}/acknowledge", post(acknowledge))
        .route("/v1/alerts/{id}/close", post(close))
}

#[derive(Debug, Serialize, ToSchema, Clone)]
pub struct Alert {
    pub id: i64,
    #[serde(rename = "type")]
    pub alert_type: String,
    pub subject_id: String,
    pub device_id: String,
    pub zone_id: Option<i64>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub detected_at: String,
    pub detected_late: bool,
    pub evidence_count: i64,
    pub status: String,
    pub outcome: Option<String>,
    pub note: Option<String>,
    pub withdrawn_reason: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceFix {
    pub ts: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub accuracy_m: Option<f32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertEvent {
    pub at: String,
    pub kind: String,
    /// user id; null = the engine
    pub actor: Option<i64>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub alert: Alert,
    pub evidence: Vec<EvidenceFix>,
    pub events: Vec<AlertEvent>,
}

/// Names and caseloads, to present alerts by external id and filter them.
pub struct Directory {
    subjects: HashMap<i64, (String, Option<i64>)>,
    devices: HashMap<i64, String>,
}

impl Directory {
    pub async fn load(state: &AppState) -> Result<Self, ApiError> {
        Ok(Directory {
            subjects: state
                .store
                .subjects()
                .await?
                .into_iter()
                .map(|s| (s.pk, (s.id, s.officer_id)))
                .collect(),
            devices: state
                .store
                .devices()
                .await?
                .into_iter()
                .map(|d| (d.pk, d.id))
                .collect(),
        })
    }

    /// The entries some alerts need: their subjects read afresh (one read for all), so a
    /// caseload change shows at once, and their devices' ids from `devices` — ids never
    /// change, so the map is only reloaded when a device is new to it.
    pub async fn for_alerts(
        state: &AppState,
        alerts: &[&AlertRow],
        devices: &mut HashMap<i64, String>,
    ) -> Result<Self, ApiError> {
        if alerts.iter().any(|a| !devices.contains_key(&a.device_pk)) {
            *devices = state
                .store
                .devices()
                .await?
                .into_iter()
                .map(|d| (d.pk, d.id))
                .collect();
        }
        let mut pks: Vec<i64> = alerts.iter().map(|a| a.subject_pk).collect();
        pks.sort_unstable();
        pks.dedup();
        Ok(Directory {
            subjects: state.store.subject_refs(&pks).await?,
            devices: alerts
                .iter()
                .filter_map(|a| Some((a.device_pk, devices.get(&a.device_pk)?.clone())))
                .collect(),
        })
    }

    pub fn visible(&self, caller: &Principal, a: &AlertRow) -> bool {
        caller.is_admin()
            || self
                .subjects
                .get(&a.subject_pk)
                .is_some_and(|(_, o)| *o == Some(caller.user_id))
    }

    pub fn alert(&self, a: &AlertRow) -> Alert {
        Alert {
            id: a.id,
            alert_type: a.alert_type.clone(),
            subject_id: self
                .subjects
                .get(&a.subject_pk)
                .map(|s| s.0.clone())
                .unwrap_or_default(),
            device_id: self.devices.get(&a.device_pk).cloned().unwrap_or_default(),
            zone_id: a.zone_id,
            started_at: time::rfc3339(a.started_at),
            ended_at: a.ended_at.map(time::rfc3339),
            detected_at: time::rfc3339(a.detected_at),
            detected_late: a.detected_late,
            evidence_count: a.evidence_count,
            status: a.status.clone(),
            outcome: a.outcome.clone(),
            note: a.note.clone(),
            withdrawn_reason: a.withdrawn_reason.clone(),
            updated_at: time::rfc3339(a.updated_at),
        }
    }

    fn subject_pk(&self, id: &str) -> Option<i64> {
        self.subjects
            .iter()
            .find(|(_, (sid, _))| sid == id)
            .map(|(pk, _)| *pk)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AlertQuery {
    /// `open`, `acknowledged`, `closed` or `withdrawn` (anything else matches nothing).
    pub status: Option<String>,
    /// Only this subject's alerts (an unknown subject matches nothing).
    pub subject_id: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub alert_type: Option<String>,
    /// RFC 3339: alerts detected at or after this time.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    #[param(pattern = r"^-?[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// The alert queue, newest first.
#[utoipa::path(get, path = "/v1/alerts", operation_id = "list_alerts", tag = "alerts", params(AlertQuery), security(("bearer" = [])),
    responses((status = 200, body = List<Alert>), problems::Restricted, problems::Params))]
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    caller: Principal,
    Query(q): Query<AlertQuery>,
) -> Result<Json<List<Alert>>, ApiError> {
    caller.require(&[Role::Admin, Role::Officer])?;
    let dir = Directory::load(&state).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Unprocessable("limit must be 1–1000".into()));
    }
    // an unknown subject simply matches nothing
    let subject_pk = q
        .subject_id
        .as_ref()
        .map(|id| dir.subject_pk(id).unwrap_or(-1));
    let since = match &q.since {
        None => None,
        Some(s) => Some(
            time::parse_rfc3339(s)
                .ok_or_else(|| ApiError::Unprocessable("since is not an RFC 3339 time".into()))?,
        ),
    };
    let before_id = match &q.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::Unprocessable("bad cursor".into()))?,
        ),
    };
    let rows = state
        .store
        .list_alerts(&AlertFilter {
            status: q.status.clone(),
            subject_pk,
            alert_type: q.alert_type.clone(),
            since,
            officer: (!caller.is_admin()).then_some(caller.user_id),
            before_id,
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<Alert> = rows
        .iter()
        .take(limit as usize)
        .map(|a| dir.alert(a))
        .collect();
    let next_cursor = if more {
        items.last().map(|a| a.id.to_string())
    } else {
        None
    };
    Ok(Json(List { items, next_cursor }))
}

async fn visible_alert(
    state: &AppState,
    caller: &Principal,
    id: i64,
) -> Result<(AlertRow, Directory), ApiError> {
    caller.require(&[Role::Admin, Role::Officer])?;
    let row = state
        .store
        .alert(id)
        .await?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    let dir = Directory::load(state).await?;
    if !dir.visible(caller, &row) {
        return Err(ApiError::not_found("alert"));
    }
    Ok((row, dir))
}

/// One alert with its evidence fixes and every state change.
#[utoipa::path(get, path = "/v1/alerts/{id}", operation_id = "show_alert", tag = "alerts",
    params(("id" = i64, Path, description = "alert id", example = 1)), security(("bearer" = [])),
    responses((status = 200, body = AlertDetail), problems::Restricted,
              (status = 400, response = problems::BadRequest), (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all)]
async fn show(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<i64>,
) -> Result<Json<AlertDetail>, ApiError> {
    let (row, dir) = visible_alert(&state, &caller, id).await?;
    let evidence = evidence(&state, &row).await?;
    let d = detail(&state, &dir, row, evidence).await?;
    // the evidence is location data: reading it is audited (fail closed)
    state
        .store
        .append_audit(audit_draft(
            &caller,
            "alert.read",
            &d.alert,
            d.evidence.len() as i64,
        ))
        .await?;
    Ok(Json(d))
}

/// The audit entry of an alert action, with the alert's identity and state.
fn audit_draft(caller: &Principal, action: &str, alert: &Alert, result_count: i64) -> AuditDraft {
    let parameters = serde_json::json!({"alert_id": alert.id, "type": alert.alert_type,
        "status": alert.status, "outcome": alert.outcome});
    super::queries::draft(
        caller,
        action,
        parameters,
        None,
        vec![alert.subject_id.clone()],
        result_count,
    )
}

/// The alert's evidence fixes (location data: whoever reads them is audited).
async fn evidence(state: &AppState, row: &AlertRow) -> Result<Vec<EvidenceFix>, ApiError> {
    let wanted: HashSet<i64> = row.evidence.iter().copied().collect();
    Ok(
        match (row.evidence.iter().min(), row.evidence.iter().max()) {
            (Some(&lo), Some(&hi)) => state
                .store
                .device_fixes(row.device_pk, lo, hi)
                .await?
                .into_iter()
                .filter(|f| wanted.contains(&f.ts))
                .map(|f| EvidenceFix {
                    ts: time::rfc3339(f.ts),
                    lat: f.lat_e7.map(|v| v as f64 / E7),
                    lon: f.lon_e7.map(|v| v as f64 / E7),
                    accuracy_m: f.accuracy_m,
                })
                .collect(),
            _ => vec![],
        },
    )
}

async fn detail(
    state: &AppState,
    dir: &Directory,
    row: AlertRow,
    evidence: Vec<EvidenceFix>,
) -> Result<AlertDetail, ApiError> {
    let events = state
        .store
        .alert_events(row.id)
        .await?
        .into_iter()
        .map(|e| AlertEvent {
            at: time::rfc3339(e.at),
            kind: e.kind,
            actor: e.actor,
            detail: serde_json::from_str(&e.detail).unwrap_or_default(),
        })
        .collect();
    Ok(AlertDetail {
        alert: dir.alert(&row),
        evidence,
        events,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AckIn {
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CloseIn {
    #[schema(schema_with = outcome_schema)]
    pub outcome: String,
    pub note: String,
}

const OUTCOMES: [&str; 4] = [
    "breach_confirmed",
    "no_action",
    "authorised",
    "equipment_fault",
];

/// `CloseIn::outcome` in the OpenAPI document: one of [`OUTCOMES`].
fn outcome_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(OUTCOMES))
        .description(Some("why the alert is closed"))
        .build()
}

/// Marks an open alert as seen.
#[utoipa::path(post, path = "/v1/alerts/{id}/acknowledge", operation_id = "acknowledge_alert", tag = "alerts", request_body = AckIn,
    params(("id" = i64, Path, description = "alert id", example = 1)), security(("bearer" = [])),
    responses((status = 200, body = AlertDetail), problems::Restricted, problems::JsonBody,
              (status = 404, response = problems::NotFound), (status = 409, response = problems::Conflict)))]
#[tracing::instrument(skip_all)]
async fn acknowledge(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<AckIn>,
) -> Result<Json<AlertDetail>, ApiError> {
    let (row, dir) = visible_alert(&state, &caller, id).await?;
    let change = |a: &mut AlertRow| {
        if a.status != "open" {
            return Err(ApiError::Conflict(format!(
                "alert is {}, only an open alert can be acknowledged",
                a.status
            )));
        }
        a.status = "acknowledged".into();
        if body.note.is_some() {
            a.note = body.note;
        }
        Ok(())
    };
    review(
        &state,
        &caller,
        &dir,
        row,
        change,
        "acknowledged",
        "alert.acknowledge",
    )
    .await
}

/// Closes an alert with an outcome and a note.
#[utoipa::path(post, path = "/v1/alerts/{id}/close", operation_id = "close_alert", tag = "alerts", request_body = CloseIn,
    params(("id" = i64, Path, description = "alert id", example = 2)), security(("bearer" = [])),
    responses((status = 200, body = AlertDetail), problems::Restricted, problems::JsonBody,
              (status = 404, response = problems::NotFound), (status = 409, response = problems::Conflict)))]
#[tracing::instrument(skip_all)]
async fn close(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<CloseIn>,
) -> Result<Json<AlertDetail>, ApiError> {
    let (row, dir) = visible_alert(&state, &caller, id).await?;
    if !OUTCOMES.contains(&body.outcome.as_str()) {
        return Err(ApiError::Unprocessable(format!(
            "outcome must be one of {}",
            OUTCOMES.join(", ")
        )));
    }
    let change = |a: &mut AlertRow| {
        if a.status == "closed" || a.status == "withdrawn" {
            return Err(ApiError::Conflict(format!("alert is already {}", a.status)));
        }
        a.status = "closed".into();
        a.outcome = Some(body.outcome);
        a.note = Some(body.note);
        Ok(())
    };
    review(&state, &caller, &dir, row, change, "closed", "alert.close").await
}

/// Stores an officer's review change with its event and its audit entry in one
/// transaction, announces it, and answers with the alert's detail. `change` checks its
/// precondition (409 otherwise) and sets the review fields on the alert as read inside the
/// transaction, locked against other writers, so two officers (or an officer and the
/// engine's withdrawal) cannot both act on the same earlier state. The evidence is read
/// first, from `seen`: the entry counts the fixes the answer discloses.
async fn review(
    state: &AppState,
    caller: &Principal,
    dir: &Directory,
    seen: AlertRow,
    change: impl FnOnce(&mut AlertRow) -> Result<(), ApiError>,
    kind: &'static str,
    action: &str,
) -> Result<Json<AlertDetail>, ApiError> {
    let evidence = evidence(state, &seen).await?;
    let mut tx = state.store.begin_lawful().await?;
    let mut row = tx
        .alert(seen.id)
        .await?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    change(&mut row)?;
    row.updated_at = time::now_micros();
    tx.update_alert(&row, AlertFields::Review, kind, Some(caller.user_id))
        .await?;
    let entry = audit_draft(caller, action, &dir.alert(&row), evidence.len() as i64);
    tx.append_audit(entry).await?;
    tx.commit().await?;
    state.monitor.announce(kind, row.clone());
    Ok(Json(detail(state, dir, row, evidence).await?))
}

/// Server-Sent Events: one `alert` event per alert opened, updated, ended, acknowledged,
/// closed or withdrawn, for the caller's caseload (admins: all).
#[utoipa::path(get, path = "/v1/alerts/stream", operation_id = "alert_stream", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, description = "`alert` events, each `{\"change\": ..., \"alert\": Alert}`",
               content_type = "text/event-stream", body = String),
              problems::Restricted))]
async fn stream(
    State(state): State<AppState>,
    caller: Principal,
    headers: axum::http::HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(&[Role::Admin, Role::Officer])?;
    let hash = crate::token::hash(super::auth::bearer_of(&headers).unwrap_or_default());
    let mut rx = state.monitor.subscribe();
    let s = async_stream(move |tx| async move {
        let mut devices = HashMap::new();
        loop {
            // what the monitor announced since the last look, at most STREAM_BATCH: the
            // directory (subjects, devices) is read once for all of them
            let mut changes = match rx.recv().await {
                Ok(c) => vec![c],
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            while changes.len() < STREAM_BATCH {
                match rx.try_recv() {
                    Ok(c) => changes.push(c),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            // A token revoked while the stream is open ends it before the next event: the
            // revocation drops the token from the registry, and then only the store can say
            // it is still good. Asked directly, not through the unknown-token throttle, so a
            // flood of made-up tokens cannot keep a revoked stream open; a store that cannot
            // answer ends the stream too (the client reconnects).
            if state.registry.principal(&hash).is_none()
                && !matches!(state.store.user_by_token(&hash).await, Ok(Some(_)))
            {
                return;
            }
            let alerts: Vec<&AlertRow> = changes.iter().map(|c| &c.alert).collect();
            let Ok(dir) = Directory::for_alerts(&state, &alerts, &mut devices).await else {
                continue;
            };
            for change in &changes {
                if !dir.visible(&caller, &change.alert) {
                    continue;
                }
                let body =
                    serde_json::json!({"change": change.kind, "alert": dir.alert(&change.alert)});
                if tx
                    .send(Ok(Event::default().event("alert").data(body.to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::default()))
}

/// Alert changes the stream handles together: one directory read for each such group.
const STREAM_BATCH: usize = 256;

/// A stream fed by a spawned task through a small channel (ends when the client goes).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
