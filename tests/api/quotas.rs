//! Per-key quotas: admin-issued API keys, one token bucket per key shared by every replica
//! (Redis), 429 with Retry-After and X-RateLimit-*, the local fallback while Redis is down,
//! and the test: two replicas behind nginx hold one key to its rate.

use std::time::{Duration, Instant};

use ml_api::config::{RegistryKind, ServeConfig};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::{
    child::ServerProcess,
    helpers::{assert_error, seed_record, spawn_app_with, TestApp},
    nginx::Nginx,
    redis_server::RedisServer,
};

const ADMIN: &str = "admin-secret";

fn with_admin(config: &mut ServeConfig) {
    config.admin_api_key = Some(ADMIN.into());
}

async fn redis_replica(redis: &RedisServer, prefix: &str) -> TestApp {
    let url = redis.url();
    let prefix = prefix.to_owned();
    spawn_app_with(move |config| {
        with_admin(config);
        config.registry.registry = RegistryKind::Redis;
        config.registry.redis_url = url;
        config.registry.redis_prefix = prefix;
    })
    .await
}

async fn create_key(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    client
        .post(url)
        .bearer_auth(ADMIN)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Creates a key through `app` and returns its plaintext.
async fn new_key(app: &TestApp, name: &str, rate_per_s: f64, burst: u32) -> String {
    let body = json!({"name": name, "rate_per_s": rate_per_s, "burst": burst});
    let created = create_key(&app.client, &app.url("/keys"), &body).await;
    assert_eq!(created.status(), 201);
    created.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn predict_with_key(app: &TestApp, key: &str) -> reqwest::Response {
    app.client
        .post(app.url("/predict"))
        .header("x-api-key", key)
        .json(&seed_record())
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

/// The sum of the samples in a Prometheus text page whose line starts with `prefix`.
fn sample_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn admins_create_list_and_revoke_keys_whose_plaintext_is_shown_once() {
    let app = spawn_app_with(with_admin).await;
    let body = json!({"name": "team-a", "rate_per_s": 5, "burst": 10});

    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for (path, method) in [
        ("/keys", "post"),
        ("/keys", "get"),
        ("/keys/{id}", "delete"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }

    let anonymous = app.post_json("/keys", &body).await;
    assert_error(anonymous, 401, "unauthorized").await;
    let invalid = create_key(
        &app.client,
        &app.url("/keys"),
        &json!({"name": "a b", "rate_per_s": -1, "burst": "x"}),
    )
    .await;
    let invalid = assert_error(invalid, 422, "validation").await;
    let fields: Vec<&str> = invalid["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|detail| detail["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "rate_per_s", "burst"]);

    let created = create_key(&app.client, &app.url("/keys"), &body).await;
    assert_eq!(created.status(), 201);
    let location = header(&created, "location");
    let created: Value = created.json().await.unwrap();
    let plaintext = created["key"].as_str().unwrap().to_owned();
    assert!(plaintext.starts_with("mlk_"), "{created}");
    assert_eq!(
        location,
        format!("/keys/{}", created["id"].as_str().unwrap())
    );
    assert_eq!(
        (created["rate_per_s"].as_f64(), created["burst"].as_u64()),
        (Some(5.0), Some(10))
    );
    let duplicate = create_key(&app.client, &app.url("/keys"), &body).await;
    assert_error(duplicate, 409, "conflict").await;

    let listed = app
        .client
        .get(app.url("/keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed = listed.text().await.unwrap();
    assert!(!listed.contains(&plaintext[4..]), "the key is never listed");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert_eq!(listed["keys"][0]["name"], "team-a");
    assert!(listed["keys"][0].get("key").is_none());

    let served = predict_with_key(&app, &plaintext).await;
    assert_eq!(served.status(), 200);
    assert_eq!(header(&served, "x-ratelimit-limit"), "10");
    assert_eq!(header(&served, "x-ratelimit-remaining"), "9");
    let forged = predict_with_key(&app, "mlk_0123456789abcdef").await;
    assert_error(forged, 401, "invalid_api_key").await;

    let revoke = |id: String| {
        let app = &app;
        async move {
            app.client
                .delete(app.url(&format!("/keys/{id}")))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
        }
    };
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(revoke(id.clone()).await.status(), 204);
    assert_error(revoke(id).await, 404, "not_found").await;
    let revoked = predict_with_key(&app, &plaintext).await;
    assert_error(revoked, 401, "invalid_api_key").await;
    assert_eq!(
        app.metric("ml_api_quota_requests_total{decision=\"invalid\",key=\"unknown\"}")
            .await,
        Some(2.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn replicas_share_a_keys_bucket_in_redis_and_refuse_past_it_with_429_and_headers() {
    let redis = RedisServer::start();
    let replica_a = redis_replica(&redis, "shared").await;
    let replica_b = redis_replica(&redis, "shared").await;
    // One token every 100 s: nothing refills during the test.
    let key = new_key(&replica_a, "slow", 0.01, 3).await;

    let mut remaining = Vec::new();
    for replica in [&replica_a, &replica_b, &replica_a] {
        let served = predict_with_key(replica, &key).await;
        assert_eq!(served.status(), 200);
        assert_eq!(header(&served, "x-ratelimit-limit"), "3");
        remaining.push(header(&served, "x-ratelimit-remaining"));
    }
    assert_eq!(remaining, ["2", "1", "0"], "one bucket for both replicas");

    let refused = predict_with_key(&replica_b, &key).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers().get_all("retry-after").iter().count(), 1);
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!(
        (90..=100).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(
        header(&refused, "x-ratelimit-after"),
        retry_after.to_string()
    );
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&refused, "x-ratelimit-limit"), "3");
    assert_error(refused, 429, "rate_limited").await;

    // Requests without an issued key keep the per-client limit (off here): not counted.
    for _ in 0..3 {
        assert_eq!(predict_with_key(&replica_a, "team-b").await.status(), 200);
    }
    assert_eq!(
        replica_b
            .metric("ml_api_quota_requests_total{decision=\"limited\",key=\"slow\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        replica_a.metric("ml_api_quota_fallback_total").await,
        Some(0.0)
    );
    replica_a.stop().await;
    replica_b.stop().await;
}

#[tokio::test]
async fn keys_are_limited_locally_not_unlimited_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let replica = spawn_app_with(move |config| {
        with_admin(config);
        config.registry.registry = RegistryKind::Redis;
        config.registry.redis_url = url;
        config.registry.redis_prefix = "fallback".into();
        // The per-client limit, for keys this replica cannot look up.
        config.rate_limit.enabled = true;
        config.rate_limit.per_second = 0.01;
        config.rate_limit.burst = 2;
    })
    .await;
    let other = redis_replica(&redis, "fallback").await;
    let known = new_key(&replica, "known", 0.01, 2).await;
    // Created on the other replica and never seen here, so not in this replica's cache.
    let unseen = new_key(&other, "unseen", 0.01, 2).await;
    assert_eq!(predict_with_key(&replica, &known).await.status(), 200);

    redis.stop();
    for key in [&known, &unseen] {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let response = predict_with_key(&replica, key).await;
            if response.status() == 429 {
                assert!(response.headers().contains_key("retry-after"));
            }
            statuses.push(response.status().as_u16());
        }
        // Each replica's local bucket starts full: 2 allowed, then refused.
        assert_eq!(statuses, [200, 200, 429, 429, 429], "key {key}");
    }
    let fallbacks = replica.metric("ml_api_quota_fallback_total").await.unwrap();
    assert!(fallbacks >= 10.0, "fallback decisions: {fallbacks}");
    replica.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn two_replicas_behind_nginx_hold_one_key_to_its_rate() {
    const RATE: f64 = 50.0;
    const BURST: u32 = 10;
    const DRIVE_PER_S: u32 = 200;
    const SECONDS: u32 = 10;

    let _machine = crate::helpers::MACHINE.lock().await;
    let mut redis = RedisServer::start();
    let env = vec![
        ("ML_API_REGISTRY", "redis".to_owned()),
        ("ML_API_REDIS_URL", redis.url()),
        ("ML_API_REDIS_PREFIX", "nginx".to_owned()),
        ("ML_API_ADMIN_API_KEY", ADMIN.to_owned()),
        ("ML_API_QUOTA_FALLBACK_REPLICAS", "2".to_owned()),
        // This test is about the shared bucket: on a loaded machine a Redis answer may take
        // longer than the default 100 ms, which would hand the decision to the local fallback
        // (tested above, with Redis stopped).
        ("ML_API_QUOTA_REDIS_TIMEOUT", "2s".to_owned()),
    ];
    let replicas = [
        ServerProcess::start(&[], &env).await,
        ServerProcess::start(&[], &env).await,
    ];
    let ports: Vec<u16> = replicas
        .iter()
        .map(|replica| replica.base.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let nginx = Nginx::start(&ports);
    let client = reqwest::Client::new();
    let body = json!({"name": "load", "rate_per_s": RATE, "burst": BURST});
    let created = create_key(&client, &nginx.url("/keys"), &body).await;
    assert_eq!(created.status(), 201);
    let key = created.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();

    // 200 requests/s for 10 s through nginx, each sent on schedule whatever the answers take.
    let send = |client: reqwest::Client| {
        let (url, key) = (nginx.url("/predict"), key.clone());
        async move {
            client
                .post(url)
                .header("x-api-key", key)
                .json(&seed_record())
                .send()
                .await
                .map(|response| response.status().as_u16())
                .unwrap_or(0)
        }
    };
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / DRIVE_PER_S);
    let mut requests = JoinSet::new();
    let started = Instant::now();
    for _ in 0..DRIVE_PER_S * SECONDS {
        ticks.tick().await;
        requests.spawn(send(client.clone()));
    }
    let driven_for = started.elapsed();
    let statuses = requests.join_all().await;
    // On a loaded machine requests reach the replicas later than they were scheduled, so the
    // window the limiter saw runs from the first send to the last answer.
    let answered_within = started.elapsed();
    let accepted = statuses.iter().filter(|status| **status == 200).count();
    let refused = statuses.iter().filter(|status| **status == 429).count();
    let mut per_replica = Vec::new();
    let mut fallbacks = 0.0;
    for replica in &replicas {
        let text = client
            .get(replica.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        per_replica.push(sample_sum(
            &text,
            "ml_api_quota_requests_total{decision=\"allowed\",key=\"load\"}",
        ));
        fallbacks += sample_sum(&text, "ml_api_quota_fallback_total");
    }
    // The key's rate over the window, plus its burst: at least over the scheduled drive, at
    // most over the time until the last answer (the same on a quiet machine).
    let expected = RATE * f64::from(SECONDS) + f64::from(BURST);
    let at_least =
        0.9 * (RATE * driven_for.as_secs_f64().min(f64::from(SECONDS)) + f64::from(BURST));
    let at_most = 1.1 * (RATE * answered_within.as_secs_f64() + f64::from(BURST));
    let report = format!(
        "accepted {accepted}, refused {refused} of {} driven in {driven_for:?}, answered within \
         {answered_within:?}; expected {expected} on a quiet machine, between {at_least:.0} and \
         {at_most:.0} for this window; allowed per replica {per_replica:?}; local fallback \
         decisions {fallbacks}",
        statuses.len()
    );
    eprintln!("{report}");
    assert_eq!(
        accepted + refused,
        statuses.len(),
        "only 200 or 429: {report}"
    );
    assert!(
        (at_least..=at_most).contains(&(accepted as f64)),
        "{report}"
    );
    assert!(
        per_replica.iter().all(|allowed| *allowed > 0.0),
        "nginx spread the key's requests over both replicas: {report}"
    );
    assert_eq!(per_replica.iter().sum::<f64>(), accepted as f64, "{report}");

    // Redis goes away: each replica limits the key alone (at half its rate, as configured),
    // so requests are neither failed nor let through without limit.
    // The 100 requests are sent at once: the local limits (a burst of 5 per replica) must
    // refuse most of them, however long each replica takes to notice that Redis is gone.
    redis.stop();
    let mut requests = JoinSet::new();
    for _ in 0..100 {
        requests.spawn(send(client.clone()));
    }
    let statuses = requests.join_all().await;
    let accepted = statuses.iter().filter(|status| **status == 200).count();
    let refused = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!(accepted + refused, 100, "only 200 or 429: {statuses:?}");
    assert!(
        accepted >= 1 && refused >= 1 && accepted < 100,
        "accepted {accepted}, refused {refused}"
    );
}
