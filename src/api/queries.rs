//! Lawful location queries (SPEC §2 "Lawful location queries", §4): location-at-time,
//! crime-scene and batch crime-match, for analysts only, each with a justification.
//!
//! Every answered call writes its audit entry in the same transaction as the read
//! ([`crate::store::LawfulTx`]): the entry is committed before the answer leaves, and if it
//! cannot be written the call fails (fail closed). A query about a subject that does not
//! exist is audited too (the attempt is a consultation) and answered 404. Requests refused
//! before any data is read (401, 403, 422) are not audited. Positions never reach the logs
//! above `debug`.

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::{problems, AppState, JsonBody};
use crate::audit::chain::AuditDraft;
use crate::error::ApiError;
use crate::geodesy::LatLon;
use crate::model::time::{self, Micros, MICROS_PER_SEC};
use crate::model::{Role, SubjectId};
use crate::query::at_time::{location_at_time, Method};
use crate::query::cells::{scene_cover, SceneCover, MAX_COVER_RADIUS_M};
use crate::query::crime_csv::parse_crime_csv;
use crate::query::scene::{MatchMethod, SceneQuery};
use crate::query::{QFix, QueryConfig};
use crate::store::{SceneFound, SEGMENT_INDEX_MAX_GAP_US};

/// Longest crime-scene window: a data.police.uk month is at most 31 days, and a longer
/// window is a trawl through everyone's history rather than a question about a crime.
pub const MAX_WINDOW_S: i64 = 31 * 86_400;
/// Crimes per crime-match request (each is its own audited query).
pub const MAX_CRIMES: usize = 1_000;
/// Longest justification field, characters.
const MAX_JUSTIFICATION_CHARS: usize = 4_000;
// The schemas below state these limits as literals (utoipa takes only literals).
const _: () = assert!(
    MAX_COVER_RADIUS_M == 10_000.0,
    "update `maximum` of radius_m below"
);
const _: () = assert!(MAX_CRIMES == 1_000, "update `max_items` of crimes below");
const _: () = assert!(
    MAX_JUSTIFICATION_CHARS == 4_000,
    "update `max_length` below"
);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/queries/location-at-time", post(location_at_time_query))
        .route("/v1/queries/crime-scene", post(crime_scene))
        .route("/v1/queries/crime-match", post(crime_match))
}

/// Why the caller may look: all three fields non-blank, at most 4000 characters (SPEC §2).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"crime_ref": "CAD-2026-11-0042", "legal_basis": "s.19 PACE 1984",
    "reason": "burglary investigation"}))]
pub struct Justification {
    #[schema(min_length = 1, max_length = 4000, pattern = r"\S")]
    pub crime_ref: String,
    #[schema(min_length = 1, max_length = 4000, pattern = r"\S")]
    pub legal_basis: String,
    #[schema(min_length = 1, max_length = 4000, pattern = r"\S")]
    pub reason: String,
}

impl Justification {
    /// 422 unless every field has non-blank text of a sane length.
    pub fn validate(&self) -> Result<serde_json::Value, ApiError> {
        for (name, v) in [
            ("justification.crime_ref", &self.crime_ref),
            ("justification.legal_basis", &self.legal_basis),
            ("justification.reason", &self.reason),
        ] {
            check_text(name, v)?;
        }
        Ok(
            json!({"crime_ref": self.crime_ref, "legal_basis": self.legal_basis, "reason": self.reason}),
        )
    }
}

/// 422 unless `v` has non-blank text of at most [`MAX_JUSTIFICATION_CHARS`].
fn check_text(name: &str, v: &str) -> Result<(), ApiError> {
    super::refuse_nul(name, v)?;
    if v.trim().is_empty() {
        return Err(ApiError::Unprocessable(format!("{name} must not be empty")));
    }
    if v.chars().count() > MAX_JUSTIFICATION_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "{name} is longer than {MAX_JUSTIFICATION_CHARS} characters"
        )));
    }
    Ok(())
}

