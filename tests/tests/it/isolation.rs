//! A receiver that never answers does not starve a healthy one.

use std::time::{Duration, Instant};

use hookrelay_tests::support::{Receiver, Reply};
use hookrelay_tests::Harness;

use crate::subscription;

const EVENTS: usize = 300;

async fn publish_burst(hr: &Harness, from: usize) {
    for n in from..from + EVENTS {
        hr.publish(
            "acme",
            "load.tick",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
}

#[tokio::test]
async fn a_hung_receiver_does_not_slow_a_healthy_one() {
    let hr = Harness::start().await;
    let healthy = Receiver::start().await;
    hr.create(subscription("acme", &healthy.url("/ok"), &["load.*"]))
        .await;

    let solo = Instant::now();
    publish_burst(&hr, 0).await;
    healthy.wait_for(EVENTS, Duration::from_secs(30)).await;
    let solo = solo.elapsed();

    let hung = Receiver::start().await;
    hung.set_default(Reply::status(200).delay(Duration::from_secs(30)));
    let mut stuck = subscription("acme", &hung.url("/never"), &["load.*"]);
    stuck.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 500_000_000,
    });
    stuck.max_in_flight = 4;
    hr.create(stuck).await;

    let shared = Instant::now();
    publish_burst(&hr, EVENTS).await;
    healthy.wait_for(2 * EVENTS, Duration::from_secs(30)).await;
    let shared = shared.elapsed();
    // Four at a time, each abandoned after 500 ms (the receiver keeps its
    // side open, so its own in-flight count is no measure).
    let rounds = (shared.as_millis() / 500 + 2) as usize;
    assert!(
        hung.requests().len() <= 4 * rounds,
        "{} requests to the hung receiver in {shared:?}: its limit of 4 did not hold",
        hung.requests().len()
    );
    // Generous: the precise ratio is the benchmark's business.
    assert!(
        shared <= solo * 4 + Duration::from_secs(1),
        "healthy deliveries took {shared:?} beside a hung receiver, {solo:?} alone"
    );
}

/// Events queued for tenant A's hung subscriptions.
const HUNG_EVENTS: usize = 1200;
/// Events of tenant B, each of which must arrive in time.
const HEALTHY_EVENTS: usize = 50;

/// Config with the shipped request timeout, so the largest accepted
/// `max_in_flight` × `timeout` is the one users get.
fn shipped_limits() -> hookrelay_tests::support::TestEnv {
    let mut env = hookrelay_tests::support::TestEnv::new();
    env.config.dispatcher.default_timeout = Duration::from_secs(10);
    env
}

