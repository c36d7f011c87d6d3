//! What a replica serves. Aliases (`santander:latest`) resolve to model ids from an
//! in-memory map, and loaded models sit in a bounded LRU filled from the registry on demand,
//! so serving a loaded model never waits on the registry. Registry events keep both current
//! within a second, and a periodic reconcile heals any missed event.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use lru::LruCache;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::InferenceConfig,
    metrics::Metrics,
    models::{sha256_hex, LoadedModel, ModelSource},
    registry::{ListQuery, ModelRecord, ModelRegistry, ModelStatus, RegistryError, RegistryEvent},
};

/// The alias that `name` alone means, and that moves to each newly ready version.
pub const LATEST: &str = "latest";

/// How a request names a model: an id, or `name[:alias]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Id(Uuid),
    Alias { name: String, alias: String },
}

impl ModelRef {
    pub fn parse(text: &str) -> Self {
        if let Ok(id) = text.parse() {
            return Self::Id(id);
        }
        let (name, alias) = text.split_once(':').unwrap_or((text, LATEST));
        Self::Alias {
            name: name.to_owned(),
            alias: alias.to_owned(),
        }
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Alias { name, alias } => write!(f, "{name}:{alias}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model `{0}` not found")]
    NotFound(String),
    #[error("model `{id}` is {status:?}, not ready")]
    NotReady { id: Uuid, status: ModelStatus },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot load model `{id}`: {error:#}")]
    Load { id: Uuid, error: anyhow::Error },
}

fn alias_key(name: &str, alias: &str) -> String {
    format!("{name}/{alias}")
}

pub struct Catalog {
    registry: Arc<dyn ModelRegistry>,
    inference: InferenceConfig,
    metrics: Metrics,
    aliases: RwLock<HashMap<String, Uuid>>,
    cache: Mutex<LruCache<Uuid, Arc<LoadedModel>>>,
    /// One loader per id at a time, so a burst of misses loads a model once.
    loading: tokio::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl Catalog {
    pub fn new(
        registry: Arc<dyn ModelRegistry>,
        inference: InferenceConfig,
        metrics: Metrics,
        capacity: usize,
    ) -> Arc<Self> {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Arc::new(Self {
            registry,
            inference,
            metrics,
            aliases: RwLock::default(),
            cache: Mutex::new(LruCache::new(capacity)),
            loading: tokio::sync::Mutex::default(),
        })
    }

    pub fn registry(&self) -> &Arc<dyn ModelRegistry> {
        &self.registry
    }

    /// Every alias in the registry, keyed `name/alias`.
    async fn alias_map(&self) -> Result<HashMap<String, Uuid>, RegistryError> {
        Ok(self
            .registry
            .aliases()
            .await?
            .into_iter()
            .map(|(name, alias, id)| (alias_key(&name, &alias), id))
            .collect())
    }

    /// Puts the bundled models in the registry (once per content: a model whose name already
    /// has a version with the same SHA-256 is not stored again) and points `name:latest` at
    /// them when that alias is unset.
    pub async fn import_bundled(&self, sources: Vec<ModelSource>) -> anyhow::Result<()> {
        let aliases = self.alias_map().await?;
        for source in sources {
            let sha256 = sha256_hex(&source.bytes);
            let existing = self
                .registry
                .list(&ListQuery {
                    name: Some(source.name.clone()),
                    limit: usize::MAX,
                    ..ListQuery::default()
                })
                .await?
                .items
                .into_iter()
                .find(|record| record.sha256.as_deref() == Some(sha256.as_str()));
            let id = match existing {
                Some(record) => record.id,
                None => {
                    let mut record = ModelRecord::new(&source.name, "bundled", ModelStatus::Ready);
                    record.labels = source.card.labels.clone();
                    record.sha256 = Some(sha256);
                    record.size_bytes = Some(source.bytes.len() as u64);
                    record.card = Some(source.card.clone());
                    let record = self
                        .registry
                        .create(record, Some(source.bytes.into()))
                        .await?;
                    tracing::info!(model = %record.name, version = record.version, id = %record.id, "bundled model stored in the registry");
                    record.id
                }
            };
            if !aliases.contains_key(&alias_key(&source.name, LATEST)) {
                self.registry.set_alias(&source.name, LATEST, id).await?;
            }
        }
        self.reconcile().await?;
        Ok(())
    }

    /// The id a reference points at now, from memory.
    pub fn resolve(&self, reference: &ModelRef) -> Option<Uuid> {
        match reference {
            ModelRef::Id(id) => Some(*id),
            ModelRef::Alias { name, alias } => self
                .aliases
                .read()
                .ok()
                .and_then(|aliases| aliases.get(&alias_key(name, alias)).copied()),
        }
    }

    /// A loaded model, from the cache or loaded from the registry.
    pub async fn get(&self, reference: &ModelRef) -> Result<Arc<LoadedModel>, CatalogError> {
        let id = self
            .resolve(reference)
            .ok_or_else(|| CatalogError::NotFound(reference.to_string()))?;
        self.get_id(id).await
    }

    /// A loaded model by id, only if it is in the cache (never touches the registry).
    pub fn cached_id(&self, id: Uuid) -> Option<Arc<LoadedModel>> {
        self.cache.lock().ok()?.peek(&id).cloned()
    }

    /// A loaded model of `name` at registry `version`, if one is in the cache.
    pub fn cached_version(&self, name: &str, version: u64) -> Option<Arc<LoadedModel>> {
        let version = version.to_string();
        let cache = self.cache.lock().ok()?;
        cache
            .iter()
            .find(|(_, model)| model.name == name && model.version == version)
            .map(|(_, model)| model.clone())
    }

    /// The drift window of each loaded model that has a contract, one per name: the version
    /// `name` (its `latest` alias) points at, else any loaded version.
    pub fn drift_reports(&self) -> Vec<(String, crate::drift::DriftReport)> {
        let loaded: Vec<(Uuid, Arc<LoadedModel>)> = match self.cache.lock() {
            Ok(cache) => cache.iter().map(|(id, m)| (*id, m.clone())).collect(),
            Err(_) => return Vec::new(),
        };
        let mut chosen: std::collections::BTreeMap<String, (bool, Arc<LoadedModel>)> =
            Default::default();
        for (id, model) in loaded {
            if model.drift.is_none() {
                continue;
            }
            let current = self.resolve(&ModelRef::Alias {
                name: model.name.clone(),
                alias: LATEST.to_owned(),
            }) == Some(id);
            match chosen.get(&model.name) {
                Some((true, _)) => {}
                Some((false, _)) if !current => {}
                _ => {
                    chosen.insert(model.name.clone(), (current, model));
                }
            }
        }
        chosen
            .into_iter()
            .filter_map(|(name, (_, model))| Some((name, model.drift.as_ref()?.report())))
            .collect()
    }

    /// The loaded model only if it is in the cache (never touches the registry).
    pub fn cached(&self, reference: &ModelRef) -> Option<Arc<LoadedModel>> {
        self.cached_id(self.resolve(reference)?)
    }

    /// A cache hit (counted), marking the model recently used.
    fn hit(&self, id: Uuid) -> Option<Arc<LoadedModel>> {
        let model = self.cache.lock().ok()?.get(&id).cloned()?;
        self.metrics.model_cache.with_label_values(&["hit"]).inc();
        Some(model)
    }

    pub async fn get_id(&self, id: Uuid) -> Result<Arc<LoadedModel>, CatalogError> {
        if let Some(model) = self.hit(id) {
            return Ok(model);
        }
        let gate = {
            let mut loading = self.loading.lock().await;
            loading.entry(id).or_default().clone()
        };
        let _loading = gate.lock().await;
        // Another request may have loaded it while this one waited.
        if let Some(model) = self.hit(id) {
            return Ok(model);
        }
        self.metrics.model_cache.with_label_values(&["miss"]).inc();
        let result = self.load(id).await;
        self.loading.lock().await.remove(&id);
        let model = Arc::new(result?);
        if let Ok(mut cache) = self.cache.lock() {
            if let Some((evicted, unloaded)) = cache.push(id, model.clone()) {
                if evicted != id {
                    self.metrics
                        .model_cache
                        .with_label_values(&["eviction"])
                        .inc();
                    self.forget(&unloaded);
                }
            }
        }
        Ok(model)
    }

    async fn load(&self, id: Uuid) -> Result<LoadedModel, CatalogError> {
        let record = self
            .registry
            .get(id)
            .await?
            .ok_or_else(|| CatalogError::NotFound(id.to_string()))?;
        if record.status != ModelStatus::Ready {
            return Err(CatalogError::NotReady {
                id,
                status: record.status,
            });
        }
        let bytes = self
            .registry
            .onnx(id)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("{id} (no ONNX bytes)")))?;
        let source = ModelSource {
            name: record.name.clone(),
            card: record.card.clone().unwrap_or_default(),
            bytes: bytes.to_vec(),
        };
        let mut model = LoadedModel::load(
            source,
            record.version.to_string(),
            &self.inference,
            &self.metrics,
        )
        .await
        .map_err(|error| CatalogError::Load { id, error })?;
        model.record = Some(record);
        self.metrics
            .model_load_seconds
            .with_label_values(&[&model.name, &model.version])
            .set(model.load_seconds);
        self.metrics
            .model_info
            .with_label_values(&[&model.name, &model.version, &model.sha256])
            .set(1);
        Ok(model)
    }

