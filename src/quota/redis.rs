//! Keys and buckets in Redis, shared by every replica.
//!
//! Keys (prefix `--redis-prefix`):
//! - `{p}:apikey:{sha256}`  the key's record (JSON), under the SHA-256 of its plaintext
//! - `{p}:apikeys`          hash id → sha256 (listing, revocation)
//! - `{p}:apikey-names`     hash name → id (names are unique)
//! - `{p}:quota:{id}`       the key's token bucket; expires once idle long enough to be full
//!
//! Each request runs one Lua script (EVALSHA, falling back to EVAL when Redis has not seen
//! it): refill by the Redis server's `TIME`, take a token, write back. Atomic, so N replicas
//! share one bucket and never give a key N times its rate.

use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{ApiKey, Decision, KeyStore, Limiter, QuotaError};
use crate::redis_link::{RedisEndpoint, RedisLink};

const INSERT: &str = r"
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
return 1
";

pub struct RedisQuotas {
    connection: RedisLink,
    prefix: String,
    bucket: Script,
    insert: Script,
}

fn unavailable(error: redis::RedisError) -> QuotaError {
    QuotaError::Unavailable(error.to_string())
}

impl RedisQuotas {
    /// Connects lazily: a Redis that is down only sends requests to the local fallback.
    pub fn connect(endpoint: &RedisEndpoint, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            connection: RedisLink::open(endpoint, Duration::from_secs(1), Duration::from_secs(2))?,
            prefix: prefix.to_owned(),
            bucket: Script::new(include_str!("token_bucket.lua")),
            insert: Script::new(INSERT),
        })
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    fn bucket_key(&self, id: Uuid) -> String {
        self.key(&["quota", &id.to_string()])
    }
}

fn parse(json: &str) -> Result<ApiKey, QuotaError> {
    serde_json::from_str(json).map_err(|e| QuotaError::Corrupt(e.to_string()))
}

#[async_trait]
impl KeyStore for RedisQuotas {
    async fn insert(&self, key: &ApiKey, hash: &str) -> Result<(), QuotaError> {
        let json = serde_json::to_string(key).map_err(|e| QuotaError::Internal(e.to_string()))?;
        let mut connection = self.connection.clone();
        let inserted: i64 = self
            .insert
            .key(self.key(&["apikey", hash]))
            .key(self.key(&["apikeys"]))
            .key(self.key(&["apikey-names"]))
            .arg(key.id.to_string())
            .arg(hash)
            .arg(&key.name)
            .arg(json)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if inserted == 0 {
            return Err(QuotaError::Conflict(format!(
                "an API key named `{}` already exists",
                key.name
            )));
        }
        Ok(())
    }

    async fn find(&self, hash: &str) -> Result<Option<ApiKey>, QuotaError> {
        let mut connection = self.connection.clone();
        let json: Option<String> = connection
            .get(self.key(&["apikey", hash]))
            .await
            .map_err(unavailable)?;
        json.as_deref().map(parse).transpose()
    }

    async fn list(&self) -> Result<Vec<ApiKey>, QuotaError> {
        let mut connection = self.connection.clone();
        let hashes: Vec<String> = connection
            .hvals(self.key(&["apikeys"]))
            .await
            .map_err(unavailable)?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<String> = hashes
            .iter()
            .map(|hash| self.key(&["apikey", hash]))
            .collect();
        let values: Vec<Option<String>> = connection.mget(records).await.map_err(unavailable)?;
        let mut keys = values
            .iter()
            .flatten()
            .map(|json| parse(json))
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort_by_key(|key| key.id);
        Ok(keys)
    }

    async fn delete(&self, id: Uuid) -> Result<bool, QuotaError> {
        let mut connection = self.connection.clone();
        let index = self.key(&["apikeys"]);
        let hash: Option<String> = connection
            .hget(&index, id.to_string())
            .await
            .map_err(unavailable)?;
        let Some(hash) = hash else {
            return Ok(false);
        };
        let record = self.key(&["apikey", &hash]);
        let json: Option<String> = connection.get(&record).await.map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&record)
            .ignore()
            .hdel(&index, id.to_string())
            .ignore()
            .del(self.bucket_key(id))
            .ignore();
        if let Some(key) = json.as_deref().and_then(|json| parse(json).ok()) {
            pipe.hdel(self.key(&["apikey-names"]), key.name).ignore();
        }
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(true)
    }
}

#[async_trait]
impl Limiter for RedisQuotas {
    async fn acquire(&self, key: &ApiKey) -> Result<Decision, QuotaError> {
        let mut connection = self.connection.clone();
        let (allowed, remaining, wait_us): (i64, i64, i64) = self
            .bucket
            .key(self.bucket_key(key.id))
            .arg(key.rate_per_s)
            .arg(key.burst)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: key.burst,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            retry_after: Duration::from_micros(u64::try_from(wait_us.max(0)).unwrap_or(0)),
        })
    }
}
