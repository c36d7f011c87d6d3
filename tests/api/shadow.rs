//! Challenger shadow scoring and gated promotion, over HTTP: on one node (embedded registry),
//! and on two replicas sharing a real Redis under constant load across the swap.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::{
    child::ServerProcess,
    cluster::registry_env,
    helpers::{assert_error, spawn_app, spawn_app_with, wait_for_training, TestApp},
    redis_server::RedisServer,
    upload::tiny,
};

/// Trains a two-class model of `name` on `x`, `y` in [0, 10) × [-1, 1): `high` when `rule`
/// says so, else `low`; returns its id once ready.
async fn train(app: &TestApp, name: &str, rule: fn(f64, f64) -> bool) -> String {
    let mut state: u64 = 11;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let records: Vec<Value> = (0..400)
        .map(|_| {
            let (x, y) = (next() * 10.0, next() * 2.0 - 1.0);
            json!({"x": x, "y": y, "label": if rule(x, y) { "high" } else { "low" }})
        })
        .collect();
    let created = app
        .post_json(
            "/models",
            &json!({"name": name, "records": records, "target": "label"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["model_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let record = wait_for_training(&app.client, &app.url(&format!("/models/{id}"))).await;
    assert_eq!(record["status"], "ready", "{record}");
    id
}

/// Uploads the `tiny` fixture as `name` through `base`; returns its id.
async fn upload_tiny(client: &reqwest::Client, base: &str, name: &str) -> String {
    let (model, card) = tiny();
    let form = Form::new()
        .part("model", Part::bytes(model).file_name("model.onnx"))
        .part("card", Part::text(card.to_string()))
        .text("name", name.to_owned());
    let response = client
        .post(format!("{base}/models/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["model_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn put_alias(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Polls the comparison until `done` holds (the replica flushes every second).
async fn comparison_until(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200);
        let comparison: Value = response.json().await.unwrap();
        if done(&comparison) {
            return comparison;
        }
        assert!(Instant::now() < deadline, "{comparison}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn version(response: &reqwest::Response) -> String {
    response.headers()["x-model-version"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_challenger_is_compared_in_the_shadow_and_promoted_only_through_its_gate() {
    let app = spawn_app().await;
    let champion = train(&app, "risk", |x, _| x > 5.0).await;
    let challenger = train(&app, "risk", |_, y| y > 0.0).await;
    let alias = "/models/risk/aliases/prod";
    let comparison_path = "/models/risk/aliases/prod/comparison";

    // Field-level checks before anything is stored.
    let body = assert_error(
        put_alias(
            &app,
            alias,
            &json!({"model_id": champion, "challenger": challenger, "shadow_fraction": 1.5}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["error"]["details"][0]["field"], "shadow_fraction");
    assert_eq!(body["error"]["details"][0]["reason"], "range");
    let body = assert_error(
        put_alias(
            &app,
            alias,
            &json!({"model_id": champion, "challenger": challenger}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["error"]["details"][0]["reason"], "missing");
    assert_error(
        put_alias(
            &app,
            alias,
            &json!({"challenger": challenger, "shadow_fraction": 1.0}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        put_alias(
            &app,
            alias,
            &json!({"model_id": champion, "challenger": champion, "shadow_fraction": 1.0}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let other_name = upload_tiny(&app.client, &app.url(""), "colours").await;
    assert_error(
        put_alias(
            &app,
            alias,
            &json!({"model_id": champion, "challenger": other_name, "shadow_fraction": 1.0}),
        )
        .await,
        409,
        "conflict",
    )
    .await;

    let set = put_alias(
        &app,
        alias,
        &json!({"model_id": champion, "challenger": challenger, "shadow_fraction": 1.0}),
    )
    .await;
    assert_eq!(set.status(), 200);
    let set: Value = set.json().await.unwrap();
    assert_eq!(
        set,
        json!({"name": "risk", "alias": "prod", "model_id": champion,
               "challenger": challenger, "shadow_fraction": 1.0})
    );
    let empty = comparison_until(&app, comparison_path, |_| true).await;
    assert_eq!(empty["samples"], 0);
    assert!(empty["agreement_rate"].is_null(), "{empty}");
    let refused = app
        .post_json(
            "/models/risk/aliases/prod/promote",
            &json!({"min_samples": 1}),
        )
        .await;
    let refused = assert_error(refused, 409, "gate_failed").await;
    assert_eq!(refused["error"]["details"][0]["field"], "min_samples");
    assert_eq!(refused["comparison"]["samples"], 0);

    // 20 records on which both models agree, 20 on which they cannot.
    for i in 0..40 {
        let y = if i % 2 == 0 { 0.8 } else { -0.8 };
        let response = app
            .post_json("/models/risk:prod/predict", &json!({"x": 9.0, "y": y}))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(version(&response), "1", "the champion answers");
    }
    let comparison = comparison_until(&app, comparison_path, |c| c["samples"] == 40).await;
    assert_eq!(comparison["champion"]["model_id"], champion);
    assert_eq!(comparison["champion"]["version"], 1);
    assert_eq!(comparison["challenger"]["version"], 2);
    assert_eq!(comparison["shadow_fraction"], 1.0);
    let agreement = comparison["agreement_rate"].as_f64().unwrap();
    assert!((0.3..=0.7).contains(&agreement), "{comparison}");
    assert!(comparison["mean_abs_diff"].as_f64().unwrap() > 0.05);
    for role in ["champion", "challenger"] {
        assert_eq!(comparison[role]["requests"], 40, "{comparison}");
        assert!(comparison[role]["mean_latency_seconds"].as_f64().unwrap() > 0.0);
        assert!(comparison[role]["p50_latency_seconds"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        app.metric(r#"ml_api_shadow_requests_total{alias="prod",model="risk",outcome="scored"}"#)
            .await,
        Some(40.0)
    );
    assert_eq!(
        app.metric(r#"ml_api_shadow_compared_records_total{alias="prod",model="risk"}"#)
            .await,
        Some(40.0)
    );
    let ratio = app
        .metric(r#"ml_api_shadow_agreement_ratio{alias="prod",model="risk"}"#)
        .await
        .unwrap();
    assert!((ratio - agreement).abs() < 1e-9);

    // The gate: too few samples, too much disagreement; each named with its figures.
    let refused = app
        .post_json(
            "/models/risk/aliases/prod/promote",
            &json!({"min_samples": 1000, "max_disagreement": 0.05}),
        )
        .await;
    let refused = assert_error(refused, 409, "gate_failed").await;
    let failed: Vec<&str> = refused["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["min_samples", "max_disagreement"]);
    assert_eq!(refused["comparison"]["samples"], 40);
    let invalid = app
        .post_json(
            "/models/risk/aliases/prod/promote",
            &json!({"max_disagreement": 2}),
        )
        .await;
    let invalid = assert_error(invalid, 422, "validation").await;
    assert_eq!(invalid["error"]["details"][0]["field"], "max_disagreement");
    let typo = app
        .post_json(
            "/models/risk/aliases/prod/promote",
            &json!({"min_sample": 2}),
        )
        .await;
    let typo = assert_error(typo, 422, "validation").await;
    assert_eq!(typo["error"]["details"][0]["reason"], "unknown");

    // Promoted: the challenger answers, the old champion becomes the challenger.
    let promoted = app
        .post_json(
            "/models/risk/aliases/prod/promote",
            &json!({"min_samples": 40, "max_disagreement": 0.9}),
        )
        .await;
    assert_eq!(promoted.status(), 200);
    let promoted: Value = promoted.json().await.unwrap();
    assert_eq!(promoted["model_id"], challenger);
    assert_eq!(promoted["challenger"], champion);
    assert_eq!(promoted["comparison"]["samples"], 40);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let response = app
            .post_json("/models/risk:prod/predict", &json!({"x": 9.0, "y": 0.5}))
            .await;
        assert_eq!(response.status(), 200);
        if version(&response) == "2" {
            break;
        }
        assert!(Instant::now() < deadline, "the new champion answers");
    }
    let swapped = comparison_until(&app, comparison_path, |c| {
        c["champion"]["model_id"] == challenger.as_str()
    })
    .await;
    assert_eq!(swapped["challenger"]["model_id"], champion);
    assert!(
        swapped["samples"].as_u64().unwrap() <= 1,
        "a new pair starts afresh: {swapped}"
    );

    // Removing the challenger: comparison and promotion are 404 again.
    let removed = put_alias(&app, alias, &json!({"challenger": null})).await;
    assert_eq!(removed.status(), 200);
    assert!(removed.json::<Value>().await.unwrap()["challenger"].is_null());
    assert_error(app.get(comparison_path).await, 404, "not_found").await;
    let no_challenger = app
        .client
        .post(app.url("/models/risk/aliases/prod/promote"))
        .send()
        .await
        .unwrap();
    assert_error(no_challenger, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn identical_models_agree_fully_and_a_zero_fraction_samples_nothing() {
    let app = spawn_app().await;
    let first = upload_tiny(&app.client, &app.url(""), "twin").await;
    let second = upload_tiny(&app.client, &app.url(""), "twin").await;
    let set = put_alias(
        &app,
        "/models/twin/aliases/latest",
        &json!({"model_id": first, "challenger": second, "shadow_fraction": 1.0}),
    )
    .await;
    assert_eq!(set.status(), 200);
    let record = json!({"color": "green", "count": 4, "weight": 2.5});
    // `twin` alone means `twin:latest`; a batch counts each record; V2 is shadowed too.
    for _ in 0..5 {
        assert_eq!(
            app.post_json("/models/twin/predict", &record)
                .await
                .status(),
            200
        );
    }
    let batch = json!([record, record, record]);
    assert_eq!(
        app.post_json("/models/twin/predict", &batch).await.status(),
        200
    );
    let v2 = app
        .post_json(
            "/v2/models/twin/infer",
            &json!({"inputs": [
                {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["red"]},
                {"name": "count", "shape": [1], "datatype": "FP32", "data": [3]},
                {"name": "weight", "shape": [1], "datatype": "FP32", "data": [1.5]}
            ]}),
        )
        .await;
    assert_eq!(v2.status(), 200);
    // By id: not through the alias, not shadowed.
    assert_eq!(
        app.post_json(&format!("/models/{first}/predict"), &record)
            .await
            .status(),
        200
    );
    let path = "/models/twin/aliases/latest/comparison";
    let comparison = comparison_until(&app, path, |c| c["samples"] == 9).await;
    assert_eq!(comparison["agreement_rate"], 1.0, "{comparison}");
    assert_eq!(comparison["mean_abs_diff"], 0.0, "{comparison}");
    assert_eq!(comparison["champion"]["requests"], 7);

    let paused = put_alias(
        &app,
        "/models/twin/aliases/latest",
        &json!({"shadow_fraction": 0.0}),
    )
    .await;
    assert_eq!(paused.status(), 200);
    assert_eq!(paused.json::<Value>().await.unwrap()["challenger"], second);
    // Replicas follow the change through the registry's events.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..20 {
        assert_eq!(
            app.post_json("/models/twin/predict", &record)
                .await
                .status(),
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let comparison: Value = app.get(path).await.json().await.unwrap();
    assert_eq!(comparison["samples"], 9, "{comparison}");
    assert_eq!(comparison["shadow_fraction"], 0.0);

    // No body: promoted without conditions.
    let promoted = app
        .client
        .post(app.url("/models/twin/aliases/latest/promote"))
        .send()
        .await
        .unwrap();
    assert_eq!(promoted.status(), 200);
    let promoted: Value = promoted.json().await.unwrap();
    assert_eq!(promoted["model_id"], second);
    assert_eq!(promoted["shadow_fraction"], 0.0);
    app.stop().await;
}

#[tokio::test]
async fn samples_are_dropped_and_counted_when_the_shadow_queue_is_full() {
    let app = spawn_app_with(|config| config.shadow.shadow_queue = 1).await;
    let first = upload_tiny(&app.client, &app.url(""), "busy").await;
    let second = upload_tiny(&app.client, &app.url(""), "busy").await;
    let set = put_alias(
        &app,
        "/models/busy/aliases/latest",
        &json!({"model_id": first, "challenger": second, "shadow_fraction": 1.0}),
    )
    .await;
    assert_eq!(set.status(), 200);
    let batch = Value::Array(
        (0..500)
            .map(|i| json!({"color": "blue", "count": i % 100, "weight": 1.0}))
            .collect(),
    );
    let app = Arc::new(app);
    let requests = 60;
    let burst: Vec<_> = (0..requests)
        .map(|_| {
            let (app, batch) = (app.clone(), batch.clone());
            tokio::spawn(
                async move { app.post_json("/models/busy/predict", &batch).await.status() },
            )
        })
        .collect();
    for request in burst {
        assert_eq!(
            request.await.unwrap(),
            200,
            "dropping never fails a request"
        );
    }
    let comparison = comparison_until(&app, "/models/busy/aliases/latest/comparison", |c| {
        let scored = c["champion"]["requests"].as_u64().unwrap();
        scored + c["dropped"].as_u64().unwrap() + c["failed"].as_u64().unwrap() == requests
    })
    .await;
    let dropped = comparison["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "a one-slot queue overflows: {comparison}");
    assert_eq!(comparison["failed"], 0);
    assert_eq!(
        app.metric(
            r#"ml_api_shadow_requests_total{alias="latest",model="busy",outcome="dropped"}"#
        )
        .await,
        Some(dropped as f64)
    );
    let Ok(app) = Arc::try_unwrap(app) else {
        panic!("no request holds the app any more")
    };
    app.stop().await;
}

/// One answer under load: when it was sent, by which replica, status and model version.
struct Answer {
    sent: Instant,
    replica: usize,
    status: u16,
    version: String,
}

#[tokio::test]
async fn promotion_swaps_every_replica_within_a_second_without_failing_a_request() {
    let redis = RedisServer::start();
    let env = registry_env(&redis);
    let replicas = Arc::new([
        ServerProcess::start(&[], &env).await,
        ServerProcess::start(&[], &env).await,
    ]);
    let client = reqwest::Client::new();
    let champion = upload_tiny(&client, &replicas[0].base, "swap").await;
    let challenger = upload_tiny(&client, &replicas[0].base, "swap").await;
    let set = client
        .put(replicas[0].url("/models/swap/aliases/prod"))
        .json(&json!({"model_id": champion, "challenger": challenger, "shadow_fraction": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);

    // Constant load: 4 clients, each a request every 20 ms, alternating replicas.
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = Vec::new();
    for client_index in 0..4 {
        let (replicas, answers, stop, client) = (
            replicas.clone(),
            answers.clone(),
            stop.clone(),
            client.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut n = client_index;
            while !stop.is_cancelled() {
                tick.tick().await;
                let replica = n % 2;
                n += 1;
                let sent = Instant::now();
                let response = client
                    .post(replicas[replica].url("/models/swap:prod/predict"))
                    .json(&json!({"color": "red", "count": n % 100, "weight": 1.5}))
                    .send()
                    .await;
                let (status, version) = match response {
                    Ok(response) => (
                        response.status().as_u16(),
                        response
                            .headers()
                            .get("x-model-version")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned(),
                    ),
                    Err(_) => (0, String::new()),
                };
                answers.lock().unwrap().push(Answer {
                    sent,
                    replica,
                    status,
                    version,
                });
            }
        }));
    }

    // Both replicas shadow; the comparison adds up their samples.
    let deadline = Instant::now() + Duration::from_secs(20);
    let comparison = loop {
        let comparison: Value = client
            .get(replicas[1].url("/models/swap/aliases/prod/comparison"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if comparison["samples"].as_u64().unwrap_or(0) >= 30 {
            break comparison;
        }
        assert!(Instant::now() < deadline, "{comparison}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(comparison["agreement_rate"], 1.0, "{comparison}");
    for replica in replicas.iter() {
        let metrics = client
            .get(replica.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.lines().any(|line| line.starts_with(
                r#"ml_api_shadow_requests_total{alias="prod",model="swap",outcome="scored"}"#
            )),
            "every replica shadows its share"
        );
    }

    let promoted = client
        .post(replicas[0].url("/models/swap/aliases/prod/promote"))
        .json(&json!({"min_samples": 30, "max_disagreement": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(promoted.status(), 200);
    let promoted_at = Instant::now();
    let promoted: Value = promoted.json().await.unwrap();
    assert_eq!(promoted["model_id"], challenger);
    assert_eq!(promoted["challenger"], champion);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    for task in load {
        task.await.unwrap();
    }

    let answers = answers.lock().unwrap();
    let failed: Vec<(usize, u16)> = answers
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| (a.replica, a.status))
        .collect();
    assert!(
        failed.is_empty(),
        "failed requests across the swap: {failed:?}"
    );
    assert!(answers.len() > 200, "{} requests", answers.len());
    let settled = promoted_at + Duration::from_secs(1);
    for replica in 0..2 {
        let after: Vec<&str> = answers
            .iter()
            .filter(|a| a.replica == replica && a.sent >= settled)
            .map(|a| a.version.as_str())
            .collect();
        assert!(
            after.len() > 10,
            "replica {replica} answered after the swap"
        );
        assert!(
            after.iter().all(|v| *v == "2"),
            "replica {replica} serves the new champion a second after the promotion: {after:?}"
        );
        assert!(answers
            .iter()
            .any(|a| a.replica == replica && a.sent < promoted_at && a.version == "1"));
    }
}
