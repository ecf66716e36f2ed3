//! The ingestor: reads published events from the EVENTS stream, matches each
//! against the subscription index, and emits one delivery task (a reference
//! to the stored event) per match: to DELIVERIES, or straight to the
//! dispatcher when it runs in the same process. Malformed events go to the DLQ with the reason; they never stop
//! the consumer.
#![forbid(unsafe_code)]

pub mod batch;
mod fanout;
mod flusher;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use hookrelay_core::failure::Transients;
use hookrelay_core::health::Flag;
use hookrelay_core::index::SubscriptionIndex;
use hookrelay_core::nats::{pull_messages, supervise, ConsumerSpec};
use hookrelay_core::Config;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;

/// Header on DLQ messages: why the message was refused.
pub const DLQ_REASON_HEADER: &str = "Hookrelay-Dlq-Reason";
/// Header on DLQ messages: the subject it was published on.
pub const DLQ_SUBJECT_HEADER: &str = "Hookrelay-Dlq-Subject";
/// Header on DLQ messages whose body was cut to fit: the original size.
pub const DLQ_ORIGINAL_SIZE_HEADER: &str = "Hookrelay-Dlq-Original-Size";

/// Why the ingestor stopped consuming; the consumer is started again.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Consumer(#[from] hookrelay_core::nats::NatsError),
    #[error("the event stream ended")]
    Ended,
}

/// Everything the ingestor needs.
pub struct Ingestor {
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub index: Arc<SubscriptionIndex>,
    /// The event-type catalog: events of a type that validates are
    /// checked against its schema before fan-out.
    pub catalog: Arc<hookrelay_catalog::CatalogIndex>,
    /// The catalog's bucket, to know how far its index must have caught up.
    pub catalog_bucket: async_nats::jetstream::kv::Store,
    pub metrics: Metrics,
    pub ready: Flag,
    pub batcher: batch::Batcher,
    /// The subscriptions bucket, to know how far the index must have caught up.
    pub bucket: async_nats::jetstream::kv::Store,
    /// The dispatcher of this process, if it runs here and hand-over is on.
    pub dispatcher: Option<Arc<hookrelay_dispatcher::Dispatcher>>,
    pub transients: Transients,
    /// Events waiting for their handed-over deliveries to settle.
    pub waiting: TaskTracker,
    /// Queues of subscriptions delivered in order, filled here in stream
    /// order.
    pub ordered: Arc<hookrelay_dispatcher::ordered::OrderedQueues>,
    /// Ordered subscriptions whose task for an event could not be queued
    /// (that event's sequence, and when): their later events are given
    /// back too until it is queued, so they cannot overtake it.
    pub ordered_blocked:
        std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::Instant)>>,
}

impl Ingestor {
    /// Consumes events until `shutdown`, recreating the consumer (and the
    /// streams) after NATS failures.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.index.wait_loaded().await;
        let names = self.config.names();
        let spec = ConsumerSpec {
            stream: names.events_stream(),
            durable: names.consumer("ingestor"),
            filter: names.events_filter(),
            ack_wait: self.config.nats.ack_wait,
            max_ack_pending: 20_000,
            batch: self.config.ingestor.fetch_batch,
            max_bytes: hookrelay_core::nats::PULL_MAX_BYTES,
        };
        supervise("event consumer", &shutdown, &self.ready, || {
            self.consume(&spec, &shutdown)
        })
        .await;
        self.waiting.close();
        let grace = self.config.shutdown_grace;
        if tokio::time::timeout(grace, self.waiting.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                events = self.waiting.len(),
                "grace period over; events with unsettled deliveries will be redelivered"
            );
        }
    }

    async fn consume(
        &self,
        spec: &ConsumerSpec,
        shutdown: &CancellationToken,
    ) -> Result<(), IngestError> {
        let mut messages = pull_messages(&self.js, &self.config, spec)
            .await?
            .ready_chunks(spec.batch);
        self.ready.set(true);
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                chunk = messages.next() => chunk,
            };
            let Some(chunk) = chunk else {
                return Err(IngestError::Ended);
            };
            self.catch_up().await;
            let mut ok = Vec::with_capacity(chunk.len());
            let mut failed = None;
            for message in chunk {
                match message {
                    Ok(message) => ok.push(message),
                    Err(e) => failed = Some(e.to_string()),
                }
            }
            self.process(ok).await;
            // A pull that failed (missed heartbeats after a NATS restart, a
            // lost connection) starts a fresh consumer rather than hoping the
            // old one recovers.
            if let Some(message) = failed {
                return Err(IngestError::Consumer(
                    hookrelay_core::nats::NatsError::Consumer {
                        name: spec.durable.clone(),
                        message,
                    },
                ));
            }
        }
    }

    /// Waits until the indexes hold every subscription and event type
    /// written before this batch was fetched, so one created a moment
    /// before an event applies to it even when this process's KV watches
    /// lag (another process wrote it).
    async fn catch_up(&self) {
        tokio::join!(
            self.index_catch_up("subscription", &self.bucket, |last, patience| {
                self.index.wait_for_revision(last, patience)
            }),
            self.index_catch_up("event-type", &self.catalog_bucket, |last, patience| {
                self.catalog.wait_for_revision(last, patience)
            }),
        );
    }

    async fn index_catch_up<F, Fut>(
        &self,
        what: &str,
        bucket: &async_nats::jetstream::kv::Store,
        wait: F,
    ) where
        F: FnOnce(u64, Duration) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        // Asked of the server each time: `kv::Store::status` answers the
        // info cached when the bucket was opened, which made this a no-op.
        let last = match bucket.stream.get_info().await {
            Ok(info) => info.state.last_sequence,
            Err(error) => {
                tracing::warn!(%error, "cannot read the {what} bucket's revision");
                return;
            }
        };
        // An event matched against an index that lacks a subscription is
        // lost to it, so wait long (a busy machine can hold the watch back
        // for seconds), but well inside the events' ack wait.
        let patience = (self.config.nats.ack_wait / 3).max(Duration::from_secs(2));
        if !wait(last, patience).await {
            tracing::warn!(
                revision = last,
                waited = ?patience,
                "{what} index still behind its bucket; matching against it as it is"
            );
        }
    }
}
