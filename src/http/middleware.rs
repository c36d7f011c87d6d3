//! Cross-cutting request handling: metrics and the access log, time limits, and the tracing
//! span of a request (joined to the caller's trace through W3C `traceparent`).

use std::{
    cell::RefCell,
    convert::Infallible,
    future::Future,
    io::Write,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue, Method},
    response::{IntoResponse, Response},
};
use opentelemetry::propagation::Extractor;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};
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

/// The one layer every request passes through, written as a tower service rather than with
/// `axum::middleware::from_fn`: a boxed `Next`, a boxed future and a copy of the state per
/// request were a measurable part of `/predict`'s cost (docs/performance.md). It
/// - gives the request an `x-request-id` (a UUID v4 unless the client sent one) and copies it
///   to the response;
/// - runs the request in its tracing span, while spans are consumed ([`request_span`]);
/// - answers 503 `timeout` past `--request-timeout`;
/// - counts and times the request, tracks how many are in flight (also when the client goes
///   away mid-request), and writes its access line and, on a 5xx, why it failed.
#[derive(Clone)]
pub struct ObserveLayer(Arc<Observer>);

struct Observer {
    state: AppState,
    access_log: AccessLog,
    spans: bool,
}

impl ObserveLayer {
    pub fn new(state: AppState, access_log: AccessLog) -> Self {
        Self(Arc::new(Observer {
            state,
            access_log,
            spans: crate::spans::enabled(),
        }))
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            observer: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    observer: Arc<Observer>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let request_id = request_id(&mut req);
        let route = route_of(&req);
        let method = req.method().clone();
        let observer = &self.observer;
        let span = observer.spans.then(|| request_span(&req));
        // A data set upload takes as long as its bytes take to arrive; it is bounded by
        // `--max-dataset-bytes` instead.
        let is_upload = method == Method::POST && req.uri().path() == "/datasets";
        let deadline = (!is_upload).then(|| {
            tokio::time::sleep_until(
                tokio::time::Instant::from_std(started) + observer.state.request_timeout,
            )
        });
        let in_flight = InFlight::start(observer.clone(), !is_scrape(&route));
        let inner = match &span {
            Some(span) => span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        Observed {
            inner,
            deadline,
            request: Some(Pending {
                started,
                method,
                route,
                request_id,
                span,
                in_flight,
            }),
        }
    }
}

/// The request's `x-request-id`: the client's, or a new UUID v4 set on the request.
fn request_id(req: &mut Request) -> HeaderValue {
    if let Some(id) = req.headers().get(X_REQUEST_ID) {
        return id.clone();
    }
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // A hyphenated UUID is always a valid header value.
    let id = HeaderValue::from_str(id).expect("a UUID is a valid header value");
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    id
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether the request is a Prometheus scrape. A scrape is not counted in
/// `ml_api_http_requests_in_flight`: it would always read itself (an idle server would show
/// 1), and two Prometheus servers scraping at once would read each other.
fn is_scrape(route: &Option<MatchedPath>) -> bool {
    route
        .as_ref()
        .is_some_and(|route| route.as_str() == "/metrics")
}

/// Counts a request in `ml_api_http_requests_in_flight` (when `counted`) until it is answered
/// or dropped.
struct InFlight {
    observer: Arc<Observer>,
    counted: bool,
}

impl InFlight {
    fn start(observer: Arc<Observer>, counted: bool) -> Self {
        if counted {
            observer.state.http_metrics.in_flight.inc();
        }
        Self { observer, counted }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.counted {
            self.observer.state.http_metrics.in_flight.dec();
        }
    }
}

/// What [`Observe`] knows about a request until its response is ready.
struct Pending {
    started: Instant,
    method: Method,
    route: Option<MatchedPath>,
    request_id: HeaderValue,
    span: Option<tracing::Span>,
    in_flight: InFlight,
}

impl Pending {
    /// Finishes the response (its `x-request-id`) and records the request: span status,
    /// metrics, the failure's log line on a 5xx, the access line.
    fn answered(self, mut response: Response) -> Response {
        let latency = self.started.elapsed();
        let observer = &self.in_flight.observer;
        response
            .headers_mut()
            .entry(X_REQUEST_ID)
            .or_insert(self.request_id.clone());
        let status = response.status();
        let route = route_label(&self.route);
        observer
            .state
            .http_metrics
            .answered(&self.method, route, status, latency.as_secs_f64());
        let request = RequestLine {
            method: self.method.as_str(),
            route,
            request_id: self.request_id.to_str().unwrap_or(""),
        };
        let _entered = self.span.as_ref().map(|span| {
            span.record("http.response.status_code", status.as_u16());
            span.enter()
        });
        if let Some(failure) = response.extensions().get::<ServerFailure>() {
            request.failed(failure, status.as_u16());
        }
        observer
            .access_log
            .record(&request, status.as_u16(), latency);
        response
    }
}

pin_project! {
    /// The response future of [`Observe`].
    pub struct Observed<F> {
        #[pin]
        inner: F,
        #[pin]
        deadline: Option<Sleep>,
        request: Option<Pending>,
    }
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let span = this.request.as_ref().and_then(|r| r.span.as_ref());
        let polled = match span {
            Some(span) => span.in_scope(|| this.inner.as_mut().poll(cx)),
            None => this.inner.as_mut().poll(cx),
        };
        let response = match polled {
            Poll::Ready(Ok(response)) => response,
            Poll::Pending => match this.deadline.as_mut().as_pin_mut().map(|d| d.poll(cx)) {
                Some(Poll::Ready(())) => {
                    ApiError::Timeout(this.request.as_ref().map_or(Duration::ZERO, |request| {
                        request.in_flight.observer.state.request_timeout
                    }))
                    .into_response()
                }
                _ => return Poll::Pending,
            },
        };
        let Some(request) = this.request.take() else {
            // Polled again after it completed: a bug of the caller, answered like one.
            return Poll::Ready(Ok(ApiError::Internal(anyhow::anyhow!(
                "request future polled after completion"
            ))
            .into_response()));
        };
        Poll::Ready(Ok(request.answered(response)))
    }
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
