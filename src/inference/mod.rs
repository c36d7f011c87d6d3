//! Running models. A [`Backend`] is one loaded copy of a model that runs a batch
//! synchronously; a [`pool::InferencePool`] owns several of them on dedicated OS threads so
//! inference never blocks the async runtime.

pub mod batcher;
pub mod metrics;
pub mod ort;
pub mod pool;

use crate::model::{FeatureBatch, Scores};

/// One loaded copy of a model. Blocking by design: only pool threads call it.
pub trait Backend: Send + 'static {
    fn run(&mut self, batch: &FeatureBatch) -> Result<Scores, InferenceError>;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    /// Every pool thread is busy and the queue is full.
    #[error("inference queue is full")]
    QueueFull,
    /// The pool is shutting down.
    #[error("inference pool has stopped")]
    Stopped,
    /// The runtime refused or failed the batch.
    #[error("inference failed: {0}")]
    Failed(String),
}
