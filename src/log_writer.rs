//! Where log lines go: every thread appends its formatted line to one in-memory buffer, and a
//! background thread writes what has gathered to stdout in one `write` about every
//! [`FLUSH_INTERVAL`]. A request pays one short copy under a mutex: no channel message, no
//! allocation, no thread wake-up and no system call per line.
//!
//! Written here rather than taken from `tracing-appender`: its non-blocking writer sends each
//! line as its own `Vec` over a channel and wakes its thread for it, which writes and flushes
//! it; under load on one core that is an allocation, two context switches and a `write(2)` for
//! every request (docs/performance.md, "The access log's cost"). Batching by time is what
//! removes them, and no crate offers it behind tracing-subscriber's `MakeWriter`.
//!
//! Lossy like `tracing-appender`'s lossy mode: while more than the buffer limit waits (stdout
//! stalled), new lines are dropped and counted, never block a request. The guard writes what
//! is left when dropped at the end of `main`, after the graceful shutdown.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock, PoisonError,
    },
    thread::{self, JoinHandle, Thread},
    time::{Duration, Instant},
};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer gathers lines after the first one of a batch.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes waiting beyond which new lines are dropped (a stalled stdout).
pub const MAX_BUFFERED: usize = 32 << 20;

struct Shared {
    buffer: Mutex<Vec<u8>>,
    max_buffered: usize,
    dropped: AtomicU64,
    stop: AtomicBool,
    writer: OnceLock<Thread>,
}

impl Shared {
    fn append(&self, line: &[u8]) {
        let was_empty = {
            let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            if buffer.len() + line.len() > self.max_buffered {
                drop(buffer);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let was_empty = buffer.is_empty();
            buffer.extend_from_slice(line);
            was_empty
        };
        // The first line of a batch wakes the writer, which then gathers for FLUSH_INTERVAL:
        // at most one wake-up per interval, none while idle.
        if was_empty {
            if let Some(writer) = self.writer.get() {
                writer.unpark();
            }
        }
    }
}

/// The writer of the JSON log, when the log is JSON and nothing else reads tracing's events
/// (no OTLP exporter, no Sentry): lines formatted outside tracing (the access log) go
/// straight to it. Set once by `telemetry::init`.
static JSON_LINES: OnceLock<LogWriter> = OnceLock::new();

pub fn set_json_lines(writer: LogWriter) {
    let _ = JSON_LINES.set(writer);
}

/// See [`JSON_LINES`]; `None` while lines must go through tracing.
pub fn json_lines() -> Option<&'static LogWriter> {
    JSON_LINES.get()
}

/// A `MakeWriter` for tracing-subscriber's fmt layer (cheap to clone).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it wrote every line appended before.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A log writer to stdout.
pub fn stdout() -> (LogWriter, LogWriterGuard) {
    spawn(std::io::stdout(), FLUSH_INTERVAL, MAX_BUFFERED)
}

/// A log writer to `out`, written about every `interval`, dropping lines beyond
/// `max_buffered` bytes waiting.
pub fn spawn<W: Write + Send + 'static>(
    mut out: W,
    interval: Duration,
    max_buffered: usize,
) -> (LogWriter, LogWriterGuard) {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Vec::with_capacity(64 << 10)),
        max_buffered,
        dropped: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        writer: OnceLock::new(),
    });
    let state = Arc::clone(&shared);
    let thread = thread::Builder::new()
        .name("ml-api-log-writer".to_owned())
        .spawn(move || {
            let mut batch = Vec::with_capacity(64 << 10);
            let mut reported = 0;
            loop {
                thread::park();
                // Gather for `interval`; the guard's stop cuts it short.
                let deadline = Instant::now() + interval;
                while !state.stop.load(Ordering::Acquire) {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    thread::park_timeout(left);
                }
                let stopping = state.stop.load(Ordering::Acquire);
                std::mem::swap(
                    &mut batch,
                    &mut state.buffer.lock().unwrap_or_else(PoisonError::into_inner),
                );
                if !batch.is_empty() {
                    // Nowhere to report a failing stdout but stderr; the lines are lost.
                    if let Err(error) = out.write_all(&batch).and_then(|()| out.flush()) {
                        eprintln!("ml-api: cannot write logs: {error}");
                    }
                    batch.clear();
                }
                let dropped = state.dropped.load(Ordering::Relaxed);
                if dropped > reported {
                    eprintln!(
                        "ml-api: {} log line(s) dropped: stdout did not keep up",
                        dropped - reported
                    );
                    reported = dropped;
                }
                if stopping {
                    break;
                }
            }
        })
        .expect("the log writer thread starts");
    let _ = shared.writer.set(thread.thread().clone());
    (
        LogWriter {
            shared: Arc::clone(&shared),
        },
        LogWriterGuard {
            shared,
            thread: Some(thread),
        },
    )
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// One line being written: tracing-subscriber formats a whole line, then writes it at once.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::SharedBuffer as Sink;

    #[test]
    fn every_line_from_every_thread_is_written_whole_by_the_time_the_guard_drops() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), Duration::from_millis(5), MAX_BUFFERED);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                thread::spawn(move || {
                    for i in 0..2_000 {
                        let line = format!("{{\"thread\":{t},\"line\":{i}}}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let written = sink.text();
        let mut seen: Vec<(u64, u64)> = written
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    value["thread"].as_u64().unwrap(),
                    value["line"].as_u64().unwrap(),
                )
            })
            .collect();
        seen.sort_unstable();
        let expected: Vec<(u64, u64)> = (0..4)
            .flat_map(|t| (0..2_000).map(move |i| (t, i)))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn lines_beyond_the_buffer_limit_are_dropped_not_blocked_on() {
        // Ten-byte lines, a 100-byte limit, and a writer that never writes before the guard
        // drops (a one-hour interval): the first ten lines wait, the other forty are dropped.
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), Duration::from_secs(3600), 100);
        for i in 0..50 {
            writer
                .make_writer()
                .write_all(format!("line {i:04}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(writer.shared.dropped.load(Ordering::Relaxed), 40);
        drop(guard);
        let written = sink.text();
        assert_eq!(written.lines().count(), 10);
        assert!(written.starts_with("line 0000\n") && written.ends_with("line 0009\n"));
    }
}
