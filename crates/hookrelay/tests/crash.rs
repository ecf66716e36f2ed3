//! At least once across crashes: the dispatcher killed with SIGKILL
//! mid-load, and Redis killed and restarted (AOF on) mid-load. Every event
//! reaches the receiver, retries keep one `webhook-id`.

use std::process::Stdio;
use std::time::Duration;

use hookrelay::Role;
use hookrelay_proto::v1 as pb;
use hookrelay_test_support::{eventually, Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;
use tokio::process::{Child, Command};

mod common;

use common::*;
use hookrelay_test_support::servers::free_port;

/// The crash tests kill and restart processes under load: one at a time, so
/// their timing does not depend on how many share the machine's two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn dispatcher_process(env: &TestEnv) -> Child {
    role_process(env, "dispatcher", &[])
}

#[tokio::test]
async fn a_dispatcher_killed_mid_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::new();
    env.config.dispatcher.default_timeout = Duration::from_secs(1);
    env.config.dispatcher.ack_wait = Duration::from_secs(3);
    let mut first = dispatcher_process(&env);
    let hr = Harness::start_roles(env, &[Role::Subscriptions, Role::Ingestor, Role::Logs]).await;
    let receiver = Receiver::start().await;
    fail_first_attempt(&receiver);
    hr.create(flaky_subscription(receiver.url("/jobs"))).await;
    publish_all(&hr).await;

    // Mid-load: first attempts failing, retries pending in Redis.
    let killed_at = kill_mid_load(&mut first, &receiver, EVENTS / 2).await;
    assert!(
        delivered(&receiver) < EVENTS,
        "the kill came mid-load ({killed_at} requests)"
    );

    let _second = dispatcher_process(&hr.env);
    // Generous: CI may share the two cores with a build.
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (delivered(&receiver) == EVENTS).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_ordered_subscription_keeps_its_order_across_a_dispatcher_kill() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new();
    let mut first = dispatcher_process(&env);
    let hr = Harness::start_roles(env, &[Role::Subscriptions, Role::Ingestor, Role::Logs]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(200).delay(Duration::from_millis(10)));
    let mut sub = pb::Subscription {
        tenant: "acme".into(),
        url: receiver.url("/ordered"),
        event_types: vec!["job.*".into()],
        ..Default::default()
    };
    sub.ordering = pb::Ordering::Fifo as i32;
    hr.create(sub).await;
    publish_all(&hr).await;

    let killed_at = kill_mid_load(&mut first, &receiver, EVENTS / 4).await;
    assert!(
        killed_at < EVENTS,
        "the kill came mid-load ({killed_at} requests)"
    );

    // The second takes the queue over once the first one's lock lapses.
    let _second = dispatcher_process(&hr.env);
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (receiver.event_numbers().last() == Some(&(EVENTS as u64 - 1))).then_some(()) },
    )
    .await;
    // At least once: the request in flight at the kill may come twice, in
    // its place; nothing else repeats or moves.
    let mut arrived = receiver.event_numbers();
    arrived.dedup();
    assert_eq!(arrived, (0..EVENTS as u64).collect::<Vec<_>>());
}

/// A redis-server or nats-server of the test's own, on a free loopback
/// port with its data in a temporary folder, that can be killed and
/// started again on the same port and data.
struct OwnServer {
    kind: Kind,
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

#[derive(Clone, Copy)]
enum Kind {
    /// AOF on, fsync always.
    Redis,
    /// JetStream on disk.
    Nats,
}

impl OwnServer {
    async fn start(kind: Kind) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("hookrelay-own-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            kind,
            port,
            dir,
            child: None,
        };
        server.spawn().await;
        server
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn command(&self) -> Command {
        let port = self.port.to_string();
        match self.kind {
            Kind::Redis => {
                let mut command = Command::new("redis-server");
                command
                    .args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
                    .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(&self.dir);
                command
            }
            Kind::Nats => {
                let mut command = Command::new(nats_program());
                command
                    .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                    .arg(&self.dir);
                command
            }
        }
    }

