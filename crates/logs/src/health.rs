//! Per-subscription health from its recent attempts.

use hookrelay_proto::v1 as pb;

use crate::index::Health;

/// Failures in a row from which a subscription counts as failing.
pub const FAILING_AFTER: u32 = 3;

/// `healthy`, `failing` or `disabled`.
pub fn state(enabled: bool, health: &Health) -> &'static str {
    if !enabled {
        "disabled"
    } else if health.consecutive_failures >= FAILING_AFTER {
        "failing"
    } else {
        "healthy"
    }
}

pub fn to_proto(subscription_id: &str, enabled: bool, health: &Health) -> pb::SubscriptionHealth {
    let successes = health.recent.iter().filter(|s| **s).count();
    pb::SubscriptionHealth {
        subscription_id: subscription_id.to_owned(),
        state: state(enabled, health).to_owned(),
        success_rate: if health.recent.is_empty() {
            1.0
        } else {
            successes as f64 / health.recent.len() as f64
        },
        recent_attempts: health.recent.len() as u32,
        consecutive_failures: health.consecutive_failures,
        last_success_at: health.last_success.map(hookrelay_proto::timestamp),
        last_failure_at: health.last_failure.map(hookrelay_proto::timestamp),
    }
}
