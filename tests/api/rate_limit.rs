//! Per-client rate limiting: by API key, else by client IP (X-Forwarded-For only from
//! trusted proxies); 429 with Retry-After and X-RateLimit-*; probes exempt.

use crate::helpers::{assert_error, seed_record, spawn_app_with, TestApp};

async fn limited_app(trusted: &str) -> TestApp {
    let trusted = trusted.parse().unwrap();
    spawn_app_with(move |config| {
        config.rate_limit.enabled = true;
        config.rate_limit.per_second = 0.01;
        config.rate_limit.burst = 2;
        config.rate_limit.trusted_proxies = vec![trusted];
    })
    .await
}

async fn predict_as(app: &TestApp, header: (&str, &str)) -> reqwest::Response {
    app.client
        .post(app.url("/predict"))
        .header(header.0, header.1)
        .json(&seed_record())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn clients_over_their_burst_get_429_with_retry_after_and_rate_limit_headers() {
    let app = limited_app("127.0.0.1/32").await;
    let client_a = ("x-forwarded-for", "203.0.113.7");
    let first = predict_as(&app, client_a).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(predict_as(&app, client_a).await.status(), 200);
    let refused = predict_as(&app, client_a).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(refused.headers().get_all("retry-after").iter().count(), 1);
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    assert!(refused.headers().contains_key("x-ratelimit-after"));
    assert_error(refused, 429, "rate_limited").await;

    // Another client behind the same proxy has its own bucket; so does an API key.
    assert_eq!(
        predict_as(&app, ("x-forwarded-for", "198.51.100.9"))
            .await
            .status(),
        200
    );
    assert_eq!(
        predict_as(&app, ("x-api-key", "team-a")).await.status(),
        200
    );
    // Probes and metrics are never limited.
    for _ in 0..5 {
        assert_eq!(app.get("/healthz").await.status(), 200);
        assert_eq!(app.get("/readyz").await.status(), 200);
    }
    assert_eq!(
        app.metric("ml_api_rate_limited_requests_total").await,
        Some(1.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    // Loopback is not a trusted proxy here, so forged X-Forwarded-For values share one bucket.
    let app = limited_app("10.0.0.0/8").await;
    assert_eq!(
        predict_as(&app, ("x-forwarded-for", "203.0.113.1"))
            .await
            .status(),
        200
    );
    assert_eq!(
        predict_as(&app, ("x-forwarded-for", "203.0.113.2"))
            .await
            .status(),
        200
    );
    assert_eq!(
        predict_as(&app, ("x-forwarded-for", "203.0.113.3"))
            .await
            .status(),
        429
    );
    app.stop().await;
}
