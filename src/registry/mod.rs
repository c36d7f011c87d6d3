//! The model registry: every model a fleet of replicas can serve, with its status, metadata,
//! ONNX bytes, versions and movable aliases. Two backends behind one trait:
//! [`embedded::EmbeddedRegistry`] (in-process, one node) and [`redis::RedisRegistry`]
//! (shared by every replica in Kubernetes).
//!
//! Models are stored as ONNX bytes plus JSON metadata. Nothing is ever pickled.

pub mod embedded;
pub mod record;
pub mod redis;
pub mod shadow;
pub mod view;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use record::{now_ms, ModelRecord, ModelStatus, Page, PhaseProgress, Progress};
pub use shadow::{Challenger, Promotion, ShadowKey, Tally};
pub use view::AliasView;

/// The alias that `name` alone means, and that moves to each newly ready version.
pub const LATEST: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The backing store cannot be reached; reads of loaded models keep working, writes fail.
    #[error("model registry unavailable: {0}")]
    Unavailable(String),
    #[error("model `{0}` not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("registry data is corrupt: {0}")]
    Corrupt(String),
}

/// A change that replicas must react to (sent over Redis pub/sub, or in-process).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RegistryEvent {
    /// A model's record changed (created, status moved, progress, ready).
    Updated {
        id: Uuid,
        name: String,
    },
    Deleted {
        id: Uuid,
        name: String,
    },
    AliasMoved {
        name: String,
        alias: String,
        id: Uuid,
    },
    /// An alias's challenger was set, changed or removed: replicas re-read the challengers.
    ChallengerChanged {
        name: String,
        alias: String,
    },
}

/// An event with the token its writer waits on (old replicas ignore the extra field).
pub(crate) fn notice(event: &RegistryEvent, ack: &str) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(event)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("ack".to_owned(), serde_json::Value::from(ack));
    }
    serde_json::to_string(&value)
}

/// Filter and page for [`ModelRegistry::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub name: Option<String>,
    pub status: Option<ModelStatus>,
    pub offset: usize,
    pub limit: usize,
}

impl ListQuery {
    pub fn matches(&self, record: &ModelRecord) -> bool {
        self.name.as_ref().is_none_or(|name| &record.name == name)
            && self.status.is_none_or(|status| record.status == status)
    }

    /// Filters records (given newest first) and cuts this query's page.
    pub fn page(&self, newest_first: impl IntoIterator<Item = ModelRecord>) -> Page<ModelRecord> {
        let matching: Vec<ModelRecord> = newest_first
            .into_iter()
            .filter(|r| self.matches(r))
            .collect();
        Page {
            total: matching.len(),
            items: matching
                .into_iter()
                .skip(self.offset)
                .take(self.limit)
                .collect(),
            offset: self.offset,
            limit: self.limit,
        }
    }
}

/// An alias of `name` may point only at an existing model of that name.
pub fn check_alias_target(
    record: Option<&ModelRecord>,
    name: &str,
    id: Uuid,
) -> Result<(), RegistryError> {
    match record {
        Some(record) if record.name == name => Ok(()),
        Some(record) => Err(misnamed_target(id, &record.name, name)),
        None => Err(RegistryError::NotFound(id.to_string())),
    }
}

/// An alias of `name` pointed at model `id`, which is named `actual`.
pub fn misnamed_target(id: Uuid, actual: &str, name: &str) -> RegistryError {
    RegistryError::Conflict(format!("model {id} is named `{actual}`, not `{name}`"))
}

#[async_trait]
pub trait ModelRegistry: Send + Sync + 'static {
    /// Stores a new record (and its ONNX bytes, when it has them). Assigns the next version
    /// of its name and returns the stored record.
    async fn create(
        &self,
        record: ModelRecord,
        onnx: Option<Bytes>,
    ) -> Result<ModelRecord, RegistryError>;
    /// Replaces a record's metadata (status, progress, metrics...), keeping id, name, version.
    async fn update(&self, record: &ModelRecord) -> Result<(), RegistryError>;
    /// Stores the ONNX bytes of a model, marks it ready and points `name:latest` at it, in
    /// one step: once the record reads `ready`, `name` serves it on every replica.
    async fn complete(&self, record: &ModelRecord, onnx: Bytes) -> Result<(), RegistryError>;
    async fn get(&self, id: Uuid) -> Result<Option<ModelRecord>, RegistryError>;
    async fn onnx(&self, id: Uuid) -> Result<Option<Bytes>, RegistryError>;
    async fn list(&self, query: &ListQuery) -> Result<Page<ModelRecord>, RegistryError>;
    /// Removes a model, its bytes and any alias pointing at it. `false` when unknown.
    async fn delete(&self, id: Uuid) -> Result<bool, RegistryError>;
    /// Stores a model unless one of the same name with the same content (`record.sha256`)
    /// is stored already, and points `name:latest` at the stored one when that alias is
    /// unset: one atomic step, so writers racing on a name (replicas starting together on an
    /// empty registry) store one version and agree on the alias. Returns the stored record.
    async fn import(&self, record: ModelRecord, onnx: Bytes) -> Result<ModelRecord, RegistryError>;
    /// Points `name:alias` at a model of that name. Returns once every replica that follows
    /// the registry's notifications has applied the move (or the backend's bound passed), so
    /// the next request to any replica follows the alias.
    async fn set_alias(&self, name: &str, alias: &str, id: Uuid) -> Result<(), RegistryError>;
    /// Every alias of every name: `(name, alias, id)`.
    async fn aliases(&self) -> Result<Vec<(String, String, Uuid)>, RegistryError>;
    /// The model `name:alias` points at now, read from the backing store (and recorded in
    /// [`Self::view`]).
    async fn alias(&self, name: &str, alias: &str) -> Result<Option<Uuid>, RegistryError>;
    /// This process's copy of the aliases, kept current by the backend; never waits.
    fn view(&self) -> &AliasView;
    /// Re-reads every alias into [`Self::view`] (healing a missed notification).
    async fn refresh_view(&self) -> Result<(), RegistryError> {
        let generation = self.view().generation();
        let all = self.aliases().await?;
        self.view().replace_if_unchanged(generation, &all);
        Ok(())
    }
    /// Sets (or with `None` removes) the challenger of `name:alias`; it must be a model of
    /// that name.
    async fn set_challenger(
        &self,
        name: &str,
        alias: &str,
        challenger: Option<Challenger>,
    ) -> Result<(), RegistryError>;
    /// Every challenger: `(name, alias, challenger)`; replicas cache this too.
    async fn challengers(&self) -> Result<Vec<(String, String, Challenger)>, RegistryError>;
    /// Atomically points `name:alias` at its challenger and makes the old champion the
    /// challenger (same fraction), if both are still as `expected` (`Conflict` otherwise).
    async fn promote(
        &self,
        name: &str,
        alias: &str,
        expected: Promotion,
    ) -> Result<(), RegistryError>;
    /// Adds replicas' shadow-scoring counts to the shared comparison statistics.
    async fn add_shadow_stats(&self, tallies: &[(ShadowKey, Tally)]) -> Result<(), RegistryError>;
    /// The comparison statistics of one champion/challenger pair, from every replica.
    async fn shadow_stats(&self, key: &ShadowKey) -> Result<Tally, RegistryError>;
    /// Changes, as they happen. A lagging receiver may miss some: replicas also reconcile.
    fn subscribe(&self) -> broadcast::Receiver<RegistryEvent>;
    /// Whether the backing store answers now.
    async fn ping(&self) -> Result<(), RegistryError>;
}