/// Parses an RFC 3339 field or answers 422 naming it.
pub(crate) fn parse_time(name: &str, v: &str) -> Result<Micros, ApiError> {
    time::parse_rfc3339(v)
        .ok_or_else(|| ApiError::Unprocessable(format!("{name} {v:?} is not an RFC 3339 time")))
}

/// An audit draft for `caller` (the id is assigned on append).
pub(crate) fn draft(
    caller: &Principal,
    action: &str,
    parameters: serde_json::Value,
    justification: Option<serde_json::Value>,
    subject_ids: Vec<String>,
    result_count: i64,
) -> AuditDraft {
    AuditDraft {
        id: 0,
        at_us: time::now_micros(),
        actor: caller.user_id,
        actor_name: caller.name.clone(),
        role: caller.role.as_str().to_owned(),
        action: action.to_owned(),
        parameters,
        justification,
        subject_ids,
        result_count,
    }
}

fn query_config(state: &AppState) -> Result<QueryConfig, ApiError> {
    let max_gap_s = state.settings.max_gap_s;
    // The segment index only holds pairs up to an hour apart (see store::lawful).
    if max_gap_s.saturating_mul(MICROS_PER_SEC) > SEGMENT_INDEX_MAX_GAP_US {
        return Err(ApiError::Internal(format!(
            "max-gap-s {max_gap_s} exceeds the segment index's {} s",
            SEGMENT_INDEX_MAX_GAP_US / MICROS_PER_SEC
        )));
    }
    Ok(QueryConfig { max_gap_s })
}

/// A fix as a query answer shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueryFix {
    pub device_id: String,
    pub ts: String,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f64,
}

fn query_fix(f: &QFix, devices: &HashMap<i64, String>) -> QueryFix {
    QueryFix {
        device_id: devices.get(&f.device).cloned().unwrap_or_default(),
        ts: time::rfc3339(f.ts_us),
        lat: f.pos.lat,
        lon: f.pos.lon,
        accuracy_m: f.accuracy_m,
    }
}

// ---------------------------------------------------------------- location-at-time

