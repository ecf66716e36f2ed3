//! Cross-service scenarios: hookrelay in-process against the real NATS and
//! Redis, receivers on 127.0.0.1.

mod batches;
mod data_path;
mod delivery;
mod deploy;
mod ingest;
mod isolation;
mod logs;
mod replay;
mod retries;
mod roles;
mod security;
mod seeds;
mod signature;
mod subscriptions_api;
mod test_event;

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
