//! The training library against scikit-learn, and its ONNX graphs in ONNX Runtime.
//!
//! Each case in `tests/fixtures/training/*.json` (written by `make_reference.py` there, which
//! runs scikit-learn to convergence) is trained here from its request body; the probabilities
//! on every training row must be within 1e-4 of scikit-learn's, and the ONNX graph's (run by
//! ONNX Runtime, one input per feature) within 1e-5 of the Rust model's. The graphs and
//! their inputs are left in `target/tmp/training-onnx/` for
//! `make_reference.py --check target/tmp/training-onnx` (onnx.checker, Python onnxruntime).

use std::{path::PathBuf, time::Instant};

use ml_api::{
    inference::ort::{environment, OrtBackend, SessionOptions},
    model::ModelSchema,
    training::{train, FeatureValues, Progress, TrainingJob, TrainingRequest},
};
use ort::value::{DynValue, Tensor};
use serde_json::{json, Value};

const SKLEARN_TOLERANCE: f64 = 1e-4;
const ONNX_TOLERANCE: f64 = 1e-5;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/training/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn job(request: Value) -> TrainingJob {
    let request: TrainingRequest = serde_json::from_value(request).unwrap();
    let job = request
        .validate()
        .unwrap_or_else(|e| panic!("invalid request: {e:?}"));
    // The job goes through a Redis stream as JSON.
    let text = serde_json::to_string(&job).unwrap();
    let back: TrainingJob = serde_json::from_str(&text).unwrap();
    assert_eq!(back, job);
    back
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len(), "row counts differ");
    let mut max = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len(), "column counts differ");
        for (p, q) in x.iter().zip(y) {
            max = max.max((p - q).abs());
        }
    }
    max
}

/// Runs the graph in ONNX Runtime on the job's rows; returns `probabilities`.
fn run_onnx(
    name: &str,
    onnx: &[u8],
    features: &[String],
    columns: &[FeatureValues],
    card: &ml_api::model::ModelCard,
) -> Vec<Vec<f64>> {
    let dylib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ort/lib/libonnxruntime.so.1.31.1");
    let env = environment(&dylib).unwrap();
    let (mut session, signature) = OrtBackend::open(
        env,
        onnx,
        SessionOptions {
            intra_op_threads: 1,
        },
    )
    .unwrap();
    // The registry will load it with its card: the card must fit the graph.
    ModelSchema::build(&signature.inputs, &signature.outputs, card).unwrap();
    let names: Vec<&str> = signature.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        features.iter().map(String::as_str).collect::<Vec<_>>()
    );

    let rows = columns.first().map_or(0, FeatureValues::len);
    let mut inputs: Vec<(String, DynValue)> = Vec::new();
    let mut dump = serde_json::Map::new();
    for (feature, column) in features.iter().zip(columns) {
        let value = match column {
            FeatureValues::Numeric(v) => {
                let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                dump.insert(feature.clone(), json!(v32));
                Tensor::from_array(([rows, 1], v32)).unwrap().into_dyn()
            }
            FeatureValues::Categorical(v) => {
                dump.insert(feature.clone(), json!(v));
                Tensor::from_string_array(([rows, 1], v.as_slice()))
                    .unwrap()
                    .into_dyn()
            }
        };
        inputs.push((feature.clone(), value));
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("training-onnx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.onnx")), onnx).unwrap();
    std::fs::write(
        dir.join(format!("{name}.inputs.json")),
        Value::Object(dump).to_string(),
    )
    .unwrap();

    let outputs = session.run(inputs).unwrap();
    let (shape, values) = outputs["probabilities"]
        .try_extract_tensor::<f32>()
        .unwrap();
    let width = shape[1] as usize;
    assert_eq!(shape[0] as usize, rows);
    values
        .chunks(width)
        .map(|r| r.iter().map(|&p| f64::from(p)).collect())
        .collect()
}

