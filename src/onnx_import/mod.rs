//! Safe import of uploaded ONNX files: what ml-api checks before ONNX Runtime ever sees the
//! bytes, and how scikit-learn's `ZipMap` outputs become tensors it can serve.
//!
//! [`inspect`] decodes the file into the ONNX schema's generated types and refuses, with the reason a client can act on:
//! bytes that are not an ONNX model (`format`), opsets ONNX Runtime 1.31.1 does not implement
//! (`opset`), operators outside the standard `ai.onnx` / `ai.onnx.ml` sets, custom domains and
//! model-local functions (`operator`), tensors stored outside the file (`external_data`) and
//! graphs over the node limit (`size`). A graph output made by a `ZipMap` (a sequence of
//! maps, skl2onnx's default for classifiers) is rewritten into the float `[N, K]` tensor the
//! ZipMap was given, under the same output name, and its class labels are returned: the
//! decoded model is edited and encoded again (the generated types carry every field of
//! ONNX 1.19's schema, so nothing a current exporter writes is lost).
//! [`reference`] compares a loaded model's outputs with ones the uploader sent.

mod operators;
mod proto;
pub mod reference;

use std::{collections::BTreeMap, ops::RangeInclusive};

use bytes::Bytes;
use prost::Message;
use serde_json::Value;

pub use reference::{Difference, Reference};

use crate::{
    model::{FieldError, ModelCard},
    training::onnx::{self as writer, GraphProto, ModelProto, NodeProto, TensorProto},
};

/// Opset versions of the default domain (`""`, `ai.onnx`) that ONNX Runtime 1.31.1 loads.
/// (It warns, without guarantees, below 7 and refuses above 26.)
pub const AI_ONNX_OPSETS: RangeInclusive<i64> = 7..=26;
/// Opset versions of `ai.onnx.ml` that ONNX Runtime 1.31.1 loads.
pub const AI_ONNX_ML_OPSETS: RangeInclusive<i64> = 1..=5;
/// The default node limit: far above any tabular model (a tree ensemble is one node), and a
/// bound on the work an upload can ask of the checks and of ONNX Runtime.
pub const DEFAULT_MAX_NODES: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most nodes, subgraphs included.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nodes: DEFAULT_MAX_NODES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    #[error("not an ONNX model: {0}")]
    Format(String),
    #[error("opset {version} of domain `{domain}` is not supported: ml-api accepts {}..={}", allowed.start(), allowed.end())]
    Opset {
        domain: String,
        version: i64,
        allowed: RangeInclusive<i64>,
    },
    #[error("{0}")]
    Operator(String),
    #[error("tensor `{0}` is stored outside the file (external data): upload a self-contained model (onnx.save_model(..., save_as_external_data=False))")]
    ExternalData(String),
    #[error("the graph has {nodes} nodes; at most {max} are accepted")]
    TooManyNodes { nodes: usize, max: usize },
}

impl ImportError {
    /// The `reason` of the field error: `format`, `opset`, `operator`, `external_data`, `size`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Format(_) => "format",
            Self::Opset { .. } => "opset",
            Self::Operator(_) => "operator",
            Self::ExternalData(_) => "external_data",
            Self::TooManyNodes { .. } => "size",
        }
    }
}

impl ImportError {
    /// The refusal as a field error on the `model` part.
    pub fn field_error(&self) -> FieldError {
        FieldError::new("model", self.reason(), self.to_string())
    }
}

/// A `ZipMap` output rewritten into a probability tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipMapOutput {
    /// The graph output's name (unchanged), now a float `[N, K]` tensor.
    pub output: String,
    /// The class labels as text, in column order.
    pub classes: Vec<String>,
    /// The same as JSON: strings, or integers for `classlabels_int64s`.
    pub class_values: Vec<Value>,
}

/// An upload that passed the checks.
#[derive(Debug, Clone)]
pub struct ImportedGraph {
    /// What to load and store: the uploaded bytes, or the rewritten model when a ZipMap
    /// output was normalised.
    pub bytes: Vec<u8>,
    /// The normalised ZipMap outputs, in graph-output order.
    pub zipmaps: Vec<ZipMapOutput>,
    /// Nodes, subgraphs included.
    pub nodes: usize,
}

