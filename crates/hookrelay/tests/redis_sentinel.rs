//! hookrelay on Redis Sentinel (a master, a replica and three Sentinels, on
//! loopback): the master SIGKILLed mid-load, the Sentinels promote the
//! replica, and hookrelay's Redis handle asks them again and moves to it.
//! Every event is delivered, retries keep one `webhook-id`.

mod common;

use std::ops::Range;
use std::time::{Duration, Instant};

use common::*;
use hookrelay::Role;
use hookrelay_core::config::RedisMode;
use hookrelay_test_support::sentinel::{info_field, RedisSentinels};
use hookrelay_test_support::servers::query;
use hookrelay_test_support::{eventually, Receiver, TestEnv};
use hookrelay_tests::Harness;

/// Events published after the failover: their first attempts fail after
/// it, so their retries can only be scheduled in the new master.
const AFTER_FAILOVER: usize = 50;

async fn publish(hr: &Harness, events: Range<usize>) {
    for n in events {
        hr.publish(
            "acme",
            "job.done",
            format!(r#"{{"id":"e-{n}","data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
}

/// Waits until `/readyz` answers 200; panics with what it said last if it
/// does not within `timeout`.
async fn wait_ready(hr: &Harness, timeout: Duration) {
    let url = format!("http://{}/readyz", hr.http_addr);
    let deadline = Instant::now() + timeout;
    loop {
        let said = match reqwest::get(&url).await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(error) => error.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "not ready {timeout:?} after the failover: {said}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scripts run on the server at `port` by its clients (a replica applies a
/// master's scripts as their effects, so it counts none of them).
async fn scripts_run(port: u16) -> Option<u64> {
    let stats: String = query(port, redis::cmd("INFO").arg("commandstats")).await?;
    let calls = |command: &str| {
        info_field(&stats, &format!("cmdstat_{command}"))
            .and_then(|fields| {
                fields
                    .split(',')
                    .next()?
                    .strip_prefix("calls=")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0u64)
    };
    Some(calls("evalsha") + calls("eval"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_master_killed_mid_load_fails_over_and_loses_nothing() {
    let mut sentinels = RedisSentinels::start().await;
    let mut env = TestEnv::new();
    env.config.redis.mode = RedisMode::Sentinel;
    env.config.redis.url = sentinels.urls();
    env.config.redis.sentinel_master = sentinels.master_name().to_owned();
    let hr = Harness::start_with(env, Role::All).await;
    let replica = sentinels.replica_port();
    assert_eq!(
        scripts_run(replica).await,
        Some(0),
        "hookrelay talks to the master, not the replica"
    );

    let receiver = Receiver::start().await;
    fail_first_attempt(&receiver);
    hr.create(flaky_subscription(receiver.url("/jobs"))).await;
    publish(&hr, 0..EVENTS - AFTER_FAILOVER).await;

    // Mid-load: first attempts failing, retries pending in the master.
    eventually("the load under way", Duration::from_secs(30), || async {
        (receiver.requests().len() >= EVENTS / 2).then_some(())
    })
    .await;
    sentinels.kill_master();
    let killed = Instant::now();
    assert!(
        delivered(&receiver) < EVENTS - AFTER_FAILOVER,
        "the kill came mid-load ({} requests)",
        receiver.requests().len()
    );
    let master = sentinels.wait_failover(Duration::from_secs(60)).await;
    assert_eq!(master, replica);
    let failed_over = killed.elapsed();

    // hookrelay's handle asks the Sentinels again after its commands fail,
    // and runs its scripts (the retry schedule's claim) on the new master:
    // soon, not once a reconnect loop to the dead one has given up (that
    // took 20-30 s).
    eventually(
        "hookrelay running scripts on the new master",
        Duration::from_secs(15),
        || async { (scripts_run(master).await? > 0).then_some(()) },
    )
    .await;
    let moved = killed.elapsed();
    publish(&hr, EVENTS - AFTER_FAILOVER..EVENTS).await;

    // Generous: a failover and retries on two busy cores. The last events'
    // retries were scheduled after the failover: delivering them means the
    // schedule lives in the new master.
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (delivered(&receiver) == EVENTS).then_some(()) },
    )
    .await;
    // Every check of /readyz passes again (the dispatcher's Redis check
    // passes once it has written there since the failover).
    let all_delivered = killed.elapsed();
    wait_ready(&hr, Duration::from_secs(30)).await;
    eprintln!(
        "after the kill: failed over in {failed_over:?}, hookrelay on the new master \
         in {moved:?}, every event delivered in {all_delivered:?}"
    );
}
