//! The attempt index in Redis. The records stay in the ATTEMPTS stream (on
//! disk, read back with direct gets); Redis holds only where they are, packed
//! into time-bucketed strings (see [`layout`]) that expire with
//! `logs.retention`: about 40 bytes per attempt instead of a key per
//! attempt and sorted-set members per scope.
//!
//! Listings are newest first by attempt time (the ULID time of the attempt
//! id), then by stream sequence; a listing continues below a [`Cursor`]
//! `(ms, seq)`, whichever index it reads, so the next page may read another.
//! Outcome and time filters and failures listings are answered from the
//! index without reading the records that do not match; a subscription or
//! event filter the chosen index cannot answer is checked on the records,
//! at most [`read::examine_budget`] of them per call.
//!
//! Upgrading: the keys of earlier versions (`attempt:<id>` holding a
//! sequence or the record's JSON, and the `attempts:*` / `failures:*`
//! sorted sets) are not read; attempts indexed before the upgrade drop out
//! of listings and GetAttempt, and those keys expire with their retention.
//! Reading them would mean keeping a Redis lookup per attempt on every read.
//!
//! Upgrading to per-tenant event buckets: event lookups read only
//! `log:ev:{<tenant>}:<shard>:<hour>`. The buckets of the earlier layout
//! (`log:ev:<shard>:<hour>`, every tenant together) are not read any more:
//! attempts indexed before the upgrade are no longer found by event (nor by
//! `Redeliver`, which looks up by event), while listings by subscription or
//! tenant, failures and GetAttempt still find them. Those keys expire with
//! `logs.retention`.

mod health;
pub mod layout;
mod read;
mod scan;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookrelay_core::redis::Redis;
use hookrelay_core::Names;

pub use health::{Health, RECENT};
pub use layout::Cursor;
use layout::{Bucketed, Entry, Keys, HOUR_MS, MINUTE_MS};
pub use read::{examine_budget, Page};

/// A Redis or JetStream read failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("attempt index: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("attempt records ({stream}): {message}")]
    Stream { stream: String, message: String },
    #[error("attempt records: {0}")]
    Read(#[from] hookrelay_core::nats::ReadError),
}

/// Which attempts to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `ListAttempts`: one tenant's attempts, narrowed to one of its
    /// subscriptions, one of its events (event ids are the publishers' and
    /// unique only within a tenant), or both (one event's attempt chain to
    /// one subscription). Listed from the most selective index: the
    /// event's, else the subscription's, else the tenant's; what that index
    /// cannot tell is checked on the records.
    Attempts {
        tenant: String,
        subscription: Option<String>,
        event: Option<String>,
    },
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

impl AttemptKeys {
    /// The attempt time the index orders by: the id's ULID time, else (an
    /// id not made by hookrelay) when the attempt started.
    fn ms(&self) -> u64 {
        layout::id_ms(&self.id).unwrap_or_else(|| layout::ms_of(self.started_at))
    }
}

/// Reads and writes attempts.
#[derive(Clone)]
pub struct AttemptIndex {
    names: Names,
    redis: Redis,
    js: async_nats::jetstream::Context,
    retention: Duration,
}

/// Appended bytes and expiry (unix seconds) per key of one batch.
#[derive(Default)]
struct Appends(HashMap<String, (Vec<u8>, u64)>);

impl Appends {
    fn add(&mut self, key: String, expire_at: u64, push: impl FnOnce(&mut Vec<u8>)) {
        let (bytes, _) = self.0.entry(key).or_insert((Vec::new(), expire_at));
        push(bytes);
    }
}

impl AttemptIndex {
    pub fn new(
        names: Names,
        redis: Redis,
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

    fn keys(&self) -> Keys<'_> {
        Keys(&self.names)
    }

    fn retention_ms(&self) -> u64 {
        self.retention.as_millis() as u64
    }

    /// Stores a batch of records with their ATTEMPTS sequences. Returns, per
    /// record, whether it was new (a redelivered record is stored once and
    /// counted once). The entries are appended before the records are
    /// marked indexed (on a cluster they live in many slots, so no one
    /// transaction can hold both): a crash between the two appends a
    /// redelivered record again, and listings drop the repeat.
    pub async fn store(&self, records: &[(AttemptKeys, u64)]) -> Result<Vec<bool>, IndexError> {
        let keys = self.keys();
        let mut redis = self.redis.clone();
        let mut check = redis::pipe();
        for (_, seq) in records {
            let (key, bit) = keys.seen(*seq);
            check.cmd("GETBIT").arg(key).arg(bit);
        }
        let seen: Vec<u8> = if records.is_empty() {
            Vec::new()
        } else {
            check.query_async(&mut redis).await?
        };
        let mut in_batch = HashSet::new();
        let new: Vec<bool> = records
            .iter()
            .zip(&seen)
            .map(|((_, seq), seen)| *seen == 0 && in_batch.insert(*seq))
            .collect();

        let now = layout::ms_of(Utc::now());
        let retention = self.retention_ms();
        let ttl = self.retention.as_secs().max(1);
        let expire = |bucket_end: u64| (bucket_end + retention).div_ceil(1000);
        let mut appends = Appends::default();
        let mut mark = redis::pipe();
        for ((record, seq), _) in records.iter().zip(&new).filter(|(_, new)| **new) {
            let (seen_key, bit) = keys.seen(*seq);
            mark.cmd("SETBIT").arg(&seen_key).arg(bit).arg(1).ignore();
            mark.cmd("EXPIRE").arg(&seen_key).arg(ttl + 3600).ignore();
            let ms = record.ms();
            if ms + retention < now {
                continue;
            }
            let (hour, minute) = (ms / HOUR_MS, ms / MINUTE_MS);
            let hour_expiry = expire((hour + 1) * HOUR_MS);
            let gave_up = record.give_up.is_some();
            let entry = Entry {
                ms,
                seq: *seq,
                code: layout::code(record.outcome, gave_up),
            };
            let mut scopes = vec![
                Bucketed::Subscription(&record.subscription_id),
                Bucketed::Tenant(&record.tenant),
            ];
            if gave_up {
                scopes.push(Bucketed::SubscriptionFailures(&record.subscription_id));
                scopes.push(Bucketed::TenantFailures(&record.tenant));
            }
            for scope in scopes {
                appends.add(keys.bucket(scope, hour), hour_expiry, |b| {
                    layout::push_scope_entry(b, entry)
                });
            }
            appends.add(keys.ids(minute), expire((minute + 1) * MINUTE_MS), |b| {
                layout::push_id_entry(b, ms, *seq)
            });
            let (shard, fingerprint) = layout::event_shard(&record.event_id);
            appends.add(keys.event(&record.tenant, shard, hour), hour_expiry, |b| {
                layout::push_event_entry(b, fingerprint, *seq)
            });
        }
        let mut pipe = redis::pipe();
        for (key, (bytes, expire_at)) in appends.0 {
            pipe.cmd("APPEND").arg(&key).arg(bytes).ignore();
            pipe.cmd("EXPIREAT").arg(&key).arg(expire_at).ignore();
        }
        if new.iter().any(|n| *n) {
            pipe.query_async::<()>(&mut redis).await?;
            mark.query_async::<()>(&mut redis).await?;
        }
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
}
