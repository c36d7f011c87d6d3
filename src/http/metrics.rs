//! The HTTP front door's metrics: requests by route, method and status, their latency, the
//! requests in flight, rate-limit refusals (gRPC's admission counts into the same counter)
//! and the draining flag.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use axum::http::{Method, StatusCode};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::metrics::{latency_buckets, registered};

#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGauge,
    pub rate_limited: IntCounter,
    pub draining: IntGauge,
    /// The series of `requests` and `duration` already answered, by route, so a request
    /// finds its pair without hashing its three labels into each vector again.
    series: Arc<RwLock<HashMap<String, Vec<Series>, foldhash::fast::RandomState>>>,
}

/// The `requests` and `duration` series of one method and status on a route.
struct Series {
    method: Method,
    status: StatusCode,
    requests: IntCounter,
    duration: Histogram,
}

/// Method-and-status pairs remembered per route; more (a client inventing methods) are
/// counted without being remembered.
const SERIES_PER_ROUTE: usize = 32;

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
            series: Arc::default(),
        })
    }

    /// Counts one answered request and its latency, by method, route and status.
    pub fn answered(&self, method: &Method, route: &str, status: StatusCode, seconds: f64) {
        let observe = |series: &Series| {
            series.requests.inc();
            series.duration.observe(seconds);
        };
        let matches = |series: &&Series| series.status == status && series.method == method;
        if let Ok(known) = self.series.read() {
            if let Some(series) = known.get(route).and_then(|all| all.iter().find(matches)) {
                return observe(series);
            }
        }
        let labels = [method.as_str(), route, status.as_str()];
        let series = Series {
            method: method.clone(),
            status,
            requests: self.requests.with_label_values(&labels),
            duration: self.duration.with_label_values(&labels),
        };
        observe(&series);
        if let Ok(mut known) = self.series.write() {
            let all = known.entry(route.to_owned()).or_default();
            if all.len() < SERIES_PER_ROUTE && !all.iter().any(|s| matches(&s)) {
                all.push(series);
            }
        }
    }
}
