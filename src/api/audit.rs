//! The audit log (SPEC §2 "Audit", §5 "Audit integrity"), for auditors only: the entries,
//! newest first with filters, and the chain check.
//!
//! Reading the log is not itself logged: it discloses who looked at whom and why, not where
//! anyone was, and an entry per page read would bury the consultations the log exists for.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::queries::parse_time;
use super::{problems, AppState, List};
use crate::audit::chain::{AuditRecord, VerifyReport};
use crate::error::ApiError;
use crate::model::{time, Role, SubjectId};
use crate::store::AuditFilter;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list))
        .route("/v1/audit/verify", get(verify))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries at or after this instant (RFC 3339).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Entries at or before this instant (RFC 3339).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// User id of the actor.
    pub actor: Option<i64>,
    /// Entries that disclosed this subject.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub subject_id: Option<String>,
    /// Default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    #[param(pattern = r"^-?[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// User id (0: the service itself).
    pub actor: i64,
    pub actor_name: String,
    pub role: String,
    pub action: String,
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub justification: Option<serde_json::Value>,
    /// Subjects whose data was disclosed.
    pub subject_ids: Vec<String>,
    pub result_count: i64,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        AuditEntry {
            id: r.id,
            at: time::rfc3339(r.at_us),
            actor: r.actor,
            actor_name: r.actor_name,
            role: r.role,
            action: r.action,
            parameters: r.parameters,
            justification: r.justification,
            subject_ids: r.subject_ids,
            result_count: r.result_count,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// The result of walking the chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyOut {
    pub ok: bool,
    pub entries: u64,
    /// Hash of the last entry of the intact prefix (the head when `ok`).
    pub head_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_id: Option<i64>,
    /// What is wrong at `first_bad_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub problem: Option<serde_json::Value>,
}

impl From<VerifyReport> for VerifyOut {
    fn from(r: VerifyReport) -> Self {
        VerifyOut {
            ok: r.ok,
            entries: r.entries,
            head_hash: r.head_hash,
            first_bad_id: r.first_bad_id,
            problem: r.problem.and_then(|p| serde_json::to_value(p).ok()),
        }
    }
}

/// Audit entries, newest first (auditor).
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = List<AuditEntry>), problems::Restricted, problems::Params))]
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    caller: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<Json<List<AuditEntry>>, ApiError> {
    caller.require(&[Role::Auditor])?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit {limit} is not in [1, {MAX_LIMIT}]"
        )));
    }
    let before_id = match q.cursor.as_deref() {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::Unprocessable("bad cursor".into()))?,
        ),
        None => None,
    };
    let subject_id = match q.subject_id {
        Some(s) => Some(
            SubjectId::parse(s)
                .map_err(|e| ApiError::Unprocessable(e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let filter = AuditFilter {
        from: q
            .from
            .as_deref()
            .map(|v| parse_time("from", v))
            .transpose()?,
        to: q.to.as_deref().map(|v| parse_time("to", v)).transpose()?,
        actor: q.actor,
        subject_id,
        before_id,
        limit: limit + 1,
    };
    let mut rows = state.store.audit_page(&filter).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(List {
        items: rows.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
    }))
}

/// Walks the whole hash chain (auditor).
#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verify_audit", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = VerifyOut), problems::Restricted))]
#[tracing::instrument(skip_all)]
async fn verify(
    State(state): State<AppState>,
    caller: Principal,
) -> Result<Json<VerifyOut>, ApiError> {
    caller.require(&[Role::Auditor])?;
    let report = state.store.verify_audit().await?;
    if !report.ok {
        tracing::warn!(first_bad_id = ?report.first_bad_id, "audit chain broken");
    }
    Ok(Json(report.into()))
}
