//! Dispatcher process metrics, registered on the registry passed in.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    /// Requests being sent now.
    pub in_flight: IntGauge,
    /// `dispatcher.concurrency`: the most requests in flight at once.
    pub concurrency: IntGauge,
    /// Requests sent, by outcome.
    pub requests: IntCounterVec,
    /// Retries stored in the schedule.
    pub retries_scheduled: IntCounter,
    /// Tasks of saturated subscriptions parked in the schedule.
    pub parked: IntCounter,
    /// Deliveries given up, by reason.
    pub given_up: IntCounterVec,
    /// Entries in the retry schedule (due later, or claimed).
    pub retries_pending: IntGauge,
    /// How overdue the oldest scheduled retry is.
    pub oldest_retry_age: Gauge,
    /// Circuits that changed state, by the state they entered.
    pub circuit_transitions: IntCounterVec,
    /// Subscriptions known to this dispatcher by circuit state (healthy
    /// ones are not counted).
    pub circuits: IntGaugeVec,
    /// Tasks held in Redis because their subscription's circuit is open.
    pub held: IntCounter,
    /// Subscriptions disabled after failing for `disable_after`.
    pub auto_disabled: IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            in_flight: IntGauge::new("hookrelay_dispatcher_in_flight", "HTTP requests in flight")?,
            concurrency: IntGauge::new(
                "hookrelay_dispatcher_concurrency",
                "The most HTTP requests this dispatcher sends at once (dispatcher.concurrency)",
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "hookrelay_dispatcher_requests_total",
                    "HTTP requests sent, by outcome",
                ),
                &["outcome"],
            )?,
            retries_scheduled: IntCounter::new(
                "hookrelay_retries_scheduled_total",
                "Failed deliveries scheduled for another attempt",
            )?,
            parked: IntCounter::new(
                "hookrelay_deliveries_parked_total",
                "Tasks of subscriptions at their in-flight limit parked in the schedule",
            )?,
            given_up: IntCounterVec::new(
                Opts::new(
                    "hookrelay_deliveries_given_up_total",
                    "Deliveries given up, by reason",
                ),
                &["reason"],
            )?,
            retries_pending: IntGauge::new(
                "hookrelay_retries_pending",
                "Entries in the retry schedule",
            )?,
            oldest_retry_age: Gauge::new(
                "hookrelay_retry_oldest_overdue_seconds",
                "How long the oldest due retry has waited past its due time",
            )?,
            circuit_transitions: IntCounterVec::new(
                Opts::new(
                    "hookrelay_circuit_transitions_total",
                    "Subscription circuits that changed state, by the state entered",
                ),
                &["state"],
            )?,
            circuits: IntGaugeVec::new(
                Opts::new(
                    "hookrelay_circuits",
                    "Subscriptions whose circuit is failing, open or half-open, as this dispatcher sees them",
                ),
                &["state"],
            )?,
            held: IntCounter::new(
                "hookrelay_deliveries_held_total",
                "Tasks held in Redis while their subscription's circuit is open",
            )?,
            auto_disabled: IntCounter::new(
                "hookrelay_subscriptions_auto_disabled_total",
                "Subscriptions disabled after failing for dispatcher.circuit.disable_after",
            )?,
        };
        // Every state exported from the start, so dashboards read 0, not "no data".
        for state in hookrelay_core::circuit::CircuitState::ALL {
            metrics
                .circuit_transitions
                .with_label_values(&[state.as_str()]);
            if state != hookrelay_core::circuit::CircuitState::Healthy {
                metrics.circuits.with_label_values(&[state.as_str()]).set(0);
            }
        }
        registry.register(Box::new(metrics.circuit_transitions.clone()))?;
        registry.register(Box::new(metrics.circuits.clone()))?;
        registry.register(Box::new(metrics.held.clone()))?;
        registry.register(Box::new(metrics.auto_disabled.clone()))?;
        // Known outcomes and reasons too: a series created at 1 reads as no
        // increase, so an alert on the first give-up of a reason would miss it.
        for outcome in hookrelay_core::metrics::OUTCOMES {
            metrics.requests.with_label_values(&[outcome.as_str()]);
        }
        for reason in hookrelay_core::metrics::GIVE_UPS {
            metrics.given_up.with_label_values(&[reason.as_str()]);
        }
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.concurrency.clone()))?;
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.retries_scheduled.clone()))?;
        registry.register(Box::new(metrics.parked.clone()))?;
        registry.register(Box::new(metrics.given_up.clone()))?;
        registry.register(Box::new(metrics.retries_pending.clone()))?;
        registry.register(Box::new(metrics.oldest_retry_age.clone()))?;
        Ok(metrics)
    }
}
