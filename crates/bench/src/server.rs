//! hookrelay as a child process (this binary's hidden `serve` command, which
//! runs exactly what the `hookrelay` binary runs), on a fresh prefix and free
//! loopback ports, with its CPU time and peak RSS read from `/proc`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hookrelay_core::config::token_sha256;
use hookrelay_core::Config;
use rand::distr::{Alphanumeric, SampleString};

use crate::Opts;

/// Bearer token of the benchmark's own API calls.
pub const ADMIN_TOKEN: &str = "hookrelay-bench-admin";

/// A running hookrelay and the config it runs with.
pub struct Hookrelay {
    child: tokio::process::Child,
    pid: i32,
    pub config: Config,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Hookrelay {
    /// Starts hookrelay with `settings` (`HOOKRELAY_*` variables) on top of
    /// the benchmark's own, and waits until `/readyz` says ready.
    pub async fn start(opts: &Opts, settings: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_on(opts, None, settings).await
    }

    /// [`Hookrelay::start`] on `prefix` (that of an earlier run), or a new one.
    pub async fn start_on(
        opts: &Opts,
        prefix: Option<String>,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let prefix = prefix.unwrap_or_else(|| {
            format!(
                "bench{}",
                Alphanumeric
                    .sample_string(&mut rand::rng(), 8)
                    .to_ascii_lowercase()
            )
        });
        let grpc = free_port()?;
        let http = free_port()?;
        let mut command = tokio::process::Command::new(
            std::env::current_exe().context("locating the benchmark binary")?,
        );
        command
            .arg("serve")
            .env("HOOKRELAY_PREFIX", &prefix)
            .env("HOOKRELAY_NATS__URL", &opts.nats)
            .env("HOOKRELAY_REDIS__URL", &opts.redis)
            .env("HOOKRELAY_SERVER__GRPC_LISTEN", grpc.to_string())
            .env("HOOKRELAY_SERVER__HTTP_LISTEN", http.to_string())
            .env(
                "HOOKRELAY_AUTH__ADMIN_TOKEN_SHA256",
                token_sha256(ADMIN_TOKEN),
            )
            .env("HOOKRELAY_DISPATCHER__ALLOW_PRIVATE", r#"["127.0.0.0/8"]"#)
            .env("HOOKRELAY_TELEMETRY__LEVEL", "error")
            .env("HOOKRELAY_LIMITS__MAX_SUBSCRIPTIONS_PER_TENANT", "100000")
            .env_remove("HOOKRELAY_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (key, value) in settings {
            command.env(key, value);
        }
        let config = Self::config_for(opts, &prefix);
        let child = command.spawn().context("starting hookrelay")?;
        UNFINISHED
            .lock()
            .expect("unfinished lock")
            .push(prefix.clone());
        let pid = child.id().context("hookrelay exited at once")? as i32;
        let mut server = Self {
            child,
            pid,
            config,
            grpc,
            http,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// The settings the child runs with that the benchmark needs too
    /// (names and URLs).
    pub fn config_for(opts: &Opts, prefix: &str) -> Config {
        let mut config = Config::defaults();
        config.prefix = prefix.to_owned();
        config.nats.url = opts.nats.clone();
        config.redis.url = opts.redis.clone();
        config
    }

    /// Kills hookrelay, leaving its streams and keys for a later run.
    pub async fn kill(mut self) {
        self.child.kill().await.ok();
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.http);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("no answer");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("hookrelay exited during startup: {status}");
            }
            if let Ok(response) = reqwest::get(&url).await {
                if response.status().is_success() {
                    return Ok(());
                }
                last = response.text().await.unwrap_or_default();
            }
            if Instant::now() > deadline {
                bail!("hookrelay not ready at {url} after 30 s: {}", last.trim());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Resident set size now (VmRSS), in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = procfs::process::Process::new(self.pid)?.status()?;
        Ok(status.vmrss.context("no VmRSS in /proc status")? * 1024)
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let status = procfs::process::Process::new(self.pid)?.status()?;
        Ok(status.vmhwm.context("no VmHWM in /proc status")? * 1024)
    }

    /// Fails if hookrelay has exited (a crash mid-run).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("hookrelay exited mid-run: {status}"),
            None => Ok(()),
        }
    }

    /// Stops hookrelay and deletes its streams and Redis keys.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.ok();
        delete_everything(&self.config).await?;
        UNFINISHED
            .lock()
            .expect("unfinished lock")
            .retain(|prefix| *prefix != self.config.prefix);
        Ok(())
    }
}

/// Prefixes of runs started and not yet stopped.
static UNFINISHED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Deletes the streams and keys of every run that did not get to
/// [`Hookrelay::stop`] (a scenario failed), so a failed benchmark leaves
/// nothing behind in NATS or Redis.
pub async fn clean_up_unfinished(opts: &Opts) {
    let prefixes = std::mem::take(&mut *UNFINISHED.lock().expect("unfinished lock"));
    for prefix in prefixes {
        if let Err(error) = delete_everything(&Hookrelay::config_for(opts, &prefix)).await {
            eprintln!("could not delete what run {prefix} made: {error:#}");
        }
    }
}

/// Deletes an installation's streams and Redis keys.
async fn delete_everything(config: &Config) -> anyhow::Result<()> {
    let client = async_nats::connect(config.nats.servers()).await?;
    let js = async_nats::jetstream::new(client);
    hookrelay_core::nats::delete_streams(&js, config).await;
    let mut redis = redis_connection(&config.redis.url).await?;
    let pattern = format!("{}:*", config.prefix);
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut redis)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut redis)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A plain multiplexed Redis connection for the benchmark's own calls.
pub async fn redis_connection(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to Redis at {url}"))
}

/// Redis `used_memory`, in bytes.
pub async fn redis_used_memory(
    redis: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no used_memory in INFO memory")
}

/// A loopback address free now and not handed out before by this process:
/// scenarios run side by side (the smoke tests), and the system may give
/// the port one just released to the next caller before its child binds it.
fn free_port() -> anyhow::Result<SocketAddr> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut given = GIVEN.lock().expect("not poisoned");
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return Ok(addr);
        }
    }
}
