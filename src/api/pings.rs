//! Ingest endpoints: `POST /v1/pings` (JSON array or NDJSON) and `/osmand` (SPEC §2 Ingest).
//!
//! Each item is validated on its own; the rest of the batch is stored whatever one item
//! holds. The answer is sent only once every accepted fix is durably committed.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{self, Principal};
use super::{problems, AppState};
use crate::error::ApiError;
use crate::ingest::parse::{self, Item};
use crate::model::fix::{pack_flags, received_after, TimeLimits};
use crate::model::{time, Fix, Role};
use crate::store::FixRow;

pub fn router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/pings", post(post_pings))
        .route("/osmand", get(osmand).post(osmand_post))
        // the handler maps the limit's rejection to a problem+json 413 itself
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
}

/// The query parameters of `/osmand` (documentation: the handler reads them as a map, so
/// that the form body can add to them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct OsmandQuery {
    /// Device id (`deviceid` is taken too).
    #[param(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "TAG-000001")]
    id: String,
    #[param(minimum = -90.0, maximum = 90.0)]
    lat: f64,
    #[param(minimum = -180.0, maximum = 180.0)]
    lon: f64,
    /// Unix seconds, unix milliseconds or RFC 3339; default: now.
    timestamp: Option<String>,
    /// Accuracy, metres.
    #[param(minimum = 0.0)]
    accuracy: Option<f64>,
    /// Horizontal dilution of precision (accuracy ≈ 5 × hdop when `accuracy` is absent).
    #[param(minimum = 0.0)]
    hdop: Option<f64>,
    /// Battery, percent.
    #[param(minimum = 0.0, maximum = 100.0)]
    batt: Option<f64>,
    /// Speed, knots.
    #[param(minimum = 0.0)]
    speed: Option<f64>,
    /// Degrees from north.
    #[param(minimum = 0.0, maximum = 360.0)]
    bearing: Option<f64>,
    /// The device token, when not sent as a bearer header.
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rejected {
    pub index: usize,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResult {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

/// The row stored for `fix`, received at `now` (kept to the millisecond after its time,
/// `received_after`).
fn row_of(fix: &Fix, device_pk: i64, subject_pk: Option<i64>, now: i64) -> FixRow {
    FixRow {
        device_pk,
        ts: fix.ts,
        subject_pk,
        lat_e7: fix.pos_e7.map(|p| p.0),
        lon_e7: fix.pos_e7.map(|p| p.1),
        accuracy_m: fix.accuracy_m,
        source: fix.source.code(),
        speed_mps: fix.speed_mps,
        heading_deg: fix.heading_deg,
        battery_pct: fix.battery_pct,
        flags: pack_flags(fix.tamper, fix.charging),
        received_at: received_after(fix.ts, now),
        cell: FixRow::cell_of(fix.pos_e7.map(|p| p.0), fix.pos_e7.map(|p| p.1)),
    }
}

/// Validates items, stores the good ones, and counts the outcome.
pub async fn ingest_items(
    state: &AppState,
    caller: &Principal,
    items: Vec<Item>,
) -> Result<IngestResult, ApiError> {
    let now = time::now_micros();
    let limits = TimeLimits {
        now,
        retention_s: state.settings.retention_days * 86_400,
    };
    let mut rejected = Vec::new();
    let mut rows = Vec::with_capacity(items.len());
    let mut seen = HashSet::with_capacity(items.len());
    let mut duplicates = 0;
    state.registry.with_devices(|lookup| {
        for (index, item) in items.into_iter().enumerate() {
            let outcome = item.and_then(|p| p.validate(limits)).and_then(|fix| {
                let dev = match (caller.device_pk, lookup(fix.device_id.as_str())) {
                    (Some(own), Some(d)) if d.pk == own => d,
                    (Some(_), _) => return Err("forbidden device".to_owned()),
                    (None, Some(d)) => d,
                    (None, None) => return Err("unknown device".to_owned()),
                };
                Ok((fix, dev))
            });
            match outcome {
                Ok((fix, dev)) => {
                    if seen.insert((dev.pk, fix.ts)) {
                        rows.push(row_of(&fix, dev.pk, dev.subject_pk, now));
                    } else {
                        duplicates += 1;
                    }
                }
                Err(error) => rejected.push(Rejected { index, error }),
            }
        }
    });
    let stored = state.ingest.write(rows).await?;
    let accepted = stored.iter().filter(|s| **s).count();
    duplicates += stored.len() - accepted;
    state.metrics.pings_accepted.inc_by(accepted as u64);
    state.metrics.pings_duplicate.inc_by(duplicates as u64);
    state.metrics.pings_rejected.inc_by(rejected.len() as u64);
    Ok(IngestResult {
        accepted,
        duplicates,
        rejected,
    })
}

fn too_large(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("body larger than --max-body-bytes".into())
    } else {
        ApiError::BadRequest(e.body_text())
    }
}

/// Posts a batch of pings: a JSON array, or NDJSON with `Content-Type: application/x-ndjson`.
///
/// The body is refused whole (400) only when it is not a JSON array (NDJSON: has no parseable
/// line), 413 past `--max-body-bytes` or `--max-batch` items. Each item is meant to be a
/// `PingIn`; one that is not (wrong shape or types, out of range, unknown or forbidden
/// device, `ts` outside the accepted window) is listed in `rejected` and the rest stored, so
/// the items' schema here is open.
#[utoipa::path(post, path = "/v1/pings", tag = "ingest",
    request_body(description = "pings (`PingIn`), as a JSON array or NDJSON", content(
        (Vec<serde_json::Value> = "application/json", example = json!([{"device_id": "TAG-000001",
            "ts": "2026-11-23T18:00:00Z", "lat": 51.5392, "lon": -0.1426, "accuracy_m": 8.0, "fix": "gps",
            "battery_pct": 76.0}])),
        (String = "application/x-ndjson")
    )),
    security(("bearer" = [])),
    responses((status = 200, body = IngestResult), problems::Restricted,
              (status = 400, response = problems::BadRequest), (status = 413, response = problems::PayloadTooLarge)))]
