//! The training rows of a request, in any of its three shapes (the Celery training API's `columns`/`features`/
//! `classes`, JSON `records`, `csv` text), turned into typed feature columns and a target.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::FieldError;

/// `--max-inline-training-cells`' default: most rows × features sent inside one JSON body
/// (larger data goes through `POST /datasets`).
pub const DEFAULT_MAX_INLINE_CELLS: usize = 1_000_000;
/// Most errors reported for one request.
pub const MAX_ERRORS: usize = 100;

/// One feature's values, one per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureValues {
    Numeric(Vec<f64>),
    /// String values: one-hot encoded inside the graph.
    Categorical(Vec<String>),
}

impl FeatureValues {
    pub fn len(&self) -> usize {
        match self {
            Self::Numeric(v) => v.len(),
            Self::Categorical(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A class label as the client sent it: ints stay ints, strings stay strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassValue {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl ClassValue {
    pub fn label(&self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Str(s) => s.clone(),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(i) => Value::from(*i),
            Self::Str(s) => Value::String(s.clone()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Str(_) => "a string",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One label per row: binary or multiclass.
    Classes {
        name: Option<String>,
        values: Vec<ClassValue>,
    },
    /// Several 0/1 targets: one column of flags per label name.
    MultiLabel {
        names: Vec<String>,
        values: Vec<Vec<bool>>,
    },
}

/// Parsed rows: feature names and columns in the same order, and the target.
pub struct Data {
    pub features: Vec<String>,
    pub columns: Vec<FeatureValues>,
    pub target: Target,
}

pub fn push(errors: &mut Vec<FieldError>, error: FieldError) {
    if errors.len() < MAX_ERRORS {
        errors.push(error);
    }
}

pub(super) fn too_large(field: &str, rows: usize, features: usize, limit: usize) -> FieldError {
    let message = format!(
        "{rows} rows × {features} features is more than the {limit}-value limit of a training \
         body (--max-inline-training-cells, ML_API_MAX_INLINE_TRAINING_CELLS); upload larger \
         data with POST /datasets and train with `dataset_id`"
    );
    FieldError::new(field, "too_large", message)
}

fn class_value(value: &Value) -> Option<ClassValue> {
    match value {
        Value::Bool(b) => Some(ClassValue::Bool(*b)),
        Value::String(s) => Some(ClassValue::Str(s.clone())),
        Value::Number(n) => n.as_i64().map(ClassValue::Int).or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(ClassValue::Int(f as i64))
        }),
        _ => None,
    }
}

/// Checks that every label has the first label's type, naming each one that does not.
pub(super) fn classes(
    values: &[&Value],
    field: impl Fn(usize) -> String,
    errors: &mut Vec<FieldError>,
) -> Vec<ClassValue> {
    let mut out = Vec::with_capacity(values.len());
    let mut first: Option<ClassValue> = None;
    for (i, value) in values.iter().enumerate() {
        let Some(class) = class_value(value) else {
            let message =
                format!("{value} is not a class label (an integer, a string or a boolean)");
            push(errors, FieldError::new(field(i), "type", message));
            continue;
        };
        match &first {
            Some(f) if std::mem::discriminant(f) != std::mem::discriminant(&class) => {
                let message = format!(
                    "is {} but the first label is {}; labels must all have one type",
                    class.kind(),
                    f.kind()
                );
                push(errors, FieldError::new(field(i), "type", message));
            }
            Some(_) => {}
            None => first = Some(class.clone()),
        }
        out.push(class);
    }
    out
}

pub(super) fn feature_names(names: &[String], field: &str, errors: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        let problem = if name.is_empty() {
            Some("a feature name may not be empty".to_owned())
        } else if name == "label" || name == "probabilities" || name.starts_with("ml_api.") {
            Some(format!("`{name}` is reserved for the model's outputs"))
        } else if !seen.insert(name) {
            Some(format!("`{name}` appears twice"))
        } else {
            None
        };
        if let Some(message) = problem {
            push(
                errors,
                FieldError::new(format!("{field}[{i}]"), "invalid", message),
            );
        }
    }
}

/// `target`: one column name, or a list of several (multi-label).
pub fn target_names(
    target: Option<&Value>,
    errors: &mut Vec<FieldError>,
) -> Option<(Vec<String>, bool)> {
    let bad = || {
        FieldError::new(
            "target",
            "type",
            "must name the target column, or list several target columns (multi-label)",
        )
    };
    match target {
        None => {
            push(
                errors,
                FieldError::new(
                    "target",
                    "missing",
                    "name the column that holds the class labels",
                ),
            );
            None
        }
        Some(Value::String(name)) => Some((vec![name.clone()], false)),
        Some(Value::Array(items)) if !items.is_empty() => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect();
            let names = names.filter(|n| n.iter().collect::<BTreeSet<_>>().len() == n.len());
            match names {
                Some(names) => Some((names, true)),
                None => {
                    push(
                        errors,
                        FieldError::new("target", "type", "must list distinct column names"),
                    );
                    None
                }
            }
        }
        Some(_) => {
            push(errors, bad());
            None
        }
    }
}

/// A multi-label flag: 0/1 or true/false.
fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "0" | "false" => Some(false),
            "1" | "true" => Some(true),
            _ => None,
        },
        _ => None,
    }
}

/// Builds the target from per-row values of the target column(s).
pub(super) fn target(
    names: Vec<String>,
    multi: bool,
    cells: &[Vec<Value>],
    field: impl Fn(usize, &str) -> String,
    errors: &mut Vec<FieldError>,
) -> Target {
    if multi {
        let values = names
            .iter()
            .zip(cells)
            .map(|(name, column)| {
                column
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        flag(v).unwrap_or_else(|| {
                            let message =
                                format!("{v} is not a multi-label flag (0/1 or true/false)");
                            push(errors, FieldError::new(field(i, name), "type", message));
                            false
                        })
                    })
                    .collect()
            })
            .collect();
        return Target::MultiLabel { names, values };
    }
    let name = names.into_iter().next().unwrap_or_default();
    let column: Vec<&Value> = cells
        .first()
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let values = classes(&column, |i| field(i, &name), errors);
    Target::Classes {
        name: Some(name),
        values,
    }
}
