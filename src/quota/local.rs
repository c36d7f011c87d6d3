//! A key's bucket in this process only: governor's GCRA (the engine under tower_governor),
//! one limiter per key at the key's own rate and burst.
//!
//! It is the limiter of the embedded backend (one node), and every replica's fallback while
//! Redis is unreachable. As a fallback each replica allows the key's rate divided by
//! `--quota-fallback-replicas`: replicas cannot see each other's counts during an outage.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::{InMemoryState, NotKeyed},
    Quota, RateLimiter,
};
use uuid::Uuid;

use super::{ApiKey, Decision, Limiter, QuotaError};

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct Entry {
    rate_per_s: f64,
    burst: u32,
    bucket: Arc<Bucket>,
}

pub struct LocalLimiter {
    divisor: f64,
    buckets: Mutex<HashMap<Uuid, Entry>>,
}

impl LocalLimiter {
    /// Each key gets `rate_per_s / divisor` (and its full burst).
    pub fn new(divisor: u32) -> Self {
        Self {
            divisor: f64::from(divisor.max(1)),
            buckets: Mutex::default(),
        }
    }

    fn bucket(&self, key: &ApiKey) -> Arc<Bucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let current = buckets
            .get(&key.id)
            .filter(|entry| entry.rate_per_s == key.rate_per_s && entry.burst == key.burst);
        if let Some(entry) = current {
            return entry.bucket.clone();
        }
        let rate = key.rate_per_s / self.divisor;
        let period = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_secs(1));
        let burst = NonZeroU32::new(key.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let bucket = Arc::new(RateLimiter::direct(quota).with_middleware());
        buckets.insert(
            key.id,
            Entry {
                rate_per_s: key.rate_per_s,
                burst: key.burst,
                bucket: bucket.clone(),
            },
        );
        bucket
    }

    /// Takes one request from the key's local bucket.
    pub fn acquire_now(&self, key: &ApiKey) -> Decision {
        match self.bucket(key).check() {
            Ok(snapshot) => Decision {
                allowed: true,
                limit: key.burst,
                remaining: snapshot.remaining_burst_capacity(),
                retry_after: Duration::ZERO,
            },
            Err(refused) => Decision {
                allowed: false,
                limit: key.burst,
                remaining: 0,
                retry_after: refused.wait_time_from(DefaultClock::default().now()),
            },
        }
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn acquire(&self, key: &ApiKey) -> Result<Decision, QuotaError> {
        Ok(self.acquire_now(key))
    }

    fn forget(&self, id: Uuid) {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rate_per_s: f64, burst: u32) -> ApiKey {
        ApiKey {
            id: Uuid::now_v7(),
            name: "k".into(),
            rate_per_s,
            burst,
            created_at_ms: 0,
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_is_refused_with_the_time_until_the_next_token() {
        let limiter = LocalLimiter::new(1);
        // One token every 1000 s: nothing refills during the test.
        let slow = key(0.001, 3);
        let remaining: Vec<u32> = (0..3)
            .map(|_| limiter.acquire_now(&slow))
            .inspect(|decision| assert!(decision.allowed))
            .map(|decision| decision.remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.acquire_now(&slow);
        assert!(!refused.allowed);
        assert_eq!((refused.limit, refused.remaining), (3, 0));
        assert!(refused.retry_after > Duration::from_secs(900));
        // Another key has its own bucket.
        assert!(limiter.acquire_now(&key(0.001, 1)).allowed);
    }

    #[test]
    fn the_fallback_divides_the_rate_between_replicas() {
        let slow = key(0.002, 1);
        let whole = LocalLimiter::new(1);
        let half = LocalLimiter::new(2);
        assert!(whole.acquire_now(&slow).allowed && half.acquire_now(&slow).allowed);
        let wait_whole = whole.acquire_now(&slow).retry_after;
        let wait_half = half.acquire_now(&slow).retry_after;
        assert!(wait_whole > Duration::from_secs(400) && wait_whole <= Duration::from_secs(500));
        assert!(wait_half > Duration::from_secs(900) && wait_half <= Duration::from_secs(1000));
    }

    #[test]
    fn a_forgotten_or_changed_key_starts_with_a_full_bucket() {
        let limiter = LocalLimiter::new(1);
        let mut slow = key(0.001, 1);
        assert!(limiter.acquire_now(&slow).allowed);
        assert!(!limiter.acquire_now(&slow).allowed);
        limiter.forget(slow.id);
        assert!(limiter.acquire_now(&slow).allowed);
        slow.burst = 2;
        assert!(limiter.acquire_now(&slow).allowed);
    }
}
