//! The fitted model in Rust: the encoders plus `z = x·Wᵀ + b`, scored as the ONNX graph
//! scores it (in f64 where the graph uses f32).

use serde::{Deserialize, Serialize};

use super::data::FeatureValues;
use super::design::{self, Design, Encoder, Matrix};
use super::objective::{linear, sigmoid, softmax};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// One coefficient row for the second class; outputs `[1 − p, p]`.
    Binary,
    /// One row per class; softmax.
    Multinomial,
    /// One row per label; independent sigmoids.
    MultiLabel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    pub kind: ModelKind,
    pub encoders: Vec<Encoder>,
    /// W, row-major, `intercept.len()` rows × the encoded width.
    pub coef: Vec<f64>,
    pub intercept: Vec<f64>,
}

impl LinearModel {
    /// The encoded width `d`.
    pub fn width(&self) -> usize {
        self.encoders.iter().map(Encoder::width).sum()
    }

    /// Probabilities of every row of `x`, one row each (`[1 − p, p]` for binary). Rows in
    /// blocks on all cores, each block in chunks whose `z = b + Σⱼ Wⱼ·xⱼ` is summed column by
    /// column (as the loss is); each row's numbers do not depend on the blocks.
    pub fn proba_matrix(&self, x: &Design<'_>) -> Matrix {
        use rayon::prelude::*;
        const BLOCK_ROWS: usize = 4096;
        const CHUNK_ROWS: usize = 256;
        let d = self.width();
        let k = self.intercept.len();
        let cols = match self.kind {
            ModelKind::Binary => 2,
            _ => k,
        };
        let mut data = vec![0.0; x.rows * cols];
        data.par_chunks_mut(cols.max(1) * BLOCK_ROWS)
            .enumerate()
            .for_each(|(block, out)| {
                // z class by class: `z[c * CHUNK_ROWS + i]`.
                let mut z = vec![0.0; k * CHUNK_ROWS];
                let mut row = vec![0.0; k];
                for (chunk, out) in out.chunks_mut(cols.max(1) * CHUNK_ROWS).enumerate() {
                    let start = block * BLOCK_ROWS + chunk * CHUNK_ROWS;
                    let n = out.len() / cols.max(1);
                    for (c, (zc, &b)) in z
                        .chunks_exact_mut(CHUNK_ROWS)
                        .zip(&self.intercept)
                        .enumerate()
                    {
                        let coef = self.coef.get(c * d..(c + 1) * d).unwrap_or_default();
                        linear(x, start, coef, b, zc.get_mut(..n).unwrap_or_default());
                    }
                    for (i, p) in out.chunks_exact_mut(cols.max(1)).enumerate() {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = z.get(c * CHUNK_ROWS + i).copied().unwrap_or(0.0);
                        }
                        match self.kind {
                            ModelKind::Binary => {
                                let pos = sigmoid(row.first().copied().unwrap_or(0.0));
                                if let [neg, one] = p {
                                    *neg = 1.0 - pos;
                                    *one = pos;
                                }
                            }
                            ModelKind::Multinomial => {
                                p.iter_mut().zip(&row).for_each(|(p, v)| *p = *v);
                                softmax(p);
                            }
                            ModelKind::MultiLabel => {
                                p.iter_mut().zip(&row).for_each(|(p, &v)| *p = sigmoid(v));
                            }
                        }
                    }
                }
            });
        Matrix {
            rows: x.rows,
            cols,
            data,
        }
    }

    /// Scores every row of `columns` (feature columns in training order).
    pub fn predict_proba(&self, columns: &[FeatureValues]) -> Vec<Vec<f64>> {
        let rows: Vec<usize> = (0..columns.first().map_or(0, FeatureValues::len)).collect();
        let proba = self.proba_matrix(&design::transform(&self.encoders, columns, &rows));
        proba
            .iter_rows()
            .take(proba.rows)
            .map(<[f64]>::to_vec)
            .collect()
    }
}
