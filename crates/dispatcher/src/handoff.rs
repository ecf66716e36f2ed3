//! The in-process hand-over: where the ingestor and the dispatcher run in
//! one process, the first attempt of a matched event skips DELIVERIES. It
//! then waits for its permits in memory exactly as a task read from
//! DELIVERIES would, so hand-overs are bounded: in all, and per
//! subscription (a few waiting tasks per in-flight slot). Beyond that, and
//! for slow receivers, it is refused and the ingestor queues it in
//! DELIVERIES as before. The ingestor acks the event only once every
//! hand-over settled (see [`Settled`]).

use std::sync::Arc;

use hookrelay_core::delivery::DeliveryTask;
use hookrelay_core::event::Event;
use hookrelay_core::subscription::Subscription;
use tokio::sync::oneshot;

use crate::lease::{Lease, Settled};
use crate::Dispatcher;

/// Handed-over tasks waiting per in-flight slot of their subscription
/// (beyond those in flight).
const WAITING_PER_SLOT: usize = 2;

/// Request time beyond which a subscription's deliveries go through
/// DELIVERIES instead of holding their event.
const SLOW: std::time::Duration = std::time::Duration::from_secs(1);

impl Dispatcher {
    /// The held-set member of `task` if its subscription's circuit would
    /// hold it now: the ingestor of this process then holds it with the
    /// rest of its fetch ([`Dispatcher::hold_fetched`]) rather than
    /// handing each over to be held one write at a time.
    pub fn would_hold(&self, task: &DeliveryTask) -> Option<String> {
        self.circuits
            .machine
            .holds(&task.subscription_id, chrono::Utc::now())
            .then(|| crate::deliver::held_member(task))
    }

    /// Holds tasks of open circuits (`(subscription, member)` from
    /// [`Dispatcher::would_hold`]) in one round trip.
    pub async fn hold_fetched(&self, held: &[(&str, String)]) -> redis::RedisResult<()> {
        self.circuits.hold(held).await?;
        self.metrics.held.inc_by(held.len() as u64);
        Ok(())
    }

    /// Where [`Dispatcher::offer`] refused `task` because its subscription
    /// is saturated and slow (a receiver that hangs), the schedule entry
    /// and due time it would be parked at once it came through
    /// DELIVERIES: the ingestor parks it with the rest of its fetch
    /// ([`Dispatcher::park_fetched`]) and spares the round through
    /// DELIVERIES.
    pub fn would_park(
        &self,
        task: &DeliveryTask,
    ) -> Option<(crate::schedule::RetryEntry, chrono::DateTime<chrono::Utc>)> {
        let now = std::time::Instant::now();
        if !self
            .limits
            .should_park(&task.subscription_id, WAITING_PER_SLOT, now)
        {
            return None;
        }
        let park_for = self.limits.park_for(&task.subscription_id, now);
        let entry = crate::schedule::RetryEntry {
            parked: task.parked + 1,
            ..crate::schedule::RetryEntry::of(task)
        };
        Some((
            entry,
            chrono::Utc::now() + chrono::Duration::from_std(park_for).unwrap_or_default(),
        ))
    }

    /// Parks tasks from [`Dispatcher::would_park`] in one round trip.
    pub async fn park_fetched(
        &self,
        parked: &[(crate::schedule::RetryEntry, chrono::DateTime<chrono::Utc>)],
    ) -> redis::RedisResult<()> {
        self.schedule.add_all(parked).await?;
        self.metrics.parked.inc_by(parked.len() as u64);
        Ok(())
    }

    /// Starts `task` (the first attempt of `event`) now, if `subscription`
    /// and the global pool both have a free permit; `None` otherwise, and
    /// while shutting down. The receiver hears how it settled; a dropped
    /// sender (the process is stopping) counts as not settled.
    pub fn offer(
        self: &Arc<Self>,
        task: DeliveryTask,
        event: &Arc<Event>,
        subscription: &Subscription,
    ) -> Option<oneshot::Receiver<Settled>> {
        if self.tracker.is_closed() || !subscription.enabled {
            return None;
        }
        // A slow receiver would hold the event unacked for as long (unless
        // its circuit is open: then its tasks are held at once).
        if !self.circuits.machine.is_open(&subscription.id)
            && self
                .limits
                .is_slow(&subscription.id, SLOW, std::time::Instant::now())
        {
            return None;
        }
        let limit = subscription
            .max_in_flight
            .unwrap_or(self.config.dispatcher.default_max_in_flight);
        let handed = self
            .limits
            .hand_over(&subscription.id, limit, WAITING_PER_SLOT)?;
        let slot = self.handoffs.clone().try_acquire_owned().ok()?;
        self.events.put(task.source, event.clone());
        let (settled, heard) = oneshot::channel();
        let dispatcher = self.clone();
        self.tracker.spawn(async move {
            dispatcher.run_task(task, Lease::Local(settled)).await;
            drop((handed, slot));
        });
        Some(heard)
    }
}
