//! Failed deliveries are retried by the subscription's policy and success
//! rule, with one `webhook-id`, and given up as the policy says.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{eventually, Receiver, Reply};
use hookrelay_tests::Harness;
use pb::retry_policy::Policy;

use crate::logs::wait_attempts;
use crate::subscription;

const WAIT: Duration = Duration::from_secs(10);

fn millis(ms: u64) -> prost_types::Duration {
    prost_types::Duration::try_from(Duration::from_millis(ms)).unwrap()
}

/// Retries after each of `delays_ms`, without jitter.
pub fn schedule(delays_ms: &[u64]) -> Option<pb::RetryPolicy> {
    Some(pb::RetryPolicy {
        policy: Some(Policy::Schedule(pb::ScheduleRetry {
            delays: delays_ms.iter().map(|ms| millis(*ms)).collect(),
            jitter: 0.0,
        })),
    })
}

pub fn no_retry() -> Option<pb::RetryPolicy> {
    Some(pb::RetryPolicy {
        policy: Some(Policy::None(pb::NoRetry {})),
    })
}

#[tokio::test]
async fn a_receiver_answering_500_500_200_gets_three_requests_with_one_webhook_id() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let mut sub = subscription("acme", &receiver.url("/flaky"), &["*"]);
    sub.retry_policy = schedule(&[100, 100, 100]);
    let (sub, _) = hr.create(sub).await;
    receiver.push(Reply::status(500));
    receiver.push(Reply::status(500));
    hr.publish("acme", "user.created", br#"{"id":"e-1","data":{"n":1}}"#)
        .await;

    let requests = receiver.wait_for(3, WAIT).await;
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "every attempt sends the same body"
    );

    let attempts = wait_attempts(&hr, &sub.id, 3).await;
    let summary: Vec<(u32, &str, bool)> = attempts
        .iter()
        .rev()
        .map(|a| (a.attempt, a.outcome.as_str(), a.next_attempt_at.is_some()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "http_5xx", true),
            (2, "http_5xx", true),
            (3, "success", false)
        ]
    );
    assert!(attempts
        .iter()
        .all(|a| a.webhook_id == ids[0] && a.give_up_reason.is_empty()));
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn success_rules_decide_whether_a_204_is_retried() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(204));
    let mut strict = subscription("acme", &receiver.url("/strict"), &["*"]);
    strict.success_rule = pb::SuccessRule::Status200 as i32;
    strict.retry_policy = schedule(&[50, 50]);
    let (strict, _) = hr.create(strict).await;
    let mut lenient = subscription("acme", &receiver.url("/lenient"), &["*"]);
    lenient.retry_policy = schedule(&[50, 50]);
    let (lenient, _) = hr.create(lenient).await;
    hr.publish("acme", "user.created", br#"{"data":{}}"#).await;

    let strict_attempts = wait_attempts(&hr, &strict.id, 3).await;
    assert!(strict_attempts.iter().all(|a| a.outcome == "http_other"));
    assert_eq!(strict_attempts[0].give_up_reason, "exhausted");
    let lenient_attempts = wait_attempts(&hr, &lenient.id, 1).await;
    assert_eq!(lenient_attempts.len(), 1);
    assert_eq!(lenient_attempts[0].outcome, "success");
    assert_eq!(receiver.requests_to("/strict").len(), 3);
    assert_eq!(receiver.requests_to("/lenient").len(), 1);
}

#[tokio::test]
async fn an_exhausted_delivery_leaves_a_final_record_and_a_dlq_entry() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503).body("maintenance"));
    let mut sub = subscription("acme", &receiver.url("/down"), &["*"]);
    sub.retry_policy = schedule(&[50]);
    let (sub, _) = hr.create(sub).await;
    hr.publish("acme", "order.paid", br#"{"id":"o-9","data":{}}"#)
        .await;
    let attempts = wait_attempts(&hr, &sub.id, 2).await;
    assert_eq!(attempts[0].attempt, 2);
    assert_eq!(attempts[0].give_up_reason, "exhausted");
    assert!(attempts[0].next_attempt_at.is_none());
    assert_eq!(attempts[1].give_up_reason, "");

    let entry = crate::first_dlq_entry(&hr).await;
    let reason = entry
        .headers
        .get("Hookrelay-Dlq-Reason")
        .unwrap()
        .as_str()
        .to_owned();
    assert_eq!(reason, "gave up (exhausted) after attempt 2: status 503");
    let task: serde_json::Value = serde_json::from_slice(&entry.payload).unwrap();
    assert_eq!(task["event_id"], "o-9");
    assert_eq!(task["attempt"], 2);
    assert_eq!(task["subscription_id"], sub.id.as_str());
}

