//! The retry scheduler: claims due entries from Redis in batches,
//! re-publishes them to DELIVERIES as task references, and removes them
//! only after the publish ack. Safe to run in
//! every dispatcher replica: claims are atomic, and a lease that expires
//! (a replica died mid-publish) returns its entries to the schedule.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use chrono::Utc;
use hookrelay_core::failure::{Backoff, Dependency};
use tokio_util::sync::CancellationToken;

use crate::deliver::COMPONENT;

/// The scheduler's own readiness flag for Redis ("redis (scheduler)"): its
/// claims succeeding say nothing of the writes other dispatcher work makes
/// (to other slots of a cluster), and a failed claim is cleared by the next
/// claim that succeeds, with or without anything else to write.
const SCHEDULER: &str = "scheduler";
use crate::schedule::{Claimed, RetryEntry};
use crate::Dispatcher;

/// Entries claimed per round.
const BATCH: usize = 1000;
/// Shortest time claimed entries stay reserved for this replica.
const MIN_LEASE: Duration = Duration::from_secs(30);
/// When entries that could not be re-published are tried again.
const RETRY_SOON: chrono::Duration = chrono::Duration::seconds(1);
/// The longest pause after the schedule failed to answer.
const MAX_IDLE_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How often open circuits are checked for a due probe.
const NUDGE_EVERY: Duration = Duration::from_secs(1);
/// Pause between rounds when nothing is due.
const IDLE: Duration = Duration::from_millis(50);

impl Dispatcher {
    /// Moves due retries back into DELIVERIES until `shutdown`.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        // Long enough to publish a round and release it, even on a loaded
        // machine, so a claimed retry is never handed to another replica
        // while this one may still publish it.
        let lease = MIN_LEASE.max(self.config.dispatcher.ack_wait);
        let mut last_stats = tokio::time::Instant::now() - Duration::from_secs(60);
        let mut last_nudge = tokio::time::Instant::now();
        let mut pause_after_failure = Backoff::up_to(MAX_IDLE_AFTER_FAILURE);
        // Re-published entries Redis did not let go of yet: released before
        // anything is claimed again, so however long Redis was away (longer
        // than JetStream's dedup window, say) they are not published twice.
        let mut unreleased: Vec<String> = Vec::new();
        // The round before this one, still awaiting its publish acks: the
        // next claim overlaps it, so draining is not one round trip at a time.
        // (Its leases were taken moments ago, so that claim cannot take its
        // entries back; what it failed to release is collected before any
        // later claim.)
        let mut previous: Option<tokio::task::JoinHandle<Vec<String>>> = None;
        while !shutdown.is_cancelled() {
            let released = match unreleased.is_empty() {
                true => Ok(()),
                false => self.schedule.release(&unreleased).await,
            };
            let claim = match released {
                Ok(()) => {
                    unreleased.clear();
                    self.schedule.claim(Utc::now(), lease, BATCH).await
                }
                Err(error) => Err(error),
            };
            let pause = match claim {
                Ok(claimed) => {
                    pause_after_failure.succeeded();
                    self.scheduler_ready.set(true);
                    self.transients.recovered(SCHEDULER, Dependency::Redis);
                    let full = claimed.len() == BATCH;
                    let sent = if claimed.is_empty() {
                        None
                    } else {
                        Some(self.send(claimed).await)
                    };
                    if let Some(round) = previous.take() {
                        unreleased.extend(round.await.unwrap_or_default());
                    }
                    if let Some(sent) = sent {
                        previous = Some(tokio::spawn(self.clone().settle(sent)));
                    }
                    if full {
                        Duration::ZERO
                    } else {
                        IDLE
                    }
                }
                Err(error) => {
                    // The last round's unreleased entries must be known
                    // before the next claim, whenever Redis answers again.
                    if let Some(round) = previous.take() {
                        unreleased.extend(round.await.unwrap_or_default());
                    }
                    if self.scheduler_ready.get() {
                        tracing::warn!(%error, "retry schedule unreachable");
                    }
                    self.scheduler_ready.set(false);
                    self.transients.failed(SCHEDULER, Dependency::Redis);
                    // Backing off, but never so far that a Redis back from a
                    // restart waits long for its retries.
                    pause_after_failure.failed()
                }
            };
            if last_nudge.elapsed() >= NUDGE_EVERY {
                last_nudge = tokio::time::Instant::now();
                if let Err(error) = self.circuits.nudge(Utc::now()).await {
                    tracing::warn!(%error, "cannot probe open circuits");
                }
            }
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
        if let Some(round) = previous.take() {
            let _ = round.await;
        }
        self.scheduler_ready.set(false);
    }