#[derive(Debug, Deserialize, ToSchema)]
pub struct LocationAtTimeIn {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "GTO-00017")]
    pub subject_id: String,
    /// RFC 3339 instant.
    #[schema(format = DateTime)]
    pub at: String,
    pub justification: Justification,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EstimateOut {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub uncertainty_m: Option<f64>,
    /// `observed`, `interpolated` or `none`.
    #[schema(value_type = String)]
    pub method: Method,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LocationAtTimeOut {
    pub subject_id: String,
    pub at: String,
    pub estimate: EstimateOut,
    pub before: Option<QueryFix>,
    pub after: Option<QueryFix>,
    pub audit_id: i64,
}

/// Where was a subject at an instant (SPEC §4).
#[utoipa::path(post, path = "/v1/queries/location-at-time", tag = "queries", request_body = LocationAtTimeIn,
    security(("bearer" = [])),
    responses((status = 200, body = LocationAtTimeOut), problems::Restricted, problems::JsonBody,
              (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all, fields(audit_id = tracing::field::Empty))]
async fn location_at_time_query(
    State(state): State<AppState>,
    caller: Principal,
    JsonBody(body): JsonBody<LocationAtTimeIn>,
) -> Result<Json<LocationAtTimeOut>, ApiError> {
    caller.require(&[Role::Analyst])?;
    let justification = body.justification.validate()?;
    let subject_id = SubjectId::parse(body.subject_id.as_str())
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let at = parse_time("at", &body.at)?;
    let cfg = query_config(&state)?;

    let (read, estimate, rec) = state
        .store
        .at_time_audited(subject_id.as_str(), at, |read| {
            let estimate = read.map(|read| {
                location_at_time(&read.fixes, at, &cfg)
            });
            let disclosed = estimate.as_ref().is_some_and(|e| {
                e.method != Method::None || e.before.is_some() || e.after.is_some()
            });
            let found = estimate.as_ref().is_some_and(|e| e.method != Method::None);
            let entry = draft(
                &caller,
                "query.location_at_time",
                json!({"subject_id": subject_id.as_str(), "at": time::rfc3339(at), "found": read.is_some()}),
                Some(justification),
                if disclosed {
                    vec![subject_id.to_string()]
                } else {
                    vec![]
                },
                i64::from(found),
            );
            (entry, estimate)
        })
        .await?;
    let devices = read.map(|r| r.devices).unwrap_or_default();
    tracing::Span::current().record("audit_id", rec.id);
    let Some(est) = estimate else {
        return Err(ApiError::not_found("subject"));
    };
    Ok(Json(LocationAtTimeOut {
        subject_id: subject_id.to_string(),
        at: time::rfc3339(at),
        estimate: EstimateOut {
            lat: est.lat,
            lon: est.lon,
            uncertainty_m: est.uncertainty_m,
            method: est.method,
        },
        before: est.before.as_ref().map(|f| query_fix(f, &devices)),
        after: est.after.as_ref().map(|f| query_fix(f, &devices)),
        audit_id: rec.id,
    }))
}

// ---------------------------------------------------------------- crime-scene

/// A crime scene: `from` not after `to`, at most 31 days apart (else 422).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CrimeSceneIn {
    #[schema(minimum = -90.0, maximum = 90.0, example = 51.5392)]
    pub lat: f64,
    #[schema(minimum = -180.0, maximum = 180.0, example = -0.1426)]
    pub lon: f64,
    /// Metres, at most 10 km.
    #[schema(exclusive_minimum = 0.0, maximum = 10000.0, example = 500.0)]
    pub radius_m: f64,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    pub justification: Justification,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SceneMatchOut {
    pub subject_id: String,
    pub device_id: String,
    pub closest_approach_m: f64,
    pub closest_at: String,
    /// `fix` or `interpolated`.
    #[schema(value_type = String)]
    pub method: MatchMethod,
    pub fixes_within: i64,
    /// Accuracy of the fix, or the larger of the two fixes', the closest approach rests on.
    pub accuracy_m: f64,
    /// Times of the fix or segment endpoints the closest approach rests on.
    pub basis: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CrimeSceneOut {
    pub matches: Vec<SceneMatchOut>,
    pub audit_id: i64,
}

/// A validated scene.
struct Scene {
    query: SceneQuery,
}

fn scene(lat: f64, lon: f64, radius_m: f64, from: &str, to: &str) -> Result<Scene, ApiError> {
    check_radius(radius_m)?;
    let center = check_place(lat, lon)?;
    let (from_us, to_us) = (parse_time("from", from)?, parse_time("to", to)?);
    window(from_us, to_us)?;
    Ok(Scene {
        query: SceneQuery {
            center,
            radius_m,
            from_us,
            to_us,
        },
    })
}

fn check_radius(radius_m: f64) -> Result<(), ApiError> {
    if radius_m.is_finite() && radius_m > 0.0 && radius_m <= MAX_COVER_RADIUS_M {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(format!(
            "radius_m {radius_m} is not in (0, {MAX_COVER_RADIUS_M}]"
        )))
    }
}

fn check_place(lat: f64, lon: f64) -> Result<LatLon, ApiError> {
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Err(ApiError::Unprocessable(format!(
            "lat {lat} is not in [-90, 90]"
        )));
    }
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        return Err(ApiError::Unprocessable(format!(
            "lon {lon} is not in [-180, 180]"
        )));
    }
    Ok(LatLon::new(lat, lon))
}

fn window(from_us: Micros, to_us: Micros) -> Result<(), ApiError> {
    if from_us > to_us {
        return Err(ApiError::Unprocessable("from is after to".into()));
    }
    if to_us - from_us > MAX_WINDOW_S * MICROS_PER_SEC {
        return Err(ApiError::Unprocessable(format!(
            "the window is longer than {} days",
            MAX_WINDOW_S / 86_400
        )));
    }
    Ok(())
}