    async fn spawn(&mut self) {
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server and nats-server on PATH (scripts/services.sh installs them)");
        self.child = Some(child);
        let (url, kind) = (self.url(), self.kind);
        eventually("own server up", Duration::from_secs(10), || async {
            match kind {
                Kind::Redis => {
                    let client = redis::Client::open(url.as_str()).ok()?;
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                        .map(drop)
                }
                Kind::Nats => async_nats::connect(&url).await.ok().map(drop),
            }
        })
        .await;
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }
}

/// The nats-server binary.
fn nats_program() -> &'static str {
    ["nats-server", "/usr/sbin/nats-server"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("nats-server on PATH (scripts/services.sh installs it)")
}

/// Three nats-servers of the test's own on loopback, routed to each other
/// with JetStream clustered, so streams at R3 outlive one node.
struct NatsCluster {
    /// (server name, client port, data folder, process).
    nodes: Vec<(String, u16, std::path::PathBuf, Option<Child>)>,
}

impl NatsCluster {
    async fn start() -> Self {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster = format!("hookrelay-test-{}", routes[0]);
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (name, port) = (format!("n{}", i + 1), free_port());
            let dir = std::env::temp_dir().join(format!("hookrelay-{cluster}-{name}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let others: Vec<String> = routes
                .iter()
                .filter(|r| *r != route)
                .map(|r| format!("nats://127.0.0.1:{r}"))
                .collect();
            let child = Command::new(nats_program())
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(&dir)
                .args(["--server_name", &name, "--cluster_name", &cluster])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &others.join(",")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("nats-server on PATH");
            nodes.push((name, port, dir, Some(child)));
        }
        let cluster = Self { nodes };
        // Ready once a stream at R3 can be made: routes up, JetStream's
        // meta leader elected, every peer known.
        // The servers may still be starting: connect once one listens.
        let urls = cluster.urls();
        let client = eventually("a NATS node listening", Duration::from_secs(30), || async {
            async_nats::connect(urls.split(',').collect::<Vec<_>>())
                .await
                .ok()
        })
        .await;
        let js = async_nats::jetstream::new(client);
        eventually("the NATS cluster up", Duration::from_secs(60), || async {
            let stream = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "CLUSTER_PROBE".into(),
                    subjects: vec!["cluster.probe".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await
                .ok()?;
            drop(stream);
            js.delete_stream("CLUSTER_PROBE").await.ok().map(drop)
        })
        .await;
        cluster
    }

    /// Every node's client URL, comma-separated, as `nats.url` takes them.
    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|(_, port, _, _)| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs the node called `name`.
    async fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.0 == name)
            .expect("a node of this cluster");
        if let Some(mut child) = node.3.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for (_, _, dir, child) in &mut self.nodes {
            if let Some(child) = child {
                let _ = child.start_kill();
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test]
async fn a_nats_cluster_node_killed_mid_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = NatsCluster::start().await;
    let mut env = TestEnv::new();
    env.config.nats.url = cluster.urls();
    env.config.nats.replicas = 3;
    let hr = Harness::start_with(env, Role::All).await;
    let names = hr.env.config.names();
    let mut events = hr.js.get_stream(names.events_stream()).await.unwrap();
    let info = events.info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3);
    // The stream's leader is the node whose loss hurts most.
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a clustered stream has a leader");

    let receiver = Receiver::start().await;
    fail_first_attempt(&receiver);
    hr.create(flaky_subscription(receiver.url("/jobs"))).await;
    publish_all(&hr).await;
    eventually("the load under way", Duration::from_secs(20), || async {
        (receiver.requests().len() >= EVENTS / 2).then_some(())
    })
    .await;
    cluster.kill(&leader).await;
    assert!(
        delivered(&receiver) < EVENTS,
        "the kill came mid-load ({} requests)",
        receiver.requests().len()
    );
    // Generous: a new leader is elected, clients move to a live node.
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (delivered(&receiver) == EVENTS).then_some(()) },
    )
    .await;
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn ready(hr: &Harness) -> bool {
    let url = format!("http://{}/readyz", hr.http_addr);
    matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success())
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut redis = OwnServer::start(Kind::Redis).await;
    let mut env = TestEnv::new();
    env.config.redis.url = redis.url();
    let hr = Harness::start_with(env, Role::All).await;
    let receiver = Receiver::start().await;
    fail_first_attempt(&receiver);
    hr.create(flaky_subscription(receiver.url("/jobs"))).await;
    publish_all(&hr).await;

