//! Cross-service scenarios: hookrelay in-process against the real NATS and
//! Redis, receivers on 127.0.0.1.

mod batches;
mod catalog;
mod circuit;
mod data_path;
mod delivery;
mod deploy;
mod ingest;
mod isolation;
mod logs;
mod ordering;
mod replay;
mod retries;
mod roles;
mod security;
mod seeds;
mod signature;
mod subscriptions_api;
mod templates;
mod test_event;
mod trace_context;

use hookrelay_proto::v1 as pb;

/// A subscription of `tenant` to `patterns` at `url`, everything else default.
pub fn subscription(tenant: &str, url: &str, patterns: &[&str]) -> pb::Subscription {
    pb::Subscription {
        tenant: tenant.into(),
        url: url.into(),
        event_types: patterns.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// The first message of the installation's DLQ stream, once there is one.
pub async fn first_dlq_entry(
    hr: &hookrelay_tests::Harness,
) -> async_nats::jetstream::message::StreamMessage {
    let dlq = hr
        .js
        .get_stream(hr.env.config.names().dlq_stream())
        .await
        .unwrap();
    hookrelay_tests::support::eventually(
        "the DLQ entry",
        std::time::Duration::from_secs(30),
        || async { dlq.get_raw_message(1).await.ok() },
    )
    .await
}
