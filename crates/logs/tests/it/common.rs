//! An attempt index on a fresh prefix of the shared NATS and Redis, and
//! attempt records made to order.

use std::time::Duration;

use async_nats::jetstream;
use hookrelay_core::delivery::{RecordedRequest, RecordedResponse};
use hookrelay_logs::index::{AttemptIndex, AttemptKeys};
use hookrelay_test_support::TestEnv;

pub struct Fixture {
    pub env: TestEnv,
    pub js: jetstream::Context,
    pub redis: hookrelay_core::redis::Redis,
    pub index: AttemptIndex,
}

impl Fixture {
    pub async fn new() -> Self {
        let env = TestEnv::new();
        let client = async_nats::connect(env.config.nats.servers())
            .await
            .unwrap();
        let js = jetstream::new(client);
        hookrelay_core::nats::ensure_streams(&js, &env.config)
            .await
            .unwrap();
        let redis = hookrelay_core::redis::connect(&env.config).await.unwrap();
        let index = AttemptIndex::new(
            env.config.names(),
            redis.clone(),
            js.clone(),
            Duration::from_secs(7 * 24 * 3600),
        );
        Self {
            env,
            js,
            redis,
            index,
        }
    }

    /// Publishes `record` to ATTEMPTS and returns its sequence.
    pub async fn publish(&self, record: &serde_json::Value) -> u64 {
        let subject = self.env.config.names().attempt_subject(
            record["tenant"].as_str().unwrap(),
            record["subscription_id"].as_str().unwrap(),
        );
        let ack = self
            .js
            .publish(subject, serde_json::to_vec(record).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
        ack.sequence
    }

    /// Publishes and indexes `records` as one batch; whether each was new.
    pub async fn store(&self, records: &[serde_json::Value]) -> Vec<bool> {
        let mut batch = Vec::new();
        for record in records {
            let seq = self.publish(record).await;
            batch.push((keys(record), seq));
        }
        self.index.store(&batch).await.unwrap()
    }
}

pub fn keys(record: &serde_json::Value) -> AttemptKeys {
    serde_json::from_value(record.clone()).unwrap()
}

/// An attempt id made at `ms` (unix milliseconds).
pub fn id_at(ms: u64) -> String {
    format!("att_{}", ulid::Ulid::from_parts(ms, rand_bits()))
}

fn rand_bits() -> u128 {
    ulid::Ulid::new().random()
}

pub fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis() as u64
}

/// An attempt record as the dispatcher publishes it.
pub fn record(
    id: &str,
    tenant: &str,
    subscription_id: &str,
    event_id: &str,
    outcome: &str,
    give_up: bool,
) -> serde_json::Value {
    let at = chrono::DateTime::from_timestamp_millis(
        hookrelay_logs::index::layout::id_ms(id).unwrap() as i64,
    )
    .unwrap();
    let mut record = serde_json::json!({
        "id": id,
        "event_id": event_id,
        "subscription_id": subscription_id,
        "tenant": tenant,
        "event_type": "order.paid",
        "webhook_id": format!("msg_{event_id}"),
        "attempt": 1,
        "outcome": outcome,
        "reason": if outcome == "success" { "status 200" } else { "status 500" },
        // Whatever the recorded request and response hold, their defaults read back.
        "request": serde_json::to_value(RecordedRequest::default()).unwrap(),
        "response": serde_json::to_value(RecordedResponse {
            status: if outcome == "success" { 200 } else { 500 },
            ..Default::default()
        })
        .unwrap(),
        "started_at": at,
        "duration_ms": 3,
        "event_received_at": at,
        "event_seq": 1,
    });
    if give_up {
        record["give_up"] = "no_retry".into();
    }
    record
}