    eventually("the load under way", Duration::from_secs(20), || async {
        (receiver.requests().len() >= EVENTS / 2).then_some(())
    })
    .await;
    redis.kill().await;
    eventually(
        "not ready while Redis is down",
        Duration::from_secs(10),
        || async { (!ready(&hr).await).then_some(()) },
    )
    .await;
    redis.spawn().await;
    eventually("ready again", Duration::from_secs(20), || async {
        ready(&hr).await.then_some(())
    })
    .await;
    // Generous: CI may share the two cores with a build.
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (delivered(&receiver) == EVENTS).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn ready_again_after_a_redis_outage_with_nothing_to_deliver() {
    let _serial = SERIAL.lock().await;
    let mut redis = OwnServer::start(Kind::Redis).await;
    let mut env = TestEnv::new();
    env.config.redis.url = redis.url();
    let hr = Harness::start_with(env, Role::All).await;
    redis.kill().await;
    // Until the retry scheduler has found Redis gone too, not only the ping.
    let readyz = || async {
        reqwest::get(format!("http://{}/readyz", hr.http_addr))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    eventually(
        "the retry scheduler not ready while Redis is down",
        Duration::from_secs(20),
        || async { readyz().await.filter(|r| r.contains("redis (scheduler)")) },
    )
    .await;
    redis.spawn().await;
    // No delivery, retry or circuit write follows: the scheduler's own
    // successful claims must say Redis is back.
    eventually("ready again", Duration::from_secs(20), || async {
        ready(&hr).await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn nats_killed_and_restarted_mid_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut nats = OwnServer::start(Kind::Nats).await;
    let mut env = TestEnv::new();
    env.config.nats.url = nats.url();
    let hr = Harness::start_with(env, Role::All).await;
    let receiver = Receiver::start().await;
    fail_first_attempt(&receiver);
    hr.create(flaky_subscription(receiver.url("/jobs"))).await;
    publish_all(&hr).await;

    eventually("the load under way", Duration::from_secs(20), || async {
        (receiver.requests().len() >= EVENTS / 2).then_some(())
    })
    .await;
    nats.kill().await;
    eventually(
        "not ready while NATS is down",
        Duration::from_secs(10),
        || async { (!ready(&hr).await).then_some(()) },
    )
    .await;
    nats.spawn().await;
    eventually("ready again", Duration::from_secs(30), || async {
        ready(&hr).await.then_some(())
    })
    .await;
    // Generous: CI may share the two cores with a build.
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (delivered(&receiver) == EVENTS).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_ingestor_killed_mid_window_loses_no_change() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new();
    let mut first = role_process(&env, "ingestor", &[]);
    let hr = Harness::start_roles(env, &[Role::Subscriptions, Role::Dispatcher, Role::Logs]).await;
    let receiver = Receiver::start().await;
    // A window long enough that the kill surely falls inside it on a loaded
    // machine; the test then closes it early (below) so it stays fast.
    let sub = training_batches(receiver.url("/feed"), 120, 1000);
    let (sub, _) = hr.create(sub).await;
    const CHANGES: u64 = 30;
    for id in 0..CHANGES {
        hr.publish(
            "acme",
            "training.update",
            format!(r#"{{"entity_id":{id},"data":{{}}}}"#).as_bytes(),
        )
        .await;
    }
    // Every change is in the buffer, the window still open: kill the ingestor.
    let [items, _, _] = hr.env.config.names().batch_keys(&sub.id);
    let client = redis::Client::open(hr.env.config.redis.url.as_str()).unwrap();
    let redis = client.get_multiplexed_async_connection().await.unwrap();
    eventually("every change buffered", Duration::from_secs(60), || {
        let mut redis = redis.clone();
        let items = items.clone();
        async move {
            let buffered: u64 = redis::cmd("HLEN")
                .arg(&items)
                .query_async(&mut redis)
                .await
                .ok()?;
            (buffered == CHANGES).then_some(())
        }
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert!(
        receiver.requests().is_empty(),
        "killed before the window closed"
    );

    // Close the window now, as time would, and start a new ingestor.
    let mut conn = redis.clone();
    let _: () = redis::cmd("ZADD")
        .arg(hr.env.config.names().batches_due_key())
        .arg("XX")
        .arg(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        )
        .arg(&sub.id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _second = role_process(&hr.env, "ingestor", &[]);
    let request = receiver
        .wait_for(1, Duration::from_secs(30))
        .await
        .remove(0);
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    let mut ids: Vec<u64> = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (0..CHANGES).collect::<Vec<_>>());
    eventually("the buffer empty once sent", Duration::from_secs(5), || {
        let mut redis = redis.clone();
        let items = items.clone();
        async move {
            let left: u64 = redis::cmd("HLEN")
                .arg(&items)
                .query_async(&mut redis)
                .await
                .ok()?;
            (left == 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn redis_down_holds_an_event_with_a_batched_match_and_publishes_nothing_twice() {
    // While Redis is down, an event with one batched match once was NAKed
    // every second, and each redelivery published its other tasks again
    // (JetStream's dedup covers only two minutes). Now its change is
    // buffered before any task is published, and the retries back off.
    let _serial = SERIAL.lock().await;
    let mut redis = OwnServer::start(Kind::Redis).await;
    let mut env = TestEnv::new();
    env.config.redis.url = redis.url();
    // Direct tasks through DELIVERIES, where they can be counted.
    env.config.ingestor.handoff = false;
    let hr = Harness::start_with(env, Role::All).await;
    let receiver = Receiver::start().await;
    hr.create(pb::Subscription {
        tenant: "acme".into(),
        url: receiver.url("/direct"),
        event_types: vec!["training.*".into()],
        ..Default::default()
    })
    .await;
    hr.create(training_batches(receiver.url("/batch"), 1, 100))
        .await;
    redis.kill().await;
    hr.publish("acme", "training.update", br#"{"entity_id":5,"data":{}}"#)
        .await;
    let failures = r#"hookrelay_transient_errors_total{component="ingestor",dependency="redis"}"#;
    eventually(
        "the event tried three times",
        Duration::from_secs(30),
        || async { (hr.metric(failures).await? >= 3.0).then_some(()) },
    )
    .await;
    let readyz = reqwest::get(format!("http://{}/readyz", hr.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(readyz.contains("redis (ingestor)"), "{readyz}");
    let names = hr.env.config.names();
    let published = || async {
        let mut stream = hr.js.get_stream(names.deliveries_stream()).await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    };
    assert_eq!(
        published().await,
        0,
        "no task published while Redis is down"
    );
    assert!(receiver.requests().is_empty());

    redis.spawn().await;
    let requests = receiver.wait_for(2, Duration::from_secs(60)).await;
    assert_eq!(receiver.requests_to("/direct").len(), 1);
    assert_eq!(receiver.requests_to("/batch").len(), 1);
    assert!(requests.iter().any(|r| r.body_str().contains(r#""id":5"#)));
    assert_eq!(
        published().await,
        2,
        "the direct task and the batch's, once each"
    );
}
