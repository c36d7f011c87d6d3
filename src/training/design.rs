//! From feature columns to the dense design matrix the optimiser sees: numeric columns as
//! they are (or standardised), categorical columns one-hot over the training categories
//! (sorted; an unknown category encodes as all zeros). The ONNX graph repeats exactly this.

use std::collections::BTreeSet;

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

/// A dense row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn row(&self, i: usize) -> &[f64] {
        self.data
            .get(i * self.cols..(i + 1) * self.cols)
            .unwrap_or(&[])
    }

    pub fn iter_rows(&self) -> impl Iterator<Item = &[f64]> {
        self.data.chunks_exact(self.cols.max(1))
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

/// Encodes the rows `rows` of `columns`: blocks of rows on all cores, each block filled
/// column by column (so the block being written stays in cache).
pub fn transform(encoders: &[Encoder], columns: &[FeatureValues], rows: &[usize]) -> Matrix {
    use rayon::prelude::*;
    const BLOCK_ROWS: usize = 1024;
    let cols: usize = encoders.iter().map(Encoder::width).sum();
    // Zeroed on all cores, not by one `memset`: the matrix is fresh memory, and the first
    // write to each page is a page fault (100,000 x 50 is 9,800 of them).
    let mut data = Vec::with_capacity(rows.len() * cols);
    data.par_extend(rayon::iter::repeat_n(0.0, rows.len() * cols));
    if cols > 0 {
        data.par_chunks_mut(BLOCK_ROWS * cols)
            .zip(rows.par_chunks(BLOCK_ROWS))
            .for_each(|(block, rows)| encode_block(encoders, columns, rows, cols, block));
    }
    Matrix {
        rows: rows.len(),
        cols,
        data,
    }
}

/// Fills `block` (the rows `rows`, `cols` wide, zeroed) from `columns`.
fn encode_block(
    encoders: &[Encoder],
    columns: &[FeatureValues],
    rows: &[usize],
    cols: usize,
    block: &mut [f64],
) {
    let mut offset = 0;
    for (encoder, column) in encoders.iter().zip(columns) {
        match (encoder, column) {
            (Encoder::Numeric { mean, scale }, FeatureValues::Numeric(values)) => {
                for (r, &i) in rows.iter().enumerate() {
                    if let (Some(cell), Some(v)) = (block.get_mut(r * cols + offset), values.get(i))
                    {
                        *cell = (v - mean) * scale;
                    }
                }
            }
            (Encoder::Categorical { categories }, FeatureValues::Categorical(values)) => {
                for (r, &i) in rows.iter().enumerate() {
                    let position = values.get(i).and_then(|v| categories.binary_search(v).ok());
                    if let Some(cell) = position.and_then(|p| block.get_mut(r * cols + offset + p))
                    {
                        *cell = 1.0;
                    }
                }
            }
            // `fit` builds encoders from these very columns, so kinds always agree.
            _ => {}
        }
        offset += encoder.width();
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
        assert_eq!(m.cols, 3);
        assert_eq!(m.data, vec![-1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 3.0, 0.0, 0.0]);
    }
}
