//! Cross-cutting request handling: metrics and the access log, time limits, and the tracing
//! span of a request (joined to the caller's trace through W3C `traceparent`).

use std::{
    cell::RefCell,
    io::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Instant, SystemTime},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use opentelemetry::propagation::Extractor;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;

use super::error::{ApiError, ServerFailure};
use super::state::AppState;
use crate::config::AccessLogConfig;

/// The route label: the matched route template, never the raw path (bounded cardinality).
/// `MatchedPath` is a reference-counted string, so keeping it costs no allocation.
fn route_of(req: &Request) -> Option<MatchedPath> {
    req.extensions().get::<MatchedPath>().cloned()
}

fn route_label(route: &Option<MatchedPath>) -> &str {
    route.as_ref().map_or("unmatched", MatchedPath::as_str)
}

/// Counts, times and logs every request, tracks how many are in flight, and answers 503
/// `timeout` when one takes longer than `--request-timeout`: one layer, because each layer
/// costs `/predict` a boxed future and a clone of the state. The log lines carry the
/// request's id, method and route themselves, so they need no tracing span: the request span
/// exists only while spans are consumed (see [`request_span`]).
pub async fn observe(
    State((state, access_log)): State<(AppState, Arc<AccessLog>)>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_of(&req);
    let method = req.method().clone();
    let request_id = req.headers().get("x-request-id").cloned();
    let metrics = &state.http_metrics;
    metrics.in_flight.inc();
    let response = within_time_limit(&state, req, next).await;
    metrics.in_flight.dec();
    let latency = started.elapsed();
    let status = response.status();
    let labels = [method.as_str(), route_label(&route), status.as_str()];
    metrics.requests.with_label_values(&labels).inc();
    metrics
        .duration
        .with_label_values(&labels)
        .observe(latency.as_secs_f64());
    let request = RequestLine {
        method: method.as_str(),
        route: route_label(&route),
        request_id: request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or(""),
    };
    if let Some(failure) = response.extensions().get::<ServerFailure>() {
        request.failed(failure, status.as_u16());
    }
    access_log.record(&request, status.as_u16(), latency);
    response
}

/// What every log line about a request says about it.
struct RequestLine<'a> {
    method: &'a str,
    route: &'a str,
    request_id: &'a str,
}

impl RequestLine<'_> {
    /// Logs why a request got a 5xx: internal errors at error level (Sentry turns those into
    /// events carrying the request's context), the others (capacity, timeouts, a registry that
    /// is down) at warn.
    fn failed(&self, failure: &ServerFailure, status: u16) {
        let Self {
            method,
            route,
            request_id,
        } = self;
        if failure.internal {
            tracing::error!(method, route, request_id, status, error = %failure.cause, "request failed");
        } else {
            tracing::warn!(method, route, request_id, status, error = %failure.cause, "request not served");
        }
    }
}

/// Runs the rest of the stack, answering 503 `timeout` past `--request-timeout`.
async fn within_time_limit(state: &AppState, req: Request, next: Next) -> Response {
    // A data set upload takes as long as its bytes take to arrive; it is bounded by
    // `--max-dataset-bytes` instead.
    if req.method() == axum::http::Method::POST && req.uri().path() == "/datasets" {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(state.request_timeout).into_response(),
    }
}

