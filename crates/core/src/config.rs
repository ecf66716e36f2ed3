//! Layered configuration: built-in defaults, an optional TOML file, then
//! `HOOKRELAY_*` environment variables, checked by [`Config::validate`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};

use crate::names::Names;

/// The committed defaults, compiled into every binary.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// A configuration that could not be loaded or is not valid. Each says
/// what is wrong in one line (no source chain repeating it).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: {name} is not a setting{hint}")]
    UnknownVariable { name: String, hint: String },
    #[error("configuration: {file}: unknown key {key}{hint}")]
    UnknownKey {
        file: String,
        key: String,
        hint: String,
    },
    #[error("configuration: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Every setting of every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Hex SHA-256 of the admin token (sees every tenant).
    #[serde(default)]
    pub admin_token_sha256: String,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// A JSON file of more tokens, in the shape of `HOOKRELAY_AUTH__TOKENS`
    /// (`[{"sha256": "<hex>", "tenant": "acme"}]`); read at start and again
    /// on SIGHUP, so tokens rotate without a restart. Empty: none.
    #[serde(default)]
    pub tokens_file: String,
}

/// One token and what it may see.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// The tenant it is scoped to; `*` for admin.
    pub tenant: String,
}

/// The environment variable that carries `auth.tokens` as JSON: a list of
/// tables cannot be written as `HOOKRELAY_AUTH__TOKENS__0__...` in practice.
pub const TOKENS_VARIABLE: &str = "HOOKRELAY_AUTH__TOKENS";

/// What `auth.tokens` looks like as JSON, for error messages.
const TOKENS_JSON_SHAPE: &str =
    r#"a JSON array like [{"sha256": "<hex SHA-256 of the token>", "tenant": "acme"}]"#;

impl AuthConfig {
    /// Every (hash, tenant) pair of the configuration itself (not of
    /// `tokens_file`); tenant `None` for admin.
    pub fn entries(&self) -> Vec<(String, Option<String>)> {
        let mut entries: Vec<(String, Option<String>)> =
            self.tokens.iter().map(TokenConfig::entry).collect();
        if !self.admin_token_sha256.is_empty() {
            entries.push((self.admin_token_sha256.to_ascii_lowercase(), None));
        }
        entries
    }

    /// [`AuthConfig::entries`] and those of `tokens_file`, read now.
    pub fn all_entries(&self) -> Result<Vec<(String, Option<String>)>, ConfigError> {
        let mut entries = self.entries();
        entries.extend(self.read_tokens_file()?.iter().map(TokenConfig::entry));
        Ok(entries)
    }

    /// The tokens of `tokens_file` (none when it is unset), each checked;
    /// the error names the file and the entry.
    pub fn read_tokens_file(&self) -> Result<Vec<TokenConfig>, ConfigError> {
        if self.tokens_file.is_empty() {
            return Ok(Vec::new());
        }
        let invalid = |message: String| ConfigError::Invalid {
            field: "auth.tokens_file",
            message: format!("{}: {message}", self.tokens_file),
        };
        let text = std::fs::read_to_string(&self.tokens_file)
            .map_err(|error| invalid(format!("cannot read it: {error}")))?;
        parse_tokens(&text).map_err(invalid)
    }
}

/// `auth.tokens` written as JSON, each entry checked.
fn parse_tokens(json: &str) -> Result<Vec<TokenConfig>, String> {
    let tokens: Vec<TokenConfig> = serde_json::from_str(json)
        .map_err(|error| format!("is not {TOKENS_JSON_SHAPE}: {error}"))?;
    for (i, token) in tokens.iter().enumerate() {
        token
            .check()
            .map_err(|message| format!("[{i}]: {message}"))?;
    }
    Ok(tokens)
}

impl TokenConfig {
    fn entry(&self) -> (String, Option<String>) {
        (
            self.sha256.to_ascii_lowercase(),
            (self.tenant != "*").then(|| self.tenant.clone()),
        )
    }

    /// Whether the hash is a SHA-256 in hex and the tenant a tenant name
    /// (or `*`).
    pub fn check(&self) -> Result<(), String> {
        check_token_hash(&self.sha256)?;
        if self.tenant != "*" {
            crate::event::check_token_path(&self.tenant, false)
                .map_err(|message| format!("tenant {:?}: {message}", self.tenant))?;
        }
        Ok(())
    }
}

