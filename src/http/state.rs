//! State shared by every handler, behind `Arc`s.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use std::time::Duration;

use crate::{
    http::metrics::HttpMetrics,
    jobs::{metrics::JobMetrics, JobQueue},
    metrics::Metrics,
    quota::Quotas,
    serving::{Catalog, ModelRef, Scorer},
    shadow::Shadow,
};

/// What every handler gets: one reference count to clone, because axum clones the state
/// several times per request (the extractor, each `from_fn_with_state` layer); `perf` showed
/// cloning and dropping a state of many `Arc`s at a sixth of the server's time.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub catalog: Arc<Catalog>,
    pub jobs: Arc<dyn JobQueue>,
    /// Required on write endpoints when set.
    pub admin_key: Option<Arc<str>>,
    pub default_model: Arc<ModelRef>,
    /// The process's registry (`/metrics` renders it).
    pub metrics: Metrics,
    pub http_metrics: HttpMetrics,
    /// Counts the training jobs `POST /models` queues (workers update the rest).
    pub job_metrics: JobMetrics,
    pub lifecycle: Arc<Lifecycle>,
    pub max_batch_records: usize,
    pub max_upload_bytes: usize,
    pub request_timeout: Duration,
    /// API keys and their shared quotas.
    pub quotas: Arc<Quotas>,
    /// Challenger shadow scoring: requests are offered to it after the champion answered.
    pub shadow: Arc<Shadow>,
    /// Scores requests: every prediction route calls it.
    pub scorer: Arc<Scorer>,
    /// Data sets: their bytes, their records, and the training size limits.
    pub datasets: Datasets,
}

/// What `/datasets` and `POST /models {"dataset_id"}` need.
#[derive(Clone)]
pub struct Datasets {
    pub store: Arc<crate::datasets::DatasetStore>,
    pub records: Arc<dyn crate::datasets::DatasetRecords>,
    pub max_bytes: u64,
    pub max_training_body_bytes: usize,
    pub limits: crate::training::Limits,
}

/// Readiness as Kubernetes sees it: ready once models are loaded, not ready while draining.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
