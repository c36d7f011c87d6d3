//! The connection loop in front of the router: accepts TCP connections, serves HTTP/1.1 and
//! h2c with hyper, and holds every connection to the edge's limits.
//!
//! - **Connection cap** (`--max-connections`): a connection is accepted only while fewer are
//!   open; the others wait in the kernel's listen backlog until one closes (queued, not
//!   refused).
//! - **Header read** (`--header-read-timeout`): once a client sends the first byte of a
//!   request, the whole head must arrive within this time, or the connection is closed.
//! - **Idle** (`--idle-timeout`): a connection with no request in flight that sends nothing
//!   for this long is closed (keep-alive included).
//! - **Body read** (`--body-read-timeout`): a request's body must arrive within this time
//!   after its head; a slower one is answered 408 and the connection closed.
//! - **No Nagle delay on h2c** (`TCP_NODELAY`): a connection that opens with the HTTP/2
//!   preface turns Nagle's algorithm off, as the gRPC listener does (`src/grpc/mod.rs`).
//!   HTTP/2 writes small frames one after another, and Nagle holds a small write while an
//!   earlier one is unacknowledged: a client that delays its ACKs (40 ms on Linux) stalled
//!   about one h2c request in three. HTTP/1.1 keeps it on: a response is one write, which
//!   Nagle never holds in request/response traffic, and on loopback the option cost the bare
//!   baseline about 7 % of its throughput.
//! - **Lingering close**: when a connection ends after a response (a 413 answered before the
//!   body was read, say), the write side is shut first and what the client still sends is
//!   read and discarded for a bounded time, as nginx does, so a client that sends its whole
//!   body before reading gets the answer instead of a connection reset.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Bytes, extract::ConnectInfo, Router};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// A lingering close reads what the client still sends for at most this long in all...
const LINGER_TOTAL: Duration = Duration::from_secs(30);
/// ...and stops after this long without a byte.
const LINGER_SILENCE: Duration = Duration::from_secs(5);

/// The limits the connection loop enforces (from `HttpConfig`).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    /// 0: no cap.
    pub max_connections: usize,
}

impl From<&crate::config::HttpConfig> for EdgeLimits {
    fn from(config: &crate::config::HttpConfig) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            body_read_timeout: config.body_read_timeout,
            max_connections: config.max_connections,
        }
    }
}

/// A request body that stopped arriving for `--body-read-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyReadTimeout(pub Duration);

impl BodyReadTimeout {
    /// Finds a body-read timeout in an error's source chain (extractors wrap body errors).
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(timeout) = error.downcast_ref::<Self>() {
                return Some(timeout.0);
            }
            current = error.source();
        }
        None
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, asks every
/// open connection to finish its in-flight requests and close, and returns once all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: EdgeLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = match limits.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => n.min(Semaphore::MAX_PERMITS),
    };
    let slots = Arc::new(Semaphore::new(permits));
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_error(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let closing = closing.clone();
        connections.spawn(connection(stream, remote, router, limits, closing, permit));
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
}