/// Trains one reference case and checks it against scikit-learn and ONNX Runtime.
fn agree(name: &str) {
    let case = fixture(name);
    let job = job(case["request"].clone());
    let started = Instant::now();
    let mut progress: Vec<Progress> = Vec::new();
    let trained = train(&job, &mut |p| progress.push(p)).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(trained.metrics.converged, "{name}: {:?}", trained.metrics);
    assert!(!progress.is_empty());
    assert!(progress.windows(2).all(|w| w[1].iteration > w[0].iteration));

    let expected: Vec<Vec<f64>> = serde_json::from_value(case["probabilities"].clone()).unwrap();
    let rust = trained.model.predict_proba(&job.columns);
    let sklearn_diff = max_diff(&rust, &expected);

    let labels: Vec<Value> = serde_json::from_value(case["labels"].clone()).unwrap();
    assert_eq!(trained.class_values, labels);
    let label_strings: Vec<String> = labels
        .iter()
        .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
        .collect();
    assert_eq!(trained.card.labels, label_strings);
    assert_eq!(trained.multi_label, job.is_multi_label());

    let graph = run_onnx(
        name,
        &trained.onnx,
        job.feature_names(),
        &job.columns,
        &trained.card,
    );
    let onnx_diff = max_diff(&graph, &rust);
    eprintln!(
        "{name}: max |p - sklearn| = {sklearn_diff:.2e}, max |onnx - rust| = {onnx_diff:.2e}, \
         {} iterations, {seconds:.2}s",
        trained.metrics.iterations
    );
    assert!(
        sklearn_diff <= SKLEARN_TOLERANCE,
        "{name}: {sklearn_diff:e} from scikit-learn"
    );
    assert!(
        onnx_diff <= ONNX_TOLERANCE,
        "{name}: ONNX Runtime {onnx_diff:e} from the Rust model"
    );
}

#[test]
fn iris_multiclass_l2_seed_shape() {
    agree("iris_multiclass_l2");
}

#[test]
fn iris_binary_balanced_records() {
    agree("iris_binary_balanced");
}

#[test]
fn iris_binary_none_no_intercept() {
    agree("iris_binary_none_no_intercept");
}

#[test]
fn synthetic_multilabel_categorical_csv() {
    agree("synthetic_multilabel_categorical");
}

#[test]
fn synthetic_multiclass_categorical_records() {
    agree("synthetic_multiclass_categorical");
}

#[test]
fn wine_l1() {
    agree("wine_l1");
}

#[test]
fn breast_cancer_elasticnet() {
    agree("breast_cancer_elasticnet");
}

// ---- requests, validation and behaviour ----

fn errors(request: Value) -> Vec<(String, String)> {
    let request: TrainingRequest = serde_json::from_value(request).unwrap();
    match request.validate() {
        Ok(_) => panic!("expected validation errors"),
        Err(errors) => errors
            .into_iter()
            .map(|e| (e.field, e.reason.to_owned()))
            .collect(),
    }
}

fn has(errors: &[(String, String)], field: &str, reason: &str) -> bool {
    errors.iter().any(|(f, r)| f == field && r == reason)
}

fn iris_seed() -> Value {
    let mut request = fixture("iris_multiclass_l2")["request"].clone();
    let object = request.as_object_mut().unwrap();
    object.remove("tol");
    object.remove("max_iter");
    request
}

/// Seed 2's request exactly (five fields, defaults otherwise) trains, and the seed's query
/// record is class 2.
#[test]
fn seed_request_trains_with_defaults() {
    let job = job(iris_seed());
    assert_eq!(job.rows(), 150);
    assert_eq!(job.feature_names()[0], "sepal_length");
    let trained = train(&job, &mut |_| {}).unwrap();
    assert!(trained.metrics.converged);
    assert_eq!(trained.metrics.evaluated_on, "train");
    assert_eq!(trained.class_values, vec![json!(0), json!(1), json!(2)]);
    let query = [5.9, 3.0, 5.1, 1.8].map(|v| FeatureValues::Numeric(vec![v]));
    let p = &trained.model.predict_proba(&query)[0];
    let best = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    assert_eq!(trained.class_values[best], json!(2));
    let card = &trained.card;
    assert_eq!(card.output.as_deref(), Some("probabilities"));
    assert!(card.name.is_none() && card.version.is_none());
    assert_eq!(card.training.as_ref().unwrap()["rows"]["train"], json!(150));
}

