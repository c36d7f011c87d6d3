//! Named, typed tensors (the Open Inference Protocol's inputs, as gRPC carries them and as V2
//! over REST reads them: [`json`]) straight into a model's typed columns, with no JSON in
//! between. An unknown input, a wrong datatype or shape is [`TensorError::Malformed`]; a value
//! the schema refuses is a [`FieldError`] (`[row].feature`) in [`TensorError::Invalid`], with
//! the messages a record of the same values gets from `/predict`'s decoder.

pub mod json;

use std::borrow::Cow;

use serde_json::{Map, Value};
use smallvec::SmallVec;

use self::json::{JsonData, JsonScalar};
use crate::model::{
    decode::{
        push_json,
        scalar::{push_scalar, Scalar},
        Problem, MAX_REPORTED_ERRORS,
    },
    schema::Field,
    Column, ElementType, FeatureBatch, FieldError, ModelSchema,
};

/// A tensor's elements: one typed vector, or raw little-endian bytes of its datatype
/// (BYTES: each element a 4-byte little-endian length, then its bytes).
#[derive(Debug, Clone, Copy)]
pub enum Elements<'a> {
    Bool(&'a [bool]),
    Int32(&'a [i32]),
    Int64(&'a [i64]),
    UInt32(&'a [u32]),
    UInt64(&'a [u64]),
    Fp32(&'a [f32]),
    Fp64(&'a [f64]),
    Bytes(&'a [bytes::Bytes]),
    /// JSON strings.
    Text(&'a [Cow<'a, str>]),
    /// JSON elements of several types (nulls, objects).
    Json(&'a [JsonScalar<'a>]),
    Raw(&'a [u8]),
    /// Raw elements that could not be cut from the request: refused once the tensor's name,
    /// datatype and shape are checked.
    Unreadable(Unreadable),
}

/// Why the binary-data extension's bytes of a tensor could not be cut from the body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unreadable {
    /// `binary_data_size` is not an unsigned integer.
    SizeNotANumber,
    /// The body ends before `binary_data_size` bytes.
    Truncated,
}

impl JsonData<'_> {
    /// The elements, borrowed.
    pub fn elements(&self) -> Elements<'_> {
        match self {
            Self::Bool(values) => Elements::Bool(values),
            Self::Int(values) => Elements::Int64(values),
            Self::Float(values) => Elements::Fp64(values),
            Self::Text(values) => Elements::Text(values),
            Self::Mixed(values) => Elements::Json(values),
            Self::Absent => Elements::Json(&json::ABSENT),
        }
    }
}

/// One input tensor of a request.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    pub name: &'a str,
    pub datatype: &'a str,
    pub shape: &'a [i64],
    pub elements: Elements<'a>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// The request's structure is wrong (an unknown input, datatype, shape or size).
    #[error("{0}")]
    Malformed(String),
    /// Values the model's schema refuses.
    #[error("{} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
}

/// The V2 datatype of a graph input.
pub fn datatype(element: ElementType) -> &'static str {
    match element {
        ElementType::String => "BYTES",
        ElementType::Float32 => "FP32",
        ElementType::Float64 => "FP64",
        ElementType::Int64 => "INT64",
        ElementType::Int32 => "INT32",
        ElementType::Bool => "BOOL",
    }
}

/// A tensor's elements, checked for count, readable one by one.
enum View<'a> {
    Typed(Elements<'a>),
    RawFixed { kind: Fixed, bytes: &'a [u8] },
    RawBytes(SmallVec<[&'a [u8]; 1]>),
}

/// One element as the decoder reads it.
enum Item<'a> {
    Scalar(Scalar<'a>),
    /// A JSON object (no column takes one).
    Json(&'a Value),
}

impl Item<'_> {
    fn push(self, field: &Field, column: &mut Column) -> Result<(), Problem> {
        match self {
            Self::Scalar(value) => push_scalar(field, value, column),
            Self::Json(value) => push_json(field, value, column),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Scalar(value) => value.to_json(),
            Self::Json(value) => (*value).clone(),
        }
    }
}

impl View<'_> {
    fn get(&self, i: usize) -> Option<Item<'_>> {
        let scalar = match self {
            Self::Typed(Elements::Bool(v)) => Scalar::Bool(*v.get(i)?),
            Self::Typed(Elements::Int32(v)) => Scalar::Int(i64::from(*v.get(i)?)),
            Self::Typed(Elements::Int64(v)) => Scalar::Int(*v.get(i)?),
            Self::Typed(Elements::UInt32(v)) => Scalar::UInt(u64::from(*v.get(i)?)),
            Self::Typed(Elements::UInt64(v)) => Scalar::UInt(*v.get(i)?),
            Self::Typed(Elements::Fp32(v)) => Scalar::Float(f64::from(*v.get(i)?)),
            Self::Typed(Elements::Fp64(v)) => Scalar::Float(*v.get(i)?),
            Self::Typed(Elements::Bytes(v)) => Scalar::Bytes(v.get(i)?),
            Self::Typed(Elements::Text(v)) => Scalar::Bytes(v.get(i)?.as_bytes()),
            Self::Typed(Elements::Json(v)) => match v.get(i)? {
                // A non-finite float stands for null (see `Scalar::Float`).
                JsonScalar::Null => Scalar::Float(f64::NAN),
                JsonScalar::Bool(b) => Scalar::Bool(*b),
                JsonScalar::Int(v) => Scalar::Int(*v),
                JsonScalar::UInt(v) => Scalar::UInt(*v),
                JsonScalar::Float(v) => Scalar::Float(*v),
                JsonScalar::Text(text) => Scalar::Bytes(text.as_bytes()),
                JsonScalar::Object(object) => return Some(Item::Json(object)),
            },
            Self::Typed(Elements::Raw(_) | Elements::Unreadable(_)) => return None,
            Self::RawFixed { kind, bytes } => {
                let size = kind.size();
                kind.read(bytes.get(i * size..(i + 1) * size)?)?
            }
            Self::RawBytes(items) => Scalar::Bytes(items.get(i)?),
        };
        Some(Item::Scalar(scalar))
    }

    fn len(&self) -> usize {
        match self {
            Self::Typed(Elements::Bool(v)) => v.len(),
            Self::Typed(Elements::Int32(v)) => v.len(),
            Self::Typed(Elements::Int64(v)) => v.len(),
            Self::Typed(Elements::UInt32(v)) => v.len(),
            Self::Typed(Elements::UInt64(v)) => v.len(),
            Self::Typed(Elements::Fp32(v)) => v.len(),
            Self::Typed(Elements::Fp64(v)) => v.len(),
            Self::Typed(Elements::Bytes(v)) => v.len(),
            Self::Typed(Elements::Text(v)) => v.len(),
            Self::Typed(Elements::Json(v)) => v.len(),
            Self::Typed(Elements::Raw(_) | Elements::Unreadable(_)) => 0,
            Self::RawFixed { kind, bytes } => bytes.len() / kind.size(),
            Self::RawBytes(items) => items.len(),
        }
    }
}

/// Bytes per element of a fixed-size datatype in raw (binary) tensor contents.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "FP16" => 2,
        other => Fixed::of(other)?.size(),
    })
}

