//! Per-key quotas in front of the API routes, combined with the per-client rate limiter.
//!
//! A request whose API key header holds an issued key (`mlk_...`) is limited by that key's
//! shared bucket only, and a key that is not (or no longer) issued gets 401. Every other
//! request (no key, or a free-form client name) goes through the per-client tower_governor
//! limit, as before; so does an issued key that cannot be looked up while Redis is down.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    http::{HeaderName, HeaderValue, Request},
    response::{IntoResponse, Response},
};
use futures::future::{BoxFuture, Either};
use tower::{Layer, Service, ServiceExt};

use super::rate_limit::RateLimitLayer;
use crate::{
    http::error::ApiError,
    quota::{Decision, Quotas, Verdict, KEY_PREFIX},
};

/// Wraps the API routes: quotas for issued keys, `governor` (when enabled) for the rest.
#[derive(Clone)]
pub struct QuotaLayer {
    quotas: Arc<Quotas>,
    header: HeaderName,
    governor: Option<RateLimitLayer>,
}

impl QuotaLayer {
    pub fn new(
        quotas: Arc<Quotas>,
        api_key_header: &str,
        governor: Option<RateLimitLayer>,
    ) -> anyhow::Result<Self> {
        let header = HeaderName::try_from(api_key_header.to_ascii_lowercase())
            .map_err(|_| anyhow::anyhow!("invalid --api-key-header `{api_key_header}`"))?;
        Ok(Self {
            quotas,
            header,
            governor,
        })
    }
}

impl<S: Clone> Layer<S> for QuotaLayer {
    type Service = QuotaService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaService {
            limited: self
                .governor
                .as_ref()
                .map(|governor| governor.layer(inner.clone())),
            inner,
            quotas: self.quotas.clone(),
            header: self.header.clone(),
        }
    }
}

type Governed<S> = <RateLimitLayer as Layer<S>>::Service;

#[derive(Clone)]
pub struct QuotaService<S> {
    inner: S,
    /// `inner` behind the per-client limiter, when rate limiting is on.
    limited: Option<Governed<S>>,
    quotas: Arc<Quotas>,
    header: HeaderName,
}

impl<S> Service<Request<Body>> for QuotaService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Ready for the unlimited path, which calls `inner` itself; the other paths drive a
        // clone to readiness (`oneshot`).
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let presented = request
            .headers()
            .get(&self.header)
            .and_then(|value| value.to_str().ok())
            .filter(|value| value.starts_with(KEY_PREFIX))
            .map(str::to_owned);
        if presented.is_none() && self.limited.is_none() {
            // No key and no per-client limit: nothing to check, and no boxed future.
            return Either::Left(self.inner.call(request));
        }
        let inner = self.inner.clone();
        let limited = self.limited.clone();
        let quotas = self.quotas.clone();
        Either::Right(Box::pin(async move {
            let Some(presented) = presented else {
                return per_client(inner, limited, request).await;
            };
            match quotas.check(&presented).await {
                Verdict::Decided(decision) if decision.allowed => {
                    let mut response = inner.oneshot(request).await?;
                    set_limit_headers(&mut response, &decision);
                    Ok(response)
                }
                Verdict::Decided(decision) => Ok(refused(&decision)),
                Verdict::Invalid => Ok(ApiError::InvalidApiKey.into_response()),
                Verdict::Unchecked => per_client(inner, limited, request).await,
            }
        }))
    }
}

async fn per_client<S>(
    inner: S,
    limited: Option<Governed<S>>,
    request: Request<Body>,
) -> Result<Response, Infallible>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    match limited {
        Some(limited) => limited.oneshot(request).await,
        None => inner.oneshot(request).await,
    }
}

/// The per-client limiter's header convention: `X-RateLimit-Limit` (the burst) and
/// `X-RateLimit-Remaining`; on 429 also `X-RateLimit-After` and `Retry-After` (seconds).
fn set_limit_headers(response: &mut Response, decision: &Decision) {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
}

fn refused(decision: &Decision) -> Response {
    // Rounded up: retrying after a rounded-down wait would be refused again.
    let seconds = decision.retry_after.as_micros().div_ceil(1_000_000);
    let seconds = u64::try_from(seconds).unwrap_or(u64::MAX).max(1);
    let mut response = ApiError::RateLimited {
        retry_after_secs: seconds,
    }
    .into_response();
    set_limit_headers(&mut response, decision);
    response
        .headers_mut()
        .insert("x-ratelimit-after", HeaderValue::from(seconds));
    response
}
