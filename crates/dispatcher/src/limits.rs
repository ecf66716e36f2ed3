//! Per-subscription in-flight limits: one semaphore per subscription, sized
//! by its `max_in_flight`, so a slow receiver holds only its own permits;
//! and, for a subscription with more tasks than it can take, when each
//! parked task should come back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shortest and longest time a parked task waits.
pub const PARK_MIN: Duration = Duration::from_secs(1);
pub const PARK_MAX: Duration = Duration::from_secs(60);
/// Weight of the newest request in a subscription's mean duration.
const MEAN_WEIGHT: f64 = 0.1;

struct Limit {
    size: u32,
    semaphore: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Moving mean of request durations, in seconds.
    mean_secs: f64,
    /// When the last parked task is due back.
    parked_until: Option<Instant>,
}

impl Limit {
    fn new(size: u32) -> Self {
        Self {
            size,
            semaphore: Arc::new(Semaphore::new(size as usize)),
            waiting: Arc::default(),
            mean_secs: 0.0,
            parked_until: None,
        }
    }
}

/// Semaphores by subscription id.
#[derive(Default)]
pub struct InFlightLimits {
    limits: Mutex<HashMap<String, Limit>>,
}

impl InFlightLimits {
    /// Waits for a permit of `subscription_id`, whose limit is `size`. A
    /// changed limit takes effect for permits taken after the change.
    pub async fn acquire(&self, subscription_id: &str, size: u32) -> OwnedSemaphorePermit {
        let (semaphore, waiting) = {
            let mut map = self.limits.lock().expect("limits lock");
            let limit = map
                .entry(subscription_id.to_owned())
                .and_modify(|limit| {
                    if limit.size != size {
                        limit.size = size;
                        limit.semaphore = Arc::new(Semaphore::new(size as usize));
                    }
                })
                .or_insert_with(|| Limit::new(size));
            (limit.semaphore.clone(), limit.waiting.clone())
        };
        waiting.fetch_add(1, Ordering::Relaxed);
        let permit = semaphore
            .acquire_owned()
            .await
            .expect("limit semaphores are never closed");
        waiting.fetch_sub(1, Ordering::Relaxed);
        permit
    }

    /// Tasks of `subscription_id` waiting for a permit now.
    pub fn waiting(&self, subscription_id: &str) -> usize {
        self.limits
            .lock()
            .expect("limits lock")
            .get(subscription_id)
            .map_or(0, |limit| limit.waiting.load(Ordering::Relaxed))
    }

    /// Notes how long a request to `subscription_id` took.
    pub fn record(&self, subscription_id: &str, took: Duration) {
        if let Some(limit) = self
            .limits
            .lock()
            .expect("limits lock")
            .get_mut(subscription_id)
        {
            let took = took.as_secs_f64();
            limit.mean_secs = if limit.mean_secs == 0.0 {
                took
            } else {
                limit.mean_secs + MEAN_WEIGHT * (took - limit.mean_secs)
            };
        }
    }

    /// How long a task of a saturated `subscription_id` should stay parked.
    /// Parked tasks are spaced at the rate the subscription takes requests
    /// (`max_in_flight` over its mean request time), so a receiver that
    /// hangs gets its backlog back a little at a time, not all of it every
    /// second; never less than [`PARK_MIN`] or more than [`PARK_MAX`].
    /// Until a request has finished, one is assumed to take `timeout` (a
    /// receiver that hangs has none finished for that long).
    pub fn park_for(&self, subscription_id: &str, timeout: Duration, now: Instant) -> Duration {
        let mut limits = self.limits.lock().expect("limits lock");
        let Some(limit) = limits.get_mut(subscription_id) else {
            return PARK_MIN;
        };
        let mean = if limit.mean_secs > 0.0 {
            limit.mean_secs
        } else {
            timeout.as_secs_f64()
        };
        let spacing = Duration::from_secs_f64(mean / limit.size.max(1) as f64);
        let earliest = now + PARK_MIN;
        let due = limit
            .parked_until
            .map_or(earliest, |until| until.max(earliest))
            + spacing;
        let due = due.min(now + PARK_MAX);
        limit.parked_until = Some(due);
        due - now
    }

    /// Forgets a deleted subscription.
    pub fn forget(&self, subscription_id: &str) {
        self.limits
            .lock()
            .expect("limits lock")
            .remove(subscription_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_subscription_does_not_block_another() {
        let limits = Arc::new(InFlightLimits::default());
        let _held = limits.acquire("slow", 1).await;
        let waiter = {
            let limits = limits.clone();
            tokio::spawn(async move { limits.acquire("slow", 1).await })
        };
        tokio::time::timeout(Duration::from_secs(1), async {
            while limits.waiting("slow") != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the second permit of a limit-1 subscription waits");
        assert!(!waiter.is_finished());
        let other =
            tokio::time::timeout(Duration::from_millis(100), limits.acquire("fast", 1)).await;
        assert!(other.is_ok());
        assert_eq!(limits.waiting("fast"), 0);
    }

    #[tokio::test]
    async fn parked_tasks_of_a_slow_subscription_come_back_spread_out() {
        let limits = InFlightLimits::default();
        let now = Instant::now();
        let timeout = Duration::from_secs(10);
        assert_eq!(limits.park_for("unknown", timeout, now), PARK_MIN);
        drop(limits.acquire("hung", 2).await);
        drop(limits.acquire("fast", 2).await);
        // Nothing finished yet: a request is assumed to take the timeout.
        // Two at a time, 10 s each: one task back every 5 s.
        let delays: Vec<Duration> = (0..3)
            .map(|_| limits.park_for("hung", timeout, now))
            .collect();
        let secs = |s| Duration::from_secs(s);
        assert_eq!(delays, [secs(6), secs(11), secs(16)]);
        for _ in 0..100 {
            limits.park_for("hung", timeout, now);
        }
        assert_eq!(
            limits.park_for("hung", timeout, now),
            PARK_MAX,
            "never longer"
        );
        // A fast receiver's backlog comes back almost at once.
        limits.record("fast", Duration::from_millis(2));
        let fast = limits.park_for("fast", timeout, now);
        assert!(
            fast > PARK_MIN && fast < PARK_MIN + Duration::from_millis(2),
            "{fast:?}"
        );
    }
}
