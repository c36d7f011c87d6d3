//! What a replica serves.
//!
//! - **Pinned models.** The default model and every `--pin` are loaded at start and never
//!   evicted; readiness means every pin has a loaded model (see [`Catalog::missing_pins`]).
//!   When a pinned alias moves, the new target is loaded beside the old one and swapped in.
//! - **The cache.** Any other model is loaded on demand into a bounded LRU; eviction never
//!   touches a pin, so it never makes a replica unready.
//! - **Aliases** resolve from the registry's in-process view ([`AliasView`]), which the
//!   registry keeps current (alias writes return once every replica applied them). A name,
//!   alias or id this replica does not know is read from the registry before the answer is
//!   404, and a 404 is remembered for `--negative-cache-ttl`.
//! - **Without the registry.** A replica whose registry is unreachable at start serves its
//!   bundled models from the model directory and joins the registry (stores the bundled
//!   models, follows its aliases) once it answers, without a restart. A loaded model is
//!   served without waiting on the registry.
//!
//! [`AliasView`]: crate::registry::AliasView

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use lru::LruCache;
use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::registry::LATEST;
use crate::{
    config::InferenceConfig,
    registry::{ModelRecord, ModelRegistry, ModelStatus, RegistryError, RegistryEvent},
    serving::{
        load::{sha256_hex, LoadedModel, ModelSource},
        metrics::ServingMetrics,
    },
};

