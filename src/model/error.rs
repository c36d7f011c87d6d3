//! A problem with one field of a request, as data: where (the record's row in a batch and
//! the model input), why, and what to tell a human.

use serde::Serialize;
use utoipa::ToSchema;

/// One problem with one field of a request. Serialized as `{"field", "reason", "message"}`;
/// the row and feature stay data for the code that counts failures.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where the problem is: a field name, or `[i].field` inside a batch.
    pub field: String,
    /// Machine-readable reason: `missing`, `type`, `range`, `category`, `null`, `shape`, ...
    pub reason: &'static str,
    /// What is wrong, for humans.
    pub message: String,
    /// The record's index, when the problem is in one record of a batch.
    #[serde(skip)]
    #[schema(ignore)]
    pub row: Option<usize>,
    /// The model input the problem is about, when it is about one.
    #[serde(skip)]
    #[schema(ignore)]
    pub feature: Option<String>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason,
            message: message.into(),
            row: None,
            feature: None,
        }
    }

    /// A problem with model input `feature` (or the whole record, when `None`) of the record at
    /// `row` inside a batch (`None`: the body is one record). The path reads `[row].feature`,
    /// `[row]` or `feature`.
    pub fn in_record(
        row: Option<usize>,
        feature: Option<&str>,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let field = match (row, feature) {
            (Some(row), Some(feature)) => format!("[{row}].{feature}"),
            (Some(row), None) => format!("[{row}]"),
            (None, Some(feature)) => feature.to_owned(),
            (None, None) => "record".to_owned(),
        };
        Self {
            row,
            feature: feature.map(str::to_owned),
            ..Self::new(field, reason, message)
        }
    }

    /// The `feature` label of a counted failure: the model input, `record` for a record as a
    /// whole, else the field (e.g. `body`).
    pub fn feature_label(&self) -> &str {
        match (&self.feature, self.row) {
            (Some(feature), _) => feature,
            (None, Some(_)) => "record",
            (None, None) => &self.field,
        }
    }
}
