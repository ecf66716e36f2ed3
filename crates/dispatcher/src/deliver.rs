//! One delivery: read the event by reference, find the subscription, wait
//! for a permit, send, then decide what follows a failure (a retry in
//! Redis, or giving up with a DLQ entry), record the attempt, and only then
//! settle the task.

use std::sync::Arc;

use async_nats::jetstream::{kv, Message};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookrelay_core::delivery::{AttemptRecord, DeliveryTask, GiveUp, Outcome, RecordedRequest};
use hookrelay_core::event::Event;
use hookrelay_core::failure::{Dependency, FailureKind};
use hookrelay_core::otlp::{RequestEnd, RequestSpan};
use hookrelay_core::retry::{self, Next};
use hookrelay_core::signing::webhook_id;
use hookrelay_core::subscription::{DeliveryOrder, Subscription};
use tokio::sync::OwnedSemaphorePermit;

use crate::circuit::{Admit, Change};
use crate::fair::FairPermit;
use crate::lease::Lease;
use crate::limits::Signal;
use crate::request;
use crate::schedule::RetryEntry;
use crate::sender::SendResult;
use crate::Dispatcher;

/// Waiting tasks per in-flight slot beyond which a subscription's tasks are
/// parked in the schedule instead of holding consumer capacity.
pub(crate) const WAITING_PER_SLOT: usize = 4;

/// The name transient failures are counted under.
pub(crate) const COMPONENT: &str = "dispatcher";

/// The subscription's own permit, a slot of the fair gate, and the body's
/// share of the body budget.
type Permits = (OwnedSemaphorePermit, FairPermit, OwnedSemaphorePermit);

/// Events from this size (KiB) up are read again once a task has its
/// permits rather than held while it waits.
const LARGE_KIB: u32 = 64;

/// KiB of rendered request bodies in flight at most.
pub(crate) const BODY_BUDGET_KIB: u32 = 16 * 1024;

/// About how many KiB `event`'s request body takes (its data and an
/// envelope), as permits of the body budget.
fn body_kib(event: &Event) -> u32 {
    let kib = (event.data.get().len() / 1024 + 1) as u32;
    kib.min(BODY_BUDGET_KIB)
}

/// The schedule member a held task waits as. Counted like a park: each
/// hold is a new member, so when it comes back out its msg-id is not one
/// JetStream dropped as a duplicate.
pub(crate) fn held_member(task: &DeliveryTask) -> String {
    RetryEntry {
        parked: task.parked + 1,
        ..RetryEntry::of(task)
    }
    .member()
}

/// How long the head of an ordered queue waits when it may not go now
/// (an open circuit probes at most this often anyway).
const HEAD_HELD_BACK: std::time::Duration = std::time::Duration::from_secs(1);

/// What follows an attempt.
enum After {
    Done,
    RetryAt(DateTime<Utc>),
    GiveUp(GiveUp),
}

impl Dispatcher {
    /// Delivers a task read from DELIVERIES.
    pub(crate) async fn deliver(self: Arc<Self>, message: Message) {
        match DeliveryTask::parse(&message.payload) {
            Ok(task) => {
                let lease = Lease::of(message);
                self.run_task(task, lease).await
            }
            Err(error) => {
                self.dead_letter(message, &format!("unreadable delivery task: {error}"))
                    .await
            }
        }
    }