#[tokio::test]
async fn none_makes_exactly_one_request_and_records_the_error() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500).body("boom"));
    let mut sub = subscription("acme", &receiver.url("/once"), &["*"]);
    sub.retry_policy = no_retry();
    let (sub, _) = hr.create(sub).await;
    hr.publish("acme", "call.ended", br#"{"data":{}}"#).await;
    hr.publish("acme", "call.ended", br#"{"data":{"marker":true}}"#)
        .await;
    let attempts = wait_attempts(&hr, &sub.id, 2).await;
    for attempt in &attempts {
        assert_eq!(attempt.outcome, "http_5xx");
        assert_eq!(attempt.give_up_reason, "no_retry");
        assert_eq!(attempt.response.as_ref().unwrap().body, b"boom");
    }
    assert_eq!(receiver.requests().len(), 2, "one request per event");
}

#[tokio::test]
async fn a_redirect_fails_and_its_location_is_not_fetched() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(302).header("location", &receiver.url("/target")));
    let mut sub = subscription("acme", &receiver.url("/moved"), &["*"]);
    sub.retry_policy = schedule(&[50]);
    let (sub, _) = hr.create(sub).await;
    hr.publish("acme", "user.created", br#"{"data":{}}"#).await;
    let attempts = wait_attempts(&hr, &sub.id, 2).await;
    assert!(attempts.iter().all(|a| a.outcome == "redirect"));
    assert!(receiver.requests_to("/target").is_empty());
    assert_eq!(receiver.requests_to("/moved").len(), 2);
}

#[tokio::test]
async fn gone_disables_the_subscription() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(410));
    let mut sub = subscription("acme", &receiver.url("/gone"), &["*"]);
    sub.retry_policy = schedule(&[50, 50]);
    let (sub, _) = hr.create(sub).await;
    hr.publish("acme", "user.created", br#"{"data":{}}"#).await;
    let attempts = wait_attempts(&hr, &sub.id, 1).await;
    assert_eq!(attempts[0].give_up_reason, "gone");
    let mut client = hr.subscriptions().await;
    let disabled = eventually("the subscription disabled", WAIT, || {
        let mut client = client.clone();
        let id = sub.id.clone();
        async move {
            let sub = client
                .get_subscription(pb::GetSubscriptionRequest {
                    tenant: "acme".into(),
                    id,
                })
                .await
                .ok()?
                .into_inner();
            (sub.enabled == Some(false)).then_some(sub)
        }
    })
    .await;
    assert!(disabled.revision > sub.revision);
    // Nothing more is sent to it.
    hr.publish("acme", "user.created", br#"{"data":{"after":true}}"#)
        .await;
    let other = Receiver::start().await;
    hr.create(subscription(
        "acme",
        &other.url("/marker"),
        &["user.created"],
    ))
    .await;
    hr.publish("acme", "user.created", br#"{"data":{"marker":true}}"#)
        .await;
    other.wait_for(1, WAIT).await;
    assert_eq!(receiver.requests().len(), 1);
    let _ = client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn retry_after_is_honoured_within_twice_the_schedule() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.push(Reply::status(429).header("retry-after", "60"));
    let mut sub = subscription("acme", &receiver.url("/busy"), &["*"]);
    sub.retry_policy = schedule(&[300]);
    let (sub, _) = hr.create(sub).await;
    hr.publish("acme", "user.created", br#"{"data":{}}"#).await;
    let attempts = wait_attempts(&hr, &sub.id, 2).await;
    let first = &attempts[1];
    let started = first.started_at.as_ref().unwrap();
    let next = first.next_attempt_at.as_ref().unwrap();
    let delay_ms = (next.seconds - started.seconds) * 1000
        + (next.nanos - started.nanos) as i64 / 1_000_000
        - first.duration_ms as i64;
    assert!(
        (600..700).contains(&delay_ms),
        "Retry-After 60 s clamped to 2 × 300 ms, got {delay_ms} ms"
    );
    assert_eq!(attempts[0].outcome, "success");
}
