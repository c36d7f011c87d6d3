//! Probes and metrics: `/healthz` (alive), `/readyz` (ready to serve), `/metrics`.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::state::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `draining` or `not_ready`.
    pub status: &'static str,
    /// Readiness: the pinned models this replica serves.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Readiness: the pinned models it cannot serve yet (`name:alias` or id).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// Liveness: the process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        models: Vec::new(),
        missing: Vec::new(),
    })
}

/// Readiness: every model this replica must serve (the default model and `--pin`) is
/// loaded and warm, and the replica is not draining. The registry is not consulted, and the
/// cache of other models plays no part: a replica keeps serving what it has pinned while
/// Redis is away, and training or eviction never makes it unready. `models` lists the
/// pinned models that are missing, when any are.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Health),
              (status = 503, description = "Not ready (loading, a pinned model missing, or draining)", body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let missing: Vec<String> = state
        .catalog
        .missing_pins()
        .iter()
        .map(ToString::to_string)
        .collect();
    let models = state.catalog.pinned_names();
    let (status, word) = if state.lifecycle.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if state.lifecycle.is_ready() && missing.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (
        status,
        Json(Health {
            status: word,
            models,
            missing,
        }),
    )
        .into_response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let drift = state.catalog.drift_metrics().map_err(anyhow::Error::from)?;
    let text = state.metrics.render_with(drift)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Probes and metrics (exempt from quotas and rate limits).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}
