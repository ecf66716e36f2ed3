//! hookrelay on a real Redis Cluster (three masters with two replicas each,
//! on loopback, `redis.wait_replicas = 1`): retries, batches and the attempt
//! log all work across slots, and a master SIGKILLed mid-load while it holds
//! pending retries (the one serving the retry schedule) loses nothing once a
//! replica has taken over.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use hookrelay::Role;
use hookrelay_core::config::RedisMode;
use hookrelay_core::names::SCHEDULE_SLOT;
use hookrelay_core::redis::key_slot;
use hookrelay_proto::v1 as pb;
use hookrelay_test_support::servers::RedisCluster;
use hookrelay_test_support::{eventually, Receiver, TestEnv};
use hookrelay_tests::Harness;

const CHANGES: u64 = 60;

/// Entity ids named in the `changes` of every batch `receiver` got.
fn batched_ids(receiver: &Receiver) -> HashSet<u64> {
    receiver
        .requests()
        .iter()
        .flat_map(|request| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            body["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|change| change["id"].as_u64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Distinct events with a successful attempt in the subscription's log.
async fn logged_successes(hr: &Harness, subscription_id: &str) -> usize {
    let mut logs = hr.logs().await;
    let mut events = HashSet::new();
    let mut page_token = String::new();
    loop {
        let page = logs
            .list_attempts(pb::ListAttemptsRequest {
                tenant: "acme".into(),
                subscription_id: subscription_id.into(),
                outcome: "success".into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.attempts.into_iter().map(|a| a.event_id));
        if page.next_page_token.is_empty() {
            return events.len();
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_redis_cluster_master_killed_mid_load_loses_nothing() {
    let mut cluster = RedisCluster::start().await;
    let mut env = TestEnv::new();
    env.config.redis.mode = RedisMode::Cluster;
    env.config.redis.url = cluster.urls();
    // Every write the replica lacks would be lost at failover: wait for it.
    env.config.redis.wait_replicas = 1;
    let hr = Harness::start_with(env, Role::All).await;

    let receiver = Receiver::start().await;
    fail_first_attempt(&receiver);
    let (jobs, _) = hr.create(flaky_subscription(receiver.url("/jobs"))).await;
    let batches = Receiver::start().await;
    let mut training = training_batches(batches.url("/batch"), 1, 20);
    training.tenant = "beta".into();
    hr.create(training).await;

    publish_all(&hr).await;
    for id in 0..CHANGES {
        hr.publish(
            "beta",
            "training.update",
            format!(r#"{{"entity_id":{id},"data":{{}}}}"#).as_bytes(),
        )
        .await;
    }
    eventually("the load under way", Duration::from_secs(30), || async {
        (receiver.requests().len() >= EVENTS / 2).then_some(())
    })
    .await;
    // Kill it while retries wait in it: what a lost write would lose.
    let names = hr.env.config.names();
    let redis = hookrelay_core::redis::connect(&hr.env.config)
        .await
        .unwrap();
    eventually(
        "retries pending in the schedule",
        Duration::from_secs(30),
        || {
            let mut redis = redis.clone();
            let (due, leased) = (names.retries_key(), names.retries_leased_key());
            async move {
                let (due, leased): (u64, u64) = redis::pipe()
                    .cmd("ZCARD")
                    .arg(due)
                    .cmd("ZCARD")
                    .arg(leased)
                    .query_async(&mut redis)
                    .await
                    .ok()?;
                (due + leased > 0).then_some(())
            }
        },
    )
    .await;
    // The master holding the retry schedule is the one whose loss hurts most.
    let schedule_slot = key_slot(SCHEDULE_SLOT.as_bytes());
    let master = cluster
        .master_of(schedule_slot)
        .await
        .expect("a master serves the schedule's slot");
    cluster.kill(master).await;
    assert!(
        delivered(&receiver) < EVENTS,
        "the kill came mid-load ({} requests)",
        receiver.requests().len()
    );
    cluster.wait_covered(Duration::from_secs(60)).await;
    assert_ne!(
        cluster.master_of(schedule_slot).await,
        Some(master),
        "a replica serves the schedule now"
    );

    // Generous: a failover, a slot refresh and retries on two busy cores.
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (delivered(&receiver) == EVENTS).then_some(()) },
    )
    .await;
    eventually("every change batched", Duration::from_secs(60), || async {
        (batched_ids(&batches).len() as u64 == CHANGES).then_some(())
    })
    .await;
    assert!(
        batches
            .requests()
            .iter()
            .all(|r| r.body_str().starts_with(r#"{"changes":["#)),
        "seed 001's body"
    );
    eventually(
        "every delivered event in the attempt log",
        Duration::from_secs(60),
        || async { (logged_successes(&hr, &jobs.id).await == EVENTS).then_some(()) },
    )
    .await;
    // The attempt log and per-subscription keys spread over the masters.
    let counts = cluster.keys_per_master().await;
    assert!(
        counts.iter().filter(|n| **n > 0).count() >= 2,
        "keys on several masters: {counts:?}"
    );
}
