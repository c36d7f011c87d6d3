//! Reference inputs and outputs sent with an upload: the records are scored by the loaded
//! model and its scores must equal the uploader's within a tolerance, or the upload is refused
//! with the largest difference and where it is.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    model::{decode, FieldError, Scores},
    serving::{scorer, LoadedModel},
};

/// Absolute tolerance when the reference gives none.
pub const DEFAULT_TOLERANCE: f64 = 1e-4;

/// The upload's `reference` part:
/// `{"inputs": [record, ...], "outputs": [[p, ...], ...], "tolerance": 1e-4}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Records in the JSON shape `POST /predict` takes.
    pub inputs: Vec<Map<String, Value>>,
    /// The expected scores, one row per record (the served output, e.g. the probabilities).
    pub outputs: Vec<Vec<f64>>,
    /// Largest absolute difference allowed per value.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    DEFAULT_TOLERANCE
}

impl Reference {
    /// Parses the part, checking it is consistent (as many output rows as records, at most
    /// `max_records`, a finite non-negative tolerance).
    pub fn parse(bytes: &[u8], max_records: usize) -> Result<Self, FieldError> {
        let invalid = |reason, message: String| FieldError::new("reference", reason, message);
        let reference: Self = serde_json::from_slice(bytes).map_err(|e| {
            invalid(
                "format",
                format!("expected {{\"inputs\": [records], \"outputs\": [[numbers]], \"tolerance\": number}}: {e}"),
            )
        })?;
        if reference.inputs.is_empty() {
            return Err(invalid("empty", "`inputs` holds no record".to_owned()));
        }
        if reference.inputs.len() > max_records {
            return Err(invalid(
                "too_many_records",
                format!(
                    "at most {max_records} records, got {}",
                    reference.inputs.len()
                ),
            ));
        }
        if reference.outputs.len() != reference.inputs.len() {
            return Err(invalid(
                "shape",
                format!(
                    "{} output rows for {} input records",
                    reference.outputs.len(),
                    reference.inputs.len()
                ),
            ));
        }
        if !(reference.tolerance.is_finite() && reference.tolerance >= 0.0) {
            return Err(invalid(
                "range",
                format!(
                    "tolerance must be a number >= 0, got {}",
                    reference.tolerance
                ),
            ));
        }
        Ok(reference)
    }

    /// Scores the records with `model` (validated like `/predict` records, field paths under
    /// `reference.inputs`) and refuses with the largest difference when it is over tolerance.
    pub async fn check(&self, model: &LoadedModel) -> Result<(), Vec<FieldError>> {
        let records = Value::Array(self.inputs.iter().cloned().map(Value::Object).collect());
        let decoded =
            decode::from_value(&model.schema, &records, usize::MAX).map_err(|errors| {
                errors
                    .into_iter()
                    .map(|e| FieldError {
                        field: format!("reference.inputs{}", e.field),
                        ..e
                    })
                    .collect::<Vec<_>>()
            })?;
        let scores = scorer::infer(model, decoded.batch).await.map_err(|error| {
            vec![FieldError::new(
                "reference",
                "unservable",
                format!("the model cannot score the reference records: {error}"),
            )]
        })?;
        match self.compare(&scores) {
            Ok(None) => Ok(()),
            Ok(Some(difference)) => Err(vec![
                difference.to_field_error(self.tolerance, &model.schema.labels)
            ]),
            Err(error) => Err(vec![error]),
        }
    }

    /// The largest absolute difference between `scores` and the expected outputs (`None`
    /// when every value is within the tolerance), or why they cannot be compared.
    pub fn compare(&self, scores: &Scores) -> Result<Option<Difference>, FieldError> {
        if scores.rows != self.outputs.len() {
            return Err(FieldError::new(
                "reference.outputs",
                "shape",
                format!(
                    "the model returned {} rows for {} records",
                    scores.rows,
                    self.outputs.len()
                ),
            ));
        }
        let mut largest: Option<Difference> = None;
        for (record, (expected, got)) in self.outputs.iter().zip(scores.iter_rows()).enumerate() {
            if expected.len() != got.len() {
                return Err(FieldError::new(
                    format!("reference.outputs[{record}]"),
                    "shape",
                    format!(
                        "{} values, but the model returns {} per record",
                        expected.len(),
                        got.len()
                    ),
                ));
            }
            for (column, (&want, &have)) in expected.iter().zip(got).enumerate() {
                let have = f64::from(have);
                // NaN compares as an infinite difference, never as a match.
                let difference = match (want - have).abs() {
                    d if d.is_nan() => f64::INFINITY,
                    d => d,
                };
                if largest.as_ref().is_none_or(|l| difference > l.difference) {
                    largest = Some(Difference {
                        record,
                        column,
                        expected: want,
                        got: have,
                        difference,
                    });
                }
            }
        }
        Ok(largest.filter(|l| l.difference > self.tolerance))
    }
}

