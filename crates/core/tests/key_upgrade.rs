//! The move of old-layout Redis keys to their hash-tagged names, against
//! the Redis at 127.0.0.1:6379 (`HOOKRELAY_TEST_REDIS_URL` overrides it),
//! each test under a prefix of its own whose keys it deletes at the end.

use std::collections::BTreeMap;

use hookrelay_core::circuit::CircuitKeys;
use hookrelay_core::config::Config;
use hookrelay_core::key_upgrade::{upgrade_keys, KeyUpgrade};
use hookrelay_core::ordered::OrderedKeys;
use hookrelay_core::redis::Redis;
use hookrelay_core::Names;
use redis::AsyncCommands;

const SUB: &str = "sub_01J0KUP";

async fn setup() -> (Redis, Names) {
    let mut config = Config::defaults();
    config.prefix = format!("kup{}", rand::random::<u32>());
    if let Ok(url) = std::env::var("HOOKRELAY_TEST_REDIS_URL") {
        config.redis.url = url;
    }
    let redis = hookrelay_core::redis::connect(&config)
        .await
        .expect("a Redis at 127.0.0.1:6379");
    (redis, config.names())
}

/// Every key under the prefix, sorted.
async fn keys(redis: &Redis, names: &Names) -> Vec<String> {
    let mut conn = redis.clone();
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", names.prefix()))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        found.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    found.sort();
    found
}

async fn cleanup(redis: &Redis, names: &Names) {
    let all = keys(redis, names).await;
    if !all.is_empty() {
        let mut conn = redis.clone();
        let _: () = conn.del(all).await.unwrap();
    }
}

fn old(names: &Names, tail: &str) -> String {
    format!("{}:{tail}", names.prefix())
}

async fn zset(redis: &Redis, key: &str) -> Vec<(String, f64)> {
    let mut conn = redis.clone();
    conn.zrange_withscores(key, 0, -1).await.unwrap()
}

async fn hash(redis: &Redis, key: &str) -> BTreeMap<String, String> {
    let mut conn = redis.clone();
    conn.hgetall(key).await.unwrap()
}

async fn get(redis: &Redis, key: &str) -> Option<String> {
    let mut conn = redis.clone();
    conn.get(key).await.unwrap()
}

fn pairs(entries: &[(&str, f64)]) -> Vec<(String, f64)> {
    entries.iter().map(|(m, s)| (m.to_string(), *s)).collect()
}

