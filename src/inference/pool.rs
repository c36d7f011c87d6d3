//! A fixed set of OS threads, each owning one [`Backend`], fed through a bounded queue.
//!
//! Why threads and not `spawn_blocking`: ONNX Runtime sessions are `&mut` to run, so each
//! thread owns one outright (no lock on the hot path), the queue bound gives back-pressure
//! (a full queue is a 503, not unbounded memory), and a thread is where the dynamic batcher
//! ([`super::batcher`]) merges the requests queued behind the one it takes.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::Instant,
};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use super::{
    batcher::{self, Batching},
    Backend, InferenceError,
};
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
        batching: Batching,
        metrics: ModelMetrics,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = bounded::<Job>(queue_capacity.max(1));
        for (index, backend) in backends.into_iter().enumerate() {
            let jobs = jobs.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("infer-{model}-{index}"))
                .spawn(move || serve_jobs(backend, &jobs, batching, &metrics))?;
        }
        Ok(Self { queue, metrics })
    }

    /// Runs `batch` on the first free thread.
    pub async fn infer(&self, batch: FeatureBatch) -> Result<Scores, InferenceError> {
        let _load = InFlight::enter(&self.metrics);
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

fn serve_jobs(
    mut backend: Box<dyn Backend>,
    jobs: &Receiver<Job>,
    batching: Batching,
    metrics: &ModelMetrics,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = batcher::gather(first, jobs, batching, |job| job.batch.rows);
        metrics.queue_depth.set(jobs.len() as i64);
        // Clients that went away while queued: skip their work.
        group.retain(|job| !job.reply.is_closed());
        match group.len() {
            0 => {}
            1 => {
                for job in group {
                    let result = run(backend.as_mut(), &job.batch, &job.span, metrics);
                    let _ = job.reply.send(result);
                }
            }
            _ => run_merged(backend.as_mut(), group, metrics),
        }
    }
}

/// One ONNX Runtime call for the whole group; if it fails, each job alone.
fn run_merged(backend: &mut dyn Backend, group: Vec<Job>, metrics: &ModelMetrics) {
    let merged = batcher::merge(group.iter().map(|job| &job.batch));
    let span = group
        .first()
        .map_or_else(tracing::Span::none, |job| job.span.clone());
    let result = merged.map(|batch| run(backend, &batch, &span, metrics));
    match result {
        Some(Ok(scores)) => {
            let parts = batcher::split(&scores, group.iter().map(|job| job.batch.rows));
            for (job, part) in group.into_iter().zip(parts) {
                let _ = job.reply.send(Ok(part));
            }
        }
        _ => {
            for job in group {
                let result = run(backend, &job.batch, &job.span, metrics);
                let _ = job.reply.send(result);
            }
        }
    }
}

fn run(
    backend: &mut dyn Backend,
    batch: &FeatureBatch,
    span: &tracing::Span,
    metrics: &ModelMetrics,
) -> Result<Scores, InferenceError> {
    let started = Instant::now();
    let result = span.in_scope(|| {
        catch_unwind(AssertUnwindSafe(|| backend.run(batch))).unwrap_or_else(|_| {
            Err(InferenceError::Failed(
                "the inference backend panicked".to_owned(),
            ))
        })
    });
    metrics
        .inference_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.batch_rows.observe(batch.rows as f64);
    result
}

/// Counts a request as in inference from its submission until it is answered or abandoned
/// (the guard also runs when a client's future is dropped), and adds that time to the
/// replica's busy-seconds counter: the autoscaling signal.
struct InFlight<'a> {
    metrics: &'a ModelMetrics,
    since: Instant,
}

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a ModelMetrics) -> Self {
        metrics.in_flight.inc();
        Self {
            metrics,
            since: Instant::now(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics
            .busy_seconds
            .inc_by(self.since.elapsed().as_secs_f64());
    }
}
