//! Training logistic regressions that agree with scikit-learn's `LogisticRegression`, and
//! writing them as self-contained ONNX graphs. Pure and synchronous: no I/O.
//!
//! - binary targets: binary logistic regression; 3+ classes: multinomial (softmax);
//!   multi-label (`target` lists several 0/1 columns): one binary model per label (OvR);
//! - the objective is scikit-learn's (see [`objective`]), minimised by L-BFGS / OWL-QN with the
//!   intercepts unpenalised (see [`optimize`]), so probabilities match scikit-learn's to 1e-4
//!   at convergence, whichever `solver` name the request gives (that name is only checked
//!   for the combinations scikit-learn refuses);
//! - `max_iter` counts this optimiser's iterations (default 1,000); a fit that runs out of
//!   them is still returned, with `converged: false` and a warning in its metrics, as
//!   scikit-learn warns; one class only (after the split) is an error.

mod card;
pub mod csv;
pub mod data;
pub mod design;
mod fit;
pub mod graph;
pub mod metrics;
pub mod model;
pub mod objective;
pub mod onnx;
pub mod optimize;
pub mod params;
pub mod request;
pub mod shapes;
pub mod split;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use data::{ClassValue, FeatureValues, Target};
pub use metrics::{LabelMetrics, TrainingMetrics};
pub use model::{LinearModel, ModelKind};
pub use params::{ClassWeight, Params, Penalty, Solver};
pub use request::{Limits, TrainingJob, TrainingRequest};

use crate::model::batch::argmax;
use objective::Labels;

/// Reported after every optimiser iteration. For multi-label targets the labels are fitted one
/// after another: `iteration` keeps counting across them and `loss` is the current label's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub iteration: u64,
    /// The training objective (scikit-learn's, divided by the total sample weight).
    pub loss: f64,
}

#[derive(Debug, Clone)]
pub struct TrainedModel {
    /// The ONNX graph (see [`graph`]).
    pub onnx: Vec<u8>,
    /// Name and version are left `None` for the registry to set.
    pub card: crate::model::ModelCard,
    /// The class values in output-column order, as the client sent them (ints stay ints);
    /// for multi-label, the target column names.
    pub class_values: Vec<serde_json::Value>,
    pub metrics: TrainingMetrics,
    pub multi_label: bool,
    /// The same model in Rust (f64), for scoring without ONNX Runtime.
    pub model: LinearModel,
}

#[derive(thiserror::Error, Debug)]
pub enum TrainingError {
    /// The data cannot train a classifier (e.g. one class only in the training split).
    #[error("{0}")]
    Degenerate(String),
    /// The optimiser produced non-finite numbers.
    #[error("{0}")]
    Numerical(String),
}

/// Trains the job's model, calling `progress` after each optimiser iteration.
pub fn train(
    job: &TrainingJob,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainedModel, TrainingError> {
    train_in_phases(job, progress, &mut |_| {})
}

/// What a long job is doing, for `GET /models/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Reading the rows (from a data set).
    Reading,
    /// Encoding the rows and running the optimiser (the features' profiles are computed
    /// meanwhile, on the cores the optimiser leaves idle).
    Fitting,
    /// Writing the ONNX graph.
    Exporting,
    /// The model's feature contract: which class the fitted model picks for the training
    /// rows, with the features' profiles.
    Profiling,
}