/// Per-connection errors (the peer reset) are routine; others (out of file descriptors) get
/// a pause so the loop does not spin.
async fn accept_error(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    limits: EdgeLimits,
    closing: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream: Some(stream),
        activity: activity.clone(),
        permit: Some(permit),
        preface: Some(0),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(requests.clone());
        request.extensions_mut().insert(ConnectInfo(remote));
        let request = request.map(|body| TimedBody::new(body, limits.body_read_timeout));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| Guarded {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut conn = std::pin::pin!(builder.serve_connection_with_upgrades(io, service));
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %remote, "connection ended with an error");
                }
                return;
            }
            reason = activity.expired(&limits) => {
                tracing::debug!(%remote, reason, "closing the connection");
                activity.abort.store(true, Ordering::Relaxed);
                return; // dropping the connection closes the socket
            }
            () = closing.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, shared by its socket, its requests and its watchdog.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` when the connection last had no request in flight.
    idle_since: AtomicU64,
    /// Milliseconds after `opened` of the first byte of a request head; `NONE` between requests.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
    changed: Notify,
    /// Set when a limit closed the connection: no lingering close then.
    abort: AtomicBool,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
            abort: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived: when no request is in flight, they start a request head.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(NONE, self.now(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// Completes when a limit is exceeded, with the limit's name.
    async fn expired(&self, limits: &EdgeLimits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else {
                match self.head_since.load(Ordering::Acquire) {
                    NONE => Some((
                        self.idle_since.load(Ordering::Acquire),
                        limits.idle_timeout,
                        "idle timeout",
                    )),
                    since => Some((since, limits.header_read_timeout, "header read timeout")),
                }
            };
            match deadline {
                None => changed.await,
                Some((since, limit, reason)) => {
                    let at = self.opened + Duration::from_millis(since) + limit;
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(at) => {
                            // Re-check: a request may have started as the timer fired.
                            if self.in_flight.load(Ordering::Acquire) == 0 {
                                return reason;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One request in flight on a connection, from its head to the end of its response.
struct InFlight(Arc<Activity>);

impl InFlight {
    /// No wake-up of the watchdog: a deadline it is sleeping towards is re-checked when it
    /// fires, and a request in flight has none.
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(NONE, Ordering::Release);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Release);
            activity.changed.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent (dropped).
struct Guarded {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that must keep arriving: at most `limit` may pass without a byte of it
/// (after the head, then after each piece). The timer is only armed when the body is not
/// already there (most small requests arrive with their head). A progress limit rather than
/// a total one, so a data set upload may take as long as its bytes take to arrive; the
/// total of other requests is bounded by `--request-timeout`.
struct TimedBody {
    body: Incoming,
    deadline: Instant,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(body: Incoming, limit: Duration) -> Self {
        Self {
            body,
            deadline: Instant::now() + limit,
            limit,
            timer: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            // Progress: the next piece gets the whole limit again.
            let deadline = Instant::now() + self.limit;
            self.deadline = deadline;
            if let Some(timer) = self.timer.as_mut() {
                timer.as_mut().reset(deadline);
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream of a connection: reports reads to the watchdog, holds the connection's
/// slot, and closes with a lingering close when dropped.
struct Watched {
    stream: Option<TcpStream>,
    activity: Arc<Activity>,
    permit: Option<OwnedSemaphorePermit>,
    /// How many of the HTTP/2 preface's first bytes the connection has sent so far; `None`
    /// once the protocol is known.
    preface: Option<usize>,
}

/// How a connection with HTTP/2 prior knowledge begins (RFC 9113, section 3.4); no HTTP/1.1
/// method starts so.
const H2_PREFACE_START: &[u8] = b"PRI ";

impl Watched {
    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }

    /// Reads the connection's first bytes, and turns Nagle's algorithm off once they are the
    /// HTTP/2 preface's.
    fn sniff(&mut self, read: &[u8]) {
        let Some(matched) = self.preface else { return };
        let wanted = &H2_PREFACE_START[matched..];
        let n = read.len().min(wanted.len());
        self.preface = if read[..n] != wanted[..n] {
            None
        } else if n < wanted.len() {
            Some(matched + n)
        } else {
            if let Some(Err(error)) = self.stream.as_ref().map(|s| s.set_nodelay(true)) {
                // The connection still works, with Nagle's delays.
                tracing::debug!(%error, "cannot turn off Nagle's algorithm (TCP_NODELAY)");
            }
            None
        };
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(self.stream()?).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
            if self.preface.is_some() {
                self.sniff(&buf.filled()[before..]);
            }
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let (Some(stream), Some(permit)) = (self.stream.take(), self.permit.take()) else {
            return;
        };
        if self.activity.abort.load(Ordering::Relaxed) {
            return; // closed by a limit: no more time for this client
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, permit));
        }
    }
}

/// Shuts the write side, then reads and discards what the client still sends (bounded in
/// time) before closing, so the client reads the response instead of a reset. The
/// connection keeps its slot meanwhile.
async fn linger(mut stream: TcpStream, _slot: OwnedSemaphorePermit) {
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 16 * 1024];
    let discard = async {
        loop {
            match tokio::time::timeout(LINGER_SILENCE, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TOTAL, discard).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's IO over a real loopback socket, and the client's end.
    async fn watched() -> (Watched, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let io = Watched {
            stream: Some(stream),
            activity: Arc::new(Activity::new()),
            permit: None,
            preface: Some(0),
        };
        (io, client)
    }

    fn nodelay(io: &Watched) -> bool {
        io.stream.as_ref().unwrap().nodelay().unwrap()
    }

    #[tokio::test]
    async fn the_h2_preface_turns_nagle_off_even_when_it_arrives_a_byte_at_a_time() {
        let (mut io, _client) = watched().await;
        for (i, byte) in b"PRI * HTTP/2.0\r\n".iter().enumerate() {
            io.sniff(&[*byte]);
            assert_eq!(nodelay(&io), i >= 3, "after {} bytes", i + 1);
        }
        assert_eq!(io.preface, None, "decided");
    }

    #[tokio::test]
    async fn http1_keeps_nagle_on_and_is_decided_at_its_first_different_byte() {
        for (start, decided) in [
            (&b"POST /predict HTTP/1.1"[..], true),
            (b"PUT /models/a/aliases/b", true),
            (b"GET /healthz", true),
            (b"PRIX", true),
            (b"PRI", false),
            (b"P", false),
        ] {
            let (mut io, _client) = watched().await;
            io.sniff(start);
            assert!(!nodelay(&io), "{start:?}");
            assert_eq!(io.preface.is_none(), decided, "{start:?}");
        }
    }
}
