//! Redis connections: one handle per service to a single server, a Redis
//! Cluster, or the master a set of Sentinels names (`redis.mode`). Each
//! reconnects on its own; every caller holds a [`Redis`] and never knows
//! which kind it has.
//!
//! On a cluster a script or a transaction must touch one hash slot, which
//! the key names guarantee (`Names::redis_tagged`); a plain pipeline may
//! span slots, and is split here into one pipeline per slot, sent
//! concurrently, its replies put back in order.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Arg, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

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
pub struct Redis(Inner);

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
// reconnect. Retry every 1-2 s instead; once the tries run out, the next
// command starts another round.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_factor(2)
        .set_max_delay(2000)
        .set_number_of_retries(10)
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
        let urls = config.urls();
        match config.mode {
            RedisMode::Single => {
                let client = redis::Client::open(urls[0]).map_err(err)?;
                let manager = ConnectionManager::new_with_config(client, manager_config())
                    .await
                    .map_err(err)?;
                Ok(Redis(Inner::Single(manager)))
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
                    .build()
                    .map_err(err)?;
                let connection = client.get_async_connection().await.map_err(err)?;
                Ok(Redis(Inner::Cluster(connection)))
            }
            RedisMode::Sentinel => {
                let sentinel = Sentinel::connect(config).await.map_err(err)?;
                Ok(Redis(Inner::Sentinel(Arc::new(sentinel))))
            }
        }
    }

    /// Which kind of deployment this handle talks to.
    pub fn mode(&self) -> RedisMode {
        match self.0 {
            Inner::Single(_) => RedisMode::Single,
            Inner::Cluster(_) => RedisMode::Cluster,
            Inner::Sentinel(_) => RedisMode::Sentinel,
        }
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
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

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(cluster_pipeline(cluster, pipeline, offset, count))
            }
            Inner::Sentinel(sentinel) => {
                let sentinel = sentinel.clone();
                Box::pin(async move {
                    let mut manager = sentinel.current();
                    let result = manager.req_packed_commands(pipeline, offset, count).await;
                    sentinel.after(result).await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Single(manager) => manager.get_db(),
            Inner::Cluster(cluster) => cluster.get_db(),
            Inner::Sentinel(sentinel) => sentinel.current().get_db(),
        }
    }
}

/// The hash slot of `key` (CRC16 of its `{tag}` if it has a non-empty one).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// Commands without a key among those hookrelay sends.
const KEYLESS: [&[u8]; 9] = [
    b"PING", b"TIME", b"INFO", b"SCRIPT", b"ECHO", b"DBSIZE", b"CLUSTER", b"CONFIG", b"WAIT",
];

/// The key a command is routed by: its first argument, or for a script
/// its first key; `None` for commands without a key.
fn routing_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        Arg::Simple(bytes) => Some(bytes),
        Arg::Cursor => None,
    });
    let name = args.next()?;
    let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
    if is(b"EVAL") || is(b"EVALSHA") || is(b"FCALL") {
        let _script = args.next()?;
        let keys = args.next()?;
        return (keys != b"0").then(|| args.next()).flatten();
    }
    if KEYLESS.iter().any(|keyless| is(keyless)) {
        return None;
    }
    args.next()
}

/// A pipeline on a cluster: a transaction must stay in one slot (refused
/// here, naming its keys, before the cluster refuses it less clearly); a
/// plain pipeline goes as one pipeline per slot.
async fn cluster_pipeline(
    cluster: ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let slots: Vec<Option<u16>> = commands
        .iter()
        .map(|cmd| routing_key(cmd).map(key_slot))
        .collect();
    let mut distinct: Vec<u16> = slots.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= 1 {
        let mut cluster = cluster;
        return cluster.req_packed_commands(pipeline, offset, count).await;
    }
    if pipeline.is_transaction() {
        let keys: Vec<String> = commands
            .iter()
            .filter_map(|cmd| routing_key(cmd))
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect();
        return Err(RedisError::from((
            ErrorKind::CrossSlot,
            "a transaction spans several hash slots",
            keys.join(", "),
        )));
    }
    // Keyless commands ride with the first slot's pipeline.
    let mut groups: Vec<(Pipeline, Vec<usize>)> = distinct
        .iter()
        .map(|_| (Pipeline::new(), Vec::new()))
        .collect();
    for (index, (cmd, slot)) in commands.iter().zip(&slots).enumerate() {
        let group = slot.map_or(0, |slot| {
            distinct
                .binary_search(&slot)
                .expect("every slot is in distinct")
        });
        groups[group].0.add_command((*cmd).clone());
        groups[group].1.push(index);
    }
    let replies = try_join_all(groups.into_iter().map(|(sub, indexes)| {
        let mut cluster = cluster.clone();
        async move {
            let values = cluster.req_packed_commands(&sub, 0, sub.len()).await?;
            Ok::<_, RedisError>((indexes, values))
        }
    }))
    .await?;
    let mut ordered = vec![Value::Nil; commands.len()];
    for (indexes, values) in replies {
        for (index, value) in indexes.into_iter().zip(values) {
            ordered[index] = value;
        }
    }
    Ok(ordered)
}