/// The cells a scene's lookup reads (422 for a radius the cover refuses).
fn cover_of(scene: &SceneQuery) -> Result<SceneCover, ApiError> {
    scene_cover(scene.center, scene.radius_m).map_err(|e| ApiError::Unprocessable(e.to_string()))
}

/// A scene's matches as the answer gives them, named by external ids.
fn answer_of(found: SceneFound) -> Vec<SceneMatchOut> {
    let SceneFound {
        matches,
        devices,
        subjects,
    } = found;
    matches
        .into_iter()
        .map(|m| SceneMatchOut {
            subject_id: subjects.get(&m.subject).cloned().unwrap_or_default(),
            device_id: devices.get(&m.device).cloned().unwrap_or_default(),
            closest_approach_m: m.closest_approach_m,
            closest_at: time::rfc3339(m.closest_at_us),
            method: m.method,
            fixes_within: m.fixes_within,
            accuracy_m: m.accuracy_m,
            basis: m.basis_ts_us.iter().map(|t| time::rfc3339(*t)).collect(),
        })
        .collect()
}

/// A scene's answer and the audit entry recording it: what `Store::scene_audited` is
/// handed to draft.
fn scene_entry(
    caller: &Principal,
    action: &str,
    parameters: serde_json::Value,
    justification: serde_json::Value,
    found: SceneFound,
) -> (AuditDraft, Vec<SceneMatchOut>) {
    let matches = answer_of(found);
    let entry = draft(
        caller,
        action,
        parameters,
        Some(justification),
        disclosed(&matches),
        matches.len() as i64,
    );
    (entry, matches)
}

/// Subject ids in the order the answer gives them, each once.
fn disclosed(matches: &[SceneMatchOut]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    matches
        .iter()
        .filter(|m| seen.insert(m.subject_id.clone()))
        .map(|m| m.subject_id.clone())
        .collect()
}

fn scene_parameters(s: &SceneQuery) -> serde_json::Value {
    json!({
        "lat": s.center.lat, "lon": s.center.lon, "radius_m": s.radius_m,
        "from": time::rfc3339(s.from_us), "to": time::rfc3339(s.to_us),
    })
}

/// Which tagged subjects came near a point during a window (SPEC §4).
#[utoipa::path(post, path = "/v1/queries/crime-scene", tag = "queries", request_body = CrimeSceneIn,
    security(("bearer" = [])),
    responses((status = 200, body = CrimeSceneOut), problems::Restricted, problems::JsonBody))]
#[tracing::instrument(skip_all, fields(audit_id = tracing::field::Empty, matches = tracing::field::Empty))]
async fn crime_scene(
    State(state): State<AppState>,
    caller: Principal,
    JsonBody(body): JsonBody<CrimeSceneIn>,
) -> Result<Json<CrimeSceneOut>, ApiError> {
    caller.require(&[Role::Analyst])?;
    let justification = body.justification.validate()?;
    let s = scene(body.lat, body.lon, body.radius_m, &body.from, &body.to)?;
    let cfg = query_config(&state)?;
    let cover = cover_of(&s.query)?;
    let (matches, rec) = state
        .store
        .scene_audited(&cover, &s.query, &cfg, |found| {
            scene_entry(
                &caller,
                "query.crime_scene",
                scene_parameters(&s.query),
                justification,
                found,
            )
        })
        .await?;
    let span = tracing::Span::current();
    span.record("audit_id", rec.id);
    span.record("matches", matches.len());
    Ok(Json(CrimeSceneOut {
        matches,
        audit_id: rec.id,
    }))
}

// ---------------------------------------------------------------- crime-match

