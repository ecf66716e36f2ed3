//! Redis connection: one multiplexed connection manager per service, which
//! reconnects on its own after a Redis restart.

use redis::aio::ConnectionManager;

use crate::config::Config;

/// Redis could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}: {source}")]
pub struct RedisError {
    pub url: String,
    pub source: redis::RedisError,
}

/// Opens a connection manager to the configured Redis.
pub async fn connect(config: &Config) -> Result<ConnectionManager, RedisError> {
    let err = |source| RedisError {
        url: config.redis.url.clone(),
        source,
    };
    let client = redis::Client::open(config.redis.url.as_str()).map_err(err)?;
    // The default backoff multiplies by 100 per try (1 s, 100 s, …): after a
    // Redis restart every command would wait minutes for the reconnect.
    // Retry every 1-2 s instead; once the tries run out, the next command
    // starts another round.
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_factor(2)
        .set_max_delay(2000)
        .set_number_of_retries(10)
        .set_connection_timeout(std::time::Duration::from_secs(2))
        .set_response_timeout(std::time::Duration::from_secs(5));
    ConnectionManager::new_with_config(client, manager_config)
        .await
        .map_err(err)
}
