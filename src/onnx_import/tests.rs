//! The inspector on the committed fixtures (`tests/fixtures/import/`, made by skl2onnx and
//! onnx.helper) and on graphs built here with the schema's generated types.

use prost::Message;
use serde_json::json;

use super::{inspect, ImportError, Limits};
use crate::training::onnx::schema::{
    tensor_proto::DataLocation, AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, ValueInfoProto,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn node(op: &str, domain: &str) -> NodeProto {
    NodeProto {
        input: vec!["x".into()],
        output: vec!["y".into()],
        name: None,
        op_type: Some(op.into()),
        domain: Some(domain.into()),
        attribute: Vec::new(),
        ..NodeProto::default()
    }
}

fn graph(nodes: Vec<NodeProto>) -> GraphProto {
    GraphProto {
        node: nodes,
        output: vec![ValueInfoProto {
            name: Some("y".into()),
            ..ValueInfoProto::default()
        }],
        ..GraphProto::default()
    }
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..ModelProto::default()
    }
}

fn refused(model: &ModelProto) -> ImportError {
    inspect(model.encode_to_vec(), &Limits::default()).unwrap_err()
}

#[test]
fn a_zipmap_output_becomes_the_probability_tensor_with_string_class_names() {
    let uploaded = fixture("import/iris_strings.onnx");
    let imported = inspect(uploaded.clone(), &Limits::default()).unwrap();
    assert_eq!(imported.zipmaps.len(), 1);
    let zipmap = &imported.zipmaps[0];
    assert_eq!(zipmap.output, "output_probability");
    assert_eq!(zipmap.classes, ["setosa", "versicolor", "virginica"]);
    assert_eq!(
        zipmap.class_values,
        [json!("setosa"), json!("versicolor"), json!("virginica")]
    );
    assert_ne!(imported.bytes, uploaded);

    let before = ModelProto::decode(uploaded.as_slice()).unwrap();
    let after = ModelProto::decode(imported.bytes.as_slice()).unwrap();
    let (before, after) = (before.graph.unwrap(), after.graph.unwrap());
    let ops = |g: &GraphProto| {
        g.node
            .iter()
            .map(|n| n.op_type().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(ops(&before).contains(&"ZipMap".to_owned()));
    assert!(!ops(&after).contains(&"ZipMap".to_owned()));
    assert_eq!(ops(&after).last().map(String::as_str), Some("Identity"));
    let names = |g: &GraphProto| {
        g.output
            .iter()
            .map(|o| o.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&before), names(&after), "same output names, in order");
    assert_eq!(before.input, after.input);
    assert_eq!(before.initializer, after.initializer);
    // Normalising twice changes nothing more.
    let again = inspect(imported.bytes.clone(), &Limits::default()).unwrap();
    assert!(again.zipmaps.is_empty());
    assert_eq!(again.bytes, imported.bytes);
}

#[test]
fn integer_class_labels_are_kept_as_integers() {
    let imported = inspect(fixture("import/iris_ints.onnx"), &Limits::default()).unwrap();
    assert_eq!(imported.zipmaps[0].classes, ["0", "1", "2"]);
    assert_eq!(
        imported.zipmaps[0].class_values,
        [json!(0), json!(1), json!(2)]
    );
}

#[test]
fn a_model_without_zipmap_is_stored_byte_for_byte() {
    let tiny = fixture("models/tiny/model.onnx");
    let imported = inspect(tiny.clone(), &Limits::default()).unwrap();
    assert!(imported.zipmaps.is_empty());
    assert_eq!(imported.bytes, tiny);
}

#[test]
fn bytes_that_are_not_an_onnx_model_are_a_format_error() {
    for garbage in [&b"not an onnx file"[..], b"", b"\x08\x01"] {
        let error = inspect(garbage.to_vec(), &Limits::default()).unwrap_err();
        assert_eq!(error.reason(), "format", "{garbage:?}: {error}");
    }
    let mut no_opset = model(graph(vec![node("Identity", "")]));
    no_opset.opset_import.clear();
    assert_eq!(refused(&no_opset).reason(), "format");
}

#[test]
fn opsets_outside_what_onnx_runtime_implements_are_refused() {
    let error = inspect(fixture("import/opset_too_new.onnx"), &Limits::default()).unwrap_err();
    assert!(
        matches!(&error, ImportError::Opset { domain, version: 27, .. } if domain == "ai.onnx"),
        "{error:?}"
    );
    assert!(error.to_string().contains("7..=26"), "{error}");
    let mut old_ml = model(graph(vec![node("Identity", "")]));
    old_ml.opset_import.push(OperatorSetIdProto {
        domain: Some("ai.onnx.ml".into()),
        version: Some(6),
    });
    assert_eq!(refused(&old_ml).reason(), "opset");
}

#[test]
fn custom_domains_unknown_operators_and_local_functions_are_refused() {
    let error = inspect(fixture("import/custom_op.onnx"), &Limits::default()).unwrap_err();
    assert_eq!(error.reason(), "operator");
    assert!(
        error
            .to_string()
            .contains("`com.example:Scramble` (1 node)"),
        "{error}"
    );

    let typo = refused(&model(graph(vec![
        node("Identity", ""),
        node("Idnetity", ""),
    ])));
    assert!(typo.to_string().contains("`ai.onnx:Idnetity`"), "{typo}");
    let ms = refused(&model(graph(vec![node("FusedMatMul", "com.microsoft")])));
    assert_eq!(ms.reason(), "operator");

    let mut with_function = model(graph(vec![node("Identity", "")]));
    with_function.functions.push(FunctionProto {
        name: Some("Helper".into()),
        domain: Some("local".into()),
        ..FunctionProto::default()
    });
    assert!(refused(&with_function)
        .to_string()
        .contains("`local:Helper`"));
}

#[test]
fn operators_inside_subgraphs_are_checked_too() {
    let mut branch = node("If", "");
    branch.attribute.push(AttributeProto {
        name: Some("then_branch".into()),
        g: Some(graph(vec![node("Scramble", "com.example")])),
        ..AttributeProto::default()
    });
    let error = refused(&model(graph(vec![branch])));
    assert!(
        error.to_string().contains("com.example:Scramble"),
        "{error}"
    );
}

#[test]
fn tensors_stored_outside_the_file_are_refused() {
    let mut g = graph(vec![node("Identity", "")]);
    g.initializer.push(TensorProto {
        name: Some("weights".into()),
        external_data: Vec::new(),
        data_location: Some(DataLocation::External as i32),
        ..TensorProto::default()
    });
    assert_eq!(
        refused(&model(g)),
        ImportError::ExternalData("weights".into())
    );

    let mut constant = node("Constant", "");
    constant.attribute.push(AttributeProto {
        name: Some("value".into()),
        t: Some(TensorProto {
            name: Some("c".into()),
            external_data: vec![StringStringEntryProto {
                key: Some("location".into()),
                value: Some("c.bin".into()),
            }],
            data_location: None,
            ..TensorProto::default()
        }),
        ..AttributeProto::default()
    });
    assert_eq!(
        refused(&model(graph(vec![constant]))).reason(),
        "external_data"
    );
}

#[test]
fn graphs_over_the_node_limit_are_refused() {
    let error = inspect(
        fixture("import/iris_strings.onnx"),
        &Limits { max_nodes: 2 },
    )
    .unwrap_err();
    assert!(
        matches!(error, ImportError::TooManyNodes { max: 2, .. }),
        "{error:?}"
    );
    assert_eq!(error.reason(), "size");
}

#[test]
fn the_card_takes_the_zipmap_output_and_labels_only_where_it_says_nothing() {
    let zipmaps = inspect(fixture("import/iris_ints.onnx"), &Limits::default())
        .unwrap()
        .zipmaps;
    let mut empty = crate::model::ModelCard::default();
    let values = super::label_card(&mut empty, &zipmaps);
    assert_eq!(empty.output.as_deref(), Some("output_probability"));
    assert_eq!(empty.labels, ["0", "1", "2"]);
    assert_eq!(values, Some(vec![json!(0), json!(1), json!(2)]));

    let mut named = crate::model::ModelCard {
        labels: vec!["a".into(), "b".into(), "c".into()],
        ..Default::default()
    };
    assert_eq!(super::label_card(&mut named, &zipmaps), None);
    assert_eq!(named.labels, ["a", "b", "c"], "the uploader's labels win");
    assert_eq!(named.output.as_deref(), Some("output_probability"));

    let mut elsewhere = crate::model::ModelCard {
        output: Some("scores".into()),
        ..Default::default()
    };
    assert_eq!(super::label_card(&mut elsewhere, &zipmaps), None);
    assert!(elsewhere.labels.is_empty());
}
