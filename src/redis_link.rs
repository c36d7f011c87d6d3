//! Where Redis is, for the registry, the job queue and the quotas: one URL, or the current
//! master of a set that Redis Sentinel watches.
//!
//! [`RedisLink`] is a cloneable connection (a `redis` crate `ConnectionLike`) that opens on
//! first use and reconnects on its own, each connection attempt and command bounded by the
//! timeouts it was opened with. With Sentinel it asks the sentinels for the master and, when
//! a command fails the way a failover makes it fail (connection refused or dropped, a
//! timeout, `READONLY` from a demoted master), asks them again before the next command, so
//! the link follows a promoted replica without a restart.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
    Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult,
    Value,
};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One server (`redis://[:password@]host:port[/db]`).
    Url(String),
    /// The master that the sentinels (`host:port`) name `master`; `url` gives the password
    /// and database used with it (its host is not used).
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        url: String,
    },
}

impl RedisEndpoint {
    /// Sentinel when `sentinels` lists any, else the URL.
    pub fn new(url: &str, sentinels: &[String], master: &str) -> Self {
        let sentinels: Vec<String> = sentinels
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if sentinels.is_empty() {
            Self::Url(url.to_owned())
        } else {
            Self::Sentinel {
                sentinels,
                master: master.to_owned(),
                url: url.to_owned(),
            }
        }
    }
}

#[derive(Clone)]
pub struct RedisLink(Arc<Link>);

struct Link {
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
    db: i64,
    /// The connection to the server (to the master last named by the sentinels), if known.
    current: RwLock<Option<ConnectionManager>>,
    /// With Sentinel: asks the sentinels; one question at a time.
    sentinel: Option<tokio::sync::Mutex<SentinelClient>>,
    url: Option<String>,
}

impl RedisLink {
    /// A link that connects lazily: a Redis (or sentinels) down at start only fails the
    /// commands sent while it is down.
    pub fn open(
        endpoint: &RedisEndpoint,
        connect: Duration,
        response: Duration,
    ) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(response))
            .set_number_of_retries(1)
            .set_max_delay(connect);
        let link = match endpoint {
            RedisEndpoint::Url(url) => {
                let client = Client::open(url.as_str())?;
                let db = client.get_connection_info().redis_settings().db();
                Link {
                    current: RwLock::new(Some(ConnectionManager::new_lazy_with_config(
                        client,
                        config.clone(),
                    )?)),
                    config,
                    connect_timeout: connect,
                    db,
                    sentinel: None,
                    url: Some(url.clone()),
                }
            }
            RedisEndpoint::Sentinel {
                sentinels,
                master,
                url,
            } => {
                let info = url.as_str().into_connection_info()?;
                let settings = info.redis_settings().clone();
                let db = settings.db();
                let addresses: Vec<String> =
                    sentinels.iter().map(|s| format!("redis://{s}")).collect();
                let client = SentinelClient::build(
                    addresses,
                    master.clone(),
                    Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(settings)),
                    SentinelServerType::Master,
                )?;
                Link {
                    current: RwLock::new(None),
                    config,
                    connect_timeout: connect,
                    db,
                    sentinel: Some(tokio::sync::Mutex::new(client)),
                    url: None,
                }
            }
        };
        Ok(Self(Arc::new(link)))
    }

    /// A client for the server (the current master with Sentinel), for pub/sub.
    pub async fn client(&self) -> RedisResult<Client> {
        match (&self.0.url, &self.0.sentinel) {
            (Some(url), _) => Client::open(url.as_str()),
            (None, Some(sentinel)) => {
                let mut sentinel = sentinel.lock().await;
                tokio::time::timeout(self.0.connect_timeout, sentinel.async_get_client())
                    .await
                    .map_err(|_| timed_out("asking the sentinels for the master"))?
            }
            (None, None) => Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no Redis endpoint",
            ))),
        }
    }

    async fn connection(&self) -> RedisResult<ConnectionManager> {
        if let Some(connection) = self.0.current.read().ok().and_then(|c| c.clone()) {
            return Ok(connection);
        }
        let client = self.client().await?;
        tracing::info!(master = ?client.get_connection_info().addr(), "Redis master found through Sentinel");
        let connection = ConnectionManager::new_lazy_with_config(client, self.0.config.clone())?;
        if let Ok(mut current) = self.0.current.write() {
            *current = Some(connection.clone());
        }
        Ok(connection)
    }

    /// After a failed command: with Sentinel, a failure a failover causes makes the next
    /// command ask the sentinels for the master again.
    fn observe<T>(&self, result: &RedisResult<T>) {
        let Err(error) = result else { return };
        if self.0.sentinel.is_none() {
            return;
        }
        let failover = error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
            || error.is_timeout()
            || error.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            || error.code() == Some("MASTERDOWN");
        if failover {
            if let Ok(mut current) = self.0.current.write() {
                *current = None;
            }
        }
    }
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let result = connection.req_packed_command(cmd).await;
            self.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let result = connection
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_used_when_any_is_given() {
        assert_eq!(
            RedisEndpoint::new("redis://r:6379", &[], "mymaster"),
            RedisEndpoint::Url("redis://r:6379".into())
        );
        assert_eq!(
            RedisEndpoint::new("redis://:pw@x/2", &[" s1:26379".into(), "".into()], "m"),
            RedisEndpoint::Sentinel {
                sentinels: vec!["s1:26379".into()],
                master: "m".into(),
                url: "redis://:pw@x/2".into()
            }
        );
    }
}
