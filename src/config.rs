//! Typed configuration, read from command-line flags and the environment (clap).
//!
//! Every flag has an `ML_API_*` environment variable (or the conventional name for
//! third-party settings such as `SENTRY_DSN` and `OTEL_EXPORTER_OTLP_ENDPOINT`), so the
//! Helm chart configures ml-api with env vars only. Doc comments are the `--help` text.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

#[derive(Debug, Parser)]
#[command(
    name = "ml-api",
    version,
    about = "Fast, operable ONNX model serving for Kubernetes"
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Let the kernel back the process's memory with transparent huge pages (2 MiB each).
    /// Off by default: a replica's heap is small, and huge pages kept about 16 MiB more of it
    /// resident (docs/performance.md, "Resident memory"). Linux only.
    #[arg(long, env = "ML_API_HUGE_PAGES", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub huge_pages: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a stateless predictor replica (HTTP API).
    Serve(Box<ServeConfig>),
    /// Serve the predictor as an AWS Lambda function (function URL, API Gateway) under the
    /// Lambda runtime API; the same flags as `serve` (`--addr` is unused). A bare `ml-api`
    /// with AWS_LAMBDA_RUNTIME_API set (Lambda's `bootstrap`) runs this.
    Lambda(Box<ServeConfig>),
    /// Run a training worker: takes jobs from the Redis queue, stores models in the registry.
    Worker(Box<WorkerConfig>),
    /// Profile a sample of records into a model's feature contract (printed as JSON, for the
    /// `contract` of its card.json or an upload's card).
    Contract(Box<ContractConfig>),
}

#[derive(Debug, Clone, Args)]
pub struct ContractConfig {
    /// The model's directory (`model.onnx`, optional `card.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// A JSON file holding an array of records in the shape `POST /predict` takes, drawn from
    /// the model's training data.
    #[arg(long)]
    pub sample: PathBuf,
    #[command(flatten)]
    pub inference: InferenceConfig,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub registry: RegistryConfig,
    /// This worker's name in the consumer group (defaults to the host/pod name).
    #[arg(long, env = "ML_API_WORKER_NAME")]
    pub name: Option<String>,
    /// A job whose worker has not heartbeated for this long is taken over by another worker.
    #[arg(long, env = "ML_API_JOB_RECLAIM_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub reclaim_after: Duration,
    /// Deliveries of one job before it is marked failed.
    #[arg(long, env = "ML_API_JOB_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    #[command(flatten)]
    pub datasets: DatasetConfig,
    /// Address of the worker's `/healthz` and `/metrics`.
    #[arg(
        long,
        env = "ML_API_WORKER_METRICS_ADDR",
        default_value = "0.0.0.0:9091"
    )]
    pub metrics_addr: SocketAddr,
}

/// Logs, traces and error reporting; shared by every subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Telemetry")]
pub struct TelemetryConfig {
    /// Log format: `json` (one object per line, for containers), `pretty` (for humans), or
    /// `auto` (pretty on a terminal, JSON otherwise).
    #[arg(long, env = "ML_API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info,ml_api=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info,ort=warn", global = true)]
    pub log_filter: String,
    /// Sentry DSN; when set, panics and 5xx errors are reported to Sentry with request context.
    #[arg(long, env = "SENTRY_DSN", global = true, hide_env_values = true)]
    pub sentry_dsn: Option<String>,
    /// Sentry environment tag (e.g. `production`).
    #[arg(long, env = "SENTRY_ENVIRONMENT", global = true)]
    pub sentry_environment: Option<String>,
    /// Fraction of requests sent to Sentry as performance transactions (0 disables).
    #[arg(
        long,
        env = "SENTRY_TRACES_SAMPLE_RATE",
        default_value_t = 0.0,
        global = true
    )]
    pub sentry_traces_sample_rate: f32,
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`); when set, request
    /// spans are exported to `<endpoint>/v1/traces` and W3C `traceparent` is honoured.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` reported with exported spans.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        default_value = "ml-api",
        global = true
    )]
    pub service_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

