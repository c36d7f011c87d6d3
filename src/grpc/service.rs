//! `inference.GRPCInferenceService`: the Open Inference Protocol's calls, answered as V2 over
//! REST answers them (same model names, aliases, ids and versions, same validation, same
//! scorer), with tensors decoded straight into the model's typed columns.

use std::{future::Future, net::SocketAddr, time::Instant};

use bytes::Bytes;
use opentelemetry::propagation::Extractor;
use tonic::{metadata::MetadataMap, Code, Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    admission::Admission,
    metrics::{code_name, GrpcMetrics},
    proto::{
        grpc_inference_service_server::GrpcInferenceService,
        model_infer_response::InferOutputTensor, model_metadata_response::TensorMetadata,
        repository_index_response::ModelIndex, InferTensorContents, ModelInferRequest,
        ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest,
        ModelReadyResponse, RepositoryIndexRequest, RepositoryIndexResponse, ServerLiveRequest,
        ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
        ServerReadyResponse,
    },
    status::{invalid, status},
};
use crate::{
    http::{v2, AppState},
    serving::{
        tensors::{self, Elements, Tensor, TensorError},
        ModelRef, ScoreError,
    },
};

pub const SERVICE: &str = "inference.GRPCInferenceService";

pub struct Inference {
    state: AppState,
    admission: Admission,
    metrics: GrpcMetrics,
}

impl Inference {
    pub fn new(state: AppState, admission: Admission, metrics: GrpcMetrics) -> Self {
        Self {
            state,
            admission,
            metrics,
        }
    }

    /// Runs one call in its span (a child of the caller's `traceparent`), counted and timed
    /// by method and status code.
    async fn observe<T>(
        &self,
        method: &'static str,
        metadata: &MetadataMap,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let span = call_span(method, metadata);
        let result = work.instrument(span.clone()).await;
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        span.record("rpc.grpc.status_code", code_name(code));
        self.metrics.observe(method, code, started.elapsed());
        result.map(Response::new)
    }

    /// An admitted call (quotas, rate limit) on a model.
    async fn guarded<M, T, F>(
        &self,
        method: &'static str,
        request: Request<M>,
        work: impl FnOnce(M) -> F,
    ) -> Result<Response<T>, Status>
    where
        F: Future<Output = Result<T, Status>>,
    {
        let peer: Option<SocketAddr> = request.remote_addr();
        let (metadata, _, message) = request.into_parts();
        self.observe(method, &metadata, async {
            self.admission.admit(&metadata, peer).await?;
            // Boxed: a method's work (resolving the model, decoding, scoring) is a future of
            // kilobytes; inline, each layer around it would copy it whole on every call.
            Box::pin(work(message)).await
        })
        .await
    }

    async fn resolve(
        &self,
        name: &str,
        version: &str,
    ) -> Result<std::sync::Arc<crate::serving::LoadedModel>, Status> {
        let version = (!version.is_empty()).then_some(version);
        v2::resolve(&self.state, name, version)
            .await
            .map_err(status)
    }

    async fn infer(&self, request: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let model = self
            .resolve(&request.model_name, &request.model_version)
            .await?;
        let via = request
            .model_version
            .is_empty()
            .then(|| ModelRef::parse(&request.model_name));
        let schema = &model.schema;
        if let Some(unknown) = request.outputs.iter().find(|o| o.name != schema.output) {
            return Err(invalid(format!(
                "unknown output `{}`; model `{}` produces `{}`",
                unknown.name, model.name, schema.output
            )));
        }
        let raw = !request.raw_input_contents.is_empty();
        if raw && request.raw_input_contents.len() != request.inputs.len() {
            return Err(invalid(format!(
                "raw_input_contents has {} entries for {} inputs",
                request.raw_input_contents.len(),
                request.inputs.len()
            )));
        }
        if raw && request.inputs.iter().any(|input| input.contents.is_some()) {
            return Err(invalid(
                "inputs have `contents` although `raw_input_contents` is set",
            ));
        }
        let empty = InferTensorContents::default();
        let tensors: Vec<Tensor<'_>> = request
            .inputs
            .iter()
            .enumerate()
            .map(|(index, input)| Tensor {
                name: &input.name,
                datatype: &input.datatype,
                shape: &input.shape,
                elements: match request.raw_input_contents.get(index) {
                    Some(bytes) => Elements::Raw(bytes),
                    None => typed(&input.datatype, input.contents.as_ref().unwrap_or(&empty)),
                },
            })
            .collect();
        let scorer = &self.state.scorer;
        let decoded = scorer
            .decode_tensors(&model, &tensors)
            .map_err(|error| match error {
                TensorError::Malformed(message) => invalid(message),
                TensorError::Invalid(errors) => status(ScoreError::Invalid(errors).into()),
            })?;
        let records = || tensors::records(&tensors);
        let scores = scorer
            .score_decoded(&model, decoded, via.as_ref(), &records)
            .await
            .map_err(|error| status(error.into()))?
            .scores;
        let shape = vec![scores.rows as i64, scores.width as i64];
        let (contents, raw_output_contents) = if raw {
            let mut bytes = Vec::new();
            tensors::extend_raw_fp32(&mut bytes, &scores.values);
            (None, vec![Bytes::from(bytes)])
        } else {
            let contents = InferTensorContents {
                fp32_contents: scores.values,
                ..InferTensorContents::default()
            };
            (Some(contents), Vec::new())
        };
        Ok(ModelInferResponse {
            model_name: model.name.clone(),
            model_version: model.version.clone(),
            id: request.id,
            parameters: Default::default(),
            outputs: vec![InferOutputTensor {
                name: schema.output.clone(),
                datatype: "FP32".to_owned(),
                shape,
                parameters: Default::default(),
                contents,
            }],
            raw_output_contents,
        })
    }
}

