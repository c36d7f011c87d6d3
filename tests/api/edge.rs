//! The HTTP edge under hostile clients, over real sockets: sizes a client states (shapes,
//! lengths, batch sizes, CSV, multipart, ONNX), slow and silent connections, the connection
//! cap, and bodies over the limit.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::{
    child::ServerProcess,
    helpers::{assert_error, seed_record, spawn_app_with, TestApp},
};

const DEADLINE: Duration = Duration::from_secs(20);

/// A V2 error: the protocol's `{"error": "..."}` naming the problem.
async fn assert_v2_error(response: reqwest::Response, status: u16, mentions: &str) {
    assert_eq!(response.status().as_u16(), status, "status");
    let body: Value = response.json().await.expect("JSON error body");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(mentions), "`{mentions}` in {body}");
}

#[tokio::test]
async fn hostile_sizes_get_a_4xx_with_the_error_shape_and_the_server_logs_no_panic() {
    let server = ServerProcess::start(&[], &[]).await;
    let client = reqwest::Client::new();
    let infer = server.url("/v2/models/santander/infer");
    let v2 = |body: Value| client.post(&infer).json(&body).send();

    // V2 shapes are the client's claim: checked before anything is sized from them.
    for shape in [
        json!([4_611_686_018_427_387_904_i64]),
        json!([i64::MAX, 1]),
        json!([-1]),
        json!([1025]),
    ] {
        let body =
            json!({"inputs": [{"name": "sexo", "shape": shape, "datatype": "BYTES", "data": []}]});
        let response = v2(body).await.expect("sent");
        assert_v2_error(response, 400, "shape").await;
    }
    // Binary tensor lengths larger than the body.
    let header = br#"{"inputs":[{"name":"sexo","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":18446744073709551615}}]}"#;
    let response = client
        .post(&infer)
        .header("Inference-Header-Content-Length", header.len().to_string())
        .body(header.to_vec())
        .send()
        .await
        .expect("sent");
    assert_v2_error(response, 400, "truncated").await;
    let response = client
        .post(&infer)
        .header("Inference-Header-Content-Length", u64::MAX.to_string())
        .body(header.to_vec())
        .send()
        .await
        .expect("sent");
    assert_v2_error(response, 400, "Inference-Header-Content-Length").await;
    // A BYTES element claiming 4 GiB.
    let header = br#"{"inputs":[{"name":"sexo","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":5}}]}"#;
    let mut body = header.to_vec();
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, b'H']);
    let response = client
        .post(&infer)
        .header("Inference-Header-Content-Length", header.len().to_string())
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_v2_error(response, 400, "truncated").await;
    // Nesting deeper than the JSON parser follows.
    let deep = format!(
        r#"{{"inputs":[{{"name":"sexo","shape":[1],"datatype":"BYTES","data":{}{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let response = client
        .post(&infer)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .expect("sent");
    assert_v2_error(response, 400, "recursion").await;

    // Batches larger than --max-batch-records, within the body limit.
    let batch = Value::Array(vec![json!({}); 100_000]);
    let response = client
        .post(server.url("/predict"))
        .json(&batch)
        .send()
        .await
        .expect("sent");
    let body = assert_error(response, 422, "validation").await;
    assert_eq!(body["error"]["details"][0]["reason"], "too_many_records");
    for top_k in ["18446744073709551615", "99999999999999999999999", "-1"] {
        let response = client
            .post(server.url(&format!("/predict?top_k={top_k}")))
            .json(&seed_record())
            .send()
            .await
            .expect("sent");
        assert_error(response, 422, "validation").await;
    }

    // Training CSV: a million empty cells, a million columns, a quote never closed.
    for (csv, reason) in [
        (",".repeat(1_500_000), "empty"),
        // 1.1 million cells of one feature (the target column does not count) against the
        // default --max-inline-training-cells of 1,000,000.
        (format!("a,y\n{}", ",\n".repeat(1_100_000)), "too_large"),
        (format!("a,y\n\"{}", "x".repeat(1_000_000)), "syntax"),
    ] {
        let response = client
            .post(server.url("/models"))
            .json(&json!({"name": "hostile", "csv": csv, "target": "y"}))
            .send()
            .await
            .expect("sent");
        let body = assert_error(response, 422, "validation").await;
        let reasons: Vec<&str> = body["error"]["details"]
            .as_array()
            .expect("details")
            .iter()
            .filter_map(|d| d["reason"].as_str())
            .collect();
        assert!(reasons.contains(&reason), "{reason} in {body}");
    }

    // ONNX uploads: a graph field claiming 2^62 bytes, and a truncated varint.
    let mut claims_huge = vec![0x3a]; // field 7 (graph), length-delimited
    claims_huge.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    claims_huge.extend_from_slice(b"tiny");
    for model in [claims_huge, vec![0x08, 0xff]] {
        let form = Form::new()
            .text("name", "hostile")
            .part("model", Part::bytes(model).file_name("model.onnx"));
        let response = client
            .post(server.url("/models/upload"))
            .multipart(form)
            .send()
            .await
            .expect("sent");
        let body = assert_error(response, 422, "validation").await;
        assert_eq!(body["error"]["details"][0]["reason"], "format", "{body}");
    }
    // Multipart: a body that is not multipart, and one whose parts never end.
    let response = client
        .post(server.url("/models/upload"))
        .header("content-type", "multipart/form-data; boundary=X")
        .body("--X\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nabc")
        .send()
        .await
        .expect("sent");
    assert_error(response, 400, "malformed_json").await;

    // Still serving, and no panic anywhere in its logs.
    let response = client
        .post(server.url("/predict"))
        .json(&seed_record())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let panics: Vec<String> = server
        .logs()
        .into_iter()
        .filter(|line| line.contains("panicked") || line.contains("\"status\":500"))
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:#?}");
}