fn fields(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

/// Keys of the old layout left under the prefix.
fn old_ones(all: &[String]) -> Vec<&String> {
    all.iter().filter(|key| !key.contains('{')).collect()
}

#[tokio::test]
async fn every_family_moves_to_its_tagged_name() {
    let (redis, names) = setup().await;
    let circuits = CircuitKeys::new(&names);
    let ordered = OrderedKeys::new(&names);
    let [items, order, n] = names.batch_keys(SUB);
    let mut conn = redis.clone();
    let o = |tail: &str| old(&names, tail);

    let _: () = redis::pipe()
        .zadd_multiple(o("retries"), &[(1000, "r1"), (2000, "r2")])
        .zadd(o("retries:leased"), "r0", 3000)
        .zadd(o("circuits"), SUB, 4000)
        .zadd(o(&format!("held:{SUB}")), "h1", 5)
        .hset_multiple(
            o(&format!("circuit:{SUB}")),
            &[("state", "open"), ("failures", "5")],
        )
        .hset(
            o(&format!("batch:{SUB}:items")),
            "k1",
            "{\"action\":\"update\"}",
        )
        .zadd(o(&format!("batch:{SUB}:order")), "k1", 3)
        .set(o(&format!("batch:{SUB}:n")), 3)
        .zadd(o("batches:due"), SUB, 6000)
        .zadd(o("batches:leased"), "sub_other", 7000)
        .zadd(o(&format!("fifo:{SUB}")), "a:b", 42)
        .zadd(o("fifo-ready"), SUB, 8000)
        .hset(o("fifo-taken"), SUB, 41)
        .hset(o("fifo-attempts"), SUB, "42:2")
        .set_options(
            o(&format!("fifo-lock:{SUB}")),
            "dispatcher-1",
            redis::SetOptions::default().with_expiration(redis::SetExpiry::EX(60)),
        )
        .hset_multiple(
            o(&format!("health:{SUB}")),
            &[("consecutive", "2"), ("last_success", "9")],
        )
        .rpush(o(&format!("health:{SUB}:recent")), &["0", "0", "1"])
        // Not of the old layout: left alone.
        .set(o("log:id:1"), "x")
        .query_async(&mut conn)
        .await
        .unwrap();

    assert_eq!(upgrade_keys(&redis, &names).await.unwrap(), 17);

    assert_eq!(
        zset(&redis, &names.retries_key()).await,
        pairs(&[("r1", 1000.0), ("r2", 2000.0)])
    );
    assert_eq!(
        zset(&redis, &names.retries_leased_key()).await,
        pairs(&[("r0", 3000.0)])
    );
    assert_eq!(
        zset(&redis, &circuits.open()).await,
        pairs(&[(SUB, 4000.0)])
    );
    assert_eq!(
        zset(&redis, &circuits.held(SUB)).await,
        pairs(&[("h1", 5.0)])
    );
    assert_eq!(
        hash(&redis, &circuits.circuit(SUB)).await,
        fields(&[("state", "open"), ("failures", "5")])
    );
    assert_eq!(
        hash(&redis, &items).await,
        fields(&[("k1", "{\"action\":\"update\"}")])
    );
    assert_eq!(zset(&redis, &order).await, pairs(&[("k1", 3.0)]));
    assert_eq!(get(&redis, &n).await.as_deref(), Some("3"));
    assert_eq!(
        zset(&redis, &names.batches_due_key()).await,
        pairs(&[(SUB, 6000.0)])
    );
    assert_eq!(
        zset(&redis, &names.batches_leased_key()).await,
        pairs(&[("sub_other", 7000.0)])
    );
    assert_eq!(
        zset(&redis, &ordered.queue(SUB)).await,
        pairs(&[("a:b", 42.0)])
    );
    assert_eq!(
        zset(&redis, &ordered.ready()).await,
        pairs(&[(SUB, 8000.0)])
    );
    assert_eq!(hash(&redis, &ordered.taken()).await, fields(&[(SUB, "41")]));
    assert_eq!(
        hash(&redis, &ordered.attempts()).await,
        fields(&[(SUB, "42:2")])
    );
    assert_eq!(
        get(&redis, &ordered.lock(SUB)).await.as_deref(),
        Some("dispatcher-1")
    );
    let ttl: i64 = conn.ttl(ordered.lock(SUB)).await.unwrap();
    assert!(ttl > 0 && ttl <= 60, "the lock keeps its expiry: {ttl}");
    assert_eq!(
        hash(&redis, &names.redis_tagged(SUB, &["health"])).await,
        fields(&[("consecutive", "2"), ("last_success", "9")])
    );
    let recent: Vec<String> = conn
        .lrange(names.redis_tagged(SUB, &["health", "recent"]), 0, -1)
        .await
        .unwrap();
    assert_eq!(recent, ["0", "0", "1"]);

    let all = keys(&redis, &names).await;
    assert_eq!(old_ones(&all), [&o("log:id:1")], "only the log key stays");
    assert_eq!(all.len(), 18);

    assert_eq!(upgrade_keys(&redis, &names).await.unwrap(), 0);
    assert_eq!(keys(&redis, &names).await, all);

    cleanup(&redis, &names).await;
}

/// Keys that exist without any of the roots the cheap check looks at are
/// moved by a process's first run all the same; once a scan finds nothing,
/// runs only scan when a root shows up.
#[tokio::test]
async fn keys_without_roots_move_on_a_first_run() {
    let (redis, names) = setup().await;
    let circuits = CircuitKeys::new(&names);
    let ordered = OrderedKeys::new(&names);
    let mut conn = redis.clone();
    let o = |tail: &str| old(&names, tail);

    let _: () = redis::pipe()
        .hset(o(&format!("health:{SUB}")), "consecutive", "1")
        .lpush(o(&format!("health:{SUB}:recent")), "0")
        .hset(o(&format!("circuit:{SUB}")), "failures", "3")
        .set(o(&format!("fifo-lock:{SUB}")), "dispatcher-1")
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut upgrade = KeyUpgrade::new(&names);
    assert!(!upgrade.clean());
    assert_eq!(upgrade.run(&redis).await.unwrap(), 4);
    assert!(
        !upgrade.clean(),
        "something moved: the next run scans again"
    );
    assert_eq!(
        hash(&redis, &circuits.circuit(SUB)).await,
        fields(&[("failures", "3")])
    );
    assert_eq!(
        get(&redis, &ordered.lock(SUB)).await.as_deref(),
        Some("dispatcher-1")
    );
    assert!(old_ones(&keys(&redis, &names).await).is_empty());

    assert_eq!(upgrade.run(&redis).await.unwrap(), 0);
    assert!(upgrade.clean());

    // An old replica at work again: its root opens the scan.
    let _: () = conn.hset(o("fifo-taken"), SUB, 7).await.unwrap();
    let _: () = conn
        .zadd(o(&format!("fifo:{SUB}")), "c:d", 8)
        .await
        .unwrap();
    assert_eq!(upgrade.run(&redis).await.unwrap(), 2);
    assert_eq!(hash(&redis, &ordered.taken()).await, fields(&[(SUB, "7")]));
    assert_eq!(
        zset(&redis, &ordered.queue(SUB)).await,
        pairs(&[("c:d", 8.0)])
    );
    assert!(old_ones(&keys(&redis, &names).await).is_empty());

    cleanup(&redis, &names).await;
}

/// A rolling upgrade: old replicas wrote old keys while new ones wrote the
/// tagged ones; each family merges as `key_upgrade` documents.
#[tokio::test]
async fn old_keys_merge_into_new_ones() {
    let (redis, names) = setup().await;
    let ordered = OrderedKeys::new(&names);
    let mut conn = redis.clone();
    let o = |tail: &str| old(&names, tail);
    let [_, order, n] = names.batch_keys(SUB);
    let other = "sub_01J0OTHER";
    let [_, other_order, other_n] = names.batch_keys(other);
    let recent = names.redis_tagged(SUB, &["health", "recent"]);

    let _: () = redis::pipe()
        // Retries: both sides keep theirs, a member in both keeps the new score.
        .zadd_multiple(o("retries"), &[(100, "old1"), (300, "both")])
        .zadd_multiple(names.retries_key(), &[(200, "new1"), (400, "both")])
        // Batch counter: old 7, new 3.
        .set(o(&format!("batch:{SUB}:n")), 7)
        .zadd_multiple(o(&format!("batch:{SUB}:order")), &[(1, "a"), (7, "b")])
        .set(&n, 3)
        .zadd_multiple(&order, &[(1, "c"), (2, "d"), (3, "e")])
        // Another batch whose order holds a higher score than either counter.
        .set(o(&format!("batch:{other}:n")), 4)
        .zadd(o(&format!("batch:{other}:order")), "x", 12)
        .set(&other_n, 10)
        .zadd(&other_order, "y", 10)
        // Highest sequence sent: the larger per field.
        .hset_multiple(
            o("fifo-taken"),
            &[(SUB, "50"), ("sub_a", "5"), ("sub_old", "9")],
        )
        .hset_multiple(
            ordered.taken(),
            &[(SUB, "40"), ("sub_a", "6"), ("sub_new", "1")],
        )
        // Attempts: the new value wins.
        .hset_multiple(o("fifo-attempts"), &[(SUB, "50:3"), ("sub_old", "9:2")])
        .hset(ordered.attempts(), SUB, "51:1")
        // A list: the new one is kept.
        .rpush(o(&format!("health:{SUB}:recent")), &["0", "0"])
        .rpush(&recent, &["1"])
        .query_async(&mut conn)
        .await
        .unwrap();

    assert_eq!(upgrade_keys(&redis, &names).await.unwrap(), 8);

    assert_eq!(
        zset(&redis, &names.retries_key()).await,
        pairs(&[("old1", 100.0), ("new1", 200.0), ("both", 400.0)])
    );

    assert_eq!(get(&redis, &n).await.as_deref(), Some("7"));
    let merged = zset(&redis, &order).await;
    assert_eq!(merged.len(), 5);
    let top = merged.iter().map(|(_, s)| *s).fold(0.0, f64::max);
    let counter: f64 = get(&redis, &n).await.unwrap().parse().unwrap();
    assert!(counter >= top, "counter {counter} below order score {top}");
    let next: i64 = conn.incr(&n, 1).await.unwrap();
    assert!(merged.iter().all(|(_, s)| *s < next as f64));

    assert_eq!(get(&redis, &other_n).await.as_deref(), Some("12"));
    assert_eq!(
        zset(&redis, &other_order).await,
        pairs(&[("y", 10.0), ("x", 12.0)])
    );

    assert_eq!(
        hash(&redis, &ordered.taken()).await,
        fields(&[
            (SUB, "50"),
            ("sub_a", "6"),
            ("sub_new", "1"),
            ("sub_old", "9")
        ])
    );
    assert_eq!(
        hash(&redis, &ordered.attempts()).await,
        fields(&[(SUB, "51:1"), ("sub_old", "9:2")])
    );
    let list: Vec<String> = conn.lrange(&recent, 0, -1).await.unwrap();
    assert_eq!(list, ["1"]);

    assert!(old_ones(&keys(&redis, &names).await).is_empty());
    assert_eq!(upgrade_keys(&redis, &names).await.unwrap(), 0);

    cleanup(&redis, &names).await;
}
