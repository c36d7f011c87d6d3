use serde_json::json;

use super::*;
use crate::model::{
    card::{FieldCard, ModelCard, UnknownCategory},
    schema::{InputSpec, OutputSpec},
};

fn schema() -> ModelSchema {
    let input = |name: &str, element| InputSpec {
        name: name.to_owned(),
        element,
        rank: 2,
    };
    let mut card = ModelCard::default();
    card.fields.insert(
        "color".into(),
        FieldCard {
            categories: Some(vec!["red".into(), "green".into()]),
            unknown: UnknownCategory::Reject,
            ..FieldCard::default()
        },
    );
    card.fields.insert(
        "count".into(),
        FieldCard {
            min: Some(0.0),
            max: Some(100.0),
            ..FieldCard::default()
        },
    );
    card.fields.insert(
        "weight".into(),
        FieldCard {
            nullable: true,
            ..FieldCard::default()
        },
    );
    ModelSchema::build(
        &[
            input("color", ElementType::String),
            input("count", ElementType::Int64),
            input("weight", ElementType::Float32),
        ],
        &[OutputSpec {
            name: "probabilities".into(),
            width: None,
        }],
        &card,
    )
    .unwrap()
}

fn decode_body(body: serde_json::Value) -> Result<FeatureBatch, Vec<FieldError>> {
    let records = records(&body, 10)?;
    decode(&schema(), &records)
}

#[test]
fn a_valid_record_becomes_one_row_per_column() {
    let batch = decode_body(json!({"color": "red", "count": 3, "weight": 1.5, "extra": "ignored"}))
        .unwrap();
    assert_eq!(batch.rows, 1);
    assert_eq!(
        batch.columns,
        vec![
            Column::String(vec!["red".into()]),
            Column::Int64(vec![3]),
            Column::Float32(vec![1.5]),
        ]
    );
}

#[test]
fn lenient_numbers_are_accepted() {
    let batch = decode_body(json!({"color": "green", "count": " 56", "weight": "2.5"})).unwrap();
    assert_eq!(batch.columns[1], Column::Int64(vec![56]));
    assert_eq!(batch.columns[2], Column::Float32(vec![2.5]));
    let batch = decode_body(json!({"color": "green", "count": 7.0, "weight": 1})).unwrap();
    assert_eq!(batch.columns[1], Column::Int64(vec![7]));
}

#[test]
fn nullable_fields_become_nan_when_null_or_absent() {
    for body in [
        json!({"color": "red", "count": 1, "weight": null}),
        json!({"color": "red", "count": 1}),
    ] {
        let batch = decode_body(body).unwrap();
        let Column::Float32(values) = &batch.columns[2] else {
            panic!("wrong column")
        };
        assert!(values[0].is_nan());
    }
}

#[test]
fn every_problem_is_reported_with_its_field_and_reason() {
    let errors = decode_body(json!({"color": "blue", "count": 101, "weight": true})).unwrap_err();
    let reasons: Vec<_> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("color", "category"),
            ("count", "range"),
            ("weight", "type")
        ]
    );
    let errors = decode_body(json!({"count": 1.5, "weight": 1})).unwrap_err();
    let reasons: Vec<_> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.reason))
        .collect();
    assert_eq!(reasons, vec![("color", "missing"), ("count", "type")]);
}

#[test]
fn batch_errors_name_the_record() {
    let errors = decode_body(json!([
        {"color": "red", "count": 1, "weight": 1},
        {"color": "red", "count": -1, "weight": 1},
        "not a record"
    ]))
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "[2]");
    let errors = decode_body(json!([
        {"color": "red", "count": 1, "weight": 1},
        {"color": "red", "count": -1, "weight": 1}
    ]))
    .unwrap_err();
    assert_eq!(errors[0].field, "[1].count");
    assert_eq!(errors[0].reason, "range");
}

#[test]
fn bodies_that_are_not_records_are_refused() {
    for (body, reason) in [
        (json!([]), "empty"),
        (json!(42), "type"),
        (json!("text"), "type"),
        (json!(vec![json!({}); 11]), "too_many_records"),
    ] {
        let errors = decode_body(body).unwrap_err();
        assert_eq!(errors[0].reason, reason);
        assert_eq!(errors[0].field, "body");
    }
}

#[test]
fn error_lists_are_capped() {
    let body = json!(vec![json!({}); 10]);
    let records = records(&body, 10).unwrap();
    let mut wide = schema();
    for i in 0..20 {
        let mut field = wide.fields[0].clone();
        field.name = format!("f{i}");
        wide.fields.push(field);
    }
    let errors = decode(&wide, &records).unwrap_err();
    assert_eq!(errors.len(), MAX_REPORTED_ERRORS);
}

#[test]
fn cards_that_contradict_the_graph_are_refused() {
    let mut card = ModelCard::default();
    card.fields.insert("nope".into(), FieldCard::default());
    let inputs = [InputSpec {
        name: "x".into(),
        element: ElementType::Float32,
        rank: 2,
    }];
    let outputs = [OutputSpec {
        name: "probabilities".into(),
        width: Some(2),
    }];
    assert!(ModelSchema::build(&inputs, &outputs, &card).is_err());
    let card = ModelCard {
        labels: vec!["a".into(), "b".into(), "c".into()],
        ..ModelCard::default()
    };
    assert!(ModelSchema::build(&inputs, &outputs, &card).is_err());
    let card = ModelCard {
        labels: vec!["a".into(), "b".into()],
        ..ModelCard::default()
    };
    assert!(ModelSchema::build(&inputs, &outputs, &card).is_ok());
}