async fn edge_app(customise: impl FnOnce(&mut ml_api::config::HttpConfig)) -> TestApp {
    spawn_app_with(|config| {
        config.http.header_read_timeout = Duration::from_secs(30);
        config.http.idle_timeout = Duration::from_secs(30);
        config.http.body_read_timeout = Duration::from_secs(30);
        customise(&mut config.http);
    })
    .await
}

/// Waits until the server closes `stream` (EOF or reset), writing `trickle` one byte at a
/// time every `every` meanwhile; returns how long it took.
async fn time_until_closed(mut stream: TcpStream, trickle: &[u8], every: Duration) -> Duration {
    let started = Instant::now();
    let mut next = trickle.iter();
    let mut tick = tokio::time::interval(every);
    let mut buf = [0u8; 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = tick.tick() => {
                    if let Some(byte) = next.next() {
                        if stream.write_all(&[*byte]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    })
    .await
    .expect("the server closes the connection");
    started.elapsed()
}

#[tokio::test]
async fn a_client_sending_its_header_a_byte_at_a_time_is_disconnected_at_the_header_read_timeout() {
    let app = edge_app(|http| http.header_read_timeout = Duration::from_secs(1)).await;
    let stream = TcpStream::connect(app.addr).await.expect("connects");
    let request = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ".repeat(10);
    let took = time_until_closed(stream, &request, Duration::from_millis(200)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_idle_timeout() {
    let app = edge_app(|http| http.idle_timeout = Duration::from_secs(1)).await;
    let stream = TcpStream::connect(app.addr).await.expect("connects");
    let took = time_until_closed(stream, b"", Duration::from_secs(1)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
    app.stop().await;
}

/// Sends `request` and reads one response (head and `Content-Length` body).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (String, Value) {
    stream.write_all(request).await.expect("request written");
    read_response(stream).await
}

async fn read_response(stream: &mut TcpStream) -> (String, Value) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    let body = serde_json::from_slice(&data[end + 4..end + 4 + length])
                        .unwrap_or(Value::Null);
                    return (head, body);
                }
            }
            let n = stream.read(&mut buf).await.expect("response read");
            assert!(n > 0, "connection closed before a full response: {data:?}");
            data.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response within the deadline")
}

/// The server's end of the connection `client` opened, found by its two addresses among this
/// process's open descriptors (the server runs in the test's process), as a duplicate.
fn server_end(client: &TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::{BorrowedFd, RawFd};
    let (ours, theirs) = (client.local_addr().ok()?, client.peer_addr().ok()?);
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
            // SAFETY: the descriptor is only duplicated (F_DUPFD_CLOEXEC). Should another test
            // close it meanwhile, the duplication fails, or the duplicate is some other file,
            // which the address check below turns away.
            let copy = unsafe { BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .ok()?;
            let socket = std::net::TcpStream::from(copy);
            (socket.local_addr().ok()? == theirs && socket.peer_addr().ok()? == ours)
                .then_some(socket)
        })
}

