//! Scoring: records (a JSON record or an array of them) become the model's typed columns,
//! are checked against the model's contract, observed for drift, run by the inference pool,
//! offered to the shadow hook and counted. Every prediction route calls [`Scorer::score_json`] (or, for
//! typed tensors, [`Scorer::score_decoded`]);
//! what needs the same decode-then-infer without the serving policy (warm-up, profiling, the
//! upload's reference check, the challenger in shadow scoring) calls [`run`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    catalog::ModelRef,
    load::LoadedModel,
    metrics::ServingMetrics,
    tensors::{self, Tensor, TensorError},
};
use crate::{
    drift::{DriftMonitor, Observed, Tally},
    inference::InferenceError,
    model::{
        contract::{Action, CompiledContract},
        decode::{self, DecodedRecords, RecordsError},
        FeatureBatch, FieldError, Scores,
    },
    spans,
};

/// Why a request could not be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// The input breaks the model's schema or a `reject` contract: each problem as data.
    #[error("{} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// The model's queue is full.
    #[error("the model is at capacity")]
    Overloaded,
    /// The model is unloading.
    #[error("{0}")]
    Unavailable(String),
    /// The model failed on valid input.
    #[error("{0}")]
    Failed(String),
    /// The body is not JSON (the parser's message).
    #[error("{0}")]
    Malformed(String),
}

impl ScoreError {
    pub(crate) fn from_inference(error: InferenceError, model: &str) -> Self {
        match error {
            InferenceError::QueueFull => Self::Overloaded,
            InferenceError::Stopped => Self::Unavailable("the model is unloading".to_owned()),
            InferenceError::Failed(message) => Self::Failed(format!("model `{model}`: {message}")),
        }
    }
}

/// How long each stage took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Records into typed columns.
    pub decode: Duration,
    /// The contract check and drift observation.
    pub validate: Duration,
    /// Queue wait and inference.
    pub infer: Duration,
}

/// Scores and how long each stage took.
#[derive(Debug, Clone)]
pub struct Scored {
    pub scores: Scores,
    pub timings: Timings,
}

/// A decoded batch on its way to the model: whether the request was a batch (field paths
/// carry `[i].`) and when decoding started (for [`Timings::decode`]).
pub struct Decoded {
    pub batch: FeatureBatch,
    pub is_batch: bool,
    pub started: Instant,
}

/// Called after the champion answered a request that named the model through `via`:
/// challenger shadow scoring implements it (`crate::shadow`). `body` builds the request's
/// records as JSON; call it only for a sampled request.
pub trait ShadowHook: Send + Sync {
    fn offer(
        &self,
        via: Option<&ModelRef>,
        model: &LoadedModel,
        body: &(dyn Fn() -> Value + Sync),
        scores: &Scores,
        champion_latency: Duration,
    );
}

/// The serving policy around a model: batch size limit, contract, drift, shadow, metrics.
pub struct Scorer {
    metrics: ServingMetrics,
    max_batch_records: usize,
    shadow: Option<Arc<dyn ShadowHook>>,
}

impl Scorer {
    pub fn new(
        metrics: ServingMetrics,
        max_batch_records: usize,
        shadow: Option<Arc<dyn ShadowHook>>,
    ) -> Self {
        Self {
            metrics,
            max_batch_records,
            shadow,
        }
    }

    /// The most records one request may carry.
    pub fn max_batch_records(&self) -> usize {
        self.max_batch_records
    }

