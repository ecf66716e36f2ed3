//! The attempt index in Redis: each attempt's sequence in the ATTEMPTS
//! stream under its own key (the record itself stays in JetStream, on disk,
//! and is read back with a direct get), and one sorted set per scope
//! (subscription, event, tenant, and the final failures of a tenant and of a
//! subscription) whose members are attempt ids. Ids are `att_<ULID>`, so a
//! set's lexicographic order is time order, time ranges are lex ranges, and
//! paging uses the last id seen as the cursor. Each subscription also keeps
//! its recent outcomes for health.
//!
//! Versions before this one stored the record's JSON under the attempt key;
//! such values are still read as they are.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hookrelay_core::delivery::AttemptRecord;
use hookrelay_core::Names;
use redis::aio::ConnectionManager;

/// A Redis or JetStream read failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("attempt index: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("attempt records ({stream}): {message}")]
    Stream { stream: String, message: String },
}

/// Which attempts to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Subscription(String),
    Event(String),
    Tenant(String),
    /// Final failures (given up) of a tenant.
    TenantFailures(String),
    /// Final failures (given up) of a subscription.
    SubscriptionFailures(String),
}

/// Narrower listings.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The fields of an attempt record that the index and the metrics read.
/// The consumer parses only these; the record itself (request, response)
/// is stored as it arrived.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AttemptKeys {
    pub id: String,
    pub event_id: String,
    pub subscription_id: String,
    pub tenant: String,
    pub event_type: String,
    pub outcome: hookrelay_core::delivery::Outcome,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub event_received_at: DateTime<Utc>,
    #[serde(default)]
    pub give_up: Option<hookrelay_core::delivery::GiveUp>,
}

/// Outcomes kept per subscription for its success rate.
pub const RECENT: usize = 100;

/// A subscription's recent history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub recent: Vec<bool>,
    pub consecutive_failures: u32,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
}

/// Reads and writes attempts.
#[derive(Clone)]
pub struct AttemptIndex {
    names: Names,
    redis: ConnectionManager,
    js: async_nats::jetstream::Context,
    retention: Duration,
}

/// Where an attempt's record is: its ATTEMPTS sequence, or (written by an
/// earlier version, or when the sequence was unknown) the JSON itself.
pub enum Stored<'a> {
    Seq(u64),
    Json(&'a [u8]),
}

/// Records read back from ATTEMPTS at once per page.
const READS_IN_FLIGHT: usize = 64;

/// The smallest attempt id at or after `at`.
fn id_at(at: DateTime<Utc>) -> String {
    format!(
        "att_{}",
        ulid::Ulid::from_parts(at.timestamp_millis().max(0) as u64, 0)
    )
}

const SCAN_LIMIT: usize = 10_000;

impl AttemptIndex {
    pub fn new(
        names: Names,
        redis: ConnectionManager,
        js: async_nats::jetstream::Context,
        retention: Duration,
    ) -> Self {
        Self {
            names,
            redis,
            js,
            retention,
        }
    }

    fn attempt_key(&self, id: &str) -> String {
        self.names.redis_key(&["attempt", id])
    }

    fn scope_key(&self, scope: &Scope) -> String {
        match scope {
            Scope::Subscription(id) => self.names.redis_key(&["attempts", "subscription", id]),
            Scope::Event(id) => self.names.redis_key(&["attempts", "event", id]),
            Scope::Tenant(id) => self.names.redis_key(&["attempts", "tenant", id]),
            Scope::TenantFailures(id) => self.names.redis_key(&["failures", "tenant", id]),
            Scope::SubscriptionFailures(id) => {
                self.names.redis_key(&["failures", "subscription", id])
            }
        }
    }

    fn health_keys(&self, subscription_id: &str) -> (String, String) {
        (
            self.names.redis_key(&["health", subscription_id]),
            self.names.redis_key(&["health", subscription_id, "recent"]),
        )
    }

