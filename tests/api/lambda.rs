//! `ml-api` as an AWS Lambda function: the binary `cargo test` built, unchanged, under
//! cargo-lambda's Runtime API emulator (`cargo lambda watch --only-lambda-apis`), called as a
//! function URL and with API Gateway REST (v1) and HTTP API (v2) events
//! (`cargo lambda invoke --data-file tests/fixtures/lambda/*.json`). Its answers are compared
//! with the HTTP server's. cargo-lambda comes from scripts/install-test-tools.sh.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::Instant,
};

use crate::{
    helpers::{assert_error, repo_path, seed_record, spawn_app},
    ports::free_port,
};

/// The function's name: cargo-lambda checks it against the manifest's binaries.
const FUNCTION: &str = "ml-api";
const DEADLINE: Duration = Duration::from_secs(60);

fn cargo_lambda() -> PathBuf {
    repo_path(".tools/venv-lambda/bin/cargo-lambda")
}

/// `cargo lambda watch --only-lambda-apis` on a free loopback port, killed by PID on drop.
struct Emulator {
    child: Child,
    port: u16,
}

impl Emulator {
    async fn start() -> Self {
        let port = free_port();
        let mut child = Command::new(cargo_lambda())
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1"])
            .args(["-P", &port.to_string()])
            .current_dir(repo_path(""))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cargo-lambda runs (scripts/install-test-tools.sh installs it)");
        let deadline = Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("cargo lambda watch exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "the emulator did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/lambda-url/{FUNCTION}{path}", self.port)
    }

    /// One invocation with an event file, as `cargo lambda invoke` sends it: the function's
    /// answer (an API Gateway response: `statusCode`, `headers`, `body`).
    async fn invoke(&self, event: &str) -> Value {
        let output = Command::new(cargo_lambda())
            .args(["lambda", "invoke", "-A", "127.0.0.1"])
            .args(["-P", &self.port.to_string(), FUNCTION, "--data-file"])
            .arg(repo_path(&format!("tests/fixtures/lambda/{event}")))
            .current_dir(repo_path(""))
            .kill_on_drop(true)
            .output()
            .await
            .expect("cargo lambda invoke runs");
        assert!(
            output.status.success(),
            "cargo lambda invoke {event}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{event}: the answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// The prebuilt binary started as Lambda starts `bootstrap` (no arguments, the runtime
    /// API in the environment); returns once it has loaded its models and polls for work.
    async fn start_function(&self) -> Function {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ml-api"))
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt/{FUNCTION}", self.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            // As deploy/lambda/template.yaml sets it: REST API stages are not in the routes.
            .env("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true")
            .env("ML_API_MODEL_DIR", repo_path("models"))
            .env(
                "ORT_DYLIB_PATH",
                repo_path(".ort/lib/libonnxruntime.so.1.31.1"),
            )
            .env("ML_API_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,ort=warn")
            .current_dir(repo_path(""))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("ml-api starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let lines_seen = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                lines_seen.lock().expect("log lock").push(line);
            }
        });
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ready = logs.lock().expect("log lock").iter().any(|line| {
                serde_json::from_str::<Value>(line)
                    .is_ok_and(|log| log["message"] == "serving Lambda invocations")
            });
            if ready {
                return Function { child };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the function exited ({status}): {:?}",
                    logs.lock().expect("log lock")
                );
            }
            assert!(Instant::now() < deadline, "the function did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The function process, killed by PID on drop.
struct Function {
    child: Child,
}

impl Function {
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `/predict`'s 22 probabilities for the Flask prediction API's example record, from the
/// HTTP server.
async fn server_probabilities() -> Vec<f64> {
    let app = spawn_app().await;
    let response = app.post_json("/predict", &seed_record()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    app.stop().await;
    probabilities(&body)
}

fn probabilities(body: &Value) -> Vec<f64> {
    let row: Vec<f64> = body["predictions"][0]
        .as_array()
        .unwrap_or_else(|| panic!("one row of predictions: {body}"))
        .iter()
        .map(|p| p.as_f64().expect("a number"))
        .collect();
    assert_eq!(row.len(), 22, "{body}");
    row
}

fn assert_same(got: &[f64], want: &[f64], context: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-9, "{context}: column {i}: {g} != {w}");
    }
}

/// An API Gateway answer: its status, its `content-type` and its body as JSON.
fn gateway_answer(answer: &Value) -> (u64, String, Value) {
    let status = answer["statusCode"].as_u64().expect("statusCode");
    // REST (v1) answers carry their headers in `multiValueHeaders`, HTTP API (v2) in `headers`.
    let content_type = answer["headers"]["content-type"]
        .as_str()
        .or(answer["multiValueHeaders"]["content-type"][0].as_str())
        .unwrap_or_default()
        .to_owned();
    let body = answer["body"].as_str().expect("a text body");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {body}"));
    (status, content_type, body)
}

fn assert_gateway_error(answer: &Value, status: u64, code: &str) -> Value {
    let (got, content_type, body) = gateway_answer(answer);
    assert_eq!(got, status, "{answer}");
    assert!(content_type.starts_with("application/json"), "{answer}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(body["error"]["details"].is_array(), "{body}");
    body
}

#[tokio::test]
async fn lambda_function_url_answers_predict_like_the_http_server_and_keeps_its_errors() {
    let want = server_probabilities().await;
    let emulator = Emulator::start().await;
    let function = emulator.start_function().await;
    let client = reqwest::Client::new();

    let response = client
        .post(emulator.url("/predict"))
        .header("content-type", "application/json")
        .body(include_str!("../fixtures/seed_request.json"))
        .send()
        .await
        .expect("function URL answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-model-name"], "santander");
    let body: Value = response.json().await.expect("JSON");
    assert_same(&probabilities(&body), &want, "function URL /predict");

    let mut invalid = seed_record();
    invalid["age"] = serde_json::json!(-5);
    let response = client
        .post(emulator.url("/predict"))
        .json(&invalid)
        .send()
        .await
        .expect("answer");
    let body = assert_error(response, 422, "validation").await;
    assert!(body.to_string().contains("age"), "names the field: {body}");
    let response = client
        .post(emulator.url("/predict"))
        .header("content-type", "application/json")
        .body("{\"age\": ")
        .send()
        .await
        .expect("answer");
    assert_error(response, 400, "malformed_json").await;
    let response = client
        .post(emulator.url("/models/no-such-model/predict"))
        .json(&seed_record())
        .send()
        .await
        .expect("answer");
    assert_error(response, 404, "not_found").await;
    let response = client
        .get(emulator.url("/no-such-route"))
        .send()
        .await
        .expect("answer");
    assert_error(response, 404, "not_found").await;

    function.stop().await;
    emulator.stop().await;
}

#[tokio::test]
async fn lambda_api_gateway_rest_and_http_api_events_answer_like_the_http_server() {
    let want = server_probabilities().await;
    let emulator = Emulator::start().await;
    let function = emulator.start_function().await;

    for event in ["rest-api-v1-predict.json", "http-api-v2-predict.json"] {
        let fixture: Value = serde_json::from_str(
            &std::fs::read_to_string(repo_path(&format!("tests/fixtures/lambda/{event}")))
                .expect("fixture"),
        )
        .expect("fixture JSON");
        let sent: Value =
            serde_json::from_str(fixture["body"].as_str().expect("body")).expect("body JSON");
        assert_eq!(sent, seed_record(), "{event} carries the example record");
        let answer = emulator.invoke(event).await;
        let (status, content_type, body) = gateway_answer(&answer);
        assert_eq!(status, 200, "{event}: {answer}");
        assert!(content_type.starts_with("application/json"), "{answer}");
        assert_same(&probabilities(&body), &want, event);
    }

    let invalid = emulator.invoke("rest-api-v1-predict-invalid.json").await;
    let body = assert_gateway_error(&invalid, 422, "validation");
    assert!(body.to_string().contains("age"), "names the field: {body}");
    let malformed = emulator.invoke("http-api-v2-predict-malformed.json").await;
    assert_gateway_error(&malformed, 400, "malformed_json");
    let unknown = emulator.invoke("http-api-v2-unknown-model.json").await;
    assert_gateway_error(&unknown, 404, "not_found");
    let unknown = emulator.invoke("rest-api-v1-unknown-route.json").await;
    assert_gateway_error(&unknown, 404, "not_found");

    function.stop().await;
    emulator.stop().await;
}

#[tokio::test]
async fn lambda_mode_outside_a_lambda_runtime_fails_naming_what_is_missing() {
    let output = Command::new(env!("CARGO_BIN_EXE_ml-api"))
        .args(["lambda", "--model-dir"])
        .arg(repo_path("models"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("AWS_LAMBDA_FUNCTION_NAME")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .current_dir(repo_path(""))
        .kill_on_drop(true)
        .output()
        .await
        .expect("ml-api runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("missing: AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_FUNCTION_NAME"),
        "{stderr}"
    );
}
