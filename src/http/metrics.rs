//! The HTTP front door's metrics: requests by route, method and status, their latency, the
//! requests in flight, rate-limit refusals (gRPC's admission counts into the same counter)
//! and the draining flag.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::metrics::{latency_buckets, registered};

#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGauge,
    pub rate_limited: IntCounter,
    pub draining: IntGauge,
}

impl HttpMetrics {
    /// Creates the group and registers it on `registry` (once per registry).
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "ml_api_http_requests_total",
                    "HTTP requests answered, by route, method and status.",
                ),
                &["method", "route", "status"],
            )?,
        )?;
        let duration = registered(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ml_api_http_request_duration_seconds",
                    "Time from request to response, by route, method and status.",
                )
                .buckets(latency_buckets()),
                &["method", "route", "status"],
            )?,
        )?;
        let in_flight = registered(
            registry,
            IntGauge::new(
                "ml_api_http_requests_in_flight",
                "HTTP requests being served now, not counting the scrape that reads this.",
            )?,
        )?;
        let rate_limited = registered(
            registry,
            IntCounter::new(
                "ml_api_rate_limited_requests_total",
                "Requests refused with 429 by the rate limiter.",
            )?,
        )?;
        let draining = registered(
            registry,
            IntGauge::new(
                "ml_api_draining",
                "1 while the replica drains for shutdown.",
            )?,
        )?;
        Ok(Self {
            requests,
            duration,
            in_flight,
            rate_limited,
            draining,
        })
    }
}
