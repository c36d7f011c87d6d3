//! Training options, named and checked as scikit-learn's `LogisticRegression` names and checks
//! them, plus ml-api's own (`standardize`, `test_size`, `stratify`, `random_seed`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::FieldError;

/// Largest `max_iter` accepted (a job must end in bounded time).
pub const MAX_ITER_LIMIT: u64 = 100_000;
/// `max_iter` when the request has none. scikit-learn's default is 100, which often stops
/// short of the optimum on unscaled data (its ConvergenceWarning); training here is cheap.
pub const DEFAULT_MAX_ITER: u64 = 1_000;
/// scikit-learn's default `tol`.
pub const DEFAULT_TOL: f64 = 1e-4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Penalty {
    L2,
    L1,
    Elasticnet,
    None,
}

/// scikit-learn's solver names. The name is checked for the combinations scikit-learn
/// refuses; the fit itself always targets the same optimum with ml-api's own optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Solver {
    Lbfgs,
    Liblinear,
    NewtonCg,
    NewtonCholesky,
    Sag,
    Saga,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeight {
    /// `n / (K · count_k)`.
    Balanced,
    /// Class label (as a string) → weight; classes not named weigh 1.
    Map(BTreeMap<String, f64>),
}

/// Validated training options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub penalty: Penalty,
    #[serde(rename = "C")]
    pub c: f64,
    pub l1_ratio: Option<f64>,
    pub fit_intercept: bool,
    pub class_weight: Option<ClassWeight>,
    pub max_iter: u64,
    pub tol: f64,
    pub solver: Solver,
    pub standardize: bool,
    pub test_size: Option<f64>,
    pub stratify: bool,
    pub random_seed: u64,
}

impl Params {
    /// The weight of the L1 part of the penalty, as scikit-learn's `l1_ratio`.
    pub fn l1_share(&self) -> f64 {
        match self.penalty {
            Penalty::L1 => 1.0,
            Penalty::Elasticnet => self.l1_ratio.unwrap_or(0.0),
            Penalty::L2 | Penalty::None => 0.0,
        }
    }

    /// The options as scikit-learn would print them (for the model card).
    pub fn to_json(&self) -> Value {
        let class_weight = match &self.class_weight {
            None => Value::Null,
            Some(ClassWeight::Balanced) => json!("balanced"),
            Some(ClassWeight::Map(map)) => json!(map),
        };
        json!({
            "penalty": self.penalty, "C": self.c, "l1_ratio": self.l1_ratio,
            "fit_intercept": self.fit_intercept, "class_weight": class_weight,
            "max_iter": self.max_iter, "tol": self.tol, "solver": self.solver,
            "standardize": self.standardize, "test_size": self.test_size,
            "stratify": self.stratify, "random_seed": self.random_seed,
        })
    }
}

/// The raw option values of a request (absent or `null` = default).
#[derive(Debug, Default)]
pub struct RawParams<'a> {
    pub penalty: Option<&'a Value>,
    pub c: Option<&'a Value>,
    pub l1_ratio: Option<&'a Value>,
    pub fit_intercept: Option<&'a Value>,
    pub class_weight: Option<&'a Value>,
    pub max_iter: Option<&'a Value>,
    pub tol: Option<&'a Value>,
    pub solver: Option<&'a Value>,
    pub standardize: Option<&'a Value>,
    pub test_size: Option<&'a Value>,
    pub stratify: Option<&'a Value>,
    pub random_seed: Option<&'a Value>,
}

impl RawParams<'_> {
    /// Checks every option, pushing one error per bad one; `None` when any is bad.
    pub fn parse(&self, errors: &mut Vec<FieldError>) -> Option<Params> {
        let before = errors.len();
        let penalty = match self.penalty {
            Some(Value::Null) => Some(Penalty::None),
            other => choice(other, "penalty", Penalty::L2, errors),
        };
        let solver = choice(self.solver, "solver", Solver::Lbfgs, errors);
        let c = number(self.c, "C", 1.0, errors, |v| v > 0.0, "must be > 0");
        let tol = number(
            self.tol,
            "tol",
            DEFAULT_TOL,
            errors,
            |v| v > 0.0,
            "must be > 0",
        );
        let l1_ratio = self.l1_ratio.map(|v| {
            let ok = |x: f64| (0.0..=1.0).contains(&x);
            number(
                Some(v),
                "l1_ratio",
                0.0,
                errors,
                ok,
                "must be between 0 and 1",
            )
        });
        let test_size = self.test_size.map(|v| {
            let ok = |x: f64| x > 0.0 && x < 1.0;
            number(
                Some(v),
                "test_size",
                0.25,
                errors,
                ok,
                "must be > 0 and < 1 (a fraction of the rows)",
            )
        });
        let max_iter = integer(self.max_iter, "max_iter", DEFAULT_MAX_ITER, errors);
        if !(1..=MAX_ITER_LIMIT).contains(&max_iter) {
            let message = format!("must be between 1 and {MAX_ITER_LIMIT}");
            errors.push(FieldError::new("max_iter", "range", message));
        }
        let random_seed = integer(self.random_seed, "random_seed", 0, errors);
        let fit_intercept = boolean(self.fit_intercept, "fit_intercept", true, errors);
        let standardize = boolean(self.standardize, "standardize", false, errors);
        let stratify = boolean(self.stratify, "stratify", false, errors);
        let class_weight = self.class_weight.and_then(|v| class_weight(v, errors));

        if let (Some(p), Some(s)) = (penalty, solver) {
            if let Some(message) = incompatible(p, s) {
                errors.push(FieldError::new("solver", "incompatible", message));
            }
        }
        if penalty == Some(Penalty::Elasticnet) && self.l1_ratio.is_none() {
            let message = "is required when penalty is `elasticnet` (0 = L2 … 1 = L1)";
            errors.push(FieldError::new("l1_ratio", "missing", message));
        }
        if stratify && self.test_size.is_none() {
            let message = "needs `test_size` (there is no split to stratify)";
            errors.push(FieldError::new("stratify", "incompatible", message));
        }
        if errors.len() > before {
            return None;
        }
        Some(Params {
            penalty: penalty?,
            c,
            l1_ratio,
            fit_intercept,
            class_weight,
            max_iter,
            tol,
            solver: solver?,
            standardize,
            test_size,
            stratify,
            random_seed,
        })
    }
}

