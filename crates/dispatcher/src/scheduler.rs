//! The retry scheduler: claims due entries from Redis in batches, reads
//! their events back from the EVENTS stream, re-publishes them to
//! DELIVERIES, and removes them only after the publish ack. Safe to run in
//! every dispatcher replica: claims are atomic, and a lease that expires
//! (a replica died mid-publish) returns its entries to the schedule.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hookrelay_core::delivery::{DeliveryTask, Source};
use hookrelay_core::nats::read_event;
use tokio_util::sync::CancellationToken;

use crate::schedule::{Claimed, RetryEntry};
use crate::Dispatcher;

/// Entries claimed per round.
const BATCH: usize = 500;
/// Shortest time claimed entries stay reserved for this replica.
const MIN_LEASE: Duration = Duration::from_secs(30);
/// When entries that could not be re-published are tried again.
const RETRY_SOON: chrono::Duration = chrono::Duration::seconds(1);
/// Pause between rounds when nothing is due.
const IDLE: Duration = Duration::from_millis(50);

impl Dispatcher {
    /// Moves due retries back into DELIVERIES until `shutdown`.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        // Longer than any request may take, so a claimed retry is never
        // handed to another replica while this one may still act on it.
        let lease = MIN_LEASE.max(self.config.dispatcher.ack_wait);
        let mut last_stats = tokio::time::Instant::now() - Duration::from_secs(60);
        while !shutdown.is_cancelled() {
            let pause = match self.schedule.claim(Utc::now(), lease, BATCH).await {
                Ok(claimed) => {
                    self.scheduler_ready.set(true);
                    let full = claimed.len() == BATCH;
                    if !claimed.is_empty() {
                        self.republish(claimed).await;
                    }
                    if full {
                        Duration::ZERO
                    } else {
                        IDLE
                    }
                }
                Err(error) => {
                    if self.scheduler_ready.get() {
                        tracing::warn!(%error, "retry schedule unreachable");
                    }
                    self.scheduler_ready.set(false);
                    Duration::from_secs(1)
                }
            };
            if last_stats.elapsed() >= Duration::from_secs(5) {
                last_stats = tokio::time::Instant::now();
                if let Ok((pending, oldest)) = self.schedule.stats().await {
                    self.metrics.retries_pending.set(pending as i64);
                    let age = oldest.map_or(0.0, |due| {
                        (Utc::now().timestamp_millis() - due).max(0) as f64 / 1000.0
                    });
                    self.metrics.oldest_retry_age.set(age);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        self.scheduler_ready.set(false);
    }

    async fn republish(&self, claimed: Vec<Claimed>) {
        let names = self.config.names();
        let streams = futures::future::try_join(
            self.js.get_stream(names.events_stream()),
            self.js.get_stream(names.batches_stream()),
        )
        .await;
        let (events, batches) = match streams {
            Ok(streams) => streams,
            Err(error) => {
                // The leases expire and the entries come back.
                tracing::warn!(%error, "cannot open the event streams for retries");
                return;
            }
        };
        let lookups = futures::stream::iter(claimed)
            .map(|claimed| {
                let (events, batches, names) = (&events, &batches, &names);
                async move {
                    let entry = RetryEntry::parse(&claimed.member);
                    let event = match &entry {
                        Some(entry) => {
                            let stream = if entry.source == Source::Batch {
                                batches
                            } else {
                                events
                            };
                            Some(read_event(stream, names, entry.source, entry.seq).await)
                        }
                        None => None,
                    };
                    (claimed, entry, event)
                }
            })
            // All at once: each is one request-reply, and NATS answers a
            // pipeline of them far faster than a few at a time.
            .buffer_unordered(BATCH)
            .collect::<Vec<_>>()
            .await;
        let mut pending: Vec<(String, PublishAckFuture)> = Vec::with_capacity(lookups.len());
        let mut done: Vec<String> = Vec::new();
        let mut again: Vec<String> = Vec::new();
        for (claimed, entry, event) in lookups {
            let (Some(entry), Some(event)) = (entry, event) else {
                tracing::error!(member = %claimed.member, "unreadable retry entry dropped");
                done.push(claimed.member);
                continue;
            };
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => {
                    self.event_gone(&claimed, &entry).await;
                    done.push(claimed.member);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(seq = entry.seq, %error, "cannot read a retried event; trying again shortly");
                    again.push(claimed.member);
                    continue;
                }
            };
            let task = DeliveryTask {
                subscription_id: entry.subscription_id.clone(),
                attempt: entry.attempt,
                first_attempt_at: (entry.first_attempt_ms > 0)
                    .then(|| DateTime::from_timestamp_millis(entry.first_attempt_ms))
                    .flatten(),
                source: entry.source,
                redelivery: false,
                event,
            };
            let publish = jetstream::message::PublishMessage::build()
                .payload(Bytes::from(
                    serde_json::to_vec(&task).expect("tasks serialize"),
                ))
                .message_id(format!("r:{}:{}", claimed.member, claimed.due_ms));
            match self
                .js
                .send_publish(names.delivery_subject(&task.event.tenant), publish)
                .await
            {
                Ok(ack) => pending.push((claimed.member, ack)),
                Err(error) => {
                    tracing::warn!(%error, "cannot re-publish a retry; trying again shortly");
                    again.push(claimed.member);
                }
            }
        }
        for (member, ack) in pending {
            match ack.await {
                Ok(_) => done.push(member),
                Err(error) => {
                    // Perhaps stored anyway: a second publish is dropped by dedup.
                    tracing::warn!(%error, "retry publish not acknowledged; trying again shortly");
                    again.push(member);
                }
            }
        }
        if let Err(error) = self.schedule.requeue(&again, Utc::now() + RETRY_SOON).await {
            tracing::warn!(%error, "cannot requeue retries; their leases will expire");
        }
        if let Err(error) = self.schedule.release(&done).await {
            // Released later by lease expiry: the tasks are published twice,
            // and JetStream's dedup window drops the second.
            tracing::warn!(%error, "cannot release re-published retries");
        }
    }

    /// The event of a retry is no longer retained: the delivery ends here.
    async fn event_gone(&self, claimed: &Claimed, entry: &RetryEntry) {
        tracing::error!(
            seq = entry.seq,
            subscription = %entry.subscription_id,
            attempt = entry.attempt,
            "retried event no longer in the events stream; giving up"
        );
        self.metrics
            .given_up
            .with_label_values(&["exhausted"])
            .inc();
        let reason = format!(
            "gave up (exhausted) before attempt {}: event {} is no longer retained",
            entry.attempt, entry.seq
        );
        let _ = self
            .publish_dlq(
                claimed.member.as_bytes(),
                &reason,
                &format!("gone:{}", claimed.member),
            )
            .await;
    }
}
