//! The Celery training API's `columns`/`features`/`classes` shape and the JSON `records` shape.

use serde_json::{Map, Value};

use super::data::{
    classes, feature_names, push, target, target_names, too_large, Data, FeatureValues, Target,
};
use crate::model::FieldError;

/// The Celery training API's shape: `columns`, `features` (rows of numbers) and `classes`.
pub fn seed(
    columns: &Value,
    features: &Value,
    classes_value: &Value,
    max_cells: usize,
    errors: &mut Vec<FieldError>,
) -> Option<Data> {
    let before = errors.len();
    let names: Vec<String> = match columns.as_array() {
        Some(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(s) => Some(s.to_owned()),
                None => {
                    push(
                        errors,
                        FieldError::new(
                            format!("columns[{i}]"),
                            "type",
                            format!("{v} is not a string"),
                        ),
                    );
                    None
                }
            })
            .collect(),
        _ => {
            push(
                errors,
                FieldError::new(
                    "columns",
                    "type",
                    "must be a non-empty list of feature names",
                ),
            );
            Vec::new()
        }
    };
    feature_names(&names, "columns", errors);
    let Some(rows) = features.as_array().filter(|rows| !rows.is_empty()) else {
        push(
            errors,
            FieldError::new(
                "features",
                "type",
                "must be a non-empty list of rows (lists of numbers)",
            ),
        );
        return None;
    };
    let Some(labels) = classes_value.as_array() else {
        push(
            errors,
            FieldError::new(
                "classes",
                "type",
                "must be a list of class labels, one per row",
            ),
        );
        return None;
    };
    if labels.len() != rows.len() {
        let message = format!(
            "has {} labels for {} rows of features",
            labels.len(),
            rows.len()
        );
        push(errors, FieldError::new("classes", "shape", message));
    }
    let width = names.len();
    if rows.len().saturating_mul(width.max(1)) > max_cells {
        push(errors, too_large("features", rows.len(), width, max_cells));
        return None;
    }
    let mut columns = vec![Vec::with_capacity(rows.len()); width];
    for (i, row) in rows.iter().enumerate() {
        match row.as_array() {
            Some(values) if values.len() == width => {
                for (j, (value, column)) in values.iter().zip(&mut columns).enumerate() {
                    match value.as_f64().filter(|v| v.is_finite()) {
                        Some(v) => column.push(v),
                        None => {
                            let message = format!("{value} is not a finite number");
                            push(
                                errors,
                                FieldError::new(format!("features[{i}][{j}]"), "type", message),
                            );
                        }
                    }
                }
            }
            _ => {
                let message = format!("must be a list of {width} numbers, one per column");
                push(
                    errors,
                    FieldError::new(format!("features[{i}]"), "shape", message),
                );
            }
        }
    }
    let labels: Vec<&Value> = labels.iter().collect();
    let values = classes(&labels, |i| format!("classes[{i}]"), errors);
    (errors.len() == before).then(|| Data {
        features: names,
        columns: columns.into_iter().map(FeatureValues::Numeric).collect(),
        target: Target::Classes { name: None, values },
    })
}

/// JSON records with the target column(s) named.
pub fn records(
    records: &Value,
    target_value: Option<&Value>,
    max_cells: usize,
    errors: &mut Vec<FieldError>,
) -> Option<Data> {
    let before = errors.len();
    let targets = target_names(target_value, errors);
    let Some(rows) = records.as_array().filter(|rows| !rows.is_empty()) else {
        push(
            errors,
            FieldError::new("records", "type", "must be a non-empty list of objects"),
        );
        return None;
    };
    let Some(first) = rows.first().and_then(Value::as_object) else {
        push(
            errors,
            FieldError::new("records[0]", "type", "must be an object"),
        );
        return None;
    };
    let (targets, multi) = targets?;
    for name in &targets {
        if !first.contains_key(name) {
            let message = format!("`{name}` is not a field of records[0]");
            push(errors, FieldError::new("target", "missing", message));
        }
    }
    let features: Vec<String> = first
        .keys()
        .filter(|k| !targets.contains(k))
        .cloned()
        .collect();
    if features.is_empty() {
        push(
            errors,
            FieldError::new(
                "records[0]",
                "shape",
                "has no feature fields besides the target",
            ),
        );
    }
    feature_names(&features, "features", errors);
    if rows.len().saturating_mul(features.len().max(1)) > max_cells {
        push(
            errors,
            too_large("records", rows.len(), features.len(), max_cells),
        );
    }
    if errors.len() > before {
        return None;
    }
    let objects: Vec<&Map<String, Value>> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let object = row.as_object();
            if object.is_none() {
                push(
                    errors,
                    FieldError::new(format!("records[{i}]"), "type", "must be an object"),
                );
            }
            object
        })
        .collect();
    for (i, object) in objects.iter().enumerate() {
        for key in object.keys().filter(|k| !first.contains_key(*k)) {
            let message = "is not a field of records[0]; every record must have the same fields";
            push(
                errors,
                FieldError::new(format!("records[{i}].{key}"), "unknown", message),
            );
        }
    }
    let cell = |i: usize, name: &str| format!("records[{i}].{name}");
    let column_of = |name: &str, errors: &mut Vec<FieldError>| -> Vec<Value> {
        objects
            .iter()
            .enumerate()
            .map(|(i, object)| {
                object.get(name).cloned().unwrap_or_else(|| {
                    push(
                        errors,
                        FieldError::new(cell(i, name), "missing", "field is required"),
                    );
                    Value::Null
                })
            })
            .collect()
    };
    let mut columns = Vec::with_capacity(features.len());
    for name in &features {
        let values = column_of(name, errors);
        columns.push(json_column(name, &values, errors));
    }
    let target_cells: Vec<Vec<Value>> =
        targets.iter().map(|name| column_of(name, errors)).collect();
    let target = target(targets, multi, &target_cells, cell, errors);
    (errors.len() == before).then_some(Data {
        features,
        columns,
        target,
    })
}

/// A records column: numbers → numeric, strings → categorical, as records[0] says.
fn json_column(name: &str, values: &[Value], errors: &mut Vec<FieldError>) -> FeatureValues {
    let numeric = matches!(values.first(), Some(Value::Number(_)));
    if !numeric && !matches!(values.first(), Some(Value::String(_))) {
        let message = "a feature must be a number or a string (categorical)";
        push(
            errors,
            FieldError::new(format!("records[0].{name}"), "type", message),
        );
        return FeatureValues::Numeric(Vec::new());
    }
    let mismatch = |i: usize, v: &Value, errors: &mut Vec<FieldError>| {
        let want = if numeric {
            "a finite number"
        } else {
            "a string"
        };
        let message = format!("{v} is not {want}, as in records[0]");
        push(
            errors,
            FieldError::new(format!("records[{i}].{name}"), "type", message),
        );
    };
    if numeric {
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match v.as_f64().filter(|x| x.is_finite()) {
                Some(x) => out.push(x),
                None => mismatch(i, v, errors),
            }
        }
        FeatureValues::Numeric(out)
    } else {
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match v.as_str() {
                Some(s) => out.push(s.to_owned()),
                None => mismatch(i, v, errors),
            }
        }
        FeatureValues::Categorical(out)
    }
}
