//! [`Quotas`]: what the HTTP layer asks about a request's key. Keys are cached per replica
//! (so the hot path makes one Redis round trip, the bucket); every Redis call is bounded by
//! `--quota-redis-timeout`, and when Redis fails the replica decides alone.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use lru::LruCache;
use uuid::Uuid;

use super::{
    embedded::EmbeddedKeys, hash_key, local::LocalLimiter, metrics::QuotaMetrics,
    redis::RedisQuotas, ApiKey, Decision, KeySpec, KeyStore, Limiter, QuotaError,
};
use crate::config::QuotaConfig;

/// Keys remembered per replica, found or not (bounds memory under random-key floods).
const CACHE_CAPACITY: usize = 10_000;
/// Consecutive Redis failures after which requests stop waiting for Redis...
const FAILURES_TO_OPEN: u32 = 3;
/// ... for this long, before trying it again.
const OPEN_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct QuotaSettings {
    pub redis_timeout: Duration,
    pub key_cache_ttl: Duration,
    pub fallback_replicas: u32,
}

impl From<&QuotaConfig> for QuotaSettings {
    fn from(config: &QuotaConfig) -> Self {
        Self {
            redis_timeout: config.redis_timeout,
            key_cache_ttl: config.key_cache_ttl,
            fallback_replicas: config.fallback_replicas,
        }
    }
}

/// What to do with a request that carries an issued-looking key.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The key's bucket decided (in Redis, or locally as a fallback).
    Decided(Decision),
    /// No such key (never issued, or revoked): 401.
    Invalid,
    /// The key could not be looked up (Redis unreachable, key not cached): the request gets
    /// the per-client local limit, as one without an issued key would.
    Unchecked,
}

#[derive(Clone)]
struct Cached {
    key: Option<ApiKey>,
    fetched: Instant,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct Quotas {
    keys: Arc<dyn KeyStore>,
    limiter: Arc<dyn Limiter>,
    fallback: LocalLimiter,
    settings: QuotaSettings,
    cache: Mutex<LruCache<String, Cached>>,
    breaker: Mutex<Breaker>,
    metrics: QuotaMetrics,
}

impl Quotas {
    pub fn new(
        keys: Arc<dyn KeyStore>,
        limiter: Arc<dyn Limiter>,
        settings: QuotaSettings,
        metrics: QuotaMetrics,
    ) -> Self {
        let capacity = NonZeroUsize::new(CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Self {
            keys,
            limiter,
            fallback: LocalLimiter::new(settings.fallback_replicas),
            settings,
            cache: Mutex::new(LruCache::new(capacity)),
            breaker: Mutex::default(),
            metrics,
        }
    }

    /// In memory, for one node.
    pub fn embedded(settings: QuotaSettings, metrics: QuotaMetrics) -> Self {
        Self::new(
            Arc::new(EmbeddedKeys::default()),
            Arc::new(LocalLimiter::new(1)),
            settings,
            metrics,
        )
    }

    /// In Redis, shared by every replica.
    pub fn redis(
        endpoint: &crate::redis_link::RedisEndpoint,
        prefix: &str,
        settings: QuotaSettings,
        metrics: QuotaMetrics,
    ) -> anyhow::Result<Self> {
        let store = Arc::new(RedisQuotas::connect(endpoint, prefix)?);
        Ok(Self::new(store.clone(), store, settings, metrics))
    }

    /// Stores a new key; returns it with its plaintext, which is never stored.
    pub async fn create(&self, spec: &KeySpec) -> Result<(ApiKey, String), QuotaError> {
        let (key, plaintext) = spec.issue()?;
        let hash = hash_key(&plaintext);
        self.keys.insert(&key, &hash).await?;
        self.remember(hash, Some(key.clone()));
        Ok((key, plaintext))
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>, QuotaError> {
        self.keys.list().await
    }

    /// Revokes a key: at once on this replica, within `--quota-key-cache-ttl` on the others.
    pub async fn delete(&self, id: Uuid) -> Result<bool, QuotaError> {
        let deleted = self.keys.delete(id).await?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, cached) in cache.iter_mut() {
            if cached.key.as_ref().is_some_and(|key| key.id == id) {
                cached.key = None;
            }
        }
        drop(cache);
        self.limiter.forget(id);
        self.fallback.forget(id);
        Ok(deleted)
    }

    /// Takes one request from the bucket of the key whose plaintext is `presented`.
    pub async fn check(&self, presented: &str) -> Verdict {
        let key = match self.lookup(&hash_key(presented)).await {
            Ok(Some(key)) => key,
            Ok(None) => {
                self.metrics.invalid();
                return Verdict::Invalid;
            }
            Err(()) => {
                self.metrics.fallback.inc();
                return Verdict::Unchecked;
            }
        };
        let decision = match self.call(self.limiter.acquire(&key)).await {
            Ok(decision) => decision,
            Err(()) => {
                self.metrics.fallback.inc();
                self.fallback.acquire_now(&key)
            }
        };
        self.metrics.decided(&key.name, decision.allowed);
        Verdict::Decided(decision)
    }

    /// The key for `hash`: from the cache while fresh, else from the store; a stale copy
    /// when the store fails. `Err` when the store fails and nothing is cached.
    async fn lookup(&self, hash: &str) -> Result<Option<ApiKey>, ()> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned();
        if let Some(cached) = &cached {
            if cached.fetched.elapsed() < self.settings.key_cache_ttl {
                return Ok(cached.key.clone());
            }
        }
        match self.call(self.keys.find(hash)).await {
            Ok(found) => {
                self.remember(hash.to_owned(), found.clone());
                Ok(found)
            }
            Err(()) => cached.map(|cached| cached.key).ok_or(()),
        }
    }

    fn remember(&self, hash: String, key: Option<ApiKey>) {
        let cached = Cached {
            key,
            fetched: Instant::now(),
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(hash, cached);
    }

    /// Runs one store call within the timeout, unless Redis has just failed repeatedly.
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, QuotaError>>,
    ) -> Result<T, ()> {
        if self.breaker_is_open() {
            return Err(());
        }
        match tokio::time::timeout(self.settings.redis_timeout, call).await {
            Ok(Ok(value)) => {
                self.breaker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .failures = 0;
                Ok(value)
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                Err(())
            }
            Err(_) => {
                self.failed("timed out");
                Err(())
            }
        }
    }

    fn breaker_is_open(&self) -> bool {
        let mut breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        match breaker.open_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                // Half open: the next call tries Redis; one more failure reopens.
                breaker.open_until = None;
                breaker.failures = FAILURES_TO_OPEN - 1;
                false
            }
            None => false,
        }
    }

    fn failed(&self, error: &str) {
        let mut breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        breaker.failures += 1;
        if breaker.failures >= FAILURES_TO_OPEN && breaker.open_until.is_none() {
            breaker.open_until = Some(Instant::now() + OPEN_FOR);
            tracing::warn!(
                error,
                retry_in = ?OPEN_FOR,
                "quota store failing: limiting API keys locally"
            );
        } else {
            tracing::debug!(error, "quota store call failed: decided locally");
        }
    }
}
