//! Tests that run the real `ml-api` binary as a child process: Sentry capture, OTLP export,
//! and graceful shutdown on SIGTERM. Process-wide state (Sentry client, tracer provider,
//! signal handlers) is why these do not run in-process.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::Uri, routing::post, Router};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, trace::v1::Span,
};
use prost::Message;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    child::ServerProcess,
    helpers::{metric_at, seed_record},
};

/// A local HTTP endpoint that records every request (path and body) it receives.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<(String, Bytes)>>>);

impl Capture {
    pub(crate) async fn start() -> (Self, String) {
        let capture = Self::default();
        let app = Router::new()
            .fallback(post(record))
            .with_state(capture.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (capture, format!("127.0.0.1:{}", addr.port()))
    }

    /// Waits until a received request satisfies `test`.
    async fn wait_for(&self, limit: Duration, test: impl Fn(&str, &[u8]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|(path, body)| test(path, body))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Capture {
    /// Every span received on `/v1/traces` so far.
    fn spans(&self) -> Vec<Span> {
        let requests = self.0.lock().unwrap();
        requests
            .iter()
            .filter(|(path, _)| path == "/v1/traces")
            .filter_map(|(_, body)| ExportTraceServiceRequest::decode(body.clone()).ok())
            .flat_map(|request| request.resource_spans)
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
            .collect()
    }

    /// Waits until the spans of `trace` received so far include every name in `names`;
    /// returns them (whatever arrived by the deadline).
    pub(crate) async fn trace(&self, trace: &[u8], names: &[&str]) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|span| span.trace_id == trace)
                .collect();
            let complete = names
                .iter()
                .all(|name| spans.iter().any(|span| span.name == *name));
            if complete || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The one span called `name` among `spans`.
pub(crate) fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|span| span.name == name).collect();
    let listed: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    assert_eq!(found.len(), 1, "one `{name}` span in the trace: {listed:?}");
    found[0]
}

async fn record(State(capture): State<Capture>, uri: Uri, body: Bytes) -> &'static str {
    capture
        .0
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), body));
    "{}"
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn server_errors_reach_sentry_with_request_context() {
    let (sentry, addr) = Capture::start().await;
    let mut server = ServerProcess::start(
        &[
            "--model-dir",
            "tests/fixtures/models",
            "--default-model",
            "broken",
        ],
        &[("SENTRY_DSN", format!("http://public@{addr}/42"))],
    )
    .await;
    let response = reqwest::Client::new()
        .post(server.url("/predict"))
        .header("x-request-id", "boom-1")
        .json(&json!({"x": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal");
    assert_eq!(
        body["error"]["message"], "internal error",
        "internals are not leaked"
    );

    let arrived = sentry
        .wait_for(Duration::from_secs(15), |path, body| {
            path == "/api/42/envelope/"
                && contains(body, b"\"type\":\"event\"")
                && contains(body, b"request failed")
                && contains(body, b"/predict")
        })
        .await;
    assert!(
        arrived,
        "an error event with the request's URL reached the Sentry endpoint"
    );
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).await.success());
    // The log line names the request and keeps the cause the answer does not show. Lines
    // are read from the child's stdout by another task: wait until it has arrived.
    let failure_line = |logs: Vec<String>| {
        logs.iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|log| log["message"] == "request failed")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut failure = failure_line(server.logs());
    while failure.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        failure = failure_line(server.logs());
    }
    let failure = failure.expect("the failure is logged");
    assert_eq!(failure["level"], "ERROR", "{failure}");
    assert_eq!(failure["request_id"], "boom-1", "{failure}");
    assert_eq!(failure["route"], "/predict", "{failure}");
    assert_eq!(failure["status"], 500, "{failure}");
    let cause = failure["error"].as_str().unwrap_or("");
    assert!(!cause.is_empty() && cause != "internal error", "{failure}");
}

#[tokio::test]
async fn request_spans_are_exported_over_otlp_under_the_callers_trace() {
    let (collector, addr) = Capture::start().await;
    let mut server = ServerProcess::start(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(server.url("/predict"))
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .json(&seed_record())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Spans are batched; shutting down flushes them.
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).await.success());
    let trace_bytes = hex::decode(trace_id).unwrap();
    let parent_bytes = hex::decode(parent_id).unwrap();
    const STAGES: [&str; 4] = ["decode", "queue_wait", "inference", "encode"];
    let spans = collector
        .trace(
            &trace_bytes,
            &[
                "POST /predict",
                "decode",
                "queue_wait",
                "inference",
                "encode",
            ],
        )
        .await;
    let request = named(&spans, "POST /predict");
    assert_eq!(
        request.parent_span_id, parent_bytes,
        "the request's span is a child of the caller's"
    );
    assert_stages_in_order_within(&spans, request, &STAGES);
}

/// The spans called `stages` are children of `parent`, lie within it and follow each other.
pub(crate) fn assert_stages_in_order_within(spans: &[Span], parent: &Span, stages: &[&str]) {
    let stages: Vec<&Span> = stages.iter().map(|name| named(spans, name)).collect();
    for stage in &stages {
        assert_eq!(
            stage.parent_span_id, parent.span_id,
            "`{}` is a child of `{}`",
            stage.name, parent.name
        );
        assert!(
            parent.start_time_unix_nano <= stage.start_time_unix_nano
                && stage.end_time_unix_nano <= parent.end_time_unix_nano,
            "`{}` lies within `{}`",
            stage.name,
            parent.name
        );
    }
    for pair in stages.windows(2) {
        assert!(
            pair[0].end_time_unix_nano <= pair[1].start_time_unix_nano,
            "`{}` ends before `{}` starts",
            pair[0].name,
            pair[1].name
        );
    }
}

