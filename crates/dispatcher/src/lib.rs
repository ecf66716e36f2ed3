//! The dispatcher: pulls delivery tasks from DELIVERIES, sends each as a
//! signed HTTP request under a global and a per-subscription concurrency
//! limit, publishes an attempt record to ATTEMPTS, and only then acks.
#![forbid(unsafe_code)]

pub mod limits;
pub mod metrics;
pub mod request;
pub mod sender;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, AckKind, Message};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use hookrelay_core::delivery::{AttemptRecord, DeliveryTask, GiveUp, Outcome, RecordedRequest};
use hookrelay_core::health::Flag;
use hookrelay_core::index::SubscriptionIndex;
use hookrelay_core::nats::{pull_messages, supervise, ConsumerSpec, NatsError};
use hookrelay_core::signing::webhook_id;
use hookrelay_core::subscription::Subscription;
use hookrelay_core::Config;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;
pub use sender::Sender;

use limits::InFlightLimits;
use sender::SendResult;

/// Header on DLQ messages from DELIVERIES: why the task was refused.
pub const DLQ_REASON_HEADER: &str = "Hookrelay-Dlq-Reason";

/// Sends deliveries.
pub struct Dispatcher {
    config: Arc<Config>,
    js: jetstream::Context,
    index: Arc<SubscriptionIndex>,
    bucket: kv::Store,
    sender: Sender,
    metrics: Metrics,
    ready: Flag,
    limits: InFlightLimits,
    global: Arc<Semaphore>,
}

impl Dispatcher {
    pub fn new(
        config: Arc<Config>,
        js: jetstream::Context,
        index: Arc<SubscriptionIndex>,
        bucket: kv::Store,
        sender: Sender,
        metrics: Metrics,
        ready: Flag,
    ) -> Arc<Self> {
        let global = Arc::new(Semaphore::new(config.dispatcher.concurrency));
        Arc::new(Self {
            config,
            js,
            index,
            bucket,
            sender,
            metrics,
            ready,
            limits: InFlightLimits::default(),
            global,
        })
    }

    /// Delivers until `shutdown`, then lets in-flight deliveries finish
    /// within the grace period.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.index.wait_loaded().await;
        let names = self.config.names();
        let spec = ConsumerSpec {
            stream: names.deliveries_stream(),
            durable: names.consumer("dispatcher"),
            filter: names.deliveries_filter(),
            ack_wait: self.config.dispatcher.ack_wait,
            max_ack_pending: (self.config.dispatcher.concurrency * 2) as i64,
            batch: self.config.dispatcher.fetch_batch,
        };
        let tracker = TaskTracker::new();
        supervise("delivery consumer", &shutdown, &self.ready, || {
            self.consume(&spec, &tracker, &shutdown)
        })
        .await;
        tracker.close();
        let grace = self.config.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "grace period over; unfinished deliveries will be redelivered"
            );
        }
    }

    async fn consume(
        self: &Arc<Self>,
        spec: &ConsumerSpec,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), NatsError> {
        let mut messages = pull_messages(&self.js, &self.config, spec).await?;
        self.ready.set(true);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    tracker.spawn(self.clone().deliver(message));
                }
                Some(Err(error)) => tracing::warn!(%error, "delivery pull failed"),
                None => {
                    return Err(NatsError::Consumer {
                        name: spec.durable.clone(),
                        message: "message stream ended".into(),
                    })
                }
            }
        }
    }

    async fn deliver(self: Arc<Self>, message: Message) {
        let task: DeliveryTask = match serde_json::from_slice(&message.payload) {
            Ok(task) => task,
            Err(error) => {
                return self
                    .dead_letter(message, &format!("unreadable delivery task: {error}"))
                    .await
            }
        };
        let received_at = task.event.received_at;
        let subscription = match self.subscription(&task.subscription_id).await {
            Ok(subscription) => subscription.filter(|s| s.enabled),
            Err(error) => {
                tracing::warn!(subscription = %task.subscription_id, %error, "cannot read subscription; retrying the task");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        };
        let Some(subscription) = subscription else {
            self.limits.forget(&task.subscription_id);
            let result = SendResult {
                outcome: Outcome::Disabled,
                reason: "subscription deleted or disabled before delivery".into(),
                response: None,
                duration: Duration::ZERO,
                retry_after: None,
            };
            let record = self.record(
                &task,
                None,
                &result,
                Utc::now(),
                received_at,
                Some(GiveUp::Disabled),
            );
            return self.finish(message, record).await;
        };
        let limit = subscription
            .max_in_flight
            .unwrap_or(self.config.dispatcher.default_max_in_flight);
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
        let (request, result) = match request::build(&subscription, &task.event, started_at) {
            Ok(request) => {
                let recorded = RecordedRequest {
                    method: request.method.to_string(),
                    url: request.url.clone(),
                    headers: request
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            let value = String::from_utf8_lossy(v.as_bytes());
                            (k.as_str().to_owned(), request::redact(k.as_str(), &value))
                        })
                        .collect(),
                    body: String::from_utf8_lossy(&request.body).into_owned(),
                };
                self.metrics.in_flight.inc();
                let result = self
                    .sender
                    .send(request, timeout, subscription.success_rule)
                    .await;
                self.metrics.in_flight.dec();
                (Some(recorded), result)
            }
            Err(error) => (
                None,
                SendResult {
                    outcome: Outcome::Error,
                    reason: error.to_string(),
                    response: None,
                    duration: Duration::ZERO,
                    retry_after: None,
                },
            ),
        };
        drop(permits);
        self.metrics
            .requests
            .with_label_values(&[result.outcome.as_str()])
            .inc();
        // Retries arrive with the retry scheduler; until then a failure is final.
        let give_up = (!result.outcome.is_success()).then_some(GiveUp::NoRetry);
        if let Some(give_up) = give_up {
            tracing::info!(
                subscription = %subscription.id,
                event = %task.event.id,
                outcome = result.outcome.as_str(),
                reason = %result.reason,
                give_up = give_up.as_str(),
                "delivery failed"
            );
        }
        let record = self.record(&task, request, &result, started_at, received_at, give_up);
        self.finish(message, record).await;
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
        started_at: chrono::DateTime<Utc>,
        event_received_at: chrono::DateTime<Utc>,
        give_up: Option<GiveUp>,
    ) -> AttemptRecord {
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
            event_received_at,
            next_attempt_at: None,
            give_up,
        }
    }

    /// Publishes the attempt record, then acks the task. If the record cannot
    /// be stored the task is left unacked and comes back.
    async fn finish(&self, message: Message, record: AttemptRecord) {
        let subject = self
            .config
            .names()
            .attempt_subject(&record.tenant, &record.subscription_id);
        let payload = Bytes::from(serde_json::to_vec(&record).expect("records serialize"));
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(&record.id);
        let stored = match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let result = match stored {
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

    async fn dead_letter(&self, message: Message, reason: &str) {
        tracing::error!(subject = %message.subject, reason, "delivery task sent to the DLQ");
        let mut headers = HeaderMap::new();
        headers.insert(DLQ_REASON_HEADER, reason);
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let publish = jetstream::message::PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(format!("deliveries:{seq}"));
        let subject = self.config.names().dlq_subject("deliveries");
        let stored = match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        let result = if stored {
            message.ack().await
        } else {
            message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await
        };
        if let Err(error) = result {
            tracing::warn!(%error, "delivery task ack failed");
        }
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
