//! Operations: `/healthz` (process up), `/readyz` (store reachable, engine loaded),
//! `/metrics` (Prometheus text, admin only), `/openapi.json`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Principal;
use super::{problems, AppState};
use crate::error::ApiError;
use crate::model::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// `/healthz` and `/readyz` bodies.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: &'static str,
    /// The store's backend (readyz): `sqlite` or `postgres`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<&'static str>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        store: None,
    })
}

/// The store answers and the engine has loaded its state.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, response = problems::Unavailable)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if !state.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable { retry_after_s: 1 });
    }
    state
        .store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable { retry_after_s: 2 })?;
    Ok(Json(Health {
        status: "ready",
        store: Some(state.store.backend()),
    }))
}

/// OpenMetrics' media type, served when the scraper asks for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus' classic text format's media type, for every other client; the OpenMetrics
/// text exposition parses as it.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics in the OpenMetrics text format (admin token): as
/// `application/openmetrics-text` when the `Accept` header asks for it, else `text/plain`.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("bearer" = [])),
    responses((status = 200, description = "OpenMetrics text exposition",
               content((String = "text/plain"), (String = "application/openmetrics-text"))),
              problems::Restricted))]
async fn metrics(
    State(state): State<AppState>,
    caller: Principal,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        PROMETHEUS_TEXT
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi() -> impl IntoResponse {
    Json(super::openapi::document())
}