#[tokio::test]
async fn requests_batched_together_each_trace_their_queue_wait_and_inference() {
    let (collector, addr) = Capture::start().await;
    // Requests arriving within 200 ms of each other share one ONNX Runtime call.
    let mut server = ServerProcess::start(
        &["--batch-max-delay", "200ms"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
    )
    .await;
    let client = reqwest::Client::new();
    let trace_ids: Vec<String> = (0..4).map(|i| format!("{:032x}", 0xabc0 + i)).collect();
    let answers = futures::future::join_all(trace_ids.iter().map(|trace_id| {
        client
            .post(server.url("/predict"))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .json(&seed_record())
            .send()
    }))
    .await;
    for answer in answers {
        assert_eq!(answer.unwrap().status(), 200);
    }
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).await.success());
    for trace_id in &trace_ids {
        let trace = hex::decode(trace_id).unwrap();
        let spans = collector
            .trace(&trace, &["POST /predict", "queue_wait", "inference"])
            .await;
        let request = named(&spans, "POST /predict");
        for stage in ["queue_wait", "inference"] {
            assert_eq!(
                named(&spans, stage).parent_span_id,
                request.span_id,
                "trace {trace_id}: `{stage}` is a child of its own request's span"
            );
        }
    }
}

/// `ml_api_http_requests_in_flight` as `/metrics` reports it.
async fn in_flight(server: &ServerProcess) -> f64 {
    metric_at(&server.url(""), "ml_api_http_requests_in_flight ")
        .await
        .expect("ml_api_http_requests_in_flight in /metrics")
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let mut server =
        ServerProcess::start(&["--shutdown-delay", "1s", "--shutdown-grace", "10s"], &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A request whose body is still arriving when SIGTERM lands.
    let body = seed_record().to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let host = server.base.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&host).await.unwrap();
    let request_head = format!(
        "POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The scrape that reads the gauge does not count itself.
    let idle = in_flight(&server).await;
    assert_eq!(idle, 0.0, "an idle server reports no request in flight");
    slow.write_all(request_head.as_bytes()).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight(&server).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never counted the slow request in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.terminate();
    // Readiness fails for the whole --shutdown-delay, from the moment SIGTERM is handled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        match client.get(server.url("/readyz")).send().await {
            Ok(ready) if ready.status() == 503 => break ready,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("readiness did not fail while draining: {other:?}"),
        }
    };
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "draining");

    slow.write_all(tail.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_string(&mut response))
        .await
        .expect("the in-flight request completes")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"predictions\""));

    let status = server.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        TcpStream::connect(&host).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn access_log_keeps_the_sampled_share_of_successes_and_every_error() {
    let mut server = ServerProcess::start(&["--access-log-sample-rate", "0.25"], &[]).await;
    let client = reqwest::Client::new();
    for i in 0..8 {
        let response = client
            .post(server.url("/predict"))
            .header("x-request-id", format!("ok-{i}"))
            .json(&seed_record())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for i in 0..3 {
        let response = client
            .post(server.url("/predict"))
            .header("x-request-id", format!("bad-{i}"))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    let missing = client
        .get(server.url("/no-such-route"))
        .header("x-request-id", "missing")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Lines are written by the log writer's thread; the last ones are flushed at exit.
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).await.success());

    let access_ids = |logs: Vec<String>| -> Vec<(String, u64)> {
        logs.iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|log| log["target"] == "ml_api::access")
            .map(|log| {
                (
                    log["request_id"].as_str().unwrap_or("").to_owned(),
                    log["status"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut lines = access_ids(server.logs());
    while lines.len() < 6 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        lines = access_ids(server.logs());
    }
    let ok: Vec<&str> = lines
        .iter()
        .filter(|(id, _)| id.starts_with("ok-"))
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(ok, ["ok-3", "ok-7"], "one success in four: {lines:?}");
    for id in ["bad-0", "bad-1", "bad-2"] {
        assert!(
            lines.contains(&(id.to_owned(), 400)),
            "{id} is logged: {lines:?}"
        );
    }
    assert!(lines.contains(&("missing".to_owned(), 404)), "{lines:?}");
    assert_eq!(lines.len(), 6, "{lines:?}");
}

#[tokio::test]
async fn the_log_filter_silences_the_access_log() {
    let mut server = ServerProcess::start(
        &[],
        &[("RUST_LOG", "info,ort=warn,ml_api::access=off".to_owned())],
    )
    .await;
    let client = reqwest::Client::new();
    let served = client
        .post(server.url("/predict"))
        .json(&seed_record())
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let refused = client
        .post(server.url("/predict"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // Every buffered line is written by the time the process exits.
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).await.success());

    let logs: Vec<Value> = server
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        logs.iter().any(|log| log["message"] == "serving"),
        "the other info lines are written: {logs:?}"
    );
    assert!(
        !logs.iter().any(|log| log["target"] == "ml_api::access"),
        "no access line: {logs:?}"
    );
}

/// The kernel's view of the process: `THP_enabled` in `/proc/<pid>/status`.
fn huge_pages_enabled(server: &ServerProcess) -> String {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .expect("the kernel reports THP_enabled")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn transparent_huge_pages_are_off_unless_asked_for() {
    let default = ServerProcess::start(&[], &[]).await;
    assert_eq!(huge_pages_enabled(&default), "0");
    let asked = ServerProcess::start(&["--huge-pages", "true"], &[]).await;
    assert_eq!(huge_pages_enabled(&asked), "1");
    let by_env = ServerProcess::start(&[], &[("ML_API_HUGE_PAGES", "true".to_owned())]).await;
    assert_eq!(huge_pages_enabled(&by_env), "1");
}
