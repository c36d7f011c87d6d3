//! The Open Inference Protocol over gRPC, driven over a real socket by a tonic client generated
//! from the same proto: the answers of `/predict`, the errors of V2 over REST as gRPC status
//! codes, quotas and rate limits from metadata, health and metrics. (scripts/check-v2-tritonclient.sh
//! drives it with the official `tritonclient[grpc]` as well.)

use bytes::Bytes;
use ml_api::grpc::proto::{
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, RepositoryIndexRequest, ServerLiveRequest,
    ServerMetadataRequest, ServerReadyRequest,
};
use serde_json::{json, Value};
use tonic::{transport::Channel, Code, Request};

use crate::{
    helpers::{spawn_app, spawn_app_with, TestApp},
    nginx::Nginx,
};

mod process;
mod reflection;

async fn client(app: &TestApp) -> GrpcInferenceServiceClient<Channel> {
    connect(&app.grpc_addr.expect("gRPC is on").to_string()).await
}

async fn connect(addr: &str) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("gRPC connects")
}

/// The bundled model's inputs, as the server describes them.
async fn santander_metadata(
    grpc: &mut GrpcInferenceServiceClient<Channel>,
) -> ModelMetadataResponse {
    grpc.model_metadata(ModelMetadataRequest {
        name: "santander".to_owned(),
        version: String::new(),
    })
    .await
    .expect("model metadata")
    .into_inner()
}

fn golden_records() -> Vec<Value> {
    let text = std::fs::read_to_string(crate::helpers::repo_path("models/santander/golden.json"))
        .expect("golden.json");
    let golden: Vec<Value> = serde_json::from_str(&text).expect("golden parses");
    golden
        .into_iter()
        .map(|case| case["record"].clone())
        .collect()
}

/// One tensor per model input (`[N, 1]`, the metadata's datatype) holding `records`, typed or
/// raw (then the raw bytes, in input order). A missing income is NaN.
fn tensors(
    metadata: &ModelMetadataResponse,
    records: &[Value],
    raw: bool,
) -> (Vec<InferInputTensor>, Vec<Bytes>) {
    let mut inputs = Vec::new();
    let mut raw_contents = Vec::new();
    for spec in &metadata.inputs {
        let values = records.iter().map(|record| &record[&spec.name]);
        let mut contents = InferTensorContents::default();
        let mut bytes = Vec::new();
        match spec.datatype.as_str() {
            "BYTES" => {
                for value in values {
                    let text = value.as_str().expect("a string");
                    bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(text.as_bytes());
                    contents
                        .bytes_contents
                        .push(Bytes::copy_from_slice(text.as_bytes()));
                }
            }
            "INT64" => {
                for value in values {
                    let v = value.as_i64().expect("an integer");
                    bytes.extend_from_slice(&v.to_le_bytes());
                    contents.int64_contents.push(v);
                }
            }
            "FP32" => {
                for value in values {
                    let v = value.as_f64().map_or(f32::NAN, |v| v as f32);
                    bytes.extend_from_slice(&v.to_le_bytes());
                    contents.fp32_contents.push(v);
                }
            }
            other => panic!("unexpected datatype {other}"),
        }
        inputs.push(InferInputTensor {
            name: spec.name.clone(),
            datatype: spec.datatype.clone(),
            shape: vec![records.len() as i64, 1],
            parameters: Default::default(),
            contents: (!raw).then_some(contents),
        });
        raw_contents.push(Bytes::from(bytes));
    }
    (inputs, if raw { raw_contents } else { Vec::new() })
}

fn infer_request(
    model: &str,
    version: &str,
    tensors: (Vec<InferInputTensor>, Vec<Bytes>),
) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_owned(),
        model_version: version.to_owned(),
        id: "req-7".to_owned(),
        parameters: Default::default(),
        inputs: tensors.0,
        outputs: vec![InferRequestedOutputTensor {
            name: "probabilities".to_owned(),
            parameters: Default::default(),
        }],
        raw_input_contents: tensors.1,
    }
}

/// The output's values, from its typed contents or its raw bytes.
fn probabilities(response: &ModelInferResponse) -> Vec<f32> {
    match response.raw_output_contents.first() {
        Some(raw) => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        None => response.outputs[0]
            .contents
            .as_ref()
            .expect("typed contents")
            .fp32_contents
            .clone(),
    }
}

