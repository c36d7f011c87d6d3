//! The training worker: takes a job, trains it off the async threads, publishes progress,
//! stores the ONNX model in the registry and moves `name:latest` to it.
//!
//! Shaped as `loop { try_execute_job() }`, so one step is testable. A job is acknowledged only
//! once its outcome is recorded; a worker that dies mid-job leaves it to be reclaimed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    jobs::{Delivery, JobQueue},
    metrics::Metrics,
    models::sha256_hex,
    registry::{ModelRecord, ModelRegistry, ModelStatus, Progress, RegistryError},
    training::{self, TrainedModel},
};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Who this worker is in the consumer group (the pod name in Kubernetes).
    pub consumer: String,
    /// Deliveries of one job before it is marked failed (a job that kills its workers).
    pub max_attempts: u32,
    /// How often a running job is heartbeated (well under the queue's reclaim timeout).
    pub heartbeat: Duration,
    /// How long one poll of the queue waits for a job.
    pub poll: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Idle,
    Trained(Uuid),
    Failed(Uuid),
    /// The model was deleted or already finished: nothing to do.
    Skipped(Uuid),
}

pub struct Worker {
    registry: Arc<dyn ModelRegistry>,
    queue: Arc<dyn JobQueue>,
    settings: WorkerSettings,
    metrics: Metrics,
}

impl Worker {
    pub fn new(
        registry: Arc<dyn ModelRegistry>,
        queue: Arc<dyn JobQueue>,
        settings: WorkerSettings,
        metrics: Metrics,
    ) -> Self {
        Self {
            registry,
            queue,
            settings,
            metrics,
        }
    }

    /// Works until `stop`; a job in progress when it fires is finished first.
    pub async fn run_until_stopped(self, stop: CancellationToken) {
        tracing::info!(consumer = %self.settings.consumer, "training worker started");
        loop {
            if stop.is_cancelled() {
                break;
            }
            match self.try_execute_job().await {
                Ok(JobOutcome::Idle) => {}
                Ok(outcome) => tracing::info!(?outcome, "training job done"),
                Err(error) => {
                    tracing::warn!(%error, "training worker cannot reach the queue; retrying");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            if let Ok(depth) = self.queue.depth().await {
                self.metrics
                    .training_queue_depth
                    .set(i64::try_from(depth).unwrap_or(i64::MAX));
            }
        }
        tracing::info!("training worker stopped");
    }

    pub async fn try_execute_job(&self) -> Result<JobOutcome, RegistryError> {
        let Some(delivery) = self
            .queue
            .next(&self.settings.consumer, self.settings.poll)
            .await?
        else {
            return Ok(JobOutcome::Idle);
        };
        let id = delivery.model_id;
        let Some(mut record) = self.registry.get(id).await? else {
            self.queue.ack(&delivery).await?;
            return Ok(JobOutcome::Skipped(id));
        };
        if matches!(record.status, ModelStatus::Ready | ModelStatus::Failed) {
            self.queue.ack(&delivery).await?;
            return Ok(JobOutcome::Skipped(id));
        }
        record.attempts += 1;
        if record.attempts > self.settings.max_attempts {
            let error = format!(
                "training gave up after {} attempts (a worker stopped each time)",
                self.settings.max_attempts
            );
            return self.fail(record, &delivery, error).await;
        }
        record.status = ModelStatus::Training;
        record.touch();
        self.registry.update(&record).await?;

        let started = Instant::now();
        let result = self.train_with_heartbeat(&delivery, &record).await;
        self.metrics
            .training_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(trained) => self.succeed(record, &delivery, trained).await,
            Err(error) => self.fail(record, &delivery, error).await,
        }
    }

    /// Trains on the blocking pool while this task heartbeats the job and publishes progress.
    async fn train_with_heartbeat(
        &self,
        delivery: &Delivery,
        record: &ModelRecord,
    ) -> Result<TrainedModel, String> {
        let (progress_tx, mut progress_rx) = watch::channel::<Option<Progress>>(None);
        let job = delivery.job.clone();
        let span = tracing::Span::current();
        let mut training = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                training::train(&job, &mut |p| {
                    let _ = progress_tx.send(Some(Progress {
                        iteration: p.iteration,
                        loss: p.loss,
                    }));
                })
            })
        });
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat);
        let mut shown = record.clone();
        loop {
            tokio::select! {
                result = &mut training => {
                    return match result {
                        Ok(Ok(trained)) => Ok(trained),
                        Ok(Err(error)) => Err(error.to_string()),
                        Err(join) => Err(format!("training crashed: {join}")),
                    };
                }
                _ = heartbeat.tick() => {
                    if let Err(error) = self.queue.heartbeat(&self.settings.consumer, delivery).await {
                        tracing::warn!(%error, "cannot heartbeat the training job");
                    }
                    let latest = *progress_rx.borrow_and_update();
                    if latest.is_some() && latest != shown.progress {
                        shown.progress = latest;
                        shown.touch();
                        if let Err(error) = self.registry.update(&shown).await {
                            tracing::debug!(%error, "cannot publish training progress");
                        }
                    }
                }
            }
        }
    }

    async fn succeed(
        &self,
        mut record: ModelRecord,
        delivery: &Delivery,
        trained: TrainedModel,
    ) -> Result<JobOutcome, RegistryError> {
        if self.registry.get(record.id).await?.is_none() {
            self.queue.ack(delivery).await?;
            return Ok(JobOutcome::Skipped(record.id));
        }
        record.status = ModelStatus::Ready;
        record.error = None;
        record.columns = delivery.job.feature_names().to_vec();
        record.labels = trained.card.labels.clone();
        record.class_values = trained.class_values.clone();
        record.metrics = serde_json::to_value(&trained.metrics).unwrap_or_default();
        record.sha256 = Some(sha256_hex(&trained.onnx));
        record.size_bytes = Some(trained.onnx.len() as u64);
        let mut card = trained.card;
        card.name = Some(record.name.clone());
        card.version = Some(record.version.to_string());
        record.card = Some(card);
        record.touch();
        // Ready and `name:latest` in one step: a client that reads `ready` gets this model
        // from `name` on any replica.
        self.registry.complete(&record, trained.onnx.into()).await?;
        self.queue.ack(delivery).await?;
        self.metrics
            .training_jobs
            .with_label_values(&["ready"])
            .inc();
        Ok(JobOutcome::Trained(record.id))
    }

    async fn fail(
        &self,
        mut record: ModelRecord,
        delivery: &Delivery,
        error: String,
    ) -> Result<JobOutcome, RegistryError> {
        tracing::warn!(model = %record.id, %error, "training failed");
        record.status = ModelStatus::Failed;
        record.error = Some(error);
        record.touch();
        self.registry.update(&record).await?;
        self.queue.ack(delivery).await?;
        self.metrics
            .training_jobs
            .with_label_values(&["failed"])
            .inc();
        Ok(JobOutcome::Failed(record.id))
    }
}