/// The typed contents field of a datatype (an unknown datatype reads as empty raw bytes, which
/// the decoder refuses as unsupported once the input's name and shape are checked).
fn typed<'a>(datatype: &str, contents: &'a InferTensorContents) -> Elements<'a> {
    match datatype {
        "BOOL" => Elements::Bool(&contents.bool_contents),
        "INT8" | "INT16" | "INT32" => Elements::Int32(&contents.int_contents),
        "INT64" => Elements::Int64(&contents.int64_contents),
        "UINT8" | "UINT16" | "UINT32" => Elements::UInt32(&contents.uint_contents),
        "UINT64" => Elements::UInt64(&contents.uint64_contents),
        "FP32" => Elements::Fp32(&contents.fp32_contents),
        "FP64" => Elements::Fp64(&contents.fp64_contents),
        "BYTES" => Elements::Bytes(&contents.bytes_contents),
        _ => Elements::Raw(&[]),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        self.observe("ServerLive", request.metadata(), async {
            Ok(ServerLiveResponse { live: true })
        })
        .await
    }

    async fn server_ready(
        &self,
        request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        self.observe("ServerReady", request.metadata(), async {
            let ready =
                self.state.lifecycle.is_ready() && self.state.catalog.missing_pins().is_empty();
            Ok(ServerReadyResponse { ready })
        })
        .await
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        self.guarded("ModelReady", request, |request| async move {
            match self.resolve(&request.name, &request.version).await {
                Ok(_) => Ok(ModelReadyResponse { ready: true }),
                // As over REST (404): a model this server cannot serve is not ready.
                Err(error) if error.code() == Code::NotFound => {
                    Ok(ModelReadyResponse { ready: false })
                }
                Err(error) => Err(error),
            }
        })
        .await
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.observe("ServerMetadata", request.metadata(), async {
            Ok(ServerMetadataResponse {
                name: "ml-api".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                extensions: vec!["model_repository".to_owned()],
            })
        })
        .await
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.guarded("ModelMetadata", request, |request| async move {
            let model = self.resolve(&request.name, &request.version).await?;
            let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
                name: name.to_owned(),
                datatype: datatype.to_owned(),
                shape,
            };
            let width = match model.schema.labels.len() {
                0 => -1,
                n => n as i64,
            };
            Ok(ModelMetadataResponse {
                name: model.name.clone(),
                versions: vec![model.version.clone()],
                platform: "onnxruntime_onnx".to_owned(),
                inputs: model
                    .schema
                    .fields
                    .iter()
                    .map(|f| tensor(&f.name, tensors::datatype(f.element), vec![-1, 1]))
                    .collect(),
                outputs: vec![tensor(&model.schema.output, "FP32", vec![-1, width])],
            })
        })
        .await
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.guarded("ModelInfer", request, |request| self.infer(request))
            .await
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        self.guarded("RepositoryIndex", request, |request| async move {
            let models = v2::repository_index(&self.state, request.ready)
                .await
                .map_err(status)?
                .into_iter()
                .map(|entry| ModelIndex {
                    name: entry.name,
                    version: entry.version,
                    state: entry.state.to_owned(),
                    reason: entry.reason,
                })
                .collect();
            Ok(RepositoryIndexResponse { models })
        })
        .await
    }
}

/// The span of one call. Its parent is the caller's trace when the call's metadata carries
/// a W3C `traceparent`, so ml-api's spans join distributed traces (as over HTTP).
fn call_span(method: &'static str, metadata: &MetadataMap) -> tracing::Span {
    // As over HTTP: only while spans are consumed (an OTLP exporter or Sentry).
    if !crate::spans::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc request",
        otel.name = format!("{SERVICE}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = SERVICE,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&MetadataExtractor(metadata))
    });
    let _ = span.set_parent(parent);
    span
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
