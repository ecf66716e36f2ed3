//! The `hookrelay` binary as a new user first runs it, logging to a file:
//! plain lines (no colour codes), `/readyz` naming what startup waits for,
//! a clear line when NATS is out of reach or has no JetStream, one `ready`
//! line saying what to do next, and a final `stopped` line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hookrelay_core::config::token_sha256;
use hookrelay_test_support::servers::free_ports;
use hookrelay_test_support::{eventually, TestEnv};
use tokio::process::{Child, Command};

struct Process {
    child: Child,
    log: PathBuf,
    http: u16,
    grpc: u16,
}

impl Process {
    /// hookrelay with `env`'s prefix and servers (as overridden by `vars`),
    /// its stderr in a file.
    fn start(env: &TestEnv, vars: &[(&str, String)]) -> Self {
        let ports = free_ports(2);
        let log =
            std::env::temp_dir().join(format!("hookrelay-first-run-{}.log", env.config.prefix));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
        command
            .env("HOOKRELAY_PREFIX", &env.config.prefix)
            .env("HOOKRELAY_NATS__URL", &env.config.nats.url)
            .env("HOOKRELAY_REDIS__URL", &env.config.redis.url)
            .env(
                "HOOKRELAY_SERVER__GRPC_LISTEN",
                format!("127.0.0.1:{}", ports[0]),
            )
            .env(
                "HOOKRELAY_SERVER__HTTP_LISTEN",
                format!("127.0.0.1:{}", ports[1]),
            )
            .env("HOOKRELAY_SHUTDOWN_GRACE", "2s")
            .env(
                "HOOKRELAY_AUTH__ADMIN_TOKEN_SHA256",
                token_sha256(TestEnv::ADMIN_TOKEN),
            )
            .env("HOOKRELAY_TELEMETRY__LEVEL", "info")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        for (name, value) in vars {
            command.env(name, value);
        }
        Self {
            child: command.spawn().expect("start hookrelay"),
            log,
            grpc: ports[0],
            http: ports[1],
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn readyz(&self) -> Option<String> {
        let response = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.http))
            .await
            .ok()?;
        response.text().await.ok()
    }

    /// Waits until `/readyz` answers exactly `body`.
    async fn readyz_says(&self, body: &str) {
        eventually(
            &format!("/readyz says {body:?}"),
            Duration::from_secs(15),
            || async { (self.readyz().await.as_deref() == Some(body)).then_some(()) },
        )
        .await;
    }

    /// Waits until the log has a line containing `text`.
    async fn logged(&self, text: &str) -> String {
        eventually(
            &format!("a log line with {text:?}"),
            Duration::from_secs(15),
            || async {
                self.log()
                    .lines()
                    .find(|l| l.contains(text))
                    .map(str::to_owned)
            },
        )
        .await
    }

    /// SIGTERM, then the whole log once it exited.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("hookrelay stops within its grace period")
            .unwrap();
        assert!(exit.success(), "{exit}");
        let log = self.log();
        std::fs::remove_file(&self.log).ok();
        log
    }
}

#[tokio::test]
async fn a_log_file_reads_plain_says_ready_with_what_next_and_stopped() {
    let env = TestEnv::new();
    let process = Process::start(&env, &[]);
    let ready = process.logged("ready (all)").await;
    let grpc = format!("127.0.0.1:{}", process.grpc);
    assert!(
        ready.contains(&format!("gRPC on {grpc}"))
            && ready.contains(&format!("hookctl --server {grpc} "))
            && ready.contains(&format!("http://127.0.0.1:{}", process.http)),
        "{ready}"
    );
    process.readyz_says("ready\n").await;
    let log = process.stop().await;
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert_eq!(log.matches("ready (all)").count(), 1, "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("stopped"),
        "the last line is {last:?}:\n{log}"
    );
}

#[tokio::test]
async fn readyz_names_redis_while_startup_waits_for_it() {
    let env = TestEnv::new();
    let port = free_ports(1)[0];
    let url = format!("redis://127.0.0.1:{port}");
    let process = Process::start(&env, &[("HOOKRELAY_REDIS__URL", url)]);
    process.readyz_says("not ready: redis\n").await;
    let line = process.logged("cannot connect to Redis yet").await;
    assert!(line.contains(&port.to_string()), "{line}");
    process.stop().await;
}

#[tokio::test]
async fn nats_out_of_reach_or_without_jetstream_is_said_once() {
    let env = TestEnv::new();
    let ports = free_ports(2);

    let down = format!("nats://127.0.0.1:{}", ports[0]);
    let process = Process::start(&env, &[("HOOKRELAY_NATS__URL", down.clone())]);
    process.readyz_says("not ready: nats, jetstream\n").await;
    assert!(!process.log().contains("redis"), "{}", process.log());
    let line = process.logged("is unreachable").await;
    assert!(
        line.contains(&format!("NATS at {down} is unreachable"))
            && line.contains("nats-server -js"),
        "{line}"
    );
    assert!(!process.log().contains("timed out"), "{}", process.log());
    let log = process.stop().await;
    assert!(
        log.lines().last().unwrap_or_default().contains("stopped"),
        "{log}"
    );

    let mut plain = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &ports[1].to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server on PATH");
    let url = format!("nats://127.0.0.1:{}", ports[1]);
    let process = Process::start(&env, &[("HOOKRELAY_NATS__URL", url.clone())]);
    process.readyz_says("not ready: jetstream\n").await;
    process
        .logged(&format!(
            "JetStream is not enabled on the NATS server at {url}: start nats-server with -js"
        ))
        .await;
    // Retried with backoff meanwhile, but said once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = process.stop().await;
    assert_eq!(log.matches("JetStream is not enabled").count(), 1, "{log}");
    plain.kill().await.ok();
}

#[tokio::test]
async fn a_bad_setting_is_one_clear_line() {
    for (name, value, expected) in [
        (
            "HOOKRELAY_SHUTDOWN_GRACE",
            "5",
            r#"error: configuration: HOOKRELAY_SHUTDOWN_GRACE: expected a duration with a unit, e.g. "5s", "1m" or "1h30m", found unsigned int `5`"#,
        ),
        (
            "HOOKRELAY_DISPACHER__CONCURRENCY",
            "8",
            "error: configuration: HOOKRELAY_DISPACHER__CONCURRENCY is not a setting (did you mean HOOKRELAY_DISPATCHER__CONCURRENCY?)",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .env(name, value)
            .env("RUST_BACKTRACE", "1")
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&output.stderr), format!("{expected}\n"));
    }
}
