//! The fitted model in Rust: the encoders plus `z = x·Wᵀ + b`, scored as the ONNX graph
//! scores it (in f64 where the graph uses f32).

use serde::{Deserialize, Serialize};

use super::data::FeatureValues;
use super::design::{self, Encoder, Matrix};
use super::objective::{dot, sigmoid, softmax};

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

    /// One row of output probabilities per design-matrix row.
    /// Probabilities of every row of `x`, one row each (`[1 − p, p]` for binary).
    pub fn proba_matrix(&self, x: &Matrix) -> Matrix {
        use rayon::prelude::*;
        let d = self.width();
        let cols = match self.kind {
            ModelKind::Binary => 2,
            _ => self.intercept.len(),
        };
        let mut data = vec![0.0; x.rows * cols];
        // Rows in blocks on all cores; each row's numbers do not depend on the blocks.
        data.par_chunks_mut(cols.max(1) * 4096)
            .zip(x.data.par_chunks(x.cols.max(1) * 4096))
            .for_each(|(out, rows)| {
                let mut z = vec![0.0; self.intercept.len()];
                for (p, row) in out
                    .chunks_exact_mut(cols.max(1))
                    .zip(rows.chunks_exact(x.cols.max(1)))
                {
                    for (c, (zc, b)) in z.iter_mut().zip(&self.intercept).enumerate() {
                        *zc = dot(row, self.coef.get(c * d..(c + 1) * d).unwrap_or(&[])) + b;
                    }
                    match self.kind {
                        ModelKind::Binary => {
                            let pos = sigmoid(z.first().copied().unwrap_or(0.0));
                            if let [neg, one] = p {
                                *neg = 1.0 - pos;
                                *one = pos;
                            }
                        }
                        ModelKind::Multinomial => {
                            p.iter_mut().zip(&z).for_each(|(p, v)| *p = *v);
                            softmax(p);
                        }
                        ModelKind::MultiLabel => {
                            p.iter_mut().zip(&z).for_each(|(p, &v)| *p = sigmoid(v));
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