#[test]
fn every_problem_is_named() {
    let found = errors(json!({
        "columns": ["a", "a"], "features": [[1.0, "x"], [2.0]], "classes": [0, "one"],
        "C": -1, "tol": "small", "max_iter": 0, "dual": true, "n_jobs": 2
    }));
    for (field, reason) in [
        ("dual", "unknown"),
        ("n_jobs", "unknown"),
        ("penalty", "missing"),
        ("solver", "missing"),
        ("C", "range"),
        ("tol", "type"),
        ("max_iter", "range"),
        ("columns[1]", "invalid"),
        ("features[0][1]", "type"),
        ("features[1]", "shape"),
        ("classes[1]", "type"),
    ] {
        assert!(
            has(&found, field, reason),
            "no ({field}, {reason}) in {found:?}"
        );
    }
}

#[test]
fn solver_and_penalty_combinations_as_scikit_learn() {
    let with = |extra: Value| {
        let mut request = iris_seed();
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        request
    };
    assert!(has(
        &errors(with(json!({"penalty": "l1", "solver": "lbfgs"}))),
        "solver",
        "incompatible"
    ));
    assert!(has(
        &errors(with(json!({"penalty": "elasticnet", "solver": "saga"}))),
        "l1_ratio",
        "missing"
    ));
    assert!(has(
        &errors(with(json!({"penalty": "l2", "solver": "liblinear"}))),
        "solver",
        "incompatible"
    ));
    assert!(has(
        &errors(with(json!({"penalty": "ridge"}))),
        "penalty",
        "category"
    ));
    assert!(has(
        &errors(with(json!({"class_weight": {"7": 2.0}}))),
        "class_weight.7",
        "category"
    ));
    assert!(has(
        &errors(with(json!({"stratify": true}))),
        "stratify",
        "incompatible"
    ));
    assert!(has(
        &errors(with(json!({"test_size": 1.5}))),
        "test_size",
        "range"
    ));
    // `null` is scikit-learn's `penalty=None`.
    let none = job(with(json!({"penalty": null, "solver": "lbfgs"})));
    assert_eq!(none.params.penalty, ml_api::training::Penalty::None);
    // What scikit-learn accepts is accepted.
    for (penalty, solver) in [
        ("l1", "saga"),
        ("none", "newton-cg"),
        ("l2", "sag"),
        ("l2", "newton-cholesky"),
    ] {
        job(with(json!({"penalty": penalty, "solver": solver})));
    }
}

#[test]
fn degenerate_and_oversized_data_are_refused() {
    let one_class = json!({"columns": ["x"], "features": [[1.0], [2.0]], "classes": [1, 1],
                           "penalty": "l2", "solver": "lbfgs"});
    assert!(has(&errors(one_class), "classes", "degenerate"));
    let rows: Vec<Value> = (0..100_001).map(|_| json!([])).collect();
    let columns: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let huge = json!({"columns": columns, "features": rows, "classes": [], "penalty": "l2", "solver": "lbfgs"});
    assert!(has(&errors(huge), "features", "too_large"));
    let flat = "a,b,y\n1,2,1\n3,4,1\n";
    let found = errors(json!({"csv": flat, "target": ["y"]}));
    assert!(has(&found, "target", "degenerate"), "{found:?}");
}

#[test]
fn records_and_csv_errors_name_the_cell() {
    let found = errors(json!({
        "records": [{"x": 1.0, "c": "a", "y": "p"}, {"x": "2", "c": "b", "y": "q"}, {"c": "a", "y": "q", "z": 1}],
        "target": "y"
    }));
    for (field, reason) in [
        ("records[1].x", "type"),
        ("records[2].x", "missing"),
        ("records[2].z", "unknown"),
    ] {
        assert!(
            has(&found, field, reason),
            "no ({field}, {reason}) in {found:?}"
        );
    }
    let found = errors(json!({"csv": "x,c,y\n1,a,p\n,b,q\n3,a\n", "target": "species"}));
    assert!(has(&found, "target", "missing"), "{found:?}");
    assert!(has(&found, "csv", "shape"), "{found:?}");
    let found = errors(json!({"csv": "x,c,y\n1,a,p\n,b,q\n", "target": "y"}));
    assert!(has(&found, "csv.line[3].x", "type"), "{found:?}");
    let found =
        errors(json!({"records": [{"c": "a\0b", "y": 1}, {"c": "b", "y": 0}], "target": "y"}));
    assert!(has(&found, "c", "invalid"), "{found:?}");
    let found = errors(json!({"records": [{"y": 1}], "csv": "y\n1\n", "target": "y"}));
    assert!(has(&found, "records", "shape"), "{found:?}");
}

