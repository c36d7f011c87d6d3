//! Open Inference Protocol (V2) over REST: the same answers as `/predict`, errors as
//! `{"error": "..."}` with 400/404. (scripts/check-v2-tritonclient.sh drives it with the
//! official tritonclient as well.)

use serde_json::{json, Value};

use crate::helpers::{seed_record, spawn_app, TestApp};

fn v2_inputs(record: &Value) -> Vec<Value> {
    let fields = [
        ("ind_empleado", "BYTES"),
        ("pais_residencia", "BYTES"),
        ("sexo", "BYTES"),
        ("age", "INT64"),
        ("ind_nuevo", "INT64"),
        ("antiguedad", "INT64"),
        ("indrel", "INT64"),
        ("indrel_1mes", "INT64"),
        ("tiprel_1mes", "BYTES"),
        ("indresi", "BYTES"),
        ("indext", "BYTES"),
        ("conyuemp", "BYTES"),
        ("canal_entrada", "BYTES"),
        ("indfall", "BYTES"),
        ("tipodom", "INT64"),
        ("cod_prov", "INT64"),
        ("nomprov", "BYTES"),
        ("ind_actividad_cliente", "INT64"),
        ("renta", "FP32"),
        ("segmento", "BYTES"),
    ];
    fields
        .iter()
        .map(|(name, datatype)| json!({"name": name, "shape": [1, 1], "datatype": datatype, "data": [[record[name]]]}))
        .collect()
}

/// `/predict`'s answer for the seed record.
async fn seed_predictions(app: &TestApp) -> Value {
    let response = app.post_json("/predict", &seed_record()).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn v2_infer_equals_predict_and_echoes_the_request_id() {
    let app = spawn_app().await;
    let body = json!({"id": "abc", "inputs": v2_inputs(&seed_record()), "outputs": [{"name": "probabilities"}]});
    let response = app.post_json("/v2/models/santander/infer", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["id"], "abc");
    assert_eq!(answer["model_name"], "santander");
    let output = &answer["outputs"][0];
    assert_eq!(output["name"], "probabilities");
    assert_eq!(output["datatype"], "FP32");
    assert_eq!(output["shape"], json!([1, 22]));
    let predicted = seed_predictions(&app).await;
    assert_eq!(output["data"], predicted["predictions"][0]);
    app.stop().await;
}

#[tokio::test]
async fn v2_outputs_come_back_as_raw_bytes_when_the_request_asks() {
    let app = spawn_app().await;
    let predicted = seed_predictions(&app).await;
    // What tritonclient sends when it names no output: every output in binary.
    let body = json!({"id": "raw", "inputs": v2_inputs(&seed_record()), "parameters": {"binary_data_output": true}});
    let response = app.post_json("/v2/models/santander/infer", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let header_length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let (header, raw) = bytes.split_at(header_length);
    let header: Value = serde_json::from_slice(header).unwrap();
    assert_eq!(header["id"], "raw");
    let output = &header["outputs"][0];
    assert_eq!(output["name"], "probabilities");
    assert_eq!(output["datatype"], "FP32");
    assert_eq!(output["shape"], json!([1, 22]));
    assert_eq!(output["parameters"], json!({"binary_data_size": 88}));
    assert!(
        output.get("data").is_none(),
        "no JSON data beside the bytes: {output}"
    );
    // The raw bytes are the FP32 values /predict writes as JSON numbers.
    let values: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let expected: Vec<f32> = predicted["predictions"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(values, expected);

    // An output's own `binary_data: false` wins over the request's default: plain JSON.
    let body = json!({"inputs": v2_inputs(&seed_record()), "parameters": {"binary_data_output": true},
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": false}}]});
    let response = app.post_json("/v2/models/santander/infer", &body).await;
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("inference-header-content-length")
        .is_none());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["outputs"][0]["data"], predicted["predictions"][0]);

    // A flag that is not a boolean is the caller's mistake, named.
    let body = json!({"inputs": v2_inputs(&seed_record()),
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": "yes"}}]});
    let response = app.post_json("/v2/models/santander/infer", &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("outputs[0].parameters.binary_data must be true or false"),
        "{error}"
    );
    app.stop().await;
}

#[tokio::test]
async fn v2_errors_use_the_protocols_shape() {
    let app = spawn_app().await;
    let mut inputs = v2_inputs(&seed_record());
    let error = |status: u16, response: reqwest::Response| async move {
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        body
    };
    error(
        404,
        app.post_json("/v2/models/nope/infer", &json!({"inputs": inputs.clone()}))
            .await,
    )
    .await;
    error(404, app.get("/v2/models/santander/versions/99").await).await;
    inputs[3]["shape"] = json!([2, 1]);
    let body = error(
        400,
        app.post_json(
            "/v2/models/santander/infer",
            &json!({"inputs": inputs.clone()}),
        )
        .await,
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("age"), "{body}");
    inputs[3] = json!({"name": "age", "shape": [1], "datatype": "BYTES", "data": ["old"]});
    error(
        400,
        app.post_json(
            "/v2/models/santander/infer",
            &json!({"inputs": inputs.clone()}),
        )
        .await,
    )
    .await;
    inputs[3] = json!({"name": "age", "shape": [1], "datatype": "INT64", "data": [500]});
    let body = error(
        400,
        app.post_json("/v2/models/santander/infer", &json!({"inputs": inputs}))
            .await,
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("out of range"),
        "the card's rules apply: {body}"
    );
    let wrong_output = json!({"inputs": v2_inputs(&seed_record()), "outputs": [{"name": "label"}]});
    error(
        400,
        app.post_json("/v2/models/santander/infer", &wrong_output)
            .await,
    )
    .await;
    app.stop().await;
}
