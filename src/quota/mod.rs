//! Per-key quotas: API keys created by an admin, each carrying a rate and a burst, enforced
//! as a token bucket that every replica shares.
//!
//! Two backends behind the same traits, like the registry: [`embedded`] (in memory, one
//! node, `make run`) and [`redis`] (keys hashed in Redis, one atomic Lua token bucket per key,
//! timed by the Redis server's clock so replicas' clocks do not matter). [`Quotas`] puts a
//! per-replica key cache, the Redis timeout and the local fallback in front of them.
//!
//! Only the SHA-256 of a key is stored: its plaintext is shown once, when it is created.

pub mod embedded;
pub mod local;
pub mod metrics;
pub mod redis;
mod service;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

pub use service::{QuotaSettings, Quotas, Verdict};

/// Every key ml-api issues starts with this, so a request's key header can be told apart
/// from the free-form client names the per-client rate limiter has always accepted.
pub const KEY_PREFIX: &str = "mlk_";

/// A stored API key: what it is called and what it may do. Never holds the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    /// Chosen by the admin; unique; the key's label in metrics.
    pub name: String,
    /// Sustained requests per second, shared by every replica.
    pub rate_per_s: f64,
    /// Requests allowed at once above the sustained rate (the bucket's size).
    pub burst: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// A validated request for a new key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    pub name: String,
    pub rate_per_s: f64,
    pub burst: u32,
}

impl KeySpec {
    /// One request per 1,000 s: slower rates are not a quota anyone needs, and the bounds
    /// keep every bucket's full-refill time (burst / rate) far from overflowing.
    pub const MIN_RATE: f64 = 0.001;
    pub const MAX_RATE: f64 = 1_000_000.0;
    pub const MAX_BURST: u32 = 100_000;

    /// A new key for this spec: its record, and the plaintext to hand to the client once.
    pub fn issue(&self) -> Result<(ApiKey, String), QuotaError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| QuotaError::Internal(format!("no randomness for a new key: {e}")))?;
        let plaintext = format!("{KEY_PREFIX}{}", hex::encode(secret));
        let created_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        let key = ApiKey {
            id: Uuid::now_v7(),
            name: self.name.clone(),
            rate_per_s: self.rate_per_s,
            burst: self.burst,
            created_at_ms,
        };
        Ok((key, plaintext))
    }
}

/// What the stores keep a key under: the hex SHA-256 of its plaintext.
pub fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// One request's verdict from a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's size (the key's burst), sent as `X-RateLimit-Limit`.
    pub limit: u32,
    /// Whole requests left in the bucket after this one.
    pub remaining: u32,
    /// When refused: how long until one request fits.
    pub retry_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("API key store unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("API key data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Internal(String),
}

/// Where keys live.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key under `hash`; a name already taken is a [`QuotaError::Conflict`].
    async fn insert(&self, key: &ApiKey, hash: &str) -> Result<(), QuotaError>;
    /// The key whose plaintext hashes to `hash`.
    async fn find(&self, hash: &str) -> Result<Option<ApiKey>, QuotaError>;
    /// Every key, oldest first.
    async fn list(&self) -> Result<Vec<ApiKey>, QuotaError>;
    /// Revokes a key (and drops its bucket). `false` when unknown.
    async fn delete(&self, id: Uuid) -> Result<bool, QuotaError>;
}

/// Takes one request from a key's token bucket.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    async fn acquire(&self, key: &ApiKey) -> Result<Decision, QuotaError>;
    /// Drops any state this process keeps for a revoked key.
    fn forget(&self, _id: Uuid) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_are_random_prefixed_and_stored_only_as_their_hash() {
        let spec = KeySpec {
            name: "team-a".into(),
            rate_per_s: 5.0,
            burst: 10,
        };
        let (first, plaintext) = spec.issue().unwrap();
        let (second, other) = spec.issue().unwrap();
        assert!(plaintext.starts_with(KEY_PREFIX));
        assert_eq!(plaintext.len(), KEY_PREFIX.len() + 64);
        assert_ne!(plaintext, other);
        assert_ne!(first.id, second.id);
        let hash = hash_key(&plaintext);
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, hash_key(&other));
        let stored = serde_json::to_string(&first).unwrap();
        assert!(!stored.contains(&plaintext[KEY_PREFIX.len()..]));
    }
}
