//! The Redis registry, shared by every replica and worker.
//!
//! Keys (prefix `mlapi` by default):
//! - `{p}:model:{id}`    the record, JSON
//! - `{p}:onnx:{id}`     the ONNX bytes
//! - `{p}:models`        sorted set of ids by creation time (listing)
//! - `{p}:version:{name}` the last version number of a name (INCR)
//! - `{p}:aliases`       hash `name/alias` → id
//! - `{p}:events`        pub/sub channel of [`RegistryEvent`]s
//! - `{p}:challengers`, `{p}:shadow:*`  shadow scoring (see [`super::shadow`])
//!
//! Writes that touch several keys run in one MULTI/EXEC transaction.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redis::{aio::ConnectionManager, AsyncCommands, Client};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{
    check_alias_target, shadow, Challenger, ListQuery, ModelRecord, ModelRegistry, Page, Promotion,
    RegistryError, RegistryEvent, ShadowKey, Tally,
};

pub struct RedisRegistry {
    connection: ConnectionManager,
    prefix: String,
    events: broadcast::Sender<RegistryEvent>,
}

fn unavailable(error: redis::RedisError) -> RegistryError {
    RegistryError::Unavailable(error.to_string())
}

/// A connection that opens on first use and reconnects on its own (one retry, then the
/// error is the caller's), shared by the registry, the job queue and the quotas. `connect`
/// bounds each connection attempt and the reconnect back-off; `response` each command.
pub(crate) fn lazy_connection(
    url: &str,
    connect: Duration,
    response: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response))
        .set_number_of_retries(1)
        .set_max_delay(connect);
    ConnectionManager::new_lazy_with_config(Client::open(url)?, config)
}

impl RedisRegistry {
    /// Connects (lazily: a Redis that is down at start-up only delays readiness of writes)
    /// and starts the task that relays pub/sub events, reconnecting as needed.
    pub fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = Client::open(url)?;
        let two_seconds = Duration::from_secs(2);
        let connection = lazy_connection(url, two_seconds, two_seconds)?;
        let (events, _) = broadcast::channel(1024);
        tokio::spawn(relay_events(
            client,
            format!("{prefix}:events"),
            events.clone(),
        ));
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            events,
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

    fn record_key(&self, id: Uuid) -> String {
        self.key(&["model", &id.to_string()])
    }

    fn onnx_key(&self, id: Uuid) -> String {
        self.key(&["onnx", &id.to_string()])
    }

    async fn publish(&self, event: &RegistryEvent) {
        let Ok(payload) = serde_json::to_string(event) else {
            return;
        };
        let mut connection = self.connection.clone();
        let channel = self.key(&["events"]);
        if let Err(error) = connection.publish::<_, _, ()>(channel, payload).await {
            // Replicas reconcile periodically, so a lost notification only delays them.
            tracing::warn!(%error, "cannot publish a registry event");
        }
    }

    async fn write_record(
        &self,
        record: &ModelRecord,
        onnx: Option<&Bytes>,
    ) -> Result<(), RegistryError> {
        let json =
            serde_json::to_string(record).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let mut pipe = redis::pipe();
        pipe.atomic().set(self.record_key(record.id), json).ignore();
        if let Some(bytes) = onnx {
            pipe.set(self.onnx_key(record.id), bytes.as_ref()).ignore();
        }
        pipe.zadd(
            self.key(&["models"]),
            record.id.to_string(),
            record.created_at_ms,
        )
        .ignore();
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn records(&self, ids: &[String]) -> Result<Vec<ModelRecord>, RegistryError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(&["model", id])).collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<String>> = connection.mget(keys).await.map_err(unavailable)?;
        values
            .into_iter()
            .flatten()
            .map(|json| {
                serde_json::from_str(&json).map_err(|e| RegistryError::Corrupt(e.to_string()))
            })
            .collect()
    }
}

