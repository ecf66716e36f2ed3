//! Debounced batches: changes wait in a Redis buffer per subscription for
//! the window, coalesced by key, and are flushed as one delivery task.
//!
//! Coalescing (one atomic script, so concurrent ingestors agree): a later
//! change to the same key replaces an `import` or `update` in place (the
//! batch keeps first-seen order); a `destroy` replaces anything; a change
//! after a `destroy` is a new change at the end. A flush is claimed under a
//! lease so two replicas never send the same batch, and a change leaves the
//! buffer only after its batch is published, and only if it did not change
//! meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookrelay_core::event::Event;
use hookrelay_core::redis::Redis;
use hookrelay_core::subscription::{BatchSpec, Subscription};
use hookrelay_core::Names;
use hookrelay_template::{context, Cause, RenderError, Template};
use sha2::{Digest, Sha256};

const ADD: &str = r#"
local items, order, due, counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local key, change, action, now, deadline, max, sub = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local existing = redis.call('HGET', items, key)
if existing then
  if string.find(existing, '"action":"destroy"', 1, true) and action ~= 'destroy' then
    local n = redis.call('INCR', counter)
    local moved = key .. '#' .. n
    redis.call('HSET', items, moved, existing)
    redis.call('ZADD', order, redis.call('ZSCORE', order, key), moved)
    redis.call('HSET', items, key, change)
    redis.call('ZADD', order, redis.call('INCR', counter), key)
  else
    redis.call('HSET', items, key, change)
  end
else
  redis.call('HSET', items, key, change)
  redis.call('ZADD', order, redis.call('INCR', counter), key)
end
if redis.call('HLEN', items) >= max then
  redis.call('ZADD', due, now, sub)
else
  redis.call('ZADD', due, 'NX', deadline, sub)
end
return 1
"#;

const CLAIM: &str = r#"
local due, leased = KEYS[1], KEYS[2]
local now, lease_until, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', leased, '-inf', now, 'LIMIT', 0, limit)
for _, sub in ipairs(expired) do
  redis.call('ZREM', leased, sub)
  redis.call('ZADD', due, 'LT', now, sub)
end
local claimed = {}
for _, sub in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)) do
  if not redis.call('ZSCORE', leased, sub) then
    redis.call('ZREM', due, sub)
    redis.call('ZADD', leased, lease_until, sub)
    claimed[#claimed + 1] = sub
  end
end
return claimed
"#;

const COMMIT: &str = r#"
local items, order, due, leased = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sub, again = ARGV[1], ARGV[2]
local n = (#ARGV - 2) / 2
for i = 1, n do
  local key, value = ARGV[2 + i], ARGV[2 + n + i]
  if redis.call('HGET', items, key) == value then
    redis.call('HDEL', items, key)
    redis.call('ZREM', order, key)
  end
end
redis.call('ZREM', leased, sub)
if redis.call('ZCARD', order) > 0 then
  redis.call('ZADD', due, 'NX', again, sub)
end
return redis.call('ZCARD', order)
"#;

/// A batch read from the buffer, ready to send.
#[derive(Debug, Clone)]
pub struct Flush {
    pub keys: Vec<String>,
    pub values: Vec<String>,
    /// More changes than `max_size` were waiting.
    pub truncated: bool,
}

impl Flush {
    /// `{"changes":[…]}` in first-seen order.
    pub fn body(&self) -> String {
        let mut body = String::from("{\"changes\":[");
        for (i, value) in self.values.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(Change::json_of(value));
        }
        body.push_str("]}");
        body
    }

    /// The batch's identity, from the events whose changes it holds: a
    /// flush repeated after a crash is the same delivery (same
    /// `webhook-id`, deduplicated by JetStream), while the same change made
    /// again by a later event is a new batch.
    pub fn id(&self, subscription_id: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(subscription_id.as_bytes());
        for value in &self.values {
            hash.update([0]);
            hash.update(value.as_bytes());
        }
        format!("batch_{}", hex::encode(&hash.finalize()[..12]))
    }
}

/// Compiled key and URL templates of a subscription's batch.
struct Templates {
    revision: u64,
    key: Template,
    /// The default key, for events the key renders empty for.
    default_key: Template,
    url: Option<Template>,
}

/// The buffer of every batched subscription.
pub struct Batcher {
    names: Names,
    redis: Redis,
    add: redis::Script,
    claim: redis::Script,
    commit: redis::Script,
    templates: Mutex<HashMap<String, Arc<Templates>>>,
}

/// A change of one event, as the `changes_batch` envelope lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub action: String,
    /// `{"action","object","id","url"?}`
    pub json: String,
    /// The event that made it.
    pub event_id: String,
}

