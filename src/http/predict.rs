//! `POST /predict`: the Flask prediction API's endpoint, on the default model.
//!
//! Request: one record (a JSON object) or a batch (an array of records).
//! Response: `{"predictions": [[...scores...], ...]}`, one row per record, exactly as the
//! Flask prediction API answered; `?top_k=N` adds the N best labels per record.

use axum::{
    extract::State,
    http::{header, HeaderName, HeaderValue},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    extract::{malformed_first, ApiQuery, JsonBytes},
    state::AppState,
};
use crate::{
    http::error::{ApiError, ErrorBody, FieldError},
    model::Scores,
    serving::{CatalogError, LoadedModel, ModelRef},
    spans,
};
use utoipa_axum::{router::OpenApiRouter, routes};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PredictQuery {
    /// Also return, per record, the `top_k` labels with the highest scores (1..=labels).
    #[param(minimum = 1)]
    pub top_k: Option<usize>,
}

/// A record, or an array of records; the fields are the model's inputs (see `PredictRecord`).
#[derive(Debug, ToSchema)]
#[schema(value_type = Object)]
pub struct PredictRequest(pub serde_json::Value);

#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse {
    /// One row of scores per record, in the order of the model's labels. For the bundled
    /// `santander` model: 22 product probabilities that sum to 1.
    pub predictions: Vec<Vec<f64>>,
    /// With `?top_k=N`: the N highest-scoring labels per record, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Vec<Vec<RankedLabel>>>,
}

impl PredictResponse {
    /// The Flask prediction API's shape: each float32 score widened to float64, so it prints as the Flask API
    /// printed it; with `top_k`, the `k` best of `labels` per record.
    pub fn from_scores(scores: &Scores, top_k: Option<(usize, &[String])>) -> Self {
        Self {
            predictions: scores
                .iter_rows()
                .map(|row| row.iter().map(|&p| f64::from(p)).collect())
                .collect(),
            top_k: top_k.map(|(k, labels)| ranked(scores, labels, k)),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RankedLabel {
    pub label: String,
    pub probability: f64,
}

/// Score one customer record (or a batch) with the default model.
#[utoipa::path(
    post,
    path = "/predict",
    tag = "predict",
    params(PredictQuery),
    request_body(content = PredictRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Scores per record", body = PredictResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 422, description = "Fields break the model's schema", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
        (status = 503, description = "Overloaded, draining or no model", body = ErrorBody),
    )
)]
pub async fn predict(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PredictQuery>,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let model = state
        .catalog
        .get(&state.default_model)
        .await
        .map_err(|error| {
            let error = match error {
                CatalogError::NotFound(_) => ApiError::Unavailable(format!(
                    "default model `{}` is not available",
                    state.default_model
                )),
                other => ApiError::from(other),
            };
            malformed_first(&body, error)
        })?;
    respond(&state, &model, Some(&state.default_model), &query, &body).await
}

/// Scores `body` with `model` (reached through `via`) and answers in the Flask prediction API's shape
/// (`/predict`, and `POST /models/{id}/predict`).
pub async fn respond(
    state: &AppState,
    model: &LoadedModel,
    via: Option<&ModelRef>,
    query: &PredictQuery,
    body: &[u8],
) -> Result<Response, ApiError> {
    let top_k =
        validated_top_k(query.top_k, model).map_err(|error| malformed_first(body, error))?;
    let scored = state.scorer.score_json(model, body, via).await?;
    let mut response = encoded(|| {
        PredictResponse::from_scores(
            &scored.scores,
            top_k.map(|k| (k, model.schema.labels.as_slice())),
        )
    });
    model_headers(&mut response, model);
    Ok(response)
}

/// The JSON response `build` makes, built and serialised in the request's `encode` span.
/// Written into one buffer sized for a row of scores (axum's `Json` starts at 128 bytes and
/// grows, copying, about twice for `/predict`'s answer).
pub fn encoded<T: Serialize>(build: impl FnOnce() -> T) -> Response {
    const ROOM: usize = 1024;
    let _span = spans::stage(|| tracing::info_span!("encode")).entered();
    let mut body = Vec::with_capacity(ROOM);
    match serde_json::to_writer(&mut body, &build()) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(error) => ApiError::Internal(error.into()).into_response(),
    }
}

fn validated_top_k(top_k: Option<usize>, model: &LoadedModel) -> Result<Option<usize>, ApiError> {
    let Some(k) = top_k else { return Ok(None) };
    let max = model.schema.labels.len();
    if max == 0 {
        return Err(ApiError::validation(vec![FieldError::new(
            "top_k",
            "unsupported",
            format!("model `{}` has no labels in its card", model.name),
        )]));
    }
    if k == 0 || k > max {
        return Err(ApiError::validation(vec![FieldError::new(
            "top_k",
            "range",
            format!("{k} is out of range: must be between 1 and {max}"),
        )]));
    }
    Ok(Some(k))
}

fn ranked(scores: &Scores, labels: &[String], k: usize) -> Vec<Vec<RankedLabel>> {
    scores
        .iter_rows()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            order
                .into_iter()
                .take(k)
                .map(|i| RankedLabel {
                    label: labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
                    probability: f64::from(row[i]),
                })
                .collect()
        })
        .collect()
}

/// `X-Model-Name` / `X-Model-Version`: which model answered, without changing the Flask prediction API's body.
pub fn model_headers(response: &mut Response, model: &LoadedModel) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-model-name", &model.name),
        ("x-model-version", &model.version),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// `POST /predict`, declared once for the router and the OpenAPI document.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(predict))
}
