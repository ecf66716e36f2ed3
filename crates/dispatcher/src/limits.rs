//! Per-subscription in-flight limits: one semaphore per subscription, sized
//! by its `max_in_flight`, so a slow receiver holds only its own permits;
//! for a subscription with more tasks than it can take, when each parked
//! task should come back; its rate limit (a token bucket); and adaptive
//! backpressure: a 429, 502, 503 or 504 halves the requests it may have in
//! flight and pauses it (for its `Retry-After`, else a second), each
//! success gives one slot back.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookrelay_core::subscription::RateLimit;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shortest and longest time a parked task waits.
pub const PARK_MIN: Duration = Duration::from_secs(1);
pub const PARK_MAX: Duration = Duration::from_secs(60);
/// Weight of the newest request in a subscription's mean duration.
const MEAN_WEIGHT: f64 = 0.1;
/// Pause after a throttling answer without `Retry-After`.
const THROTTLE_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause a `Retry-After` may ask for.
const THROTTLE_PAUSE_MAX: Duration = Duration::from_secs(300);

type Bucket = governor::DefaultDirectRateLimiter;

/// How a request ended, as far as the limits care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Success,
    /// 429, 502, 503 or 504, with the `Retry-After` if any.
    Throttled(Option<Duration>),
    Other,
}

impl Signal {
    /// The signal of an HTTP status (none: no response) and `Retry-After`.
    pub fn of(success: bool, status: Option<u16>, retry_after: Option<Duration>) -> Self {
        match status {
            _ if success => Signal::Success,
            Some(429 | 502 | 503 | 504) => Signal::Throttled(retry_after),
            _ => Signal::Other,
        }
    }
}

struct Limit {
    size: u32,
    semaphore: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Tasks handed over in process and not finished yet.
    handed: Arc<AtomicUsize>,
    /// Moving mean of request durations, in seconds.
    mean_secs: f64,
    /// When a request last finished (or the limit was made).
    last_progress: Instant,
    /// When the last parked task is due back.
    parked_until: Option<Instant>,
    /// Permits it may use now: `size`, or fewer after throttling answers.
    effective: u32,
    /// Permits still to be taken out of use as they come back.
    debt: u32,
    /// No request before this (a throttling answer).
    paused_until: Option<Instant>,
    /// The subscription's rate limit, and its bucket.
    rate: Option<(RateLimit, Arc<Bucket>)>,
}

impl Limit {
    fn new(size: u32) -> Self {
        Self {
            size,
            semaphore: Arc::new(Semaphore::new(size as usize)),
            waiting: Arc::default(),
            handed: Arc::default(),
            mean_secs: 0.0,
            last_progress: Instant::now(),
            parked_until: None,
            effective: size,
            debt: 0,
            paused_until: None,
            rate: None,
        }
    }

    fn resize(&mut self, size: u32) {
        self.size = size;
        self.semaphore = Arc::new(Semaphore::new(size as usize));
        self.effective = size;
        self.debt = 0;
    }

    /// The bucket for `rate`, made anew when the rate changed.
    fn bucket(&mut self, rate: RateLimit) -> Arc<Bucket> {
        match &self.rate {
            Some((current, bucket)) if *current == rate => bucket.clone(),
            _ => {
                let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
                let bucket = Arc::new(Bucket::direct(
                    governor::Quota::per_second(per_second).allow_burst(burst),
                ));
                self.rate = Some((rate, bucket.clone()));
                bucket
            }
        }
    }

    /// Seconds a request takes, as far as can be told at `now`: the moving
    /// mean, or longer while nothing has finished for longer (a receiver
    /// that just started to hang).
    fn request_secs(&self, now: Instant) -> f64 {
        let stalled = now.saturating_duration_since(self.last_progress);
        self.mean_secs.max(stalled.as_secs_f64())
    }

    /// Whether a request is in flight (a stall is measured only then).
    fn in_use(&self) -> bool {
        self.semaphore.available_permits() < self.size as usize || self.mean_secs > 0.0
    }

    /// Seconds between two requests being let through.
    fn spacing_secs(&self, now: Instant) -> f64 {
        self.request_secs(now) / self.size.max(1) as f64
    }
}

