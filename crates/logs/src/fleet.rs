//! Fleet gauges the log service refreshes every few seconds: consumer
//! backlogs per stream, buffered batches, subscriptions by state.
//!
//! They describe shared state (the same on every replica), so one replica
//! exports them: the one holding a Redis lease (`<prefix>:fleet:exporter`,
//! renewed every refresh, expiring after three missed refreshes), which
//! says so with `hookrelay_fleet_exporter 1`. The others export no fleet
//! gauge and skip the scan; `sum()` over replicas then counts once.
//! Queries still read them with `max()`, which stays right while a lease
//! changes hands.

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
    /// No labels: a vector so that a replica that is not the exporter can
    /// leave it out.
    pub batches_pending: IntGaugeVec,
    pub subscriptions: IntGaugeVec,
    /// 1 on the replica exporting the gauges above.
    pub exporter: IntGauge,
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
            batches_pending: IntGaugeVec::new(
                Opts::new(
                    "hookrelay_batches_pending",
                    "Batched subscriptions with changes buffered",
                ),
                &[],
            )?,
            subscriptions: IntGaugeVec::new(
                Opts::new("hookrelay_subscriptions", "Subscriptions by state"),
                &["state"],
            )?,
            exporter: IntGauge::new(
                "hookrelay_fleet_exporter",
                "1 on the log-service replica that holds the fleet lease and exports the fleet gauges (consumer pending, batches pending, subscriptions), else 0",
            )?,
        };
        registry.register(Box::new(metrics.consumer_pending.clone()))?;
        registry.register(Box::new(metrics.batches_pending.clone()))?;
        registry.register(Box::new(metrics.subscriptions.clone()))?;
        registry.register(Box::new(metrics.exporter.clone()))?;
        Ok(metrics)
    }

    /// Leaves every fleet gauge out of `/metrics`.
    fn withdraw(&self) {
        self.consumer_pending.reset();
        self.batches_pending.reset();
        self.subscriptions.reset();
        self.exporter.set(0);
    }
}

/// Takes or renews the lease KEYS[1] for ARGV[1] (ARGV[2] ms); 1 if held.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Frees the lease KEYS[1] if ARGV[1] holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

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
    let key = names.redis_key(&["fleet", "exporter"]);
    let me = ulid::Ulid::new().to_string();
    let ttl_ms = (every.as_millis() as u64).saturating_mul(3).max(1000);
    let lease = redis::Script::new(LEASE);
    let mut holding = false;
    loop {
        let mut conn = redis.clone();
        // Redis unreachable: keep the last answer (nobody else can take the
        // lease meanwhile).
        if let Ok(held) = lease
            .key(&key)
            .arg(&me)
            .arg(ttl_ms)
            .invoke_async::<i64>(&mut conn)
            .await
        {
            holding = held == 1;
        }
        if !holding {
            metrics.withdraw();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            continue;
        }
        metrics.exporter.set(1);
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
            metrics
                .batches_pending
                .with_label_values(&[] as &[&str])
                .set(due + leased);
        }
        if let Ok(counts) = states(&bucket, &index).await {
            for (state, count) in counts {
                metrics.subscriptions.with_label_values(&[state]).set(count);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    // Another replica takes over at its next refresh, not after the TTL.
    let mut conn = redis.clone();
    let _ = redis::Script::new(RELEASE)
        .key(&key)
        .arg(&me)
        .invoke_async::<i64>(&mut conn)
        .await;
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