    /// Decodes a JSON body (one record or a batch) straight from its bytes, validates it
    /// against the model's schema and contract and runs it. `via`: the alias (or id) the
    /// request named, for challenger shadow scoring. A body that is not JSON is
    /// [`ScoreError::Malformed`].
    pub async fn score_json(
        &self,
        model: &LoadedModel,
        body: &[u8],
        via: Option<&ModelRef>,
    ) -> Result<Scored, ScoreError> {
        let (started, decoded) = decode_stage(model, || {
            decode::from_slice(&model.schema, body, self.max_batch_records)
        });
        let decoded = match decoded {
            Err(RecordsError::Syntax(message)) => return Err(ScoreError::Malformed(message)),
            Err(RecordsError::Invalid(errors)) => Err(errors),
            Ok(decoded) => Ok(decoded),
        };
        // The challenger decodes the records with its own schema: parsed only when sampled.
        let records = || serde_json::from_slice(body).unwrap_or(Value::Null);
        self.score_records(model, decoded, started, via, &records)
            .await
    }

    /// [`Self::score_json`] for a body already parsed (the Celery training API's query string).
    pub async fn score(
        &self,
        model: &LoadedModel,
        body: &Value,
        via: Option<&ModelRef>,
    ) -> Result<Scored, ScoreError> {
        let (started, decoded) = decode_stage(model, || {
            decode::from_value(&model.schema, body, self.max_batch_records)
        });
        self.score_records(model, decoded, started, via, &|| body.clone())
            .await
    }

    async fn score_records(
        &self,
        model: &LoadedModel,
        decoded: Result<DecodedRecords, Vec<FieldError>>,
        started: Instant,
        via: Option<&ModelRef>,
        records: &(dyn Fn() -> Value + Sync),
    ) -> Result<Scored, ScoreError> {
        let decoded = decoded.map_err(|errors| self.reject(&model.name, errors))?;
        let decoded = Decoded {
            batch: decoded.batch,
            is_batch: decoded.is_batch,
            started,
        };
        self.score_decoded(model, decoded, via, records).await
    }

