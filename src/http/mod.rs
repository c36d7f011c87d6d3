//! The HTTP API: one function assembles every route and layer.

pub mod auth;
pub mod datasets;
pub mod drift;
pub mod error;
pub mod extract;
pub mod health;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod middleware;
pub mod models;
pub mod openapi;
pub mod predict;
pub mod quota;
pub mod rate_limit;
pub mod server;
pub mod state;
pub mod v2;

use axum::{
    body::Body,
    extract::DefaultBodyLimit,
    http::{Request, Response, StatusCode},
    response::IntoResponse,
    Extension, Router,
};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::ServeConfig;
use error::ApiError;
pub use state::{AppState, Lifecycle};

/// Builds the application: API routes (rate limited), probes and metrics (exempt), the
/// OpenAPI document with Swagger UI at `/docs`, and the layers every request passes through.
pub fn router(state: AppState, config: &ServeConfig) -> anyhow::Result<Router> {
    let sentry_enabled = sentry::Hub::current().client().is_some();
    // Each route is declared once, in its resource's module, for both the router and the
    // OpenAPI document (utoipa-axum).
    let mut api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(predict::routes())
        .merge(models::routes(
            state.datasets.max_training_body_bytes,
            config.http.max_upload_bytes,
        ))
        .merge(datasets::routes())
        .merge(drift::routes())
        .merge(lifecycle::routes())
        .merge(v2::routes::api())
        .merge(keys::routes());
    let per_client = match config.rate_limit.enabled {
        true => Some(rate_limit::layer(&config.rate_limit, &state.http_metrics)?),
        false => None,
    };
    api = api.route_layer(quota::QuotaLayer::new(
        state.quotas.clone(),
        &config.rate_limit.api_key_header,
        per_client,
    )?);
    let (routes, doc) = api
        .merge(health::routes())
        .merge(v2::routes::operations())
        .split_for_parts();
    let default_model = state.catalog.cached(&state.default_model);
    let docs = SwaggerUi::new("/docs").external_url_unchecked(
        "/openapi.json",
        openapi::document(doc, default_model.as_deref(), state.max_batch_records),
    );

    Ok(routes
        .merge(docs)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One `layer` call: axum wraps every route in a boxed service per call, so six calls
        // cost each request six boxed clones and six nested futures. The first layer listed
        // runs first.
        .layer(
            tower::ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                // Sentry's per-request hub and transaction only when a Sentry client is
                // configured (telemetry starts before the router is built): they cost a few
                // µs per request.
                .option_layer(sentry_enabled.then(
                    sentry::integrations::tower::NewSentryLayer::<Request<Body>>::new_from_top,
                ))
                .option_layer(sentry_enabled.then(|| {
                    sentry::integrations::tower::SentryHttpLayer::new().enable_transaction()
                }))
                .layer(middleware::ObserveLayer::new(
                    state.clone(),
                    middleware::AccessLog::new(&config.access_log),
                ))
                .layer(Extension(extract::BodyLimit(config.http.max_body_bytes)))
                .layer(DefaultBodyLimit::max(config.http.max_body_bytes)),
        )
        .with_state(state))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A panic in a handler is a bug: answer 500 in the usual shape (Sentry's panic handler
/// has already reported it) and keep serving.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let mut response =
        ApiError::Internal(anyhow::anyhow!("a request handler panicked")).into_response();
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
