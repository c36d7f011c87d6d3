//! Bench-only constant-rate load generator for `make bench` (`scripts/bench.sh`): the
//! half-rate latency runs. It is an example, so it is never part of the product binary:
//!
//! ```text
//! cargo build --release --example bench_rate
//! taskset -c 0 target/release/examples/bench_rate --url http://127.0.0.1:5001/predict \
//!     --body tests/fixtures/seed_request.json --rate 20000 --duration 20s
//! ```
//!
//! Why not oha, which drove these runs until session 27: oha keeps every result in memory
//! while it runs (in a queue that doubles as it fills), and each doubling copies the whole
//! queue while every connection waits. At 21,000 req/s the doublings after 65,536, 131,072
//! and 262,144 answers stalled the generator for about 5, 10 and 22 ms, and latency
//! correction charged each stall to the server (docs/performance.md, session 27).
//!
//! What it does, the way `oha -q RATE --latency-correction` does it:
//! - Open loop. Request `k` is due at `start + k / rate`; `rate × duration` requests in all.
//!   Each of the `--connections` HTTP/1.1 keep-alive connections takes the next due request
//!   when it is free, waits until it is due (tokio's timer ticks once a millisecond, so the
//!   requests due within a tick leave together, as oha's do), sends it and reads the whole
//!   answer.
//! - Latency is measured from the due time, not from the send, so a request that waited for
//!   a free connection is charged with the wait (latency correction). As in oha, the due time
//!   of a request that a free connection waited for is when the timer woke it, so the
//!   timer's rounding up to its next tick is not charged; a request that was already due
//!   when a connection took it is charged from its exact due time.
//! - Every latency has its slot, allocated and written before the run starts: nothing grows
//!   while requests are in flight. Requests still in flight at the end are waited for, not
//!   cancelled.
//!
//! It prints one JSON object: counts, statuses, errors, the achieved rate and the latency
//! percentiles (oha's definition: the value at index `p/100 × n` of the sorted latencies).
//! Failed requests (no answer) are counted as errors and left out of the percentiles, as
//! oha does; a failed connection is replaced.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The constant-rate run to make.
#[derive(Debug, Parser)]
struct Args {
    /// Where to POST, e.g. http://127.0.0.1:5001/predict (plain HTTP/1.1).
    #[arg(long)]
    url: http::Uri,
    /// The request body, sent as it is.
    #[arg(long)]
    body: PathBuf,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// How long requests fall due, e.g. `20s` (the run lasts this long plus the last
    /// answers' wait).
    #[arg(long, value_parser = ml_api::config::parse_duration)]
    duration: Duration,
    /// HTTP/1.1 keep-alive connections, opened before the first request is due.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The Content-Type header.
    #[arg(long, default_value = "application/json")]
    content_type: String,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A latency slot not (yet) filled: the request failed or never ran.
const NOT_ANSWERED: u32 = u32::MAX;

/// What every connection shares: the schedule, the request, and one slot per request.
struct Run {
    start: Instant,
    interval: Duration,
    next: AtomicUsize,
    /// Microseconds from due time to the end of the answer, indexed by request.
    latency_us: Vec<AtomicU32>,
    target: Target,
}

/// The request every connection sends.
struct Target {
    addr: String,
    uri: http::Uri,
    host: String,
    body: Bytes,
    content_type: String,
}

/// What one connection saw, merged at the end.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    last_answer: Option<Instant>,
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    if !(args.rate > 0.0 && !args.duration.is_zero() && args.connections > 0) {
        return Err("--rate, --duration and --connections must be positive".into());
    }
    let authority = args.url.authority().ok_or("--url needs a host and port")?;
    let port = authority.port_u16().unwrap_or(80);
    let target = Target {
        addr: format!("{}:{port}", authority.host()),
        host: authority.to_string(),
        uri: args
            .url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()?,
        body: Bytes::from(std::fs::read(&args.body)?),
        content_type: args.content_type.clone(),
    };
    let total = (args.rate * args.duration.as_secs_f64()).round() as usize;
    // Written now (not lazily zeroed), so the run itself faults no page in for them.
    let latency_us = (0..total).map(|_| AtomicU32::new(NOT_ANSWERED)).collect();

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let mut senders = Vec::with_capacity(args.connections);
            for _ in 0..args.connections {
                senders.push(connect(&target.addr).await?);
            }
            let run = Arc::new(Run {
                // A moment for every connection task to be waiting on its first request.
                start: Instant::now() + Duration::from_millis(20),
                interval: Duration::from_secs_f64(1.0 / args.rate),
                next: AtomicUsize::new(0),
                latency_us,
                target,
            });
            let tasks: Vec<_> = senders
                .into_iter()
                .map(|sender| tokio::spawn(drive(sender, Arc::clone(&run))))
                .collect();
            let mut tally = Tally::default();
            for task in tasks {
                let one = task.await?;
                for (status, n) in one.statuses {
                    *tally.statuses.entry(status).or_default() += n;
                }
                for (error, n) in one.errors {
                    *tally.errors.entry(error).or_default() += n;
                }
                tally.last_answer = tally.last_answer.max(one.last_answer);
            }
            println!("{}", report(&args, &run, &tally));
            Ok(())
        })
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One connection: takes due requests until the schedule is done.
async fn drive(mut sender: SendRequest<Full<Bytes>>, run: Arc<Run>) -> Tally {
    let mut tally = Tally::default();
    let total = run.latency_us.len();
    loop {
        let k = run.next.fetch_add(1, Ordering::Relaxed);
        if k >= total {
            return tally;
        }
        let mut due = run.start + run.interval.mul_f64(k as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            // oha's latency correction: a request is due when the generator's timer says so.
            due = Instant::now();
        }
        match send(&mut sender, &run.target).await {
            Ok(status) => {
                let end = Instant::now();
                let micros = end.saturating_duration_since(due).as_micros();
                run.latency_us[k].store(
                    micros.min(u128::from(NOT_ANSWERED - 1)) as u32,
                    Ordering::Relaxed,
                );
                *tally.statuses.entry(status).or_default() += 1;
                tally.last_answer = Some(end);
            }
            Err(error) => {
                *tally.errors.entry(error.to_string()).or_default() += 1;
                match connect(&run.target.addr).await {
                    Ok(fresh) => sender = fresh,
                    Err(error) => {
                        *tally
                            .errors
                            .entry(format!("reconnect: {error}"))
                            .or_default() += 1;
                        return tally;
                    }
                }
            }
        }
    }
}