#[tracing::instrument(skip_all, fields(items))]
async fn post_pings(
    State(state): State<AppState>,
    caller: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestResult>, ApiError> {
    caller.require(&[Role::Device])?;
    let body = body.map_err(too_large)?;
    let ndjson = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson")
        });
    let items = if ndjson {
        parse::ndjson(&body)
    } else {
        parse::json_array(&body)
    }
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    tracing::Span::current().record("items", items.len());
    if items.len() > state.settings.max_batch {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} items; at most {} per request (--max-batch)",
            items.len(),
            state.settings.max_batch
        )));
    }
    Ok(Json(ingest_items(&state, &caller, items).await?))
}

/// OsmAnd / Traccar Client protocol: one fix per request, parameters in the query string (or
/// a form body, whose values win); the device's token as `token=` or a bearer header.
///
/// A fix refused for any reason (a missing or unparseable parameter, out of range, `timestamp`
/// outside the accepted window, unknown device) is 400: stock clients only tell 200 from
/// anything else.
#[utoipa::path(get, path = "/osmand", tag = "ingest", params(OsmandQuery),
    request_body(content = Object, content_type = "application/x-www-form-urlencoded",
                 description = "optional: the same parameters as a form"),
    security((), ("bearer" = [])),
    responses((status = 200, description = "stored (or a duplicate)"), problems::Restricted,
              (status = 400, response = problems::BadRequest), (status = 413, response = problems::PayloadTooLarge)))]
#[tracing::instrument(skip_all)]
async fn osmand(
    State(state): State<AppState>,
    Query(mut params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(too_large)?;
    if !body.is_empty() {
        // Traccar Client may send the same parameters as a form body
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
            .map_err(|e| ApiError::BadRequest(format!("form body: {e}")))?;
        params.extend(form);
    }
    let token = match params.remove("token") {
        Some(t) => t,
        None => headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::to_owned)
            .ok_or(ApiError::Unauthorized)?,
    };
    let caller = auth::authenticate(&state, &token).await?;
    caller.require(&[Role::Device])?;
    let ping = parse::osmand(&params).map_err(ApiError::BadRequest)?;
    let result = ingest_items(&state, &caller, vec![Ok(ping)]).await?;
    match result.rejected.into_iter().next() {
        Some(r) if r.error == "forbidden device" => Err(ApiError::Forbidden),
        Some(r) => Err(ApiError::BadRequest(r.error)),
        None => Ok(StatusCode::OK),
    }
}

/// `/osmand` by POST (Traccar Client's default), the same as by GET.
#[utoipa::path(post, path = "/osmand", tag = "ingest", params(OsmandQuery),
    request_body(content = Object, content_type = "application/x-www-form-urlencoded",
                 description = "optional: the same parameters as a form"),
    security((), ("bearer" = [])),
    responses((status = 200, description = "stored (or a duplicate)"), problems::Restricted,
              (status = 400, response = problems::BadRequest), (status = 413, response = problems::PayloadTooLarge)))]
async fn osmand_post(
    state: State<AppState>,
    params: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    osmand(state, params, headers, body).await
}
