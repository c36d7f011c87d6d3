//! Inference requests from body bytes to the model's columns (or the protocol's error), with
//! the leniencies and messages V2 over REST has always had: each expected answer below is what
//! the decoder of JSON records gave for the same request before V2 decoded tensors directly.

use super::*;

/// One field of every element type: `age` 0 to 120, `sexo` `H` or `V` (others refused),
/// `renta` nullable, the others plain.
fn schema() -> &'static ModelSchema {
    use crate::model::schema::{ElementType as T, Field};
    static SCHEMA: std::sync::OnceLock<ModelSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let fields = [
            ("age", T::Float32),
            ("sexo", T::String),
            ("renta", T::Float64),
            ("antiguedad", T::Int64),
            ("ind_actividad", T::Int32),
            ("ind_empleado", T::Bool),
        ];
        let fields = fields.map(|(name, element)| {
            let categories: Vec<String> = match name {
                "sexo" => vec!["H".into(), "V".into()],
                _ => Vec::new(),
            };
            Field {
                name: name.to_owned(),
                element,
                description: None,
                min: (name == "age").then_some(0.0),
                max: (name == "age").then_some(120.0),
                nullable: name == "renta",
                allowed: (!categories.is_empty()).then(|| categories.iter().cloned().collect()),
                categories,
            }
        });
        ModelSchema {
            fields: fields.into(),
            output: "probabilities".into(),
            labels: Vec::new(),
        }
    })
}

/// What the handler makes of a body: the error it answers (status, message), or the columns
/// and the records shadow scoring would get.
fn outcome(body: &[u8], header_length: Option<usize>) -> String {
    let header_length = header_length.map(|n| n.to_string());
    let header_length = header_length.as_deref().map(str::as_bytes);
    let error = |e: V2Error| format!("{} {}", e.0.status().as_u16(), message(&e.0));
    let Parsed {
        request, binary, ..
    } = match parse_request(body, header_length, "m", schema()) {
        Ok(parsed) => parsed,
        Err(e) => return error(e),
    };
    let tensors = request.tensors(binary);
    match tensors::decode(schema(), "m", &tensors, 1024) {
        Ok(batch) => format!(
            "{:?} {:?} {}",
            request.id,
            batch.columns,
            tensors::records(&tensors)
        ),
        Err(e) => error(tensor_error(e)),
    }
}

fn json(body: &str) -> String {
    outcome(body.as_bytes(), None)
}

/// A body under the binary-data extension: the JSON header, then `raw`.
fn binary(header: &str, raw: &[u8]) -> String {
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(raw);
    outcome(&body, Some(header.len()))
}

