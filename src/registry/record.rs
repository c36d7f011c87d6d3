//! What the registry stores about a model (everything but its ONNX bytes).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::model::ModelCard;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    Queued,
    Training,
    Ready,
    Failed,
}

impl std::str::FromStr for ModelStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "queued" => Ok(Self::Queued),
            "training" => Ok(Self::Training),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            other => Err(format!(
                "`{other}` is not a status (queued, training, ready, failed)"
            )),
        }
    }
}

/// Training progress, visible while a model trains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub iteration: u64,
    pub loss: f64,
}

/// A training job's phase, shown beside [`Progress`] while it trains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhaseProgress {
    #[schema(value_type = String)]
    pub phase: crate::training::Phase,
    pub rows_read: u64,
    /// Milliseconds since the Unix epoch when this phase began.
    pub since_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelRecord {
    pub id: Uuid,
    pub name: String,
    /// 1, 2, ... per name, assigned by the registry.
    pub version: u64,
    pub status: ModelStatus,
    /// Why training failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// `bundled`, `trained` or `uploaded`.
    pub source: String,
    /// Feature names in the order the Celery training API's `GET /models/{id}?...` reads them.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Output labels, and the original class values they stand for (ints stay ints).
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub class_values: Vec<Value>,
    /// Training parameters as requested.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metrics: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// What a training job is doing now (`reading`, `fitting`, `exporting`, `profiling`) and
    /// how many rows it has read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PhaseProgress>,
    /// Training attempts so far (a worker that dies mid-job costs one).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub card: Option<ModelCard>,
}

impl ModelRecord {
    pub fn new(name: &str, source: &str, status: ModelStatus) -> Self {
        let now = now_ms();
        Self {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            version: 0,
            status,
            error: None,
            created_at_ms: now,
            updated_at_ms: now,
            source: source.to_owned(),
            columns: Vec::new(),
            labels: Vec::new(),
            class_values: Vec::new(),
            params: Value::Null,
            metrics: Value::Null,
            progress: None,
            phase: None,
            attempts: 0,
            sha256: None,
            size_bytes: None,
            card: None,
        }
    }

    pub fn touch(&mut self) {
        self.updated_at_ms = now_ms();
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