/// [`train`], also telling `phase` when the job moves on to the next phase.
pub fn train_in_phases(
    job: &TrainingJob,
    progress: &mut dyn FnMut(Progress),
    phase: &mut dyn FnMut(Phase),
) -> Result<TrainedModel, TrainingError> {
    phase(Phase::Fitting);
    let params = &job.params;
    let rows = job.rows();
    let strata: Option<Vec<String>> = params.stratify.then(|| strata(&job.target, rows));
    let (train_rows, test_rows) = split::split(
        rows,
        params.test_size,
        strata.as_deref(),
        params.random_seed,
    );
    let encoders = design::fit(&job.columns, &train_rows, params.standardize);
    let x = design::transform(&encoders, &job.columns, &train_rows);
    let x_test =
        (!test_rows.is_empty()).then(|| design::transform(&encoders, &job.columns, &test_rows));
    let (eval_x, eval_rows) = match &x_test {
        Some(m) => (m, &test_rows),
        None => (&x, &train_rows),
    };

    // The features' profiles (the contract's fields) do not depend on the fit: they are
    // computed on the other cores while the optimiser runs (the fit's loss and gradient are
    // memory-bound; the profiles mostly read columns already in cache).
    let mut fields = Default::default();
    let fitted = rayon::in_place_scope(|scope| {
        scope.spawn(|_| fields = card::field_profiles(job, &train_rows));
        fit_target(job, &encoders, &x, &train_rows, eval_x, eval_rows, progress)
    });
    let (model, class_values, scores, outcomes, eval_proba) = fitted?;
    let converged = outcomes.iter().all(|o| o.converged);
    let metrics = TrainingMetrics {
        evaluated_on: if x_test.is_some() { "test" } else { "train" }.to_owned(),
        train_rows: train_rows.len(),
        test_rows: test_rows.len(),
        accuracy: scores.accuracy,
        log_loss: scores.log_loss,
        macro_f1: scores.macro_f1,
        labels: class_values.iter().map(ClassValue::label).collect(),
        confusion_matrix: scores.confusion_matrix,
        per_label: scores.per_label,
        converged,
        iterations: outcomes.iter().map(|o| o.iterations).sum(),
        objective: outcomes.iter().map(|o| o.loss).sum(),
        warning: (!converged).then(|| {
            format!(
                "the optimiser did not converge within max_iter = {} iterations (tol {}); \
                 increase max_iter or set standardize: true",
                params.max_iter, params.tol
            )
        }),
    };
    // The contract: what the training rows looked like, and which class the fitted model
    // picked for them (the reference for prediction drift).
    phase(Phase::Profiling);
    // Without a test split the evaluation rows are the training rows: their probabilities
    // are already computed.
    let train_proba = match x_test {
        Some(_) => model.proba_matrix(&x),
        None => eval_proba,
    };
    let winners: Vec<usize> = train_proba
        .iter_rows()
        .map(|row| argmax(row).unwrap_or(0))
        .collect();
    let contract = card::contract(fields, train_rows.len(), &winners, class_values.len());
    phase(Phase::Exporting);
    Ok(card::finish(job, model, &class_values, metrics, contract))
}

/// What [`fit_target`] gives: the model, its class values (label names for multi-label), its
/// scores on the evaluation rows, how each optimiser run ended, and the evaluation rows'
/// probabilities.
type FittedTarget = (
    LinearModel,
    Vec<ClassValue>,
    metrics::Scores,
    Vec<optimize::Outcome>,
    design::Matrix,
);

