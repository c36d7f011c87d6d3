//! A fixed set of OS threads, each owning one [`Backend`], fed through a bounded queue.
//!
//! Why threads and not `spawn_blocking`: ONNX Runtime sessions are `&mut` to run, so each
//! thread owns one outright (no lock on the hot path), the queue bound gives back-pressure
//! (a full queue is a 503, not unbounded memory), and a thread is where the dynamic batcher
//! ([`super::batcher`]) merges the requests queued behind the one it takes.
//!
//! A job carries its request's span across the thread hop: its `queue_wait` span opens at
//! submission and closes when a thread takes the job, and the ONNX Runtime call runs in an
//! `inference` span under the request's span (`crate::spans`).
//!
//! A merged run's answers cross back with one wake-up ([`Relay`]): the first request still
//! waiting gets every answer and hands the others on from the runtime's own thread.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    time::Instant,
};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use super::{
    batcher::{self, Batching},
    metrics::ModelMetrics,
    Backend, InferenceError,
};
use crate::{
    model::{FeatureBatch, Scores},
    spans,
};

struct Job {
    batch: FeatureBatch,
    reply: oneshot::Sender<Reply>,
    /// The submitting request's span: the parent of the job's stage spans.
    span: tracing::Span,
    /// Open from submission until a thread takes the job (with batching: once the thread
    /// has gathered the job's group).
    queue_wait: tracing::Span,
}

/// A job's answer, with the input the thread is done with. The input's values were allocated
/// on the request's thread: freed there too, they take the allocator's thread-local path
/// instead of being handed back across threads one value at a time.
struct Reply {
    result: Result<Scores, InferenceError>,
    /// The request's own batch (emptied by a merge) and, with one job of a merged run, the
    /// merged batch that took its values.
    spent: [Option<FeatureBatch>; 2],
    /// The answers of the rest of a merged run, for this request to hand on.
    relay: Relay,
}

/// Answers that one request delivers for the rest of its merged run.
///
/// Why: a oneshot send from an inference thread wakes a tokio worker through the driver (a
/// syscall), and on a core shared with that worker the woken worker preempts the thread,
/// answers that one request and parks again before the next send: a wake-up and a context
/// switch pair per request. At 17,500 req/s on one core, the worker parked about five times
/// per merged call (1.5 with the relay). Handed on from a worker, a send only queues the
/// waiting task on that worker, and idle workers steal from it as usual.
///
/// Dropping a relay delivers it, so the answers still arrive if the request that holds them
/// is cancelled (its client went away, its timeout fired) after they reached it.
#[derive(Default)]
struct Relay(Vec<(oneshot::Sender<Reply>, Reply)>);

impl Relay {
    /// Sends `answers` (in order) with one cross-thread wake-up: the first request still
    /// waiting gets the others' answers with its own.
    fn deliver(answers: Vec<(oneshot::Sender<Reply>, Reply)>) {
        let mut answers = answers.into_iter();
        while let Some((reply, mut first)) = answers.next() {
            first.relay = Relay(answers.collect());
            match reply.send(first) {
                Ok(()) => return,
                // That client went away: the next one carries the rest.
                Err(mut refused) => answers = std::mem::take(&mut refused.relay.0).into_iter(),
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for (reply, answer) in self.0.drain(..) {
            let _ = reply.send(answer);
        }
    }
}

impl Job {
    /// The job's answer, handing back its input (and `merged`) to be freed by the caller.
    fn answer(
        self,
        result: Result<Scores, InferenceError>,
        merged: Option<FeatureBatch>,
    ) -> (oneshot::Sender<Reply>, Reply) {
        let reply = Reply {
            result,
            spent: [Some(self.batch), merged],
            relay: Relay::default(),
        };
        (self.reply, reply)
    }

    /// Answers the job now.
    fn answer_now(self, result: Result<Scores, InferenceError>) {
        let (reply, answer) = self.answer(result, None);
        let _ = reply.send(answer);
    }
}

pub struct InferencePool {
    model: Arc<str>,
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
        let model: Arc<str> = Arc::from(model);
        let (queue, jobs) = bounded::<Job>(queue_capacity.max(1));
        for (index, backend) in backends.into_iter().enumerate() {
            let jobs = jobs.clone();
            let metrics = metrics.clone();
            let model = model.clone();
            std::thread::Builder::new()
                .name(format!("infer-{model}-{index}"))
                .spawn(move || serve_jobs(&model, backend, &jobs, batching, &metrics))?;
        }
        Ok(Self {
            model,
            queue,
            metrics,
        })
    }

    /// Runs `batch` on the first free thread.
    pub async fn infer(&self, batch: FeatureBatch) -> Result<Scores, InferenceError> {
        let _load = InFlight::enter(&self.metrics);
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let queue_wait = spans::stage(
            || tracing::info_span!(parent: &span, "queue_wait", model = %self.model, rows = batch.rows),
        );
        let job = Job {
            batch,
            reply,
            span,
            queue_wait,
        };
        self.queue.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => InferenceError::QueueFull,
            TrySendError::Disconnected(_) => InferenceError::Stopped,
        })?;
        self.metrics.queue_depth.set(self.queue.len() as i64);
        let Reply {
            result,
            spent,
            relay,
        } = answer.await.map_err(|_| InferenceError::Stopped)?;
        drop(relay);
        drop(spent);
        result
    }
}

