//! Bench-only gRPC load generator for `make bench` (`scripts/bench.sh`): `ModelInfer` with raw
//! tensors (what `tritonclient[grpc]` sends), the seed record as one row, over CONNECTIONS
//! HTTP/2 connections with one call in flight on each (as wrk keeps one request in flight per
//! connection). No registry load generator speaks the Open Inference Protocol's gRPC, and ghz
//! is not installable here.
//!
//! ```text
//! cargo build --release --example grpc_load
//! taskset -c 0 target/release/examples/grpc_load 127.0.0.1:8001 santander 64 15 5
//! ```
//!
//! Arguments: ADDR MODEL CONNECTIONS SECONDS [WARMUP_SECONDS]. Prints one JSON object:
//! `{"requests", "rps", "p50_ms", "p99_ms", "errors"}` (latencies of the measured calls).
//! Runs on one tokio thread, so pinned to one CPU it is one load-generating core, like wrk -t1.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ml_api::grpc::proto::{
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor, ModelInferRequest, ModelMetadataRequest,
};
use serde_json::Value;
use tonic::transport::Channel;

/// The seed record as raw `[1, 1]` tensors, one per model input.
async fn request(
    client: &mut GrpcInferenceServiceClient<Channel>,
    model: &str,
) -> anyhow::Result<ModelInferRequest> {
    let seed: Value = serde_json::from_str(&std::fs::read_to_string(
        "tests/fixtures/seed_request.json",
    )?)?;
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: model.to_owned(),
            version: String::new(),
        })
        .await?
        .into_inner();
    let mut inputs = Vec::new();
    let mut raw = Vec::new();
    for spec in metadata.inputs {
        let value = &seed[&spec.name];
        let bytes = match spec.datatype.as_str() {
            "BYTES" => {
                let text = value.as_str().unwrap_or_default();
                let mut bytes = (text.len() as u32).to_le_bytes().to_vec();
                bytes.extend_from_slice(text.as_bytes());
                bytes
            }
            "INT64" => value.as_i64().unwrap_or_default().to_le_bytes().to_vec(),
            "FP32" => (value.as_f64().unwrap_or(f64::NAN) as f32)
                .to_le_bytes()
                .to_vec(),
            other => anyhow::bail!("input {} has datatype {other}", spec.name),
        };
        raw.push(Bytes::from(bytes));
        inputs.push(InferInputTensor {
            name: spec.name,
            datatype: spec.datatype,
            shape: vec![1, 1],
            parameters: Default::default(),
            contents: None,
        });
    }
    Ok(ModelInferRequest {
        model_name: model.to_owned(),
        inputs,
        raw_input_contents: raw,
        ..ModelInferRequest::default()
    })
}

/// Calls until `until` on one connection: the latencies (µs) of the calls that succeeded after
/// `measure_from`, and the failures.
async fn drive(
    mut client: GrpcInferenceServiceClient<Channel>,
    request: ModelInferRequest,
    measure_from: Instant,
    until: Instant,
) -> (Vec<u32>, u64) {
    let (mut latencies, mut errors) = (Vec::new(), 0);
    loop {
        let started = Instant::now();
        if started >= until {
            return (latencies, errors);
        }
        let ok = client.model_infer(request.clone()).await.is_ok();
        if started >= measure_from {
            match ok {
                true => latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32),
                false => errors += 1,
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, model, connections, seconds, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: grpc_load ADDR MODEL CONNECTIONS SECONDS [WARMUP_SECONDS]");
    };
    let connections: usize = connections.parse()?;
    let seconds: f64 = seconds.parse()?;
    let warmup: f64 = rest.first().map_or(Ok(0.0), |w| w.parse())?;
    let endpoint = format!("http://{addr}");
    let mut first = GrpcInferenceServiceClient::connect(endpoint.clone()).await?;
    let request = request(&mut first, model).await?;
    first.model_infer(request.clone()).await?;

    let measure_from = Instant::now() + Duration::from_secs_f64(warmup);
    let until = measure_from + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = GrpcInferenceServiceClient::connect(endpoint.clone()).await?;
        tasks.push(tokio::spawn(drive(
            client,
            request.clone(),
            measure_from,
            until,
        )));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies
            .get(index)
            .map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    let requests = latencies.len() as u64 + errors;
    println!(
        "{}",
        serde_json::json!({
            "requests": requests,
            "rps": latencies.len() as f64 / seconds,
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
            "errors": errors,
        })
    );
    Ok(())
}
