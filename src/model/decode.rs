//! Turns request JSON into a [`FeatureBatch`], checking every field against the schema and
//! collecting every problem (not just the first) as a [`FieldError`]. The body's bytes go
//! straight into the model's typed columns ([`from_slice`]): no `serde_json::Value` tree is
//! built for a request.
//!
//! Lenient where clients of the Flask prediction API depend on it (numbers sent as strings such as the
//! Kaggle CSV's `" 56"`, `56.0` for an integer, extra fields ignored), strict everywhere else.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use self::scalar::{push_scalar, Scalar};
use super::{
    batch::{Column, FeatureBatch},
    schema::{ElementType, Field, ModelSchema},
};
use crate::model::FieldError;

/// At most this many field errors are listed in one response.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// A request's records decoded into the schema's columns, and whether the body was a batch
/// (field paths carry a `[i].` prefix).
#[derive(Debug)]
pub struct DecodedRecords {
    pub batch: FeatureBatch,
    pub is_batch: bool,
}

/// Why a body cannot be decoded: it is not JSON (the parser's message), or its records break
/// the schema (every problem, as [`FieldError`]s).
#[derive(Debug)]
pub enum RecordsError {
    Syntax(String),
    Invalid(Vec<FieldError>),
}

/// Decodes a JSON body (one record, or an array of them: a batch of at most `max_records`)
/// straight from its bytes into the schema's columns, with no `serde_json::Value` in between.
/// A syntax error anywhere wins over the field problems found before it, as if the body had
/// been parsed first.
pub fn from_slice(
    schema: &ModelSchema,
    body: &[u8],
    max_records: usize,
) -> Result<DecodedRecords, RecordsError> {
    let mut builder = Builder::new(schema, max_records);
    from_json_bytes(body, BodySeed(&mut builder))
        .map_err(|error| RecordsError::Syntax(error.to_string()))?;
    builder.finish().map_err(RecordsError::Invalid)
}

/// Deserializes the whole of a JSON document with `seed` (`PhantomData::<T>` for a plain
/// `T: Deserialize`), up to its end. Valid UTF-8 (checked in one pass) is read as text, which
/// spares the parser a check of every string; otherwise as bytes, whose parser names where
/// the bad byte is.
pub fn from_json_bytes<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    fn parse<'de, R: serde_json::de::Read<'de>, S: DeserializeSeed<'de>>(
        mut parser: serde_json::Deserializer<R>,
        seed: S,
    ) -> Result<S::Value, serde_json::Error> {
        let value = seed.deserialize(&mut parser)?;
        parser.end()?;
        Ok(value)
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(serde_json::Deserializer::from_str(text), seed),
        Err(_) => parse(serde_json::Deserializer::from_slice(bytes), seed),
    }
}

/// [`from_slice`] for a body already parsed (warm-up, profiling, reference records).
pub fn from_value(
    schema: &ModelSchema,
    body: &Value,
    max_records: usize,
) -> Result<DecodedRecords, Vec<FieldError>> {
    let mut builder = Builder::new(schema, max_records);
    match BodySeed(&mut builder).deserialize(body) {
        Ok(()) => builder.finish(),
        // The visitors never fail, and a `Value` has no syntax to break.
        Err(error) => Err(vec![FieldError::new("body", "type", error.to_string())]),
    }
}

/// A field's value as the parser met it; strings are borrowed from the body when they
/// contain no escapes.
#[derive(Debug)]
enum Json<'de> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

/// Collects the columns, and the problems, while the parser walks the body.
struct Builder<'s, 'de> {
    schema: &'s ModelSchema,
    max_records: usize,
    columns: Vec<Column>,
    /// The current record's value per field (the last one wins, as in a JSON object).
    slots: Vec<Option<Json<'de>>>,
    /// Where the next key is most likely to be: just after the previous one.
    hint: usize,
    is_batch: bool,
    /// Records (array items) seen, also past `max_records`.
    items: usize,
    rows: usize,
    body_error: Option<FieldError>,
    /// Array items that are not records.
    item_errors: Vec<FieldError>,
    field_errors: Vec<FieldError>,
}

impl<'s, 'de> Builder<'s, 'de> {
    fn new(schema: &'s ModelSchema, max_records: usize) -> Self {
        Self {
            schema,
            max_records,
            columns: schema
                .fields
                .iter()
                .map(|field| Column::with_capacity(field.element, 1))
                .collect(),
            slots: schema.fields.iter().map(|_| None).collect(),
            hint: 0,
            is_batch: false,
            items: 0,
            rows: 0,
            body_error: None,
            item_errors: Vec::new(),
            field_errors: Vec::new(),
        }
    }

    fn field_index(&mut self, name: &str) -> Option<usize> {
        let index = self.schema.field_index(name, self.hint)?;
        self.hint = index + 1;
        Some(index)
    }