/// Forwards `{p}:events` messages to local subscribers, resubscribing after failures.
async fn relay_events(client: Client, channel: String, events: broadcast::Sender<RegistryEvent>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(&channel).await.is_ok() {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        if let Ok(event) = serde_json::from_str(&payload) {
                            let _ = events.send(event);
                        }
                    }
                }
                tracing::warn!("registry event subscription lost; resubscribing");
            }
            Err(error) => tracing::debug!(%error, "cannot subscribe to registry events yet"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl ModelRegistry for RedisRegistry {
    async fn create(
        &self,
        mut record: ModelRecord,
        onnx: Option<Bytes>,
    ) -> Result<ModelRecord, RegistryError> {
        let mut connection = self.connection.clone();
        record.version = connection
            .incr(self.key(&["version", &record.name]), 1u64)
            .await
            .map_err(unavailable)?;
        self.write_record(&record, onnx.as_ref()).await?;
        self.publish(&RegistryEvent::Updated {
            id: record.id,
            name: record.name.clone(),
        })
        .await;
        Ok(record)
    }

    async fn update(&self, record: &ModelRecord) -> Result<(), RegistryError> {
        let mut connection = self.connection.clone();
        let exists: bool = connection
            .exists(self.record_key(record.id))
            .await
            .map_err(unavailable)?;
        if !exists {
            return Err(RegistryError::NotFound(record.id.to_string()));
        }
        self.write_record(record, None).await?;
        self.publish(&RegistryEvent::Updated {
            id: record.id,
            name: record.name.clone(),
        })
        .await;
        Ok(())
    }

    async fn complete(&self, record: &ModelRecord, onnx: Bytes) -> Result<(), RegistryError> {
        self.write_record(record, Some(&onnx)).await?;
        self.publish(&RegistryEvent::Updated {
            id: record.id,
            name: record.name.clone(),
        })
        .await;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<ModelRecord>, RegistryError> {
        Ok(self.records(&[id.to_string()]).await?.pop())
    }

    async fn onnx(&self, id: Uuid) -> Result<Option<Bytes>, RegistryError> {
        let mut connection = self.connection.clone();
        let bytes: Option<Vec<u8>> = connection
            .get(self.onnx_key(id))
            .await
            .map_err(unavailable)?;
        Ok(bytes.map(Bytes::from))
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<ModelRecord>, RegistryError> {
        let mut connection = self.connection.clone();
        let ids: Vec<String> = connection
            .zrevrange(self.key(&["models"]), 0, -1)
            .await
            .map_err(unavailable)?;
        Ok(query.page(self.records(&ids).await?))
    }

    async fn delete(&self, id: Uuid) -> Result<bool, RegistryError> {
        let Some(record) = self.get(id).await? else {
            return Ok(false);
        };
        let aliases_key = self.key(&["aliases"]);
        let target = id.to_string();
        let stale: Vec<String> = self
            .aliases()
            .await?
            .into_iter()
            .filter(|(_, _, alias_id)| *alias_id == id)
            .map(|(name, alias, _)| format!("{name}/{alias}"))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.record_key(id))
            .ignore()
            .del(self.onnx_key(id))
            .ignore()
            .zrem(self.key(&["models"]), &target)
            .ignore();
        if !stale.is_empty() {
            pipe.hdel(&aliases_key, stale).ignore();
        }
        let stale_challengers: Vec<String> = self
            .challengers()
            .await?
            .into_iter()
            .filter(|(_, _, challenger)| challenger.challenger == id)
            .map(|(name, alias, _)| shadow::field(&name, &alias))
            .collect();
        if !stale_challengers.is_empty() {
            pipe.hdel(self.key(&["challengers"]), stale_challengers)
                .ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        self.publish(&RegistryEvent::Deleted {
            id,
            name: record.name,
        })
        .await;
        Ok(true)
    }

    async fn set_alias(&self, name: &str, alias: &str, id: Uuid) -> Result<(), RegistryError> {
        check_alias_target(self.get(id).await?.as_ref(), name, id)?;
        let mut connection = self.connection.clone();
        connection
            .hset::<_, _, _, ()>(
                self.key(&["aliases"]),
                format!("{name}/{alias}"),
                id.to_string(),
            )
            .await
            .map_err(unavailable)?;
        self.publish(&RegistryEvent::AliasMoved {
            name: name.to_owned(),
            alias: alias.to_owned(),
            id,
        })
        .await;
        Ok(())
    }

    async fn aliases(&self) -> Result<Vec<(String, String, Uuid)>, RegistryError> {
        let mut connection = self.connection.clone();
        let all: Vec<(String, String)> = connection
            .hgetall(self.key(&["aliases"]))
            .await
            .map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(field, id)| {
                let (name, alias) = field.split_once('/')?;
                Some((name.to_owned(), alias.to_owned(), id.parse().ok()?))
            })
            .collect())
    }

    async fn set_challenger(
        &self,
        name: &str,
        alias: &str,
        challenger: Option<Challenger>,
    ) -> Result<(), RegistryError> {
        let mut connection = self.connection.clone();
        let key = self.key(&["challengers"]);
        let field = shadow::field(name, alias);
        match challenger {
            Some(challenger) => {
                let id = challenger.challenger;
                check_alias_target(self.get(id).await?.as_ref(), name, id)?;
                let json = serde_json::to_string(&challenger)
                    .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                connection
                    .hset::<_, _, _, ()>(key, field, json)
                    .await
                    .map_err(unavailable)?;
            }
            None => connection
                .hdel::<_, _, ()>(key, field)
                .await
                .map_err(unavailable)?,
        }
        self.publish(&RegistryEvent::ChallengerChanged {
            name: name.to_owned(),
            alias: alias.to_owned(),
        })
        .await;
        Ok(())
    }

    async fn challengers(&self) -> Result<Vec<(String, String, Challenger)>, RegistryError> {
        let mut connection = self.connection.clone();
        let all: Vec<(String, String)> = connection
            .hgetall(self.key(&["challengers"]))
            .await
            .map_err(unavailable)?;
        Ok(shadow::parse_challengers(all))
    }

    async fn promote(
        &self,
        name: &str,
        alias: &str,
        expected: Promotion,
    ) -> Result<(), RegistryError> {
        let keys = [
            self.key(&["aliases"]),
            self.key(&["challengers"]),
            self.key(&["events"]),
        ];
        let mut connection = self.connection.clone();
        shadow::redis_promote(
            &mut connection,
            [&keys[0], &keys[1], &keys[2]],
            name,
            alias,
            expected,
        )
        .await
    }

    async fn add_shadow_stats(&self, tallies: &[(ShadowKey, Tally)]) -> Result<(), RegistryError> {
        let mut connection = self.connection.clone();
        shadow::redis_add_stats(&mut connection, &self.prefix, tallies).await
    }

    async fn shadow_stats(&self, key: &ShadowKey) -> Result<Tally, RegistryError> {
        let mut connection = self.connection.clone();
        shadow::redis_stats(&mut connection, &self.prefix, key).await
    }

    fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
