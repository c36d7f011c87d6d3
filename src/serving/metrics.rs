//! The serving core's metrics: records scored and the fields refused (the scorer), the
//! loaded-model cache, load times and the models loaded (the catalog), the drift series (built
//! from the catalog's drift windows for each scrape), and the inference pools' group, which
//! the catalog hands to every model it loads.

use prometheus::{proto::MetricFamily, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::{drift::DriftReport, inference::metrics::InferenceMetrics, metrics::registered};

#[derive(Clone)]
pub struct ServingMetrics {
    pub predictions: IntCounterVec,
    pub validation_failures: IntCounterVec,
    pub model_cache: IntCounterVec,
    pub model_load_seconds: GaugeVec,
    pub model_info: IntGaugeVec,
    pub inference: InferenceMetrics,
}

impl ServingMetrics {
    /// Creates the group (the inference pools' included) and registers it on `registry`
    /// (once per registry).
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let predictions = registered(
            registry,
            IntCounterVec::new(
                Opts::new("ml_api_predictions_total", "Records scored, by model."),
                &["model"],
            )?,
        )?;
        let validation_failures = registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "ml_api_validation_failures_total",
                    "Request fields that broke a model's schema or contract, by model, feature, \
                     reason and action (`reject`: refused with 422; `warn`: served under the \
                     contract's warn policy).",
                ),
                &["model", "feature", "reason", "action"],
            )?,
        )?;
        let model_cache = registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "ml_api_model_cache_events_total",
                    "Loaded-model cache lookups and evictions, by event (hit, miss, eviction).",
                ),
                &["event"],
            )?,
        )?;
        let model_load_seconds = registered(
            registry,
            GaugeVec::new(
                Opts::new(
                    "ml_api_model_load_duration_seconds",
                    "Time taken to load and warm up a model.",
                ),
                &["model", "version"],
            )?,
        )?;
        let model_info = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "ml_api_model_info",
                    "Models loaded on this replica (value 1).",
                ),
                &["model", "version", "sha256"],
            )?,
        )?;
        Ok(Self {
            predictions,
            validation_failures,
            model_cache,
            model_load_seconds,
            model_info,
            inference: InferenceMetrics::new(registry)?,
        })
    }
}

/// The drift series of one scrape, from the drift windows of the models loaded on this
/// replica. Built afresh for every scrape and never stored: gauges shared by the process
/// would be reset by one scrape while another renders them, and concurrent scrapes (an HA
/// pair of Prometheus servers, an agent, a `curl`) would lose series.
pub fn drift_families(reports: &[(String, DriftReport)]) -> prometheus::Result<Vec<MetricFamily>> {
    let registry = Registry::new();
    let feature_drift = registered(
        &registry,
        GaugeVec::new(
            Opts::new(
                "ml_api_feature_drift_psi",
                "Population stability index of a feature over the drift window against the \
                 model's contract (set once the window holds --drift-min-samples rows).",
            ),
            &["model", "feature"],
        )?,
    )?;
    let prediction_drift = registered(
        &registry,
        GaugeVec::new(
            Opts::new(
                "ml_api_prediction_drift_psi",
                "Population stability index of the predicted label over the drift window \
                 against the contract's reference.",
            ),
            &["model"],
        )?,
    )?;
    let drift_samples = registered(
        &registry,
        IntGaugeVec::new(
            Opts::new(
                "ml_api_drift_window_samples",
                "Rows in a model's drift window on this replica.",
            ),
            &["model"],
        )?,
    )?;
    for (model, report) in reports {
        let model = model.as_str();
        drift_samples
            .with_label_values(&[model])
            .set(i64::try_from(report.samples).unwrap_or(i64::MAX));
        for feature in &report.features {
            if let Some(psi) = feature.psi {
                feature_drift
                    .with_label_values(&[model, &feature.feature])
                    .set(psi);
            }
        }
        if let Some(psi) = report.predictions_psi {
            prediction_drift.with_label_values(&[model]).set(psi);
        }
    }
    Ok(registry.gather())
}
