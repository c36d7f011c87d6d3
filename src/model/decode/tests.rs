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

/// Decodes `body` from its bytes and from its `Value`: both must agree, to the message.
fn decode_body(body: serde_json::Value) -> Result<FeatureBatch, Vec<FieldError>> {
    decode_with(&schema(), body, 10)
}

fn decode_with(
    schema: &ModelSchema,
    body: serde_json::Value,
    max_records: usize,
) -> Result<FeatureBatch, Vec<FieldError>> {
    let text = serde_json::to_vec(&body).unwrap();
    let from_bytes = match from_slice(schema, &text, max_records) {
        Ok(decoded) => Ok(decoded),
        Err(RecordsError::Invalid(errors)) => Err(errors),
        Err(RecordsError::Syntax(message)) => panic!("valid JSON refused: {message}"),
    };
    let from_value = from_value(schema, &body, max_records);
    assert_eq!(
        format!("{from_bytes:?}"),
        format!("{from_value:?}"),
        "{body}"
    );
    from_value.map(|decoded| decoded.batch)
}

fn decode_text(text: &str) -> Result<DecodedRecords, RecordsError> {
    from_slice(&schema(), text.as_bytes(), 10)
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
    let mut wide = schema();
    for i in 0..20 {
        let mut field = wide.fields[0].clone();
        field.name = format!("f{i}");
        wide.fields.push(field);
    }
    let errors = decode_with(&wide, body, 10).unwrap_err();
    assert_eq!(errors.len(), MAX_REPORTED_ERRORS);
}

#[test]
fn a_syntax_error_wins_over_the_field_problems_before_it() {
    let Err(RecordsError::Syntax(message)) = decode_text(r#"[{"color": "blue"}, {"count": 1,"#)
    else {
        panic!("a truncated body is a syntax error")
    };
    let expected = serde_json::from_str::<serde_json::Value>(r#"[{"color": "blue"}, {"count": 1,"#)
        .unwrap_err()
        .to_string();
    assert_eq!(message, expected, "the parser's own message");
    // What a skipped value breaks is refused as a parsed body would refuse it.
    for bytes in [
        br#"{"color": "red", "count": 1} x"#.to_vec(),
        br#"{"color": "red", "count": 1, "extra": 1e400}"#.to_vec(),
        b"{\"color\": \"red\", \"count\": 1, \"extra\": [\"\xff\"]}".to_vec(),
        br#"{"color": "red", "count": 1, "extra": {"\ud800": 1}}"#.to_vec(),
    ] {
        let expected = serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_err()
            .to_string();
        match from_slice(&schema(), &bytes, 10) {
            Err(RecordsError::Syntax(message)) => assert_eq!(message, expected),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(&bytes)),
        }
    }
}

#[test]
fn the_bytes_decode_as_the_parsed_value_does() {
    for text in [
        // The last of two equal keys wins, as in a parsed object.
        r#"{"color": "blue", "color": "red", "count": 1}"#,
        // Escaped text, nested values in fields the model does not take.
        r#"{"color": "r\u0065d", "count": "\u0035", "extra": {"a": [1, {"b": null}]}}"#,
        // Arrays and objects where a value belongs are named in the message.
        r#"[{"color": ["red"], "count": {"n": 1}, "weight": [1]}]"#,
        r#"[{"color": "red", "count": 1}, [1, 2], null, true, 1.5, "x"]"#,
        r#"[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"#,
        r#"{"count": 18446744073709551615, "weight": -1e300, "color": "green"}"#,
        r#"null"#,
    ] {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let from_bytes = match decode_text(text) {
            Ok(decoded) => Ok(decoded),
            Err(RecordsError::Invalid(errors)) => Err(errors),
            Err(RecordsError::Syntax(message)) => panic!("{text}: {message}"),
        };
        let from_value = from_value(&schema(), &value, 10);
        assert_eq!(
            format!("{from_bytes:?}"),
            format!("{from_value:?}"),
            "{text}"
        );
    }
    let decoded = decode_text(r#"{"color": "blue", "color": "red", "count": 1}"#).unwrap();
    assert_eq!(decoded.batch.columns[0], Column::String(vec!["red".into()]));
    let errors = match decode_text(r#"[{"color": ["red"], "count": {"n": 1}}]"#) {
        Err(RecordsError::Invalid(errors)) => errors,
        other => panic!("{other:?}"),
    };
    let messages: Vec<_> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        messages,
        [
            ("[0].color", "expected a string, got an array"),
            ("[0].count", "expected an integer, got an object"),
        ]
    );
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

#[test]
fn fields_are_found_at_their_hint_first_and_by_name_otherwise() {
    let schema = schema();
    let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
    for (position, name) in names.iter().enumerate() {
        // At the hint, before it, after it and past the end: always the field's own position.
        for hint in [position, 0, names.len() - 1, names.len() + 5] {
            assert_eq!(
                schema.field_index(name, hint),
                Some(position),
                "{name} at {hint}"
            );
        }
    }
    assert_eq!(schema.field_index("absent", 0), None);
    assert_eq!(schema.field_index("", names.len()), None);
}

#[test]
fn json_documents_parse_from_text_or_bytes_alike() {
    use std::marker::PhantomData;
    let parsed: serde_json::Value = from_json_bytes(br#"{"a": [1, "x"]}"#, PhantomData).unwrap();
    assert_eq!(parsed, json!({"a": [1, "x"]}));
    // Trailing content is refused, as `serde_json::from_slice` refuses it.
    let trailing = from_json_bytes::<PhantomData<serde_json::Value>>(b"{} {}", PhantomData);
    assert!(trailing
        .unwrap_err()
        .to_string()
        .contains("trailing characters"));
    // Invalid UTF-8 inside a string: the byte parser's error, naming the position.
    let bad = from_json_bytes::<PhantomData<serde_json::Value>>(b"\"a\xff\"", PhantomData);
    let message = bad.unwrap_err().to_string();
    let expected = serde_json::from_slice::<serde_json::Value>(b"\"a\xff\"")
        .unwrap_err()
        .to_string();
    assert_eq!(message, expected);
}
