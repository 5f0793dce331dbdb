//! HTTP: axum routers, one file per resource, merged here; the shared [`AppState`]; the JSON
//! extractor whose rejections are problem+json; request spans.
//!
//! This is the only module that knows HTTP.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod console;
pub mod devices;
pub mod integer;
pub mod openapi;
pub mod ops;
pub mod pings;
pub mod problems;
pub mod queries;
pub mod subjects;
pub mod trails;
pub mod users;
pub mod zones;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::StatusCode;
use axum::Router;
use serde::Serialize;
use tower_http::trace::TraceLayer;
use utoipa::ToSchema;

use crate::config::Settings;
use crate::error::ApiError;
use crate::ingest::monitor::Monitor;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;

/// Everything a handler needs. Cloning is a handful of `Arc` increments.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub ingest: Ingest,
    /// The compliance engine's shell (zones, alerts, SSE).
    pub monitor: Monitor,
    pub metrics: Metrics,
    /// Set once the engine has rebuilt its state (readiness).
    pub ready: Arc<AtomicBool>,
}

/// A list page: `{"items": [...], "next_cursor": ...}` (SPEC §2).
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// `Json` whose rejections become problem+json with axum's status: 400 for unreadable JSON,
/// 422 for the wrong shape or a string holding U+0000 (see [`refuse_nul_in_json`]), 415
/// without a JSON `Content-Type`, 413 past the body limit.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // the body is read once here (413 past the limit) and handed to axum's Json on a
        // rebuilt request, so its statuses stay axum's and the bytes can be checked after
        let (parts, body) = req.into_parts();
        let bytes = bytes::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(e.body_text()),
                _ => ApiError::BadRequest(e.body_text()),
            })?;
        let req = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => {
                refuse_nul_in_json(&bytes)?;
                Ok(JsonBody(v))
            }
            Err(e) => Err(match e.status() {
                StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(e.body_text()),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(e.body_text()),
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(e.body_text()),
                _ => ApiError::BadRequest(e.body_text()),
            }),
        }
    }
}

/// 422 if a string (or key) of this JSON document holds U+0000. PostgreSQL's `TEXT` cannot
/// store it (the write failed with a 500 there, found in review) and no name, note or
/// justification needs it; refusing it at the edge keeps both stores alike. Only a body that
/// spells `\u0000` is parsed again.
pub fn refuse_nul_in_json(body: &[u8]) -> Result<(), ApiError> {
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(has_nul),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if !body.windows(6).any(|w| w == b"\\u0000") {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if has_nul(&v) => Err(ApiError::Unprocessable(crate::error::NUL_REFUSED.into())),
        _ => Ok(()),
    }
}

/// 422 if `text` (a query parameter, a CSV field) holds U+0000; see [`refuse_nul_in_json`].
pub fn refuse_nul(name: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::Unprocessable(format!(
            "{name}: {}",
            crate::error::NUL_REFUSED
        )));
    }
    Ok(())
}

/// Rewrites error responses that did not come from [`ApiError`] (axum's own rejections of a
/// bad path or query parameter, 405) as problem+json, so every error has one shape.
async fn problem_json(resp: axum::response::Response) -> axum::response::Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    use axum::response::IntoResponse;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let title = status.canonical_reason().unwrap_or("error").to_owned();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => format!("{} for this route", title.to_lowercase()),
        t => t.to_owned(),
    };
    let problem = crate::error::Problem {
        kind: "about:blank",
        title,
        status: status.as_u16(),
        detail,
    };
    let mut out = (status, axum::Json(problem)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.headers_mut().insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/problem+json"),
    );
    out
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    Router::new()
        .merge(users::router())
        .merge(subjects::router())
        .merge(devices::router())
        .merge(pings::router(max_body))
        .merge(zones::router())
        .merge(alerts::router())
        .merge(queries::router())
        .merge(trails::router())
        .merge(audit::router())
        .merge(ops::router())
        .merge(console::router())
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
        .layer(axum::middleware::map_response(problem_json))
        .layer(
            // The span names the route pattern, never the raw URI: query strings can hold
            // tokens and coordinates (OsmAnd), which must not reach the logs.
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "unmatched".to_owned());
                tracing::info_span!("request", method = %req.method(), route, user = tracing::field::Empty)
            }),
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::http::{header, Request, StatusCode};
    use axum::routing::post;
    use tower::Service;

    use super::JsonBody;

    /// A JSON body's rejection keeps axum's status: 415, 413, 400, 422.
    #[tokio::test]
    async fn json_body_rejections_keep_their_status_as_problem_json() {
        let mut app = axum::Router::new()
            .route(
                "/",
                post(|JsonBody(_): JsonBody<serde_json::Value>| async { "ok" }),
            )
            .layer(DefaultBodyLimit::max(16))
            .into_service::<Body>();
        let cases = [
            (None, "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (Some("text/plain"), "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (
                Some("application/json"),
                r#"{"a": "0123456789"}"#,
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (Some("application/json"), "{", StatusCode::BAD_REQUEST),
            (Some("application/json"), "{}", StatusCode::OK),
        ];
        for (content_type, body, status) in cases {
            let mut req = Request::post("/");
            if let Some(ct) = content_type {
                req = req.header(header::CONTENT_TYPE, ct);
            }
            let resp = app.call(req.body(Body::from(body)).unwrap()).await.unwrap();
            assert_eq!(resp.status(), status, "{content_type:?} {body}");
            if status != StatusCode::OK {
                assert_eq!(
                    resp.headers()[header::CONTENT_TYPE],
                    "application/problem+json"
                );
            }
        }
    }
}
