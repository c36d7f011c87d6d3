//! Loading a model: a model directory (`<dir>/<name>/model.onnx` + optional `card.json`) or
//! registry bytes become a [`LoadedModel`]: one ONNX Runtime session per inference thread,
//! the request schema derived from graph and card, warmed up before use.

use std::{
    path::Path,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use prometheus::IntCounter;
use sha2::{Digest, Sha256};

use crate::{
    config::InferenceConfig,
    drift::DriftMonitor,
    inference::{
        batcher::Batching,
        metrics::InferenceMetrics,
        ort::{self as ort_backend, OrtBackend, SessionOptions},
        pool::InferencePool,
        Backend, InferenceError,
    },
    model::{
        batch::argmax, contract::CompiledContract, decode, Contract, FeatureBatch, ModelCard,
        ModelSchema, Scores,
    },
};

use super::scorer;

pub struct LoadedModel {
    pub name: String,
    pub version: String,
    pub card: ModelCard,
    pub schema: ModelSchema,
    pub sha256: String,
    /// Time taken to load and warm up.
    pub load_seconds: f64,
    /// The registry record it was loaded from, kept so the Celery training API's `GET /models/{id}?...` is
    /// answered while the registry is unreachable.
    pub record: Option<crate::registry::ModelRecord>,
    /// The card's feature contract, checked against the schema; None when the card has none.
    pub contract: Option<CompiledContract>,
    /// Sliding-window histograms of served features, for drift (with a contract only).
    pub drift: Option<DriftMonitor>,
    pool: InferencePool,
    /// The scorer's `ml_api_predictions_total{model}` of this model, looked up once.
    pub(super) predictions: OnceLock<IntCounter>,
}

impl LoadedModel {
    /// The registry id it was loaded from (none for a bundled model served before the
    /// registry was reachable).
    pub fn id(&self) -> Option<uuid::Uuid> {
        self.record.as_ref().map(|record| record.id)
    }

    pub async fn infer(&self, batch: FeatureBatch) -> Result<Scores, InferenceError> {
        self.pool.infer(batch).await
    }
}

/// A model as found on disk or in the registry, before it is loaded.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub name: String,
    pub card: ModelCard,
    pub bytes: Vec<u8>,
}

/// Reads every sub-directory of `dir` that holds a `model.onnx` (and maybe a `card.json`).
pub fn read_model_dir(dir: &Path) -> anyhow::Result<Vec<ModelSource>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the model directory `{}`", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join("model.onnx").is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            read_model(path)
                .with_context(|| format!("cannot read the model in `{}`", path.display()))
        })
        .collect()
}

