//! Bench-only baseline server for `make bench` (`scripts/bench.sh`): the ceiling for any
//! HTTP server answering ml-api's `POST /predict` on this machine. It is an example, so it is
//! never part of the product binary:
//!
//! ```text
//! cargo build --release --example bench_baseline
//! taskset -c 1 target/release/examples/bench_baseline 127.0.0.1:5002
//! ```
//!
//! It does what any JSON handler has to do and nothing ml-api adds: axum over hyper
//! (HTTP/1.1 keep-alive), `POST /predict` deserializes the body into a typed struct of the
//! seed record's 24 fields (`tests/fixtures/seed_request.json`) with axum's `Json` extractor,
//! and answers a fixed `{"predictions":[[22 floats]]}` serialized per request. No model, no
//! middleware, no logging, no metrics. `GET /readyz` answers 200 so the script can poll it
//! like ml-api's.
//!
//! Runtime: tokio's multi-thread flavour with its default worker count, built the way
//! `src/main.rs` builds ml-api's, so when both are pinned to one core with `taskset` both run
//! one tokio worker.

use std::net::SocketAddr;

/// The same allocator as ml-api (`src/main.rs`), so the comparison is of the servers' work,
/// not of the allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::{
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};

/// The seed record: the Santander schema's 24 fields, typed as a hand-written handler would.
/// Every field must be present (`Option` only allows `null`).
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Parsed, never read: the point is the parsing.
struct Record {
    fecha_dato: String,
    ncodpers: i64,
    ind_empleado: Option<String>,
    pais_residencia: Option<String>,
    sexo: Option<String>,
    age: Option<f64>,
    fecha_alta: Option<String>,
    ind_nuevo: Option<i64>,
    antiguedad: Option<f64>,
    indrel: Option<i64>,
    ult_fec_cli_1t: Option<String>,
    indrel_1mes: Option<f64>,
    tiprel_1mes: Option<String>,
    indresi: Option<String>,
    indext: Option<String>,
    conyuemp: Option<String>,
    canal_entrada: Option<String>,
    indfall: Option<String>,
    tipodom: Option<i64>,
    cod_prov: Option<f64>,
    nomprov: Option<String>,
    ind_actividad_cliente: Option<i64>,
    renta: Option<f64>,
    segmento: Option<String>,
}

#[derive(Serialize)]
struct Predictions {
    predictions: [[f32; 22]; 1],
}

/// A fixed answer of the bundled model's shape (22 floats, one per product).
const PREDICTIONS: [f32; 22] = [
    0.412_345_67,
    0.012_345_67,
    0.023_456_78,
    0.034_567_89,
    0.045_678_91,
    0.056_789_12,
    0.067_891_23,
    0.001_234_56,
    0.002_345_67,
    0.003_456_78,
    0.078_912_34,
    0.004_567_89,
    0.005_678_91,
    0.006_789_12,
    0.007_891_23,
    0.089_123_45,
    0.008_912_34,
    0.009_123_45,
    0.001_111_11,
    0.041_234_56,
    0.032_345_67,
    0.012_938_87,
];

async fn predict(Json(record): Json<Record>) -> Json<Predictions> {
    std::hint::black_box(&record);
    Json(Predictions {
        predictions: [PREDICTIONS],
    })
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:5002")
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let app = Router::new()
        .route("/predict", post(predict))
        .route("/readyz", get(|| async { "ready" }));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!("bench_baseline listening on {}", listener.local_addr()?);
            axum::serve(listener, app).await
        })
}
