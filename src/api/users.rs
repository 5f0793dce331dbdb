//! `POST /v1/users`: administrators create users and their tokens (SPEC §2 Administration);
//! `DELETE /v1/users/{id}/token` revokes a user's token at once (not in SPEC).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::{problems, AppState, JsonBody};
use crate::error::ApiError;
use crate::model::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(create))
        .route("/v1/users/{id}/token", delete(revoke))
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

/// Revokes a user's token: from this answer on, the token is refused (401) on every route,
/// and any other process serving the same store refuses it within [`TOKEN_CACHE_REFRESH_S`]
/// seconds. The user and the audit entries naming it stay. A new token is a new user.
#[utoipa::path(delete, path = "/v1/users/{id}/token", operation_id = "revoke_token", tag = "administration",
    params(("id" = i64, Path, description = "user id (as `POST /v1/users` returned it)", example = 2)),
    security(("bearer" = [])),
    responses((status = 204, description = "revoked"), problems::Restricted,
              (status = 400, response = problems::BadRequest), (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    revoke_user(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How often a running service makes its token cache the store's users, so that a token
/// revoked by another process (`tagwatch user revoke`) is refused here too.
pub const TOKEN_CACHE_REFRESH_S: u64 = 5;

/// Revokes `user_id`'s token: the store keeps the digest of a fresh token that is never
/// shown, then this process's cache drops the old one. Shared by the API and the CLI.
pub async fn revoke_user(state: &AppState, user_id: i64) -> Result<(), ApiError> {
    revoke_in_store(&state.store, user_id).await?;
    state.registry.remove_user(user_id);
    Ok(())
}

/// The store half of [`revoke_user`] (the CLI has no cache to clear).
pub async fn revoke_in_store(store: &crate::store::Store, user_id: i64) -> Result<(), ApiError> {
    let unusable = crate::token::hash(&crate::token::generate());
    if !store.replace_token(user_id, &unusable).await? {
        return Err(ApiError::not_found("user"));
    }
    tracing::info!(user = user_id, "token revoked");
    Ok(())
}

/// Makes the token cache the store's users every [`TOKEN_CACHE_REFRESH_S`] seconds, for as
/// long as the runtime runs (see [`crate::registry::Registry::replace_users`]).
pub fn spawn_token_refresh(state: &AppState) -> tokio::task::JoinHandle<()> {
    let (store, registry) = (state.store.clone(), state.registry.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(TOKEN_CACHE_REFRESH_S));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let seen = registry.revocations();
            match store.users().await {
                Ok(users) => {
                    registry.replace_users(&users, seen);
                }
                // the store is down: the cache stays as it was; ingest's and the queries'
                // own errors say so
                Err(e) => tracing::debug!(error = %e, "token cache refresh failed"),
            }
        }
    })
}