fn serve_jobs(
    model: &str,
    mut backend: Box<dyn Backend>,
    jobs: &Receiver<Job>,
    batching: Batching,
    metrics: &ModelMetrics,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = batcher::gather(first, jobs, batching, |job| job.batch.rows);
        metrics.queue_depth.set(jobs.len() as i64);
        for job in &mut group {
            // Taken, its group gathered: the queue wait ends here.
            drop(std::mem::replace(
                &mut job.queue_wait,
                tracing::Span::none(),
            ));
        }
        // Clients that went away while queued: skip their work.
        group.retain(|job| !job.reply.is_closed());
        match group.len() {
            0 => {}
            1 => run_each_alone(model, backend.as_mut(), group, metrics),
            _ => run_merged(model, backend.as_mut(), group, metrics),
        }
    }
}

fn run_alone(
    model: &str,
    backend: &mut dyn Backend,
    job: &Job,
    metrics: &ModelMetrics,
) -> Result<Scores, InferenceError> {
    let span = inference_span(model, job, job.batch.rows, 1);
    run(backend, &job.batch, scope(&span, job), metrics)
}

/// One ONNX Runtime call for the whole group; if it fails, each job alone.
fn run_merged(model: &str, backend: &mut dyn Backend, mut group: Vec<Job>, metrics: &ModelMetrics) {
    let rows: Vec<usize> = group.iter().map(|job| job.batch.rows).collect();
    let mut batches: Vec<&mut FeatureBatch> = group.iter_mut().map(|job| &mut job.batch).collect();
    let Some(batch) = batcher::merge(&mut batches) else {
        // Columns of different types: nothing was moved.
        return run_each_alone(model, backend, group, metrics);
    };
    // Each request's trace shows the shared call.
    let inference_spans: Vec<_> = group
        .iter()
        .map(|job| inference_span(model, job, batch.rows, group.len()))
        .collect();
    let result = run(
        backend,
        &batch,
        scope(&inference_spans[0], &group[0]),
        metrics,
    );
    drop(inference_spans);
    match result {
        Ok(scores) => {
            let parts = batcher::split(&scores, rows);
            let mut merged = Some(batch);
            let answers = group
                .into_iter()
                .zip(parts)
                .map(|(job, part)| job.answer(Ok(part), merged.take()))
                .collect();
            Relay::deliver(answers);
        }
        Err(_) => {
            // The merge moved each request's rows out: give them back first.
            for (job, own) in group.iter_mut().zip(batcher::unmerge(batch, &rows)) {
                job.batch = own;
            }
            run_each_alone(model, backend, group, metrics);
        }
    }
}

fn run_each_alone(model: &str, backend: &mut dyn Backend, group: Vec<Job>, metrics: &ModelMetrics) {
    for job in group {
        let result = run_alone(model, backend, &job, metrics);
        job.answer_now(result);
    }
}

/// The `inference` span of `job` in a call of `rows` records from `requests` requests, under
/// the job's request span (disabled while stage spans are off).
fn inference_span(model: &str, job: &Job, rows: usize, requests: usize) -> tracing::Span {
    spans::stage(|| tracing::info_span!(parent: &job.span, "inference", model, rows, requests))
}

/// The span ONNX Runtime runs in: `inference`, or the request's span while stage spans are
/// off, so its log lines still name the request.
fn scope<'a>(inference: &'a tracing::Span, job: &'a Job) -> &'a tracing::Span {
    if inference.is_none() {
        &job.span
    } else {
        inference
    }
}

