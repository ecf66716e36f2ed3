//! The ingestor: reads published events from the EVENTS stream, matches each
//! against the subscription index, and emits one delivery task per match to
//! DELIVERIES. Malformed events go to the DLQ with the reason; they never stop
//! the consumer.
#![forbid(unsafe_code)]

pub mod batch;
mod flusher;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, Message};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use hookrelay_core::delivery::DeliveryTask;
use hookrelay_core::event::Event;
use hookrelay_core::health::Flag;
use hookrelay_core::index::SubscriptionIndex;
use hookrelay_core::nats::{pull_messages, supervise, ConsumerSpec};
use hookrelay_core::Config;
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;

/// Publish acks one batch awaits at a time (see [`Ingestor::process`]).
const ACKS_IN_FLIGHT: usize = 1024;

/// Awaits every pending publish ack, marking the events whose publish failed.
async fn settle(pending: &mut Vec<(usize, String, PublishAckFuture)>, failed: &mut [bool]) {
    for (i, subject, ack) in pending.drain(..) {
        if let Err(e) = ack.await {
            tracing::warn!(%subject, error = %e, "publish not acknowledged; the event will be redelivered");
            failed[i] = true;
        }
    }
}

/// Header on DLQ messages: why the message was refused.
pub const DLQ_REASON_HEADER: &str = "Hookrelay-Dlq-Reason";
/// Header on DLQ messages: the subject it was published on.
pub const DLQ_SUBJECT_HEADER: &str = "Hookrelay-Dlq-Subject";

/// Why the ingestor could not process a batch; the batch is redelivered.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Consumer(#[from] hookrelay_core::nats::NatsError),
    #[error("the event stream ended")]
    Ended,
    #[error("publishing to {subject}: {message}")]
    Publish { subject: String, message: String },
}

/// Everything the ingestor needs.
pub struct Ingestor {
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub index: Arc<SubscriptionIndex>,
    pub metrics: Metrics,
    pub ready: Flag,
    pub batcher: batch::Batcher,
    /// The subscriptions bucket, to know how far the index must have caught up.
    pub bucket: async_nats::jetstream::kv::Store,
}

