//! The retry schedule against the real Redis: due entries are claimed once,
//! an expired lease returns them, release forgets them.

use std::time::Duration;

use chrono::Utc;
use hookrelay_dispatcher::schedule::{RetryEntry, RetrySchedule};
use hookrelay_test_support::TestEnv;

fn entry(seq: u64) -> RetryEntry {
    RetryEntry {
        seq,
        subscription_id: "sub_01M81XPFFYY02KPEC83Y1VZ5T7".into(),
        attempt: 2,
        first_attempt_ms: 1_700_000_000_000,
        source: hookrelay_core::delivery::Source::Event,
        parked: 0,
    }
}

#[tokio::test]
async fn due_entries_are_claimed_once_and_come_back_when_the_lease_expires() {
    let env = TestEnv::new();
    let redis = hookrelay_core::redis::connect(&env.config).await.unwrap();
    let schedule = RetrySchedule::new(&env.config.names(), redis);
    let now = Utc::now();
    schedule
        .add(&entry(1), now - chrono::Duration::seconds(1))
        .await
        .unwrap();
    schedule.add(&entry(2), now).await.unwrap();
    schedule
        .add(&entry(3), now + chrono::Duration::hours(1))
        .await
        .unwrap();
    // Adding again moves the entry instead of duplicating it.
    schedule
        .add(&entry(2), now - chrono::Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(schedule.stats().await.unwrap().0, 3);

    let lease = Duration::from_secs(30);
    let claimed = schedule.claim(now, lease, 10).await.unwrap();
    let members: Vec<_> = claimed
        .iter()
        .map(|c| RetryEntry::parse(&c.member).unwrap().seq)
        .collect();
    assert_eq!(members, [2, 1], "oldest due first");
    assert_eq!(
        claimed[0].due_ms,
        (now - chrono::Duration::seconds(2)).timestamp_millis()
    );
    assert!(
        schedule.claim(now, lease, 10).await.unwrap().is_empty(),
        "claimed entries are leased"
    );
    assert_eq!(
        schedule.stats().await.unwrap().0,
        3,
        "leased entries still count as pending"
    );

    // A replica that died holding the lease: after it expires the entries return.
    let later = now + chrono::Duration::seconds(31);
    let reclaimed = schedule.claim(later, lease, 1).await.unwrap();
    assert_eq!(reclaimed.len(), 1, "at most the limit");
    let rest = schedule.claim(later, lease, 10).await.unwrap();
    assert_eq!(rest.len(), 1);

    let all: Vec<String> = reclaimed
        .into_iter()
        .chain(rest)
        .map(|c| c.member)
        .collect();
    schedule.release(&all).await.unwrap();
    let (pending, oldest) = schedule.stats().await.unwrap();
    assert_eq!(pending, 1);
    assert_eq!(
        oldest,
        Some((now + chrono::Duration::hours(1)).timestamp_millis())
    );
}

#[tokio::test]
async fn with_wait_replicas_a_write_no_replica_acknowledged_fails_and_reads_still_work() {
    // The shared Redis has no replica: every write comes back short.
    let mut env = TestEnv::new();
    env.config.redis.wait_replicas = 1;
    env.config.redis.wait_timeout = Duration::from_millis(50);
    let redis = hookrelay_core::redis::connect(&env.config).await.unwrap();
    let schedule = RetrySchedule::new(&env.config.names(), redis);
    let error = schedule.add(&entry(1), Utc::now()).await.unwrap_err();
    assert!(error.to_string().contains("0 of 1 within 50 ms"), "{error}");
    let error = schedule
        .add_all(&[(entry(2), Utc::now()), (entry(3), Utc::now())])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("redis.wait_replicas"), "{error}");
    let error = schedule
        .requeue(&["x".to_owned()], Utc::now())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("0 of 1"),
        "a transaction: {error}"
    );
    // Reads never wait; the writes stand on the master all the same.
    assert_eq!(schedule.stats().await.unwrap().0, 4);
}
