//! Fleet gauges the log service refreshes every few seconds: consumer
//! backlogs per stream, buffered batches, subscriptions by state.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use hookrelay_core::redis::Redis;
use hookrelay_core::subscription::Subscription;
use hookrelay_core::Config;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

use crate::index::AttemptIndex;

#[derive(Clone)]
pub struct FleetMetrics {
    pub consumer_pending: IntGaugeVec,
    pub batches_pending: IntGauge,
    pub subscriptions: IntGaugeVec,
}

impl FleetMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            consumer_pending: IntGaugeVec::new(
                Opts::new(
                    "hookrelay_consumer_pending",
                    "Messages not yet processed (pending plus unacknowledged) per stream",
                ),
                &["stream"],
            )?,
            batches_pending: IntGauge::new(
                "hookrelay_batches_pending",
                "Batched subscriptions with changes buffered",
            )?,
            subscriptions: IntGaugeVec::new(
                Opts::new("hookrelay_subscriptions", "Subscriptions by state"),
                &["state"],
            )?,
        };
        registry.register(Box::new(metrics.consumer_pending.clone()))?;
        registry.register(Box::new(metrics.batches_pending.clone()))?;
        registry.register(Box::new(metrics.subscriptions.clone()))?;
        Ok(metrics)
    }
}

/// What the refresher reads and sets.
pub struct Fleet {
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub bucket: kv::Store,
    pub redis: Redis,
    pub index: AttemptIndex,
    pub metrics: FleetMetrics,
    pub every: Duration,
}

/// Refreshes the gauges every `fleet.every` until `shutdown`.
pub async fn run(fleet: Fleet, shutdown: CancellationToken) {
    let Fleet {
        config,
        js,
        bucket,
        redis,
        index,
        metrics,
        every,
    } = fleet;
    let names = config.names();
    loop {
        for (stream, service, label) in [
            (names.events_stream(), "ingestor", "events"),
            (names.deliveries_stream(), "dispatcher", "deliveries"),
            (names.attempts_stream(), "logs", "attempts"),
        ] {
            if let Ok(mut consumer) = js
                .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
                    names.consumer(service),
                    stream,
                )
                .await
            {
                if let Ok(info) = consumer.info().await {
                    let pending = info.num_pending as i64 + info.num_ack_pending as i64;
                    metrics
                        .consumer_pending
                        .with_label_values(&[label])
                        .set(pending);
                }
            }
        }
        let mut conn = redis.clone();
        let due: Result<(i64, i64), _> = redis::pipe()
            .cmd("ZCARD")
            .arg(names.batches_due_key())
            .cmd("ZCARD")
            .arg(names.batches_leased_key())
            .query_async(&mut conn)
            .await;
        if let Ok((due, leased)) = due {
            metrics.batches_pending.set(due + leased);
        }
        if let Ok(counts) = states(&bucket, &index).await {
            for (state, count) in counts {
                metrics.subscriptions.with_label_values(&[state]).set(count);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn states(
    bucket: &kv::Store,
    index: &AttemptIndex,
) -> Result<[(&'static str, i64); 3], String> {
    let keys: Vec<String> = bucket
        .keys()
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let (mut healthy, mut failing, mut disabled) = (0, 0, 0);
    for key in keys {
        let Ok(Some(value)) = bucket.get(&key).await else {
            continue;
        };
        let Ok(subscription) = serde_json::from_slice::<Subscription>(&value) else {
            continue;
        };
        let health = index.health(&key).await.map_err(|e| e.to_string())?;
        match crate::health::state(subscription.enabled, &health) {
            "disabled" => disabled += 1,
            "healthy" => healthy += 1,
            // failing, open or half-open
            _ => failing += 1,
        }
    }
    Ok([
        ("healthy", healthy),
        ("failing", failing),
        ("disabled", disabled),
    ])
}
