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

use super::design::Design;

/// What each training row is labelled.
pub enum Labels<'a> {
    /// 0/1 per row (`k = 1`).
    Binary(&'a [bool]),
    /// Class index per row, `K` classes (`k = K`).
    Multinomial(&'a [usize], usize),
}

pub struct Objective<'a> {
    pub x: &'a Design<'a>,
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
        self.k() * (self.x.cols() + 1)
    }

    /// The penalised parameters are the first `n_penalized` (W, not b).
    pub fn n_penalized(&self) -> usize {
        self.k() * self.x.cols()
    }

    /// Smooth objective value; writes its gradient into `grad`. Rows are split into blocks
    /// summed on all cores (rayon); the blocks and their order are fixed, so results do not
    /// depend on the thread count.
    pub fn value_grad(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        use rayon::prelude::*;
        let d = self.x.cols();
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

    /// The weighted loss of rows `range`; adds their gradient to `grad`. Rows go in chunks of
    /// [`CHUNK_ROWS`], small enough that a chunk of every column stays in cache between the
    /// two products. Binary, over the columns: `z = b + Σⱼ wⱼ·xⱼ` (one `axpy` per column),
    /// one `exp` per row for its loss and residual `r`, then `∇wⱼ += xⱼ·r` (one `dot` per
    /// column). Multinomial: the chunk copied into a row-major block (the operand a matrix
    /// product packs fastest), `Z = X·Wᵀ`, each row of `Z` turned into its loss and
    /// residuals in place (one `exp` per class), then `∇W += Rᵀ·X`.
    fn block(
        &self,
        theta: &[f64],
        range: std::ops::Range<usize>,
        inv: f64,
        grad: &mut [f64],
    ) -> f64 {
        use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2};
        let d = self.x.cols();
        let k = self.k();
        let (w, b) = theta.split_at(k * d);
        let (gw, gb) = grad.split_at_mut(k * d);
        let mut loss = 0.0;
        if let Labels::Binary(y) = self.labels {
            let b = b.first().copied().unwrap_or(0.0);
            let mut z = vec![0.0; CHUNK_ROWS];
            let mut start = range.start;
            while start < range.end {
                let end = (start + CHUNK_ROWS).min(range.end);
                let z = z.get_mut(..end - start).unwrap_or_default();
                linear(self.x, start, w, b, z);
                let labels = y.get(start..end).unwrap_or_default();
                let weights = self.weights.get(start..end).unwrap_or_default();
                for ((zi, &yi), &weight) in z.iter_mut().zip(labels).zip(weights) {
                    loss += binary_residual(std::slice::from_mut(zi), yi, weight * inv);
                }
                // z now holds the rows' residuals: accumulate the gradient.
                for (column, g) in self.x.columns.iter().zip(gw.iter_mut()) {
                    *g += dot(column.get(start..end).unwrap_or_default(), z);
                }
                if let Some(g) = gb.first_mut() {
                    *g += z.iter().sum::<f64>();
                }
                start = end;
            }
            return loss;
        }
        let (Ok(w), Ok(mut gw)) = (
            ArrayView2::from_shape((k, d), w),
            ArrayViewMut2::from_shape((k, d), gw),
        ) else {
            return 0.0;
        };
        // Fewer rows per chunk when the rows are wide (many one-hot columns), so the copied
        // block stays about as large as 256 rows of 64 columns.
        let chunk = (CHUNK_ROWS * 64 / d.max(1)).clamp(16, CHUNK_ROWS);
        let mut rows = vec![0.0; chunk * d];
        let mut z = vec![0.0; chunk * k];
        let mut start = range.start;
        while start < range.end {
            let end = (start + chunk).min(range.end);
            let n = end - start;
            let rows = rows.get_mut(..n * d).unwrap_or_default();
            self.x.fill_rows(start..end, rows);
            let z = z.get_mut(..n * k).unwrap_or_default();
            let (Ok(x), Ok(mut zm)) = (
                ArrayView2::from_shape((n, d), &*rows),
                ArrayViewMut2::from_shape((n, k), &mut *z),
            ) else {
                return loss;
            };
            general_mat_mul(1.0, &x, &w.t(), 0.0, &mut zm);
            for (i, zr) in (start..end).zip(z.chunks_exact_mut(k)) {
                for (zc, bc) in zr.iter_mut().zip(b) {
                    *zc += bc;
                }
                let scale = self.weights.get(i).copied().unwrap_or(0.0) * inv;
                if let Labels::Multinomial(y, _) = self.labels {
                    loss += multinomial_residual(zr, y.get(i).copied().unwrap_or(0), scale);
                }
            }
            // z now holds the rows' residuals: accumulate the gradient.
            let Ok(residuals) = ArrayView2::from_shape((n, k), &*z) else {
                return loss;
            };
            general_mat_mul(1.0, &residuals.t(), &x, 1.0, &mut gw);
            for r in z.chunks_exact(k) {
                axpy(1.0, r, gb);
            }
            start = end;
        }
        loss
    }
}