/// The span a request runs in while spans are consumed (an OTLP exporter or Sentry): its
/// parent is the caller's trace when the request carries a `traceparent` header, so ml-api's
/// spans join distributed traces. It is not created otherwise: for the log alone it would cost
/// about a sixth of `/predict`'s throughput (formatting its fields as JSON, then reading them back
/// for every line), and the log lines carry the request's id, method and route themselves.
pub fn request_span(req: &Request) -> tracing::Span {
    let route = route_of(req);
    let route = route_label(&route);
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{} {}", req.method(), route),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
    );
    if span.is_disabled() {
        // Filtered out (e.g. RUST_LOG=warn): no trace context to extract or attach.
        return span;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// Which requests get an access-log line (target `ml_api::access`): every answer with status
/// 400 or above, and an evenly spread `sample_rate` of the others. The line itself is formatted
/// on the request's thread but written by the log writer's own thread (src/log_writer.rs).
#[derive(Debug)]
pub struct AccessLog {
    enabled: bool,
    sample_rate: f64,
    /// Successful requests seen so far; request `n` is logged when `⌊(n + 1)·rate⌋ > ⌊n·rate⌋`.
    seen: AtomicU64,
}

impl AccessLog {
    pub fn new(config: &AccessLogConfig) -> Self {
        Self {
            enabled: config.access_log,
            sample_rate: config.access_log_sample_rate.clamp(0.0, 1.0),
            seen: AtomicU64::new(0),
        }
    }

    fn should_log(&self, status: u16) -> bool {
        if !self.enabled {
            return false;
        }
        if status >= 400 || self.sample_rate >= 1.0 {
            return true;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.sample_rate).floor() > (n * self.sample_rate).floor()
    }

    /// Writes the access-log line of a request when it is sampled and `RUST_LOG` lets
    /// `ml_api::access` through at info. While the log is JSON and nothing else reads events,
    /// the line is formatted here, in tracing-subscriber's JSON shape, and appended to the
    /// log: a fixed set of fields needs no field visitor, and this costs `/predict` about a
    /// quarter of what tracing's formatter did (docs/performance.md).
    fn record(&self, request: &RequestLine<'_>, status: u16, latency: std::time::Duration) {
        if !self.should_log(status) {
            return;
        }
        let latency_ms = latency.as_secs_f64() * 1000.0;
        match crate::log_writer::json_lines() {
            Some(lines) if tracing::enabled!(target: "ml_api::access", tracing::Level::INFO) => {
                LINE.with_borrow_mut(|line| {
                    line.clear();
                    access_line(line, SystemTime::now(), request, status, latency_ms);
                    let _ = lines.make_writer().write_all(line);
                });
            }
            Some(_) => {}
            None => request.served(status, latency_ms),
        }
    }
}

thread_local! {
    /// The access line being formatted, reused from request to request.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

impl RequestLine<'_> {
    /// The access line as a tracing event (target `ml_api::access`).
    fn served(&self, status: u16, latency_ms: f64) {
        let Self {
            method,
            route,
            request_id,
        } = self;
        tracing::info!(
            target: "ml_api::access",
            method,
            route,
            request_id,
            status,
            latency_ms,
            "request served"
        );
    }
}

/// The line [`RequestLine::served`] makes tracing-subscriber's JSON layer write, field for
/// field and in the same order (a test holds the two together).
fn access_line(
    line: &mut Vec<u8>,
    now: SystemTime,
    request: &RequestLine<'_>,
    status: u16,
    latency_ms: f64,
) {
    // Writing into a Vec cannot fail, nor can serializing a str or a float.
    let _ = write!(
        line,
        r#"{{"timestamp":"{}","level":"INFO","message":"request served","method":"#,
        humantime::format_rfc3339_micros(now)
    );
    let _ = serde_json::to_writer(&mut *line, request.method);
    line.extend_from_slice(br#","route":"#);
    let _ = serde_json::to_writer(&mut *line, request.route);
    line.extend_from_slice(br#","request_id":"#);
    let _ = serde_json::to_writer(&mut *line, request.request_id);
    let _ = write!(line, r#","status":{status},"latency_ms":"#);
    let _ = serde_json::to_writer(&mut *line, &latency_ms);
    line.extend_from_slice(b",\"target\":\"ml_api::access\"}\n");
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_log(enabled: bool, sample_rate: f64) -> AccessLog {
        AccessLog::new(&AccessLogConfig {
            access_log: enabled,
            access_log_sample_rate: sample_rate,
        })
    }

    #[test]
    fn sampling_keeps_an_even_fraction_of_successes_and_every_error() {
        let log = access_log(true, 0.25);
        let kept = (0..100).filter(|_| log.should_log(200)).count();
        assert_eq!(kept, 25);
        assert!((0..10).all(|_| log.should_log(422) && log.should_log(503)));
        let none = access_log(true, 0.0);
        assert!((0..10).all(|_| !none.should_log(200)));
        assert!(none.should_log(404));
    }

    /// A JSON object's entries in the order of the text (whatever map serde_json uses).
    struct Ordered(Vec<(String, serde_json::Value)>);

    impl<'de> serde::Deserialize<'de> for Ordered {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Entries;
            impl<'de> serde::de::Visitor<'de> for Entries {
                type Value = Ordered;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Ordered, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        entries.push(entry);
                    }
                    Ok(Ordered(entries))
                }
            }
            deserializer.deserialize_map(Entries)
        }
    }

    #[test]
    fn the_access_line_written_directly_is_the_line_tracing_writes() {
        use tracing_subscriber::layer::SubscriberExt;
        let request = RequestLine {
            method: "POST",
            route: "/v2/models/{name}/infer",
            // A client's request id, with what JSON must escape.
            request_id: "id \"quoted\" \\ \u{1}",
        };
        let captured = crate::test_support::SharedBuffer::default();
        let subscriber =
            tracing_subscriber::registry().with(crate::telemetry::json_layer(captured.clone()));
        tracing::subscriber::with_default(subscriber, || request.served(422, 1.2345678));
        let traced = captured.text();

        let mut direct = Vec::new();
        access_line(&mut direct, SystemTime::now(), &request, 422, 1.2345678);
        let direct = String::from_utf8(direct).unwrap();
        assert!(
            direct.ends_with('\n') && traced.ends_with('\n'),
            "{direct}{traced}"
        );

        // The same keys in the same order, the same values but the time of writing.
        let parse = |line: &str| serde_json::from_str::<Ordered>(line).unwrap().0;
        let (mut direct, mut traced) = (parse(&direct), parse(&traced));
        assert_eq!(direct[0].0, "timestamp");
        assert_eq!(traced[0].0, "timestamp");
        for (_, value) in [direct.remove(0), traced.remove(0)] {
            let text = value.as_str().unwrap();
            humantime::parse_rfc3339(text).unwrap();
            assert_eq!(text.len(), "2026-11-26T09:27:50.858543Z".len(), "{text}");
        }
        assert_eq!(direct, traced);
        assert_eq!(direct[4].1, "id \"quoted\" \\ \u{1}");
    }

    #[test]
    fn a_disabled_access_log_logs_nothing() {
        let log = access_log(false, 1.0);
        assert!(!log.should_log(200) && !log.should_log(500));
    }
}