/// Checks an uploaded ONNX file and normalises its ZipMap outputs (see the module docs).
pub fn inspect(bytes: Vec<u8>, limits: &Limits) -> Result<ImportedGraph, ImportError> {
    // Decoding from `Bytes` lets the tensors borrow the upload instead of copying it.
    let bytes = Bytes::from(bytes);
    let mut model = ModelProto::decode(bytes.clone())
        .map_err(|e| ImportError::Format(format!("cannot decode the protobuf: {e}")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Format("the file has no graph".to_owned()))?;
    if graph.output.is_empty() {
        return Err(ImportError::Format("the graph has no outputs".to_owned()));
    }
    check_opsets(&model)?;
    if !model.functions.is_empty() {
        let names: Vec<String> = model
            .functions
            .iter()
            .map(|f| format!("`{}:{}`", f.domain(), f.name()))
            .collect();
        return Err(ImportError::Operator(format!(
            "the model defines local functions ({}); ml-api accepts only the standard ai.onnx and ai.onnx.ml operators",
            names.join(", ")
        )));
    }
    let mut walk = Walk::default();
    walk.graph(graph);
    if walk.nodes > limits.max_nodes {
        return Err(ImportError::TooManyNodes {
            nodes: walk.nodes,
            max: limits.max_nodes,
        });
    }
    if !walk.refused.is_empty() {
        let found: Vec<String> = walk
            .refused
            .iter()
            .map(|(op, count)| {
                format!(
                    "`{op}` ({count} node{})",
                    if *count == 1 { "" } else { "s" }
                )
            })
            .collect();
        return Err(ImportError::Operator(format!(
            "operators outside the standard sets: {}; ml-api accepts the {} ai.onnx and {} ai.onnx.ml operators of ONNX 1.23 (no custom domains)",
            found.join(", "),
            operators::AI_ONNX.len(),
            operators::AI_ONNX_ML.len()
        )));
    }
    if let Some(name) = walk.external {
        return Err(ImportError::ExternalData(name));
    }
    let nodes = walk.nodes;
    let zipmaps = rewrite_zipmaps(&mut model)?;
    let bytes = if zipmaps.is_empty() {
        drop(model);
        // The upload itself (no copy: `model` no longer borrows it).
        Vec::from(bytes)
    } else {
        model.encode_to_vec()
    };
    Ok(ImportedGraph {
        bytes,
        zipmaps,
        nodes,
    })
}

fn check_opsets(model: &ModelProto) -> Result<(), ImportError> {
    if model.opset_import.is_empty() {
        return Err(ImportError::Format("the model imports no opset".to_owned()));
    }
    for opset in &model.opset_import {
        let domain = opset.domain();
        let allowed = match domain {
            "" | "ai.onnx" => AI_ONNX_OPSETS,
            "ai.onnx.ml" => AI_ONNX_ML_OPSETS,
            // Other domains are judged by the nodes that use them.
            _ => continue,
        };
        let version = opset.version();
        if !allowed.contains(&version) {
            return Err(ImportError::Opset {
                domain: if domain.is_empty() { "ai.onnx" } else { domain }.to_owned(),
                version,
                allowed,
            });
        }
    }
    Ok(())
}

/// Counts nodes, collects refused operators and finds external data, subgraphs included.
#[derive(Default)]
struct Walk {
    nodes: usize,
    refused: BTreeMap<String, usize>,
    external: Option<String>,
}

impl Walk {
    fn graph(&mut self, graph: &GraphProto) {
        let tensors = graph.initializer.iter().chain(
            graph
                .sparse_initializer
                .iter()
                .flat_map(proto::sparse_parts),
        );
        for tensor in tensors {
            self.tensor(tensor);
        }
        for node in &graph.node {
            self.node(node);
        }
    }

    fn node(&mut self, node: &NodeProto) {
        self.nodes += 1;
        let domain = proto::domain_name(node);
        let allowed = match domain {
            "" => operators::AI_ONNX,
            "ai.onnx.ml" => operators::AI_ONNX_ML,
            _ => &[],
        };
        if allowed.binary_search(&node.op_type()).is_err() {
            let domain = if domain.is_empty() { "ai.onnx" } else { domain };
            *self
                .refused
                .entry(format!("{domain}:{}", node.op_type()))
                .or_default() += 1;
        }
        for attribute in &node.attribute {
            for tensor in proto::tensors(attribute) {
                self.tensor(tensor);
            }
            for graph in proto::subgraphs(attribute) {
                self.graph(graph);
            }
        }
    }

    fn tensor(&mut self, tensor: &TensorProto) {
        if proto::is_external(tensor) && self.external.is_none() {
            self.external = Some(tensor.name().to_owned());
        }
    }
}

/// Turns each ZipMap graph output into the tensor it was given; returns them in graph-output
/// order (none: the model is left as it was).
///
/// Only a ZipMap of the main graph whose output is a graph output and feeds no other node is
/// rewritten: it becomes `Identity(probabilities) -> <same name>`, the output is declared
/// float `[N, K]` with K the number of class labels, and its `value_info` entry is dropped.
fn rewrite_zipmaps(model: &mut ModelProto) -> Result<Vec<ZipMapOutput>, ImportError> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for index in 0..graph.node.len() {
        let node = &graph.node[index];
        if node.op_type() != "ZipMap" || proto::domain_name(node) != "ai.onnx.ml" {
            continue;
        }
        let ([input], [output]) = (node.input.as_slice(), node.output.as_slice()) else {
            continue;
        };
        let is_graph_output = graph.output.iter().any(|o| o.name() == output);
        let consumed = graph.node.iter().any(|n| n.input.contains(output));
        if !is_graph_output || consumed {
            continue;
        }
        let (classes, class_values) = zipmap_labels(node).ok_or_else(|| {
            ImportError::Format(format!(
                "ZipMap node `{}` has neither classlabels_strings nor classlabels_int64s",
                node.name.as_deref().unwrap_or(output)
            ))
        })?;
        let (input, output) = (input.clone(), output.clone());
        graph.node[index] = writer::node("Identity", "", &[&input], &[&output], Vec::new());
        let width = i64::try_from(classes.len()).unwrap_or(i64::MAX);
        let declared = writer::value_info(&output, writer::TENSOR_FLOAT, &[None, Some(width)]);
        for value in graph.output.iter_mut().filter(|o| o.name() == output) {
            *value = declared.clone();
        }
        graph.value_info.retain(|v| v.name() != output);
        found.push(ZipMapOutput {
            output,
            classes,
            class_values,
        });
    }
    // Graph-output order, so "the first" is well defined.
    let mut zipmaps: Vec<ZipMapOutput> = Vec::new();
    for declared in &graph.output {
        if let Some(at) = found.iter().position(|z| z.output == declared.name()) {
            zipmaps.push(found.swap_remove(at));
        }
    }
    let imports_default = model
        .opset_import
        .iter()
        .any(|o| matches!(o.domain(), "" | "ai.onnx"));
    if !zipmaps.is_empty() && !imports_default {
        // Identity exists in every opset; the oldest one ONNX Runtime guarantees.
        model.opset_import.push(writer::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(*AI_ONNX_OPSETS.start()),
        });
    }
    Ok(zipmaps)
}

