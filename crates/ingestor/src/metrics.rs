//! Ingestor metrics, registered on the registry passed in.

use prometheus::{IntCounterVec, Opts, Registry};

/// Counters of what the ingestor accepted, fanned out and refused.
#[derive(Clone)]
pub struct Metrics {
    pub events: IntCounterVec,
    pub tasks: IntCounterVec,
    pub dlq: IntCounterVec,
    /// Events of catalogued types checked against their schema, by result:
    /// `valid`, `invalid` (delivered, `warn`) or `rejected` (dead-lettered).
    pub schema: IntCounterVec,
    /// Batches flushed into delivery tasks.
    pub batches: prometheus::IntCounter,
    /// First attempts handed to the dispatcher in process, and those of
    /// them that could not settle there and were queued in DELIVERIES.
    pub handed_over: prometheus::IntCounter,
    pub spilled: prometheus::IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let events = IntCounterVec::new(
            Opts::new(
                "hookrelay_events_ingested_total",
                "Events accepted from the EVENTS stream",
            ),
            &["tenant", "event_type"],
        )?;
        let tasks = IntCounterVec::new(
            Opts::new(
                "hookrelay_delivery_tasks_total",
                "Delivery tasks emitted, one per matching subscription",
            ),
            &["tenant", "event_type"],
        )?;
        let dlq = IntCounterVec::new(
            Opts::new(
                "hookrelay_dlq_total",
                "Messages sent to the dead-letter stream, by source and reason",
            ),
            &["source", "reason"],
        )?;
        // Every reason exported at 0 from the start: a series created at 1
        // reads as no increase, and the dead-letter alert would miss it.
        for reason in hookrelay_core::metrics::EVENT_ERROR_KINDS {
            dlq.with_label_values(&["events", reason]);
        }
        let schema = IntCounterVec::new(
            Opts::new(
                "hookrelay_schema_validations_total",
                "Events of catalogued types checked against their type's schema, by result (valid, invalid, rejected)",
            ),
            &["tenant", "event_type", "result"],
        )?;
        registry.register(Box::new(schema.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(tasks.clone()))?;
        let batches = prometheus::IntCounter::new(
            "hookrelay_batches_flushed_total",
            "Debounced batches flushed",
        )?;
        registry.register(Box::new(dlq.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        let handed_over = prometheus::IntCounter::new(
            "hookrelay_deliveries_handed_over_total",
            "First attempts handed to the dispatcher in process, skipping DELIVERIES",
        )?;
        let spilled = prometheus::IntCounter::new(
            "hookrelay_deliveries_spilled_total",
            "Handed-over first attempts that could not settle in process and were queued in DELIVERIES",
        )?;
        registry.register(Box::new(handed_over.clone()))?;
        registry.register(Box::new(spilled.clone()))?;
        Ok(Self {
            events,
            tasks,
            dlq,
            schema,
            batches,
            handed_over,
            spilled,
        })
    }
}
