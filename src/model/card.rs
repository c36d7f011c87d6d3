//! The model card: an optional `card.json` beside `model.onnx` that names the model, labels
//! its outputs and tightens what each input accepts (ranges, categories, nulls).
//!
//! The graph alone is enough to serve a model; the card adds what a graph cannot say.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    /// Graph output holding the scores (default: the first float output).
    pub output: Option<String>,
    /// One label per output column, e.g. product names.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Per-input rules, keyed by graph input name.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldCard>,
    /// Request fields that are accepted but not used by the model, with the reason.
    #[serde(default)]
    pub ignored_fields: BTreeMap<String, String>,
    /// An example record (used in the API documentation and to warm the model up).
    pub example: Option<serde_json::Value>,
    /// Dynamic batching for this model, overriding the server's settings.
    pub batching: Option<BatchingCard>,
    /// Free-form training provenance and metrics.
    pub training: Option<serde_json::Value>,
    /// What the model saw in training, per input, and the policy for requests that leave it
    /// (see `crate::model::contract`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<super::Contract>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingCard {
    /// Most records in one ONNX Runtime call (1 turns batching off).
    pub max_batch_size: Option<usize>,
    /// Microseconds to wait for more requests after the first.
    pub max_delay_us: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldCard {
    pub description: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Numeric inputs only: `null` (or an absent field) is passed to the model as NaN.
    #[serde(default)]
    pub nullable: bool,
    /// String inputs only: the categories seen in training.
    pub categories: Option<Vec<String>>,
    /// What to do with a category not in `categories`.
    #[serde(default)]
    pub unknown: UnknownCategory,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownCategory {
    /// Pass it to the model (which must handle it, e.g. one-hot with `handle_unknown=ignore`).
    #[default]
    Accept,
    /// Refuse the request with 422.
    Reject,
}
