//! Turns request JSON into a [`FeatureBatch`], checking every field against the schema and
//! collecting every problem (not just the first) as a [`FieldError`].
//!
//! Lenient where clients of the Flask prediction API depend on it (numbers sent as strings such as the
//! Kaggle CSV's `" 56"`, `56.0` for an integer, extra fields ignored), strict everywhere else.

use serde_json::{Map, Value};

use super::{
    batch::{Column, FeatureBatch},
    schema::{ElementType, Field, ModelSchema},
};
use crate::model::FieldError;

/// At most this many field errors are listed in one response.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// The records of a request: one object, or an array of objects (a batch).
pub struct Records<'a> {
    pub items: Vec<&'a Map<String, Value>>,
    /// Whether field paths carry a `[i].` prefix.
    pub is_batch: bool,
}

/// Splits a request body into records, or says why it cannot.
pub fn records(body: &Value, max_records: usize) -> Result<Records<'_>, Vec<FieldError>> {
    match body {
        Value::Object(record) => Ok(Records {
            items: vec![record],
            is_batch: false,
        }),
        Value::Array(items) if items.is_empty() => Err(vec![FieldError::new(
            "body",
            "empty",
            "a batch must hold at least one record",
        )]),
        Value::Array(items) if items.len() > max_records => Err(vec![FieldError::new(
            "body",
            "too_many_records",
            format!(
                "a batch holds at most {max_records} records, got {}",
                items.len()
            ),
        )]),
        Value::Array(items) => {
            let mut errors = Vec::new();
            let records = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::Object(record) => Some(record),
                    other => {
                        errors.push(FieldError::in_record(
                            Some(i),
                            None,
                            "type",
                            format!("expected a record (JSON object), got {}", kind(other)),
                        ));
                        None
                    }
                })
                .collect();
            if errors.is_empty() {
                Ok(Records {
                    items: records,
                    is_batch: true,
                })
            } else {
                Err(errors)
            }
        }
        other => Err(vec![FieldError::new(
            "body",
            "type",
            format!(
                "expected a record (JSON object) or an array of records, got {}",
                kind(other)
            ),
        )]),
    }
}

/// Validates and converts the records into columns in graph-input order.
pub fn decode(
    schema: &ModelSchema,
    records: &Records<'_>,
) -> Result<FeatureBatch, Vec<FieldError>> {
    let rows = records.items.len();
    let mut errors = Vec::new();
    let mut columns: Vec<Column> = schema
        .fields
        .iter()
        .map(|field| Column::with_capacity(field.element, rows))
        .collect();
    for (row, record) in records.items.iter().enumerate() {
        for (field, column) in schema.fields.iter().zip(columns.iter_mut()) {
            if let Err(error) = push_value(field, record.get(&field.name), column) {
                if errors.len() < MAX_REPORTED_ERRORS {
                    let row = records.is_batch.then_some(row);
                    errors.push(FieldError::in_record(
                        row,
                        Some(&field.name),
                        error.0,
                        error.1,
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(FeatureBatch { rows, columns })
    } else {
        Err(errors)
    }
}

/// Why one value cannot go into its column: a reason (`type`, `range`, ...) and a message.
pub type Problem = (&'static str, String);

pub mod scalar;

/// Checks one JSON value against `field` and appends it to `column` (the field's), as the
/// value of a record's field.
pub fn push_json(field: &Field, value: &Value, column: &mut Column) -> Result<(), Problem> {
    push_value(field, Some(value), column)
}

fn push_value(field: &Field, value: Option<&Value>, column: &mut Column) -> Result<(), Problem> {
    let value = match value {
        None | Some(Value::Null) if field.nullable => None,
        None => return Err(("missing", "field is required".to_owned())),
        Some(Value::Null) => return Err(("null", "must not be null".to_owned())),
        Some(value) => Some(value),
    };
    match column {
        Column::String(values) => values.push(string_value(field, value)?),
        Column::Bool(values) => values.push(bool_value(value)?),
        Column::Float32(values) => values.push(float_value(field, value)? as f32),
        Column::Float64(values) => values.push(float_value(field, value)?),
        Column::Int64(values) => values.push(int_value(field, value)?),
        Column::Int32(values) => {
            let v = int_value(field, value)?;
            let v = i32::try_from(v)
                .map_err(|_| ("range", format!("{v} does not fit a 32-bit integer")))?;
            values.push(v);
        }
    }
    Ok(())
}

fn string_value(field: &Field, value: Option<&Value>) -> Result<String, Problem> {
    let Some(Value::String(text)) = value else {
        return Err(type_error(ElementType::String, value));
    };
    check_text(field, text)?;
    Ok(text.clone())
}

/// A string's own rules: no NUL, and a known category when unknown ones are rejected.
fn check_text(field: &Field, text: &str) -> Result<(), Problem> {
    if text.contains('\0') {
        // ONNX Runtime strings are C strings.
        return Err(("type", "must not contain NUL characters".to_owned()));
    }
    if let Some(allowed) = &field.allowed {
        if !allowed.contains(text) {
            return Err((
                "category",
                format!(
                    "`{text}` is not a known category; expected one of {}",
                    list(&field.categories)
                ),
            ));
        }
    }
    Ok(())
}

fn bool_value(value: Option<&Value>) -> Result<bool, Problem> {
    match value {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        other => Err(type_error(ElementType::Bool, other)),
    }
}

/// A number, or a string holding one (the Kaggle CSV pads numbers with spaces).
fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
        _ => None,
    }
}

fn float_value(field: &Field, value: Option<&Value>) -> Result<f64, Problem> {
    let Some(value) = value else {
        return Ok(f64::NAN);
    };
    let v = number(Some(value)).ok_or_else(|| type_error(field.element, Some(value)))?;
    check_range(field, v)?;
    Ok(v)
}

fn int_value(field: &Field, value: Option<&Value>) -> Result<i64, Problem> {
    if let Some(Value::Number(n)) = value {
        if let Some(v) = n.as_i64() {
            check_range(field, v as f64)?;
            return Ok(v);
        }
    }
    let v = number(value).ok_or_else(|| type_error(field.element, value))?;
    if v.fract() != 0.0 || v.abs() > 9.007_199_254_740_992e15 {
        return Err(("type", format!("expected an integer, got {v}")));
    }
    check_range(field, v)?;
    Ok(v as i64)
}

fn check_range(field: &Field, v: f64) -> Result<(), Problem> {
    let below = field.min.is_some_and(|min| v < min);
    let above = field.max.is_some_and(|max| v > max);
    if below || above {
        let bound = match (field.min, field.max) {
            (Some(min), Some(max)) => format!("between {min} and {max}"),
            (Some(min), None) => format!("at least {min}"),
            (None, Some(max)) => format!("at most {max}"),
            (None, None) => String::new(),
        };
        return Err(("range", format!("{v} is out of range: must be {bound}")));
    }
    Ok(())
}

fn type_error(expected: ElementType, got: Option<&Value>) -> Problem {
    expected_but_got(expected, got.map_or("nothing", kind))
}

fn expected_but_got(expected: ElementType, got: &str) -> Problem {
    (
        "type",
        format!("expected {}, got {got}", article(expected.json_type())),
    )
}

fn article(json_type: &str) -> String {
    match json_type {
        "integer" => "an integer".to_owned(),
        other => format!("a {other}"),
    }
}

/// How a JSON value is named in error messages ("an array", "a number"...).
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn list(categories: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut text = categories
        .iter()
        .take(SHOWN)
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if categories.len() > SHOWN {
        text.push_str(&format!(" and {} more", categories.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests;
