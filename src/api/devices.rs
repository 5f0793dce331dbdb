//! Devices (tags): registration with their own token, and reassignment to another subject
//! with history kept (SPEC §1, §2 Administration).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::{AppState, JsonBody};
use crate::error::ApiError;
use crate::model::{time, DeviceId, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/devices", post(create))
        .route("/v1/devices/{id}/subject", put(reassign))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceIn {
    pub id: String,
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
#[utoipa::path(post, path = "/v1/devices", tag = "administration", request_body = DeviceIn,
    security(("bearer" = [])),
    responses((status = 201, body = CreatedDevice), (status = 401, body = crate::error::Problem),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
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
#[utoipa::path(put, path = "/v1/devices/{id}/subject", tag = "administration", request_body = Reassign,
    params(("id" = String, Path, description = "device id")), security(("bearer" = [])),
    responses((status = 200, body = Device), (status = 401, body = crate::error::Problem),
              (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
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
