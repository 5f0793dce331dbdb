//! The OpenAPI 3 document, generated from the handlers' annotations (utoipa).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::problems;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tagwatch", description = "GPS electronic monitoring: ingest, compliance alerts, audited lawful location queries"),
    modifiers(&Bearer),
    paths(
        super::users::create, super::users::revoke, super::console::me,
        super::subjects::create, super::subjects::show, super::subjects::list,
        super::devices::create, super::devices::reassign,
        super::pings::post_pings, super::pings::osmand, super::pings::osmand_post,
        super::zones::create, super::zones::list, super::zones::remove, super::zones::create_absence, super::zones::boroughs,
        super::alerts::list, super::alerts::show, super::alerts::acknowledge, super::alerts::close, super::alerts::stream,
        super::queries::location_at_time_query, super::queries::crime_scene, super::queries::crime_match,
        super::trails::trail,
        super::audit::list, super::audit::verify,
        super::ops::healthz, super::ops::readyz, super::ops::metrics, super::ops::openapi,
    ),
    components(
        schemas(crate::error::Problem, crate::model::Role, crate::model::FixSource, crate::model::PingIn),
        responses(
            problems::BadRequest, problems::Unauthorized, problems::Forbidden, problems::NotFound,
            problems::Conflict, problems::PayloadTooLarge, problems::UnsupportedMediaType,
            problems::Unprocessable, problems::TooManyRequests, problems::Unavailable,
        ),
    )
)]
struct ApiDoc;

/// The whole API's OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
