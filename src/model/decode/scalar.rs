//! One element of a typed tensor (the Open Inference Protocol's typed and raw tensors) into a
//! model's column, with the rules and messages a JSON value gets: the same element sent as a
//! JSON tensor and as a typed one is accepted or refused alike, for the same reason.

use serde_json::Value;

use super::{check_range, check_text, expected_but_got, push_value, Problem};
use crate::model::{
    batch::Column,
    schema::{ElementType, Field},
};

/// A tensor element, as the JSON value it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// JSON has no NaN or infinity: a non-finite float stands for `null`.
    Float(f64),
    /// Text (invalid UTF-8 is replaced, as the binary-data extension's decoder does).
    Bytes(&'a [u8]),
}

impl Scalar<'_> {
    /// The JSON value this element stands for.
    pub fn to_json(self) -> Value {
        match self {
            Self::Bool(b) => Value::Bool(b),
            Self::Int(v) => Value::from(v),
            Self::UInt(v) => Value::from(v),
            Self::Float(v) => serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
            Self::Bytes(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Bool(_) => "a boolean",
            Self::Int(_) | Self::UInt(_) | Self::Float(_) => "a number",
            Self::Bytes(_) => "a string",
        }
    }

    /// A number, or text holding one (as JSON strings are read).
    fn number(self) -> Option<f64> {
        match self {
            Self::Int(v) => Some(v as f64),
            Self::UInt(v) => Some(v as f64),
            Self::Float(v) => Some(v),
            Self::Bytes(bytes) => std::str::from_utf8(bytes)
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite()),
            Self::Bool(_) => None,
        }
    }
}

/// Checks `value` against `field` and appends it to `column` (the field's).
pub fn push_scalar(field: &Field, value: Scalar<'_>, column: &mut Column) -> Result<(), Problem> {
    if matches!(value, Scalar::Float(v) if !v.is_finite()) {
        return push_value(field, Some(&Value::Null), column);
    }
    match column {
        Column::String(values) => {
            let Scalar::Bytes(bytes) = value else {
                return Err(expected_but_got(ElementType::String, value.kind()));
            };
            let text = String::from_utf8_lossy(bytes);
            check_text(field, &text)?;
            values.push(text.into_owned());
        }
        Column::Bool(values) => values.push(match value {
            Scalar::Bool(b) => b,
            Scalar::Int(0) | Scalar::UInt(0) => false,
            Scalar::Int(1) | Scalar::UInt(1) => true,
            other => return Err(expected_but_got(ElementType::Bool, other.kind())),
        }),
        Column::Float32(values) => values.push(float(field, value)? as f32),
        Column::Float64(values) => values.push(float(field, value)?),
        Column::Int64(values) => values.push(int(field, value)?),
        Column::Int32(values) => {
            let v = int(field, value)?;
            let v = i32::try_from(v)
                .map_err(|_| ("range", format!("{v} does not fit a 32-bit integer")))?;
            values.push(v);
        }
    }
    Ok(())
}

fn float(field: &Field, value: Scalar<'_>) -> Result<f64, Problem> {
    let v = value
        .number()
        .ok_or_else(|| expected_but_got(field.element, value.kind()))?;
    check_range(field, v)?;
    Ok(v)
}

fn int(field: &Field, value: Scalar<'_>) -> Result<i64, Problem> {
    let exact = match value {
        Scalar::Int(v) => Some(v),
        Scalar::UInt(v) => i64::try_from(v).ok(),
        _ => None,
    };
    if let Some(v) = exact {
        check_range(field, v as f64)?;
        return Ok(v);
    }
    let v = value
        .number()
        .ok_or_else(|| expected_but_got(field.element, value.kind()))?;
    if v.fract() != 0.0 || v.abs() > 9.007_199_254_740_992e15 {
        return Err(("type", format!("expected an integer, got {v}")));
    }
    check_range(field, v)?;
    Ok(v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(element: ElementType, nullable: bool) -> Field {
        Field {
            name: "x".to_owned(),
            element,
            description: None,
            min: Some(0.0),
            max: Some(100.0),
            nullable,
            categories: vec!["ES".to_owned()],
            allowed: (element == ElementType::String)
                .then(|| std::iter::once("ES".to_owned()).collect()),
        }
    }

    /// Every element decodes as its JSON value does: same column, or same problem.
    #[test]
    fn a_scalar_decodes_as_the_json_value_it_stands_for() {
        let scalars = [
            Scalar::Bool(true),
            Scalar::Int(1),
            Scalar::Int(56),
            Scalar::Int(-3),
            Scalar::Int(500),
            Scalar::UInt(u64::MAX),
            Scalar::Float(56.0),
            Scalar::Float(56.5),
            Scalar::Float(f64::NAN),
            Scalar::Float(f64::INFINITY),
            Scalar::Bytes(b"ES"),
            Scalar::Bytes(b"FR"),
            Scalar::Bytes(b" 56"),
            Scalar::Bytes(b"a\0b"),
        ];
        let elements = [
            ElementType::String,
            ElementType::Float32,
            ElementType::Float64,
            ElementType::Int64,
            ElementType::Int32,
            ElementType::Bool,
        ];
        for element in elements {
            for nullable in [false, element.is_float()] {
                let field = field(element, nullable);
                for scalar in scalars {
                    let mut typed = Column::with_capacity(element, 1);
                    let mut json = Column::with_capacity(element, 1);
                    let typed_result = push_scalar(&field, scalar, &mut typed);
                    let json_result = push_value(&field, Some(&scalar.to_json()), &mut json);
                    assert_eq!(typed_result, json_result, "{element:?} {scalar:?}");
                    assert_eq!(format!("{typed:?}"), format!("{json:?}"), "{scalar:?}");
                }
            }
        }
    }
}
