//! Replicas that never fail together: real `ml-api serve` processes on one real Redis (and a
//! worker), driven the way a cluster is used. Every wait is on a condition.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    child::ServerProcess,
    helpers::{get_json, repo_path, seed_record, start_training, train_json, wait_for_training},
    redis_server::RedisServer,
    upload::tiny_form,
};

/// Replica settings for `prefix` on `redis`: one inference thread per model (start-up stays
/// quick with many processes), a reconcile interval long enough that only the registry's own
/// synchronisation can make a cross-replica assertion pass.
fn replica_env(redis: &RedisServer, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ML_API_REGISTRY", "redis".to_owned()),
        ("ML_API_REDIS_URL", redis.url()),
        ("ML_API_REDIS_PREFIX", prefix.to_owned()),
        ("ML_API_INFERENCE_WORKERS", "1".to_owned()),
        ("ML_API_RECONCILE_INTERVAL", "60m".to_owned()),
    ]
}

/// Processes that keep every core busy until dropped (killed by PID).
struct CpuLoad(Vec<std::process::Child>);

impl CpuLoad {
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self(
            (0..cores)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh runs")
                })
                .collect(),
        )
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn redis_command(redis: &RedisServer, command: &mut redis::Cmd) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    command.query_async::<()>(&mut connection).await.unwrap();
}

async fn status(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map_or(0, |response| response.status().as_u16())
}