    /// Delivers `task`, settling `lease` when done.
    pub(crate) async fn run_task(self: Arc<Self>, task: DeliveryTask, lease: Lease) {
        let subscription = match self.subscription(&task.subscription_id).await {
            Ok(subscription) => subscription.filter(|s| s.enabled),
            Err(error) => {
                self.transients.failed(COMPONENT, Dependency::Nats);
                tracing::warn!(subscription = %task.subscription_id, %error, "cannot read subscription; retrying the task");
                return lease.retry().await;
            }
        };
        // An ordered subscription's task that came another way (a retry
        // scheduled before it was ordered, a redelivery) joins its queue.
        if subscription
            .as_ref()
            .is_some_and(|s| s.ordering == DeliveryOrder::Fifo)
            && !lease.is_ordered()
        {
            return self.enqueue_ordered(&task, lease).await;
        }
        let Some((event, lease)) = self.event(&task, subscription.as_deref(), lease).await else {
            return;
        };
        let Some(subscription) = subscription else {
            self.limits.forget(&task.subscription_id);
            self.shapers.forget(&task.subscription_id);
            self.circuits.machine.forget(&task.subscription_id);
            let result = SendResult::without_response(
                Outcome::Disabled,
                "subscription deleted or disabled before delivery",
            );
            let after = After::GiveUp(GiveUp::Disabled);
            let record = self.record(&task, &event, None, &result, Utc::now(), after);
            return self.finish(lease, record).await;
        };
        // Stored before the tenant cap existed, a subscription may ask for
        // more than its tenant may hold: it gets the cap.
        let limit = match lease.is_ordered() {
            true => 1,
            false => subscription
                .max_in_flight
                .unwrap_or(self.config.dispatcher.default_max_in_flight)
                .min(self.config.limits.max_in_flight_per_tenant),
        };
        // Held until the task is done: a tenant's tasks in memory stay
        // bounded however many of its endpoints hang.
        let in_hand = self.fair.enter(&subscription.tenant, WAITING_PER_SLOT);
        if in_hand.is_none()
            || self.limits.should_park(
                &subscription.id,
                WAITING_PER_SLOT,
                std::time::Instant::now(),
            )
        {
            return self.park(lease, &task).await;
        }
        let admitted = self.circuits.machine.admit(&subscription.id, Utc::now());
        if admitted == Admit::Hold {
            return self.hold(lease, &task).await;
        }
        let kib = body_kib(&event);
        // A large event is not held while waiting for permits: tasks of a
        // wide fan-out would each keep a copy once the cache let go of it.
        let held = (kib < LARGE_KIB).then_some(event);
        let permits = lease
            .with_progress(self.config.dispatcher.ack_wait, async {
                // Bodies in flight are bounded in bytes too (a fan-out of
                // large events renders one per subscription); taken first,
                // so a large event waiting for room holds no request slot.
                let body = self.bodies.clone().acquire_many_owned(kib).await;
                let own = self.limits.acquire(&subscription.id, limit).await;
                self.limits
                    .pace(&subscription.id, subscription.rate_limit)
                    .await;
                let slot = self
                    .fair
                    .acquire(&subscription.tenant, &subscription.id)
                    .await;
                (own, slot, body.expect("never closed"))
            })
            .await;
        // The circuit may have opened while this task waited (the tasks
        // behind a hung endpoint's first requests): it is held, not sent.
        if admitted == Admit::Send
            && self.circuits.machine.admit(&subscription.id, Utc::now()) == Admit::Hold
        {
            drop(permits);
            return self.hold(lease, &task).await;
        }
        let (event, lease) = match held {
            Some(event) => (event, lease),
            None => match self.event(&task, Some(&subscription), lease).await {
                Some(read) => read,
                None => return,
            },
        };
        self.attempt(task, event, subscription, lease, permits)
            .await;
        drop(in_hand);
    }

    /// The task's event, or `None` once the task is settled without it:
    /// ended for good when the event expired or cannot be read, tried again
    /// later when NATS did not answer.
    async fn event(
        &self,
        task: &DeliveryTask,
        subscription: Option<&Subscription>,
        lease: Lease,
    ) -> Option<(Arc<Event>, Lease)> {
        let (give_up, reason) = match self.events.get(task.source, task.seq).await {
            Ok(Some(event)) => return Some((event, lease)),
            Ok(None) => (
                GiveUp::Expired,
                format!(
                    "event {} of {} is no longer retained (past the stream's max age)",
                    task.seq,
                    hookrelay_core::nats::source_stream(&self.config.names(), task.source)
                ),
            ),
            Err(error) if error.kind() == FailureKind::Permanent => {
                (GiveUp::Invalid, error.to_string())
            }
            Err(error) => {
                self.transients.failed(COMPONENT, Dependency::Nats);
                tracing::warn!(seq = task.seq, %error, "cannot read the event of a task; retrying the task");
                lease.retry().await;
                return None;
            }
        };
        self.end_without_event(task.clone(), subscription, lease, give_up, reason)
            .await;
        None
    }

