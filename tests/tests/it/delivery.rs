//! Events published to NATS reach subscribed receivers as signed requests.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;

use crate::signature::verify;
use crate::subscription;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_published_event_arrives_as_the_signed_standard_envelope() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (sub, secret) = hr
        .create(subscription(
            "acme",
            &receiver.url("/hooks/lms"),
            &["course_stat.*"],
        ))
        .await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    hr.publish(
        "acme",
        "course_stat.created",
        br#"{"id":"evt-1","occurred_at":"2026-11-22T10:00:00Z","data":{"course_id": 42,"title":"Rust \u00e9","tags":["a","b"]}}"#,
    )
    .await;

    let request = receiver.wait_for(1, WAIT).await.remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/lms");
    assert_eq!(
        request.body_str(),
        r#"{"type":"course_stat.created","timestamp":"2026-11-22T10:00:00Z","data":{"course_id": 42,"title":"Rust \u00e9","tags":["a","b"]}}"#
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let id = request.header("webhook-id").expect("webhook-id");
    assert!(id.starts_with("msg_"), "{id}");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!(
        (0..60).contains(&age),
        "timestamp {timestamp} is {age}s old"
    );
    let signature = request
        .header("webhook-signature")
        .expect("webhook-signature");
    assert!(
        verify(&secret, id, timestamp, &request.body, signature),
        "signature {signature} does not verify"
    );
    assert!(!verify(&secret, id, timestamp, b"tampered", signature));
    assert_ne!(sub.id, "");
}

