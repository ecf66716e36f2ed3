//! A hookrelay started in-process for one test, on its own prefix and ports,
//! with gRPC clients and a NATS publisher pointed at it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use hookrelay::{Listeners, Role, StartError};
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient;
use hookrelay_proto::v1::subscriptions_client::SubscriptionsClient;
use hookrelay_test_support::{eventually, TestEnv};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use hookrelay_test_support as support;

/// A running hookrelay.
pub struct Harness {
    pub env: TestEnv,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub js: jetstream::Context,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), StartError>>>,
}

impl Harness {
    /// Every service, default test settings.
    pub async fn start() -> Self {
        Self::start_with(TestEnv::new(), Role::All).await
    }

    /// `role` with `env`'s config; returns once `/readyz` says ready.
    pub async fn start_with(env: TestEnv, role: Role) -> Self {
        hookrelay_core::telemetry::init(&env.config.telemetry);
        let listeners = Listeners::bind(&env.config, role)
            .await
            .expect("bind test listeners");
        let grpc_addr = listeners
            .grpc
            .as_ref()
            .map(|l| l.local_addr().unwrap())
            .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let http_addr = listeners.http.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hookrelay::run(
            env.config.clone(),
            role,
            listeners,
            shutdown.clone(),
        ));
        let client = async_nats::connect(&env.config.nats.url)
            .await
            .expect("connect to NATS");
        let harness = Self {
            env,
            grpc_addr,
            http_addr,
            js: jetstream::new(client),
            shutdown,
            task: Some(task),
        };
        harness.wait_ready().await;
        harness
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.http_addr);
        eventually("hookrelay ready", Duration::from_secs(20), || async {
            let response = reqwest::get(&url).await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub async fn subscriptions(&self) -> SubscriptionsClient<Channel> {
        SubscriptionsClient::connect(self.grpc_url())
            .await
            .expect("connect gRPC")
    }

    pub async fn logs(&self) -> DeliveryLogsClient<Channel> {
        DeliveryLogsClient::connect(self.grpc_url())
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
        reqwest::get(format!("http://{}/metrics", self.http_addr))
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
        match self.task.take() {
            Some(task) => task.await.expect("hookrelay task"),
            None => Ok(()),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
