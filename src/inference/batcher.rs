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

/// One batch holding every request's rows, in order. The values move out of `batches`, which
/// are left without rows: a merge copies no text cell and allocates only the merged columns.
/// `None`, with `batches` untouched, when their columns differ in number or type.
pub fn merge(batches: &mut [&mut FeatureBatch]) -> Option<FeatureBatch> {
    let (first, rest) = batches.split_first()?;
    let same_layout = |batch: &FeatureBatch| {
        batch.columns.len() == first.columns.len()
            && (batch.columns.iter().zip(&first.columns))
                .all(|(a, b)| std::mem::discriminant(a) == std::mem::discriminant(b))
    };
    if !rest.iter().all(|batch| same_layout(batch)) {
        return None;
    }
    let rows = batches.iter().map(|batch| batch.rows).sum();
    let mut columns: Vec<Column> = first
        .columns
        .iter()
        .map(|column| column.empty_with_capacity(rows))
        .collect();
    for batch in batches.iter_mut() {
        for (column, more) in columns.iter_mut().zip(&mut batch.columns) {
            let appended = column.append(more);
            debug_assert!(appended, "the layouts were compared above");
        }
        batch.rows = 0;
    }
    Some(FeatureBatch { rows, columns })
}

/// The inverse of [`merge`]: `merged` cut back into batches of `rows[i]` records, in order.
pub fn unmerge(mut merged: FeatureBatch, rows: &[usize]) -> Vec<FeatureBatch> {
    let mut parts: Vec<FeatureBatch> = rows
        .iter()
        .rev()
        .map(|&n| {
            let at = merged.rows.saturating_sub(n);
            let columns = merged
                .columns
                .iter_mut()
                .map(|column| column.split_off(at))
                .collect();
            merged.rows = at;
            FeatureBatch { rows: n, columns }
        })
        .collect();
    parts.reverse();
    parts
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

/// Applies `$body` to the values of `$column`, whatever their type (`$values` binds them).
macro_rules! each_type {
    ($column:expr, $values:ident => $body:expr) => {
        match $column {
            Column::String($values) => Column::String($body),
            Column::Float32($values) => Column::Float32($body),
            Column::Float64($values) => Column::Float64($body),
            Column::Int64($values) => Column::Int64($body),
            Column::Int32($values) => Column::Int32($body),
            Column::Bool($values) => Column::Bool($body),
        }
    };
}

impl Column {
    /// A column of the same type, empty, with room for `rows` values.
    fn empty_with_capacity(&self, rows: usize) -> Column {
        each_type!(self, _values => Vec::with_capacity(rows))
    }

    /// Moves `other`'s values to the end of this column (`other` is left empty); `false`,
    /// changing nothing, when the two columns differ in type.
    fn append(&mut self, other: &mut Column) -> bool {
        match (self, other) {
            (Self::String(a), Self::String(b)) => a.append(b),
            (Self::Float32(a), Self::Float32(b)) => a.append(b),
            (Self::Float64(a), Self::Float64(b)) => a.append(b),
            (Self::Int64(a), Self::Int64(b)) => a.append(b),
            (Self::Int32(a), Self::Int32(b)) => a.append(b),
            (Self::Bool(a), Self::Bool(b)) => a.append(b),
            _ => return false,
        }
        true
    }

    /// The values from `at` on, removed from this column.
    fn split_off(&mut self, at: usize) -> Column {
        each_type!(self, values => values.split_off(at.min(values.len())))
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
        let originals = [batch(&[1]), batch(&[2, 3]), batch(&[4])];
        let mut requests = originals.clone();
        let mut borrowed: Vec<&mut FeatureBatch> = requests.iter_mut().collect();
        let merged = merge(&mut borrowed).unwrap();
        assert_eq!(merged.rows, 4);
        assert_eq!(merged.columns[0], Column::Int64(vec![1, 2, 3, 4]));
        assert_eq!(
            merged.columns[1],
            Column::String(["1", "2", "3", "4"].map(String::from).to_vec())
        );
        assert!(
            requests.iter().all(|r| r.rows == 0),
            "the values moved out of the requests"
        );
        assert_eq!(
            unmerge(merged, &[1, 2, 1]),
            originals,
            "a failed merged run gives each request its own rows back"
        );
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
    fn batches_whose_columns_differ_are_not_merged_and_keep_their_rows() {
        let mut a = batch(&[1]);
        let mut b = FeatureBatch {
            rows: 1,
            columns: vec![Column::Int64(vec![2]), Column::Float32(vec![2.0])],
        };
        let mut c = FeatureBatch {
            rows: 1,
            columns: vec![Column::Int64(vec![3])],
        };
        let (a0, b0, c0) = (a.clone(), b.clone(), c.clone());
        assert_eq!(
            merge(&mut [&mut a, &mut b]),
            None,
            "a column of another type"
        );
        assert_eq!(merge(&mut [&mut a, &mut c]), None, "a column fewer");
        assert_eq!((a, b, c), (a0, b0, c0));
        assert_eq!(merge(&mut []), None);
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
