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

/// Unknown tokens looked up in the store per second, at most, across all clients. Tokens are
/// 256-bit random, so guessing is hopeless anyway; this bound keeps a flood of made-up tokens
/// from turning into a flood of database reads. Past it, unknown tokens get 429.
pub const MAX_UNKNOWN_TOKEN_LOOKUPS_PER_S: u32 = 200;

/// A fixed one-second window counter of store lookups for unknown tokens.
#[derive(Debug, Default)]
pub struct LookupThrottle {
    window: std::sync::Mutex<(Option<std::time::Instant>, u32)>,
}

impl LookupThrottle {
    /// Counts one lookup; false when this second's budget is spent.
    pub fn allow(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match w.0 {
            Some(start) if now.duration_since(start) < std::time::Duration::from_secs(1) => {
                w.1 += 1;
                w.1 <= MAX_UNKNOWN_TOKEN_LOOKUPS_PER_S
            }
            _ => {
                *w = (Some(now), 1);
                true
            }
        }
    }
}

/// Resolves a presented token to its principal: the in-memory registry first, then the
/// store (a token created by another node or before a cache refresh), within the
/// [`LookupThrottle`] budget.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let hash = crate::token::hash(token);
    if let Some(p) = state.registry.principal(&hash) {
        return Ok(p);
    }
    if !state.registry.throttle.allow() {
        tracing::warn!("unknown-token lookups over budget; answering 429");
        return Err(ApiError::TooManyRequests { retry_after_s: 1 });
    }
    // A revocation racing this read may have replaced the row after it was read: the read
    // is then repeated, so a revoked token is never cached (or let in) again.
    for _ in 0..3 {
        let seen = state.registry.revocations();
        match state.store.user_by_token(&hash).await? {
            Some(u) => {
                if state.registry.add_user_since(&u, seen) {
                    return state
                        .registry
                        .principal(&hash)
                        .ok_or(ApiError::Unauthorized);
                }
            }
            None => return Err(ApiError::Unauthorized),
        }
    }
    Err(ApiError::Unauthorized)
}

/// The token of an `Authorization: Bearer …` header, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_of(&parts.headers)
}

/// The token of an `Authorization: Bearer …` header among `headers`, if any.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
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
