//! Probes, metrics, documentation and routing errors.

use serde_json::Value;

use crate::helpers::{assert_error, seed_record, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_the_model_is_loaded() {
    let app = spawn_app().await;
    let health: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert!(ready["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "santander"));
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_inference_and_model_loading() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert_eq!(
            app.post_json("/predict", &seed_record()).await.status(),
            200
        );
    }
    let _ = app.get("/no-such-route").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for name in [
        "ml_api_http_requests_total{method=\"POST\",route=\"/predict\",status=\"200\"} 3",
        "ml_api_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "ml_api_http_request_duration_seconds_bucket{method=\"POST\",route=\"/predict\",status=\"200\",le=",
        // The scrape does not count itself.
        "ml_api_http_requests_in_flight 0",
        "ml_api_inference_duration_seconds_count{model=\"santander\"}",
        "ml_api_inference_batch_size_count{model=\"santander\"}",
        "ml_api_predictions_total{model=\"santander\"} 3",
        "ml_api_model_load_duration_seconds{model=\"santander\",version=\"1\"}",
        "ml_api_model_cache_events_total{event=\"hit\"}",
        "ml_api_model_info{model=\"santander\"",
        "ml_api_rate_limited_requests_total 0",
        "ml_api_build_info{",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "missing `{name}` in:\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_predict_with_the_seed_example() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/predict"]["post"].is_object());
    let record = &doc["components"]["schemas"]["PredictRecord"];
    assert_eq!(record["properties"]["age"]["type"], "integer");
    assert_eq!(
        record["properties"]["sexo"]["enum"],
        serde_json::json!(["H", "V"])
    );
    assert!(record["required"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "age"));
    assert_eq!(record["examples"][0], seed_record());
    let media = &doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(
        media["example"],
        seed_record(),
        "Swagger UI's Try it out starts from the seed's body"
    );
    app.stop().await;
}

#[tokio::test]
async fn swagger_ui_is_served_from_local_assets() {
    let app = spawn_app().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("cdn") && !html.contains("unpkg"),
        "no CDN references"
    );
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), 200);
    assert!(bundle.text().await.unwrap().len() > 100_000);
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    assert_error(app.get("/nope").await, 404, "not_found").await;
    let response = app.get("/predict").await;
    assert_eq!(response.status(), 405);
    let allow = response
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(allow.as_deref(), Some("POST"));
    assert_error(response, 405, "method_not_allowed").await;
    app.stop().await;
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app.get("/healthz").await;
    assert!(!response.headers()["x-request-id"].is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_autoscaling_signal_integrates_requests_in_inference_and_returns_to_idle() {
    let app = spawn_app().await;
    let batch = Value::Array(vec![seed_record(); 64]);
    // The warm-up at start-up already ran through the pool.
    let before = app
        .metric("ml_api_inference_busy_seconds_total ")
        .await
        .expect("busy seconds exported");
    let started = std::time::Instant::now();
    let answers = futures::future::join_all(
        (0..24).map(|_| async { app.post_json("/predict", &batch).await.status() }),
    )
    .await;
    let wall = started.elapsed().as_secs_f64();
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let busy = app
        .metric("ml_api_inference_busy_seconds_total ")
        .await
        .unwrap()
        - before;
    // Each request spent some time in inference (> 0), and no more than the whole run each.
    assert!(busy > 0.0, "{busy}");
    assert!(
        busy <= wall * 24.0,
        "busy {busy} s over {wall} s with 24 requests"
    );
    assert_eq!(app.metric("ml_api_inference_in_flight ").await, Some(0.0));
    app.stop().await;
}

/// `ml_api_http_requests_in_flight` counts requests being served, so a request whose client
/// hangs up half-way through its body stops counting when the connection goes.
#[tokio::test]
async fn a_request_abandoned_by_its_client_leaves_the_in_flight_gauge() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    // The scrape that reads the gauge does not count itself: an idle server reads 0.
    let gauge = "ml_api_http_requests_in_flight ";
    assert_eq!(app.metric(gauge).await, Some(0.0));

    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /predict HTTP/1.1\r\nhost: ml-api\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{\"fecha_dato\":",
        )
        .await
        .unwrap();
    wait_for_gauge(&app, gauge, 1.0).await;
    drop(stream);
    wait_for_gauge(&app, gauge, 0.0).await;
    app.stop().await;
}

/// Polls `/metrics` until the sample starting with `prefix` equals `value` (20 s at most).
async fn wait_for_gauge(app: &crate::helpers::TestApp, prefix: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = app.metric(prefix).await;
        if now == Some(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{prefix}` stayed at {now:?}, expected {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
