//! Each subscription's recent outcomes and counters, for health.

use chrono::{DateTime, Utc};

use super::{AttemptIndex, AttemptKeys, IndexError};

/// Outcomes kept per subscription for its success rate.
pub const RECENT: usize = 100;

/// A subscription's recent history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub recent: Vec<bool>,
    pub consecutive_failures: u32,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    /// The dispatcher's circuit, unless healthy.
    pub circuit: Option<hookrelay_core::circuit::CircuitRecord>,
    /// Deliveries held while the circuit is open.
    pub held: u64,
    /// Deliveries waiting in its ordered queue (`ordering: fifo`).
    pub queued: u64,
}

/// Recent outcomes, counters, circuit fields, held and ordered-queue sizes.
type HealthReply = (
    Vec<String>,
    std::collections::HashMap<String, i64>,
    std::collections::HashMap<String, String>,
    u64,
    u64,
);

impl AttemptIndex {
    fn health_keys(&self, subscription_id: &str) -> (String, String) {
        (
            self.names.redis_tagged(subscription_id, &["health"]),
            self.names
                .redis_tagged(subscription_id, &["health", "recent"]),
        )
    }

    /// Updates each subscription's health once per batch: its outcomes
    /// pushed newest first in one LPUSH, its counters set from the batch's
    /// last success and trailing failures.
    pub(super) async fn record_health<'a>(
        &self,
        records: impl Iterator<Item = &'a AttemptKeys>,
        ttl: u64,
    ) -> Result<(), IndexError> {
        // Per subscription, in record order: (success, finished at ms).
        let mut by_subscription: Vec<(&str, Vec<(bool, i64)>)> = Vec::new();
        for record in records {
            let at = (record.started_at
                + chrono::Duration::milliseconds(record.duration_ms as i64))
            .timestamp_millis();
            let outcome = (record.outcome.is_success(), at);
            match by_subscription
                .iter_mut()
                .find(|(id, _)| *id == record.subscription_id)
            {
                Some((_, outcomes)) => outcomes.push(outcome),
                None => by_subscription.push((&record.subscription_id, vec![outcome])),
            }
        }
        if by_subscription.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (subscription_id, outcomes) in by_subscription {
            let (hash, recent) = self.health_keys(subscription_id);
            let pushed: Vec<&str> = outcomes
                .iter()
                .map(|(success, _)| if *success { "1" } else { "0" })
                .collect();
            pipe.cmd("LPUSH").arg(&recent).arg(pushed).ignore();
            pipe.cmd("LTRIM")
                .arg(&recent)
                .arg(0)
                .arg(RECENT - 1)
                .ignore();
            let trailing = outcomes.iter().rev().take_while(|(s, _)| !s).count();
            if let Some((_, at)) = outcomes.iter().rev().find(|(success, _)| *success) {
                pipe.cmd("HSET")
                    .arg(&hash)
                    .arg("consecutive")
                    .arg(0)
                    .arg("last_success")
                    .arg(at)
                    .ignore();
            }
            if trailing > 0 {
                pipe.cmd("HINCRBY")
                    .arg(&hash)
                    .arg("consecutive")
                    .arg(trailing)
                    .ignore();
            }
            if let Some((_, at)) = outcomes.iter().rev().find(|(success, _)| !success) {
                pipe.cmd("HSET")
                    .arg(&hash)
                    .arg("last_failure")
                    .arg(at)
                    .ignore();
            }
            pipe.cmd("EXPIRE").arg(&hash).arg(ttl).ignore();
            pipe.cmd("EXPIRE").arg(&recent).arg(ttl).ignore();
        }
        let mut redis = self.redis.clone();
        pipe.query_async::<()>(&mut redis).await?;
        Ok(())
    }

    /// A subscription's recent history.
    pub async fn health(&self, subscription_id: &str) -> Result<Health, IndexError> {
        let (hash, recent) = self.health_keys(subscription_id);
        let mut redis = self.redis.clone();
        let circuits = hookrelay_core::circuit::CircuitKeys::new(&self.names);
        let ordered = hookrelay_core::ordered::OrderedKeys::new(&self.names);
        let (outcomes, fields, circuit, held, queued): HealthReply = redis::pipe()
            .cmd("LRANGE")
            .arg(&recent)
            .arg(0)
            .arg(-1)
            .cmd("HGETALL")
            .arg(&hash)
            .cmd("HGETALL")
            .arg(circuits.circuit(subscription_id))
            .cmd("ZCARD")
            .arg(circuits.held(subscription_id))
            .cmd("ZCARD")
            .arg(ordered.queue(subscription_id))
            .query_async(&mut redis)
            .await?;
        let at = |name: &str| {
            fields
                .get(name)
                .and_then(|ms| DateTime::from_timestamp_millis(*ms))
        };
        Ok(Health {
            recent: outcomes.iter().map(|o| o == "1").collect(),
            consecutive_failures: fields.get("consecutive").copied().unwrap_or(0).max(0) as u32,
            last_success: at("last_success"),
            last_failure: at("last_failure"),
            circuit: hookrelay_core::circuit::CircuitRecord::from_fields(&circuit),
            held,
            queued,
        })
    }
}
