//! Safe ONNX import over `POST /models/upload`: scikit-learn ZipMap models are served as
//! probability tensors with their class names, reference outputs are enforced, and files
//! that are not standard, self-contained ONNX are refused before ONNX Runtime sees them.
//! Fixtures: `tests/fixtures/import/` (skl2onnx + Python onnxruntime 1.31.1, see its script).

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::{
    child::ServerProcess,
    cluster::registry_env,
    helpers::{assert_error, get_json, repo_path, seed_record, spawn_app, TestApp},
    redis_server::RedisServer,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_path("tests/fixtures/import").join(name)).unwrap()
}

/// `expected.json`: the records, and per model its classes, labels and probabilities.
fn expected() -> Value {
    serde_json::from_slice(&fixture("expected.json")).unwrap()
}

async fn upload(
    app: &TestApp,
    model: Vec<u8>,
    name: &str,
    reference: Option<&Value>,
) -> reqwest::Response {
    upload_to(
        &app.client,
        &app.url("/models/upload"),
        model,
        name,
        reference,
    )
    .await
}

async fn upload_to(
    client: &reqwest::Client,
    url: &str,
    model: Vec<u8>,
    name: &str,
    reference: Option<&Value>,
) -> reqwest::Response {
    let mut form = Form::new()
        .part("model", Part::bytes(model).file_name("model.onnx"))
        .text("name", name.to_owned());
    if let Some(reference) = reference {
        form = form.part("reference", Part::text(reference.to_string()));
    }
    client.post(url).multipart(form).send().await.unwrap()
}

fn assert_rows_close(got: &Value, want: &Value, tolerance: f64) {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.as_array().unwrap(), w.as_array().unwrap());
        assert_eq!(g.len(), w.len(), "columns of row {i}");
        for (a, b) in g.iter().zip(w) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= tolerance, "row {i}: {a} vs {b}");
        }
    }
}

