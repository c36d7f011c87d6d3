//! The JSON body of `POST /models` and its validation into a [`TrainingJob`].
//!
//! Three shapes carry the rows (exactly one per request):
//! - the Celery training API's: `columns` (feature names), `features` (rows of numbers), `classes` (one label
//!   per row), with `penalty` and `solver` required as that API required them;
//! - `records`: a list of JSON objects, plus `target` (a column name, or a list of 0/1 columns
//!   for a multi-label target); features are numbers or strings (categorical);
//! - `csv`: CSV text with a header line, plus `target`; a column whose cells are all numbers
//!   is numeric, any other is categorical.
//!
//! Training options sit beside them, named as scikit-learn names them (see [`Params`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::data::{self, push, ClassValue, FeatureValues, Target};
use super::params::{self, ClassWeight, Params, RawParams};
use crate::model::FieldError;

/// Most distinct classes of a multiclass target.
pub const MAX_CLASSES: usize = 100;
/// Most target columns of a multi-label target.
pub const MAX_LABELS: usize = 100;
/// Most features (graph inputs) of one model.
pub const MAX_FEATURES: usize = 1_000;
/// Most distinct values of one categorical feature.
pub const MAX_CATEGORIES: usize = 1_000;

/// The size limits a server applies to one training job (each is a flag; see `config.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most rows × features sent inside a JSON body (`--max-inline-training-cells`).
    pub inline_cells: usize,
    /// Most values of the encoded design matrix, rows × one-hot-expanded columns
    /// (`--max-training-cells`).
    pub encoded_cells: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            inline_cells: data::DEFAULT_MAX_INLINE_CELLS,
            encoded_cells: DEFAULT_MAX_ENCODED_CELLS,
        }
    }
}

/// `--max-training-cells`' default: 500 million values, a 4 GB design matrix.
pub const DEFAULT_MAX_ENCODED_CELLS: usize = 500_000_000;

/// The body of `POST /models`: every field is kept as raw JSON so that [`validate`]
/// can name every problem at once (a wrong type is a field error, not a parse failure).
///
/// [`validate`]: TrainingRequest::validate
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TrainingRequest {
    pub columns: Option<Value>,
    pub features: Option<Value>,
    pub classes: Option<Value>,
    pub records: Option<Value>,
    pub csv: Option<Value>,
    pub target: Option<Value>,
    /// `null` is scikit-learn's `penalty=None` (no penalty), so it is kept apart from absent.
    #[serde(default, deserialize_with = "present")]
    pub penalty: Option<Value>,
    #[serde(rename = "C")]
    pub c: Option<Value>,
    pub l1_ratio: Option<Value>,
    pub fit_intercept: Option<Value>,
    pub class_weight: Option<Value>,
    pub max_iter: Option<Value>,
    pub tol: Option<Value>,
    pub solver: Option<Value>,
    pub standardize: Option<Value>,
    pub test_size: Option<Value>,
    pub stratify: Option<Value>,
    pub random_seed: Option<Value>,
    /// Anything else: refused, by name.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// Deserialises a present value, `null` included, as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A validated training job. Stored as JSON (a Redis stream entry): it round-trips through
/// `serde_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingJob {
    /// Feature names, in graph-input order.
    pub features: Vec<String>,
    /// One column per feature, in the same order.
    pub columns: Vec<FeatureValues>,
    pub target: Target,
    pub params: Params,
}

impl TrainingJob {
    pub fn feature_names(&self) -> &[String] {
        &self.features
    }

    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, FeatureValues::len)
    }

    pub fn is_multi_label(&self) -> bool {
        matches!(self.target, Target::MultiLabel { .. })
    }
}

const KNOWN: &str = "columns, features, classes, records, csv, target, penalty, C, l1_ratio, \
                     fit_intercept, class_weight, max_iter, tol, solver, standardize, test_size, \
                     stratify, random_seed";

impl TrainingRequest {
    /// Checks everything under the default [`Limits`], returning every problem (up to 100),
    /// each named by its field.
    pub fn validate(self) -> Result<TrainingJob, Vec<FieldError>> {
        self.validate_with(&Limits::default())
    }

    /// The training options alone, for a request whose rows come from elsewhere (a data
    /// set): any row field is refused by name.
    pub fn params_only(self) -> Result<Params, Vec<FieldError>> {
        let mut errors = Vec::new();
        let rows = [
            ("columns", &self.columns),
            ("features", &self.features),
            ("classes", &self.classes),
            ("records", &self.records),
            ("csv", &self.csv),
        ];
        for (name, value) in rows {
            if value.is_some() {
                let message = "the rows come from `dataset_id`; send them in one place only";
                push(&mut errors, FieldError::new(name, "shape", message));
            }
        }
        let params = self.raw().parse(&mut errors);
        match params {
            Some(params) if errors.is_empty() => Ok(params),
            _ => Err(errors),
        }
    }

