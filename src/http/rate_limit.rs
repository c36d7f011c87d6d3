//! Per-client rate limiting with tower_governor (GCRA, in memory per replica).
//!
//! The client is its API key when it sends one, else its IP address. Replicas run behind an
//! ingress, so `X-Forwarded-For` is read, but only when the TCP peer is a trusted proxy:
//! otherwise any client could pick its own bucket by forging the header.

use std::{net::IpAddr, net::SocketAddr, sync::Arc, time::Duration};

use axum::{body::Body, extract::ConnectInfo, http::Request, response::IntoResponse};
use governor::middleware::StateInformationMiddleware;
use ipnet::IpNet;
use tower_governor::{
    governor::GovernorConfigBuilder, key_extractor::KeyExtractor, GovernorError, GovernorLayer,
};

use crate::{
    config::RateLimitConfig,
    http::{error::ApiError, metrics::HttpMetrics},
};

/// Who a request counts against.
#[derive(Debug, Clone)]
pub struct ClientKeyExtractor {
    api_key_header: Arc<str>,
    trusted_proxies: Arc<[IpNet]>,
}

impl ClientKeyExtractor {
    pub fn new(api_key_header: &str, trusted_proxies: &[IpNet]) -> Self {
        Self {
            api_key_header: api_key_header.to_ascii_lowercase().into(),
            trusted_proxies: trusted_proxies.into(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: walking `X-Forwarded-For` from the right (the entries our own
    /// proxies appended), the first address that is not a trusted proxy.
    pub fn client_ip<T>(&self, req: &Request<T>) -> Option<IpAddr> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())?;
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok());
        Some(self.client_of(peer, forwarded))
    }

    /// The client behind TCP peer `peer`, given the `X-Forwarded-For` values the request
    /// carries (gRPC metadata included): `peer` itself unless it is a trusted proxy.
    pub fn client_of<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded = forwarded
            .flat_map(|value| value.split(','))
            .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }
}

impl KeyExtractor for ClientKeyExtractor {
    type Key = String;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        if let Some(key) = req
            .headers()
            .get(self.api_key_header.as_ref())
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
        {
            return Ok(format!("key:{key}"));
        }
        self.client_ip(req)
            .map(|ip| format!("ip:{ip}"))
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

pub type RateLimitLayer = GovernorLayer<ClientKeyExtractor, StateInformationMiddleware, Body>;

/// Builds the layer (with `X-RateLimit-*` headers) and starts the task that forgets idle
/// clients, so the key map stays bounded.
pub fn layer(config: &RateLimitConfig, metrics: &HttpMetrics) -> anyhow::Result<RateLimitLayer> {
    anyhow::ensure!(config.per_second > 0.0, "--rate-limit-rps must be above 0");
    anyhow::ensure!(config.burst > 0, "--rate-limit-burst must be above 0");
    let period = Duration::from_secs_f64(1.0 / config.per_second);
    let governor = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(config.burst)
        .key_extractor(ClientKeyExtractor::new(
            &config.api_key_header,
            &config.trusted_proxies,
        ))
        .use_headers()
        .finish()
        .ok_or_else(|| anyhow::anyhow!("invalid rate-limit settings"))?;
    let governor = Arc::new(governor);

    let limiter = governor.limiter().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });

    let rejected = metrics.rate_limited.clone();
    Ok(GovernorLayer::new(governor).error_handler(move |error| {
        match error {
            GovernorError::TooManyRequests { wait_time, headers } => {
                rejected.inc();
                let mut response = ApiError::RateLimited {
                    retry_after_secs: wait_time,
                }
                .into_response();
                if let Some(mut headers) = headers {
                    // Ours is rounded up to at least 1 s; governor's may say 0.
                    headers.remove(axum::http::header::RETRY_AFTER);
                    response.headers_mut().extend(headers);
                }
                response
            }
            GovernorError::UnableToExtractKey => {
                ApiError::Internal(anyhow::anyhow!("rate limiter: cannot identify the client"))
                    .into_response()
            }
            GovernorError::Other { msg, .. } => {
                ApiError::Internal(anyhow::anyhow!("rate limiter: {}", msg.unwrap_or_default()))
                    .into_response()
            }
        }
    }))
}
