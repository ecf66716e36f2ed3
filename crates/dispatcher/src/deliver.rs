//! One delivery: find the subscription, wait for a permit, send, then decide
//! what follows a failure (a retry in Redis, or giving up with a DLQ entry),
//! record the attempt, and only then ack the task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, AckKind, Message};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookrelay_core::delivery::{AttemptRecord, DeliveryTask, GiveUp, Outcome, RecordedRequest};
use hookrelay_core::retry::{self, Next};
use hookrelay_core::signing::webhook_id;
use hookrelay_core::subscription::Subscription;

use crate::request;
use crate::schedule::RetryEntry;
use crate::sender::SendResult;
use crate::{Dispatcher, DLQ_REASON_HEADER};

/// Waiting tasks per in-flight slot beyond which a subscription's tasks are
/// parked in the schedule instead of holding consumer capacity.
const WAITING_PER_SLOT: usize = 4;

/// What follows an attempt.
enum After {
    Done,
    RetryAt(DateTime<Utc>),
    GiveUp(GiveUp),
}

impl Dispatcher {
    pub(crate) async fn deliver(self: Arc<Self>, message: Message) {
        let task: DeliveryTask = match serde_json::from_slice(&message.payload) {
            Ok(task) => task,
            Err(error) => {
                return self
                    .dead_letter(message, &format!("unreadable delivery task: {error}"))
                    .await
            }
        };
        let subscription = match self.subscription(&task.subscription_id).await {
            Ok(subscription) => subscription.filter(|s| s.enabled),
            Err(error) => {
                tracing::warn!(subscription = %task.subscription_id, %error, "cannot read subscription; retrying the task");
                return nak(&message).await;
            }
        };
        let Some(subscription) = subscription else {
            self.limits.forget(&task.subscription_id);
            self.shapers.forget(&task.subscription_id);
            let result = SendResult::without_response(
                Outcome::Disabled,
                "subscription deleted or disabled before delivery",
            );
            let record = self.record(
                &task,
                None,
                &result,
                Utc::now(),
                After::GiveUp(GiveUp::Disabled),
            );
            return self.finish(message, record).await;
        };
        let limit = subscription
            .max_in_flight
            .unwrap_or(self.config.dispatcher.default_max_in_flight);
        if self.limits.should_park(
            &subscription.id,
            WAITING_PER_SLOT,
            std::time::Instant::now(),
        ) {
            return self.park(message, &task).await;
        }
        let permits = with_progress(&message, self.config.dispatcher.ack_wait, async {
            let own = self.limits.acquire(&subscription.id, limit).await;
            let global = self
                .global
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            (own, global)
        })
        .await;
        let started_at = Utc::now();
        let timeout = subscription
            .timeout
            .unwrap_or(self.config.dispatcher.default_timeout);
        let built = self
            .shapers
            .get(&subscription)
            .map_err(request::BuildError::from)
            .and_then(|shaper| request::build(&subscription, &shaper, &task.event, started_at));
        let (request, result) = match built {
            Ok(request) => {
                let recorded = request::recorded(&request);
                self.metrics.in_flight.inc();
                // A request may outlast the ack wait (timeouts go up to 5 min):
                // keep the task ours meanwhile, or it would be sent twice.
                let send = self
                    .sender
                    .send(request, timeout, subscription.success_rule);
                let result = with_progress(&message, self.config.dispatcher.ack_wait, send).await;
                self.metrics.in_flight.dec();
                self.limits.record(&subscription.id, result.duration);
                (Some(recorded), result)
            }
            Err(error) => (
                None,
                SendResult::without_response(Outcome::Error, &error.to_string()),
            ),
        };
        drop(permits);
        self.metrics
            .requests
            .with_label_values(&[result.outcome.as_str()])
            .inc();
        let after = if result.outcome.is_success() {
            After::Done
        } else if request.is_none() {
            // The request could not be built (a template failing on this
            // event): trying again would fail the same way.
            After::GiveUp(GiveUp::NoRetry)
        } else {
            match self
                .after_failure(&subscription, &task, &result, started_at)
                .await
            {
                Ok(after) => after,
                Err(error) => {
                    // The attempt is recorded; the task comes back and is sent again.
                    tracing::warn!(subscription = %subscription.id, %error, "cannot schedule the retry; the task will be redelivered");
                    let record = self.record(&task, request, &result, started_at, After::Done);
                    self.publish_record(&record).await.ok();
                    return nak(&message).await;
                }
            }
        };
        if let After::GiveUp(give_up) = after {
            tracing::info!(
                subscription = %subscription.id,
                event = %task.event.id,
                attempt = task.attempt,
                outcome = result.outcome.as_str(),
                reason = %result.reason,
                give_up = give_up.as_str(),
                "delivery given up"
            );
            self.metrics
                .given_up
                .with_label_values(&[give_up.as_str()])
                .inc();
            let reason = format!(
                "gave up ({}) after attempt {}: {}",
                give_up.as_str(),
                task.attempt,
                result.reason
            );
            if let Err(error) = self
                .publish_dlq(
                    &message.payload,
                    &reason,
                    &format!("{}:given-up", task.dedup_id()),
                )
                .await
            {
                tracing::warn!(%error, "cannot store the DLQ entry; the task will be redelivered");
                return nak(&message).await;
            }
        }
        let record = self.record(&task, request, &result, started_at, after);
        self.finish(message, record).await;
    }

