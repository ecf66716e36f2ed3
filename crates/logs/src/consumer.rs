//! Follows the ATTEMPTS stream into the Redis index and the metrics.

use std::sync::Arc;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use hookrelay_core::failure::backoff;
use hookrelay_core::health::Flag;
use hookrelay_core::nats::{pull_messages, supervise, ConsumerSpec, NatsError};
use hookrelay_core::Config;
use tokio_util::sync::CancellationToken;

use crate::index::{AttemptIndex, AttemptKeys};
use crate::metrics::Metrics;

/// Indexes attempt records.
pub struct AttemptConsumer {
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub index: AttemptIndex,
    pub metrics: Metrics,
    pub ready: Flag,
}

impl AttemptConsumer {
    /// Consumes until `shutdown`, recreating the consumer after failures.
    pub async fn run(self, shutdown: CancellationToken) {
        let names = self.config.names();
        let spec = ConsumerSpec {
            stream: names.attempts_stream(),
            durable: names.consumer("logs"),
            filter: names.attempts_filter(),
            ack_wait: self.config.nats.ack_wait,
            max_ack_pending: 20_000,
            batch: 500,
            max_bytes: hookrelay_core::nats::PULL_MAX_BYTES,
        };
        supervise("attempt consumer", &shutdown, &self.ready, || {
            self.consume(&spec, &shutdown)
        })
        .await;
    }

    async fn consume(
        &self,
        spec: &ConsumerSpec,
        shutdown: &CancellationToken,
    ) -> Result<(), NatsError> {
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
                return Err(NatsError::Consumer {
                    name: spec.durable.clone(),
                    message: "message stream ended".into(),
                });
            };
            let mut pull_error = None;
            let messages: Vec<_> = chunk
                .into_iter()
                .filter_map(|m| m.map_err(|e| pull_error = Some(e.to_string())).ok())
                .collect();
            let mut records = Vec::with_capacity(messages.len());
            let mut indexed = Vec::with_capacity(messages.len());
            for message in &messages {
                match serde_json::from_slice::<AttemptKeys>(&message.payload) {
                    Ok(record) => match message.info() {
                        Ok(info) => {
                            records.push((record, info.stream_sequence));
                            indexed.push(message);
                        }
                        Err(error) => {
                            // Without its sequence the record cannot be found again.
                            tracing::error!(subject = %message.subject, %error, "attempt record without stream sequence skipped");
                            let _ = message.ack_with(AckKind::Term).await;
                        }
                    },
                    Err(error) => {
                        // Not ours to fix; keep it in the stream, out of the index.
                        tracing::error!(subject = %message.subject, %error, "unreadable attempt record skipped");
                        let _ = message.ack_with(AckKind::Term).await;
                    }
                }
            }
            match self.index.store(&records).await {
                Ok(new) => {
                    for ((record, _), new) in records.iter().zip(new) {
                        if new {
                            self.observe(record);
                        }
                    }
                    for message in indexed {
                        let _ = message.ack().await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot index attempts; they will be redelivered");
                    for message in indexed {
                        let delivered = message.info().map_or(1, |info| info.delivered);
                        let _ = message
                            .ack_with(AckKind::Nak(Some(backoff(delivered))))
                            .await;
                    }
                }
            }
            // A failed pull (missed heartbeats after a NATS restart) starts a
            // fresh consumer rather than hoping the old one recovers.
            if let Some(message) = pull_error {
                return Err(NatsError::Consumer {
                    name: spec.durable.clone(),
                    message,
                });
            }
        }
    }

    fn observe(&self, record: &AttemptKeys) {
        let outcome = record.outcome.as_str();
        self.metrics
            .deliveries
            .with_label_values(&[&record.tenant, &record.event_type, outcome])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[outcome])
            .observe(record.duration_ms as f64 / 1000.0);
        if record.outcome.is_success() {
            let finished =
                record.started_at + chrono::Duration::milliseconds(record.duration_ms as i64);
            let latency = (finished - record.event_received_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            self.metrics
                .latency
                .with_label_values(&[&record.tenant])
                .observe(latency as f64 / 1e6);
        }
    }
}
