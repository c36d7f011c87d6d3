//! In-process benchmark of the `POST /predict` hot path on the bundled `models/santander`.
//!
//! Each stage is measured on its own, then the whole path:
//! - `decode`: request bytes -> `FeatureBatch`, straight into the model's columns
//!   (`decode::from_slice`, what `/predict` does);
//! - `json_decode` + `validate`: the same through a `serde_json::Value` (`decode::from_value`,
//!   what warm-up and profiling do, and what `/predict` did before), for comparison;
//! - `infer`: `LoadedModel::infer` (through the inference pool: queue, thread hop, reply)
//!   and, for comparison, `infer_raw`: one ONNX Runtime session called on this thread;
//! - `encode`: `Scores` -> `PredictResponse` -> JSON bytes (what the handler's `Json` does);
//! - `end_to_end`: `handler` is bytes -> `Catalog::get` -> `http::predict::respond`
//!   -> body bytes (the handler's own code, no middleware); `router` is the whole axum
//!   application (every middleware layer, no TCP) via `tower::ServiceExt::oneshot`.
//!
//! Every group runs with 1 record (the seed request) and with a batch of 32 copies of it.
//! Run: `cargo bench --bench predict_path` (about a minute once built). The ONNX Runtime
//! library comes from `ORT_DYLIB_PATH`, else `.ort/lib/libonnxruntime.so.1.31.1` (`make ort`).

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    body::{to_bytes, Body},
    http::{header, Method, Request, StatusCode},
    Router,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ml_api::{
    config::ServeConfig,
    http::{
        predict::{respond, PredictQuery, PredictResponse},
        AppState,
    },
    inference::{
        ort::{self as ort_backend, OrtBackend, SessionOptions},
        Backend,
    },
    model::{decode, FeatureBatch, Scores},
    serving::load::LoadedModel,
    startup::Application,
};
use serde_json::Value;
use tokio::runtime::Runtime;
use tower::ServiceExt;

const MODEL: &str = "santander";
const MAX_RECORDS: usize = 1024;
const BATCH: usize = 32;

/// Everything the benchmarks share, built once (loading the model takes a while).
struct Fixture {
    runtime: Runtime,
    /// Kept alive: owns the (never served) listener and the background tasks' token.
    _app: Application,
    state: AppState,
    router: Router,
    model: Arc<LoadedModel>,
    dylib: PathBuf,
    /// (label, records, request body)
    bodies: Vec<(&'static str, usize, Vec<u8>)>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dylib_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join(".ort/lib/libonnxruntime.so.1.31.1"))
}

fn build_fixture() -> Fixture {
    let dylib = dylib_path();
    assert!(
        dylib.is_file(),
        "ONNX Runtime not found at `{}`: run `make ort` or set ORT_DYLIB_PATH",
        dylib.display()
    );
    let mut config = ServeConfig::for_tests(manifest_dir().join("models"), MODEL);
    config.rate_limit.enabled = false;
    config.http.max_batch_records = MAX_RECORDS;
    config.inference.ort_dylib = dylib.clone();
    // One session: the benchmarks send one request at a time.
    config.inference.workers = 1;
    config.inference.intra_op_threads = 1;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let app = runtime
        .block_on(Application::build(config))
        .expect("the application builds with the bundled models");
    let state = app.state().clone();
    let router = app.router();
    let model = runtime
        .block_on(state.catalog.get(&state.default_model))
        .expect("the default model is loaded");

    let seed =
        std::fs::read(manifest_dir().join("tests/fixtures/seed_request.json")).expect("seed");
    let record: Value = serde_json::from_slice(&seed).expect("the seed is JSON");
    let batch = serde_json::to_vec(&Value::Array(vec![record; BATCH])).expect("batch body");
    Fixture {
        runtime,
        _app: app,
        state,
        router,
        model,
        dylib,
        bodies: vec![("1", 1, seed), ("32", BATCH, batch)],
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn to_value(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("valid JSON")
}

fn to_batch(model: &LoadedModel, body: &Value) -> FeatureBatch {
    decode::from_value(&model.schema, body, MAX_RECORDS)
        .expect("the seed validates")
        .batch
}

/// (a) Request bytes -> validated `FeatureBatch`, no `Value` in between.
fn bench_decode(c: &mut Criterion) {
    let fx = fixture();
    let mut group = c.benchmark_group("decode");
    for (label, rows, body) in &fx.bodies {
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), body, |b, body| {
            b.iter(|| {
                decode::from_slice(&fx.model.schema, std::hint::black_box(body), MAX_RECORDS)
                    .expect("the seed validates")
            })
        });
    }
    group.finish();
}

/// What `http::predict::respond` does with the scores (no `top_k`), as bytes.
fn encode(scores: &Scores) -> Vec<u8> {
    serde_json::to_vec(&PredictResponse::from_scores(scores, None)).expect("encode")
}

/// (a') Request bytes -> `serde_json::Value`.
fn bench_json_decode(c: &mut Criterion) {
    let fx = fixture();
    let mut group = c.benchmark_group("json_decode");
    for (label, rows, body) in &fx.bodies {
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), body, |b, body| {
            b.iter(|| to_value(std::hint::black_box(body)))
        });
    }
    group.finish();
}

