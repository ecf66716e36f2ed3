//! Per-subscription in-flight limits: one semaphore per subscription, sized
//! by its `max_in_flight`, so a slow receiver holds only its own permits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

struct Limit {
    size: u32,
    semaphore: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
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
                .or_insert_with(|| Limit {
                    size,
                    semaphore: Arc::new(Semaphore::new(size as usize)),
                    waiting: Arc::default(),
                });
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
}
