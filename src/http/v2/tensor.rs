//! Open Inference Protocol (KServe V2) tensors: the JSON request body, its binary-data
//! extension, and conversion to and from ml-api's records and scores.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::model::Scores;

/// One input tensor of an inference request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    /// BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES.
    pub datatype: String,
    /// Row-major values, flat or nested. Absent when sent with the binary-data extension.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
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
use crate::serving::tensors::{bytes_elements, element_size};

/// Decodes one input's binary-data payload into JSON values.
pub fn decode_binary(datatype: &str, bytes: &[u8]) -> Result<Vec<Value>, String> {
    if datatype == "BYTES" {
        return Ok(bytes_elements(bytes)?
            .into_iter()
            .map(|text| Value::String(String::from_utf8_lossy(text).into_owned()))
            .collect());
    }
    let size =
        element_size(datatype).ok_or_else(|| format!("unsupported datatype `{datatype}`"))?;
    if bytes.len() % size != 0 {
        return Err(format!(
            "{} bytes is not a whole number of {datatype} elements",
            bytes.len()
        ));
    }
    bytes
        .chunks_exact(size)
        .map(|chunk| number(datatype, chunk))
        .collect()
}

fn number(datatype: &str, b: &[u8]) -> Result<Value, String> {
    let array = |n: usize| -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..n].copy_from_slice(&b[..n]);
        out
    };
    Ok(match datatype {
        "BOOL" => Value::Bool(b[0] != 0),
        "UINT8" => Value::from(b[0]),
        "INT8" => Value::from(b[0] as i8),
        "UINT16" => Value::from(u16::from_le_bytes([b[0], b[1]])),
        "INT16" => Value::from(i16::from_le_bytes([b[0], b[1]])),
        "UINT32" => Value::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "INT32" => Value::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "UINT64" => Value::from(u64::from_le_bytes(array(8))),
        "INT64" => Value::from(i64::from_le_bytes(array(8))),
        "FP32" => float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        "FP64" => float(f64::from_le_bytes(array(8))),
        other => return Err(format!("unsupported datatype `{other}`")),
    })
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Flattens nested `data` arrays (row-major), as the protocol allows either form.
pub fn flatten(data: &Value, out: &mut Vec<Value>) {
    match data {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other.clone()),
    }
}

/// Scores as the single output tensor `name`, `[N, K]`.
pub fn output(name: &str, scores: &Scores) -> OutputTensor {
    OutputTensor {
        name: name.to_owned(),
        datatype: "FP32",
        shape: vec![scores.rows, scores.width],
        data: scores.values.iter().map(|&v| f64::from(v)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_tensors_decode() {
        let mut bytes = Vec::new();
        for text in ["ES", "MADRID"] {
            bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        assert_eq!(
            decode_binary("BYTES", &bytes).unwrap(),
            vec![Value::from("ES"), Value::from("MADRID")]
        );
        let ints: Vec<u8> = [56i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            decode_binary("INT64", &ints).unwrap(),
            vec![Value::from(56), Value::from(-1)]
        );
        let floats: Vec<u8> = 1.5f32.to_le_bytes().to_vec();
        assert_eq!(
            decode_binary("FP32", &floats).unwrap(),
            vec![Value::from(1.5)]
        );
        assert!(decode_binary("FP32", &[0, 0, 0]).is_err());
        assert!(decode_binary("BYTES", &[9, 0, 0, 0, b'a']).is_err());
    }

    #[test]
    fn nested_data_flattens_row_major() {
        let mut out = Vec::new();
        flatten(&serde_json::json!([[1, 2], [3, 4]]), &mut out);
        assert_eq!(
            out,
            vec![
                Value::from(1),
                Value::from(2),
                Value::from(3),
                Value::from(4)
            ]
        );
    }
}
