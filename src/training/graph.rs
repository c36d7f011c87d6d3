//! The trained model as a self-contained ONNX graph (ir_version 8; opsets `""` 17 and
//! `ai.onnx.ml` 3), one `[N,1]` input per feature, named as the feature:
//!
//! - numeric: `tensor(float)` → `ai.onnx.ml.Scaler` (offset = mean, scale = 1/std) when
//!   standardised;
//! - categorical: `tensor(string)` → `ai.onnx.ml.OneHotEncoder` (training categories,
//!   `zeros=1`: an unknown category is all zeros) → `Flatten` (`[N,1,C]` → `[N,C]`);
//! - → `Concat(axis=1)` →
//!   - binary/multiclass: `ai.onnx.ml.LinearClassifier` → `label` `[N]` (int64 or string) and
//!     `probabilities` float `[N,K]`. Binary uses ONE coefficient row with
//!     `post_transform=LOGISTIC`, the only form ONNX Runtime 1.31.1 turns into `[1−σ, σ]`;
//!   - multi-label: `MatMul` + `Add` + `Sigmoid` → `probabilities` float `[N,L]`
//!     (independent), `Greater(0.5)` + `Cast` → `label` int64 `[N,L]` (0/1).
//!
//! Internal tensors are named `ml_api.*`, a prefix feature names may not use.

use super::data::ClassValue;
use super::design::Encoder;
use super::onnx::{self, attr, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};

pub const PROBABILITIES: &str = "probabilities";
pub const LABEL: &str = "label";

/// The linear part of the model, `z = x·Wᵀ + b`, with W row-major `rows × d`.
pub enum Head<'a> {
    /// Binary (one row, for the second class) or multinomial (one row per class).
    Classifier {
        classes: &'a [ClassValue],
        coef: &'a [f64],
        intercept: &'a [f64],
    },
    /// One row per label (each a binary model for P(label = 1)).
    MultiLabel {
        coef: &'a [f64],
        intercept: &'a [f64],
    },
}