fn check_token_hash(hash: &str) -> Result<(), String> {
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("token hashes are 64 hex characters (sha256sum of the token)".into());
    }
    Ok(())
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub format: LogFormat,
    pub level: String,
    /// OTLP/gRPC collector to export spans to (`http://host:4317`); empty:
    /// no export (the default).
    pub otlp_endpoint: String,
    /// How long one export to the collector may take.
    #[serde(with = "humantime_serde")]
    pub otlp_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_event_bytes: usize,
    pub max_response_body_bytes: usize,
    pub max_subscriptions_per_tenant: usize,
    /// Requests one tenant may have in flight on one dispatcher, across
    /// its subscriptions; also bounds what one subscription may ask for.
    pub max_in_flight_per_tenant: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestorConfig {
    pub fetch_batch: usize,
    /// Where the dispatcher runs in the same process, send first attempts
    /// straight to it instead of through DELIVERIES.
    pub handoff: bool,
    /// Events matching more subscriptions than this go through DELIVERIES.
    pub handoff_max_fanout: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    pub fetch_batch: usize,
    pub concurrency: usize,
    pub default_max_in_flight: u32,
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// CIDRs delivered to although private (loopback, RFC 1918, ...): a
    /// list, or one string of comma-separated CIDRs (handy in the env).
    #[serde(default, deserialize_with = "list_or_comma_separated")]
    pub allow_private: Vec<String>,
    /// Endpoint health thresholds (see `circuit.rs`).
    pub circuit: crate::circuit::CircuitLimits,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub fleet_interval: Duration,
}

/// A list, or a string of comma-separated items (`"a, b"` is `["a", "b"]`).
fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    match ListOrString::deserialize(deserializer) {
        Ok(ListOrString::List(list)) => Ok(list),
        Ok(ListOrString::String(text)) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        Err(_) => Err(serde::de::Error::custom(
            "expected a list of CIDRs or one string of comma-separated CIDRs, e.g. \"127.0.0.0/8,::1/128\"",
        )),
    }
}

/// `HOOKRELAY_*` variables that are not settings: the config file's path,
/// and the test suite's server addresses.
const NOT_SETTINGS: &[&str] = &["HOOKRELAY_CONFIG"];
const NOT_SETTINGS_PREFIXES: &[&str] = &["HOOKRELAY_TEST_"];