/// How a request names a model: an id, or `name[:alias]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

    /// Whether a change to model `id` named `name` may change what this reference means.
    fn concerns(&self, id: Uuid, name: &str) -> bool {
        match self {
            Self::Id(own) => *own == id,
            Self::Alias { name: own, .. } => own == name,
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

/// What a replica keeps and for how long.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Models kept loaded besides the pinned ones (LRU).
    pub cache_size: usize,
    /// How long "no such model" is remembered before the registry is asked again.
    pub negative_ttl: Duration,
    /// References this replica must always serve (the default model first).
    pub pins: Vec<ModelRef>,
}

pub struct Catalog {
    registry: Arc<dyn ModelRegistry>,
    inference: InferenceConfig,
    metrics: ServingMetrics,
    /// `ml_api_model_cache_events_total{event="hit"}`, counted on every request.
    cache_hits: IntCounter,
    settings: CatalogSettings,
    /// The loaded model of each pin, by pinned reference; never evicted.
    pinned: RwLock<HashMap<ModelRef, Arc<LoadedModel>>>,
    cache: Mutex<LruCache<Uuid, Arc<LoadedModel>>>,
    /// References the registry said it does not have, and when it said so.
    missing: Mutex<HashMap<ModelRef, Instant>>,
    /// One loader per id at a time, so a burst of misses loads a model once.
    loading: tokio::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    /// The bundled models are in the registry and the aliases have been read at least once.
    joined: AtomicBool,
    /// The model directory's models, stored in the registry when it is joined.
    bundled: Mutex<Vec<ModelSource>>,
}

impl Catalog {
    pub fn new(
        registry: Arc<dyn ModelRegistry>,
        inference: InferenceConfig,
        metrics: ServingMetrics,
        settings: CatalogSettings,
    ) -> Arc<Self> {
        let capacity = NonZeroUsize::new(settings.cache_size).unwrap_or(NonZeroUsize::MIN);
        Arc::new(Self {
            registry,
            inference,
            cache_hits: metrics.model_cache.with_label_values(&["hit"]),
            metrics,
            settings,
            pinned: RwLock::default(),
            cache: Mutex::new(LruCache::new(capacity)),
            missing: Mutex::default(),
            loading: tokio::sync::Mutex::default(),
            joined: AtomicBool::new(false),
            bundled: Mutex::default(),
        })
    }

    pub fn registry(&self) -> &Arc<dyn ModelRegistry> {
        &self.registry
    }

    pub fn pins(&self) -> &[ModelRef] {
        &self.settings.pins
    }

    /// Whether the registry has been joined (bundled models stored, aliases read).
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    /// Starts the replica's view: stores the bundled models in the registry and loads every
    /// pin from it. When the registry is unreachable, serves the bundled models from memory
    /// instead (the sync task joins the registry once it answers) and says so with `false`.
    /// Fails when a pin cannot be served at all.
    pub async fn start(&self, bundled: Vec<ModelSource>) -> anyhow::Result<bool> {
        if let Ok(mut stored) = self.bundled.lock() {
            stored.clone_from(&bundled);
        }
        match self.join().await {
            Ok(()) => {
                self.refresh_pins().await;
                let default = self.settings.pins.first();
                if let Some(pin) = default.filter(|pin| !self.is_pin_loaded(pin)) {
                    // The registry answered: an unservable default model is a start-up error.
                    let model = self.get(pin).await.map_err(|error| {
                        anyhow::anyhow!("cannot load the default model `{pin}`: {error}")
                    })?;
                    self.pin(pin, model);
                }
                for pin in self.missing_pins() {
                    tracing::error!(model = %pin, "pinned model not found in the registry: not ready until it is");
                }
                Ok(true)
            }
            Err(RegistryError::Unavailable(reason)) => {
                tracing::warn!(%reason, "model registry unreachable: serving the bundled models until it answers");
                for source in bundled {
                    let pins: Vec<ModelRef> = self
                        .settings
                        .pins
                        .iter()
                        .filter(|pin| {
                            matches!(pin, ModelRef::Alias { name, alias } if *name == source.name && alias == LATEST)
                        })
                        .cloned()
                        .collect();
                    if pins.is_empty() {
                        continue;
                    }
                    let model = Arc::new(self.load_source(source, "bundled").await?);
                    for pin in pins {
                        self.pin(&pin, model.clone());
                    }
                }
                Ok(false)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Stores the bundled models (once per content, atomically, so replicas starting
    /// together store one version) and reads every alias.
    async fn join(&self) -> Result<(), RegistryError> {
        let bundled = self.bundled.lock().map(|b| b.clone()).unwrap_or_default();
        for source in bundled {
            let sha256 = sha256_hex(&source.bytes);
            let mut record = ModelRecord::new(&source.name, "bundled", ModelStatus::Ready);
            record.labels = source.card.labels.clone();
            record.sha256 = Some(sha256);
            record.size_bytes = Some(source.bytes.len() as u64);
            record.card = Some(source.card.clone());
            let candidate = record.id;
            let stored = self.registry.import(record, source.bytes.into()).await?;
            if stored.id == candidate {
                tracing::info!(model = %stored.name, version = stored.version, id = %stored.id, "bundled model stored in the registry");
            }
        }
        self.registry.refresh_view().await?;
        self.joined.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The id a reference points at now, from memory.
    pub fn resolve(&self, reference: &ModelRef) -> Option<Uuid> {
        match reference {
            ModelRef::Id(id) => Some(*id),
            ModelRef::Alias { name, alias } => self.registry.view().get(name, alias),
        }
    }

    /// The id a reference points at: from memory, else from the registry (a name this
    /// replica has not heard of may have been written through another replica).
    async fn locate(&self, reference: &ModelRef) -> Result<Uuid, CatalogError> {
        let (name, alias) = match reference {
            ModelRef::Id(id) => return Ok(*id),
            ModelRef::Alias { name, alias } => (name, alias),
        };
        if let Some(id) = self.registry.view().get(name, alias) {
            return Ok(id);
        }
        self.check_not_missing(reference)?;
        match self.registry.alias(name, alias).await? {
            Some(id) => Ok(id),
            None => Err(self.remember_missing(reference)),
        }
    }

    fn check_not_missing(&self, reference: &ModelRef) -> Result<(), CatalogError> {
        let Ok(mut missing) = self.missing.lock() else {
            return Ok(());
        };
        match missing.get(reference) {
            Some(at) if at.elapsed() < self.settings.negative_ttl => {
                Err(CatalogError::NotFound(reference.to_string()))
            }
            Some(_) => {
                missing.remove(reference);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn remember_missing(&self, reference: &ModelRef) -> CatalogError {
        if let Ok(mut missing) = self.missing.lock() {
            if missing.len() >= 10_000 {
                let ttl = self.settings.negative_ttl;
                missing.retain(|_, at| at.elapsed() < ttl);
            }
            if missing.len() < 10_000 {
                missing.insert(reference.clone(), Instant::now());
            }
        }
        CatalogError::NotFound(reference.to_string())
    }

    /// A loaded model: the pinned one, a cached one, or one loaded from the registry.
    pub async fn get(&self, reference: &ModelRef) -> Result<Arc<LoadedModel>, CatalogError> {
        if !self.joined() {
            if let Some(model) = self.pinned_model(reference) {
                return Ok(model);
            }
        }
        match self.locate(reference).await {
            Ok(id) => self.get_id(id).await,
            // The registry is away: a pinned reference keeps its model.
            Err(CatalogError::Registry(RegistryError::Unavailable(reason))) => self
                .pinned_model(reference)
                .ok_or(CatalogError::Registry(RegistryError::Unavailable(reason))),
            Err(other) => Err(other),
        }
    }

    fn pinned_model(&self, reference: &ModelRef) -> Option<Arc<LoadedModel>> {
        self.pinned.read().ok()?.get(reference).cloned()
    }

    /// The pinned model with registry id `id`, if one is.
    fn pinned_id(&self, id: Uuid) -> Option<Arc<LoadedModel>> {
        self.pinned
            .read()
            .ok()?
            .values()
            .find(|model| model.id() == Some(id))
            .cloned()
    }

    /// A loaded model by id, if this replica has it (never touches the registry).
    pub fn cached_id(&self, id: Uuid) -> Option<Arc<LoadedModel>> {
        self.pinned_id(id)
            .or_else(|| self.cache.lock().ok()?.peek(&id).cloned())
    }

    /// The model a reference means now, only if it is loaded (never touches the registry).
    pub fn cached(&self, reference: &ModelRef) -> Option<Arc<LoadedModel>> {
        match self.resolve(reference) {
            Some(id) => self.cached_id(id),
            None if !self.joined() => self.pinned_model(reference),
            None => None,
        }
    }

    /// A loaded model of `name` at registry `version`, if this replica has one.
    pub fn cached_version(&self, name: &str, version: u64) -> Option<Arc<LoadedModel>> {
        let version = version.to_string();
        self.loaded_models()
            .into_iter()
            .find(|model| model.name == name && model.version == version)
    }

    /// Every loaded model, pinned ones first.
    fn loaded_models(&self) -> Vec<Arc<LoadedModel>> {
        let mut models: Vec<Arc<LoadedModel>> = self
            .pinned
            .read()
            .map(|pinned| pinned.values().cloned().collect())
            .unwrap_or_default();
        if let Ok(cache) = self.cache.lock() {
            models.extend(cache.iter().map(|(_, model)| model.clone()));
        }
        models
    }

    /// Pins this replica must serve and has no model for (empty: ready).
    pub fn missing_pins(&self) -> Vec<ModelRef> {
        self.settings
            .pins
            .iter()
            .filter(|pin| !self.is_pin_loaded(pin))
            .cloned()
            .collect()
    }

    /// The names of the pinned models loaded, sorted and without repeats.
    pub fn pinned_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pinned
            .read()
            .map(|pinned| pinned.values().map(|model| model.name.clone()).collect())
            .unwrap_or_default();
        names.sort();
        names.dedup();
        names
    }

    fn is_pin_loaded(&self, pin: &ModelRef) -> bool {
        self.pinned
            .read()
            .map(|pinned| pinned.contains_key(pin))
            .unwrap_or(false)
    }

    /// The drift series of one scrape, from [`Self::drift_reports`].
    pub fn drift_metrics(&self) -> prometheus::Result<Vec<prometheus::proto::MetricFamily>> {
        super::metrics::drift_families(&self.drift_reports())
    }

    /// The drift window of each loaded model that has a contract, one per name: the version
    /// `name` (its `latest` alias) points at, else any loaded version.
    fn drift_reports(&self) -> Vec<(String, crate::drift::DriftReport)> {
        let mut chosen: std::collections::BTreeMap<String, (bool, Arc<LoadedModel>)> =
            Default::default();
        for model in self.loaded_models() {
            if model.drift.is_none() {
                continue;
            }
            let latest = ModelRef::Alias {
                name: model.name.clone(),
                alias: LATEST.to_owned(),
            };
            let current = model.id().is_some() && self.resolve(&latest) == model.id();
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

    /// A cache hit (counted), marking the model recently used.
    fn hit(&self, id: Uuid) -> Option<Arc<LoadedModel>> {
        let model = match self.pinned_id(id) {
            Some(model) => model,
            None => self.cache.lock().ok()?.get(&id).cloned()?,
        };
        self.cache_hits.inc();
        Some(model)
    }

    pub async fn get_id(&self, id: Uuid) -> Result<Arc<LoadedModel>, CatalogError> {
        if self.registry.view().is_deleted(id) {
            return Err(CatalogError::NotFound(id.to_string()));
        }
        if let Some(model) = self.hit(id) {
            return Ok(model);
        }
        // Boxed: loading (the registry's read, ONNX Runtime's session) is a future of several
        // kilobytes, and every request's future would otherwise reserve room for it and be
        // copied whole, though a request almost always hits the cache.
        Box::pin(self.load_and_cache(id)).await
    }

    /// The cache's miss path: one load per id at a time, then the model is cached.
    async fn load_and_cache(&self, id: Uuid) -> Result<Arc<LoadedModel>, CatalogError> {
        self.check_not_missing(&ModelRef::Id(id))?;
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
        let model = match result {
            Ok(model) => Arc::new(model),
            Err(CatalogError::NotFound(_)) => return Err(self.remember_missing(&ModelRef::Id(id))),
            Err(other) => return Err(other),
        };
        self.cache_insert(model.clone());
        Ok(model)
    }

    fn cache_insert(&self, model: Arc<LoadedModel>) {
        let Some(id) = model.id() else { return };
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if let Some((evicted, unloaded)) = cache.push(id, model) {
            if evicted != id {
                drop(cache);
                self.metrics
                    .model_cache
                    .with_label_values(&["eviction"])
                    .inc();
                self.forget(&unloaded);
            }
        }
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
        let version = record.version.to_string();
        let mut model = self
            .load_source(source, &version)
            .await
            .map_err(|error| CatalogError::Load { id, error })?;
        model.record = Some(record);
        Ok(model)
    }

    /// Loads and warms up one model, with every inference thread, and reports it.
    async fn load_source(&self, source: ModelSource, version: &str) -> anyhow::Result<LoadedModel> {
        let model = LoadedModel::load(
            source,
            version.to_owned(),
            &self.inference,
            &self.metrics.inference,
        )
        .await?;
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
        LoadedModel::load(
            source,
            "upload".to_owned(),
            &inference,
            &self.metrics.inference,
        )
        .await
    }

    /// Makes `model` the one served for `pin`; the model it replaces goes to the cache.
    fn pin(&self, pin: &ModelRef, model: Arc<LoadedModel>) {
        if let Some(id) = model.id() {
            if let Ok(mut cache) = self.cache.lock() {
                cache.pop(&id);
            }
        }
        let replaced = self
            .pinned
            .write()
            .ok()
            .and_then(|mut pinned| pinned.insert(pin.clone(), model));
        if let Some(replaced) = replaced {
            let still_pinned = self
                .pinned
                .read()
                .is_ok_and(|pinned| pinned.values().any(|model| Arc::ptr_eq(model, &replaced)));
            if !still_pinned {
                match replaced.id() {
                    Some(_) => self.cache_insert(replaced),
                    None => self.forget(&replaced),
                }
            }
        }
    }

    /// Loads what each pin points at now, where it is not the pinned model yet. A pin that
    /// cannot be loaded keeps its current model.
    pub async fn refresh_pins(&self) {
        for pin in self.settings.pins.clone() {
            self.refresh_pin(&pin).await;
        }
    }

    async fn refresh_pin(&self, pin: &ModelRef) {
        let Some(target) = self.resolve(pin) else {
            return;
        };
        if self.pinned_model(pin).and_then(|m| m.id()) == Some(target) {
            return;
        }
        match self.get_id(target).await {
            Ok(model) => {
                tracing::info!(model = %pin, version = %model.version, "pinned model loaded");
                self.pin(pin, model);
            }
            Err(error) => {
                tracing::warn!(%error, model = %pin, "cannot load a pinned model; keeping the current one")
            }
        }
    }

    /// Re-reads every alias, drops cached models the registry no longer has, and reloads
    /// pins that moved.
    pub async fn reconcile(&self) -> Result<(), RegistryError> {
        self.registry.refresh_view().await?;
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
        self.refresh_pins().await;
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

    /// Reacts to a registry change (the alias view is already current): forgets cached
    /// "not found" answers it may contradict, reloads moved pins, preloads a moved alias
    /// of a name this replica serves, and unloads deleted models.
    fn apply(self: &Arc<Self>, event: RegistryEvent) {
        let (id, name) = match &event {
            RegistryEvent::Updated { id, name }
            | RegistryEvent::Deleted { id, name }
            | RegistryEvent::AliasMoved { id, name, .. } => (*id, name.as_str()),
            RegistryEvent::ChallengerChanged { .. } => return,
        };
        if let Ok(mut missing) = self.missing.lock() {
            missing.retain(|reference, _| !reference.concerns(id, name));
        }
        match event {
            RegistryEvent::AliasMoved { name, alias, id } => {
                let serves_name = self.loaded_models().iter().any(|model| model.name == name);
                let reference = ModelRef::Alias { name, alias };
                let pinned = self.settings.pins.contains(&reference);
                if pinned || serves_name {
                    // Load it now, so the first request after the move does not pay for it.
                    let catalog = self.clone();
                    tokio::spawn(async move {
                        if pinned {
                            catalog.refresh_pin(&reference).await;
                        } else if let Err(error) = catalog.get_id(id).await {
                            tracing::warn!(%error, %id, "cannot preload a model after an alias move");
                        }
                    });
                }
            }
            RegistryEvent::Deleted { id, .. } => self.evict(id),
            RegistryEvent::Updated { .. } | RegistryEvent::ChallengerChanged { .. } => {}
        }
    }

    /// Follows registry events and reconciles every `interval` until `stop`. Until the
    /// registry is joined, tries to join it every quarter second, backing off to 2 s.
    pub fn spawn_sync(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        let catalog = self.clone();
        let mut events = self.registry.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut retry = Duration::from_millis(250);
            loop {
                let joining = !catalog.joined();
                tokio::select! {
                    () = tokio::time::sleep(retry), if joining => {
                        catalog.sync_once().await;
                        retry = (retry * 2).min(Duration::from_secs(2));
                    }
                    () = stop.cancelled() => break,
                    event = events.recv() => match event {
                        Ok(event) => catalog.apply(event),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "registry events missed; reconciling");
                            let _ = catalog.reconcile().await;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick.tick(), if !joining => catalog.sync_once().await,
                }
            }
        });
    }

    async fn sync_once(&self) {
        if !self.joined() {
            match self.join().await {
                Ok(()) => tracing::info!("model registry reachable: joined it"),
                Err(error) => {
                    tracing::debug!(%error, "model registry still unreachable; serving the bundled models");
                    return;
                }
            }
        }
        if let Err(error) = self.reconcile().await {
            tracing::debug!(%error, "registry reconcile failed; serving what is loaded");
        }
    }
}
