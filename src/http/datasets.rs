//! `/datasets`: upload a data set (streamed to the dataset store while it is parsed), list,
//! read and delete dataset records. Training from one is `POST /models {"dataset_id"}`.

use std::{
    collections::HashSet,
    io::{BufRead, Read},
};

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use uuid::Uuid;

use axum::extract::DefaultBodyLimit;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt},
    routes,
};

use super::{auth::Admin, extract::ApiQuery, state::AppState};
use crate::{
    datasets::{
        load,
        scan::{self, parquet_file},
        store::Upload,
        DatasetError, DatasetRecord, Format, StoredObject,
    },
    http::error::{ApiError, ErrorBody},
    registry::now_ms,
};

const CSV_TYPES: &[&str] = &["text/csv", "application/csv"];
const PARQUET_TYPES: &[&str] = &["application/vnd.apache.parquet", "application/x-parquet"];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// A label for people (optional).
    pub name: Option<String>,
    /// CSV: comma-separated columns read as text (categories) even when they hold numbers.
    pub categorical: Option<String>,
}

/// Upload a data set: CSV (`text/csv`, optionally `Content-Encoding: gzip`) with a header
/// line, or Parquet (`application/vnd.apache.parquet`). The body is streamed to the dataset
/// store while it is read; types are inferred (numbers; anything else is a string, i.e. a
/// category; empty cells and `NA`/`NaN`/`null` are missing). Of a CSV the store keeps its
/// parsed cells, once, as a Parquet file (`columnar`, also `location`), which training reads;
/// the CSV text is not kept. A body over
/// `--max-dataset-bytes` gets 413 (a gzip body decompressing past it, 422 `too_large`), a row
/// that breaks the CSV or a column's type gets 422 naming its line and column, and each
/// leaves nothing stored.
#[utoipa::path(post, path = "/datasets", tag = "datasets", params(UploadParams),
    request_body(content = String, description = "CSV text (header line first) or a Parquet file", content_type = "text/csv"),
    responses((status = 201, description = "Stored: `dataset_id`, `rows`, `columns` (`name`, `type`, `missing`), `bytes`", body = DatasetRecord),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 400, description = "The body ended early", body = ErrorBody),
              (status = 413, description = "Larger than --max-dataset-bytes", body = ErrorBody),
              (status = 415, description = "Not CSV or Parquet, or an encoding other than gzip", body = ErrorBody),
              (status = 422, description = "Not a readable data set (`details` names the line and column)", body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(params): ApiQuery<UploadParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let (format, gzip) = kind(request.headers())?;
    let categorical: HashSet<String> = params
        .categorical
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let id = Uuid::now_v7();
    let datasets = &state.datasets;
    let body = request.into_body();
    let (location, rows, columns, bytes, columnar) = match format {
        Format::Csv => {
            // What the store keeps of a CSV: the Parquet file of its parsed cells (see
            // `datasets::columnar`), written while the body is read. Training reads it; the
            // CSV text itself is not kept.
            let location = format!("{id}.columns.parquet");
            let copy_upload = datasets.store.upload(&location).await?;
            let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(8);
            let (copy_sender, copy_receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
            let max_bytes = datasets.max_bytes;
            let parser = tokio::task::spawn_blocking(move || {
                let reader = ChannelReader::new(receiver);
                // The CSV parser reads the body's chunks in place; a gzip body is inflated
                // into a buffer of its own.
                let reader: Box<dyn BufRead> = if gzip {
                    let decoder = flate2::bufread::MultiGzDecoder::new(reader);
                    Box::new(std::io::BufReader::with_capacity(
                        256 * 1024,
                        scan::Limited::new(decoder, max_bytes),
                    ))
                } else {
                    Box::new(reader)
                };
                let copy: Box<dyn std::io::Write + Send> =
                    Box::new(ChannelWriter::new(copy_sender));
                scan::summarize_csv(reader, &categorical, Some(copy))
            });
            let (streamed, copy_upload) = tokio::join!(
                stream(body, None, Some(sender), datasets.max_bytes),
                pump(copy_receiver, copy_upload)
            );
            let parsed = parser
                .await
                .map_err(|e| DatasetError::Internal(e.to_string()));
            match (streamed, parsed, copy_upload) {
                (Ok(bytes), Ok(Ok(summary)), Some(copy)) if summary.columnar => {
                    let size = copy.bytes();
                    copy.finish().await?;
                    let stored = StoredObject {
                        location: location.clone(),
                        bytes: size,
                    };
                    (location, summary.rows, summary.columns, bytes, Some(stored))
                }
                (streamed, parsed, copy) => {
                    if let Some(copy) = copy {
                        copy.abort().await;
                    }
                    return Err(match (streamed, parsed) {
                        (Err(error), _) => error,
                        (Ok(_), Ok(Err(error)) | Err(error)) => error.into(),
                        (Ok(_), Ok(Ok(_))) => DatasetError::Unavailable(
                            "the Parquet file of the CSV's cells could not be stored".to_owned(),
                        )
                        .into(),
                    });
                }
            }
        }
        Format::Parquet => {
            let location = format!("{id}.parquet");
            let mut upload = datasets.store.upload(&location).await?;
            let bytes = match stream(body, Some(&mut upload), None, datasets.max_bytes).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    upload.abort().await;
                    return Err(error);
                }
            };
            upload.finish().await?;
            match parquet_summary(&state, &location, bytes).await {
                Ok((rows, columns)) => (location, rows, columns, bytes, None),
                Err(error) => {
                    datasets.store.delete(&location).await?;
                    return Err(error.into());
                }
            }
        }
    };
    let record = DatasetRecord {
        dataset_id: id,
        name: params.name,
        format,
        gzip,
        rows,
        columns,
        bytes,
        location: location.clone(),
        columnar,
        created_at_ms: now_ms(),
    };
    if let Err(error) = datasets.records.create(&record).await {
        let _ = delete_objects(&state, &record).await;
        return Err(error.into());
    }
    let mut response = (StatusCode::CREATED, Json(&record)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/datasets/{id}")) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The content type and encoding: CSV (plain or gzip) or Parquet.
fn kind(headers: &HeaderMap) -> Result<(Format, bool), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let format = if CSV_TYPES.contains(&essence.as_str()) {
        Format::Csv
    } else if PARQUET_TYPES.contains(&essence.as_str()) {
        Format::Parquet
    } else {
        return Err(ApiError::MediaType(format!(
            "expected `Content-Type: text/csv` or `application/vnd.apache.parquet`, got `{essence}`"
        )));
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let gzip = match encoding.as_str() {
        "" | "identity" => false,
        "gzip" | "x-gzip" if format == Format::Csv => true,
        other => {
            return Err(ApiError::MediaType(format!(
                "`Content-Encoding: {other}` is not taken here; CSV may be sent with \
                 `Content-Encoding: gzip`, Parquet is sent as is"
            )))
        }
    };
    Ok((format, gzip))
}

/// Copies the body into `upload` and/or to the CSV parser, refusing it past `max` bytes;
/// the bytes read.
async fn stream(
    body: Body,
    mut upload: Option<&mut Upload>,
    parser: Option<tokio::sync::mpsc::Sender<Bytes>>,
    max: u64,
) -> Result<u64, ApiError> {
    let mut chunks = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| match super::server::BodyReadTimeout::find(&error) {
            Some(timeout) => ApiError::BodyTimeout(timeout),
            None => {
                ApiError::MalformedJson(format!("the body ended before it was complete: {error}"))
            }
        })?;
        total += chunk.len() as u64;
        if total > max {
            return Err(ApiError::TooLarge(format!(
                "the data set is larger than the {max}-byte limit (--max-dataset-bytes, \
                 ML_API_MAX_DATASET_BYTES)"
            )));
        }
        if let Some(upload) = upload.as_deref_mut() {
            upload.write(chunk.clone()).await?;
        }
        if let Some(sender) = &parser {
            if sender.send(chunk).await.is_err() {
                // The parser stopped at an error: it is the answer.
                break;
            }
        }
    }
    Ok(total)
}

