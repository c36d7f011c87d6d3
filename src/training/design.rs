//! From feature columns to the dense design matrix the optimiser sees: numeric columns as
//! they are (or standardised), categorical columns one-hot over the training categories
//! (sorted; an unknown category encodes as all zeros). The ONNX graph repeats exactly this.

use std::{borrow::Cow, collections::BTreeSet};

use serde::{Deserialize, Serialize};

use super::data::FeatureValues;

/// How one feature becomes design-matrix columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Encoder {
    /// One column, `(x - mean) * scale` (mean 0 and scale 1 when not standardised).
    Numeric { mean: f64, scale: f64 },
    /// One column per category, in this order.
    Categorical { categories: Vec<String> },
}

impl Encoder {
    pub fn width(&self) -> usize {
        match self {
            Self::Numeric { .. } => 1,
            Self::Categorical { categories } => categories.len(),
        }
    }
}

/// A dense row-major matrix (the probabilities of scored rows, one row each).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f64]> {
        self.data.chunks_exact(self.cols.max(1))
    }
}

/// The design matrix the optimiser sees, column by column: `rows` values per column. A
/// number feature taken as it is (every row, in order, not standardised) is the feature's
/// own column, borrowed; every other column is encoded into a copy. Column-major because
/// the data arrive as columns: a row-major copy of `make bench-train`'s 100,000 × 50 was a
/// 40 MB allocation and transpose per job (about a sixth of the job), and the loss and
/// gradient run as fast over columns (see [`super::objective`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Design<'a> {
    pub rows: usize,
    pub columns: Vec<Cow<'a, [f64]>>,
}

impl Design<'_> {
    /// The number of columns (the encoded width).
    pub fn cols(&self) -> usize {
        self.columns.len()
    }

    /// Writes rows `range` into `out`, row-major (`range.len() × cols()`): the layout of a
    /// matrix product's operand.
    pub fn fill_rows(&self, range: std::ops::Range<usize>, out: &mut [f64]) {
        let cols = self.cols();
        for (j, column) in self.columns.iter().enumerate() {
            let values = column.get(range.clone()).unwrap_or_default();
            for (cell, &v) in out.iter_mut().skip(j).step_by(cols.max(1)).zip(values) {
                *cell = v;
            }
        }
    }
}

/// Learns each feature's encoding from the rows `rows` (the training split).
pub fn fit(columns: &[FeatureValues], rows: &[usize], standardize: bool) -> Vec<Encoder> {
    columns
        .iter()
        .map(|column| match column {
            FeatureValues::Numeric(values) if standardize => {
                let picked: Vec<f64> = rows
                    .iter()
                    .filter_map(|&i| values.get(i).copied())
                    .collect();
                let n = picked.len().max(1) as f64;
                let mean = picked.iter().sum::<f64>() / n;
                let var = picked.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let std = var.sqrt();
                // As scikit-learn's StandardScaler: a constant column is centred, not scaled.
                let scale = if std <= 10.0 * f64::EPSILON * mean.abs().max(1.0) {
                    1.0
                } else {
                    1.0 / std
                };
                Encoder::Numeric { mean, scale }
            }
            FeatureValues::Numeric(_) => Encoder::Numeric {
                mean: 0.0,
                scale: 1.0,
            },
            FeatureValues::Categorical(values) => {
                let categories: BTreeSet<&String> =
                    rows.iter().filter_map(|&i| values.get(i)).collect();
                Encoder::Categorical {
                    categories: categories.into_iter().cloned().collect(),
                }
            }
        })
        .collect()
}

/// Encodes the rows `rows` of `columns` into design-matrix columns, on all cores. Number
/// columns that need no encoding are borrowed, not copied (see [`Design`]).
pub fn transform<'a>(
    encoders: &[Encoder],
    columns: &'a [FeatureValues],
    rows: &[usize],
) -> Design<'a> {
    use rayon::prelude::*;
    let every_row = columns
        .first()
        .is_some_and(|c| c.len() == rows.len() && rows.iter().enumerate().all(|(i, &r)| i == r));
    let encoded: Vec<Vec<Cow<'a, [f64]>>> = encoders
        .par_iter()
        .zip(columns)
        .map(|(encoder, column)| match (encoder, column) {
            (Encoder::Numeric { mean, scale }, FeatureValues::Numeric(values))
                if every_row && *mean == 0.0 && *scale == 1.0 =>
            {
                vec![Cow::Borrowed(values.as_slice())]
            }
            (Encoder::Numeric { mean, scale }, FeatureValues::Numeric(values)) => {
                vec![Cow::Owned(
                    rows.iter()
                        .map(|&i| (values.get(i).copied().unwrap_or(0.0) - mean) * scale)
                        .collect(),
                )]
            }
            (Encoder::Categorical { categories }, FeatureValues::Categorical(values)) => {
                let mut one_hot = vec![vec![0.0; rows.len()]; categories.len()];
                for (r, &i) in rows.iter().enumerate() {
                    let position = values.get(i).and_then(|v| categories.binary_search(v).ok());
                    if let Some(cell) = position
                        .and_then(|p| one_hot.get_mut(p))
                        .and_then(|column| column.get_mut(r))
                    {
                        *cell = 1.0;
                    }
                }
                one_hot.into_iter().map(Cow::Owned).collect()
            }
            // `fit` builds encoders from these very columns, so kinds always agree; a
            // mismatch would still keep the width the encoder promised.
            (encoder, _) => vec![Cow::Owned(vec![0.0; rows.len()]); encoder.width()],
        })
        .collect();
    Design {
        rows: rows.len(),
        columns: encoded.into_iter().flatten().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_and_standardise() {
        let columns = vec![
            FeatureValues::Numeric(vec![1.0, 3.0, 5.0]),
            FeatureValues::Categorical(vec!["b".into(), "a".into(), "c".into()]),
        ];
        let encoders = fit(&columns, &[0, 1], true);
        assert_eq!(
            encoders[0],
            Encoder::Numeric {
                mean: 2.0,
                scale: 1.0
            }
        );
        assert_eq!(encoders[1].width(), 2);
        let m = transform(&encoders, &columns, &[0, 1, 2]);
        assert_eq!(m.cols(), 3);
        let mut rows = vec![0.0; 9];
        m.fill_rows(0..3, &mut rows);
        assert_eq!(rows, vec![-1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 3.0, 0.0, 0.0]);
    }

    /// A number column used as it is, on every row, is the feature's own column; standardised,
    /// or on a subset of the rows, it is an encoded copy.
    #[test]
    fn raw_number_columns_are_borrowed_and_encoded_ones_copied() {
        let columns = vec![FeatureValues::Numeric(vec![1.0, 3.0, 5.0])];
        let raw = fit(&columns, &[0, 1, 2], false);
        let all = transform(&raw, &columns, &[0, 1, 2]);
        assert!(matches!(all.columns[0], Cow::Borrowed(_)));
        assert_eq!(&*all.columns[0], &[1.0, 3.0, 5.0]);
        let some = transform(&raw, &columns, &[2, 0]);
        assert!(matches!(some.columns[0], Cow::Owned(_)));
        assert_eq!(&*some.columns[0], &[5.0, 1.0]);
        let standardised = transform(&fit(&columns, &[0, 1, 2], true), &columns, &[0, 1, 2]);
        assert!(matches!(standardised.columns[0], Cow::Owned(_)));
        let scale = 1.0 / (8.0_f64 / 3.0).sqrt();
        assert_eq!(&*standardised.columns[0], &[-2.0 * scale, 0.0, 2.0 * scale]);
    }
}
