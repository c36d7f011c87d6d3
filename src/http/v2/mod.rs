//! The Open Inference Protocol (KServe V2, REST), as KServe, Seldon MLServer and Triton speak
//! it: clients such as `tritonclient[http]` work against ml-api unchanged. Every registry model
//! is served by name (its `latest`), `name:alias` or id, and by registry version. Inference
//! goes through the same validation, metrics, rate limiting and tracing as `/predict`.

pub mod routes;
pub mod scan;
pub mod tensor;

use std::{marker::PhantomData, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use self::tensor::{InferRequest, InferResponse};
use super::{predict::encoded, state::AppState};
use crate::{
    http::error::ApiError,
    model::{decode::from_json_bytes, ModelSchema},
    registry::{ListQuery, ModelStatus},
    serving::{
        catalog::ModelRef,
        load::LoadedModel,
        tensors::{self, TensorError},
        ScoreError,
    },
    spans,
};

/// Errors as the protocol shapes them: `{"error": "..."}`, 400 for a bad request.
pub struct V2Error(ApiError);

impl From<ApiError> for V2Error {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let status = match self.0.status() {
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                StatusCode::BAD_REQUEST
            }
            other => other,
        };
        let mut message = message(&self.0);
        if status.is_server_error() {
            // Logged (and sent to Sentry) by the usual path.
            let _ = self.0.into_response();
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                message = "internal error".to_owned();
            }
        }
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// An error's message as the protocol reports it: a validation error lists each field.
pub fn message(error: &ApiError) -> String {
    let message = error.to_string();
    match error {
        ApiError::Validation { details, .. } => {
            let fields: Vec<String> = details
                .iter()
                .map(|d| format!("{}: {}", d.field, d.message))
                .collect();
            format!("{message} ({})", fields.join("; "))
        }
        _ => message,
    }
}

/// The raw request body, with the body-limit rejection in the protocol's error shape.
pub struct Body(Bytes);

/// The binary-data extension's `Inference-Header-Content-Length`, if sent: the one header
/// inference reads (axum's `HeaderMap` extractor would copy them all).
pub struct HeaderLength(Option<HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for HeaderLength {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get("inference-header-content-length")
                .cloned(),
        ))
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = V2Error;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = super::extract::body_limit(&req);
        super::extract::refuse_declared_length(req.headers(), limit)?;
        Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(|rejection| V2Error(super::extract::body_error(&rejection, limit)))
    }
}

fn bad_request(message: impl Into<String>) -> V2Error {
    V2Error(ApiError::MalformedJson(message.into()))
}

/// Server metadata.
#[utoipa::path(get, path = "/v2", tag = "v2", responses((status = 200, description = "name, version, extensions")))]
pub async fn server_metadata() -> Json<Value> {
    Json(
        json!({"name": "ml-api", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
}

/// Server liveness.
#[utoipa::path(get, path = "/v2/health/live", tag = "v2", responses((status = 200, description = "`{\"live\": true}`")))]
pub async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

/// Server readiness (as `/readyz`).
#[utoipa::path(get, path = "/v2/health/ready", tag = "v2",
    responses((status = 200, description = "`{\"ready\": true}`"), (status = 503, description = "`{\"ready\": false}`")))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.lifecycle.is_ready() && state.catalog.missing_pins().is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready}))).into_response()
}

/// The model a V2 path names: `name` (its `latest`), `name:alias` or an id, optionally at a
/// registry version. Loaded models are found without asking the registry.
pub async fn resolve(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<LoadedModel>, ApiError> {
    let Some(version) = version else {
        return Ok(state.catalog.get(&ModelRef::parse(name)).await?);
    };
    let not_found = || ApiError::NotFound(format!("model `{name}` version `{version}` not found"));
    let number: u64 = version.parse().map_err(|_| not_found())?;
    if let Some(model) = state.catalog.cached_version(name, number) {
        return Ok(model);
    }
    let query = ListQuery {
        name: Some(name.to_owned()),
        limit: usize::MAX,
        ..ListQuery::default()
    };
    let page = state.catalog.registry().list(&query).await?;
    let record = page
        .items
        .into_iter()
        .find(|r| r.version == number)
        .ok_or_else(not_found)?;
    Ok(state.catalog.get_id(record.id).await?)
}

/// One model of the repository index, in Triton's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct IndexEntry {
    pub name: String,
    /// The registry version.
    pub version: String,
    /// `READY`, or `UNAVAILABLE` (queued, training, failed).
    pub state: &'static str,
    /// Why a model is unavailable; empty when ready.
    pub reason: String,
}

