//! Byte-level edits of an ONNX file. The decoded views skip fields they do not declare, so
//! re-encoding them would lose data (raw tensor bytes, metadata, value infos...). Instead the
//! model is split into its top-level protobuf fields, the graph into its own, and only the
//! entries being replaced are re-encoded; every other byte is copied as it came.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::proto::ValueView;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// `ModelProto.graph`, `ModelProto.opset_import`.
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET_IMPORT: u32 = 8;
/// `GraphProto.node`, `.output`, `.value_info`.
const GRAPH_NODE: u32 = 1;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;

/// One top-level field of a message: its number, its bytes (key included) and, for
/// length-delimited fields, the payload.
struct Field<'a> {
    tag: u32,
    raw: &'a [u8],
    payload: &'a [u8],
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".to_owned())
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = varint(buf, &mut pos)?;
        let tag = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        let (from, len) = match (key & 7) as u8 {
            WIRE_VARINT => {
                varint(buf, &mut pos)?;
                (pos, 0)
            }
            WIRE_FIXED64 => (pos, 8),
            WIRE_FIXED32 => (pos, 4),
            WIRE_LEN => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                (pos, len)
            }
            other => return Err(format!("unsupported wire type {other} in field {tag}")),
        };
        let end = from
            .checked_add(len)
            .filter(|&end| end <= buf.len())
            .ok_or_else(|| format!("field {tag} runs past the end of its message"))?;
        out.push(Field {
            tag,
            raw: &buf[start..end],
            payload: &buf[from..end],
        });
        pos = end;
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_message(out: &mut Vec<u8>, tag: u32, payload: &[u8]) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(WIRE_LEN));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// What to change in a model's main graph.
#[derive(Debug, Default)]
pub struct Edits {
    /// Index among the graph's nodes → the encoded `NodeProto` that replaces it.
    pub nodes: HashMap<usize, Vec<u8>>,
    /// Graph output name → the encoded `ValueInfoProto` that replaces it.
    pub outputs: HashMap<String, Vec<u8>>,
    /// `value_info` entries (intermediate types) to drop, by name.
    pub drop_value_info: HashSet<String>,
    /// Encoded `OperatorSetIdProto`s to add to the model.
    pub add_opsets: Vec<Vec<u8>>,
}

fn value_name(payload: &[u8]) -> Result<String, String> {
    ValueView::decode(payload)
        .map(|value| value.name().to_owned())
        .map_err(|e| e.to_string())
}

fn edit_graph(graph: &[u8], edits: &Edits) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(graph.len() + 64);
    let mut node = 0;
    for field in fields(graph)? {
        match field.tag {
            GRAPH_NODE => {
                match edits.nodes.get(&node) {
                    Some(replacement) => put_message(&mut out, GRAPH_NODE, replacement),
                    None => out.extend_from_slice(field.raw),
                }
                node += 1;
            }
            GRAPH_OUTPUT => match edits.outputs.get(&value_name(field.payload)?) {
                Some(replacement) => put_message(&mut out, GRAPH_OUTPUT, replacement),
                None => out.extend_from_slice(field.raw),
            },
            GRAPH_VALUE_INFO if edits.drop_value_info.contains(&value_name(field.payload)?) => {}
            _ => out.extend_from_slice(field.raw),
        }
    }
    Ok(out)
}

/// Applies `edits` to the model in `model`, copying everything else byte for byte.
pub fn edit_model(model: &[u8], edits: &Edits) -> Result<Vec<u8>, String> {
    let fields = fields(model)?;
    let graphs = fields.iter().filter(|f| f.tag == MODEL_GRAPH).count();
    if graphs != 1 {
        return Err(format!("expected one graph field, found {graphs}"));
    }
    let mut out = Vec::with_capacity(model.len() + 64);
    for field in fields {
        if field.tag == MODEL_GRAPH {
            put_message(&mut out, MODEL_GRAPH, &edit_graph(field.payload, edits)?);
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    for opset in &edits.add_opsets {
        put_message(&mut out, MODEL_OPSET_IMPORT, opset);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_truncation_is_an_error() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            let mut pos = 0;
            assert_eq!(varint(&buf, &mut pos), Ok(value));
            assert_eq!(pos, buf.len());
        }
        assert!(varint(&[0x80, 0x80], &mut 0).is_err());
    }

    #[test]
    fn a_field_running_past_the_end_is_an_error() {
        // Field 7, length-delimited, claims 5 bytes but carries 2.
        assert!(fields(&[0x3a, 5, 1, 2]).is_err());
        assert!(fields(&[0x3b]).is_err(), "wire type 3 (groups) is not ONNX");
    }

    #[test]
    fn edits_without_changes_copy_the_model_byte_for_byte() {
        let mut model = Vec::new();
        put_varint(&mut model, 1 << 3); // ir_version = 8
        put_varint(&mut model, 8);
        let mut graph = Vec::new();
        put_message(&mut graph, 2, b"name");
        put_message(&mut model, MODEL_GRAPH, &graph);
        put_message(&mut model, 14, b"metadata the views never declare");
        assert_eq!(edit_model(&model, &Edits::default()).unwrap(), model);
    }
}
