//! Feature contracts and drift, over HTTP: training records the contract; every prediction
//! route enforces it (reject or warn); the replica's drift window sees a shifted feature and
//! only that one.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    child::ServerProcess,
    cluster::registry_env,
    helpers::{assert_error, get_json, spawn_app_with, wait_for_training, TestApp},
    redis_server::RedisServer,
};

/// A small deterministic generator (no extra dev-dependency): uniform in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One customer-like row: `x` uniform on [0, 10), `y` on [-1, 1), `colour` 50/30/20 % red,
/// green, blue; `shift` moves `x` only.
fn row(rng: &mut Lcg, shift: f64) -> Value {
    let x = rng.next() * 10.0 + shift;
    let y = rng.next() * 2.0 - 1.0;
    let u = rng.next();
    let colour = if u < 0.5 {
        "red"
    } else if u < 0.8 {
        "green"
    } else {
        "blue"
    };
    json!({"x": x, "y": y, "colour": colour})
}

/// 800 rows of [`row`] labelled by `x` (plus noise): a training request for `name`.
fn training_body(name: &str) -> Value {
    let mut rng = Lcg(7);
    let records: Vec<Value> = (0..800)
        .map(|_| {
            let mut r = row(&mut rng, 0.0);
            let x = r["x"].as_f64().unwrap();
            let noise = rng.next() - 0.5;
            r["label"] = json!(if x + noise > 5.0 { "high" } else { "low" });
            r
        })
        .collect();
    json!({"name": name, "records": records, "target": "label"})
}

async fn train(app: &TestApp, name: &str) -> Value {
    let created = app.post_json("/models", &training_body(name)).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["model_id"].as_str().unwrap().to_owned();
    wait_ready(&app.client, &app.url(&format!("/models/{id}"))).await
}

async fn wait_ready(client: &reqwest::Client, record_url: &str) -> Value {
    let record = wait_for_training(client, record_url).await;
    assert_eq!(record["status"], "ready", "{record}");
    record
}

