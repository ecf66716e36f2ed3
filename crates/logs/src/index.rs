//! The attempt index in Redis: each attempt's JSON under its own key, and one
//! sorted set per scope (subscription, event, tenant) whose members are
//! attempt ids. Ids are `att_<ULID>`, so the lexicographic order of a set is
//! time order and paging uses the last id seen as the cursor.

use std::time::Duration;

use hookrelay_core::delivery::AttemptRecord;
use hookrelay_core::Names;
use redis::aio::ConnectionManager;

/// A Redis operation failed.
#[derive(Debug, thiserror::Error)]
#[error("attempt index: {0}")]
pub struct IndexError(#[from] redis::RedisError);

/// Which attempts to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Subscription(String),
    Event(String),
    Tenant(String),
}

/// Reads and writes attempts.
#[derive(Clone)]
pub struct AttemptIndex {
    names: Names,
    redis: ConnectionManager,
    retention: Duration,
}

impl AttemptIndex {
    pub fn new(names: Names, redis: ConnectionManager, retention: Duration) -> Self {
        Self {
            names,
            redis,
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
        }
    }

    /// Stores a batch in one round trip. Returns, per record, whether it was
    /// new (a redelivered record is stored once and counted once).
    pub async fn store(&self, records: &[(AttemptRecord, &[u8])]) -> Result<Vec<bool>, IndexError> {
        let ttl = self.retention.as_secs().max(1);
        let oldest = format!(
            "(att_{}",
            ulid::Ulid::from_parts(
                (chrono::Utc::now().timestamp_millis() as u64)
                    .saturating_sub(self.retention.as_millis() as u64),
                0
            )
        );
        let mut pipe = redis::pipe();
        for (record, json) in records {
            pipe.cmd("SET")
                .arg(self.attempt_key(&record.id))
                .arg(*json)
                .arg("NX")
                .arg("EX")
                .arg(ttl);
        }
        let mut scopes: Vec<String> = Vec::new();
        for (record, _) in records {
            for scope in [
                Scope::Subscription(record.subscription_id.clone()),
                Scope::Event(record.event_id.clone()),
                Scope::Tenant(record.tenant.clone()),
            ] {
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
        Ok(replies.into_iter().map(|r| r.is_some()).collect())
    }

    /// Attempts of `scope`, newest first, older than `before` (an attempt id)
    /// if given; at most `limit`, plus whether more follow.
    pub async fn list(
        &self,
        scope: &Scope,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AttemptRecord>, bool), IndexError> {
        let max = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let mut redis = self.redis.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
            .arg(self.scope_key(scope))
            .arg(&max)
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut redis)
            .await?;
        let more = ids.len() > limit;
        let ids = &ids[..ids.len().min(limit)];
        if ids.is_empty() {
            return Ok((Vec::new(), false));
        }
        let keys: Vec<String> = ids.iter().map(|id| self.attempt_key(id)).collect();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut redis)
            .await?;
        let records = values
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_slice(&json).ok())
            .collect();
        Ok((records, more))
    }

    pub async fn get(&self, id: &str) -> Result<Option<AttemptRecord>, IndexError> {
        let mut redis = self.redis.clone();
        let json: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.attempt_key(id))
            .query_async(&mut redis)
            .await?;
        Ok(json.and_then(|json| serde_json::from_slice(&json).ok()))
    }
}
