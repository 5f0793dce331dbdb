//! Zones, curfews and absences of a subject (SPEC §1, §2 "Zones, curfews, absences"), and the
//! London borough boundaries zones can be made of. Officers manage their caseload, admins any.
//! A change and its audit entry are one transaction; then the engine's zone index is
//! reloaded (swapped whole).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::queries::draft;
use super::subjects::visible_subject;
use super::{problems, AppState, JsonBody, List};
use crate::error::ApiError;
use crate::model::geometry::GeometryInput;
use crate::model::schedule::Schedule;
use crate::model::time::{self, Micros};
use crate::model::Role;
use crate::store::{NewZone, ZoneRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/subjects/{id}/zones", post(create).get(list))
        .route("/v1/zones/{zid}", delete(remove))
        .route("/v1/subjects/{id}/absences", post(create_absence))
        .route("/v1/geodata/boroughs", get(boroughs))
}

/// A zone or curfew. Rules a schema cannot state are answered 422 with the reason: invalid
/// geometry (unclosed ring, fewer than 4 positions, self-intersection, out-of-range
/// coordinates, radius ≤ 0, unknown borough), an invalid schedule, `valid_to` not after
/// `valid_from`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"kind": "exclusion", "name": "Camden Town station",
    "geometry": {"type": "Circle", "center": [-0.1426, 51.5392], "radius_m": 150.0}, "grace_s": 60}))]
pub struct ZoneIn {
    /// An inclusion zone with a schedule is a curfew.
    #[schema(schema_with = kind_schema)]
    pub kind: String,
    /// 1–200 characters, not blank.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// GeoJSON Polygon / MultiPolygon (lon/lat), `{"type":"Circle","center":[lon,lat],"radius_m":R}`
    /// or `{"type":"Borough","name":"Camden"}`.
    #[schema(value_type = Object)]
    pub geometry: serde_json::Value,
    /// `{"timezone": "...", "windows": [{"days": ["mon"], "start": "19:00", "end": "07:00"}]}`; null = always.
    #[schema(value_type = Option<Object>)]
    pub schedule: Option<serde_json::Value>,
    /// Seconds a breach must last before it raises an alert; default 0.
    #[schema(minimum = 0, maximum = 86400)]
    #[serde(default, deserialize_with = "super::integer::optional")]
    pub grace_s: Option<i64>,
    /// Default: now.
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    #[schema(format = DateTime)]
    pub valid_to: Option<String>,
}

/// `ZoneIn::kind` in the OpenAPI document.
fn kind_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["exclusion", "inclusion"]))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Zone {
    pub id: i64,
    pub subject_id: String,
    pub kind: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub geometry: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub schedule: Option<serde_json::Value>,
    pub grace_s: i64,
    pub valid_from: String,
    pub valid_to: Option<String>,
    pub created_at: String,
}

fn zone_json(z: ZoneRow, subject_id: &str) -> Zone {
    Zone {
        id: z.id,
        subject_id: subject_id.to_owned(),
        kind: z.kind,
        name: z.name,
        geometry: serde_json::from_str(&z.geometry).unwrap_or_default(),
        schedule: z.schedule.and_then(|s| serde_json::from_str(&s).ok()),
        grace_s: z.grace_s,
        valid_from: time::rfc3339(z.valid_from),
        valid_to: z.valid_to.map(time::rfc3339),
        created_at: time::rfc3339(z.created_at),
    }
}

fn parse_time(name: &str, v: &Option<String>) -> Result<Option<Micros>, ApiError> {
    v.as_deref()
        .map(|s| {
            time::parse_rfc3339(s)
                .ok_or_else(|| ApiError::Unprocessable(format!("{name} is not an RFC 3339 time")))
        })
        .transpose()
}

/// Adds a zone (or curfew) to a subject.
#[utoipa::path(post, path = "/v1/subjects/{id}/zones", operation_id = "create_zone", tag = "zones", request_body = ZoneIn,
    params(("id" = String, Path, description = "subject id", example = "GTO-00017")), security(("bearer" = [])),
    responses((status = 201, body = Zone), problems::Restricted, problems::JsonBody,
              (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ZoneIn>,
) -> Result<(StatusCode, Json<Zone>), ApiError> {
    let subject = visible_subject(&state, &caller, &id).await?;
    if body.kind != "exclusion" && body.kind != "inclusion" {
        return Err(ApiError::Unprocessable(
            "kind must be exclusion or inclusion".into(),
        ));
    }
    // the length is the name as given (as the schema counts it), stored trimmed
    let name = body.name.trim();
    if name.is_empty() || body.name.chars().count() > 200 {
        return Err(ApiError::Unprocessable(
            "name must be 1–200 characters".into(),
        ));
    }
    let geometry: GeometryInput = serde_json::from_value(body.geometry.clone())
        .map_err(|e| ApiError::Unprocessable(format!("invalid geometry: {e}")))?;
    geometry
        .resolve(state.monitor.boroughs())
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let schedule = match &body.schedule {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            let s: Schedule = serde_json::from_value(v.clone())
                .map_err(|e| ApiError::Unprocessable(format!("invalid schedule: {e}")))?;
            s.compile()
                .map_err(|e| ApiError::Unprocessable(format!("invalid schedule: {e}")))?;
            Some(v.to_string())
        }
    };
    let grace_s = body.grace_s.unwrap_or(0);
    if !(0..=86_400).contains(&grace_s) {
        return Err(ApiError::Unprocessable("grace_s must be 0–86400".into()));
    }
    let valid_from = parse_time("valid_from", &body.valid_from)?.unwrap_or_else(time::now_micros);
    let valid_to = parse_time("valid_to", &body.valid_to)?;
    if valid_to.is_some_and(|t| t <= valid_from) {
        return Err(ApiError::Unprocessable(
            "valid_to must be after valid_from".into(),
        ));
    }
    let row = state
        .store
        .insert_zone(&NewZone {
            subject_pk: subject.pk,
            kind: body.kind,
            name: name.to_owned(),
            geometry: body.geometry.to_string(),
            schedule,
            grace_s,
            valid_from,
            valid_to,
            created_by: caller.user_id,
        }, |row| {
            draft(
                &caller,
                "zone.create",
                serde_json::json!({"zone_id": row.id, "kind": row.kind,
                "name": row.name, "grace_s": row.grace_s, "valid_from": time::rfc3339(row.valid_from)}),
                None,
                vec![subject.id.clone()],
                1,
            )
        })
        .await?;
    state.monitor.zone_changed(row.id).await?;
    tracing::info!(zone = row.id, "zone created");
    Ok((StatusCode::CREATED, Json(zone_json(row, &subject.id))))
}

