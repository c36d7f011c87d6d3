//! Fitting one logistic regression (binary or multinomial) on the encoded training rows.

use super::design::Design;
use super::objective::{Labels, Objective};
use super::optimize::{self, Outcome, Settings};
use super::params::{Params, Penalty};
use super::TrainingError;

/// Coefficients and intercepts of one fit, plus how the optimiser ended.
pub struct Fitted {
    pub coef: Vec<f64>,
    pub intercept: Vec<f64>,
    pub outcome: Outcome,
}

/// Per-row weights from per-class weights (`class_weight`).
pub fn row_weights(classes_of_rows: &[usize], class_weights: &[f64]) -> Vec<f64> {
    classes_of_rows
        .iter()
        .map(|&c| class_weights.get(c).copied().unwrap_or(1.0))
        .collect()
}

/// `class_weight="balanced"`: `n / (K · count_k)`.
pub fn balanced(classes_of_rows: &[usize], k: usize) -> Vec<f64> {
    let mut counts = vec![0usize; k];
    for &c in classes_of_rows {
        if let Some(n) = counts.get_mut(c) {
            *n += 1;
        }
    }
    let n = classes_of_rows.len() as f64;
    counts
        .iter()
        .map(|&count| {
            if count == 0 {
                0.0
            } else {
                n / (k as f64 * count as f64)
            }
        })
        .collect()
}

/// Minimises the objective of `params` over `x`; `progress` gets (iteration, objective).
pub fn fit(
    x: &Design<'_>,
    labels: Labels<'_>,
    weights: &[f64],
    params: &Params,
    progress: &mut dyn FnMut(u64, f64),
) -> Result<Fitted, TrainingError> {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return Err(TrainingError::Degenerate(
            "the sample weights sum to zero".to_owned(),
        ));
    }
    let share = params.l1_share();
    let (l2, l1) = match params.penalty {
        Penalty::None => (0.0, 0.0),
        _ => (
            (1.0 - share) / (params.c * total),
            share / (params.c * total),
        ),
    };
    let objective = Objective {
        x,
        labels,
        weights,
        l2,
        fit_intercept: params.fit_intercept,
    };
    let k = objective.k();
    let settings = Settings {
        max_iter: params.max_iter,
        tol: params.tol,
        l1,
        n_penalized: objective.n_penalized(),
    };
    let smooth = |theta: &[f64], grad: &mut [f64]| objective.value_grad(theta, grad);
    let start = vec![0.0; objective.n_params()];
    let outcome = optimize::minimize(&smooth, start, &settings, progress);
    if !outcome.loss.is_finite() || outcome.theta.iter().any(|v| !v.is_finite()) {
        return Err(TrainingError::Numerical(
            "the objective became infinite or NaN; try standardize: true or a smaller C".to_owned(),
        ));
    }
    let (coef, intercept) = outcome.theta.split_at(k * x.cols());
    Ok(Fitted {
        coef: coef.to_vec(),
        intercept: intercept.to_vec(),
        outcome,
    })
}
