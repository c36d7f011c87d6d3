//! Training jobs' metrics: jobs by status, the queue, durations of jobs and of their phases,
//! and the rows they read. Updated by the workers; `POST /models` counts the jobs it queues.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

use crate::metrics::registered;

#[derive(Clone)]
pub struct JobMetrics {
    pub jobs: IntCounterVec,
    pub queue_depth: IntGauge,
    pub duration: Histogram,
    /// Seconds per training phase (reading, fitting, profiling, exporting).
    pub phase: HistogramVec,
    /// Rows read from data sets by training jobs.
    pub rows: IntCounter,
    /// Rows per second of each job's reading phase.
    pub rows_per_second: Histogram,
}

impl JobMetrics {
    /// Creates the group and registers it on `registry` (once per registry).
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let jobs = registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "ml_api_training_jobs_total",
                    "Training jobs, by status (queued, ready, failed).",
                ),
                &["status"],
            )?,
        )?;
        let queue_depth = registered(
            registry,
            IntGauge::new(
                "ml_api_training_queue_depth",
                "Training jobs waiting or running.",
            )?,
        )?;
        let duration = registered(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "ml_api_training_duration_seconds",
                    "Time to train one model.",
                )
                .buckets(exponential_buckets(0.01, 2.0, 16)?),
            )?,
        )?;
        let phase = registered(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ml_api_training_phase_duration_seconds",
                    "Time spent in each phase of a training job (reading, fitting, profiling, exporting).",
                )
                .buckets(exponential_buckets(0.01, 2.0, 18)?),
                &["phase"],
            )?,
        )?;
        let rows = registered(
            registry,
            IntCounter::new(
                "ml_api_training_rows_read_total",
                "Rows read from data sets by training jobs.",
            )?,
        )?;
        let rows_per_second = registered(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "ml_api_training_rows_per_second",
                    "Rows per second of a training job's reading phase.",
                )
                .buckets(exponential_buckets(1_000.0, 2.0, 16)?),
            )?,
        )?;
        Ok(Self {
            jobs,
            queue_depth,
            duration,
            phase,
            rows,
            rows_per_second,
        })
    }
}