/// Every model of the registry, by name then version; only the ready ones when `ready_only`.
pub async fn repository_index(
    state: &AppState,
    ready_only: bool,
) -> Result<Vec<IndexEntry>, ApiError> {
    let query = ListQuery {
        limit: usize::MAX,
        ..ListQuery::default()
    };
    let mut records = state.catalog.registry().list(&query).await?.items;
    records.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(records
        .into_iter()
        .filter(|record| !ready_only || record.status == ModelStatus::Ready)
        .map(|record| {
            let (state, reason) = match record.status {
                ModelStatus::Ready => ("READY", String::new()),
                ModelStatus::Queued => ("UNAVAILABLE", "queued for training".to_owned()),
                ModelStatus::Training => ("UNAVAILABLE", "training".to_owned()),
                ModelStatus::Failed => (
                    "UNAVAILABLE",
                    record.error.unwrap_or_else(|| "training failed".to_owned()),
                ),
            };
            IndexEntry {
                name: record.name,
                version: record.version.to_string(),
                state,
                reason,
            }
        })
        .collect())
}

/// What a repository index request may ask (tritonclient sends an empty body).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct IndexRequest {
    /// Only the models ready for inferencing.
    #[serde(default)]
    pub ready: bool,
}

/// Triton's repository index: every registry model with its version and state.
#[utoipa::path(post, path = "/v2/repository/index", tag = "v2",
    request_body(content = Option<IndexRequest>, content_type = "application/json",
        description = "Optional: an empty body lists every model"),
    responses((status = 200, body = [IndexEntry]), (status = 400, description = "`{\"error\": ...}`"),
              (status = 503, description = "Registry unavailable")))]
pub async fn repository_index_route(
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Vec<IndexEntry>>, V2Error> {
    let request: IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        // serde would also take a JSON array for the struct: only an object is a request.
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(object)) => serde_json::from_value(Value::Object(object)),
            Ok(other) => Err(serde::de::Error::custom(format!(
                "expected a JSON object, got {}",
                crate::model::decode::kind(&other)
            ))),
            Err(error) => Err(error),
        }
        .map_err(|e| bad_request(format!("invalid repository index request: {e}")))?
    };
    Ok(Json(repository_index(&state, request.ready).await?))
}

fn metadata(model: &LoadedModel) -> Value {
    let inputs: Vec<Value> = model
        .schema
        .fields
        .iter()
        .map(|f| json!({"name": f.name, "datatype": tensor::datatype(f.element), "shape": [-1, 1]}))
        .collect();
    let width = if model.schema.labels.is_empty() {
        -1
    } else {
        model.schema.labels.len() as i64
    };
    json!({
        "name": model.name,
        "versions": [model.version],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": [{"name": model.schema.output, "datatype": "FP32", "shape": [-1, width]}],
    })
}

/// Model metadata: inputs and outputs with datatype and shape, from the ONNX graph.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "v2", params(("name" = String, Path)),
    responses((status = 200, description = "Model metadata"), (status = 404, description = "`{\"error\": ...}`")))]
pub async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, V2Error> {
    let model = resolve(&state, &name, None).await?;
    Ok(Json(metadata(&model)))
}

/// Model metadata at a registry version.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "v2",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "Model metadata"), (status = 404, description = "`{\"error\": ...}`")))]
pub async fn model_version_metadata(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, V2Error> {
    let model = resolve(&state, &name, Some(&version)).await?;
    Ok(Json(metadata(&model)))
}

/// Model readiness.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "v2", params(("name" = String, Path)),
    responses((status = 200, description = "`{\"name\", \"ready\": true}`"), (status = 404, description = "`{\"error\": ...}`")))]
pub async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, V2Error> {
    let model = resolve(&state, &name, None).await?;
    Ok(Json(json!({"name": model.name, "ready": true})))
}

/// Model readiness at a registry version.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "v2",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "`{\"name\", \"ready\": true}`"), (status = 404, description = "`{\"error\": ...}`")))]
pub async fn model_version_ready(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, V2Error> {
    let model = resolve(&state, &name, Some(&version)).await?;
    Ok(Json(json!({"name": model.name, "ready": true})))
}

/// Inference with V2 tensors (JSON, or the binary-data extension).
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "v2", params(("name" = String, Path)),
    request_body(content = InferRequest, content_type = "application/json"),
    responses((status = 200, description = "The outputs; with the binary-data extension (`binary_data_output` or an output's `binary_data`), `application/octet-stream`: the JSON header (its length in `Inference-Header-Content-Length`), then the raw little-endian values",
                content((InferResponse = "application/json"), ("application/octet-stream"))),
              (status = 400, description = "`{\"error\": ...}`"),
              (status = 404, description = "`{\"error\": ...}`"), (status = 413, description = "Too large"),
              (status = 429, description = "Rate limited"), (status = 503, description = "Unavailable")))]
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    HeaderLength(header_length): HeaderLength,
    Body(body): Body,
) -> Result<Response, V2Error> {
    let model = resolve(&state, &name, None).await?;
    let via = ModelRef::parse(&name);
    run(&state, &model, Some(&via), header_length.as_ref(), &body).await
}

