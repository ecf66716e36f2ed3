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
use hookrelay_core::failure::FailureKind;
use hookrelay_core::failure::{backoff, Dependency};
use hookrelay_core::nats::{detach, max_message_bytes, publish_acked, publish_failure_kind};
use hookrelay_core::subscription::{DeliveryOrder, Subscription};
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
/// The longest an ordered subscription's later events are given back
/// while an earlier one could not be queued.
const ORDER_BLOCK_MAX: Duration = Duration::from_secs(60);

/// A delivery task to queue in DELIVERIES: its subject, dedup id and body.
struct Queued {
    subject: String,
    msg_id: String,
    task: DeliveryTask,
}

impl Queued {
    fn publish(&self) -> jetstream::message::PublishMessage {
        jetstream::message::PublishMessage::build()
            .payload(Bytes::from(self.task.to_json()))
            .message_id(&self.msg_id)
    }
}

/// How a task is set aside instead of queued.
enum Aside {
    /// In its open circuit's held set, as this member.
    Hold(String),
    /// In the schedule, as this entry, due then.
    Park(
        hookrelay_dispatcher::schedule::RetryEntry,
        chrono::DateTime<Utc>,
    ),
}

/// A first attempt handed to the dispatcher, and what to queue if it does
/// not settle in process.
struct HandedOver {
    queued: Queued,
    settled: oneshot::Receiver<Settled>,
}

/// What became of one fetched event.
#[derive(Default)]
struct Fate {
    /// Something of it was not stored (a DLQ entry, a change): it comes
    /// back after a backoff.
    failed: bool,
    local: Vec<HandedOver>,
    /// Tasks whose publish failed: tried again (with backoff, the event
    /// kept alive) rather than redelivering the event, whose hand-overs
    /// would then be sent again.
    unsent: Vec<Queued>,
}

/// `redis`, or a transient error if Redis does not answer within
/// [`REDIS_WAIT`] (while it reconnects a command can wait far longer,
/// holding up every event fetched with this one).
async fn within_redis_wait<T>(
    redis: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(REDIS_WAIT, redis)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "no answer from Redis",
                format!("within {REDIS_WAIT:?}"),
            )))
        })
}

/// Tries of a task publish that failed before the event is given back.
const PUBLISH_TRIES: i64 = 4;

