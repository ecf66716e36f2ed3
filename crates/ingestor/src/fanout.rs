//! Fan-out of one fetched batch of events: each event's batched changes are
//! buffered first, then one task per other match is handed to the
//! dispatcher in process or published to DELIVERIES, malformed events go
//! to the DLQ, and each event is acked only once all of that is stored (or,
//! for a hand-over, settled).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, context::PublishAckFuture, AckKind, Message};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::Utc;
use hookrelay_core::delivery::{dedup_id, DeliveryTask, Source};
use hookrelay_core::event::{Event, EventError};
use hookrelay_core::failure::{backoff, Dependency};
use hookrelay_core::nats::publish_acked;
use hookrelay_core::subscription::Subscription;
use hookrelay_dispatcher::{keep_alive, Settled};
use tokio::sync::oneshot;

use crate::{Ingestor, DLQ_ORIGINAL_SIZE_HEADER, DLQ_REASON_HEADER, DLQ_SUBJECT_HEADER};

/// Publish acks one batch awaits at a time: the JetStream context lends a
/// bounded number of publish permits (5,000), each held until its ack is
/// awaited, so publishing a large fan-out before awaiting any ack would
/// wait forever for a permit.
const ACKS_IN_FLIGHT: usize = 1024;
/// Room left in a DLQ message for its headers and the protocol's framing.
const HEADROOM: usize = 4096;
/// How long buffering one change may take before Redis counts as down.
const REDIS_WAIT: Duration = Duration::from_secs(5);
/// The name transient failures are counted under.
const COMPONENT: &str = "ingestor";

/// A first attempt handed to the dispatcher: what to publish if it does
/// not settle in process.
struct HandedOver {
    subject: String,
    msg_id: String,
    task: DeliveryTask,
    settled: oneshot::Receiver<Settled>,
}

/// What became of one fetched event.
#[derive(Default)]
struct Fate {
    /// Something of it was not stored: it comes back after a backoff.
    failed: bool,
    local: Vec<HandedOver>,
}

