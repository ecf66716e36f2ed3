//! Where ordered delivery (`ordering: fifo`) keeps its queues in Redis;
//! the dispatcher's `ordered` module fills and drains them.

use crate::Names;

/// The Redis keys of ordered delivery.
#[derive(Debug, Clone)]
pub struct OrderedKeys {
    prefix: String,
}

impl OrderedKeys {
    pub fn new(names: &Names) -> Self {
        Self {
            prefix: names.redis_key(&[]),
        }
    }

    /// A subscription's queue: members `seq:first` (base 36), scored by seq.
    pub fn queue(&self, subscription_id: &str) -> String {
        format!("{}:fifo:{subscription_id}", self.prefix)
    }

    /// Subscriptions by when their head may go.
    pub fn ready(&self) -> String {
        format!("{}:fifo-ready", self.prefix)
    }

    /// Which dispatcher sends a subscription's queue now.
    pub fn lock(&self, subscription_id: &str) -> String {
        format!("{}:fifo-lock:{subscription_id}", self.prefix)
    }

    /// Per subscription, `seq:attempt` of a head that failed.
    pub fn attempts(&self) -> String {
        format!("{}:fifo-attempts", self.prefix)
    }

    /// Per subscription, the highest sequence sent.
    pub fn taken(&self) -> String {
        format!("{}:fifo-taken", self.prefix)
    }
}
