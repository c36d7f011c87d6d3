//! In-process benchmark of dynamic batching (`src/inference/batcher.rs`) on the bundled
//! `models/santander`.
//!
//! N single-record requests (the seed record) are sent to one model at once, as N concurrent
//! HTTP handlers would, and the benchmark waits for all N answers. The model is loaded twice
//! with the crate's public API (`LoadedModel::load`, as the server loads it), with one
//! inference thread each:
//! - `off`: `batch_max_size = 1`, every request is its own ONNX Runtime call;
//! - `on`: `batch_max_size = 64`, `batch_max_delay = 0` (the server's defaults): the inference
//!   thread merges the requests queued behind the one it takes.
//!
//! Groups: `batcher/off/N` and `batcher/on/N` for N = 1, 16 and 64; throughput is in
//! requests (= records) per second. The runtime is tokio's multi-thread flavour with its
//! default worker count, as in `ml-api serve` (one worker when the bench is pinned to a core
//! with `taskset -c 1`, as `scripts/bench.sh` runs it).
//!
//! Run: `cargo bench --bench batcher`. The ONNX Runtime library comes from `ORT_DYLIB_PATH`,
//! else `.ort/lib/libonnxruntime.so.1.31.1` (`make ort`).

use std::{path::PathBuf, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ml_api::{
    config::ServeConfig,
    inference::metrics::InferenceMetrics,
    model::{decode, FeatureBatch},
    serving::load::{read_model_dir, LoadedModel},
};
use serde_json::Value;
use tokio::runtime::Runtime;

const MODEL: &str = "santander";
const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dylib_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join(".ort/lib/libonnxruntime.so.1.31.1"))
}

/// The bundled model with one inference thread and the given batch size (1 = off).
fn load(runtime: &Runtime, metrics: &InferenceMetrics, batch_max_size: usize) -> LoadedModel {
    let dylib = dylib_path();
    assert!(
        dylib.is_file(),
        "ONNX Runtime not found at `{}`: run `make ort` or set ORT_DYLIB_PATH",
        dylib.display()
    );
    let mut config = ServeConfig::for_tests(manifest_dir().join("models"), MODEL).inference;
    config.ort_dylib = dylib;
    config.workers = 1;
    config.intra_op_threads = 1;
    config.batch_max_size = batch_max_size;
    config.batch_max_delay = Duration::ZERO;
    let source = read_model_dir(&manifest_dir().join("models"))
        .expect("the bundled models")
        .into_iter()
        .find(|source| source.name == MODEL)
        .expect("models/santander");
    runtime
        .block_on(LoadedModel::load(source, "1".to_owned(), &config, metrics))
        .expect("the bundled model loads")
}

fn seed_batch(model: &LoadedModel) -> FeatureBatch {
    let seed =
        std::fs::read(manifest_dir().join("tests/fixtures/seed_request.json")).expect("seed");
    let value: Value = serde_json::from_slice(&seed).expect("the seed is JSON");
    decode::from_value(&model.schema, &value, 1)
        .expect("the seed validates")
        .batch
}

/// N concurrent single-record requests; returns the rows answered.
async fn burst(model: &LoadedModel, batch: &FeatureBatch, n: usize) -> usize {
    let answers = futures::future::join_all((0..n).map(|_| model.infer(batch.clone()))).await;
    answers
        .into_iter()
        .map(|scores| scores.expect("infer").rows)
        .sum()
}

fn bench_batcher(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Separate registries: both models have the same name.
    let metrics_off = InferenceMetrics::new(&prometheus::Registry::new()).expect("metrics");
    let metrics_on = InferenceMetrics::new(&prometheus::Registry::new()).expect("metrics");
    let models = [
        ("off", load(&runtime, &metrics_off, 1)),
        ("on", load(&runtime, &metrics_on, 64)),
    ];
    let batch = seed_batch(&models[0].1);
    let mut group = c.benchmark_group("batcher");
    for n in CONCURRENCY {
        group.throughput(Throughput::Elements(n as u64));
        for (label, model) in &models {
            group.bench_with_input(BenchmarkId::new(*label, n), &n, |b, &n| {
                b.to_async(&runtime).iter(|| async {
                    assert_eq!(burst(model, &batch, n).await, n);
                })
            });
        }
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
    targets = bench_batcher
}
criterion_main!(benches);
