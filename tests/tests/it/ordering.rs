//! `ordering: fifo`: one request in flight, in stream order; a failing
//! event holds back only its own subscription's later ones; a given-up one
//! lets the next go and says so in the attempt log.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{Receiver, Reply};
use hookrelay_tests::Harness;
use tonic::Code;

use crate::logs::wait_attempts;
use crate::subscription;
use crate::subscriptions_api::create_err;

fn fifo(url: &str) -> pb::Subscription {
    let mut sub = subscription("acme", url, &["seq.*"]);
    sub.ordering = pb::Ordering::Fifo as i32;
    sub
}

async fn publish_numbered(hr: &Harness, range: std::ops::Range<u64>) {
    for n in range {
        hr.publish(
            "acme",
            "seq.tick",
            format!(r#"{{"id":"e-{n}","data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
}

#[tokio::test]
async fn an_ordered_subscription_gets_its_events_one_at_a_time_in_stream_order() {
    let hr = Harness::start().await;
    let ordered = Receiver::start().await;
    // Slow enough that a second request would overlap if one were sent.
    ordered.set_default(Reply::status(200).delay(Duration::from_millis(15)));
    let (created, _) = hr.create(fifo(&ordered.url("/fifo"))).await;
    assert_eq!(created.ordering, pb::Ordering::Fifo as i32);

    publish_numbered(&hr, 0..60).await;
    ordered.wait_for(60, Duration::from_secs(30)).await;
    assert_eq!(ordered.event_numbers(), (0..60).collect::<Vec<_>>());
    assert_eq!(ordered.max_in_flight(), 1, "more than one request at once");
}

#[tokio::test]
async fn a_failing_head_holds_back_only_its_own_subscription() {
    let hr = Harness::start().await;
    let ordered = Receiver::start().await;
    // Event 0 fails twice, then everything succeeds.
    ordered.push(Reply::status(500));
    ordered.push(Reply::status(503).header("retry-after", "0"));
    let mut sub = fifo(&ordered.url("/fifo"));
    sub.retry_policy = crate::retries::schedule(&[300, 300, 300]);
    let (sub, _) = hr.create(sub).await;
    let other = Receiver::start().await;
    hr.create(subscription("acme", &other.url("/any"), &["seq.*"]))
        .await;

    publish_numbered(&hr, 0..10).await;
    // The unordered subscription is not held back by the ordered one's head.
    other.wait_for(10, Duration::from_secs(10)).await;
    let before = ordered.requests().len();
    assert!(
        before < 12,
        "the ordered subscription got {before} requests before the other got all 10: its retries were not waited for"
    );
    // The rest wait in its queue, as its health says.
    let health = crate::circuit::health(&hr, &sub.id).await;
    assert_eq!(health.ordered_queued, 10, "{health:?}");

    ordered.wait_for(12, Duration::from_secs(20)).await;
    assert_eq!(
        ordered.event_numbers(),
        [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        "event 0 retried until it succeeded, then the rest in order"
    );
    let requests = ordered.requests();
    let retried_after = requests[1].at - requests[0].at;
    assert!(
        retried_after >= Duration::from_millis(280),
        "the head was retried {retried_after:?} after failing; its policy says 300 ms"
    );
}

#[tokio::test]
async fn a_given_up_head_lets_the_next_go_and_says_so() {
    let hr = Harness::start().await;
    let ordered = Receiver::start().await;
    ordered.respond_with(|request, _| match request.event_number() {
        0 => Reply::status(500),
        _ => Reply::status(200),
    });
    let mut sub = fifo(&ordered.url("/fifo"));
    sub.retry_policy = crate::retries::schedule(&[100]);
    let (sub, _) = hr.create(sub).await;

    publish_numbered(&hr, 0..3).await;
    ordered.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(ordered.event_numbers(), [0, 0, 1, 2]);

    let attempts = wait_attempts(&hr, &sub.id, 4).await;
    let given_up = attempts
        .iter()
        .find(|a| a.event_id == "e-0" && a.attempt == 2)
        .expect("the second attempt of e-0 is recorded");
    assert!(!given_up.give_up_reason.is_empty(), "{given_up:?}");
    assert!(
        given_up
            .reason
            .contains("ordered delivery moves on to the subscription's next event"),
        "the given-up head does not say the next one went: {:?}",
        given_up.reason
    );
    let next = attempts.iter().find(|a| a.event_id == "e-1").unwrap();
    assert_eq!(next.outcome, "success");
}

#[tokio::test]
async fn fifo_is_refused_with_a_batch_or_more_than_one_in_flight() {
    let hr = Harness::start().await;
    let mut batched = fifo("http://127.0.0.1:9/hook");
    batched.batch = Some(pb::BatchSpec {
        window: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    });
    let status = create_err(&hr, batched).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("subscription.ordering: ORDERING_FIFO cannot be combined with batch"),
        "{}",
        status.message()
    );

    let mut wide = fifo("http://127.0.0.1:9/hook");
    wide.max_in_flight = 4;
    let status = create_err(&hr, wide).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("subscription.max_in_flight: must be 0 or 1 with ORDERING_FIFO"),
        "{}",
        status.message()
    );
}
