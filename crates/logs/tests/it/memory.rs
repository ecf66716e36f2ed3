//! Redis memory per retained attempt: 20,000 attempts over 50 subscriptions
//! of 5 tenants, indexed as the consumer does (batches of 500), then every
//! key of the prefix weighed with `MEMORY USAGE`.

use std::collections::BTreeMap;

use crate::common::{id_at, now_ms, Fixture};
use hookrelay_logs::index::AttemptKeys;

const ATTEMPTS: usize = 20_000;
/// The target: at most 100 bytes of Redis per retained attempt.
const MAX_BYTES_PER_ATTEMPT: f64 = 100.0;

async fn used_memory(redis: &mut hookrelay_core::redis::Redis) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(redis)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// The kind of a key: its name under the prefix without ids and buckets.
fn kind(prefix: &str, key: &str) -> String {
    let rest = key.strip_prefix(prefix).unwrap_or(key);
    let parts: Vec<&str> = rest.split(':').collect();
    match parts.as_slice() {
        ["", "log", kind, ..] => format!("log:{kind}"),
        // `<prefix>:{<subscription>}:health[:recent]`
        ["", tag, rest @ ..] if tag.starts_with('{') && !rest.is_empty() => rest.join(":"),
        ["", first, ..] => (*first).to_owned(),
        _ => rest.to_owned(),
    }
}

#[tokio::test]
async fn a_retained_attempt_costs_at_most_100_bytes_of_redis() {
    let fx = Fixture::new().await;
    let mut redis = fx.redis.clone();
    let subscriptions: Vec<(String, String)> = (0..50)
        .map(|i| {
            (
                format!("tenant-{}", i % 5),
                format!("sub_{}", ulid::Ulid::new()),
            )
        })
        .collect();
    let before = used_memory(&mut redis).await;
    // Over the last ten minutes, a retry for every tenth event.
    let start = now_ms() - 600_000;
    let mut batch = Vec::new();
    let mut event = ulid::Ulid::new();
    for i in 0..ATTEMPTS {
        let (tenant, subscription) = &subscriptions[i % subscriptions.len()];
        if i % 10 != 1 {
            event = ulid::Ulid::new();
        }
        // One in ten fails, half of those for good, spread over subscriptions.
        let failed = (i + i / 50) % 10 == 0;
        let id = id_at(start + (i as u64 * 600_000 / ATTEMPTS as u64));
        let record = crate::common::record(
            &id,
            tenant,
            subscription,
            &format!("evt_{event}"),
            if failed { "http5xx" } else { "success" },
            failed && (i / 50) % 2 == 0,
        );
        let keys: AttemptKeys = crate::common::keys(&record);
        batch.push((keys, i as u64 + 1));
        if batch.len() == 500 {
            fx.index.store(&batch).await.unwrap();
            batch.clear();
        }
    }
    let after = used_memory(&mut redis).await;

    let prefix = fx.env.config.prefix.clone();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await
            .unwrap();
        keys.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut by_kind: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for key in &keys {
        let bytes: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut redis)
            .await
            .unwrap();
        let entry = by_kind.entry(kind(&prefix, key)).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }
    let total: i64 = by_kind.values().map(|(_, b)| b).sum();
    for (kind, (count, bytes)) in &by_kind {
        println!(
            "{kind:>14}: {count:>5} keys {bytes:>8} B  {:>6.1} B/attempt",
            *bytes as f64 / ATTEMPTS as f64
        );
    }
    let per_attempt = total as f64 / ATTEMPTS as f64;
    println!(
        "MEMORY USAGE total {total} B = {per_attempt:.1} B/attempt; \
         INFO used_memory grew {} B = {:.1} B/attempt (shared server: noisy)",
        after - before,
        (after - before) as f64 / ATTEMPTS as f64
    );
    assert!(
        per_attempt <= MAX_BYTES_PER_ATTEMPT,
        "{per_attempt:.1} B of Redis per attempt, at most {MAX_BYTES_PER_ATTEMPT} wanted"
    );
}