/// Inference at a registry version.
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "v2",
    params(("name" = String, Path), ("version" = String, Path)),
    request_body(content = InferRequest, content_type = "application/json"),
    responses((status = 200, description = "The outputs; with the binary-data extension (`binary_data_output` or an output's `binary_data`), `application/octet-stream`: the JSON header (its length in `Inference-Header-Content-Length`), then the raw little-endian values",
                content((InferResponse = "application/json"), ("application/octet-stream"))),
              (status = 400, description = "`{\"error\": ...}`"),
              (status = 404, description = "`{\"error\": ...}`"), (status = 413, description = "Too large"),
              (status = 429, description = "Rate limited"), (status = 503, description = "Unavailable")))]
pub async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    HeaderLength(header_length): HeaderLength,
    Body(body): Body,
) -> Result<Response, V2Error> {
    let model = resolve(&state, &name, Some(&version)).await?;
    run(&state, &model, None, header_length.as_ref(), &body).await
}

async fn run(
    state: &AppState,
    model: &LoadedModel,
    via: Option<&ModelRef>,
    header_length: Option<&HeaderValue>,
    body: &[u8],
) -> Result<Response, V2Error> {
    let header_length = header_length.map(HeaderValue::as_bytes);
    let Parsed {
        request,
        binary,
        binary_output,
    } = parse_request(body, header_length, &model.name, &model.schema)?;
    let tensors = request.tensors(binary);
    let scorer = &state.scorer;
    let decoded = scorer
        .decode_tensors(model, &tensors)
        .map_err(tensor_error)?;
    let records = || tensors::records(&tensors);
    let scores = scorer
        .score_decoded(model, decoded, via, &records)
        .await
        .map_err(ApiError::from)?
        .scores;
    let (output, raw) = tensor::output(&model.schema.output, scores, binary_output);
    let response = InferResponse {
        model_name: &model.name,
        model_version: &model.version,
        id: request.id,
        outputs: vec![output],
    };
    Ok(match raw {
        None => encoded(|| response),
        Some(values) => with_binary_data(&response, &values),
    })
}

/// A response under the binary-data extension: the JSON `header`, then the output's `raw`
/// values as little-endian bytes, with the header's length in `Inference-Header-Content-Length`.
fn with_binary_data(header: &InferResponse<'_>, raw: &[f32]) -> Response {
    let _span = spans::stage(|| tracing::info_span!("encode")).entered();
    let mut body = Vec::with_capacity(256 + size_of_val(raw));
    if let Err(error) = serde_json::to_writer(&mut body, header) {
        // Unreachable for this struct (string keys, no floats in binary mode): a 500, never a panic.
        let error = anyhow::Error::new(error).context("encoding the V2 response");
        return ApiError::Internal(error).into_response();
    }
    let header_length = body.len();
    tensors::extend_raw_fp32(&mut body, raw);
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/octet-stream"),
            ),
            (
                axum::http::HeaderName::from_static("inference-header-content-length"),
                axum::http::HeaderValue::from(header_length),
            ),
        ],
        body,
    )
        .into_response()
}

/// A tensor the model cannot take, in the protocol's error shape.
fn tensor_error(error: TensorError) -> V2Error {
    match error {
        TensorError::Malformed(message) => bad_request(message),
        TensorError::Invalid(errors) => V2Error(ScoreError::Invalid(errors).into()),
    }
}

/// An inference request as read from its body.
pub struct Parsed<'b> {
    pub request: InferRequest<'b>,
    /// The bytes after the JSON header (empty without the binary-data extension).
    pub binary: &'b [u8],
    /// Whether the output is to be sent as raw bytes after a JSON header.
    pub binary_output: bool,
}

/// Parses an inference request (JSON, or the binary-data extension when
/// `Inference-Header-Content-Length` is `header_length`) for a model with `schema`. Pure (the
/// `v2` fuzz target calls it).
pub fn parse_request<'b>(
    body: &'b [u8],
    header_length: Option<&[u8]>,
    model_name: &str,
    schema: &ModelSchema,
) -> Result<Parsed<'b>, V2Error> {
    // Binary-data extension: a JSON header of this length, then the tensors' raw bytes.
    let (json_part, binary) = match header_length {
        Some(value) => {
            let length: usize = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad_request("Inference-Header-Content-Length is not a number"))?;
            body.split_at_checked(length)
                .ok_or_else(|| bad_request("Inference-Header-Content-Length exceeds the body"))?
        }
        None => (body, &[][..]),
    };
    // The common shape by the fast path; anything else, and every error, by serde_json.
    let fast = std::str::from_utf8(json_part).ok().and_then(scan::request);
    let request: InferRequest<'b> = match fast {
        Some(request) => request,
        None => from_json_bytes(json_part, PhantomData)
            .map_err(|e| bad_request(format!("invalid inference request: {e}")))?,
    };
    if let Some(outputs) = &request.outputs {
        if let Some(unknown) = outputs.iter().find(|o| o.name != schema.output) {
            return Err(bad_request(format!(
                "unknown output `{}`; model `{model_name}` produces `{}`",
                unknown.name, schema.output
            )));
        }
    }
    let binary_output = request.binary_output(&schema.output).map_err(bad_request)?;
    Ok(Parsed {
        request,
        binary,
        binary_output,
    })
}

#[cfg(test)]
mod tests;
