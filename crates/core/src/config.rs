//! Layered configuration: built-in defaults, an optional TOML file, then
//! `HOOKRELAY_*` environment variables, checked by [`Config::validate`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::names::Names;

/// The committed defaults, compiled into every binary.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Every setting of every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub prefix: String,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub limits: LimitsConfig,
    pub ingestor: IngestorConfig,
    pub dispatcher: DispatcherConfig,
    pub logs: LogsConfig,
    pub auth: AuthConfig,
}

/// Bearer tokens of the gRPC API, hashed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthConfig {
    /// Hex SHA-256 of the admin token (sees every tenant).
    #[serde(default)]
    pub admin_token_sha256: String,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// One token and what it may see.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenConfig {
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// The tenant it is scoped to; `*` for admin.
    pub tenant: String,
}

impl AuthConfig {
    /// Every (hash, tenant) pair; tenant `None` for admin.
    pub fn entries(&self) -> Vec<(String, Option<String>)> {
        let mut entries: Vec<(String, Option<String>)> = self
            .tokens
            .iter()
            .map(|t| {
                (
                    t.sha256.to_ascii_lowercase(),
                    (t.tenant != "*").then(|| t.tenant.clone()),
                )
            })
            .collect();
        if !self.admin_token_sha256.is_empty() {
            entries.push((self.admin_token_sha256.to_ascii_lowercase(), None));
        }
        entries
    }
}

