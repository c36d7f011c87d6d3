//! The Prometheus registry of one process, with its text exposition.
//!
//! Every subsystem owns the typed group of metrics it updates and registers it here once:
//! `http::metrics::HttpMetrics`, `serving::metrics::ServingMetrics` (with
//! `inference::metrics::InferenceMetrics`), `jobs::metrics::JobMetrics`, `grpc::metrics`,
//! `shadow::metrics`, `quota::metrics`. This module only adds the build and process metrics.
//!
//! Names follow Prometheus conventions (`ml_api_<thing>_<unit>`, `_total` for counters).
//! Route labels come from axum's `MatchedPath`, never from raw URIs or request bodies.

use prometheus::{
    exponential_buckets, proto::MetricFamily, Encoder, Gauge, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs to ~13 s: fine resolution where ml-api's answers land.
pub fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 18).unwrap_or_default()
}

/// Registers `metric` on `registry` and hands it back: how each group's constructor
/// creates its metrics.
pub fn registered<M>(registry: &Registry, metric: M) -> prometheus::Result<M>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// One process's registry (cheap to clone: the registry is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry holding the build info and, on Linux, the process metrics.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let build_info = Gauge::with_opts(
            Opts::new("ml_api_build_info", "Build of this replica (value 1).")
                .const_label("version", env!("CARGO_PKG_VERSION"))
                .const_label(
                    "revision",
                    option_env!("ML_API_GIT_REVISION").unwrap_or("unknown"),
                ),
        )?;
        build_info.set(1.0);
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self { registry })
    }

    /// Registers a metric defined next to its feature on this registry.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        self.registry.register(collector)?;
        Ok(())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> anyhow::Result<String> {
        self.render_with(Vec::new())
    }

    /// The Prometheus text exposition of every metric and of `scraped`, the families a
    /// subsystem computes for this scrape alone (the drift series), in name order.
    pub fn render_with(&self, scraped: Vec<MetricFamily>) -> anyhow::Result<String> {
        let mut families = self.registry.gather();
        families.extend(scraped);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&families, &mut buffer)?;
        Ok(String::from_utf8(buffer)?)
    }

    /// The registry, for the subsystems' metric groups.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
