//! Read-only views of an uploaded ONNX file: the fields of `onnx-ml.proto` (proto2) that the
//! import checks look at, as `prost` messages with the schema's field numbers.
//!
//! The writer's messages (`crate::training::onnx`) leave out what a trained graph never sets;
//! these add what an uploaded one may carry: subgraphs (`If`/`Loop`/`Scan` bodies), tensors
//! inside attributes, sparse initializers, external-data markers and model-local functions.
//! prost skips every field not declared here, so these views are never re-encoded: the ZipMap
//! rewrite (`super::wire`) edits the original bytes instead, keeping every other field.

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct ModelView {
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OpsetView>,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphView>,
    #[prost(message, repeated, tag = "25")]
    pub functions: Vec<FunctionView>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OpsetView {
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct FunctionView {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub domain: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphView {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeView>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorView>,
    #[prost(message, repeated, tag = "15")]
    pub sparse_initializer: Vec<SparseTensorView>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueView>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueView>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeView {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeView>,
}

impl NodeView {
    pub fn op(&self) -> &str {
        self.op_type.as_deref().unwrap_or_default()
    }

    /// The node's domain, with `ai.onnx` spelled as its usual empty name.
    pub fn domain_name(&self) -> &str {
        match self.domain.as_deref() {
            None | Some("ai.onnx") => "",
            Some(domain) => domain,
        }
    }

    pub fn attribute_named(&self, name: &str) -> Option<&AttributeView> {
        self.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeView {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorView>,
    #[prost(message, optional, boxed, tag = "6")]
    pub g: Option<Box<GraphView>>,
    #[prost(message, optional, tag = "22")]
    pub sparse_tensor: Option<SparseTensorView>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorView>,
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphView>,
    #[prost(message, repeated, tag = "23")]
    pub sparse_tensors: Vec<SparseTensorView>,
}

impl AttributeView {
    /// Every subgraph this attribute holds.
    pub fn subgraphs(&self) -> impl Iterator<Item = &GraphView> {
        self.g.as_deref().into_iter().chain(&self.graphs)
    }

    /// Every tensor this attribute holds, sparse ones included.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorView> {
        self.t
            .iter()
            .chain(&self.tensors)
            .chain(self.sparse_tensor.iter().flat_map(SparseTensorView::parts))
            .chain(self.sparse_tensors.iter().flat_map(SparseTensorView::parts))
    }
}

/// `TensorProto.DataLocation.EXTERNAL`.
pub const DATA_EXTERNAL: i32 = 1;

#[derive(Clone, PartialEq, Message)]
pub struct TensorView {
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringEntryView>,
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
}

impl TensorView {
    pub fn is_external(&self) -> bool {
        self.data_location == Some(DATA_EXTERNAL) || !self.external_data.is_empty()
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct SparseTensorView {
    #[prost(message, optional, tag = "1")]
    pub values: Option<TensorView>,
    #[prost(message, optional, tag = "2")]
    pub indices: Option<TensorView>,
}

impl SparseTensorView {
    pub fn parts(&self) -> impl Iterator<Item = &TensorView> {
        self.values.iter().chain(&self.indices)
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct StringEntryView {
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueView {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
}
