//! Who is calling: the bearer-token extractor and role checks (SPEC §2 preamble).
//!
//! No token or an unknown one → 401; a known token whose role may not do this → 403. Caseload
//! checks (→ 404) live with the resources they protect.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use crate::error::ApiError;
use crate::model::Role;
pub use crate::registry::Principal;

/// Resolves a presented token to its principal: the in-memory registry first, then the
/// store (a token created by another node or before a cache refresh).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let hash = crate::token::hash(token);
    if let Some(p) = state.registry.principal(&hash) {
        return Ok(p);
    }
    match state.store.user_by_token(&hash).await? {
        Some(u) => {
            state.registry.add_user(&u);
            state
                .registry
                .principal(&hash)
                .ok_or(ApiError::Unauthorized)
        }
        None => Err(ApiError::Unauthorized),
    }
}

/// The token of an `Authorization: Bearer …` header, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let p = authenticate(state, token).await?;
        tracing::Span::current().record("user", p.user_id);
        Ok(p)
    }
}

impl Principal {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
