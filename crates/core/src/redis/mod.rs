//! Redis connections: one handle per service to a single server, a Redis
//! Cluster, or the master a set of Sentinels names (`redis.mode`). Each
//! reconnects on its own; every caller holds a [`Redis`] and never knows
//! which kind it has.
//!
//! On a cluster a script or a transaction must touch one hash slot, which
//! the key names guarantee (`Names::redis_tagged`); a plain pipeline may
//! span slots, and is split here into one pipeline per slot, sent
//! concurrently, its replies put back in order. With `redis.wait_replicas`
//! every write waits for replicas to have it (see [`durable`]).

mod cluster;
mod durable;
mod sentinel;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

pub use cluster::key_slot;
pub use durable::Wait;
use sentinel::Sentinel;

use crate::config::{Config, RedisConfig, RedisMode};

/// Redis could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis ({mode}) at {url}: {source}")]
pub struct RedisConnectError {
    pub mode: &'static str,
    pub url: String,
    pub source: redis::RedisError,
}

/// A connection to the configured Redis, cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Inner,
    /// With `redis.wait_replicas`: the replicas to wait for, and the
    /// connections waited writes go through. `WAIT` blocks the connection
    /// it runs on, so they have their own, taken in turn, and reads and
    /// everything else never queue behind one.
    wait: Option<(Wait, Arc<Waiters>)>,
}

/// Connections for writes that wait for replicas.
struct Waiters {
    connections: Vec<Inner>,
    next: std::sync::atomic::AtomicUsize,
}

/// How many connections carry waited writes.
const WAITERS: usize = 8;

impl Waiters {
    fn take(&self) -> Inner {
        let at = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.connections[at % self.connections.len()].clone()
    }
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<Sentinel>),
}

/// Opens a connection to the configured Redis.
pub async fn connect(config: &Config) -> Result<Redis, RedisConnectError> {
    Redis::connect(&config.redis).await
}

// The connection manager's default backoff multiplies by 100 per try (1 s,
// 100 s, …): after a Redis restart every command would wait minutes for the
// reconnect; and every command waits for the whole round of tries. One
// retry, then the command fails: each caller backs off on its own and
// tries again (a later command starts another round), and a Redis that is
// down shows in readiness within seconds, not after a 20-30 s round.
pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_factor(2)
        .set_max_delay(2000)
        .set_number_of_retries(1)
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5))
}

impl Redis {
    /// Connects as `config.mode` says.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisConnectError> {
        let err = |source| RedisConnectError {
            mode: config.mode.as_str(),
            url: config.url.clone(),
            source,
        };
        let inner = Self::open(config).await.map_err(err)?;
        let wait = if config.wait_replicas > 0 {
            let wait = Wait {
                replicas: config.wait_replicas,
                timeout: config.wait_timeout,
            };
            let mut connections = Vec::with_capacity(WAITERS);
            for _ in 0..WAITERS {
                connections.push(Self::open(config).await.map_err(err)?);
            }
            let waiters = Waiters {
                connections,
                next: Default::default(),
            };
            Some((wait, Arc::new(waiters)))
        } else {
            None
        };
        Ok(Redis { inner, wait })
    }

    /// One connection of the configured mode.
    async fn open(config: &RedisConfig) -> redis::RedisResult<Inner> {
        let urls = config.urls();
        Ok(match config.mode {
            RedisMode::Single => {
                let client = redis::Client::open(urls[0])?;
                Inner::Single(ConnectionManager::new_with_config(client, manager_config()).await?)
            }
            RedisMode::Cluster => {
                // A failover takes the cluster's node timeout plus a slot
                // refresh; retries up to ~10 s ride through it, callers back
                // off and try again past that.
                let client = redis::cluster::ClusterClientBuilder::new(urls)
                    .retries(6)
                    .min_retry_wait(100)
                    .max_retry_wait(2000)
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(5))
                    .build()?;
                Inner::Cluster(client.get_async_connection().await?)
            }
            RedisMode::Sentinel => Inner::Sentinel(Arc::new(Sentinel::connect(config).await?)),
        })
    }

    /// Which kind of deployment this handle talks to.
    pub fn mode(&self) -> RedisMode {
        match self.inner {
            Inner::Single(_) => RedisMode::Single,
            Inner::Cluster(_) => RedisMode::Cluster,
            Inner::Sentinel(_) => RedisMode::Sentinel,
        }
    }
}

impl Inner {
    fn command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Inner::Single(manager) => manager.req_packed_command(cmd),
            Inner::Cluster(cluster) => cluster.req_packed_command(cmd),
            Inner::Sentinel(sentinel) => {
                let sentinel = sentinel.clone();
                Box::pin(async move {
                    let mut manager = sentinel.current();
                    let result = manager.req_packed_command(cmd).await;
                    sentinel.after(result).await
                })
            }
        }
    }

    /// `pipeline` as sent; with `wait`, its writes followed by a `WAIT`.
    fn commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
        wait: Option<Wait>,
    ) -> RedisFuture<'a, Vec<Value>> {
        let manager = match self {
            Inner::Cluster(cluster) => {
                let cluster = cluster.clone();
                return Box::pin(cluster::pipeline(cluster, pipeline, offset, count, wait));
            }
            Inner::Single(manager) => manager.clone(),
            Inner::Sentinel(sentinel) => sentinel.current(),
        };
        let sentinel = match self {
            Inner::Sentinel(sentinel) => Some(sentinel.clone()),
            _ => None,
        };
        Box::pin(async move {
            let result = send_then_wait(manager, pipeline, offset, count, wait).await;
            match sentinel {
                Some(sentinel) => sentinel.after(result).await,
                None => result,
            }
        })
    }
}

/// A pipeline to one server, then, with `wait`, a `WAIT` on the same
/// connection: appended to a plain pipeline, sent after a transaction.
async fn send_then_wait(
    mut manager: ConnectionManager,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
    wait: Option<Wait>,
) -> redis::RedisResult<Vec<Value>> {
    let Some(wait) = wait else {
        return manager.req_packed_commands(pipeline, offset, count).await;
    };
    if pipeline.is_transaction() {
        let values = manager.req_packed_commands(pipeline, offset, count).await?;
        let acked = manager.req_packed_command(&wait.cmd()).await?;
        wait.check(&acked)?;
        return Ok(values);
    }
    let waited = durable::pipeline_of(pipeline.cmd_iter(), Some(wait));
    let mut values = manager
        .req_packed_commands(&waited, 0, waited.len())
        .await?;
    let acked = values.pop().unwrap_or(Value::Nil);
    wait.check(&acked)?;
    Ok(values)
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Some((wait, waiters)) = self.wait.as_ref().filter(|_| durable::writes(cmd)) else {
            return self.inner.command(cmd);
        };
        let (wait, mut connection) = (*wait, waiters.take());
        Box::pin(async move {
            let pipeline = durable::pipeline_of([cmd], None);
            let mut values = connection.commands(&pipeline, 0, 1, Some(wait)).await?;
            Ok(values.pop().unwrap_or(Value::Nil))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Some((wait, waiters)) = self
            .wait
            .as_ref()
            .filter(|_| pipeline.cmd_iter().any(durable::writes))
        else {
            return self.inner.commands(pipeline, offset, count, None);
        };
        let (wait, mut connection) = (*wait, waiters.take());
        Box::pin(async move {
            connection
                .commands(pipeline, offset, count, Some(wait))
                .await
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(manager) => manager.get_db(),
            Inner::Cluster(cluster) => cluster.get_db(),
            Inner::Sentinel(sentinel) => sentinel.current().get_db(),
        }
    }
}
