//! What the process-level tests share: a receiver that fails each event's
//! first attempt, the subscriptions and load they drive, and counting what
//! was delivered.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_test_support::TestEnv;
use hookrelay_test_support::{eventually, Receiver, Recorded, Reply};
use hookrelay_tests::Harness;
use tokio::process::{Child, Command};

/// Events of one load.
pub const EVENTS: usize = 200;

/// Fails the first request of every `webhook-id`, accepts the rest.
pub fn fail_first_attempt(receiver: &Receiver) {
    receiver.respond_with(|request: &Recorded, earlier: &[Recorded]| {
        let id = request.header("webhook-id");
        let seen = earlier.iter().any(|r| r.header("webhook-id") == id);
        if seen {
            Reply::status(200).delay(Duration::from_millis(5))
        } else {
            Reply::status(500).delay(Duration::from_millis(5))
        }
    });
}

/// Tenant acme's `training.*` changes to `url`, batched (seed 001's body)
/// over `window_secs`, at most `max_size` a batch.
pub fn training_batches(url: String, window_secs: i64, max_size: u32) -> pb::Subscription {
    pb::Subscription {
        tenant: "acme".into(),
        url,
        event_types: vec!["training.*".into()],
        request: Some(pb::RequestSpec {
            envelope: pb::Envelope::ChangesBatch as i32,
            ..Default::default()
        }),
        batch: Some(pb::BatchSpec {
            window: Some(prost_types::Duration {
                seconds: window_secs,
                nanos: 0,
            }),
            max_size,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn flaky_subscription(url: String) -> pb::Subscription {
    pb::Subscription {
        tenant: "acme".into(),
        url,
        event_types: vec!["*".into()],
        retry_policy: Some(pb::RetryPolicy {
            policy: Some(pb::retry_policy::Policy::Exponential(
                pb::ExponentialRetry {
                    initial: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 300_000_000,
                    }),
                    factor: 1.5,
                    cap: Some(prost_types::Duration {
                        seconds: 2,
                        nanos: 0,
                    }),
                    max_attempts: 1000,
                    max_age: None,
                    jitter: 0.0,
                },
            )),
        }),
        ..Default::default()
    }
}

pub async fn publish_all(hr: &Harness) {
    for n in 0..EVENTS {
        hr.publish(
            "acme",
            "job.done",
            format!(r#"{{"id":"e-{n}","data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
}

/// Event numbers that got a 200 (a second request with their `webhook-id`),
/// checking every attempt of one event carried the same `webhook-id`.
pub fn delivered(receiver: &Receiver) -> usize {
    let mut by_event: HashMap<u64, Vec<String>> = HashMap::new();
    for request in receiver.requests() {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let n = body["data"]["n"].as_u64().unwrap();
        by_event
            .entry(n)
            .or_default()
            .push(request.header("webhook-id").unwrap().to_owned());
    }
    for ids in by_event.values() {
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "one webhook-id per event: {ids:?}"
        );
    }
    by_event.values().filter(|ids| ids.len() >= 2).count()
}

/// SIGKILLs `process` once `receiver` has had `requests`; returns how many
/// it had when the process was gone.
pub async fn kill_mid_load(process: &mut Child, receiver: &Receiver, requests: usize) -> usize {
    eventually("the load under way", Duration::from_secs(20), || async {
        (receiver.requests().len() >= requests).then_some(())
    })
    .await;
    process.start_kill().expect("SIGKILL");
    process.wait().await.unwrap();
    receiver.requests().len()
}

/// The `hookrelay` binary running `role` against `env`'s servers and prefix,
/// with `vars` added to its environment; killed when dropped.
pub fn role_process(env: &TestEnv, role: &str, vars: &[(&str, &str)]) -> Child {
    role_command(env, role, vars)
        .spawn()
        .unwrap_or_else(|error| panic!("start the hookrelay {role}: {error}"))
}

/// [`role_process`]'s command, to spawn with other stdio (its log goes to
/// stderr, at level error).
pub fn role_command(env: &TestEnv, role: &str, vars: &[(&str, &str)]) -> Command {
    let config = &env.config;
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    command
        .arg(role)
        .env("HOOKRELAY_PREFIX", &config.prefix)
        .env("HOOKRELAY_NATS__URL", &config.nats.url)
        .env("HOOKRELAY_REDIS__URL", &config.redis.url)
        .env("HOOKRELAY_SERVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("HOOKRELAY_DISPATCHER__DEFAULT_TIMEOUT", "1s")
        .env("HOOKRELAY_DISPATCHER__ACK_WAIT", "3s")
        .env("HOOKRELAY_DISPATCHER__CIRCUIT__OPEN_AFTER", "1000000")
        .env("HOOKRELAY_TELEMETRY__LEVEL", "error")
        .env("HOOKRELAY_DISPATCHER__ALLOW_PRIVATE", r#"["127.0.0.0/8"]"#)
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}