/// Every key of the configuration, dotted (`dispatcher.circuit.open_after`),
/// tables included.
fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, dict: &figment::value::Dict, keys: &mut Vec<String>) {
        for (key, value) in dict {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let figment::value::Value::Dict(_, inner) = value {
                walk(&path, inner, keys);
            }
            keys.push(path);
        }
    }
    let mut keys = Vec::new();
    let data = Figment::from(figment::providers::Serialized::defaults(Config::defaults()))
        .data()
        .unwrap_or_default();
    for dict in data.values() {
        walk("", dict, &mut keys);
    }
    keys
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(previous + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

/// The known key closest to `key`, if close enough to be a misspelling.
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(key, k), k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn env_name(key: &str) -> String {
    format!("HOOKRELAY_{}", key.to_ascii_uppercase().replace('.', "__"))
}

/// Refuses a `HOOKRELAY_*` variable that names no setting: a misspelt one
/// would otherwise be ignored without a word.
fn check_env_names(
    names: impl IntoIterator<Item = String>,
    known: &[String],
) -> Result<(), ConfigError> {
    for name in names {
        let Some(rest) = name.strip_prefix("HOOKRELAY_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&name.as_str())
            || NOT_SETTINGS_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if known.contains(&key) {
            continue;
        }
        let hint = match closest(&key, known) {
            Some(close) => format!(" (did you mean {}?)", env_name(close)),
            None => format!(
                " (settings are HOOKRELAY_ and a key of crates/core/defaults.toml, nested keys joined by __, e.g. {})",
                env_name("dispatcher.concurrency")
            ),
        };
        return Err(ConfigError::UnknownVariable { name, hint });
    }
    Ok(())
}

/// Refuses a key of `file` that is no setting (tables of lists, such as
/// `auth.tokens`, are checked by their own types).
fn check_file_keys(file: &Path, known: &[String]) -> Result<(), ConfigError> {
    fn walk(
        prefix: &str,
        dict: &figment::value::Dict,
        known: &[String],
        unknown: &mut Option<String>,
    ) {
        for (key, value) in dict {
            if unknown.is_some() {
                return;
            }
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if !known.contains(&path) {
                *unknown = Some(path);
                return;
            }
            if let figment::value::Value::Dict(_, inner) = value {
                walk(&path, inner, known, unknown);
            }
        }
    }
    let data = Figment::from(Toml::file_exact(file))
        .data()
        .map_err(|e| ConfigError::Load(one_line(e)))?;
    let mut unknown = None;
    for dict in data.values() {
        walk("", dict, known, &mut unknown);
    }
    match unknown {
        None => Ok(()),
        Some(key) => Err(ConfigError::UnknownKey {
            file: file.display().to_string(),
            hint: closest(&key, known)
                .map(|close| format!(" (did you mean {close}?)"))
                .unwrap_or_default(),
            key,
        }),
    }
}

/// figment's errors, each on one line with what a value should look like.
fn one_line(error: figment::Error) -> String {
    use figment::error::Kind;
    error
        .into_iter()
        .map(|mut e| {
            if let Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) =
                &e.kind
            {
                if expected.contains("duration") {
                    e.kind = Kind::Message(format!(
                        "expected a duration with a unit, e.g. \"5s\", \"1m\" or \"1h30m\", found {actual}"
                    ));
                }
            }
            let key = e.path.join(".");
            let from_env = e
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            let file = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| s.to_string());
            match (key.is_empty(), from_env, file) {
                (true, _, _) => e.kind.to_string(),
                (false, true, _) => format!("{}: {}", env_name(&key), e.kind),
                (false, false, Some(file)) => format!("{file}: {key}: {}", e.kind),
                (false, false, None) => format!("{key}: {}", e.kind),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    /// Unknown keys (in the file) and `HOOKRELAY_*` variables (in the
    /// environment) are refused, naming them.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let known = known_keys();
        check_env_names(
            std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
            &known,
        )?;
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            check_file_keys(file, &known)?;
            figment = figment.merge(Toml::file_exact(file));
        }
        let settings = Env::prefixed("HOOKRELAY_")
            .filter(|key| {
                let name = format!("HOOKRELAY_{}", key.as_str().to_ascii_uppercase());
                !NOT_SETTINGS.contains(&name.as_str())
                    && !NOT_SETTINGS_PREFIXES.iter().any(|p| name.starts_with(p))
                    && name != TOKENS_VARIABLE
            })
            .split("__");
        let mut figment = figment.merge(settings);
        if let Ok(json) = std::env::var(TOKENS_VARIABLE) {
            let tokens = parse_tokens(&json).map_err(|message| ConfigError::Invalid {
                field: TOKENS_VARIABLE,
                message,
            })?;
            figment = figment.merge(figment::providers::Serialized::default(
                "auth.tokens",
                tokens,
            ));
        }
        Self::extract(figment)
    }

    /// Defaults only: the base that tests adjust field by field.
    pub fn defaults() -> Self {
        Self::extract(Figment::from(Toml::string(DEFAULTS))).expect("committed defaults are valid")
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(one_line(e)))?;
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
        if !self.telemetry.otlp_endpoint.is_empty() {
            match url::Url::parse(&self.telemetry.otlp_endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                _ => {
                    return invalid(
                        "telemetry.otlp_endpoint",
                        &format!(
                            "{:?} is not an http(s) URL, e.g. \"http://otel-collector:4317\"",
                            self.telemetry.otlp_endpoint
                        ),
                    )
                }
            }
            if self.telemetry.otlp_timeout.is_zero() {
                return invalid("telemetry.otlp_timeout", "must be positive");
            }
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
        if !self.auth.admin_token_sha256.is_empty() {
            if let Err(message) = check_token_hash(&self.auth.admin_token_sha256) {
                return invalid("auth.admin_token_sha256", &message);
            }
        }
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if let Err(message) = token.check() {
                return invalid("auth.tokens", &format!("[{i}]: {message}"));
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
    fn tokens_come_as_json_from_the_environment_and_from_a_file() {
        figment::Jail::expect_with(|jail| {
            let acme = token_sha256("acme-token");
            let globex = token_sha256("globex-token");
            jail.set_env(
                TOKENS_VARIABLE,
                format!(r#"[{{"sha256": "{acme}", "tenant": "acme"}}]"#),
            );
            jail.create_file(
                "tokens.json",
                &format!(r#"[{{"sha256": "{globex}", "tenant": "globex"}}, {{"sha256": "{}", "tenant": "*"}}]"#, token_sha256("root")),
            )?;
            jail.set_env("HOOKRELAY_AUTH__TOKENS_FILE", "tokens.json");
            let config = Config::load(None).unwrap();
            assert_eq!(config.auth.entries(), [(acme.clone(), Some("acme".into()))]);
            assert_eq!(
                config.auth.all_entries().unwrap(),
                [
                    (acme, Some("acme".into())),
                    (globex.clone(), Some("globex".into())),
                    (token_sha256("root"), None)
                ]
            );

            jail.create_file(
                "tokens.json",
                &format!(r#"[{{"sha256": "{globex}", "tenant": "a.b"}}]"#),
            )?;
            let error = config.auth.all_entries().unwrap_err().to_string();
            assert!(
                error.starts_with(
                    r#"configuration: auth.tokens_file: tokens.json: [0]: tenant "a.b": "#
                ),
                "{error}"
            );
            jail.create_file("tokens.json", r#"{"sha256": "x"}"#)?;
            let error = config.auth.all_entries().unwrap_err().to_string();
            assert!(
                error.starts_with(r#"configuration: auth.tokens_file: tokens.json: is not a JSON array like [{"sha256""#),
                "{error}"
            );

            jail.set_env(TOKENS_VARIABLE, r#"[{sha256 = "x", tenant = "acme"}]"#);
            let error = Config::load(None).unwrap_err().to_string();
            assert!(
                error
                    .starts_with("configuration: HOOKRELAY_AUTH__TOKENS: is not a JSON array like"),
                "{error}"
            );
            jail.set_env(TOKENS_VARIABLE, r#"[{"sha256": "abc", "tenant": "acme"}]"#);
            let error = Config::load(None).unwrap_err().to_string();
            assert_eq!(
                error,
                "configuration: HOOKRELAY_AUTH__TOKENS: [0]: token hashes are 64 hex characters (sha256sum of the token)"
            );
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
            jail.set_env("HOOKRELAY_DISPATCHER__ACK_WAIT", "30s");
            jail.set_env("HOOKRELAY_TELEMETRY__OTLP_ENDPOINT", "otel-collector:4317");
            let err = Config::load(None).unwrap_err().to_string();
            assert_eq!(
                err,
                r#"configuration: telemetry.otlp_endpoint: "otel-collector:4317" is not an http(s) URL, e.g. "http://otel-collector:4317""#
            );
            jail.set_env(
                "HOOKRELAY_TELEMETRY__OTLP_ENDPOINT",
                "http://otel-collector:4317",
            );
            assert!(Config::load(None).is_ok());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKRELAY_CONFIG", "ignored.toml");
            jail.set_env("HOOKRELAY_TEST_NATS_URL", "nats://127.0.0.1:1");
            assert!(Config::load(None).is_ok());
            jail.set_env("HOOKRELAY_DISPACHER__CONCURRENCY", "8");
            assert_eq!(
                Config::load(None).unwrap_err().to_string(),
                "configuration: HOOKRELAY_DISPACHER__CONCURRENCY is not a setting (did you mean HOOKRELAY_DISPATCHER__CONCURRENCY?)"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKRELAY_NOTHING_LIKE_IT", "1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "configuration: HOOKRELAY_NOTHING_LIKE_IT is not a setting (settings are"
                ),
                "{err}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            // Tables, and keys of types defined elsewhere, are known.
            jail.set_env("HOOKRELAY_DISPATCHER__CIRCUIT__OPEN_AFTER", "20");
            assert_eq!(
                Config::load(None).unwrap().dispatcher.circuit.open_after,
                20
            );
            jail.create_file(
                "hr.toml",
                "[dispatcher]\nconcurency = 8\n[dispatcher.circuit]\nopen_after = 5",
            )?;
            assert_eq!(
                Config::load(Some(Path::new("hr.toml"))).unwrap_err().to_string(),
                "configuration: hr.toml: unknown key dispatcher.concurency (did you mean dispatcher.concurrency?)"
            );
            jail.create_file("hr.toml", "[dispatcher.circuit]\nopen_aftr = 5")?;
            let err = Config::load(Some(Path::new("hr.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("unknown key dispatcher.circuit.open_aftr"),
                "{err}"
            );
            jail.create_file(
                "hr.toml",
                "[auth]\ntokens = [{ sha256 = \"x\", tenant = \"a\", scope = \"y\" }]",
            )?;
            let err = Config::load(Some(Path::new("hr.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("scope"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn values_say_what_they_should_look_like() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKRELAY_SHUTDOWN_GRACE", "5");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err == "configuration: HOOKRELAY_SHUTDOWN_GRACE: expected a duration with a unit, e.g. \"5s\", \"1m\" or \"1h30m\", found unsigned int `5`",
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
            jail.set_env("HOOKRELAY_SHUTDOWN_GRACE", "5s");
            jail.set_env("HOOKRELAY_DISPATCHER__ALLOW_PRIVATE", "127.0.0.0/8");
            assert_eq!(
                Config::load(None).unwrap().dispatcher.allow_private,
                ["127.0.0.0/8"]
            );
            jail.set_env(
                "HOOKRELAY_DISPATCHER__ALLOW_PRIVATE",
                "127.0.0.0/8, ::1/128",
            );
            assert_eq!(
                Config::load(None).unwrap().dispatcher.allow_private,
                ["127.0.0.0/8", "::1/128"]
            );
            Ok(())
        });
        // One line, not repeated under "Caused by:".
        let error = ConfigError::Load("x".into());
        assert!(std::error::Error::source(&error).is_none());
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