    fn raw(&self) -> RawParams<'_> {
        RawParams {
            penalty: self.penalty.as_ref(),
            c: self.c.as_ref(),
            l1_ratio: self.l1_ratio.as_ref(),
            fit_intercept: self.fit_intercept.as_ref(),
            class_weight: self.class_weight.as_ref(),
            max_iter: self.max_iter.as_ref(),
            tol: self.tol.as_ref(),
            solver: self.solver.as_ref(),
            standardize: self.standardize.as_ref(),
            test_size: self.test_size.as_ref(),
            stratify: self.stratify.as_ref(),
            random_seed: self.random_seed.as_ref(),
        }
    }

    /// [`validate`](Self::validate) under the server's limits.
    pub fn validate_with(self, limits: &Limits) -> Result<TrainingJob, Vec<FieldError>> {
        let mut errors = Vec::new();
        for key in self.unknown.keys() {
            let message = format!("unknown field; the fields are {KNOWN}");
            push(
                &mut errors,
                FieldError::new(key.clone(), "unknown", message),
            );
        }
        let params = self.raw().parse(&mut errors);
        let data = self.data(limits.inline_cells, &mut errors);
        match (params, data) {
            (Some(params), Some(data)) if errors.is_empty() => {
                check(&data, &params, limits, &mut errors);
                if errors.is_empty() {
                    return Ok(TrainingJob {
                        features: data.features,
                        columns: data.columns,
                        target: data.target,
                        params,
                    });
                }
                Err(errors)
            }
            _ => Err(errors),
        }
    }

    fn data(&self, max_cells: usize, errors: &mut Vec<FieldError>) -> Option<data::Data> {
        let seed = [&self.columns, &self.features, &self.classes];
        let shapes = [
            seed.iter().any(|v| v.is_some()),
            self.records.is_some(),
            self.csv.is_some(),
        ];
        match shapes {
            [true, false, false] => {
                if self.target.is_some() {
                    let message =
                        "`target` goes with `records` or `csv`; the Celery training API's shape uses `classes`";
                    push(errors, FieldError::new("target", "unknown", message));
                }
                let mut missing = |name: &str, v: &Option<Value>| {
                    if v.is_none() {
                        push(
                            errors,
                            FieldError::new(name, "missing", "field is required"),
                        );
                    }
                };
                missing("columns", &self.columns);
                missing("features", &self.features);
                missing("classes", &self.classes);
                missing("penalty", &self.penalty);
                missing("solver", &self.solver);
                let (Some(c), Some(f), Some(k)) = (&self.columns, &self.features, &self.classes)
                else {
                    return None;
                };
                super::shapes::seed(c, f, k, max_cells, errors)
            }
            [false, true, false] => super::shapes::records(
                self.records.as_ref()?,
                self.target.as_ref(),
                max_cells,
                errors,
            ),
            [false, false, true] => {
                super::csv::data(self.csv.as_ref()?, self.target.as_ref(), max_cells, errors)
            }
            [false, false, false] => {
                let message = "send the training rows as `columns` + `features` + `classes`, \
                               as `records` + `target`, or as `csv` + `target`";
                push(errors, FieldError::new("features", "missing", message));
                None
            }
            _ => {
                let message =
                    "send the training rows in exactly one shape: `columns` + `features` + \
                               `classes`, `records` + `target`, or `csv` + `target`";
                push(errors, FieldError::new("records", "shape", message));
                None
            }
        }
    }
}

impl TrainingJob {
    /// The checks [`TrainingRequest::validate`] runs once rows and options are known, for a
    /// job whose rows were read from a data set.
    pub fn check(&self, limits: &Limits) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let parts = Parts {
            features: &self.features,
            columns: &self.columns,
            target: &self.target,
        };
        check_parts(&parts, &self.params, limits, &mut errors);
        errors
    }
}

/// Checks that need both the rows and the options: class counts, weights, limits.
fn check(data: &data::Data, params: &Params, limits: &Limits, errors: &mut Vec<FieldError>) {
    let parts = Parts {
        features: &data.features,
        columns: &data.columns,
        target: &data.target,
    };
    check_parts(&parts, params, limits, errors);
}

/// Rows and target, borrowed from a request's data or from a job.
struct Parts<'a> {
    features: &'a [String],
    columns: &'a [FeatureValues],
    target: &'a Target,
}