/// One crime: `from` not after `to`, at most 31 days apart (else 422).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CrimeIn {
    /// Not blank.
    #[serde(rename = "ref")]
    #[schema(min_length = 1, pattern = r"\S")]
    pub crime_ref: String,
    #[schema(minimum = -90.0, maximum = 90.0)]
    pub lat: f64,
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub lon: f64,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    pub category: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CrimeMatchIn {
    #[schema(max_items = 1000)]
    pub crimes: Vec<CrimeIn>,
    /// Metres, at most 10 km.
    #[schema(exclusive_minimum = 0.0, maximum = 10000.0)]
    pub radius_m: f64,
    pub justification: Justification,
}

/// Query parameters of the `text/csv` form, all required with it (else 422); ignored with a
/// JSON body.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CrimeCsvParams {
    /// Metres, at most 10 km.
    #[param(exclusive_minimum = 0.0, maximum = 10000.0)]
    pub radius_m: Option<f64>,
    #[param(min_length = 1, max_length = 4000, pattern = r"\S")]
    pub crime_ref: Option<String>,
    #[param(min_length = 1, max_length = 4000, pattern = r"\S")]
    pub legal_basis: Option<String>,
    #[param(min_length = 1, max_length = 4000, pattern = r"\S")]
    pub reason: Option<String>,
}

impl CrimeCsvParams {
    /// 422 if a parameter is given but invalid, whatever the body: a JSON body does not use
    /// them, but a client that sends them wrong has made a mistake worth telling.
    fn check_given(&self) -> Result<(), ApiError> {
        if let Some(r) = self.radius_m {
            check_radius(r)?;
        }
        for (name, v) in [
            ("crime_ref", &self.crime_ref),
            ("legal_basis", &self.legal_basis),
            ("reason", &self.reason),
        ] {
            if let Some(v) = v {
                check_text(name, v)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CrimeResult {
    #[serde(rename = "ref")]
    pub crime_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// CSV only: the row's line number in the file (the header is line 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub matches: Vec<SceneMatchOut>,
    pub audit_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RowErrorOut {
    pub line: u64,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CrimeMatchOut {
    pub results: Vec<CrimeResult>,
    /// CSV rows that could not be used (the others are still answered).
    pub errors: Vec<RowErrorOut>,
}

struct Crime {
    crime_ref: String,
    category: Option<String>,
    line: Option<u64>,
    scene: SceneQuery,
}

/// Matches a batch of crimes against the stored tracks, one audited query per crime
/// (SPEC §2). JSON body, or `text/csv` (`ref,lat,lon,from,to[,category]` or the
/// data.police.uk street-level layout) with the radius and justification as query parameters.
#[utoipa::path(post, path = "/v1/queries/crime-match", tag = "queries", params(CrimeCsvParams),
    request_body(content(
        (CrimeMatchIn = "application/json"),
        (String = "text/csv")
    )),
    security(("bearer" = [])),
    responses((status = 200, body = CrimeMatchOut), problems::Restricted, problems::Params,
              (status = 413, response = problems::PayloadTooLarge)))]
#[tracing::instrument(skip_all, fields(crimes = tracing::field::Empty))]
async fn crime_match(
    State(state): State<AppState>,
    caller: Principal,
    headers: HeaderMap,
    Query(params): Query<CrimeCsvParams>,
    body: Bytes,
) -> Result<Json<CrimeMatchOut>, ApiError> {
    caller.require(&[Role::Analyst])?;
    params.check_given()?;
    let is_csv = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/csv"));
    let (crimes, radius_m, justification, errors) = if is_csv {
        csv_crimes(&params, &body)?
    } else {
        json_crimes(&body)?
    };
    if crimes.len() > MAX_CRIMES {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_CRIMES} crimes per request"
        )));
    }
    tracing::Span::current().record("crimes", crimes.len());
    let cfg = query_config(&state)?;
    let mut results = Vec::with_capacity(crimes.len());
    // One transaction per crime: each is its own audited query, and SQLite's write lock is
    // held for one crime at a time, not the whole batch.
    for c in crimes {
        let cover = cover_of(&c.scene)?;
        let mut parameters = scene_parameters(&c.scene);
        parameters["ref"] = json!(c.crime_ref);
        parameters["radius_m"] = json!(radius_m);
        if let Some(cat) = &c.category {
            parameters["category"] = json!(cat);
        }
        let (matches, rec) = state
            .store
            .scene_audited(&cover, &c.scene, &cfg, |found| {
                scene_entry(
                    &caller,
                    "query.crime_match",
                    parameters,
                    justification.clone(),
                    found,
                )
            })
            .await?;
        results.push(CrimeResult {
            crime_ref: c.crime_ref,
            category: c.category,
            line: c.line,
            matches,
            audit_id: rec.id,
        });
    }
    Ok(Json(CrimeMatchOut { results, errors }))
}

