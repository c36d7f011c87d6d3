//! Test harness: a real server on a random loopback port, driven over HTTP.

use std::{net::SocketAddr, path::PathBuf};

use ml_api::{config::ServeConfig, startup::Application};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The seed's exact request body, from its curl command.
pub fn seed_record() -> Value {
    serde_json::from_str(include_str!("../fixtures/seed_request.json"))
        .expect("seed request parses")
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The gRPC listener, unless the test turned gRPC off.
    pub grpc_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The default model (`santander`) from `models/`; rate limiting off (its own tests turn it on).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let mut config = ServeConfig::for_tests(repo_path("models"), "santander");
    config.inference.ort_dylib = repo_path(".ort/lib/libonnxruntime.so.1.31.1");
    config.inference.workers = 2;
    config.rate_limit.enabled = false;
    customise(&mut config);
    let app = Application::build(config)
        .await
        .expect("the application builds");
    let addr = app.local_addr();
    let grpc_addr = app.grpc_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        grpc_addr,
        client: reqwest::Client::new(),
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    /// The value of one sample in `/metrics` whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        metric_at(&self.url(""), prefix).await
    }
}

/// The value of one sample in `{base}/metrics` whose line starts with `prefix`.
pub async fn metric_at(base: &str, prefix: &str) -> Option<f64> {
    let response = reqwest::get(format!("{base}/metrics")).await.ok()?;
    let text = response.text().await.ok()?;
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Asserts the service's error shape and returns the body.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "body {body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(body["error"]["details"].is_array());
    body
}

/// Polls a model record (`GET /models/{id}` at `record_url`) until training ends, and returns
/// the final record (`ready` or `failed`); panics after 30 s.
pub async fn wait_for_training(client: &reqwest::Client, record_url: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let record = get_json(client, record_url).await;
        if matches!(record["status"].as_str(), Some("ready" | "failed")) {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "training did not finish in 30 s: {record}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `GET url` and its JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON body")
}

/// Held by tests that load the machine on purpose (CPU burners) and by tests that measure a
/// rate over wall-clock seconds, so the two never overlap within one `cargo test` run.
pub static MACHINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The training API's own request (`train.json`, iris in its shape).
pub fn train_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_path("train.json")).expect("train.json"))
        .expect("train.json parses")
}

/// `POST {base}/models` with `body`: asserts 201 and returns the new model's id.
pub async fn start_training(client: &reqwest::Client, base: &str, body: &Value) -> String {
    let created = client
        .post(format!("{base}/models"))
        .json(body)
        .send()
        .await
        .expect("POST /models");
    assert_eq!(created.status(), 201);
    created.json::<Value>().await.expect("a JSON body")["model_id"]
        .as_str()
        .expect("model_id")
        .to_owned()
}
