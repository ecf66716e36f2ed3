//! Per-subscription health: the dispatcher's circuit and recent attempts.

use hookrelay_core::circuit::CircuitState;
use hookrelay_proto::v1 as pb;

use crate::index::Health;

/// `disabled`, or the circuit's state: `healthy`, `failing`, `open`,
/// `half_open`.
pub fn state(enabled: bool, health: &Health) -> &'static str {
    if !enabled {
        return "disabled";
    }
    health
        .circuit
        .as_ref()
        .map_or(CircuitState::Healthy, |c| c.state)
        .as_str()
}

pub fn to_proto(subscription_id: &str, enabled: bool, health: &Health) -> pb::SubscriptionHealth {
    let successes = health.recent.iter().filter(|s| **s).count();
    let circuit = health.circuit.as_ref();
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
        failing_since: circuit.map(|c| hookrelay_proto::timestamp(c.failing_since)),
        opened_at: circuit
            .and_then(|c| c.opened_at)
            .map(hookrelay_proto::timestamp),
        next_probe_at: circuit
            .and_then(|c| c.next_probe_at)
            .map(hookrelay_proto::timestamp),
        held_deliveries: health.held,
        ordered_queued: health.queued,
    }
}
