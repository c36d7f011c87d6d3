//! Shadow-scoring metrics, labelled by model name and alias only (bounded: one series set
//! per alias that has a challenger).

use prometheus::{
    exponential_buckets, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct ShadowMetrics {
    /// `outcome`: `scored`, `dropped` (queue full) or `failed`.
    pub requests: IntCounterVec,
    pub compared_rows: IntCounterVec,
    pub agreeing_rows: IntCounterVec,
    pub agreement_ratio: GaugeVec,
    pub abs_diff: HistogramVec,
    /// `role`: `champion` or `challenger`.
    pub latency: HistogramVec,
    pub queue_depth: IntGauge,
}

impl ShadowMetrics {
    pub fn register(metrics: &Metrics) -> anyhow::Result<Self> {
        let labels = &["model", "alias"];
        let requests = IntCounterVec::new(
            Opts::new(
                "ml_api_shadow_requests_total",
                "Requests sampled for challenger shadow scoring, by model, alias and outcome \
                 (scored, dropped: the shadow queue was full, failed).",
            ),
            &["model", "alias", "outcome"],
        )?;
        let compared_rows = IntCounterVec::new(
            Opts::new(
                "ml_api_shadow_compared_records_total",
                "Records scored by both champion and challenger.",
            ),
            labels,
        )?;
        let agreeing_rows = IntCounterVec::new(
            Opts::new(
                "ml_api_shadow_agreeing_records_total",
                "Records where champion and challenger rank the same label first.",
            ),
            labels,
        )?;
        let agreement_ratio = GaugeVec::new(
            Opts::new(
                "ml_api_shadow_agreement_ratio",
                "Share of records on which the challenger agrees with the champion, on this \
                 replica, since the current champion/challenger pair was set.",
            ),
            labels,
        )?;
        let abs_diff = HistogramVec::new(
            HistogramOpts::new(
                "ml_api_shadow_abs_diff",
                "Per record: mean absolute difference between champion and challenger \
                 probabilities.",
            )
            .buckets(vec![
                0.0001, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            labels,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "ml_api_shadow_latency_seconds",
                "Inference time of shadow-scored requests, by model, alias and role \
                 (champion: on the response path; challenger: off it).",
            )
            .buckets(exponential_buckets(0.0001, 2.0, 18)?),
            &["model", "alias", "role"],
        )?;
        let queue_depth = IntGauge::new(
            "ml_api_shadow_queue_depth",
            "Sampled requests waiting for the challenger on this replica.",
        )?;
        metrics.register(Box::new(requests.clone()))?;
        metrics.register(Box::new(compared_rows.clone()))?;
        metrics.register(Box::new(agreeing_rows.clone()))?;
        metrics.register(Box::new(agreement_ratio.clone()))?;
        metrics.register(Box::new(abs_diff.clone()))?;
        metrics.register(Box::new(latency.clone()))?;
        metrics.register(Box::new(queue_depth.clone()))?;
        Ok(Self {
            requests,
            compared_rows,
            agreeing_rows,
            agreement_ratio,
            abs_diff,
            latency,
            queue_depth,
        })
    }
}