/// The binary loss `log(1 + eᶻ) − y·z` of one row scaled by `scale`; `z` (one value) becomes
/// its residual `scale·(σ(z) − y)`. One `exp` serves both.
fn binary_residual(z: &mut [f64], y: bool, scale: f64) -> f64 {
    let Some(zi) = z.first_mut() else {
        return 0.0;
    };
    let e = (-zi.abs()).exp();
    // softplus(z) = max(z, 0) + log(1 + e^-|z|); σ(z) from the same e^-|z|. `ln(1 + e)`, not
    // `ln_1p(e)`: with `e` in (0, 1] both are within 2.3e-16 of the exact value (only the
    // relative error of a tiny term differs), and glibc's `log` is about twice as fast as its
    // `log1p`, which was a quarter of the fit's time on `make bench-train`'s 100k x 50.
    let softplus = zi.max(0.0) + (1.0 + e).ln();
    let sigma = if *zi >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    let loss = scale * (softplus - if y { *zi } else { 0.0 });
    *zi = scale * (sigma - f64::from(u8::from(y)));
    loss
}

/// The multinomial loss `logsumexp(z) − z_y` of one row scaled by `scale`; `z` becomes its
/// residuals `scale·(softmax(z) − onehot(y))`.
fn multinomial_residual(z: &mut [f64], y: usize, scale: f64) -> f64 {
    let zy = z.get(y).copied().unwrap_or(0.0);
    let lse = softmax(z);
    for (c, p) in z.iter_mut().enumerate() {
        *p = scale * *p - if c == y { scale } else { 0.0 };
    }
    scale * (lse - zy)
}

/// Replaces `z` by `softmax(z)` and returns `logsumexp(z)`: one `exp` per value.
pub fn softmax(z: &mut [f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        let lse = max;
        z.iter_mut().for_each(|v| *v = (*v - lse).exp());
        return lse;
    }
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    z.iter_mut().for_each(|v| *v *= inv);
    max + sum.ln()
}

/// Rows of one chunk in [`Objective::block`].
const CHUNK_ROWS: usize = 256;

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

