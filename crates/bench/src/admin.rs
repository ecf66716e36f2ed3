//! Creating the subscriptions a scenario needs, over the public gRPC API.

use anyhow::Context;
use hookrelay_proto::auth::{Authed, Bearer};
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::subscriptions_client::SubscriptionsClient;

use crate::server::{Hookrelay, ADMIN_TOKEN};

/// The tenant every scenario publishes as.
pub const TENANT: &str = "bench";

async fn channel(server: &Hookrelay) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))?
        .connect()
        .await
        .context("connecting to hookrelay's gRPC API")
}

pub async fn client(server: &Hookrelay) -> anyhow::Result<SubscriptionsClient<Authed>> {
    Ok(SubscriptionsClient::with_interceptor(
        channel(server).await?,
        Bearer::new(Some(ADMIN_TOKEN))?,
    ))
}

/// The delivery-log API, as the admin.
pub async fn logs_client(
    server: &Hookrelay,
) -> anyhow::Result<hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient<Authed>> {
    Ok(
        hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient::with_interceptor(
            channel(server).await?,
            Bearer::new(Some(ADMIN_TOKEN))?,
        ),
    )
}

/// A subscription of [`TENANT`] to `pattern`, delivered to `url`.
pub fn subscription(url: &str, pattern: &str) -> pb::Subscription {
    pb::Subscription {
        tenant: TENANT.into(),
        name: "bench".into(),
        url: url.into(),
        event_types: vec![pattern.into()],
        ..Default::default()
    }
}

/// Creates `subscription`; returns its id.
pub async fn create(
    client: &mut SubscriptionsClient<Authed>,
    subscription: pb::Subscription,
) -> anyhow::Result<String> {
    let created = client
        .create_subscription(pb::CreateSubscriptionRequest {
            subscription: Some(subscription),
        })
        .await
        .context("CreateSubscription")?
        .into_inner();
    Ok(created.subscription.context("no subscription in reply")?.id)
}

/// The event-type catalog API, as the admin.
pub async fn event_types_client(
    server: &Hookrelay,
) -> anyhow::Result<hookrelay_proto::v1::event_types_client::EventTypesClient<Authed>> {
    Ok(
        hookrelay_proto::v1::event_types_client::EventTypesClient::with_interceptor(
            channel(server).await?,
            Bearer::new(Some(ADMIN_TOKEN))?,
        ),
    )
}