/// Where models come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegistryKind {
    /// In-process registry (one node, nothing to install); bundled models from `--model-dir`.
    Embedded,
    /// Redis, shared by every replica and worker (Kubernetes).
    Redis,
}

/// The model registry and this replica's cache of loaded models.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Registry")]
pub struct RegistryConfig {
    /// Model registry backend.
    #[arg(long, env = "ML_API_REGISTRY", value_enum, default_value_t = RegistryKind::Embedded)]
    pub registry: RegistryKind,
    /// Redis URL for `--registry redis` (e.g. `redis://:password@redis:6379/0`).
    #[arg(
        long,
        env = "ML_API_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Redis Sentinel addresses (`host:port`, comma-separated). When set, ml-api connects to
    /// the master the sentinels name `--redis-sentinel-master` and follows it through a
    /// failover; `--redis-url` then only gives the password and database.
    #[arg(long, env = "ML_API_REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration.
    #[arg(long, env = "ML_API_REDIS_SENTINEL_MASTER", default_value = "mymaster")]
    pub redis_sentinel_master: String,
    /// Prefix of every Redis key, so several installations can share one Redis.
    #[arg(long, env = "ML_API_REDIS_PREFIX", default_value = "mlapi")]
    pub redis_prefix: String,
    /// Loaded models kept per replica (least recently used ones are unloaded).
    #[arg(long, env = "ML_API_MODEL_CACHE_SIZE", default_value_t = 8)]
    pub model_cache_size: usize,
    /// How often a replica re-reads aliases, healing any missed change notification (and,
    /// while the registry is unreachable, how often it tries to join it).
    #[arg(long, env = "ML_API_RECONCILE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,
    /// Models this replica must always serve besides the default model (comma-separated
    /// `name`, `name:alias` or ids): loaded at start, never evicted, and followed when their
    /// alias moves. Readiness waits for every pinned model.
    #[arg(long = "pin", env = "ML_API_PIN", value_delimiter = ',')]
    pub pins: Vec<String>,
    /// How long a replica remembers that the registry has no model of a name, alias or id
    /// before it asks again (a flood of unknown names does not reach Redis).
    #[arg(long, env = "ML_API_NEGATIVE_CACHE_TTL", default_value = "1s", value_parser = parse_duration)]
    pub negative_cache_ttl: Duration,
    /// Bound on connecting to Redis and on each registry command: nothing waits longer on a
    /// Redis that is down or frozen.
    #[arg(long, env = "ML_API_REDIS_OP_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub redis_op_timeout: Duration,
    /// Longest wait of an alias move or a delete for the other replicas to apply it before
    /// the write answers (they all follow it on their next request when they do).
    #[arg(long, env = "ML_API_ALIAS_SYNC_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub alias_sync_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on; port 0 lets the OS pick one.
    #[arg(long, env = "ML_API_ADDR", default_value = "0.0.0.0:5001")]
    pub addr: SocketAddr,
    /// Directory of models: one sub-directory per model holding `model.onnx` and an
    /// optional `card.json`.
    #[arg(long, env = "ML_API_MODEL_DIR", default_value = "models")]
    pub model_dir: PathBuf,
    /// Model served by `POST /predict`: `name` (its `latest` alias), `name:alias`, or an id.
    #[arg(long, env = "ML_API_DEFAULT_MODEL", default_value = "santander")]
    pub default_model: String,
    #[command(flatten)]
    pub registry: RegistryConfig,
    /// Admin API key required (as `Authorization: Bearer <key>`) by the write endpoints
    /// (train, delete, alias). Unset: writes are open, as the Celery training API's were (development only).
    #[arg(long, env = "ML_API_ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,
    /// With the embedded registry: training jobs run in this process, this many at a time,
    /// on the blocking thread pool (never on the async threads). Ignored with Redis, where
    /// `ml-api worker` processes train.
    #[arg(long, env = "ML_API_TRAINING_CONCURRENCY", default_value_t = 1)]
    pub training_concurrency: usize,
    #[command(flatten)]
    pub inference: InferenceConfig,
    #[command(flatten)]
    pub datasets: DatasetConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub grpc: GrpcConfig,
    #[command(flatten)]
    pub rate_limit: RateLimitConfig,
    #[command(flatten)]
    pub quota: QuotaConfig,
    #[command(flatten)]
    pub shadow: ShadowConfig,
    #[command(flatten)]
    pub access_log: AccessLogConfig,
}