    /// Re-publishes claimed entries as task references (the scheduler reads
    /// no event: the dispatcher does, once per sequence), each with a msg-id
    /// derived from its member alone; [`Dispatcher::settle`] then forgets
    /// those that were stored.
    async fn send(&self, claimed: Vec<Claimed>) -> Sent {
        let names = self.config.names();
        let mut sent = Sent {
            pending: Vec::with_capacity(claimed.len()),
            done: Vec::new(),
            again: Vec::new(),
        };
        for claimed in claimed {
            let Some(entry) = RetryEntry::parse(&claimed.member) else {
                tracing::error!(member = %claimed.member, "unreadable retry entry dropped");
                sent.done.push(claimed.member);
                continue;
            };
            // The subject only spreads tasks by tenant; a deleted
            // subscription's task still goes out and ends as `disabled`.
            let tenant = self
                .index
                .get(&entry.subscription_id)
                .map_or_else(|| "_".to_owned(), |s| s.tenant.clone());
            let publish = jetstream::message::PublishMessage::build()
                .payload(Bytes::from(entry.task().to_json()))
                .message_id(entry.msg_id());
            match self
                .js
                .send_publish(names.delivery_subject(&tenant), publish)
                .await
            {
                Ok(ack) => sent.pending.push((claimed.member, ack)),
                Err(error) => {
                    tracing::warn!(%error, "cannot re-publish a retry; trying again shortly");
                    sent.again.push(claimed.member);
                }
            }
        }
        sent
    }

    /// Awaits a round's publish acks, requeues what was not stored and
    /// releases what was. Returns the entries that were published but could
    /// not be released.
    async fn settle(self: Arc<Self>, sent: Sent) -> Vec<String> {
        let Sent {
            pending,
            mut done,
            mut again,
        } = sent;
        // Awaited together: each ack's timeout starts when it is first
        // polled, so awaiting them one by one after NATS lost the replies
        // (a restart) took 5 s per entry, minutes for a round.
        let acked = futures::future::join_all(
            pending
                .into_iter()
                .map(|(member, ack)| async move { (member, ack.await) }),
        )
        .await;
        for (member, acked) in acked {
            match acked {
                Ok(_) => done.push(member),
                Err(error) => {
                    // Perhaps stored anyway: a second publish is dropped by dedup.
                    tracing::warn!(%error, "retry publish not acknowledged; trying again shortly");
                    again.push(member);
                }
            }
        }
        if again.is_empty() {
            self.transients.recovered(COMPONENT, Dependency::Nats);
        } else {
            self.transients.failed(COMPONENT, Dependency::Nats);
        }
        if let Err(error) = self.schedule.requeue(&again, Utc::now() + RETRY_SOON).await {
            tracing::warn!(%error, "cannot requeue retries; their leases will expire");
        }
        match self.schedule.release(&done).await {
            Ok(()) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "cannot release re-published retries; trying again before the next claim");
                done
            }
        }
    }
}

/// One round of re-publishing: acks awaited, entries to release and requeue.
struct Sent {
    pending: Vec<(String, PublishAckFuture)>,
    done: Vec<String>,
    again: Vec<String>,
}