/// A task handed over in process; its subscription's count drops with it.
pub struct Handed(Arc<AtomicUsize>);

impl Drop for Handed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Semaphores by subscription id.
#[derive(Default)]
pub struct InFlightLimits {
    limits: Mutex<HashMap<String, Limit>>,
}

impl InFlightLimits {
    /// The semaphore of `subscription_id` at limit `size`, and its waiters.
    fn semaphore(&self, subscription_id: &str, size: u32) -> (Arc<Semaphore>, Arc<AtomicUsize>) {
        let mut map = self.limits.lock().expect("limits lock");
        let limit = map
            .entry(subscription_id.to_owned())
            .and_modify(|limit| {
                if limit.size != size {
                    limit.resize(size);
                }
            })
            .or_insert_with(|| Limit::new(size));
        (limit.semaphore.clone(), limit.waiting.clone())
    }

    /// Waits for a permit of `subscription_id`, whose limit is `size`. A
    /// changed limit takes effect for permits taken after the change.
    pub async fn acquire(&self, subscription_id: &str, size: u32) -> OwnedSemaphorePermit {
        let (semaphore, waiting) = self.semaphore(subscription_id, size);
        waiting.fetch_add(1, Ordering::Relaxed);
        let permit = semaphore
            .acquire_owned()
            .await
            .expect("limit semaphores are never closed");
        waiting.fetch_sub(1, Ordering::Relaxed);
        permit
    }

    /// Waits until `subscription_id` may send: past any pause a throttling
    /// answer asked for, and within its `rate` limit. Called with the
    /// subscription's own permit and before a shared slot is taken, so a
    /// throttled subscription waits holding only its own capacity.
    pub async fn pace(&self, subscription_id: &str, rate: Option<RateLimit>) {
        loop {
            let (paused_until, bucket) = {
                let mut map = self.limits.lock().expect("limits lock");
                let Some(limit) = map.get_mut(subscription_id) else {
                    return;
                };
                (limit.paused_until, rate.map(|rate| limit.bucket(rate)))
            };
            match paused_until {
                Some(until) if until > Instant::now() => {
                    tokio::time::sleep_until(until.into()).await;
                    // A later throttling answer may have pushed it further.
                    continue;
                }
                _ => {}
            }
            if let Some(bucket) = bucket {
                bucket.until_ready().await;
            }
            return;
        }
    }

    /// Gives back the own `permit` of a request to `subscription_id` that
    /// ended as `signal`, adapting how many it may have in flight.
    pub fn settle(&self, subscription_id: &str, permit: OwnedSemaphorePermit, signal: Signal) {
        let mut map = self.limits.lock().expect("limits lock");
        let Some(limit) = map.get_mut(subscription_id) else {
            return;
        };
        // A permit of a semaphore replaced since (the limit changed) just
        // goes back to the old one.
        let current = Arc::ptr_eq(permit.semaphore(), &limit.semaphore);
        match signal {
            Signal::Throttled(retry_after) => {
                // A `Retry-After` is honoured by the retry it schedules
                // (within 1x to 2x of the policy's delay); without one, the
                // whole subscription pauses a moment.
                let pause = match retry_after {
                    Some(_) => Duration::ZERO,
                    None => THROTTLE_PAUSE,
                }
                .min(THROTTLE_PAUSE_MAX);
                let until = Instant::now() + pause;
                limit.paused_until = Some(limit.paused_until.map_or(until, |u| u.max(until)));
                if current {
                    let halved = (limit.effective / 2).max(1);
                    limit.debt += limit.effective - halved;
                    limit.effective = halved;
                    let forgotten = limit.semaphore.forget_permits(limit.debt as usize);
                    limit.debt -= forgotten as u32;
                }
            }
            Signal::Success if current && limit.effective < limit.size => {
                limit.effective += 1;
                if limit.debt > 0 {
                    limit.debt -= 1;
                } else {
                    limit.semaphore.add_permits(1);
                }
            }
            Signal::Success | Signal::Other => {}
        }
        if current && limit.debt > 0 {
            limit.debt -= 1;
            permit.forget();
        }
    }

