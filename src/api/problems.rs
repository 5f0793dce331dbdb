//! The error responses of the OpenAPI document, declared once.
//!
//! Every error the API answers is an [`ApiError`](crate::error::ApiError) rendered as
//! `application/problem+json` with the [`Problem`] schema (or an axum rejection rewritten to
//! the same shape at the edge). Each status is one reusable response component here, and the
//! statuses that go together are grouped, so an operation's annotation lists its success and
//! then the groups and the few statuses of its own, e.g.
//! `responses((status = 201, body = Subject), Restricted, JsonBody, (status = 409, response = Conflict))`.
//!
//! `tests/openapi.rs` checks that every 4xx/5xx response of the served document is
//! problem+json, and `tests/schemathesis/run.sh` that the statuses occur where declared.

use utoipa::{IntoResponses, ToResponse};

use crate::error::Problem;

/// The media type of every error body (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The request cannot be read: malformed JSON or form, a path or query parameter of the
/// wrong type, an unparseable ping batch.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct BadRequest(pub Problem);

/// No bearer token, or an unknown one.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
pub struct Unauthorized(pub Problem);

/// The token's role may not do this.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Forbidden(pub Problem);

/// No such resource, or one outside an officer's caseload (its existence is not revealed).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

/// The resource already exists, or is in a state that does not allow this change.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Conflict(pub Problem);

/// The body is larger than the limit (or, for pings, holds more than `--max-batch` items).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(pub Problem);

/// The body is not of a media type this operation takes.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(pub Problem);

/// The request is well-formed but its content is invalid (wrong shape, out of range, a rule
/// across fields, a reference to something that does not exist); `detail` says which.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Unprocessable(pub Problem);

/// Over a limit: the ingest queue is full, or too many unknown tokens this second.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "seconds to wait")))]
pub struct TooManyRequests(pub Problem);

/// The store is unreachable (or, for `/readyz`, the engine has not loaded yet).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "seconds to wait")))]
pub struct Unavailable(pub Problem);

/// The errors of an operation any signed-in user may call.
#[derive(IntoResponses)]
pub enum Authenticated {
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    #[response(status = 429)]
    TooManyRequests(#[ref_response] TooManyRequests),
    #[response(status = 503)]
    Unavailable(#[ref_response] Unavailable),
}

/// The errors of an operation only some roles may call.
#[derive(IntoResponses)]
pub enum Restricted {
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    #[response(status = 403)]
    Forbidden(#[ref_response] Forbidden),
    #[response(status = 429)]
    TooManyRequests(#[ref_response] TooManyRequests),
    #[response(status = 503)]
    Unavailable(#[ref_response] Unavailable),
}

/// The errors of reading a JSON body ([`super::JsonBody`]).
#[derive(IntoResponses)]
pub enum JsonBody {
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    #[response(status = 413)]
    PayloadTooLarge(#[ref_response] PayloadTooLarge),
    #[response(status = 415)]
    UnsupportedMediaType(#[ref_response] UnsupportedMediaType),
    #[response(status = 422)]
    Unprocessable(#[ref_response] Unprocessable),
}

/// The errors of typed path or query parameters: 400 when one does not parse as its type,
/// 422 when it parses but is out of range.
#[derive(IntoResponses)]
pub enum Params {
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    #[response(status = 422)]
    Unprocessable(#[ref_response] Unprocessable),
}
