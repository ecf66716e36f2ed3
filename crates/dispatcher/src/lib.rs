//! The dispatcher: pulls delivery tasks from DELIVERIES, sends each as a
//! signed HTTP request under a global and a per-subscription concurrency
//! limit, schedules retries of failures in Redis, publishes an attempt record
//! to ATTEMPTS, and only then acks. Its scheduler moves due retries back into
//! DELIVERIES.
#![forbid(unsafe_code)]

pub mod circuit;
mod deliver;
mod dlq;
pub mod events;
pub mod fair;
pub mod guard;
mod handoff;
mod lease;
pub mod limits;
pub mod metrics;
pub mod ordered;
pub mod request;
pub mod schedule;
mod scheduler;
pub mod sender;

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use hookrelay_core::failure::Transients;
use hookrelay_core::health::Flag;
use hookrelay_core::index::SubscriptionIndex;
use hookrelay_core::nats::{pull_messages, supervise, ConsumerSpec, NatsError};
use hookrelay_core::Config;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;
pub use sender::Sender;

pub use lease::{keep_alive, Settled};
pub use schedule::RetrySchedule;

use limits::InFlightLimits;

/// Header on DLQ messages from DELIVERIES: why the task was refused.
pub const DLQ_REASON_HEADER: &str = "Hookrelay-Dlq-Reason";

/// Sends deliveries.
pub struct Dispatcher {
    config: Arc<Config>,
    js: jetstream::Context,
    index: Arc<SubscriptionIndex>,
    bucket: kv::Store,
    catalog: Arc<hookrelay_catalog::CatalogIndex>,
    sender: Sender,
    metrics: Metrics,
    ready: Flag,
    scheduler_ready: Flag,
    schedule: RetrySchedule,
    limits: InFlightLimits,
    shapers: request::Shapers,
    /// Request slots, shared fairly across tenants and subscriptions.
    fair: Arc<fair::FairGate>,
    /// Endpoint health per subscription.
    circuits: circuit::Circuits,
    /// Queues of subscriptions delivered in order.
    ordered: Arc<ordered::OrderedQueues>,
    /// Hand-overs in progress, at most the global concurrency.
    handoffs: Arc<Semaphore>,
    /// KiB of request bodies being rendered or sent.
    bodies: Arc<Semaphore>,
    /// The largest attempt record the server takes (see `dlq.rs`).
    max_record: std::sync::OnceLock<usize>,
    events: events::EventReader,
    transients: Transients,
    /// Deliveries in progress, from DELIVERIES and handed over in process.
    tracker: TaskTracker,
}

/// The dispatcher's connections and instruments.
pub struct Parts {
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub index: Arc<SubscriptionIndex>,
    pub bucket: kv::Store,
    /// The event-type catalog: attempts of events whose type validates in
    /// `warn` mode carry the schema violation.
    pub catalog: Arc<hookrelay_catalog::CatalogIndex>,
    pub schedule: RetrySchedule,
    /// Shared with the ingestor of this process, which fills them.
    pub ordered: Arc<ordered::OrderedQueues>,
    pub sender: Sender,
    pub metrics: Metrics,
    /// Up while the delivery consumer runs.
    pub ready: Flag,
    /// Up while the retry schedule answers.
    pub scheduler_ready: Flag,
    pub transients: Transients,
}

impl Dispatcher {
    pub fn new(parts: Parts) -> Arc<Self> {
        let fair = fair::FairGate::new(
            parts.config.dispatcher.concurrency,
            parts.config.limits.max_in_flight_per_tenant as usize,
        );
        let events = events::EventReader::new(parts.js.clone(), parts.config.names());
        let handoffs = Arc::new(Semaphore::new(parts.config.dispatcher.concurrency));
        parts
            .metrics
            .concurrency
            .set(parts.config.dispatcher.concurrency as i64);
        let circuits = circuit::Circuits::new(
            hookrelay_core::circuit::CircuitKeys::new(&parts.config.names()),
            parts.schedule.due_key().to_owned(),
            parts.schedule.redis(),
            parts.config.dispatcher.circuit,
        );
        Arc::new(Self {
            circuits,
            ordered: parts.ordered,
            config: parts.config,
            index: parts.index,
            bucket: parts.bucket,
            catalog: parts.catalog,
            sender: parts.sender,
            metrics: parts.metrics,
            ready: parts.ready,
            scheduler_ready: parts.scheduler_ready,
            schedule: parts.schedule,
            limits: InFlightLimits::default(),
            shapers: request::Shapers::default(),
            handoffs,
            bodies: Arc::new(Semaphore::new(deliver::BODY_BUDGET_KIB as usize)),
            max_record: std::sync::OnceLock::new(),
            fair,
            events,
            js: parts.js,
            transients: parts.transients,
            tracker: TaskTracker::new(),
        })
    }

    /// Delivers until `shutdown`, then lets in-flight deliveries finish
    /// within the grace period.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.index.wait_loaded().await;
        let names = self.config.names();
        let spec = ConsumerSpec {
            stream: names.deliveries_stream(),
            durable: names.consumer("dispatcher"),
            filter: names.deliveries_filter(),
            ack_wait: self.config.dispatcher.ack_wait,
            // Room for every tenant's share in hand (`fair.rs`) with as
            // much again to spare: tasks of tenants whose endpoints hang
            // must not fill the window other tenants' tasks come through.
            max_ack_pending: (self.config.dispatcher.concurrency
                * (1 + deliver::WAITING_PER_SLOT)
                * 2) as i64,
            batch: self.config.dispatcher.fetch_batch,
            // Tasks are references: small.
            max_bytes: 0,
        };
        supervise("delivery consumer", &shutdown, &self.ready, || {
            self.consume(&spec, &self.tracker, &shutdown)
        })
        .await;
        self.tracker.close();
        let grace = self.config.shutdown_grace;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "grace period over; unfinished deliveries will be redelivered"
            );
        }
    }

    async fn consume(
        self: &Arc<Self>,
        spec: &ConsumerSpec,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), NatsError> {
        let mut messages = pull_messages(&self.js, &self.config, spec).await?;
        self.ready.set(true);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    tracker.spawn(self.clone().deliver(message));
                }
                // A failed pull (missed heartbeats after a NATS restart) starts
                // a fresh consumer rather than hoping the old one recovers.
                Some(Err(error)) => {
                    return Err(NatsError::Consumer {
                        name: spec.durable.clone(),
                        message: error.to_string(),
                    })
                }
                None => {
                    return Err(NatsError::Consumer {
                        name: spec.durable.clone(),
                        message: "message stream ended".into(),
                    })
                }
            }
        }
    }
}
