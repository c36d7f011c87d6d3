//! The Redis registry, shared by every replica and worker.
//!
//! Keys (prefix `mlapi` by default):
//! - `{p}:model:{id}`    the record, JSON
//! - `{p}:onnx:{id}`     the ONNX bytes
//! - `{p}:models`        sorted set of ids by creation time (listing)
//! - `{p}:version:{name}` the last version number of a name (INCR)
//! - `{p}:aliases`       hash `name/alias` → id
//! - `{p}:content:{name}:{sha256}` the id of the model of that name with that content
//!   (imports store each content once)
//! - `{p}:events`        pub/sub channel of [`RegistryEvent`]s
//! - `{p}:ack:{token}`   how many replicas applied one alias change (expires after a minute)
//! - `{p}:challengers`, `{p}:shadow:*`  shadow scoring (see [`super::shadow`])
//!
//! Writes that touch several keys run in one MULTI/EXEC transaction or one Lua script.
//!
//! **Alias changes are synchronous.** Every replica follows `{p}:events` and applies an
//! alias move or a deletion to its [`AliasView`] before it acknowledges the notification
//! (`INCR {p}:ack:{token}`). The writer counts the subscribers `PUBLISH` reached and returns
//! once that many have acknowledged (or after `sync_timeout`), so a request sent to any
//! replica after the write returned follows the new alias. A replica whose subscription was
//! down at that moment heals at its next full re-read (`--reconcile-interval`), and a name it
//! does not know at all is read from Redis before it answers 404.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redis::AsyncCommands;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::redis_link::{RedisEndpoint, RedisLink};

use super::{
    check_alias_target, shadow, AliasView, Challenger, ListQuery, ModelRecord, ModelRegistry, Page,
    Promotion, RegistryError, RegistryEvent, ShadowKey, Tally, LATEST,
};

/// How the registry talks to Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Bound on connecting and on each command: nothing waits longer on a frozen Redis.
    pub op_timeout: Duration,
    /// Longest wait of an alias change for the other replicas' acknowledgements.
    pub sync_timeout: Duration,
    /// Follow the change notifications (replicas do; workers, which serve nothing, do not,
    /// so writers do not wait for them).
    pub follow_events: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            op_timeout: Duration::from_secs(2),
            sync_timeout: Duration::from_secs(2),
            follow_events: true,
        }
    }
}

pub struct RedisRegistry {
    connection: RedisLink,
    prefix: String,
    events: broadcast::Sender<RegistryEvent>,
    view: Arc<AliasView>,
    sync_timeout: Duration,
}

fn unavailable(error: redis::RedisError) -> RegistryError {
    RegistryError::Unavailable(error.to_string())
}