    /// Loads `source` once (one session, warmed up on its card's example) to prove this
    /// replica can serve it, and drops it.
    pub async fn check(&self, source: ModelSource) -> anyhow::Result<LoadedModel> {
        let mut inference = self.inference.clone();
        inference.workers = 1;
        LoadedModel::load(source, "upload".to_owned(), &inference, &self.metrics).await
    }

    /// Re-reads every alias and drops cached models the registry no longer has.
    pub async fn reconcile(&self) -> Result<(), RegistryError> {
        let aliases = self.alias_map().await?;
        if let Ok(mut current) = self.aliases.write() {
            *current = aliases;
        }
        let cached: Vec<Uuid> = self
            .cache
            .lock()
            .map(|cache| cache.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default();
        for id in cached {
            if self.registry.get(id).await?.is_none() {
                self.evict(id);
            }
        }
        Ok(())
    }

    fn evict(&self, id: Uuid) {
        let evicted = self.cache.lock().ok().and_then(|mut cache| cache.pop(&id));
        if let Some(model) = evicted {
            self.forget(&model);
        }
    }

    /// Drops an unloaded model's `ml_api_model_info` series.
    fn forget(&self, model: &LoadedModel) {
        let _ = self.metrics.model_info.remove_label_values(&[
            &model.name,
            &model.version,
            &model.sha256,
        ]);
    }

    fn apply(self: &Arc<Self>, event: RegistryEvent) {
        match event {
            RegistryEvent::AliasMoved { name, alias, id } => {
                if let Ok(mut aliases) = self.aliases.write() {
                    aliases.insert(alias_key(&name, &alias), id);
                }
                // Load it now, so the first request after the move does not pay for it.
                let catalog = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = catalog.get_id(id).await {
                        tracing::warn!(%error, %id, "cannot preload a model after an alias move");
                    }
                });
            }
            RegistryEvent::Deleted { id, .. } => {
                if let Ok(mut aliases) = self.aliases.write() {
                    aliases.retain(|_, target| *target != id);
                }
                self.evict(id);
            }
            RegistryEvent::Updated { .. } | RegistryEvent::ChallengerChanged { .. } => {}
        }
    }

    /// Follows registry events and reconciles every `interval` until `stop`.
    pub fn spawn_sync(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        let catalog = self.clone();
        let mut events = self.registry.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    event = events.recv() => match event {
                        Ok(event) => catalog.apply(event),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "registry events missed; reconciling");
                            let _ = catalog.reconcile().await;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick.tick() => {
                        if let Err(error) = catalog.reconcile().await {
                            tracing::debug!(%error, "registry reconcile failed; serving what is loaded");
                        }
                    }
                }
            }
        });
    }
}
