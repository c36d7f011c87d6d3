//! Logs, traces and error reporting, set up once per process before the async runtime starts
//! (as Sentry asks, so every thread sees its hub).
//!
//! - Logs: JSON lines (containers) or pretty (terminals), filtered by `RUST_LOG`. Lines about
//!   a request carry its id, method and route as fields (no span is needed). The access
//!   line, one per request, is formatted by `http::middleware` itself in the same JSON shape
//!   while nothing but the log reads events. A request formats its lines into a shared buffer that a background thread writes to stdout about
//!   every 50 ms (`crate::log_writer`), so no request waits on the pipe or wakes a thread.
//!   Should the pipe stall, lines beyond the buffer are dropped rather than blocking
//!   requests; the guard writes what is buffered when `main` ends, after the graceful shutdown.
//! - Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT`, spans go to `<endpoint>/v1/traces` over
//!   OTLP/HTTP: a span per request, joined to the caller's W3C `traceparent`, and a span per
//!   stage (`crate::spans`). Without an exporter (or Sentry) no request span is created.
//! - Errors: with `SENTRY_DSN`, panics and `error!` events (every 5xx) become Sentry events.

use std::io::IsTerminal;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing_subscriber::{
    filter::EnvFilter, layer::SubscriberExt, util::SubscriberInitExt, Layer, Registry,
};

use crate::{
    config::{LogFormat, TelemetryConfig},
    log_writer::{self, LogWriterGuard},
};

/// Flushes spans and Sentry events when dropped at the end of `main`.
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    _sentry: Option<sentry::ClientInitGuard>,
    /// Dropping it writes the log lines still buffered and stops the writer thread.
    _log_writer: LogWriterGuard,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("ml-api: could not flush traces: {error}");
            }
        }
    }
}

type BoxedLayer =
    Box<dyn Layer<tracing_subscriber::layer::Layered<EnvFilter, Registry>> + Send + Sync>;

pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let sentry = config
        .sentry_dsn
        .as_deref()
        .filter(|dsn| !dsn.is_empty())
        .map(|dsn| {
            sentry::init((
                dsn,
                sentry::ClientOptions {
                    release: sentry::release_name!(),
                    environment: config.sentry_environment.clone().map(Into::into),
                    traces_sample_rate: config.sentry_traces_sample_rate,
                    attach_stacktrace: true,
                    send_default_pii: false,
                    ..Default::default()
                },
            ))
        });
    if let Some(guard) = &sentry {
        anyhow::ensure!(guard.is_enabled(), "SENTRY_DSN is set but not a valid DSN");
    }

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer_provider = match config.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => Some(otlp_provider(endpoint, &config.service_name)?),
        None => None,
    };

    let filter = EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("invalid log filter `{}`", config.log_filter))?;
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let (writer, log_writer) = log_writer::stdout();
    let mut layers: Vec<BoxedLayer> = Vec::new();
    let spans_consumed = tracer_provider.is_some() || sentry.is_some();
    if json && !spans_consumed {
        // Nothing but the JSON log reads events: the access log may write its lines itself.
        log_writer::set_json_lines(writer.clone());
    }
    layers.push(if json {
        json_layer(writer).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(writer).boxed()
    });
    if spans_consumed {
        crate::spans::enable();
    }
    if let Some(provider) = &tracer_provider {
        let tracer = provider.tracer("ml-api");
        layers.push(tracing_opentelemetry::layer().with_tracer(tracer).boxed());
    }
    if sentry.is_some() {
        layers.push(sentry::integrations::tracing::layer().boxed());
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .context("cannot install the tracing subscriber")?;

    Ok(TelemetryGuard {
        tracer_provider,
        _sentry: sentry,
        _log_writer: log_writer,
    })
}

/// The JSON log lines: one object per event, its fields at the top level beside `timestamp`,
/// `level` and `target` (the shape the access log's own lines copy, `http::middleware`).
pub fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
}

fn otlp_provider(endpoint: &str, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .context("cannot build the OTLP span exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider)
}
