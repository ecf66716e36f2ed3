//! Per-test isolation on the shared NATS and Redis: a unique prefix for every
//! stream, consumer, bucket and key, removed again when the test ends.

use std::time::Duration;

use hookrelay_core::config::{token_sha256, AuthConfig, TokenConfig};
use hookrelay_core::Config;
use rand::distr::{Alphanumeric, SampleString};

/// One test's slice of NATS and Redis.
pub struct TestEnv {
    pub config: Config,
}

impl TestEnv {
    /// Bearer token seeing every tenant.
    pub const ADMIN_TOKEN: &'static str = "test-admin-token";
    /// Bearer token scoped to tenant `acme`.
    pub const ACME_TOKEN: &'static str = "test-acme-token";
    /// Bearer token scoped to tenant `globex`.
    pub const GLOBEX_TOKEN: &'static str = "test-globex-token";

    /// A config with a fresh prefix, ephemeral ports and short timeouts.
    /// `HOOKRELAY_TEST_NATS_URL` / `HOOKRELAY_TEST_REDIS_URL` override the
    /// local servers.
    pub fn new() -> Self {
        let mut config = Config::defaults();
        config.prefix = format!(
            "t{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 10)
                .to_ascii_lowercase()
        );
        if let Ok(url) = std::env::var("HOOKRELAY_TEST_NATS_URL") {
            config.nats.url = url;
        }
        if let Ok(url) = std::env::var("HOOKRELAY_TEST_REDIS_URL") {
            config.redis.url = url;
        }
        config.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
        config.server.http_listen = "127.0.0.1:0".parse().unwrap();
        config.shutdown_grace = Duration::from_secs(5);
        config.dispatcher.default_timeout = Duration::from_secs(2);
        config.dispatcher.ack_wait = Duration::from_secs(10);
        config.nats.ack_wait = Duration::from_secs(5);
        config.logs.fleet_interval = Duration::from_millis(200);
        config.dispatcher.allow_private = vec!["127.0.0.0/8".into()];
        // Tests of retries and crashes fail many first attempts in a burst
        // on purpose; circuits are tested where they set their own.
        config.dispatcher.circuit.open_after = 1_000_000;
        config.auth = AuthConfig {
            admin_token_sha256: token_sha256(Self::ADMIN_TOKEN),
            tokens: [("acme", Self::ACME_TOKEN), ("globex", Self::GLOBEX_TOKEN)]
                .into_iter()
                .map(|(tenant, token)| TokenConfig {
                    sha256: token_sha256(token),
                    tenant: tenant.into(),
                })
                .collect(),
            tokens_file: String::new(),
        };
        config.telemetry.level = "error".into();
        Self { config }
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestEnv {
    /// Deletes this test's streams and Redis keys, on a thread of its own so
    /// it works whatever runtime the test used.
    fn drop(&mut self) {
        let config = self.config.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async move {
                let work = async {
                    if let Ok(client) = async_nats::connect(config.nats.servers()).await {
                        let js = async_nats::jetstream::new(client);
                        hookrelay_core::nats::delete_streams(&js, &config).await;
                    }
                    if let Ok(client) = redis::Client::open(config.redis.url.as_str()) {
                        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                            let pattern = format!("{}:*", config.prefix);
                            let keys: Vec<String> = redis::cmd("KEYS")
                                .arg(&pattern)
                                .query_async(&mut conn)
                                .await
                                .unwrap_or_default();
                            if !keys.is_empty() {
                                let _: Result<(), _> =
                                    redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
            });
        });
        let _ = cleanup.join();
    }
}
