//! Moves the Redis keys of the layout before hash tags (`<prefix>:retries`,
//! `<prefix>:held:<id>`, …) to their tagged names, so retries, held
//! deliveries, batch buffers and ordered queues that an earlier version
//! left in Redis are carried over by the upgrade rather than forgotten.
//!
//! Only a single Redis (or Sentinel) can hold the old layout: a cluster
//! never ran it. The move scans the installation's keys; it runs at start
//! and again every few minutes while replicas of the old version may still
//! be writing (a rolling upgrade). Scanning every key each time would be
//! costly (the attempt index has many), so [`KeyUpgrade`] scans until one
//! complete scan finds nothing left to move, and after that only when one
//! of a handful of old keys ([`old_roots`], checked with one `EXISTS`)
//! shows that an old replica is writing again. Each process does its own
//! first scan: nothing shared in Redis says "done", so a replica that
//! starts while old ones still run never skips keys they wrote.
//!
//! Per-subscription keys that exist without any root (a `health:<id>`
//! hash, a `circuit:<id>` of a failing but closed circuit, a
//! `fifo-lock:<id>`) are found by those full scans only: one written by an
//! old replica after this process's last full scan waits for the next
//! process start. They are a subscription's health statistics, a failure
//! count and a lock that expires within seconds, nothing a delivery depends
//! on.
//!
//! Where the new key exists too (a new replica wrote it meanwhile), the
//! old one is merged into it and deleted, by family:
//! - sorted sets (schedules, held deliveries, queues, batch order): members
//!   missing from the new set are added with their old score;
//! - the batch counter `batch:<id>:n`: the larger of both; and after any
//!   move of a batch's `order` or `n`, the counter is raised to the highest
//!   score in `order`, whose scores it hands out, so a later `INCR` never
//!   gives a score already in use;
//! - `fifo-taken` (per subscription, the highest sequence sent): the larger
//!   of both per field;
//! - other hashes (`fifo-attempts`, circuits, health): fields missing from
//!   the new hash are added, the new value winning where both have one;
//! - other strings and lists (a `fifo-lock`, `health:<id>:recent`): the new
//!   key is kept as it is and the old one dropped.

use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::circuit::CircuitKeys;
use crate::names::Names;
use crate::ordered::OrderedKeys;
use crate::redis::Redis;

/// How an old key merges into its tagged name when both exist.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Merge {
    /// Sorted sets and hashes gain what they lack; anything else keeps the
    /// new key.
    Add,
    /// A batch's `order`, whose scores come from `counter`.
    BatchOrder { counter: String },
    /// A batch's counter `n`: the larger of both, and at least the highest
    /// score in `order`.
    BatchCounter { order: String },
    /// A hash of numbers: the larger of both per field.
    MaxFields,
}

/// The tagged name of `old`, if it is a key of the old layout.
pub fn upgraded_name(names: &Names, old: &str) -> Option<String> {
    upgrade_of(names, old).map(|(new, _)| new)
}

