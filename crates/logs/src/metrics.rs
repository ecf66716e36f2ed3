//! The delivery view of the fleet, exported by the log service from the
//! attempt records: bounded labels only (tenant, event type, outcome).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    /// Attempts by tenant, event type and outcome.
    pub deliveries: IntCounterVec,
    /// How long each request took.
    pub duration: HistogramVec,
    /// From the event reaching hookrelay to a successful delivery.
    pub latency: HistogramVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "hookrelay_deliveries_total",
                "Delivery attempts, by outcome",
            ),
            &["tenant", "event_type", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hookrelay_delivery_duration_seconds",
                "Duration of delivery requests",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "hookrelay_delivery_latency_seconds",
                "From the event reaching hookrelay to its successful delivery",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
                3600.0,
            ]),
            &["tenant"],
        )?;
        // Tenants and event types are not known in advance; outcomes are.
        for outcome in hookrelay_core::metrics::OUTCOMES {
            duration.with_label_values(&[outcome.as_str()]);
        }
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self {
            deliveries,
            duration,
            latency,
        })
    }
}