impl Ingestor {
    /// Consumes events until `shutdown`, recreating the consumer (and the
    /// streams) after NATS failures.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.index.wait_loaded().await;
        let names = self.config.names();
        let spec = ConsumerSpec {
            stream: names.events_stream(),
            durable: names.consumer("ingestor"),
            filter: names.events_filter(),
            ack_wait: self.config.nats.ack_wait,
            max_ack_pending: 20_000,
            batch: self.config.ingestor.fetch_batch,
        };
        supervise("event consumer", &shutdown, &self.ready, || {
            self.consume(&spec, &shutdown)
        })
        .await;
    }

    async fn consume(
        &self,
        spec: &ConsumerSpec,
        shutdown: &CancellationToken,
    ) -> Result<(), IngestError> {
        let mut messages = pull_messages(&self.js, &self.config, spec)
            .await?
            .ready_chunks(spec.batch);
        self.ready.set(true);
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                chunk = messages.next() => chunk,
            };
            let Some(chunk) = chunk else {
                return Err(IngestError::Ended);
            };
            self.catch_up().await;
            let mut ok = Vec::with_capacity(chunk.len());
            let mut failed = None;
            for message in chunk {
                match message {
                    Ok(message) => ok.push(message),
                    Err(e) => failed = Some(e.to_string()),
                }
            }
            self.process(ok).await?;
            // A pull that failed (missed heartbeats after a NATS restart, a
            // lost connection) starts a fresh consumer rather than hoping the
            // old one recovers.
            if let Some(message) = failed {
                return Err(IngestError::Consumer(
                    hookrelay_core::nats::NatsError::Consumer {
                        name: spec.durable.clone(),
                        message,
                    },
                ));
            }
        }
    }

    /// Fans out a batch: publishes every task and DLQ entry, waits for all
    /// their acks, then acks the events. A failed publish leaves its event
    /// unacked, so it comes back; dedup ids drop the tasks already stored.
    ///
    /// At most [`ACKS_IN_FLIGHT`] acks are awaited at a time: the JetStream
    /// context lends a bounded number of publish permits (5,000), each held
    /// until its ack is awaited, so publishing a large fan-out before
    /// awaiting any ack would wait forever for a permit.
    async fn process(&self, messages: Vec<Message>) -> Result<(), IngestError> {
        let names = self.config.names();
        let mut pending: Vec<(usize, String, PublishAckFuture)> = Vec::new();
        let mut failed = vec![false; messages.len()];
        for (i, message) in messages.iter().enumerate() {
            let (seq, received_at) = message
                .info()
                .map(|info| (info.stream_sequence, info.published))
                .unwrap_or_else(|_| (0, Utc::now()));
            let msg_id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str());
            let parsed = Event::from_stored(
                &names,
                &message.subject,
                msg_id,
                &message.payload,
                seq,
                received_at,
                self.config.limits.max_event_bytes,
            );
            match parsed {
                Ok(event) => {
                    self.metrics
                        .events
                        .with_label_values(&[&event.tenant, &event.event_type])
                        .inc();
                    let matches = self.index.matching(&event);
                    if matches.is_empty() {
                        continue;
                    }
                    let (batched, matches): (Vec<_>, Vec<_>) =
                        matches.into_iter().partition(|s| s.batch.is_some());
                    for subscription in batched {
                        if let Err(error) = self.buffer(&subscription, &event).await {
                            tracing::warn!(subscription = %subscription.id, %error, "cannot buffer a change; the event will be redelivered");
                            failed[i] = true;
                        }
                    }
                    self.metrics
                        .tasks
                        .with_label_values(&[&event.tenant, &event.event_type])
                        .inc_by(matches.len() as u64);
                    let subject = names.delivery_subject(&event.tenant);
                    let mut task = DeliveryTask {
                        subscription_id: String::new(),
                        attempt: 1,
                        first_attempt_at: None,
                        source: Default::default(),
                        redelivery: false,
                        event,
                    };
                    for subscription in matches {
                        task.subscription_id.clone_from(&subscription.id);
                        let payload = serde_json::to_vec(&task).expect("tasks serialize");
                        let publish = jetstream::message::PublishMessage::build()
                            .payload(Bytes::from(payload))
                            .message_id(task.dedup_id());
                        if pending.len() >= ACKS_IN_FLIGHT {
                            settle(&mut pending, &mut failed).await;
                        }
                        let ack = self.publish(&subject, publish).await?;
                        pending.push((i, subject.clone(), ack));
                    }
                }
                Err(error) => {
                    tracing::warn!(subject = %message.subject, seq, %error, "malformed event sent to the DLQ");
                    self.metrics
                        .dlq
                        .with_label_values(&["events", error.kind()])
                        .inc();
                    let subject = names.dlq_subject("events");
                    let mut headers = HeaderMap::new();
                    headers.insert(DLQ_REASON_HEADER, error.to_string().as_str());
                    headers.insert(DLQ_SUBJECT_HEADER, message.subject.as_str());
                    let publish = jetstream::message::PublishMessage::build()
                        .payload(message.payload.clone())
                        .headers(headers)
                        .message_id(format!("events:{seq}"));
                    if pending.len() >= ACKS_IN_FLIGHT {
                        settle(&mut pending, &mut failed).await;
                    }
                    let ack = self.publish(&subject, publish).await?;
                    pending.push((i, subject, ack));
                }
            }
        }
        settle(&mut pending, &mut failed).await;
        for (message, failed) in messages.iter().zip(failed) {
            let result = if failed {
                message
                    .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
            } else {
                message.ack().await
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "event ack failed; it will be redelivered");
            }
        }
        Ok(())
    }

    /// Waits until the index holds every subscription written before this
    /// batch was fetched, so one created a moment before an event matches it
    /// even when this process's KV watch lags (another process wrote it).
    async fn catch_up(&self) {
        let last = match self.bucket.status().await {
            Ok(status) => status.info.state.last_sequence,
            Err(error) => {
                tracing::warn!(%error, "cannot read the subscriptions bucket's revision");
                return;
            }
        };
        if !self
            .index
            .wait_for_revision(last, Duration::from_secs(2))
            .await
        {
            tracing::warn!(
                revision = last,
                "subscription index still behind the bucket after 2s"
            );
        }
    }

    /// Adds `event`'s change to a batched subscription's buffer. A template
    /// that fails on this event skips it for this subscription (logged).
    async fn buffer(
        &self,
        subscription: &hookrelay_core::subscription::Subscription,
        event: &Event,
    ) -> Result<(), String> {
        let batch = subscription.batch.as_ref().expect("batched");
        let change = match self.batcher.change(subscription, batch, event) {
            Ok(change) => change,
            Err(error) => {
                tracing::error!(subscription = %subscription.id, event = %event.id, %error, "batch key or URL template failed; change skipped");
                return Ok(());
            }
        };
        self.batcher
            .add(&subscription.id, batch, &change, Utc::now())
            .await
            .map_err(|e| e.to_string())
    }

    async fn publish(
        &self,
        subject: &str,
        publish: jetstream::message::PublishMessage,
    ) -> Result<PublishAckFuture, IngestError> {
        self.js
            .send_publish(subject.to_owned(), publish)
            .await
            .map_err(|e| IngestError::Publish {
                subject: subject.to_owned(),
                message: e.to_string(),
            })
    }
}