/// The tagged name of `old` and how it merges into that.
fn upgrade_of(names: &Names, old: &str) -> Option<(String, Merge)> {
    let rest = old.strip_prefix(names.prefix())?.strip_prefix(':')?;
    if rest.contains('{') {
        return None;
    }
    let circuits = CircuitKeys::new(names);
    let ordered = OrderedKeys::new(names);
    let id = |tail: &str| (!tail.is_empty() && !tail.contains(':')).then(|| tail.to_owned());
    let parts: Vec<&str> = rest.split(':').collect();
    let add = |new: String| (new, Merge::Add);
    Some(match parts.as_slice() {
        ["retries"] => add(names.retries_key()),
        ["retries", "leased"] => add(names.retries_leased_key()),
        ["circuits"] => add(circuits.open()),
        ["circuit", sub] => add(circuits.circuit(&id(sub)?)),
        ["held", sub] => add(circuits.held(&id(sub)?)),
        ["fifo-ready"] => add(ordered.ready()),
        ["fifo-attempts"] => add(ordered.attempts()),
        ["fifo-taken"] => (ordered.taken(), Merge::MaxFields),
        ["fifo", sub] => add(ordered.queue(&id(sub)?)),
        ["fifo-lock", sub] => add(ordered.lock(&id(sub)?)),
        ["batches", "due"] => add(names.batches_due_key()),
        ["batches", "leased"] => add(names.batches_leased_key()),
        ["batch", sub, part] => {
            let [items, order, n] = names.batch_keys(&id(sub)?);
            match *part {
                "items" => add(items),
                "order" => (order, Merge::BatchOrder { counter: n }),
                "n" => (n, Merge::BatchCounter { order }),
                _ => return None,
            }
        }
        ["health", sub] => add(names.redis_tagged(&id(sub)?, &["health"])),
        ["health", sub, "recent"] => add(names.redis_tagged(&id(sub)?, &["health", "recent"])),
        _ => return None,
    })
}

/// The old layout's keys that an old replica at work keeps writing (a held
/// set has its circuit in `circuits`, a buffer its entry in `batches:due`,
/// a queue its entry in `fifo-ready` and its sends in `fifo-taken`).
fn old_roots(names: &Names) -> Vec<String> {
    [
        "retries",
        "retries:leased",
        "circuits",
        "fifo-ready",
        "fifo-taken",
        "fifo-attempts",
        "batches:due",
        "batches:leased",
    ]
    .iter()
    .map(|root| format!("{}:{root}", names.prefix()))
    .collect()
}

/// The key upgrade of one process, run again and again: a full scan until
/// one finds nothing to move, then a scan only when an old root exists.
#[derive(Debug, Clone)]
pub struct KeyUpgrade {
    names: Names,
    /// A complete scan found nothing left to move.
    clean: bool,
}

impl KeyUpgrade {
    pub fn new(names: &Names) -> Self {
        Self {
            names: names.clone(),
            clean: false,
        }
    }

    /// Whether a complete scan found nothing left to move, so that runs
    /// now scan only when an old root exists.
    pub fn clean(&self) -> bool {
        self.clean
    }

    /// Moves every old-layout key of the installation to its tagged name,
    /// if any is left; returns how many moved. Safe to run on several
    /// replicas at once: each key is moved by one of them. A scan that
    /// fails part way leaves the next run scanning again.
    pub async fn run(&mut self, redis: &Redis) -> RedisResult<usize> {
        if redis.mode() == crate::config::RedisMode::Cluster {
            self.clean = true;
            return Ok(0);
        }
        let mut conn = redis.clone();
        if self.clean {
            let present: usize = redis::cmd("EXISTS")
                .arg(old_roots(&self.names))
                .query_async(&mut conn)
                .await?;
            if present == 0 {
                return Ok(0);
            }
        }
        let moved = scan(&mut conn, &self.names).await?;
        // Something moved: an old replica may still be writing, keys
        // without a root too, so the next run scans again.
        self.clean = moved == 0;
        if moved > 0 {
            tracing::info!(moved, "redis keys moved to the hash-tagged layout");
        }
        Ok(moved)
    }
}

/// One full scan, whatever the roots say: [`KeyUpgrade::run`] of a new
/// [`KeyUpgrade`]; returns how many keys moved.
pub async fn upgrade_keys(redis: &Redis, names: &Names) -> RedisResult<usize> {
    KeyUpgrade::new(names).run(redis).await
}

async fn scan(conn: &mut impl ConnectionLike, names: &Names) -> RedisResult<usize> {
    let script = redis::Script::new(MOVE);
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
            .query_async(conn)
            .await?;
        for old in keys {
            if let Some((new, merge)) = upgrade_of(names, &old) {
                moved += move_key(conn, &script, &old, &new, &merge).await?;
            }
        }
        if next == 0 {
            return Ok(moved);
        }
        cursor = next;
    }
}