/// Runs `batch` in `span` (closed by the caller when it drops it).
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

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use tokio::{sync::mpsc::UnboundedReceiver, time::timeout};

    use super::*;
    use crate::{inference::metrics::InferenceMetrics, model::Column};

    const LIMIT: Duration = Duration::from_secs(30);

    /// A backend that reports each run's rows, holds the run until the test lets it finish,
    /// then answers with `score`.
    struct Gate {
        started: tokio::sync::mpsc::UnboundedSender<usize>,
        open: mpsc::Receiver<()>,
        score: fn(&FeatureBatch) -> Result<Scores, InferenceError>,
    }

    impl Backend for Gate {
        fn run(&mut self, batch: &FeatureBatch) -> Result<Scores, InferenceError> {
            let _ = self.started.send(batch.rows);
            let _ = self.open.recv();
            (self.score)(batch)
        }
    }

    /// A pool of one [`Gate`] thread: the pool, the rows of each run as it starts, and the
    /// sender that lets one run finish per message.
    fn gated_pool(
        queue_capacity: usize,
        batching: Batching,
        score: fn(&FeatureBatch) -> Result<Scores, InferenceError>,
    ) -> (
        Arc<InferencePool>,
        UnboundedReceiver<usize>,
        mpsc::Sender<()>,
    ) {
        let (started_tx, started) = tokio::sync::mpsc::unbounded_channel();
        let (open, open_rx) = mpsc::channel();
        let metrics = InferenceMetrics::new(&prometheus::Registry::new())
            .unwrap()
            .for_model("gated");
        let gate = Gate {
            started: started_tx,
            open: open_rx,
            score,
        };
        let pool = InferencePool::start(
            "gated",
            vec![Box::new(gate)],
            queue_capacity,
            batching,
            metrics,
        )
        .unwrap();
        (Arc::new(pool), started, open)
    }

    /// Waits until `jobs` jobs wait in the pool's queue.
    async fn until_queued(pool: &InferencePool, jobs: usize, what: &str) {
        let deadline = std::time::Instant::now() + LIMIT;
        while pool.queue.len() < jobs {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn one_row() -> FeatureBatch {
        FeatureBatch {
            rows: 1,
            columns: vec![Column::Float32(vec![1.0])],
        }
    }

    /// Refuses any call of more than one record and scores a record with its own value.
    fn one_at_a_time(batch: &FeatureBatch) -> Result<Scores, InferenceError> {
        if batch.rows != 1 {
            return Err(InferenceError::Failed("one record at a time".to_owned()));
        }
        own_values(batch)
    }

    /// Scores each record with its own value, in calls of any size.
    fn own_values(batch: &FeatureBatch) -> Result<Scores, InferenceError> {
        match &batch.columns[..] {
            [Column::Int64(values)] => Ok(Scores {
                rows: batch.rows,
                width: 1,
                values: values.iter().map(|&v| v as f32).collect(),
            }),
            _ => Err(InferenceError::Failed("one int64 column".to_owned())),
        }
    }

    fn int_row(value: i64) -> FeatureBatch {
        FeatureBatch {
            rows: 1,
            columns: vec![Column::Int64(vec![value])],
        }
    }

    fn spawn_infer(
        pool: &Arc<InferencePool>,
        value: i64,
    ) -> tokio::task::JoinHandle<Result<Scores, InferenceError>> {
        let pool = pool.clone();
        tokio::spawn(async move { pool.infer(int_row(value)).await })
    }

    /// The scores `task` was answered with, waiting at most [`LIMIT`].
    async fn answered(task: tokio::task::JoinHandle<Result<Scores, InferenceError>>) -> Vec<f32> {
        let result = timeout(LIMIT, task).await.expect("answered in time");
        result.expect("the task ran").expect("scored").values
    }

    #[tokio::test]
    async fn when_a_merged_call_fails_each_request_runs_alone_on_its_own_rows() {
        let batching = Batching {
            max_rows: 8,
            max_delay: Duration::ZERO,
        };
        let (pool, mut calls, open) = gated_pool(8, batching, one_at_a_time);
        // The first call holds the thread, so the next two are gathered together.
        let first = spawn_infer(&pool, 1);
        assert_eq!(timeout(LIMIT, calls.recv()).await.unwrap(), Some(1));
        let queued = [spawn_infer(&pool, 2), spawn_infer(&pool, 3)];
        until_queued(&pool, 2, "both jobs are queued").await;
        // The first call, the merged one and each request alone.
        for _ in 0..4 {
            open.send(()).unwrap();
        }
        assert_eq!(answered(first).await, vec![1.0]);
        for (job, value) in queued.into_iter().zip([2.0, 3.0]) {
            assert_eq!(answered(job).await, vec![value]);
        }
        let mut later = Vec::new();
        while let Ok(rows) = calls.try_recv() {
            later.push(rows);
        }
        assert_eq!(
            later,
            vec![2, 1, 1],
            "one merged call, then each request alone"
        );
    }

    /// A pool whose thread is held by a first job while `leader` and `follower` queue behind
    /// it, so one merged call runs both. Returns the pool, the gate, the run reports, the
    /// leader's future (polled once: submitted, not answered) and the follower's task.
    async fn merged_pair() -> (
        Arc<InferencePool>,
        mpsc::Sender<()>,
        UnboundedReceiver<usize>,
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Scores, InferenceError>> + Send>>,
        tokio::task::JoinHandle<Result<Scores, InferenceError>>,
    ) {
        let batching = Batching {
            max_rows: 8,
            max_delay: Duration::ZERO,
        };
        let (pool, mut calls, open) = gated_pool(8, batching, own_values);
        let holder = spawn_infer(&pool, 1);
        assert_eq!(timeout(LIMIT, calls.recv()).await.unwrap(), Some(1));
        let mut leader = {
            let pool = pool.clone();
            Box::pin(async move { pool.infer(int_row(2)).await })
                as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
        };
        assert!(futures::poll!(&mut leader).is_pending(), "the leader waits");
        let follower = spawn_infer(&pool, 3);
        until_queued(&pool, 2, "leader and follower are queued").await;
        open.send(()).unwrap();
        assert_eq!(answered(holder).await, vec![1.0]);
        assert_eq!(
            timeout(LIMIT, calls.recv()).await.unwrap(),
            Some(2),
            "leader and follower run as one call"
        );
        (pool, open, calls, leader, follower)
    }

    #[tokio::test]
    async fn each_request_of_a_merged_call_gets_its_own_answer() {
        let (_pool, open, _calls, leader, follower) = merged_pair().await;
        open.send(()).unwrap();
        assert_eq!(
            timeout(LIMIT, leader).await.unwrap().unwrap().values,
            vec![2.0]
        );
        assert_eq!(answered(follower).await, vec![3.0]);
    }

    #[tokio::test]
    async fn answers_still_arrive_when_the_request_holding_them_is_cancelled() {
        let (pool, open, mut calls, leader, follower) = merged_pair().await;
        // A later job starts only once the merged call's answers went out, to the leader.
        let later = spawn_infer(&pool, 4);
        until_queued(&pool, 1, "the later job is queued").await;
        open.send(()).unwrap();
        assert_eq!(timeout(LIMIT, calls.recv()).await.unwrap(), Some(1));
        // The leader's client goes away without reading its answer or handing the rest on.
        drop(leader);
        assert_eq!(answered(follower).await, vec![3.0]);
        open.send(()).unwrap();
        assert_eq!(answered(later).await, vec![4.0]);
    }

    #[tokio::test]
    async fn when_the_first_request_left_during_the_call_the_next_one_hands_the_answers_on() {
        let (_pool, open, _calls, leader, follower) = merged_pair().await;
        drop(leader);
        open.send(()).unwrap();
        assert_eq!(answered(follower).await, vec![3.0]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_new_work_while_every_thread_is_busy() {
        let (pool, mut started, open) = gated_pool(1, Batching::OFF, |batch| {
            Ok(Scores {
                rows: batch.rows,
                width: 1,
                values: vec![0.5; batch.rows],
            })
        });
        let submit = || {
            let pool = pool.clone();
            tokio::spawn(async move { pool.infer(one_row()).await })
        };
        let running = submit();
        tokio::time::timeout(LIMIT, started.recv())
            .await
            .expect("the only thread runs the first job");
        let queued = submit();
        until_queued(&pool, 1, "the second job is queued").await;
        assert!(matches!(
            pool.infer(one_row()).await,
            Err(InferenceError::QueueFull)
        ));
        for _ in 0..2 {
            open.send(()).unwrap();
        }
        for job in [running, queued] {
            assert_eq!(job.await.unwrap().unwrap().values, vec![0.5]);
        }
    }
}
