//! Entry points of the fuzz targets: each feeds arbitrary client bytes to one decoder that
//! takes them over HTTP, and must return (with an answer or an error) whatever the bytes are.
//! A panic, or an allocation sized by an unchecked number (caught by libFuzzer's
//! `-malloc_limit_mb`), is a finding. `fuzz/` runs them under cargo-fuzz (`make fuzz`);
//! `cargo test` replays the committed corpus and a fixed-seed set of mutations of it
//! (see docs/fuzzing.md).

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::model::{
    decode,
    schema::{ElementType, Field},
    ModelSchema,
};
use crate::serving::tensors;

/// A fuzz target: takes any bytes, never panics.
pub type Target = fn(&[u8]);

/// The targets, by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("json_records", json_records),
    ("v2_request", v2_request),
    ("training_csv", training_csv),
    ("multipart_upload", multipart_upload),
    ("onnx_import", onnx_import),
];

/// Most records a fuzzed request may carry (as `--max-batch-records`' default).
const MAX_RECORDS: usize = 1024;

fn field(name: &str, element: ElementType) -> Field {
    Field {
        name: name.to_owned(),
        element,
        description: None,
        min: None,
        max: None,
        nullable: false,
        categories: Vec::new(),
        allowed: None,
    }
}

/// A schema with one field of every element type, some with rules (as a card sets them).
fn schema() -> &'static ModelSchema {
    static SCHEMA: OnceLock<ModelSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut age = field("age", ElementType::Float32);
        age.min = Some(0.0);
        age.max = Some(120.0);
        let mut sexo = field("sexo", ElementType::String);
        sexo.categories = vec!["H".into(), "V".into()];
        sexo.allowed = Some(sexo.categories.iter().cloned().collect());
        let mut renta = field("renta", ElementType::Float64);
        renta.nullable = true;
        ModelSchema {
            fields: vec![
                age,
                sexo,
                renta,
                field("antiguedad", ElementType::Int64),
                field("ind_actividad", ElementType::Int32),
                field("ind_empleado", ElementType::Bool),
            ],
            output: "probabilities".into(),
            labels: vec!["a".into(), "b".into()],
        }
    })
}

/// `POST /predict` and `POST /models/{id}/predict`: JSON bytes decoded straight into typed
/// columns, which must agree with decoding the parsed `Value` (warm-up and profiling do that).
pub fn json_records(data: &[u8]) {
    let from_bytes = decode::from_slice(schema(), data, MAX_RECORDS);
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        assert!(
            matches!(from_bytes, Err(decode::RecordsError::Syntax(_))),
            "a body serde_json refuses is a syntax error: {:?}",
            String::from_utf8_lossy(data)
        );
        return;
    };
    let from_bytes = match from_bytes {
        Ok(decoded) => Ok(decoded),
        Err(decode::RecordsError::Invalid(errors)) => Err(errors),
        Err(decode::RecordsError::Syntax(message)) => panic!("valid JSON refused: {message}"),
    };
    let from_value = decode::from_value(schema(), &body, MAX_RECORDS);
    assert_eq!(format!("{from_bytes:?}"), format!("{from_value:?}"));
}

/// `POST /v2/models/{name}/infer`: the first byte chooses JSON (even) or the binary-data
/// extension (odd, with the next two bytes as `Inference-Header-Content-Length`).
pub fn v2_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parse = |body, header_length: Option<&[u8]>| {
        let crate::http::v2::Parsed {
            request, binary, ..
        } = crate::http::v2::parse_request(body, header_length, "fuzz", schema())?;
        // What the handler does next: the tensors into the model's columns.
        let _ = tensors::decode(schema(), "fuzz", &request.tensors(binary), MAX_RECORDS);
        Ok::<_, crate::http::v2::V2Error>(())
    };
    let (body, length) = if mode % 2 == 0 {
        (rest, None)
    } else {
        let Some((length, body)) = rest.split_at_checked(2) else {
            return;
        };
        (body, Some(u16::from_le_bytes([length[0], length[1]])))
    };
    // The JSON part, as `parse_request` cuts it: the fast path reads it as serde_json does,
    // or leaves it to serde_json.
    let json = body.get(..length.map_or(body.len(), usize::from));
    if let Some(text) = json.and_then(|json| std::str::from_utf8(json).ok()) {
        crate::http::v2::scan::agrees_with_serde_json(text);
    }
    let length = length.map(|length| length.to_string());
    let _ = parse(body, length.as_deref().map(str::as_bytes));
}