/// The master that Sentinels name, found again after a failover.
struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    master: RwLock<(String, ConnectionManager)>,
    last_lookup: std::sync::Mutex<Instant>,
}

impl Sentinel {
    async fn connect(config: &RedisConfig) -> redis::RedisResult<Self> {
        let urls = config.urls();
        // The database and credentials of the first URL are the master's too.
        let first = urls[0].into_connection_info()?;
        let node = SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(first.redis.clone()),
        };
        let mut client = SentinelClient::build(
            urls,
            config.sentinel_master.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        let (address, manager) = Self::master_of(&mut client).await?;
        Ok(Self {
            client: tokio::sync::Mutex::new(client),
            master: RwLock::new((address, manager)),
            last_lookup: std::sync::Mutex::new(Instant::now()),
        })
    }

    async fn master_of(
        client: &mut SentinelClient,
    ) -> redis::RedisResult<(String, ConnectionManager)> {
        let master = client.async_get_client().await?;
        let address = master.get_connection_info().addr.to_string();
        // No reconnect round: with ten tries every command to a dead master
        // waited ~20-30 s for the round to give up before `after` could ask
        // the Sentinels, long after they had promoted a replica. A failed
        // reconnect is an error at once; the Sentinels say where to go next.
        let config = manager_config().set_number_of_retries(0);
        let manager = ConnectionManager::new_with_config(master, config).await?;
        Ok((address, manager))
    }

    fn current(&self) -> ConnectionManager {
        self.master.read().expect("sentinel master lock").1.clone()
    }

    /// After a failed command whose failure may mean the master moved (the
    /// old one refuses writes, or is gone), asks the Sentinels again, at
    /// most once a second; the command's own result is returned as it was,
    /// and the caller's next try goes to the new master.
    async fn after<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        let Err(error) = &result else {
            return result;
        };
        let moved = error.kind() == ErrorKind::ReadOnly
            || error.kind() == ErrorKind::MasterDown
            || error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
            || error.is_timeout();
        if !moved {
            return result;
        }
        {
            let mut last = self.last_lookup.lock().expect("sentinel lookup lock");
            if last.elapsed() < Duration::from_secs(1) {
                return result;
            }
            *last = Instant::now();
        }
        let mut client = self.client.lock().await;
        match Self::master_of(&mut client).await {
            Ok((address, manager)) => {
                let mut master = self.master.write().expect("sentinel master lock");
                if master.0 != address {
                    tracing::warn!(from = %master.0, to = %address, "redis master moved (sentinel)");
                    *master = (address, manager);
                }
            }
            Err(lookup) => {
                tracing::warn!(error = %lookup, "cannot ask the sentinels for the redis master")
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification's examples.
        // CRC16 of "123456789" is 0x31C3, already below 16384.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn commands_route_by_their_key() {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("k").arg(1).arg("m");
        assert_eq!(routing_key(&zadd), Some(&b"k"[..]));
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(2).arg("first").arg("second");
        assert_eq!(routing_key(&eval), Some(&b"first"[..]));
        let mut none = redis::cmd("EVALSHA");
        none.arg("abc").arg(0).arg("x");
        assert_eq!(routing_key(&none), None);
        assert_eq!(routing_key(&redis::cmd("PING")), None);
    }
}