/// Running out of `max_iter` is not an error: it is reported, as scikit-learn warns.
#[test]
fn non_convergence_is_reported_not_failed() {
    let mut request = iris_seed();
    request["max_iter"] = json!(3);
    let mut seen = Vec::new();
    let trained = train(&job(request), &mut |p| seen.push(p.iteration)).unwrap();
    assert!(!trained.metrics.converged);
    assert!(trained
        .metrics
        .warning
        .as_deref()
        .unwrap()
        .contains("max_iter"));
    assert_eq!(seen, vec![1, 2, 3]);
}

/// A held-out split: stratified, deterministic for a seed, metrics on the test rows.
#[test]
fn held_out_metrics_are_stratified_and_reproducible() {
    let mut request = iris_seed();
    request["test_size"] = json!(0.2);
    request["stratify"] = json!(true);
    request["random_seed"] = json!(42);
    let job = job(request);
    let a = train(&job, &mut |_| {}).unwrap().metrics;
    let b = train(&job, &mut |_| {}).unwrap().metrics;
    assert_eq!(a, b);
    assert_eq!(
        (a.evaluated_on.as_str(), a.train_rows, a.test_rows),
        ("test", 120, 30)
    );
    let matrix = a.confusion_matrix.clone().unwrap();
    // Stratified: ten of each species in the test rows.
    assert!(
        matrix.iter().all(|row| row.iter().sum::<u64>() == 10),
        "{matrix:?}"
    );
    assert!(
        a.accuracy > 0.85 && a.macro_f1 > 0.85 && a.log_loss < 0.5,
        "{a:?}"
    );
    let text = serde_json::to_value(&a).unwrap();
    for key in [
        "accuracy",
        "log_loss",
        "macro_f1",
        "confusion_matrix",
        "evaluated_on",
    ] {
        assert!(text.get(key).is_some(), "metrics JSON lacks {key}");
    }
}

/// Multi-label metrics are per label; an unseen category scores as all zeros in the graph
/// as in Rust.
#[test]
fn multi_label_metrics_and_unknown_categories() {
    let mut request = fixture("synthetic_multilabel_categorical")["request"].clone();
    request["test_size"] = json!(0.25);
    let job = job(request);
    let trained = train(&job, &mut |_| {}).unwrap();
    assert!(trained.multi_label);
    assert_eq!(trained.metrics.per_label.len(), 3);
    assert_eq!(trained.metrics.per_label[0].label, "label_a");
    assert_eq!(trained.metrics.test_rows, 30);
    let color = trained.card.fields["color"].categories.clone().unwrap();
    assert_eq!(color, vec!["blue", "green", "red", "yellow"]);

    let features = job.feature_names().to_vec();
    let columns = vec![
        FeatureValues::Numeric(vec![40.0, 40.0]),
        FeatureValues::Numeric(vec![20000.0, 20000.0]),
        FeatureValues::Categorical(vec!["purple".into(), "red".into()]),
        FeatureValues::Categorical(vec!["M".into(), "XL".into()]),
    ];
    let rust = trained.model.predict_proba(&columns);
    let graph = run_onnx(
        "unknown_categories",
        &trained.onnx,
        &features,
        &columns,
        &trained.card,
    );
    assert!(max_diff(&rust, &graph) <= ONNX_TOLERANCE);
}

// ---- the same cases trained from a data set (CSV read as `POST /datasets` stores it) ----

