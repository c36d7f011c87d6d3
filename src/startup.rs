//! Building and running a predictor replica: load models, bind, serve, drain.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{RegistryKind, ServeConfig},
    http::{self, AppState, Lifecycle},
    metrics::Metrics,
    models::ModelStore,
};

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
}

impl Application {
    /// Loads the models, builds the router and binds the listener (port 0 picks a free port).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let metrics = Metrics::new()?;
        let models = match config.registry {
            RegistryKind::Embedded => {
                ModelStore::load_dir(&config.model_dir, &config.inference, &metrics).await?
            }
        };
        anyhow::ensure!(
            models.get(&config.default_model).is_some(),
            "default model `{}` not found in `{}` (found: {})",
            config.default_model,
            config.model_dir.display(),
            models.names().collect::<Vec<_>>().join(", ")
        );
        let state = AppState {
            models: Arc::new(models),
            default_model: config.default_model.as_str().into(),
            metrics,
            lifecycle: Arc::new(Lifecycle::default()),
            max_batch_records: config.http.max_batch_records,
            request_timeout: config.http.request_timeout,
        };
        let router = http::router(state.clone(), &config)?;
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        state.lifecycle.mark_ready();
        Ok(Self {
            listener,
            router,
            state,
            shutdown_delay: config.http.shutdown_delay,
            shutdown_grace: config.http.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` completes, then drains: `/readyz` turns 503 at once, the listener
    /// stays open for `--shutdown-delay` (so load balancers notice), then closes, and
    /// in-flight requests get `--shutdown-grace` to finish.
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
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "serving");
        let closing = CancellationToken::new();
        let close_listener = closing.clone();
        let lifecycle = state.lifecycle.clone();
        let draining_gauge = state.metrics.draining.clone();
        let serve = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                stop.await;
                lifecycle.start_draining();
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
            result = serve => result.context("server error")?,
            () = grace_elapsed => tracing::warn!("grace period over: exiting with requests still in flight"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}
