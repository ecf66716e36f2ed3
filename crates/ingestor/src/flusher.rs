//! The flusher: turns due batches into delivery tasks. The batch itself is
//! stored in the BATCHES stream first (the dispatcher reads it from there),
//! then its task (a reference) goes to DELIVERIES, then the sent changes
//! leave the buffer.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::Utc;
use hookrelay_core::delivery::{dedup_id, DeliveryTask, Source};
use hookrelay_core::event::Event;
use hookrelay_core::failure::{Backoff, Dependency};
use hookrelay_core::nats::{publish_acked, PublishError};
use tokio_util::sync::CancellationToken;

use crate::Ingestor;

const CLAIM: usize = 100;
const LEASE: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_millis(25);

impl Ingestor {
    /// Flushes due batches until `shutdown`.
    pub async fn run_flusher(self: Arc<Self>, shutdown: CancellationToken) {
        self.index.wait_loaded().await;
        let mut pause_after_failure = Backoff::up_to(Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            let pause = match self.batcher.claim(Utc::now(), LEASE, CLAIM).await {
                Ok(claimed) => {
                    pause_after_failure.succeeded();
                    self.transients.recovered("flusher", Dependency::Redis);
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
                    self.transients.failed("flusher", Dependency::Redis);
                    pause_after_failure.failed()
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn flush(&self, subscription_id: &str) -> Result<(), FlushError> {
        let subscription = self.index.get(subscription_id);
        let Some((subscription, batch)) =
            subscription.and_then(|s| s.batch.clone().map(|b| (s, b)))
        else {
            tracing::info!(subscription = %subscription_id, "batch of a deleted or unbatched subscription dropped");
            return Ok(self.batcher.discard(subscription_id).await?);
        };
        let flush = self.batcher.read(subscription_id, batch.max_size).await?;
        let now = Utc::now();
        if flush.keys.is_empty() {
            self.batcher.commit(subscription_id, &flush, now).await?;
            return Ok(());
        }
        let names = self.config.names();
        let event = Event {
            id: flush.id(subscription_id),
            tenant: subscription.tenant.clone(),
            event_type: "batch".into(),
            data: serde_json::value::RawValue::from_string(flush.body())?,
            entity_id: None,
            labels: Default::default(),
            occurred_at: None,
            received_at: now,
            seq: 0,
            traceparent: None,
        };
        // The batch is stored once, in BATCHES; its task refers to it.
        let stored = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(
                serde_json::to_vec(&event).expect("events serialize"),
            ))
            .message_id(&event.id);
        let ack = publish_acked(&self.js, names.batch_subject(&event.tenant), stored).await?;
        let count = flush.values.len();
        let task = DeliveryTask::first(subscription_id, Source::Batch, ack.sequence, now);
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(task.to_json()))
            .message_id(dedup_id(&event.id, subscription_id));
        publish_acked(&self.js, names.delivery_subject(&event.tenant), publish).await?;
        let again = if flush.truncated {
            now
        } else {
            now + batch.window
        };
        let remaining = self.batcher.commit(subscription_id, &flush, again).await?;
        self.metrics.batches.inc();
        tracing::debug!(subscription = %subscription_id, changes = count, remaining, "batch flushed");
        Ok(())
    }
}

/// A batch that could not be flushed now; its lease expires and it is
/// flushed again.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("batch buffer: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("batch body is not JSON: {0}")]
    Body(#[from] serde_json::Error),
}
