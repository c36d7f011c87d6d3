//! The training job queue. `POST /models` enqueues; workers take jobs, heartbeat them while
//! they run, and acknowledge them when done. A worker that dies mid-job stops heartbeating,
//! and after `reclaim_after` another worker takes the job over.
//!
//! - [`redis::RedisQueue`]: a Redis Stream with a consumer group (any number of workers, in
//!   any pods); unacknowledged entries are reclaimed with `XAUTOCLAIM`.
//! - [`embedded::EmbeddedQueue`]: an in-process channel for the single-node mode.

pub mod embedded;
pub mod metrics;
pub mod redis;

use async_trait::async_trait;
use uuid::Uuid;

use serde::{Deserialize, Serialize};

use crate::{datasets::load::DatasetJob, registry::RegistryError, training::TrainingJob};

/// What a worker trains: rows sent in the request, or a data set in the dataset store.
/// Stored as JSON; untagged, so jobs queued before data sets existed still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Job {
    Dataset(Box<DatasetJob>),
    Inline(Box<TrainingJob>),
}

impl Job {
    pub fn params(&self) -> &crate::training::Params {
        match self {
            Self::Dataset(job) => &job.params,
            Self::Inline(job) => &job.params,
        }
    }

    pub fn feature_names(&self) -> &[String] {
        match self {
            Self::Dataset(job) => &job.features,
            Self::Inline(job) => job.feature_names(),
        }
    }
}

/// One job handed to a worker.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The model this job trains.
    pub model_id: Uuid,
    pub job: Job,
    /// Queue-specific handle used to heartbeat and acknowledge.
    pub receipt: String,
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn submit(&self, model_id: Uuid, job: &Job) -> Result<(), RegistryError>;
    /// Queues a job whose rows came in the request.
    async fn enqueue(&self, model_id: Uuid, job: &TrainingJob) -> Result<(), RegistryError> {
        self.submit(model_id, &Job::Inline(Box::new(job.clone())))
            .await
    }
    /// The next job for `consumer`: a stalled one first (no heartbeat for `reclaim_after`),
    /// else a new one, waiting up to `wait`.
    async fn next(
        &self,
        consumer: &str,
        wait: std::time::Duration,
    ) -> Result<Option<Delivery>, RegistryError>;
    /// Tells the queue the job is still being worked on.
    async fn heartbeat(&self, consumer: &str, delivery: &Delivery) -> Result<(), RegistryError>;
    /// The job is finished (succeeded or failed for good): it will not be delivered again.
    async fn ack(&self, delivery: &Delivery) -> Result<(), RegistryError>;
    /// Jobs waiting or in progress.
    async fn depth(&self) -> Result<u64, RegistryError>;
}