    /// Decodes typed tensors (the Open Inference Protocol's) into the model's columns, at most
    /// [`Self::max_batch_records`] rows, for [`Self::score_decoded`]; the values the schema
    /// refuses are counted as [`Self::reject`] counts them.
    pub fn decode_tensors(
        &self,
        model: &LoadedModel,
        tensors: &[Tensor<'_>],
    ) -> Result<Decoded, TensorError> {
        let (started, decoded) = decode_stage(model, || {
            tensors::decode(&model.schema, &model.name, tensors, self.max_batch_records)
        });
        match decoded {
            Ok(batch) => Ok(Decoded {
                batch,
                is_batch: true,
                started,
            }),
            Err(TensorError::Invalid(errors)) => {
                self.count_rejected(&model.name, &errors);
                Err(TensorError::Invalid(errors))
            }
            Err(malformed) => Err(malformed),
        }
    }

    /// Refuses a request whose input could not be decoded, counting each problem.
    pub fn reject(&self, model: &str, errors: Vec<FieldError>) -> ScoreError {
        self.count_rejected(model, &errors);
        ScoreError::Invalid(errors)
    }

    /// Checks an already decoded batch against the model's contract and runs it: the rest of
    /// [`Self::score`] for inputs decoded elsewhere (typed tensors). `records` builds the
    /// request as JSON records, called only when the shadow hook samples the request.
    pub async fn score_decoded(
        &self,
        model: &LoadedModel,
        decoded: Decoded,
        via: Option<&ModelRef>,
        records: &(dyn Fn() -> Value + Sync),
    ) -> Result<Scored, ScoreError> {
        let Decoded {
            batch,
            is_batch,
            started,
        } = decoded;
        let decoded = Instant::now();
        let rows = batch.rows;
        let observed = match &model.contract {
            Some(contract) => self.enforce_contract(model, contract, &batch, is_batch)?,
            None => None,
        };
        let validated = Instant::now();
        let scores = infer(model, batch).await?;
        let inferred = Instant::now();
        let timings = Timings {
            decode: decoded - started,
            validate: validated - decoded,
            infer: inferred - validated,
        };
        if let Some(shadow) = &self.shadow {
            shadow.offer(via, model, records, &scores, timings.infer);
        }
        model
            .predictions
            .get_or_init(|| self.metrics.predictions.with_label_values(&[&model.name]))
            .inc_by(rows as u64);
        if let Some((drift, at)) = observed {
            drift.observe_predictions(at, &scores);
        }
        Ok(Scored { scores, timings })
    }

    /// Checks a decoded batch against the model's contract: departures under a `reject`
    /// policy refuse the request with the same field errors as a schema error; under `warn`
    /// they are served, counted and logged. Both are counted by feature, reason and action.
    /// A request that is served is counted for drift, in the same pass over its values.
    fn enforce_contract<'m>(
        &self,
        model: &'m LoadedModel,
        contract: &CompiledContract,
        batch: &FeatureBatch,
        is_batch: bool,
    ) -> Result<Option<(&'m DriftMonitor, Observed)>, ScoreError> {
        let mut tally = Tally::default();
        let violations = match &model.drift {
            Some(drift) => contract.check_binned(batch, decode::MAX_REPORTED_ERRORS, |f, bin| {
                drift.tally(&mut tally, f, bin)
            }),
            None => contract.check(batch, decode::MAX_REPORTED_ERRORS),
        };
        let served = |tally: &Tally| {
            (model.drift.as_ref()).map(|drift| (drift, drift.commit(batch.rows, tally)))
        };
        let Some(first) = violations.first() else {
            return Ok(served(&tally));
        };
        let feature_name = |index: usize| model.schema.fields.get(index).map(|f| f.name.as_str());
        let mut errors = Vec::new();
        for violation in &violations {
            let feature = feature_name(violation.field);
            self.metrics
                .validation_failures
                .with_label_values(&[
                    &model.name,
                    feature.unwrap_or("record"),
                    violation.reason,
                    violation.action.as_str(),
                ])
                .inc();
            if violation.action == Action::Reject {
                errors.push(FieldError::in_record(
                    is_batch.then_some(violation.row),
                    Some(feature.unwrap_or("record")),
                    violation.reason,
                    violation.message.clone(),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ScoreError::Invalid(errors));
        }
        tracing::warn!(
            model = %model.name,
            departures = violations.len(),
            first_feature = %feature_name(first.field).unwrap_or(""),
            first_reason = first.reason,
            first = %first.message,
            "served a request outside the model's contract (policy: warn)"
        );
        Ok(served(&tally))
    }

    fn count_rejected(&self, model: &str, errors: &[FieldError]) {
        for error in errors {
            self.metrics
                .validation_failures
                .with_label_values(&[model, error.feature_label(), error.reason, "reject"])
                .inc();
        }
    }
}

/// Runs one decoder inside the `decode` stage span (a span only while spans are consumed):
/// the one place every input shape is decoded from. Returns when decoding started, for
/// [`Timings::decode`].
fn decode_stage<T>(model: &LoadedModel, decode: impl FnOnce() -> T) -> (Instant, T) {
    let started = Instant::now();
    let _span = spans::stage(|| tracing::info_span!("decode", model = %model.name)).entered();
    (started, decode())
}

/// Runs a decoded batch through the model's inference pool (queue wait included).
pub async fn infer(model: &LoadedModel, batch: FeatureBatch) -> Result<Scores, ScoreError> {
    model
        .infer(batch)
        .await
        .map_err(|error| ScoreError::from_inference(error, &model.name))
}

/// Decode-then-infer without the serving policy (no contract, drift, shadow or metrics).
pub async fn run(
    model: &LoadedModel,
    body: &Value,
    max_records: usize,
) -> Result<Scored, ScoreError> {
    let started = Instant::now();
    let batch = decode::from_value(&model.schema, body, max_records)
        .map_err(ScoreError::Invalid)?
        .batch;
    let decoded = Instant::now();
    let scores = infer(model, batch).await?;
    let timings = Timings {
        decode: decoded - started,
        validate: Duration::ZERO,
        infer: decoded.elapsed(),
    };
    Ok(Scored { scores, timings })
}
