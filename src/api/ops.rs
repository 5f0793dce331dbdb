//! Operations: `/healthz` (process up), `/readyz` (store reachable, engine loaded),
//! `/metrics` (Prometheus text, admin only), `/openapi.json`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::auth::Principal;
use super::AppState;
use crate::error::ApiError;
use crate::model::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "up")))]
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The store answers and the engine has loaded its state.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, body = crate::error::Problem)))]
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if !state.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable { retry_after_s: 1 });
    }
    state
        .store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable { retry_after_s: 2 })?;
    Ok(Json(
        json!({"status": "ready", "store": state.store.backend()}),
    ))
}

/// Prometheus text exposition (admin token).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text"), (status = 401, body = crate::error::Problem),
              (status = 403, body = crate::error::Problem)))]
async fn metrics(
    State(state): State<AppState>,
    caller: Principal,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3 document")))]
async fn openapi() -> impl IntoResponse {
    Json(super::openapi::document())
}
