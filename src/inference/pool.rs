//! A fixed set of OS threads, each owning one [`Backend`], fed through a bounded queue.
//!
//! Why threads and not `spawn_blocking`: ONNX Runtime sessions are `&mut` to run, so each
//! thread owns one outright (no lock on the hot path), the queue bound gives back-pressure
//! (a full queue is a 503, not unbounded memory), and a thread is the natural place for the
//! dynamic batcher to merge requests later.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::Instant,
};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use super::{Backend, InferenceError};
use crate::{
    metrics::ModelMetrics,
    model::{FeatureBatch, Scores},
};

struct Job {
    batch: FeatureBatch,
    reply: oneshot::Sender<Result<Scores, InferenceError>>,
    span: tracing::Span,
}

pub struct InferencePool {
    queue: Sender<Job>,
    metrics: ModelMetrics,
}

impl InferencePool {
    /// Starts one thread per backend.
    pub fn start(
        model: &str,
        backends: Vec<Box<dyn Backend>>,
        queue_capacity: usize,
        metrics: ModelMetrics,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = bounded::<Job>(queue_capacity.max(1));
        for (index, backend) in backends.into_iter().enumerate() {
            let jobs = jobs.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("infer-{model}-{index}"))
                .spawn(move || serve_jobs(backend, &jobs, &metrics))?;
        }
        Ok(Self { queue, metrics })
    }

    /// Runs `batch` on the first free thread.
    pub async fn infer(&self, batch: FeatureBatch) -> Result<Scores, InferenceError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            batch,
            reply,
            span: tracing::Span::current(),
        };
        self.queue.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => InferenceError::QueueFull,
            TrySendError::Disconnected(_) => InferenceError::Stopped,
        })?;
        self.metrics.queue_depth.set(self.queue.len() as i64);
        answer.await.map_err(|_| InferenceError::Stopped)?
    }
}

fn serve_jobs(mut backend: Box<dyn Backend>, jobs: &Receiver<Job>, metrics: &ModelMetrics) {
    for job in jobs.iter() {
        metrics.queue_depth.set(jobs.len() as i64);
        if job.reply.is_closed() {
            // The client went away while queued: skip the work.
            continue;
        }
        let started = Instant::now();
        let result = job.span.in_scope(|| {
            catch_unwind(AssertUnwindSafe(|| backend.run(&job.batch))).unwrap_or_else(|_| {
                Err(InferenceError::Failed(
                    "the inference backend panicked".to_owned(),
                ))
            })
        });
        metrics
            .inference_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_rows.observe(job.batch.rows as f64);
        let _ = job.reply.send(result);
    }
}
