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
    datasets::{load, DatasetStore},
    jobs::{metrics::JobMetrics, Delivery, Job, JobQueue},
    registry::{
        now_ms, ModelRecord, ModelRegistry, ModelStatus, PhaseProgress, Progress, RegistryError,
    },
    serving::load::sha256_hex,
    training::{self, Limits, Phase, TrainedModel, TrainingJob},
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
    metrics: JobMetrics,
    datasets: Option<Arc<DatasetStore>>,
    limits: Limits,
}

/// What the job is doing, as the training thread reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Status {
    progress: Option<Progress>,
    phase: Option<PhaseProgress>,
}

impl Worker {
    pub fn new(
        registry: Arc<dyn ModelRegistry>,
        queue: Arc<dyn JobQueue>,
        settings: WorkerSettings,
        metrics: JobMetrics,
    ) -> Self {
        Self {
            registry,
            queue,
            settings,
            metrics,
            datasets: None,
            limits: Limits::default(),
        }
    }

    /// Where the data sets of `dataset_id` jobs are read from, and the limits they train under.
    pub fn with_datasets(mut self, store: Arc<DatasetStore>, limits: Limits) -> Self {
        self.datasets = Some(store);
        self.limits = limits;
        self
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
                    .queue_depth
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
            .duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok((trained, phases)) => self.succeed(record, &delivery, trained, phases).await,
            Err(error) => self.fail(record, &delivery, error).await,
        }
    }

    /// Reads the job's rows (from its data set) and trains on the blocking pool, while this
    /// task heartbeats the job and publishes its phase and progress.
    async fn train_with_heartbeat(
        &self,
        delivery: &Delivery,
        record: &ModelRecord,
    ) -> Result<(TrainedModel, serde_json::Value), String> {
        let (status_tx, mut status_rx) = watch::channel(Status {
            progress: None,
            phase: None,
        });
        let status_tx = Arc::new(status_tx);
        let work = self.work(delivery.job.clone(), status_tx);
        tokio::pin!(work);
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat);
        let mut shown = record.clone();
        loop {
            tokio::select! {
                result = &mut work => return result,
                _ = heartbeat.tick() => {
                    if let Err(error) = self.queue.heartbeat(&self.settings.consumer, delivery).await {
                        tracing::warn!(%error, "cannot heartbeat the training job");
                    }
                    let latest = *status_rx.borrow_and_update();
                    let changed = (latest.progress.is_some() && latest.progress != shown.progress)
                        || (latest.phase.is_some() && latest.phase != shown.phase);
                    if changed {
                        shown.progress = latest.progress.or(shown.progress);
                        shown.phase = latest.phase.or(shown.phase);
                        shown.touch();
                        if let Err(error) = self.registry.update(&shown).await {
                            tracing::debug!(%error, "cannot publish training progress");
                        }
                    }
                }
            }
        }
    }

    /// The job itself: read (a data set job), check, fit, profile, export.
    async fn work(
        &self,
        job: Job,
        status: Arc<watch::Sender<Status>>,
    ) -> Result<(TrainedModel, serde_json::Value), String> {
        let metrics = self.metrics.clone();
        let clock = Arc::new(PhaseClock::new(metrics.clone()));
        let enter = {
            let status = status.clone();
            let clock = clock.clone();
            move |phase: Phase| {
                clock.enter(Some(phase));
                status.send_modify(|s| {
                    let rows_read = s.phase.map_or(0, |p| p.rows_read);
                    s.phase = Some(PhaseProgress {
                        phase,
                        rows_read,
                        since_ms: now_ms(),
                    });
                });
            }
        };
        let job: TrainingJob = match job {
            Job::Inline(job) => *job,
            Job::Dataset(job) => {
                let store = self.datasets.clone().ok_or_else(|| {
                    "this worker has no dataset store (--dataset-store)".to_owned()
                })?;
                clock.enter(Some(Phase::Reading));
                status.send_modify(|s| {
                    s.phase = Some(PhaseProgress {
                        phase: Phase::Reading,
                        rows_read: 0,
                        since_ms: now_ms(),
                    })
                });
                let reading = Instant::now();
                let rows_status = status.clone();
                let loaded = load::load(&store, &job, move |rows| {
                    rows_status.send_modify(|s| {
                        if let Some(p) = s.phase.as_mut() {
                            p.rows_read = rows;
                        }
                    });
                })
                .await
                .map_err(|error| {
                    format!("cannot read data set {}: {error}", job.dataset.dataset_id)
                })?;
                let rows = loaded.rows() as u64;
                metrics.rows.inc_by(rows);
                let seconds = reading.elapsed().as_secs_f64();
                if seconds > 0.0 {
                    metrics.rows_per_second.observe(rows as f64 / seconds);
                }
                let problems = loaded.check(&self.limits);
                if !problems.is_empty() {
                    let listed: Vec<String> = problems
                        .iter()
                        .map(|p| format!("{}: {}", p.field, p.message))
                        .collect();
                    return Err(format!(
                        "the data set cannot train this model: {}",
                        listed.join("; ")
                    ));
                }
                loaded
            }
        };
        let span = tracing::Span::current();
        let progress_status = status.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut enter = enter;
            span.in_scope(|| {
                training::train_in_phases(
                    &job,
                    &mut |p| {
                        progress_status.send_modify(|s| {
                            s.progress = Some(Progress {
                                iteration: p.iteration,
                                loss: p.loss,
                            })
                        });
                    },
                    &mut enter,
                )
            })
        })
        .await;
        clock.enter(None);
        match result {
            Ok(Ok(trained)) => Ok((trained, clock.seconds())),
            Ok(Err(error)) => Err(error.to_string()),
            Err(join) => Err(format!("training crashed: {join}")),
        }
    }

    async fn succeed(
        &self,
        mut record: ModelRecord,
        delivery: &Delivery,
        trained: TrainedModel,
        phases: serde_json::Value,
    ) -> Result<JobOutcome, RegistryError> {
        if self.registry.get(record.id).await?.is_none() {
            self.queue.ack(delivery).await?;
            return Ok(JobOutcome::Skipped(record.id));
        }
        record.status = ModelStatus::Ready;
        record.error = None;
        record.columns = delivery.job.feature_names().to_vec();
        record.phase = None;
        record.labels = trained.card.labels.clone();
        record.class_values = trained.class_values.clone();
        record.metrics = serde_json::to_value(&trained.metrics).unwrap_or_default();
        if let Some(metrics) = record.metrics.as_object_mut() {
            metrics.insert("phase_seconds".to_owned(), phases);
        }
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
        self.metrics.jobs.with_label_values(&["ready"]).inc();
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
        self.metrics.jobs.with_label_values(&["failed"]).inc();
        Ok(JobOutcome::Failed(record.id))
    }
}

