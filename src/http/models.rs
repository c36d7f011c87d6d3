//! `/models`: the Celery training API (train, poll-and-predict by query string, delete), plus
//! listing, records, batch prediction, aliases and ONNX download.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use axum::{extract::DefaultBodyLimit, Extension};
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt},
    routes,
};

use super::{
    auth::Admin,
    extract::{malformed_first, ApiQuery, JsonBody, JsonBytes},
    predict::{self, PredictQuery},
    state::AppState,
};
use crate::{
    datasets::load::DatasetJob,
    http::error::{ApiError, ErrorBody, FieldError},
    jobs::Job,
    model::ModelCard,
    onnx_import::{self, Reference},
    registry::{ListQuery, ModelRecord, ModelStatus, Page},
    serving::catalog::ModelRef,
    serving::load::ModelSource,
    training::TrainingRequest,
};

const DEFAULT_NAME: &str = "model";

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub model_id: Uuid,
    pub name: String,
    pub version: u64,
    pub status: ModelStatus,
}

/// Train a model (the Celery training API's `POST /models`): answers at once with the new model's id while a
/// worker trains it.
#[utoipa::path(post, path = "/models", tag = "models",
    request_body(content = Object, description = "The Celery training API's body (`columns`, `features`, `classes`, `penalty`, `solver`), or `records`/`csv` with `target`; scikit-learn parameters beside them; optional `name`.", content_type = "application/json"),
    responses((status = 201, description = "Queued for training", body = Created),
              (status = 400, description = "Malformed JSON", body = ErrorBody),
              (status = 413, description = "Body over the size limit", body = ErrorBody),
              (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
              (status = 429, description = "Rate limit exceeded", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, description = "Invalid training request", body = ErrorBody),
              (status = 503, description = "Registry unavailable", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let body = match body {
        Ok(JsonBody(body)) => body,
        Err(ApiError::PayloadTooLarge { .. }) => {
            return Err(ApiError::TooLarge(format!(
                "the training body is larger than the {}-byte limit (--max-training-body-bytes, \
                 ML_API_MAX_TRAINING_BODY_BYTES); upload large data with POST /datasets and \
                 train with `dataset_id`",
                state.datasets.max_training_body_bytes
            )))
        }
        Err(error) => return Err(error),
    };
    let Value::Object(mut fields) = body else {
        return Err(ApiError::validation(vec![FieldError::new(
            "body",
            "type",
            "expected a JSON object",
        )]));
    };
    let name = model_name(fields.remove("name"))?;
    let job = match fields.remove("dataset_id") {
        Some(id) => dataset_job(&state, &id, fields).await?,
        None => {
            let request: TrainingRequest =
                serde_json::from_value(Value::Object(fields)).map_err(|e| {
                    ApiError::validation(vec![FieldError::new("body", "type", e.to_string())])
                })?;
            let limits = state.datasets.limits;
            // Validation walks every cell: off the async threads.
            let job = tokio::task::spawn_blocking(move || request.validate_with(&limits))
                .await
                .map_err(anyhow::Error::from)?
                .map_err(ApiError::validation)?;
            Job::Inline(Box::new(job))
        }
    };

    let mut record = ModelRecord::new(&name, "trained", ModelStatus::Queued);
    record.columns = job.feature_names().to_vec();
    record.params = serde_json::to_value(job.params()).unwrap_or_default();
    let registry = state.catalog.registry();
    let record = registry.create(record, None).await?;
    if let Err(error) = state.jobs.submit(record.id, &job).await {
        let _ = registry.delete(record.id).await;
        return Err(error.into());
    }
    state.job_metrics.jobs.with_label_values(&["queued"]).inc();
    Ok(created(record))
}

/// `POST /models {"dataset_id", "target", "features"?, ...options}`: checked against the data
/// set's record here (columns, types, missing cells); the worker reads the rows.
async fn dataset_job(
    state: &AppState,
    id: &Value,
    mut fields: Map<String, Value>,
) -> Result<Job, ApiError> {
    let not_found = |id: &str| ApiError::NotFound(format!("data set `{id}` not found"));
    let text = id.as_str().ok_or_else(|| {
        ApiError::validation(vec![FieldError::new(
            "dataset_id",
            "type",
            "expected a data set id (a string from POST /datasets)",
        )])
    })?;
    let uuid: Uuid = text.parse().map_err(|_| not_found(text))?;
    let dataset = state
        .datasets
        .records
        .get(uuid)
        .await?
        .ok_or_else(|| not_found(text))?;
    let target = fields.remove("target");
    let features = fields.remove("features");
    let request: TrainingRequest = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::validation(vec![FieldError::new("body", "type", e.to_string())]))?;
    let job = DatasetJob::new(
        dataset,
        target.as_ref(),
        features.as_ref(),
        request.params_only(),
    )
    .map_err(ApiError::validation)?;
    Ok(Job::Dataset(Box::new(job)))
}

/// `201 Created` with the new model's id, name, version and status, and its `Location`.
fn created(record: ModelRecord) -> Response {
    let location = HeaderValue::from_str(&format!("/models/{}", record.id));
    let body = Created {
        model_id: record.id,
        name: record.name,
        version: record.version,
        status: record.status,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn model_name(value: Option<Value>) -> Result<String, ApiError> {
    let name = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_NAME.to_owned()),
        Some(Value::String(name)) => name,
        Some(_) => {
            return Err(ApiError::validation(vec![FieldError::new(
                "name",
                "type",
                "expected a string",
            )]))
        }
    };
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.parse::<Uuid>().is_err();
    if !valid {
        return Err(ApiError::validation(vec![FieldError::new(
            "name",
            "format",
            "1 to 64 letters, digits, `-` or `_`",
        )]));
    }
    Ok(name)
}

async fn record_of(state: &AppState, id: &str) -> Result<ModelRecord, ApiError> {
    let not_found = || ApiError::NotFound(format!("model `{id}` not found"));
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    state
        .catalog
        .registry()
        .get(id)
        .await?
        .ok_or_else(not_found)
}

/// A model's record (no query), or the Celery training API's prediction from query parameters:
/// `{"model_status": "training"}` until it is ready, then `{"predicted_class": ..., "probabilities": {...}}`.
#[utoipa::path(get, path = "/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses((status = 200, description = "The record; with query parameters, the Celery training API's prediction or training status", body = ModelRecord),
              (status = 404, body = ErrorBody), (status = 422, description = "A feature is missing or not a number", body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    // A prediction from a model this replica has loaded never waits on the registry (a
    // loaded model is ready, and stays so until it is deleted).
    let loaded = (!query.is_empty())
        .then(|| id.parse().ok().and_then(|id| state.catalog.cached_id(id)))
        .flatten()
        .and_then(|model| model.record.clone());
    let record = match loaded {
        Some(record) => record,
        None => record_of(&state, &id).await?,
    };
    if query.is_empty() {
        return Ok(Json(record).into_response());
    }
    match record.status {
        ModelStatus::Queued | ModelStatus::Training => {
            let mut body = json!({"model_status": "training", "status": record.status});
            if let Some(progress) = record.progress {
                body["progress"] = json!(progress);
            }
            return Ok(Json(body).into_response());
        }
        ModelStatus::Failed => {
            return Ok(
                Json(json!({"model_status": "failed", "error": record.error})).into_response(),
            );
        }
        ModelStatus::Ready => {}
    }
    let model = state.catalog.get_id(record.id).await?;
    // The Celery training API read the features from the query string in `columns` order; values are checked
    // against the model's schema like any request (a non-number is a 422 naming it).
    let wanted: Vec<&str> = model
        .schema
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    let features: Map<String, Value> = query
        .into_iter()
        .filter(|(key, _)| wanted.contains(&key.as_str()))
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    let scored = state
        .scorer
        .score(&model, &Value::Object(features), None)
        .await?;
    let row: Vec<f64> = scored
        .scores
        .iter_rows()
        .next()
        .unwrap_or(&[])
        .iter()
        .map(|&p| f64::from(p))
        .collect();
    let best = row
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let probabilities: Map<String, Value> = record
        .labels
        .iter()
        .zip(&row)
        .map(|(label, p)| (label.clone(), json!(p)))
        .collect();
    let predicted = record
        .class_values
        .get(best)
        .cloned()
        .unwrap_or(Value::Null);
    let mut response =
        Json(json!({"predicted_class": predicted, "probabilities": probabilities})).into_response();
    predict::model_headers(&mut response, &model);
    Ok(response)
}

/// Delete a model, its ONNX bytes and its aliases (the Celery training API's `DELETE /models/{id}`).
#[utoipa::path(delete, path = "/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses((status = 200, description = "`{\"status\": \"model deleted\"}`"), (status = 404, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = record_of(&state, &id).await?;
    if !state.catalog.registry().delete(record.id).await? {
        return Err(ApiError::NotFound(format!("model `{id}` not found")));
    }
    Ok(Json(json!({"status": "model deleted"})).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only models of this name.
    pub name: Option<String>,
    /// Only models in this status: `queued`, `training`, `ready` or `failed`.
    #[param(value_type = Option<ModelStatus>)]
    pub status: Option<String>,
    #[param(minimum = 0)]
    pub offset: Option<usize>,
    /// Page size, 1..=500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// List models, newest first.
#[utoipa::path(get, path = "/models", tag = "models", params(ListParams),
    responses((status = 200, description = "One page of records", body = Page<ModelRecord>), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Page<ModelRecord>>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| {
            ApiError::validation(vec![FieldError::new("status", "category", e)])
        })?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation(vec![FieldError::new(
            "limit",
            "range",
            "must be between 1 and 500",
        )]));
    }
    let query = ListQuery {
        name: params.name,
        status,
        offset: params.offset.unwrap_or(0),
        limit,
    };
    Ok(Json(state.catalog.registry().list(&query).await?))
}