/// A fixed-size datatype ml-api reads from raw tensor contents, resolved from its name once
/// per tensor rather than once per element.
#[derive(Debug, Clone, Copy)]
enum Fixed {
    Bool,
    UInt8,
    Int8,
    UInt16,
    Int16,
    UInt32,
    Int32,
    UInt64,
    Int64,
    Fp32,
    Fp64,
}

impl Fixed {
    /// The datatype named `datatype`; `None` for BYTES, FP16 (no element type of ml-api's
    /// takes it) and unknown names.
    fn of(datatype: &str) -> Option<Self> {
        Some(match datatype {
            "BOOL" => Self::Bool,
            "UINT8" => Self::UInt8,
            "INT8" => Self::Int8,
            "UINT16" => Self::UInt16,
            "INT16" => Self::Int16,
            "UINT32" => Self::UInt32,
            "INT32" => Self::Int32,
            "UINT64" => Self::UInt64,
            "INT64" => Self::Int64,
            "FP32" => Self::Fp32,
            "FP64" => Self::Fp64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::Bool | Self::UInt8 | Self::Int8 => 1,
            Self::UInt16 | Self::Int16 => 2,
            Self::UInt32 | Self::Int32 | Self::Fp32 => 4,
            Self::UInt64 | Self::Int64 | Self::Fp64 => 8,
        }
    }

    /// The element in `b` (little-endian), or `None` unless `b` is one element long.
    fn read<'a>(self, b: &[u8]) -> Option<Scalar<'a>> {
        let bytes8 = || -> Option<[u8; 8]> { b.try_into().ok() };
        let bytes4 = || -> Option<[u8; 4]> { b.try_into().ok() };
        let bytes2 = || -> Option<[u8; 2]> { b.try_into().ok() };
        let byte = || -> Option<u8> { <[u8; 1]>::try_from(b).ok().map(|[b]| b) };
        Some(match self {
            Self::Bool => Scalar::Bool(byte()? != 0),
            Self::UInt8 => Scalar::UInt(u64::from(byte()?)),
            Self::Int8 => Scalar::Int(i64::from(byte()? as i8)),
            Self::UInt16 => Scalar::UInt(u64::from(u16::from_le_bytes(bytes2()?))),
            Self::Int16 => Scalar::Int(i64::from(i16::from_le_bytes(bytes2()?))),
            Self::UInt32 => Scalar::UInt(u64::from(u32::from_le_bytes(bytes4()?))),
            Self::Int32 => Scalar::Int(i64::from(i32::from_le_bytes(bytes4()?))),
            Self::UInt64 => Scalar::UInt(u64::from_le_bytes(bytes8()?)),
            Self::Int64 => Scalar::Int(i64::from_le_bytes(bytes8()?)),
            Self::Fp32 => Scalar::Float(f64::from(f32::from_le_bytes(bytes4()?))),
            Self::Fp64 => Scalar::Float(f64::from_le_bytes(bytes8()?)),
        })
    }
}

/// Appends FP32 `values` as raw tensor contents (little-endian), as gRPC's
/// `raw_output_contents` and REST's binary-data extension carry them.
pub fn extend_raw_fp32(out: &mut Vec<u8>, values: &[f32]) {
    out.reserve(size_of_val(values));
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// The elements of raw `BYTES` contents: each a 4-byte little-endian length, then that many
/// bytes (gRPC `raw_input_contents` and REST's binary-data extension alike).
pub fn bytes_elements(bytes: &[u8]) -> Result<SmallVec<[&[u8]; 1]>, String> {
    let mut items = SmallVec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_at_checked(4)
            .ok_or("truncated BYTES element length")?;
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let (text, tail) = tail
            .split_at_checked(length)
            .ok_or("truncated BYTES element")?;
        items.push(text);
        rest = tail;
    }
    Ok(items)
}

/// Checks raw bytes against the datatype (as the binary-data extension's decoder does).
fn raw_view<'a>(datatype: &'a str, bytes: &'a [u8]) -> Result<View<'a>, String> {
    if datatype == "BYTES" {
        return Ok(View::RawBytes(bytes_elements(bytes)?));
    }
    let unsupported = || format!("unsupported datatype `{datatype}`");
    let size = element_size(datatype).ok_or_else(unsupported)?;
    if bytes.len() % size != 0 {
        return Err(format!(
            "{} bytes is not a whole number of {datatype} elements",
            bytes.len()
        ));
    }
    match Fixed::of(datatype) {
        Some(kind) => Ok(View::RawFixed { kind, bytes }),
        // FP16: no element type of ml-api's takes it. Without elements there is nothing to
        // read, and the count check decides, as it always did.
        None if bytes.is_empty() => Ok(View::Typed(Elements::Raw(bytes))),
        None => Err(unsupported()),
    }
}

fn malformed(message: String) -> TensorError {
    TensorError::Malformed(message)
}

/// Decodes `tensors` into `schema`'s columns: at most `max_rows` rows.
pub fn decode(
    schema: &ModelSchema,
    model_name: &str,
    tensors: &[Tensor<'_>],
    max_rows: usize,
) -> Result<FeatureBatch, TensorError> {
    let mut sources: Vec<Option<View<'_>>> = schema.fields.iter().map(|_| None).collect();
    let mut rows: Option<usize> = None;
    for (position, tensor) in tensors.iter().enumerate() {
        let name = tensor.name;
        let index = schema.field_index(name, position).ok_or_else(|| {
            malformed(format!(
                "unexpected input `{name}` for model `{model_name}`"
            ))
        })?;
        let field = &schema.fields[index];
        let expected = datatype(field.element);
        let numeric = field.element.is_numeric() && !matches!(tensor.datatype, "BYTES" | "BOOL");
        if tensor.datatype != expected && !numeric {
            return Err(malformed(format!(
                "input `{name}` has datatype {}, expected {expected}",
                tensor.datatype
            )));
        }
        let n = match tensor.shape {
            [n] | [n, 1] => usize::try_from(*n).map_err(|_| {
                malformed(format!(
                    "input `{name}` has shape {:?}; a dimension cannot be negative",
                    tensor.shape
                ))
            })?,
            _ => {
                return Err(malformed(format!(
                    "input `{name}` has shape {:?}; expected [N] or [N, 1]",
                    tensor.shape
                )))
            }
        };
        if n > max_rows {
            return Err(malformed(format!(
                "input `{name}` has shape {:?}: at most {max_rows} rows are accepted in one request",
                tensor.shape
            )));
        }
        if *rows.get_or_insert(n) != n {
            return Err(malformed(format!(
                "input `{name}` has {n} rows, other inputs have {}",
                rows.unwrap_or(0)
            )));
        }
        let view = match tensor.elements {
            Elements::Raw(bytes) => raw_view(tensor.datatype, bytes).map_err(malformed)?,
            Elements::Unreadable(Unreadable::SizeNotANumber) => {
                return Err(malformed(format!(
                    "binary_data_size of input `{name}` is not a number"
                )))
            }
            Elements::Unreadable(Unreadable::Truncated) => {
                return Err(malformed(format!(
                    "binary data of input `{name}` is truncated"
                )))
            }
            typed => View::Typed(typed),
        };
        if view.len() != n {
            return Err(malformed(format!(
                "input `{name}` has {} values for shape {:?}",
                view.len(),
                tensor.shape
            )));
        }
        sources[index] = Some(view);
    }
    let rows = rows.ok_or_else(|| malformed("the request has no inputs".to_owned()))?;
    if rows == 0 {
        return Err(TensorError::Invalid(vec![FieldError::new(
            "body",
            "empty",
            "a batch must hold at least one record",
        )]));
    }
    let mut errors: Vec<(usize, usize, FieldError)> = Vec::new();
    let mut columns = Vec::with_capacity(schema.fields.len());
    for (index, (field, source)) in schema.fields.iter().zip(&sources).enumerate() {
        let mut column = Column::with_capacity(field.element, rows);
        for row in 0..rows {
            let problem = match source.as_ref().and_then(|view| view.get(row)) {
                Some(item) => item.push(field, &mut column).err(),
                None if field.nullable => {
                    push_scalar(field, Scalar::Float(f64::NAN), &mut column).err()
                }
                None => Some(("missing", "field is required".to_owned())),
            };
            if let Some((reason, message)) = problem {
                let error = FieldError::in_record(Some(row), Some(&field.name), reason, message);
                errors.push((row, index, error));
            }
        }
        columns.push(column);
    }
    if errors.is_empty() {
        return Ok(FeatureBatch { rows, columns });
    }
    // In the order (and number) a decode of the same records reports them.
    errors.sort_by_key(|(row, index, _)| (*row, *index));
    errors.truncate(MAX_REPORTED_ERRORS);
    Err(TensorError::Invalid(
        errors.into_iter().map(|(_, _, error)| error).collect(),
    ))
}

/// The records (a JSON array of objects) the tensors carry: what the challenger of shadow
/// scoring decodes with its own schema.
pub fn records(tensors: &[Tensor<'_>]) -> Value {
    let views: Vec<(&str, View<'_>)> = tensors
        .iter()
        .filter_map(|tensor| {
            let view = match tensor.elements {
                Elements::Raw(bytes) => raw_view(tensor.datatype, bytes).ok()?,
                Elements::Unreadable(_) => return None,
                typed => View::Typed(typed),
            };
            Some((tensor.name, view))
        })
        .collect();
    let rows = views.iter().map(|(_, view)| view.len()).max().unwrap_or(0);
    Value::Array(
        (0..rows)
            .map(|row| {
                let record: Map<String, Value> = views
                    .iter()
                    .filter_map(|(name, view)| Some(((*name).to_owned(), view.get(row)?.to_json())))
                    .collect();
                Value::Object(record)
            })
            .collect(),
    )
}
