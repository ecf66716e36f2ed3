//! A hookrelay started in-process for one test, on its own prefix and ports,
//! with gRPC clients and a NATS publisher pointed at it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use hookrelay::{Listeners, Role, StartError};
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient;
use hookrelay_proto::v1::event_types_client::EventTypesClient;
use hookrelay_proto::v1::subscriptions_client::SubscriptionsClient;
use hookrelay_test_support::{eventually, TestEnv};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use hookrelay_test_support as support;

pub use hookrelay_proto::auth::{Authed, Bearer};

/// A running hookrelay: one process's worth of services, or several roles
/// each run on its own as they would be when scaled out.
pub struct Harness {
    pub env: TestEnv,
    /// gRPC address of the subscription service.
    pub grpc_addr: SocketAddr,
    /// gRPC address of the log service.
    pub logs_addr: SocketAddr,
    /// Admin HTTP address of the first role (all of them, for `Role::All`).
    pub http_addr: SocketAddr,
    /// Admin HTTP address of every role started.
    pub http_addrs: Vec<SocketAddr>,
    pub js: jetstream::Context,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), StartError>>>,
}

impl Harness {
    /// Every service, default test settings.
    pub async fn start() -> Self {
        Self::start_with(TestEnv::new(), Role::All).await
    }

    /// `role` with `env`'s config; returns once `/readyz` says ready.
    pub async fn start_with(env: TestEnv, role: Role) -> Self {
        Self::start_roles(env, &[role]).await
    }

    /// Each of `roles` as its own server; returns once all are ready.
    /// Names resolve from a test table (`example.test` is loopback), so no
    /// test depends on, or reaches, real DNS.
    pub async fn start_roles(env: TestEnv, roles: &[Role]) -> Self {
        let net = TestNet::default();
        net.set("example.test", &["127.0.0.1"]);
        Self::start_net(env, roles, net.net()).await
    }

    /// Like [`Harness::start_roles`], resolving and dialing through `net`.
    pub async fn start_net(env: TestEnv, roles: &[Role], net: hookrelay::Net) -> Self {
        hookrelay_core::telemetry::init(&env.config.telemetry);
        let unset: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (mut grpc_addr, mut logs_addr) = (unset, unset);
        let mut http_addrs = Vec::new();
        let mut tasks = Vec::new();
        let shutdown = CancellationToken::new();
        for &role in roles {
            let listeners = Listeners::bind(&env.config, role)
                .await
                .expect("bind test listeners");
            if let Some(grpc) = &listeners.grpc {
                let addr = grpc.local_addr().unwrap();
                if matches!(role, Role::All | Role::Subscriptions) {
                    grpc_addr = addr;
                }
                if matches!(role, Role::All | Role::Logs) {
                    logs_addr = addr;
                }
            }
            http_addrs.push(listeners.http.local_addr().unwrap());
            tasks.push(tokio::spawn(hookrelay::run_with(
                env.config.clone(),
                role,
                listeners,
                shutdown.clone(),
                net.clone(),
            )));
        }
        let client = async_nats::connect(env.config.nats.servers())
            .await
            .expect("connect to NATS");
        let harness = Self {
            env,
            grpc_addr,
            logs_addr,
            http_addr: http_addrs[0],
            http_addrs,
            js: jetstream::new(client),
            shutdown,
            tasks,
        };
        harness.wait_ready().await;
        harness
    }

    /// Waits until every role's `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        for addr in &self.http_addrs {
            let url = format!("http://{addr}/readyz");
            eventually(&format!("{url} ready"), Duration::from_secs(20), || async {
                let response = local_http().get(&url).send().await.ok()?;
                response.status().is_success().then_some(())
            })
            .await;
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Subscriptions client with the admin token.
    pub async fn subscriptions(&self) -> SubscriptionsClient<Authed> {
        self.subscriptions_as(TestEnv::ADMIN_TOKEN).await
    }

    /// Subscriptions client with `token`.
    pub async fn subscriptions_as(&self, token: &str) -> SubscriptionsClient<Authed> {
        SubscriptionsClient::with_interceptor(
            self.channel(self.grpc_addr).await,
            Bearer::new(Some(token)).expect("ASCII token"),
        )
    }