#[tokio::test]
async fn training_records_a_contract_and_every_route_enforces_it() {
    let app = spawn_app_with(|_| {}).await;
    let record = train(&app, "contracted").await;
    let id = record["id"].as_str().unwrap();

    let contract = &record["card"]["contract"];
    assert_eq!(
        contract["policy"],
        json!({"category": "reject", "range": "warn", "null": "reject"})
    );
    assert_eq!(contract["fields"]["x"]["type"], "numeric");
    assert_eq!(contract["fields"]["colour"]["type"], "categorical");
    let colours = contract["fields"]["colour"]["categories"]
        .as_object()
        .unwrap();
    assert_eq!(colours.len(), 3);
    assert!(
        (colours["red"].as_f64().unwrap() - 0.5).abs() < 0.06,
        "{colours:?}"
    );
    let x = &contract["fields"]["x"];
    assert!(x["min"].as_f64().unwrap() >= 0.0 && x["max"].as_f64().unwrap() < 10.0);
    assert_eq!(x["edges"].as_array().unwrap().len(), 9);
    assert_eq!(x["fractions"].as_array().unwrap().len(), 10);
    assert_eq!(contract["predictions"].as_array().unwrap().len(), 2);
    assert!(contract["samples"].as_u64().unwrap() > 500);

    // An unseen category: the same field-level 422 on each route (V2: the protocol's 400).
    let purple = json!({"x": 3.0, "y": 0.0, "colour": "purple"});
    let body = assert_error(
        app.post_json("/models/contracted/predict", &purple).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["error"]["details"][0]["field"], "colour");
    assert_eq!(body["error"]["details"][0]["reason"], "category");
    let batch = json!([{"x": 1.0, "y": 0.0, "colour": "red"}, purple]);
    let body = assert_error(
        app.post_json("/models/contracted/predict", &batch).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["error"]["details"][0]["field"], "[1].colour");
    let seed_2 = app
        .get(&format!("/models/{id}?x=3&y=0&colour=purple"))
        .await;
    let body = assert_error(seed_2, 422, "validation").await;
    assert_eq!(body["error"]["details"][0]["reason"], "category");
    let v2 = app
        .post_json(
            "/v2/models/contracted/infer",
            &json!({"inputs": [
                {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [3.0]},
                {"name": "y", "shape": [1, 1], "datatype": "FP32", "data": [0.0]},
                {"name": "colour", "shape": [1, 1], "datatype": "BYTES", "data": ["purple"]}
            ]}),
        )
        .await;
    assert_eq!(v2.status(), 400);
    let v2: Value = v2.json().await.unwrap();
    assert!(v2["error"].as_str().unwrap().contains("colour"), "{v2}");

    // Out of the training range: served under the default `warn` policy, and counted.
    let far = app
        .post_json(
            "/models/contracted/predict",
            &json!({"x": 250.0, "y": 0.0, "colour": "red"}),
        )
        .await;
    assert_eq!(far.status(), 200);
    let warned = app
        .metric(r#"ml_api_validation_failures_total{action="warn",feature="x",model="contracted",reason="range"}"#)
        .await;
    assert_eq!(warned, Some(1.0));
    let rejected = app
        .metric(r#"ml_api_validation_failures_total{action="reject",feature="colour",model="contracted",reason="category"}"#)
        .await;
    assert_eq!(rejected, Some(4.0));

    // The drift window holds what was served, counted in the contract's bins: the warned
    // record (`x` above every edge, a known colour), none of the refused ones.
    let drift: Value = app
        .get("/models/contracted/drift")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(drift["samples"], 1, "{drift}");
    let actual = |feature: &str| -> Vec<f64> {
        let features = drift["features"].as_array().unwrap();
        let entry = features.iter().find(|f| f["feature"] == feature).unwrap();
        let shares = entry["actual"].as_array().unwrap();
        shares.iter().map(|share| share.as_f64().unwrap()).collect()
    };
    let x = actual("x");
    assert_eq!(x.len(), 11, "ten value bins, then nulls: {x:?}");
    assert_eq!(x[9], 1.0, "{x:?}");
    let colour = actual("colour");
    assert_eq!(
        colour.len(),
        4,
        "three colours, then unseen ones: {colour:?}"
    );
    assert_eq!(colour.iter().sum::<f64>(), 1.0, "{colour:?}");
    assert_eq!(
        colour[3], 0.0,
        "the refused `purple` is not counted: {colour:?}"
    );
    app.stop().await;
}

async fn send(app: &TestApp, rng: &mut Lcg, rows: usize, shift: f64) {
    for _ in 0..rows / 100 {
        let batch: Vec<Value> = (0..100).map(|_| row(rng, shift)).collect();
        let response = app
            .post_json("/models/drifty/predict", &Value::Array(batch))
            .await;
        assert_eq!(response.status(), 200);
    }
}

fn psi_of(report: &Value, feature: &str) -> f64 {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == feature)
        .and_then(|f| f["psi"].as_f64())
        .unwrap_or_else(|| panic!("no PSI for {feature}: {report}"))
}

#[tokio::test]
async fn drift_stays_low_on_the_training_distribution_and_rises_on_the_shifted_feature_only() {
    const WINDOW: Duration = Duration::from_secs(3);
    let app = spawn_app_with(|config| {
        config.inference.drift_window = WINDOW;
        config.inference.drift_slots = 3;
        config.inference.drift_min_samples = 500;
    })
    .await;
    train(&app, "drifty").await;
    let mut rng = Lcg(12345);

    send(&app, &mut rng, 200, 0.0).await;
    let report: Value = app.get("/models/drifty/drift").await.json().await.unwrap();
    assert_eq!(report["samples"], 200);
    assert!(
        report["features"][0]["psi"].is_null(),
        "below min_samples: {report}"
    );

    send(&app, &mut rng, 1000, 0.0).await;
    let report: Value = app.get("/models/drifty/drift").await.json().await.unwrap();
    for feature in ["x", "y", "colour"] {
        let psi = psi_of(&report, feature);
        assert!(
            psi < 0.1,
            "{feature}: PSI {psi} on the training distribution ({report})"
        );
    }
    let gauge = app
        .metric(r#"ml_api_feature_drift_psi{feature="x",model="drifty"}"#)
        .await
        .expect("the PSI gauge is exported");
    assert!(gauge < 0.1, "{gauge}");

    // Let the window slide past the first traffic, then shift `x` by a third of its range.
    tokio::time::sleep(WINDOW + Duration::from_millis(1100)).await;
    send(&app, &mut rng, 1000, 3.5).await;
    let report: Value = app.get("/models/drifty/drift").await.json().await.unwrap();
    assert_eq!(
        report["samples"], 1000,
        "only the shifted traffic is in the window"
    );
    let x = psi_of(&report, "x");
    assert!(x > 0.2, "x: PSI {x} after the shift ({report})");
    for feature in ["y", "colour"] {
        let psi = psi_of(&report, feature);
        assert!(psi < 0.1, "{feature}: PSI {psi}, not shifted ({report})");
    }
    let predictions = report["predictions_psi"].as_f64().unwrap();
    assert!(
        predictions > 0.1,
        "x drives the label, so the predictions shift too: {predictions}"
    );
    let gauge = app
        .metric(r#"ml_api_feature_drift_psi{feature="x",model="drifty"}"#)
        .await
        .unwrap();
    assert!(gauge > 0.2, "{gauge}");

    // The bundled model carries the contract of its training rows; an unknown model is a 404.
    let santander: Value = app
        .get("/models/santander/drift")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        santander["features"].as_array().unwrap().len(),
        20,
        "{santander}"
    );
    assert_eq!(santander["samples"], 0);
    assert_error(app.get("/models/nope/drift").await, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn with_redis_the_contract_a_worker_trained_is_enforced_and_measured_by_every_replica() {
    let redis = RedisServer::start();
    let mut env = registry_env(&redis);
    env.push(("ML_API_DRIFT_MIN_SAMPLES", "100".to_owned()));
    let replica_a = ServerProcess::start(&[], &env).await;
    let replica_b = ServerProcess::start(&[], &env).await;
    let _worker = ServerProcess::worker(&["--name", "contract-worker"], &env).await;
    let client = reqwest::Client::new();

    let created = client
        .post(replica_a.url("/models"))
        .json(&training_body("shared"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["model_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let record = wait_ready(&client, &replica_a.url(&format!("/models/{id}"))).await;
    assert_eq!(
        record["card"]["contract"]["fields"]["colour"]["type"],
        "categorical"
    );

    // Replica B loads the model from Redis with its contract and enforces it.
    let predict_b = replica_b.url("/models/shared/predict");
    let purple = client
        .post(&predict_b)
        .json(&json!({"x": 3.0, "y": 0.0, "colour": "purple"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(purple, 422, "validation").await;
    assert_eq!(body["error"]["details"][0]["reason"], "category");

    // Each replica measures drift on the traffic it serves.
    let mut rng = Lcg(99);
    for _ in 0..3 {
        let batch: Vec<Value> = (0..100).map(|_| row(&mut rng, 0.0)).collect();
        let answer = client.post(&predict_b).json(&batch).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    let drift_b = get_json(&client, &replica_b.url("/models/shared/drift")).await;
    assert_eq!(drift_b["samples"], 300, "{drift_b}");
    for feature in ["x", "y", "colour"] {
        let psi = psi_of(&drift_b, feature);
        assert!(psi < 0.1, "{feature}: {psi}");
    }
    let drift_a = get_json(&client, &replica_a.url("/models/shared/drift")).await;
    assert_eq!(drift_a["samples"], 0, "{drift_a}");
}

/// Prometheus servers scrape each replica from several places at once (an HA pair, an
/// agent, someone's `curl`): every scrape carries every drift series, none is half-built by
/// another scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_scrapes_each_export_every_drift_series() {
    let app = spawn_app_with(|config| config.inference.drift_min_samples = 10).await;
    train(&app, "drifty").await;
    send(&app, &mut Lcg(7), 100, 0.0).await;
    let expected = [
        r#"ml_api_drift_window_samples{model="drifty"} 100"#,
        r#"ml_api_drift_window_samples{model="santander"} 0"#,
        r#"ml_api_feature_drift_psi{feature="colour",model="drifty"}"#,
        r#"ml_api_feature_drift_psi{feature="x",model="drifty"}"#,
        r#"ml_api_feature_drift_psi{feature="y",model="drifty"}"#,
        r#"ml_api_prediction_drift_psi{model="drifty"}"#,
    ];
    let scrapers = (0..8).map(|_| {
        let (client, url) = (app.client.clone(), app.url("/metrics"));
        tokio::spawn(async move {
            let mut incomplete = Vec::new();
            for _ in 0..150 {
                let text = client.get(&url).send().await.unwrap().text().await.unwrap();
                let missing: Vec<&str> = expected
                    .iter()
                    .filter(|series| !text.lines().any(|line| line.starts_with(*series)))
                    .copied()
                    .collect();
                if !missing.is_empty() {
                    incomplete.push(missing);
                }
            }
            incomplete
        })
    });
    let mut incomplete = Vec::new();
    for scraper in scrapers.collect::<Vec<_>>() {
        incomplete.extend(scraper.await.unwrap());
    }
    assert!(
        incomplete.is_empty(),
        "{} of 1200 scrapes lacked series, first: {:?}",
        incomplete.len(),
        incomplete.first()
    );
    app.stop().await;
}