/// (a'') `Value` -> validated `FeatureBatch`.
fn bench_validate(c: &mut Criterion) {
    let fx = fixture();
    let mut group = c.benchmark_group("validate");
    for (label, rows, body) in &fx.bodies {
        let value = to_value(body);
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &value, |b, value| {
            b.iter(|| to_batch(&fx.model, std::hint::black_box(value)))
        });
    }
    group.finish();
}

/// (b') The model's feature contract (`contract_check`) and the drift histograms
/// (`drift_observe`: features, then the predicted label), on the validated batch.
fn bench_contract_and_drift(c: &mut Criterion) {
    let fx = fixture();
    let contract = fx
        .model
        .contract
        .as_ref()
        .expect("santander has a contract");
    let drift = fx.model.drift.as_ref().expect("drift is on by default");
    let mut group = c.benchmark_group("contract_check");
    for (label, rows, body) in &fx.bodies {
        let batch = to_batch(&fx.model, &to_value(body));
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &batch, |b, batch| {
            b.iter(|| contract.check(std::hint::black_box(batch), 100))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("drift_observe");
    for (label, rows, body) in &fx.bodies {
        let batch = to_batch(&fx.model, &to_value(body));
        let scores = fx
            .runtime
            .block_on(fx.model.infer(batch.clone()))
            .expect("infer");
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &batch, |b, batch| {
            b.iter(|| {
                let at = drift.observe(contract, std::hint::black_box(batch));
                drift.observe_predictions(at, &scores);
            })
        });
    }
    group.finish();
}

/// (c) Inference through the pool, as the handler calls it.
fn bench_infer(c: &mut Criterion) {
    let fx = fixture();
    let mut group = c.benchmark_group("infer");
    for (label, rows, body) in &fx.bodies {
        let batch = to_batch(&fx.model, &to_value(body));
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &batch, |b, batch| {
            b.to_async(&fx.runtime)
                .iter(|| async { fx.model.infer(batch.clone()).await.expect("infer") })
        });
    }
    group.finish();
}

/// (c') The same model in one ONNX Runtime session run on the calling thread: the
/// difference to `infer` is the pool's queue, thread hop and reply.
fn bench_infer_raw(c: &mut Criterion) {
    let fx = fixture();
    let env = ort_backend::environment(&fx.dylib).expect("ONNX Runtime environment");
    let bytes = ort_backend::read_model(&manifest_dir().join("models/santander/model.onnx"))
        .expect("model.onnx");
    let (session, signature) = OrtBackend::open(
        env,
        &bytes,
        SessionOptions {
            intra_op_threads: 1,
        },
    )
    .expect("session");
    let mut backend = OrtBackend::new(
        session,
        signature.inputs.into(),
        fx.model.schema.output.clone(),
    );
    let mut group = c.benchmark_group("infer_raw");
    for (label, rows, body) in &fx.bodies {
        let batch = to_batch(&fx.model, &to_value(body));
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &batch, |b, batch| {
            b.iter(|| backend.run(batch).expect("run"))
        });
    }
    group.finish();
}

/// (d) `Scores` -> response JSON bytes.
fn bench_encode(c: &mut Criterion) {
    let fx = fixture();
    let mut group = c.benchmark_group("encode");
    for (label, rows, body) in &fx.bodies {
        let batch = to_batch(&fx.model, &to_value(body));
        let scores = fx
            .runtime
            .block_on(fx.model.infer(batch))
            .expect("scores to encode");
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &scores, |b, scores| {
            b.iter(|| encode(std::hint::black_box(scores)))
        });
    }
    group.finish();
}

/// (e) The whole path: the handler's code without middleware, and the full router.
fn bench_end_to_end(c: &mut Criterion) {
    let fx = fixture();
    let query = PredictQuery { top_k: None };
    let mut group = c.benchmark_group("end_to_end");
    for (label, rows, body) in &fx.bodies {
        group.throughput(Throughput::Elements(*rows as u64));
        group.bench_with_input(BenchmarkId::new("handler", label), body, |b, body| {
            b.to_async(&fx.runtime).iter(|| async {
                let model = fx
                    .state
                    .catalog
                    .get(&fx.state.default_model)
                    .await
                    .expect("model");
                let response = respond(
                    &fx.state,
                    &model,
                    Some(&fx.state.default_model),
                    &query,
                    body,
                )
                .await
                .expect("200");
                to_bytes(response.into_body(), usize::MAX)
                    .await
                    .expect("body")
            })
        });
        let body = bytes::Bytes::from(body.clone());
        group.bench_with_input(BenchmarkId::new("router", label), &body, |b, body| {
            b.to_async(&fx.runtime).iter(|| async {
                let request = Request::builder()
                    .method(Method::POST)
                    .uri("/predict")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.clone()))
                    .expect("request");
                let response = fx
                    .router
                    .clone()
                    .oneshot(request)
                    .await
                    .expect("infallible");
                assert_eq!(response.status(), StatusCode::OK);
                to_bytes(response.into_body(), usize::MAX)
                    .await
                    .expect("body")
            })
        });
    }
    group.finish();
}

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = bench_decode, bench_json_decode, bench_validate, bench_contract_and_drift, bench_infer, bench_infer_raw, bench_encode,
        bench_end_to_end
}
criterion_main!(benches);