/// `/predict`'s probabilities for `records` at `url`, row after row.
async fn predict(url: &str, records: &[Value]) -> Vec<f64> {
    let answer: Value = reqwest::Client::new()
        .post(url)
        .json(records)
        .send()
        .await
        .expect("/predict answers")
        .json()
        .await
        .expect("JSON");
    answer["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .flat_map(|row| row.as_array().expect("a row").clone())
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

/// gRPC's probabilities equal `/predict`'s (to f32 precision).
fn assert_equals_predict(got: &[f32], expected: &[f64], context: &str) {
    assert_eq!(got.len(), expected.len(), "{context}: as many values");
    for (g, e) in got.iter().zip(expected) {
        assert!(
            (f64::from(*g) - e).abs() <= 1e-6,
            "{context}: gRPC {g} vs /predict {e}"
        );
    }
}

/// ModelInfer (raw tensors) of the golden records at `addr` and `/predict` of the same records
/// at `predict_url` answer the same, `calls` times over one connection.
pub(crate) async fn assert_infer_equals_predict(addr: &str, predict_url: &str, calls: usize) {
    let records = golden_records();
    let expected = predict(predict_url, &records).await;
    let mut grpc = connect(addr).await;
    let metadata = santander_metadata(&mut grpc).await;
    for call in 0..calls {
        let request = infer_request("santander", "", tensors(&metadata, &records, true));
        let answer = grpc.model_infer(request).await.expect("ModelInfer");
        let context = format!("call {call} through {addr}");
        assert_equals_predict(&probabilities(&answer.into_inner()), &expected, &context);
    }
}

#[tokio::test]
async fn grpc_infer_with_typed_and_raw_tensors_equals_predict() {
    let app = spawn_app().await;
    let mut grpc = client(&app).await;
    assert!(
        grpc.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        grpc.server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let server = grpc
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.name, "ml-api");
    for (name, version, ready) in [
        ("santander", "", true),
        ("santander", "1", true),
        ("santander:latest", "", true),
        ("nope", "", false),
        ("santander", "99", false),
    ] {
        let request = ModelReadyRequest {
            name: name.to_owned(),
            version: version.to_owned(),
        };
        let answer = grpc.model_ready(request).await.unwrap().into_inner();
        assert_eq!(answer.ready, ready, "{name} {version}");
    }
    let metadata = santander_metadata(&mut grpc).await;
    assert_eq!(metadata.platform, "onnxruntime_onnx");
    assert_eq!(metadata.inputs.len(), 20);
    assert_eq!(metadata.outputs[0].shape, vec![-1, 22]);

    let records = golden_records();
    let expected = predict(&app.url("/predict"), &records).await;
    let one = &records[..1];
    for (raw, records, model, version) in [
        (false, one, "santander", ""),
        (true, one, "santander:latest", ""),
        (false, &records[..], "santander", "1"),
        (true, &records[..], "santander", ""),
    ] {
        let request = infer_request(model, version, tensors(&metadata, records, raw));
        let answer = grpc.model_infer(request).await.unwrap().into_inner();
        assert_eq!(answer.id, "req-7");
        assert_eq!(
            (answer.model_name.as_str(), answer.model_version.as_str()),
            ("santander", "1")
        );
        assert_eq!(answer.outputs[0].name, "probabilities");
        assert_eq!(answer.outputs[0].shape, vec![records.len() as i64, 22]);
        assert_eq!(
            answer.raw_output_contents.len(),
            usize::from(raw),
            "answered as asked"
        );
        let got = probabilities(&answer);
        assert_equals_predict(&got, &expected[..got.len()], &format!("raw={raw}"));
        assert_eq!(got.len(), records.len() * 22);
    }

    let index = grpc
        .repository_index(RepositoryIndexRequest {
            repository_name: String::new(),
            ready: true,
        })
        .await
        .unwrap()
        .into_inner();
    let santander = index
        .models
        .iter()
        .find(|m| m.name == "santander")
        .expect("listed");
    assert_eq!(
        (santander.version.as_str(), santander.state.as_str()),
        ("1", "READY")
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    for service in ["", "inference.GRPCInferenceService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    // Through the ingress configuration (deploy/nginx/nginx.conf, `grpc_pass`), as the local
    // cluster runs it: the same answer.
    let nginx = Nginx::start_with_grpc(&[app.addr.port()], &[app.grpc_addr.unwrap().port()]);
    let mut proxied = GrpcInferenceServiceClient::connect(format!(
        "http://127.0.0.1:{}",
        nginx.grpc_port.unwrap()
    ))
    .await
    .expect("gRPC through nginx connects");
    let request = infer_request("santander", "", tensors(&metadata, &records, true));
    let answer = proxied.model_infer(request).await.unwrap().into_inner();
    assert_equals_predict(&probabilities(&answer), &expected, "through nginx");
    let counted = app
        .metric(r#"ml_api_grpc_requests_total{code="OK",method="ModelInfer"}"#)
        .await;
    assert_eq!(counted, Some(5.0));
    drop(nginx);
    app.stop().await;
}

#[tokio::test]
async fn grpc_errors_are_the_rest_errors_as_status_codes() {
    let app = spawn_app().await;
    let mut grpc = client(&app).await;
    let metadata = santander_metadata(&mut grpc).await;
    let record = [golden_records().remove(0)];
    let refused = |request: ModelInferRequest| {
        let mut grpc = grpc.clone();
        async move { grpc.model_infer(request).await.expect_err("refused") }
    };

    let unknown = refused(infer_request(
        "nope",
        "",
        tensors(&metadata, &record, false),
    ))
    .await;
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let version = refused(infer_request(
        "santander",
        "99",
        tensors(&metadata, &record, true),
    ))
    .await;
    assert_eq!(version.code(), Code::NotFound, "{version:?}");

    // The same request as V2 over REST's error test: a wrong shape, a wrong datatype, a value
    // out of the card's range: INVALID_ARGUMENT with the REST message.
    let mut shape = tensors(&metadata, &record, false);
    shape.0[3].shape = vec![2, 1];
    let status = refused(infer_request("santander", "", shape)).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("age"), "{status:?}");
    let mut range = tensors(&metadata, &record, true);
    range.1[3] = Bytes::copy_from_slice(&500i64.to_le_bytes());
    let status = refused(infer_request("santander", "", range)).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("[0].age: 500 is out of range"),
        "the card's rules apply: {status:?}"
    );
    let mut missing = tensors(&metadata, &record, false);
    missing.0.truncate(5);
    let status = refused(infer_request("santander", "", missing)).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("field is required"), "{status:?}");
    let mut truncated = tensors(&metadata, &record, true);
    truncated.1[0] = Bytes::from_static(&[9, 0, 0, 0, b'F']);
    let status = refused(infer_request("santander", "", truncated)).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("truncated BYTES element"),
        "{status:?}"
    );
    let rest = app
        .post_json(
            "/v2/models/santander/infer",
            &json!({"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [500]}]}),
        )
        .await;
    assert_eq!(rest.status(), 400, "V2 over REST refuses what gRPC refuses");

    let failures = app
        .metric(r#"ml_api_grpc_requests_total{code="INVALID_ARGUMENT",method="ModelInfer"}"#)
        .await;
    assert_eq!(failures, Some(4.0));
    let rejected = app
        .metric(r#"ml_api_validation_failures_total{action="reject",feature="age",model="santander",reason="range"}"#)
        .await;
    assert!(
        rejected.is_some_and(|n| n >= 1.0),
        "the scorer counted the refusal"
    );
    app.stop().await;
}

/// Issued keys from the `x-api-key` metadata (quotas), and the per-client rate limit for the
/// others: RESOURCE_EXHAUSTED over the limit, UNAUTHENTICATED for a key never issued.
#[tokio::test]
async fn grpc_calls_count_against_quotas_and_the_rate_limit() {
    let app = spawn_app_with(|config| {
        config.rate_limit.enabled = true;
        config.rate_limit.per_second = 0.001;
        config.rate_limit.burst = 2;
    })
    .await;
    let grpc = client(&app).await;
    let ready = |key: Option<String>| {
        let mut grpc = grpc.clone();
        async move {
            let mut request = Request::new(ModelReadyRequest {
                name: "santander".to_owned(),
                version: String::new(),
            });
            if let Some(key) = key {
                request
                    .metadata_mut()
                    .insert("x-api-key", key.parse().unwrap());
            }
            grpc.model_ready(request)
                .await
                .map(|r| r.into_inner().ready)
        }
    };
    // Anonymous: the per-client burst of 2, then RESOURCE_EXHAUSTED.
    assert!(ready(None).await.unwrap());
    assert!(ready(None).await.unwrap());
    let limited = ready(None).await.expect_err("over the burst");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(
        limited.message().contains("rate limit exceeded"),
        "{limited:?}"
    );
    // Server liveness is never limited.
    let mut live = grpc.clone();
    assert!(
        live.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );

    let created = app
        .post_json(
            "/keys",
            &json!({"name": "grpc-team", "rate_per_s": 0.001, "burst": 1}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let key = created.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ready(Some(key.clone())).await.unwrap());
    let quota = ready(Some(key)).await.expect_err("over the key's burst");
    assert_eq!(quota.code(), Code::ResourceExhausted, "{quota:?}");
    let bogus = ready(Some(format!("mlk_{}", "0".repeat(64))))
        .await
        .expect_err("never issued");
    assert_eq!(bogus.code(), Code::Unauthenticated, "{bogus:?}");
    let exhausted = app
        .metric(r#"ml_api_grpc_requests_total{code="RESOURCE_EXHAUSTED",method="ModelReady"}"#)
        .await;
    assert_eq!(exhausted, Some(2.0));
    app.stop().await;
}

/// A model this replica has not loaded, while the registry is unreachable: UNAVAILABLE (503
/// over REST); the loaded default model keeps answering.
#[tokio::test]
async fn grpc_answers_unavailable_when_the_registry_is_down() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_app_with(move |config| {
        config.registry.registry = ml_api::config::RegistryKind::Redis;
        config.registry.redis_url = url;
        config.registry.redis_op_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    let mut grpc = client(&app).await;
    let metadata = |name: &str| ModelMetadataRequest {
        name: name.to_owned(),
        version: String::new(),
    };
    let status = grpc
        .model_metadata(metadata("other"))
        .await
        .expect_err("registry down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let rest = app.get("/v2/models/other").await;
    assert_eq!(rest.status(), 503);
    assert!(grpc.model_metadata(metadata("santander")).await.is_ok());
    app.stop().await;
}

/// A full inference queue (one inference thread, room for one waiting request): the calls
/// it cannot take end with UNAVAILABLE and the REST message (503 over REST), the others
/// are answered, and the server counts each by its code. Waves of concurrent calls go out
/// until one finds the queue full (a condition, within a deadline, not a timed race).
#[tokio::test]
async fn grpc_answers_unavailable_when_the_inference_queue_is_full() {
    let app = spawn_app_with(|config| {
        config.inference.workers = 1;
        config.inference.queue_capacity = 1;
        config.inference.batch_max_size = 1;
    })
    .await;
    let mut grpc = client(&app).await;
    let metadata = santander_metadata(&mut grpc).await;
    let records: Vec<Value> = golden_records().into_iter().cycle().take(256).collect();
    let request = infer_request("santander", "", tensors(&metadata, &records, true));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (mut answered, mut unavailable) = (0u64, 0u64);
    while unavailable == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no call found the inference queue full in 120 s ({answered} answered)"
        );
        let wave: Vec<_> = (0..32)
            .map(|_| {
                let mut grpc = grpc.clone();
                let request = request.clone();
                tokio::spawn(async move { grpc.model_infer(request).await })
            })
            .collect();
        for call in wave {
            match call.await.expect("the call's task") {
                Ok(response) => {
                    assert_eq!(probabilities(&response.into_inner()).len(), 256 * 22);
                    answered += 1;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert_eq!(status.message(), "server is at capacity, retry shortly");
                    unavailable += 1;
                }
            }
        }
    }
    assert!(answered > 0, "the queue took no call at all");
    let counted = |code: &'static str| {
        let app = &app;
        async move {
            app.metric(&format!(
                r#"ml_api_grpc_requests_total{{code="{code}",method="ModelInfer"}}"#
            ))
            .await
            .unwrap_or(0.0)
        }
    };
    assert_eq!(counted("UNAVAILABLE").await, unavailable as f64);
    assert_eq!(counted("OK").await, answered as f64);
    // Once the queue drains, the same call is answered again.
    assert!(grpc.model_infer(request).await.is_ok());
    app.stop().await;
}
