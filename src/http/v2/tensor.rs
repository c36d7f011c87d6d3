//! Open Inference Protocol (KServe V2) tensors over REST: the JSON request body (its tensors
//! borrow names and text from the body; `data` is read by `serving::tensors::json`), the
//! binary-data extension, and the response.

use std::borrow::Cow;

use serde::{
    de::{SeqAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};
use serde_json::{Map, Value};
use smallvec::SmallVec;
use utoipa::ToSchema;

use crate::{
    model::Scores,
    serving::tensors::{
        json::{JsonData, TensorParameters},
        Elements, Tensor, Unreadable,
    },
};

/// One input tensor of an inference request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InputTensor<'a> {
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub name: Cow<'a, str>,
    #[schema(value_type = Vec<i64>)]
    pub shape: SmallVec<[i64; 4]>,
    /// BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES.
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub datatype: Cow<'a, str>,
    /// Row-major values, flat or nested. Absent when sent with the binary-data extension.
    #[serde(default, borrow)]
    #[schema(value_type = Object)]
    pub data: JsonData<'a>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<TensorParameters>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InferRequest<'a> {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(borrow, deserialize_with = "inputs")]
    pub inputs: Vec<InputTensor<'a>>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<Map<String, Value>>,
}

/// The inputs, in one allocation for up to [`INPUTS_CAPACITY`] tensors (a request carries one
/// per model input; serde's `Vec` would grow from 4 and move the tensors at each step).
fn inputs<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<InputTensor<'a>>, D::Error> {
    struct Inputs<'a>(std::marker::PhantomData<InputTensor<'a>>);

    impl<'de: 'a, 'a> Visitor<'de> for Inputs<'a> {
        type Value = Vec<InputTensor<'a>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut inputs = Vec::with_capacity(seq.size_hint().unwrap_or(INPUTS_CAPACITY));
            while let Some(input) = seq.next_element()? {
                inputs.push(input);
            }
            Ok(inputs)
        }
    }

    deserializer.deserialize_seq(Inputs(std::marker::PhantomData))
}

/// Tensors room is made for before the first is read.
const INPUTS_CAPACITY: usize = 32;

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    // FP32 scores, written as the doubles they widen to (as before: byte-identical JSON).
    #[serde(serialize_with = "widened")]
    #[schema(value_type = Vec<f64>)]
    pub data: Vec<f32>,
}

fn widened<S: serde::Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(values.iter().map(|&v| f64::from(v)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

/// The V2 datatype ml-api reports for a graph input.
pub use crate::serving::tensors::datatype;

impl InferRequest<'_> {
    /// The request's tensors: each input's JSON `data`, or its bytes of `binary` (what follows
    /// the JSON header under the binary-data extension) when its `binary_data_size` says so.
    pub fn tensors<'s>(&'s self, mut binary: &'s [u8]) -> Vec<Tensor<'s>> {
        self.inputs
            .iter()
            .map(|input| {
                let size = input.parameters.and_then(|p| p.binary_data_size);
                let elements = match size {
                    None => input.data.elements(),
                    Some(None) => Elements::Unreadable(Unreadable::SizeNotANumber),
                    Some(Some(size)) => match usize::try_from(size)
                        .ok()
                        .and_then(|size| binary.split_at_checked(size))
                    {
                        Some((chunk, rest)) => {
                            binary = rest;
                            Elements::Raw(chunk)
                        }
                        None => Elements::Unreadable(Unreadable::Truncated),
                    },
                };
                Tensor {
                    name: &input.name,
                    datatype: &input.datatype,
                    shape: &input.shape,
                    elements,
                }
            })
            .collect()
    }
}

/// Scores as the single output tensor `name`, `[N, K]`.
pub fn output(name: &str, scores: Scores) -> OutputTensor {
    OutputTensor {
        name: name.to_owned(),
        datatype: "FP32",
        shape: vec![scores.rows, scores.width],
        data: scores.values,
    }
}