/// Points the card at the first normalised ZipMap output (or the one it names) and names its
/// columns with the class labels, where the uploaded card says nothing else. Returns the class
/// values (JSON strings, or integers) when the labels came from the ZipMap.
pub fn label_card(card: &mut ModelCard, zipmaps: &[ZipMapOutput]) -> Option<Vec<Value>> {
    let zipmap = match &card.output {
        Some(output) => zipmaps.iter().find(|z| &z.output == output),
        None => zipmaps.first(),
    }?;
    card.output.get_or_insert_with(|| zipmap.output.clone());
    if !card.labels.is_empty() {
        return None;
    }
    card.labels.clone_from(&zipmap.classes);
    Some(zipmap.class_values.clone())
}

fn zipmap_labels(node: &NodeProto) -> Option<(Vec<String>, Vec<Value>)> {
    if let Some(strings) = proto::attribute_named(node, "classlabels_strings") {
        let classes: Vec<String> = strings
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let values = classes.iter().cloned().map(Value::String).collect();
        return (!classes.is_empty()).then_some((classes, values));
    }
    let ints = &proto::attribute_named(node, "classlabels_int64s")?.ints;
    let classes = ints.iter().map(i64::to_string).collect();
    let values = ints.iter().map(|&i| Value::from(i)).collect();
    (!ints.is_empty()).then_some((classes, values))
}

#[cfg(test)]
mod tests;