/// With tenant A's subscriptions (pointed at `hung`) holding what they may
/// and 1,200 events queued for them, tenant B's 50 events all arrive within
/// 5 s, p99 under 1 s from publish to receipt.
async fn tenant_b_is_served_beside(hr: &Harness, hung: &Receiver) {
    for n in 0..HUNG_EVENTS {
        hr.publish(
            "tenant-a",
            "load.tick",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    // A holds all it may: the tenant's cap of requests, none answered.
    let cap = hr.env.config.limits.max_in_flight_per_tenant as usize;
    hookrelay_tests::support::eventually(
        "tenant A's hung requests up to its cap",
        Duration::from_secs(30),
        || async { (hung.requests().len() >= cap).then_some(()) },
    )
    .await;
    let consumer = hr
        .js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            hr.env.config.names().consumer("ingestor"),
            hr.env.config.names().events_stream(),
        )
        .await
        .expect("the ingestor's consumer");
    hookrelay_tests::support::eventually(
        "every event of tenant A taken in by the ingestor",
        Duration::from_secs(30),
        || {
            let mut consumer = consumer.clone();
            async move {
                let info = consumer.info().await.ok()?;
                (info.num_pending == 0).then_some(())
            }
        },
    )
    .await;

    let healthy = Receiver::start().await;
    hr.create(subscription("tenant-b", &healthy.url("/ok"), &["load.*"]))
        .await;
    let started = Instant::now();
    let mut published = Vec::with_capacity(HEALTHY_EVENTS);
    for n in 0..HEALTHY_EVENTS {
        published.push(Instant::now());
        hr.publish(
            "tenant-b",
            "load.tick",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    let left = Duration::from_secs(5).saturating_sub(started.elapsed());
    let received = healthy.wait_for(HEALTHY_EVENTS, left).await;
    let mut latencies: Vec<Duration> = received
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
            let n = body["data"]["n"].as_u64().expect("data.n") as usize;
            r.at - published[n]
        })
        .collect();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    assert!(
        p99 < Duration::from_secs(1),
        "tenant B's p99 publish to receipt was {p99:?} beside a hung tenant A: {latencies:?}"
    );
    assert!(
        hung.requests().len() >= cap,
        "tenant A kept its share: the test saw it saturated"
    );
}

#[tokio::test]
async fn a_tenant_at_the_largest_accepted_limits_does_not_slow_another() {
    let hr = Harness::start_with(shipped_limits(), hookrelay::Role::All).await;
    let hung = Receiver::start().await;
    hung.set_default(Reply::status(200).delay(Duration::from_secs(3600)));
    let cap = hr.env.config.limits.max_in_flight_per_tenant;
    let mut stuck = subscription("tenant-a", &hung.url("/never"), &["load.*"]);
    stuck.max_in_flight = cap;
    stuck.timeout = Some(prost_types::Duration {
        seconds: 10,
        nanos: 0,
    });
    hr.create(stuck).await;
    tenant_b_is_served_beside(&hr, &hung).await;
}

#[tokio::test]
async fn sixteen_hung_subscriptions_at_the_defaults_do_not_slow_another_tenant() {
    let hr = Harness::start_with(shipped_limits(), hookrelay::Role::All).await;
    let hung = Receiver::start().await;
    hung.set_default(Reply::status(200).delay(Duration::from_secs(3600)));
    for i in 0..16 {
        hr.create(subscription(
            "tenant-a",
            &hung.url(&format!("/never/{i}")),
            &["load.*"],
        ))
        .await;
    }
    tenant_b_is_served_beside(&hr, &hung).await;
}

#[tokio::test]
async fn a_rate_limited_subscription_is_sent_no_faster_than_its_rate() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let mut sub = subscription("acme", &receiver.url("/paced"), &["load.*"]);
    sub.rate_limit = Some(hookrelay_proto::v1::RateLimit {
        per_second: 5,
        burst: 1,
    });
    let (created, _) = hr.create(sub).await;
    assert_eq!(
        created.rate_limit,
        Some(hookrelay_proto::v1::RateLimit {
            per_second: 5,
            burst: 1
        })
    );
    for n in 0..11 {
        hr.publish(
            "acme",
            "load.tick",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    let received = receiver.wait_for(11, Duration::from_secs(30)).await;
    let first = received.iter().map(|r| r.at).min().unwrap();
    let last = received.iter().map(|r| r.at).max().unwrap();
    // One every 200 ms after the first: ten intervals.
    assert!(
        last - first >= Duration::from_millis(1900),
        "11 requests at 5/s arrived within {:?}",
        last - first
    );
}

#[tokio::test]
async fn a_throttling_answer_without_retry_after_pauses_the_subscription() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.push(Reply::status(429));
    let mut sub = subscription("acme", &receiver.url("/busy"), &["load.*"]);
    sub.max_in_flight = 1;
    sub.retry_policy = crate::retries::schedule(&[10, 10, 10]);
    hr.create(sub).await;
    for n in 0..4 {
        hr.publish(
            "acme",
            "load.tick",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    // The 429, then each of the four events delivered (one of them again).
    let received = receiver.wait_for(5, Duration::from_secs(30)).await;
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "the next request came {gap:?} after a 429"
    );
}
