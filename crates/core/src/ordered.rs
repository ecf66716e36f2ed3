//! Where ordered delivery (`ordering: fifo`) keeps its queues in Redis;
//! the dispatcher's `ordered` module fills and drains them.

use crate::names::{Names, FIFO_SLOT};

/// The Redis keys of ordered delivery.
#[derive(Debug, Clone)]
pub struct OrderedKeys {
    names: Names,
}

/// All in [`FIFO_SLOT`]: taking or settling a head touches the queue, its
/// lock and the ready set shared by every ordered subscription.
impl OrderedKeys {
    pub fn new(names: &Names) -> Self {
        Self {
            names: names.clone(),
        }
    }

    fn key(&self, parts: &[&str]) -> String {
        self.names.redis_tagged(FIFO_SLOT, parts)
    }

    /// A subscription's queue: members `seq:first` (base 36), scored by seq.
    pub fn queue(&self, subscription_id: &str) -> String {
        self.key(&["queue", subscription_id])
    }

    /// Subscriptions by when their head may go.
    pub fn ready(&self) -> String {
        self.key(&["ready"])
    }

    /// Which dispatcher sends a subscription's queue now.
    pub fn lock(&self, subscription_id: &str) -> String {
        self.key(&["lock", subscription_id])
    }

    /// Per subscription, `seq:attempt` of a head that failed.
    pub fn attempts(&self) -> String {
        self.key(&["attempts"])
    }

    /// Per subscription, the highest sequence sent.
    pub fn taken(&self) -> String {
        self.key(&["taken"])
    }
}
