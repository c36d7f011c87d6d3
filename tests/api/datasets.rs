//! `/datasets` over HTTP: uploads (CSV, gzip CSV, Parquet) streamed to a real dataset store
//! (a directory), refusals that leave nothing behind, and training from `dataset_id` with the
//! embedded registry and with Redis + an `ml-api worker` process.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::{
    child::ServerProcess,
    cluster::registry_env,
    helpers::{assert_error, get_json, repo_path, spawn_app_with, wait_for_training, TestApp},
    redis_server::RedisServer,
};

/// A fresh, empty dataset store directory.
fn store_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("datasets")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

async fn app_with_store(dir: &Path, max_bytes: Option<u64>) -> TestApp {
    let dir = dir.to_owned();
    spawn_app_with(move |config| {
        config.datasets.dataset_store = dir.display().to_string();
        if let Some(max) = max_bytes {
            config.datasets.max_dataset_bytes = max;
        }
    })
    .await
}

async fn upload(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = client
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    request.send().await.expect("upload sent")
}

/// The multi-label, categorical reference case of the scikit-learn agreement suite.
fn multilabel_case() -> Value {
    let path = repo_path("tests/fixtures/training/synthetic_multilabel_categorical.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Polls until the store directory holds no file (aborts finish in the background).
async fn wait_until_empty(dir: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = files(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "files left in the dataset store: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_csv_upload_is_typed_listed_and_trains_a_model_that_agrees_with_scikit_learn() {
    let dir = store_dir();
    let app = app_with_store(&dir, None).await;
    let case = multilabel_case();
    let csv = case["request"]["csv"].as_str().unwrap().to_owned();
    let response = upload(
        &app.client,
        &app.url("/datasets?name=synthetic"),
        "text/csv",
        false,
        csv.clone().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 201);
    let id = response.headers()["location"].to_str().unwrap().to_owned();
    let dataset: Value = response.json().await.unwrap();
    assert_eq!(
        id,
        format!("/datasets/{}", dataset["dataset_id"].as_str().unwrap())
    );
    assert_eq!(dataset["rows"], 120);
    assert_eq!(dataset["bytes"], csv.len());
    let types: Vec<(String, String)> = dataset["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(types[0], ("age".to_owned(), "number".to_owned()));
    assert_eq!(types[2], ("color".to_owned(), "string".to_owned()));
    // Of a CSV the store keeps one object: the Parquet file of its cells, which training
    // reads (the CSV text is not kept).
    let copy = dataset["columnar"]["location"]
        .as_str()
        .expect("a Parquet file of the cells");
    assert!(copy.ends_with(".parquet"), "{dataset}");
    assert_eq!(dataset["location"], copy, "{dataset}");
    let stored = files(&dir);
    assert_eq!(stored.len(), 1, "one object per data set: {stored:?}");
    assert_eq!(
        std::fs::metadata(&stored[0]).unwrap().len(),
        dataset["columnar"]["bytes"].as_u64().unwrap()
    );
    assert_eq!(get_json(&app.client, &app.url(&id)).await, dataset);
    let listed = get_json(&app.client, &app.url("/datasets")).await;
    assert_eq!(listed["datasets"][0], dataset);

    // Train with the reference case's options; the data comes from the data set.
    let mut body = case["request"].clone();
    let options = body.as_object_mut().unwrap();
    options.remove("csv");
    options.insert("dataset_id".into(), dataset["dataset_id"].clone());
    options.insert("name".into(), json!("from-dataset"));
    let created = app.post_json("/models", &body).await;
    assert_eq!(created.status(), 201);
    let model: Value = created.json().await.unwrap();
    let record = wait_for_training(
        &app.client,
        &app.url(&format!("/models/{}", model["model_id"].as_str().unwrap())),
    )
    .await;
    assert_eq!(record["status"], "ready", "{record}");
    assert_eq!(record["metrics"]["train_rows"], 120);
    for phase in ["reading", "fitting", "profiling", "exporting"] {
        assert!(
            record["metrics"]["phase_seconds"][phase].as_f64().is_some(),
            "no {phase} time in {record}"
        );
    }
    assert!(
        record.get("phase").is_none(),
        "a finished job has no phase: {record}"
    );
    assert!(app.metric("ml_api_training_rows_read_total").await >= Some(120.0));

    // Served predictions agree with scikit-learn's on every training row.
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let records: Vec<Value> = reader
        .records()
        .map(|row| {
            let row = row.unwrap();
            let mut record = serde_json::Map::new();
            for (name, cell) in headers.iter().zip(row.iter()).take(4) {
                let value = cell
                    .parse::<f64>()
                    .map_or_else(|_| json!(cell), |v| json!(v));
                record.insert(name.to_owned(), value);
            }
            Value::Object(record)
        })
        .collect();
    let expected: Vec<Vec<f64>> = serde_json::from_value(case["probabilities"].clone()).unwrap();
    let mut worst = 0.0f64;
    for (chunk, want) in records.chunks(60).zip(expected.chunks(60)) {
        let scored = app
            .post_json(
                "/models/from-dataset/predict",
                &Value::Array(chunk.to_vec()),
            )
            .await;
        assert_eq!(scored.status(), 200);
        let scored: Value = scored.json().await.unwrap();
        let rows = scored["predictions"].as_array().expect("a batch answer");
        for (row, want) in rows.iter().zip(want) {
            let got: Vec<f64> = row
                .as_array()
                .unwrap_or_else(|| panic!("scores in {row}"))
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g - w).abs());
            }
        }
    }
    assert!(
        worst <= 1e-4,
        "served probabilities {worst:e} from scikit-learn's"
    );

    // Deleting the data set removes its record and its bytes; the model stays.
    let deleted = app.client.delete(app.url(&id)).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(files(&dir).is_empty());
    assert_eq!(app.get(&id).await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn a_gzip_csv_reads_as_the_plain_one() {
    let dir = store_dir();
    let app = app_with_store(&dir, None).await;
    let csv = "x,colour,y\n1.5,red,a\n2.5,,b\n NA ,blue,a\n4,red,b\n";
    let plain: Value = upload(
        &app.client,
        &app.url("/datasets"),
        "text/csv",
        false,
        csv.into(),
    )
    .await
    .json()
    .await
    .unwrap();
    let compressed = gzip(csv.as_bytes());
    let response = upload(
        &app.client,
        &app.url("/datasets"),
        "text/csv; charset=utf-8",
        true,
        compressed.clone(),
    )
    .await;
    assert_eq!(response.status(), 201);
    let zipped: Value = response.json().await.unwrap();
    assert_eq!(zipped["columns"], plain["columns"]);
    assert_eq!(zipped["rows"], 4);
    assert_eq!(zipped["bytes"], compressed.len());
    assert_eq!(
        zipped["columns"],
        json!([
            {"name": "x", "type": "number", "missing": 1},
            {"name": "colour", "type": "string", "missing": 1},
            {"name": "y", "type": "string", "missing": 0}
        ])
    );
    // A number feature with missing cells is refused when training is asked for, by name.
    let refused = app
        .post_json(
            "/models",
            &json!({"dataset_id": zipped["dataset_id"], "target": "y"}),
        )
        .await;
    let body = assert_error(refused, 422, "validation").await;
    assert_eq!(body["error"]["details"][0]["field"], "features.x");
    assert_eq!(body["error"]["details"][0]["reason"], "missing_values");
    // Without it, the gzip data set trains.
    let created = app
        .post_json(
            "/models",
            &json!({"dataset_id": zipped["dataset_id"], "target": "y", "features": ["colour"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["model_id"].clone();
    let record = wait_for_training(
        &app.client,
        &app.url(&format!("/models/{}", id.as_str().unwrap())),
    )
    .await;
    assert_eq!(record["status"], "ready", "{record}");
    assert_eq!(record["columns"], json!(["colour"]));
    app.stop().await;
}

/// A small Parquet file: a double, an int64, a string and a string target, snappy-compressed.
fn parquet_bytes() -> Vec<u8> {
    use parquet::{
        basic::Compression,
        data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type},
        file::{properties::WriterProperties, writer::SerializedFileWriter},
        schema::parser::parse_message_type,
    };
    let schema = parse_message_type(
        "message t { required double x; required int64 n; required binary colour (UTF8); required binary y (UTF8); }",
    )
    .unwrap();
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer =
        SerializedFileWriter::new(&mut out, Arc::new(schema), Arc::new(properties)).unwrap();
    let rows: usize = 200;
    let x: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
    let n: Vec<i64> = (0..rows as i64).map(|i| i % 7).collect();
    let colours = ["red", "green", "blue"];
    let colour: Vec<ByteArray> = (0..rows).map(|i| ByteArray::from(colours[i % 3])).collect();
    let y: Vec<ByteArray> = (0..rows)
        .map(|i| {
            ByteArray::from(if x[i] + (i % 3) as f64 * 0.5 > 0.5 {
                "yes"
            } else {
                "no"
            })
        })
        .collect();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    column
        .typed::<DoubleType>()
        .write_batch(&x, None, None)
        .unwrap();
    column.close().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    column
        .typed::<Int64Type>()
        .write_batch(&n, None, None)
        .unwrap();
    column.close().unwrap();
    for values in [&colour, &y] {
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<ByteArrayType>()
            .write_batch(values, None, None)
            .unwrap();
        column.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    out
}

#[tokio::test]
async fn a_parquet_upload_reads_its_footer_and_trains() {
    let dir = store_dir();
    let app = app_with_store(&dir, None).await;
    let bytes = parquet_bytes();
    let response = upload(
        &app.client,
        &app.url("/datasets"),
        "application/vnd.apache.parquet",
        false,
        bytes.clone(),
    )
    .await;
    assert_eq!(response.status(), 201);
    let dataset: Value = response.json().await.unwrap();
    assert_eq!(dataset["rows"], 200);
    assert_eq!(dataset["format"], "parquet");
    assert_eq!(dataset["bytes"], bytes.len());
    assert_eq!(
        dataset["columns"],
        json!([
            {"name": "x", "type": "number", "missing": 0},
            {"name": "n", "type": "number", "missing": 0},
            {"name": "colour", "type": "string", "missing": 0},
            {"name": "y", "type": "string", "missing": 0}
        ])
    );
    let created = app
        .post_json(
            "/models",
            &json!({"dataset_id": dataset["dataset_id"], "target": "y", "name": "pq"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["model_id"].clone();
    let record = wait_for_training(
        &app.client,
        &app.url(&format!("/models/{}", id.as_str().unwrap())),
    )
    .await;
    assert_eq!(record["status"], "ready", "{record}");
    assert_eq!(record["columns"], json!(["x", "n", "colour"]));
    assert_eq!(record["class_values"], json!(["no", "yes"]));

    // Not Parquet at all: 422, nothing stored.
    let junk = upload(
        &app.client,
        &app.url("/datasets"),
        "application/vnd.apache.parquet",
        false,
        b"x,y\n1,2\n".repeat(10),
    )
    .await;
    let body = assert_error(junk, 422, "validation").await;
    assert_eq!(body["error"]["details"][0]["reason"], "format");
    assert_eq!(files(&dir).len(), 1, "only the good upload is stored");
    app.stop().await;
}

#[tokio::test]
async fn bad_rows_and_bad_types_get_422_naming_line_and_column_and_leave_nothing() {
    let dir = store_dir();
    let app = app_with_store(&dir, None).await;
    let cases = [
        ("a,b,y\n1,2,p\n3,4,q\n5,6\n", "line 4", "shape"),
        ("a,b,y\n1,2,p\n3,x7,q\n", "line 3, column `b`", "type"),
        ("a,a,y\n1,2,p\n", "line 1, column `a`", "invalid"),
    ];
    for (csv, field, reason) in cases {
        let response = upload(
            &app.client,
            &app.url("/datasets"),
            "text/csv",
            false,
            csv.into(),
        )
        .await;
        let body = assert_error(response, 422, "validation").await;
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
        assert_eq!(body["error"]["details"][0]["reason"], reason, "{body}");
    }
    // The type error says how to read the column as text instead, and that works.
    let forced = upload(
        &app.client,
        &app.url("/datasets?categorical=b"),
        "text/csv",
        false,
        "a,b,y\n1,2,p\n3,x7,q\n".into(),
    )
    .await;
    assert_eq!(forced.status(), 201);
    let forced: Value = forced.json().await.unwrap();
    assert_eq!(forced["columns"][1]["type"], "string");
    // A broken gzip stream is refused as well.
    let mut broken = gzip(b"a,y\n1,p\n2,q\n");
    broken.truncate(broken.len() / 2);
    let response = upload(&app.client, &app.url("/datasets"), "text/csv", true, broken).await;
    assert_error(response, 422, "validation").await;
    // Neither a type nor an encoding it does not read.
    let response = upload(
        &app.client,
        &app.url("/datasets"),
        "application/json",
        false,
        b"{}".to_vec(),
    )
    .await;
    assert_error(response, 415, "unsupported_media_type").await;

    // The one good upload: the Parquet file of its cells.
    wait_until_empty_but(&dir, 1).await;
    let listed = get_json(&app.client, &app.url("/datasets")).await;
    assert_eq!(listed["datasets"].as_array().unwrap().len(), 1);
    app.stop().await;
}

/// A CSV of `rows` rows whose lines end with `eol`, in which (when `quoted`) every 997th
/// `note` is a quoted field holding a newline (and a quoted quote), and row `bad` (1-based),
/// if any, has `x` = `oops`; with the line that row starts on. Every 1,000th row is followed
/// by a blank line.
fn rows_csv(rows: usize, bad: Option<usize>, quoted: bool, eol: &str) -> (String, u64) {
    let mut csv = format!("id,note,x,y{eol}");
    let mut line = 2u64;
    let mut bad_line = 0;
    for i in 1..=rows {
        let note = if quoted && i % 997 == 0 {
            "\"two\nlines, \"\"quoted\"\"\""
        } else {
            "plain"
        };
        let x = if Some(i) == bad {
            bad_line = line;
            "oops".to_owned()
        } else {
            format!("{}.5", i % 100)
        };
        csv.push_str(&format!("{i},{note},{x},{}{eol}", i % 2));
        line += if quoted && i % 997 == 0 { 2 } else { 1 };
        if i % 1000 == 0 {
            csv.push_str(eol);
            line += 1;
        }
    }
    (csv, bad_line)
}

#[tokio::test]
async fn a_bad_cell_far_down_gets_422_naming_its_line_and_column() {
    let dir = store_dir();
    let app = app_with_store(&dir, None).await;
    // 200,000 rows: several blocks parsed in parallel after the first (see
    // `datasets::blocks`), with blank lines all along; newlines inside quoted fields (blocks
    // the `csv` crate reads) or none (blocks `simd-csv` splits, see `datasets::tokens`), with
    // `\n` or `\r\n` line ends.
    let rows = 200_000;
    // Both good CSVs read to the same rows and column types.
    for (quoted, eol) in [(true, "\n"), (false, "\r\n")] {
        let (csv, _) = rows_csv(rows, None, quoted, eol);
        let response = upload(
            &app.client,
            &app.url("/datasets"),
            "text/csv",
            false,
            csv.into_bytes(),
        )
        .await;
        assert_eq!(response.status(), 201, "quoted {quoted}, {eol:?}");
        let record: Value = response.json().await.unwrap();
        assert_eq!(record["rows"], rows);
        assert_eq!(record["columns"][1]["type"], "string");
        assert_eq!(record["columns"][2]["type"], "number");
    }

    let shapes = [
        (true, "\n", false),
        (true, "\n", true),
        (false, "\n", false),
        (false, "\r\n", false),
        (false, "\r\n", true),
    ];
    for (quoted, eol, gzipped) in shapes {
        let (csv, line) = rows_csv(rows, Some(150_001), quoted, eol);
        assert!(line > 150_001, "the blank lines move the line on");
        let body = if gzipped {
            gzip(csv.as_bytes())
        } else {
            csv.into_bytes()
        };
        let response = upload(
            &app.client,
            &app.url("/datasets"),
            "text/csv",
            gzipped,
            body,
        )
        .await;
        let body = assert_error(response, 422, "validation").await;
        let detail = &body["error"]["details"][0];
        assert_eq!(
            detail["field"],
            format!("line {line}, column `x`"),
            "quoted {quoted}, {eol:?}, gzip {gzipped}: {body}"
        );
        assert_eq!(detail["reason"], "type", "{body}");
        let message = detail["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("`oops`") && message.contains("first value (line 2)"),
            "{body}"
        );
    }
    // Only the two good uploads' files are left.
    wait_until_empty_but(&dir, 2).await;
    app.stop().await;
}

/// Polls until the store holds exactly `keep` files.
async fn wait_until_empty_but(dir: &Path, keep: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while files(dir).len() != keep {
        assert!(
            tokio::time::Instant::now() < deadline,
            "files in the dataset store: {:?}",
            files(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_oversized_or_truncated_upload_leaves_nothing_behind() {
    let dir = store_dir();
    let app = app_with_store(&dir, Some(10_000)).await;
    let mut csv = String::from("a,b,y\n");
    for i in 0..2_000 {
        csv.push_str(&format!("{i},{},p\n", i * 2));
    }
    let response = upload(
        &app.client,
        &app.url("/datasets"),
        "text/csv",
        false,
        csv.into(),
    )
    .await;
    let body = assert_error(response, 413, "payload_too_large").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-dataset-bytes"),
        "{body}"
    );

    // A client that stops half-way: the body promised 8,000 bytes and sends 3,000.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /datasets HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/csv\r\ncontent-length: 8000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut partial = String::from("a,b,y\n");
    while partial.len() < 3_000 {
        partial.push_str("1,2,p\n");
    }
    stream.write_all(partial.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);

    wait_until_empty(&dir).await;
    let listed = get_json(&app.client, &app.url("/datasets")).await;
    assert_eq!(listed["datasets"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_gzip_body_that_decompresses_past_the_limit_gets_422_naming_the_flag_and_leaves_nothing()
{
    let dir = store_dir();
    let app = app_with_store(&dir, Some(200_000)).await;
    // 2.4 MB of CSV in a body of a few kilobytes.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(b"a,b,y\n").unwrap();
    encoder.write_all(&b"1,2,p\n".repeat(400_000)).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 200_000, "the body itself is under the limit");
    let response = upload(&app.client, &app.url("/datasets"), "text/csv", true, bomb).await;
    let body = assert_error(response, 422, "validation").await;
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["reason"], "too_large", "{body}");
    assert!(
        detail["message"]
            .as_str()
            .unwrap()
            .contains("--max-dataset-bytes"),
        "{body}"
    );

    // The same data under the limit is taken.
    let mut small = String::from("a,b,y\n");
    for i in 0..1_000 {
        small.push_str(&format!("{i},2,{}\n", i % 2));
    }
    let response = upload(
        &app.client,
        &app.url("/datasets"),
        "text/csv",
        true,
        gzip(small.as_bytes()),
    )
    .await;
    assert_eq!(response.status(), 201);
    wait_until_empty_but(&dir, 1).await;
    app.stop().await;
}

#[tokio::test]
async fn training_requests_are_checked_against_the_data_set() {
    let dir = store_dir();
    let app = app_with_store(&dir, None).await;
    let dataset: Value = upload(
        &app.client,
        &app.url("/datasets"),
        "text/csv",
        false,
        "a,b,y\n1,2,p\n3,4,q\n".into(),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = dataset["dataset_id"].clone();
    let cases = [
        (
            json!({"dataset_id": id, "target": "nope"}),
            "target",
            "missing",
        ),
        (
            json!({"dataset_id": id, "target": "y", "features": ["a", "zz"]}),
            "features.zz",
            "missing",
        ),
        (
            json!({"dataset_id": id, "target": "y", "features": ["y"]}),
            "features",
            "invalid",
        ),
        (
            json!({"dataset_id": id, "target": "y", "C": -1}),
            "C",
            "range",
        ),
        (
            json!({"dataset_id": id, "target": "y", "records": []}),
            "records",
            "shape",
        ),
    ];
    for (body, field, reason) in cases {
        let response = app.post_json("/models", &body).await;
        let error = assert_error(response, 422, "validation").await;
        let details = error["error"]["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d["field"] == field && d["reason"] == reason),
            "no ({field}, {reason}) in {error}"
        );
    }
    let unknown = app
        .post_json(
            "/models",
            &json!({"dataset_id": uuid::Uuid::new_v4().to_string(), "target": "y"}),
        )
        .await;
    assert_error(unknown, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn a_worker_process_trains_from_a_data_set_with_the_redis_registry() {
    let redis = RedisServer::start();
    let dir = store_dir();
    let mut env = registry_env(&redis);
    env.push(("ML_API_DATASET_STORE", dir.display().to_string()));
    env.push(("ML_API_REDIS_PREFIX", "datasets".to_owned()));
    let replica = ServerProcess::start(&[], &env).await;
    let _worker = ServerProcess::worker(&["--name", "dataset-worker"], &env).await;
    let client = reqwest::Client::new();

    // A gzip CSV of a 3-class problem with a categorical feature.
    let mut csv = String::from("x1,x2,shop,label\n");
    for i in 0..3_000u64 {
        let x1 = ((i * 37) % 101) as f64 / 10.0 - 5.0;
        let x2 = ((i * 53) % 97) as f64 / 10.0 - 4.8;
        let shop = ["north", "south", "east"][(i % 3) as usize];
        let label = if x1 + 0.3 * x2 > 1.0 {
            "high"
        } else if x1 - x2 < -1.0 {
            "low"
        } else {
            "mid"
        };
        csv.push_str(&format!("{x1},{x2},{shop},{label}\n"));
    }
    let response = upload(
        &client,
        &replica.url("/datasets"),
        "text/csv",
        true,
        gzip(csv.as_bytes()),
    )
    .await;
    assert_eq!(response.status(), 201);
    let dataset: Value = response.json().await.unwrap();
    assert_eq!(dataset["rows"], 3_000);
    // The record is in Redis: a second replica sees it.
    let other = ServerProcess::start(&[], &env).await;
    let seen = get_json(
        &client,
        &other.url(&format!(
            "/datasets/{}",
            dataset["dataset_id"].as_str().unwrap()
        )),
    )
    .await;
    assert_eq!(seen, dataset);

    let created = client
        .post(replica.url("/models"))
        .json(
            &json!({"dataset_id": dataset["dataset_id"], "target": "label", "name": "shops",
                      "standardize": true, "test_size": 0.2, "stratify": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["model_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let record = wait_for_training(&client, &replica.url(&format!("/models/{id}"))).await;
    assert_eq!(record["status"], "ready", "{record}");
    assert_eq!(record["metrics"]["test_rows"], 600);
    assert!(
        record["metrics"]["accuracy"].as_f64().unwrap() > 0.8,
        "{record}"
    );
    let scored = client
        .post(other.url("/models/shops/predict"))
        .json(&json!({"x1": 4.0, "x2": 0.0, "shop": "east"}))
        .send()
        .await
        .unwrap();
    assert_eq!(scored.status(), 200);
    let worker_metrics = get_json_text(&client, &_worker.url("/metrics")).await;
    assert!(
        worker_metrics.contains("ml_api_training_rows_read_total 3000"),
        "{worker_metrics}"
    );
    assert!(worker_metrics
        .contains("ml_api_training_phase_duration_seconds_count{phase=\"reading\"} 1"));
}

async fn get_json_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}