/// Sends the request once and reads the whole answer; returns its status.
async fn send(sender: &mut SendRequest<Full<Bytes>>, target: &Target) -> Result<u16, Error> {
    sender.ready().await?;
    let request = http::Request::post(target.uri.clone())
        .header(http::header::HOST, &target.host)
        .header(http::header::CONTENT_TYPE, &target.content_type)
        .body(Full::new(target.body.clone()))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

fn report(args: &Args, run: &Run, tally: &Tally) -> serde_json::Value {
    let mut latencies: Vec<u32> = run
        .latency_us
        .iter()
        .map(|slot| slot.load(Ordering::Relaxed))
        .filter(|&micros| micros != NOT_ANSWERED)
        .collect();
    latencies.sort_unstable();
    let ms = |micros: u32| f64::from(micros) / 1000.0;
    let at = |p: f64| {
        let index = ((p / 100.0) * latencies.len() as f64) as usize;
        latencies
            .get(index.min(latencies.len().saturating_sub(1)))
            .copied()
            .map(ms)
    };
    let answered = latencies.len();
    let elapsed = tally.last_answer.map_or(0.0, |end| {
        end.saturating_duration_since(run.start).as_secs_f64()
    });
    let mean = (answered > 0)
        .then(|| latencies.iter().map(|&m| f64::from(m)).sum::<f64>() / answered as f64 / 1000.0);
    serde_json::json!({
        "tool": "bench_rate",
        "rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "connections": args.connections,
        "requests": run.latency_us.len(),
        "answered": answered,
        "elapsed_s": elapsed,
        "rps": if elapsed > 0.0 { answered as f64 / elapsed } else { 0.0 },
        "statuses": tally.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "errors": tally.errors,
        "latency_ms": {
            "p50": at(50.0), "p90": at(90.0), "p99": at(99.0), "p99.9": at(99.9),
            "max": latencies.last().copied().map(ms), "mean": mean,
        },
    })
}