    /// Event-type catalog client with the admin token.
    pub async fn event_types(&self) -> EventTypesClient<Authed> {
        self.event_types_as(TestEnv::ADMIN_TOKEN).await
    }

    /// Event-type catalog client with `token`.
    pub async fn event_types_as(&self, token: &str) -> EventTypesClient<Authed> {
        EventTypesClient::with_interceptor(
            self.channel(self.grpc_addr).await,
            Bearer::new(Some(token)).expect("ASCII token"),
        )
    }

    /// Delivery logs client with the admin token.
    pub async fn logs(&self) -> DeliveryLogsClient<Authed> {
        self.logs_as(TestEnv::ADMIN_TOKEN).await
    }

    /// Delivery logs client with `token`.
    pub async fn logs_as(&self, token: &str) -> DeliveryLogsClient<Authed> {
        DeliveryLogsClient::with_interceptor(
            self.channel(self.logs_addr).await,
            Bearer::new(Some(token)).expect("ASCII token"),
        )
    }

    async fn channel(&self, addr: SocketAddr) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect gRPC")
    }

    /// Creates a subscription; returns it and its secret.
    pub async fn create(&self, subscription: pb::Subscription) -> (pb::Subscription, String) {
        let response = self
            .subscriptions()
            .await
            .create_subscription(pb::CreateSubscriptionRequest {
                subscription: Some(subscription),
            })
            .await
            .expect("create subscription")
            .into_inner();
        (
            response.subscription.expect("subscription"),
            response.secret,
        )
    }

    /// Publishes a raw body as `<tenant>.<event type>`; returns the stream sequence.
    pub async fn publish(&self, tenant: &str, event_type: &str, body: &[u8]) -> u64 {
        let subject = self.env.config.names().event_subject(tenant, event_type);
        self.js
            .publish(subject, bytes::Bytes::copy_from_slice(body))
            .await
            .expect("publish")
            .await
            .expect("publish ack")
            .sequence
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        local_http()
            .get(format!("http://{}/metrics", self.http_addr))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample line of `/metrics`, e.g.
    /// `hookrelay_deliveries_total{event_type="a",outcome="success",tenant="t"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
    }

    /// Stops hookrelay as SIGTERM would and waits for it to finish.
    pub async fn stop(&mut self) -> Result<(), StartError> {
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            task.await.expect("hookrelay task")?;
        }
        Ok(())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A client for the harness's own calls to hookrelay on loopback: never
/// through a proxy from the environment (a test may set one).
fn local_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain HTTP client")
}

/// A network for tests that never leaves loopback: names resolve from a
/// table the test edits, and any non-loopback address that gets past the
/// guard is recorded and sent to a dead loopback port instead.
#[derive(Clone, Default)]
pub struct TestNet {
    names:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<std::net::IpAddr>>>>,
    dialed: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl TestNet {
    /// Makes `name` resolve to `ips`.
    pub fn set(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|ip| ip.parse().expect("IP")).collect();
        self.names.lock().unwrap().insert(name.to_owned(), ips);
    }

    /// Non-loopback addresses a connection was attempted to.
    pub fn dialed_outside(&self) -> Vec<SocketAddr> {
        self.dialed.lock().unwrap().clone()
    }

    pub fn net(&self) -> hookrelay::Net {
        hookrelay::Net {
            resolver: std::sync::Arc::new(self.clone()),
            dialer: std::sync::Arc::new(self.clone()),
        }
    }
}

impl hookrelay_dispatcher::guard::Resolver for TestNet {
    fn resolve(
        &self,
        host: String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send>,
    > {
        let found = self.names.lock().unwrap().get(&host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no test record for {host}"),
                )
            })
        })
    }
}

impl hookrelay_dispatcher::guard::Dialer for TestNet {
    fn dial(&self, addr: SocketAddr) -> SocketAddr {
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            addr
        } else {
            self.dialed.lock().unwrap().push(addr);
            "127.0.0.1:9".parse().unwrap()
        }
    }
}