    /// Sends the request and settles the task by its outcome.
    async fn attempt(
        &self,
        task: DeliveryTask,
        event: Arc<Event>,
        subscription: Arc<Subscription>,
        lease: Lease,
        permits: Permits,
    ) {
        let started_at = Utc::now();
        let timeout = subscription
            .timeout
            .unwrap_or(self.config.dispatcher.default_timeout);
        let span = RequestSpan::start(&event, &subscription.id, task.attempt, started_at);
        let built = self
            .shapers
            .get(&subscription)
            .map_err(request::BuildError::from)
            .and_then(|shaper| {
                request::build(&subscription, &shaper, &event, started_at, span.header())
            });
        let (request, result) = match built {
            Ok(request) => {
                let recorded = request::recorded(&request);
                self.metrics.in_flight.inc();
                // A request may outlast the ack wait (timeouts go up to 5 min):
                // keep the task ours meanwhile, or it would be sent twice.
                let send = self
                    .sender
                    .send(request, timeout, subscription.success_rule);
                let result = lease
                    .with_progress(self.config.dispatcher.ack_wait, send)
                    .await;
                self.metrics.in_flight.dec();
                self.limits.record(&subscription.id, result.duration);
                (Some(recorded), result)
            }
            Err(error) => (
                None,
                SendResult::without_response(Outcome::Error, &error.to_string()),
            ),
        };
        let (own, slot, body) = permits;
        drop((slot, body));
        let status = result.response.as_ref().map(|r| r.status);
        span.end(RequestEnd {
            method: request.as_ref().map_or("", |r| r.method.as_str()),
            url: request
                .as_ref()
                .map_or(subscription.url.as_str(), |r| r.url.as_str()),
            status,
            outcome: result.outcome.as_str(),
            success: result.outcome.is_success(),
            reason: &result.reason,
            finished_at: started_at
                + chrono::Duration::from_std(result.duration).unwrap_or_default(),
        });
        self.limits.settle(
            &subscription.id,
            own,
            Signal::of(result.outcome.is_success(), status, result.retry_after),
        );
        if request.is_some() {
            self.count_outcome(&subscription, result.outcome.is_success())
                .await;
        }
        self.metrics
            .requests
            .with_label_values(&[result.outcome.as_str()])
            .inc();
        let after = if result.outcome.is_success() {
            After::Done
        } else if request.is_none() {
            // The request could not be built (a template failing on this
            // event): trying again would fail the same way.
            After::GiveUp(GiveUp::Invalid)
        } else {
            match self
                .after_failure(
                    &subscription,
                    &task,
                    &result,
                    started_at,
                    lease.is_ordered(),
                )
                .await
            {
                Ok(after) => {
                    self.transients.recovered(COMPONENT, Dependency::Redis);
                    after
                }
                Err(error) => {
                    // The attempt is recorded; the task comes back and is sent again.
                    self.transients.failed(COMPONENT, Dependency::Redis);
                    tracing::warn!(subscription = %subscription.id, %error, "cannot schedule the retry; the task will be tried again");
                    let mut record =
                        self.record(&task, &event, request, &result, started_at, After::Done);
                    // Not final: say so, or it reads as a failure given up.
                    record.reason = format!(
                        "{}; the retry could not be scheduled (Redis: {error}), this attempt will be made again",
                        record.reason
                    );
                    self.publish_record(&mut record).await.ok();
                    return lease.retry().await;
                }
            }
        };
        let mut record = self.record(&task, &event, request, &result, started_at, after);
        if let Lease::Ordered { late_after, .. } = &lease {
            if let Some(later) = late_after {
                record.reason = format!(
                    "{}; out of stream order: event seq {} arrived after seq {later} had been sent",
                    record.reason, task.seq
                );
            }
            if record.give_up.is_some() {
                record.reason = format!(
                    "{}; ordered delivery moves on to the subscription's next event",
                    record.reason
                );
            }
        }
        self.conclude(lease, &task, record).await;
    }

