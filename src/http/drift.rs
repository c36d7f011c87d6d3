//! `GET /models/{model}/drift`: this replica's drift window for a model (PSI per feature and
//! for the predicted label against the model's contract). The same figures are exported as
//! `ml_api_feature_drift_psi` and `ml_api_prediction_drift_psi` for Prometheus, which
//! aggregates replicas.

use axum::{
    extract::{Path, State},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::state::AppState;
use crate::{
    drift::DriftReport, http::error::ApiError, http::error::ErrorBody, serving::catalog::ModelRef,
};
use utoipa_axum::{router::OpenApiRouter, routes};

#[derive(Debug, Serialize, ToSchema)]
pub struct DriftResponse {
    pub model: String,
    pub version: String,
    /// This replica's window; every replica keeps its own.
    #[serde(flatten)]
    pub report: DriftReport,
}

/// Feature and prediction drift of a model on this replica (PSI over the sliding window).
#[utoipa::path(get, path = "/models/{model}/drift", tag = "models",
    params(("model" = String, Path, description = "Model id, `name` or `name:alias`")),
    responses((status = 200, body = DriftResponse),
              (status = 404, body = ErrorBody),
              (status = 409, description = "The model has no feature contract", body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn drift(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<DriftResponse>, ApiError> {
    let model = state.catalog.get(&ModelRef::parse(&model)).await?;
    let monitor = model.drift.as_ref().ok_or_else(|| {
        ApiError::Conflict(format!(
            "model `{}` has no feature contract, so its drift is not measured",
            model.name
        ))
    })?;
    Ok(Json(DriftResponse {
        model: model.name.clone(),
        version: model.version.clone(),
        report: monitor.report(),
    }))
}

/// `GET /models/{model}/drift`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(drift))
}
