//! Open Inference Protocol (V2) over REST: the same answers as `/predict`, errors as
//! `{"error": "..."}` with 400/404. (scripts/check-v2-tritonclient.sh drives it with the
//! official tritonclient as well.)

use serde_json::{json, Value};

use crate::helpers::{seed_record, spawn_app};

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
    let predicted: Value = app
        .post_json("/predict", &seed_record())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(output["data"], predicted["predictions"][0]);
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
