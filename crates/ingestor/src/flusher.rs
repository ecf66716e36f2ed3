//! The flusher: turns due batches into delivery tasks. The batch itself is
//! stored in the BATCHES stream first (retries read it from there), then its
//! task goes to DELIVERIES, then the sent changes leave the buffer.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::Utc;
use hookrelay_core::delivery::{DeliveryTask, Source};
use hookrelay_core::event::Event;
use tokio_util::sync::CancellationToken;

use crate::Ingestor;

const CLAIM: usize = 100;
const LEASE: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_millis(25);

impl Ingestor {
    /// Flushes due batches until `shutdown`.
    pub async fn run_flusher(self: Arc<Self>, shutdown: CancellationToken) {
        self.index.wait_loaded().await;
        while !shutdown.is_cancelled() {
            let pause = match self.batcher.claim(Utc::now(), LEASE, CLAIM).await {
                Ok(claimed) => {
                    let full = claimed.len() == CLAIM;
                    for subscription_id in claimed {
                        if let Err(error) = self.flush(&subscription_id).await {
                            // The lease expires and the batch is flushed again.
                            tracing::warn!(subscription = %subscription_id, %error, "batch flush failed");
                        }
                    }
                    if full {
                        Duration::ZERO
                    } else {
                        IDLE
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "batch buffer unreachable");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn flush(&self, subscription_id: &str) -> Result<(), String> {
        let subscription = self.index.get(subscription_id);
        let Some((subscription, batch)) =
            subscription.and_then(|s| s.batch.clone().map(|b| (s, b)))
        else {
            tracing::info!(subscription = %subscription_id, "batch of a deleted or unbatched subscription dropped");
            return self
                .batcher
                .discard(subscription_id)
                .await
                .map_err(|e| e.to_string());
        };
        let flush = self
            .batcher
            .read(subscription_id, batch.max_size)
            .await
            .map_err(|e| e.to_string())?;
        let now = Utc::now();
        if flush.keys.is_empty() {
            return self
                .batcher
                .commit(subscription_id, &flush, now)
                .await
                .map(drop)
                .map_err(|e| e.to_string());
        }
        let names = self.config.names();
        let mut event = Event {
            id: flush.id(subscription_id),
            tenant: subscription.tenant.clone(),
            event_type: "batch".into(),
            data: serde_json::value::RawValue::from_string(flush.body())
                .map_err(|e| e.to_string())?,
            entity_id: None,
            labels: Default::default(),
            occurred_at: None,
            received_at: now,
            seq: 0,
        };
        let stored = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(
                serde_json::to_vec(&event).expect("events serialize"),
            ))
            .message_id(&event.id);
        let ack = self
            .js
            .send_publish(names.batch_subject(&event.tenant), stored)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        event.seq = ack.sequence;
        let count = flush.values.len();
        let task = DeliveryTask {
            subscription_id: subscription_id.to_owned(),
            attempt: 1,
            first_attempt_at: None,
            source: Source::Batch,
            redelivery: false,
            event,
        };
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(
                serde_json::to_vec(&task).expect("tasks serialize"),
            ))
            .message_id(task.dedup_id());
        self.js
            .send_publish(names.delivery_subject(&task.event.tenant), publish)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let again = if flush.truncated {
            now
        } else {
            now + batch.window
        };
        let remaining = self
            .batcher
            .commit(subscription_id, &flush, again)
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.batches.inc();
        tracing::debug!(subscription = %subscription_id, changes = count, remaining, "batch flushed");
        Ok(())
    }
}