fn field_error(body: &Value) -> (&str, &str, &str) {
    let detail = &body["error"]["details"][0];
    (
        detail["field"].as_str().unwrap_or_default(),
        detail["reason"].as_str().unwrap_or_default(),
        detail["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_zipmap_model_is_served_as_probabilities_with_its_class_names() {
    let app = spawn_app().await;
    let expected = expected();
    let want = &expected["models"]["iris_strings"];
    let uploaded = fixture("iris_strings.onnx");
    let response = upload(&app, uploaded.clone(), "iris", None).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["model_id"].as_str().unwrap().to_owned();

    let record: Value = app
        .get(&format!("/models/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["labels"], want["classes"], "labels from the ZipMap");
    assert_eq!(record["card"]["output"], "output_probability");

    // The seed-shaped route, the whole batch at once, with the best class by name.
    let response = app
        .post_json("/models/iris/predict?top_k=1", &expected["records"])
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_rows_close(&answer["predictions"], &want["probabilities"], 1e-5);
    let best: Vec<&Value> = answer["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ranked| &ranked[0]["label"])
        .collect();
    let labels: Vec<&Value> = want["labels"].as_array().unwrap().iter().collect();
    assert_eq!(
        best, labels,
        "the predicted class names equal onnxruntime's labels"
    );

    // V2 infer: the probability tensor under the ZipMap output's name.
    let records = expected["records"].as_array().unwrap();
    let inputs: Vec<Value> = expected["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| {
            let column: Vec<Value> = records.iter().map(|r| json!([r[feature.as_str().unwrap()]])).collect();
            json!({"name": feature, "datatype": "FP32", "shape": [records.len(), 1], "data": column})
        })
        .collect();
    let response = app
        .post_json("/v2/models/iris/infer", &json!({"inputs": inputs}))
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let output = &answer["outputs"][0];
    assert_eq!(output["name"], "output_probability");
    assert_eq!(output["shape"], json!([records.len(), 3]));
    let flat: Vec<f64> = output["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| match v {
            Value::Array(row) => row.iter().map(|x| x.as_f64().unwrap()).collect(),
            other => vec![other.as_f64().unwrap()],
        })
        .collect();
    let rows: Vec<Value> = flat.chunks(3).map(|row| json!(row)).collect();
    assert_rows_close(&json!(rows), &want["probabilities"], 1e-5);

    // What is stored is the normalised graph, not the upload.
    let stored = app
        .get(&format!("/models/{id}/onnx"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_ne!(stored.as_ref(), uploaded.as_slice());
    assert!(!stored.windows(6).any(|w| w == b"ZipMap"), "no ZipMap left");
    app.stop().await;
}

#[tokio::test]
async fn integer_class_labels_are_served_as_integers_by_the_seed_route() {
    let app = spawn_app().await;
    let expected = expected();
    let want = &expected["models"]["iris_ints"];
    let response = upload(&app, fixture("iris_ints.onnx"), "iris-ints", None).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["model_id"].as_str().unwrap();

    for (i, record) in expected["records"].as_array().unwrap().iter().enumerate() {
        let query: Vec<String> = record
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let answer: Value = app
            .get(&format!("/models/{id}?{}", query.join("&")))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["predicted_class"], want["labels"][i], "record {i}");
        for (k, class) in want["classes"].as_array().unwrap().iter().enumerate() {
            let got = answer["probabilities"][class.as_str().unwrap()]
                .as_f64()
                .unwrap();
            let want = want["probabilities"][i][k].as_f64().unwrap();
            assert!((got - want).abs() <= 1e-5, "record {i} class {class}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn an_upload_is_stored_when_its_outputs_match_its_reference() {
    let app = spawn_app().await;
    let expected = expected();
    let reference = json!({
        "inputs": expected["records"],
        "outputs": expected["models"]["iris_strings"]["probabilities"],
    });
    let response = upload(&app, fixture("iris_strings.onnx"), "iris", Some(&reference)).await;
    assert_eq!(response.status(), 201);

    // With no contract in the card, the reference records are profiled into one.
    let created: Value = response.json().await.unwrap();
    let id = created["model_id"].as_str().unwrap();
    let record: Value = app
        .get(&format!("/models/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let contract = &record["card"]["contract"];
    let records = expected["records"].as_array().unwrap();
    assert_eq!(contract["samples"], records.len(), "{contract}");
    let petal = &contract["fields"]["petal_width"];
    assert_eq!(petal["type"], "numeric");
    let widths: Vec<f64> = records
        .iter()
        .map(|r| r["petal_width"].as_f64().unwrap())
        .collect();
    let (min, max) = widths
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &w| (lo.min(w), hi.max(w)));
    assert!(
        (petal["min"].as_f64().unwrap() - min).abs() < 1e-6,
        "{petal}"
    );
    assert!(
        (petal["max"].as_f64().unwrap() - max).abs() < 1e-6,
        "{petal}"
    );
    assert_eq!(contract["predictions"].as_array().unwrap().len(), 3);
    let drift: Value = app.get("/models/iris/drift").await.json().await.unwrap();
    assert_eq!(drift["features"].as_array().unwrap().len(), 4, "{drift}");
    app.stop().await;
}

#[tokio::test]
async fn an_upload_is_refused_with_the_largest_difference_when_its_outputs_differ_from_its_reference(
) {
    let app = spawn_app().await;
    let expected = expected();
    let mut outputs = expected["models"]["iris_strings"]["probabilities"].clone();
    let bump = |v: &mut Value, by: f64| *v = json!(v.as_f64().unwrap() + by);
    bump(&mut outputs[5][2], 0.25);
    bump(&mut outputs[1][0], -0.01);
    let reference = json!({"inputs": expected["records"], "outputs": outputs, "tolerance": 1e-3});
    let body = assert_error(
        upload(&app, fixture("iris_strings.onnx"), "iris", Some(&reference)).await,
        422,
        "validation",
    )
    .await;
    let (field, reason, message) = field_error(&body);
    assert_eq!((field, reason), ("reference.outputs[5][2]", "mismatch"));
    assert!(message.contains("largest difference 0.250000"), "{message}");
    assert!(message.contains("`virginica`"), "{message}");

    // Reference records are validated like /predict records.
    let mut records = expected["records"].clone();
    records[3]["petal_width"] = json!("wide");
    let reference =
        json!({"inputs": records, "outputs": expected["models"]["iris_strings"]["probabilities"]});
    let body = assert_error(
        upload(&app, fixture("iris_strings.onnx"), "iris", Some(&reference)).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(field_error(&body).0, "reference.inputs[3].petal_width");

    let listed: Value = app.get("/models?name=iris").await.json().await.unwrap();
    assert_eq!(listed["total"], 0, "nothing refused was stored");
    app.stop().await;
}

#[tokio::test]
async fn custom_operators_unsupported_opsets_and_garbage_are_refused_before_loading() {
    let app = spawn_app().await;
    for (file, reason, says) in [
        ("custom_op.onnx", "operator", "`com.example:Scramble`"),
        (
            "opset_too_new.onnx",
            "opset",
            "opset 27 of domain `ai.onnx`",
        ),
    ] {
        let body = assert_error(
            upload(&app, fixture(file), "refused", None).await,
            422,
            "validation",
        )
        .await;
        let (field, got_reason, message) = field_error(&body);
        assert_eq!((field, got_reason), ("model", reason), "{file}: {body}");
        assert!(message.contains(says), "{file}: {message}");
    }
    let body = assert_error(
        upload(&app, b"\x00garbage, not protobuf".to_vec(), "refused", None).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(field_error(&body).1, "format");
    let listed: Value = app.get("/models?name=refused").await.json().await.unwrap();
    assert_eq!(listed["total"], 0);
    app.stop().await;
}

#[tokio::test]
async fn a_model_onnx_runtime_cannot_load_gets_422_with_its_message_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    // Several at once: none may crash the process or hold a worker.
    let refusals = (0..4).map(|_| upload(&app, fixture("type_mismatch.onnx"), "bad", None));
    for response in futures::future::join_all(refusals).await {
        let body = assert_error(response, 422, "validation").await;
        let (field, reason, message) = field_error(&body);
        assert_eq!((field, reason), ("model", "unservable"));
        assert!(
            message.contains("ONNX Runtime cannot load the model"),
            "{message}"
        );
        assert!(
            message.contains("Type Error"),
            "ONNX Runtime's own words: {message}"
        );
    }
    let response = app.post_json("/predict", &seed_record()).await;
    assert_eq!(response.status(), 200, "the default model is still served");
    let response = upload(&app, fixture("iris_strings.onnx"), "iris", None).await;
    assert_eq!(response.status(), 201, "and uploads still work");
    app.stop().await;
}

#[tokio::test]
async fn with_redis_an_upload_through_one_replica_is_served_with_its_contract_by_another() {
    let redis = RedisServer::start();
    let env = registry_env(&redis);
    let replica_a = ServerProcess::start(&[], &env).await;
    let replica_b = ServerProcess::start(&[], &env).await;
    let client = reqwest::Client::new();
    let expected = expected();
    let want = &expected["models"]["iris_strings"];
    let reference = json!({"inputs": expected["records"], "outputs": want["probabilities"]});
    let created = upload_to(
        &client,
        &replica_a.url("/models/upload"),
        fixture("iris_strings.onnx"),
        "iris",
        Some(&reference),
    )
    .await;
    assert_eq!(created.status(), 201);

    // Replica B reads the normalised model (no ZipMap) and its profiled contract from Redis.
    let answer = client
        .post(replica_b.url("/models/iris/predict"))
        .json(&expected["records"])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_rows_close(&answer["predictions"], &want["probabilities"], 1e-5);
    let drift = get_json(&client, &replica_b.url("/models/iris/drift")).await;
    assert_eq!(drift["features"].as_array().unwrap().len(), 4, "{drift}");
    assert_eq!(
        drift["samples"],
        expected["records"].as_array().unwrap().len()
    );
}
