//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, KServe's
//! `grpc_predict_v2.proto` plus Triton's `RepositoryIndex`), on its own port beside the HTTP
//! API: the clients of Triton, KServe and Seldon MLServer (`tritonclient[grpc]`) work against
//! ml-api unchanged. `grpc.health.v1.Health` answers Kubernetes' gRPC probes and server
//! reflection describes the services to tools such as grpcurl.
//!
//! Each call goes through the same model resolution, validation, scorer (contract, drift,
//! shadow scoring, metrics), quotas and per-client rate limits as V2 over REST.

pub mod admission;
pub mod codec;
pub mod metrics;
pub mod service;
pub mod status;

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use self::{
    admission::Admission, metrics::GrpcMetrics,
    proto::grpc_inference_service_server::GrpcInferenceServiceServer, service::Inference,
};
use crate::{config::ServeConfig, http::AppState};

/// The messages, server and client generated from `proto/grpc_predict_v2.proto` (build.rs).
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");

    /// The encoded descriptor set of the protocol, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
}

/// A bound gRPC server, not yet serving.
pub struct GrpcServer {
    listener: TcpListener,
    service: Inference,
    max_message_bytes: usize,
    request_timeout: Duration,
}

impl GrpcServer {
    /// Binds `--grpc-addr` (port 0 picks a free port); `None` with `--grpc false`.
    pub async fn bind(config: &ServeConfig, state: AppState) -> anyhow::Result<Option<Self>> {
        if !config.grpc.enabled {
            return Ok(None);
        }
        let metrics = GrpcMetrics::new(state.metrics.registry())?;
        let admission = Admission::new(
            state.quotas.clone(),
            &config.rate_limit,
            state.http_metrics.rate_limited.clone(),
        )?;
        let addr = config.grpc.grpc_addr;
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (gRPC; `--grpc false` turns it off)")
        })?;
        Ok(Some(Self {
            listener,
            service: Inference::new(state, admission, metrics),
            max_message_bytes: config.grpc.grpc_max_message_bytes,
            request_timeout: config.http.request_timeout,
        }))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `close`; once `draining` is cancelled, gRPC health answers NOT_SERVING
    /// (while calls are still served, as `/readyz` turns 503 before the HTTP listener
    /// closes). At `close` the listener closes and calls in flight finish.
    pub async fn serve(
        self,
        draining: CancellationToken,
        close: CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<GrpcInferenceServiceServer<Inference>>()
            .await;
        tokio::spawn(async move {
            draining.cancelled().await;
            for name in ["", service::SERVICE] {
                health
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
        });
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("gRPC reflection")?;
        let inference = GrpcInferenceServiceServer::new(self.service)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let addr = self.listener.local_addr().context("gRPC listener")?;
        tracing::info!(%addr, "serving gRPC");
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .timeout(self.request_timeout)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(inference)
            .serve_with_incoming_shutdown(incoming, close.cancelled_owned())
            .await
            .context("gRPC server")
    }
}