impl Ingestor {
    /// Fans out `messages`, then acks (or, after a failure, NAKs with a
    /// growing delay) each of them. A redelivered event publishes its tasks
    /// again under the same msg-ids, which JetStream's dedup drops.
    pub(crate) async fn process(&self, messages: Vec<Message>) {
        let mut pending: Vec<(usize, PublishAckFuture)> = Vec::new();
        let mut fates: Vec<Fate> = messages.iter().map(|_| Fate::default()).collect();
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
                &self.config.names(),
                &message.subject,
                msg_id,
                &message.payload,
                seq,
                received_at,
                self.config.limits.max_event_bytes,
            );
            let event = match parsed {
                Ok(event) => event,
                Err(error) => {
                    let publish = self.dead_letter(message, seq, &error);
                    let subject = self.config.names().dlq_subject("events");
                    self.queue(&mut pending, &mut fates, i, subject, publish)
                        .await;
                    continue;
                }
            };
            self.metrics
                .events
                .with_label_values(&[&event.tenant, &event.event_type])
                .inc();
            let matches = self.index.matching(&event);
            if matches.is_empty() {
                continue;
            }
            let (batched, direct): (Vec<_>, Vec<_>) =
                matches.into_iter().partition(|s| s.batch.is_some());
            // Changes first: while Redis is down the event comes back before
            // any of its tasks was published, so none is published twice.
            if !self.buffer_all(&batched, &event).await {
                fates[i].failed = true;
                continue;
            }
            self.metrics
                .tasks
                .with_label_values(&[&event.tenant, &event.event_type])
                .inc_by(direct.len() as u64);
            let subject = self.config.names().delivery_subject(&event.tenant);
            let handoff = self.dispatcher.as_ref().filter(|_| {
                self.config.ingestor.handoff
                    && direct.len() <= self.config.ingestor.handoff_max_fanout
            });
            let event = Arc::new(event);
            for subscription in direct {
                let task = DeliveryTask::first(&subscription.id, Source::Event, seq, received_at);
                let msg_id = dedup_id(&event.id, &subscription.id);
                if let Some(settled) =
                    handoff.and_then(|d| d.offer(task.clone(), &event, &subscription))
                {
                    self.metrics.handed_over.inc();
                    fates[i].local.push(HandedOver {
                        subject: subject.clone(),
                        msg_id,
                        task,
                        settled,
                    });
                    continue;
                }
                let publish = jetstream::message::PublishMessage::build()
                    .payload(Bytes::from(task.to_json()))
                    .message_id(msg_id);
                self.queue(&mut pending, &mut fates, i, subject.clone(), publish)
                    .await;
            }
        }
        self.settle(&mut pending, &mut fates).await;
        for (message, fate) in messages.into_iter().zip(fates) {
            let delivered = message.info().map_or(1, |info| info.delivered);
            // What waits keeps only the acker: not the payload (up to the
            // max payload), of which the dispatcher holds its own copy.
            let (_, acker) = message.split();
            if fate.local.is_empty() {
                conclude(&acker, delivered, !fate.failed).await;
                continue;
            }
            let js = self.js.clone();
            let spilled = self.metrics.spilled.clone();
            let ack_wait = self.config.nats.ack_wait;
            self.waiting.spawn(async move {
                let stored = spill_unsettled(&js, &acker, ack_wait, fate.local, &spilled).await;
                conclude(&acker, delivered, stored && !fate.failed).await;
            });
        }
    }

    /// Buffers `event`'s change for each batched subscription; false if
    /// Redis could not take one (the event is then tried again).
    async fn buffer_all(&self, batched: &[Arc<Subscription>], event: &Event) -> bool {
        for subscription in batched {
            let batch = subscription.batch.as_ref().expect("batched");
            let change = match self.batcher.change(subscription, batch, event) {
                Ok(change) => change,
                Err(error) => {
                    // Permanent: this event cannot make a change for it.
                    tracing::error!(subscription = %subscription.id, event = %event.id, %error, "batch key or URL template failed; change skipped");
                    continue;
                }
            };
            // Bounded: while Redis reconnects a command can wait far
            // longer, holding up every event fetched with this one.
            let added = tokio::time::timeout(
                REDIS_WAIT,
                self.batcher
                    .add(&subscription.id, batch, &change, Utc::now()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "no answer from Redis",
                    format!("within {REDIS_WAIT:?}"),
                )))
            });
            if let Err(error) = added {
                self.transients.failed(COMPONENT, Dependency::Redis);
                tracing::warn!(subscription = %subscription.id, %error, "cannot buffer a change; the event will be tried again");
                return false;
            }
        }
        if !batched.is_empty() {
            self.transients.recovered(COMPONENT, Dependency::Redis);
        }
        true
    }

    /// The DLQ entry of a message that is not an event: its body (cut to
    /// what NATS takes beside the headers) and why.
    fn dead_letter(
        &self,
        message: &Message,
        seq: u64,
        error: &EventError,
    ) -> jetstream::message::PublishMessage {
        tracing::warn!(subject = %message.subject, seq, %error, "malformed event sent to the DLQ");
        self.metrics
            .dlq
            .with_label_values(&["events", error.kind()])
            .inc();
        let mut headers = HeaderMap::new();
        headers.insert(DLQ_REASON_HEADER, error.to_string().as_str());
        headers.insert(DLQ_SUBJECT_HEADER, message.subject.as_str());
        let max = self.js.client().server_info().max_payload.max(1 << 20) - HEADROOM;
        let mut payload = message.payload.clone();
        if payload.len() > max {
            headers.insert(DLQ_ORIGINAL_SIZE_HEADER, payload.len().to_string().as_str());
            payload.truncate(max);
        }
        jetstream::message::PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(format!("events:{seq}"))
    }

    /// Sends one publish of event `i`, awaiting earlier acks first when
    /// [`ACKS_IN_FLIGHT`] are outstanding.
    async fn queue(
        &self,
        pending: &mut Vec<(usize, PublishAckFuture)>,
        fates: &mut [Fate],
        i: usize,
        subject: String,
        publish: jetstream::message::PublishMessage,
    ) {
        if pending.len() >= ACKS_IN_FLIGHT {
            self.settle(pending, fates).await;
        }
        match self.js.send_publish(subject.clone(), publish).await {
            Ok(ack) => pending.push((i, ack)),
            Err(error) => {
                self.transients.failed(COMPONENT, Dependency::Nats);
                tracing::warn!(%subject, %error, "cannot publish; the event will be tried again");
                fates[i].failed = true;
            }
        }
    }

    /// Awaits every pending publish ack, marking the events whose publish failed.
    async fn settle(&self, pending: &mut Vec<(usize, PublishAckFuture)>, fates: &mut [Fate]) {
        for (i, ack) in pending.drain(..) {
            if let Err(error) = ack.await {
                self.transients.failed(COMPONENT, Dependency::Nats);
                tracing::warn!(%error, "publish not acknowledged; the event will be tried again");
                fates[i].failed = true;
            }
        }
    }
}

/// Waits for `local` deliveries to settle, keeping `message` ours meanwhile,
/// and queues in DELIVERIES those that could not settle in process.
/// Whether all of them are now settled or durably queued.
async fn spill_unsettled(
    js: &jetstream::Context,
    message: &Acker,
    ack_wait: Duration,
    local: Vec<HandedOver>,
    spilled: &prometheus::IntCounter,
) -> bool {
    let outcomes = keep_alive(
        message,
        ack_wait,
        futures::future::join_all(local.into_iter().map(|handed| async move {
            let settled = (&mut { handed.settled }).await;
            (handed.subject, handed.msg_id, handed.task, settled)
        })),
    )
    .await;
    let mut stored = true;
    for (subject, msg_id, task, settled) in outcomes {
        if settled == Ok(Settled::Done) {
            continue;
        }
        spilled.inc();
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(task.to_json()))
            .message_id(msg_id);
        if let Err(error) = publish_acked(js, subject, publish).await {
            tracing::warn!(%error, "cannot queue an unsettled delivery; the event will be tried again");
            stored = false;
        }
    }
    stored
}

/// Acks the message behind `acker`, or NAKs it to come back after a delay
/// that grows with each delivery (it was `delivered` times so far).
async fn conclude(acker: &Acker, delivered: i64, stored: bool) {
    let result = if stored {
        acker.ack().await
    } else {
        acker.ack_with(AckKind::Nak(Some(backoff(delivered)))).await
    };
    if let Err(error) = result {
        tracing::warn!(%error, "event ack failed; it will be redelivered");
    }
}