type Batch = (Vec<Crime>, f64, serde_json::Value, Vec<RowErrorOut>);

fn json_crimes(body: &[u8]) -> Result<Batch, ApiError> {
    let input: CrimeMatchIn = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Unprocessable(e.to_string()),
        _ => ApiError::BadRequest(format!("the body is not valid JSON: {e}")),
    })?;
    super::refuse_nul_in_json(body)?;
    let justification = input.justification.validate()?;
    // checked here too, not only per crime: an empty batch must not pass with any radius
    check_radius(input.radius_m)?;
    let mut crimes = Vec::with_capacity(input.crimes.len());
    for (i, c) in input.crimes.into_iter().enumerate() {
        if c.crime_ref.trim().is_empty() {
            return Err(ApiError::Unprocessable(format!(
                "crimes[{i}].ref must not be empty"
            )));
        }
        let s = scene(c.lat, c.lon, input.radius_m, &c.from, &c.to)
            .map_err(|e| ApiError::Unprocessable(format!("crimes[{i}]: {e}")))?;
        crimes.push(Crime {
            crime_ref: c.crime_ref,
            category: c.category,
            line: None,
            scene: s.query,
        });
    }
    Ok((crimes, input.radius_m, justification, Vec::new()))
}

fn csv_crimes(params: &CrimeCsvParams, body: &[u8]) -> Result<Batch, ApiError> {
    if body.contains(&0) {
        return Err(ApiError::Unprocessable(format!(
            "the CSV: {}",
            crate::error::NUL_REFUSED
        )));
    }
    let missing =
        |name: &str| ApiError::Unprocessable(format!("query parameter {name} is required"));
    let justification = Justification {
        crime_ref: params
            .crime_ref
            .clone()
            .ok_or_else(|| missing("crime_ref"))?,
        legal_basis: params
            .legal_basis
            .clone()
            .ok_or_else(|| missing("legal_basis"))?,
        reason: params.reason.clone().ok_or_else(|| missing("reason"))?,
    }
    .validate()?;
    let radius_m = params.radius_m.ok_or_else(|| missing("radius_m"))?;
    check_radius(radius_m)?;
    let parsed = parse_crime_csv(body).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let mut errors: Vec<RowErrorOut> = parsed
        .errors
        .iter()
        .map(|e| RowErrorOut {
            line: e.line,
            error: e.kind.to_string(),
        })
        .collect();
    let mut crimes = Vec::with_capacity(parsed.crimes.len());
    for c in parsed.crimes {
        // the parser checked the ranges; a window too long for one query is ours to refuse
        if let Err(e) = window(c.from_us, c.to_us) {
            errors.push(RowErrorOut {
                line: c.line,
                error: e.to_string(),
            });
            continue;
        }
        crimes.push(Crime {
            crime_ref: c.crime_ref,
            category: c.category,
            line: Some(c.line),
            scene: SceneQuery {
                center: c.pos,
                radius_m,
                from_us: c.from_us,
                to_us: c.to_us,
            },
        });
    }
    errors.sort_by_key(|e| e.line);
    Ok((crimes, radius_m, justification, errors))
}