/// The access log: one JSON line per request (target `ml_api::access`), written by a
/// background thread so a request never waits on stdout.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Access log")]
pub struct AccessLogConfig {
    /// Write access-log lines (`false`: none, errors included; 5xx are still logged as errors).
    #[arg(long = "access-log", env = "ML_API_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,
    /// Fraction of successful requests (status below 400) that get an access-log line, spread
    /// evenly (0.25: every fourth). Answers with status 400 or above are always logged.
    #[arg(long = "access-log-sample-rate", env = "ML_API_ACCESS_LOG_SAMPLE_RATE", default_value_t = 1.0, value_parser = parse_fraction)]
    pub access_log_sample_rate: f64,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0 and 1"))
    }
}

/// ONNX Runtime settings.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Inference")]
pub struct InferenceConfig {
    /// Path of the ONNX Runtime shared library (`libonnxruntime.so.*`); `make run` fetches it
    /// into `.ort/lib` with `scripts/fetch-onnxruntime.sh`.
    #[arg(
        long,
        env = "ORT_DYLIB_PATH",
        default_value = ".ort/lib/libonnxruntime.so.1.31.1"
    )]
    pub ort_dylib: PathBuf,
    /// Inference threads per model, each owning one ONNX Runtime session. Inference never
    /// runs on the async (tokio) threads. 0 means one per CPU core.
    #[arg(long, env = "ML_API_INFERENCE_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// ONNX Runtime intra-op threads per session (1 is best for many small requests).
    #[arg(long, env = "ML_API_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,
    /// Dynamic batching: most records one inference thread runs in a single ONNX Runtime call,
    /// merging the requests queued behind the one it takes (1 turns batching off). A model's
    /// card can override it (`batching.max_batch_size`).
    #[arg(long, env = "ML_API_BATCH_MAX_SIZE", default_value_t = 64)]
    pub batch_max_size: usize,
    /// Dynamic batching: how long a thread waits for more requests after the first (e.g.
    /// `500us`). 0 takes only what is already queued, so a lone request never waits.
    #[arg(long, env = "ML_API_BATCH_MAX_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub batch_max_delay: Duration,
    /// Requests that may wait for an inference thread before new ones get 503.
    #[arg(long, env = "ML_API_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Drift: keep per-feature histograms of served requests for models with a contract
    /// (`false` turns drift off; contracts are still enforced).
    #[arg(long = "drift", env = "ML_API_DRIFT", default_value_t = true, action = clap::ArgAction::Set)]
    pub drift_enabled: bool,
    /// Drift: the sliding window over which each replica compares the features it serves
    /// with the model's contract (PSI per feature; see `GET /models/{name}/drift`).
    #[arg(long, env = "ML_API_DRIFT_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub drift_window: Duration,
    /// Drift: time slots in the window (it slides by window / slots).
    #[arg(long, env = "ML_API_DRIFT_SLOTS", default_value_t = 10)]
    pub drift_slots: usize,
    /// Drift: rows the window must hold before PSI is reported.
    #[arg(long, env = "ML_API_DRIFT_MIN_SAMPLES", default_value_t = 200)]
    pub drift_min_samples: u64,
}

impl RegistryConfig {
    /// Where Redis is: the sentinels' master when sentinels are given, else the URL.
    pub fn redis_endpoint(&self) -> crate::redis_link::RedisEndpoint {
        crate::redis_link::RedisEndpoint::new(
            &self.redis_url,
            &self.redis_sentinels,
            &self.redis_sentinel_master,
        )
    }
}

