//! Keys in this process's memory: one node, nothing to install (`make run`). Its limiter is
//! [`super::local::LocalLimiter`]: with one node, local is shared.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::RwLock;
use uuid::Uuid;

use super::{ApiKey, KeyStore, QuotaError};

#[derive(Default)]
pub struct EmbeddedKeys {
    /// Hash of the plaintext → key.
    keys: RwLock<HashMap<String, ApiKey>>,
}

#[async_trait]
impl KeyStore for EmbeddedKeys {
    async fn insert(&self, key: &ApiKey, hash: &str) -> Result<(), QuotaError> {
        let mut keys = self.keys.write().await;
        if keys.values().any(|other| other.name == key.name) {
            return Err(QuotaError::Conflict(format!(
                "an API key named `{}` already exists",
                key.name
            )));
        }
        keys.insert(hash.to_owned(), key.clone());
        Ok(())
    }

    async fn find(&self, hash: &str) -> Result<Option<ApiKey>, QuotaError> {
        Ok(self.keys.read().await.get(hash).cloned())
    }

    async fn list(&self) -> Result<Vec<ApiKey>, QuotaError> {
        let mut keys: Vec<ApiKey> = self.keys.read().await.values().cloned().collect();
        keys.sort_by_key(|key| key.id);
        Ok(keys)
    }

    async fn delete(&self, id: Uuid) -> Result<bool, QuotaError> {
        let mut keys = self.keys.write().await;
        let before = keys.len();
        keys.retain(|_, key| key.id != id);
        Ok(keys.len() < before)
    }
}