/// Deletes a data set's objects (a missing one is not an error).
async fn delete_objects(state: &AppState, record: &DatasetRecord) -> Result<(), DatasetError> {
    state.datasets.store.delete(&record.location).await?;
    if let Some(copy) = record
        .columnar
        .as_ref()
        .filter(|copy| copy.location != record.location)
    {
        state.datasets.store.delete(&copy.location).await?;
    }
    Ok(())
}

async fn parquet_summary(
    state: &AppState,
    location: &str,
    size: u64,
) -> Result<(u64, Vec<crate::datasets::ColumnInfo>), DatasetError> {
    let metadata = load::parquet_metadata(&state.datasets.store, location, size).await?;
    parquet_file::summarize(&metadata)
}

/// Uploads what the CSV parser writes into the Parquet file of its cells. `None`: it could
/// not be stored (the upload then fails).
async fn pump(
    mut receiver: tokio::sync::mpsc::Receiver<Bytes>,
    mut upload: Upload,
) -> Option<Upload> {
    while let Some(chunk) = receiver.recv().await {
        if let Err(error) = upload.write(chunk).await {
            tracing::warn!(%error, "cannot store the Parquet copy of a CSV data set");
            upload.abort().await;
            return None;
        }
    }
    Some(upload)
}

/// The parser's side of the Parquet copy: its bytes, gathered into chunks of about 1 MiB and
/// sent to [`pump`], which hands them to the store as they are. Each byte is copied once
/// (a `BufWriter` in front of a copying writer, and the store's part buffer, had made three).
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Bytes>,
    chunk: BytesMut,
}