/// `z = b + X·w` for the rows `start..start + z.len()` of `x`: one `axpy` per column.
pub fn linear(x: &Design<'_>, start: usize, w: &[f64], b: f64, z: &mut [f64]) {
    z.fill(b);
    let rows = start..start + z.len();
    for (column, &wj) in x.columns.iter().zip(w) {
        axpy(wj, column.get(rows.clone()).unwrap_or_default(), z);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The design matrix of row-major `data`.
    fn design(rows: usize, cols: usize, data: &[f64]) -> Design<'static> {
        Design {
            rows,
            columns: (0..cols)
                .map(|j| {
                    data.iter()
                        .skip(j)
                        .step_by(cols)
                        .copied()
                        .collect::<Vec<_>>()
                        .into()
                })
                .collect(),
        }
    }

    /// One row's loss and residuals agree with the textbook formulas, also far out where a
    /// naive `exp` would overflow.
    #[test]
    fn row_residuals_match_the_formulas() {
        for z in [-800.0, -3.0, -1e-3, 0.0, 2.5, 800.0] {
            for y in [false, true] {
                let mut r = [z];
                let loss = binary_residual(&mut r, y, 0.5);
                let softplus = if z > 0.0 {
                    z + (-z).exp().ln_1p()
                } else {
                    z.exp().ln_1p()
                };
                let sigma = 1.0 / (1.0 + (-z).exp());
                let t = f64::from(u8::from(y));
                assert!(
                    (loss - 0.5 * (softplus - t * z)).abs() < 1e-12,
                    "z {z} y {y}"
                );
                assert!((r[0] - 0.5 * (sigma - t)).abs() < 1e-15, "z {z} y {y}");
            }
        }
        let z = [1.0, -2.0, 700.0, 699.0];
        let lse = 700.0 + (1.0 + (-1.0_f64).exp()).ln();
        let mut r = z;
        let loss = multinomial_residual(&mut r, 1, 2.0);
        assert!((loss - 2.0 * (lse + 2.0)).abs() < 1e-9);
        for (c, (&got, &zc)) in r.iter().zip(&z).enumerate() {
            let want = 2.0 * ((zc - lse).exp() - if c == 1 { 1.0 } else { 0.0 });
            assert!((got - want).abs() < 1e-12, "class {c}: {got} vs {want}");
        }
    }

    /// Over many chunks and blocks, the value and gradient equal a plain row-by-row sum:
    /// narrow rows (full chunks) and wide ones (shorter chunks that do not divide a block).
    #[test]
    fn chunked_products_equal_the_row_by_row_sum() {
        for cols in [3, 300] {
            chunked_products_equal_the_row_by_row_sum_with(cols);
        }
    }

    fn chunked_products_equal_the_row_by_row_sum_with(cols: usize) {
        let rows = BLOCK_ROWS + 3 * CHUNK_ROWS + 7;
        let data: Vec<f64> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f64 / 250.0 - 2.0)
            .collect();
        let x = design(rows, cols, &data);
        let weights: Vec<f64> = (0..rows).map(|i| 0.5 + (i % 3) as f64).collect();
        let yb: Vec<bool> = (0..rows).map(|i| i % 5 < 2).collect();
        let ym: Vec<usize> = (0..rows).map(|i| (i * 31) % 4).collect();
        for labels in [Labels::Binary(&yb), Labels::Multinomial(&ym, 4)] {
            let f = Objective {
                x: &x,
                labels,
                weights: &weights,
                l2: 0.0,
                fit_intercept: true,
            };
            let k = f.k();
            // Scaled so that z stays where the plain formulas below do not overflow.
            let theta: Vec<f64> = (0..f.n_params())
                .map(|i| (0.2 * (i % 16) as f64 - 0.7) * 3.0 / cols as f64)
                .collect();
            let mut grad = vec![0.0; theta.len()];
            let value = f.value_grad(&theta, &mut grad);
            let total: f64 = weights.iter().sum();
            let (mut want, mut want_grad) = (0.0, vec![0.0; theta.len()]);
            for (i, row) in data.chunks_exact(cols).enumerate() {
                let z: Vec<f64> = (0..k)
                    .map(|c| {
                        row.iter()
                            .zip(&theta[c * cols..])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            + theta[k * cols + c]
                    })
                    .collect();
                let s = weights[i] / total;
                let residuals: Vec<f64> = if k == 1 {
                    let t = f64::from(u8::from(yb[i]));
                    want += s * ((1.0 + z[0].exp()).ln() - t * z[0]);
                    vec![s * (1.0 / (1.0 + (-z[0]).exp()) - t)]
                } else {
                    let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
                    want += s * (lse - z[ym[i]]);
                    (0..k)
                        .map(|c| s * ((z[c] - lse).exp() - f64::from(u8::from(c == ym[i]))))
                        .collect()
                };
                for (c, r) in residuals.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        want_grad[c * cols + j] += r * v;
                    }
                    want_grad[k * cols + c] += r;
                }
            }
            let close = |got: f64, want: f64| (got - want).abs() <= 1e-10 * want.abs().max(1.0);
            assert!(close(value, want), "{cols} columns: {value} vs {want}");
            for (got, want) in grad.iter().zip(&want_grad) {
                assert!(close(*got, *want), "{cols} columns: {got} vs {want}");
            }
        }
    }

    /// The analytic gradient agrees with central differences.
    #[test]
    fn gradient_matches_finite_differences() {
        let x = design(4, 2, &[1.0, 2.0, -1.0, 0.5, 0.3, -2.0, 2.0, 1.0]);
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
