//! Dynamic batching under concurrency: many concurrent mixed requests (singles, small
//! batches, invalid ones) are merged into fewer ONNX Runtime calls, and every caller still
//! gets exactly its own answer, equal to a single-request run.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{repo_path, spawn_app_with};

#[tokio::test]
async fn concurrent_requests_are_merged_and_every_answer_matches_a_lone_run() {
    let app = spawn_app_with(|config| {
        config.inference.workers = 1;
        config.inference.batch_max_size = 64;
        config.inference.batch_max_delay = Duration::from_millis(2);
    })
    .await;
    let golden: Vec<Value> =
        serde_json::from_slice(&std::fs::read(repo_path("models/santander/golden.json")).unwrap())
            .unwrap();
    let record = |i: usize| golden[i % golden.len()]["record"].clone();
    let expected = |i: usize| golden[i % golden.len()]["probabilities"].clone();

    let requests = (0..240).map(|i| {
        let client = app.client.clone();
        let url = app.url("/predict");
        async move {
            let (body, want): (Value, Option<Vec<Value>>) = match i % 6 {
                0 => {
                    let mut bad = record(i);
                    bad["age"] = json!(-5);
                    (bad, None)
                }
                1 => (
                    json!([record(i), record(i + 1), record(i + 2)]),
                    Some(vec![expected(i), expected(i + 1), expected(i + 2)]),
                ),
                _ => (record(i), Some(vec![expected(i)])),
            };
            let response = client.post(url).json(&body).send().await.unwrap();
            (
                i,
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
                want,
            )
        }
    });
    let answers = futures::future::join_all(requests).await;
    let mut valid = 0;
    for (i, status, body, want) in answers {
        match want {
            None => {
                assert_eq!(status, 422, "request {i}");
                assert_eq!(body["error"]["details"][0]["field"], "age");
            }
            Some(rows) => {
                valid += 1;
                assert_eq!(status, 200, "request {i}: {body}");
                let got = body["predictions"].as_array().unwrap();
                assert_eq!(got.len(), rows.len(), "request {i} kept its rows together");
                for (g, w) in got.iter().zip(&rows) {
                    for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
                        assert!(
                            (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-5,
                            "request {i}"
                        );
                    }
                }
            }
        }
    }
    let runs = app
        .metric("ml_api_inference_batch_size_count{model=\"santander\"}")
        .await
        .unwrap();
    let rows = app
        .metric("ml_api_inference_batch_size_sum{model=\"santander\"}")
        .await
        .unwrap();
    // Warm-up ran one call per thread; the rest served `valid` requests in fewer calls.
    assert!(
        runs - 1.0 < valid as f64,
        "requests were merged: {runs} calls for {valid} requests"
    );
    assert!(rows / runs > 1.5, "mean batch {}", rows / runs);
    app.stop().await;
}