impl ChannelWriter {
    const CHUNK: usize = 1 << 20;

    fn new(sender: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        Self {
            sender,
            chunk: BytesMut::new(),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = self.chunk.split().freeze();
        self.sender
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the Parquet copy's upload stopped"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.chunk.is_empty() {
            self.chunk.reserve(Self::CHUNK.max(buf.len()));
        }
        self.chunk.extend_from_slice(buf);
        if self.chunk.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    /// Sends what is left, as `BufWriter` does (the Parquet writer flushes when it closes, so
    /// this only matters to a writer that did not). Waiting for room is only allowed off the
    /// runtime's threads; on one, a full channel drops the chunk (the copy then fails).
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            let _ = self.send();
        } else if !self.chunk.is_empty() {
            let _ = self.sender.try_send(self.chunk.split().freeze());
        }
    }
}

/// The body chunks, as a blocking reader (for the CSV parser's thread).
struct ChannelReader {
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(receiver: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut chunk = self.fill_buf()?;
        let n = chunk.read(buf)?;
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    /// The current chunk of the body (empty at its end).
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current.advance(amount.min(self.current.len()));
    }
}

async fn record_of(state: &AppState, id: &str) -> Result<DatasetRecord, ApiError> {
    let not_found = || ApiError::NotFound(format!("data set `{id}` not found"));
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    state.datasets.records.get(id).await?.ok_or_else(not_found)
}

/// List data sets, newest first.
#[utoipa::path(get, path = "/datasets", tag = "datasets",
    responses((status = 200, description = "`{\"datasets\": [record]}`"), (status = 503, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let all = state.datasets.records.list().await?;
    Ok(Json(json!({ "datasets": all })).into_response())
}

/// A data set's record.
#[utoipa::path(get, path = "/datasets/{id}", tag = "datasets",
    params(("id" = String, Path, description = "Data set id")),
    responses((status = 200, body = DatasetRecord), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DatasetRecord>, ApiError> {
    Ok(Json(record_of(&state, &id).await?))
}

/// Delete a data set: its record and its bytes. Models trained from it are kept.
#[utoipa::path(delete, path = "/datasets/{id}", tag = "datasets",
    params(("id" = String, Path, description = "Data set id")),
    responses((status = 200, description = "`{\"status\": \"dataset deleted\"}`"), (status = 404, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = record_of(&state, &id).await?;
    if !state.datasets.records.delete(record.dataset_id).await? {
        return Err(ApiError::NotFound(format!("data set `{id}` not found")));
    }
    delete_objects(&state, &record).await?;
    Ok(Json(json!({"status": "dataset deleted"})).into_response())
}

/// Data sets: uploads stream to storage (no body limit here: `--max-dataset-bytes` bounds
/// them), listing, reading, deleting.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create).layer(DefaultBodyLimit::disable()))
        .routes(routes!(list))
        .routes(routes!(get, delete))
}