/// scikit-learn's refusals (1.9), as messages; multiclass + liblinear is checked once the
/// classes are known ([`liblinear_multiclass`]).
fn incompatible(penalty: Penalty, solver: Solver) -> Option<String> {
    let name = serde_json::to_value(solver).ok()?;
    let name = name.as_str().unwrap_or("?");
    match (solver, penalty) {
        (Solver::Saga, _) => None,
        (Solver::Liblinear, Penalty::L1 | Penalty::L2) => None,
        (Solver::Liblinear, Penalty::None) => Some(
            "solver `liblinear` does not support penalty `none` (use `lbfgs`, `newton-cg`, \
             `newton-cholesky`, `sag` or `saga`)"
                .to_owned(),
        ),
        (_, Penalty::Elasticnet) => Some(format!(
            "only solver `saga` supports penalty `elasticnet`, got solver `{name}`"
        )),
        (_, Penalty::L1) => Some(format!(
            "solver `{name}` supports only penalties `l2` or `none`, got `l1` \
             (use `saga` or `liblinear` for L1)"
        )),
        _ => None,
    }
}

/// scikit-learn refuses liblinear for three or more classes (multi-label is binary per label).
pub fn liblinear_multiclass(params: &Params, classes: usize) -> Option<FieldError> {
    (params.solver == Solver::Liblinear && classes > 2).then(|| {
        let message = format!(
            "solver `liblinear` does not support multiclass classification ({classes} classes); \
             use `lbfgs`, `newton-cg`, `newton-cholesky`, `sag` or `saga`"
        );
        FieldError::new("solver", "incompatible", message)
    })
}

fn choice<T: serde::de::DeserializeOwned>(
    value: Option<&Value>,
    field: &str,
    default: T,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let Some(value) = value else {
        return Some(default);
    };
    match serde_json::from_value::<T>(value.clone()) {
        Ok(v) => Some(v),
        Err(_) => {
            let allowed = match field {
                "penalty" => "`l2`, `l1`, `elasticnet`, `none`",
                _ => "`lbfgs`, `liblinear`, `newton-cg`, `newton-cholesky`, `sag`, `saga`",
            };
            let message = format!("{value} is not one of {allowed}");
            errors.push(FieldError::new(field, "category", message));
            None
        }
    }
}

fn number(
    value: Option<&Value>,
    field: &str,
    default: f64,
    errors: &mut Vec<FieldError>,
    ok: impl Fn(f64) -> bool,
    rule: &str,
) -> f64 {
    let Some(value) = value else {
        return default;
    };
    match value.as_f64() {
        Some(v) if v.is_finite() && ok(v) => v,
        Some(_) => {
            errors.push(FieldError::new(field, "range", format!("{value} {rule}")));
            default
        }
        None => {
            errors.push(FieldError::new(
                field,
                "type",
                format!("{value} is not a number"),
            ));
            default
        }
    }
}

fn integer(value: Option<&Value>, field: &str, default: u64, errors: &mut Vec<FieldError>) -> u64 {
    let Some(value) = value else {
        return default;
    };
    match value.as_u64() {
        Some(v) => v,
        None => {
            let message = format!("{value} is not a non-negative integer");
            errors.push(FieldError::new(field, "type", message));
            default
        }
    }
}

fn boolean(
    value: Option<&Value>,
    field: &str,
    default: bool,
    errors: &mut Vec<FieldError>,
) -> bool {
    let Some(value) = value else {
        return default;
    };
    match value.as_bool() {
        Some(v) => v,
        None => {
            let message = format!("{value} is not `true` or `false`");
            errors.push(FieldError::new(field, "type", message));
            default
        }
    }
}

fn class_weight(value: &Value, errors: &mut Vec<FieldError>) -> Option<ClassWeight> {
    match value {
        Value::String(s) if s == "balanced" => Some(ClassWeight::Balanced),
        Value::Object(map) => {
            let mut weights = BTreeMap::new();
            for (label, weight) in map {
                match weight.as_f64() {
                    Some(w) if w.is_finite() && w > 0.0 => {
                        weights.insert(label.clone(), w);
                    }
                    _ => {
                        let field = format!("class_weight.{label}");
                        let message = format!("{weight} is not a number > 0");
                        errors.push(FieldError::new(field, "range", message));
                    }
                }
            }
            Some(ClassWeight::Map(weights))
        }
        other => {
            let message =
                format!("{other} is neither `\"balanced\"` nor an object of class label → weight");
            errors.push(FieldError::new("class_weight", "type", message));
            None
        }
    }
}
