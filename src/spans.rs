//! The spans that break a request into its stages, children of the request's span: `decode`
//! (the body into the model's columns), `queue_wait` (submitted to the inference pool until a
//! thread takes it; the span travels with the job), `inference` (the ONNX Runtime call) and
//! `encode` (the response body).
//!
//! They exist for traces, so they (and the request's own span) are created only while spans
//! are consumed: exported (`OTEL_EXPORTER_OTLP_ENDPOINT`) or sent to Sentry, see
//! `crate::telemetry`. Otherwise a stage costs one atomic load: no span is allocated and the
//! log layer has nothing to format.

use std::sync::atomic::{AtomicBool, Ordering};

static EXPORTED: AtomicBool = AtomicBool::new(false);

/// Turns the request and stage spans on; called by `crate::telemetry::init` when it installs
/// a consumer of spans (the OTLP exporter, or Sentry).
pub fn enable() {
    EXPORTED.store(true, Ordering::Relaxed);
}

/// Whether spans are consumed: read once when the router is built, and by every stage.
#[inline]
pub fn enabled() -> bool {
    EXPORTED.load(Ordering::Relaxed)
}

/// The span `make` builds while spans are exported, otherwise a disabled one (never built).
#[inline]
pub fn stage(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() {
        make()
    } else {
        tracing::Span::none()
    }
}
