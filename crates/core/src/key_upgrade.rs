//! Moves the Redis keys of the layout before hash tags (`<prefix>:retries`,
//! `<prefix>:held:<id>`, …) to their tagged names, so retries, held
//! deliveries, batch buffers and ordered queues that an earlier version
//! left in Redis are carried over by the upgrade rather than forgotten.
//!
//! Only a single Redis (or Sentinel) can hold the old layout: a cluster
//! never ran it. The check is a handful of `EXISTS`, cheap enough to repeat
//! while replicas of the old version may still be writing (a rolling
//! upgrade); the move itself scans the installation's keys once.

use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::circuit::CircuitKeys;
use crate::names::Names;
use crate::ordered::OrderedKeys;
use crate::redis::Redis;

/// The tagged name of `old`, if it is a key of the old layout.
pub fn upgraded_name(names: &Names, old: &str) -> Option<String> {
    let rest = old.strip_prefix(names.prefix())?.strip_prefix(':')?;
    if rest.contains('{') {
        return None;
    }
    let circuits = CircuitKeys::new(names);
    let ordered = OrderedKeys::new(names);
    let id = |tail: &str| (!tail.is_empty() && !tail.contains(':')).then(|| tail.to_owned());
    let parts: Vec<&str> = rest.split(':').collect();
    Some(match parts.as_slice() {
        ["retries"] => names.retries_key(),
        ["retries", "leased"] => names.retries_leased_key(),
        ["circuits"] => circuits.open(),
        ["circuit", sub] => circuits.circuit(&id(sub)?),
        ["held", sub] => circuits.held(&id(sub)?),
        ["fifo-ready"] => ordered.ready(),
        ["fifo-attempts"] => ordered.attempts(),
        ["fifo-taken"] => ordered.taken(),
        ["fifo", sub] => ordered.queue(&id(sub)?),
        ["fifo-lock", sub] => ordered.lock(&id(sub)?),
        ["batches", "due"] => names.batches_due_key(),
        ["batches", "leased"] => names.batches_leased_key(),
        ["batch", sub, part] => {
            let [items, order, n] = names.batch_keys(&id(sub)?);
            match *part {
                "items" => items,
                "order" => order,
                "n" => n,
                _ => return None,
            }
        }
        ["health", sub] => names.redis_tagged(&id(sub)?, &["health"]),
        ["health", sub, "recent"] => names.redis_tagged(&id(sub)?, &["health", "recent"]),
        _ => return None,
    })
}

/// The old layout's keys that any installation with old-layout data has
/// (a held set has its circuit in `circuits`, a buffer its entry in
/// `batches:due`, a queue its entry in `fifo-ready`).
fn old_roots(names: &Names) -> Vec<String> {
    [
        "retries",
        "retries:leased",
        "circuits",
        "fifo-ready",
        "batches:due",
        "batches:leased",
    ]
    .iter()
    .map(|root| format!("{}:{root}", names.prefix()))
    .collect()
}

/// Moves every old-layout key of the installation to its tagged name, if
/// any is left; returns how many moved. Safe to run on several replicas
/// at once: each key is moved by one of them.
pub async fn upgrade_keys(redis: &Redis, names: &Names) -> RedisResult<usize> {
    if redis.mode() == crate::config::RedisMode::Cluster {
        return Ok(0);
    }
    let mut conn = redis.clone();
    let roots = old_roots(names);
    let present: usize = redis::cmd("EXISTS")
        .arg(&roots)
        .query_async(&mut conn)
        .await?;
    if present == 0 {
        return Ok(0);
    }
    let pattern = format!("{}:*", names.prefix());
    let mut cursor: u64 = 0;
    let mut moved = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        for old in keys {
            if let Some(new) = upgraded_name(names, &old) {
                moved += move_key(&mut conn, &old, &new).await?;
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if moved > 0 {
        tracing::info!(moved, "redis keys moved to the hash-tagged layout");
    }
    Ok(moved)
}

/// Renames `old` to `new`; where `new` exists already (a new replica wrote
/// it meanwhile), merges sorted sets and hashes into it instead, the
/// existing entries winning.
const MOVE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  return 1
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'zset' then
  local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    redis.call('ZADD', KEYS[2], 'NX', entries[i + 1], entries[i])
  end
elseif kind == 'hash' then
  local entries = redis.call('HGETALL', KEYS[1])
  for i = 1, #entries, 2 do
    redis.call('HSETNX', KEYS[2], entries[i], entries[i + 1])
  end
end
redis.call('DEL', KEYS[1])
return 1
"#;

async fn move_key(conn: &mut impl ConnectionLike, old: &str, new: &str) -> RedisResult<usize> {
    redis::Script::new(MOVE)
        .key(old)
        .key(new)
        .invoke_async(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_old_key_has_its_tagged_name() {
        let names = Names::new("hr");
        let cases = [
            ("hr:retries", "hr:{schedule}:retries"),
            ("hr:retries:leased", "hr:{schedule}:retries:leased"),
            ("hr:circuits", "hr:{schedule}:circuits"),
            ("hr:circuit:sub_01J0", "hr:{schedule}:circuit:sub_01J0"),
            ("hr:held:sub_01J0", "hr:{schedule}:held:sub_01J0"),
            ("hr:fifo:sub_01J0", "hr:{fifo}:queue:sub_01J0"),
            ("hr:fifo-lock:sub_01J0", "hr:{fifo}:lock:sub_01J0"),
            ("hr:fifo-ready", "hr:{fifo}:ready"),
            ("hr:fifo-attempts", "hr:{fifo}:attempts"),
            ("hr:fifo-taken", "hr:{fifo}:taken"),
            (
                "hr:batch:sub_01J0:items",
                "hr:{batches}:batch:sub_01J0:items",
            ),
            ("hr:batch:sub_01J0:n", "hr:{batches}:batch:sub_01J0:n"),
            ("hr:batches:due", "hr:{batches}:due"),
            ("hr:health:sub_01J0", "hr:{sub_01J0}:health"),
            ("hr:health:sub_01J0:recent", "hr:{sub_01J0}:health:recent"),
        ];
        for (old, new) in cases {
            assert_eq!(upgraded_name(&names, old).as_deref(), Some(new), "{old}");
        }
        assert!(old_roots(&names)
            .iter()
            .all(|root| upgraded_name(&names, root).is_some()));
        for kept in [
            "hr:log:s:{sub_01J0}:480000",
            "hr:log:id:1",
            "hr:{schedule}:retries",
            "other:retries",
            "hr:batch:sub_01J0:other",
            "hr:held:",
        ] {
            assert_eq!(upgraded_name(&names, kept), None, "{kept}");
        }
    }
}