fn check_parts(data: &Parts<'_>, params: &Params, limits: &Limits, errors: &mut Vec<FieldError>) {
    let rows = data.columns.first().map_or(0, FeatureValues::len);
    if data.features.len() > MAX_FEATURES {
        let message = format!(
            "{} features (graph inputs); the limit is {MAX_FEATURES}",
            data.features.len()
        );
        push(errors, FieldError::new("features", "too_large", message));
    }
    let nul = |s: &String| s.contains('\0');
    if let Some(name) = data.features.iter().find(|n| nul(n)) {
        let message = "a feature name may not contain a NUL character";
        push(
            errors,
            FieldError::new(name.replace('\0', "\\0"), "invalid", message),
        );
    }
    let mut encoded = 0usize;
    for (name, column) in data.features.iter().zip(data.columns) {
        match column {
            FeatureValues::Numeric(_) => encoded += 1,
            FeatureValues::Categorical(values) => {
                if values.iter().any(nul) {
                    let message = "a categorical value may not contain a NUL character";
                    push(errors, FieldError::new(name.clone(), "invalid", message));
                }
                let distinct = values.iter().collect::<BTreeSet<_>>().len();
                if distinct > MAX_CATEGORIES {
                    let message =
                        format!("has {distinct} distinct values; the limit is {MAX_CATEGORIES}");
                    push(errors, FieldError::new(name.clone(), "too_large", message));
                }
                encoded += distinct;
            }
        }
    }
    if rows.saturating_mul(encoded) > limits.encoded_cells {
        let message = format!(
            "{rows} rows × {encoded} encoded columns (categories one-hot) is more than the \
             {}-value limit of one training job (--max-training-cells, \
             ML_API_MAX_TRAINING_CELLS)",
            limits.encoded_cells
        );
        push(errors, FieldError::new("features", "too_large", message));
    }
    if let Some(test_size) = params.test_size {
        let test = (test_size * rows as f64).ceil() as usize;
        if test == 0 || test >= rows {
            let message = format!(
                "leaves {} training and {test} test rows of {rows}",
                rows.saturating_sub(test)
            );
            push(errors, FieldError::new("test_size", "range", message));
        }
    }
    match &data.target {
        Target::Classes { values, .. } => {
            let classes: BTreeSet<&ClassValue> = values.iter().collect();
            if classes
                .iter()
                .any(|c| matches!(c, ClassValue::Str(s) if nul(s)))
            {
                let message = "a class label may not contain a NUL character";
                push(
                    errors,
                    FieldError::new(class_field(data), "invalid", message),
                );
            }
            if classes.len() < 2 {
                let message = "needs at least two distinct classes to train a classifier";
                push(
                    errors,
                    FieldError::new(class_field(data), "degenerate", message),
                );
            }
            if classes.len() > MAX_CLASSES {
                let message = format!(
                    "has {} distinct classes; the limit is {MAX_CLASSES}",
                    classes.len()
                );
                push(
                    errors,
                    FieldError::new(class_field(data), "too_large", message),
                );
            }
            if let Some(error) = params::liblinear_multiclass(params, classes.len()) {
                push(errors, error);
            }
            if let Some(ClassWeight::Map(weights)) = &params.class_weight {
                let labels: BTreeSet<String> = classes.iter().map(|c| c.label()).collect();
                for label in weights.keys().filter(|l| !labels.contains(*l)) {
                    let message = format!("`{label}` is not one of the classes");
                    push(
                        errors,
                        FieldError::new(format!("class_weight.{label}"), "category", message),
                    );
                }
            }
        }
        Target::MultiLabel { names, values } => {
            if names.len() > MAX_LABELS {
                let message = format!(
                    "lists {} target columns; the limit is {MAX_LABELS}",
                    names.len()
                );
                push(errors, FieldError::new("target", "too_large", message));
            }
            for (name, flags) in names.iter().zip(values) {
                if flags.iter().all(|f| *f) || flags.iter().all(|f| !*f) {
                    let message = format!(
                        "target `{name}` has only one value; each label needs both 0 and 1"
                    );
                    push(errors, FieldError::new("target", "degenerate", message));
                }
            }
            if let Some(ClassWeight::Map(_)) = &params.class_weight {
                let message =
                    "a multi-label target takes `\"balanced\"` (per label) or no class_weight";
                push(
                    errors,
                    FieldError::new("class_weight", "incompatible", message),
                );
            }
        }
    }
}

/// Where a label problem is reported: `classes` in the Celery training API's shape, `target` otherwise.
fn class_field(data: &Parts<'_>) -> &'static str {
    match &data.target {
        Target::Classes { name: Some(_), .. } => "target",
        _ => "classes",
    }
}