/// Reads one model directory (`model.onnx` and an optional `card.json`).
pub fn read_model(dir: &Path) -> anyhow::Result<ModelSource> {
    let card_path = dir.join("card.json");
    let card: ModelCard = if card_path.is_file() {
        let text = std::fs::read_to_string(&card_path)?;
        serde_json::from_str(&text).with_context(|| format!("invalid `{}`", card_path.display()))?
    } else {
        ModelCard::default()
    };
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let name = card.name.clone().unwrap_or_else(|| dir_name.to_owned());
    let bytes = ort_backend::read_model(&dir.join("model.onnx"))?;
    Ok(ModelSource { name, card, bytes })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl LoadedModel {
    /// Opens one session per inference thread, derives the schema from graph and card, and
    /// warms the model up. Fails on a model ml-api cannot serve.
    pub async fn load(
        source: ModelSource,
        version: String,
        config: &InferenceConfig,
        metrics: &InferenceMetrics,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let ModelSource { name, card, bytes } = source;
        let sha256 = sha256_hex(&bytes);
        let dylib = config.ort_dylib.clone();
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let options = SessionOptions {
            intra_op_threads: config.intra_op_threads,
        };
        // Session creation is CPU work: keep it off the async threads.
        let card_for_schema = card.clone();
        let (sessions, schema, inputs, contract) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let env = ort_backend::environment(&dylib)?;
                let mut sessions = Vec::with_capacity(workers);
                let mut signature = None;
                for _ in 0..workers {
                    let (session, sig) = OrtBackend::open(env, &bytes, options)?;
                    signature = Some(sig);
                    sessions.push(session);
                }
                let signature = signature.context("no inference worker configured")?;
                let schema =
                    ModelSchema::build(&signature.inputs, &signature.outputs, &card_for_schema)?;
                let contract = card_for_schema
                    .contract
                    .as_ref()
                    .map(|contract| contract.compile(&schema))
                    .transpose()?;
                Ok((sessions, schema, signature.inputs, contract))
            })
            .await??;
        let inputs: Arc<[_]> = inputs.into();
        let backends: Vec<Box<dyn Backend>> = sessions
            .into_iter()
            .map(|session| {
                Box::new(OrtBackend::new(
                    session,
                    inputs.clone(),
                    schema.output.clone(),
                )) as Box<dyn Backend>
            })
            .collect();
        let workers = backends.len();
        let card_batching = card.batching.clone().unwrap_or_default();
        let batching = Batching {
            max_rows: card_batching
                .max_batch_size
                .unwrap_or(config.batch_max_size)
                .max(1),
            max_delay: card_batching
                .max_delay_us
                .map_or(config.batch_max_delay, Duration::from_micros),
        };
        let pool = InferencePool::start(
            &name,
            backends,
            config.queue_capacity,
            batching,
            metrics.for_model(&name),
        )?;
        let drift = contract
            .as_ref()
            .filter(|_| config.drift_enabled)
            .map(|contract| DriftMonitor::new(contract, config.drift()));
        let mut model = Self {
            name,
            version,
            card,
            schema,
            sha256,
            load_seconds: 0.0,
            record: None,
            contract,
            drift,
            pool,
            predictions: OnceLock::new(),
        };
        warm_up(&model, workers).await?;

        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(model = %model.name, version = %model.version, inputs = model.schema.fields.len(), seconds, "model loaded");
        model.load_seconds = seconds;
        Ok(model)
    }
}

impl LoadedModel {
    /// Profiles a reference sample (records in `POST /predict`'s shape) into a feature
    /// contract, with the share of rows this model gives each output column. Invalid records
    /// are refused with their field errors.
    pub async fn profile(&self, records: &serde_json::Value) -> Result<Contract, ProfileError> {
        let batch = decode::from_value(&self.schema, records, usize::MAX)
            .map_err(ProfileError::Invalid)?
            .batch;
        let scores = scorer::infer(self, batch.clone())
            .await
            .map_err(|e| ProfileError::Inference(e.to_string()))?;
        let winners: Vec<usize> = scores
            .iter_rows()
            .map(|row| argmax(row).unwrap_or(0))
            .collect();
        Ok(Contract::profile(&self.schema, &batch, Some(&winners)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("the sample does not validate against the model: {0:?}")]
    Invalid(Vec<crate::model::FieldError>),
    #[error("the model failed on the sample: {0}")]
    Inference(String),
}

/// Runs the card's example (when it has one) through every thread, so the first real request
/// pays no first-run cost and a model that cannot run its own example never reports ready.
async fn warm_up(model: &LoadedModel, workers: usize) -> anyhow::Result<()> {
    let Some(example) = &model.card.example else {
        return Ok(());
    };
    let batch = decode::from_value(&model.schema, example, 1)
        .map_err(|errors| anyhow::anyhow!("the card's example does not validate: {errors:?}"))?
        .batch;
    // Queue one run per thread at once, so every session gets its first run here.
    let runs = (0..workers).map(|_| scorer::infer(model, batch.clone()));
    for scores in futures::future::try_join_all(runs).await? {
        ensure!(scores.rows == 1, "warm-up returned {} rows", scores.rows);
        if !model.schema.labels.is_empty() {
            ensure!(
                scores.width == model.schema.labels.len(),
                "the model returns {} scores per record but its card has {} labels",
                scores.width,
                model.schema.labels.len()
            );
        }
    }
    Ok(())
}