    /// Decides what follows a failed attempt, storing a retry if there is one.
    async fn after_failure(
        &self,
        subscription: &Subscription,
        task: &DeliveryTask,
        result: &SendResult,
        started_at: DateTime<Utc>,
    ) -> Result<After, redis::RedisError> {
        let status = result.response.as_ref().map(|r| r.status);
        if let Err(give_up) = retry::retryable(result.outcome, status) {
            if give_up == GiveUp::Gone {
                self.disable(&subscription.id).await;
            }
            return Ok(After::GiveUp(give_up));
        }
        let policy = subscription
            .retry_policy
            .clone()
            .unwrap_or_else(retry::default_policy);
        let first_attempt_at = task.first_attempt_at.unwrap_or(started_at);
        let now = Utc::now();
        let age = (now - first_attempt_at).to_std().unwrap_or_default();
        let retention = self.config.nats.events_max_age;
        let next = policy.next(task.attempt, age, retention, &mut rand::rng());
        match next {
            Next::GiveUp(give_up) => Ok(After::GiveUp(give_up)),
            Next::RetryIn(delay) => {
                let delay = retry::clamp_retry_after(delay, result.retry_after);
                let due = now + delay;
                let entry = RetryEntry {
                    seq: task.event.seq,
                    subscription_id: subscription.id.clone(),
                    attempt: task.attempt + 1,
                    first_attempt_ms: first_attempt_at.timestamp_millis(),
                    source: task.source,
                };
                self.schedule.add(&entry, due).await?;
                self.metrics.retries_scheduled.inc();
                Ok(After::RetryAt(due))
            }
        }
    }

