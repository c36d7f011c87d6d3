//! Training jobs on a Redis Stream (`{p}:jobs`) read by the consumer group `workers`.
//! The job itself (its training data) lives at `{p}:job:{model_id}`; the stream entry
//! carries the model id. Acknowledged entries are deleted, so `XLEN` is the queue depth.

use std::time::Duration;

use async_trait::async_trait;
use redis::{
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
    },
    AsyncCommands,
};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{Delivery, Job, JobQueue};
use crate::{
    redis_link::{RedisEndpoint, RedisLink},
    registry::RegistryError,
};

const GROUP: &str = "workers";

fn unavailable(error: redis::RedisError) -> RegistryError {
    RegistryError::Unavailable(error.to_string())
}

pub struct RedisQueue {
    connection: RedisLink,
    stream: String,
    prefix: String,
    reclaim_after: Duration,
    group_ready: OnceCell<()>,
}

impl RedisQueue {
    /// `reclaim_after`: a job with no heartbeat for this long is handed to another worker.
    pub fn connect(
        endpoint: &RedisEndpoint,
        prefix: &str,
        reclaim_after: Duration,
    ) -> anyhow::Result<Self> {
        // Responses may take longer than the longest blocking read.
        let connection = RedisLink::open(endpoint, Duration::from_secs(2), Duration::from_secs(5))?;
        Ok(Self {
            connection,
            stream: format!("{prefix}:jobs"),
            prefix: prefix.to_owned(),
            reclaim_after,
            group_ready: OnceCell::new(),
        })
    }

    fn job_key(&self, model_id: Uuid) -> String {
        format!("{}:job:{model_id}", self.prefix)
    }

    /// Creates the consumer group (from the stream's start, so no job enqueued before the
    /// first worker is skipped).
    async fn ensure_group(&self) -> Result<(), RegistryError> {
        self.group_ready
            .get_or_try_init(|| async {
                let mut connection = self.connection.clone();
                let created: Result<(), _> = connection
                    .xgroup_create_mkstream(&self.stream, GROUP, "0")
                    .await;
                match created {
                    Ok(()) => Ok(()),
                    Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
                    Err(error) => Err(unavailable(error)),
                }
            })
            .await
            .map(|_| ())
    }

    async fn delivery(&self, entry: &StreamId) -> Result<Option<Delivery>, RegistryError> {
        let Some(model_id) = entry
            .get::<String>("model_id")
            .and_then(|id| id.parse::<Uuid>().ok())
        else {
            // Not ours to understand: drop it rather than loop on it forever.
            self.remove(&entry.id, None).await?;
            return Ok(None);
        };
        let mut connection = self.connection.clone();
        let json: Option<String> = connection
            .get(self.job_key(model_id))
            .await
            .map_err(unavailable)?;
        let Some(job) = json.and_then(|json| serde_json::from_str::<Job>(&json).ok()) else {
            self.remove(&entry.id, Some(model_id)).await?;
            return Ok(None);
        };
        Ok(Some(Delivery {
            model_id,
            job,
            receipt: entry.id.clone(),
        }))
    }

    async fn remove(&self, entry_id: &str, model_id: Option<Uuid>) -> Result<(), RegistryError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .xack(&self.stream, GROUP, &[entry_id])
            .ignore()
            .xdel(&self.stream, &[entry_id])
            .ignore();
        if let Some(model_id) = model_id {
            pipe.del(self.job_key(model_id)).ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn submit(&self, model_id: Uuid, job: &Job) -> Result<(), RegistryError> {
        self.ensure_group().await?;
        let json = serde_json::to_string(job).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let mut connection = self.connection.clone();
        redis::pipe()
            .atomic()
            .set(self.job_key(model_id), json)
            .ignore()
            .xadd(&self.stream, "*", &[("model_id", model_id.to_string())])
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn next(
        &self,
        consumer: &str,
        wait: Duration,
    ) -> Result<Option<Delivery>, RegistryError> {
        self.ensure_group().await?;
        let mut connection = self.connection.clone();
        let idle_ms = u64::try_from(self.reclaim_after.as_millis()).unwrap_or(u64::MAX);
        let stalled: StreamAutoClaimReply = connection
            .xautoclaim_options(
                &self.stream,
                GROUP,
                consumer,
                idle_ms,
                "0-0",
                StreamAutoClaimOptions::default().count(1),
            )
            .await
            .map_err(unavailable)?;
        if let Some(entry) = stalled.claimed.first() {
            tracing::info!(entry = %entry.id, "reclaimed a job whose worker stopped heartbeating");
            return self.delivery(entry).await;
        }
        let block_ms =
            usize::try_from(wait.min(Duration::from_secs(2)).as_millis()).unwrap_or(1000);
        let options = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(1)
            .block(block_ms);
        let reply: Option<StreamReadReply> = connection
            .xread_options(&[&self.stream], &[">"], &options)
            .await
            .map_err(unavailable)?;
        match reply
            .and_then(|reply| reply.keys.into_iter().next())
            .and_then(|key| key.ids.into_iter().next())
        {
            Some(entry) => self.delivery(&entry).await,
            None => Ok(None),
        }
    }

    async fn heartbeat(&self, consumer: &str, delivery: &Delivery) -> Result<(), RegistryError> {
        let mut connection = self.connection.clone();
        // XCLAIM to ourselves resets the entry's idle time.
        redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(&delivery.receipt)
            .arg("JUSTID")
            .query_async::<redis::Value>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), RegistryError> {
        self.remove(&delivery.receipt, Some(delivery.model_id))
            .await
    }

    async fn depth(&self) -> Result<u64, RegistryError> {
        let mut connection = self.connection.clone();
        connection.xlen(&self.stream).await.map_err(unavailable)
    }
}
