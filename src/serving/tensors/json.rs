//! A JSON tensor's `data` (the Open Inference Protocol over REST), read straight into one
//! typed vector while every element has the same JSON type, and into borrowed JSON scalars
//! otherwise: no `serde_json::Value` per element. What is accepted, and every parse error
//! with its position, is what reading `data` as a `Value` and flattening it gave: nested
//! arrays flatten row-major, a bare value is one element, `null` (or no `data`) is one null.

use std::{borrow::Cow, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use smallvec::{smallvec, SmallVec};

/// Elements of one JSON type: a one-row tensor's element is kept inline (no allocation).
pub type Typed<T> = SmallVec<[T; 1]>;

/// One element of a JSON tensor whose elements are not all of one JSON type.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonScalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Only above `i64::MAX` (smaller ones are [`Self::Int`]: they decode alike).
    UInt(u64),
    Float(f64),
    Text(Cow<'a, str>),
    /// No column takes an object; it is kept whole for the records shadow scoring builds.
    Object(Box<Value>),
}

/// A JSON tensor's elements, flattened row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum JsonData<'a> {
    Bool(Typed<bool>),
    Int(Typed<i64>),
    Float(Typed<f64>),
    Text(Typed<Cow<'a, str>>),
    /// Elements of several JSON types, or nulls or objects (also the empty tensor).
    Mixed(Vec<JsonScalar<'a>>),
    /// No `data` (a binary-data tensor): one null, as an absent `Value` flattened to.
    #[default]
    Absent,
}

/// The elements of [`JsonData::Absent`].
pub static ABSENT: [JsonScalar<'static>; 1] = [JsonScalar::Null];

impl<'a> JsonData<'a> {
    fn push(&mut self, item: JsonScalar<'a>) {
        match (&mut *self, item) {
            (Self::Bool(values), JsonScalar::Bool(v)) => values.push(v),
            (Self::Int(values), JsonScalar::Int(v)) => values.push(v),
            (Self::Float(values), JsonScalar::Float(v)) => values.push(v),
            (Self::Text(values), JsonScalar::Text(v)) => values.push(v),
            (Self::Mixed(values), item) if !values.is_empty() => values.push(item),
            (Self::Mixed(_), item) => *self = Self::first(item),
            (_, item) => {
                let mut items = std::mem::take(self).into_mixed();
                items.push(item);
                *self = Self::Mixed(items);
            }
        }
    }

    fn first(item: JsonScalar<'a>) -> Self {
        match item {
            JsonScalar::Bool(v) => Self::Bool(smallvec![v]),
            JsonScalar::Int(v) => Self::Int(smallvec![v]),
            JsonScalar::Float(v) => Self::Float(smallvec![v]),
            JsonScalar::Text(v) => Self::Text(smallvec![v]),
            other => Self::Mixed(vec![other]),
        }
    }

    /// Whether the elements live on the heap (the test of the inline case).
    #[cfg(test)]
    fn is_spilled(&self) -> bool {
        match self {
            Self::Bool(values) => values.spilled(),
            Self::Int(values) => values.spilled(),
            Self::Float(values) => values.spilled(),
            Self::Text(values) => values.spilled(),
            Self::Mixed(_) | Self::Absent => true,
        }
    }

    fn into_mixed(self) -> Vec<JsonScalar<'a>> {
        match self {
            Self::Bool(values) => values.into_iter().map(JsonScalar::Bool).collect(),
            Self::Int(values) => values.into_iter().map(JsonScalar::Int).collect(),
            Self::Float(values) => values.into_iter().map(JsonScalar::Float).collect(),
            Self::Text(values) => values.into_iter().map(JsonScalar::Text).collect(),
            Self::Mixed(values) => values,
            Self::Absent => vec![JsonScalar::Null],
        }
    }
}

impl<'de: 'a, 'a> de::Deserialize<'de> for JsonData<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut data = Self::Mixed(Vec::new());
        Flatten(&mut data).deserialize(deserializer)?;
        Ok(data)
    }
}

