//! One step of the training worker, driven directly (`try_execute_job`).

use std::{sync::Arc, time::Duration};

use ml_api::{
    jobs::{embedded::EmbeddedQueue, metrics::JobMetrics, JobQueue},
    registry::{embedded::EmbeddedRegistry, ModelRecord, ModelRegistry, ModelStatus},
    training::TrainingRequest,
    worker::{JobOutcome, Worker, WorkerSettings},
};

use crate::helpers::repo_path;

fn iris_job() -> ml_api::training::TrainingJob {
    let body = std::fs::read_to_string(repo_path("train.json")).unwrap();
    serde_json::from_str::<TrainingRequest>(&body)
        .unwrap()
        .validate()
        .unwrap()
}

fn worker(registry: Arc<EmbeddedRegistry>, queue: Arc<EmbeddedQueue>) -> Worker {
    let settings = WorkerSettings {
        consumer: "test".into(),
        max_attempts: 3,
        heartbeat: Duration::from_millis(50),
        poll: Duration::from_millis(100),
    };
    Worker::new(
        registry,
        queue,
        settings,
        JobMetrics::new(&prometheus::Registry::new()).unwrap(),
    )
}

/// A registry holding `record` and a queue holding its iris training job.
async fn queued(record: ModelRecord) -> (Arc<EmbeddedRegistry>, Arc<EmbeddedQueue>, ModelRecord) {
    let registry = Arc::new(EmbeddedRegistry::default());
    let queue = Arc::new(EmbeddedQueue::default());
    let record = registry.create(record, None).await.unwrap();
    queue.enqueue(record.id, &iris_job()).await.unwrap();
    (registry, queue, record)
}

#[tokio::test]
async fn a_job_trains_stores_onnx_and_moves_latest() {
    let (registry, queue, record) =
        queued(ModelRecord::new("iris", "trained", ModelStatus::Queued)).await;
    let worker = worker(registry.clone(), queue.clone());
    assert_eq!(
        worker.try_execute_job().await.unwrap(),
        JobOutcome::Trained(record.id)
    );
    let stored = registry.get(record.id).await.unwrap().unwrap();
    assert_eq!(stored.status, ModelStatus::Ready);
    assert_eq!(stored.attempts, 1);
    assert_eq!(
        stored.class_values,
        vec![
            serde_json::json!(0),
            serde_json::json!(1),
            serde_json::json!(2)
        ]
    );
    assert!(registry.onnx(record.id).await.unwrap().is_some());
    assert_eq!(
        registry.aliases().await.unwrap(),
        vec![("iris".to_owned(), "latest".to_owned(), record.id)]
    );
    assert_eq!(queue.depth().await.unwrap(), 0, "acknowledged");
    assert_eq!(worker.try_execute_job().await.unwrap(), JobOutcome::Idle);
}

#[tokio::test]
async fn a_job_that_exhausted_its_attempts_ends_failed_with_the_reason() {
    let mut record = ModelRecord::new("iris", "trained", ModelStatus::Training);
    // Three workers already died on it.
    record.attempts = 3;
    let (registry, queue, record) = queued(record).await;
    assert_eq!(
        worker(registry.clone(), queue.clone())
            .try_execute_job()
            .await
            .unwrap(),
        JobOutcome::Failed(record.id)
    );
    let stored = registry.get(record.id).await.unwrap().unwrap();
    assert_eq!(stored.status, ModelStatus::Failed);
    assert!(stored.error.unwrap().contains("3 attempts"));
}

#[tokio::test]
async fn a_job_for_a_deleted_model_is_dropped() {
    let (registry, queue, record) =
        queued(ModelRecord::new("iris", "trained", ModelStatus::Queued)).await;
    registry.delete(record.id).await.unwrap();
    assert_eq!(
        worker(registry.clone(), queue.clone())
            .try_execute_job()
            .await
            .unwrap(),
        JobOutcome::Skipped(record.id)
    );
    assert_eq!(queue.depth().await.unwrap(), 0);
}
