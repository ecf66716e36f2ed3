//! Dispatcher process metrics, registered on the registry passed in.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    /// Requests being sent now.
    pub in_flight: IntGauge,
    /// Requests sent, by outcome.
    pub requests: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let in_flight = IntGauge::new("hookrelay_dispatcher_in_flight", "HTTP requests in flight")?;
        let requests = IntCounterVec::new(
            Opts::new(
                "hookrelay_dispatcher_requests_total",
                "HTTP requests sent, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Self {
            in_flight,
            requests,
        })
    }
}