/// The phase running (and since when), and the seconds of those that ended, by name.
type ClockState = (
    Option<(Phase, Instant)>,
    serde_json::Map<String, serde_json::Value>,
);

/// Times a job's phases: each into `ml_api_training_phase_duration_seconds` and into the
/// finished record's `metrics.phase_seconds`.
struct PhaseClock {
    metrics: JobMetrics,
    state: std::sync::Mutex<ClockState>,
}

impl PhaseClock {
    fn new(metrics: JobMetrics) -> Self {
        Self {
            metrics,
            state: std::sync::Mutex::new((None, serde_json::Map::new())),
        }
    }

    /// Ends the current phase (if any) and starts `next` (if any).
    fn enter(&self, next: Option<Phase>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some((phase, started)) = state.0.take() {
            let seconds = started.elapsed().as_secs_f64();
            self.metrics
                .phase
                .with_label_values(&[phase_name(phase)])
                .observe(seconds);
            state
                .1
                .insert(phase_name(phase).to_owned(), serde_json::json!(seconds));
        }
        state.0 = next.map(|phase| (phase, Instant::now()));
    }

    fn seconds(&self) -> serde_json::Value {
        self.state
            .lock()
            .map(|state| serde_json::Value::Object(state.1.clone()))
            .unwrap_or_default()
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Reading => "reading",
        Phase::Fitting => "fitting",
        Phase::Exporting => "exporting",
        Phase::Profiling => "profiling",
    }
}
