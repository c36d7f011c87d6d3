//! What the import checks ask of the generated ONNX messages (`crate::training::onnx`, from
//! the vendored `onnx-ml.proto`): a node's operator and domain, and every subgraph and tensor
//! an attribute holds.

use crate::training::onnx::schema::{
    tensor_proto::DataLocation, AttributeProto, GraphProto, NodeProto, SparseTensorProto,
    TensorProto,
};

/// The node's domain, with `ai.onnx` spelled as its usual empty name.
pub fn domain_name(node: &NodeProto) -> &str {
    match node.domain() {
        "ai.onnx" => "",
        domain => domain,
    }
}

pub fn attribute_named<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

/// Every subgraph an attribute holds.
pub fn subgraphs(attribute: &AttributeProto) -> impl Iterator<Item = &GraphProto> {
    attribute.g.iter().chain(&attribute.graphs)
}

/// Every tensor an attribute holds, sparse ones included.
pub fn tensors(attribute: &AttributeProto) -> impl Iterator<Item = &TensorProto> {
    attribute
        .t
        .iter()
        .chain(&attribute.tensors)
        .chain(attribute.sparse_tensor.iter().flat_map(sparse_parts))
        .chain(attribute.sparse_tensors.iter().flat_map(sparse_parts))
}

pub fn sparse_parts(sparse: &SparseTensorProto) -> impl Iterator<Item = &TensorProto> {
    sparse.values.iter().chain(&sparse.indices)
}

/// Whether the tensor's data lives in another file.
pub fn is_external(tensor: &TensorProto) -> bool {
    tensor.data_location() == DataLocation::External || !tensor.external_data.is_empty()
}
