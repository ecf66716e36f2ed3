//! Replay: send one event to one subscription again, or every delivery of a
//! subscription that finally failed in a window. New attempts carry the same
//! `webhook-id` and are marked as redeliveries.

use std::collections::HashSet;
use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookrelay_core::delivery::{dedup_id, DeliveryTask};
use hookrelay_core::signing::webhook_id;
use hookrelay_core::Config;
use tonic::Status;

use futures::StreamExt;
use hookrelay_core::delivery::AttemptRecord;

use crate::index::{AttemptIndex, Filter, Scope};

/// Redeliveries `RecoverFailed` queues at once.
const RECOVER_AT_ONCE: usize = 16;

/// Publishes redeliveries.
#[derive(Clone)]
pub struct Replayer {
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub index: AttemptIndex,
}

impl Replayer {
    /// Sends `event_id` to `subscription_id` of `tenant` (the
    /// subscription's, which the caller may see) again; returns its
    /// `webhook-id`. The event's last attempt to that subscription comes
    /// from the tenant's event buckets: only that tenant's attempts of the
    /// event are read, and no listing.
    pub async fn redeliver(
        &self,
        tenant: &str,
        event_id: &str,
        subscription_id: &str,
    ) -> Result<String, Status> {
        if event_id.is_empty() || subscription_id.is_empty() {
            return Err(Status::invalid_argument(
                "event_id and subscription_id are required",
            ));
        }
        let original = self
            .index
            .last_attempt(tenant, event_id, subscription_id)
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no attempt of event {event_id} to subscription {subscription_id} (or older than the retention)"
                ))
            })?;
        self.send_again(&original).await
    }

    /// Queues the delivery of `original`'s event to its subscription again,
    /// as a redelivery; returns its `webhook-id`.
    async fn send_again(&self, original: &AttemptRecord) -> Result<String, Status> {
        let (event_id, subscription_id) = (&original.event_id, &original.subscription_id);
        // Only to refuse clearly what can no longer be sent: the dispatcher
        // reads the event itself, by reference.
        hookrelay_core::nats::load_event(
            &self.js,
            &self.config,
            original.source,
            original.event_seq,
        )
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "event {event_id} is no longer retained in the events stream"
            ))
        })?;
        let mut task = DeliveryTask::first(
            subscription_id,
            original.source,
            original.event_seq,
            Utc::now(),
        );
        task.redelivery = true;
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(task.to_json()))
            .message_id(format!(
                "redeliver:{}:{}",
                dedup_id(event_id, subscription_id),
                ulid::Ulid::new()
            ));
        hookrelay_core::nats::publish_acked(
            &self.js,
            self.config.names().delivery_subject(&original.tenant),
            publish,
        )
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(event = %event_id, subscription = %subscription_id, "redelivery queued");
        Ok(webhook_id(event_id, subscription_id))
    }

    /// Sends again, once per event, every delivery to `subscription_id` that
    /// finally failed between `since` and `until`.
    pub async fn recover(
        &self,
        subscription_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, Status> {
        if subscription_id.is_empty() {
            return Err(Status::invalid_argument("subscription_id is required"));
        }
        let filter = Filter {
            outcome: None,
            since: Some(since),
            until: Some(until),
        };
        let scope = Scope::SubscriptionFailures(subscription_id.to_owned());
        let mut originals = Vec::new();
        let mut seen = HashSet::new();
        let mut before = None;
        loop {
            let page = self.index.list(&scope, &filter, before, 500).await?;
            for attempt in page.records {
                if seen.insert(attempt.event_id.clone()) {
                    originals.push(attempt);
                }
            }
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        // Oldest first, as they happened; queued a few at a time, from the
        // final attempts in hand (no event is looked up again).
        originals.reverse();
        let events: Vec<String> = originals.iter().map(|o| o.event_id.clone()).collect();
        let sent: Vec<Result<String, Status>> = futures::stream::iter(originals)
            .map(|original| {
                let replayer = self.clone();
                async move { replayer.send_again(&original).await }
            })
            .buffered(RECOVER_AT_ONCE)
            .collect()
            .await;
        for result in sent {
            result?;
        }
        Ok(events)
    }
}