/// Appends every element of one JSON value (arrays flattened) to a [`JsonData`].
struct Flatten<'s, 'a>(&'s mut JsonData<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for Flatten<'_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Flatten<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(JsonScalar::Bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(JsonScalar::Int(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0
            .push(i64::try_from(v).map_or(JsonScalar::UInt(v), JsonScalar::Int));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // JSON has no NaN or infinity (serde_json refuses them): a float element is finite.
        self.0.push(JsonScalar::Float(v));
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.0.push(JsonScalar::Text(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.visit_string(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.0.push(JsonScalar::Text(Cow::Owned(v)));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push(JsonScalar::Null);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let object = de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.0.push(JsonScalar::Object(Box::new(object)));
        Ok(())
    }
}

/// A tensor's `parameters` (a JSON object), of which only `binary_data_size` is kept:
/// `Some(None)` when it is there but not an unsigned integer. The other values are parsed
/// (and refused) as any JSON value is, and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TensorParameters {
    pub binary_data_size: Option<Option<u64>>,
}

impl<'de> de::Deserialize<'de> for TensorParameters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ParametersVisitor)
    }
}

struct ParametersVisitor;

impl<'de> Visitor<'de> for ParametersVisitor {
    type Value = TensorParameters;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TensorParameters, A::Error> {
        let mut parameters = TensorParameters::default();
        while let Some(is_size) = map.next_key_seed(IsBinaryDataSize)? {
            if is_size {
                parameters.binary_data_size = Some(map.next_value_seed(UnsignedOrNone)?);
            } else {
                map.next_value_seed(UnsignedOrNone)?;
            }
        }
        Ok(parameters)
    }
}

/// Whether a key is `binary_data_size`.
struct IsBinaryDataSize;

impl<'de> DeserializeSeed<'de> for IsBinaryDataSize {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for IsBinaryDataSize {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == "binary_data_size")
    }
}

/// Any JSON value, parsed in full: the unsigned integer it is, or `None`.
struct UnsignedOrNone;

impl<'de> DeserializeSeed<'de> for UnsignedOrNone {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UnsignedOrNone {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u64>, E> {
        Ok(u64::try_from(v).ok())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
        Ok(Some(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<u64>, D::Error> {
        self.deserialize(deserializer).map(|_| None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
        while seq.next_element_seed(UnsignedOrNone)?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        while map.next_key_seed(IsBinaryDataSize)?.is_some() {
            map.next_value_seed(UnsignedOrNone)?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> JsonData<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn elements_of_one_json_type_fill_one_typed_vector_flattened_row_major() {
        assert_eq!(data("[[1], [-2], [3]]"), JsonData::Int(smallvec![1, -2, 3]));
        assert_eq!(data("[[1.5, 2.0]]"), JsonData::Float(smallvec![1.5, 2.0]));
        assert_eq!(
            data("[true, [false]]"),
            JsonData::Bool(smallvec![true, false])
        );
        assert_eq!(data("7"), JsonData::Int(smallvec![7]));
        assert!(!data("[[7]]").is_spilled(), "one element, no allocation");
        let JsonData::Text(text) = data(r#"["ES", "Espa\u00f1a"]"#) else {
            panic!("text")
        };
        assert!(
            matches!(text[0], Cow::Borrowed("ES")),
            "no copy of plain text"
        );
        assert_eq!(text[1], "España");
    }

    #[test]
    fn elements_of_several_json_types_keep_each_value_as_it_was_written() {
        assert_eq!(
            data(r#"[1, 2.5, "x", null, 18446744073709551615, {"a": 1}]"#),
            JsonData::Mixed(vec![
                JsonScalar::Int(1),
                JsonScalar::Float(2.5),
                JsonScalar::Text("x".into()),
                JsonScalar::Null,
                JsonScalar::UInt(u64::MAX),
                JsonScalar::Object(Box::new(serde_json::json!({"a": 1}))),
            ])
        );
        assert_eq!(data("[]"), JsonData::Mixed(vec![]));
        assert_eq!(data("null"), JsonData::Mixed(vec![JsonScalar::Null]));
    }

    #[test]
    fn only_an_unsigned_binary_data_size_is_a_size() {
        let size = |json: &str| {
            serde_json::from_str::<TensorParameters>(json)
                .map(|p| p.binary_data_size)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            size(r#"{"binary_data_size": 8, "x": [{}]}"#),
            Ok(Some(Some(8)))
        );
        assert_eq!(size(r#"{"binary_data_size": -8}"#), Ok(Some(None)));
        assert_eq!(size(r#"{"binary_data_size": "8"}"#), Ok(Some(None)));
        assert_eq!(
            size(r#"{"binary_data_size": 8, "binary_data_size": 9}"#),
            Ok(Some(Some(9)))
        );
        assert_eq!(size("{}"), Ok(None));
        assert_eq!(
            size("[8]"),
            Err("invalid type: sequence, expected a map at line 1 column 0".to_owned())
        );
    }
}