impl RedisRegistry {
    /// Connects (lazily: a Redis that is down at start-up only delays writes) and, when
    /// following events, starts the task that relays pub/sub notifications, reconnecting as
    /// needed.
    pub fn connect(
        endpoint: &RedisEndpoint,
        prefix: &str,
        options: &RedisOptions,
    ) -> anyhow::Result<Self> {
        let connection = RedisLink::open(endpoint, options.op_timeout, options.op_timeout)?;
        let (events, _) = broadcast::channel(1024);
        let view = Arc::new(AliasView::default());
        if options.follow_events {
            tokio::spawn(relay_events(
                connection.clone(),
                prefix.to_owned(),
                events.clone(),
                view.clone(),
            ));
        }
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            events,
            view,
            sync_timeout: options.sync_timeout,
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

    /// Publishes an alias change and waits until every replica it reached has applied it.
    async fn publish_synced(&self, event: &RegistryEvent) {
        self.view.apply(event);
        let token = Uuid::new_v4().to_string();
        let Ok(payload) = super::notice(event, &token) else {
            return;
        };
        let mut connection = self.connection.clone();
        let channel = self.key(&["events"]);
        match connection.publish::<_, _, u64>(channel, payload).await {
            Ok(receivers) => self.wait_for_acks(&token, receivers).await,
            Err(error) => tracing::warn!(%error, "cannot publish a registry event"),
        }
    }

    /// Waits until `receivers` replicas acknowledged `token`, at most `sync_timeout`.
    async fn wait_for_acks(&self, token: &str, receivers: u64) {
        if receivers == 0 {
            return;
        }
        let key = self.key(&["ack", token]);
        let mut connection = self.connection.clone();
        let deadline = tokio::time::Instant::now() + self.sync_timeout;
        let mut pause = Duration::from_micros(500);
        loop {
            let acked: Option<u64> = connection.get(&key).await.unwrap_or(None);
            if acked.unwrap_or(0) >= receivers {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    receivers,
                    acked = acked.unwrap_or(0),
                    "not every replica acknowledged an alias change in time; the others follow at their next re-read"
                );
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Writes a record (and its bytes, and points `name:alias` at it) in one transaction.
    async fn write_record(
        &self,
        record: &ModelRecord,
        onnx: Option<&Bytes>,
        alias: Option<&str>,
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
        if let Some(alias) = alias {
            pipe.hset(
                self.key(&["aliases"]),
                format!("{}/{alias}", record.name),
                record.id.to_string(),
            )
            .ignore();
        }
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

/// Follows `{p}:events`: applies each change to the alias view, acknowledges it when its
/// writer waits, and forwards it to local subscribers; resubscribes after failures.
async fn relay_events(
    mut connection: RedisLink,
    prefix: String,
    events: broadcast::Sender<RegistryEvent>,
    view: Arc<AliasView>,
) {
    let channel = format!("{prefix}:events");
    loop {
        let subscribed = match connection.client().await {
            Ok(client) => client.get_async_pubsub().await,
            Err(error) => Err(error),
        };
        match subscribed {
            Ok(mut pubsub) => {
                if pubsub.subscribe(&channel).await.is_ok() {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        if let Ok(payload) = message.get_payload::<String>() {
                            relay(&payload, &mut connection, &prefix, &events, &view).await;
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

/// One notification: applied to the view, acknowledged when its writer waits, forwarded.
async fn relay(
    payload: &str,
    connection: &mut RedisLink,
    prefix: &str,
    events: &broadcast::Sender<RegistryEvent>,
    view: &AliasView,
) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
        return;
    };
    let Ok(event) = serde_json::from_value::<RegistryEvent>(value.clone()) else {
        return;
    };
    view.apply(&event);
    if let Some(token) = value.get("ack").and_then(|ack| ack.as_str()) {
        let key = format!("{prefix}:ack:{token}");
        let acked: redis::RedisResult<()> = redis::pipe()
            .incr(&key, 1)
            .ignore()
            .expire(&key, 60)
            .ignore()
            .query_async(connection)
            .await;
        if let Err(error) = acked {
            tracing::debug!(%error, "cannot acknowledge a registry event");
        }
    }
    let _ = events.send(event);
}

/// Stores a model unless its content is stored under its name already, and points
/// `name:latest` at the stored one when unset; see [`ModelRegistry::import`].
/// Returns `{created, id, alias_set}`.
const IMPORT: &str = r#"
local id = redis.call('GET', KEYS[1])
if id and redis.call('EXISTS', ARGV[6] .. id) == 0 then
  -- The stored copy was deleted since: store this one.
  id = false
end
local created = 0
if not id then
  id = ARGV[1]
  local version = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[5], '{"version":' .. version .. ',' .. string.sub(ARGV[2], 2))
  redis.call('SET', KEYS[6], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], id)
  redis.call('SET', KEYS[1], id)
  created = 1
end
local alias_set = redis.call('HSETNX', KEYS[4], ARGV[5], id)
return {created, id, alias_set}
"#;

/// Points an alias at a model only if that model exists and has the alias's name, in one
/// step (a concurrent delete cannot leave an alias to nothing). Returns 1, or 0 when the
/// model is missing, or the model's name.
const SET_ALIAS: &str = r"
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
local name = cjson.decode(stored)['name']
if name ~= ARGV[1] then return name end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
";

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
        self.write_record(&record, onnx.as_ref(), None).await?;
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
        self.write_record(record, None, None).await?;
        self.publish(&RegistryEvent::Updated {
            id: record.id,
            name: record.name.clone(),
        })
        .await;
        Ok(())
    }

    async fn complete(&self, record: &ModelRecord, onnx: Bytes) -> Result<(), RegistryError> {
        self.write_record(record, Some(&onnx), Some(LATEST)).await?;
        self.publish_synced(&RegistryEvent::AliasMoved {
            name: record.name.clone(),
            alias: LATEST.to_owned(),
            id: record.id,
        })
        .await;
        self.publish(&RegistryEvent::Updated {
            id: record.id,
            name: record.name.clone(),
        })
        .await;
        Ok(())
    }

    async fn import(&self, record: ModelRecord, onnx: Bytes) -> Result<ModelRecord, RegistryError> {
        let sha256 = record
            .sha256
            .clone()
            .ok_or_else(|| RegistryError::Corrupt("an imported model needs its SHA-256".into()))?;
        let content_key = self.key(&["content", &record.name, &sha256]);
        let mut connection = self.connection.clone();
        // A registry written before content keys existed: adopt a stored copy.
        let indexed: bool = connection.exists(&content_key).await.map_err(unavailable)?;
        if !indexed {
            let stored = self
                .list(&ListQuery {
                    name: Some(record.name.clone()),
                    limit: usize::MAX,
                    ..ListQuery::default()
                })
                .await?
                .items
                .into_iter()
                .find(|stored| stored.sha256.as_deref() == Some(sha256.as_str()));
            if let Some(stored) = stored {
                connection
                    .set_nx::<_, _, ()>(&content_key, stored.id.to_string())
                    .await
                    .map_err(unavailable)?;
            }
        }
        let mut unversioned =
            serde_json::to_value(&record).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        if let Some(object) = unversioned.as_object_mut() {
            object.remove("version");
        }
        let (created, id, alias_set): (i64, String, i64) = redis::Script::new(IMPORT)
            .key(&content_key)
            .key(self.key(&["version", &record.name]))
            .key(self.key(&["models"]))
            .key(self.key(&["aliases"]))
            .key(self.record_key(record.id))
            .key(self.onnx_key(record.id))
            .arg(record.id.to_string())
            .arg(unversioned.to_string())
            .arg(onnx.as_ref())
            .arg(record.created_at_ms)
            .arg(format!("{}/{LATEST}", record.name))
            .arg(self.key(&["model", ""]))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let id: Uuid = id
            .parse()
            .map_err(|_| RegistryError::Corrupt(format!("content key holds `{id}`")))?;
        let stored = self
            .get(id)
            .await?
            .ok_or_else(|| RegistryError::Corrupt(format!("content key points at missing {id}")))?;
        if created == 1 {
            self.publish(&RegistryEvent::Updated {
                id,
                name: stored.name.clone(),
            })
            .await;
        }
        if alias_set == 1 {
            self.publish_synced(&RegistryEvent::AliasMoved {
                name: stored.name.clone(),
                alias: LATEST.to_owned(),
                id,
            })
            .await;
        }
        Ok(stored)
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
        self.publish_synced(&RegistryEvent::Deleted {
            id,
            name: record.name,
        })
        .await;
        Ok(true)
    }

    async fn set_alias(&self, name: &str, alias: &str, id: Uuid) -> Result<(), RegistryError> {
        let mut connection = self.connection.clone();
        let outcome: redis::Value = redis::Script::new(SET_ALIAS)
            .key(self.record_key(id))
            .key(self.key(&["aliases"]))
            .arg(name)
            .arg(format!("{name}/{alias}"))
            .arg(id.to_string())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match outcome {
            redis::Value::Int(1) => {}
            redis::Value::Int(_) => return Err(RegistryError::NotFound(id.to_string())),
            other => {
                let actual: String = redis::from_redis_value(other)
                    .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                return Err(super::misnamed_target(id, &actual, name));
            }
        }
        self.publish_synced(&RegistryEvent::AliasMoved {
            name: name.to_owned(),
            alias: alias.to_owned(),
            id,
        })
        .await;
        Ok(())
    }

    async fn alias(&self, name: &str, alias: &str) -> Result<Option<Uuid>, RegistryError> {
        let mut connection = self.connection.clone();
        let id: Option<String> = connection
            .hget(self.key(&["aliases"]), format!("{name}/{alias}"))
            .await
            .map_err(unavailable)?;
        let id = id.and_then(|id| id.parse().ok());
        if let Some(id) = id {
            self.view.learn(name, alias, id);
        }
        Ok(id)
    }

    fn view(&self) -> &AliasView {
        &self.view
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
        let token = Uuid::new_v4().to_string();
        let receivers = shadow::redis_promote(
            &mut connection,
            [&keys[0], &keys[1], &keys[2]],
            name,
            alias,
            expected,
            &token,
        )
        .await?;
        self.view.apply(&RegistryEvent::AliasMoved {
            name: name.to_owned(),
            alias: alias.to_owned(),
            id: expected.challenger,
        });
        self.wait_for_acks(&token, receivers).await;
        Ok(())
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
