//! Open Inference Protocol (KServe V2) tensors over REST: the JSON request body (its tensors
//! borrow names and text from the body; `data` is read by `serving::tensors::json`), the
//! binary-data extension, and the response.

use std::borrow::Cow;

use serde::{
    de::{SeqAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};
use serde_json::Value;
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
    pub parameters: Option<OutputParameters>,
}

/// A requested output's parameters. Other keys are ignored, as the protocol allows.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct OutputParameters {
    /// `true`: this output comes back as raw bytes after the JSON header (the binary-data
    /// extension); overrides the request's `binary_data_output`.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub binary_data: Option<Value>,
    /// Triton's classification extension, which ml-api does not offer (refused).
    #[serde(default)]
    #[schema(value_type = Option<u32>)]
    pub classification: Option<Value>,
    /// Triton's shared-memory extension, which ml-api does not offer (refused).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub shared_memory_region: Option<Value>,
}

/// The request's parameters. Other keys are ignored, as the protocol allows.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RequestParameters {
    /// `true`: every output comes back as raw bytes after the JSON header, unless its own
    /// `binary_data` says otherwise (what `tritonclient` asks for when no output is named).
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub binary_data_output: Option<Value>,
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
    pub parameters: Option<RequestParameters>,
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
pub(super) const INPUTS_CAPACITY: usize = 32;

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTensor<'a> {
    #[schema(value_type = String)]
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    /// `{"binary_data_size": bytes}` when the values follow the JSON header as raw bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<OutputTensorParameters>,
    // FP32 scores, written as the doubles they widen to (as before: byte-identical JSON).
    // Absent when the values are sent as raw bytes.
    #[serde(serialize_with = "widened", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f64>>)]
    pub data: Option<Vec<f32>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTensorParameters {
    pub binary_data_size: usize,
}

fn widened<S: serde::Serializer>(
    values: &Option<Vec<f32>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let values = values.as_deref().unwrap_or_default();
    serializer.collect_seq(values.iter().map(|&v| f64::from(v)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse<'a> {
    #[schema(value_type = String)]
    pub model_name: &'a str,
    #[schema(value_type = String)]
    pub model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor<'a>>,
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

/// Scores as the single output tensor `name`, `[N, K]`: with the values in its JSON `data`,
/// or (`binary`) with only their size, the values handed back to follow the JSON header as
/// raw bytes.
pub fn output(name: &str, scores: Scores, binary: bool) -> (OutputTensor<'_>, Option<Vec<f32>>) {
    let shape = vec![scores.rows, scores.width];
    let (parameters, data, raw) = if binary {
        let parameters = OutputTensorParameters {
            binary_data_size: size_of_val(scores.values.as_slice()),
        };
        (Some(parameters), None, Some(scores.values))
    } else {
        (None, Some(scores.values), None)
    };
    let tensor = OutputTensor {
        name,
        datatype: "FP32",
        shape,
        parameters,
        data,
    };
    (tensor, raw)
}

impl InferRequest<'_> {
    /// Whether the model's output `output` is to come back as raw bytes (the binary-data
    /// extension): its own `binary_data` if the request names it, else the request's
    /// `binary_data_output`, else no. Refuses parameters of extensions ml-api does not offer,
    /// and values that are not booleans.
    pub fn binary_output(&self, output: &str) -> Result<bool, String> {
        fn flag(value: &Option<Value>, field: impl Fn() -> String) -> Result<Option<bool>, String> {
            match value {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(flag)) => Ok(Some(*flag)),
                Some(other) => Err(format!("{} must be true or false, not {other}", field())),
            }
        }
        let mut binary = match &self.parameters {
            Some(parameters) => flag(&parameters.binary_data_output, || {
                "parameters.binary_data_output".to_owned()
            })?,
            None => None,
        }
        .unwrap_or(false);
        for (index, requested) in self.outputs.iter().flatten().enumerate() {
            let Some(parameters) = &requested.parameters else {
                continue;
            };
            if parameters.classification.is_some() {
                return Err(format!(
                    "outputs[{index}].parameters.classification: the classification extension is not supported; ask for `{output}` and rank the scores"
                ));
            }
            if parameters.shared_memory_region.is_some() {
                return Err(format!(
                    "outputs[{index}].parameters.shared_memory_region: the shared-memory extension is not supported; use binary_data"
                ));
            }
            let field = || format!("outputs[{index}].parameters.binary_data");
            if let Some(flag) = flag(&parameters.binary_data, field)? {
                binary = flag;
            }
        }
        Ok(binary)
    }
}
