//! The fitted model in Rust: the encoders plus `z = x·Wᵀ + b`, scored as the ONNX graph
//! scores it (in f64 where the graph uses f32).

use serde::{Deserialize, Serialize};

use super::data::FeatureValues;
use super::design::{self, Encoder, Matrix};
use super::objective::{dot, logsumexp, sigmoid};

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
    pub fn proba_matrix(&self, x: &Matrix) -> Vec<Vec<f64>> {
        let d = self.width();
        x.iter_rows()
            .take(x.rows)
            .map(|row| {
                let z: Vec<f64> = self
                    .intercept
                    .iter()
                    .enumerate()
                    .map(|(c, b)| dot(row, self.coef.get(c * d..(c + 1) * d).unwrap_or(&[])) + b)
                    .collect();
                match self.kind {
                    ModelKind::Binary => {
                        let p = sigmoid(z.first().copied().unwrap_or(0.0));
                        vec![1.0 - p, p]
                    }
                    ModelKind::Multinomial => {
                        let lse = logsumexp(&z);
                        z.iter().map(|v| (v - lse).exp()).collect()
                    }
                    ModelKind::MultiLabel => z.iter().map(|&v| sigmoid(v)).collect(),
                }
            })
            .collect()
    }

    /// Scores every row of `columns` (feature columns in training order).
    pub fn predict_proba(&self, columns: &[FeatureValues]) -> Vec<Vec<f64>> {
        let rows: Vec<usize> = (0..columns.first().map_or(0, FeatureValues::len)).collect();
        self.proba_matrix(&design::transform(&self.encoders, columns, &rows))
    }
}