/// Where ml-api's output is furthest from the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub record: usize,
    pub column: usize,
    pub expected: f64,
    pub got: f64,
    pub difference: f64,
}

impl Difference {
    /// The field error of a refused upload; `labels` name the columns when known.
    pub fn to_field_error(&self, tolerance: f64, labels: &[String]) -> FieldError {
        let column = match labels.get(self.column) {
            Some(label) => format!("column {} (`{label}`)", self.column),
            None => format!("column {}", self.column),
        };
        FieldError::new(
            format!("reference.outputs[{}][{}]", self.record, self.column),
            "mismatch",
            format!(
                "largest difference {:.6} (tolerance {tolerance:e}) at record {}, {column}: ml-api computed {:.6}, the reference says {:.6}",
                self.difference, self.record, self.got, self.expected
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(rows: &[[f32; 2]]) -> Scores {
        Scores {
            rows: rows.len(),
            width: 2,
            values: rows.iter().flatten().copied().collect(),
        }
    }

    fn reference(outputs: Vec<Vec<f64>>) -> Reference {
        let body = serde_json::json!({"inputs": vec![serde_json::json!({"x": 1}); outputs.len()], "outputs": outputs});
        Reference::parse(body.to_string().as_bytes(), 10).unwrap()
    }

    #[test]
    fn the_default_tolerance_accepts_float32_rounding() {
        let r = reference(vec![vec![0.25, 0.75], vec![0.1, 0.9]]);
        assert_eq!(r.tolerance, DEFAULT_TOLERANCE);
        assert_eq!(r.compare(&scores(&[[0.25, 0.75], [0.1, 0.9]])), Ok(None));
    }

    #[test]
    fn the_largest_difference_is_reported_with_its_record_and_column() {
        let r = reference(vec![vec![0.25, 0.75], vec![0.1, 0.9]]);
        let d = r
            .compare(&scores(&[[0.25, 0.7], [0.4, 0.6]]))
            .unwrap()
            .unwrap();
        assert_eq!((d.record, d.column), (1, 0));
        assert!((d.difference - 0.3).abs() < 1e-6);
        let error = d.to_field_error(r.tolerance, &["a".into(), "b".into()]);
        assert_eq!(error.field, "reference.outputs[1][0]");
        assert_eq!(error.reason, "mismatch");
        assert!(error.message.contains("0.300000"), "{}", error.message);
        assert!(error.message.contains("(`a`)"), "{}", error.message);
    }

    #[test]
    fn a_nan_output_never_matches() {
        let r = reference(vec![vec![0.25, 0.75]]);
        let d = r.compare(&scores(&[[f32::NAN, 0.75]])).unwrap().unwrap();
        assert_eq!(d.difference, f64::INFINITY);
    }

    #[test]
    fn inconsistent_references_are_refused_with_the_reason() {
        let parse = |body: serde_json::Value| Reference::parse(body.to_string().as_bytes(), 2);
        let reason = |body| parse(body).unwrap_err().reason;
        assert_eq!(reason(serde_json::json!({"inputs": []})), "format");
        assert_eq!(
            reason(serde_json::json!({"inputs": [], "outputs": []})),
            "empty"
        );
        assert_eq!(
            reason(serde_json::json!({"inputs": [{}], "outputs": []})),
            "shape"
        );
        assert_eq!(
            reason(serde_json::json!({"inputs": [{}, {}, {}], "outputs": [[1], [1], [1]]})),
            "too_many_records"
        );
        assert_eq!(
            reason(serde_json::json!({"inputs": [{}], "outputs": [[1]], "tolerance": -1})),
            "range"
        );
        let wrong_width = parse(serde_json::json!({"inputs": [{}], "outputs": [[1, 2, 3]]}))
            .unwrap()
            .compare(&scores(&[[0.5, 0.5]]))
            .unwrap_err();
        assert_eq!(wrong_width.field, "reference.outputs[0]");
    }
}
