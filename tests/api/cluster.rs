//! The Kubernetes topology on loopback: a real redis-server, two `serve` replicas and
//! `ml-api worker` processes. Training goes through replica A and is served by replica B;
//! a worker killed mid-job loses nothing; replica B rides out a Redis outage.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    child::ServerProcess,
    grpc::assert_infer_equals_predict,
    helpers::{metric_at, start_training, train_json},
    nginx::Nginx,
    redis_server::RedisServer,
};

/// The port of `http://host:port` or `host:port`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("a port in {addr}"))
}

pub(crate) fn registry_env(redis: &RedisServer) -> Vec<(&'static str, String)> {
    vec![
        ("ML_API_REGISTRY", "redis".to_owned()),
        ("ML_API_REDIS_URL", redis.url()),
        ("ML_API_REDIS_PREFIX", "cluster".to_owned()),
        ("ML_API_RECONCILE_INTERVAL", "1s".to_owned()),
        ("ML_API_JOB_RECLAIM_AFTER", "2s".to_owned()),
        ("ML_API_MAX_BODY_BYTES", "33554432".to_owned()),
    ]
}

/// A training set big enough that fitting it takes seconds (deterministic pseudo-random data,
/// 5 classes from a noisy linear rule), so a worker can be killed in the middle.
fn slow_training_body() -> Value {
    let (rows, features) = (20_000, 40);
    let mut state: u64 = 42;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let mut data = Vec::with_capacity(rows);
    let mut classes = Vec::with_capacity(rows);
    for _ in 0..rows {
        let x: Vec<f64> = (0..features).map(|_| next()).collect();
        let scores: Vec<f64> = (0..5)
            .map(|k| {
                x.iter()
                    .enumerate()
                    .map(|(j, v)| v * (((j * 7 + k * 13) % 11) as f64 - 5.0))
                    .sum::<f64>()
                    + 3.0 * next()
            })
            .collect();
        let class = scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k);
        data.push(x);
        classes.push(class);
    }
    json!({
        "name": "slow",
        "columns": (0..features).map(|j| format!("f{j}")).collect::<Vec<_>>(),
        "features": data,
        "classes": classes,
        "penalty": "l2", "solver": "lbfgs", "C": 100.0, "tol": 1e-12, "max_iter": 3000
    })
}

async fn record(client: &reqwest::Client, server: &ServerProcess, id: &str) -> Value {
    client
        .get(server.url(&format!("/models/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for_status(
    client: &reqwest::Client,
    server: &ServerProcess,
    id: &str,
    want: &[&str],
    limit: Duration,
) -> Value {
    let started = Instant::now();
    loop {
        let current = record(client, server, id).await;
        if want.iter().any(|status| current["status"] == *status) {
            return current;
        }
        assert!(
            started.elapsed() < limit,
            "model {id} did not reach {want:?}: {current}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn replicas_share_one_registry_and_training_survives_workers_and_redis_failing() {
    let mut redis = RedisServer::start();
    let env = registry_env(&redis);
    let replica_a = ServerProcess::start(&[], &env).await;
    let replica_b = ServerProcess::start(&[], &env).await;
    let mut worker = ServerProcess::worker(&["--name", "worker-1"], &env).await;
    let client = reqwest::Client::new();

    // 0. The ingress in front of both replicas, as `make cluster-up` renders it
    //    (scripts/render-nginx.sh): ModelInfer through its gRPC listener (`grpc_pass`) answers
    //    what /predict answers through its HTTP listener, and both replicas take calls.
    let (a_grpc, b_grpc) = (replica_a.grpc_addr().await, replica_b.grpc_addr().await);
    let nginx = Nginx::start_with_grpc(
        &[port_of(&replica_a.base), port_of(&replica_b.base)],
        &[port_of(&a_grpc), port_of(&b_grpc)],
    );
    let ingress_grpc = format!("127.0.0.1:{}", nginx.grpc_port.expect("a gRPC listener"));
    assert_infer_equals_predict(&ingress_grpc, &nginx.url("/predict"), 4).await;
    for replica in [&replica_a, &replica_b] {
        let calls = metric_at(
            &replica.base,
            r#"ml_api_grpc_requests_total{code="OK",method="ModelInfer"}"#,
        )
        .await;
        assert!(
            calls.is_some_and(|n| n >= 1.0),
            "nginx passes gRPC calls to {} too: {calls:?}",
            replica.base
        );
    }
    drop(nginx);

    // 1. Seed 2's request through replica A; the model is served by replica B within a second
    //    of becoming ready.
    let train = train_json();
    let id = start_training(&client, &replica_a.base, &train).await;
    wait_for_status(
        &client,
        &replica_a,
        &id,
        &["ready"],
        Duration::from_secs(30),
    )
    .await;
    let ready_at = Instant::now();
    let query = "sepal_length=5.9&sepal_width=3.0&petal_length=5.1&petal_width=1.8";
    let answer: Value = client
        .get(replica_b.url(&format!("/models/{id}?{query}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["predicted_class"], 2, "{answer}");
    assert!(
        ready_at.elapsed() < Duration::from_secs(1),
        "served by B {:?} after ready",
        ready_at.elapsed()
    );
    // `model:latest` moved on every replica.
    let by_alias = client
        .post(replica_b.url("/models/model/predict"))
        .json(&json!({"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_alias.status(), 200);

    // 2. A worker killed mid-job: the job is reclaimed and finished by another worker.
    let created = client
        .post(replica_a.url("/models"))
        .json(&slow_training_body())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let slow = created.json::<Value>().await.unwrap()["model_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    loop {
        let current = record(&client, &replica_b, &slow).await;
        if current["progress"]["iteration"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(current["status"], "training");
            break;
        }
        assert!(
            current["status"] != "ready",
            "the job finished before the worker could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "training never started: {current}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill().await;
    let _worker_2 = ServerProcess::worker(&["--name", "worker-2"], &env).await;
    let finished = wait_for_status(
        &client,
        &replica_b,
        &slow,
        &["ready", "failed"],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(finished["status"], "ready", "{finished}");
    assert_eq!(
        finished["attempts"], 2,
        "one attempt died with worker-1, worker-2 finished it"
    );

    // 3. Redis goes away: replica B keeps serving what it has loaded; writes answer 503.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seed_record: Value =
        serde_json::from_str(include_str!("../fixtures/seed_request.json")).unwrap();
    for _ in 0..3 {
        let served = client
            .post(replica_b.url("/predict"))
            .json(&seed_record)
            .send()
            .await
            .unwrap();
        assert_eq!(
            served.status(),
            200,
            "the default model is served without Redis"
        );
        let served = client
            .post(replica_b.url(&format!("/models/{id}/predict")))
            .json(&json!({"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            served.status(),
            200,
            "a loaded trained model is served without Redis"
        );
        let seed_2: Value = client
            .get(replica_b.url(&format!("/models/{id}?{query}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            seed_2["predicted_class"], 2,
            "seed 2's GET is answered without Redis: {seed_2}"
        );
    }
    assert_eq!(
        client
            .get(replica_b.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = client
        .post(replica_b.url("/models"))
        .json(&train)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");

    // ... and recovers when it is back.
    redis.restart();
    let back = Instant::now();
    loop {
        let retry = client
            .post(replica_b.url("/models"))
            .json(&train)
            .send()
            .await
            .unwrap();
        if retry.status() == 201 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "writes recover after Redis returns"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
