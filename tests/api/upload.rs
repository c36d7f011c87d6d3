//! `POST /models/upload`: bring your own ONNX file and model card; it is proven servable
//! (loaded and warmed up) before it is stored.

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::helpers::{assert_error, repo_path, spawn_app, spawn_app_with, TestApp};

pub(crate) fn tiny() -> (Vec<u8>, Value) {
    let dir = repo_path("tests/fixtures/models/tiny");
    let model = std::fs::read(dir.join("model.onnx")).unwrap();
    let card = serde_json::from_slice(&std::fs::read(dir.join("card.json")).unwrap()).unwrap();
    (model, card)
}

/// The `tiny` fixture as a `POST /models/upload` form, named `name`.
pub(crate) fn tiny_form(name: &str) -> Form {
    let (model, card) = tiny();
    Form::new()
        .part("model", Part::bytes(model).file_name("model.onnx"))
        .part("card", Part::text(card.to_string()))
        .text("name", name.to_owned())
}

async fn upload(app: &TestApp, model: Vec<u8>, card: &Value, name: &str) -> reqwest::Response {
    let form = Form::new()
        .part("model", Part::bytes(model).file_name("model.onnx"))
        .part("card", Part::text(card.to_string()))
        .text("name", name.to_owned());
    app.client
        .post(app.url("/models/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_uploaded_model_is_validated_stored_and_served() {
    let app = spawn_app().await;
    let (model, card) = tiny();
    let response = upload(&app, model.clone(), &card, "colours").await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "colours");
    assert_eq!(created["status"], "ready");
    let id = created["model_id"].as_str().unwrap();

    let golden: Vec<Value> = serde_json::from_slice(
        &std::fs::read(repo_path("tests/fixtures/models/tiny/golden.json")).unwrap(),
    )
    .unwrap();
    let answer: Value = app
        .post_json("/models/colours/predict", &golden[0]["record"])
        .await
        .json()
        .await
        .unwrap();
    for (got, want) in answer["predictions"][0]
        .as_array()
        .unwrap()
        .iter()
        .zip(golden[0]["probabilities"].as_array().unwrap())
    {
        assert!((got.as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-5);
    }
    let downloaded = app
        .get(&format!("/models/{id}/onnx"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        downloaded.as_ref(),
        model.as_slice(),
        "the stored bytes are the uploaded bytes"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unservable_upload_is_refused_with_the_reason_and_not_stored() {
    let app = spawn_app().await;
    let (model, card) = tiny();
    let garbage = assert_error(
        upload(&app, b"not an onnx file".to_vec(), &card, "junk").await,
        422,
        "validation",
    )
    .await;
    assert_eq!(garbage["error"]["details"][0]["field"], "model");
    let mut wrong_card = card.clone();
    wrong_card["labels"] = json!(["only", "two"]);
    let mismatch = assert_error(
        upload(&app, model.clone(), &wrong_card, "junk").await,
        422,
        "validation",
    )
    .await;
    assert!(
        mismatch["error"]["message"]
            .as_str()
            .unwrap()
            .contains("labels"),
        "{mismatch}"
    );
    let mut bad_json = card.clone();
    bad_json["surprise"] = json!(1);
    assert_error(
        upload(&app, model, &bad_json, "junk").await,
        422,
        "validation",
    )
    .await;
    let listed: Value = app.get("/models?name=junk").await.json().await.unwrap();
    assert_eq!(listed["total"], 0, "nothing refused was stored");
    app.stop().await;
}

#[tokio::test]
async fn an_upload_over_the_limit_gets_413() {
    let app = spawn_app_with(|config| config.http.max_upload_bytes = 256).await;
    let (model, card) = tiny();
    assert!(model.len() > 256);
    assert_error(
        upload(&app, model, &card, "big").await,
        413,
        "payload_too_large",
    )
    .await;
    app.stop().await;
}
