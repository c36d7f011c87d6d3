//! `POST /predict` on the bundled santander model, checked against the outputs that
//! Python's onnxruntime gives for the same records (models/santander/golden.json).

use serde_json::{json, Value};

use crate::helpers::{repo_path, seed_record, spawn_app};

const TOLERANCE: f64 = 1e-5;

struct Golden {
    record: Value,
    probabilities: Vec<f64>,
}

fn golden() -> Vec<Golden> {
    let text =
        std::fs::read_to_string(repo_path("models/santander/golden.json")).expect("golden file");
    let cases: Vec<Value> = serde_json::from_str(&text).expect("golden JSON");
    assert!(cases.len() >= 20, "the golden file holds ~20 records");
    cases
        .into_iter()
        .map(|case| Golden {
            record: case["record"].clone(),
            probabilities: case["probabilities"]
                .as_array()
                .expect("probabilities")
                .iter()
                .map(|p| p.as_f64().expect("number"))
                .collect(),
        })
        .collect()
}

fn assert_close(got: &Value, want: &[f64], context: &str) {
    let got: Vec<f64> = got
        .as_array()
        .unwrap_or_else(|| panic!("{context}: row is not an array: {got}"))
        .iter()
        .map(|p| p.as_f64().expect("number"))
        .collect();
    assert_eq!(got.len(), want.len(), "{context}: width");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOLERANCE,
            "{context}: column {i}: got {g}, want {w}"
        );
    }
}

#[tokio::test]
async fn predict_answers_the_seeds_exact_curl_with_22_probabilities_that_sum_to_1() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/predict"))
        .header("Content-Type", "application/json")
        .body(include_str!("../fixtures/seed_request.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-model-name"], "santander");
    let body: Value = response.json().await.unwrap();
    let keys: Vec<_> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["predictions"],
        "the seed's response has exactly one key"
    );
    let rows = body["predictions"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row: Vec<f64> = rows[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert_eq!(row.len(), 22);
    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    assert_close(&rows[0], &golden()[0].probabilities, "seed record");
    app.stop().await;
}

#[tokio::test]
async fn predict_matches_python_onnxruntime_on_every_golden_record() {
    let app = spawn_app().await;
    for (i, case) in golden().iter().enumerate() {
        let response = app.post_json("/predict", &case.record).await;
        assert_eq!(response.status(), 200, "golden record {i}");
        let body: Value = response.json().await.unwrap();
        assert_close(
            &body["predictions"][0],
            &case.probabilities,
            &format!("golden record {i}"),
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn predict_scores_a_batch_with_one_row_per_record_in_order() {
    let app = spawn_app().await;
    let cases = golden();
    let batch: Vec<Value> = cases.iter().map(|case| case.record.clone()).collect();
    let response = app.post_json("/predict", &Value::Array(batch)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let rows = body["predictions"].as_array().unwrap();
    assert_eq!(rows.len(), cases.len());
    for (i, (row, case)) in rows.iter().zip(&cases).enumerate() {
        assert_close(row, &case.probabilities, &format!("batch row {i}"));
    }
    app.stop().await;
}

#[tokio::test]
async fn predict_with_top_k_names_the_likeliest_products_best_first() {
    let app = spawn_app().await;
    let response = app
        .post_json("/predict?top_k=3", &json!([seed_record(), seed_record()]))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let top = body["top_k"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    let first = top[0].as_array().unwrap();
    assert_eq!(first.len(), 3);
    let mut row: Vec<f64> = body["predictions"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    row.sort_by(|a, b| b.total_cmp(a));
    for (rank, entry) in first.iter().enumerate() {
        assert_eq!(entry["probability"].as_f64().unwrap(), row[rank]);
        let label = entry["label"].as_str().unwrap();
        assert!(
            label.starts_with("ind_") && label.ends_with("_ult1"),
            "{label}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn predict_accepts_the_seeds_quirks_and_ignores_extra_fields() {
    let app = spawn_app().await;
    let mut record = seed_record();
    record["ult_fec_cli_1t"] = json!("");
    record["age"] = json!(" 56");
    record["antiguedad"] = json!(256.0);
    record["renta"] = Value::Null;
    record["something_else"] = json!({"nested": true});
    record.as_object_mut().unwrap().remove("ncodpers");
    let response = app.post_json("/predict", &record).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["predictions"][0].as_array().unwrap().len(), 22);
    app.stop().await;
}

#[tokio::test]
async fn any_model_directory_serves_its_own_schema_and_outputs() {
    // The server is model-agnostic: the tiny fixture has other inputs, types and labels.
    let app = crate::helpers::spawn_app_with(|config| {
        config.model_dir = repo_path("tests/fixtures/models");
        config.default_model = "tiny".to_owned();
    })
    .await;
    let text =
        std::fs::read_to_string(repo_path("tests/fixtures/models/tiny/golden.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    let batch: Vec<Value> = cases.iter().map(|case| case["record"].clone()).collect();
    let body: Value = app
        .post_json("/predict?top_k=1", &Value::Array(batch))
        .await
        .json()
        .await
        .unwrap();
    for (i, case) in cases.iter().enumerate() {
        let want: Vec<f64> = case["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_close(&body["predictions"][i], &want, &format!("tiny golden {i}"));
        assert!(["a", "b", "c"].contains(&body["top_k"][i][0]["label"].as_str().unwrap()));
    }
    let refused = app
        .post_json(
            "/predict",
            &json!({"color": "purple", "count": 3, "weight": 1.0}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    app.stop().await;
}
