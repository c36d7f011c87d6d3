//! Prometheus metrics: one registry per server, typed handles, text exposition.
//!
//! Names follow Prometheus conventions (`ml_api_<thing>_<unit>`, `_total` for counters).
//! Route labels come from axum's `MatchedPath`, never from raw URIs or request bodies.

use crate::drift::DriftReport;
use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs to ~13 s: fine resolution where ml-api's answers land.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 18).unwrap_or_default()
}

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub inference_duration: HistogramVec,
    pub batch_rows: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub inference_in_flight: IntGauge,
    pub inference_busy: prometheus::Counter,
    pub predictions: IntCounterVec,
    pub validation_failures: IntCounterVec,
    pub feature_drift: GaugeVec,
    pub prediction_drift: GaugeVec,
    pub drift_samples: IntGaugeVec,
    pub model_load_seconds: GaugeVec,
    pub model_info: IntGaugeVec,
    pub rate_limited: IntCounter,
    pub draining: IntGauge,
    pub model_cache: IntCounterVec,
    pub training_jobs: IntCounterVec,
    pub training_queue_depth: IntGauge,
    pub training_duration: Histogram,
    /// Seconds per training phase (reading, fitting, profiling, exporting).
    pub training_phase: HistogramVec,
    /// Rows read from data sets by training jobs.
    pub training_rows: IntCounter,
    /// Rows per second of each job's reading phase.
    pub training_rows_per_second: Histogram,
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
    pub busy_seconds: prometheus::Counter,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "ml_api_http_requests_total",
                "HTTP requests answered, by route, method and status.",
            ),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "ml_api_http_request_duration_seconds",
                "Time from request to response, by route, method and status.",
            )
            .buckets(latency_buckets()),
            &["method", "route", "status"],
        )?;
        let http_in_flight = IntGauge::new(
            "ml_api_http_requests_in_flight",
            "HTTP requests being served now.",
        )?;
        let inference_duration = HistogramVec::new(
            HistogramOpts::new(
                "ml_api_inference_duration_seconds",
                "Time of one ONNX Runtime call, by model.",
            )
            .buckets(latency_buckets()),
            &["model"],
        )?;
        let batch_rows = HistogramVec::new(
            HistogramOpts::new(
                "ml_api_inference_batch_size",
                "Records per ONNX Runtime call, by model.",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
            &["model"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "ml_api_inference_queue_depth",
                "Batches waiting for an inference thread, by model.",
            ),
            &["model"],
        )?;
        let inference_in_flight = IntGauge::new(
            "ml_api_inference_in_flight",
            "Requests waiting for or running on an inference thread, all models: the replica's \
             instantaneous load.",
        )?;
        let inference_busy = prometheus::Counter::new(
            "ml_api_inference_busy_seconds_total",
            "Time-integral of ml_api_inference_in_flight: its rate() is the mean number of \
             requests in inference over the window (Little's law), the autoscaling signal.",
        )?;
        let predictions = IntCounterVec::new(
            Opts::new("ml_api_predictions_total", "Records scored, by model."),
            &["model"],
        )?;
        let validation_failures = IntCounterVec::new(
            Opts::new(
                "ml_api_validation_failures_total",
                "Request fields that broke a model's schema or contract, by model, feature, \
                 reason and action (`reject`: refused with 422; `warn`: served under the \
                 contract's warn policy).",
            ),
            &["model", "feature", "reason", "action"],
        )?;
        let feature_drift = GaugeVec::new(
            Opts::new(
                "ml_api_feature_drift_psi",
                "Population stability index of a feature over the drift window against the \
                 model's contract (set once the window holds --drift-min-samples rows).",
            ),
            &["model", "feature"],
        )?;
        let prediction_drift = GaugeVec::new(
            Opts::new(
                "ml_api_prediction_drift_psi",
                "Population stability index of the predicted label over the drift window \
                 against the contract's reference.",
            ),
            &["model"],
        )?;
        let drift_samples = IntGaugeVec::new(
            Opts::new(
                "ml_api_drift_window_samples",
                "Rows in a model's drift window on this replica.",
            ),
            &["model"],
        )?;
        let model_load_seconds = GaugeVec::new(
            Opts::new(
                "ml_api_model_load_duration_seconds",
                "Time taken to load and warm up a model.",
            ),
            &["model", "version"],
        )?;
        let model_info = IntGaugeVec::new(
            Opts::new(
                "ml_api_model_info",
                "Models loaded on this replica (value 1).",
            ),
            &["model", "version", "sha256"],
        )?;
        let rate_limited = IntCounter::new(
            "ml_api_rate_limited_requests_total",
            "Requests refused with 429 by the rate limiter.",
        )?;
        let model_cache = IntCounterVec::new(
            Opts::new(
                "ml_api_model_cache_events_total",
                "Loaded-model cache lookups and evictions, by event (hit, miss, eviction).",
            ),
            &["event"],
        )?;
        let training_jobs = IntCounterVec::new(
            Opts::new(
                "ml_api_training_jobs_total",
                "Training jobs, by status (queued, ready, failed).",
            ),
            &["status"],
        )?;
        let training_queue_depth = IntGauge::new(
            "ml_api_training_queue_depth",
            "Training jobs waiting or running.",
        )?;
        let training_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ml_api_training_duration_seconds",
                "Time to train one model.",
            )
            .buckets(exponential_buckets(0.01, 2.0, 16).unwrap_or_default()),
        )?;
        let training_phase = HistogramVec::new(
            HistogramOpts::new(
                "ml_api_training_phase_duration_seconds",
                "Time spent in each phase of a training job (reading, fitting, profiling, exporting).",
            )
            .buckets(exponential_buckets(0.01, 2.0, 18).unwrap_or_default()),
            &["phase"],
        )?;
        let training_rows = IntCounter::new(
            "ml_api_training_rows_read_total",
            "Rows read from data sets by training jobs.",
        )?;
        let training_rows_per_second = Histogram::with_opts(
            HistogramOpts::new(
                "ml_api_training_rows_per_second",
                "Rows per second of a training job's reading phase.",
            )
            .buckets(exponential_buckets(1_000.0, 2.0, 16).unwrap_or_default()),
        )?;
        let draining = IntGauge::new(
            "ml_api_draining",
            "1 while the replica drains for shutdown.",
        )?;
        let build_info = Gauge::with_opts(
            Opts::new("ml_api_build_info", "Build of this replica (value 1).")
                .const_label("version", env!("CARGO_PKG_VERSION"))
                .const_label(
                    "revision",
                    option_env!("ML_API_GIT_REVISION").unwrap_or("unknown"),
                ),
        )?;
        build_info.set(1.0);

        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(http_in_flight.clone()))?;
        registry.register(Box::new(inference_duration.clone()))?;
        registry.register(Box::new(batch_rows.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(predictions.clone()))?;
        registry.register(Box::new(validation_failures.clone()))?;
        registry.register(Box::new(inference_in_flight.clone()))?;
        registry.register(Box::new(inference_busy.clone()))?;
        registry.register(Box::new(feature_drift.clone()))?;
        registry.register(Box::new(prediction_drift.clone()))?;
        registry.register(Box::new(drift_samples.clone()))?;
        registry.register(Box::new(model_load_seconds.clone()))?;
        registry.register(Box::new(model_info.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(draining.clone()))?;
        registry.register(Box::new(model_cache.clone()))?;
        registry.register(Box::new(training_jobs.clone()))?;
        registry.register(Box::new(training_queue_depth.clone()))?;
        registry.register(Box::new(training_duration.clone()))?;
        registry.register(Box::new(training_phase.clone()))?;
        registry.register(Box::new(training_rows.clone()))?;
        registry.register(Box::new(training_rows_per_second.clone()))?;
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            inference_duration,
            batch_rows,
            queue_depth,
            inference_in_flight,
            inference_busy,
            predictions,
            validation_failures,
            feature_drift,
            prediction_drift,
            drift_samples,
            model_load_seconds,
            model_info,
            rate_limited,
            draining,
            model_cache,
            training_jobs,
            training_queue_depth,
            training_duration,
            training_phase,
            training_rows,
            training_rows_per_second,
        })
    }

    pub fn for_model(&self, model: &str) -> ModelMetrics {
        ModelMetrics {
            inference_seconds: self.inference_duration.with_label_values(&[model]),
            batch_rows: self.batch_rows.with_label_values(&[model]),
            queue_depth: self.queue_depth.with_label_values(&[model]),
            in_flight: self.inference_in_flight.clone(),
            busy_seconds: self.inference_busy.clone(),
        }
    }

    /// Sets the drift gauges from the models loaded on this replica (called before a scrape),
    /// dropping the series of models no longer loaded.
    pub fn set_drift(&self, reports: &[(String, DriftReport)]) {
        self.feature_drift.reset();
        self.prediction_drift.reset();
        self.drift_samples.reset();
        for (model, report) in reports {
            let model = model.as_str();
            self.drift_samples
                .with_label_values(&[model])
                .set(i64::try_from(report.samples).unwrap_or(i64::MAX));
            for feature in &report.features {
                if let Some(psi) = feature.psi {
                    self.feature_drift
                        .with_label_values(&[model, &feature.feature])
                        .set(psi);
                }
            }
            if let Some(psi) = report.predictions_psi {
                self.prediction_drift.with_label_values(&[model]).set(psi);
            }
        }
    }

    /// Registers a metric defined next to its feature (e.g. `shadow`'s) on this registry.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        self.registry.register(collector)?;
        Ok(())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8(buffer)?)
    }

    /// The registry, for modules that register their own metrics (e.g. `quota::metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
