//! Who may call: per-key quotas for issued API keys and the per-client rate limit for the
//! others, as in front of the REST API (src/http/quota.rs), read from gRPC metadata (the same
//! `--api-key-header`, and `x-forwarded-for` from trusted proxies).
//!
//! The per-client limit has the REST limit's rate and burst; gRPC calls count against their
//! own bucket per client and replica. Issued keys share one bucket with REST (and every
//! replica), since their quota lives in the quota store.

use std::{net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::IntCounter;
use tonic::{metadata::MetadataMap, Status};

use super::status::status;
use crate::{
    config::RateLimitConfig,
    http::{error::ApiError, rate_limit::ClientKeyExtractor},
    quota::{Quotas, Verdict, KEY_PREFIX},
};

pub struct Admission {
    quotas: Arc<Quotas>,
    header: String,
    clients: ClientKeyExtractor,
    per_client: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    rate_limited: IntCounter,
}

impl Admission {
    pub fn new(
        quotas: Arc<Quotas>,
        config: &RateLimitConfig,
        rate_limited: IntCounter,
    ) -> anyhow::Result<Self> {
        let per_client = if config.enabled {
            anyhow::ensure!(config.per_second > 0.0, "--rate-limit-rps must be above 0");
            let burst = NonZeroU32::new(config.burst)
                .ok_or_else(|| anyhow::anyhow!("--rate-limit-burst must be above 0"))?;
            let quota = Quota::with_period(Duration::from_secs_f64(1.0 / config.per_second))
                .ok_or_else(|| anyhow::anyhow!("invalid rate-limit settings"))?
                .allow_burst(burst);
            let limiter = Arc::new(RateLimiter::keyed(quota));
            // Forget idle clients, so the key map stays bounded.
            let forgetful = Arc::downgrade(&limiter);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let Some(limiter) = forgetful.upgrade() else {
                        return;
                    };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
            Some(limiter)
        } else {
            None
        };
        Ok(Self {
            quotas,
            header: config.api_key_header.to_ascii_lowercase(),
            clients: ClientKeyExtractor::new(&config.api_key_header, &config.trusted_proxies),
            per_client,
            rate_limited,
        })
    }

    /// Admits a call, or says why not: RESOURCE_EXHAUSTED over a quota or the rate limit,
    /// UNAUTHENTICATED for an issued key that is unknown or revoked.
    pub async fn admit(
        &self,
        metadata: &MetadataMap,
        peer: Option<SocketAddr>,
    ) -> Result<(), Status> {
        let presented = metadata
            .get(self.header.as_str())
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty());
        if let Some(key) = presented.filter(|key| key.starts_with(KEY_PREFIX)) {
            // Boxed: the quota check (a Redis script) would otherwise make every call's
            // future as large as its own.
            match Box::pin(self.quotas.check(key)).await {
                Verdict::Decided(decision) if decision.allowed => return Ok(()),
                Verdict::Decided(decision) => {
                    let seconds = decision.retry_after.as_micros().div_ceil(1_000_000);
                    let seconds = u64::try_from(seconds).unwrap_or(u64::MAX).max(1);
                    return Err(status(ApiError::RateLimited {
                        retry_after_secs: seconds,
                    }));
                }
                Verdict::Invalid => return Err(status(ApiError::InvalidApiKey)),
                Verdict::Unchecked => {}
            }
        }
        let Some(limiter) = &self.per_client else {
            return Ok(());
        };
        let client = match (presented, peer) {
            (Some(key), _) => format!("key:{key}"),
            (None, Some(peer)) => {
                let forwarded = metadata
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|value| value.to_str().ok());
                format!("ip:{}", self.clients.client_of(peer.ip(), forwarded))
            }
            (None, None) => "unknown".to_owned(),
        };
        limiter.check_key(&client).map_err(|not_until| {
            self.rate_limited.inc();
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            status(ApiError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            })
        })
    }
}
