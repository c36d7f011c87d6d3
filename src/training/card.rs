//! The model card and ONNX graph of a fitted model.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::data::{ClassValue, FeatureValues, Target};
use super::design::Encoder;
use super::graph::{self, Head};
use super::model::{LinearModel, ModelKind};
use super::{TrainedModel, TrainingJob, TrainingMetrics};
use crate::model::{
    card::{FieldCard, ModelCard, UnknownCategory},
    contract::{self, Contract, ContractPolicy, FieldContract},
};

pub fn finish(
    job: &TrainingJob,
    model: LinearModel,
    classes: &[ClassValue],
    metrics: TrainingMetrics,
    contract: Contract,
) -> TrainedModel {
    let kind = match model.kind {
        ModelKind::Binary => "binary",
        ModelKind::Multinomial => "multinomial",
        ModelKind::MultiLabel => "multi-label (one-vs-rest)",
    };
    let description = format!(
        "Logistic regression ({kind}, {} output columns) on {} features, trained by ml-api on {} rows",
        classes.len(),
        job.features.len(),
        metrics.train_rows
    );
    let head = match model.kind {
        ModelKind::MultiLabel => Head::MultiLabel {
            coef: &model.coef,
            intercept: &model.intercept,
        },
        _ => Head::Classifier {
            classes,
            coef: &model.coef,
            intercept: &model.intercept,
        },
    };
    let onnx = graph::build(&job.features, &model.encoders, &head, &description);

    let fields = job
        .features
        .iter()
        .zip(&model.encoders)
        .map(|(name, encoder)| {
            let card = match encoder {
                Encoder::Numeric { .. } => FieldCard {
                    description: Some("numeric feature".to_owned()),
                    ..FieldCard::default()
                },
                Encoder::Categorical { categories } => FieldCard {
                    description: Some(
                        "categorical feature (one-hot; a category not seen in training is refused under the contract's default policy)"
                            .to_owned(),
                    ),
                    categories: Some(categories.clone()),
                    unknown: UnknownCategory::Accept,
                    ..FieldCard::default()
                },
            };
            (name.clone(), card)
        })
        .collect();
    let target = match &job.target {
        Target::Classes { name, .. } => json!(name),
        Target::MultiLabel { names, .. } => json!(names),
    };
    let class_values: Vec<Value> = classes.iter().map(ClassValue::to_json).collect();
    let feature_kinds: Map<String, Value> = job
        .features
        .iter()
        .zip(&job.columns)
        .map(|(name, column)| {
            let kind = match column {
                FeatureValues::Numeric(_) => "numeric",
                FeatureValues::Categorical(_) => "categorical",
            };
            (name.clone(), json!(kind))
        })
        .collect();
    let training = json!({
        "algorithm": "logistic_regression",
        "kind": kind,
        "features": feature_kinds,
        "target": target,
        "classes": class_values,
        "params": job.params.to_json(),
        "rows": {"total": job.rows(), "train": metrics.train_rows, "test": metrics.test_rows},
        "metrics": metrics,
    });
    let card = ModelCard {
        name: None,
        version: None,
        description: Some(description),
        output: Some(graph::PROBABILITIES.to_owned()),
        labels: classes.iter().map(ClassValue::label).collect(),
        fields,
        ignored_fields: Default::default(),
        example: Some(example(job)),
        batching: None,
        training: Some(training),
        contract: Some(contract),
    };
    TrainedModel {
        onnx,
        card,
        class_values,
        multi_label: model.kind == ModelKind::MultiLabel,
        metrics,
        model,
    }
}

/// The first training row as a request record (the card's example, used to warm up).
fn example(job: &TrainingJob) -> Value {
    let record: Map<String, Value> = job
        .features
        .iter()
        .zip(&job.columns)
        .map(|(name, column)| {
            let value = match column {
                FeatureValues::Numeric(v) => v.first().map_or(Value::Null, |x| json!(x)),
                FeatureValues::Categorical(v) => v.first().map_or(Value::Null, |s| json!(s)),
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(record)
}

/// The profile of each feature over the training rows (`rows`: their indices): the fields
/// of the model's contract. It does not depend on the fit, so a training job computes it
/// while the optimiser runs.
pub fn field_profiles(job: &TrainingJob, rows: &[usize]) -> BTreeMap<String, FieldContract> {
    use rayon::prelude::*;
    // One feature per task.
    job.features
        .par_iter()
        .zip(&job.columns)
        .map(|(name, column)| {
            let field = match column {
                // Without a test split the training rows are every row, in order.
                FeatureValues::Numeric(v) if rows.len() == v.len() => FieldContract::numeric(v),
                FeatureValues::Numeric(v) => FieldContract::numeric(
                    &rows
                        .iter()
                        .filter_map(|&i| v.get(i).copied())
                        .collect::<Vec<_>>(),
                ),
                FeatureValues::Categorical(v) => FieldContract::categorical(
                    rows.iter().filter_map(|&i| v.get(i).map(String::as_str)),
                ),
            };
            (name.clone(), field)
        })
        .collect()
}

/// The feature contract of `rows` training rows: the fields' profiles, with the share of rows
/// the fitted model gives to each of its `width` output columns.
pub fn contract(
    fields: BTreeMap<String, FieldContract>,
    rows: usize,
    winners: &[usize],
    width: usize,
) -> Contract {
    Contract {
        policy: ContractPolicy::default(),
        fields,
        predictions: Some(contract::winner_shares(winners, width)),
        samples: rows as u64,
    }
}