impl NatsConfig {
    /// The servers of `url`, as a client connects to them.
    pub fn servers(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// The hex SHA-256 of a token, as `auth` stores it.
pub fn token_sha256(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NatsConfig {
    /// One server, or the servers of a cluster comma-separated
    /// (`nats://a:4222,nats://b:4222,nats://c:4222`).
    pub url: String,
    pub replicas: usize,
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub attempts_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub dlq_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisConfig {
    /// One server (`single`), or comma-separated: some nodes of a cluster
    /// (`cluster`, the rest are discovered), the Sentinels (`sentinel`).
    pub url: String,
    #[serde(default)]
    pub mode: RedisMode,
    /// The master's name in Sentinel (`sentinel` mode).
    #[serde(default = "default_sentinel_master")]
    pub sentinel_master: String,
    /// Replicas that must have each write before it counts (0: the
    /// master's acknowledgement is enough; see `redis::durable`).
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long a write waits for those replicas.
    #[serde(with = "humantime_serde", default = "default_wait_timeout")]
    pub wait_timeout: Duration,
}

fn default_wait_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_sentinel_master() -> String {
    "mymaster".to_owned()
}

/// How Redis is deployed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server (with or without replicas nobody fails over to).
    #[default]
    Single,
    /// A Redis Cluster.
    Cluster,
    /// A master and replicas watched by Sentinels.
    Sentinel,
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

impl RedisConfig {
    /// The URLs of `url`, in order.
    pub fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerConfig {
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelemetryConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LimitsConfig {
    pub max_event_bytes: usize,
    pub max_response_body_bytes: usize,
    pub max_subscriptions_per_tenant: usize,
    /// Requests one tenant may have in flight on one dispatcher, across
    /// its subscriptions; also bounds what one subscription may ask for.
    pub max_in_flight_per_tenant: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestorConfig {
    pub fetch_batch: usize,
    /// Where the dispatcher runs in the same process, send first attempts
    /// straight to it instead of through DELIVERIES.
    pub handoff: bool,
    /// Events matching more subscriptions than this go through DELIVERIES.
    pub handoff_max_fanout: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DispatcherConfig {
    pub fetch_batch: usize,
    pub concurrency: usize,
    pub default_max_in_flight: u32,
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// CIDRs delivered to although private (loopback, RFC 1918, ...).
    #[serde(default)]
    pub allow_private: Vec<String>,
    /// Endpoint health thresholds (see `circuit.rs`).
    pub circuit: crate::circuit::CircuitLimits,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsConfig {
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub fleet_interval: Duration,
}

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        Self::extract(figment.merge(Env::prefixed("HOOKRELAY_").split("__")))
    }

    /// Defaults only: the base that tests adjust field by field.
    pub fn defaults() -> Self {
        Self::extract(Figment::from(Toml::string(DEFAULTS))).expect("committed defaults are valid")
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot, naming the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if let Err(message) = Names::check_prefix(&self.prefix) {
            return invalid("prefix", &message);
        }
        for server in self.nats.servers() {
            if let Err(error) = server.parse::<async_nats::ServerAddr>() {
                return invalid("nats.url", &format!("{server:?}: {error}"));
            }
        }
        if self.nats.servers().is_empty() {
            return invalid("nats.url", "is required");
        }
        let redis_urls = self.redis.urls();
        if redis_urls.is_empty() {
            return invalid("redis.url", "is required");
        }
        if self.redis.mode == RedisMode::Single && redis_urls.len() > 1 {
            return invalid(
                "redis.url",
                "names several servers: set redis.mode to \"cluster\" or \"sentinel\"",
            );
        }
        for url in &redis_urls {
            if let Err(error) = redis::IntoConnectionInfo::into_connection_info(*url) {
                return invalid("redis.url", &format!("{url:?}: {error}"));
            }
        }
        if self.redis.wait_replicas > 0 && self.redis.wait_timeout.is_zero() {
            return invalid(
                "redis.wait_timeout",
                "must be positive when redis.wait_replicas is set",
            );
        }
        if self.redis.mode == RedisMode::Sentinel && self.redis.sentinel_master.is_empty() {
            return invalid("redis.sentinel_master", "is required in sentinel mode");
        }
        if self.nats.replicas == 0 || self.nats.replicas > 5 {
            return invalid("nats.replicas", "must be between 1 and 5");
        }
        if self.nats.ack_wait < Duration::from_secs(1) {
            return invalid("nats.ack_wait", "must be at least 1s");
        }
        if self.limits.max_event_bytes == 0 {
            return invalid("limits.max_event_bytes", "must be positive");
        }
        if self.ingestor.fetch_batch == 0 || self.dispatcher.fetch_batch == 0 {
            return invalid("fetch_batch", "must be positive");
        }
        if self.dispatcher.concurrency == 0 {
            return invalid("dispatcher.concurrency", "must be positive");
        }
        let tenant_cap = self.limits.max_in_flight_per_tenant as usize;
        if tenant_cap == 0 || tenant_cap > self.dispatcher.concurrency / 2 {
            return invalid(
                "limits.max_in_flight_per_tenant",
                "must be between 1 and half of dispatcher.concurrency, so that one tenant cannot hold every request slot",
            );
        }
        if self.dispatcher.default_max_in_flight > self.limits.max_in_flight_per_tenant {
            return invalid(
                "dispatcher.default_max_in_flight",
                "must not exceed limits.max_in_flight_per_tenant",
            );
        }
        let circuit = &self.dispatcher.circuit;
        if circuit.failing_after == 0 {
            return invalid("dispatcher.circuit.failing_after", "must be positive");
        }
        if circuit.open_after < circuit.failing_after {
            return invalid(
                "dispatcher.circuit.open_after",
                "must be at least dispatcher.circuit.failing_after",
            );
        }
        if circuit.probe_after.is_zero() || circuit.probe_max < circuit.probe_after {
            return invalid(
                "dispatcher.circuit.probe_after",
                "must be positive and at most dispatcher.circuit.probe_max",
            );
        }
        if self.dispatcher.default_max_in_flight == 0 {
            return invalid("dispatcher.default_max_in_flight", "must be positive");
        }
        if self.dispatcher.default_timeout.is_zero() {
            return invalid("dispatcher.default_timeout", "must be positive");
        }
        if self.logs.retention > self.nats.attempts_max_age {
            return invalid(
                "logs.retention",
                "must not exceed nats.attempts_max_age: the attempt records live in that stream",
            );
        }
        for (hash, tenant) in self.auth.entries() {
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return invalid(
                    "auth",
                    "token hashes are 64 hex characters (sha256sum of the token)",
                );
            }
            if let Some(tenant) = tenant {
                if let Err(message) = crate::event::check_token_path(&tenant, false) {
                    return invalid("auth.tokens.tenant", &message);
                }
            }
        }
        if self.dispatcher.ack_wait <= self.dispatcher.default_timeout {
            return invalid(
                "dispatcher.ack_wait",
                "must be longer than dispatcher.default_timeout, or slow deliveries are sent twice",
            );
        }
        Ok(())
    }

    /// Names of every NATS and Redis resource of this installation.
    pub fn names(&self) -> Names {
        Names::new(&self.prefix)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_local() {
        let config = Config::defaults();
        assert_eq!(config.prefix, "hookrelay");
        assert_eq!(config.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(config.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(config.limits.max_response_body_bytes, 64 * 1024);
    }

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hr.toml",
                "prefix = \"fromfile\"\n[nats]\nurl = \"nats://127.0.0.1:1\"",
            )?;
            jail.set_env("HOOKRELAY_NATS__URL", "nats://127.0.0.1:2");
            jail.set_env(
                "HOOKRELAY_DISPATCHER__ALLOW_PRIVATE",
                r#"["127.0.0.0/8", "::1/128"]"#,
            );
            let config = Config::load(Some(Path::new("hr.toml"))).unwrap();
            assert_eq!(config.prefix, "fromfile");
            assert_eq!(config.nats.url, "nats://127.0.0.1:2");
            assert_eq!(config.dispatcher.allow_private, ["127.0.0.0/8", "::1/128"]);
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKRELAY_PREFIX", "bad.prefix");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("prefix"), "{err}");
            jail.set_env("HOOKRELAY_PREFIX", "ok");
            jail.set_env("HOOKRELAY_DISPATCHER__ACK_WAIT", "1s");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("dispatcher.ack_wait"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn redis_modes_take_their_servers() {
        let mut config = Config::defaults();
        assert_eq!(config.redis.mode, RedisMode::Single);
        config.redis.url = "redis://127.0.0.1:7000,redis://127.0.0.1:7001".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("redis.url") && err.contains("redis.mode"),
            "{err}"
        );
        config.redis.mode = RedisMode::Cluster;
        assert!(config.validate().is_ok());
        assert_eq!(config.redis.urls().len(), 2);
        config.redis.url = "redis://127.0.0.1:7000,http://x".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("redis.url") && err.contains("http://x"),
            "{err}"
        );
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKRELAY_REDIS__MODE", "sentinel");
            jail.set_env("HOOKRELAY_REDIS__URL", "redis://127.0.0.1:26379");
            let config = Config::load(None).unwrap();
            assert_eq!(config.redis.mode, RedisMode::Sentinel);
            assert_eq!(config.redis.sentinel_master, "mymaster");
            Ok(())
        });
    }

    #[test]
    fn a_cluster_is_a_comma_separated_list_of_servers() {
        let mut config = Config::defaults();
        config.nats.url = "nats://127.0.0.1:4222, nats://127.0.0.1:4223,".into();
        assert_eq!(
            config.nats.servers(),
            ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        assert!(config.validate().is_ok());
        config.nats.url = "nats://127.0.0.1:4222,nats://127.0.0.1:port".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("nats.url") && err.contains("127.0.0.1:port"),
            "{err}"
        );
    }
}