/// Score one record or a batch with a model named by id, `name` (its `latest`) or `name:alias`.
#[utoipa::path(post, path = "/models/{model}/predict", tag = "models",
    params(("model" = String, Path, description = "Model id, `name` or `name:alias`"), PredictQuery),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = predict::PredictResponse), (status = 404, body = ErrorBody),
              (status = 400, description = "Malformed JSON", body = ErrorBody),
              (status = 413, description = "Body over the size limit", body = ErrorBody),
              (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
              (status = 429, description = "Rate limit exceeded", body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn predict_with(
    State(state): State<AppState>,
    Path(model): Path<String>,
    ApiQuery(query): ApiQuery<PredictQuery>,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let reference = ModelRef::parse(&model);
    let model = state
        .catalog
        .get(&reference)
        .await
        .map_err(|error| malformed_first(&body, error.into()))?;
    predict::respond(&state, &model, Some(&reference), &query, &body).await
}

/// Download a model's ONNX graph.
#[utoipa::path(get, path = "/models/{id}/onnx", tag = "models",
    params(("id" = String, Path)),
    responses((status = 200, description = "The ONNX bytes", content_type = "application/octet-stream"), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn onnx(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = record_of(&state, &id).await?;
    let bytes = state
        .catalog
        .registry()
        .onnx(record.id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(
                format!("model `{id}` has no ONNX graph yet ({:?})", record.status).to_lowercase(),
            )
        })?;
    let disposition = format!(
        "attachment; filename=\"{}-v{}.onnx\"",
        record.name, record.version
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// Bring your own ONNX model: `multipart/form-data` with a `model` part (the `.onnx` file), an
/// optional `card` part (JSON model card), an optional `name` part and an optional `reference`
/// part (`{"inputs": [records], "outputs": [[scores]], "tolerance": 1e-4}`).
///
/// Before ONNX Runtime sees the file it is decoded and checked: opsets ONNX Runtime 1.31.1
/// implements, standard `ai.onnx` / `ai.onnx.ml` operators only, no external data, at most
/// 50,000 nodes. A `ZipMap` output (scikit-learn's list of maps) is rewritten into its float
/// `[N, K]` probability tensor, and its class labels become the card's `labels` (and `output`)
/// when the card gives none. The model is then loaded and warmed up (on its card's example),
/// and the reference records, when sent, are scored and compared. A refused upload is a 422
/// naming the part (`model`, `card`, `reference`) and the reason (`format`, `opset`,
/// `operator`, `external_data`, `size`, `unservable`, `mismatch`), and is never stored.
#[utoipa::path(post, path = "/models/upload", tag = "models",
    request_body(content = String, description = "multipart/form-data: `model` (ONNX file), `card` (JSON, optional), `name` (optional), `reference` (JSON `{\"inputs\": [records], \"outputs\": [[number]], \"tolerance\": number}`, optional; default tolerance 1e-4, absolute)", content_type = "multipart/form-data"),
    responses((status = 201, description = "Stored and ready", body = Created),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 400, description = "Malformed multipart body", body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, description = "Not a model ml-api accepts or can serve, or its outputs differ from the reference (`details`: the part, the reason and, for `mismatch`, the largest difference with its record and column)", body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    _admin: Admin,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    use axum::extract::FromRequest;
    super::extract::refuse_declared_length(request.headers(), state.max_upload_bytes)?;
    let multipart = axum::extract::Multipart::from_request(request, &state)
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            _ => ApiError::MalformedJson(format!(
                "expected multipart/form-data: {}",
                rejection.body_text()
            )),
        })?;
    let upload = read_upload(multipart, state.max_upload_bytes, state.max_batch_records).await?;
    let mut card: ModelCard = match &upload.card {
        Some(text) => serde_json::from_slice(text).map_err(|e| {
            ApiError::validation(vec![FieldError::new("card", "format", e.to_string())])
        })?,
        None => ModelCard::default(),
    };
    let name = match &upload.name {
        Some(name) => model_name(Some(Value::String(name.clone())))?,
        None => model_name(card.name.clone().map(Value::String))?,
    };
    let bytes = upload.model.clone().ok_or_else(|| {
        ApiError::validation(vec![FieldError::new(
            "model",
            "missing",
            "the `model` part (an ONNX file) is required",
        )])
    })?;
    // Decoding is CPU work on up to `max_upload_bytes`: off the async threads.
    let imported = tokio::task::spawn_blocking(move || {
        onnx_import::inspect(bytes.to_vec(), &onnx_import::Limits::default())
    })
    .await
    .map_err(anyhow::Error::from)??;
    let class_values = onnx_import::label_card(&mut card, &imported.zipmaps);
    let source = ModelSource {
        name: name.clone(),
        card: card.clone(),
        bytes: imported.bytes.clone(),
    };
    let unservable = |message: String| {
        ApiError::validation(vec![FieldError::new("model", "unservable", message)])
    };
    // Session creation runs on a blocking thread (a panic there is an error, not a crash);
    // a load that never finishes is answered instead of holding the request forever.
    let loaded = tokio::time::timeout(UPLOAD_LOAD_TIMEOUT, state.catalog.check(source))
        .await
        .map_err(|_| {
            unservable(format!(
                "ONNX Runtime did not load and warm up the model within {UPLOAD_LOAD_TIMEOUT:?}"
            ))
        })?
        .map_err(|error| unservable(format!("{error:#}")))?;
    if let Some(reference) = &upload.reference {
        reference
            .check(&loaded)
            .await
            .map_err(ApiError::validation)?;
        // No contract in the card: the reference records are the sample it is profiled from.
        if card.contract.is_none() {
            let sample = Value::Array(
                reference
                    .inputs
                    .iter()
                    .cloned()
                    .map(Value::Object)
                    .collect(),
            );
            let contract = loaded.profile(&sample).await.map_err(|error| {
                ApiError::validation(vec![FieldError::new(
                    "reference",
                    "unservable",
                    error.to_string(),
                )])
            })?;
            card.contract = Some(contract);
        }
    }
    let mut record = ModelRecord::new(&name, "uploaded", ModelStatus::Ready);
    record.labels = loaded.schema.labels.clone();
    record.class_values = match class_values {
        Some(values) => values,
        None => record.labels.iter().cloned().map(Value::String).collect(),
    };
    record.columns = loaded
        .schema
        .fields
        .iter()
        .map(|f| f.name.clone())
        .collect();
    record.sha256 = Some(loaded.sha256.clone());
    record.size_bytes = Some(imported.bytes.len() as u64);
    record.card = Some(card);
    let registry = state.catalog.registry();
    let record = registry.create(record, Some(imported.bytes.into())).await?;
    registry
        .set_alias(&record.name, crate::serving::catalog::LATEST, record.id)
        .await?;
    Ok(created(record))
}

/// How long an upload may take to load and warm up before it is refused.
const UPLOAD_LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The parts of an upload, read and (for `reference`) parsed.
#[derive(Default)]
pub struct Upload {
    pub model: Option<bytes::Bytes>,
    pub card: Option<bytes::Bytes>,
    pub name: Option<String>,
    pub reference: Option<Reference>,
}

pub async fn read_upload(
    mut multipart: axum::extract::Multipart,
    limit: usize,
    max_records: usize,
) -> Result<Upload, ApiError> {
    let mut upload = Upload::default();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(e, limit))?;
        let Some(field) = field else { break };
        let part = field.name().unwrap_or_default().to_owned();
        let data = field.bytes().await.map_err(|e| multipart_error(e, limit))?;
        match part.as_str() {
            "model" => upload.model = Some(data),
            "card" => upload.card = Some(data),
            "name" => upload.name = Some(String::from_utf8_lossy(&data).trim().to_owned()),
            "reference" => {
                let reference = Reference::parse(&data, max_records)
                    .map_err(|error| ApiError::validation(vec![error]))?;
                upload.reference = Some(reference);
            }
            other => {
                return Err(ApiError::validation(vec![FieldError::new(
                    other,
                    "unknown",
                    "expected the parts `model`, `card`, `name` and `reference`",
                )]))
            }
        }
    }
    Ok(upload)
}

fn multipart_error(error: axum::extract::multipart::MultipartError, limit: usize) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    match super::server::BodyReadTimeout::find(&error) {
        Some(timeout) => ApiError::BodyTimeout(timeout),
        None => ApiError::MalformedJson(format!("malformed multipart body: {}", error.body_text())),
    }
}

/// The registry's models: training (`POST /models`, with its own body limit: the in-body
/// training shapes), listing, reading, deleting, predicting by model, uploads (their own
/// limit) and the exported ONNX file.
pub fn routes(max_training_body_bytes: usize, max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(
            routes!(create).layer(
                tower::ServiceBuilder::new()
                    // The limit a declared `Content-Length` is checked against before the body
                    // is read, and the limit reading it.
                    .layer(Extension(super::extract::BodyLimit(
                        max_training_body_bytes,
                    )))
                    .layer(DefaultBodyLimit::max(max_training_body_bytes)),
            ),
        )
        .routes(routes!(list))
        .routes(routes!(get, delete))
        .routes(routes!(predict_with))
        .routes(routes!(onnx))
        .routes(routes!(upload).layer(DefaultBodyLimit::max(max_upload_bytes)))
}
