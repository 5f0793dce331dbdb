//! Subjects: the monitored people (SPEC §1, §2 Administration). Admins create them; an
//! officer sees only the subjects on their caseload — any other subject is a 404, so its
//! existence is not revealed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::{problems, AppState, JsonBody, List};
use crate::error::ApiError;
use crate::model::{time, Role, SubjectId};
use crate::store::{NewSubject, SubjectRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/subjects", post(create).get(list))
        .route("/v1/subjects/{id}", get(show))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SubjectIn {
    /// The programme's reference: 1–64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "GTO-00018")]
    pub id: String,
    pub display_name: Option<String>,
    pub borough: Option<String>,
    /// The officer (user id of role `officer`, else 422) whose caseload this subject is on.
    #[serde(default, deserialize_with = "super::integer::optional")]
    pub officer_id: Option<i64>,
    /// IANA time zone (else 422); default `Europe/London`.
    #[schema(example = "Europe/London")]
    pub timezone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Subject {
    pub id: String,
    pub display_name: Option<String>,
    pub borough: Option<String>,
    pub officer_id: Option<i64>,
    pub timezone: String,
    pub created_at: String,
}

impl From<SubjectRow> for Subject {
    fn from(r: SubjectRow) -> Self {
        Subject {
            id: r.id,
            display_name: r.display_name,
            borough: r.borough,
            officer_id: r.officer_id,
            timezone: r.timezone,
            created_at: time::rfc3339(r.created_at),
        }
    }
}

/// Creates a subject.
#[utoipa::path(post, path = "/v1/subjects", operation_id = "create_subject", tag = "administration", request_body = SubjectIn,
    security(("bearer" = [])),
    responses((status = 201, body = Subject), problems::Restricted, problems::JsonBody,
              (status = 409, response = problems::Conflict)))]
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    caller: Principal,
    JsonBody(body): JsonBody<SubjectIn>,
) -> Result<(StatusCode, Json<Subject>), ApiError> {
    caller.require(&[Role::Admin])?;
    let id = SubjectId::parse(body.id).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let timezone = body.timezone.unwrap_or_else(|| "Europe/London".into());
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ApiError::Unprocessable(format!(
            "unknown IANA time zone {timezone:?}"
        )));
    }
    if let Some(officer) = body.officer_id {
        let is_officer = state
            .store
            .users()
            .await?
            .iter()
            .any(|u| u.id == officer && u.role == Role::Officer.as_str());
        if !is_officer {
            return Err(ApiError::Unprocessable(format!(
                "officer_id {officer} is not an officer"
            )));
        }
    }
    let row = state
        .store
        .create_subject(&NewSubject {
            id: id.to_string(),
            display_name: body.display_name,
            borough: body.borough,
            officer_id: body.officer_id,
            timezone,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Loads a subject the caller may see: admins any, officers their caseload; otherwise 404
/// for officers (existence not revealed) and 403 for other roles.
pub async fn visible_subject(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<SubjectRow, ApiError> {
    caller.require(&[Role::Admin, Role::Officer])?;
    // no stored subject has an id that does not parse; asking the store for one would only
    // cost a round trip (and a PostgreSQL error for an id holding U+0000)
    if SubjectId::parse(id.to_owned()).is_err() {
        return Err(ApiError::not_found("subject"));
    }
    let row = state
        .store
        .subject(id)
        .await?
        .ok_or_else(|| ApiError::not_found("subject"))?;
    if caller.is_admin() || row.officer_id == Some(caller.user_id) {
        Ok(row)
    } else {
        Err(ApiError::not_found("subject"))
    }
}

/// One subject (admin, or the officer whose caseload it is on).
#[utoipa::path(get, path = "/v1/subjects/{id}", operation_id = "show_subject", tag = "administration",
    params(("id" = String, Path, description = "subject id", example = "GTO-00017")), security(("bearer" = [])),
    responses((status = 200, body = Subject), problems::Restricted, (status = 404, response = problems::NotFound)))]
#[tracing::instrument(skip_all)]
async fn show(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<Subject>, ApiError> {
    Ok(Json(visible_subject(&state, &caller, &id).await?.into()))
}

/// The subjects the caller may see (admin: all; officer: their caseload).
#[utoipa::path(get, path = "/v1/subjects", operation_id = "list_subjects", tag = "administration", security(("bearer" = [])),
    responses((status = 200, body = List<Subject>), problems::Restricted))]
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    caller: Principal,
) -> Result<Json<List<Subject>>, ApiError> {
    caller.require(&[Role::Admin, Role::Officer])?;
    let items = state
        .store
        .subjects()
        .await?
        .into_iter()
        .rev()
        .filter(|s| caller.is_admin() || s.officer_id == Some(caller.user_id))
        .map(Subject::from)
        .collect();
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}