    /// Moves the current record's values into the columns, in schema order.
    fn end_record(&mut self) {
        let row = self.is_batch.then_some(self.rows);
        for ((field, column), slot) in self
            .schema
            .fields
            .iter()
            .zip(self.columns.iter_mut())
            .zip(self.slots.iter_mut())
        {
            let pushed = match slot.take() {
                None => push_value(field, None, column),
                Some(Json::Null) => push_value(field, Some(&Value::Null), column),
                Some(Json::Array) => push_value(field, Some(&Value::Array(Vec::new())), column),
                Some(Json::Object) => push_value(field, Some(&Value::Object(Map::new())), column),
                Some(Json::Bool(b)) => push_scalar(field, Scalar::Bool(b), column),
                Some(Json::Int(v)) => push_scalar(field, Scalar::Int(v), column),
                Some(Json::UInt(v)) => push_scalar(field, Scalar::UInt(v), column),
                Some(Json::Float(v)) => push_scalar(field, Scalar::Float(v), column),
                Some(Json::Str(text)) => push_scalar(field, Scalar::Bytes(text.as_bytes()), column),
            };
            if let Err((reason, message)) = pushed {
                if self.field_errors.len() < MAX_REPORTED_ERRORS {
                    self.field_errors.push(FieldError::in_record(
                        row,
                        Some(&field.name),
                        reason,
                        message,
                    ));
                }
            }
        }
        self.rows += 1;
        self.hint = 0;
    }

    fn finish(self) -> Result<DecodedRecords, Vec<FieldError>> {
        if let Some(error) = self.body_error {
            return Err(vec![error]);
        }
        if self.is_batch && self.items == 0 {
            return Err(vec![FieldError::new(
                "body",
                "empty",
                "a batch must hold at least one record",
            )]);
        }
        if self.items > self.max_records {
            return Err(vec![FieldError::new(
                "body",
                "too_many_records",
                format!(
                    "a batch holds at most {} records, got {}",
                    self.max_records, self.items
                ),
            )]);
        }
        if !self.item_errors.is_empty() {
            return Err(self.item_errors);
        }
        if !self.field_errors.is_empty() {
            return Err(self.field_errors);
        }
        Ok(DecodedRecords {
            batch: FeatureBatch {
                rows: self.rows,
                columns: self.columns,
            },
            is_batch: self.is_batch,
        })
    }
}

/// What a body, or an item of a batch, turned out to be.
enum Shape {
    /// A record, now in the columns.
    Record,
    /// An array: at the top, the batch, now read; inside a batch, skipped.
    Array,
    /// Anything else: how it is named in messages.
    Other(&'static str),
}

/// The whole body: a record, or an array of records.
struct BodySeed<'b, 's, 'de>(&'b mut Builder<'s, 'de>);

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let builder = self.0;
        let shape = deserializer.deserialize_any(RecordVisitor {
            builder: &mut *builder,
            top: true,
        })?;
        if let Shape::Other(kind) = shape {
            builder.body_error = Some(FieldError::new(
                "body",
                "type",
                format!("expected a record (JSON object) or an array of records, got {kind}"),
            ));
        }
        Ok(())
    }
}

/// One item of a batch: a record, or a problem naming its index.
struct ItemSeed<'b, 's, 'de>(&'b mut Builder<'s, 'de>);

impl<'de> DeserializeSeed<'de> for ItemSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let builder = self.0;
        let kind = match deserializer.deserialize_any(RecordVisitor {
            builder: &mut *builder,
            top: false,
        })? {
            Shape::Record => return Ok(()),
            Shape::Array => "an array",
            Shape::Other(kind) => kind,
        };
        let index = builder.items;
        builder.item_errors.push(FieldError::in_record(
            Some(index),
            None,
            "type",
            format!("expected a record (JSON object), got {kind}"),
        ));
        Ok(())
    }
}

/// Reads a record into the builder; at the top, also a batch of them.
struct RecordVisitor<'b, 's, 'de> {
    builder: &'b mut Builder<'s, 'de>,
    top: bool,
}

impl<'de> Visitor<'de> for RecordVisitor<'_, '_, 'de> {
    type Value = Shape;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a record (JSON object) or an array of records")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
        read_record(self.builder, map)?;
        Ok(Shape::Record)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        if !self.top {
            while seq.next_element_seed(Skip)?.is_some() {}
            return Ok(Shape::Array);
        }
        let builder = self.builder;
        builder.is_batch = true;
        if let Some(len) = seq.size_hint() {
            builder.columns = (builder.schema.fields.iter())
                .map(|field| Column::with_capacity(field.element, len.min(builder.max_records)))
                .collect();
        }
        loop {
            let more = if builder.items >= builder.max_records {
                // Counted, not decoded: the answer says how many records came.
                seq.next_element_seed(Skip)?.is_some()
            } else {
                seq.next_element_seed(ItemSeed(&mut *builder))?.is_some()
            };
            if !more {
                return Ok(Shape::Array);
            }
            builder.items += 1;
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Other("null"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other("a string"))
    }
}

/// The fields of one record into the builder's slots, then into the columns.
fn read_record<'de, A: MapAccess<'de>>(
    builder: &mut Builder<'_, 'de>,
    mut map: A,
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key_seed(KeySeed(&mut *builder))? {
        match key {
            Some(index) => builder.slots[index] = Some(map.next_value_seed(ValueSeed)?),
            // Fields the model does not take are ignored, as the Flask prediction API did.
            None => {
                map.next_value_seed(Skip)?;
            }
        }
    }
    builder.end_record();
    Ok(())
}

/// A record's key: the index of the field it names, if the model has one.
struct KeySeed<'b, 's, 'de>(&'b mut Builder<'s, 'de>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_, 'de> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_, 'de> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.field_index(name))
    }
}

/// A value nobody reads, parsed as strictly as a `Value` would be (`serde::de::IgnoredAny`
/// is not: it lets through invalid UTF-8 and out-of-range numbers, which a parsed body
/// refuses), without keeping anything.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// A field's value. Arrays and objects are skipped: only their kind matters (a type error).
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Json<'de>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::UInt(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(Json::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(Json::Object)
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
