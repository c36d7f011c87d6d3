//! The inference pools' metrics: model-run latency, batch sizes and queue depth by model,
//! and the replica-wide load (requests in inference and its time-integral).

use prometheus::{
    Counter, Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::metrics::{latency_buckets, registered};

#[derive(Clone)]
pub struct InferenceMetrics {
    duration: HistogramVec,
    batch_rows: HistogramVec,
    queue_depth: IntGaugeVec,
    in_flight: IntGauge,
    busy: Counter,
}

/// Handles pre-bound to one model's label, for the inference threads.
#[derive(Clone)]
pub struct ModelMetrics {
    pub inference_seconds: Histogram,
    pub batch_rows: Histogram,
    pub queue_depth: IntGauge,
    /// Replica-wide: requests waiting for or running on an inference thread (every model).
    pub in_flight: IntGauge,
    /// Replica-wide: the time-integral of `in_flight` (seconds).
    pub busy_seconds: Counter,
}

impl InferenceMetrics {
    /// Creates the group and registers it on `registry` (once per registry).
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let duration = registered(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ml_api_inference_duration_seconds",
                    "Time of one ONNX Runtime call, by model.",
                )
                .buckets(latency_buckets()),
                &["model"],
            )?,
        )?;
        let batch_rows = registered(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ml_api_inference_batch_size",
                    "Records per ONNX Runtime call, by model.",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ]),
                &["model"],
            )?,
        )?;
        let queue_depth = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "ml_api_inference_queue_depth",
                    "Batches waiting for an inference thread, by model.",
                ),
                &["model"],
            )?,
        )?;
        let in_flight = registered(
            registry,
            IntGauge::new(
                "ml_api_inference_in_flight",
                "Requests waiting for or running on an inference thread, all models: the replica's \
                 instantaneous load.",
            )?,
        )?;
        let busy = registered(
            registry,
            Counter::new(
                "ml_api_inference_busy_seconds_total",
                "Time-integral of ml_api_inference_in_flight: its rate() is the mean number of \
                 requests in inference over the window (Little's law), the autoscaling signal.",
            )?,
        )?;
        Ok(Self {
            duration,
            batch_rows,
            queue_depth,
            in_flight,
            busy,
        })
    }

    /// The handles of one model's pool.
    pub fn for_model(&self, model: &str) -> ModelMetrics {
        ModelMetrics {
            inference_seconds: self.duration.with_label_values(&[model]),
            batch_rows: self.batch_rows.with_label_values(&[model]),
            queue_depth: self.queue_depth.with_label_values(&[model]),
            in_flight: self.in_flight.clone(),
            busy_seconds: self.busy.clone(),
        }
    }
}