impl InferenceConfig {
    pub fn drift(&self) -> crate::drift::DriftSettings {
        crate::drift::DriftSettings {
            window: self.drift_window,
            slots: self.drift_slots,
            min_samples: self.drift_min_samples,
        }
    }
}

/// Data sets (`POST /datasets`) and the size limits of training jobs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Data sets and training limits")]
pub struct DatasetConfig {
    /// Where uploaded data sets are stored: a directory, `file:///path`, or a bucket URL
    /// (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`) with credentials
    /// from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`). Replicas and training workers
    /// must all see the same store (in Kubernetes: a ReadWriteMany volume or a bucket).
    #[arg(long, env = "ML_API_DATASET_STORE", default_value = "data/datasets")]
    pub dataset_store: String,
    /// Largest data set upload (`POST /datasets`), in bytes as sent; larger uploads get 413
    /// and leave nothing stored. A gzip body (`Content-Encoding: gzip`) that decompresses to
    /// more than this many bytes gets 422 (`too_large`) and leaves nothing stored.
    #[arg(long, env = "ML_API_MAX_DATASET_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_dataset_bytes: u64,
    /// Largest `POST /models` body, in bytes (rows sent inside the JSON: `columns` +
    /// `features`, `records` or `csv`). Larger data goes through `POST /datasets`.
    #[arg(long, env = "ML_API_MAX_TRAINING_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_training_body_bytes: usize,
    /// Most rows × features sent inside one `POST /models` body.
    #[arg(
        long,
        env = "ML_API_MAX_INLINE_TRAINING_CELLS",
        default_value_t = 1_000_000
    )]
    pub max_inline_training_cells: usize,
    /// Most values in one training job's design matrix: rows × encoded columns (categories
    /// one-hot), 8 bytes each (the default, 500 million, is a 4 GB matrix).
    #[arg(long, env = "ML_API_MAX_TRAINING_CELLS", default_value_t = 500_000_000)]
    pub max_training_cells: usize,
}

impl DatasetConfig {
    pub fn limits(&self) -> crate::training::Limits {
        crate::training::Limits {
            inline_cells: self.max_inline_training_cells,
            encoded_cells: self.max_training_cells,
        }
    }
}

/// HTTP server behaviour.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes (larger bodies get 413).
    #[arg(long, env = "ML_API_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest ONNX upload (`POST /models/upload`), in bytes.
    #[arg(long, env = "ML_API_MAX_UPLOAD_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Most records accepted in one `POST /predict` batch.
    #[arg(long, env = "ML_API_MAX_BATCH_RECORDS", default_value_t = 1024)]
    pub max_batch_records: usize,
    /// A request that takes longer than this gets 503 (e.g. `10s`, `500ms`).
    #[arg(long, env = "ML_API_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// On SIGTERM, keep serving (with `/readyz` answering 503) this long so load balancers
    /// stop routing here, before the listener closes.
    #[arg(long, env = "ML_API_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// After the listener closes, in-flight requests get this long to finish.
    #[arg(long, env = "ML_API_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Once a client sends the first byte of a request, its head (request line and headers)
    /// must arrive within this time, or the connection is closed (slow-header clients).
    #[arg(long, env = "ML_API_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight that sends nothing for this long is closed
    /// (keep-alive included). Keep it above the ingress's upstream keep-alive timeout (60s
    /// for ingress-nginx), so the proxy closes idle connections first.
    #[arg(long, env = "ML_API_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// A request's body must keep arriving: when this long passes without a byte of it
    /// (after the head, or after the last piece), the request gets 408 and its connection
    /// is closed. `--request-timeout` also bounds the whole request (data set uploads
    /// excepted: they take as long as their bytes take to arrive).
    #[arg(long, env = "ML_API_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Most connections open at once (0: no cap). Further clients wait in the listen backlog
    /// until a connection closes; they are not refused.
    #[arg(long, env = "ML_API_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
}