/// `POST /models` with the `csv` shape: the CSV text, with `y` as the target column.
pub fn training_csv(data: &[u8]) {
    let text = Value::String(String::from_utf8_lossy(data).into_owned());
    let mut errors = Vec::new();
    let _ = crate::training::csv::data(
        &text,
        Some(&json!("y")),
        crate::training::data::DEFAULT_MAX_INLINE_CELLS,
        &mut errors,
    );
}

/// `POST /models/upload`: a multipart body (boundary `X`) read into its parts, as the
/// handler reads it (the `reference` part is parsed too).
pub fn multipart_upload(data: &[u8]) {
    use axum::extract::FromRequest;
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let Some(runtime) =
        RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().ok())
    else {
        return;
    };
    let Ok(request) = axum::http::Request::builder()
        .method("POST")
        .header("content-type", "multipart/form-data; boundary=X")
        .body(axum::body::Body::from(data.to_vec()))
    else {
        return;
    };
    runtime.block_on(async {
        if let Ok(multipart) = axum::extract::Multipart::from_request(request, &()).await {
            let _ = crate::http::models::read_upload(multipart, 1 << 20, MAX_RECORDS).await;
        }
    });
}

/// `POST /models/upload`'s `model` part: the ONNX checks and the ZipMap rewrite.
pub fn onnx_import(data: &[u8]) {
    let _ = crate::onnx_import::inspect(data.to_vec(), &crate::onnx_import::Limits::default());
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Inputs a replay runs per target, mutated from the corpus with a fixed seed: the same
    /// inputs on every run, in a few seconds.
    const MUTATIONS: usize = 5000;

    /// xorshift64*: a fixed, dependency-free sequence.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    /// Interesting bytes and numbers libFuzzer would also try.
    const TOKENS: &[&[u8]] = &[
        b"4611686018427387904",
        b"18446744073709551615",
        b"-1",
        b"1e308",
        b"NaN",
        b"[[[[[[[[",
        b"\"",
        b",",
        b"\n",
        b"\r\n",
        b"\xff\xff\xff\xff",
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
        b"--X\r\n",
        b"--X--",
        b"\"binary_data_size\":",
        b"\"shape\":[",
    ];

    fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut input = corpus[rng.below(corpus.len())].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(input.len() + 1);
            match rng.below(6) {
                0 if !input.is_empty() => {
                    let i = rng.below(input.len());
                    input[i] ^= 1 << rng.below(8);
                }
                1 if !input.is_empty() => {
                    let end = (at + rng.below(16)).min(input.len());
                    input.drain(at..end);
                }
                2 => {
                    let token = TOKENS[rng.below(TOKENS.len())];
                    input.splice(at..at, token.iter().copied());
                }
                3 if !input.is_empty() => {
                    let i = rng.below(input.len());
                    input[i] = rng.next() as u8;
                }
                4 => {
                    let other = &corpus[rng.below(corpus.len())];
                    let from = rng.below(other.len() + 1);
                    let to = (from + rng.below(64)).min(other.len());
                    input.splice(at..at, other[from..to].iter().copied());
                }
                _ => input.truncate(at),
            }
        }
        input
    }

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }

    #[test]
    fn every_fuzz_target_survives_its_corpus_and_fixed_seed_mutations_of_it() {
        for (name, target) in super::TARGETS {
            let corpus = corpus(name);
            assert!(!corpus.is_empty(), "fuzz/corpus/{name} has inputs");
            for input in &corpus {
                target(input);
            }
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            for _ in 0..MUTATIONS {
                target(&mutate(&mut rng, &corpus));
            }
        }
    }
}