impl Ingestor {
    /// Fans out `messages`, then acks (or, after a failure, NAKs with a
    /// growing delay) each of them. A redelivered event publishes its tasks
    /// again under the same msg-ids, which JetStream's dedup drops.
    pub(crate) async fn process(&self, messages: Vec<Message>) {
        let names = self.config.names();
        let mut pending: Vec<Pending> = Vec::new();
        let mut fates: Vec<Fate> = messages.iter().map(|_| Fate::default()).collect();
        // Tasks of open circuits and of hung receivers, set aside in Redis
        // together after the loop.
        let mut aside: Vec<(usize, Queued, Aside)> = Vec::new();
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
            let event = match parsed {
                Ok(mut event) => {
                    event.traceparent =
                        hookrelay_core::trace::from_nats_headers(message.headers.as_ref())
                            .map(|parent| parent.header());
                    event
                }
                Err(error) => {
                    let publish = self.dead_letter(message, seq, &error);
                    let subject = names.dlq_subject("events");
                    self.queue(&mut pending, &mut fates, i, subject, publish, None)
                        .await;
                    continue;
                }
            };
            if let Err(error) = self.check_schema(&event) {
                let publish = self.dead_letter(message, seq, &error);
                let subject = names.dlq_subject("events");
                self.queue(&mut pending, &mut fates, i, subject, publish, None)
                    .await;
                continue;
            }
            self.metrics
                .events
                .with_label_values(&[&event.tenant, &event.event_type])
                .inc();
            let matches = self.index.matching(&event);
            hookrelay_core::otlp::ingest(&event, &message.subject, matches.len());
            if matches.is_empty() {
                continue;
            }
            let (batched, direct): (Vec<_>, Vec<_>) =
                matches.into_iter().partition(|s| s.batch.is_some());
            let (ordered, direct): (Vec<_>, Vec<_>) = direct
                .into_iter()
                .partition(|s| s.ordering == DeliveryOrder::Fifo);
            // Changes and ordered queues first: while Redis is down the
            // event comes back before any of its tasks was published, so
            // none is published twice.
            if !self.buffer_all(&batched, &event).await
                || !self.queue_ordered(&ordered, seq, received_at).await
            {
                fates[i].failed = true;
                continue;
            }
            self.metrics
                .tasks
                .with_label_values(&[&event.tenant, &event.event_type])
                .inc_by(direct.len() as u64);
            let subject = names.delivery_subject(&event.tenant);
            let handoff = self
                .dispatcher
                .as_ref()
                .filter(|_| direct.len() <= self.config.ingestor.handoff_max_fanout);
            let event = Arc::new(event);
            for subscription in direct {
                let task = DeliveryTask::first(&subscription.id, Source::Event, seq, received_at);
                let msg_id = dedup_id(&event.id, &subscription.id);
                let queued = Queued {
                    subject: subject.clone(),
                    msg_id,
                    task,
                };
                let here = self.dispatcher.as_ref();
                if let Some(member) = here.and_then(|d| d.would_hold(&queued.task)) {
                    aside.push((i, queued, Aside::Hold(member)));
                    continue;
                }
                if let Some(settled) =
                    handoff.and_then(|d| d.offer(queued.task.clone(), &event, &subscription))
                {
                    self.metrics.handed_over.inc();
                    fates[i].local.push(HandedOver { queued, settled });
                    continue;
                }
                if let Some((entry, due)) = here.and_then(|d| d.would_park(&queued.task)) {
                    aside.push((i, queued, Aside::Park(entry, due)));
                    continue;
                }
                let publish = queued.publish();
                self.queue(
                    &mut pending,
                    &mut fates,
                    i,
                    subject.clone(),
                    publish,
                    Some(queued),
                )
                .await;
            }
        }
        self.set_aside(aside, &mut fates).await;
        self.settle(&mut pending, &mut fates).await;
        for (message, fate) in messages.into_iter().zip(fates) {
            if fate.local.is_empty() && fate.unsent.is_empty() {
                let delivered = message.info().map_or(1, |info| info.delivered);
                conclude(&message.split().1, delivered, !fate.failed).await;
                continue;
            }
            // What waits keeps only the acker: not the payload (up to the
            // max payload), of which the dispatcher holds its own copy.
            let (acker, delivered) = detach(message);
            let js = self.js.clone();
            let spilled = self.metrics.spilled.clone();
            let ack_wait = self.config.nats.ack_wait;
            self.waiting.spawn(async move {
                let stored = keep_alive(
                    &acker,
                    ack_wait,
                    queue_unsettled(&js, fate.local, fate.unsent, &spilled),
                )
                .await;
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
            let added =
                within_redis_wait(
                    self.batcher
                        .add(&subscription.id, batch, &change, Utc::now()),
                )
                .await;
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

    /// Holds the fetch's tasks of open circuits and parks those of hung
    /// receivers, a round trip for each kind; what Redis does not take goes
    /// to DELIVERIES instead (the dispatcher sets it aside from there), so
    /// their events' other deliveries are not redone.
    async fn set_aside(&self, aside: Vec<(usize, Queued, Aside)>, fates: &mut [Fate]) {
        let Some(dispatcher) = self.dispatcher.as_ref().filter(|_| !aside.is_empty()) else {
            return;
        };
        let mut held = Vec::new();
        let mut parked = Vec::new();
        for (_, queued, how) in &aside {
            match how {
                Aside::Hold(member) => {
                    held.push((queued.task.subscription_id.as_str(), member.clone()))
                }
                Aside::Park(entry, due) => parked.push((entry.clone(), *due)),
            }
        }
        let stored = within_redis_wait(async {
            if !held.is_empty() {
                dispatcher.hold_fetched(&held).await?;
            }
            if !parked.is_empty() {
                dispatcher.park_fetched(&parked).await?;
            }
            Ok::<_, redis::RedisError>(())
        })
        .await;
        let Err(error) = stored else {
            return;
        };
        self.transients.failed(COMPONENT, Dependency::Redis);
        tracing::warn!(%error, "cannot set aside tasks of open circuits and hung receivers; queueing them instead");
        drop(held);
        // Some may be stored already: set aside twice, a task is sent
        // twice at worst (at least once).
        for (i, queued, _) in aside {
            fates[i].unsent.push(queued);
        }
    }

    /// Queues the first attempt of event `seq` for each ordered
    /// subscription, in the order events are read; false if one could not
    /// be queued, or an earlier event of that subscription is still
    /// waiting to be (the event is then tried again).
    async fn queue_ordered(
        &self,
        ordered: &[Arc<Subscription>],
        seq: u64,
        received_at: chrono::DateTime<Utc>,
    ) -> bool {
        for subscription in ordered {
            if self.overtakes(&subscription.id, seq) {
                return false;
            }
            let task = DeliveryTask::first(&subscription.id, Source::Event, seq, received_at);
            let queued = within_redis_wait(self.ordered.enqueue(&subscription.id, &[&task])).await;
            let mut blocked = self.ordered_blocked.lock().expect("not poisoned");
            match queued {
                Ok(()) => {
                    blocked.remove(&subscription.id);
                }
                Err(error) => {
                    self.transients.failed(COMPONENT, Dependency::Redis);
                    tracing::warn!(subscription = %subscription.id, %error, "cannot queue an ordered delivery; the event will be tried again");
                    let first = blocked
                        .get(&subscription.id)
                        .map_or(seq, |(s, _)| (*s).min(seq));
                    blocked.insert(subscription.id.clone(), (first, std::time::Instant::now()));
                    return false;
                }
            }
        }
        true
    }

    /// Whether event `seq` would overtake an earlier one of the same
    /// ordered subscription that could not be queued yet. (That event
    /// comes back within the redelivery backoff; a block older than
    /// [`ORDER_BLOCK_MAX`] is let go, lest a lost event stop the
    /// subscription for good.)
    fn overtakes(&self, subscription_id: &str, seq: u64) -> bool {
        let mut blocked = self.ordered_blocked.lock().expect("not poisoned");
        match blocked.get(subscription_id) {
            Some((_, since)) if since.elapsed() > ORDER_BLOCK_MAX => {
                blocked.remove(subscription_id);
                false
            }
            Some((first, _)) => seq > *first,
            None => false,
        }
    }

    /// The DLQ entry of a message that is not an event: its body (cut to
    /// what NATS takes beside the headers) and why.
    /// Checks a catalogued event against its type's current schema: an
    /// invalid one is counted, and refused where the type rejects.
    fn check_schema(&self, event: &Event) -> Result<(), EventError> {
        use hookrelay_catalog::{model::Validation, Check};
        let Some(known) = self.catalog.lookup(&event.tenant, &event.event_type) else {
            return Ok(());
        };
        let result = match known.check(&event.data) {
            Check::Unchecked => return Ok(()),
            Check::Valid => "valid",
            Check::Invalid(violation) if known.validation == Validation::Reject => {
                self.metrics
                    .schema
                    .with_label_values(&[&event.tenant, &event.event_type, "rejected"])
                    .inc();
                return Err(EventError::Schema {
                    event_type: known.name.clone(),
                    version: known.version,
                    violation: violation.to_string(),
                });
            }
            Check::Invalid(_) => "invalid",
        };
        self.metrics
            .schema
            .with_label_values(&[&event.tenant, &event.event_type, result])
            .inc();
        Ok(())
    }

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
        let max = max_message_bytes(&self.js).saturating_sub(HEADROOM);
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

    /// Sends one publish of event `i` (`queued` when it is a task), awaiting
    /// earlier acks first when [`ACKS_IN_FLIGHT`] are outstanding.
    async fn queue(
        &self,
        pending: &mut Vec<Pending>,
        fates: &mut [Fate],
        i: usize,
        subject: String,
        publish: jetstream::message::PublishMessage,
        queued: Option<Queued>,
    ) {
        if pending.len() >= ACKS_IN_FLIGHT {
            self.settle(pending, fates).await;
        }
        match self.js.send_publish(subject.clone(), publish).await {
            Ok(ack) => pending.push((i, queued, ack)),
            Err(error) => {
                self.unstored(&mut fates[i], queued, &error);
            }
        }
    }

    /// Awaits every pending publish ack, noting what was not stored.
    async fn settle(&self, pending: &mut Vec<Pending>, fates: &mut [Fate]) {
        // Awaited together: each ack's timeout starts when it is first
        // polled, so one by one, after NATS lost the replies, would take the
        // timeout once per publish.
        let acked = futures::future::join_all(
            pending
                .drain(..)
                .map(|(i, queued, ack)| async move { (i, queued, ack.await) }),
        )
        .await;
        for (i, queued, acked) in acked {
            if let Err(error) = acked {
                self.unstored(&mut fates[i], queued, &error);
            }
        }
    }
}

/// A publish of event `.0` (a task when `.1` is set) awaiting its ack.
type Pending = (usize, Option<Queued>, PublishAckFuture);

impl Ingestor {
    /// A publish of an event was not stored: a task is tried again; a DLQ
    /// entry by redelivering the event, unless it can never fit.
    fn unstored(
        &self,
        fate: &mut Fate,
        queued: Option<Queued>,
        error: &jetstream::context::PublishError,
    ) {
        match (queued, publish_failure_kind(error)) {
            (Some(queued), _) => {
                self.transients.failed(COMPONENT, Dependency::Nats);
                tracing::warn!(%error, "a delivery task was not stored; trying again");
                fate.unsent.push(queued);
            }
            (None, FailureKind::Permanent) => {
                tracing::error!(%error, "DLQ entry can never be stored; the event is dropped");
            }
            (None, FailureKind::Transient) => {
                self.transients.failed(COMPONENT, Dependency::Nats);
                tracing::warn!(%error, "DLQ entry not stored; the event will be tried again");
                fate.failed = true;
            }
        }
    }
}

/// Waits for `local` deliveries to settle and queues in DELIVERIES those
/// that could not settle in process, and the `unsent` tasks, trying each
/// publish up to [`PUBLISH_TRIES`] times with backoff. Whether all of them
/// are now settled or durably queued.
async fn queue_unsettled(
    js: &jetstream::Context,
    local: Vec<HandedOver>,
    mut unsent: Vec<Queued>,
    spilled: &prometheus::IntCounter,
) -> bool {
    let outcomes = futures::future::join_all(local.into_iter().map(|handed| async move {
        let settled = handed.settled.await;
        (handed.queued, settled)
    }))
    .await;
    for (queued, settled) in outcomes {
        if settled != Ok(Settled::Done) {
            spilled.inc();
            unsent.push(queued);
        }
    }
    for queued in unsent {
        let mut tries = 0;
        loop {
            tries += 1;
            match publish_acked(js, queued.subject.clone(), queued.publish()).await {
                Ok(_) => break,
                Err(error) if tries < PUBLISH_TRIES => {
                    tracing::warn!(%error, "cannot queue a delivery; trying again");
                    tokio::time::sleep(backoff(tries)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot queue a delivery; the event will be tried again");
                    return false;
                }
            }
        }
    }
    true
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
