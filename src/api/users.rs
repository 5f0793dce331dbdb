//! `POST /v1/users`: administrators create users and their tokens (SPEC §2 Administration).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::{problems, AppState, JsonBody};
use crate::error::ApiError;
use crate::model::Role;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/users", post(create))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUser {
    /// 1–200 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Officer Jane Doe"
    )]
    pub name: String,
    pub role: Role,
    /// For role `device` only: bind the token to this registered tag. Without it a device
    /// user is a gateway.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub device_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub device_id: Option<String>,
    /// Shown once; only its hash is stored.
    pub token: String,
}

/// Creates a user and returns its token once.
#[utoipa::path(post, path = "/v1/users", operation_id = "create_user", tag = "administration", request_body = NewUser,
    security(("bearer" = [])),
    responses((status = 201, body = CreatedUser), problems::Restricted, problems::JsonBody))]
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    caller: Principal,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    caller.require(&[Role::Admin])?;
    let created = create_user(&state, &body.name, body.role, body.device_id.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates a user (validated) and caches its principal. Shared by the API, the CLI and the
/// device endpoint (which makes each tag its own device user).
pub async fn create_user(
    state: &AppState,
    name: &str,
    role: Role,
    device_id: Option<&str>,
) -> Result<CreatedUser, ApiError> {
    // the length is the name as given (as the schema counts it), stored trimmed
    if name.chars().count() > 200 || name.trim().is_empty() {
        return Err(ApiError::Unprocessable(
            "name must be 1–200 characters".into(),
        ));
    }
    let name = name.trim();
    let device_pk = match (role, device_id) {
        (_, None) => None,
        (Role::Device, Some(id)) => Some(
            state
                .registry
                .device(id)
                .ok_or_else(|| ApiError::Unprocessable(format!("unknown device {id}")))?
                .pk,
        ),
        (_, Some(_)) => {
            return Err(ApiError::Unprocessable(
                "device_id is only for role device".into(),
            ))
        }
    };
    let token = crate::token::generate();
    let row = state
        .store
        .create_user(name, role.as_str(), device_pk, &crate::token::hash(&token))
        .await?;
    state.registry.add_user(&row);
    tracing::info!(user = row.id, role = %role, "user created");
    Ok(CreatedUser {
        id: row.id,
        name: row.name,
        role,
        device_id: device_id.map(str::to_owned),
        token,
    })
}
