//! The constant-rate generator `make bench` measures the half-rate p99 with
//! (`examples/bench_rate.rs`): it sends every scheduled request, reads every answer, and
//! counts a request's latency from when it was due, so a server that falls behind is
//! charged with the wait (latency correction).
//!
//! `make test` builds the example (`cargo build --example bench_rate`) before it runs the
//! tests: `cargo test --all-targets` builds examples as test harnesses, not as the program.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{routing::post, Router};
use serde_json::Value;
use tokio::process::Command;

use crate::helpers::{repo_path, spawn_app};

/// The example's binary, built by cargo beside this test's (`target/<profile>/examples/`).
fn generator() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary sits in target/<profile>/deps");
    let path = profile_dir.join("examples").join("bench_rate");
    assert!(
        path.is_file(),
        "no {}: build it with `cargo build --example bench_rate` (`make test` does)",
        path.display()
    );
    path
}

/// Runs the generator to the end and returns its JSON report.
async fn run_generator(url: &str, rate: &str, duration: &str, connections: &str) -> Value {
    let output = Command::new(generator())
        .args(["--url", url, "--rate", rate, "--duration", duration])
        .args(["--connections", connections])
        .arg("--body")
        .arg(repo_path("tests/fixtures/seed_request.json"))
        .output()
        .await
        .expect("bench_rate runs");
    assert!(
        output.status.success(),
        "bench_rate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("bench_rate prints one JSON object")
}

#[tokio::test]
async fn bench_rate_sends_every_scheduled_request_to_ml_api_and_reads_every_answer() {
    let app = spawn_app().await;
    let url = format!("http://{}/predict", app.addr);

    // 400 req/s for 0.5 s: 200 requests due, the last at 497.5 ms.
    let report = run_generator(&url, "400", "500ms", "8").await;

    assert_eq!(report["requests"], 200);
    assert_eq!(report["answered"], 200);
    assert_eq!(report["statuses"], serde_json::json!({"200": 200}));
    assert_eq!(report["errors"], serde_json::json!({}));
    // No answer can come before its request was due.
    assert!(report["elapsed_s"].as_f64().unwrap() >= 0.4975, "{report}");
    assert!(
        report["rps"].as_f64().unwrap() <= 200.0 / 0.4975,
        "{report}"
    );
    for p in ["p50", "p90", "p99", "p99.9", "max", "mean"] {
        assert!(
            report["latency_ms"][p].as_f64().unwrap() > 0.0,
            "{p}: {report}"
        );
    }
}

#[tokio::test]
async fn bench_rate_counts_latency_from_when_a_request_was_due_not_when_it_was_sent() {
    // A server that takes at least 50 ms per answer: 4 connections carry at most 80 req/s.
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let slow = Router::new().route(
        "/predict",
        post(move |body: axum::body::Bytes| async move {
            assert_eq!(
                body.as_ref(),
                include_bytes!("../fixtures/seed_request.json")
            );
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, slow).await });

    // 200 requests due 2.5 ms apart. The k-th (from 0) is answered at the earliest
    // (k / 4 + 1) × 50 ms after the first was due, so it waited for a free connection
    // about 10 × k ms: an open-loop generator charges that wait, a closed-loop one would
    // report about 50 ms for every request.
    let report = run_generator(&format!("http://{addr}/predict"), "400", "500ms", "4").await;
    server.abort();

    assert_eq!(report["answered"], 200, "{report}");
    assert_eq!(received.load(Ordering::Relaxed), 200);
    let latency = |p: &str| report["latency_ms"][p].as_f64().unwrap();
    // The 100 requests from k = 100 on waited at least 26 × 50 − 250 = 1,050 ms each.
    assert!(latency("p50") >= 1_000.0, "{report}");
    // The last one (k = 199) at least 50 × 50 − 497.5 = 2,002.5 ms.
    assert!(latency("max") >= 2_000.0, "{report}");
}