/// Fits the job's target on `x` (the design matrix of the rows `train_rows`) and scores the
/// model on `eval_x` (of the rows `eval_rows`).
fn fit_target(
    job: &TrainingJob,
    encoders: &[design::Encoder],
    x: &design::Design<'_>,
    train_rows: &[usize],
    eval_x: &design::Design<'_>,
    eval_rows: &[usize],
    progress: &mut dyn FnMut(Progress),
) -> Result<FittedTarget, TrainingError> {
    let params = &job.params;
    Ok(match &job.target {
        Target::Classes { values, .. } => {
            let classes = distinct_classes(train_rows.iter().filter_map(|&i| values.get(i)));
            if classes.len() < 2 {
                return Err(TrainingError::Degenerate(format!(
                    "the training rows hold one class only ({}); a classifier needs two or more",
                    classes.first().map(ClassValue::label).unwrap_or_default()
                )));
            }
            let index = |i: &usize| values.get(*i).and_then(|v| classes.binary_search(v).ok());
            if let Some(missing) = eval_rows.iter().find(|i| index(i).is_none()) {
                let label = values
                    .get(*missing)
                    .map(ClassValue::label)
                    .unwrap_or_default();
                return Err(TrainingError::Degenerate(format!(
                    "class `{label}` has no training rows after the split; use `stratify: true` or a smaller `test_size`"
                )));
            }
            let y: Vec<usize> = train_rows.iter().filter_map(index).collect();
            let class_weights = match &params.class_weight {
                None => vec![1.0; classes.len()],
                Some(ClassWeight::Balanced) => fit::balanced(&y, classes.len()),
                Some(ClassWeight::Map(map)) => classes
                    .iter()
                    .map(|c| map.get(&c.label()).copied().unwrap_or(1.0))
                    .collect(),
            };
            let weights = fit::row_weights(&y, &class_weights);
            let binary = classes.len() == 2;
            let flags: Vec<bool> = y.iter().map(|&c| c == 1).collect();
            let labels = if binary {
                Labels::Binary(&flags)
            } else {
                Labels::Multinomial(&y, classes.len())
            };
            let fitted = fit::fit(x, labels, &weights, params, &mut |iteration, loss| {
                progress(Progress { iteration, loss })
            })?;
            let model = LinearModel {
                kind: if binary {
                    ModelKind::Binary
                } else {
                    ModelKind::Multinomial
                },
                encoders: encoders.to_vec(),
                coef: fitted.coef,
                intercept: fitted.intercept,
            };
            let truth: Vec<usize> = eval_rows.iter().filter_map(index).collect();
            let proba = model.proba_matrix(eval_x);
            let scores = metrics::classes(&truth, &proba, classes.len());
            (model, classes, scores, vec![fitted.outcome], proba)
        }
        Target::MultiLabel { names, values } => {
            let mut coef = Vec::new();
            let mut intercept = Vec::new();
            let mut outcomes = Vec::new();
            let mut offset = 0;
            for (name, flags) in names.iter().zip(values) {
                let y: Vec<bool> = train_rows
                    .iter()
                    .map(|&i| flags.get(i).copied().unwrap_or(false))
                    .collect();
                if y.iter().all(|f| *f) || y.iter().all(|f| !*f) {
                    return Err(TrainingError::Degenerate(format!(
                        "label `{name}` has one value only in the training rows; each label needs both 0 and 1"
                    )));
                }
                let classes: Vec<usize> = y.iter().map(|&f| usize::from(f)).collect();
                let class_weights = match params.class_weight {
                    Some(ClassWeight::Balanced) => fit::balanced(&classes, 2),
                    _ => vec![1.0, 1.0],
                };
                let weights = fit::row_weights(&classes, &class_weights);
                let fitted = fit::fit(
                    x,
                    Labels::Binary(&y),
                    &weights,
                    params,
                    &mut |iteration, loss| {
                        progress(Progress {
                            iteration: offset + iteration,
                            loss,
                        })
                    },
                )?;
                offset += fitted.outcome.iterations;
                coef.extend(fitted.coef);
                intercept.extend(fitted.intercept);
                outcomes.push(fitted.outcome);
            }
            let model = LinearModel {
                kind: ModelKind::MultiLabel,
                encoders: encoders.to_vec(),
                coef,
                intercept,
            };
            let truth: Vec<Vec<bool>> = values
                .iter()
                .map(|flags| {
                    eval_rows
                        .iter()
                        .map(|&i| flags.get(i).copied().unwrap_or(false))
                        .collect()
                })
                .collect();
            let proba = model.proba_matrix(eval_x);
            let scores = metrics::multi_label(names, &truth, &proba);
            let labels = names.iter().map(|n| ClassValue::Str(n.clone())).collect();
            (model, labels, scores, outcomes, proba)
        }
    })
}

/// The distinct values of `values`, sorted. A set of borrowed values that clones each class
/// once (`collect` into a set would first gather and sort every row's value).
fn distinct_classes<'a>(values: impl Iterator<Item = &'a ClassValue>) -> Vec<ClassValue> {
    let mut seen: BTreeSet<&ClassValue> = BTreeSet::new();
    for value in values {
        seen.insert(value);
    }
    seen.into_iter().cloned().collect()
}

/// The stratification key of each row: its class, or its combination of labels.
fn strata(target: &Target, rows: usize) -> Vec<String> {
    match target {
        Target::Classes { values, .. } => values.iter().map(ClassValue::label).collect(),
        Target::MultiLabel { values, .. } => (0..rows)
            .map(|i| {
                values
                    .iter()
                    .map(|f| {
                        if f.get(i).copied().unwrap_or(false) {
                            '1'
                        } else {
                            '0'
                        }
                    })
                    .collect()
            })
            .collect(),
    }
}
