//! The Open Inference Protocol's REST routes, declared once for the router and the OpenAPI
//! document.

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::{state::AppState, v2};

/// Per-model routes and the repository index: under quotas and rate limits, like every API
/// route.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(v2::model_metadata))
        .routes(routes!(v2::model_ready))
        .routes(routes!(v2::infer))
        .routes(routes!(v2::model_version_metadata))
        .routes(routes!(v2::model_version_ready))
        .routes(routes!(v2::infer_version))
        .routes(routes!(v2::repository_index_route))
}

/// Server metadata and health: probes, exempt.
pub fn operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(v2::server_metadata))
        .routes(routes!(v2::live))
        .routes(routes!(v2::ready))
}