/// Renames KEYS[1] to KEYS[2]; where KEYS[2] exists already (a new replica
/// wrote it meanwhile), merges into it as ARGV[1] says (see the module's
/// documentation) and deletes KEYS[1]. For a batch's keys, KEYS[3] is its
/// `order` and KEYS[4] its counter, raised to at least the highest score in
/// `order` afterwards. Returns 1 if KEYS[1] existed.
const MOVE: &str = r#"
local old, new, merge = KEYS[1], KEYS[2], ARGV[1]
if redis.call('EXISTS', old) == 0 then return 0 end
if redis.call('EXISTS', new) == 0 then
  redis.call('RENAME', old, new)
else
  local kind = redis.call('TYPE', old)['ok']
  if merge == 'counter' and kind == 'string' then
    local value = redis.call('GET', old)
    local mine = tonumber(redis.call('GET', new))
    if tonumber(value) and (not mine or tonumber(value) > mine) then
      redis.call('SET', new, value)
    end
  elseif merge == 'max' and kind == 'hash' then
    local entries = redis.call('HGETALL', old)
    for i = 1, #entries, 2 do
      local value = tonumber(entries[i + 1])
      local mine = redis.call('HGET', new, entries[i])
      if not mine or (value and tonumber(mine) and value > tonumber(mine)) then
        redis.call('HSET', new, entries[i], entries[i + 1])
      end
    end
  elseif kind == 'zset' then
    local entries = redis.call('ZRANGE', old, 0, -1, 'WITHSCORES')
    local args = {}
    for i = 1, #entries, 2 do
      args[#args + 1] = entries[i + 1]
      args[#args + 1] = entries[i]
      if #args >= 1000 or i + 1 >= #entries then
        redis.call('ZADD', new, 'NX', unpack(args))
        args = {}
      end
    end
  elseif kind == 'hash' then
    local entries = redis.call('HGETALL', old)
    for i = 1, #entries, 2 do
      redis.call('HSETNX', new, entries[i], entries[i + 1])
    end
  end
  redis.call('DEL', old)
end
if KEYS[4] then
  local top = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
  if #top == 2 then
    local highest = math.ceil(tonumber(top[2]))
    local n = tonumber(redis.call('GET', KEYS[4]))
    if not n or n < highest then
      redis.call('SET', KEYS[4], string.format('%d', highest))
    end
  end
end
return 1
"#;

async fn move_key(
    conn: &mut impl ConnectionLike,
    script: &redis::Script,
    old: &str,
    new: &str,
    merge: &Merge,
) -> RedisResult<usize> {
    let mut invocation = script.key(old);
    invocation.key(new);
    let kind = match merge {
        Merge::Add => "add",
        Merge::MaxFields => "max",
        Merge::BatchOrder { counter } => {
            invocation.key(new).key(counter);
            "add"
        }
        Merge::BatchCounter { order } => {
            invocation.key(order).key(new);
            "counter"
        }
    };
    invocation.arg(kind).invoke_async(conn).await
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
            (
                "hr:batch:sub_01J0:order",
                "hr:{batches}:batch:sub_01J0:order",
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
        let merge = |old: &str| upgrade_of(&names, old).map(|(_, merge)| merge);
        assert_eq!(merge("hr:fifo-taken"), Some(Merge::MaxFields));
        assert_eq!(
            merge("hr:batch:sub_01J0:n"),
            Some(Merge::BatchCounter {
                order: "hr:{batches}:batch:sub_01J0:order".into()
            })
        );
        assert_eq!(
            merge("hr:batch:sub_01J0:order"),
            Some(Merge::BatchOrder {
                counter: "hr:{batches}:batch:sub_01J0:n".into()
            })
        );
        assert_eq!(merge("hr:fifo-attempts"), Some(Merge::Add));
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