    /// Stores a batch in one round trip. Returns, per record, whether it was
    /// new (a redelivered record is stored once and counted once).
    pub async fn store(
        &self,
        records: &[(AttemptKeys, Stored<'_>)],
    ) -> Result<Vec<bool>, IndexError> {
        let ttl = self.retention.as_secs().max(1);
        let oldest = format!("({}", id_at(Utc::now() - self.retention));
        let mut pipe = redis::pipe();
        for (record, stored) in records {
            pipe.cmd("SET").arg(self.attempt_key(&record.id));
            match stored {
                Stored::Seq(seq) => pipe.arg(*seq),
                Stored::Json(json) => pipe.arg(*json),
            };
            pipe.arg("NX").arg("EX").arg(ttl);
        }
        let mut scopes: Vec<String> = Vec::new();
        for (record, _) in records {
            let mut record_scopes = vec![
                Scope::Subscription(record.subscription_id.clone()),
                Scope::Event(record.event_id.clone()),
                Scope::Tenant(record.tenant.clone()),
            ];
            if record.give_up.is_some() {
                record_scopes.push(Scope::TenantFailures(record.tenant.clone()));
                record_scopes.push(Scope::SubscriptionFailures(record.subscription_id.clone()));
            }
            for scope in record_scopes {
                let key = self.scope_key(&scope);
                pipe.cmd("ZADD").arg(&key).arg(0).arg(&record.id).ignore();
                scopes.push(key);
            }
        }
        scopes.sort_unstable();
        scopes.dedup();
        for key in &scopes {
            pipe.cmd("ZREMRANGEBYLEX")
                .arg(key)
                .arg("-")
                .arg(&oldest)
                .ignore();
            pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
        }
        let mut redis = self.redis.clone();
        let replies: Vec<Option<String>> = pipe.query_async(&mut redis).await?;
        let new: Vec<bool> = replies.into_iter().map(|r| r.is_some()).collect();
        self.record_health(
            records
                .iter()
                .zip(&new)
                .filter(|(_, new)| **new)
                .map(|((r, _), _)| r),
            ttl,
        )
        .await?;
        Ok(new)
    }

    /// Updates each subscription's health once per batch: its outcomes
    /// pushed newest first in one LPUSH, its counters set from the batch's
    /// last success and trailing failures.
    async fn record_health<'a>(
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
        let (outcomes, fields): (Vec<String>, std::collections::HashMap<String, i64>) =
            redis::pipe()
                .cmd("LRANGE")
                .arg(&recent)
                .arg(0)
                .arg(-1)
                .cmd("HGETALL")
                .arg(&hash)
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
        })
    }

    /// Attempts of `scope` passing `filter`, newest first, older than
    /// `before` (an attempt id) if given; at most `limit`, and whether more follow.
    pub async fn list(
        &self,
        scope: &Scope,
        filter: &Filter,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AttemptRecord>, bool), IndexError> {
        let mut max = match (before, filter.until) {
            (Some(id), Some(until)) => format!("({}", std::cmp::min(id.to_owned(), id_at(until))),
            (Some(id), None) => format!("({id}"),
            (None, Some(until)) => format!("({}", id_at(until)),
            (None, None) => "+".to_owned(),
        };
        let min = filter
            .since
            .map_or_else(|| "-".to_owned(), |since| format!("[{}", id_at(since)));
        let key = self.scope_key(scope);
        let chunk = if filter.outcome.is_some() {
            200
        } else {
            limit + 1
        };
        let mut redis = self.redis.clone();
        let mut found = Vec::new();
        let mut scanned = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                .arg(&key)
                .arg(&max)
                .arg(&min)
                .arg("LIMIT")
                .arg(0)
                .arg(chunk)
                .query_async(&mut redis)
                .await?;
            let exhausted = ids.len() < chunk;
            scanned += ids.len();
            if let Some(last) = ids.last() {
                max = format!("({last}");
            }
            if !ids.is_empty() {
                let keys: Vec<String> = ids.iter().map(|id| self.attempt_key(id)).collect();
                let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut redis)
                    .await?;
                let mut pointers: Vec<(&str, Vec<u8>)> = Vec::with_capacity(ids.len());
                for (id, value) in ids.iter().zip(values) {
                    if let Some(value) = value {
                        pointers.push((id, value));
                    }
                }
                let records = self.read_records(pointers).await?;
                found.extend(records.into_iter().filter(|r| {
                    filter
                        .outcome
                        .as_deref()
                        .is_none_or(|o| r.outcome.as_str() == o)
                }));
            }
            if found.len() > limit || exhausted || scanned >= SCAN_LIMIT {
                break;
            }
        }
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }

    pub async fn get(&self, id: &str) -> Result<Option<AttemptRecord>, IndexError> {
        let mut redis = self.redis.clone();
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.attempt_key(id))
            .query_async(&mut redis)
            .await?;
        Ok(self
            .read_records(value.map(|value| (id, value)))
            .await?
            .pop())
    }

    /// The records that index values point at, in their order; records no
    /// longer in the stream (past its max age), or whose id is not the one
    /// indexed (the stream was recreated and its sequences reused), are
    /// left out.
    async fn read_records<'a>(
        &self,
        values: impl IntoIterator<Item = (&'a str, Vec<u8>)>,
    ) -> Result<Vec<AttemptRecord>, IndexError> {
        let stream_name = self.names.attempts_stream();
        let error = |message: String| IndexError::Stream {
            stream: stream_name.clone(),
            message,
        };
        let mut stream = None;
        let mut reads = Vec::new();
        let mut expected = Vec::new();
        for (id, value) in values {
            expected.push(id);
            let seq = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match seq {
                Some(seq) => {
                    if stream.is_none() {
                        stream = Some(
                            self.js
                                .get_stream(&stream_name)
                                .await
                                .map_err(|e| error(e.to_string()))?,
                        );
                    }
                    reads.push(futures::future::Either::Left(read_record(
                        stream.clone().expect("opened above"),
                        seq,
                    )));
                }
                None => reads.push(futures::future::Either::Right(std::future::ready(Ok(
                    serde_json::from_slice::<AttemptRecord>(&value).ok(),
                )))),
            }
        }
        let records: Vec<Result<Option<AttemptRecord>, String>> = futures::stream::iter(reads)
            .buffered(READS_IN_FLIGHT)
            .collect()
            .await;
        let mut found = Vec::with_capacity(records.len());
        for (record, id) in records.into_iter().zip(expected) {
            found.extend(record.map_err(error)?.filter(|record| record.id == id));
        }
        Ok(found)
    }
}

/// The record at `seq` of ATTEMPTS, `None` once the stream dropped it.
async fn read_record(
    stream: async_nats::jetstream::stream::Stream,
    seq: u64,
) -> Result<Option<AttemptRecord>, String> {
    let stored = hookrelay_core::nats::get_stored(&stream, seq)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stored.and_then(|stored| serde_json::from_slice(&stored.payload).ok()))
}