/// A subject's zones, ended ones included (with `valid_to`).
#[utoipa::path(get, path = "/v1/subjects/{id}/zones", operation_id = "list_zones", tag = "zones",
    params(("id" = String, Path, description = "subject id", example = "GTO-00017")), security(("bearer" = [])),
    responses((status = 200, body = List<Zone>), problems::Restricted, (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<List<Zone>>, ApiError> {
    let subject = visible_subject(&state, &caller, &id).await?;
    // the subject's rows only: reading every zone to filter them made registering a
    // fleet quadratic (each registration lists its subject's zones first)
    let items = state
        .store
        .subject_zones(subject.pk)
        .await?
        .into_iter()
        .map(|z| zone_json(z, &subject.id))
        .collect();
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

/// Ends a zone's validity now; its history stays.
#[utoipa::path(delete, path = "/v1/zones/{zid}", operation_id = "end_zone", tag = "zones",
    params(("zid" = i64, Path, description = "zone id", example = 1)), security(("bearer" = [])),
    responses((status = 204, description = "ended"), problems::Restricted,
              (status = 400, response = problems::BadRequest), (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all)]
async fn remove(
    State(state): State<AppState>,
    caller: Principal,
    Path(zid): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin, Role::Officer])?;
    let zone = state
        .store
        .zone(zid)
        .await?
        .ok_or_else(|| ApiError::not_found("zone"))?;
    let (subject_id, officer_id) = state
        .store
        .subject_ref(zone.subject_pk)
        .await?
        .ok_or_else(|| ApiError::not_found("zone"))?;
    if !caller.is_admin() && officer_id != Some(caller.user_id) {
        return Err(ApiError::not_found("zone"));
    }
    let entry = draft(
        &caller,
        "zone.delete",
        serde_json::json!({"zone_id": zid, "name": zone.name}),
        None,
        vec![subject_id],
        1,
    );
    state.store.end_zone(zid, time::now_micros(), entry).await?;
    state.monitor.zone_changed(zid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An authorised absence; `to` must be after `from` (else 422).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T13:00:00Z", "reason": "hospital appointment"}))]
pub struct AbsenceIn {
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    /// Not blank.
    #[schema(min_length = 1, pattern = r"\S")]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Absence {
    pub id: i64,
    pub subject_id: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// Records an authorised absence: curfew rules raise nothing while it covers the time.
#[utoipa::path(post, path = "/v1/subjects/{id}/absences", tag = "zones", request_body = AbsenceIn,
    params(("id" = String, Path, description = "subject id", example = "GTO-00017")), security(("bearer" = [])),
    responses((status = 201, body = Absence), problems::Restricted, problems::JsonBody,
              (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all)]
async fn create_absence(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AbsenceIn>,
) -> Result<(StatusCode, Json<Absence>), ApiError> {
    let subject = visible_subject(&state, &caller, &id).await?;
    let from = parse_time("from", &Some(body.from))?.unwrap_or_default();
    let to = parse_time("to", &Some(body.to))?.unwrap_or_default();
    if to <= from {
        return Err(ApiError::Unprocessable("to must be after from".into()));
    }
    let reason = body.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::Unprocessable("reason is required".into()));
    }
    let row = state
        .store
        .insert_absence(subject.pk, from, to, reason, caller.user_id, |row| {
            draft(
                &caller,
                "absence.create",
                serde_json::json!({"absence_id": row.id,
                "from": time::rfc3339(from), "to": time::rfc3339(to), "reason": row.reason}),
                None,
                vec![subject.id.clone()],
                1,
            )
        })
        .await?;
    state.monitor.reload_absences().await?;
    Ok((
        StatusCode::CREATED,
        Json(Absence {
            id: row.id,
            subject_id: subject.id,
            from: time::rfc3339(from),
            to: time::rfc3339(to),
            reason: row.reason,
        }),
    ))
}

/// London borough boundaries (GeoJSON FeatureCollection; `properties.name`), any user.
#[utoipa::path(get, path = "/v1/geodata/boroughs", tag = "zones", security(("bearer" = [])),
    responses((status = 200, description = "GeoJSON FeatureCollection", content_type = "application/geo+json", body = Object),
              problems::Authenticated))]
async fn boroughs(State(state): State<AppState>, _caller: Principal) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/geo+json")],
        state.monitor.boroughs_json(),
    )
}