    /// Parks a task of a saturated subscription in the schedule, as the same
    /// attempt, so it waits in Redis rather than in the consumer's window.
    async fn park(&self, message: Message, task: &DeliveryTask) {
        let entry = RetryEntry {
            seq: task.event.seq,
            subscription_id: task.subscription_id.clone(),
            attempt: task.attempt,
            first_attempt_ms: task.first_attempt_at.map_or(0, |at| at.timestamp_millis()),
            source: task.source,
        };
        let park_for = self
            .limits
            .park_for(&task.subscription_id, std::time::Instant::now());
        let due = Utc::now() + chrono::Duration::from_std(park_for).unwrap_or_default();
        match self.schedule.add(&entry, due).await {
            Ok(()) => {
                self.metrics.parked.inc();
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "parked task ack failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot park the task; it will be redelivered");
                nak(&message).await
            }
        }
    }

    /// Disables a subscription whose receiver answered 410 Gone.
    async fn disable(&self, id: &str) {
        for _ in 0..5 {
            let Ok(Some(entry)) = self.bucket.entry(id).await else {
                return;
            };
            if entry.operation != kv::Operation::Put {
                return;
            }
            let Ok(mut subscription) = serde_json::from_slice::<Subscription>(&entry.value) else {
                return;
            };
            if !subscription.enabled {
                return;
            }
            subscription.enabled = false;
            subscription.updated_at = Utc::now();
            let value =
                Bytes::from(serde_json::to_vec(&subscription).expect("subscriptions serialize"));
            match self.bucket.update(id, value, entry.revision).await {
                Ok(_) => {
                    tracing::warn!(subscription = %id, "receiver answered 410 Gone: subscription disabled");
                    return;
                }
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(error) => {
                    tracing::warn!(subscription = %id, %error, "cannot disable subscription after 410 Gone");
                    return;
                }
            }
        }
    }

    /// The subscription from the index, or, when this process's index has not
    /// caught up with a subscription another process just created, from KV.
    async fn subscription(&self, id: &str) -> Result<Option<Arc<Subscription>>, kv::EntryError> {
        if let Some(subscription) = self.index.get(id) {
            return Ok(Some(subscription));
        }
        let Some(entry) = self.bucket.entry(id).await? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        Ok(serde_json::from_slice::<Subscription>(&entry.value)
            .ok()
            .map(|mut subscription| {
                subscription.revision = entry.revision;
                Arc::new(subscription)
            }))
    }

    fn record(
        &self,
        task: &DeliveryTask,
        request: Option<RecordedRequest>,
        result: &SendResult,
        started_at: DateTime<Utc>,
        after: After,
    ) -> AttemptRecord {
        let (next_attempt_at, give_up) = match after {
            After::Done => (None, None),
            After::RetryAt(at) => (Some(at), None),
            After::GiveUp(give_up) => (None, Some(give_up)),
        };
        AttemptRecord {
            id: format!("att_{}", ulid::Ulid::new()),
            event_id: task.event.id.clone(),
            subscription_id: task.subscription_id.clone(),
            tenant: task.event.tenant.clone(),
            event_type: task.event.event_type.clone(),
            webhook_id: webhook_id(&task.event.id, &task.subscription_id),
            attempt: task.attempt,
            outcome: result.outcome,
            reason: result.reason.clone(),
            request: request.unwrap_or_default(),
            response: result.response.clone(),
            started_at,
            duration_ms: result.duration.as_millis() as u64,
            event_received_at: task.event.received_at,
            next_attempt_at,
            give_up,
            event_seq: task.event.seq,
            source: task.source,
            redelivery: task.redelivery,
        }
    }

    pub(crate) async fn publish_record(&self, record: &AttemptRecord) -> Result<(), String> {
        let subject = self
            .config
            .names()
            .attempt_subject(&record.tenant, &record.subscription_id);
        let payload = Bytes::from(serde_json::to_vec(record).expect("records serialize"));
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(&record.id);
        match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Publishes the attempt record, then acks the task. If the record cannot
    /// be stored the task is left unacked and comes back.
    async fn finish(&self, message: Message, record: AttemptRecord) {
        let result = match self.publish_record(&record).await {
            Ok(()) => message.ack().await,
            Err(error) => {
                tracing::warn!(attempt = %record.id, %error, "attempt record not stored; the task will be redelivered");
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
            }
        };
        if let Err(error) = result {
            tracing::warn!(attempt = %record.id, %error, "delivery task ack failed");
        }
    }

    pub(crate) async fn publish_dlq(
        &self,
        payload: &[u8],
        reason: &str,
        msg_id: &str,
    ) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert(DLQ_REASON_HEADER, reason);
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::copy_from_slice(payload))
            .headers(headers)
            .message_id(msg_id);
        let subject = self.config.names().dlq_subject("deliveries");
        match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn dead_letter(&self, message: Message, reason: &str) {
        tracing::error!(subject = %message.subject, reason, "delivery task sent to the DLQ");
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        match self
            .publish_dlq(&message.payload, reason, &format!("deliveries:{seq}"))
            .await
        {
            Ok(()) => {
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "delivery task ack failed");
                }
            }
            Err(_) => nak(&message).await,
        }
    }
}

async fn nak(message: &Message) {
    if let Err(error) = message
        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
        .await
    {
        tracing::warn!(%error, "delivery task nak failed");
    }
}
/// Runs `work`, telling JetStream the message is still being worked on so a
/// long wait for a permit does not trigger a redelivery.
async fn with_progress<T>(
    message: &Message,
    ack_wait: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(ack_wait / 3);
    ticker.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}
