//! Bad input gets a precise status and a JSON body naming each field and its problem.

use serde_json::{json, Value};

use crate::helpers::{assert_error, seed_record, spawn_app, spawn_app_with};

fn reasons(body: &Value) -> Vec<(String, String)> {
    body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["field"].as_str().unwrap().to_owned(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn predict_returns_422_listing_every_offending_field() {
    let app = spawn_app().await;
    let mut record = seed_record();
    record.as_object_mut().unwrap().remove("age");
    record["antiguedad"] = json!("many");
    record["cod_prov"] = json!(999);
    record["sexo"] = json!("X");
    record["segmento"] = json!(7);
    let body = assert_error(app.post_json("/predict", &record).await, 422, "validation").await;
    let mut got = reasons(&body);
    got.sort();
    let want = [
        ("age", "missing"),
        ("antiguedad", "type"),
        ("cod_prov", "range"),
        ("segmento", "type"),
        ("sexo", "category"),
    ];
    assert_eq!(got, want.map(|(f, r)| (f.to_owned(), r.to_owned())));
    for detail in body["error"]["details"].as_array().unwrap() {
        assert!(!detail["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        app.metric("ml_api_validation_failures_total{action=\"reject\",feature=\"sexo\",model=\"santander\",reason=\"category\"}").await,
        Some(1.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn predict_names_the_record_of_a_bad_field_in_a_batch() {
    let app = spawn_app().await;
    let mut bad = seed_record();
    bad["age"] = json!(-5);
    let body = assert_error(
        app.post_json("/predict", &json!([seed_record(), bad]))
            .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(reasons(&body), [("[1].age".to_owned(), "range".to_owned())]);
    app.stop().await;
}

#[tokio::test]
async fn predict_returns_422_for_bodies_that_are_not_records() {
    let app = spawn_app().await;
    for body in [
        json!([]),
        json!(3),
        json!("record"),
        json!([1, 2]),
        json!(null),
    ] {
        assert_error(app.post_json("/predict", &body).await, 422, "validation").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn predict_returns_422_for_a_bad_top_k() {
    let app = spawn_app().await;
    for query in ["top_k=0", "top_k=23", "top_k=abc", "top_k=-1"] {
        let response = app
            .post_json(&format!("/predict?{query}"), &seed_record())
            .await;
        assert_error(response, 422, "validation").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn predict_returns_400_for_malformed_json() {
    let app = spawn_app().await;
    for text in ["{\"age\": ", "not json", "{\"a\":1}}", ""] {
        let response = app
            .client
            .post(app.url("/predict"))
            .header("content-type", "application/json")
            .body(text)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "malformed_json").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn predict_returns_415_without_a_json_content_type() {
    let app = spawn_app().await;
    let seed = seed_record().to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app.client.post(app.url("/predict")).body(seed.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_error(request.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn predict_returns_413_for_a_body_over_the_limit() {
    let app = spawn_app_with(|config| config.http.max_body_bytes = 4096).await;
    let batch = Value::Array(vec![seed_record(); 20]);
    let body = assert_error(
        app.post_json("/predict", &batch).await,
        413,
        "payload_too_large",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("4096"));
    // Just under the limit still works.
    assert_eq!(
        app.post_json("/predict", &seed_record()).await.status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn predict_refuses_a_batch_over_the_record_limit() {
    let app = spawn_app_with(|config| config.http.max_batch_records = 3).await;
    let body = assert_error(
        app.post_json("/predict", &Value::Array(vec![seed_record(); 4]))
            .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["error"]["details"][0]["reason"], "too_many_records");
    app.stop().await;
}

#[tokio::test]
async fn predict_never_answers_500_to_hostile_values() {
    let app = spawn_app().await;
    let hostile = [
        json!(1e308),
        json!(-1e308),
        json!(u64::MAX),
        json!(i64::MIN),
        json!("NaN"),
        json!("inf"),
        json!("\u{0000}\u{ffff}é漢"),
        json!([[[]]]),
        json!({"$ref": "x"}),
        json!(true),
        json!(""),
    ];
    let mut record = seed_record();
    let fields: Vec<String> = record.as_object().unwrap().keys().cloned().collect();
    for field in &fields {
        for value in &hostile {
            record[field] = value.clone();
            let status = app.post_json("/predict", &record).await.status().as_u16();
            assert!(
                status == 200 || status == 422,
                "{field} = {value}: status {status}"
            );
        }
        record[field] = seed_record()[field].clone();
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_over_the_time_limit_gets_503_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|config| {
        config.http.request_timeout = std::time::Duration::from_millis(300)
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // Promise a body, send half of it, and stall.
    let head = "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"age\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read(&mut response),
    )
    .await
    .expect("the server answers before the client finishes")
    .unwrap();
    let response = String::from_utf8_lossy(&response[..read]);
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("\"code\":\"timeout\""), "{response}");
    app.stop().await;
}