/// Nagle's algorithm holds a small write while an earlier one is unacknowledged, and a client
/// may delay its ACK by 40 ms: HTTP/2 writes small frames one after another, and about one h2c
/// request in three stalled so. A connection that opens with the HTTP/2 preface turns it off;
/// an HTTP/1.1 one, whose response is a single write, keeps the cheaper default.
#[tokio::test]
async fn h2c_connections_send_without_nagles_delay_and_http1_keeps_the_default() {
    let app = edge_app(|_| {}).await;

    let mut http1 = TcpStream::connect(app.addr).await.expect("connects");
    let (head, _) = exchange(&mut http1, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let server = server_end(&http1).expect("the server's end of the HTTP/1.1 connection");
    assert!(
        !server.nodelay().expect("TCP_NODELAY read"),
        "HTTP/1.1: Nagle off"
    );

    // The preface, then an empty SETTINGS frame; the server answers with its own SETTINGS.
    let mut h2c = TcpStream::connect(app.addr).await.expect("connects");
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface written");
    let mut frame_header = [0u8; 9];
    tokio::time::timeout(DEADLINE, h2c.read_exact(&mut frame_header))
        .await
        .expect("an answer within the deadline")
        .expect("the server's first frame");
    assert_eq!(frame_header[3], 0x04, "a SETTINGS frame: {frame_header:?}");
    let server = server_end(&h2c).expect("the server's end of the h2c connection");
    assert!(server.nodelay().expect("TCP_NODELAY read"), "h2c: Nagle on");
    drop((http1, h2c));
    app.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_at_the_idle_timeout_after_its_last_response() {
    let app = edge_app(|http| http.idle_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    for _ in 0..2 {
        let (head, _) = exchange(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let took = time_until_closed(stream, b"", Duration::from_secs(1)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_slow_body_is_answered_408_and_its_connection_closed() {
    let app = edge_app(|http| http.body_read_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    let started = Instant::now();
    stream
        .write_all(b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .expect("head written");
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(body["error"]["code"], "body_timeout", "{body}");
    let took = time_until_closed(stream, b"\"a\": 1", Duration::from_millis(200)).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    app.stop().await;
}

#[tokio::test]
async fn connections_above_the_cap_wait_until_one_closes() {
    let app = edge_app(|http| http.max_connections = 2).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut first = TcpStream::connect(app.addr).await.expect("connects");
    let mut second = TcpStream::connect(app.addr).await.expect("connects");
    for stream in [&mut first, &mut second] {
        let (head, _) = exchange(stream, request).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // The third waits in the listen backlog: connected by the kernel, not served.
    let mut third = TcpStream::connect(app.addr).await.expect("connects");
    third.write_all(request).await.expect("written");
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(waited.is_err(), "served above the cap: {waited:?}");
    drop(first);
    let (head, _) = read_response(&mut third).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    app.stop().await;
}

const TWENTY_MB: usize = 20 * 1024 * 1024;

#[tokio::test]
async fn a_raw_client_that_sends_a_whole_too_large_body_before_reading_reads_a_413() {
    let app = edge_app(|_| {}).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {TWENTY_MB}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("head written");
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..TWENTY_MB / chunk.len() {
        stream
            .write_all(&chunk)
            .await
            .expect("the whole body is written: the server reads and discards it");
    }
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn expect_100_continue_with_a_too_large_length_is_refused_before_the_body() {
    let app = edge_app(|_| {}).await;
    for path in ["/predict", "/v2/models/santander/infer", "/models/upload"] {
        let mut stream = TcpStream::connect(app.addr).await.expect("connects");
        let content_type = if path == "/models/upload" {
            "multipart/form-data; boundary=X"
        } else {
            "application/json"
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: {content_type}\r\nExpect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n"
        );
        let (head, body) = exchange(&mut stream, head.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head}");
        let code = body["error"]["code"].as_str().map_or_else(
            || body["error"].as_str().unwrap_or_default().to_owned(),
            str::to_owned,
        );
        assert!(
            code == "payload_too_large" || code.contains("larger than"),
            "{path}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_python_urllib_client_sending_20_mb_reads_a_413() {
    let app = edge_app(|_| {}).await;
    let script = r#"
import json, sys, urllib.error, urllib.request
body = b'{"a": "' + b'x' * (20 * 1024 * 1024) + b'"}'
request = urllib.request.Request(sys.argv[1], data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=60)
    print("200")
except urllib.error.HTTPError as error:
    print(error.code, json.loads(error.read())["error"]["code"])
"#;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args(["-c", script, &app.url("/predict")])
            .output(),
    )
    .await
    .expect("python finishes")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "413 payload_too_large",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_training_body_over_the_general_limit_but_within_the_training_limit_is_read() {
    // 3 MB of CSV declared up front: over --max-body-bytes (2 MiB), within
    // --max-training-body-bytes (64 MiB), so it is read and judged on its content.
    let app = crate::helpers::spawn_app().await;
    let csv = format!("a,y\n{}", "1,0\n2,1\n".repeat(400_000));
    assert!(csv.len() > 3_000_000);
    let response = app
        .client
        .post(app.url("/models"))
        .json(&json!({"csv": csv, "target": "y", "max_iter": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.status(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_keeps_arriving_is_read_to_the_end_however_long_it_takes() {
    // A data set upload sent in 15 pieces, 200 ms apart: 3 s in all, longer than the 2 s
    // body-read timeout, but never 2 s without a byte. (`/datasets` is also exempt from
    // `--request-timeout`: an upload takes as long as its bytes take to arrive.)
    let store = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("edge-datasets")
        .join(uuid::Uuid::new_v4().to_string());
    let app = spawn_app_with(move |config| {
        config.http.body_read_timeout = Duration::from_secs(2);
        config.datasets.dataset_store = store.display().to_string();
    })
    .await;
    let mut csv = String::from("x,y\n");
    for i in 0..1500 {
        csv.push_str(&format!("{}.5,{}\n", i, i % 2));
    }
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    let head_bytes = format!(
        "POST /datasets HTTP/1.1\r\nHost: a\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
        csv.len()
    );
    stream
        .write_all(head_bytes.as_bytes())
        .await
        .expect("head written");
    for piece in csv.as_bytes().chunks(csv.len().div_ceil(15)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(piece).await.expect("piece written");
    }
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}\n{body}");
    assert_eq!(body["rows"], 1500, "{body}");

    // The same upload stalling half-way: 408 after 2 s without a byte, named as such.
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    stream
        .write_all(head_bytes.as_bytes())
        .await
        .expect("head written");
    stream
        .write_all(&csv.as_bytes()[..csv.len() / 2])
        .await
        .expect("half written");
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}\n{body}");
    assert_eq!(body["error"]["code"], "body_timeout", "{body}");
    app.stop().await;
}