    /// A task whose event cannot be had (expired, unreadable) ends here: a
    /// final attempt record and a DLQ entry with the reason.
    async fn end_without_event(
        &self,
        task: DeliveryTask,
        subscription: Option<&Subscription>,
        lease: Lease,
        give_up: GiveUp,
        reason: String,
    ) {
        // The event's own id is gone with it: name it by where it was.
        let event = Event {
            id: format!(
                "{}#{}",
                hookrelay_core::nats::source_stream(&self.config.names(), task.source),
                task.seq
            ),
            tenant: subscription.map_or_else(|| "_".to_owned(), |s| s.tenant.clone()),
            event_type: "_".into(),
            data: serde_json::value::RawValue::from_string("{}".into()).expect("valid JSON"),
            entity_id: None,
            labels: Default::default(),
            occurred_at: None,
            received_at: task.first_attempt_at().unwrap_or_else(Utc::now),
            seq: task.seq,
            traceparent: None,
        };
        let result = SendResult::without_response(Outcome::Error, &reason);
        let record = self.record(
            &task,
            &event,
            None,
            &result,
            Utc::now(),
            After::GiveUp(give_up),
        );
        self.conclude(lease, &task, record).await;
    }

    /// Stores the DLQ entry of a given-up delivery, then the record.
    async fn conclude(&self, lease: Lease, task: &DeliveryTask, record: AttemptRecord) {
        if let Some(give_up) = record.give_up {
            tracing::info!(
                subscription = %record.subscription_id,
                event = %record.event_id,
                attempt = record.attempt,
                outcome = record.outcome.as_str(),
                reason = %record.reason,
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
                record.attempt,
                record.reason
            );
            let entry = crate::dlq::DeadDelivery::new(task, &record);
            // One per delivery chain (a Redeliver starts a new one) and
            // attempt, the same when this task is redelivered.
            let msg_id = format!(
                "{}:{}:{}:given-up",
                hookrelay_core::delivery::dedup_id(&record.event_id, &record.subscription_id),
                task.first_attempt_ms,
                record.attempt
            );
            if let Err(error) = self.publish_dlq(&entry.to_json(), &reason, &msg_id).await {
                self.transients.failed(COMPONENT, Dependency::Nats);
                tracing::warn!(%error, "cannot store the DLQ entry; the task will be tried again");
                return lease.retry().await;
            }
        }
        self.finish(lease, record).await;
    }

    /// Decides what follows a failed attempt, storing a retry if there is one.
    async fn after_failure(
        &self,
        subscription: &Subscription,
        task: &DeliveryTask,
        result: &SendResult,
        started_at: DateTime<Utc>,
        ordered: bool,
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
        let first_attempt_at = task.first_attempt_at().unwrap_or(started_at);
        let now = Utc::now();
        let age = (now - first_attempt_at).to_std().unwrap_or_default();
        let retention = self.config.nats.events_max_age;
        let next = policy.next(task.attempt, age, retention, &mut rand::rng());
        match next {
            Next::GiveUp(give_up) => Ok(After::GiveUp(give_up)),
            Next::RetryIn(delay) => {
                let delay = retry::clamp_retry_after(delay, result.retry_after);
                let due = now + delay;
                if ordered {
                    // Its queue holds it, ahead of the rest (`ordered.rs`).
                    return Ok(After::RetryAt(due));
                }
                let entry = RetryEntry {
                    attempt: task.attempt + 1,
                    first_attempt_ms: first_attempt_at.timestamp_millis(),
                    parked: 0,
                    ..RetryEntry::of(task)
                };
                self.schedule.add(&entry, due).await?;
                self.metrics.retries_scheduled.inc();
                Ok(After::RetryAt(due))
            }
        }
    }