/// The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), with gRPC health
/// and server reflection, on its own port.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "gRPC")]
pub struct GrpcConfig {
    /// Serve gRPC (`false`: HTTP only).
    #[arg(id = "grpc", long = "grpc", env = "ML_API_GRPC", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Address of the gRPC listener; port 0 lets the OS pick one.
    #[arg(long, env = "ML_API_GRPC_ADDR", default_value = "0.0.0.0:8001")]
    pub grpc_addr: SocketAddr,
    /// Largest gRPC message accepted or sent, in bytes (larger requests get
    /// RESOURCE_EXHAUSTED).
    #[arg(long, env = "ML_API_GRPC_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub grpc_max_message_bytes: usize,
}

/// Per-client rate limiting (tower_governor, in memory per replica).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rate limiting")]
pub struct RateLimitConfig {
    /// Enable per-client rate limiting of the API routes (health, metrics and docs are exempt).
    #[arg(long = "rate-limit", env = "ML_API_RATE_LIMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Sustained requests per second allowed per client.
    #[arg(
        long = "rate-limit-rps",
        env = "ML_API_RATE_LIMIT_RPS",
        default_value_t = 100.0
    )]
    pub per_second: f64,
    /// Requests a client may send at once above the sustained rate.
    #[arg(
        long = "rate-limit-burst",
        env = "ML_API_RATE_LIMIT_BURST",
        default_value_t = 200
    )]
    pub burst: u32,
    /// Header carrying a client's API key; clients that send it are limited per key,
    /// the others per IP address.
    #[arg(long, env = "ML_API_API_KEY_HEADER", default_value = "x-api-key")]
    pub api_key_header: String,
    /// Comma-separated CIDRs of proxies (the ingress) whose `X-Forwarded-For` is trusted.
    #[arg(
        long,
        env = "ML_API_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = "127.0.0.1/32,::1/128"
    )]
    pub trusted_proxies: Vec<IpNet>,
}

/// Per-key quotas: API keys created with `POST /keys`, each with its own rate and burst,
/// shared by every replica through Redis (in memory with the embedded registry).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "API keys and quotas")]
pub struct QuotaConfig {
    /// Longest wait for Redis on a request's quota check; past it (or when Redis is
    /// unreachable) the replica decides alone, with a local limit.
    #[arg(long = "quota-redis-timeout", alias = "redis-timeout", env = "ML_API_QUOTA_REDIS_TIMEOUT", default_value = "100ms", value_parser = parse_duration)]
    pub redis_timeout: Duration,
    /// How long a replica trusts its cached copy of a key (a revoked key may be accepted by
    /// other replicas for this long).
    #[arg(long = "quota-key-cache-ttl", alias = "key-cache-ttl", env = "ML_API_QUOTA_KEY_CACHE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub key_cache_ttl: Duration,
    /// While Redis is unreachable, each replica allows a key its rate divided by this (set it
    /// to the replica count to keep the total near the key's rate; 1 lets every replica
    /// allow the full rate).
    #[arg(
        long = "quota-fallback-replicas",
        alias = "fallback-replicas",
        env = "ML_API_QUOTA_FALLBACK_REPLICAS",
        default_value_t = 1
    )]
    pub fallback_replicas: u32,
}

/// Challenger shadow scoring (see `PUT /models/{name}/aliases/{alias}`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Shadow scoring")]
pub struct ShadowConfig {
    /// Sampled requests that may wait for the challenger; when the queue is full, samples are
    /// dropped (and counted), never slowing the answer.
    #[arg(long, env = "ML_API_SHADOW_QUEUE", default_value_t = 256)]
    pub shadow_queue: usize,
    /// How often a replica adds its comparison counts to the registry's shared statistics.
    #[arg(long, env = "ML_API_SHADOW_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub shadow_flush_interval: Duration,
}