impl Change {
    /// As buffered: `<event id>\n<json>` (JSON never holds a raw newline).
    pub fn value(&self) -> String {
        format!("{}\n{}", self.event_id, self.json)
    }

    /// The JSON of a buffered value (values buffered by earlier versions
    /// are the JSON alone).
    pub fn json_of(value: &str) -> &str {
        value.split_once('\n').map_or(value, |(_, json)| json)
    }
}

const DEFAULT_KEY: &str = "{{ object }}:{{ entity_id or id }}";

fn text(template: &Template, event: &Event) -> Result<String, RenderError> {
    Ok(match template.render(&context(event, ""))? {
        serde_json::Value::String(text) => text,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl Batcher {
    pub fn new(names: Names, redis: Redis) -> Self {
        Self {
            names,
            redis,
            add: redis::Script::new(ADD),
            claim: redis::Script::new(CLAIM),
            commit: redis::Script::new(COMMIT),
            templates: Mutex::default(),
        }
    }

    fn keys(&self, subscription_id: &str) -> [String; 3] {
        self.names.batch_keys(subscription_id)
    }

    fn due_key(&self) -> String {
        self.names.batches_due_key()
    }

    fn leased_key(&self) -> String {
        self.names.batches_leased_key()
    }

    fn templates(
        &self,
        subscription: &Subscription,
        batch: &BatchSpec,
    ) -> Result<Arc<Templates>, RenderError> {
        let mut cache = self.templates.lock().expect("template cache lock");
        if let Some(templates) = cache
            .get(&subscription.id)
            .filter(|t| t.revision == subscription.revision)
        {
            return Ok(templates.clone());
        }
        let compile = |source: &str| {
            Template::from_json(serde_json::Value::String(source.to_owned())).map_err(|e| {
                RenderError {
                    path: e.position,
                    message: e.message,
                    cause: Cause::Template,
                }
            })
        };
        let templates = Arc::new(Templates {
            revision: subscription.revision,
            key: compile(batch.key.as_deref().unwrap_or(DEFAULT_KEY))?,
            default_key: compile(DEFAULT_KEY)?,
            url: batch.url_template.as_deref().map(compile).transpose()?,
        });
        cache.insert(subscription.id.clone(), templates.clone());
        Ok(templates)
    }

    /// The change `event` makes: action and object from its type
    /// (`training.update`), the entity id (numbers stay numbers), and the
    /// URL unless the action is `destroy`.
    pub fn change(
        &self,
        subscription: &Subscription,
        batch: &BatchSpec,
        event: &Event,
    ) -> Result<Change, RenderError> {
        let templates = self.templates(subscription, batch)?;
        let (object, action) = event
            .event_type
            .rsplit_once('.')
            .unwrap_or((&event.event_type, ""));
        let id = event.entity_id.as_deref().unwrap_or(&event.id);
        let mut change = serde_json::Map::new();
        change.insert("action".into(), action.into());
        change.insert("object".into(), object.into());
        change.insert(
            "id".into(),
            match id.parse::<i64>() {
                Ok(number) => number.into(),
                Err(_) => id.into(),
            },
        );
        if action != "destroy" {
            if let Some(url) = &templates.url {
                // A URL failing on this event's data leaves the change
                // without one rather than losing the change.
                match text(url, event) {
                    Ok(url) => {
                        change.insert("url".into(), url.into());
                    }
                    Err(error) if error.cause == Cause::Data => {
                        tracing::warn!(subscription = %subscription.id, event = %event.id, %error, "batch URL template failed on this event; change sent without a url");
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        // A field the key names that the event lacks is empty: a key of
        // nothing but missing fields, or one failing on this event's data,
        // would lose or wrongly coalesce the change, so the change is keyed
        // by default (object and entity) instead.
        let key = match text(&templates.key, event) {
            Ok(key) if !key.is_empty() => key,
            Ok(_) => text(&templates.default_key, event)?,
            Err(error) if error.cause == Cause::Data => {
                tracing::warn!(subscription = %subscription.id, event = %event.id, %error, "batch key template failed on this event; keyed by default");
                text(&templates.default_key, event)?
            }
            Err(error) => return Err(error),
        };
        Ok(Change {
            key,
            action: action.to_owned(),
            json: serde_json::Value::Object(change).to_string(),
            event_id: event.id.clone(),
        })
    }

    /// Buffers `change` for `subscription_id`.
    pub async fn add(
        &self,
        subscription_id: &str,
        batch: &BatchSpec,
        change: &Change,
        now: DateTime<Utc>,
    ) -> redis::RedisResult<()> {
        let [items, order, counter] = self.keys(subscription_id);
        let deadline = now + batch.window;
        let mut redis = self.redis.clone();
        self.add
            .key(items)
            .key(order)
            .key(self.due_key())
            .key(counter)
            .arg(&change.key)
            .arg(change.value())
            .arg(&change.action)
            .arg(now.timestamp_millis())
            .arg(deadline.timestamp_millis())
            .arg(batch.max_size)
            .arg(subscription_id)
            .invoke_async::<i64>(&mut redis)
            .await
            .map(drop)
    }

    /// Claims up to `limit` subscriptions whose batch is due.
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> redis::RedisResult<Vec<String>> {
        let now_ms = now.timestamp_millis();
        let mut redis = self.redis.clone();
        self.claim
            .key(self.due_key())
            .key(self.leased_key())
            .arg(now_ms)
            .arg(now_ms + lease.as_millis() as i64)
            .arg(limit)
            .invoke_async(&mut redis)
            .await
    }

    /// The first `max_size` changes of a claimed subscription.
    pub async fn read(&self, subscription_id: &str, max_size: u32) -> redis::RedisResult<Flush> {
        let [items, order, _] = self.keys(subscription_id);
        let mut redis = self.redis.clone();
        let (keys, total): (Vec<String>, u64) = redis::pipe()
            .cmd("ZRANGE")
            .arg(&order)
            .arg(0)
            .arg(max_size as i64 - 1)
            .cmd("ZCARD")
            .arg(&order)
            .query_async(&mut redis)
            .await?;
        let values: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            redis::cmd("HMGET")
                .arg(&items)
                .arg(&keys)
                .query_async(&mut redis)
                .await?
        };
        let (keys, values) = keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .unzip();
        Ok(Flush {
            keys,
            values,
            truncated: total > max_size as u64,
        })
    }

    /// Removes what was sent (unless it changed meanwhile) and releases the
    /// claim; what remains is due at `again`. Returns how many remain.
    pub async fn commit(
        &self,
        subscription_id: &str,
        flush: &Flush,
        again: DateTime<Utc>,
    ) -> redis::RedisResult<u64> {
        let [items, order, _] = self.keys(subscription_id);
        let mut redis = self.redis.clone();
        let mut invocation = self.commit.key(items);
        invocation
            .key(order)
            .key(self.due_key())
            .key(self.leased_key())
            .arg(subscription_id)
            .arg(again.timestamp_millis());
        for key in &flush.keys {
            invocation.arg(key);
        }
        for value in &flush.values {
            invocation.arg(value);
        }
        invocation.invoke_async(&mut redis).await
    }

    /// Drops the buffer of a deleted subscription.
    pub async fn discard(&self, subscription_id: &str) -> redis::RedisResult<()> {
        let [items, order, counter] = self.keys(subscription_id);
        let mut redis = self.redis.clone();
        redis::pipe()
            .cmd("DEL")
            .arg(&[items, order, counter])
            .cmd("ZREM")
            .arg(self.leased_key())
            .arg(subscription_id)
            .cmd("ZREM")
            .arg(self.due_key())
            .arg(subscription_id)
            .query_async(&mut redis)
            .await
    }
}
