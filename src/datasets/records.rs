//! Where dataset records live: in memory (embedded registry) or in Redis (`{p}:dataset:{id}`
//! holds the record as JSON, `{p}:datasets` orders ids by creation time). Only records: the
//! bytes are in the dataset store.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use redis::AsyncCommands;
use tokio::sync::RwLock;
use uuid::Uuid;

use super::{DatasetError, DatasetRecord};
use crate::redis_link::{RedisEndpoint, RedisLink};

#[async_trait]
pub trait DatasetRecords: Send + Sync + 'static {
    async fn create(&self, record: &DatasetRecord) -> Result<(), DatasetError>;
    async fn get(&self, id: Uuid) -> Result<Option<DatasetRecord>, DatasetError>;
    /// Newest first.
    async fn list(&self) -> Result<Vec<DatasetRecord>, DatasetError>;
    /// `false` when there was no such record.
    async fn delete(&self, id: Uuid) -> Result<bool, DatasetError>;
}

#[derive(Default)]
pub struct EmbeddedDatasets {
    records: RwLock<BTreeMap<Uuid, DatasetRecord>>,
}

#[async_trait]
impl DatasetRecords for EmbeddedDatasets {
    async fn create(&self, record: &DatasetRecord) -> Result<(), DatasetError> {
        self.records
            .write()
            .await
            .insert(record.dataset_id, record.clone());
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<DatasetRecord>, DatasetError> {
        Ok(self.records.read().await.get(&id).cloned())
    }

    async fn list(&self) -> Result<Vec<DatasetRecord>, DatasetError> {
        let mut all: Vec<DatasetRecord> = self.records.read().await.values().cloned().collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.created_at_ms));
        Ok(all)
    }

    async fn delete(&self, id: Uuid) -> Result<bool, DatasetError> {
        Ok(self.records.write().await.remove(&id).is_some())
    }
}

pub struct RedisDatasets {
    connection: RedisLink,
    prefix: String,
}

fn unavailable(error: redis::RedisError) -> DatasetError {
    DatasetError::Unavailable(error.to_string())
}

impl RedisDatasets {
    pub fn connect(endpoint: &RedisEndpoint, prefix: &str) -> anyhow::Result<Self> {
        let two_seconds = Duration::from_secs(2);
        Ok(Self {
            connection: RedisLink::open(endpoint, two_seconds, two_seconds)?,
            prefix: prefix.to_owned(),
        })
    }

    fn key(&self, id: Uuid) -> String {
        format!("{}:dataset:{id}", self.prefix)
    }

    fn index(&self) -> String {
        format!("{}:datasets", self.prefix)
    }
}

#[async_trait]
impl DatasetRecords for RedisDatasets {
    async fn create(&self, record: &DatasetRecord) -> Result<(), DatasetError> {
        let json =
            serde_json::to_string(record).map_err(|e| DatasetError::Internal(e.to_string()))?;
        let mut connection = self.connection.clone();
        redis::pipe()
            .atomic()
            .set(self.key(record.dataset_id), json)
            .ignore()
            .zadd(
                self.index(),
                record.dataset_id.to_string(),
                record.created_at_ms,
            )
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn get(&self, id: Uuid) -> Result<Option<DatasetRecord>, DatasetError> {
        let mut connection = self.connection.clone();
        let json: Option<String> = connection.get(self.key(id)).await.map_err(unavailable)?;
        json.map(|json| {
            serde_json::from_str(&json).map_err(|e| DatasetError::Internal(e.to_string()))
        })
        .transpose()
    }

    async fn list(&self) -> Result<Vec<DatasetRecord>, DatasetError> {
        let mut connection = self.connection.clone();
        let ids: Vec<String> = connection
            .zrevrange(self.index(), 0, -1)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}:dataset:{id}", self.prefix))
            .collect();
        let values: Vec<Option<String>> = connection.mget(keys).await.map_err(unavailable)?;
        values
            .into_iter()
            .flatten()
            .map(|json| {
                serde_json::from_str(&json).map_err(|e| DatasetError::Internal(e.to_string()))
            })
            .collect()
    }

    async fn delete(&self, id: Uuid) -> Result<bool, DatasetError> {
        let mut connection = self.connection.clone();
        let (removed, _): (u64, u64) = redis::pipe()
            .atomic()
            .del(self.key(id))
            .zrem(self.index(), id.to_string())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }
}