/// The rows of a reference request as CSV text with a header line, and its target.
fn as_csv(request: &Value) -> (String, Value) {
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Some(csv) = request["csv"].as_str() {
        return (csv.to_owned(), request["target"].clone());
    }
    let mut text = String::new();
    if let Some(records) = request["records"].as_array() {
        let names: Vec<String> = records[0].as_object().unwrap().keys().cloned().collect();
        text.push_str(&names.join(","));
        text.push('\n');
        for record in records {
            let row: Vec<String> = names.iter().map(|n| cell(&record[n])).collect();
            text.push_str(&row.join(","));
            text.push('\n');
        }
        return (text, request["target"].clone());
    }
    let names: Vec<String> = serde_json::from_value(request["columns"].clone()).unwrap();
    text.push_str(&names.join(","));
    text.push_str(",class\n");
    for (row, class) in request["features"]
        .as_array()
        .unwrap()
        .iter()
        .zip(request["classes"].as_array().unwrap())
    {
        let mut cells: Vec<String> = row.as_array().unwrap().iter().map(cell).collect();
        cells.push(cell(class));
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    (text, json!("class"))
}

/// A `Write` sink whose bytes the test reads once the writer is done.
#[derive(Clone, Default)]
struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Trains reference case `name` from its rows as a CSV data set and checks the result
/// against scikit-learn's probabilities and against the same request trained inline.
fn agree_from_dataset(name: &str) {
    use ml_api::datasets::{columnar, load, scan, DatasetRecord, Format};
    let case = fixture(name);
    let request = case["request"].clone();
    let (csv, target) = as_csv(&request);
    // The upload's Parquet copy of the cells is what training reads.
    let copy = SharedBuffer::default();
    let summary = scan::summarize_csv(
        csv.as_bytes(),
        &Default::default(),
        Some(Box::new(copy.clone())),
    )
    .unwrap();
    assert!(summary.columnar, "{name}: the Parquet copy is complete");
    let record = DatasetRecord {
        dataset_id: uuid::Uuid::nil(),
        name: None,
        format: Format::Csv,
        gzip: false,
        rows: summary.rows,
        columns: summary.columns,
        bytes: csv.len() as u64,
        location: "case.csv".into(),
        columnar: None,
        created_at_ms: 0,
    };
    let mut options = request.as_object().unwrap().clone();
    for field in ["csv", "records", "columns", "features", "classes", "target"] {
        options.remove(field);
    }
    let params = serde_json::from_value::<TrainingRequest>(Value::Object(options))
        .unwrap()
        .params_only();
    let dataset_job = load::DatasetJob::new(record, Some(&target), None, params).unwrap();
    // The job is queued as JSON.
    let text = serde_json::to_string(&dataset_job).unwrap();
    let dataset_job: load::DatasetJob = serde_json::from_str(&text).unwrap();
    let wanted: Vec<(String, ml_api::datasets::ColumnType)> = dataset_job
        .features
        .iter()
        .chain(&dataset_job.target)
        .map(|n| (n.clone(), dataset_job.dataset.column(n).unwrap().kind))
        .collect();
    let cells = scan::read_csv_columns(csv.as_bytes(), &wanted, 0, &mut |_| {}).unwrap();
    let copied = copy.0.lock().unwrap().clone();
    let from_copy = columnar::read_bytes(copied.into(), &wanted, 0).unwrap();
    assert_eq!(
        format!("{from_copy:?}"),
        format!("{cells:?}"),
        "{name}: copy vs CSV"
    );
    let from_dataset = load::build(&dataset_job, from_copy).unwrap();
    assert!(from_dataset.check(&Default::default()).is_empty());
    let trained = train(&from_dataset, &mut |_| {}).unwrap();
    let expected: Vec<Vec<f64>> = serde_json::from_value(case["probabilities"].clone()).unwrap();
    let rust = trained.model.predict_proba(&from_dataset.columns);
    let sklearn_diff = max_diff(&rust, &expected);
    let labels: Vec<Value> = serde_json::from_value(case["labels"].clone()).unwrap();
    assert_eq!(trained.class_values, labels, "{name}");
    let inline = job(request);
    let inline_trained = train(&inline, &mut |_| {}).unwrap();
    let inline_diff = max_diff(&rust, &inline_trained.model.predict_proba(&inline.columns));
    eprintln!("{name} from a data set: max |p - sklearn| = {sklearn_diff:.2e}, from inline {inline_diff:.2e}");
    assert!(
        sklearn_diff <= SKLEARN_TOLERANCE,
        "{name}: {sklearn_diff:e} from scikit-learn"
    );
    assert!(
        inline_diff <= 1e-9,
        "{name}: {inline_diff:e} from the inline-trained model"
    );
}

#[test]
fn every_reference_case_agrees_when_trained_from_a_data_set() {
    for name in [
        "iris_multiclass_l2",
        "iris_binary_balanced",
        "iris_binary_none_no_intercept",
        "synthetic_multilabel_categorical",
        "synthetic_multiclass_categorical",
        "wine_l1",
        "breast_cancer_elasticnet",
    ] {
        agree_from_dataset(name);
    }
}
