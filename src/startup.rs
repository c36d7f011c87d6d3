//! Building and running a predictor replica: load models, bind, serve, drain.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ContractConfig, RegistryConfig, RegistryKind, ServeConfig, WorkerConfig},
    grpc::GrpcServer,
    http::{self, metrics::HttpMetrics, AppState, Lifecycle},
    inference::metrics::InferenceMetrics,
    jobs::{embedded::EmbeddedQueue, metrics::JobMetrics, redis::RedisQueue, JobQueue},
    metrics::Metrics,
    model::Contract,
    registry::{
        embedded::EmbeddedRegistry,
        redis::{RedisOptions, RedisRegistry},
        ModelRegistry,
    },
    serving::{
        catalog::{Catalog, CatalogSettings, ModelRef},
        load::{read_model, read_model_dir, LoadedModel},
        metrics::ServingMetrics,
        Scorer,
    },
    shadow::Shadow,
    worker::{Worker, WorkerSettings},
};

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
    edge: http::server::EdgeLimits,
    /// The gRPC listener (`--grpc-addr`), unless `--grpc false`.
    grpc: Option<GrpcServer>,
    /// Cancelled when the server stops: ends background tasks.
    stopped: CancellationToken,
}

/// A predictor before it listens anywhere: its state, its router, and the token that ends
/// its background tasks. [`Application`] binds it to a TCP listener; `ml-api lambda`
/// ([`crate::lambda`]) hands the router to the Lambda runtime instead.
pub struct Predictor {
    pub router: axum::Router,
    pub state: AppState,
    /// Cancelled when the predictor stops: ends background tasks.
    pub stopped: CancellationToken,
}

impl Predictor {
    /// Connects the registry, stores the bundled models in it, loads the default model and
    /// builds the router. Readiness is left to the caller (once it can serve).
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        let metrics = Metrics::new()?;
        let http_metrics = HttpMetrics::new(metrics.registry())?;
        let job_metrics = JobMetrics::new(metrics.registry())?;
        let serving_metrics = ServingMetrics::new(metrics.registry())?;
        let registry = connect_registry(&config.registry, true)?;
        let stopped = CancellationToken::new();
        let datasets = connect_datasets(&config.registry, &config.datasets)?;
        let jobs: Arc<dyn JobQueue> = match config.registry.registry {
            RegistryKind::Embedded => {
                // Single node: train in this process, on the blocking pool.
                let queue: Arc<dyn JobQueue> = Arc::new(EmbeddedQueue::default());
                for index in 0..config.training_concurrency.max(1) {
                    let settings = WorkerSettings {
                        consumer: format!("in-process-{index}"),
                        max_attempts: 1,
                        heartbeat: Duration::from_secs(1),
                        poll: Duration::from_millis(500),
                    };
                    let worker = Worker::new(
                        registry.clone(),
                        queue.clone(),
                        settings,
                        job_metrics.clone(),
                    )
                    .with_datasets(datasets.store.clone(), datasets.limits);
                    tokio::spawn(worker.run_until_stopped(stopped.clone()));
                }
                queue
            }
            RegistryKind::Redis => Arc::new(RedisQueue::connect(
                &config.registry.redis_endpoint(),
                &config.registry.redis_prefix,
                Duration::from_secs(30),
            )?),
        };
        let default_model = ModelRef::parse(&config.default_model);
        let catalog = Catalog::new(
            registry,
            config.inference.clone(),
            serving_metrics.clone(),
            catalog_settings(&config.registry, &default_model),
        );
        let bundled = if config.model_dir.is_dir() {
            read_model_dir(&config.model_dir)?
        } else {
            tracing::warn!(dir = %config.model_dir.display(), "no model directory: serving registry models only");
            Vec::new()
        };
        catalog.start(bundled).await?;
        catalog.spawn_sync(config.registry.reconcile_interval, stopped.clone());
        let quotas = connect_quotas(config, &metrics)?;
        let shadow = Shadow::new(
            catalog.clone(),
            &metrics,
            &config.shadow,
            config.http.max_batch_records,
        )?;
        if let Err(error) = shadow.reload().await {
            tracing::warn!(%error, "cannot read challengers yet; retrying in the background");
        }
        shadow.spawn(config.registry.reconcile_interval, stopped.clone());
        let scorer = Arc::new(Scorer::new(
            serving_metrics,
            config.http.max_batch_records,
            Some(shadow.clone()),
        ));
        let state = AppState::new(http::state::Shared {
            catalog,
            jobs,
            admin_key: config.admin_api_key.as_deref().map(Into::into),
            default_model: Arc::new(default_model),
            metrics,
            http_metrics,
            job_metrics,
            lifecycle: Arc::new(Lifecycle::default()),
            max_batch_records: config.http.max_batch_records,
            max_upload_bytes: config.http.max_upload_bytes,
            request_timeout: config.http.request_timeout,
            quotas,
            shadow,
            scorer,
            datasets,
        });
        let router = http::router(state.clone(), config)?;
        Ok(Self {
            router,
            state,
            stopped,
        })
    }
}

