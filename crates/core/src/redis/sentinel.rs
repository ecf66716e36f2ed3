//! Sentinel mode: the master that Sentinels name, found again after a
//! failover.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ErrorKind, IntoConnectionInfo, Value};

use super::manager_config;
use crate::config::RedisConfig;

/// The master that Sentinels name.
pub(super) struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    master: RwLock<(String, ConnectionManager)>,
    last_lookup: std::sync::Mutex<Instant>,
}

impl Sentinel {
    pub(super) async fn connect(config: &RedisConfig) -> redis::RedisResult<Self> {
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

    pub(super) fn current(&self) -> ConnectionManager {
        self.master.read().expect("sentinel master lock").1.clone()
    }

    /// After a command whose failure may mean the master moved (the old
    /// one refuses writes, or is gone), asks the Sentinels again, at most
    /// once a second; the command's own result is returned as it was, and
    /// the caller's next try goes to the new master. A refusal comes back
    /// as an error reply inside an `Ok`, not as an `Err`.
    pub(super) async fn after<T: Reply>(
        &self,
        result: redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let moved = match &result {
            Ok(reply) => reply.refused(),
            Err(error) => {
                error.kind() == ErrorKind::ReadOnly
                    || error.kind() == ErrorKind::MasterDown
                    || error.is_io_error()
                    || error.is_connection_refusal()
                    || error.is_connection_dropped()
                    || error.is_timeout()
                    // A WAIT the demoted master, now a replica, refused.
                    || error.to_string().contains("replica instances")
            }
        };
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

/// Replies that say the server is no longer the master.
pub(super) trait Reply {
    fn refused(&self) -> bool;
}

impl Reply for Value {
    fn refused(&self) -> bool {
        matches!(self, Value::ServerError(error)
            if matches!(error.code(), "READONLY" | "MASTERDOWN"))
    }
}

impl Reply for Vec<Value> {
    fn refused(&self) -> bool {
        self.iter().any(Reply::refused)
    }
}
