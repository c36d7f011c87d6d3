//! Seed 2's training API, exactly as its clients used it, on the embedded registry
//! (`make run`'s mode: training runs in-process on the blocking pool).

use serde_json::{json, Value};

use crate::helpers::{
    assert_error, repo_path, spawn_app, spawn_app_with, wait_for_training, TestApp,
};

fn seed_train_body() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_path("train.json")).unwrap()).unwrap()
}

const SEED_QUERY: &str = "sepal_length=5.9&sepal_width=3.0&petal_length=5.1&petal_width=1.8";

async fn wait_until_ready(app: &TestApp, id: &str) -> Value {
    wait_for_training(&app.client, &app.url(&format!("/models/{id}"))).await
}

#[tokio::test]
async fn seed_2_trains_predicts_and_deletes_with_its_exact_requests() {
    let app = spawn_app().await;
    let response = app.post_json("/models", &seed_train_body()).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["model_id"].as_str().unwrap().to_owned();
    assert!(id.parse::<uuid::Uuid>().is_ok());
    assert_eq!(location, format!("/models/{id}"));

    // While it trains, seed 2 answered {"model_status": "training"}; then {"predicted_class": 2}.
    let first: Value = app
        .get(&format!("/models/{id}?{SEED_QUERY}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        first["model_status"] == "training" || first["predicted_class"] == 2,
        "{first}"
    );
    let record = wait_until_ready(&app, &id).await;
    assert_eq!(record["status"], "ready", "{record}");
    assert_eq!(
        record["columns"],
        json!(["sepal_length", "sepal_width", "petal_length", "petal_width"])
    );
    assert!(record["metrics"]["accuracy"].as_f64().unwrap() > 0.9);

    let response = app.get(&format!("/models/{id}?{SEED_QUERY}")).await;
    assert_eq!(response.status(), 200);
    let prediction: Value = response.json().await.unwrap();
    assert_eq!(
        prediction["predicted_class"],
        json!(2),
        "an int, as the seed's classes were"
    );
    let probabilities = prediction["probabilities"].as_object().unwrap();
    assert_eq!(probabilities.len(), 3);
    let total: f64 = probabilities.values().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5);

    // The trained model is in the registry under its name, as ONNX.
    let onnx = app.get(&format!("/models/{id}/onnx")).await;
    assert_eq!(onnx.status(), 200);
    assert!(onnx.bytes().await.unwrap().len() > 100);
    let by_name = app
        .post_json("/models/model/predict", &json!({"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}))
        .await;
    assert_eq!(by_name.status(), 200);

    let deleted = app
        .client
        .delete(app.url(&format!("/models/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        deleted.json::<Value>().await.unwrap(),
        json!({"status": "model deleted"})
    );
    let again = app
        .client
        .delete(app.url(&format!("/models/{id}")))
        .send()
        .await
        .unwrap();
    assert_error(again, 404, "not_found").await;
    assert_error(
        app.get(&format!("/models/{id}?{SEED_QUERY}")).await,
        404,
        "not_found",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn seed_2_answers_404_for_unknown_ids_and_422_for_bad_query_values() {
    let app = spawn_app().await;
    assert_error(
        app.get(&format!("/models/{}?{SEED_QUERY}", uuid::Uuid::now_v7()))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(app.get("/models/not-a-uuid").await, 404, "not_found").await;

    let created: Value = app
        .post_json("/models", &seed_train_body())
        .await
        .json()
        .await
        .unwrap();
    let id = created["model_id"].as_str().unwrap().to_owned();
    wait_until_ready(&app, &id).await;
    let body = assert_error(
        app.get(&format!(
            "/models/{id}?sepal_length=abc&sepal_width=3.0&petal_length=5.1"
        ))
        .await,
        422,
        "validation",
    )
    .await;
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["sepal_length", "petal_width"]);
    app.stop().await;
}

#[tokio::test]
async fn training_requests_are_validated_field_by_field() {
    let app = spawn_app().await;
    let mut body = seed_train_body();
    body["penalty"] = json!("l1");
    body["solver"] = json!("lbfgs");
    body["C"] = json!(-1);
    body["surprise"] = json!(true);
    let error = assert_error(app.post_json("/models", &body).await, 422, "validation").await;
    let fields: Vec<&str> = error["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    for field in ["C", "surprise"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    assert!(
        fields.iter().any(|f| *f == "solver" || *f == "penalty"),
        "{fields:?}"
    );
    let mut body = seed_train_body();
    body["name"] = json!("bad name!");
    assert_error(app.post_json("/models", &body).await, 422, "validation").await;
    app.stop().await;
}

#[tokio::test]
async fn a_model_that_cannot_train_ends_failed_with_its_error() {
    let app = spawn_app().await;
    // One class only is refused up front (422); one that vanishes in the train/test split
    // can only be found by training.
    let refused = json!({"columns": ["x"], "features": [[1.0], [2.0]], "classes": [1, 1], "penalty": "l2", "solver": "lbfgs"});
    assert_error(app.post_json("/models", &refused).await, 422, "validation").await;
    let body = json!({
        "columns": ["x"], "features": [[1.0], [2.0], [3.0], [4.0], [5.0]], "classes": [0, 0, 0, 0, 1],
        "test_size": 0.2, "random_seed": 5, "penalty": "l2", "solver": "lbfgs"
    });
    let created: Value = app.post_json("/models", &body).await.json().await.unwrap();
    let id = created["model_id"].as_str().unwrap().to_owned();
    let record = wait_until_ready(&app, &id).await;
    assert_eq!(record["status"], "failed");
    assert!(
        record["error"].as_str().unwrap().contains("one class"),
        "{record}"
    );
    let answer: Value = app
        .get(&format!("/models/{id}?x=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["model_status"], "failed");
    assert!(answer["error"].as_str().is_some());
    app.stop().await;
}

#[tokio::test]
async fn records_with_string_labels_and_categorical_features_train_and_predict() {
    let app = spawn_app_with(|config| config.admin_api_key = Some("s3cret".into())).await;
    let records: Vec<Value> = (0..60)
        .map(|i| {
            let colour = ["red", "green", "blue"][i % 3];
            let size = (i % 10) as f64;
            let label = if colour == "red" || size > 6.0 {
                "yes"
            } else {
                "no"
            };
            json!({"colour": colour, "size": size, "label": label})
        })
        .collect();
    let body = json!({"name": "shapes", "records": records, "target": "label", "C": 10.0});
    assert_error(app.post_json("/models", &body).await, 401, "unauthorized").await;
    let wrong = app
        .client
        .post(app.url("/models"))
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(wrong, 403, "forbidden").await;
    let created = app
        .client
        .post(app.url("/models"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["name"], "shapes");
    let record = wait_until_ready(&app, created["model_id"].as_str().unwrap()).await;
    assert_eq!(record["status"], "ready", "{record}");

    let answer: Value = app
        .post_json(
            "/models/shapes:latest/predict?top_k=1",
            &json!([{"colour": "red", "size": 1}, {"colour": "blue", "size": 2}]),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["top_k"][0][0]["label"], "yes", "{answer}");
    assert_eq!(answer["top_k"][1][0]["label"], "no", "{answer}");
    let listed: Value = app
        .get("/models?name=shapes&status=ready")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1);
    app.stop().await;
}
