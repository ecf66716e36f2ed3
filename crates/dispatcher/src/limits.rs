//! Per-subscription in-flight limits: one semaphore per subscription, sized
//! by its `max_in_flight`, so a slow receiver holds only its own permits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Semaphores by subscription id.
#[derive(Default)]
pub struct InFlightLimits {
    semaphores: Mutex<HashMap<String, (u32, Arc<Semaphore>)>>,
}

impl InFlightLimits {
    /// Waits for a permit of `subscription_id`, whose limit is `limit`. A
    /// changed limit takes effect for permits taken after the change.
    pub async fn acquire(&self, subscription_id: &str, limit: u32) -> OwnedSemaphorePermit {
        let semaphore = {
            let mut map = self.semaphores.lock().expect("limits lock");
            match map.get(subscription_id) {
                Some((current, semaphore)) if *current == limit => semaphore.clone(),
                _ => {
                    let semaphore = Arc::new(Semaphore::new(limit as usize));
                    map.insert(subscription_id.to_owned(), (limit, semaphore.clone()));
                    semaphore
                }
            }
        };
        semaphore
            .acquire_owned()
            .await
            .expect("limit semaphores are never closed")
    }

    /// Forgets a deleted subscription.
    pub fn forget(&self, subscription_id: &str) {
        self.semaphores
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
        let limits = InFlightLimits::default();
        let _held = limits.acquire("slow", 1).await;
        let blocked =
            tokio::time::timeout(Duration::from_millis(20), limits.acquire("slow", 1)).await;
        assert!(
            blocked.is_err(),
            "the second permit of a limit-1 subscription must wait"
        );
        let other =
            tokio::time::timeout(Duration::from_millis(20), limits.acquire("fast", 1)).await;
        assert!(other.is_ok());
    }
}
