//! The web console (SPEC §2 "Web console"): a single page for officers, analysts and
//! auditors, served by the binary itself. Its assets (`console/`) are built in with
//! `include_str!`/`include_bytes!`, so it needs no CDN and works offline; the map is Leaflet
//! (vendored with its licence) over the borough outlines, with an optional tile layer.
//!
//! Invariants: the static assets need no token (SPEC §2 preamble); every console response
//! carries a strict Content-Security-Policy (scripts and styles from this origin only, no
//! inline script), `nosniff`, `no-referrer` and `X-Frame-Options: DENY`. `/v1/me` tells the
//! page who the token belongs to so it can show the right screens; the API still checks
//! every call.

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Principal;
use super::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/config.json", get(config))
        .route("/console/{file}", get(asset))
        .route("/console/vendor/leaflet/{file}", get(leaflet))
        .route(
            "/console/vendor/leaflet/images/{file}",
            get(leaflet_image_route),
        )
        .route("/v1/me", get(me))
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const PNG: &str = "image/png";
const TEXT: &str = "text/plain; charset=utf-8";

/// The page's own assets, by file name under `/console/`.
fn own_asset(file: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match file {
        "app.js" => (JS, include_str!("../../console/app.js").as_bytes()),
        "map.js" => (JS, include_str!("../../console/map.js").as_bytes()),
        "style.css" => (CSS, include_str!("../../console/style.css").as_bytes()),
        _ => return None,
    })
}

/// Leaflet's built files and licence, under `/console/vendor/leaflet/`.
fn leaflet_asset(file: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match file {
        "leaflet.js" => (
            JS,
            include_str!("../../console/vendor/leaflet/leaflet.js").as_bytes(),
        ),
        "leaflet.css" => (
            CSS,
            include_str!("../../console/vendor/leaflet/leaflet.css").as_bytes(),
        ),
        "LICENSE" => (
            TEXT,
            include_str!("../../console/vendor/leaflet/LICENSE").as_bytes(),
        ),
        _ => return None,
    })
}

/// Leaflet's images (referenced by `leaflet.css` relative to itself).
fn leaflet_image(file: &str) -> Option<&'static [u8]> {
    Some(match file {
        "layers.png" => include_bytes!("../../console/vendor/leaflet/images/layers.png"),
        "layers-2x.png" => include_bytes!("../../console/vendor/leaflet/images/layers-2x.png"),
        "marker-icon.png" => include_bytes!("../../console/vendor/leaflet/images/marker-icon.png"),
        "marker-icon-2x.png" => {
            include_bytes!("../../console/vendor/leaflet/images/marker-icon-2x.png")
        }
        "marker-shadow.png" => {
            include_bytes!("../../console/vendor/leaflet/images/marker-shadow.png")
        }
        _ => return None,
    })
}

/// The Content-Security-Policy of every console response. Images may also come from the
/// configured tile server's origin (its `{s}` subdomain placeholder becomes a wildcard).
fn csp(tile_url: Option<&str>) -> String {
    let tiles = tile_url.and_then(tile_origin).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:{tiles}; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// ` scheme://host` of a tile URL template for the CSP, or `None` if it is not a plain
/// http(s) URL (a malformed setting must not be able to widen the policy).
fn tile_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = rest.split('/').next()?;
    let host: Vec<String> = host
        .split('.')
        .map(|label| {
            if label.contains('{') {
                "*".to_owned()
            } else {
                label.to_owned()
            }
        })
        .collect();
    let host = host.join(".");
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | ':'));
    ok.then(|| format!(" {scheme}://{host}"))
}

/// A console response: the body with its content type and the security headers.
fn respond(state: &AppState, content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&csp(state.settings.tile_url.as_deref())) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // the page holds no data; assets change with the binary, so revalidate rather than guess
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

fn not_found(state: &AppState) -> Response {
    respond(state, TEXT, (StatusCode::NOT_FOUND, "not found"))
}

async fn index(State(state): State<AppState>) -> Response {
    respond(
        &state,
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    )
}

async fn asset(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    match own_asset(&file) {
        Some((ct, body)) => respond(&state, ct, body),
        None => not_found(&state),
    }
}

async fn leaflet(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    match leaflet_asset(&file) {
        Some((ct, body)) => respond(&state, ct, body),
        None => not_found(&state),
    }
}

async fn leaflet_image_route(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    match leaflet_image(&file) {
        Some(body) => respond(&state, PNG, body),
        None => not_found(&state),
    }
}

#[derive(Debug, Serialize)]
struct ConsoleConfig {
    /// Leaflet tile URL template, if the operator configured one.
    tile_url: Option<String>,
}

/// Settings the page needs before sign-in (nothing about any person).
async fn config(State(state): State<AppState>) -> Response {
    let cfg = ConsoleConfig {
        tile_url: state.settings.tile_url.clone(),
    };
    respond(&state, "application/json", Json(cfg))
}

/// Who holds this token.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: i64,
    pub name: String,
    pub role: crate::model::Role,
}

/// The caller's own user: id, name and role (the console shows the screens of that role).
#[utoipa::path(get, path = "/v1/me", tag = "administration", security(("bearer" = [])),
    responses((status = 200, body = Me), super::problems::Authenticated))]
pub async fn me(caller: Principal) -> Result<Json<Me>, ApiError> {
    Ok(Json(Me {
        id: caller.user_id,
        name: caller.name,
        role: caller.role,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_origin_keeps_the_host_and_wildcards_placeholders() {
        assert_eq!(
            tile_origin("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png").as_deref(),
            Some(" https://*.tile.openstreetmap.org")
        );
        assert_eq!(
            tile_origin("http://tiles.local:8081/{z}/{x}/{y}.png").as_deref(),
            Some(" http://tiles.local:8081")
        );
    }

    #[test]
    fn a_malformed_tile_url_does_not_widen_the_policy() {
        assert_eq!(tile_origin("javascript:alert(1)"), None);
        assert_eq!(tile_origin("https://a.example; script-src *"), None);
        assert_eq!(tile_origin("data://x"), None);
    }
}