#[tokio::test]
async fn only_matching_tenant_type_and_labels_are_delivered() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let mut scoped = subscription("acme", &receiver.url("/course-42"), &["course_stat.*"]);
    scoped.label_filter.insert("course_id".into(), "42".into());
    hr.create(scoped).await;
    hr.create(subscription(
        "acme",
        &receiver.url("/all"),
        &["quiz_stat.created"],
    ))
    .await;

    // Another tenant, another type, another course: none may be delivered.
    hr.publish(
        "other",
        "course_stat.created",
        br#"{"data":{"n":1},"labels":{"course_id":"42"}}"#,
    )
    .await;
    hr.publish(
        "acme",
        "section_stat.created",
        br#"{"data":{"n":2},"labels":{"course_id":"42"}}"#,
    )
    .await;
    hr.publish(
        "acme",
        "course_stat.updated",
        br#"{"data":{"n":3},"labels":{"course_id":"7"}}"#,
    )
    .await;
    hr.publish("acme", "course_stat.updated", br#"{"data":{"n":4}}"#)
        .await;
    hr.publish("acme", "quiz_stat.updated", br#"{"data":{"n":5}}"#)
        .await;
    // Then one for each subscription. The ingestor handles events in stream
    // order, so once these arrive the earlier ones have been judged.
    hr.publish(
        "acme",
        "course_stat.updated",
        br#"{"data":{"n":6},"labels":{"course_id":"42"}}"#,
    )
    .await;
    hr.publish("acme", "quiz_stat.created", br#"{"data":{"n":7}}"#)
        .await;

    let requests = receiver.wait_for(2, WAIT).await;
    let mut got: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["data"]["n"]
                    .to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("/all".to_owned(), "7".to_owned()),
            ("/course-42".to_owned(), "6".to_owned())
        ]
    );
    let attempts = hr
        .logs()
        .await
        .list_attempts(pb::ListAttemptsRequest {
            tenant: "other".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(attempts.attempts.is_empty());
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn a_subscription_created_while_running_matches_the_next_event() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    hr.publish("acme", "user.created", br#"{"data":{"n":1}}"#)
        .await;
    hr.create(subscription("acme", &receiver.url("/late"), &["*"]))
        .await;
    hr.publish("acme", "user.created", br#"{"data":{"n":2}}"#)
        .await;
    let request = receiver.wait_for(1, WAIT).await.remove(0);
    assert!(
        request.body_str().ends_with(r#""data":{"n":2}}"#),
        "{}",
        request.body_str()
    );
}

#[tokio::test]
async fn several_subscriptions_each_get_their_own_signed_request() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (_, secret_a) = hr
        .create(subscription("acme", &receiver.url("/a"), &["user.created"]))
        .await;
    let (_, secret_b) = hr
        .create(subscription("acme", &receiver.url("/b"), &["user.*"]))
        .await;
    hr.publish("acme", "user.created", br#"{"data":{"x":1}}"#)
        .await;
    let requests = receiver.wait_for(2, WAIT).await;
    let a = requests
        .iter()
        .find(|r| r.path == "/a")
        .expect("request to /a");
    let b = requests
        .iter()
        .find(|r| r.path == "/b")
        .expect("request to /b");
    assert_ne!(a.header("webhook-id"), b.header("webhook-id"));
    for (request, secret) in [(a, &secret_a), (b, &secret_b)] {
        let (id, ts, sig) = (
            request.header("webhook-id").unwrap(),
            request.header("webhook-timestamp").unwrap(),
            request.header("webhook-signature").unwrap(),
        );
        assert!(verify(secret, id, ts, &request.body, sig));
    }
    assert!(!verify(
        &secret_a,
        b.header("webhook-id").unwrap(),
        b.header("webhook-timestamp").unwrap(),
        &b.body,
        b.header("webhook-signature").unwrap()
    ));
}

#[tokio::test]
async fn custom_headers_are_sent_and_redirects_are_not_followed() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let mut sub = subscription("acme", &receiver.url("/moved"), &["*"]);
    sub.request = Some(pb::RequestSpec {
        headers: [("X-Team".to_owned(), "lms".to_owned())].into(),
        ..Default::default()
    });
    let (sub, _) = hr.create(sub).await;
    receiver.push(Reply::status(302).header("location", &receiver.url("/elsewhere")));
    hr.publish("acme", "user.created", br#"{"data":{}}"#).await;
    let request = receiver.wait_for(1, WAIT).await.remove(0);
    assert_eq!(request.header("x-team"), Some("lms"));
    let attempt = crate::logs::wait_attempts(&hr, &sub.id, 1).await.remove(0);
    assert_eq!(attempt.outcome, "redirect");
    assert_eq!(attempt.response.unwrap().status, 302);
    assert!(receiver.requests_to("/elsewhere").is_empty());
}

#[tokio::test]
async fn the_per_subscription_limit_holds_and_does_not_slow_others() {
    let hr = Harness::start().await;
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    slow.set_default(Reply::status(200).delay(Duration::from_millis(300)));
    let mut limited = subscription("acme", &slow.url("/slow"), &["job.*"]);
    limited.max_in_flight = 2;
    hr.create(limited).await;
    hr.create(subscription("acme", &fast.url("/fast"), &["job.*"]))
        .await;
    for n in 0..6 {
        hr.publish(
            "acme",
            "job.done",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    // The fast receiver gets all six while the slow one is still working
    // through them two at a time (six take at least 900 ms there).
    fast.wait_for(6, WAIT).await;
    assert!(
        slow.requests().len() < 6,
        "the slow receiver should still be busy"
    );
    slow.wait_for(6, WAIT).await;
    assert_eq!(slow.max_in_flight(), 2);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_deliveries() {
    let mut hr = Harness::start_with(TestEnv::new(), hookrelay::Role::All).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(200).delay(Duration::from_millis(500)));
    let (sub, _) = hr
        .create(subscription("acme", &receiver.url("/slow"), &["*"]))
        .await;
    hr.publish("acme", "user.created", br#"{"data":{}}"#).await;
    receiver.wait_for(1, WAIT).await;
    // Stop while the receiver is still answering: the delivery completes and
    // its attempt is recorded before hookrelay exits.
    let started = std::time::Instant::now();
    hr.stop().await.expect("clean stop");
    assert!(started.elapsed() < Duration::from_secs(5));
    let names = hr.env.config.names();
    let mut attempts = hr.js.get_stream(names.attempts_stream()).await.unwrap();
    let recorded = attempts.info().await.unwrap().state.messages;
    assert_eq!(recorded, 1, "the attempt to {} was recorded", sub.id);
    let mut deliveries = hr.js.get_stream(names.deliveries_stream()).await.unwrap();
    let pending = deliveries.info().await.unwrap().state.messages;
    assert_eq!(pending, 0, "the delivery task was acked");
}

#[tokio::test]
async fn a_request_slower_than_the_ack_wait_is_sent_once() {
    let mut env = TestEnv::new();
    env.config.dispatcher.default_timeout = Duration::from_millis(500);
    env.config.dispatcher.ack_wait = Duration::from_secs(1);
    let hr = Harness::start_with(env, hookrelay::Role::All).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(200).delay(Duration::from_millis(2500)));
    let mut sub = subscription("acme", &receiver.url("/slow"), &["*"]);
    sub.timeout = Some(prost_types::Duration {
        seconds: 5,
        nanos: 0,
    });
    // 5 s requests at most 16 at a time: within the request-seconds a
    // subscription may hold at this default timeout (256 × 0.5 s).
    sub.max_in_flight = 16;
    let (sub, _) = hr.create(sub).await;
    hr.publish("acme", "report.ready", br#"{"data":{}}"#).await;
    let attempts = crate::logs::wait_attempts(&hr, &sub.id, 1).await;
    assert_eq!(attempts[0].outcome, "success");
    assert!(attempts[0].duration_ms >= 2500);
    assert_eq!(
        receiver.requests().len(),
        1,
        "not redelivered while in flight"
    );
}
