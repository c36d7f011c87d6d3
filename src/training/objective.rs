//! scikit-learn's logistic-regression objective, divided by the total sample weight `S` (as
//! scikit-learn's lbfgs does, so gradients are O(1) and `tol` means what it means there):
//!
//! `f(W, b) = Σᵢ wᵢ·lossᵢ / S + (1 − l1_ratio) / (2·C·S) · ‖W‖² + l1_ratio / (C·S) · ‖W‖₁`
//!
//! which has the same minimiser as `C·Σᵢ wᵢ·lossᵢ + r(W)`. Intercepts are never penalised.
//! This module computes the smooth part; the optimiser adds the L1 part.
//!
//! Parameters are laid out as `[W (k rows × d, row-major), b (k)]`: `k = K` classes for the
//! multinomial loss `logsumexp(z) − z_y`, `k = 1` for the binary loss `log(1 + eᶻ) − y·z`.

use super::design::Matrix;

/// What each training row is labelled.
pub enum Labels<'a> {
    /// 0/1 per row (`k = 1`).
    Binary(&'a [bool]),
    /// Class index per row, `K` classes (`k = K`).
    Multinomial(&'a [usize], usize),
}

pub struct Objective<'a> {
    pub x: &'a Matrix,
    pub labels: Labels<'a>,
    /// Per-row sample weights (class weights folded in).
    pub weights: &'a [f64],
    /// The L2 coefficient `(1 − l1_ratio) / (C·S)` (0 for no penalty).
    pub l2: f64,
    pub fit_intercept: bool,
}

impl Objective<'_> {
    /// Coefficient rows: 1 for binary, K for multinomial.
    pub fn k(&self) -> usize {
        match self.labels {
            Labels::Binary(_) => 1,
            Labels::Multinomial(_, k) => k,
        }
    }

    pub fn n_params(&self) -> usize {
        self.k() * (self.x.cols + 1)
    }

    /// The penalised parameters are the first `n_penalized` (W, not b).
    pub fn n_penalized(&self) -> usize {
        self.k() * self.x.cols
    }

    /// Smooth objective value; writes its gradient into `grad`. Rows are split into blocks
    /// summed on all cores (rayon); the blocks and their order are fixed, so results do not
    /// depend on the thread count.
    pub fn value_grad(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        use rayon::prelude::*;
        let d = self.x.cols;
        let k = self.k();
        let (w, _) = theta.split_at(k * d);
        let total: f64 = self.weights.iter().sum();
        let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
        let rows = self.x.rows.min(self.weights.len());
        let blocks = rows.div_ceil(BLOCK_ROWS);
        let partials: Vec<(f64, Vec<f64>)> = (0..blocks)
            .into_par_iter()
            .map(|block| {
                let start = block * BLOCK_ROWS;
                let end = (start + BLOCK_ROWS).min(rows);
                let mut g = vec![0.0; grad.len()];
                let loss = self.block(theta, start..end, inv, &mut g);
                (loss, g)
            })
            .collect();
        grad.fill(0.0);
        let mut loss = 0.0;
        for (block_loss, g) in &partials {
            loss += block_loss;
            axpy(1.0, g, grad);
        }
        if !self.fit_intercept {
            grad.iter_mut().skip(k * d).for_each(|g| *g = 0.0);
        }
        let (gw, _) = grad.split_at_mut(k * d);
        axpy(self.l2, w, gw);
        loss + 0.5 * self.l2 * dot(w, w)
    }

    /// The weighted loss of rows `range`; adds their gradient to `grad`.
    fn block(
        &self,
        theta: &[f64],
        range: std::ops::Range<usize>,
        inv: f64,
        grad: &mut [f64],
    ) -> f64 {
        let d = self.x.cols;
        let k = self.k();
        let (w, b) = theta.split_at(k * d);
        let mut loss = 0.0;
        let mut z = vec![0.0; k];
        let (gw, gb) = grad.split_at_mut(k * d);
        for i in range {
            let row = self.x.row(i);
            let sw = self.weights.get(i).copied().unwrap_or(0.0);
            for (c, zc) in z.iter_mut().enumerate() {
                *zc = dot(row, w.get(c * d..(c + 1) * d).unwrap_or(&[]))
                    + b.get(c).copied().unwrap_or(0.0);
            }
            let scale = sw * inv;
            match self.labels {
                Labels::Binary(y) => {
                    let zi = z.first().copied().unwrap_or(0.0);
                    let yi = y.get(i).copied().unwrap_or(false);
                    loss += scale * (softplus(zi) - if yi { zi } else { 0.0 });
                    let residual = scale * (sigmoid(zi) - f64::from(u8::from(yi)));
                    if let Some(zc) = z.first_mut() {
                        *zc = residual;
                    }
                }
                Labels::Multinomial(y, _) => {
                    let yi = y.get(i).copied().unwrap_or(0);
                    let lse = logsumexp(&z);
                    loss += scale * (lse - z.get(yi).copied().unwrap_or(0.0));
                    for (c, zc) in z.iter_mut().enumerate() {
                        *zc = scale * ((*zc - lse).exp() - if c == yi { 1.0 } else { 0.0 });
                    }
                }
            }
            // z now holds the row's residuals: accumulate the gradient.
            for (c, &r) in z.iter().enumerate() {
                if let Some(g) = gw.get_mut(c * d..(c + 1) * d) {
                    axpy(r, row, g);
                }
                if let Some(g) = gb.get_mut(c) {
                    *g += r;
                }
            }
        }
        loss
    }
}