    /// Parks a task of a saturated subscription in the schedule, as the same
    /// attempt, so it waits in Redis rather than in the consumer's window.
    async fn park(&self, lease: Lease, task: &DeliveryTask) {
        let park_for = self
            .limits
            .park_for(&task.subscription_id, std::time::Instant::now());
        if lease.is_ordered() {
            return lease.held_back(park_for.max(HEAD_HELD_BACK)).await;
        }
        let entry = RetryEntry {
            parked: task.parked + 1,
            ..RetryEntry::of(task)
        };
        let due = Utc::now() + chrono::Duration::from_std(park_for).unwrap_or_default();
        match self.schedule.add(&entry, due).await {
            Ok(()) => {
                self.transients.recovered(COMPONENT, Dependency::Redis);
                self.metrics.parked.inc();
                lease.done().await
            }
            Err(error) => {
                self.transients.failed(COMPONENT, Dependency::Redis);
                tracing::warn!(%error, "cannot park the task; it will be tried again");
                lease.retry().await
            }
        }
    }

    /// Holds a task of a subscription whose circuit is open, as the same
    /// attempt, until a probe succeeds. (The head of an ordered queue waits
    /// in its queue instead, ahead of the rest, and tries again when a
    /// probe may be due.)
    async fn hold(&self, lease: Lease, task: &DeliveryTask) {
        if lease.is_ordered() {
            return lease.held_back(HEAD_HELD_BACK).await;
        }
        let held = [(task.subscription_id.as_str(), held_member(task))];
        match self.circuits.hold(&held).await {
            Ok(()) => {
                self.transients.recovered(COMPONENT, Dependency::Redis);
                self.metrics.held.inc();
                lease.done().await
            }
            Err(error) => {
                self.transients.failed(COMPONENT, Dependency::Redis);
                tracing::warn!(%error, "cannot hold the task of an open circuit; it will be tried again");
                lease.retry().await
            }
        }
    }

    /// Feeds a sent request's outcome to the subscription's circuit and
    /// stores what changed; disables a subscription failing for too long.
    async fn count_outcome(&self, subscription: &Subscription, success: bool) {
        let limits = self.circuits.limits(subscription.circuit.as_ref());
        let change = self
            .circuits
            .machine
            .outcome(&subscription.id, limits, success, Utc::now());
        match &change {
            Change::None => return,
            Change::Entered(record) => {
                tracing::warn!(
                    subscription = %subscription.id,
                    state = record.state.as_str(),
                    consecutive_failures = record.consecutive_failures,
                    "endpoint health changed"
                );
                self.metrics
                    .circuit_transitions
                    .with_label_values(&[record.state.as_str()])
                    .inc();
            }
            Change::Updated(_) => {}
            Change::Closed => {
                tracing::info!(subscription = %subscription.id, "endpoint healthy again");
                self.metrics
                    .circuit_transitions
                    .with_label_values(&["healthy"])
                    .inc();
            }
            Change::Disable(record) => self.disable_failing(subscription, record).await,
        }
        for (state, count) in self.circuits.machine.counts() {
            self.metrics
                .circuits
                .with_label_values(&[state.as_str()])
                .set(count);
        }
        match self.circuits.store(&subscription.id, &change).await {
            Ok(()) => self.transients.recovered(COMPONENT, Dependency::Redis),
            Err(error) => {
                self.transients.failed(COMPONENT, Dependency::Redis);
                tracing::warn!(subscription = %subscription.id, %error, "cannot store the endpoint's health");
            }
        }
    }

