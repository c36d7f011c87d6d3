//! The registry contract, run against both backends (embedded, and a real redis-server),
//! and the replica-side catalog: aliases propagate between replicas, and a replica keeps
//! serving its loaded model while Redis is down.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use ml_api::{
    config::ServeConfig,
    redis_link::RedisEndpoint,
    registry::{
        embedded::EmbeddedRegistry,
        redis::{RedisOptions, RedisRegistry},
        ListQuery, ModelRecord, ModelRegistry, ModelStatus, RegistryError, RegistryEvent,
    },
    serving::catalog::{Catalog, CatalogSettings, ModelRef},
    serving::load::read_model_dir,
    serving::metrics::ServingMetrics,
};
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{repo_path, seed_record, spawn_app_with},
    redis_server::RedisServer,
};

fn record(name: &str) -> ModelRecord {
    ModelRecord::new(name, "uploaded", ModelStatus::Ready)
}

async fn registry_contract(registry: &dyn ModelRegistry) {
    registry.ping().await.unwrap();
    let mut events = registry.subscribe();

    let first = registry
        .create(record("iris"), Some(Bytes::from_static(b"onnx-1")))
        .await
        .unwrap();
    let second = registry.create(record("iris"), None).await.unwrap();
    let other = registry.create(record("wine"), None).await.unwrap();
    assert_eq!(
        (first.version, second.version, other.version),
        (1, 2, 1),
        "versions count per name"
    );

    assert_eq!(registry.get(first.id).await.unwrap().as_ref(), Some(&first));
    assert_eq!(
        registry.onnx(first.id).await.unwrap().as_deref(),
        Some(&b"onnx-1"[..])
    );
    assert_eq!(registry.onnx(second.id).await.unwrap(), None);
    assert_eq!(registry.get(uuid::Uuid::now_v7()).await.unwrap(), None);

    let mut training = second.clone();
    training.status = ModelStatus::Training;
    training.progress = Some(ml_api::registry::Progress {
        iteration: 7,
        loss: 0.5,
    });
    registry.update(&training).await.unwrap();
    assert_eq!(
        registry
            .get(second.id)
            .await
            .unwrap()
            .unwrap()
            .progress
            .unwrap()
            .iteration,
        7
    );
    registry
        .complete(&second, Bytes::from_static(b"onnx-2"))
        .await
        .unwrap();
    assert_eq!(
        registry.onnx(second.id).await.unwrap().as_deref(),
        Some(&b"onnx-2"[..])
    );

    let page = registry
        .list(&ListQuery {
            name: Some("iris".into()),
            limit: 1,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((page.total, page.items.len()), (2, 1));
    assert_eq!(page.items[0].id, second.id, "newest first");
    let training_only = ListQuery {
        status: Some(ModelStatus::Training),
        limit: 10,
        ..ListQuery::default()
    };
    assert_eq!(registry.list(&training_only).await.unwrap().total, 0);

    registry
        .set_alias("iris", "production", first.id)
        .await
        .unwrap();
    assert!(matches!(
        registry.set_alias("wine", "production", first.id).await,
        Err(RegistryError::Conflict(_))
    ));
    assert!(matches!(
        registry.set_alias("iris", "x", uuid::Uuid::now_v7()).await,
        Err(RegistryError::NotFound(_))
    ));
    let mut aliases = registry.aliases().await.unwrap();
    aliases.sort();
    assert_eq!(
        aliases,
        vec![
            ("iris".to_owned(), "latest".to_owned(), second.id),
            ("iris".to_owned(), "production".to_owned(), first.id)
        ],
        "a completed model is `latest` of its name"
    );
    assert_eq!(
        registry.alias("iris", "production").await.unwrap(),
        Some(first.id)
    );
    assert_eq!(registry.view().get("iris", "production"), Some(first.id));

    assert!(registry.delete(first.id).await.unwrap());
    assert!(!registry.delete(first.id).await.unwrap());
    assert_eq!(registry.get(first.id).await.unwrap(), None);
    assert_eq!(
        registry.aliases().await.unwrap(),
        vec![("iris".to_owned(), "latest".to_owned(), second.id)],
        "aliases of a deleted model go with it"
    );
    assert_eq!(registry.view().get("iris", "production"), None);
    assert!(registry.view().is_deleted(first.id));

    // An import stores a content once per name, and sets `latest` only when unset.
    let mut bundled = record("bundled");
    bundled.sha256 = Some("ab".repeat(32));
    let stored = registry
        .import(bundled.clone(), Bytes::from_static(b"onnx-w"))
        .await
        .unwrap();
    assert_eq!((stored.id, stored.version), (bundled.id, 1));
    assert_eq!(stored.card, bundled.card);
    let mut again = record("bundled");
    again.sha256 = bundled.sha256.clone();
    assert_eq!(
        registry
            .import(again, Bytes::from_static(b"onnx-w"))
            .await
            .unwrap()
            .id,
        stored.id,
        "the same content is not stored twice"
    );
    assert_eq!(
        registry.alias("bundled", "latest").await.unwrap(),
        Some(stored.id)
    );
    let mut other = record("bundled");
    other.sha256 = Some("cd".repeat(32));
    let other = registry
        .import(other, Bytes::from_static(b"onnx-w2"))
        .await
        .unwrap();
    assert_eq!(other.version, 2);
    assert_eq!(
        registry.alias("bundled", "latest").await.unwrap(),
        Some(stored.id),
        "an import does not move a `latest` that is set"
    );
    assert_eq!(
        registry.onnx(other.id).await.unwrap().as_deref(),
        Some(&b"onnx-w2"[..])
    );
    // A deleted copy is stored again by the next import of that content.
    assert!(registry.delete(stored.id).await.unwrap());
    let mut again = record("bundled");
    again.sha256 = bundled.sha256.clone();
    let restored = registry
        .import(again.clone(), Bytes::from_static(b"onnx-w"))
        .await
        .unwrap();
    assert_eq!((restored.id, restored.version), (again.id, 3));

    // Every change was announced.
    let mut seen = Vec::new();
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        seen.push(event);
        if matches!(seen.last(), Some(RegistryEvent::Deleted { .. })) {
            break;
        }
    }
    assert!(seen.contains(&RegistryEvent::AliasMoved {
        name: "iris".into(),
        alias: "production".into(),
        id: first.id
    }));
    assert!(seen.contains(&RegistryEvent::Deleted {
        id: first.id,
        name: "iris".into()
    }));
}

#[tokio::test]
async fn embedded_registry_keeps_the_contract() {
    registry_contract(&EmbeddedRegistry::default()).await;
}

/// A Redis registry whose event relay is subscribed (so a test sees every event).
async fn redis_registry(redis: &RedisServer, prefix: &str) -> Arc<RedisRegistry> {
    let registry = Arc::new(
        RedisRegistry::connect(
            &RedisEndpoint::Url(redis.url()),
            prefix,
            &RedisOptions::default(),
        )
        .unwrap(),
    );
    let mut events = registry.subscribe();
    let probe = registry.create(record("probe"), None).await.unwrap();
    // Publish until the relay has subscribed and forwards one.
    for _ in 0..50 {
        registry.update(&probe).await.unwrap();
        if tokio::time::timeout(Duration::from_millis(100), events.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    registry.delete(probe.id).await.unwrap();
    registry
}

#[tokio::test]
async fn redis_registry_keeps_the_contract() {
    let redis = RedisServer::start();
    let registry = redis_registry(&redis, "contract").await;
    registry_contract(registry.as_ref()).await;
}

#[tokio::test]
async fn an_alias_moved_on_one_replica_is_followed_by_another_as_soon_as_the_move_returns() {
    let redis = RedisServer::start();
    let writer = redis_registry(&redis, "replicas").await;
    let reader = redis_registry(&redis, "replicas").await;
    let config = ServeConfig::for_tests(repo_path("models"), "santander");
    let mut inference = config.inference.clone();
    inference.ort_dylib = repo_path(".ort/lib/libonnxruntime.so.1.31.1");
    inference.workers = 1;
    let settings = CatalogSettings {
        cache_size: 4,
        negative_ttl: Duration::from_secs(60),
        pins: Vec::new(),
    };
    let metrics = ServingMetrics::new(&prometheus::Registry::new()).unwrap();
    let replica = Catalog::new(reader, inference, metrics, settings);
    replica.start(Vec::new()).await.unwrap();
    let stop = CancellationToken::new();
    // A long reconcile interval: only the registry's own synchronisation can make this pass.
    replica.spawn_sync(Duration::from_secs(3600), stop.clone());

    let source = read_model_dir(&repo_path("tests/fixtures/models"))
        .unwrap()
        .into_iter()
        .find(|m| m.name == "tiny")
        .unwrap();
    let mut stored = record("tiny");
    stored.card = Some(source.card.clone());
    let first = writer
        .create(stored.clone(), Some(source.bytes.clone().into()))
        .await
        .unwrap();
    stored.id = uuid::Uuid::now_v7();
    let second = writer
        .create(stored, Some(source.bytes.into()))
        .await
        .unwrap();
    let reference = ModelRef::parse("tiny:production");
    // Unknown here; the replica asks the registry, and remembers the answer.
    assert!(replica.get(&reference).await.is_err());
    writer
        .set_alias("tiny", "production", first.id)
        .await
        .unwrap();
    // The move reached the other replica before `set_alias` returned: no waiting.
    assert_eq!(replica.resolve(&reference), Some(first.id));
    assert_eq!(replica.get(&reference).await.unwrap().version, "1");
    for round in 0..10 {
        let target = if round % 2 == 0 { &second } else { &first };
        writer
            .set_alias("tiny", "production", target.id)
            .await
            .unwrap();
        let model = replica.get(&reference).await.unwrap();
        assert_eq!(model.id(), Some(target.id), "round {round}");
    }
    stop.cancel();
}

#[tokio::test]
async fn a_replica_keeps_serving_its_loaded_model_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_app_with(move |config| {
        config.registry.registry = ml_api::config::RegistryKind::Redis;
        config.registry.redis_url = url;
        config.registry.redis_prefix = "outage".into();
        config.registry.reconcile_interval = Duration::from_millis(200);
    })
    .await;
    assert_eq!(
        app.post_json("/predict", &seed_record()).await.status(),
        200
    );

    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        assert_eq!(
            app.post_json("/predict", &seed_record()).await.status(),
            200,
            "serving survives the outage"
        );
    }
    assert_eq!(
        app.get("/readyz").await.status(),
        200,
        "still ready: loaded models serve"
    );

    redis.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.post_json("/predict", &seed_record()).await.status(),
        200
    );
    app.stop().await;
}