/// Parses a duration for every duration flag: a bare number of seconds (`3`, `0.5`) or a
/// `humantime` duration (`250ms`, `10s`, `2m`, `1h`, `1h30m`, `1d`), the forms the Helm
/// chart's values.schema.json allows.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // Bare seconds; the digit check keeps `inf`, `NaN` and signs out.
    if let (true, Ok(seconds)) = (
        text.starts_with(|c: char| c.is_ascii_digit()),
        text.parse::<f64>(),
    ) {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration such as 500ms, 10s, 2m, 1h or 1h30m ({e})")
    })
}

impl ServeConfig {
    /// Settings for tests and benches: port 0 on loopback, everything else at its default.
    pub fn for_tests(model_dir: impl Into<PathBuf>, default_model: &str) -> Self {
        #[derive(Parser)]
        struct ServeOnly {
            #[command(flatten)]
            config: ServeConfig,
        }
        let mut config = ServeOnly::parse_from([
            "ml-api",
            "--addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .config;
        config.model_dir = model_dir.into();
        config.default_model = default_model.to_owned();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration(" 0.5 "), Ok(Duration::from_millis(500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("").is_err());
    }

    /// Every flag whose default is a duration with a unit (all of them are) accepts `1h`
    /// (the Helm chart's schema allows it for every duration value).
    #[test]
    fn every_duration_flag_accepts_hours() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let mut checked = Vec::new();
        for sub in ["serve", "worker"] {
            let command = cli.find_subcommand(sub).expect("subcommand exists");
            for arg in command.get_arguments() {
                let Some(default) = arg.get_default_values().first() else {
                    continue;
                };
                let default = default.to_string_lossy();
                let has_unit = default.ends_with('s') || default.ends_with('m');
                if !(has_unit && default.starts_with(|c: char| c.is_ascii_digit())) {
                    continue;
                }
                let long = format!("--{}", arg.get_long().expect("duration flags are long"));
                let mut argv = vec!["ml-api", sub, long.as_str(), "1h"];
                if sub == "serve" {
                    argv.extend(["--addr", "127.0.0.1:0"]);
                }
                if let Err(e) = Cli::try_parse_from(&argv) {
                    panic!("`ml-api {sub} {long} 1h` is refused: {e}");
                }
                checked.push(long);
            }
        }
        for flag in ["--drift-window", "--reconcile-interval", "--reclaim-after"] {
            assert!(
                checked.iter().any(|c| c == flag),
                "{flag} not found among {checked:?}"
            );
        }
    }

    /// The chart's values.schema.json gives every duration one definition, a pattern of the
    /// form `^([0-9]+(unit|unit|...))+$`. Each unit it allows, alone, with several numbers and
    /// chained (`1h30m`), and each of the definition's `examples` must parse.
    #[test]
    fn every_duration_the_chart_schema_allows_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/helm/ml-api/values.schema.json"
        );
        let text = std::fs::read_to_string(path).expect("chart schema readable");
        let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
        let duration = &schema["definitions"]["duration"];
        let pattern = duration["pattern"]
            .as_str()
            .expect("definitions.duration.pattern");
        let units = pattern
            .strip_prefix("^([0-9]+(")
            .and_then(|p| p.strip_suffix("))+$"))
            .unwrap_or_else(|| panic!("unexpected duration pattern shape: {pattern}"));
        let units: Vec<&str> = units.split('|').collect();
        assert!(units.contains(&"h"), "schema allows hours: {units:?}");
        for unit in &units {
            for number in ["0", "1", "7", "59", "3600"] {
                let text = format!("{number}{unit}");
                assert!(
                    parse_duration(&text).is_ok(),
                    "schema allows `{text}`, parser refuses it"
                );
            }
            let chained = format!("1h2{unit}");
            assert!(
                parse_duration(&chained).is_ok(),
                "schema allows `{chained}`"
            );
        }
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        let examples = duration["examples"]
            .as_array()
            .expect("definitions.duration.examples");
        for example in examples {
            let example = example.as_str().expect("examples are strings");
            assert!(
                parse_duration(example).is_ok(),
                "schema example `{example}` refused"
            );
        }
        // No other duration pattern hides elsewhere in the schema: each one is a $ref here.
        assert_eq!(
            text.matches("ms|").count(),
            1,
            "a second duration pattern in {path}"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// The README's configuration table, checked against the flags the binary takes (the
    /// same definitions `--help` prints): a flag without a row, a row without a flag, or a
    /// row whose env var or default differs fails with the row to write.
    #[test]
    fn the_readme_configuration_table_matches_the_flags() {
        use clap::CommandFactory;
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Configuration")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README.md has a `## Configuration` section");
        // `--flag` (serve and global) or `ml-api worker --flag` → (env, default cell).
        let rows: std::collections::BTreeMap<String, (String, String)> = section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
                let flag = cells.first()?.trim_start_matches("| ").trim_matches('`');
                let env = cells.get(1)?.trim_matches('`');
                Some((
                    flag.to_owned(),
                    (env.to_owned(), (*cells.get(2)?).to_owned()),
                ))
            })
            .collect();
        let command = Cli::command();
        let mut flags = Vec::new();
        let mut serve_longs = std::collections::HashSet::new();
        for sub in ["serve", "worker"] {
            let sub_command = command
                .find_subcommand(sub)
                .expect("serve and worker subcommands");
            for arg in sub_command.get_arguments().chain(command.get_arguments()) {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "version") {
                    continue;
                }
                let key = if sub == "serve" || arg.is_global_set() {
                    serve_longs.insert(long.to_owned());
                    format!("--{long}")
                } else if serve_longs.contains(long) {
                    continue; // shared with serve (registry, telemetry): one row
                } else {
                    format!("ml-api worker --{long}")
                };
                let env = arg
                    .get_env()
                    .map(|env| env.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let default: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                flags.push((key, env, default.join(",")));
            }
        }
        flags.sort();
        flags.dedup();
        let mut problems = Vec::new();
        for (key, env, default) in &flags {
            let shown = if default.is_empty() {
                "unset".to_owned()
            } else {
                format!("`{default}`")
            };
            match rows.get(key) {
                None => problems.push(format!(
                    "no row for `{key}`; add to README.md's configuration table: | `{key}` | `{env}` | {shown} | <what it does> |"
                )),
                Some((row_env, _)) if row_env != env => problems.push(format!(
                    "`{key}`: README says env `{row_env}`, the binary reads `{env}`"
                )),
                Some((_, cell)) if !default.is_empty() && !cell.starts_with(&shown) => problems
                    .push(format!(
                        "`{key}`: README says default {cell}, the binary's is {shown}"
                    )),
                Some((_, cell)) if default.is_empty() && cell.starts_with('`') => problems.push(
                    format!("`{key}`: README says default {cell}, the binary has none"),
                ),
                Some(_) => {}
            }
        }
        for key in rows.keys() {
            if !flags.iter().any(|(flag, _, _)| flag == key) {
                problems.push(format!(
                    "README.md documents `{key}`, which the binary does not take"
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "README.md's configuration table and `ml-api --help` disagree:\n  {}",
            problems.join("\n  ")
        );
    }

    #[test]
    fn quota_flags_keep_their_old_names_as_aliases() {
        let cli = Cli::parse_from([
            "ml-api",
            "serve",
            "--redis-timeout",
            "50ms",
            "--key-cache-ttl",
            "3s",
            "--fallback-replicas",
            "4",
        ]);
        let Command::Serve(config) = cli.command else {
            panic!("parsed as serve")
        };
        assert_eq!(config.quota.redis_timeout, Duration::from_millis(50));
        assert_eq!(config.quota.key_cache_ttl, Duration::from_secs(3));
        assert_eq!(config.quota.fallback_replicas, 4);
    }

    #[test]
    fn serve_defaults_match_the_seed() {
        let cli = Cli::parse_from(["ml-api", "serve"]);
        let Command::Serve(config) = cli.command else {
            panic!("parsed as serve")
        };
        assert_eq!(config.addr.port(), 5001);
        assert_eq!(config.default_model, "santander");
    }
}