fn f32s(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// Serialises the graph.
pub fn build(features: &[String], encoders: &[Encoder], head: &Head<'_>, doc: &str) -> Vec<u8> {
    let mut nodes: Vec<NodeProto> = Vec::new();
    let mut inputs = Vec::new();
    let mut initializers: Vec<TensorProto> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    for (i, (name, encoder)) in features.iter().zip(encoders).enumerate() {
        match encoder {
            Encoder::Numeric { mean, scale } => {
                inputs.push(onnx::value_info(name, onnx::TENSOR_FLOAT, &[None, Some(1)]));
                if *mean == 0.0 && *scale == 1.0 {
                    parts.push(name.clone());
                } else {
                    let out = format!("ml_api.scaled.{i}");
                    let attrs = vec![
                        attr::floats("offset", vec![*mean as f32]),
                        attr::floats("scale", vec![*scale as f32]),
                    ];
                    nodes.push(onnx::node("Scaler", "ai.onnx.ml", &[name], &[&out], attrs));
                    parts.push(out);
                }
            }
            Encoder::Categorical { categories } => {
                inputs.push(onnx::value_info(
                    name,
                    onnx::TENSOR_STRING,
                    &[None, Some(1)],
                ));
                let hot = format!("ml_api.onehot.{i}");
                let flat = format!("ml_api.flat.{i}");
                let attrs = vec![
                    attr::strings("cats_strings", categories),
                    attr::int("zeros", 1),
                ];
                nodes.push(onnx::node(
                    "OneHotEncoder",
                    "ai.onnx.ml",
                    &[name],
                    &[&hot],
                    attrs,
                ));
                nodes.push(onnx::node(
                    "Flatten",
                    "",
                    &[&hot],
                    &[&flat],
                    vec![attr::int("axis", 1)],
                ));
                parts.push(flat);
            }
        }
    }
    let x = "ml_api.features";
    let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    nodes.push(onnx::node(
        "Concat",
        "",
        &part_refs,
        &[x],
        vec![attr::int("axis", 1)],
    ));
    let d = encoders.iter().map(Encoder::width).sum::<usize>() as i64;

    let outputs = match head {
        Head::Classifier {
            classes,
            coef,
            intercept,
        } => {
            let binary = intercept.len() == 1;
            let mut attrs = vec![
                attr::floats("coefficients", f32s(coef)),
                attr::floats("intercepts", f32s(intercept)),
                attr::int("multi_class", 0),
                attr::string(
                    "post_transform",
                    if binary { "LOGISTIC" } else { "SOFTMAX" },
                ),
            ];
            let ints: Option<Vec<i64>> = classes
                .iter()
                .map(|c| match c {
                    ClassValue::Int(i) => Some(*i),
                    _ => None,
                })
                .collect();
            let label_type = match ints {
                Some(ints) => {
                    attrs.push(attr::ints("classlabels_ints", ints));
                    onnx::TENSOR_INT64
                }
                None => {
                    let labels: Vec<String> = classes.iter().map(ClassValue::label).collect();
                    attrs.push(attr::strings("classlabels_strings", &labels));
                    onnx::TENSOR_STRING
                }
            };
            nodes.push(onnx::node(
                "LinearClassifier",
                "ai.onnx.ml",
                &[x],
                &[LABEL, PROBABILITIES],
                attrs,
            ));
            let k = classes.len() as i64;
            vec![
                onnx::value_info(LABEL, label_type, &[None]),
                onnx::value_info(PROBABILITIES, onnx::TENSOR_FLOAT, &[None, Some(k)]),
            ]
        }
        Head::MultiLabel { coef, intercept } => {
            let l = intercept.len();
            let du = d as usize;
            // MatMul wants W transposed: d × L.
            let mut wt = vec![0.0f32; du * l];
            for (row, weights) in coef.chunks_exact(du.max(1)).enumerate() {
                for (j, &w) in weights.iter().enumerate() {
                    if let Some(cell) = wt.get_mut(j * l + row) {
                        *cell = w as f32;
                    }
                }
            }
            let l = l as i64;
            initializers.push(onnx::float_tensor("ml_api.weights", &[d, l], wt));
            initializers.push(onnx::float_tensor("ml_api.bias", &[l], f32s(intercept)));
            initializers.push(onnx::float_tensor("ml_api.half", &[], vec![0.5]));
            nodes.push(onnx::node(
                "MatMul",
                "",
                &[x, "ml_api.weights"],
                &["ml_api.xw"],
                vec![],
            ));
            nodes.push(onnx::node(
                "Add",
                "",
                &["ml_api.xw", "ml_api.bias"],
                &["ml_api.logits"],
                vec![],
            ));
            nodes.push(onnx::node(
                "Sigmoid",
                "",
                &["ml_api.logits"],
                &[PROBABILITIES],
                vec![],
            ));
            nodes.push(onnx::node(
                "Greater",
                "",
                &[PROBABILITIES, "ml_api.half"],
                &["ml_api.positive"],
                vec![],
            ));
            nodes.push(onnx::node(
                "Cast",
                "",
                &["ml_api.positive"],
                &[LABEL],
                vec![attr::int("to", i64::from(onnx::TENSOR_INT64))],
            ));
            vec![
                onnx::value_info(LABEL, onnx::TENSOR_INT64, &[None, Some(l)]),
                onnx::value_info(PROBABILITIES, onnx::TENSOR_FLOAT, &[None, Some(l)]),
            ]
        }
    };
    let opset = |domain: &str, version| OperatorSetIdProto {
        domain: Some(domain.to_owned()),
        version: Some(version),
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![opset("", 17), opset("ai.onnx.ml", 3)],
        producer_name: Some("ml-api".to_owned()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        doc_string: Some(doc.to_owned()),
        graph: Some(onnx::GraphProto {
            node: nodes,
            name: Some("logistic_regression".to_owned()),
            initializer: initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    onnx::encode(&model)
}