/// Rows per block of the parallel loss and gradient.
const BLOCK_ROWS: usize = 8192;

/// `a·b`, summed in eight lanes (so the compiler keeps several SIMD sums going rather than
/// one chain of dependent additions: the loss and gradient spend most of their time here).
/// The order of the additions is fixed, so results do not depend on the machine.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    const LANES: usize = 8;
    let (a, b) = match (a.get(..b.len()), b.get(..a.len())) {
        (Some(a), _) => (a, b),
        (None, Some(b)) => (a, b),
        (None, None) => return 0.0,
    };
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0.0; LANES];
    for (x, y) in chunks_a.zip(chunks_b) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lanes;
    ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)) + tail
}

/// `y += a·x`
pub fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + eᶻ)`, without overflow.
pub fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

pub fn logsumexp(z: &[f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradient agrees with central differences.
    #[test]
    fn gradient_matches_finite_differences() {
        let x = Matrix {
            rows: 4,
            cols: 2,
            data: vec![1.0, 2.0, -1.0, 0.5, 0.3, -2.0, 2.0, 1.0],
        };
        let weights = [1.0, 2.0, 0.5, 1.0];
        let yb = [true, false, true, false];
        let ym = [0, 2, 1, 2];
        for labels in [Labels::Binary(&yb), Labels::Multinomial(&ym, 3)] {
            let f = Objective {
                x: &x,
                labels,
                weights: &weights,
                l2: 0.1,
                fit_intercept: true,
            };
            let theta: Vec<f64> = (0..f.n_params()).map(|i| 0.1 * i as f64 - 0.3).collect();
            let mut grad = vec![0.0; theta.len()];
            f.value_grad(&theta, &mut grad);
            for j in 0..theta.len() {
                let (mut up, mut down) = (theta.clone(), theta.clone());
                up[j] += 1e-6;
                down[j] -= 1e-6;
                let mut scratch = vec![0.0; theta.len()];
                let numeric =
                    (f.value_grad(&up, &mut scratch) - f.value_grad(&down, &mut scratch)) / 2e-6;
                assert!(
                    (numeric - grad[j]).abs() < 1e-7,
                    "param {j}: {numeric} vs {}",
                    grad[j]
                );
            }
        }
    }
}