impl Application {
    /// Builds the [`Predictor`] and binds the listener (port 0 picks a free port).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let Predictor {
            router,
            state,
            stopped,
        } = Predictor::build(&config).await?;
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let grpc = GrpcServer::bind(&config, state.clone()).await?;
        state.lifecycle.mark_ready();
        Ok(Self {
            listener,
            router,
            state,
            shutdown_delay: config.http.shutdown_delay,
            shutdown_grace: config.http.shutdown_grace,
            edge: http::server::EdgeLimits::from(&config.http),
            grpc,
            stopped,
        })
    }

    /// The gRPC listener's address, unless gRPC is off.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(GrpcServer::local_addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The application as a tower service (for in-process benchmarks).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Serves until `stop` completes, then drains: `/readyz` (and gRPC health) turns 503
    /// (NOT_SERVING) at once, the listeners stay open for `--shutdown-delay` (so load
    /// balancers notice), then close, and in-flight requests and calls get `--shutdown-grace`
    /// to finish. Connections are held to the edge's limits throughout (see [`http::server`]).
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            state,
            shutdown_delay,
            shutdown_grace,
            edge,
            grpc,
            stopped,
        } = self;
        let _stop_background_tasks = stopped.drop_guard();
        tracing::info!(addr = %listener.local_addr()?, "serving");
        let closing = CancellationToken::new();
        let close_listener = closing.clone();
        let draining = CancellationToken::new();
        let start_draining = draining.clone();
        let grpc = async {
            if let Some(grpc) = grpc {
                if let Err(error) = grpc.serve(draining, closing.clone()).await {
                    tracing::error!(error = format!("{error:#}"), "gRPC server failed");
                }
            }
        };
        let lifecycle = state.lifecycle.clone();
        let draining_gauge = state.http_metrics.draining.clone();
        let serve = http::server::serve(listener, router, edge, async move {
            stop.await;
            lifecycle.start_draining();
            start_draining.cancel();
            draining_gauge.set(1);
            tracing::info!(delay = ?shutdown_delay, "draining: readiness is now 503");
            tokio::time::sleep(shutdown_delay).await;
            tracing::info!(grace = ?shutdown_grace, "listener closed; finishing in-flight requests");
            close_listener.cancel();
        });
        let grace_elapsed = async {
            closing.cancelled().await;
            tokio::time::sleep(shutdown_grace).await;
        };
        tokio::select! {
            ((), ()) = async { tokio::join!(serve, grpc) } => {}
            () = grace_elapsed => tracing::warn!("grace period over: exiting with requests still in flight"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// What a replica must serve (the default model first, then `--pin`) and keeps.
fn catalog_settings(config: &RegistryConfig, default_model: &ModelRef) -> CatalogSettings {
    let mut pins = vec![default_model.clone()];
    for pin in config
        .pins
        .iter()
        .map(|pin| pin.trim())
        .filter(|pin| !pin.is_empty())
    {
        let pin = ModelRef::parse(pin);
        if !pins.contains(&pin) {
            pins.push(pin);
        }
    }
    CatalogSettings {
        cache_size: config.model_cache_size,
        negative_ttl: config.negative_cache_ttl,
        pins,
    }
}

/// The registry backend the configuration asks for. Replicas `follow_events` (alias changes
/// wait for them); workers do not.
pub fn connect_registry(
    config: &RegistryConfig,
    follow_events: bool,
) -> anyhow::Result<Arc<dyn ModelRegistry>> {
    Ok(match config.registry {
        RegistryKind::Embedded => Arc::new(EmbeddedRegistry::default()),
        RegistryKind::Redis => Arc::new(
            RedisRegistry::connect(
                &config.redis_endpoint(),
                &config.redis_prefix,
                &RedisOptions {
                    op_timeout: config.redis_op_timeout,
                    sync_timeout: config.alias_sync_timeout,
                    follow_events,
                },
            )
            .context("invalid --redis-url")?,
        ),
    })
}

/// The dataset store, and dataset records in Redis with `--registry redis` (else in memory).
pub fn connect_datasets(
    registry: &RegistryConfig,
    config: &crate::config::DatasetConfig,
) -> anyhow::Result<http::state::Datasets> {
    use crate::datasets::{DatasetRecords, DatasetStore, EmbeddedDatasets, RedisDatasets};
    let records: Arc<dyn DatasetRecords> = match registry.registry {
        RegistryKind::Embedded => Arc::new(EmbeddedDatasets::default()),
        RegistryKind::Redis => Arc::new(
            RedisDatasets::connect(&registry.redis_endpoint(), &registry.redis_prefix)
                .context("invalid --redis-url")?,
        ),
    };
    Ok(http::state::Datasets {
        store: Arc::new(DatasetStore::new(&config.dataset_store)),
        records,
        max_bytes: config.max_dataset_bytes,
        max_training_body_bytes: config.max_training_body_bytes,
        limits: config.limits(),
    })
}

/// API keys and quotas: in Redis with `--registry redis`, else in memory.
pub fn connect_quotas(
    config: &ServeConfig,
    metrics: &Metrics,
) -> anyhow::Result<Arc<crate::quota::Quotas>> {
    use crate::quota::{metrics::QuotaMetrics, QuotaSettings, Quotas};
    let settings = QuotaSettings::from(&config.quota);
    let metrics = QuotaMetrics::new(metrics.registry())?;
    Ok(Arc::new(match config.registry.registry {
        RegistryKind::Embedded => Quotas::embedded(settings, metrics),
        RegistryKind::Redis => Quotas::redis(
            &config.registry.redis_endpoint(),
            &config.registry.redis_prefix,
            settings,
            metrics,
        )
        .context("invalid --redis-url")?,
    }))
}

/// `ml-api worker`: trains jobs from the Redis queue until `stop`, serving `/healthz` and
/// `/metrics` on `--metrics-addr`. A job in progress at `stop` is finished first (Kubernetes'
/// grace period permitting; if it is cut short, another worker reclaims the job).
pub async fn run_worker(
    config: WorkerConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.registry.registry == RegistryKind::Redis,
        "`ml-api worker` needs `--registry redis`: with the embedded registry, `serve` trains in-process"
    );
    let metrics = Metrics::new()?;
    let registry = connect_registry(&config.registry, false)?;
    let queue = Arc::new(RedisQueue::connect(
        &config.registry.redis_endpoint(),
        &config.registry.redis_prefix,
        config.reclaim_after,
    )?);
    let consumer = config
        .name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let settings = WorkerSettings {
        consumer,
        max_attempts: config.max_attempts,
        heartbeat: (config.reclaim_after / 3).max(Duration::from_millis(100)),
        poll: Duration::from_secs(1),
    };
    let stopped = CancellationToken::new();

    let listener = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, consumer = %settings.consumer, "worker metrics");
    let ops_metrics = metrics.clone();
    let ops = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = ops_metrics.clone();
                async move {
                    metrics
                        .render()
                        .map_err(crate::http::error::ApiError::Internal)
                }
            }),
        );
    let ops_stop = stopped.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, ops)
            .with_graceful_shutdown(ops_stop.cancelled_owned())
            .await;
    });

    let job_metrics = JobMetrics::new(metrics.registry())?;
    let worker = Worker::new(registry, queue, settings, job_metrics).with_datasets(
        Arc::new(crate::datasets::DatasetStore::new(
            &config.datasets.dataset_store,
        )),
        config.datasets.limits(),
    );
    let work = tokio::spawn(worker.run_until_stopped(stopped.clone()));
    stop.await;
    tracing::info!("stopping: finishing the current job");
    stopped.cancel();
    work.await?;
    Ok(())
}

/// `ml-api contract`: loads one model directory and profiles a sample of its training data
/// into a feature contract.
pub async fn profile_contract(config: &ContractConfig) -> anyhow::Result<Contract> {
    let source = read_model(&config.model)?;
    let metrics = InferenceMetrics::new(&prometheus::Registry::new())?;
    let model = LoadedModel::load(source, "0".to_owned(), &config.inference, &metrics).await?;
    let text = tokio::fs::read_to_string(&config.sample)
        .await
        .with_context(|| format!("cannot read `{}`", config.sample.display()))?;
    let sample: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not JSON", config.sample.display()))?;
    Ok(model.profile(&sample).await?)
}