    /// Disables a subscription that kept failing and announces it on
    /// `<prefix>.system.<tenant>.subscription.disabled`.
    async fn disable_failing(
        &self,
        subscription: &Subscription,
        record: &hookrelay_core::circuit::CircuitRecord,
    ) {
        let limits = self.circuits.limits(subscription.circuit.as_ref());
        let reason = format!(
            "failing since {} ({} failed attempts in a row), longer than disable_after ({})",
            record.failing_since.to_rfc3339(),
            record.consecutive_failures,
            humantime::format_duration(limits.disable_after)
        );
        tracing::warn!(subscription = %subscription.id, %reason, "subscription disabled");
        self.disable(&subscription.id).await;
        self.metrics.auto_disabled.inc();
        let announcement = hookrelay_core::circuit::SubscriptionDisabled {
            subscription_id: subscription.id.clone(),
            tenant: subscription.tenant.clone(),
            url: subscription.url.clone(),
            reason,
            failing_since: record.failing_since,
            consecutive_failures: record.consecutive_failures,
            disabled_at: Utc::now(),
        };
        let subject =
            hookrelay_core::circuit::disabled_subject(&self.config.names(), &subscription.tenant);
        let body = Bytes::from(serde_json::to_vec(&announcement).expect("announcements serialize"));
        if let Err(error) = self.js.client().publish(subject, body).await {
            self.transients.failed(COMPONENT, Dependency::Nats);
            tracing::warn!(subscription = %subscription.id, %error, "cannot announce the disabled subscription");
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
        event: &Event,
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
            event_id: event.id.clone(),
            subscription_id: task.subscription_id.clone(),
            tenant: event.tenant.clone(),
            event_type: event.event_type.clone(),
            webhook_id: webhook_id(&event.id, &task.subscription_id),
            attempt: task.attempt,
            outcome: result.outcome,
            reason: result.reason.clone(),
            // Without a response the reason is the error that stood in its
            // way, kept apart from notes later added to the reason.
            error: match result.response {
                Some(_) => String::new(),
                None => result.reason.clone(),
            },
            request: request.unwrap_or_default(),
            response: result.response.clone(),
            started_at,
            duration_ms: result.duration.as_millis() as u64,
            event_received_at: event.received_at,
            next_attempt_at,
            give_up,
            event_seq: task.seq,
            source: task.source,
            redelivery: task.redelivery,
            trace_id: event
                .traceparent
                .as_deref()
                .and_then(hookrelay_core::trace::TraceParent::parse)
                .map(|parent| parent.trace_id),
            schema_violation: self.schema_violation(event),
        }
    }

    /// How the event breaks its type's schema, where the type validates in
    /// `warn` mode (under `reject` such events never reach delivery).
    fn schema_violation(&self, event: &Event) -> Option<String> {
        let known = self.catalog.lookup(&event.tenant, &event.event_type)?;
        if known.validation != hookrelay_catalog::model::Validation::Warn {
            return None;
        }
        match known.check(&event.data) {
            hookrelay_catalog::Check::Invalid(violation) => {
                Some(format!("{} v{}: {violation}", known.name, known.version))
            }
            _ => None,
        }
    }

    /// Publishes the attempt record, then settles the task. If the record
    /// cannot be stored the task is tried again.
    async fn finish(&self, lease: Lease, mut record: AttemptRecord) {
        match self.publish_record(&mut record).await {
            Ok(()) => {
                self.transients.recovered(COMPONENT, Dependency::Nats);
                lease.attempted(record.next_attempt_at).await
            }
            Err(error) => {
                self.transients.failed(COMPONENT, Dependency::Nats);
                tracing::warn!(attempt = %record.id, %error, "attempt record not stored; the task will be tried again");
                lease.retry().await
            }
        }
    }
}