fn tensor(name: &str, datatype: &str, shape: &str, rest: &str) -> String {
    format!(r#"{{"name": "{name}", "shape": {shape}, "datatype": "{datatype}"{rest}}}"#)
}

/// A tensor sent under the binary-data extension: `size` is its `binary_data_size`.
fn sized(name: &str, datatype: &str, shape: &str, size: &str) -> String {
    let parameters = format!(r#", "parameters": {{"binary_data_size": {size}}}"#);
    tensor(name, datatype, shape, &parameters)
}

fn inputs(tensors: &[String]) -> String {
    format!(r#"{{"inputs": [{}]}}"#, tensors.join(", "))
}

#[test]
fn json_tensors_decode_into_columns_nested_or_flat() {
    let body = r#"{"id": "1", "inputs": [{"name": "age", "shape": [2, 1], "datatype": "FP32", "data": [[35], [40]]}, {"name": "sexo", "shape": [2], "datatype": "BYTES", "data": ["H", "V"]}, {"name": "renta", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]}, {"name": "antiguedad", "shape": [2], "datatype": "INT64", "data": [1, 2]}, {"name": "ind_actividad", "shape": [2], "datatype": "INT32", "data": [0, 1]}, {"name": "ind_empleado", "shape": [2], "datatype": "BOOL", "data": [true, false]}], "outputs": [{"name": "probabilities"}]}"#;
    assert_eq!(
        json(body),
        r#"Some("1") [Float32([35.0, 40.0]), String(["H", "V"]), Float64([1.5, 2.5]), Int64([1, 2]), Int32([0, 1]), Bool([true, false])] [{"age":35,"antiguedad":1,"ind_actividad":0,"ind_empleado":true,"renta":1.5,"sexo":"H"},{"age":40,"antiguedad":2,"ind_actividad":1,"ind_empleado":false,"renta":2.5,"sexo":"V"}]"#
    );
}

#[test]
fn json_tensors_keep_the_leniencies_and_messages_of_json_records() {
    // Numbers as text, 56.0 for an integer, 0/1 for a boolean, numbers in BYTES, an integer
    // too large for INT32 or for a double, objects, nulls, a bare value, no `data` at all.
    let lenient = inputs(&[
        tensor("age", "FP32", "[3]", r#", "data": [" 56", 56.0, 56]"#),
        tensor("sexo", "BYTES", "[3]", r#", "data": ["H", 5, "V"]"#),
        tensor("renta", "FP64", "[3]", r#", "data": [null, "1.5", 2]"#),
        tensor(
            "antiguedad",
            "INT64",
            "[3]",
            r#", "data": [56.0, "7", 9007199254740993]"#,
        ),
        tensor(
            "ind_actividad",
            "INT32",
            "[3]",
            r#", "data": [3000000000, -1, 2.5]"#,
        ),
        tensor("ind_empleado", "BOOL", "[3]", r#", "data": [0, 1, 2]"#),
    ]);
    assert_eq!(
        json(&lenient),
        "422 4 invalid fields ([0].ind_actividad: 3000000000 does not fit a 32-bit integer; [1].sexo: expected a string, got a number; [2].ind_actividad: expected an integer, got 2.5; [2].ind_empleado: expected a boolean, got a number)"
    );
    let mixed = inputs(&[
        tensor("age", "FP64", "[2]", r#", "data": [[1, 2.5]]"#),
        tensor("sexo", "BYTES", "[2]", r#", "data": [["H"], ["V"]]"#),
        tensor("renta", "INT64", "[2]", r#", "data": [{}, {"a": [1]}]"#),
        tensor(
            "antiguedad",
            "FP32",
            "[2]",
            r#", "data": [18446744073709551615, -9223372036854775808]"#,
        ),
        tensor("ind_actividad", "INT8", "[2]", r#", "data": [true, null]"#),
        tensor("ind_empleado", "BOOL", "[2]", r#", "data": [true, "true"]"#),
    ]);
    assert_eq!(
        json(&mixed),
        "422 6 invalid fields ([0].renta: expected a number, got an object; [0].antiguedad: expected an integer, got 18446744073709552000; [0].ind_actividad: expected an integer, got a boolean; [1].renta: expected a number, got an object; [1].ind_actividad: must not be null; [1].ind_empleado: expected a boolean, got a string)"
    );
    let bare = inputs(&[
        tensor("age", "FP32", "[1]", ""),
        tensor("sexo", "BYTES", "[1]", r#", "data": null"#),
        tensor("renta", "FP64", "[1]", r#", "data": 5"#),
        tensor("antiguedad", "INT64", "[1]", r#", "data": "12""#),
        tensor("ind_actividad", "INT32", "[1]", r#", "data": [[[[4]]]]"#),
        tensor("ind_empleado", "BOOL", "[1]", r#", "data": {"x": 1}"#),
    ]);
    assert_eq!(
        json(&bare),
        "422 3 invalid fields ([0].age: must not be null; [0].sexo: must not be null; [0].ind_empleado: expected a boolean, got an object)"
    );
    let nulls = inputs(&[
        tensor("renta", "FP64", "[3]", r#", "data": [null, null, 1]"#),
        tensor(
            "ind_empleado",
            "BOOL",
            "[3]",
            r#", "data": [null, false, 0]"#,
        ),
    ]);
    assert!(json(&nulls).starts_with("422 13 invalid fields ([0].age: field is required; [0].sexo: field is required; [0].antiguedad: field is required; [0].ind_actividad: field is required; [0].ind_empleado: must not be null; [1].age"));
    let text = inputs(&[
        tensor("age", "FP32", "[2]", r#", "data": [1, 2]"#),
        tensor("age", "FP32", "[2]", r#", "data": [3, 4]"#),
        tensor("sexo", "BYTES", "[2]", r#", "data": ["H\u0000", "\u0048"]"#),
    ]);
    assert_eq!(
        json(&text),
        "422 7 invalid fields ([0].sexo: must not contain NUL characters; [0].antiguedad: field is required; [0].ind_actividad: field is required; [0].ind_empleado: field is required; [1].antiguedad: field is required; [1].ind_actividad: field is required; [1].ind_empleado: field is required)"
    );
    let ok = inputs(&[
        tensor("a\\u0067e", "F\\u005032", "[2]", r#", "data": [-0, 1e2]"#),
        tensor("sexo", "BYTES", "[2, 1]", r#", "data": ["H", "\u0056"]"#),
        tensor("renta", "FP64", "[2]", r#", "data": [null, "1.5"]"#),
        tensor(
            "antiguedad",
            "INT64",
            "[2]",
            r#", "data": [56.0, 9223372036854775807]"#,
        ),
        tensor(
            "ind_actividad",
            "UINT8",
            "[2]",
            r#", "data": [[1], [" 2"]]"#,
        ),
        tensor("ind_empleado", "BOOL", "[2]", r#", "data": [0, true]"#),
    ]);
    assert_eq!(
        json(&ok),
        r#"None [Float32([-0.0, 100.0]), String(["H", "V"]), Float64([NaN, 1.5]), Int64([56, 9223372036854775807]), Int32([1, 2]), Bool([false, true])] [{"age":-0.0,"antiguedad":56.0,"ind_actividad":1,"ind_empleado":0,"renta":null,"sexo":"H"},{"age":100.0,"antiguedad":9223372036854775807,"ind_actividad":" 2","ind_empleado":true,"renta":"1.5","sexo":"V"}]"#
    );
}

#[test]
fn malformed_requests_get_the_protocols_400_with_the_same_message() {
    let age = |shape: &str, rest: &str| inputs(&[tensor("age", "FP32", shape, rest)]);
    let cases = [
        (inputs(&[]), "400 malformed JSON: the request has no inputs"),
        (
            inputs(&[tensor("nope", "FP32", "[1]", r#", "data": [1]"#)]),
            "400 malformed JSON: unexpected input `nope` for model `m`",
        ),
        (
            age("[-1]", r#", "data": [1]"#),
            "400 malformed JSON: input `age` has shape [-1]; a dimension cannot be negative",
        ),
        (
            age("[1, 2]", r#", "data": [1, 2]"#),
            "400 malformed JSON: input `age` has shape [1, 2]; expected [N] or [N, 1]",
        ),
        (
            age("[0]", ""),
            "400 malformed JSON: input `age` has 1 values for shape [0]",
        ),
        (
            age("[0]", r#", "data": []"#),
            "422 invalid field `body`: a batch must hold at least one record (body: a batch must hold at least one record)",
        ),
        (
            age("[1]", r#", "data": [1], "parameters": {"binary_data_size": 4}"#),
            "400 malformed JSON: binary data of input `age` is truncated",
        ),
        (
            age("[1]", r#", "data": [1], "parameters": {"binary_data_size": 0}"#),
            "400 malformed JSON: input `age` has 0 values for shape [1]",
        ),
        (
            age("[1]", r#", "data": [1], "parameters": {"binary_data_size": 4, "binary_data_size": null}"#),
            "400 malformed JSON: binary_data_size of input `age` is not a number",
        ),
        (
            age("[1]", r#", "data": [1], "parameters": {"binary_data_size": 4.0}"#),
            "400 malformed JSON: binary_data_size of input `age` is not a number",
        ),
        (
            age("[1]", r#", "data": [1], "parameters": {"x": [1, {"y": 1e400}]}"#),
            "400 malformed JSON: invalid inference request: number out of range at line 1 column 110",
        ),
        (
            age("[1]", r#", "data": [1], "parameters": []"#),
            "400 malformed JSON: invalid inference request: invalid type: sequence, expected a map at line 1 column 89",
        ),
        (
            age("[1]", r#", "data": [1e400]"#),
            "400 malformed JSON: invalid inference request: number out of range at line 1 column 76",
        ),
        (
            age("[1]", r#", "data": [1], "name": "x""#),
            "400 malformed JSON: invalid inference request: duplicate field `name` at line 1 column 81",
        ),
        (
            r#"{"inputs": [{"name": "sexo", "shape": [1], "datatype": "FP32", "data": [1]}]}"#
                .to_owned(),
            "400 malformed JSON: input `sexo` has datatype FP32, expected BYTES",
        ),
        (
            r#"{"inputs": [{"name": "age", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "label"}]}"#
                .to_owned(),
            "400 malformed JSON: unknown output `label`; model `m` produces `probabilities`",
        ),
        (
            "[]".to_owned(),
            "400 malformed JSON: invalid inference request: invalid length 1, expected struct InferRequest with 4 elements at line 1 column 2",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(json(&body), expected, "{body}");
    }
}

#[test]
fn binary_tensors_are_cut_from_the_body_in_input_order() {
    let mut raw = Vec::new();
    for text in ["H", "V\u{e9}"] {
        raw.extend_from_slice(&(text.len() as u32).to_le_bytes());
        raw.extend_from_slice(text.as_bytes());
    }
    raw.extend_from_slice(&35f32.to_le_bytes());
    raw.extend_from_slice(&f32::NAN.to_le_bytes());
    raw.extend_from_slice(&7i64.to_le_bytes());
    raw.extend_from_slice(&(-1i64).to_le_bytes());
    raw.extend_from_slice(&[1, 0, 2, 0]);
    let header = inputs(&[
        sized("sexo", "BYTES", "[2]", "12"),
        sized("age", "FP32", "[2, 1]", "8"),
        sized("antiguedad", "INT64", "[2]", "16"),
        sized("ind_empleado", "BOOL", "[2]", "2"),
        sized("ind_actividad", "UINT8", "[2]", "2"),
        tensor("renta", "FP64", "[2]", r#", "data": [1, null]"#),
    ]);
    assert_eq!(
        binary(&header, &raw),
        "422 2 invalid fields ([1].age: must not be null; [1].sexo: `Vé` is not a known category; expected one of `H`, `V`)"
    );
    let mut valid = Vec::new();
    for text in ["H", "V"] {
        valid.extend_from_slice(&1u32.to_le_bytes());
        valid.extend_from_slice(text.as_bytes());
    }
    valid.extend_from_slice(&35f32.to_le_bytes());
    valid.extend_from_slice(&40.5f32.to_le_bytes());
    valid.extend_from_slice(&raw[20..]);
    let header = header.replace(r#""binary_data_size": 12"#, r#""binary_data_size": 10"#);
    assert_eq!(
        binary(&header, &valid),
        r#"None [Float32([35.0, 40.5]), String(["H", "V"]), Float64([1.0, NaN]), Int64([7, -1]), Int32([2, 0]), Bool([true, false])] [{"age":35.0,"antiguedad":7,"ind_actividad":2,"ind_empleado":true,"renta":1,"sexo":"H"},{"age":40.5,"antiguedad":-1,"ind_actividad":0,"ind_empleado":false,"renta":null,"sexo":"V"}]"#
    );
    let age = |datatype: &str, size: &str| inputs(&[sized("age", datatype, "[1]", size)]);
    assert_eq!(
        binary(&age("FP16", "2"), &[0, 0]),
        "400 malformed JSON: unsupported datatype `FP16`"
    );
    assert_eq!(
        binary(&age("FP32", "3"), &[0, 0, 0]),
        "400 malformed JSON: 3 bytes is not a whole number of FP32 elements"
    );
    assert_eq!(
        binary(&age("FP32", "8"), &[0, 0, 0]),
        "400 malformed JSON: binary data of input `age` is truncated"
    );
    let sexo = |size: &str| inputs(&[sized("sexo", "BYTES", "[1]", size)]);
    assert_eq!(
        binary(&sexo("5"), &[9, 0, 0, 0, b'a']),
        "400 malformed JSON: truncated BYTES element"
    );
    assert!(binary(&sexo("6"), &[2, 0, 0, 0, 0xff, b'H'])
        .contains("[0].sexo: `\u{fffd}H` is not a known category"));
    // The first input's problem is the one reported, after that input's own checks.
    let first = inputs(&[
        sized("age", "FP32", "[1]", r#""x""#),
        tensor("nope", "FP32", "[1]", r#", "data": [1]"#),
    ]);
    assert_eq!(
        binary(&first, &[0; 4]),
        "400 malformed JSON: binary_data_size of input `age` is not a number"
    );
    let second = inputs(&[
        sized("age", "FP32", "[1]", "4"),
        sized("antiguedad", "INT64", "[1]", "9"),
    ]);
    assert_eq!(
        binary(&second, &[0, 0, 0, 0, 1]),
        "400 malformed JSON: binary data of input `antiguedad` is truncated"
    );
    assert_eq!(
        outcome(b"{}", Some(3)),
        "400 malformed JSON: Inference-Header-Content-Length exceeds the body"
    );
}

#[test]
fn outputs_come_back_as_raw_bytes_only_when_asked_with_a_boolean() {
    let age = tensor("age", "FP32", "[1]", r#", "data": [1]"#);
    let choice = |rest: &str| {
        let body = format!(r#"{{"inputs": [{age}]{rest}}}"#);
        let parsed = parse_request(body.as_bytes(), None, "m", schema());
        match parsed {
            Ok(parsed) => format!("binary {}", parsed.binary_output),
            Err(e) => format!("{} {}", e.0.status().as_u16(), message(&e.0)),
        }
    };
    let output = |parameters: &str| {
        format!(r#", "outputs": [{{"name": "probabilities", "parameters": {parameters}}}]"#)
    };
    // JSON unless asked: by the request (as tritonclient does when it names no output), or by
    // the output itself, which wins over the request.
    assert_eq!(choice(""), "binary false");
    assert_eq!(
        choice(r#", "outputs": [{"name": "probabilities"}]"#),
        "binary false"
    );
    assert_eq!(
        choice(r#", "parameters": {"binary_data_output": true}"#),
        "binary true"
    );
    assert_eq!(
        choice(r#", "parameters": {"binary_data_output": null, "priority": 1}"#),
        "binary false"
    );
    assert_eq!(choice(&output(r#"{"binary_data": true}"#)), "binary true");
    assert_eq!(
        choice(&format!(
            r#"{}, "parameters": {{"binary_data_output": true}}"#,
            output(r#"{"binary_data": false}"#)
        )),
        "binary false"
    );
    // Anything else is refused with the field that is wrong.
    assert_eq!(
        choice(r#", "parameters": {"binary_data_output": "yes"}"#),
        r#"400 malformed JSON: parameters.binary_data_output must be true or false, not "yes""#
    );
    assert_eq!(
        choice(&output(r#"{"binary_data": 1}"#)),
        "400 malformed JSON: outputs[0].parameters.binary_data must be true or false, not 1"
    );
    assert_eq!(
        choice(&output(r#"{"classification": 3}"#)),
        "400 malformed JSON: outputs[0].parameters.classification: the classification extension is not supported; ask for `probabilities` and rank the scores"
    );
    assert_eq!(
        choice(&output(r#"{"shared_memory_region": "r", "binary_data": false}"#)),
        "400 malformed JSON: outputs[0].parameters.shared_memory_region: the shared-memory extension is not supported; use binary_data"
    );
}
