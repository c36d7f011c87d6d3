//! Bench-only: the gRPC request of `make bench` (`scripts/bench.sh`), for h2load.
//!
//! h2load posts the same body on every request and sees only the HTTP status, not the gRPC
//! status in the trailers. So this tool writes the body once, and checks it once:
//!
//! ```text
//! cargo build --release --example grpc_frame
//! target/release/examples/grpc_frame encode 127.0.0.1:8001 santander frame.bin
//! target/release/examples/grpc_frame check 127.0.0.1:8001 frame.bin
//! ```
//!
//! - `encode ADDR MODEL OUT [ROWS]`: `ModelInfer` with raw tensors (what `tritonclient[grpc]`
//!   sends) for the seed record (`tests/fixtures/seed_request.json`) as ROWS rows (default 1),
//!   one `[ROWS, 1]` tensor per input named and typed as the server's `ModelMetadata` says,
//!   written to OUT as one
//!   gRPC message frame: a 0 byte (not compressed), the big-endian 4-byte length, then the
//!   protobuf `ModelInferRequest`.
//! - `check ADDR FRAME`: reads FRAME, refuses it unless its prefix is right and the message
//!   re-encodes to exactly the same bytes (so what tonic sends is byte for byte what h2load
//!   sends), calls `ModelInfer` with it and prints the answer as JSON,
//!   `{"model_name", "outputs": [{"name", "datatype", "shape", "data"}]}` (raw FP32 outputs
//!   decoded). Fails unless the call ends with grpc-status 0 (OK).

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use ml_api::grpc::proto::{
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor, ModelInferRequest, ModelMetadataRequest,
};
use prost::Message;
use serde_json::{json, Value};

const SEED: &str = "tests/fixtures/seed_request.json";

/// The seed record `rows` times as raw `[rows, 1]` tensors, one per model input.
async fn request(addr: &str, model: &str, rows: usize) -> anyhow::Result<ModelInferRequest> {
    let seed: Value = serde_json::from_str(&std::fs::read_to_string(SEED)?)?;
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{addr}")).await?;
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
        let value = seed
            .get(&spec.name)
            .with_context(|| format!("the seed record has no value for input {}", spec.name))?;
        let bytes = match spec.datatype.as_str() {
            "BYTES" => {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let mut bytes = u32::try_from(text.len())?.to_le_bytes().to_vec();
                bytes.extend_from_slice(text.as_bytes());
                bytes
            }
            "INT64" => value
                .as_i64()
                .with_context(|| format!("input {} is not an integer", spec.name))?
                .to_le_bytes()
                .to_vec(),
            "FP32" => (value
                .as_f64()
                .with_context(|| format!("input {} is not a number", spec.name))?
                as f32)
                .to_le_bytes()
                .to_vec(),
            other => bail!("input {} has datatype {other}", spec.name),
        };
        raw.push(Bytes::from(bytes.repeat(rows)));
        inputs.push(InferInputTensor {
            name: spec.name,
            datatype: spec.datatype,
            shape: vec![i64::try_from(rows)?, 1],
            parameters: Default::default(),
            contents: None,
        });
    }
    Ok(ModelInferRequest {
        model_name: model.to_owned(),
        id: "bench".to_owned(),
        inputs,
        raw_input_contents: raw,
        ..ModelInferRequest::default()
    })
}

/// A gRPC message frame: uncompressed flag, big-endian length, message.
fn frame(message: &ModelInferRequest) -> anyhow::Result<Vec<u8>> {
    let body = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The request in FRAME, checked to be one well-formed frame that re-encodes identically.
fn unframe(frame_bytes: &[u8]) -> anyhow::Result<ModelInferRequest> {
    ensure!(frame_bytes.len() >= 5, "shorter than a gRPC frame prefix");
    ensure!(
        frame_bytes[0] == 0,
        "compressed flag set (byte 0 is {})",
        frame_bytes[0]
    );
    let length = u32::from_be_bytes(frame_bytes[1..5].try_into()?) as usize;
    ensure!(
        frame_bytes.len() == 5 + length,
        "prefix says {length} bytes, the file holds {} after it",
        frame_bytes.len() - 5
    );
    let message =
        ModelInferRequest::decode(&frame_bytes[5..]).context("not a ModelInferRequest")?;
    ensure!(
        frame(&message)? == frame_bytes,
        "the message does not re-encode to the same bytes"
    );
    Ok(message)
}

async fn check(addr: &str, path: &str) -> anyhow::Result<Value> {
    let message = unframe(&std::fs::read(path)?).with_context(|| format!("the frame in {path}"))?;
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{addr}")).await?;
    let response = client
        .model_infer(message)
        .await
        .context("ModelInfer did not end with grpc-status 0")?
        .into_inner();
    let mut outputs = Vec::new();
    for (index, output) in response.outputs.iter().enumerate() {
        ensure!(
            output.datatype == "FP32",
            "output {} is {}",
            output.name,
            output.datatype
        );
        let raw = response
            .raw_output_contents
            .get(index)
            .with_context(|| format!("no raw_output_contents for output {}", output.name))?;
        let data: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        outputs.push(json!({
            "name": output.name, "datatype": output.datatype, "shape": output.shape, "data": data,
        }));
    }
    Ok(json!({ "model_name": response.model_name, "outputs": outputs }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["encode", addr, model, out, rows @ ..] if rows.len() <= 1 => {
            let rows = match rows.first() {
                Some(rows) => rows.parse().context("ROWS is not a number")?,
                None => 1,
            };
            ensure!(rows >= 1, "ROWS must be at least 1");
            let bytes = frame(&request(addr, model, rows).await?)?;
            std::fs::write(out, &bytes).with_context(|| format!("cannot write {out}"))?;
            eprintln!("wrote {} bytes to {out}", bytes.len());
        }
        ["check", addr, path] => println!("{}", check(addr, path).await?),
        _ => bail!("usage: grpc_frame encode ADDR MODEL OUT [ROWS] | grpc_frame check ADDR FRAME"),
    }
    Ok(())
}