fn iris_record() -> Value {
    json!({"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8})
}

async fn predict(
    client: &reqwest::Client,
    replica: &ServerProcess,
    model: &str,
    record: &Value,
) -> reqwest::Response {
    client
        .post(replica.url(&format!("/models/{model}/predict")))
        .json(record)
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn replicas_started_together_on_an_empty_registry_store_one_version_and_are_both_ready() {
    let redis = RedisServer::start();
    let client = reqwest::Client::new();
    for round in 0..20 {
        let env = replica_env(&redis, &format!("together{round}"));
        if round % 2 == 1 {
            // Writes held back while both start: their imports queue up and then race.
            redis_command(
                &redis,
                redis::cmd("CLIENT").arg("PAUSE").arg(500).arg("WRITE"),
            )
            .await;
        }
        let (a, b) = tokio::join!(
            ServerProcess::start(&[], &env),
            ServerProcess::start(&[], &env)
        );
        let page = get_json(&client, &a.url("/models?name=santander")).await;
        assert_eq!(
            page["total"], 1,
            "round {round}: one stored version: {page}"
        );
        for replica in [&a, &b] {
            assert_eq!(
                status(&client, replica.url("/readyz")).await,
                200,
                "round {round}: every replica is ready"
            );
            let answer = client
                .post(replica.url("/predict"))
                .json(&seed_record())
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            assert_eq!(header(&answer, "x-model-version"), "1", "round {round}");
        }
    }
}

#[tokio::test]
async fn twenty_trainings_in_a_row_never_make_a_replica_unready() {
    let redis = RedisServer::start();
    let env = replica_env(&redis, "trainings");
    let replica_a = ServerProcess::start(&[], &env).await;
    let replica_b = ServerProcess::start(&[], &env).await;
    let _worker = ServerProcess::worker(&["--name", "trainer"], &env).await;
    let client = reqwest::Client::new();

    // Both replicas' readiness, sampled for as long as the trainings go on.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let polls = {
        let (stop, failures, client) = (stop.clone(), failures.clone(), client.clone());
        let urls = [replica_a.url("/readyz"), replica_b.url("/readyz")];
        tokio::spawn(async move {
            let mut polls = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for url in &urls {
                    let code = status(&client, url.clone()).await;
                    if code != 200 {
                        failures.lock().unwrap().push((url.clone(), code));
                    }
                    polls += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            polls
        })
    };

    let mut train = train_json();
    for round in 0..20 {
        // Ten names, each trained twice: every replica serves and preloads them, so its
        // cache (8 models by default) evicts all the time.
        train["name"] = json!(format!("iris{}", round % 10));
        let id = start_training(&client, &replica_a.base, &train).await;
        let record = wait_for_training(&client, &replica_a.url(&format!("/models/{id}"))).await;
        assert_eq!(record["status"], "ready", "{record}");
        // Once ready, `name` serves it on the other replica too. The record turns `ready`
        // in the transaction that moves `name:latest`, and the other replica applies the
        // move when its notification arrives, a moment later: wait for that condition.
        let version = record["version"].to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = predict(
                &client,
                &replica_b,
                &format!("iris{}", round % 10),
                &iris_record(),
            )
            .await;
            assert_eq!(answer.status(), 200, "round {round}");
            let served = header(&answer, "x-model-version");
            if served == version {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the other replica still serves version {served}, not {version}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let polls = polls.await.unwrap();
    assert!(
        polls > 20,
        "readiness was sampled throughout ({polls} polls)"
    );
    assert_eq!(
        *failures.lock().unwrap(),
        Vec::new(),
        "every poll answered 200"
    );
    for replica in [&replica_a, &replica_b] {
        let answer = client
            .post(replica.url("/predict"))
            .json(&seed_record())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "the default model is still served");
    }
}

#[tokio::test]
async fn writes_through_one_replica_are_followed_by_the_next_request_to_another_under_cpu_load() {
    let redis = RedisServer::start();
    let env = replica_env(&redis, "ryw");
    let replica_a = ServerProcess::start(&[], &env).await;
    let replica_b = ServerProcess::start(&[], &env).await;
    let client = reqwest::Client::new();
    let _machine = crate::helpers::MACHINE.lock().await;
    let _load = CpuLoad::start();
    let golden: Vec<Value> = serde_json::from_slice(
        &std::fs::read(repo_path("tests/fixtures/models/tiny/golden.json")).unwrap(),
    )
    .unwrap();
    let record = &golden[0]["record"];

    // Ten uploads through A, each predicted through B at once: by name and by id.
    let mut versions = Vec::new();
    for round in 0..10 {
        let name = format!("colours{}", round % 2);
        let created = client
            .post(replica_a.url("/models/upload"))
            .multipart(tiny_form(&name))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let created: Value = created.json().await.unwrap();
        let by_name = predict(&client, &replica_b, &name, record).await;
        assert_eq!(by_name.status(), 200, "upload {round}: `{name}` on B");
        assert_eq!(
            header(&by_name, "x-model-version"),
            created["version"].to_string(),
            "upload {round}: B serves the new version"
        );
        let id = created["model_id"].as_str().unwrap();
        assert_eq!(predict(&client, &replica_b, id, record).await.status(), 200);
        if round % 2 == 0 {
            versions.push(created["model_id"].as_str().unwrap().to_owned());
        }
    }

    // Forty alias moves through A, each followed by a request to B.
    for round in 0..40 {
        let target = &versions[round % versions.len()];
        let moved = client
            .put(replica_a.url("/models/colours0/aliases/production"))
            .json(&json!({"model_id": target}))
            .send()
            .await
            .unwrap();
        assert_eq!(moved.status(), 200, "move {round}");
        let answer = predict(&client, &replica_b, "colours0:production", record).await;
        assert_eq!(answer.status(), 200, "move {round}: no 404 on B");
        let version = get_json(&client, &replica_a.url(&format!("/models/{target}"))).await
            ["version"]
            .to_string();
        assert_eq!(
            header(&answer, "x-model-version"),
            version,
            "move {round}: B follows the alias at once"
        );
    }
}

#[tokio::test]
async fn a_replica_started_without_redis_serves_its_bundled_model_and_joins_when_redis_returns() {
    let mut redis = RedisServer::start();
    let env = replica_env(&redis, "late");
    redis.stop();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let replica = ServerProcess::start(&[], &env).await;
    assert_eq!(status(&client, replica.url("/readyz")).await, 200);
    let answer = client
        .post(replica.url("/predict"))
        .json(&seed_record())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        200,
        "the bundled model serves without Redis"
    );
    eprintln!(
        "replica without Redis: ready and serving /predict {} ms after spawn",
        started.elapsed().as_millis()
    );
    // Writes need the registry.
    let upload = || tiny_form("colours");
    let refused = client
        .post(replica.url("/models/upload"))
        .multipart(upload())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");

    redis.restart();
    // The replica joins by itself: the bundled model is stored, and writes work.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = client
            .get(replica.url("/models?name=santander"))
            .send()
            .await
            .unwrap();
        if page.status() == 200 && page.json::<Value>().await.unwrap()["total"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica stored its bundled model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = client
        .post(replica.url("/models/upload"))
        .multipart(upload())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let golden: Vec<Value> = serde_json::from_slice(
        &std::fs::read(repo_path("tests/fixtures/models/tiny/golden.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        predict(&client, &replica, "colours", &golden[0]["record"])
            .await
            .status(),
        200,
        "registry models are served once Redis is back"
    );
    // The default model is now the registry's copy.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client
            .post(replica.url("/predict"))
            .json(&seed_record())
            .send()
            .await
            .unwrap();
        if header(&answer, "x-model-version") == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pin moved to the registry's model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&client, replica.url("/readyz")).await, 200);
}

#[tokio::test]
async fn a_loaded_model_answers_every_prediction_route_while_redis_is_frozen() {
    let redis = RedisServer::start();
    let mut env = replica_env(&redis, "frozen");
    // A long Redis timeout: an answer that waited on Redis would take 10 s.
    env.push(("ML_API_REDIS_OP_TIMEOUT", "10s".to_owned()));
    let replica = ServerProcess::start(&[], &env).await;
    let _worker = ServerProcess::worker(&["--name", "trainer"], &env).await;
    let client = reqwest::Client::new();
    let id = start_training(&client, &replica.base, &train_json()).await;
    wait_for_training(&client, &replica.url(&format!("/models/{id}"))).await;
    let query =
        format!("/models/{id}?sepal_length=5.9&sepal_width=3.0&petal_length=5.1&petal_width=1.8");
    // Loaded by a first prediction.
    assert_eq!(status(&client, replica.url(&query)).await, 200);

    redis.freeze();
    let timed = |response: reqwest::Response, started: Instant, route: &str| {
        assert_eq!(response.status(), 200, "{route}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{route} took {took:?}: it waited on Redis"
        );
        took
    };
    for _ in 0..3 {
        let started = Instant::now();
        let answer = client.get(replica.url(&query)).send().await.unwrap();
        let took = timed(answer, started, "the training API's GET");
        eprintln!(
            "GET /models/{{id}}?features with Redis frozen: {} ms",
            took.as_millis()
        );
        let started = Instant::now();
        let answer = client
            .post(replica.url("/predict"))
            .json(&seed_record())
            .send()
            .await
            .unwrap();
        timed(answer, started, "/predict");
        let started = Instant::now();
        let answer = predict(&client, &replica, "model", &iris_record()).await;
        timed(answer, started, "/models/{model}/predict");
    }
    assert_eq!(status(&client, replica.url("/readyz")).await, 200);
    redis.thaw();
}

#[tokio::test]
async fn a_flood_of_unknown_names_asks_redis_once_per_negative_cache_ttl() {
    let redis = RedisServer::start();
    let mut env = replica_env(&redis, "unknown");
    env.push(("ML_API_NEGATIVE_CACHE_TTL", "60m".to_owned()));
    let replica = ServerProcess::start(&[], &env).await;
    let client = reqwest::Client::new();
    redis_command(&redis, redis::cmd("CONFIG").arg("RESETSTAT")).await;
    for _ in 0..50 {
        let answer = predict(&client, &replica, "nosuch:prod", &iris_record()).await;
        assert_eq!(answer.status(), 404);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    let stats: String = {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .unwrap()
    };
    let alias_reads: u64 = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_hget:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0);
    assert_eq!(alias_reads, 1, "one alias read for 50 requests: {stats}");
}

#[tokio::test]
async fn a_pinned_model_is_loaded_when_it_appears_and_readiness_waits_for_it() {
    let app = crate::helpers::spawn_app_with(|config| {
        config.registry.pins = vec!["colours:prod".to_owned()];
    })
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503, "a pinned model is missing");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["missing"], json!(["colours:prod"]));

    let created: Value = app
        .client
        .post(app.url("/models/upload"))
        .multipart(tiny_form("colours"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let moved = app
        .client
        .put(app.url("/models/colours/aliases/prod"))
        .json(&json!({"model_id": created["model_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    // The pin is loaded in the background once its alias exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = app.get("/readyz").await;
        if ready.status() == 200 {
            let body: Value = ready.json().await.unwrap();
            assert_eq!(body["models"], json!(["colours", "santander"]));
            break;
        }
        assert!(Instant::now() < deadline, "the pinned model was loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}