    /// Requests `subscription_id` may have in flight now.
    pub fn effective(&self, subscription_id: &str) -> Option<u32> {
        let map = self.limits.lock().expect("limits lock");
        map.get(subscription_id).map(|limit| limit.effective)
    }

    /// A place for one more task of `subscription_id` (limit `size`) handed
    /// over in process, if fewer than `1 + per_slot` per in-flight slot are
    /// (in flight or waiting); held until the task is done. Counted when
    /// taken, so one fetch of many events cannot overrun it.
    pub fn hand_over(&self, subscription_id: &str, size: u32, per_slot: usize) -> Option<Handed> {
        let handed = {
            let mut map = self.limits.lock().expect("limits lock");
            map.entry(subscription_id.to_owned())
                .or_insert_with(|| Limit::new(size))
                .handed
                .clone()
        };
        let most = size as usize * (1 + per_slot);
        handed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .ok()?;
        Some(Handed(handed))
    }

    /// Tasks of `subscription_id` waiting for a permit now.
    #[cfg(test)]
    fn waiting(&self, subscription_id: &str) -> usize {
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
            limit.last_progress = Instant::now();
            let took = took.as_secs_f64();
            limit.mean_secs = if limit.mean_secs == 0.0 {
                took
            } else {
                limit.mean_secs + MEAN_WEIGHT * (took - limit.mean_secs)
            };
        }
    }

    /// Whether a task of `subscription_id` should be parked rather than
    /// wait here: when more than `per_slot` tasks per in-flight slot wait
    /// and those already waiting would not all be sent within [`PARK_MIN`]
    /// (a fast receiver's queue drains sooner than parking would).
    pub fn should_park(&self, subscription_id: &str, per_slot: usize, now: Instant) -> bool {
        let limits = self.limits.lock().expect("limits lock");
        let Some(limit) = limits.get(subscription_id) else {
            return false;
        };
        let waiting = limit.waiting.load(Ordering::Relaxed);
        waiting >= limit.size as usize * per_slot
            && waiting as f64 * limit.spacing_secs(now) > PARK_MIN.as_secs_f64()
    }

    /// How long a task of a saturated `subscription_id` should stay parked.
    /// Parked tasks are spaced at the rate the subscription takes requests
    /// (`max_in_flight` over its request time), so a receiver that hangs
    /// gets its backlog back a little at a time, not all of it every
    /// second; never less than [`PARK_MIN`] or more than [`PARK_MAX`].
    pub fn park_for(&self, subscription_id: &str, now: Instant) -> Duration {
        let mut limits = self.limits.lock().expect("limits lock");
        let Some(limit) = limits.get_mut(subscription_id) else {
            return PARK_MIN;
        };
        let spacing = Duration::from_secs_f64(limit.spacing_secs(now));
        let earliest = now + PARK_MIN;
        let due = limit
            .parked_until
            .map_or(earliest, |until| until.max(earliest))
            + spacing;
        let due = due.min(now + PARK_MAX);
        limit.parked_until = Some(due);
        due - now
    }

    /// Whether requests to `subscription_id` take longer than `threshold`
    /// (by the moving mean, or because nothing finished for that long).
    pub fn is_slow(&self, subscription_id: &str, threshold: Duration, now: Instant) -> bool {
        let limits = self.limits.lock().expect("limits lock");
        limits.get(subscription_id).is_some_and(|limit| {
            limit.in_use() && limit.request_secs(now) > threshold.as_secs_f64()
        })
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

    #[test]
    fn hand_overs_are_counted_when_taken_and_freed_when_done() {
        let limits = InFlightLimits::default();
        // Limit 2, one waiting per slot: four at most, in flight or waiting.
        let held: Vec<Handed> = (0..4)
            .map(|_| limits.hand_over("s", 2, 1).expect("room"))
            .collect();
        assert!(limits.hand_over("s", 2, 1).is_none());
        assert!(
            limits.hand_over("other", 2, 1).is_some(),
            "per subscription"
        );
        drop(held);
        assert!(limits.hand_over("s", 2, 1).is_some());
    }

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
    async fn throttling_halves_the_in_flight_limit_and_successes_restore_it() {
        let limits = InFlightLimits::default();
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(limits.acquire("s", 8).await);
        }
        // A 429 with all 8 in flight: 4 may be in flight from now on, so
        // four of the permits coming back are taken out of use.
        limits.settle("s", held.pop().unwrap(), Signal::Throttled(None));
        assert_eq!(limits.effective("s"), Some(4));
        for permit in held.drain(..) {
            limits.settle("s", permit, Signal::Other);
        }
        let mut again = Vec::new();
        for _ in 0..4 {
            again.push(limits.acquire("s", 8).await);
        }
        let fifth = tokio::time::timeout(Duration::from_millis(50), limits.acquire("s", 8)).await;
        assert!(fifth.is_err(), "only 4 in flight after a throttling answer");
        // Each success gives one back.
        limits.settle("s", again.pop().unwrap(), Signal::Success);
        assert_eq!(limits.effective("s"), Some(5));
        let mut back = Vec::new();
        for _ in 0..2 {
            back.push(
                tokio::time::timeout(Duration::from_secs(1), limits.acquire("s", 8))
                    .await
                    .expect("5 in flight after one success"),
            );
        }
        drop(back);
        drop(again);
    }

    #[tokio::test]
    async fn a_throttled_subscription_without_retry_after_pauses_a_second() {
        let limits = InFlightLimits::default();
        let permit = limits.acquire("s", 4).await;
        limits.settle("s", permit, Signal::Throttled(None));
        let started = Instant::now();
        limits.pace("s", None).await;
        assert!(started.elapsed() >= Duration::from_millis(990));
        let started = Instant::now();
        limits.pace("other", None).await;
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_rate_limit_spaces_requests_after_the_burst() {
        let limits = InFlightLimits::default();
        drop(limits.acquire("s", 4).await);
        let rate = RateLimit {
            per_second: 20,
            burst: 2,
        };
        let started = Instant::now();
        for _ in 0..6 {
            limits.pace("s", Some(rate)).await;
        }
        // Two at once, then one every 50 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn parked_tasks_of_a_slow_subscription_come_back_spread_out() {
        let limits = InFlightLimits::default();
        let start = Instant::now();
        assert_eq!(limits.park_for("unknown", start), PARK_MIN);
        drop(limits.acquire("hung", 2).await);
        drop(limits.acquire("fast", 2).await);
        limits.record("fast", Duration::from_millis(2));
        // Nothing has finished for 10 s: a request is taken to last 10 s,
        // and two at a time means one task back every 5 s.
        let now = start + Duration::from_secs(10);
        for expected in [6.0, 11.0, 16.0] {
            let delay = limits.park_for("hung", now).as_secs_f64();
            assert!(
                (delay - expected).abs() < 0.05,
                "{delay} s, not {expected} s"
            );
        }
        for _ in 0..100 {
            limits.park_for("hung", now);
        }
        assert_eq!(limits.park_for("hung", now), PARK_MAX, "never longer");
        // A fast receiver's backlog comes back almost at once.
        let soon = Instant::now();
        let fast = limits.park_for("fast", soon);
        assert!(
            fast > PARK_MIN && fast < PARK_MIN + Duration::from_millis(2),
            "{fast:?}"
        );
    }

    #[tokio::test]
    async fn only_a_queue_that_would_wait_longer_than_parking_is_parked() {
        let limits = Arc::new(InFlightLimits::default());
        let _held = limits.acquire("sub", 1).await;
        limits.record("sub", Duration::from_millis(10));
        let mut waiters = Vec::new();
        for _ in 0..4 {
            let limits = limits.clone();
            waiters.push(tokio::spawn(async move { limits.acquire("sub", 1).await }));
        }
        tokio::time::timeout(Duration::from_secs(1), async {
            while limits.waiting("sub") != 4 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("four waiting");
        let now = Instant::now();
        // 4 waiting at 10 ms each: sent within 40 ms, sooner than parking.
        assert!(!limits.should_park("sub", 4, now));
        assert!(!limits.should_park("sub", 5, now), "fewer than 5 per slot");
        // The receiver stops answering: after 2 s without progress the same
        // queue would wait 8 s.
        assert!(limits.should_park("sub", 4, now + Duration::from_secs(2)));
        assert!(!limits.should_park("other", 0, now));
        for waiter in waiters {
            waiter.abort();
        }
    }
}
