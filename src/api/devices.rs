//! Devices (tags): registration with their own token, and reassignment to another subject
//! with history kept (SPEC §1, §2 Administration).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::{problems, AppState, JsonBody};
use crate::error::ApiError;
use crate::model::{time, DeviceId, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/devices", post(create))
        .route("/v1/devices/{id}/subject", put(reassign))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceIn {
    /// The vendor's serial: 1–64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "TAG-000002")]
    pub id: String,
    /// A registered subject (else 422).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "GTO-00017")]
    pub subject_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedDevice {
    pub id: String,
    pub subject_id: String,
    /// The device's own token (role `device`, bound to this tag); shown once.
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Reassign {
    /// A registered subject (else 422).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "GTO-00017")]
    pub subject_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Device {
    pub id: String,
    pub subject_id: String,
}

async fn subject_pk(state: &AppState, id: &str) -> Result<i64, ApiError> {
    Ok(state
        .store
        .subject(id)
        .await?
        .ok_or_else(|| ApiError::Unprocessable(format!("unknown subject {id}")))?
        .pk)
}

/// Registers a tag, assigned to a subject, and returns its token.
#[utoipa::path(post, path = "/v1/devices", operation_id = "create_device", tag = "administration", request_body = DeviceIn,
    security(("bearer" = [])),
    responses((status = 201, body = CreatedDevice), problems::Restricted, problems::JsonBody,
              (status = 409, response = problems::Conflict)))]
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    caller: Principal,
    JsonBody(body): JsonBody<DeviceIn>,
) -> Result<(StatusCode, Json<CreatedDevice>), ApiError> {
    caller.require(&[Role::Admin])?;
    let id = DeviceId::parse(body.id).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let spk = subject_pk(&state, &body.subject_id).await?;
    let row = state
        .store
        .create_device(id.as_str(), spk, time::now_micros())
        .await?;
    state.registry.put_device(&row.id, row.pk, Some(spk));
    let user = super::users::create_user(
        &state,
        &format!("device {}", row.id),
        Role::Device,
        Some(&row.id),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedDevice {
            id: row.id,
            subject_id: body.subject_id,
            token: user.token,
        }),
    ))
}

/// Reassigns a tag to another subject; earlier fixes keep the subject they were attributed to.
#[utoipa::path(put, path = "/v1/devices/{id}/subject", operation_id = "reassign_device", tag = "administration", request_body = Reassign,
    params(("id" = String, Path, description = "device id", example = "TAG-000001")), security(("bearer" = [])),
    responses((status = 200, body = Device), problems::Restricted, problems::JsonBody,
              (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all)]
async fn reassign(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Reassign>,
) -> Result<Json<Device>, ApiError> {
    caller.require(&[Role::Admin])?;
    let dev = state
        .registry
        .device(&id)
        .ok_or_else(|| ApiError::not_found("device"))?;
    let spk = subject_pk(&state, &body.subject_id).await?;
    state
        .store
        .reassign_device(dev.pk, spk, time::now_micros())
        .await?;
    state.registry.put_device(&id, dev.pk, Some(spk));
    Ok(Json(Device {
        id,
        subject_id: body.subject_id,
    }))
}
