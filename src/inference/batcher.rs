//! Dynamic batching: an inference thread that takes one request also takes the requests
//! queued behind it (up to `max_rows` records, waiting at most `max_delay` for more), runs
//! them as one ONNX Runtime call, and splits the scores back to each caller.
//!
//! A request's rows stay together; requests were validated before they were queued, and if
//! a merged run still fails, each request is run alone so one cannot fail the others.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::model::{Column, FeatureBatch, Scores};

/// How an inference thread groups queued requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most records in one run; 1 turns batching off.
    pub max_rows: usize,
    /// How long to wait for more requests after the first; zero takes only what is queued.
    pub max_delay: Duration,
}

impl Batching {
    pub const OFF: Self = Self {
        max_rows: 1,
        max_delay: Duration::ZERO,
    };

    pub fn enabled(&self) -> bool {
        self.max_rows > 1
    }
}

/// Takes `first` and, with batching on, the jobs that can join it.
pub fn gather<J>(
    first: J,
    jobs: &Receiver<J>,
    batching: Batching,
    rows_of: impl Fn(&J) -> usize,
) -> Vec<J> {
    let mut rows = rows_of(&first);
    let mut group = vec![first];
    if !batching.enabled() {
        return group;
    }
    let deadline = Instant::now() + batching.max_delay;
    while rows < batching.max_rows {
        let next = if batching.max_delay.is_zero() {
            jobs.try_recv().ok()
        } else {
            jobs.recv_deadline(deadline).ok()
        };
        let Some(job) = next else { break };
        rows += rows_of(&job);
        group.push(job);
    }
    group
}

/// One batch holding every request's rows, in order.
pub fn merge<'a>(batches: impl IntoIterator<Item = &'a FeatureBatch>) -> Option<FeatureBatch> {
    let mut batches = batches.into_iter();
    let mut merged = batches.next()?.clone();
    for batch in batches {
        for (column, more) in merged.columns.iter_mut().zip(&batch.columns) {
            if !column.extend_from(more) {
                return None;
            }
        }
        merged.rows += batch.rows;
    }
    Some(merged)
}

/// Splits merged scores back into per-request scores (`rows` per request, in order).
pub fn split(scores: &Scores, rows: impl IntoIterator<Item = usize>) -> Vec<Scores> {
    let mut offset = 0;
    rows.into_iter()
        .map(|n| {
            let start = (offset * scores.width).min(scores.values.len());
            let end = ((offset + n) * scores.width).min(scores.values.len());
            offset += n;
            Scores {
                rows: n,
                width: scores.width,
                values: scores.values[start..end].to_vec(),
            }
        })
        .collect()
}

impl Column {
    /// Appends `other`'s values; `false` when the two columns differ in type.
    pub fn extend_from(&mut self, other: &Column) -> bool {
        match (self, other) {
            (Self::String(a), Self::String(b)) => a.extend_from_slice(b),
            (Self::Float32(a), Self::Float32(b)) => a.extend_from_slice(b),
            (Self::Float64(a), Self::Float64(b)) => a.extend_from_slice(b),
            (Self::Int64(a), Self::Int64(b)) => a.extend_from_slice(b),
            (Self::Int32(a), Self::Int32(b)) => a.extend_from_slice(b),
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: &[i64]) -> FeatureBatch {
        FeatureBatch {
            rows: values.len(),
            columns: vec![
                Column::Int64(values.to_vec()),
                Column::String(values.iter().map(|v| v.to_string()).collect()),
            ],
        }
    }

    #[test]
    fn merged_rows_keep_request_order_and_split_back() {
        let merged = merge([&batch(&[1]), &batch(&[2, 3]), &batch(&[4])]).unwrap();
        assert_eq!(merged.rows, 4);
        assert_eq!(merged.columns[0], Column::Int64(vec![1, 2, 3, 4]));
        let scores = Scores {
            rows: 4,
            width: 2,
            values: vec![1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5],
        };
        let parts = split(&scores, [1, 2, 1]);
        assert_eq!(parts[0].values, vec![1.0, 1.5]);
        assert_eq!(parts[1].values, vec![2.0, 2.5, 3.0, 3.5]);
        assert_eq!(parts[2].values, vec![4.0, 4.5]);
        assert_eq!(parts[1].rows, 2);
    }

    #[test]
    fn gathering_stops_at_the_row_limit_and_never_waits_when_the_delay_is_zero() {
        let (send, jobs) = crossbeam_channel::unbounded();
        for rows in [2, 3, 1] {
            send.send(rows).unwrap();
        }
        let batching = Batching {
            max_rows: 4,
            max_delay: Duration::ZERO,
        };
        assert_eq!(gather(1, &jobs, batching, |r| *r), vec![1, 2, 3]);
        assert_eq!(
            gather(5, &jobs, batching, |r| *r),
            vec![5],
            "already over the limit"
        );
        assert_eq!(gather(1, &jobs, Batching::OFF, |r| *r), vec![1]);
        assert_eq!(jobs.len(), 1);
    }

    #[test]
    fn gathering_waits_up_to_the_delay_for_more() {
        let (send, jobs) = crossbeam_channel::unbounded();
        let batching = Batching {
            max_rows: 8,
            max_delay: Duration::from_millis(200),
        };
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            send.send(1).unwrap();
        });
        let group = gather(1, &jobs, batching, |r| *r);
        sender.join().unwrap();
        assert_eq!(group, vec![1, 1]);
    }
}
