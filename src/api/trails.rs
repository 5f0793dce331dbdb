//! A subject's trail (SPEC §2 "Trails"): the officer whose caseload it is on, or an admin;
//! every page read is audited in the same transaction as the read (fail closed), with the
//! subject disclosed and the number of fixes returned.
//!
//! Oldest first; the cursor is the `(ts, device)` key of the page's last fix, so pages are
//! stable while new fixes arrive. A trail covers every device the subject has worn, and
//! only the fixes attributed to the subject (a device's fixes from before it was assigned
//! belong to someone else).

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::queries::{draft, parse_time};
use super::subjects::visible_subject;
use super::{problems, AppState};
use crate::error::ApiError;
use crate::model::fix::unpack_flags;
use crate::model::{time, FixSource};
use crate::store::FixRow;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/subjects/{id}/trail", get(trail))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrailQuery {
    /// RFC 3339; default: the beginning.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; default: the end.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    #[param(pattern = r"^-?[0-9]{1,18}_-?[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// `geojson` for a FeatureCollection (one LineString plus the points); default `json`.
    #[param(schema_with = format_schema)]
    pub format: Option<String>,
}

/// `TrailQuery::format` in the OpenAPI document.
fn format_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["json", "geojson"]))
        .build()
}

/// One fix of a trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrailFix {
    pub device_id: String,
    pub ts: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub accuracy_m: Option<f32>,
    pub fix: FixSource,
    pub speed_mps: Option<f32>,
    pub heading_deg: Option<f32>,
    pub battery_pct: Option<f32>,
    pub tamper: Option<bool>,
    /// When the server received the fix, kept to the whole millisecond after `ts` (within
    /// half a millisecond of the server's clock).
    pub received_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Trail {
    pub subject_id: String,
    pub items: Vec<TrailFix>,
    pub next_cursor: Option<String>,
}

/// A trail page as GeoJSON (`format=geojson`, served as `application/geo+json`): one
/// LineString through the positioned fixes in order, then one Point per positioned fix with
/// its other fields as properties; `subject_id` and `next_cursor` as foreign members.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrailFeatureCollection {
    /// `FeatureCollection`
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub features: Vec<serde_json::Value>,
    pub subject_id: String,
    pub next_cursor: Option<String>,
}

fn trail_fix(r: &FixRow, devices: &HashMap<i64, String>) -> TrailFix {
    let (tamper, _) = unpack_flags(r.flags);
    TrailFix {
        device_id: devices.get(&r.device_pk).cloned().unwrap_or_default(),
        ts: time::rfc3339(r.ts),
        lat: r.lat_e7.map(|v| f64::from(v) / 1e7),
        lon: r.lon_e7.map(|v| f64::from(v) / 1e7),
        accuracy_m: r.accuracy_m,
        fix: FixSource::from_code(r.source),
        speed_mps: r.speed_mps,
        heading_deg: r.heading_deg,
        battery_pct: r.battery_pct,
        tamper,
        received_at: time::rfc3339(r.received_at),
    }
}

fn parse_cursor(c: &str) -> Option<(i64, i64)> {
    let (ts, dev) = c.split_once('_')?;
    Some((ts.parse().ok()?, dev.parse().ok()?))
}

/// A subject's fixes in time order; audited.
#[utoipa::path(get, path = "/v1/subjects/{id}/trail", tag = "trails",
    params(("id" = String, Path, description = "subject id", example = "GTO-00017"), TrailQuery), security(("bearer" = [])),
    responses((status = 200, description = "the page; with `format=geojson` as GeoJSON",
               content((Trail = "application/json"), (TrailFeatureCollection = "application/geo+json"))),
              problems::Restricted, problems::Params, (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all, fields(audit_id = tracing::field::Empty))]
async fn trail(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    Query(q): Query<TrailQuery>,
) -> Result<Response, ApiError> {
    let subject = visible_subject(&state, &caller, &id).await?;
    let from = q
        .from
        .as_deref()
        .map(|v| parse_time("from", v))
        .transpose()?;
    let to = q.to.as_deref().map(|v| parse_time("to", v)).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit {limit} is not in [1, {MAX_LIMIT}]"
        )));
    }
    let after = match q.cursor.as_deref() {
        Some(c) => {
            Some(parse_cursor(c).ok_or_else(|| ApiError::Unprocessable("bad cursor".into()))?)
        }
        None => None,
    };
    let geojson = match q.format.as_deref() {
        None | Some("json") => false,
        Some("geojson") => true,
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "format {other:?} is not json or geojson"
            )))
        }
    };

    let mut tx = state.store.begin_lawful().await?;
    let mut rows = tx
        .trail_page(
            subject.pk,
            from.unwrap_or(i64::MIN),
            to.unwrap_or(i64::MAX),
            after,
            limit + 1,
        )
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| format!("{}_{}", r.ts, r.device_pk))
    } else {
        None
    };
    let pks: Vec<i64> = rows
        .iter()
        .map(|r| r.device_pk)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let devices = tx.device_ids(&pks).await?;
    let rec = tx
        .append_audit(draft(
            &caller,
            "trail.read",
            json!({
                "subject_id": subject.id, "from": from.map(time::rfc3339), "to": to.map(time::rfc3339),
                "limit": limit, "cursor": q.cursor, "format": if geojson { "geojson" } else { "json" },
            }),
            None,
            if rows.is_empty() {
                vec![]
            } else {
                vec![subject.id.clone()]
            },
            rows.len() as i64,
        ))
        .await?;
    tx.commit().await?;
    tracing::Span::current().record("audit_id", rec.id);

    let items: Vec<TrailFix> = rows.iter().map(|r| trail_fix(r, &devices)).collect();
    if geojson {
        let fc = feature_collection(&subject.id, &items, next_cursor);
        return Ok(([(CONTENT_TYPE, "application/geo+json")], Json(fc)).into_response());
    }
    Ok(Json(Trail {
        subject_id: subject.id,
        items,
        next_cursor,
    })
    .into_response())
}

/// The page as a [`TrailFeatureCollection`].
fn feature_collection(
    subject_id: &str,
    items: &[TrailFix],
    next_cursor: Option<String>,
) -> TrailFeatureCollection {
    let positioned: Vec<(&TrailFix, f64, f64)> = items
        .iter()
        .filter_map(|f| Some((f, f.lon?, f.lat?)))
        .collect();
    let mut features = vec![json!({
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": positioned.iter().map(|(_, lon, lat)| [*lon, *lat]).collect::<Vec<_>>()},
        "properties": {"subject_id": subject_id, "kind": "trail"},
    })];
    features.extend(positioned.iter().map(|(f, lon, lat)| {
        json!({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {
                "kind": "fix", "device_id": f.device_id, "ts": f.ts, "accuracy_m": f.accuracy_m,
                "fix": f.fix, "speed_mps": f.speed_mps, "heading_deg": f.heading_deg,
                "battery_pct": f.battery_pct, "tamper": f.tamper, "received_at": f.received_at,
            },
        })
    }));
    TrailFeatureCollection {
        kind: "FeatureCollection",
        features,
        subject_id: subject_id.to_owned(),
        next_cursor,
    }
}
